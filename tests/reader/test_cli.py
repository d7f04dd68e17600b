"""``capsim code …`` and ``capsim readers`` through click's CliRunner with a temporary CAPSIM_HOME."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cards import load_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.errors import NoCardError, PcscUnavailableError, ReaderAmbiguousError, ReaderNotFoundError
from tests.utils import VECTORS


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAPSIM_HOME", str(tmp_path / "capsim-home"))
    return tmp_path / "capsim-home"


def cli(*args: str, stdin: str | None = "1234\n") -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_fresh_machine_respond(home: Path) -> None:
    first = cli("code", "respond", "--challenge", "12345678")
    assert first.exit_code == 0, first.output
    code = first.stdout.strip().splitlines()[-1]
    assert len(code) == 8
    assert code.isdigit()
    assert first.stdout == code + "\n"  # stdout holds the code only
    assert "PIN: " in first.stderr  # the hidden prompt
    assert "1234\n" not in first.stderr  # the typed PIN is not echoed
    assert "its PIN is 1234" in first.stderr  # printed once, on creation
    card_file = home / "card.json"
    keys_file = home / "card.issuer-keys.json"
    assert card_file.stat().st_mode & 0o777 == 0o600
    assert keys_file.stat().st_mode & 0o777 == 0o600
    second = cli("code", "respond", "--challenge", "12345678", "--json", "--pin-stdin")
    assert second.exit_code == 0, second.output
    assert "its PIN is" not in second.stderr
    doc = json.loads(second.stdout)
    assert doc["mode"] == "respond"
    assert doc["profile"] == "mc-cap"
    assert doc["atc"] == 2
    assert len(doc["code"]) == 8
    assert "cryptogram" not in doc
    card = load_card(card_file)
    try:
        assert card.state.atc == 2
        assert card.profile.name == "secur-acces"
    finally:
        card.close()


def test_wrong_pin_then_blocked(home: Path) -> None:
    wrong = cli("code", "identify", "--pin-stdin", stdin="9999\n")
    assert wrong.exit_code == ExitCode.WRONG_PIN == 3
    assert wrong.stderr.strip().splitlines()[-1] == "capsim: error: wrong PIN, 2 tries left"
    _no_traceback(wrong)
    again = cli("code", "identify", "--pin-stdin", stdin="9999\n")
    assert again.exit_code == 3
    assert "1 try left" in again.stderr
    last = cli("code", "identify", "--pin-stdin", stdin="9999\n")
    assert last.exit_code == ExitCode.BLOCKED  # the wrong PIN that used the last try
    assert "the card's PIN is now blocked" in last.stderr
    blocked = cli("code", "identify", "--pin-stdin", stdin="1234\n")
    assert blocked.exit_code == ExitCode.BLOCKED == 4
    assert blocked.stderr.strip().startswith("capsim: error: PIN blocked")
    _no_traceback(blocked)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["respond", "--challenge", "123456789"], "challenge: expected 1 to 8 ASCII digits"),
        (["respond", "--challenge", "12 34"], "challenge"),
        (["sign", "--challenge", "1", "--amount", "1.234", "--currency", "EUR"], "at most 2 decimal"),
        (["sign", "--challenge", "1", "--amount", "5", "--currency", "EURO"], "currency"),
        (["tds", *(["--field", "1"] * 11)], "1 to 10 TDS fields"),
        (["tds", "--field", "12345678901"], "--field #1"),
        (["identify", "--aid", "A000"], "--aid"),
    ],
)
def test_bad_input_touches_nothing(home: Path, args: list[str], message: str) -> None:
    result = cli("code", *args, "--pin-stdin")
    assert result.exit_code == ExitCode.INVALID_INPUT == 13
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / "card.json").exists()  # nothing was created, so nothing was spent


def test_bad_pin_format(home: Path) -> None:
    result = cli("code", "identify", "--pin-stdin", stdin="12\n")
    assert result.exit_code == 13
    assert "pin: expected 4 to 12 ASCII digits" in result.stderr


def test_missing_challenge_is_a_usage_error(home: Path) -> None:
    assert cli("code", "respond").exit_code == ExitCode.USAGE


def test_sign_amount_currency_and_tds(home: Path) -> None:
    sign = cli("code", "sign", "--challenge", "4711", "--amount", "15.00", "--currency", "EUR", "--json")
    assert sign.exit_code == 0, sign.output
    assert json.loads(sign.stdout)["mode"] == "sign"
    missing = cli("code", "sign", "--challenge", "4711", "--pin-stdin")
    assert missing.exit_code == 13
    assert "asks for an amount" in missing.stderr
    tds = cli("code", "tds", "--field", "0530026806", "--field", "42", "--pin-stdin")
    assert tds.exit_code == 0, tds.output
    assert len(tds.stdout.strip()) == 8


def test_trace_is_redacted_unless_asked(home: Path) -> None:
    plain = cli("code", "identify", "--reader", "inproc:rabobank", "--trace", "--pin-stdin")
    assert plain.exit_code == 0, plain.output
    assert "> 0020008008FFFFFFFFFFFFFFFF" in plain.stderr
    assert "241234" not in plain.stderr
    assert "5A08FFFFFFFFFFFFFFFF" in plain.stderr  # the PAN, redacted
    assert "1234567890123456" not in plain.stderr
    shown = cli(
        "code", "identify", "--reader", "inproc:rabobank", "--trace", "--show-sensitive", "--pin-stdin"
    )
    assert "> 0020008008241234FFFFFFFFFF" in shown.stderr
    assert "5A081234567890123456" in shown.stderr


def test_explain_and_replay(home: Path) -> None:
    path = VECTORS / "transcripts/natwest-fc09.txt"
    result = cli(
        "code", "respond", "--challenge", "12345678", "--reader", f"replay:{path}",
        "--reader-profile", "mc-cap", "--explain", "--pin-stdin",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "04822527\n"  # the explanation goes to stderr
    assert "IPB 00001F00000000000FFFFF00000000008000 selects 26 bits of D:" in result.stderr
    assert sum(1 for line in result.stderr.splitlines() if "code bit" in line) == 26
    rabo_path = VECTORS / "transcripts/rabobank-tds.txt"
    rabo = cli(
        "code", "tds", "--field", "0530026806", "--reader", f"replay:{rabo_path}",
        "--json", "--show-sensitive", "--pin-stdin",
    )  # fmt: skip
    doc = json.loads(rabo.stdout)
    assert doc["code"] == "08180460"
    assert doc["tds_mac"] == "D2EC6598EC48C83B"


def test_no_cap_application(home: Path) -> None:
    result = cli(
        "code", "identify", "--reader", "inproc:natwest", "--reader-profile", "visa-dpa", "--pin-stdin"
    )
    assert result.exit_code == ExitCode.NO_CAP_APPLICATION == 8
    assert "no CAP application on the card" in result.stderr
    _no_traceback(result)


def test_card_error_on_replay_divergence(home: Path) -> None:
    path = VECTORS / "transcripts/natwest-fc09.txt"
    result = cli("code", "respond", "--challenge", "1", "--reader", f"replay:{path}", "--pin-stdin")
    assert result.exit_code == ExitCode.CARD_ERROR == 9
    assert "differs from the recording" in result.stderr


def test_unknown_reader_scheme(home: Path) -> None:
    result = cli("code", "identify", "--reader", "usb:0", "--pin-stdin")
    assert result.exit_code == 13
    assert "reader: expected " in result.stderr
    assert "inproc:TEMPLATE" in result.stderr


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (ReaderNotFoundError("no PC/SC reader matches 'Foo'"), ExitCode.READER_NOT_FOUND),
        (ReaderAmbiguousError("'ACS' matches 2 readers", ["ACS A", "ACS B"]), ExitCode.READER_NOT_FOUND),
        (PcscUnavailableError("PC/SC service unavailable (is pcscd running?)"), ExitCode.PCSC_UNAVAILABLE),
        (NoCardError("no card in reader 'Foo'"), ExitCode.NO_CARD),
    ],
)
def test_pcsc_errors_map_to_exit_codes(
    home: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, exit_code: ExitCode
) -> None:
    """The PC/SC transport's documented errors (its own tests drive real pcscd) reach the user as one line."""

    class FailingTransport:
        def __init__(self, reader: str, *, timeout: float = 10.0, wait: float | None = None) -> None:
            raise error

    fake = types.SimpleNamespace(PcscTransport=FailingTransport, list_readers=lambda: ["Foo 00 00"])
    monkeypatch.setattr("capsim.transports._pcsc_module", lambda: fake)
    result = cli("code", "identify", "--reader", "pcsc:Foo", "--pin-stdin")
    assert result.exit_code == exit_code
    assert result.stderr == f"capsim: error: {error}\n"
    _no_traceback(result)


