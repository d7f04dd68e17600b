"""PIN lifecycle (cap-protocol.md §9.5) and issuer scripts (§9.7, emv-crypto.md §7)."""

from __future__ import annotations

import pytest
from pyemv import cvn as pyemv_cvn

from capsim.cards import EmvCapCard, Lifecycle, new_card
from capsim.crypto import CVN
from capsim.sm import build_pin_change, build_script_command
from tests.cards.helpers import (
    IMK_A,
    IMK_B,
    IMK_C,
    PAN,
    gac1_command,
    gac2_command,
    h,
    parse_gac,
    pin_block,
    start,
    sw,
    verify,
)

# pyemv (the test-only oracle) still imports TripleDES from its old location in cryptography.
# Only the tests that call pyemv carry this filter; capsim's own DES calls stay under "error".
PYEMV_WARNING = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

ALL_CVNS = [CVN.VISA_10, CVN.VISA_18, CVN.VISA_22, CVN.MC_16, CVN.MC_17, CVN.MC_20, CVN.MC_21]


def _card(cvn: CVN = CVN.MC_16, profile: str = "secur-acces") -> EmvCapCard:
    return new_card(profile, pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, cvn=cvn)


def _gac1(card: EmvCapCard) -> tuple[bytes, bytes]:
    """Run GAC #1 (ARQC requested) in the current transaction; return (ATC, AC)."""
    resp = card.process(gac1_command(card, un=h("12345678")))
    assert sw(resp) == 0x9000
    result = parse_gac(resp[:-2])
    return result.atc, result.ac


def _script(card: EmvCapCard, ins: int, atc: bytes, ac: bytes, *, p2: int = 0, data: bytes = b"") -> bytes:
    p = card.profile
    return build_script_command(p.cvn, ins=ins, p2=p2, data=data, mk_smi=p.mk_smi, atc=atc, arqc=ac)


def _block_pin(card: EmvCapCard) -> None:
    start(card)
    assert [verify(card, "0000") for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]


def test_acceptance_three_wrong_then_blocked_then_unblock() -> None:
    card = _card()
    _block_pin(card)
    assert verify(card, "1234") == 0x6983
    assert card.process(h("80CA9F1700")) == h("9F1701 00 9000")
    assert card.state.ptc == 0
    # the blocked PIN does not block the application: GAC #1 still gives an ARQC, flagged
    resp = card.process(gac1_command(card))
    gac = parse_gac(resp[:-2])
    assert gac.cid == 0x8A  # ARQC, advice, reason "PIN try limit exceeded"
    assert gac.iad[5] & 0x08  # M/Chip CVR byte 4: PIN try limit exceeded
    unblock = build_pin_change(
        card.profile.cvn,
        new_pin=None,
        mk_ac=card.profile.mk_ac,
        mk_smi=card.profile.mk_smi,
        mk_smc=card.profile.mk_smc,
        atc=gac.atc,
        arqc=gac.ac,
    )
    assert card.process(unblock) == h("9000")
    assert card.state.ptc == 3
    assert card.process(h("80CA9F1700")) == h("9F1701 03 9000")
    start(card)
    assert verify(card, "1234") == 0x9000
    assert card.state.history.script_count == 0  # reset when this transaction started


def test_wrong_pin_then_right_pin_resets_counter() -> None:
    card = _card()
    start(card)
    assert verify(card, "9999") == 0x63C2
    assert verify(card, "1234") == 0x9000
    assert card.state.ptc == 3


@pytest.mark.parametrize(
    "block",
    [
        "141234FFFFFFFFFF",  # wrong control nibble
        "231234FFFFFFFFFF",  # length 3
        "2D1234FFFFFFFFFF",  # length 13
        "2412A4FFFFFFFFFF",  # non-digit
        "241234FFFFFFFF0F",  # bad fill
    ],
)
def test_malformed_pin_block_is_6a80_without_decrement(block: str) -> None:
    card = _card()
    start(card)
    assert sw(card.process(h("0020008008") + h(block))) == 0x6A80
    assert card.state.ptc == 3


def test_verify_wrong_p1p2_and_lc() -> None:
    card = _card()
    start(card)
    assert sw(card.process(h("0020008108") + pin_block("1234"))) == 0x6A86
    assert sw(card.process(h("0020018008") + pin_block("1234"))) == 0x6A86
    assert sw(card.process(h("0020008007") + pin_block("1234")[:7])) == 0x6700
    assert card.state.ptc == 3
    # VERIFY with a stray Le (python-emv) is accepted
    assert sw(card.process(h("0020008008") + pin_block("1234") + b"\x00")) == 0x9000


_VISA = (CVN.VISA_10, CVN.VISA_18, CVN.VISA_22)


@pytest.mark.parametrize(
    ("cvn", "with_current"),
    # P2 01 (the current PIN inside the block) is a VIS feature
    [(c, False) for c in ALL_CVNS] + [(c, True) for c in _VISA],
)
def test_pin_change_script_every_cvn(cvn: CVN, with_current: bool) -> None:
    card = _card(cvn, "visa-dpa" if cvn in (CVN.VISA_10, CVN.VISA_18, CVN.VISA_22) else "secur-acces")
    start(card)
    assert verify(card, "1234") == 0x9000
    atc, ac = _gac1(card)
    p = card.profile
    cmd = build_pin_change(
        p.cvn,
        new_pin="987654",
        current_pin="1234" if with_current else None,
        mk_ac=p.mk_ac,
        mk_smi=p.mk_smi,
        mk_smc=p.mk_smc,
        atc=atc,
        arqc=ac,
    )
    assert card.process(cmd) == h("9000")
    assert card.state.pin == "987654"
    assert card.state.history.script_count == 1
    start(card)
    assert verify(card, "1234") == 0x63C2
    assert verify(card, "987654") == 0x9000


