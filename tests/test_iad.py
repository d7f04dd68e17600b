"""``capsim.iad``: the pure CVR/IAD prediction module shared by the card and the verifier."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import capsim.cards
import capsim.cards.cvr
import capsim.iad
from capsim.cards import BUILTIN_PROFILES, CardProfile, new_card
from capsim.crypto import CVN
from capsim.errors import ValidationError
from capsim.iad import (
    MCHIP_CVR_LAYOUT,
    VIS_CVR_LAYOUT,
    AcType,
    CardHistory,
    CvrFlag,
    IadFormat,
    IadParams,
    IadProfile,
    arqc_iad_variants,
    build_iad,
    history_variants,
    predict_arqc_iad,
)
from capsim.sm import build_script_command
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN, cap_transaction

ROOT = Path(__file__).resolve().parents[1]


def test_importing_iad_loads_no_card_reader_verifier_or_transport_module() -> None:
    code = (
        "import sys, capsim.iad\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('capsim.cards', 'capsim.reader', "
        "'capsim.verifier', 'capsim.transports')))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert proc.stdout.strip() == ""


def test_cards_keep_re_exporting_the_same_objects() -> None:
    for name in ("AcType", "CardHistory", "CvrFlag", "CvrLayout", "IadFormat", "build_iad"):
        assert getattr(capsim.cards, name) is getattr(capsim.iad, name)
    for name in ("history_variants", "predict_arqc_iad"):
        assert getattr(capsim.cards, name) is getattr(capsim.iad, name)
    for name in capsim.iad.__all__:
        assert getattr(capsim.cards.cvr, name) is getattr(capsim.iad, name)


def _params(profile: CardProfile) -> IadParams:
    return IadParams(
        iad_template=profile.iad_template, cvn=int(profile.cvn), pin_try_limit=profile.pin_try_limit
    )


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
@pytest.mark.parametrize("cvn", [c for c in CVN if c is not CVN.INTERAC_133])  # the CAP CVNs
def test_plain_data_predicts_exactly_what_the_card_profile_predicts(name: str, cvn: CVN) -> None:
    profile = BUILTIN_PROFILES[name].with_overrides(cvn=cvn, pin_try_limit=5)
    assert isinstance(profile, IadProfile)
    params = _params(profile)
    assert history_variants(params) == history_variants(profile)
    assert arqc_iad_variants(params) == tuple(predict_arqc_iad(profile, h) for h in history_variants(profile))
    assert len(set(arqc_iad_variants(params))) == len(history_variants(params))


@pytest.mark.parametrize("name", ["secur-acces", "visa-dpa"])
def test_the_card_answers_with_the_first_two_predicted_iads(name: str) -> None:
    card = new_card(name, pan=PAN, imk_ac=IMK_A)
    predicted = arqc_iad_variants(_params(card.profile))
    first, _ = cap_transaction(card)
    later, _ = cap_transaction(card)
    assert first.iad == predicted[history_variants(card.profile).index(CardHistory())]
    assert later.iad == predicted[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iad_template": bytes.fromhex("06770A03000000"), "cvn": 0x12}, "CVN byte"),
        ({"iad_template": bytes.fromhex("0C10" + "00" * 10), "cvn": 0x10}, "at least 18 bytes"),
        ({"iad_template": bytes.fromhex("06770A03000000"), "cvn": 0x99}, "cvn: expected one of"),
        ({"iad_template": bytes.fromhex("06770A03000000"), "cvn": 0x0A, "pin_try_limit": 0}, "1..15"),
        ({"iad_template": "06770A03000000", "cvn": 0x0A}, "expected bytes"),
    ],
)
def test_iad_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IadParams(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["barclays", "rabobank"])
@pytest.mark.parametrize("count", range(16))
def test_script_counter_is_the_raw_4_bit_nibble(name: str, count: int) -> None:
    """The CVR carries the whole counter 0..15 (byte 2, high nibble, in both layouts), not a part of it."""
    profile = BUILTIN_PROFILES[name]
    layout = {IadFormat.VIS: VIS_CVR_LAYOUT, IadFormat.MCHIP: MCHIP_CVR_LAYOUT}[profile.iad_format]
    iad = build_iad(
        profile.iad_template,
        profile.iad_format,
        history=CardHistory(script_count=count),
        flags=set(),
        gac1=AcType.ARQC,
    )
    quiet = build_iad(
        profile.iad_template, profile.iad_format, history=CardHistory(), flags=set(), gac1=AcType.ARQC
    )
    cvr_byte_2 = iad[layout.offset + 2]
    assert cvr_byte_2 >> 4 == count
    assert cvr_byte_2 & 0x0F == quiet[layout.offset + 2] & 0x0F


def test_card_reports_nine_scripts_of_the_last_transaction_in_its_iad() -> None:
    """Nine script commands in one transaction: the next ARQC's CVR says 9 (a count above 7)."""
    card = new_card("barclays", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
    cap_transaction(card)
    g, _ = cap_transaction(card, gac2=False)
    p = card.profile
    for _ in range(9):
        cmd = build_script_command(p.cvn, ins=0x18, mk_smi=p.mk_smi, atc=g.atc, arqc=g.ac)
        assert card.process(cmd) == bytes.fromhex("9000")
    nxt, _ = cap_transaction(card)
    assert nxt.iad[VIS_CVR_LAYOUT.offset + 2] >> 4 == 9


def test_card_history_round_trips_through_its_card_file_form() -> None:
    """The history as a card file stores it: the documented keys, and back to the same history."""
    keys = {
        "last_online_not_completed",
        "new_card",
        "issuer_auth_failed",
        "issuer_auth_not_performed",
        "script_count",
        "script_failed",
    }
    for bits in range(32):
        flags = {k: bool(bits >> i & 1) for i, k in enumerate(sorted(keys - {"script_count"}))}
        history = CardHistory(**flags, script_count=bits % 16)  # type: ignore[arg-type]
        doc = history.to_dict()
        assert set(doc) == keys
        assert CardHistory.from_dict(doc) == history


# Each CVR flag, written out from docs/card.md: (format, byte index in the CVR, the one bit).
_ONE_BIT = {
    (IadFormat.VIS, "issuer_auth_failed"): (0, 0x08),
    (IadFormat.VIS, "offline_pin_performed"): (0, 0x04),
    (IadFormat.VIS, "offline_pin_failed"): (0, 0x02),
    (IadFormat.VIS, "unable_to_go_online"): (0, 0x01),
    (IadFormat.VIS, "last_online_not_completed"): (1, 0x80),
    (IadFormat.VIS, "pin_try_limit_exceeded"): (1, 0x40),
    (IadFormat.VIS, "new_card"): (1, 0x10),
    (IadFormat.VIS, "last:issuer_auth_failed"): (1, 0x08),
    (IadFormat.VIS, "last:issuer_auth_not_performed"): (1, 0x04),
    (IadFormat.VIS, "last:script_failed"): (2, 0x08),
    (IadFormat.MCHIP, "offline_pin_performed"): (0, 0x04),
    (IadFormat.MCHIP, "offline_pin_successful"): (0, 0x01),
    (IadFormat.MCHIP, "issuer_auth_performed"): (1, 0x10),
    (IadFormat.MCHIP, "issuer_auth_failed"): (1, 0x08),
    (IadFormat.MCHIP, "last:issuer_auth_failed"): (1, 0x04),
    (IadFormat.MCHIP, "last:issuer_auth_not_performed"): (1, 0x02),
    (IadFormat.MCHIP, "last:script_failed"): (1, 0x01),
    (IadFormat.MCHIP, "unable_to_go_online"): (3, 0x40),
    (IadFormat.MCHIP, "offline_pin_failed"): (3, 0x10),
    (IadFormat.MCHIP, "pin_try_limit_exceeded"): (3, 0x08),
    (IadFormat.MCHIP, "last_online_not_completed"): (3, 0x04),
}
_HISTORY = {
    "last_online_not_completed": "last_online_not_completed",
    "new_card": "new_card",
    "last:issuer_auth_failed": "issuer_auth_failed",
    "last:issuer_auth_not_performed": "issuer_auth_not_performed",
    "last:script_failed": "script_failed",
}


@pytest.mark.parametrize(("fmt", "flag"), sorted(_ONE_BIT, key=str))
def test_each_cvr_flag_sets_exactly_its_one_bit(fmt: IadFormat, flag: str) -> None:
    """One flag on, everything else off: the CVR differs from the quiet one in exactly that bit."""
    layout = {IadFormat.VIS: VIS_CVR_LAYOUT, IadFormat.MCHIP: MCHIP_CVR_LAYOUT}[fmt]
    template = bytes(layout.offset + layout.length)
    quiet_history = CardHistory(new_card=False)
    if flag in _HISTORY:
        history, flags = dataclasses.replace(quiet_history, **{_HISTORY[flag]: True}), set()
    else:
        history, flags = quiet_history, {CvrFlag[flag.upper()]}
    args = {"gac1": AcType.ARQC, "pin_tries": 0}
    quiet = build_iad(template, fmt, history=quiet_history, flags=set(), **args)  # type: ignore[arg-type]
    one = build_iad(template, fmt, history=history, flags=flags, **args)  # type: ignore[arg-type]
    diff = [a ^ b for a, b in zip(quiet, one, strict=True)]
    index, bit = _ONE_BIT[(fmt, flag)]
    expected = [0] * len(template)
    expected[layout.offset + index] = bit
    assert diff == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pin_try_limit": "3"}, "pin_try_limit: expected an integer"),
        ({"pin_try_limit": True}, "pin_try_limit: expected an integer"),
        ({"pin_try_limit": 0}, "pin_try_limit: expected 1..15"),
        ({"pin_try_limit": 16}, "pin_try_limit: expected 1..15"),
        ({"cvn": "10"}, "cvn: expected an integer"),
        ({"iad_template": "06770A03000000"}, "iad_template: expected bytes"),
    ],
)
def test_iad_params_refusals_in_full(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"iad_template": bytes.fromhex("06770A03000000"), "cvn": 0x0A, **kwargs}
    with pytest.raises(ValidationError) as info:
        IadParams(**args)  # type: ignore[arg-type]
    assert str(info.value) == message
