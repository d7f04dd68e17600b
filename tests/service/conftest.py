"""The HTTP service under test: ``capsim verifier serve`` as a real subprocess on a free
loopback port, over a real SQLite file or the throwaway PostgreSQL cluster, with a real card
file whose codes come from the real reader (tests/cli/helpers.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.cli.helpers import World, make_world

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    """A running ``capsim verifier serve`` and its world (card, keys, database, clients)."""

    world: World
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def http(self, key: str | None = "operator") -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {self.keys.get(key, key)}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def add_client(self, name: str, *args: str) -> str:
        run = self.world.v("client", "add", name, *args, "--json")
        assert run.exit_code == 0, run.stderr
        key: str = run.json()["key"]
        self.keys[name] = key
        return key

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


def start_service(
    tmp: Path, *, db: str | None = None, workers: int = 1, extra: tuple[str, ...] = ()
) -> Service:
    """A world (``make_world``) with an operator and a verification client, and its server."""
    world = make_world(tmp, db=db)
    port = free_port()
    log = tmp / "serve.log"
    env = {
        **os.environ,
        "CAPSIM_HOME": str(world.cli.home),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CAPSIM_DB", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    service = Service(world=world, base=f"http://127.0.0.1:{port}", proc=None, log=log)  # type: ignore[arg-type]
    service.add_client("operator", "--scope", "operator")
    service.add_client("verification", "--scope", "verification")
    with log.open("wb") as out:
        service.proc = subprocess.Popen(
            [sys.executable, "-m", "capsim", "verifier", "serve", "--db", world.db, "--port", str(port),
             "--workers", str(workers), "--log-level", "info", *extra],
            cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(service.base + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if service.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the service did not start:\n" + service.stop())
        time.sleep(0.1)
    return service


@pytest.fixture(scope="module")
def sqlite_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service on a SQLite file, shared by a test module."""
    service = start_service(tmp_path_factory.mktemp("svc"))
    yield service
    service.stop()
