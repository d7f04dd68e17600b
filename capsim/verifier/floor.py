"""The replay floor: raising a credential's ``last_atc`` from outside a verification (V36).

Theory of operation (verifier.md V34, V36)
------------------------------------------
1. **Monotone.** ``last_atc`` is the floor below which no code is accepted; it never
   decreases. :func:`advance_floor` raises it to a given ATC when that is higher (for example
   an ATC the card used in a transaction the bank saw elsewhere) and otherwise leaves it.
2. **Idempotent, never a failure.** The same call again changes nothing; an ATC at or below
   the floor is answered with the current floor. Either way one ``advance_floor`` audit record
   is written (``raised`` or ``unchanged``).
3. **Safe against a concurrent verification.** It takes the same credential row lock as
   ``verify`` and writes with the same compare-and-swap on ``version``.
"""

from __future__ import annotations

import dataclasses

from capsim.errors import ValidationError
from capsim.verifier import checks
from capsim.verifier.core import ServiceCore

__all__ = ["advance_floor"]


def advance_floor(core: ServiceCore, credential_id: str, atc: int | bytes, *, request_id: str | None) -> int:
    """:meth:`Verifier.advance_floor <capsim.verifier.service.Verifier.advance_floor>`."""
    cid = checks.ident("credential_id", credential_id)
    value = checks.atc("atc", atc)
    rid = None if request_id is None else checks.request_id(request_id)
    with core.tx() as tx:
        cred = tx.lock_credential(cid)
        if cred is None:
            raise ValidationError(f"credential_id: no credential {cid!r}")
        if value > cred.last_atc:
            new = dataclasses.replace(cred, last_atc=value, version=cred.version + 1)
            core.must(tx.update_credential(new, expected_version=cred.version))
            result = value
        else:
            result = cred.last_atc
        tx.append_audit(
            core.entry(
                event="advance_floor",
                outcome="ok",
                reason="raised" if result == value and value > cred.last_atc else "unchanged",
                request_id=rid,
                credential_id=cid,
                atc=value,
            )
        )
        return result
