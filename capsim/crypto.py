"""EMV symmetric cryptography, hazmat layer (emv-crypto.md §1–§6, §9).

Pure functions on ``bytes``; PANs and PSNs are ASCII digit strings. Every DES operation goes
through :mod:`capsim._des`, the one module that imports a cipher. Keys are 16-byte two-key TDES
keys unless a function says otherwise. Bad arguments raise
:class:`capsim.errors.ValidationError` naming the argument and the expected form, before any
computation.

>>> imk_a = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> key_check_value(imk_a).hex().upper()
'08D7B4'
>>> mk = derive_icc_mk_a(imk_a, "1234567890123456", "00")
>>> key_check_value(mk, 2).hex().upper()
'BAB0'
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final, Literal

from capsim import _des
from capsim._validate import as_bytes as _as_bytes
from capsim._validate import enum_member
from capsim._validate import fixed_bytes as _fixed
from capsim.errors import ValidationError

__all__ = [
    "CVN",
    "AcCalculator",
    "ArpcKey",
    "CvnSpec",
    "Encipherment",
    "KeyDerivation",
    "SessionKeyMethod",
    "SmKeys",
    "TreeParams",
    "ac_data",
    "ac_session_key",
    "arpc_method1",
    "arpc_method2",
    "cvn_spec",
    "derive_common_sk",
    "derive_emv2000_tree_sk",
    "derive_icc_mk",
    "derive_icc_mk_a",
    "derive_icc_mk_b",
    "derive_mastercard_sk",
    "derive_visa_sm_sk",
    "generate_ac",
    "generate_arpc",
    "generate_cvc3",
    "key_check_value",
    "mac_iso9797_alg1",
    "mac_iso9797_alg3",
    "odd_parity",
    "pad_iso9797_1",
    "pad_iso9797_2",
]

_log = logging.getLogger(__name__)

_ZERO8: Final = bytes(8)
_ZERO6: Final = bytes(6)

# Byte -> the same byte with odd parity (bit 0 flipped when the popcount is even).
_PARITY_TABLE: Final = bytes(b if bin(b).count("1") % 2 else b ^ 1 for b in range(256))


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _key16(name: str, value: object) -> bytes:
    b = _as_bytes(name, value)
    if len(b) != 16:
        raise ValidationError(f"{name}: expected a 16-byte double-length TDES key, got {len(b)} bytes")
    return b


def _pan(pan: object) -> str:
    if not isinstance(pan, str) or not pan.isascii() or not pan.isdigit():
        raise ValidationError("pan: expected a string of 12 to 19 ASCII digits")
    if not 12 <= len(pan) <= 19:
        raise ValidationError(f"pan: expected 12 to 19 digits, got {len(pan)}")
    return pan


def _psn(psn: object) -> str:
    if not isinstance(psn, str) or len(psn) != 2 or not psn.isascii() or not psn.isdigit():
        raise ValidationError("psn: expected exactly 2 ASCII digits (use '00' when 5F34 is absent)")
    return psn


def _padding(padding: object) -> int:
    if isinstance(padding, bool) or not isinstance(padding, int) or padding not in (1, 2):
        raise ValidationError(f"padding: expected 1 or 2 (ISO/IEC 9797-1 method), got {padding!r}")
    return padding


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


# --------------------------------------------------------------------------------------------------
# key basics, padding, MACs (§1, §3)
# --------------------------------------------------------------------------------------------------


def odd_parity(key: bytes) -> bytes:
    """Set odd parity on every byte of ``key`` (emv-crypto.md §1).

    Each byte whose popcount is even gets bit 0 flipped; other bytes are unchanged.

    >>> odd_parity(bytes.fromhex("00FE0102")).hex().upper()
    '01FE0102'
    """
    return _as_bytes("key", key).translate(_PARITY_TABLE)


def key_check_value(key: bytes, length: int = 3) -> bytes:
    """Key check value: the leftmost ``length`` bytes of ``DES3(K)[00×8]`` (emv-crypto.md §1, CRY-KCV).

    ``key`` may be 8 (single DES) or 16 bytes; ``length`` is 1 to 8.

    >>> key_check_value(bytes.fromhex("FEDCBA98765432100123456789ABCDEF")).hex().upper()
    '7B8358'
    """
    k = _as_bytes("key", key)
    if len(k) not in (8, 16):
        raise ValidationError(f"key: expected 8 or 16 bytes, got {len(k)}")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 8:
        raise ValidationError(f"length: expected an int from 1 to 8, got {length!r}")
    return _des.ecb_encrypt(k, _ZERO8)[:length]


def pad_iso9797_1(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zero bytes up to a multiple of 8 (emv-crypto.md §3).

    Empty data becomes one zero block.

    >>> pad_iso9797_1(b"").hex()
    '0000000000000000'
    >>> pad_iso9797_1(bytes(8)) == bytes(8)
    True
    """
    d = _as_bytes("data", data)
    if not d:
        return _ZERO8
    return d + bytes(-len(d) % 8)


