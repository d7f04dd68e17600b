"""Issuer scripts: the PIN UNBLOCK and PIN CHANGE commands the bank sends to a card.

Theory of operation (emv-crypto.md §7; cap-protocol.md §9.6, §9.7; verifier.md V10)
-----------------------------------------------------------------------------------
1. **Bound to one transaction.** The command is MACed under SK-SMI and its PIN block
   enciphered under SK-SMC, session keys derived from the card's master keys for the
   transaction whose ATC and ARQC are given (the MAC covers them too, emv-crypto.md §7.2).
   The provider builds it (:meth:`~capsim.verifier.provider.CryptogramProvider.build_pin_change`),
   so no key leaves it. The PINs are checked for form (4–12 digits) and never logged or
   audited.
2. **The bank's power.** Only the bank's operator may build scripts
   (:attr:`~capsim.verifier.authority.Power.PIN_SCRIPT`); a revoked, replaced or lost
   credential gets none.
3. **History follows.** The card reports the script in its next ARQCs, which changes its IAD:
   the credential records the script's ATC (``script_atc``), and the matcher tries every IAD
   variant until a code above that ATC is accepted (:mod:`capsim.verifier.decision`).
"""

from __future__ import annotations

import dataclasses

from capsim._validate import digits as _digits
from capsim.errors import ValidationError
from capsim.verifier import checks
from capsim.verifier.authority import Power
from capsim.verifier.core import ServiceCore, provider_failures
from capsim.verifier.model import CredentialState

__all__ = ["build_pin_script"]


def build_pin_script(
    core: ServiceCore,
    credential_id: str,
    *,
    arqc: bytes,
    atc: int | bytes,
    new_pin: str | None,
    current_pin: str | None,
    acting_user: str | None,
) -> bytes:
    """:meth:`Verifier.build_pin_script <capsim.verifier.service.Verifier.build_pin_script>`."""
    cid = checks.ident("credential_id", credential_id)
    if not isinstance(arqc, bytes) or len(arqc) != 8:
        raise ValidationError("arqc: expected the 8-byte ARQC of the card's transaction")
    atc_b = checks.atc("atc", atc).to_bytes(2, "big")
    for name, pin in (("new_pin", new_pin), ("current_pin", current_pin)):
        if pin is not None:
            _digits(name, pin, 4, 12)
    with core.tx() as tx:
        cred = tx.lock_credential(cid)
        if cred is None or cred.state in (
            CredentialState.REVOKED,
            CredentialState.REPLACED,
            CredentialState.LOST,
        ):
            raise ValidationError(f"credential_id: no usable credential {cid!r}")
        core.authorize(tx, acting_user, cred.customer_id, Power.PIN_SCRIPT)
        with provider_failures():
            script = core.provider.build_pin_change(
                cred.key_ref,
                cvn=cred.profile.cvn,
                new_pin=new_pin,
                current_pin=current_pin,
                atc=atc_b,
                arqc=arqc,
            )
        script_atc = int.from_bytes(atc_b, "big")
        marked = dataclasses.replace(cred, script_atc=script_atc, version=cred.version + 1)
        core.must(tx.update_credential(marked, expected_version=cred.version))
        tx.append_audit(
            core.entry(
                event="issuer-script",
                outcome="ok",
                reason="pin-unblock" if new_pin is None else "pin-change",
                credential_id=cid,
                atc=int.from_bytes(atc_b, "big"),
            )
        )
        return script
