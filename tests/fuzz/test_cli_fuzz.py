"""The ``capsim fuzz`` command line: serve (over the vpcd framing), progress, JSON, errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from capsim.cli import main
from capsim.testing.progress import Progress
from capsim.transports.replay import read_transcript
from tests.pcsc.fakevpcd import FakeVpcd

SELECT = bytes.fromhex("00A4040007A000000004800200")


def test_fuzz_serve_answers_a_pcsc_driver_and_records_the_session(tmp_path: Path) -> None:
    vpcd = FakeVpcd()
    record = tmp_path / "served.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsim", "fuzz", "serve", "--vpcd", f"127.0.0.1:{vpcd.port}", "--seed", "5",
         "--rate", "1.0", "--time-budget", "4", "--record", str(record), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        vpcd.accept(timeout=20)
        vpcd.send(b"\x01")  # power on
        vpcd.send(b"\x04")  # get ATR
        assert vpcd.recv_frame()[:1] == b"\x3b"
        answers = []
        for _ in range(6):
            vpcd.send(SELECT)
            answers.append(vpcd.recv_frame())
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        vpcd.close()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["seed"] == 5
    assert summary["apdus"] == 6
    honest = bytes.fromhex(
        "6F258407A0000000048002A51A500E536563757265436F6465204175748701015F2D046672656E9000"
    )
    assert any(a != honest for a in answers)  # every answer was mutated (rate 1.0) ...
    session = read_transcript(record)
    assert [r for _, r in session.exchanges] == answers  # ... and recorded as served
    assert session.meta["seed"] == "5"


def test_progress_line_is_drawn_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    ticks = iter([0.0, 1.0, 2.0, 2.1, 3.0])
    bar = Progress(out, budget=5.0, clock=lambda: next(ticks), interval=0.5, tty=True, label="fuzz card")
    bar.update(examples=10, apdus=100, findings=0)
    bar.update(examples=20, apdus=200, findings=1)
    bar.update(examples=21, apdus=210, findings=1)
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 3
    assert "20 examples (10.0/s), 200 APDUs (100/s), 1 finding(s), 2.0 s of 5.0 s" in text
    assert text.endswith("\n")


def test_progress_is_silent_without_a_stream() -> None:
    bar = Progress(None, budget=1.0)
    bar.update(examples=1)
    bar.finish()


def test_json_mode_prints_only_json_and_no_progress(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["fuzz", "card", "--target", "inproc:barclays", "--max-examples", "5", "--seed", "1",
         "--findings", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["examples"] == 5
    assert "examples (" not in result.stderr


def test_text_mode_reports_the_seed_and_a_progress_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["fuzz", "card", "--target", "inproc:natwest", "--max-examples", "5", "--findings", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "seed " in result.stdout
    assert "no invariant broke" in result.stdout
    assert "fuzz card: 5 examples" in result.stderr


def test_pin_stdin_is_validated_and_never_echoed(tmp_path: Path) -> None:
    bad = CliRunner().invoke(
        main, ["fuzz", "card", "--target", "inproc:barclays", "--pin-stdin"], input="12ab\n"
    )
    assert bad.exit_code == 13
    good = CliRunner().invoke(
        main,
        ["fuzz", "card", "--target", "inproc:barclays", "--pin-stdin", "--max-examples", "5",
         "--findings", str(tmp_path)],
        input="1234\n",
    )  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "1234" not in good.stdout + good.stderr


def test_verifier_fuzz_on_an_unusable_db_is_an_error_not_a_finding(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["fuzz", "verifier", "--db", "mysql://x/y", "--max-examples", "1"])
    assert result.exit_code == 13
    assert "capsim: error" in result.output