def pad_iso9797_2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: ``80`` then zeros up to a multiple of 8 (emv-crypto.md §3).

    >>> pad_iso9797_2(bytes.fromhex("0102")).hex().upper()
    '0102800000000000'
    >>> len(pad_iso9797_2(bytes(8)))
    16
    """
    d = _as_bytes("data", data)
    return d + b"\x80" + bytes(-(len(d) + 1) % 8)


def _pad(data: bytes, padding: int) -> bytes:
    if padding == 2:
        return data + b"\x80" + bytes(-(len(data) + 1) % 8)
    if not data:
        return _ZERO8
    return data + bytes(-len(data) % 8)


def mac_iso9797_alg1(key: bytes, data: bytes, padding: int = 2) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 1: single-DES CBC-MAC, IV 0, 8 bytes (emv-crypto.md §3).

    ``key`` is an 8-byte DES key (CAP TDS keys it with the Identify ARQC, §8).

    >>> mac_iso9797_alg1(bytes.fromhex("9CA5A4CA1651CE31"),
    ...                  bytes.fromhex("0530026806800000"), padding=1).hex().upper()
    'D2EC6598EC48C83B'
    """
    k = _fixed("key", key, 8)
    return _des.cbc_mac(k, _pad(_as_bytes("data", data), _padding(padding)))


def mac_iso9797_alg3(key: bytes, data: bytes, padding: int = 2) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (retail MAC, EMV Book 2 A1.2.1), 8 bytes (emv-crypto.md §3).

    Single-DES CBC under KL over all blocks, then ``DES(KL)[DES⁻¹(KR)[Hn]]``.

    >>> key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    >>> mac_iso9797_alg3(key, b"hello world", padding=1).hex().upper()
    '78DA3D3DEB48FD4D'
    >>> mac_iso9797_alg3(key, b"hello world").hex().upper()
    '2BC2D9EDE0CF31F6'
    """
    k = _key16("key", key)
    return _des._unchecked_retail_mac(k, _pad(_as_bytes("data", data), _padding(padding)))


# --------------------------------------------------------------------------------------------------
# ICC master keys (§4.1)
# --------------------------------------------------------------------------------------------------


class KeyDerivation(StrEnum):
    """ICC master key derivation option (emv-crypto.md §4.1).

    ``AUTO`` uses Option B for PANs longer than 16 digits and Option A otherwise (the two agree
    for PANs of 16 digits or fewer).
    """

    AUTO = "auto"
    OPTION_A = "A"
    OPTION_B = "B"


def _mk_from_y(imk: bytes, y: bytes) -> bytes:
    z = _des.ecb(imk).encrypt(y + _xor(y, b"\xff" * 8))
    return z.translate(_PARITY_TABLE)


def derive_icc_mk_a(imk: bytes, pan: str, psn: str = "00") -> bytes:
    """ICC master key, EMV Option A (Book 2 A1.4.1; emv-crypto.md §4.1, CRY-KD-*).

    Y = the rightmost 16 digits of PAN ‖ PSN (left-padded with ``0``), packed BCD;
    MK = odd_parity(DES3(IMK)[Y] ‖ DES3(IMK)[Y ⊕ FF×8]).

    >>> imk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> derive_icc_mk_a(imk, "5656781234567891", "01").hex().upper()
    'CB45F892BCDA763EF131AE6DE0762634'
    """
    k = _key16("imk", imk)
    x = _pan(pan) + _psn(psn)
    y = bytes.fromhex(x[-16:].rjust(16, "0"))
    return _mk_from_y(k, y)


def _option_b_y(pan: str, psn: str) -> bytes:
    x = pan + psn
    if len(x) % 2:
        x = "0" + x
    digest = hashlib.sha1(bytes.fromhex(x), usedforsecurity=False).hexdigest().upper()
    digits = [c for c in digest if c.isdigit()]
    if len(digits) < 16:
        digits += [str(int(c, 16) - 10) for c in digest if not c.isdigit()]
    return bytes.fromhex("".join(digits[:16]))


def derive_icc_mk_b(imk: bytes, pan: str, psn: str = "00") -> bytes:
    """ICC master key, EMV Option B (emv-crypto.md §4.1); equals Option A for PANs of ≤ 16 digits.

    Y = the first 16 decimal digits of SHA-1(BCD(PAN ‖ PSN)) (a second pass maps A–F to 0–5
    when fewer than 16 digits are found), then as Option A.

    >>> imk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> derive_icc_mk_b(imk, "12345678901234567", "01").hex().upper()
    'AD406D7F6D7570916D75E5DCAB8CF737'
    """
    k = _key16("imk", imk)
    p, s = _pan(pan), _psn(psn)
    if len(p) <= 16:
        return derive_icc_mk_a(k, p, s)
    return _mk_from_y(k, _option_b_y(p, s))


def derive_icc_mk(
    imk: bytes, pan: str, psn: str = "00", *, option: KeyDerivation = KeyDerivation.AUTO
) -> bytes:
    """ICC master key with the chosen :class:`KeyDerivation` option (emv-crypto.md §4.1).

    >>> imk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> derive_icc_mk(imk, "12345678901234567", "01", option=KeyDerivation.OPTION_A).hex().upper()
    '73AD54688CEF2934B0979857E3C719F1'
    """
    try:
        opt = KeyDerivation(option)
    except ValueError:
        raise ValidationError(f"option: expected one of {[o.value for o in KeyDerivation]}") from None
    if opt is KeyDerivation.OPTION_A:
        return derive_icc_mk_a(imk, pan, psn)
    return derive_icc_mk_b(imk, pan, psn)


# --------------------------------------------------------------------------------------------------
# session keys (§4.2)
# --------------------------------------------------------------------------------------------------


def _csk(mk: bytes, r: bytes) -> bytes:
    """The CSK rule on checked arguments (16-byte ``mk``, 8-byte ``r``); MK's ECB object is cached."""
    head, tail = r[:2], r[3:]  # F1/F2: R with its byte at index 2 set to F0/0F
    f = head + b"\xf0" + tail + head + b"\x0f" + tail
    return _des._cached_ecb(mk).encrypt(f).translate(_PARITY_TABLE)


