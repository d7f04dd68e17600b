"""``capsim card serve`` as a process: vpcd framing, two slots, redacted logs, SIGTERM/SIGINT.

The driver side is the Python stand-in for vpcd (no pcscd needed); the end-to-end run
through the real pcscd is in ``test_cli_pcsc.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cards import DEFAULT_ATR, load_card, new_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from tests.pcsc.fakevpcd import FakeVpcd

pytestmark = pytest.mark.timeout(60)

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SELECT_CAP = bytes.fromhex("00A4040007A000000004800200")
VERIFY_1234 = bytes.fromhex("0020008008241234FFFFFFFFFF")


def _card_file(directory: Path, name: str = "card", pan: str = "5412345678901234") -> Path:
    path = directory / f"{name}.json"
    new_card("natwest", pan=pan, imk_ac=IMK, path=path).close()
    return path


def _fake_pair() -> tuple[FakeVpcd, FakeVpcd]:
    """Two stand-ins on consecutive ports, like the two slots of one vpcd entry."""
    for _ in range(50):
        first = FakeVpcd()
        try:
            second = FakeVpcd(first.port + 1)
        except OSError:
            first.close()
            continue
        return first, second
    raise RuntimeError("no two consecutive free ports")


def _serve(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "capsim", "card", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def fake() -> Iterator[FakeVpcd]:
    vpcd = FakeVpcd()
    yield vpcd
    vpcd.close()


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_vpcd_and_stops_cleanly_on_a_signal(tmp_path: Path, fake: FakeVpcd, sig: int) -> None:
    path = _card_file(tmp_path)
    proc = _serve(str(path), "--vpcd", f"127.0.0.1:{fake.port}", "--log-level", "debug")
    try:
        fake.accept(timeout=20)
        assert fake.get_atr() == DEFAULT_ATR
        fake.send(b"\x01")
        assert fake.exchange(SELECT_CAP)[-2:] == b"\x90\x00"
        assert fake.exchange(bytes.fromhex("0012000000")) == b"\x6d\x00"
        assert fake.exchange(bytes.fromhex("00A4040007A000000003101000")) == b"\x6a\x82"
        assert fake.exchange(VERIFY_1234)[-2:] in (b"\x90\x00", b"\x69\x85")
    finally:
        code, err = _stop(proc, sig)
    assert code == 0, err
    assert "Traceback" not in err
    assert "C-APDU 00200080" in err  # debug logging of the header …
    assert "241234" not in err  # … never of the PIN block
    assert fake.at_eof()  # the card was unplugged
    with load_card(path, timeout=2):  # and the card file's lock released
        pass


def test_two_card_files_fill_both_slots(tmp_path: Path) -> None:
    one = _card_file(tmp_path, "one", pan="5412345678901234")
    two = _card_file(tmp_path, "two", pan="5499999999999990")
    slot0, slot1 = _fake_pair()
    proc = _serve(str(one), str(two), "--vpcd", f"127.0.0.1:{slot0.port}")
    try:
        slot0.accept(timeout=20)
        slot1.accept(timeout=20)
        for vpcd in (slot0, slot1):
            assert vpcd.get_atr() == DEFAULT_ATR
            vpcd.send(b"\x01")
            assert vpcd.exchange(SELECT_CAP)[-2:] == b"\x90\x00"
    finally:
        code, err = _stop(proc, signal.SIGTERM)
        slot0.close()
        slot1.close()
    assert code == 0, err
    assert "slot 0" in err
    assert "slot 1" in err


def test_slot_one_uses_the_next_port(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    slot0, slot1 = _fake_pair()
    proc = _serve(str(path), "--vpcd", f"127.0.0.1:{slot0.port}", "--slot", "1")
    try:
        slot1.accept(timeout=20)
        assert slot1.get_atr() == DEFAULT_ATR
    finally:
        code, err = _stop(proc, signal.SIGTERM)
        slot0.close()
        slot1.close()
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--vpcd", "localhost"], ExitCode.INVALID_INPUT),
        (["--vpcd", "localhost:notaport"], ExitCode.INVALID_INPUT),
        (["--slot", "2"], ExitCode.USAGE),
        (["SECOND", "--slot", "1"], ExitCode.INVALID_INPUT),
        (["SECOND", "SECOND"], ExitCode.INVALID_INPUT),
    ],
)
def test_bad_arguments_exit_with_their_code_before_touching_the_card(
    tmp_path: Path, extra: list[str], expected: int
) -> None:
    path = _card_file(tmp_path)
    args = ["card", "serve", str(path), *(str(path) if a == "SECOND" else a for a in extra)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == expected, result.output
    assert "Traceback" not in result.output
    with load_card(path, timeout=1) as card:
        assert card.state.atc == card.profile.initial_atc


def test_a_missing_card_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["card", "serve", str(tmp_path / "absent.json")])
    assert result.exit_code == ExitCode.USAGE


def test_serve_waiting_for_vpcd_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    probe = FakeVpcd()
    port = probe.port
    probe.close()  # nothing listens: serve keeps retrying with backoff
    proc = _serve(str(path), "--vpcd", f"127.0.0.1:{port}")
    assert proc.stderr is not None
    assert "serving" in proc.stderr.readline()  # up and retrying
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err


def _unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_without_vpcd_says_what_it_waits_for_and_how_to_fix_it(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    port = _unused_port()
    proc = _serve(str(path), "--vpcd", f"127.0.0.1:{port}", "--report-interval", "0.3")
    try:
        waiting = f"still waiting for vpcd at 127.0.0.1:{port}: "
        seen: list[str] = []
        assert proc.stderr is not None
        while sum(waiting in line for line in seen) < 3:  # bounded by the module's timeout
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
    finally:
        code, rest = _stop(proc, signal.SIGTERM)
    err = "".join(seen) + rest
    assert code == 0, err
    assert "Traceback" not in err
    first = next(line for line in seen if "not reachable" in line)
    assert f"127.0.0.1:{port}" in first
    assert "pcscd" in first  # how to fix it, at once
    assert "vpcd driver" in first
    reports = [line.split(waiting, 1)[1] for line in seen if waiting in line]
    attempts = [int(text.split(" attempts", 1)[0]) for text in reports]
    assert attempts == sorted(attempts), reports
    assert attempts[0] >= 2, reports
    assert all(" attempts in " in text and " s (last: " in text for text in reports)


def test_report_interval_must_be_positive(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["card", "serve", str(_card_file(tmp_path)), "--report-interval", "0"])
    assert result.exit_code == ExitCode.USAGE
