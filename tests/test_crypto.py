"""capsim.crypto: every vector of vectors.md §2–§6 on both DES backends, properties, validation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from capsim import _des, crypto
from capsim.crypto import (
    CVN,
    AcCalculator,
    KeyDerivation,
    SessionKeyMethod,
    TreeParams,
    ac_data,
    ac_session_key,
    arpc_method1,
    arpc_method2,
    cvn_spec,
    derive_common_sk,
    derive_emv2000_tree_sk,
    derive_icc_mk,
    derive_icc_mk_a,
    derive_icc_mk_b,
    derive_mastercard_sk,
    derive_visa_sm_sk,
    generate_ac,
    generate_arpc,
    generate_cvc3,
    key_check_value,
    mac_iso9797_alg1,
    mac_iso9797_alg3,
    odd_parity,
    pad_iso9797_1,
    pad_iso9797_2,
)
from capsim.errors import ValidationError
from tests.utils import kcv, load_vectors, unhex

AVAILABLE = _des.available_backends()


# --------------------------------------------------------------------------------------------------
# vectors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", load_vectors("crypto/primitives.txt"))
def test_primitive_vectors(backend: str, v: dict[str, str]) -> None:
    key = unhex(v["KEY"])
    if v["OP"] == "kcv":
        assert key_check_value(key, int(v["LENGTH"])) == unhex(v["KCV"])
    elif v["OP"] == "mac3":
        assert mac_iso9797_alg3(key, unhex(v["DATA"]), int(v["PADDING"])) == unhex(v["MAC"])
    else:
        assert v["OP"] == "mac1"
        assert mac_iso9797_alg1(key, unhex(v["DATA"]), int(v["PADDING"])) == unhex(v["MAC"])


@pytest.mark.parametrize("v", load_vectors("crypto/kd.txt"))
def test_icc_master_key_vectors(backend: str, v: dict[str, str]) -> None:
    imk, mk = unhex(v["IMK"]), unhex(v["MK"])
    args = (imk, v["PAN"]) + ((v["PSN"],) if "PSN" in v else ())
    if "IMK_KCV" in v:
        kcv(imk, v["IMK_KCV"])
    options = v["OPTION"].split()
    for option in options:
        if option == "A":
            assert derive_icc_mk_a(*args) == mk
            assert derive_icc_mk(*args, option=KeyDerivation.OPTION_A) == mk
        else:
            assert derive_icc_mk_b(*args) == mk
            assert derive_icc_mk(*args, option=KeyDerivation.OPTION_B) == mk
            assert derive_icc_mk(*args, option=KeyDerivation.AUTO) == mk
    if "MK_KCV" in v:
        kcv(mk, v["MK_KCV"])
    assert odd_parity(mk) == mk
    if "Y" in v:
        psn = v.get("PSN", "00")
        y = unhex(v["Y"])
        if "B" in options and len(v["PAN"]) > 16:
            assert crypto._option_b_y(v["PAN"], psn) == y
        else:
            assert (v["PAN"] + psn)[-16:] == v["Y"]
        if "ZL" in v:
            assert _des.ecb_encrypt(imk, y) == unhex(v["ZL"])
            assert _des.ecb_encrypt(imk, bytes(b ^ 0xFF for b in y)) == unhex(v["ZR"])
            assert odd_parity(unhex(v["ZL"] + v["ZR"])) == mk


@pytest.mark.parametrize("v", load_vectors("crypto/sk.txt"))
def test_session_key_vectors(backend: str, v: dict[str, str]) -> None:
    mk = unhex(v["MK"])
    if "MK_KCV" in v:
        kcv(mk, v["MK_KCV"])
    method = v["METHOD"]
    if method == "csk":
        r = unhex(v["R"])
        sk = derive_common_sk(mk, r)
        if r[2:] == bytes(6):  # R = ATC ‖ 00×6: the AC key of a CSK CVN, also via the fast path
            assert ac_session_key(CVN.VISA_18, mk, atc=r[:2]) == sk
            assert AcCalculator(CVN.MC_20, mk).session_key(r[:2]) == sk
    elif method == "skd":
        atc, un = unhex(v["ATC"]), unhex(v["UN"])
        sk = derive_mastercard_sk(mk, atc, un)
        assert derive_common_sk(mk, atc + bytes(2) + un) == sk
        assert ac_session_key(CVN.MC_16, mk, atc=atc, un=un) == sk
        assert AcCalculator(CVN.MC_16, mk).session_key(atc, un) == sk
    elif method == "visa-sm":
        sk = derive_visa_sm_sk(mk, unhex(v["ATC"]))
    else:
        assert method == "tree"
        atc, b, h, iv = unhex(v["ATC"]), int(v["B"]), int(v["H"]), unhex(v["IV"])
        sk = derive_emv2000_tree_sk(mk, atc, branch_factor=b, height=h, iv=iv)
        params = TreeParams(branch_factor=b, height=h, iv=iv)
        tree_method = SessionKeyMethod.EMV2000_TREE
        assert ac_session_key(CVN.VISA_18, mk, atc=atc, method=tree_method, tree=params) == sk
        calc = AcCalculator(CVN.MC_16, mk, method=SessionKeyMethod.EMV2000_TREE, tree=params)
        assert calc.session_key(atc) == sk
        assert calc.session_key(atc) == sk  # second time from the level cache
    if "SK" in v:
        assert sk == unhex(v["SK"])
    if "SK_KCV" in v:
        kcv(sk, v["SK_KCV"])
    assert odd_parity(sk) == sk


@pytest.mark.parametrize("v", load_vectors("crypto/ac.txt"))
def test_ac_and_arpc_vectors(backend: str, v: dict[str, str]) -> None:
    key = unhex(v["KEY"])
    if "KEY_KCV" in v:
        kcv(key, v["KEY_KCV"])
    if v["OP"] == "mac3":
        assert mac_iso9797_alg3(key, unhex(v["DATA"]), int(v["PADDING"])) == unhex(v["MAC"])
    elif v["OP"] == "arpc1":
        assert arpc_method1(key, unhex(v["ARQC"]), unhex(v["ARC"])) == unhex(v["ARPC"])
    else:
        assert v["OP"] == "arpc2"
        got = arpc_method2(key, unhex(v["ARQC"]), unhex(v["CSU"]), unhex(v["PROPRIETARY"]))
        assert got == unhex(v["ARPC"])


def cvn_keys(v: dict[str, str]) -> tuple[bytes, bytes, bytes]:
    """ICC MK-AC, MK-SMI, MK-SMC of a cvn.txt block, with the KCVs it pins."""
    spec = cvn_spec(int(v["CVN"], 16))
    mks = tuple(
        derive_icc_mk(unhex(v[f"IMK_{n}"]), v["PAN"], v["PSN"], option=spec.icc_mk_option)
        for n in ("AC", "SMI", "SMC")
    )
    for mk, n in zip(mks, ("AC", "SMI", "SMC"), strict=True):
        if f"MK_{n}_KCV" in v:
            kcv(mk, v[f"MK_{n}_KCV"])
    return mks[0], mks[1], mks[2]


@pytest.mark.parametrize("v", load_vectors("crypto/cvn.txt"))
def test_cvn_cryptogram_vectors(backend: str, v: dict[str, str]) -> None:
    cvn = CVN(int(v["CVN"], 16))
    mk_ac, _, _ = cvn_keys(v)
    cdol1, aip, atc, iad = unhex(v["CDOL1"]), unhex(v["AIP"]), unhex(v["ATC"]), unhex(v["IAD"])
    un = unhex(v["UN"]) if "UN" in v else None
    arqc = unhex(v["ARQC"])
    if "AC_KEY_KCV" in v:
        sk = ac_session_key(cvn, mk_ac, atc=atc, un=cdol1[-4:])
        kcv(sk, v["AC_KEY_KCV"])
    assert generate_ac(cvn, mk_ac, cdol1_data=cdol1, aip=aip, atc=atc, iad=iad) == arqc
    assert generate_ac(cvn, mk_ac, cdol1_data=cdol1, aip=aip, atc=atc, iad=iad, un=cdol1[-4:]) == arqc
    assert AcCalculator(cvn, mk_ac).generate(cdol1, aip, atc, iad) == arqc
    kwargs: dict[str, bytes] = {}
    if "ARC" in v:
        kwargs["arc"] = unhex(v["ARC"])
    if "CSU" in v:
        kwargs["csu"] = unhex(v["CSU"])
    if cvn_spec(cvn).session_key is SessionKeyMethod.MASTERCARD_SKD:
        kwargs["un"] = un if un is not None else cdol1[-4:]
    assert generate_arpc(cvn, mk_ac, arqc=arqc, atc=atc, **kwargs) == unhex(v["ARPC"])


@pytest.mark.parametrize("v", load_vectors("crypto/cvc3.txt"))
def test_cvc3_vectors(backend: str, v: dict[str, str]) -> None:
    key = derive_icc_mk_a(unhex(v["IMK"]), v["PAN"], v["PSN"])
    kcv(key, v["KEY_KCV"])
    track = v["TRACK"].encode("ascii") if v.get("ASCII") == "yes" else unhex(v["TRACK"])
    assert generate_cvc3(key, track, atc=unhex(v["ATC"]), un=unhex(v["UN"])) == v["CVC3"]


@pytest.mark.parametrize("v", load_vectors("cap/synthetic-dpa.txt"))
def test_cap_synthetic_dpa_chain(backend: str, v: dict[str, str]) -> None:
    """CAP-SYNTH: IMK-A → UDK (KCV BAB0) → Visa CVN 10 AC, by generate_ac and the fast path."""
    udk = derive_icc_mk_a(unhex(v["IMK"]), v["PAN"], v["PSN"])
    assert udk == unhex(v["UDK"])
    kcv(udk, "BAB0")
    args = (unhex(v["CDOL1_DATA"]), unhex(v["AIP"]), unhex(v["ATC"]), unhex(v["IAD"]))
    ac = generate_ac(CVN.VISA_10, udk, cdol1_data=args[0], aip=args[1], atc=args[2], iad=args[3])
    assert ac == unhex(v["AC"])
    assert AcCalculator(CVN.VISA_10, udk).generate(*args) == ac


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------

k16 = st.binary(min_size=16, max_size=16)
b2 = st.binary(min_size=2, max_size=2)
b4 = st.binary(min_size=4, max_size=4)
pans = st.integers(min_value=12, max_value=19).flatmap(
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)
)
psns = st.integers(min_value=0, max_value=99).map(lambda i: f"{i:02d}")


@given(data=st.binary(max_size=40))
def test_padding_methods(data: bytes) -> None:
    p1, p2 = pad_iso9797_1(data), pad_iso9797_2(data)
    assert len(p1) % 8 == 0
    assert len(p2) % 8 == 0
    assert p1[: len(data)] == data
    assert p2[: len(data)] == data
    assert p1[len(data) :] == bytes(len(p1) - len(data))
    assert p2[len(data) :] == b"\x80" + bytes(len(p2) - len(data) - 1)
    assert len(p1) - len(data) < 8 or not data
    assert 1 <= len(p2) - len(data) <= 8


@given(key=st.binary(max_size=24))
def test_odd_parity(key: bytes) -> None:
    fixed = odd_parity(key)
    assert all(bin(b).count("1") % 2 == 1 for b in fixed)
    assert all((a ^ b) in (0, 1) for a, b in zip(key, fixed, strict=True))
    assert odd_parity(fixed) == fixed


@given(key=k16, flips=st.binary(min_size=16, max_size=16))
def test_parity_never_changes_a_kcv(key: bytes, flips: bytes) -> None:
    other = bytes(k ^ (f & 1) for k, f in zip(key, flips, strict=True))
    assert key_check_value(key, 8) == key_check_value(other, 8)


@given(imk=k16, pan=pans, psn=psns)
def test_option_b_equals_a_for_short_pans(imk: bytes, pan: str, psn: str) -> None:
    b = derive_icc_mk_b(imk, pan, psn)
    if len(pan) <= 16:
        assert b == derive_icc_mk_a(imk, pan, psn)
    assert derive_icc_mk(imk, pan, psn) == b


@given(pan=st.text(alphabet="0123456789", min_size=17, max_size=19), psn=psns)
def test_option_b_y_is_16_decimal_digits(pan: str, psn: str) -> None:
    y = crypto._option_b_y(pan, psn).hex()
    assert len(y) == 16
    assert y.isdigit()


def _iad_for(cvn: CVN, tail: bytes) -> bytes:
    if cvn is CVN.VISA_10:
        return bytes([0x06, 0x01, cvn.value, 0x03]) + tail[:3]
    if cvn in (CVN.MC_16, CVN.MC_17, CVN.MC_20, CVN.MC_21):
        return bytes([0x01, cvn.value]) + (tail * 4)[:16]
    return bytes([0x06, 0x01, cvn.value]) + tail


ALL_METHODS = [None, *SessionKeyMethod]


# The plain definition of an application cryptogram, written here from emv-crypto.md §3–§5 on
# single-block DES calls only, so that it shares no code with capsim.crypto: generate_ac and
# AcCalculator are both checked against it.


def _xor_b(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _parity_b(key: bytes) -> bytes:
    return bytes(x if bin(x).count("1") % 2 else x ^ 1 for x in key)


def _e(key: bytes, block: bytes) -> bytes:
    assert len(block) == 8
    return _des.ecb_encrypt(key, block)


def _def_csk(mk: bytes, r: bytes) -> bytes:
    f1, f2 = r[:2] + b"\xf0" + r[3:], r[:2] + b"\x0f" + r[3:]
    return _parity_b(_e(mk, f1) + _e(mk, f2))


def _def_tree(ik: bytes, atc: bytes, t: TreeParams) -> bytes:
    a, digits = int.from_bytes(atc, "big"), list[int]()
    for _ in range(t.height):
        a, d = divmod(a, t.branch_factor)
        digits.insert(0, d)
    levels = {-1: t.iv, 0: ik}
    for i, d in enumerate(digits, 1):
        j, y = d.to_bytes(8, "big"), levels[i - 2]
        yr = _xor_b(_xor_b(y[8:], j), bytes(7) + b"\xf0")
        levels[i] = _e(levels[i - 1], _xor_b(y[:8], j)) + _e(levels[i - 1], yr)
    return _parity_b(_xor_b(levels[t.height], levels[t.height - 2]))


def _def_mac3(key: bytes, data: bytes, padding: int) -> bytes:
    if padding == 2:
        data += b"\x80"
    data = (data + bytes(-len(data) % 8)) or bytes(8)
    h = bytes(8)
    for i in range(0, len(data), 8):
        h = _e(key[:8], _xor_b(h, data[i : i + 8]))
    return _e(key[:8], _des.ecb_decrypt(key[8:], h))


DEF_IAD_PART: dict[CVN, Callable[[bytes], bytes]] = {
    CVN.VISA_10: lambda iad: iad[3:7],
    CVN.VISA_18: lambda iad: iad,
    CVN.VISA_22: lambda iad: iad,
    CVN.INTERAC_133: lambda iad: iad,
    CVN.MC_16: lambda iad: iad[2:8],
    CVN.MC_20: lambda iad: iad[2:8],
    CVN.MC_17: lambda iad: iad[2:8] + iad[10:18],
    CVN.MC_21: lambda iad: iad[2:8] + iad[10:18],
}
DEF_IAD_MIN = {CVN.VISA_10: 7, CVN.MC_16: 8, CVN.MC_20: 8, CVN.MC_17: 18, CVN.MC_21: 18}
DEF_METHOD = {
    CVN.VISA_10: SessionKeyMethod.NONE,
    CVN.VISA_18: SessionKeyMethod.EMV_CSK,
    CVN.VISA_22: SessionKeyMethod.EMV_CSK,
    CVN.MC_20: SessionKeyMethod.EMV_CSK,
    CVN.MC_21: SessionKeyMethod.EMV_CSK,
    CVN.MC_16: SessionKeyMethod.MASTERCARD_SKD,
    CVN.MC_17: SessionKeyMethod.MASTERCARD_SKD,
    CVN.INTERAC_133: SessionKeyMethod.MASTERCARD_SKD,
}


def _def_ac(
    cvn: CVN, method: SessionKeyMethod, mk: bytes, t: TreeParams, *, cdol1: bytes, aip: bytes, atc: bytes,
    iad: bytes, un: bytes,
) -> bytes:  # fmt: skip
    key = {
        SessionKeyMethod.NONE: lambda: mk,
        SessionKeyMethod.EMV_CSK: lambda: _def_csk(mk, atc + bytes(6)),
        SessionKeyMethod.MASTERCARD_SKD: lambda: _def_csk(mk, atc + bytes(2) + un),
        SessionKeyMethod.EMV2000_TREE: lambda: _def_tree(mk, atc, t),
    }[method]()
    return _def_mac3(key, cdol1 + aip + atc + DEF_IAD_PART[cvn](iad), 1 if cvn is CVN.VISA_10 else 2)


@st.composite
def tree_params(draw: st.DrawFn) -> TreeParams:
    """Random EMV2000 tree shapes: any branch factor from 2, the least height with b^H > 65535 or more."""
    b = draw(st.integers(min_value=2, max_value=300) | st.sampled_from([256, 65535, 65536, 70000]))
    h = 1
    while b**h <= 0xFFFF:
        h += 1
    return TreeParams(branch_factor=b, height=h + draw(st.integers(min_value=0, max_value=2)), iv=draw(k16))


@given(
    cvn=st.sampled_from(CVN),
    method=st.sampled_from(ALL_METHODS),
    mk=k16,
    cdol1=st.binary(max_size=45),
    aip=b2,
    atc=b2,
    un=st.none() | b4,
    tree=tree_params(),
    backend_name=st.sampled_from(AVAILABLE),
    data=st.data(),
)
def test_fast_path_equals_generate_ac_equals_definition(
    cvn: CVN,
    method: SessionKeyMethod | None,
    mk: bytes,
    cdol1: bytes,
    aip: bytes,
    atc: bytes,
    un: bytes | None,
    tree: TreeParams,
    backend_name: str,
    data: st.DataObject,
) -> None:
    """Every CVN × every session-key method, random keys, ATCs, UNs, CDOL1 data, IADs and tree
    shapes: AcCalculator (fresh, then again with its caches warm) gives what generate_ac gives,
    and both give the plain definition above; where one refuses the input, so does the other."""
    iad = data.draw(st.binary(min_size=DEF_IAD_MIN.get(cvn, 1), max_size=24), label="iad")
    m = method or DEF_METHOD[cvn]
    kw = {"cdol1_data": cdol1, "aip": aip, "atc": atc, "iad": iad, "method": method, "tree": tree}
    with _des.use_backend(backend_name):
        calc = AcCalculator(cvn, mk, method=method, tree=tree)
        if un is None and len(cdol1) < 4 and m is SessionKeyMethod.MASTERCARD_SKD:
            with pytest.raises(ValidationError, match=r"^un: not given"):
                generate_ac(cvn, mk, **kw)  # type: ignore[arg-type]
            with pytest.raises(ValidationError, match=r"^un: not given"):
                calc.generate(cdol1, aip, atc, iad)
            return
        ac = generate_ac(cvn, mk, un=un, **kw)  # type: ignore[arg-type]
        assert calc.generate(cdol1, aip, atc, iad, un) == ac
        assert calc.generate(cdol1, aip, atc, iad, un) == ac  # caches warm
        u = un if un is not None else (cdol1[-4:] if len(cdol1) >= 4 else bytes(4))
        assert calc.session_key(atc, u) == ac_session_key(cvn, mk, atc=atc, un=u, method=method, tree=tree)
    expected = _def_ac(cvn, m, mk, tree, cdol1=cdol1, aip=aip, atc=atc, iad=iad, un=u)
    assert ac == expected


@given(
    cvn=st.sampled_from(CVN),
    method=st.sampled_from(ALL_METHODS),
    cdol1=st.binary(max_size=8) | st.binary(max_size=8).map(bytearray),
    aip=st.binary(max_size=3) | st.binary(max_size=3).map(bytearray),
    atc=st.binary(max_size=3) | st.binary(max_size=3).map(bytearray),
    iad=st.binary(max_size=19) | st.binary(max_size=19).map(bytearray),
    un=st.none() | st.binary(max_size=5),
)
def test_fast_path_refuses_what_generate_ac_refuses(
    cvn: CVN,
    method: SessionKeyMethod | None,
    cdol1: bytes,
    aip: bytes,
    atc: bytes,
    iad: bytes,
    un: bytes | None,
) -> None:
    """Bad lengths and bytes-like types: the same answer or the same ValidationError from both."""
    calc = AcCalculator(cvn, MK, method=method)
    outcomes: list[bytes | str] = []
    calls: list[Callable[[], bytes]] = [
        lambda: generate_ac(cvn, MK, cdol1_data=cdol1, aip=aip, atc=atc, iad=iad, un=un, method=method),
        lambda: calc.generate(cdol1, aip, atc, iad, un),
    ]
    for call in calls:
        try:
            outcomes.append(call())
        except ValidationError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


@given(mk=k16, cdol1=st.binary(max_size=45), aip=b2, start=st.integers(min_value=0, max_value=0xFFF0))
def test_fixed_key_prefix_cache_over_an_atc_window(mk: bytes, cdol1: bytes, aip: bytes, start: int) -> None:
    """CVN 10 (no session key) reuses the CBC state over CDOL1 ‖ AIP across ATCs and CDOL1 changes."""
    calc = AcCalculator(CVN.VISA_10, mk)
    iad = unhex("06010A03A06010")
    for cd in (cdol1, cdol1[::-1], cdol1):
        for atc in range(start, start + 4):
            a = atc.to_bytes(2, "big")
            expected = generate_ac(CVN.VISA_10, mk, cdol1_data=cd, aip=aip, atc=a, iad=iad)
            assert calc.generate(cd, aip, a, iad) == expected
            assert calc.generate(bytearray(cd), bytearray(aip), bytearray(a), bytearray(iad)) == expected


@given(mk=k16, start=st.integers(min_value=0, max_value=0xFFF0))
def test_tree_cache_over_an_atc_window(mk: bytes, start: int) -> None:
    calc = AcCalculator(CVN.VISA_10, mk, method=SessionKeyMethod.EMV2000_TREE)
    for atc in range(start, min(start + 6, 0x10000)):
        a = atc.to_bytes(2, "big")
        assert calc.session_key(a) == derive_emv2000_tree_sk(mk, a, 2, 16)


class AcCalculatorMachine(RuleBasedStateMachine):
    """Long-lived calculators (with their prefix and tree-level caches) against the pure function,
    over interleaved ATCs, transaction data and backend switches."""

    CONFIGS = (
        (CVN.VISA_10, None, None),
        (CVN.VISA_18, None, None),
        (CVN.MC_16, None, None),
        (CVN.MC_21, None, None),
        (CVN.VISA_10, SessionKeyMethod.EMV2000_TREE, TreeParams()),
        (CVN.MC_16, SessionKeyMethod.EMV2000_TREE, TreeParams(branch_factor=4, height=8, iv=b"\xf0" * 16)),
    )

    def __init__(self) -> None:
        super().__init__()
        self.mk = b""
        self.calcs: list[AcCalculator] = []

    @initialize(mk=k16)
    def make(self, mk: bytes) -> None:
        self.mk = mk
        self.calcs = [AcCalculator(c, mk, method=m, tree=t) for c, m, t in self.CONFIGS]

    @rule(
        which=st.integers(min_value=0, max_value=len(CONFIGS) - 1),
        cdol1=st.sampled_from([bytes(29), bytes(range(29)), bytes(range(33)), b"\x01\x02\x03\x04"]),
        aip=st.sampled_from([unhex("1800"), unhex("3900")]),
        atc=st.integers(min_value=0, max_value=0xFFFF) | st.integers(min_value=0x0100, max_value=0x0108),
        tail=st.binary(min_size=16, max_size=16),
    )
    def generate(self, which: int, cdol1: bytes, aip: bytes, atc: int, tail: bytes) -> None:
        cvn, method, tree = self.CONFIGS[which]
        iad = _iad_for(cvn, tail)
        a = atc.to_bytes(2, "big")
        expected = generate_ac(
            cvn, self.mk, cdol1_data=cdol1, aip=aip, atc=a, iad=iad, method=method, tree=tree
        )
        assert self.calcs[which].generate(cdol1, aip, a, iad) == expected

    @rule(name=st.sampled_from(AVAILABLE))
    def switch_backend(self, name: str) -> None:
        _des.set_backend(name)

    def teardown(self) -> None:
        _des.set_backend(AVAILABLE[0])


TestAcCalculatorMachine = AcCalculatorMachine.TestCase
TestAcCalculatorMachine.settings = settings(stateful_step_count=20)  # examples from the profile


def test_calculator_shared_between_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    mk = unhex("154F349D8585CB7F6B0798E9839B10C1")
    cdol1, aip = bytes(range(29)), unhex("1800")
    cases = [
        (cvn, method, _iad_for(cvn, bytes(range(40, 60))))
        for cvn, method in (
            (CVN.VISA_10, None),
            (CVN.VISA_18, None),
            (CVN.MC_16, None),
            (CVN.VISA_10, "emv2000-tree"),
        )
    ]
    calcs = [AcCalculator(cvn, mk, method=SessionKeyMethod(m) if m else None) for cvn, m, _ in cases]
    atcs = [i.to_bytes(2, "big") for i in range(0x40, 0x80)]
    expected = [
        [
            generate_ac(
                cvn, mk, cdol1_data=cdol1, aip=aip, atc=a, iad=iad, method=SessionKeyMethod(m) if m else None
            )
            for a in atcs
        ]
        for cvn, m, iad in cases
    ]

    def work(k: int) -> list[list[bytes]]:
        order = atcs[k:] + atcs[:k]
        got = [{a: c.generate(cdol1, aip, a, cases[i][2]) for a in order} for i, c in enumerate(calcs)]
        return [[g[a] for a in atcs] for g in got]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(0, 64, 8)))
    assert all(r == expected for r in results)


def test_ac_data_selects_the_exact_bytes() -> None:
    """emv-crypto.md §5: the card part of the MAC input for each CVN."""
    cd, aip, atc = unhex("AABBCCDD"), unhex("1800"), unhex("001C")
    visa = unhex("06010A03A06010 0102")
    cvr4 = unhex("03A06010")
    assert ac_data(CVN.VISA_10, cdol1_data=cd, aip=aip, atc=atc, iad=visa) == cd + aip + atc + cvr4
    for c in (CVN.VISA_18, CVN.VISA_22, CVN.INTERAC_133):
        assert ac_data(c, cdol1_data=cd, aip=aip, atc=atc, iad=visa) == cd + aip + atc + visa
    mchip = unhex("0110 A00003220000 1234 00000000000322FF")
    cvr, counters = unhex("A00003220000"), unhex("00000000000322FF")
    for c in (CVN.MC_16, CVN.MC_20):
        assert ac_data(c, cdol1_data=cd, aip=aip, atc=atc, iad=mchip) == cd + aip + atc + cvr
    for c in (CVN.MC_17, CVN.MC_21):
        assert ac_data(c, cdol1_data=cd, aip=aip, atc=atc, iad=mchip) == cd + aip + atc + cvr + counters


def test_cvn_table_matches_spec() -> None:
    rows = {
        CVN.VISA_10: ("none", 1, 1, "mk", "visa", True, "visa-ecb"),
        CVN.VISA_18: ("emv-csk", 2, 2, "sk", "visa", True, "visa-ecb"),
        CVN.VISA_22: ("emv-csk", 2, 2, "sk", "csk-arqc", True, "visa-ecb"),
        CVN.MC_16: ("mastercard-skd", 2, 1, "mk", "csk-arqc", True, "mastercard-cbc"),
        CVN.MC_17: ("mastercard-skd", 2, 1, "mk", "csk-arqc", True, "mastercard-cbc"),
        CVN.MC_20: ("emv-csk", 2, 1, "sk", "csk-arqc", True, "mastercard-cbc"),
        CVN.MC_21: ("emv-csk", 2, 1, "sk", "csk-arqc", True, "mastercard-cbc"),
        CVN.INTERAC_133: ("mastercard-skd", 2, 1, "sk", "csk-arqc", False, "mastercard-cbc"),
    }
    for cvn, row in rows.items():
        s = cvn_spec(cvn)
        got = (s.session_key, s.padding, s.arpc_method, s.arpc_key, s.sm_keys)
        assert (*got, s.script_mac_covers_txn, s.pin_encipherment) == row
        assert cvn_spec(cvn.value) is s
    assert {c.value for c in CVN} == {0x0A, 0x12, 0x22, 0x10, 0x11, 0x14, 0x15, 0x85}


# --------------------------------------------------------------------------------------------------
# validation: a ValidationError naming the argument, nothing computed
# --------------------------------------------------------------------------------------------------

K = bytes(16)
MK = unhex("154F349D8585CB7F6B0798E9839B10C1")
GOOD_AC: dict[str, bytes] = {"cdol1_data": bytes(29), "aip": bytes(2), "atc": bytes(2), "iad": bytes(18)}

BAD_CALLS: list[tuple[str, Callable[[], object]]] = [
    ("imk", lambda: derive_icc_mk_a(bytes(8), "1234567890123456")),
    ("imk", lambda: derive_icc_mk_b(bytes(24), "12345678901234567")),
    ("pan", lambda: derive_icc_mk_a(K, "12345678901234x6")),
    ("pan", lambda: derive_icc_mk_a(K, "12345678901")),
    ("pan", lambda: derive_icc_mk_b(K, "12345678901234567890")),
    ("pan", lambda: derive_icc_mk_a(K, "１２３４５６７８９０１２")),  # full-width digits are not ASCII
    ("pan", lambda: derive_icc_mk_a(K, 1234567890123456)),  # type: ignore[arg-type]
    ("psn", lambda: derive_icc_mk_a(K, "1234567890123456", "1")),
    ("psn", lambda: derive_icc_mk_b(K, "1234567890123456", "0A")),
    ("psn", lambda: derive_icc_mk(K, "1234567890123456", "001")),
    ("option", lambda: derive_icc_mk(K, "1234567890123456", option="C")),  # type: ignore[arg-type]
    ("mk", lambda: derive_common_sk(bytes(15), bytes(8))),
    ("r", lambda: derive_common_sk(K, bytes(7))),
    ("atc", lambda: derive_mastercard_sk(K, bytes(3), bytes(4))),
    ("un", lambda: derive_mastercard_sk(K, bytes(2), bytes(5))),
    ("atc", lambda: derive_visa_sm_sk(K, bytes(1))),
    ("atc", lambda: derive_emv2000_tree_sk(K, bytes(3), 2, 16)),
    ("branch_factor, height", lambda: derive_emv2000_tree_sk(K, bytes(2), 2, 15)),
    ("branch_factor, height", lambda: derive_emv2000_tree_sk(K, bytes(2), 1, 100)),
    ("height", lambda: derive_emv2000_tree_sk(K, bytes(2), 2, 0)),
    ("iv", lambda: derive_emv2000_tree_sk(K, bytes(2), 2, 16, bytes(8))),
    ("branch_factor, height", lambda: TreeParams(branch_factor=15, height=4)),
    ("key", lambda: mac_iso9797_alg3(bytes(8), b"x")),
    ("key", lambda: mac_iso9797_alg1(bytes(16), b"x")),
    ("padding", lambda: mac_iso9797_alg3(K, b"x", 3)),
    ("padding", lambda: mac_iso9797_alg1(bytes(8), b"x", True)),
    ("data", lambda: mac_iso9797_alg3(K, "text")),  # type: ignore[arg-type]
    ("key", lambda: key_check_value(bytes(24))),
    ("length", lambda: key_check_value(K, 9)),
    ("cvn", lambda: cvn_spec(0x99)),
    ("cvn", lambda: generate_ac(0x0C, MK, **GOOD_AC)),
    ("mk_ac", lambda: generate_ac(CVN.VISA_18, bytes(8), **GOOD_AC)),
    ("atc", lambda: generate_ac(CVN.VISA_18, MK, **{**GOOD_AC, "atc": bytes(3)})),
    ("aip", lambda: generate_ac(CVN.VISA_18, MK, **{**GOOD_AC, "aip": bytes(1)})),
    ("iad", lambda: generate_ac(CVN.MC_17, MK, **{**GOOD_AC, "iad": bytes(17)})),
    ("iad", lambda: generate_ac(CVN.VISA_10, MK, **{**GOOD_AC, "iad": bytes(6)})),
    ("un", lambda: generate_ac(CVN.MC_16, MK, **GOOD_AC, un=bytes(3))),
    ("un", lambda: generate_ac(CVN.MC_16, MK, **{**GOOD_AC, "cdol1_data": bytes(3)})),
    ("method", lambda: generate_ac(CVN.MC_16, MK, **GOOD_AC, method="des")),  # type: ignore[arg-type]
    ("tree", lambda: generate_ac(CVN.MC_16, MK, **GOOD_AC, method="emv2000-tree", tree=(2, 16))),  # type: ignore[arg-type]
    ("arqc", lambda: arpc_method1(K, bytes(7), bytes(2))),
    ("arc", lambda: arpc_method1(K, bytes(8), bytes(1))),
    ("csu", lambda: arpc_method2(K, bytes(8), bytes(3))),
    ("proprietary", lambda: arpc_method2(K, bytes(8), bytes(4), bytes(9))),
    ("un", lambda: generate_arpc(CVN.INTERAC_133, MK, arqc=bytes(8), atc=bytes(2))),
    ("un", lambda: generate_cvc3(MK, b"track", atc=bytes(2), un=bytes(3))),
    ("key", lambda: generate_cvc3(bytes(8), b"track", atc=bytes(2), un=bytes(4))),
    ("mk_ac", lambda: AcCalculator(CVN.VISA_18, bytes(17))),
    ("atc", lambda: AcCalculator(CVN.VISA_18, MK).generate(bytes(29), bytes(2), bytes(1), bytes(7))),
    ("iad", lambda: AcCalculator(CVN.MC_21, MK).generate(bytes(29), bytes(2), bytes(2), bytes(8))),
    ("un", lambda: AcCalculator(CVN.MC_16, MK).generate(bytes(29), bytes(2), bytes(2), bytes(8), bytes(2))),
    ("un", lambda: AcCalculator(CVN.MC_16, MK).generate(bytes(3), bytes(2), bytes(2), bytes(8))),
    ("un", lambda: AcCalculator(CVN.INTERAC_133, MK).generate(b"", bytes(2), bytes(2), bytes(1))),
    ("atc", lambda: AcCalculator(CVN.VISA_18, MK).session_key(bytes(3))),
    ("un", lambda: AcCalculator(CVN.MC_16, MK).session_key(bytes(2), bytes(5))),
    ("tree", lambda: AcCalculator(CVN.VISA_10, MK, tree=(2, 16))),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "call"), BAD_CALLS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_validation_error_naming_them(name: str, call: Callable[[], object]) -> None:
    with pytest.raises(ValidationError) as info:
        call()
    assert str(info.value).startswith(f"{name}:")
    assert isinstance(info.value, ValueError)


def test_public_names() -> None:
    for name in crypto.__all__:
        assert hasattr(crypto, name)
    assert crypto.Encipherment.VISA_ECB == "visa-ecb"


# -- found by the mutation run -----------------------------------------------------------------


def test_one_calculator_reused_over_a_shared_prefix_equals_the_one_shot_function() -> None:
    """A calculator reuses the MAC state over the fixed CDOL1 prefix (CVN 10: no session key);
    every later cryptogram over the same prefix is still exactly :func:`generate_ac`'s."""
    from capsim.crypto import AcCalculator, SessionKeyMethod, generate_ac

    mk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    cdol = bytes(range(29))
    aip = bytes.fromhex("1000")
    cases = [
        (CVN.VISA_10, bytes.fromhex("06010A03A00000")),
        (CVN.VISA_18, bytes.fromhex("06011203A0000000") + bytes(range(24))),  # a long IAD tail
    ]
    for cvn, iad in cases:
        calc = AcCalculator(cvn, mk, method=SessionKeyMethod.NONE)
        for atc_n in range(4):
            atc = atc_n.to_bytes(2, "big")
            for un in (bytes(4), bytes.fromhex("DEADBEEF")):
                want = generate_ac(
                    cvn, mk, cdol1_data=cdol, aip=aip, atc=atc, iad=iad, un=un, method=SessionKeyMethod.NONE
                )
                assert calc.generate(cdol, aip, atc, iad, un) == want, (cvn, atc_n)


