"""Property-based cross-check against pyemv 1.5.0 (test-only oracle; emv-crypto.md "Sources").

For random keys, PANs (12–19 digits), PSNs, ATCs, UNs and data, capsim and pyemv must agree on
every primitive they share and on the cryptograms and script commands of every CVN pyemv
implements. Each property runs 500 examples (the acceptance bar), whatever the profile.

pyemv imports TripleDES from the deprecated ``hazmat.primitives`` location, so its calls warn;
that warning is pyemv's and is ignored here only (capsim's own no-warning check is in
``tests/test_des.py``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pyemv", reason="pyemv (the test-only oracle) is not installed")

from pyemv import ac as pe_ac
from pyemv import cvn as pe_cvn
from pyemv import cvv as pe_cvv
from pyemv import kd as pe_kd
from pyemv import mac as pe_mac
from pyemv import sm as pe_sm

from capsim import crypto, sm
from capsim.crypto import CVN, cvn_spec

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

N = settings(max_examples=500)


class Carver:
    """Cut typed fields from one random byte string: one cheap strategy per example."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.pos = raw, 0

    def take(self, n: int) -> bytes:
        out = self.raw[self.pos : self.pos + n]
        assert len(out) == n, "blob too short"
        self.pos += n
        return out

    def number(self, lo: int, hi: int) -> int:
        return lo + int.from_bytes(self.take(2), "big") % (hi - lo + 1)

    def digits(self, n: int) -> str:
        return str(int.from_bytes(self.take(8), "big") * 10**n // 2**64).rjust(n, "0")[:n]

    def pan(self, lo: int = 12, hi: int = 19) -> str:
        n = self.number(lo, hi)
        return self.digits(n)

    def psn(self) -> str:
        return f"{self.take(1)[0] % 100:02d}"

    def pin(self) -> str:
        return self.digits(self.number(4, 12))


def blobs(n: int) -> st.SearchStrategy[Carver]:
    return st.binary(min_size=n, max_size=n).map(Carver)


def test_carver_covers_pan_lengths_and_digits() -> None:
    lengths = {Carver(bytes([0, i]) + bytes(range(40, 48))).pan() for i in range(8)}
    assert {len(p) for p in lengths} == set(range(12, 20))
    assert all(p.isdigit() for p in lengths)
    assert Carver(b"\xff" * 10).digits(19) == "9999999999999999999"


# --------------------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------------------


@N
@given(c=blobs(80))
def test_key_derivations(c: Carver) -> None:
    """Option A, Option B (short and long PANs), CSK, Mastercard SKD, Visa SM key."""
    imk, pan, long_pan, psn = c.take(16), c.pan(), c.pan(17, 19), c.psn()
    assert crypto.derive_icc_mk_a(imk, pan, psn) == pe_kd.derive_icc_mk_a(iss_mk=imk, pan=pan, psn=psn)
    assert crypto.derive_icc_mk_b(imk, pan, psn) == pe_kd.derive_icc_mk_b(iss_mk=imk, pan=pan, psn=psn)
    expected = pe_kd.derive_icc_mk_b(iss_mk=imk, pan=long_pan, psn=psn)
    assert crypto.derive_icc_mk_b(imk, long_pan, psn) == expected
    mk, r, atc, un = c.take(16), c.take(8), c.take(2), c.take(4)
    assert crypto.derive_common_sk(mk, r) == pe_kd.derive_common_sk(icc_mk=mk, r=r)
    # pyemv's M/Chip classes derive SKD as the CSK with R = ATC ‖ 00 00 ‖ UN.
    expected = pe_kd.derive_common_sk(icc_mk=mk, r=atc + b"\x00\x00" + un)
    assert crypto.derive_mastercard_sk(mk, atc, un) == expected
    assert crypto.derive_visa_sm_sk(mk, atc) == pe_kd.derive_visa_sm_sk(icc_mk=mk, atc=atc)


TREE_SHAPES = [(2, 16), (4, 8), (3, 11), (5, 7), (7, 6), (16, 4), (2, 17)]


@N
@given(c=blobs(40), shape=st.sampled_from(TREE_SHAPES), zero_iv=st.booleans())
def test_emv2000_tree(c: Carver, shape: tuple[int, int], zero_iv: bool) -> None:
    b, h = shape
    mk, atc, iv = c.take(16), c.take(2), c.take(16)
    if zero_iv:
        iv = bytes(16)
    ours = crypto.derive_emv2000_tree_sk(mk, atc, branch_factor=b, height=h, iv=iv)
    theirs = pe_kd.derive_emv2000_tree_sk(icc_mk=mk, atc=atc, height=h, branch_factor=b, iv=iv)
    assert ours == theirs


@N
@given(c=blobs(40), msg=st.binary(max_size=64))
def test_mac_padding_and_arpc(c: Carver, msg: bytes) -> None:
    """MAC algorithm 3 (both paddings), padding methods 1 and 2, ARPC methods 1 and 2."""
    key = c.take(16)
    for padding in (1, 2):
        expected = pe_mac.mac_iso9797_3(key1=key[:8], key2=key[8:], data=msg, padding=padding)
        assert crypto.mac_iso9797_alg3(key, msg, padding) == expected
    assert crypto.pad_iso9797_1(msg) == pe_mac.pad_iso9797_1(msg)
    assert crypto.pad_iso9797_2(msg) == pe_mac.pad_iso9797_2(msg)
    arqc, arc, csu, prop = c.take(8), c.take(2), c.take(4), msg[:8]
    assert crypto.arpc_method1(key, arqc, arc) == pe_ac.generate_arpc_1(sk_ac=key, arqc=arqc, arpc_rc=arc)
    expected = pe_ac.generate_arpc_2(sk_ac=key, arqc=arqc, csu=csu, prop_auth_data=prop)
    assert crypto.arpc_method2(key, arqc, csu, prop) == expected


@N
@given(c=blobs(32), track=st.binary(max_size=80))
def test_cvc3(c: Carver, track: bytes) -> None:
    key, atc, un = c.take(16), c.take(2), c.take(4)
    theirs = pe_cvv.generate_cvc3(icc_cvc3=key, track_template=track, atc=atc, un=un)
    assert crypto.generate_cvc3(key, track, atc=atc, un=un) == theirs.zfill(5)


_VARIANTS = {
    sm.Encipherment.VISA_ECB: pe_sm.EncryptionType.VISA,
    sm.Encipherment.MASTERCARD_CBC: pe_sm.EncryptionType.MASTERCARD,
    sm.Encipherment.CCD_CBC: pe_sm.EncryptionType.EMV,
}


@N
@given(
    c=blobs(80),
    cvn=st.sampled_from(CVN),
    plain=st.binary(min_size=1, max_size=40),
    with_current=st.booleans(),
)
def test_secure_messaging_primitives(c: Carver, cvn: CVN, plain: bytes, with_current: bool) -> None:
    """PIN blocks (ISO-2, VIS), the three encipherment variants, script MAC."""
    pin, current = c.pin(), c.pin() if with_current else None
    mk_ac, key = c.take(16), c.take(16)
    assert sm.pin_block_iso2(pin) == pe_sm.format_iso9564_2_pin_block(pin=pin)
    expected = pe_sm.format_vis_pin_block(icc_mk_ac=mk_ac, pin=pin, current_pin=current)
    assert sm.pin_block_vis(pin, mk_ac, current) == expected
    for variant, theirs in _VARIANTS.items():
        expected = pe_sm.encrypt_command_data(sk_smc=key, command_data=plain, encryption_type=theirs)
        assert sm.encipher_pin_block(variant, key, plain) == expected
    header, atc, arqc = c.take(5), c.take(2), c.take(8)
    txn = atc + arqc if cvn_spec(cvn).script_mac_covers_txn else b""
    expected = pe_sm.generate_command_mac(sk_smi=key, command=header + txn + plain)
    assert sm.script_mac(cvn, key, header, plain, atc=atc, arqc=arqc) == expected


# --------------------------------------------------------------------------------------------------
# every CVN pyemv implements: ARQC, ARPC, script MAC, PIN change
# --------------------------------------------------------------------------------------------------

PYEMV_CLASSES = {
    CVN.VISA_10: pe_cvn.VisaCVN10,
    CVN.VISA_18: pe_cvn.VisaCVN18,
    CVN.VISA_22: pe_cvn.VisaCVN22,
    CVN.MC_16: pe_cvn.MasterCardCVN16,
    CVN.MC_17: pe_cvn.MasterCardCVN17,
    CVN.MC_20: pe_cvn.MasterCardCVN20,
    CVN.MC_21: pe_cvn.MasterCardCVN21,
    CVN.INTERAC_133: pe_cvn.InteracCVN133,
}


def test_every_pyemv_cvn_is_covered() -> None:
    implemented = {name for name in dir(pe_cvn) if "CVN" in name and isinstance(getattr(pe_cvn, name), type)}
    assert implemented == {cls.__name__ for cls in PYEMV_CLASSES.values()}


TAGS = (
    ("tag_9f02", 6),
    ("tag_9f03", 6),
    ("tag_9f1a", 2),
    ("tag_95", 5),
    ("tag_5f2a", 2),
    ("tag_9a", 3),
    ("tag_9c", 1),
    ("tag_9f37", 4),
)


def _iad(cvn: CVN, tail: bytes) -> bytes:
    if cvn is CVN.VISA_10:
        return bytes([0x06, 0x01, 0x0A, 0x03]) + tail[:3]
    if cvn in (CVN.MC_16, CVN.MC_17, CVN.MC_20, CVN.MC_21):
        return bytes([0x01, cvn.value]) + tail[:16]
    if cvn is CVN.VISA_22:
        return bytes([0x1F, 0x22]) + tail[:30]
    return bytes([0x06, 0x01, cvn.value]) + tail[:29]


@N
@given(c=blobs(200), cvn=st.sampled_from(CVN), long_pan=st.booleans(), with_current=st.booleans())
def test_cvn_suite(c: Carver, cvn: CVN, long_pan: bool, with_current: bool) -> None:
    spec = cvn_spec(cvn)
    imks = (c.take(16), c.take(16), c.take(16))
    pan, psn = (c.pan(17, 19) if long_pan else c.pan()), c.psn()
    oracle = PYEMV_CLASSES[cvn](iss_mk_ac=imks[0], iss_mk_smi=imks[1], iss_mk_smc=imks[2], pan=pan, psn=psn)
    mk_ac, mk_smi, mk_smc = (crypto.derive_icc_mk(imk, pan, psn, option=spec.icc_mk_option) for imk in imks)
    assert (mk_ac, mk_smi, mk_smc) == (oracle.icc_mk_ac, oracle.icc_mk_smi, oracle.icc_mk_smc)

    # ARQC: pyemv takes the IAD (or its CVR / counters) split out; capsim selects from the whole IAD.
    txn = {name: c.take(n) for name, n in TAGS}
    aip, atc, iad = c.take(2), c.take(2), _iad(cvn, c.take(32))
    cdol1 = b"".join(txn.values())
    tags = dict(txn, tag_82=aip, tag_9f36=atc)
    if cvn is CVN.VISA_10:
        theirs = oracle.generate_ac(**tags, cvr=iad[3:7])
    elif cvn in (CVN.MC_16, CVN.MC_20):
        theirs = oracle.generate_ac(**tags, cvr=iad[2:8])
    elif cvn in (CVN.MC_17, CVN.MC_21):
        theirs = oracle.generate_ac(**tags, cvr=iad[2:8], counters=iad[10:18])
    else:
        theirs = oracle.generate_ac(**tags, tag_9f10=iad)
    arqc = crypto.generate_ac(cvn, mk_ac, cdol1_data=cdol1, aip=aip, atc=atc, iad=iad)
    assert arqc == theirs
    assert crypto.AcCalculator(cvn, mk_ac).generate(cdol1, aip, atc, iad) == arqc

    # ARPC: method and key per CVN.
    un, arc, csu = txn["tag_9f37"], c.take(2), c.take(4)
    if cvn in (CVN.VISA_18, CVN.VISA_22):
        theirs = oracle.generate_arpc(tag_9f26=arqc, tag_9f36=atc, csu=csu)
    elif cvn in (CVN.MC_20, CVN.MC_21):
        theirs = oracle.generate_arpc(tag_9f26=arqc, tag_9f36=atc, arpc_rc=arc)
    elif cvn is CVN.INTERAC_133:
        theirs = oracle.generate_arpc(tag_9f26=arqc, tag_9f37=un, tag_9f36=atc, arpc_rc=arc)
    else:
        theirs = oracle.generate_arpc(tag_9f26=arqc, arpc_rc=arc)
    ours = crypto.generate_arpc(cvn, mk_ac, arqc=arqc, atc=atc, un=un, arc=arc, csu=csu)
    assert ours == theirs

    # Script command MAC (APPLICATION BLOCK, header + MAC only).
    header = bytes.fromhex("841E000008")
    if cvn is CVN.INTERAC_133:
        theirs = oracle.generate_command_mac(command_header=header, tag_9f26=arqc)
    else:
        theirs = oracle.generate_command_mac(command_header=header, tag_9f26=arqc, tag_9f36=atc)
    ours = sm.build_script_command(cvn, ins=0x1E, mk_smi=mk_smi, atc=atc, arqc=arqc)
    assert ours == header + theirs

    # PIN change: Visa passes the current PIN (VIS block); the others take only the new PIN.
    pin, current = c.pin(), c.pin() if with_current else None
    keys = {"mk_ac": mk_ac, "mk_smi": mk_smi, "mk_smc": mk_smc, "atc": atc, "arqc": arqc}
    if cvn in (CVN.VISA_10, CVN.VISA_18, CVN.VISA_22):
        theirs = oracle.generate_pin_change_command(pin=pin, tag_9f26=arqc, tag_9f36=atc, current_pin=current)
        ours = sm.build_pin_change(cvn, new_pin=pin, current_pin=current, **keys)
    elif cvn is CVN.INTERAC_133:
        theirs = oracle.generate_pin_change_command(pin=pin, tag_9f26=arqc)
        ours = sm.build_pin_change(cvn, new_pin=pin, **keys)
    else:
        theirs = oracle.generate_pin_change_command(pin=pin, tag_9f26=arqc, tag_9f36=atc)
        ours = sm.build_pin_change(cvn, new_pin=pin, **keys)
    assert ours == theirs