@PYEMV_WARNING
@pytest.mark.parametrize("cvn", [CVN.VISA_10, CVN.MC_16])
def test_pyemv_built_scripts_are_accepted(cvn: CVN) -> None:
    """pyemv (an independent implementation) builds the MAC and the enciphered PIN block."""
    card = _card(cvn, "visa-dpa" if cvn is CVN.VISA_10 else "secur-acces")
    oracle_cls = pyemv_cvn.VisaCVN10 if cvn is CVN.VISA_10 else pyemv_cvn.MasterCardCVN16
    oracle = oracle_cls(IMK_A, IMK_B, IMK_C, PAN, "00")
    start(card)
    atc, ac = _gac1(card)
    header = h("8418000008")
    mac = oracle.generate_command_mac(header, ac, atc)
    assert card.process(header + mac) == h("9000")
    cmd = oracle.generate_pin_change_command("4321", ac, atc)  # the full C-APDU, P2 02
    assert cmd[:4] == h("84240002")
    assert card.process(cmd) == h("9000")
    assert card.state.pin == "4321"


def test_bad_mac_is_6988_and_only_sets_script_failed() -> None:
    card = _card()
    start(card)
    assert verify(card, "0000") == 0x63C2
    atc, ac = _gac1(card)
    cmd = bytearray(_script(card, 0x24, atc, ac))
    cmd[-1] ^= 0x01
    before = card.state
    assert card.process(bytes(cmd)) == h("6988")
    after = card.state
    assert after.ptc == before.ptc == 2
    assert after.history.script_failed
    assert not before.history.script_failed
    assert after.history.script_count == before.history.script_count
    assert (after.pin, after.atc, after.lifecycle) == (before.pin, before.atc, before.lifecycle)


def test_script_mac_with_other_transaction_keys_is_rejected() -> None:
    card = _card()
    start(card)
    atc, ac = _gac1(card)
    old = _script(card, 0x1E, atc, ac)
    card.process(gac2_command(card, un=h("12345678")))
    start(card)
    _gac1(card)
    assert card.process(old) == h("6988")
    assert card.state.lifecycle is Lifecycle.ACTIVE


def test_script_outside_a_transaction_is_6985() -> None:
    card = _card()
    atc, ac = h("0001"), bytes(8)
    cmd = _script(card, 0x24, atc, ac)
    assert card.process(cmd) == h("6985")  # nothing selected
    start(card)
    assert card.process(cmd) == h("6985")  # before GAC #1
    assert verify(card, "1234") == 0x9000
    assert card.process(cmd) == h("6985")
    _gac1(card)
    start(card)  # a new selection forgets the previous GAC #1
    assert card.process(cmd) == h("6985")
    assert card.state.history.script_count == 0


def test_application_block_unblock_and_card_block() -> None:
    card = _card()
    start(card)
    atc, ac = _gac1(card)
    assert card.process(_script(card, 0x1E, atc, ac)) == h("9000")
    assert card.state.lifecycle is Lifecycle.APP_BLOCKED
    aid = card.profile.aid
    resp = card.process(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00")
    assert sw(resp) == 0x6283
    assert resp[:-2] == card.profile.fci
    assert sw(card.process(h("80A8000002830000"))) == 0x9000
    assert verify(card, "1234") == 0x9000
    resp = card.process(gac1_command(card))
    gac = parse_gac(resp[:-2])
    assert gac.cid & 0xC0 == 0x00  # AAC while blocked
    # APPLICATION UNBLOCK works after the AAC (keys from this AC)
    assert card.process(_script(card, 0x18, gac.atc, gac.ac)) == h("9000")
    assert card.state.lifecycle is Lifecycle.ACTIVE
    start(card)
    atc, ac = _gac1(card)
    assert card.process(_script(card, 0x16, atc, ac)) == h("9000")
    assert card.state.lifecycle is Lifecycle.CARD_BLOCKED
    assert card.process(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00") == h("6A81")
    assert card.process(h("00A404000E315041592E5359532E444446303100")) == h("6A81")
    card.power_on()
    assert card.process(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00") == h("6A81")


def test_valid_mac_but_bad_p2_counts_and_fails_without_change() -> None:
    card = _card()
    start(card)
    atc, ac = _gac1(card)
    assert card.process(_script(card, 0x24, atc, ac, p2=0x05)) == h("6A86")
    assert card.state.history.script_failed
    assert card.state.history.script_count == 1
    assert card.process(_script(card, 0x1E, atc, ac, data=b"\x01")) == h("6A80")
    assert card.state.lifecycle is Lifecycle.ACTIVE
    assert card.state.history.script_count == 2


def test_pin_change_with_garbage_block_is_6a80_and_keeps_pin() -> None:
    card = _card()
    start(card)
    atc, ac = _gac1(card)
    assert card.process(_script(card, 0x24, atc, ac, p2=0x02, data=bytes(8))) == h("6A80")
    assert card.state.pin == "1234"
    assert card.process(_script(card, 0x24, atc, ac, p2=0x00, data=bytes(8))) == h("6A80")
