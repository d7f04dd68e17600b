"""What the command line accepts and how it says no: one hex form everywhere, APDUs checked
before anything is sent, messages in the user's own terms, a JSON error object under
``--json`` (docs/cli.md, "Input" and "JSON errors")."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.errors import ValidationError
from capsim.hexinput import parse_command_apdu, parse_hex
from capsim.storage import read_card_file
from tests.cli.helpers import Cli, Run, make_world

# ------------------------------------------------------------------------------ one hex parser


@st.composite
def _hex_forms(draw: st.DrawFn) -> tuple[bytes, str]:
    """Bytes and one way a person might type them: case, 0x, colons, spaces."""
    value = draw(st.binary(min_size=1, max_size=40))
    pairs = [f"{b:02x}" for b in value]
    pairs = [p.upper() if draw(st.booleans()) else p for p in pairs]
    sep = draw(st.sampled_from(["", " ", ":", "  ", "\t", " : "]))
    text = sep.join(pairs)
    if draw(st.booleans()):
        text = draw(st.sampled_from(["0x", "0X"])) + text
    pad = draw(st.sampled_from(["", " ", "\n"]))
    return value, pad + text + pad


@given(_hex_forms())
def test_every_accepted_hex_form_round_trips(case: tuple[bytes, str]) -> None:
    value, text = case
    assert parse_hex("HEX", text) == value


@given(st.binary(min_size=1, max_size=20), st.sampled_from(["", ":", " "]))
def test_an_odd_digit_count_is_named_as_such(value: bytes, sep: str) -> None:
    digits = value.hex()
    text = sep.join(digits[i : i + 2] for i in range(0, len(digits), 2)) + sep + "A"  # one digit too many
    with pytest.raises(ValidationError, match=rf"^X: {len(digits) + 1} hex digits: an odd count"):
        parse_hex("X", text)


@given(
    st.binary(min_size=1, max_size=20),
    st.sampled_from("gGzZ-.,;xX!é/"),
    st.integers(min_value=0, max_value=40),
)
def test_the_offending_character_and_its_position_are_named(value: bytes, bad: str, where: int) -> None:
    digits = value.hex()
    at = min(where, len(digits))
    text = digits[:at] + bad + digits[at:]
    with pytest.raises(ValidationError) as info:
        parse_hex("--aid", text)
    assert str(info.value).startswith(f"--aid: {bad!r} (position {at + 1}) is not a hex digit")


def test_a_secret_is_never_echoed_in_a_hex_error() -> None:
    with pytest.raises(ValidationError) as info:
        parse_hex("component 1", "0123456789ABCDEFQ", secret=True)
    assert "Q" not in str(info.value)
    assert "position 17" in str(info.value)
    with pytest.raises(ValidationError) as info:
        parse_hex("component 1", "0123456789ABCDEF", min_bytes=16, max_bytes=16, secret=True)
    assert "0123" not in str(info.value)
    assert "expected 16 bytes, got 8 bytes" in str(info.value)


def _card(tmp_path: Path) -> tuple[Cli, Path]:
    cli = Cli(tmp_path / "home")
    card = tmp_path / "card.json"
    cli.ok("card", "new", str(card))
    return cli, card


@pytest.mark.parametrize(
    ("form", "bad_message"),
    [
        ("9F:17:01:03", None),
        ("0x9F170103", None),
        ("9f 17 01 03", None),
        ("0X9f:17 01:03", None),
        ("9F17010", "7 hex digits: an odd count"),
        ("9F:17:01:0", "7 hex digits: an odd count"),
        ("9F17Z103", "'Z' (position 5) is not a hex digit"),
    ],
)
def test_tlv_decode_takes_every_hex_form(form: str, bad_message: str | None) -> None:
    run = Cli(Path("/nonexistent-home"))("tlv", "decode", form)
    if bad_message is None:
        assert run.exit_code == 0, run.stderr
        assert run.stdout.startswith("9F17 ")
    else:
        assert run.exit_code == ExitCode.INVALID_INPUT
        assert run.stderr.startswith(f"capsim: error: HEX: {bad_message}")


@pytest.mark.parametrize("form", ["80CA9F1700", "0x80CA9F1700", "80:CA:9F:17:00", "80 ca 9f 17 00"])
def test_card_apdu_takes_every_hex_form(tmp_path: Path, form: str) -> None:
    cli, card = _card(tmp_path)
    run = cli("card", "apdu", str(card), form)
    assert run.exit_code == 0, run.stderr
    assert "> 80CA9F1700" in run.stdout
    assert "9F17" in run.stdout


def test_card_apdu_names_an_odd_digit_count(tmp_path: Path) -> None:
    cli, card = _card(tmp_path)
    run = cli("card", "apdu", str(card), "80CA9F170")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.stderr == "capsim: error: APDU 1: 9 hex digits: an odd count (two digits make a byte)\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0xA0:00:00:00:04:80:02", None),
        ("a0 00 00 00 04 80 02", None),
        ("A00000000480", None),
        ("A000000004800", "--aid: 13 hex digits: an odd count"),
        ("A0000000048O02", "--aid: 'O' (position 12) is not a hex digit"),
        ("A000", "--aid: expected 5 to 16 bytes, got 2 bytes (A000)"),
    ],
)
def test_code_aid_takes_every_hex_form(tmp_path: Path, value: str, message: str | None) -> None:
    cli = Cli(tmp_path / "home")
    run = cli(
        "code", "identify", "--reader", "inproc:secur-acces", "--aid", value, "--pin-stdin", stdin="1234\n"
    )
    if message is None:
        assert run.exit_code == 0, run.stderr
        assert len(run.stdout.strip()) == 8
    else:
        assert run.exit_code == ExitCode.INVALID_INPUT
        assert message in run.stderr


# ------------------------------------------------------------------------ APDUs checked first


@pytest.mark.parametrize(
    ("apdus", "message"),
    [
        (("",), "APDU 1: empty: a command APDU has at least the 4 header bytes"),
        (("80CA9F",), "APDU 1: too short (3 bytes): a command APDU has at least the 4 header bytes"),
        (("80CA9F1700", "00A4"), "APDU 2: too short (2 bytes)"),
        (("00A4040007A0000000",), "APDU 1: not a well-formed command APDU: short Lc 7"),
    ],
)
def test_short_or_malformed_apdus_are_refused_before_anything_is_sent(
    tmp_path: Path, apdus: tuple[str, ...], message: str
) -> None:
    cli, card = _card(tmp_path)
    before = card.read_bytes()
    run = cli("card", "apdu", str(card), *apdus)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.stdout
    assert message in run.stderr
    assert run.stdout == ""  # not even the ATR: the card was never powered on
    assert card.read_bytes() == before
    read_card_file(card)


def test_parse_command_apdu_accepts_every_case() -> None:
    for text in ("80CA9F17", "80CA9F1700", "0020008008241234FFFFFFFFFF", "00A4040007A000000004800200"):
        assert parse_command_apdu("APDU", text).hex().upper() == text


# ------------------------------------------------------------------------------ JSON errors


def _json_error(run_stdout: str) -> dict[str, object]:
    obj = json.loads(run_stdout)
    error = obj["error"]
    assert isinstance(error, dict)
    assert set(error) == {"type", "message", "exit_code"}
    return error


def test_code_json_prints_an_error_object(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    run = cli("code", "identify", "--reader", f"file:{tmp_path / 'missing.json'}", "--json", "--pin-stdin",
              stdin="1234\n")  # fmt: skip
    assert run.exit_code == ExitCode.STATE_FILE
    error = _json_error(run.stdout)
    assert error["type"] == "state_file"
    assert error["exit_code"] == ExitCode.STATE_FILE
    assert run.stderr == f"capsim: error: {error['message']}\n"
    # a wrong PIN too: the exit code is unchanged
    run = cli("code", "identify", "--reader", "inproc:secur-acces", "--json", "--pin-stdin", stdin="9999\n")
    assert run.exit_code == ExitCode.WRONG_PIN
    assert _json_error(run.stdout) == {
        "type": "wrong_pin",
        "message": run.stderr.removeprefix("capsim: error: ").rstrip("\n"),
        "exit_code": 3,
    }


def test_card_show_json_prints_an_error_object(tmp_path: Path) -> None:
    run = Cli(tmp_path / "home")("card", "show", str(tmp_path / "missing.json"), "--json")
    assert run.exit_code == ExitCode.STATE_FILE
    assert _json_error(run.stdout)["type"] == "state_file"
    assert run.stderr.startswith("capsim: error: card file ")
    # without --json, stdout stays empty
    run = Cli(tmp_path / "home")("card", "show", str(tmp_path / "missing.json"))
    assert (run.exit_code, run.stdout) == (ExitCode.STATE_FILE, "")


def test_verify_json_prints_the_same_error_object(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    cid = world.enroll()
    op = world.operation(cid, "identify")
    run = world.verify(op["operation_id"], "12", "--json")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert _json_error(run.stdout) == {
        "type": "invalid_input",
        "message": "code: expected exactly 8 ASCII digits",
        "exit_code": 13,
    }
    run = world.verify(op["operation_id"], "00000000", "--json")
    assert run.exit_code == ExitCode.REJECTED
    assert json.loads(run.stdout) == {
        "accepted": False,
        "error": {"type": "rejected", "message": "code rejected", "exit_code": 10},
    }
    run = Cli(tmp_path / "home")("verify", "op-x", "12345678", "--db", str(tmp_path / "typo.db"), "--json")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "no verifier database" in _json_error(run.stdout)["message"]  # type: ignore[operator]


def test_readers_json_reports_errors_the_same_way(tmp_path: Path) -> None:
    """``readers`` has no failure of its own today (a PC/SC problem is a note): its --json
    output is one object, and its errors would go through the same handler."""
    run = Cli(tmp_path / "home")("readers", "--json")
    assert run.exit_code == 0, run.stderr
    assert set(json.loads(run.stdout)) == {"readers", "pcsc", "virtual", "note"}
    command = main.get_command(click.Context(main), "readers")
    assert command is not None
    assert getattr(command.callback, "handles_errors", False)


def _commands(group: click.Group, ctx: click.Context, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None:
            continue
        if isinstance(cmd, click.Group):
            out += _commands(cmd, ctx, f"{prefix}{name} ")
        else:
            out.append((f"{prefix}{name}", cmd))
    return out


def test_every_command_with_json_reports_errors_through_handle_errors() -> None:
    """One place: a command with --json whose callback is not wrapped could fail silently."""
    missing = [
        name
        for name, cmd in _commands(main, click.Context(main))
        if any("--json" in p.opts for p in cmd.params if isinstance(p, click.Option))
        and not getattr(cmd.callback, "handles_errors", False)
    ]
    assert missing == []


# ------------------------------------------------------------------- messages in user terms


def _sign(cli: Cli, *args: str, reader: str = "inproc:secur-acces") -> Run:
    return cli("code", "sign", "--reader", reader, "--pin-stdin", *args, stdin="1234\n")


def test_an_unknown_currency_is_called_unknown_not_malformed(tmp_path: Path) -> None:
    run = _sign(Cli(tmp_path / "home"), "--amount", "1.00", "--currency", "XXX")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.stderr == (
        "capsim: error: currency: 'XXX' is not a known ISO 4217 currency "
        "(one with minor units, like EUR or 978)\n"
    )
    run = _sign(Cli(tmp_path / "home"), "--amount", "1.00", "--currency", "999")
    assert "'999' is not a known ISO 4217 currency" in run.stderr
    run = _sign(Cli(tmp_path / "home"), "--amount", "1.00", "--currency", "EU")
    assert "expected an ISO 4217 code, 3 letters (EUR) or 3 digits (978), got 'EU'" in run.stderr


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("999999999999", "EUR", "amount: at most 9999999999.99 EUR, got '999999999999'"),
        ("999999999999", "JPY", None),
        ("1000000000000", "JPY", "amount: at most 999999999999 JPY, got '1000000000000'"),
        ("9999999999.99", None, None),
        ("10000000000", None, "amount: at most 9999999999.99, got '10000000000'"),
        ("1.5", "JPY", "amount: no decimals for JPY, got '1.5'"),
        ("1.234", "EUR", "amount: at most 2 decimals for EUR, got '1.234'"),
        ("1.2345", "KWD", "amount: at most 3 decimals for KWD, got '1.2345'"),
        ("1.234", None, "amount: at most 2 decimals without a currency, got '1.234'"),
    ],
)
def test_amount_errors_speak_of_what_the_user_typed(
    tmp_path: Path, amount: str, currency: str | None, message: str | None
) -> None:
    # natwest (IAF A0) takes an amount without a currency, secur-acces (IAF 80) wants both
    reader = "inproc:secur-acces" if currency else "inproc:natwest"
    run = _sign(
        Cli(tmp_path / "home"),
        "--amount",
        amount,
        *(("--currency", currency) if currency else ()),
        reader=reader,
    )
    if message is None:
        assert run.exit_code == 0, run.stderr
    else:
        assert run.exit_code == ExitCode.INVALID_INPUT
        assert run.stderr == f"capsim: error: {message}\n"
        assert "minor units" not in run.stderr
        assert "decimal(s)" not in run.stderr


def test_tds_fields_are_named_as_options(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    fields = ("--field", "12", "--field", "1x")
    run = cli("code", "tds", "--reader", "inproc:secur-acces", *fields, "--pin-stdin", stdin="1234\n")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.stderr == "capsim: error: --field #2: expected 1 to 10 ASCII digits, got '1x'\n"
    many = [a for i in range(11) for a in ("--field", str(i))]
    run = cli("code", "tds", "--reader", "inproc:secur-acces", *many, "--pin-stdin", stdin="1234\n")
    assert run.stderr == "capsim: error: --field: expected 1 to 10 TDS fields, got 11\n"


def test_a_file_of_the_wrong_kind_is_named_with_the_right_article(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    wrong = tmp_path / "keys.json"
    wrong.write_text('{"format": "something-else", "version": 1}\n')
    wrong.chmod(0o600)
    run = cli("card", "new", str(tmp_path / "c.json"), "--issuer-keys", str(wrong))
    assert run.exit_code == ExitCode.STATE_FILE
    assert f"{wrong} is not an issuer keys file" in run.stderr
    assert " a issuer" not in run.stderr


def test_card_new_names_the_card_files_missing_directory(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    target = tmp_path / "nonexistent" / "c.json"
    run = cli("card", "new", str(target))
    assert run.exit_code == ExitCode.STATE_FILE
    assert run.stderr == f"capsim: error: card file {target}: directory {target.parent} does not exist\n"
    assert "issuer" not in run.stderr


# ---------------------------------------------------------------------------- demo --db typo


def test_demo_refuses_a_missing_db_unless_told_to_create_it(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    typo = tmp_path / "typo.db"
    run = cli("demo", "--db", str(typo), "--json")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.stderr == (
        f"capsim: error: --db: no database at {typo}; pass --create-db to create it there, "
        "or leave --db out for a throwaway one\n"
    )
    assert _json_error(run.stdout)["type"] == "invalid_input"
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the data directory's files
    run = cli("demo", "--db", str(typo), "--create-db")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert f"capsim: note: created the verifier database {typo} (--create-db)" in run.stderr
    assert typo.is_file()
    # the database now exists: a second run needs no flag and says nothing about creating it
    run = cli("demo", "--db", str(typo))
    assert run.exit_code == 0, run.stdout + run.stderr
    assert "created the verifier database" not in run.stderr


# --------------------------------------------------------- a currency the card does not sign


def test_a_currency_the_card_does_not_sign_warns_and_names_the_scale(tmp_path: Path) -> None:
    """natwest's IAF is A0: amount, no currency. JPY has no decimals, so "15" is 15 minor units
    where without --currency it is 1500: the code changes, and the user is told why."""
    cli = Cli(tmp_path / "home")
    run = _sign(cli, "--amount", "15", "--currency", "JPY", reader="inproc:natwest")
    assert run.exit_code == 0, run.stderr
    assert run.stderr == (
        "capsim: warning: the card's IAF (A0) does not sign a currency: JPY is not sent, but it scaled "
        "the amount: 15 at 0 decimals is 15 minor units (2 decimals without a currency)\n"
    )
    # without the currency: the default scale, no warning
    run = _sign(cli, "--amount", "15", reader="inproc:natwest")
    assert (run.exit_code, run.stderr) == (0, "")
    # a card that signs the currency (secur-acces, IAF 80): no warning
    run = _sign(cli, "--amount", "15", "--currency", "JPY")
    assert (run.exit_code, run.stderr) == (0, "")
    # a currency with 2 decimals does not change the scale: no warning
    run = _sign(cli, "--amount", "15.00", "--currency", "EUR", reader="inproc:natwest")
    assert (run.exit_code, run.stderr) == (0, "")
    # --json carries the warning too
    run = cli("code", "sign", "--reader", "inproc:natwest", "--amount", "1.5", "--currency", "KWD",
              "--pin-stdin", "--json", stdin="1234\n")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    (warning,) = json.loads(run.stdout)["warnings"]
    assert warning.endswith(
        "KWD is not sent, but it scaled the amount: 1.500 at 3 decimals is 1500 minor units "
        "(2 decimals without a currency)"
    )


# ------------------------------------------------------------------------------- Luhn check


def test_card_new_refuses_a_pan_that_fails_the_luhn_check(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    bad = "5412345678901234"
    run = cli("card", "new", str(tmp_path / "c.json"), "--pan", bad)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.stderr == (
        "capsim: error: --pan: the Luhn check digit (the last digit) is wrong, as on no issued card; "
        "--allow-non-luhn personalises such a card for testing\n"
    )
    assert bad not in run.stdout + run.stderr
    assert list(tmp_path.iterdir()) == []  # no card file, no issuer keys
    # a Luhn-valid PAN is fine, and the explicit flag lets a non-compliant one through
    cli.ok("card", "new", str(tmp_path / "ok.json"), "--pan", "5412345678981234")
    cli.ok("card", "new", str(tmp_path / "bad.json"), "--pan", bad, "--allow-non-luhn")
    assert read_card_file(tmp_path / "bad.json")[0].pan == bad
