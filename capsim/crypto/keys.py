"""ICC master keys and session keys (emv-crypto.md §4.1, §4.2).

Theory of operation
-------------------
1. An ICC master key comes from an issuer master key and the card's PAN and PSN: Option A
   encrypts the rightmost 16 digits of PAN ‖ PSN and their complement; Option B first hashes
   PAN ‖ PSN with SHA-1 when the PAN is longer than 16 digits (for shorter PANs it *is*
   Option A). :class:`KeyDerivation` names the choice; ``AUTO`` picks by PAN length.
2. The EMV common session key (CSK) encrypts R with its byte at index 2 set to ``F0`` and to
   ``0F``; the AC key uses R = ATC ‖ 00×6, the secure-messaging keys R = ARQC, and the
   Mastercard SKD key R = ATC ‖ 00 00 ‖ UN.
3. The Visa secure-messaging key XORs the ATC (and its complement) into the master key.
4. The EMV2000 tree key walks ``height`` base-``branch_factor`` digits of the ATC from
   L(0) = IK, L(−1) = IV; a calculator may pass a cache of tree nodes so that nearby ATCs share
   the upper levels (:class:`capsim.crypto.AcCalculator`); without one, every node is computed.
5. Every derived key gets odd parity; every master key's ECB object sits in the per-thread
   cache of :mod:`capsim._des` (master keys are used again, session keys once).

>>> imk_a = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> from capsim.crypto.mac import key_check_value
>>> key_check_value(derive_icc_mk_a(imk_a, "1234567890123456", "00"), 2).hex().upper()
'BAB0'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from capsim import _des
from capsim._validate import fixed_bytes as _fixed
from capsim.crypto._checks import PARITY_TABLE as _PARITY_TABLE
from capsim.crypto._checks import key16 as _key16
from capsim.crypto._checks import pan_digits as _pan
from capsim.crypto._checks import psn_digits as _psn
from capsim.crypto._checks import xor as _xor
from capsim.errors import ValidationError

__all__ = [
    "KeyDerivation",
    "SessionKeyMethod",
    "TreeParams",
    "derive_common_sk",
    "derive_emv2000_tree_sk",
    "derive_icc_mk",
    "derive_icc_mk_a",
    "derive_icc_mk_b",
    "derive_mastercard_sk",
    "derive_visa_sm_sk",
]


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
        digits += [str("ABCDEF".index(c)) for c in digest if not c.isdigit()]  # A..F -> 0..5
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


class SessionKeyMethod(StrEnum):
    """How the AC session key is derived from MK-AC (emv-crypto.md §4.2)."""

    NONE = "none"
    EMV_CSK = "emv-csk"
    MASTERCARD_SKD = "mastercard-skd"
    EMV2000_TREE = "emv2000-tree"


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
    >>> from capsim.crypto import key_check_value
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
    sk = int.from_bytes(k, "big") ^ (a << 64) ^ (a ^ 0xFFFF)
    return sk.to_bytes(16, "big").translate(_PARITY_TABLE)


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


@dataclass(frozen=True, kw_only=True)
class TreeParams:
    """EMV2000 tree parameters: branch factor, height and IV (emv-crypto.md §4.2)."""

    branch_factor: int = 2
    height: int = 16
    iv: bytes = bytes(16)

    def __post_init__(self) -> None:
        _check_tree(self.branch_factor, self.height, self.iv)


_DEFAULT_TREE: Final = TreeParams()
