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
from tests.cli.helpers import Cli, make_world

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
    assert set(json.loads(run.stdout)) == {"pcsc", "virtual", "note"}
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
