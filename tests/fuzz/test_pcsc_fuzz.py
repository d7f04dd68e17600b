"""Fuzzing a card served through pcscd + vpcd (marked ``pcsc``).

Acceptance: with ``--allow-state-changes`` off the fuzzer never changes the served card's ATC
or PTC; with it on, VERIFY is never sent below two PIN tries. And ``capsim fuzz serve`` gives
PC/SC programs a hostile card.

The private pcscd is the PC/SC suite's :class:`tests.pcsc.stack.PcscdStack`; it is started
for this module and stopped after it, so the PC/SC suite can start its own later in the same
session. If that suite's pcscd is already running, it is reused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cards import EmvCapCard, load_card, new_card
from capsim.cli import main
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN
from capsim.transports.vpcd import VpcdCardServer
from tests.pcsc.stack import (
    FRIENDLY_NAME,
    PcscdStack,
    _listening,
    free_port_pair,
    missing_requirements,
    running_pcscd_pid,
    wait_card,
)

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(240)]

_SHARED_PORT = 40000  # the PC/SC suite's stack port (tests/pcsc/conftest.py)


class _Reused:
    """The PC/SC suite's running stack, borrowed (never stopped here)."""

    port = _SHARED_PORT
    readers = (f"{FRIENDLY_NAME} 00 00", f"{FRIENDLY_NAME} 00 01")


@pytest.fixture(scope="module")
def pcsc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscdStack | _Reused]:
    missing = missing_requirements()
    if missing is not None:
        pytest.skip(f"PC/SC stack unavailable: {missing}")
    if running_pcscd_pid() is not None:
        if not _listening(_SHARED_PORT):
            pytest.fail("a pcscd runs in this namespace without the test vpcd entry", pytrace=False)
        yield _Reused()
        return
    port = (
        _SHARED_PORT if not (_listening(_SHARED_PORT) or _listening(_SHARED_PORT + 1)) else free_port_pair()
    )
    stack = PcscdStack(tmp_path_factory.mktemp("fuzz-pcscd"), port=port)
    try:
        stack.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the private pcscd: {exc}", pytrace=False)
    yield stack
    stack.stop()


class _Recording:
    """A served card that remembers every instruction it processed."""

    def __init__(self, card: EmvCapCard) -> None:
        self.card = card
        self.ins: list[int] = []

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def power_on(self) -> bytes:
        return self.card.power_on()

    def reset(self) -> bytes:
        return self.card.reset()

    def power_off(self) -> None:
        self.card.power_off()

    def process(self, apdu: bytes) -> bytes:
        if len(apdu) > 1:
            self.ins.append(apdu[1])
        return self.card.process(apdu)


def _served(stack: PcscdStack | _Reused, card: EmvCapCard) -> tuple[VpcdCardServer, _Recording]:
    recording = _Recording(card)
    time.sleep(0.7)  # a slot emptied just before must stay empty for one 400 ms pcscd poll
    server = VpcdCardServer(recording, port=stack.port, backoff_initial=0.01, backoff_max=0.2).start()
    assert server.wait_connected(5)
    wait_card(stack.readers[0], present=True, timeout=5)
    return server, recording


def _unplug(stack: PcscdStack | _Reused, server: VpcdCardServer) -> None:
    server.stop()
    wait_card(stack.readers[0], present=False, timeout=5)


def test_served_card_keeps_atc_and_ptc_without_allow_state_changes(
    pcsc_stack: PcscdStack | _Reused, tmp_path: Path
) -> None:
    path = tmp_path / "card.json"
    new_card("barclays", pan=TEST_PAN, imk_ac=TEST_IMK_AC, path=path).close()
    card = load_card(path)
    before = card.state
    server, recording = _served(pcsc_stack, card)
    try:
        result = CliRunner().invoke(
            main,
            ["fuzz", "card", "--target", f"pcsc:{pcsc_stack.readers[0]}", "--seed", "3",
             "--max-examples", "60", "--time-budget", "60", "--findings", str(tmp_path / "f"), "--json"],
        )  # fmt: skip
    finally:
        _unplug(pcsc_stack, server)
        card.close()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"]
    assert report["refused"] > 0  # the guard had things to refuse
    assert report["apdus"] > 3 * report["examples"] // 2
    assert card.state == before  # ATC, PTC, lifecycle and history untouched
    with load_card(path) as reread:
        assert reread.state == before  # and nothing was persisted either
    forbidden = {0xA8, 0x20, 0xAE, 0x24, 0x1E, 0x18, 0x16, 0xDA, 0xDC, 0x82, 0x88}
    assert not forbidden & set(recording.ins)
    assert 0xA4 in recording.ins


def test_verify_is_never_sent_below_two_tries(pcsc_stack: PcscdStack | _Reused, tmp_path: Path) -> None:
    from dataclasses import replace

    fresh = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC, rng=bytes)
    card = EmvCapCard(fresh.profile, replace(fresh.state, ptc=1), rng=bytes)
    server, recording = _served(pcsc_stack, card)
    try:
        result = CliRunner().invoke(
            main,
            ["fuzz", "card", "--target", f"pcsc:{pcsc_stack.readers[0]}", "--seed", "9",
             "--max-examples", "40", "--allow-state-changes", "--findings", str(tmp_path / "f"), "--json"],
        )  # fmt: skip
    finally:
        _unplug(pcsc_stack, server)
    assert result.exit_code == 0, result.output
    assert 0x20 not in recording.ins  # no VERIFY ever reached the card
    assert 0xA8 in recording.ins  # while state changes (GPO) were allowed
    assert card.state.ptc == 1
    assert card.state.atc > fresh.state.atc


def test_fuzz_serve_gives_pcsc_programs_a_hostile_card(
    pcsc_stack: PcscdStack | _Reused, tmp_path: Path
) -> None:
    from capsim.errors import CapsimError
    from capsim.reader import CapReader
    from capsim.testing.fuzz_reader import serve_hostile
    from capsim.transports.pcsc import PcscTransport

    stop = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        box["card"] = serve_hostile(seed=4, rate=0.5, port=pcsc_stack.port, stop=stop, time_budget=120)

    time.sleep(0.7)  # see _served
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_card(pcsc_stack.readers[0], present=True, timeout=10)
        outcomes = []
        for _ in range(5):
            try:
                with PcscTransport(pcsc_stack.readers[0], timeout=10) as transport:
                    outcomes.append(CapReader(transport).identify("1234").code)
            except CapsimError as exc:  # the point: only capsim errors, never a hang
                outcomes.append(type(exc).__name__)
    finally:
        stop.set()
        thread.join(10)
        wait_card(pcsc_stack.readers[0], present=False, timeout=5)
    hostile = box["card"]
    assert len(outcomes) == 5
    assert len(hostile.exchanges) >= 5  # type: ignore[attr-defined]
