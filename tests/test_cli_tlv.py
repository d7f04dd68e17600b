"""``capsim tlv decode`` and ``capsim tlv dol`` through the real click entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from capsim.cli import main
from capsim.cli._common import ExitCode

FCI = "6F108407A0000000048002A5055F2D02656E"
EXPECTED_FCI = """\
6F File Control Information (FCI) Template (16 bytes)
  84 Dedicated File (DF) Name (7 bytes) A0000000048002
  A5 FCI Proprietary Template (5 bytes)
    5F2D Language Preference (2 bytes) 656E "en"
"""
RECORD_WITH_PAN = "700A5A0846581234567890099000"


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_acceptance_example() -> None:
    code, out, err = run("tlv", "decode", FCI)
    assert code == 0, err
    assert out == EXPECTED_FCI


def test_hex_with_spaces_and_several_arguments() -> None:
    code, out, _ = run("tlv", "decode", "6F10 8407A0000000048002", "a5055f2d02656e")
    assert code == 0
    assert out == EXPECTED_FCI


def test_stdin() -> None:
    code, out, _ = run("tlv", "decode", "-", stdin="6F10 8407A0000000048002\nA5055F2D02656E\n")
    assert code == 0
    assert out == EXPECTED_FCI


def test_sensitive_redacted_by_default() -> None:
    code, out, _ = run("tlv", "decode", "-r", RECORD_WITH_PAN)
    assert code == 0
    assert "4658123456789009" not in out
    assert "<redacted 8 bytes>" in out
    assert out.splitlines()[-1] == "SW 9000 normal processing: command completed"


def test_show_sensitive() -> None:
    code, out, _ = run("tlv", "decode", "--show-sensitive", "--response", RECORD_WITH_PAN)
    assert code == 0
    assert "4658123456789009" in out


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("6F1084", "not valid BER-TLV"),
        ("zz", "'z' (position 1) is not a hex digit"),
        ("6F1", "3 hex digits: an odd count"),
        ("C180", "indefinite"),
    ],
)
def test_bad_input_is_one_line_exit_13(arg: str, message: str) -> None:
    code, out, err = run("tlv", "decode", arg)
    assert code == ExitCode.INVALID_INPUT == 13
    assert out == ""
    assert err.startswith("capsim: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_empty_stdin() -> None:
    code, _, err = run("tlv", "decode", "-", stdin="   \n")
    assert code == 13
    assert "HEX: expected hex digits, got nothing" in err


def test_response_too_short() -> None:
    code, _, err = run("tlv", "decode", "-r", "90")
    assert code == 13
    assert "status word" in err


def test_missing_argument_is_usage_error() -> None:
    code, _, _ = run("tlv", "decode")
    assert code == ExitCode.USAGE


def test_dol() -> None:
    code, out, _ = run("tlv", "dol", "9F02069F03069F1A0295055F2A029A039C019F3704")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["0", "9F02", "6"]
    assert "Amount, Authorised (Numeric)" in lines[0]
    assert lines[7].split()[:3] == ["25", "9F37", "4"]
    assert lines[-1] == "total 29 bytes"


def test_dol_malformed() -> None:
    code, _, err = run("tlv", "dol", "9F02")
    assert code == 13
    assert "not a valid DOL" in err


def test_real_process_no_traceback() -> None:
    # The installed entry point as a user runs it: python -m capsim.
    ok = subprocess.run(
        [sys.executable, "-m", "capsim", "tlv", "decode", FCI],
        capture_output=True, text=True, check=False,
    )
    assert ok.returncode == 0
    assert ok.stdout == EXPECTED_FCI
    bad = subprocess.run(
        [sys.executable, "-m", "capsim", "tlv", "decode", "6F1084"],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 13
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
