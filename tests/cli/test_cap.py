"""``capsim cap [-c CHALLENGE] [-a AMOUNT] [-r READER]`` and the short options of ``capsim code``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cap import CapMode
from capsim.cards import load_card, new_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.cli.cap import choose_mode
from capsim.errors import ValidationError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), input="1234\n")


def _json(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    value: dict[str, object] = json.loads(result.stdout)
    return value


def _twins(directory: Path, template: str = "secur-acces", n: int = 2) -> list[Path]:
    """``n`` copies of one fresh card file: the same card, to run the same transaction twice."""
    first = directory / "card0.json"
    new_card(template, pan="5412345678901234", imk_ac=IMK, path=first).close()
    paths = [first]
    for i in range(1, n):
        paths.append(directory / f"card{i}.json")
        shutil.copyfile(first, paths[-1])
    return paths


def test_choose_mode_follows_emvtool() -> None:
    assert choose_mode(None, None) is CapMode.IDENTIFY
    assert choose_mode("12345678", None) is CapMode.RESPOND
    assert choose_mode("12345678", "15.00") is CapMode.SIGN
    assert choose_mode("1", "15.00", "EUR") is CapMode.SIGN
    with pytest.raises(ValidationError, match="needs a challenge"):
        choose_mode(None, "15.00")
    with pytest.raises(ValidationError, match="goes with an amount"):
        choose_mode("1234", None, "EUR")


@pytest.mark.parametrize(
    ("cap_args", "code_args", "mode"),
    [
        ([], ["identify"], "identify"),
        (["-c", "12345678"], ["respond", "--challenge", "12345678"], "respond"),
        (
            ["-c", "12345678", "-a", "15.00", "--currency", "EUR"],
            ["sign", "--challenge", "12345678", "--amount", "15.00", "--currency", "EUR"],
            "sign",
        ),
    ],
)
def test_cap_picks_the_mode_and_prints_the_code_capsim_code_prints(
    tmp_path: Path, cap_args: list[str], code_args: list[str], mode: str
) -> None:
    one, two = _twins(tmp_path)
    ours = _json(_invoke("cap", *cap_args, "-r", f"file:{one}", "--pin-stdin", "--json"))
    reference = _json(_invoke("code", *code_args, "--reader", f"file:{two}", "--pin-stdin", "--json"))
    assert ours["mode"] == mode
    assert ours == reference
    plain = _invoke("cap", *cap_args, "-r", f"file:{two}", "--pin-stdin")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.strip().isdigit()
    assert len(plain.stdout.strip()) == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-a", "15.00"], "an amount needs a challenge too"),
        (["-c", "1234", "--currency", "EUR"], "a currency goes with an amount"),
        (["-c", "123456789"], "challenge"),
    ],
)
def test_cap_refuses_inconsistent_arguments_before_touching_the_card(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (path,) = _twins(tmp_path, n=1)
    result = _invoke("cap", *args, "-r", f"file:{path}", "--pin-stdin")
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    with load_card(path) as card:
        assert card.state.atc == 0  # the card was never opened
        assert card.state.ptc == card.profile.pin_try_limit


def test_code_commands_take_short_options(tmp_path: Path) -> None:
    a, b, c, d = _twins(tmp_path, template="natwest", n=4)
    short = _json(_invoke("code", "respond", "-c", "12345678", "-r", f"file:{a}", "--pin-stdin", "--json"))
    long = _json(
        _invoke(
            "code", "respond", "--challenge", "12345678", "--reader", f"file:{b}", "--pin-stdin", "--json"
        )
    )
    assert short == long
    sign_short = _invoke("code", "sign", "-c", "42", "-a", "9.99", "-r", f"file:{c}", "--pin-stdin", "--json")
    sign_long = _invoke(
        "code",
        "sign",
        "--challenge",
        "42",
        "--amount",
        "9.99",
        "--reader",
        f"file:{d}",
        "--pin-stdin",
        "--json",
    )
    assert _json(sign_short) == _json(sign_long)
    assert _json(sign_short)["mode"] == "sign"


def test_main_help_lists_cap() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "cap" in result.output.split()