def _skd_r(atc: bytes, un: bytes) -> bytes:
    """R of the Mastercard SKD key: ATC ‖ 00 00 ‖ UN."""
    return atc + b"\x00\x00" + un


def derive_common_sk(mk: bytes, r: bytes) -> bytes:
    """EMV common session key (Book 2 A1.3.1; emv-crypto.md §4.2, CRY-SK-CSK).

    F1/F2 = R with the byte at index 2 set to ``F0``/``0F``;
    SK = odd_parity(DES3(MK)[F1] ‖ DES3(MK)[F2]). The AC key uses R = ATC ‖ 00×6; the
    secure-messaging keys use R = ARQC.

    >>> mk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> derive_common_sk(mk, bytes.fromhex("001C000000000000")).hex().upper()
    'E9FB384AF807B940FEDCEA613461B0C4'
    """
    return _csk(_key16("mk", mk), _fixed("r", r, 8))


def derive_mastercard_sk(mk: bytes, atc: bytes, un: bytes) -> bytes:
    """Mastercard SKD session key: the CSK rule with R = ATC ‖ 00 00 ‖ UN (emv-crypto.md §4.2, CRY-SK-MCSKD).

    >>> mk = bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    >>> sk = derive_mastercard_sk(mk, bytes.fromhex("001C"), bytes.fromhex("ABCDEF12"))
    >>> key_check_value(sk, 2).hex().upper()
    '2FD5'
    """
    return _csk(_key16("mk", mk), _skd_r(_fixed("atc", atc, 2), _fixed("un", un, 4)))


def derive_visa_sm_sk(mk: bytes, atc: bytes) -> bytes:
    """Visa secure-messaging session key, XOR method (VIS; emv-crypto.md §4.2, CRY-SK-VISASM).

    SK_L = MK_L ⊕ (00×6 ‖ ATC), SK_R = MK_R ⊕ (00×6 ‖ ATC ⊕ FFFF), odd parity.

    >>> mk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> derive_visa_sm_sk(mk, bytes.fromhex("001C")).hex().upper()
    '0123456789ABCDF2FEDCBA987654CDF2'
    """
    k = _key16("mk", mk)
    a = int.from_bytes(_fixed("atc", atc, 2), "big")
    mask = ((a << 64) | (a ^ 0xFFFF)).to_bytes(16, "big")
    return _xor(k, mask).translate(_PARITY_TABLE)


