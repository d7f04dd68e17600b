"""Operations: single-use challenges bound to the data a code must sign (V8–V17).

Theory of operation (verifier.md §1; V8–V17)
--------------------------------------------
1. **Bound data.** An operation stores its mode, challenge, amount, currency, payee, TDS
   fields and batch, and their canonical digest (:func:`operation_digest`); a verification
   reads them only from the store (V8). Arguments are checked before the transaction.
2. **Challenges** are 8 digits from :mod:`secrets`, never all zeros, unique among the
   credential's open operations (V9); a caller-supplied Sign reference is canonicalised and
   refused when an open operation has the same cryptogram input (V16).
3. **No two open operations share a code.** A new Identify or TDS operation (no challenge)
   supersedes the open one with the same cryptogram input (V8, V16), and no operation is
   created that a code of a lesser mode would satisfy (:mod:`capsim.verifier.separation`).
4. **Payments under PSD2** (V17, :func:`check_payment`): only SIGN on a card whose IAF signs
   the amount, or TDS over the amount and the payee's digits.
5. **Lifetime and attempts** come from the policy: ``operation_ttl_s`` (at most 300 s in the
   PSD2 profile, V15) and ``max_attempts_per_operation`` (V14).

>>> a = operation_digest(mode=OperationMode.IDENTIFY, challenge="", amount_minor=None,
...                      currency=None, payee=None, tds_fields=())
>>> len(a)
32
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import timedelta

from capsim.errors import ConfigError, ValidationError
from capsim.verifier import checks, decision, engine
from capsim.verifier.core import OP_PREFIX, ConflictError, ServiceCore
from capsim.verifier.model import BatchItem, CredentialProfile, CredentialState, Operation, OperationMode
from capsim.verifier.policy import VerifierPolicy

__all__ = ["check_payment", "get_operation", "issue_operation", "operation_digest"]


def operation_digest(
    *,
    mode: OperationMode,
    challenge: str,
    amount_minor: int | None,
    currency: str | None,
    payee: str | None,
    tds_fields: Sequence[str],
    batch: Sequence[BatchItem] = (),
) -> bytes:
    """Canonical SHA-256 of an operation's bound data (verifier.md §1 ``txn_digest``, V13, V16).

    Sorted-key JSON of every field; a batch contributes each payee and amount in order.

    >>> a = operation_digest(mode=OperationMode.SIGN, challenge="00001234", amount_minor=1500,
    ...                      currency="978", payee="NL01", tds_fields=())
    >>> b = operation_digest(mode=OperationMode.SIGN, challenge="00001234", amount_minor=1501,
    ...                      currency="978", payee="NL01", tds_fields=())
    >>> a != b, len(a)
    (True, 32)
    """
    body = {
        "v": 1,
        "mode": OperationMode(mode).value,
        "challenge": challenge,
        "amount_minor": amount_minor,
        "currency": currency,
        "payee": payee,
        "tds_fields": list(tds_fields),
        "batch": [[b.payee, b.amount_minor] for b in batch],
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hashlib.sha256(raw).digest()


def issue_operation(
    core: ServiceCore,
    credential_id: str,
    *,
    mode: OperationMode | str,
    reference: str | None,
    amount: int | str | None,
    currency: str | None,
    payee: str | None,
    fields: Sequence[str] | None,
    batch: Sequence[BatchItem] | None,
    payment: bool,
    ttl_s: int | None,
) -> Operation:
    """:meth:`Verifier.issue_operation <capsim.verifier.service.Verifier.issue_operation>`."""
    from capsim.cap import canonical_challenge, currency_numeric, parse_amount, validate_tds_fields
    from capsim.verifier.separation import check_operation

    policy = core.policy
    cid = checks.ident("credential_id", credential_id)
    try:
        op_mode = OperationMode(mode)
    except ValueError:
        raise ValidationError("mode: expected identify, respond, sign or tds") from None
    ttl = policy.operation_ttl_s if ttl_s is None else checks.seconds("ttl_s", ttl_s, 10**7)
    if policy.psd2 and ttl > 300:
        raise ConfigError("ttl_s: the PSD2 profile allows at most 300 s")
    cur = None if currency is None else currency_numeric(currency)
    amt = None if amount is None else parse_amount(amount, currency)
    if payee is not None:
        checks.text("payee", payee)
    items = tuple(batch or ())
    for item in items:
        if not isinstance(item, BatchItem):
            raise ValidationError("batch: expected BatchItem values")
        checks.text("batch.payee", item.payee)
        parse_amount(item.amount_minor)
    if items:
        total = sum(i.amount_minor for i in items)
        if amt is None:
            amt = parse_amount(total)
        elif amt != total:
            raise ValidationError("amount: must equal the batch total")
    tds: tuple[str, ...] = ()
    if op_mode is OperationMode.TDS:
        if fields is None:
            raise ValidationError("fields: tds needs 1 to 10 fields")
        tds = validate_tds_fields(fields)
    elif fields is not None:
        raise ValidationError("fields: only tds operations take fields")
    if op_mode in (OperationMode.IDENTIFY, OperationMode.RESPOND) and (
        amt is not None or cur is not None or items
    ):
        raise ValidationError(f"amount/currency: {op_mode.value} operations take no amount")
    if reference is not None and op_mode is not OperationMode.SIGN:
        raise ValidationError("reference: only sign operations take a caller-supplied reference")
    ref = None if reference is None else canonical_challenge(reference)
    if not isinstance(payment, bool):
        raise ValidationError("payment: expected a bool")
    with core.tx() as tx:
        cred = tx.lock_credential(cid)
        if cred is None or cred.state is not CredentialState.ACTIVE:
            raise ValidationError(f"credential_id: no active credential {cid!r}")
        check_payment(
            policy,
            cred.profile,
            mode=op_mode,
            payment=payment,
            amount=amt,
            currency=cur,
            payee=payee,
            fields=tds,
        )
        iaf0 = cred.profile.iaf[0] if cred.profile.iaf else 0
        if op_mode is OperationMode.SIGN and iaf0 & 0x80:
            if amt is None:
                raise ValidationError("amount: this card signs an amount; give one")
            if not iaf0 & 0x20 and cur is None:
                raise ValidationError("currency: this card signs a currency; give one")
        now = tx.now()
        open_ops = tx.list_open_operations(cid, now)
        taken = {o.challenge for o in open_ops if o.challenge}
        if op_mode in (OperationMode.IDENTIFY, OperationMode.TDS):
            challenge = ""
            # the same cryptogram input as an open operation: the newer one supersedes it,
            # so one code can never satisfy two open operations (V8, V16)
            for o in open_ops:
                if o.mode is op_mode and o.tds_fields == tds:
                    closed = dataclasses.replace(o, attempts=o.max_attempts)
                    core.must(tx.update_operation(closed, expected_attempts=o.attempts))
                    tx.append_audit(
                        core.entry(
                            event="operation",
                            outcome="ok",
                            reason="superseded",
                            credential_id=cid,
                            operation_id=o.operation_id,
                            mode=o.mode.value,
                        )
                    )
        elif ref is not None:
            challenge = ref
            mine = engine.cdol_data_for(
                cred.profile,
                engine.MatchRequest(mode=op_mode, challenge=ref, amount_minor=amt, currency=cur),
            )
            for o in open_ops:
                if o.challenge == ref and (
                    o.mode is not OperationMode.SIGN
                    or engine.cdol_data_for(cred.profile, decision.match_request(o)) == mine
                ):
                    raise ValidationError(
                        "reference: another open operation has the same cryptogram input (V16)"
                    )
        else:
            challenge = _fresh_challenge(taken)
        # ___domain separation: no operation that a code of a lesser mode satisfies
        # (capsim.verifier.separation); raised before the transaction commits anything
        check_operation(
            cred.profile,
            engine.MatchRequest(
                mode=op_mode, challenge=challenge, amount_minor=amt, currency=cur, tds_fields=tds
            ),
        )
        digest = operation_digest(
            mode=op_mode,
            challenge=challenge,
            amount_minor=amt,
            currency=cur,
            payee=payee,
            tds_fields=tds,
            batch=items,
        )
        op = Operation(
            operation_id=OP_PREFIX + secrets.token_hex(8),
            credential_id=cid,
            mode=op_mode,
            challenge=challenge,
            txn_digest=digest,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            amount_minor=amt,
            currency=cur,
            payee=payee,
            tds_fields=tds,
            batch=items,
            reference_supplied=ref is not None,
            payment=payment,
            max_attempts=policy.max_attempts_per_operation,
        )
        if tx.insert_operation(op) != 1:
            raise ConflictError
        tx.append_audit(
            core.entry(
                event="operation",
                outcome="ok",
                credential_id=cid,
                operation_id=op.operation_id,
                mode=op_mode.value,
                txn_digest=digest,
            )
        )
        return op


def check_payment(
    policy: VerifierPolicy,
    profile: CredentialProfile,
    *,
    mode: OperationMode,
    payment: bool,
    amount: int | None,
    currency: str | None,
    payee: str | None,
    fields: tuple[str, ...],
) -> None:
    """V17: the PSD2 profile's payment rules (module docstring, rule 4)."""
    if not (policy.psd2 and payment):
        return
    iaf0 = profile.iaf[0] if profile.iaf else 0
    if mode is OperationMode.SIGN and iaf0 & 0x80:
        return
    if mode is OperationMode.TDS and amount is not None and payee:
        payee_digits = "".join(c for c in payee if "0" <= c <= "9")[-10:]
        if str(amount) in fields and payee_digits and payee_digits in fields:
            return
    raise ConfigError(
        "payment: the PSD2 profile accepts only SIGN on cards whose IAF signs the amount, "
        "or TDS over the amount and payee digits (RTS Art. 5)"
    )


def get_operation(core: ServiceCore, operation_id: str) -> Operation | None:
    """One operation, or ``None``."""
    with core.tx() as tx:
        return tx.get_operation(checks.ident("operation_id", operation_id))


def _fresh_challenge(taken: set[str]) -> str:
    """8 random digits from :mod:`secrets`, never all zeros, unique among open operations (V9, V16)."""
    while True:
        challenge = f"{secrets.randbelow(10**8):08d}"
        if challenge != "00000000" and challenge not in taken:
            return challenge
