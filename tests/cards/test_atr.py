"""ATRs: the built-in templates offer T=0, ``parse_atr`` checks ISO/IEC 7816-3 structure, and
``capsim card new --atr`` sets a checked ATR."""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cards import BUILTIN_PROFILES, DEFAULT_ATR, check_atr, load_card, new_card, parse_atr
from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.errors import ValidationError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
H = bytes.fromhex


def test_default_atr_is_the_emv_basic_atr_for_t0() -> None:
    assert H("3B66000063617073696D") == DEFAULT_ATR
    info = parse_atr(DEFAULT_ATR)
    assert info.protocols == (0,)
    assert info.historical == b"capsim"
    assert not info.has_tck


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
def test_every_builtin_template_offers_t0(name: str) -> None:
    assert 0 in parse_atr(BUILTIN_PROFILES[name].atr).protocols


def test_templates_copied_from_real_cards_keep_the_real_atr() -> None:
    assert BUILTIN_PROFILES["rabobank"].atr == H("3B6700002920006F789000")
    for name in ("secur-acces", "visa-dpa", "barclays", "natwest"):
        assert BUILTIN_PROFILES[name].atr == DEFAULT_ATR


def _tck(body: str) -> str:
    """``body`` followed by the TCK that makes the XOR of T0 … TCK zero."""
    raw = H(body)
    return body + f"{reduce(lambda a, b: a ^ b, raw[1:], 0):02X}"


@pytest.mark.parametrize(
    ("atr", "protocols", "historical"),
    [
        ("3B021450", (0,), "1450"),  # T=0 only, no interface bytes
        ("3B6700002920006F789000", (0,), "2920006F789000"),  # a Rabobank card
        ("3B860163617073696D82", (1,), "63617073696D"),  # capsim's earlier T=1 ATR
        ("3B80800101", (0, 1), ""),  # TD1 T=0, TD2 T=1: T=0 is the default
        ("3F00", (0,), ""),  # inverse convention
        (_tck("3BE800008131FE45" + "4A434F5076323431"), (1,), "4A434F5076323431"),  # TD1, TD2 both T=1
        (_tck("3B80801F03"), (0,), ""),  # T=15 (global bytes) is no protocol, but needs a TCK
    ],
)
def test_well_formed_atrs(atr: str, protocols: tuple[int, ...], historical: str) -> None:
    info = parse_atr(H(atr))
    assert info.protocols == protocols
    assert info.historical == H(historical)
    assert check_atr(H(atr)) == H(atr)


@pytest.mark.parametrize(
    ("atr", "message"),
    [
        ("", "at least 2 bytes"),
        ("3B", "at least 2 bytes"),
        ("3C00", "TS must be 3B"),
        ("00", "at least 2 bytes"),
        ("3B6600", "interface bytes of level 1 are cut off"),
        ("3B0214", "T0 announces 2 historical bytes"),
        ("3B02145000", "too many (an ATR offering only T=0 has no TCK)"),
        ("3B8001", "TCK"),  # T=1 offered: TCK required
        ("3B80800100", "wrong check byte TCK 00 (expected 01)"),
        ("3B8080010100", "too many after TCK"),
        ("3B0F" + "00" * 32, "at most 33 bytes"),
    ],
)
def test_malformed_atrs_are_refused(atr: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_atr(H(atr))


def test_new_card_checks_an_atr_override() -> None:
    card = new_card("natwest", pan="5412345678901234", imk_ac=IMK, atr=H("3B80800101"))
    assert card.power_on() == H("3B80800101")
    with pytest.raises(ValidationError, match="TCK"):
        new_card("natwest", pan="5412345678901234", imk_ac=IMK, atr=H("3B8001"))


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_card_new_atr_sets_the_answer_to_reset(tmp_path: Path) -> None:
    path = tmp_path / "t1.json"
    t1_atr = "3B 86 01 63 61 70 73 69 6D 82"
    code, _, err = _run("card", "new", str(path), "--template", "natwest", "--atr", t1_atr)
    assert code == 0, err
    with load_card(path) as card:
        assert card.power_on() == H("3B860163617073696D82")
    default = tmp_path / "default.json"
    assert _run("card", "new", str(default))[0] == 0
    with load_card(default) as card:
        assert card.power_on() == DEFAULT_ATR


@pytest.mark.parametrize(
    ("atr", "message"),
    [
        ("3B8001", "TCK"),
        ("3C00", "TS must be 3B"),
        ("3B6", "--atr: 3 hex digits: an odd count"),
        ("3BZZ", "--atr: 'Z' (position 3) is not a hex digit"),
        ("3B" + "00" * 40, "--atr: expected 2 to 33 bytes, got 41 bytes"),
    ],
)
def test_card_new_refuses_a_malformed_atr_before_writing(tmp_path: Path, atr: str, message: str) -> None:
    path = tmp_path / "bad.json"
    code, out, err = _run("card", "new", str(path), "--atr", atr)
    assert code == ExitCode.INVALID_INPUT, out + err
    assert message in err
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []  # neither the card nor its issuer keys
