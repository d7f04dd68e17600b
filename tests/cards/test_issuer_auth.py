"""Issuer authentication at the card: a wrong ARPC never leads to a TC, and every ARPC byte counts.

A failed EXTERNAL AUTHENTICATE (``6300``) or a wrong ARPC carried in CDOL2 tag 91 leaves the
transaction with issuer authentication *failed*; GENERATE AC #2 asking for a TC must then answer
an AAC (cap-protocol.md §6, emv-crypto.md §6). The ARPC is compared in full: a change in any byte,
not only the first, is a failure.
"""

from __future__ import annotations

import pytest
from pyemv import cvn as pyemv_cvn

from capsim.cards import EmvCapCard, new_card
from capsim.crypto import CVN, generate_arpc
from tests.cards.helpers import (
    IMK_A,
    IMK_B,
    IMK_C,
    PAN,
    gac1_command,
    gac2_command,
    h,
    parse_gac,
    start,
    sw,
    verify,
)

PYEMV_WARNING = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
ARC = b"00"  # approved
TC, AAC = 0x40, 0x00


def _visa() -> tuple[EmvCapCard, pyemv_cvn.VisaCVN10]:
    card = new_card("barclays", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
    return card, pyemv_cvn.VisaCVN10(IMK_A, IMK_B, IMK_C, PAN, "00")


def _mastercard() -> tuple[EmvCapCard, pyemv_cvn.MasterCardCVN16]:
    card = new_card("rabobank", pan=PAN, psn="08", imk_ac=IMK_A)
    return card, pyemv_cvn.MasterCardCVN16(IMK_A, IMK_A, IMK_A, PAN, "08")


def _arqc(card: EmvCapCard) -> bytes:
    start(card)
    assert verify(card, "1234") == 0x9000
    resp = card.process(gac1_command(card))
    assert sw(resp) == 0x9000
    g = parse_gac(resp[:-2])
    assert g.cid == 0x80
    return g.ac


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@PYEMV_WARNING
def test_no_tc_after_failed_external_authenticate() -> None:
    card, oracle = _visa()
    arqc = _arqc(card)
    bad = _flip(oracle.generate_arpc(arqc, ARC), 0)
    assert card.process(h("008200000A") + bad + ARC) == h("6300")
    r2 = card.process(gac2_command(card, p1=0x40, arc=ARC))  # the terminal still asks for a TC
    assert sw(r2) == 0x9000
    assert parse_gac(r2[:-2]).cid == AAC
    assert card.state.history.issuer_auth_failed


@PYEMV_WARNING
def test_tc_after_good_external_authenticate() -> None:
    """The positive control of the test above: the same exchange with the right ARPC gives a TC."""
    card, oracle = _visa()
    arqc = _arqc(card)
    assert card.process(h("008200000A") + oracle.generate_arpc(arqc, ARC) + ARC) == h("9000")
    r2 = card.process(gac2_command(card, p1=0x40, arc=ARC))
    assert parse_gac(r2[:-2]).cid == TC


@PYEMV_WARNING
@pytest.mark.parametrize("index", range(8))
def test_every_byte_of_an_8_byte_arpc_counts(index: int) -> None:
    card, oracle = _visa()
    arqc = _arqc(card)
    bad = _flip(oracle.generate_arpc(arqc, ARC), index)
    assert card.process(h("008200000A") + bad + ARC) == h("6300")
    assert card.state.history.issuer_auth_failed


@PYEMV_WARNING
@pytest.mark.parametrize("index", range(8))
def test_every_byte_of_an_arpc_in_cdol2_counts(index: int) -> None:
    card, oracle = _mastercard()
    arqc = _arqc(card)
    good = oracle.generate_arpc(arqc, ARC)
    r2 = card.process(gac2_command(card, p1=0x40, arc=ARC, issuer_data=_flip(good, index) + ARC))
    assert sw(r2) == 0x9000
    assert parse_gac(r2[:-2]).cid == AAC
    assert card.state.history.issuer_auth_failed


@PYEMV_WARNING
def test_online_approval_without_issuer_auth_is_remembered() -> None:
    """A TC after an ARQC with no ARPC at all: the card records "issuer authentication not
    performed" for the next transaction's CVR; a TC after a good ARPC does not."""
    card, _ = _visa()
    _arqc(card)
    r2 = card.process(gac2_command(card, p1=0x40, arc=ARC))
    assert parse_gac(r2[:-2]).cid == TC
    assert card.state.history.issuer_auth_not_performed


@PYEMV_WARNING
def test_good_arpc_leaves_issuer_auth_not_performed_clear() -> None:
    card, oracle = _visa()
    arqc = _arqc(card)
    assert card.process(h("008200000A") + oracle.generate_arpc(arqc, ARC) + ARC) == h("9000")
    card.process(gac2_command(card, p1=0x40, arc=ARC))
    assert not card.state.history.issuer_auth_not_performed


def test_method_2_arpc_of_exactly_8_bytes_authenticates() -> None:
    """ARPC method 2 (CVN 18): 4-byte ARPC + 4-byte CSU with no proprietary data is the shortest
    valid EXTERNAL AUTHENTICATE; the card accepts it."""
    card = new_card("barclays", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, cvn=CVN.VISA_18)
    arqc = _arqc(card)
    csu = h("00820000")
    p = card.profile
    atc = card.state.atc.to_bytes(2, "big")
    arpc = generate_arpc(p.cvn, p.mk_ac, arqc=arqc, atc=atc, un=bytes(4), csu=csu)
    assert len(arpc) == 4
    assert card.process(h("0082000008") + arpc + csu) == h("9000")
    assert card.process(gac2_command(card, p1=0x40, arc=ARC))[-2:] == h("9000")


@PYEMV_WARNING
def test_external_authenticate_is_one_try_per_transaction() -> None:
    """A terminal (or an attacker) cannot retry EXTERNAL AUTHENTICATE until an ARPC fits: after
    a wrong one, even the right ARPC is refused (6985), GENERATE AC #2 gives no TC and the card
    remembers the failure for its next CVR; after a right one, a second is refused too."""
    card, oracle = _visa()
    arqc = _arqc(card)
    good = oracle.generate_arpc(arqc, ARC)
    assert card.process(h("008200000A") + _flip(good, 7) + ARC) == h("6300")
    assert card.process(h("008200000A") + good + ARC) == h("6985")
    assert parse_gac(card.process(gac2_command(card, p1=0x40, arc=ARC))[:-2]).cid == AAC
    assert card.state.history.issuer_auth_failed

    card, oracle = _visa()
    arqc = _arqc(card)
    good = oracle.generate_arpc(arqc, ARC)
    assert card.process(h("008200000A") + good + ARC) == h("9000")
    assert card.process(h("008200000A") + good + ARC) == h("6985")
    assert parse_gac(card.process(gac2_command(card, p1=0x40, arc=ARC))[:-2]).cid == TC


@PYEMV_WARNING
@pytest.mark.parametrize("p1p2", ["0100", "0001", "8000", "0080"])
def test_external_authenticate_with_p1_or_p2_set_is_6a86_and_changes_nothing(p1p2: str) -> None:
    """Either parameter byte alone refuses the command; the right ARPC is then still taken."""
    card, oracle = _visa()
    arqc = _arqc(card)
    arpc = oracle.generate_arpc(arqc, ARC)
    assert card.process(h("0082" + p1p2 + "0A") + arpc + ARC) == h("6A86")
    assert card.process(h("008200000A") + arpc + ARC) == h("9000")
    assert parse_gac(card.process(gac2_command(card, p1=0x40, arc=ARC))[:-2]).cid == TC


@pytest.mark.parametrize("proprietary", ["01", "A1B2", "0102030405060708"])
def test_method_2_arpc_with_proprietary_data_authenticates_over_all_of_it(proprietary: str) -> None:
    """ARPC ‖ CSU ‖ proprietary authentication data (up to 8 bytes): the card MACs every
    proprietary byte, so the right ARPC gives a TC and one over a byte less is refused."""
    for whole in (True, False):
        card = new_card("barclays", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, cvn=CVN.VISA_18)
        arqc = _arqc(card)
        csu, prop = h("00820000"), h(proprietary)
        p = card.profile
        atc = card.state.atc.to_bytes(2, "big")
        signed = prop if whole else prop[1:]
        arpc = generate_arpc(p.cvn, p.mk_ac, arqc=arqc, atc=atc, un=bytes(4), csu=csu, proprietary=signed)
        data = arpc + csu + prop
        answer = card.process(h("00820000") + bytes((len(data),)) + data)
        assert answer == (h("9000") if whole else h("6300"))
        second = card.process(gac2_command(card, p1=0x40, arc=ARC))
        assert parse_gac(second[:-2]).cid == (TC if whole else AAC)
