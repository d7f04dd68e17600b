"""CVR history across transactions and the IAD a verifier predicts (cap-protocol.md §9.6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyemv import cvn as pyemv_cvn

from capsim.cards import (
    BUILTIN_PROFILES,
    CardHistory,
    EmvCapCard,
    history_variants,
    new_card,
    predict_arqc_iad,
)
from capsim.cards.state import CardState
from capsim.crypto import CVN
from capsim.sm import build_script_command
from tests.cards.helpers import (
    IMK_A,
    IMK_B,
    IMK_C,
    PAN,
    cap_transaction,
    gac1_command,
    gac2_command,
    h,
    parse_gac,
    start,
    sw,
    verify,
)

PYEMV_WARNING = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")


def _card(profile: str = "barclays", **kw: object) -> EmvCapCard:
    return new_card(profile, pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, **kw)


def test_first_code_differs_from_later_codes_visa() -> None:
    card = _card()
    first, _ = cap_transaction(card)
    second, _ = cap_transaction(card)
    third, _ = cap_transaction(card)
    assert first.iad[4:] == h("A41000")  # new card only
    assert second.iad[4:] == third.iad[4:] == h("A49000")  # + last online not completed (Barclays trace)
    assert first.iad == predict_arqc_iad(card.profile, history_variants(card.profile)[1])
    assert second.iad == predict_arqc_iad(card.profile, history_variants(card.profile)[0])


def test_power_loss_before_gac2_counts_as_not_completed() -> None:
    card = _card()
    cap_transaction(card, gac2=False)
    card.power_off()
    later, _ = cap_transaction(card)
    assert later.iad[4:] == h("A49000")


def test_aac_at_gac1_does_not_set_not_completed() -> None:
    card = _card()
    start(card)
    resp = card.process(gac1_command(card, p1=0x00))
    assert parse_gac(resp[:-2]).cid == 0x00
    assert not card.state.history.last_online_not_completed


def test_no_verify_means_no_pin_bits() -> None:
    card = _card()
    g, _ = cap_transaction(card, pin=None)
    assert g.iad[4] & 0x04 == 0


@PYEMV_WARNING
@pytest.mark.parametrize("route", ["external-authenticate", "cdol2"])
def test_valid_arpc_is_the_only_path_clearing_history(route: str) -> None:
    if route == "cdol2":
        card = new_card("rabobank", pan=PAN, psn="08", imk_ac=IMK_A)
        oracle = pyemv_cvn.MasterCardCVN16(IMK_A, IMK_A, IMK_A, PAN, "08")
    else:
        card = _card()
        oracle = pyemv_cvn.VisaCVN10(IMK_A, IMK_B, IMK_C, PAN, "00")
    cap_transaction(card)
    cap_transaction(card)
    assert card.state.history.last_online_not_completed
    assert card.state.history.new_card
    start(card)
    assert verify(card, "1234") == 0x9000
    g = parse_gac(card.process(gac1_command(card))[:-2])
    # a wrong ARPC first: issuer authentication failed, history kept and flagged
    arc = b"00"
    good = oracle.generate_arpc(g.ac, arc)
    bad = bytes([good[0] ^ 1]) + good[1:]
    if route == "external-authenticate":
        assert card.process(h("008200000A") + bad + arc) == h("6300")
        assert card.state.history.issuer_auth_failed
        assert card.process(h("008200000A") + good + arc) == h("6985")  # one try per transaction
        start(card)
        assert verify(card, "1234") == 0x9000
        g = parse_gac(card.process(gac1_command(card))[:-2])
        good = oracle.generate_arpc(g.ac, arc)
        assert card.process(h("008200000A") + good + arc) == h("9000")
        r2 = card.process(gac2_command(card, p1=0x40, arc=arc))
    else:
        r2 = card.process(gac2_command(card, p1=0x40, arc=arc, issuer_data=good + arc))
    assert sw(r2) == 0x9000
    assert parse_gac(r2[:-2]).cid == 0x40  # TC: approved online with issuer authentication
    history = card.state.history
    assert not history.last_online_not_completed
    assert not history.new_card
    assert not history.issuer_auth_failed
    assert card.process(h("80CA9F1300")) == h("9F1302") + card.state.atc.to_bytes(2, "big") + h("9000")
    nxt, _ = cap_transaction(card)
    assert nxt.iad == predict_arqc_iad(
        card.profile, CardHistory(last_online_not_completed=False, new_card=False)
    )


def test_script_results_show_in_next_transaction_only() -> None:
    card = _card()
    cap_transaction(card)
    g, _ = cap_transaction(card, gac2=False)
    p = card.profile
    ok = build_script_command(p.cvn, ins=0x18, mk_smi=p.mk_smi, atc=g.atc, arqc=g.ac)
    assert card.process(ok) == h("9000")
    bad = bytearray(ok)
    bad[-1] ^= 0xFF
    assert card.process(bytes(bad)) == h("6988")
    nxt, _ = cap_transaction(card)
    expected = CardHistory(last_online_not_completed=True, new_card=True, script_count=1, script_failed=True)
    assert nxt.iad == predict_arqc_iad(p, expected)
    assert expected in history_variants(p)
    after, _ = cap_transaction(card)
    assert after.iad == predict_arqc_iad(p, history_variants(p)[0])


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
@pytest.mark.parametrize("cvn", [None, CVN.VISA_18, CVN.MC_21])
def test_predicted_iad_equals_card_iad_for_every_variant(name: str, cvn: CVN | None) -> None:
    """The card's own GENERATE AC #1 after a correct VERIFY equals predict_arqc_iad."""
    kw = {} if cvn is None else {"cvn": cvn}
    template = new_card(name, pan=PAN, imk_ac=IMK_A, **kw).profile
    variants = history_variants(template)
    assert len({predict_arqc_iad(template, v) for v in variants}) == len(variants)
    for history in variants:
        card = EmvCapCard(template, CardState(atc=10, ptc=3, pin="1234", history=history), rng=bytes)
        g, _ = cap_transaction(card)
        assert g.iad == predict_arqc_iad(template, history)


@given(
    not_completed=st.booleans(),
    new=st.booleans(),
    count=st.integers(0, 15),
    failed=st.booleans(),
    ptc=st.integers(1, 3),
)
def test_prediction_holds_for_any_history(
    not_completed: bool, new: bool, count: int, failed: bool, ptc: int
) -> None:
    history = CardHistory(
        last_online_not_completed=not_completed, new_card=new, script_count=count, script_failed=failed
    )
    for name in ("secur-acces", "natwest"):
        profile = new_card(name, pan=PAN, imk_ac=IMK_A).profile
        card = EmvCapCard(profile, CardState(atc=1, ptc=ptc, pin="1234", history=history), rng=bytes)
        g, _ = cap_transaction(card)
        assert g.iad == predict_arqc_iad(profile, history)


def test_history_variants_order_is_documented() -> None:
    v = history_variants(BUILTIN_PROFILES["visa-dpa"])
    assert v[0] == CardHistory(last_online_not_completed=True, new_card=True)
    assert v[1] == CardHistory(last_online_not_completed=False, new_card=True)
    assert v[2] == CardHistory(last_online_not_completed=True, new_card=False)
    assert v[3] == CardHistory(last_online_not_completed=False, new_card=False)
    assert v[4] == CardHistory(last_online_not_completed=True, new_card=True, script_count=1)
    m = history_variants(BUILTIN_PROFILES["secur-acces"])  # M/Chip: no "new card" bit
    assert [x.last_online_not_completed for x in m[:2]] == [True, False]
    assert len(m) == 6
