"""Every cryptogram the card produces equals pyemv's for the same CVN, keys and data.

pyemv 1.5.0 (MIT) is a test-only oracle: its per-CVN classes for GENERATE AC #1 with the
standard 29-byte CDOL1, and its key-derivation/MAC functions for the other layouts (Rabobank's
CDOL1, the CDOL2 data of GENERATE AC #2, the Option B key of a 19-digit PAN).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyemv import ac as pyemv_ac
from pyemv import cvn as pyemv_cvn
from pyemv import kd as pyemv_kd

from capsim.cards import EmvCapCard, new_card
from capsim.crypto import CVN
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
    sw,
)

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

_CLASSES = {
    CVN.VISA_10: pyemv_cvn.VisaCVN10,
    CVN.VISA_18: pyemv_cvn.VisaCVN18,
    CVN.VISA_22: pyemv_cvn.VisaCVN22,
    CVN.MC_16: pyemv_cvn.MasterCardCVN16,
    CVN.MC_17: pyemv_cvn.MasterCardCVN17,
    CVN.MC_20: pyemv_cvn.MasterCardCVN20,
    CVN.MC_21: pyemv_cvn.MasterCardCVN21,
}


def _pyemv_gac1(cvn: CVN, pan: str, cdol1: bytes, aip: bytes, atc: bytes, iad: bytes) -> bytes:
    """pyemv's AC for the standard CDOL1 (9F02 9F03 9F1A 95 5F2A 9A 9C 9F37)."""
    o = _CLASSES[cvn](IMK_A, IMK_B, IMK_C, pan, "00")
    fields = (cdol1[0:6], cdol1[6:12], cdol1[12:14], cdol1[14:19], cdol1[19:21], cdol1[21:24],
              cdol1[24:25], cdol1[25:29], aip, atc)  # fmt: skip
    if cvn is CVN.VISA_10:
        return o.generate_ac(*fields, iad[3:7])
    if cvn in (CVN.VISA_18, CVN.VISA_22):
        return o.generate_ac(*fields, iad)
    if cvn in (CVN.MC_16, CVN.MC_20):
        return o.generate_ac(*fields, iad[2:8])
    return o.generate_ac(*fields, iad[2:8], iad[10:18])


def _pyemv_generic(cvn: CVN, mk: bytes, data: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes) -> bytes:
    """pyemv primitives: session key per CVN, then MAC over data ‖ AIP ‖ ATC ‖ IAD part."""
    if cvn is CVN.VISA_10:
        sk, part, pad = mk, iad[3:7], pyemv_ac.PaddingType.VISA
    else:
        pad = pyemv_ac.PaddingType.EMV
        r = atc + b"\x00\x00" + un if cvn in (CVN.MC_16, CVN.MC_17) else atc + bytes(6)
        sk = pyemv_kd.derive_common_sk(mk, r)
        part = {CVN.VISA_18: iad, CVN.VISA_22: iad, CVN.MC_16: iad[2:8], CVN.MC_20: iad[2:8]}.get(
            cvn, iad[2:8] + iad[10:18]
        )
    return pyemv_ac.generate_ac(sk, data + aip + atc + part, pad, 8)


def _card(cvn: CVN) -> EmvCapCard:
    profile = "visa-dpa" if cvn in (CVN.VISA_10, CVN.VISA_18, CVN.VISA_22) else "secur-acces"
    return new_card(profile, pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, cvn=cvn)


@pytest.mark.parametrize("cvn", list(_CLASSES))
@given(un=st.binary(min_size=4, max_size=4), amount=st.integers(0, 10**12 - 1), pin_ok=st.booleans())
def test_every_cryptogram_matches_pyemv(cvn: CVN, un: bytes, amount: int, pin_ok: bool) -> None:
    card = _card(cvn)
    card.process(h("00A4040007") + card.profile.aid)
    card.process(h("80A8000002830000"))
    if pin_ok:
        card.process(h("0020008008241234FFFFFFFFFF"))

    cmd = gac1_command(card, un=un, amount=amount)
    resp = card.process(cmd)
    assert sw(resp) == 0x9000
    g1 = parse_gac(resp[:-2])
    cdol1 = cmd[5:-1]
    aip = card.profile.aip
    assert g1.ac == _pyemv_gac1(cvn, PAN, cdol1, aip, g1.atc, g1.iad)
    cmd2 = gac2_command(card, un=un)
    resp2 = card.process(cmd2)
    assert sw(resp2) == 0x9000
    g2 = parse_gac(resp2[:-2])
    assert g2.cid == 0x00
    assert g2.ac == _pyemv_generic(cvn, card.profile.mk_ac, cmd2[5:-1], aip, g2.atc, g2.iad, un)


def test_rabobank_option_b_and_nonstandard_cdol1() -> None:
    pan = "6733112233445566774"
    card = new_card("rabobank", pan=pan, psn="08", imk_ac=IMK_A)
    mk = pyemv_kd.derive_icc_mk_b(IMK_A, pan, "08")
    assert card.profile.mk_ac == mk
    un = h("CAFEBABE")
    g1, cdol1 = cap_transaction(card, un=un, gac2=False)
    assert cdol1[25:29] == un  # the UN is not the last CDOL1 field on this card
    assert g1.ac == _pyemv_generic(CVN.MC_16, mk, cdol1, card.profile.aip, g1.atc, g1.iad, un)


def test_icc_keys_are_pyemv_option_a() -> None:
    card = _card(CVN.VISA_10)
    o = pyemv_cvn.VisaCVN10(IMK_A, IMK_B, IMK_C, PAN, "00")
    assert (card.profile.mk_ac, card.profile.mk_smi, card.profile.mk_smc) == (
        o.icc_mk_ac,
        o.icc_mk_smi,
        o.icc_mk_smc,
    )