def _check_tree(branch_factor: object, height: object, iv: object) -> bytes:
    for name, v in (("branch_factor", branch_factor), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValidationError(f"{name}: expected a positive int, got {v!r}")
    assert isinstance(branch_factor, int)
    assert isinstance(height, int)
    if branch_factor < 2 or branch_factor**height <= 0xFFFF:
        raise ValidationError(
            f"branch_factor, height: expected b >= 2 and b^H > 65535, got b={branch_factor}, H={height}"
        )
    return _fixed("iv", iv, 16)


def _tree_g(k: bytes, y: bytes, d: int) -> bytes:
    # G(K, Y, d) = DES3(K)[YL ⊕ J] ‖ DES3(K)[YR ⊕ J ⊕ (00×7 ‖ F0)], J = d as 8 bytes.
    yl = int.from_bytes(y[:8], "big") ^ d
    yr = int.from_bytes(y[8:], "big") ^ d ^ 0xF0
    return _des._unchecked_encrypt_once(k, yl.to_bytes(8, "big") + yr.to_bytes(8, "big"))


# Tree nodes (L(i), L(i−1), L(i−2)) by (level i, the top i digits of the ATC).
_TreeCache = dict[tuple[int, int], tuple[bytes, bytes, bytes]]
_TREE_CACHE_SIZE: Final = 4096


def _tree_sk(ik: bytes, iv: bytes, b: int, h: int, atc: bytes, *, cache: _TreeCache | None) -> bytes:
    """The tree rule on checked arguments: L(0) = IK, L(−1) = IV, L(i) = G(L(i−1), L(i−2), dᵢ)
    along the ATC's ``h`` base-``b`` digits, SK = odd_parity(L(H) ⊕ L(H−2)).

    With a ``cache`` (one per IK, IV and b) the walk starts from the deepest node of the path
    already computed, and stores the nodes it computes.
    """
    a = int.from_bytes(atc, "big")
    start, node = 0, (ik, iv, b"")
    if cache is not None:
        p = a
        for lv in range(h, 0, -1):
            hit = cache.get((lv, p))
            if hit is not None:
                start, node = lv, hit
                break
            p //= b
    for lv in range(start + 1, h + 1):
        q = a // b ** (h - lv)  # the top lv digits
        node = (_tree_g(node[0], node[1], q % b), node[0], node[1])
        if cache is not None:
            if len(cache) >= _TREE_CACHE_SIZE:
                cache.clear()
            cache[(lv, q)] = node
    return _xor(node[0], node[2]).translate(_PARITY_TABLE)


def derive_emv2000_tree_sk(
    ik: bytes, atc: bytes, branch_factor: int, height: int, iv: bytes = bytes(16)
) -> bytes:
    """EMV2000 tree session key (EMV 4.0 Book 2 A1.3; emv-crypto.md §4.2, CRY-SK-TREE).

    The ATC written in base ``branch_factor`` as ``height`` digits selects a path; L(−1) = IV,
    L(0) = IK, L(i) = G(L(i−1), L(i−2), dᵢ), SK = odd_parity(L(H) ⊕ L(H−2)).
    ``branch_factor ** height`` must exceed 65535.

    >>> ik = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    >>> derive_emv2000_tree_sk(ik, bytes.fromhex("001C"), branch_factor=4, height=8).hex().upper()
    'E5BF6D1067F194B0A89B7F5D83BC64A2'
    """
    k = _key16("ik", ik)
    a = _fixed("atc", atc, 2)
    v = _check_tree(branch_factor, height, iv)
    return _tree_sk(k, v, branch_factor, height, a, cache=None)


# --------------------------------------------------------------------------------------------------
# CVN table (§5, §6, §7)
# --------------------------------------------------------------------------------------------------


class CVN(IntEnum):
    """Cryptogram version numbers capsim implements (the CVN byte of the IAD; emv-crypto.md §5)."""

    VISA_10 = 0x0A
    VISA_18 = 0x12
    VISA_22 = 0x22
    MC_16 = 0x10
    MC_17 = 0x11
    MC_20 = 0x14
    MC_21 = 0x15
    INTERAC_133 = 0x85


class SessionKeyMethod(StrEnum):
    """How the AC session key is derived from MK-AC (emv-crypto.md §4.2)."""

    NONE = "none"
    EMV_CSK = "emv-csk"
    MASTERCARD_SKD = "mastercard-skd"
    EMV2000_TREE = "emv2000-tree"


class Encipherment(StrEnum):
    """PIN-block / script-data encipherment variants (emv-crypto.md §7.3); re-exported by :mod:`capsim.sm`."""

    VISA_ECB = "visa-ecb"
    MASTERCARD_CBC = "mastercard-cbc"
    CCD_CBC = "ccd-cbc"


ArpcKey = Literal["mk", "sk"]
SmKeys = Literal["visa", "csk-arqc"]


@dataclass(frozen=True, kw_only=True)
class TreeParams:
    """EMV2000 tree parameters: branch factor, height and IV (emv-crypto.md §4.2)."""

    branch_factor: int = 2
    height: int = 16
    iv: bytes = bytes(16)

    def __post_init__(self) -> None:
        _check_tree(self.branch_factor, self.height, self.iv)


_DEFAULT_TREE: Final = TreeParams()


@dataclass(frozen=True, kw_only=True)
class CvnSpec:
    """One row of the CVN table (emv-crypto.md §5).

    Attributes
    ----------
    cvn:
        The CVN.
    session_key:
        AC session-key method.
    padding:
        ISO/IEC 9797-1 padding method of the AC MAC.
    arpc_method:
        ARPC method (1 or 2, emv-crypto.md §6).
    arpc_key:
        ``"mk"`` when the ARPC is keyed with MK-AC, ``"sk"`` when with the AC session key.
    sm_keys:
        ``"visa"`` (XOR-ATC) or ``"csk-arqc"`` (CSK with R = ARQC) secure-messaging keys.
    script_mac_covers_txn:
        Whether the script MAC input includes ATC ‖ ARQC after the header (§7.2).
    pin_encipherment:
        PIN-block encipherment variant for PIN change (§7.3).
    icc_mk_option:
        ICC master key derivation the scheme uses (the table's "ICC MK" column): Option A, or
        ``AUTO`` (Option B for PANs longer than 16 digits) for Visa CVN 18/22.
    """

    cvn: CVN
    session_key: SessionKeyMethod
    padding: int
    arpc_method: int
    arpc_key: ArpcKey
    sm_keys: SmKeys
    script_mac_covers_txn: bool
    pin_encipherment: Encipherment
    icc_mk_option: KeyDerivation = KeyDerivation.OPTION_A


_S = SessionKeyMethod
_E = Encipherment
# Module constants: reading a member off an enum class costs a descriptor call on CPython 3.11.
_M_NONE: Final = SessionKeyMethod.NONE
_M_CSK: Final = SessionKeyMethod.EMV_CSK
_M_SKD: Final = SessionKeyMethod.MASTERCARD_SKD
_CVN_TABLE: Final[dict[CVN, CvnSpec]] = {
    CVN.VISA_10: CvnSpec(
        cvn=CVN.VISA_10, session_key=_S.NONE, padding=1, arpc_method=1, arpc_key="mk",
        sm_keys="visa", script_mac_covers_txn=True, pin_encipherment=_E.VISA_ECB,
    ),
    CVN.VISA_18: CvnSpec(
        cvn=CVN.VISA_18, session_key=_S.EMV_CSK, padding=2, arpc_method=2, arpc_key="sk",
        sm_keys="visa", script_mac_covers_txn=True, pin_encipherment=_E.VISA_ECB,
        icc_mk_option=KeyDerivation.AUTO,
    ),
    CVN.VISA_22: CvnSpec(
        cvn=CVN.VISA_22, session_key=_S.EMV_CSK, padding=2, arpc_method=2, arpc_key="sk",
        sm_keys="csk-arqc", script_mac_covers_txn=True, pin_encipherment=_E.VISA_ECB,
        icc_mk_option=KeyDerivation.AUTO,
    ),
    CVN.MC_16: CvnSpec(
        cvn=CVN.MC_16, session_key=_S.MASTERCARD_SKD, padding=2, arpc_method=1, arpc_key="mk",
        sm_keys="csk-arqc", script_mac_covers_txn=True, pin_encipherment=_E.MASTERCARD_CBC,
    ),
    CVN.MC_17: CvnSpec(
        cvn=CVN.MC_17, session_key=_S.MASTERCARD_SKD, padding=2, arpc_method=1, arpc_key="mk",
        sm_keys="csk-arqc", script_mac_covers_txn=True, pin_encipherment=_E.MASTERCARD_CBC,
    ),
    CVN.MC_20: CvnSpec(
        cvn=CVN.MC_20, session_key=_S.EMV_CSK, padding=2, arpc_method=1, arpc_key="sk",
        sm_keys="csk-arqc", script_mac_covers_txn=True, pin_encipherment=_E.MASTERCARD_CBC,
    ),
    CVN.MC_21: CvnSpec(
        cvn=CVN.MC_21, session_key=_S.EMV_CSK, padding=2, arpc_method=1, arpc_key="sk",
        sm_keys="csk-arqc", script_mac_covers_txn=True, pin_encipherment=_E.MASTERCARD_CBC,
    ),
    CVN.INTERAC_133: CvnSpec(
        cvn=CVN.INTERAC_133, session_key=_S.MASTERCARD_SKD, padding=2, arpc_method=1, arpc_key="sk",
        sm_keys="csk-arqc", script_mac_covers_txn=False, pin_encipherment=_E.MASTERCARD_CBC,
    ),
}  # fmt: skip


def _cvn(cvn: object) -> CVN:
    if isinstance(cvn, bool):
        raise ValidationError(f"cvn: expected a CVN or its int value, got {cvn!r}")
    try:
        return CVN(cvn)  # type: ignore[arg-type]
    except ValueError:
        known = ", ".join(f"{c.name}=0x{c.value:02X}" for c in CVN)
        raise ValidationError(
            f"cvn: unsupported cryptogram version {cvn!r}; expected one of {known}"
        ) from None


def cvn_spec(cvn: CVN | int) -> CvnSpec:
    """The :class:`CvnSpec` row of a CVN (emv-crypto.md §5 table).

    >>> cvn_spec(0x12).session_key
    <SessionKeyMethod.EMV_CSK: 'emv-csk'>
    >>> cvn_spec(CVN.VISA_10).padding
    1
    """
    return _CVN_TABLE[_cvn(cvn)]


# Card part of the MAC input after AIP ‖ ATC: a function of the IAD, plus the minimum IAD length.
def _iad_visa10(iad: bytes) -> bytes:
    return iad[3:7]


def _iad_full(iad: bytes) -> bytes:
    return iad


def _iad_cvr6(iad: bytes) -> bytes:
    return iad[2:8]


def _iad_cvr6_counters(iad: bytes) -> bytes:
    return iad[2:8] + iad[10:18]


_IAD_PART: Final[dict[CVN, tuple[Callable[[bytes], bytes], int, str]]] = {
    CVN.VISA_10: (_iad_visa10, 7, "Visa format-0 IAD (CVR with its length byte at bytes 4-7)"),
    CVN.VISA_18: (_iad_full, 1, "a non-empty IAD"),
    CVN.VISA_22: (_iad_full, 1, "a non-empty IAD"),
    CVN.MC_16: (_iad_cvr6, 8, "M/Chip IAD (CVR at bytes 3-8)"),
    CVN.MC_17: (_iad_cvr6_counters, 18, "18-byte M/Chip IAD (CVR bytes 3-8, counters bytes 11-18)"),
    CVN.MC_20: (_iad_cvr6, 8, "M/Chip IAD (CVR at bytes 3-8)"),
    CVN.MC_21: (_iad_cvr6_counters, 18, "18-byte M/Chip IAD (CVR bytes 3-8, counters bytes 11-18)"),
    CVN.INTERAC_133: (_iad_full, 1, "a non-empty IAD"),
}


def _ac_message(c: CVN, cdol1_data: bytes, aip: bytes, atc: bytes, iad: bytes) -> bytes:
    """The AC MAC input rule on checked arguments: CDOL1 data ‖ AIP ‖ ATC ‖ the CVN's IAD part."""
    return cdol1_data + aip + atc + _IAD_PART[c][0](iad)


def ac_data(cvn: CVN | int, *, cdol1_data: bytes, aip: bytes, atc: bytes, iad: bytes) -> bytes:
    """The exact (unpadded) MAC input of an application cryptogram (emv-crypto.md §5 table).

    CDOL1 data ‖ AIP ‖ ATC ‖ the CVN's part of the IAD: Visa 10 the CVR with its length byte
    (IAD bytes 4–7); Visa 18/22 and Interac 133 the full IAD; Mastercard 16/20 the CVR
    (IAD bytes 3–8); Mastercard 17/21 the CVR ‖ the counters (IAD bytes 11–18).

    >>> ac_data(CVN.VISA_10, cdol1_data=b"", aip=bytes.fromhex("1800"), atc=bytes.fromhex("001C"),
    ...         iad=bytes.fromhex("06010A03A06010")).hex().upper()
    '1800001C03A06010'
    """
    c = _cvn(cvn)
    _, minimum, what = _IAD_PART[c]
    i = _as_bytes("iad", iad)
    if len(i) < minimum:
        raise ValidationError(f"iad: expected {what}, got {len(i)} bytes")
    cd = _as_bytes("cdol1_data", cdol1_data)
    return _ac_message(c, cd, _fixed("aip", aip, 2), _fixed("atc", atc, 2), i)


def _method(c: CVN, method: object) -> SessionKeyMethod:
    if method is None:
        return _CVN_TABLE[c].session_key
    return enum_member("method", SessionKeyMethod, method)


def _tree_params(tree: object) -> TreeParams:
    if tree is None:
        return _DEFAULT_TREE
    if not isinstance(tree, TreeParams):
        raise ValidationError("tree: expected a TreeParams")
    return tree


def _ac_un(m: SessionKeyMethod, cdol1_data: bytes, un: object) -> bytes:
    """The UN rule of the AC key: ``un`` when given, else the last 4 bytes of the CDOL1 data (9F37
    in the usual CDOL1), else (CDOL1 data shorter than 4 bytes) zeros, except for the SKD method."""
    if un is not None:
        return _fixed("un", un, 4)
    if len(cdol1_data) >= 4:
        return cdol1_data[-4:]
    if m is _M_SKD:
        raise ValidationError("un: not given and cdol1_data is shorter than 4 bytes")
    return bytes(4)


def _ac_key(
    m: SessionKeyMethod, mk: bytes, atc: bytes, un: bytes, tree: TreeParams, *, cache: _TreeCache | None
) -> bytes:
    """The AC key rule on checked arguments (emv-crypto.md §4.2); ``cache`` serves the tree method."""
    if m is _M_CSK:
        return _csk(mk, atc + _ZERO6)
    if m is _M_SKD:
        return _csk(mk, _skd_r(atc, un))
    if m is _M_NONE:
        return mk
    return _tree_sk(mk, tree.iv, tree.branch_factor, tree.height, atc, cache=cache)


def ac_session_key(
    cvn: CVN | int,
    mk_ac: bytes,
    *,
    atc: bytes,
    un: bytes = bytes(4),
    method: SessionKeyMethod | None = None,
    tree: TreeParams | None = None,
) -> bytes:
    """The AC key of a CVN (or of ``method`` when given): MK-AC itself, CSK(ATC), SKD(ATC, UN) or tree.

    ``tree`` defaults to :class:`TreeParams` ``()`` (b=2, H=16, IV 0) for the tree method.

    >>> mk = bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    >>> key_check_value(ac_session_key(CVN.VISA_18, mk, atc=bytes.fromhex("001C")), 2).hex().upper()
    '22C8'
    """
    c = _cvn(cvn)
    m = _method(c, method)
    mk = _key16("mk_ac", mk_ac)
    return _ac_key(m, mk, _fixed("atc", atc, 2), _fixed("un", un, 4), _tree_params(tree), cache=None)


def generate_ac(
    cvn: CVN | int,
    mk_ac: bytes,
    *,
    cdol1_data: bytes,
    aip: bytes,
    atc: bytes,
    iad: bytes,
    un: bytes | None = None,
    method: SessionKeyMethod | None = None,
    tree: TreeParams | None = None,
) -> bytes:
    """Application cryptogram (ARQC, TC or AAC) for a CVN: THE one entry point and THE definition (§5).

    AC = MAC-alg-3(AC key, :func:`ac_data`, padding per CVN), 8 bytes. ``mk_ac`` is the ICC
    MK-AC; the session key is derived per the CVN, or per ``method``/``tree`` when given. ``un``
    (for the Mastercard SKD method) defaults to the last 4 bytes of ``cdol1_data``
    (``9F37`` in the usual CDOL1). :class:`AcCalculator` is a faster evaluation of this function.

    >>> mk = bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    >>> tv = bytes.fromhex("000000004000 000000000000 0124 8000048000 0124 191105 01 52BF4585")
    >>> generate_ac(CVN.VISA_18, mk, cdol1_data=tv, aip=bytes.fromhex("1800"),
    ...             atc=bytes.fromhex("001C"), iad=bytes.fromhex("06011203A0B800")).hex().upper()
    '7A788EA6B8A3E733'
    """
    c = _cvn(cvn)
    m = _method(c, method)
    data = ac_data(c, cdol1_data=cdol1_data, aip=aip, atc=atc, iad=iad)
    u = _ac_un(m, _as_bytes("cdol1_data", cdol1_data), un)
    key = _ac_key(m, _key16("mk_ac", mk_ac), _fixed("atc", atc, 2), u, _tree_params(tree), cache=None)
    return _des._unchecked_retail_mac(key, _pad(data, _CVN_TABLE[c].padding))


# --------------------------------------------------------------------------------------------------
# ARPC (§6)
# --------------------------------------------------------------------------------------------------


def arpc_method1(key: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1: DES3(K)[ARQC ⊕ (ARC ‖ 00×6)], 8 bytes (EMV Book 2 §8.2; emv-crypto.md §6).

    >>> key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    >>> arpc_method1(key, bytes.fromhex("1234567890ABCDEF"), bytes.fromhex("0000")).hex().upper()
    'F5E6F44147E2F1B0'
    """
    k = _key16("key", key)
    x = _xor(_fixed("arqc", arqc, 8), _fixed("arc", arc, 2) + bytes(6))
    return _des.ecb(k).encrypt(x)


def arpc_method2(key: bytes, arqc: bytes, csu: bytes, proprietary: bytes = b"") -> bytes:
    """ARPC method 2: leftmost 4 bytes of MAC-alg-3(K, ARQC ‖ CSU ‖ proprietary), padding 2 (§6).

    >>> key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    >>> arpc_method2(key, bytes.fromhex("1234567890ABCDEF"), bytes(4)).hex().upper()
    '9308BEBC'
    """
    k = _key16("key", key)
    p = _as_bytes("proprietary", proprietary)
    if len(p) > 8:
        raise ValidationError(f"proprietary: expected 0 to 8 bytes, got {len(p)}")
    data = _fixed("arqc", arqc, 8) + _fixed("csu", csu, 4) + p
    return _des._unchecked_retail_mac(k, _pad(data, 2))[:4]


def generate_arpc(
    cvn: CVN | int,
    mk_ac: bytes,
    *,
    arqc: bytes,
    atc: bytes,
    un: bytes | None = None,
    arc: bytes = b"\x00\x00",
    csu: bytes = bytes(4),
    proprietary: bytes = b"",
) -> bytes:
    """ARPC of a CVN (emv-crypto.md §5 table, §6): method and key (MK-AC or AC session key) per CVN.

    Method 1 returns 8 bytes (uses ``arc``); method 2 returns 4 bytes (uses ``csu`` and
    ``proprietary``). ``un`` is required when the CVN's ARPC key is a Mastercard SKD key
    (Interac 133).

    >>> mk = bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    >>> generate_arpc(CVN.VISA_18, mk, arqc=bytes.fromhex("7A788EA6B8A3E733"),
    ...               atc=bytes.fromhex("001C")).hex().upper()
    '9AF514C1'
    """
    c = _cvn(cvn)
    spec = _CVN_TABLE[c]
    if spec.arpc_key == "mk":
        key = _key16("mk_ac", mk_ac)
    else:
        if un is None and spec.session_key is SessionKeyMethod.MASTERCARD_SKD:
            raise ValidationError("un: required for the ARPC of this CVN (Mastercard SKD session key)")
        key = ac_session_key(c, mk_ac, atc=atc, un=un if un is not None else bytes(4))
    if spec.arpc_method == 1:
        return arpc_method1(key, arqc, arc)
    return arpc_method2(key, arqc, csu, proprietary)


# --------------------------------------------------------------------------------------------------
# CVC3 (§9, optional: contactless Mastercard)
# --------------------------------------------------------------------------------------------------


def generate_cvc3(key: bytes, track_template: bytes, *, atc: bytes, un: bytes) -> str:
    """Mastercard dynamic CVC3, as 5 decimal digits (emv-crypto.md §9, CRY-CVC3).

    IV = the last 2 bytes of MAC-alg-3(key, track template, padding 2); CVC3 = the last 2 bytes
    of DES3(key)[IV ‖ UN ‖ ATC] read as an integer. The card shows only as many low digits as
    its track specifies. ``track_template`` is the track 1 (ASCII) or track 2 data template.

    >>> key = derive_icc_mk_a(bytes.fromhex("01234567899876543210012345678998"), "5123456789012345")
    >>> generate_cvc3(key, bytes.fromhex("5123456789012345D35121010000000000000F"),
    ...               atc=bytes.fromhex("005E"), un=bytes.fromhex("00000899"))
    '29488'
    """
    k = _key16("key", key)
    t = _as_bytes("track_template", track_template)
    a, u = _fixed("atc", atc, 2), _fixed("un", un, 4)
    iv = _des._unchecked_retail_mac(k, _pad(t, 2))[-2:]
    return f"{int.from_bytes(_des.ecb(k).encrypt(iv + u + a)[-2:], 'big'):05d}"


# --------------------------------------------------------------------------------------------------
# fast path for verifiers
# --------------------------------------------------------------------------------------------------


class AcCalculator:
    """Cryptograms for one MK-AC and CVN, fast: the verifier's "session key + AC" hot path.

    :func:`generate_ac` is the definition; this class is a faster evaluation of it, built from the
    same rule helpers (MAC input, padding, UN, AC key, tree path, MAC algorithm 3 in
    :mod:`capsim._des`), so no rule exists twice. What it adds is only bookkeeping, each part
    checked against :func:`generate_ac` and a block-by-block definition in tests/test_crypto.py
    for every CVN and session-key method:

    1. arguments are validated once here; :meth:`generate` re-validates only inputs that are
       not plain ``bytes`` of the right lengths (those go through :func:`ac_data`'s checks);
    2. the MK ECB object stays in the per-thread cache of :mod:`capsim._des`;
    3. without a session key (Visa CVN 10) the MAC key is fixed, so the CBC chaining value over
       the blocks before the ATC (CDOL1 data and AIP, constant across an ATC window) is cached
       and the MAC continues from it through cached ECB objects;
    4. with the tree method the tree levels are cached, so windows of nearby ATCs share work.

    One calculator may be shared between threads: cipher objects live in per-thread caches and
    the calculator's own caches hold only immutable values.

    >>> mk = bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    >>> calc = AcCalculator(CVN.VISA_18, mk)
    >>> tv = bytes.fromhex("000000004000 000000000000 0124 8000048000 0124 191105 01 52BF4585")
    >>> calc.generate(tv, bytes.fromhex("1800"), bytes.fromhex("001C"),
    ...               bytes.fromhex("06011203A0B800")).hex().upper()
    '7A788EA6B8A3E733'
    """

    __slots__ = (
        "_cvn",
        "_iad_min",
        "_kl",
        "_method",
        "_mk",
        "_padding",
        "_prefix_cache",
        "_tree",
        "_tree_cache",
    )

    def __init__(
        self,
        cvn: CVN | int,
        mk_ac: bytes,
        *,
        method: SessionKeyMethod | None = None,
        tree: TreeParams | None = None,
    ) -> None:
        self._cvn = _cvn(cvn)
        self._mk = _key16("mk_ac", mk_ac)
        self._method = _method(self._cvn, method)
        self._tree = _tree_params(tree)
        self._padding = _CVN_TABLE[self._cvn].padding
        self._iad_min = _IAD_PART[self._cvn][1]
        self._tree_cache: _TreeCache = {}
        self._kl = self._mk[:8]
        self._prefix_cache: dict[bytes, bytes] = {}

    @property
    def cvn(self) -> CVN:
        """The CVN this calculator computes."""
        return self._cvn

    @property
    def method(self) -> SessionKeyMethod:
        """The session-key method in use."""
        return self._method

    def session_key(self, atc: bytes, un: bytes = bytes(4)) -> bytes:
        """The AC key for ``atc`` (and ``un`` for the SKD method); equals :func:`ac_session_key`."""
        return self._key(_fixed("atc", atc, 2), _fixed("un", un, 4))

    def _key(self, atc: bytes, un: bytes) -> bytes:
        return _ac_key(self._method, self._mk, atc, un, self._tree, cache=self._tree_cache)

    def generate(
        self, cdol1_data: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes | None = None
    ) -> bytes:
        """The 8-byte AC; same result (and same errors) as :func:`generate_ac` with this CVN and key."""
        if (
            type(cdol1_data) is not bytes
            or type(aip) is not bytes
            or type(atc) is not bytes
            or type(iad) is not bytes
            or len(atc) != 2
            or len(aip) != 2
            or len(iad) < self._iad_min
        ):
            # Slow path: validate (raises on bad input) and normalise bytes-like arguments.
            ac_data(self._cvn, cdol1_data=cdol1_data, aip=aip, atc=atc, iad=iad)
            cdol1_data, aip, atc, iad = bytes(cdol1_data), bytes(aip), bytes(atc), bytes(iad)
        u = _ac_un(self._method, cdol1_data, un)
        data = _pad(_ac_message(self._cvn, cdol1_data, aip, atc, iad), self._padding)
        if self._method is _M_NONE:
            return self._mac_fixed_key(data, len(cdol1_data) + 2)
        return _des._unchecked_retail_mac(self._key(atc, u), data)

    def _mac_fixed_key(self, padded: bytes, fixed: int) -> bytes:
        """MAC algorithm 3 under MK-AC itself, continuing from the cached CBC chaining value over
        the whole blocks within the first ``fixed`` bytes (never the last block)."""
        n = min(fixed // 8, len(padded) // 8 - 1) * 8
        prefix = padded[:n]
        cache = self._prefix_cache
        chain = cache.get(prefix)
        if chain is None:
            chain = _des.cbc_encrypt(self._kl, prefix)[-8:] if n else _ZERO8
            if len(cache) >= 16:
                cache.clear()
            cache[prefix] = chain
        return _des._unchecked_retail_mac_cached(self._mk, padded[n:], chain)
