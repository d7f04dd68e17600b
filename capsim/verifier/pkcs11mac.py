"""Key derivation and MAC construction inside a PKCS#11 token (no key reaches host memory).

The token operations under :class:`~capsim.verifier.pkcs11.Pkcs11Provider`: EMV key
derivation by ``CKM_DES3_ECB_ENCRYPT_DATA`` and ISO/IEC 9797-1 MAC algorithm 3 built from
``CKM_DES3_CBC``. Needs the ``pkcs11`` extra (python-pkcs11).

Theory of operation
-------------------
1. **Derivation.** ``C_DeriveKey(CKM_DES3_ECB_ENCRYPT_DATA, D)`` encrypts 16 bytes of data
   under a key and makes the result a new ``CKK_DES2`` key (the token sets DES parity):
   :func:`derive`. The ICC master key (EMV Option A/B) is derived with ``D = Y ‖ ~Y``
   (:func:`derivation_y`); a common session key with ``D = F1 ‖ F2`` (:func:`f1_f2`: R =
   ATC ‖ 00×6, ATC ‖ 00 00 ‖ UN, or the ARQC for secure messaging).
2. **MAC algorithm 3 without a MAC mechanism.** With the same data ``F1 ‖ F1`` (or ``Y ‖ Y``)
   the token derives ``K_L ‖ K_L``, a two-key TDES key with equal halves, i.e. single DES
   under ``K_L``. ``CKM_DES3_CBC`` under it over blocks 1..n−1 (IV 0) gives the chaining
   value H(n−1); ``CKM_DES3_CBC`` of block n under the full key with IV H(n−1) is the retail
   MAC (:func:`retail_mac`). H(n−1) is the one intermediate value that reaches host memory.
3. **Session objects.** Every key derived here is a sensitive, non-extractable session
   object; the caller destroys it (:func:`session_keys` destroys the first key itself when
   the second derivation fails).
4. **Fingerprints.** A derive-only key cannot encrypt zeros for a KCV:
   :func:`token_fingerprint` encrypts 00×8 ‖ FF×8 under a child derived from fixed data,
   equal to :func:`capsim.verifier.provider.derived_fingerprint` computed in software.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.constants import DEFAULT

from capsim.crypto import KeyDerivation, _option_b_y
from capsim.verifier.pkcs11token import destroy, encrypt, serialised
from capsim.verifier.provider import FINGERPRINT_DATA

__all__ = [
    "FF8",
    "ZERO8",
    "complement",
    "derivation_y",
    "derive",
    "f1_f2",
    "pad",
    "pad2",
    "retail_mac",
    "session_keys",
    "token_fingerprint",
]

#: Eight zero bytes (the CBC IV, the KCV block).
ZERO8: Final = bytes(8)
#: Eight 0xFF bytes.
FF8: Final = b"\xff" * 8


class _DerivationParam(ctypes.Structure):
    """``CK_KEY_DERIVATION_STRING_DATA {pData, ulLen}``, packed for the raw mechanism parameter."""

    _fields_ = (("pData", ctypes.c_void_p), ("ulLen", ctypes.c_ulong))


def derive(key: pkcs11.SecretKey, data: bytes, *, can_derive: bool = False) -> pkcs11.SecretKey:
    """``C_DeriveKey(CKM_DES3_ECB_ENCRYPT_DATA, data)`` → a sensitive session ``CKK_DES2`` key
    that may encrypt (and derive, with ``can_derive``) (rules 1, 3)."""
    buf = ctypes.create_string_buffer(data, len(data))
    param = bytes(_DerivationParam(ctypes.cast(buf, ctypes.c_void_p), len(data)))
    caps = MechanismFlag.ENCRYPT | (MechanismFlag.DERIVE if can_derive else 0)
    out = cast("Any", key).derive_key(
        KeyType.DES2,
        128,
        capabilities=MechanismFlag(caps),
        mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
        mechanism_param=param,
        template={
            Attribute.VALUE_LEN: DEFAULT,  # DES keys have a fixed length: SoftHSM refuses one
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.TOKEN: False,
        },
    )
    del buf  # the parameter pointed into it until C_DeriveKey returned
    assert isinstance(out, pkcs11.SecretKey)
    return out


def retail_mac(k_ll: pkcs11.SecretKey, k: pkcs11.SecretKey, padded: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 from two token keys (rule 2): ``k_ll`` = K_L ‖ K_L."""
    h = ZERO8
    if len(padded) > 8:
        h = encrypt(k_ll, padded[:-8], Mechanism.DES3_CBC, ZERO8)[-8:]
    return encrypt(k, padded[-8:], Mechanism.DES3_CBC, h)


def pad2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2 (80 then zeros to a multiple of 8)."""
    return data + b"\x80" + bytes(-(len(data) + 1) % 8)


def pad(data: bytes, padding: int) -> bytes:
    """Padding method ``padding`` (2, else method 1: zeros; empty data is one zero block)."""
    if padding == 2:
        return pad2(data)
    return data + bytes(-len(data) % 8) if data else ZERO8


def f1_f2(r: bytes) -> tuple[bytes, bytes]:
    """F1, F2 of the common session key rule (R with byte 2 set to F0 / 0F)."""
    return r[:2] + b"\xf0" + r[3:], r[:2] + b"\x0f" + r[3:]


def complement(b: bytes) -> bytes:
    """Every bit of ``b`` inverted (``~Y``)."""
    return bytes(x ^ 0xFF for x in b)


def derivation_y(pan: str, psn: str, option: KeyDerivation) -> bytes:
    """Y of the ICC master key derivation (EMV Option A; Option B above 16 digits)."""
    if option is not KeyDerivation.OPTION_A and len(pan) > 16:  # B equals A up to 16 digits
        return _option_b_y(pan, psn)
    return bytes.fromhex((pan + psn)[-16:].rjust(16, "0"))


def session_keys(mk: pkcs11.SecretKey, r: bytes) -> tuple[pkcs11.SecretKey, pkcs11.SecretKey]:
    """(SK, SK_L ‖ SK_L) of the common session key rule with ``r`` (rules 1, 2)."""
    f1, f2 = f1_f2(r)
    sk = derive(mk, f1 + f2)
    try:
        return sk, derive(mk, f1 + f1)
    except BaseException:
        destroy(sk)
        raise


@serialised
def token_fingerprint(key: pkcs11.SecretKey) -> str:
    """The fingerprint of a derive-only DES2 key, computed in the token (rule 4): the child
    derived with :data:`~capsim.verifier.provider.FINGERPRINT_DATA` encrypts 00×8 ‖ FF×8
    (TDES-ECB), in hex; equals :func:`capsim.verifier.provider.derived_fingerprint` of the key
    bytes."""
    child = derive(key, FINGERPRINT_DATA)
    try:
        return encrypt(child, ZERO8 + FF8, Mechanism.DES3_ECB).hex()
    finally:
        child.destroy()
