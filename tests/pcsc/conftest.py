"""Fixtures for the PC/SC tests: a private pcscd with a vpcd reader, and cards served into it.

Tests that need the stack are marked ``pcsc``; they are skipped (with the reason) only when
pcscd, the vpcd driver or pyscard is missing. ``scripts/test.sh`` installs all three and
runs pytest inside ``unshare --mount --net`` so the private pcscd never meets a host one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capsim.transports.vpcd import VpcdCardServer
from tests.pcsc.stack import PcscdStack, _listening, free_port_pair, missing_requirements, wait_card

MISSING = missing_requirements()
STACK_PORT = 40000
REINSERT_GAP = 0.6  # > one 400 ms presence poll of pcscd


def run_opensc_tool(*apdus: str) -> str:
    """Send ``apdus`` (hex with spaces) with ``opensc-tool -r 0``; its output, once it exited 0.

    Skips the test when opensc-tool is not installed.
    """
    tool = shutil.which("opensc-tool")
    if tool is None:
        pytest.skip("opensc-tool is not installed (apt-get install opensc)")
    args = [tool, "-r", "0"]
    for apdu in apdus:
        args += ["-s", apdu]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


@pytest.fixture(scope="session")
def pcscd_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscdStack]:
    if MISSING is not None:
        pytest.skip(f"PC/SC stack unavailable: {MISSING}")
    port = STACK_PORT if not (_listening(STACK_PORT) or _listening(STACK_PORT + 1)) else free_port_pair()
    stack = PcscdStack(tmp_path_factory.mktemp("pcscd"), port=port)
    try:
        stack.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the private pcscd: {exc}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture
def stack(pcscd_session: PcscdStack) -> Iterator[PcscdStack]:
    """The running private pcscd (restarted if an earlier test stopped it)."""
    if not pcscd_session.running:
        pcscd_session.start()
    yield pcscd_session
    if not pcscd_session.running:
        pcscd_session.start()


ServeFactory = Callable[..., VpcdCardServer]


@pytest.fixture
def serve(stack: PcscdStack) -> Iterator[ServeFactory]:
    """Start a card server thread on a slot of the test vpcd entry and wait until pcscd sees the card."""
    servers: list[tuple[VpcdCardServer, str]] = []

    def start(card: Any, *, slot: int = 0, wait: bool = True, **options: Any) -> VpcdCardServer:
        options.setdefault("backoff_initial", 0.01)
        options.setdefault("backoff_max", 0.2)
        # pcscd notices a removal only if one of its 400 ms presence polls finds the slot
        # empty; a card plugged back sooner looks as if it never left (pcsc.md §3).
        # A new card on a slot replaces the one served there before.
        for earlier, _ in servers:
            if earlier.address[1] == stack.port + slot:
                earlier.stop()
                if earlier.unplugged_at is not None:
                    stack.note_unplugged(slot, earlier.unplugged_at)
        stack.settle_slot(slot, REINSERT_GAP)
        server = VpcdCardServer(card, port=stack.port, slot=slot, **options).start()
        servers.append((server, stack.readers[slot]))
        if wait:
            assert server.wait_connected(5), "the card server did not connect to vpcd"
            wait_card(stack.readers[slot], present=True, timeout=5)
        return server

    yield start
    for server, _ in servers:
        server.stop()
        if server.unplugged_at is not None:
            stack.note_unplugged(server.address[1] - stack.port, server.unplugged_at)
    if stack.running:
        for _, reader in servers:
            wait_card(reader, present=False, timeout=5)
