"""Issuer scripts (PIN UNBLOCK / PIN CHANGE) computed by a PKCS#11 token, and the argument
checks shared by :class:`~capsim.verifier.pkcs11.Pkcs11Provider`.

Needs the ``pkcs11`` extra (python-pkcs11).

Theory of operation
-------------------
1. **What a script needs** (:func:`script_plan`, a pure function): the Visa CVN 10/18
   secure-messaging session keys and the VIS PIN block both need key XOR, which a token
   without ``CKM_XOR_BASE_AND_DATA`` (SoftHSM) cannot do: they raise
   :class:`~capsim.errors.TokenUnsupported` naming what was needed, before any token work.
   Otherwise the plan is the ISO-2 PIN block (PIN CHANGE) or none (PIN UNBLOCK) and P2.
2. **The token work** (:func:`pin_change_script`): MK-SMI (and MK-SMC for a PIN) derived from
   the issuer keys with ``Y ‖ ~Y``, the session keys SK-SMI, SK-SMI_L ‖ SK-SMI_L and SK-SMC
   with R = ARQC (:mod:`capsim.verifier.pkcs11mac` rules 1–2); the PIN block enciphered under
   SK-SMC as :func:`capsim.sm.encipher_pin_block` does; the command MACed under SK-SMI. Every
   derived object is destroyed before the call returns. The result equals
   :func:`capsim.sm.build_pin_change`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pkcs11
from pkcs11 import Mechanism

from capsim.crypto import CVN, SessionKeyMethod, cvn_spec
from capsim.errors import TokenUnsupported, ValidationError
from capsim.sm import SCRIPT_CLA, default_pin_block_format, pin_block_iso2
from capsim.verifier.pkcs11mac import ZERO8, complement, derive, f1_f2, pad2, retail_mac
from capsim.verifier.pkcs11token import destroy, encrypt, token_call

__all__ = [
    "ScriptPlan",
    "check_cvn",
    "check_method",
    "fixed_bytes",
    "pin_change_script",
    "script_plan",
]


def check_cvn(cvn: object) -> CVN:
    """``cvn`` as a :class:`~capsim.crypto.CVN`; :class:`~capsim.errors.ValidationError` if it is none."""
    if isinstance(cvn, bool):
        raise ValidationError(f"cvn: expected a CVN, got {cvn!r}")
    try:
        return CVN(cvn)  # type: ignore[arg-type]
    except ValueError:
        raise ValidationError(f"cvn: unsupported cryptogram version {cvn!r}") from None


def check_method(method: object) -> SessionKeyMethod:
    """A session-key method the token can compute (the EMV2000 tree needs key XOR)."""
    try:
        m = SessionKeyMethod(str(method))
    except ValueError:
        raise ValidationError(f"method: unknown session-key method {method!r}") from None
    if m is SessionKeyMethod.EMV2000_TREE:
        raise TokenUnsupported(
            "the EMV2000 tree session key needs key XOR, which this token cannot do", "key XOR"
        )
    return m


def fixed_bytes(name: str, value: object, n: int) -> bytes:
    """``value`` if it is exactly ``n`` bytes, else :class:`~capsim.errors.ValidationError`."""
    if not isinstance(value, bytes | bytearray) or len(value) != n:
        raise ValidationError(f"{name}: expected {n} bytes")
    return bytes(value)


@dataclass(frozen=True)
class ScriptPlan:
    """What one script needs (rule 1): the CVN, the PIN block to encipher (empty for PIN
    UNBLOCK) and P2 of the command."""

    cvn: CVN
    block: bytes
    p2: int


def script_plan(cvn: int, *, new_pin: str | None, current_pin: str | None) -> ScriptPlan:
    """The plan of a PIN UNBLOCK (``new_pin=None``) or PIN CHANGE script for ``cvn`` (rule 1)."""
    c = check_cvn(cvn)
    spec = cvn_spec(c)
    if spec.sm_keys == "visa":
        raise TokenUnsupported(
            f"Visa CVN {c.value} issuer scripts need key XOR (the Visa secure-messaging session keys), "
            "which this token cannot do",
            "key XOR",
        )
    if new_pin is None:
        if current_pin is not None:
            raise ValidationError("current_pin: only meaningful with new_pin (PIN change)")
        return ScriptPlan(c, b"", 0x00)
    if default_pin_block_format(c, with_current_pin=current_pin is not None) == "vis":
        raise TokenUnsupported(
            f"the VIS PIN block of CVN {c.value} needs MK-AC bytes XORed in clear, "
            "which this token cannot do",
            "key XOR",
        )
    if current_pin is not None:
        raise ValidationError("current_pin: the ISO-2 block format cannot carry the current PIN")
    return ScriptPlan(c, pin_block_iso2(new_pin), 0x02)


def _encipher(variant: str, sk_smc: pkcs11.SecretKey, block: bytes) -> bytes:
    """The PIN block enciphered under SK-SMC, as :func:`capsim.sm.encipher_pin_block`."""
    if variant == "visa-ecb":
        return encrypt(sk_smc, pad2(bytes([len(block)]) + block), Mechanism.DES3_ECB)
    if variant == "mastercard-cbc" and len(block) % 8 == 0:
        return encrypt(sk_smc, block, Mechanism.DES3_CBC, ZERO8)
    return encrypt(sk_smc, pad2(block), Mechanism.DES3_CBC, ZERO8)


def pin_change_script(
    plan: ScriptPlan,
    *,
    imk_smi: pkcs11.SecretKey,
    imk_smc: pkcs11.SecretKey,
    y: bytes,
    atc: bytes,
    arqc: bytes,
) -> bytes:
    """The script command of ``plan`` for the card whose derivation data is ``y`` (rule 2);
    call it under :data:`~capsim.verifier.pkcs11token.TOKEN_LOCK`."""
    spec = cvn_spec(plan.cvn)
    a, r = fixed_bytes("atc", atc, 2), fixed_bytes("arqc", arqc, 8)
    f1, f2 = f1_f2(r)
    made: list[pkcs11.SecretKey] = []
    with token_call("an issuer script"):
        try:
            mk_smi = derive(imk_smi, y + complement(y), can_derive=True)
            made.append(mk_smi)
            sk_smi = derive(mk_smi, f1 + f2)
            made.append(sk_smi)
            sk_smi_ll = derive(mk_smi, f1 + f1)
            made.append(sk_smi_ll)
            data = b""
            if plan.block:
                mk_smc = derive(imk_smc, y + complement(y), can_derive=True)
                made.append(mk_smc)
                sk_smc = derive(mk_smc, f1 + f2)
                made.append(sk_smc)
                data = _encipher(spec.pin_encipherment.value, sk_smc, plan.block)
            header = bytes([SCRIPT_CLA, 0x24, 0x00, plan.p2, len(data) + 8])
            m = header + (a + r if spec.script_mac_covers_txn else b"") + data
            return header + data + retail_mac(sk_smi_ll, sk_smi, pad2(m))
        finally:
            destroy(*made)