def test_readers(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from capsim.transports.pcsc import ReaderState

    states = [
        ReaderState(0, "Virtual PCD 00 00", True, bytes.fromhex("3B8A80")),
        ReaderState(1, "Virtual PCD 00 01", False, b""),
    ]
    fake = types.SimpleNamespace(reader_states=lambda: states)
    monkeypatch.setattr("capsim.transports._pcsc_module", lambda: fake)
    result = cli("readers", stdin=None)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:2] == ["0  Virtual PCD 00 00  card  ATR 3B8A80", "1  Virtual PCD 00 01  no card"]
    assert any(
        line.startswith(f"file:{home / 'card.json'}") and "created on first use" in line for line in lines
    )
    assert any(line.startswith("inproc:secur-acces") for line in lines)
    doc = json.loads(cli("readers", "--json", stdin=None).stdout)
    assert doc["pcsc"] == ["pcsc:Virtual PCD 00 00", "pcsc:Virtual PCD 00 01"]
    assert doc["readers"] == [
        {"index": 0, "name": "Virtual PCD 00 00", "spec": "pcsc:0", "card_present": True, "atr": "3B8A80"},
        {"index": 1, "name": "Virtual PCD 00 01", "spec": "pcsc:1", "card_present": False, "atr": None},
    ]
    assert doc["note"] is None


def test_readers_without_pcsc(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> None:
        raise PcscUnavailableError("PC/SC service unavailable (is pcscd running?)")

    monkeypatch.setattr("capsim.transports._pcsc_module", unavailable)
    result = cli("readers", stdin=None)
    assert result.exit_code == 0
    assert "inproc:natwest" in result.stdout
    assert "PC/SC readers not listed" in result.stderr
