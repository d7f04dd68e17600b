"""A private pcscd with its own vpcd reader, for the PC/SC tests and the benchmark (pcsc.md §3, §8).

The daemon runs in the foreground as a subprocess, with ``-c DIR`` replacing the system's
``/etc/reader.conf.d`` by one vpcd entry on a non-default port. It is stopped by its PID
(TERM, then wait), never by name. Only one pcscd can run per mount namespace, so the test
command runs inside ``unshare --mount --net`` with a tmpfs on ``/run/pcscd``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
RUN_DIR = Path("/run/pcscd")
COMM_SOCKET = RUN_DIR / "pcscd.comm"
PID_FILE = RUN_DIR / "pcscd.pid"
FRIENDLY_NAME = "CAPSIM Virtual"


def find_pcscd() -> str | None:
    """Path of the pcscd binary (it lives in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("pcscd")
    if found:
        return found
    for candidate in ("/usr/sbin/pcscd", "/usr/local/sbin/pcscd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_requirements() -> str | None:
    """Why the PC/SC stack cannot run here, or ``None`` when it can."""
    if find_pcscd() is None:
        return "pcscd is not installed (apt-get install pcscd)"
    if not VPCD_DRIVER.exists():
        return f"the vpcd driver {VPCD_DRIVER} is missing (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.System  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"pyscard cannot be imported ({exc}); pip install pyscard"
    return None


def call_with_timeout(func: Callable[[], T], timeout: float, what: str = "PC/SC call") -> T:
    """Run ``func`` on a worker thread and give up after ``timeout`` seconds (hard bound)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"timeout:{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"{what} did not finish within {timeout} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (read from /proc: connecting would insert a card)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pcscd_pid() -> int | None:
    """PID of a pcscd already running in this mount namespace, if any."""
    try:
        text = PID_FILE.read_bytes().replace(b"\0", b"").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if _pid_alive(pid) else None


class PcscdStack:
    """One private pcscd process with one vpcd entry (two slots: ``port`` and ``port + 1``)."""

    def __init__(self, workdir: Path, *, port: int = 40000, name: str = FRIENDLY_NAME) -> None:
        self.workdir = workdir
        self.port = port
        self.name = name
        self.conf_dir = workdir / "reader.conf.d"
        self.log_path = workdir / "pcscd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: object = None
        self.starts = 0
        #: time.monotonic() when a card last left each slot (see settle_slot).
        self.unplugged_at: dict[int, float] = {}

    def note_unplugged(self, slot: int, when: float | None = None) -> None:
        """Record that the card in ``slot`` was just unplugged (or at ``when``)."""
        self.unplugged_at[slot] = time.monotonic() if when is None else when

    def settle_slot(self, slot: int, gap: float = 0.6) -> None:
        """Wait until ``slot`` has been empty for ``gap`` seconds.

        pcscd sees a removal only when one of its 400 ms presence polls finds the slot empty;
        a card plugged in sooner looks as if it never left, and pcscd keeps a stale state.
        """
        unplugged = self.unplugged_at.get(slot)
        if unplugged is not None:
            time.sleep(max(0.0, unplugged + gap - time.monotonic()))

    @property
    def readers(self) -> list[str]:
        """The two reader names of the vpcd entry, slot 0 then slot 1."""
        return [f"{self.name} 00 00", f"{self.name} 00 01"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "capsim-vpcd").write_text(
            f'FRIENDLYNAME "{self.name}"\n'
            f"DEVICENAME   /dev/null:{self.port}\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            f"CHANNELID    {self.port}\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        pcscd = find_pcscd()
        if pcscd is None:
            raise RuntimeError("pcscd is not installed")
        other = running_pcscd_pid()
        if other is not None:
            raise RuntimeError(
                f"a pcscd (pid {other}) already runs in this mount namespace; run the PC/SC tests "
                "through scripts/test.sh (private namespace) or stop that pcscd first"
            )
        self.write_config()
        log = self.log_path.open("ab")
        self._log = log
        self._proc = subprocess.Popen(
            [pcscd, "--foreground", "-c", str(self.conf_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pcscd exited with {self._proc.returncode}: {self.tail_log()}")
            if COMM_SOCKET.is_socket() and _listening(self.port) and _listening(self.port + 1):
                return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"pcscd not ready within {timeout} s: {self.tail_log()}")

    def stop(self, timeout: float = 15.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._proc = None
        log = self._log
        self._log = None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on the loopback (for a vpcd entry)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65000 and not _listening(port) and not _listening(port + 1):
            return port
    return 40000


def card_present(reader: str) -> bool:
    """Whether pcscd currently sees a card in ``reader`` (one non-blocking status query)."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise RuntimeError(f"SCardEstablishContext: {scard.SCardGetErrorMessage(hresult)}")
    try:
        hresult, states = scard.SCardGetStatusChange(context, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
        if hresult != scard.SCARD_S_SUCCESS:
            raise RuntimeError(f"SCardGetStatusChange: {scard.SCardGetErrorMessage(hresult)}")
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(context)


def wait_card(reader: str, *, present: bool = True, timeout: float = 5.0) -> None:
    """Wait until pcscd's 400 ms presence poll sees the card inserted (or removed)."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise RuntimeError(f"SCardEstablishContext: {scard.SCardGetErrorMessage(hresult)}")
    try:
        deadline = time.monotonic() + timeout
        known = scard.SCARD_STATE_UNAWARE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = "present" if present else "absent"
                raise TimeoutError(f"card in {reader!r} not {state} within {timeout} s")
            wait_ms = max(1, min(int(remaining * 1000), 250))
            hresult, states = scard.SCardGetStatusChange(context, wait_ms, [(reader, known)])
            if hresult == scard.SCARD_E_TIMEOUT:
                continue
            if hresult != scard.SCARD_S_SUCCESS:
                raise RuntimeError(f"SCardGetStatusChange: {scard.SCardGetErrorMessage(hresult)}")
            event = states[0][1]
            if bool(event & scard.SCARD_STATE_PRESENT) == present:
                return
            known = event & ~scard.SCARD_STATE_CHANGED
    finally:
        scard.SCardReleaseContext(context)