def test_iso9797_mac_default_padding_is_method_2() -> None:
    from capsim.crypto import mac_iso9797_alg1

    key, data = bytes.fromhex("9CA5A4CA1651CE31"), b"capsim"
    assert mac_iso9797_alg1(key, data) == mac_iso9797_alg1(key, data, padding=2)
    assert mac_iso9797_alg1(key, data) != mac_iso9797_alg1(key, data, padding=1)


# -- found by the second mutation draw ---------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 7, 8])
def test_kcv_of_every_length_from_1_to_8_is_a_prefix_of_the_full_check_value(length: int) -> None:
    key = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
    full = key_check_value(key, 8)
    assert key_check_value(key, length) == full[:length]
    assert len(key_check_value(key, length)) == length


@pytest.mark.parametrize("length", [0, 9, True, 3.0])
def test_kcv_length_outside_1_to_8_is_refused_with_its_message(length: object) -> None:
    with pytest.raises(ValidationError) as info:
        key_check_value(K, length)  # type: ignore[arg-type]
    assert str(info.value) == f"length: expected an int from 1 to 8, got {length!r}"


@pytest.mark.parametrize(
    "cvn",
    [CVN.VISA_10, CVN.MC_16, CVN.VISA_18],  # the ARPC keyed by MK-AC itself, and by a session key
)
def test_arpc_with_a_short_master_key_names_the_mk_ac_argument(cvn: CVN) -> None:
    with pytest.raises(ValidationError) as info:
        generate_arpc(cvn, bytes(15), arqc=bytes(8), atc=bytes(2), un=bytes(4))
    assert str(info.value) == "mk_ac: expected a 16-byte double-length TDES key, got 15 bytes"


def test_an_unsupported_cvn_is_refused_listing_every_supported_one() -> None:
    with pytest.raises(ValidationError) as info:
        cvn_spec(0x99)
    assert str(info.value) == (
        "cvn: unsupported cryptogram version 153; expected one of VISA_10=0x0A, VISA_18=0x12,"
        " VISA_22=0x22, MC_16=0x10, MC_17=0x11, MC_20=0x14, MC_21=0x15, INTERAC_133=0x85"
    )


def test_an_empty_iad_is_refused_for_the_cvns_that_mac_the_whole_iad() -> None:
    for cvn in (CVN.VISA_18, CVN.VISA_22, CVN.INTERAC_133):
        with pytest.raises(ValidationError) as info:
            generate_ac(cvn, MK, **{**GOOD_AC, "iad": b""}, un=bytes(4))
        assert str(info.value) == "iad: expected a non-empty IAD, got 0 bytes"


@pytest.mark.parametrize(
    ("branch_factor", "height", "message"),
    [
        (0, 8, "branch_factor: expected a positive int, got 0"),
        (True, 8, "branch_factor: expected a positive int, got True"),
        (4, 0, "height: expected a positive int, got 0"),
        (4, "8", "height: expected a positive int, got '8'"),
        (1, 17, "branch_factor, height: expected b >= 2 and b^H > 65535, got b=1, H=17"),
        (4, 7, "branch_factor, height: expected b >= 2 and b^H > 65535, got b=4, H=7"),
    ],
)
def test_tree_parameters_are_refused_by_name(branch_factor: object, height: object, message: str) -> None:
    """The EMV2000 tree's parameters, refused with the parameter named (function and TreeParams alike)."""
    ik = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    with pytest.raises(ValidationError) as info:
        derive_emv2000_tree_sk(ik, b"\x00\x1c", branch_factor=branch_factor, height=height)  # type: ignore[arg-type]
    assert str(info.value) == message
    with pytest.raises(ValidationError) as info:
        TreeParams(branch_factor=branch_factor, height=height)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(("name", "value"), [("iad", "06010A03A00000"), ("cdol1_data", [0] * 29)])
def test_ac_data_names_an_argument_that_is_not_bytes(name: str, value: object) -> None:
    args: dict[str, object] = {
        "cdol1_data": bytes(29),
        "aip": b"\x38\x00",
        "atc": b"\x00\x01",
        "iad": bytes(18),
    }
    args[name] = value
    with pytest.raises(ValidationError) as info:
        ac_data(CVN.MC_16, **args)  # type: ignore[arg-type]
    assert str(info.value) == f"{name}: expected bytes, got {type(value).__name__}"
