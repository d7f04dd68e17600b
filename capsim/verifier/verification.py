"""Verification of presented codes (verify, activate, resync): read, decide, write, pad.

Theory of operation (verifier.md §1, §5; V8, V22–V25, V28–V31, V34, V37)
------------------------------------------------------------------------
1. **Inputs first.** The code's form and the ids are checked before any I/O (V7); mode,
   challenge, amount, currency, payee and TDS fields come only from the stored operation (V8).
2. **One transaction per call** (:func:`decide`): read everything the decision needs under the
   credential row lock (:meth:`~capsim.verifier.store.StoreTransaction.read_verification`),
   screen it (:func:`capsim.verifier.decision.screen`: request-id replay or conflict, then the
   refusals), run every probe through the matcher, settle
   (:func:`capsim.verifier.decision.settle`) and write the changes with exactly one audit
   record (V37), then commit. A write that had to touch one row and did not rolls everything
   back and the call is the uniform reject.
3. **One external reject.** Every refusal of a code is :class:`~capsim.errors.InvalidCode`
   (V30); the reason goes only to the audit. A refused call runs the same probes as a wrong
   code, counted as dummy work, and every call is padded to the same number of recomputations
   (``dummy_size``). The padding is owed inside the transaction but spent after it, so no row
   lock is held for work whose only purpose is uniform timing.
4. **Failures.** A store or provider failure is :class:`~capsim.errors.TemporaryFailure`:
   nothing accepted, nothing counted (V22, V25); its audit record is written afterwards in a
   separate transaction, best effort. A corrupt stored profile or key reference fails closed
   the same way. A request id bound to another call is
   :class:`~capsim.errors.RequestConflict`, and nothing is written.
5. **Request fingerprints** bind a request id to its call (method, target, codes) without
   storing a code: keyed with the provider's audit seal key when it has one.
6. **Permanent blocks** (V31) call the ``on_before_permanent_block`` hook inside the
   transaction; its exceptions are logged and the block still happens.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from capsim.errors import ConfigError, InvalidCode, RequestConflict, TemporaryFailure, ValidationError
from capsim.verifier import checks, decision, engine
from capsim.verifier.audit import AuditEntry
from capsim.verifier.core import CRED_PREFIX, OP_PREFIX, ConflictError, ServiceCore, provider_failures
from capsim.verifier.model import Acceptance, Credential, OperationMode, Outcome
from capsim.verifier.padding import is_padding
from capsim.verifier.store import StoreTransaction

__all__ = ["activate", "decide", "request_fingerprint", "resync", "verify"]

_log = logging.getLogger("capsim.verifier.service")

#: The audit event of each verification method.
_EVENTS: Final = {"verify": "verify", "activate": "verify", "resync": "resync"}


def verify(core: ServiceCore, target: str, code: str, *, request_id: str) -> Acceptance:
    """:meth:`Verifier.verify <capsim.verifier.service.Verifier.verify>`."""
    presented = core.parse(code)
    rid = checks.request_id(request_id)
    if not isinstance(target, str) or len(target) > 64:
        raise ValidationError("target: expected an operation id or a credential id")
    return _accepted(core, "verify", target, presented, rid)


def activate(core: ServiceCore, credential_id: str, code: str, *, request_id: str) -> Acceptance:
    """:meth:`Verifier.activate <capsim.verifier.service.Verifier.activate>`."""
    return _accepted(
        core,
        "activate",
        checks.ident("credential_id", credential_id),
        core.parse(code),
        checks.request_id(request_id),
    )


def resync(core: ServiceCore, credential_id: str, codes: Sequence[str], *, request_id: str) -> int:
    """:meth:`Verifier.resync <capsim.verifier.service.Verifier.resync>`."""
    cid = checks.ident("credential_id", credential_id)
    rid = checks.request_id(request_id)
    if isinstance(codes, str) or len(codes) != core.policy.resync_count:
        raise ValidationError(f"codes: expected {core.policy.resync_count} consecutive Identify codes")
    presented = [core.parse(c) for c in codes]
    acc = decide(core, "resync", cid, presented, rid)
    if acc is None:
        raise InvalidCode
    return acc.atc


def _accepted(
    core: ServiceCore, method: str, target: str, presented: engine.PresentedCode, rid: str
) -> Acceptance:
    acc = decide(core, method, target, [presented], rid)
    if acc is None:
        raise InvalidCode
    return acc


def request_fingerprint(
    core: ServiceCore, method: str, target: str, codes: Sequence[engine.PresentedCode]
) -> bytes:
    """A digest of the call that binds a request id to it (never the code itself).

    Keyed with the provider's audit seal key when it has one (an 8-digit code's plain hash
    is reversible by enumeration); ___domain-separated from audit seals by its label."""
    message = b"\x00".join([b"capsim request v1", method.encode(), target.encode(), *(c.text for c in codes)])
    with provider_failures():
        if core.provider.audit_seal_key_id() is not None:
            return core.provider.audit_seal(message)
    return hashlib.sha256(message).digest()


def decide(
    core: ServiceCore, method: str, target: str, presented: Sequence[engine.PresentedCode], rid: str
) -> Acceptance | None:
    """Read, decide (:mod:`capsim.verifier.decision`), write: one transaction (module
    docstring, rule 2). Returns the acceptance, ``None`` for the uniform reject."""
    t0 = core.monotonic()
    event = _EVENTS[method]
    call = decision.Call(
        method=method,
        target=target,
        request_id=rid,
        fingerprint=request_fingerprint(core, method, target, presented),
        codes=len(presented),
    )
    # Dummy recomputations (V30) are owed by the transaction but spent after it ends, so the
    # credential row lock is never held for work whose only purpose is uniform timing.
    owed = _Owed()
    try:
        with core.tx(keep_conflict=True) as tx:
            acc = _decide_tx(core, tx, call, presented, t0=t0, owed=owed)
    except ConflictError:
        _best_effort_audit(core, rid, target, "conflict", outcome=Outcome.REJECT, t0=t0, event=event)
        raise InvalidCode from None
    except RequestConflict:
        raise  # nothing written: the id belongs to another call
    except TemporaryFailure:
        _best_effort_audit(
            core, rid, target, "temporary-failure", outcome=Outcome.TEMPORARY, t0=t0, event=event
        )
        raise
    except (ValidationError, ConfigError):
        # a corrupt stored profile or key reference: fail closed
        _best_effort_audit(core, rid, target, "internal-error", outcome=Outcome.TEMPORARY, t0=t0, event=event)
        raise TemporaryFailure("verifier could not evaluate the code") from None
    finally:
        core.pad(owed.card, owed.count)
    return acc


@dataclass(slots=True)
class _Owed:
    """The padding a verification owes (V30), spent after its transaction: how many
    recomputations, through which card's AC function (``None``: a dummy card)."""

    count: int = 0
    card: engine.CardCandidate | None = None


def _decide_tx(
    core: ServiceCore,
    tx: StoreTransaction,
    call: decision.Call,
    presented: Sequence[engine.PresentedCode],
    *,
    t0: float,
    owed: _Owed,
) -> Acceptance | None:
    is_op = call.target.startswith(OP_PREFIX) and call.method == "verify"
    snap = tx.read_verification(
        operation_id=call.target if is_op else None,
        credential_id=None if is_op else call.target,
        request_id=call.request_id,
        siblings=call.method == "verify" and core.policy.try_sibling_cards,
    )
    with provider_failures():
        dummy_key_ref = core.provider.dummy_key_ref()
    scr = decision.screen(
        call, snap, core.policy, dummy_key_ref=dummy_key_ref, dummy_profile=core.typical_profile
    )
    if scr.original is not None:
        core.typical_profile = scr.original.profile
    if scr.conflict:
        raise RequestConflict(call.request_id)
    # the operation the call names; an unknown one's audit record takes the mode and digest of
    # the padding operation read in its place, so every record has the same size (V30)
    read_op = snap.operation if is_op else None
    op = None if read_op is None or is_padding(read_op.operation_id) else read_op
    event = _EVENTS[call.method]

    def entry(outcome: Outcome, reason: str, *, atc: int | None = None, cid: str | None = None) -> AuditEntry:
        return core.entry(
            event=event,
            outcome=outcome.value,
            reason=reason,
            request_id=call.request_id,
            credential_id=cid,
            operation_id=op.operation_id if op is not None else (call.target if is_op else None),
            mode=(read_op.mode.value if read_op else OperationMode.IDENTIFY.value),
            atc=atc,
            txn_digest=read_op.txn_digest if read_op else b"",
            duration_us=core.us(t0),
        )

    if scr.replay is not None:  # V24: the recorded outcome, no counter touched
        prev = scr.replay
        tx.append_audit(
            entry(
                prev.outcome,
                "repeated-request",
                atc=prev.acceptance.atc if prev.acceptance else None,
                cid=prev.acceptance.credential_id if prev.acceptance else None,
            )
        )
        owed.count = core.dummy_size
        return prev.acceptance
    evaluations = 0
    results = []
    for probe in scr.probes:
        result = _run_probe(core, probe, presented[probe.code_index], decisive=not scr.refusal)
        evaluations += result.evaluations
        results.append(result)
    # pad to a fixed evaluation count: whether the code's public bits found candidates, or
    # the credential exists or may be used at all, does not show in the time taken (V30)
    owed.count = core.dummy_size - evaluations
    owed.card = scr.probes[0].cards[0] if scr.probes and scr.probes[0].cards else None
    d = decision.settle(call, snap, scr, results, core.policy)
    for cred in d.newly_blocked:
        _before_block(core, cred)
    ok, _record = tx.write_verification(d.changes, entry(d.outcome, d.reason, atc=d.atc, cid=d.credential_id))
    if not ok:
        raise ConflictError
    return d.acceptance


def _run_probe(
    core: ServiceCore, probe: decision.Probe, code: engine.PresentedCode, *, decisive: bool
) -> engine.MatchResult:
    """Run one probe. A refused call runs the same probes (the same provider calls as a
    wrong code, V30) but its results decide nothing: they count as dummy evaluations."""
    with provider_failures():
        result = engine.match(probe.cards, code, probe.request, core.provider, window=probe.window)
    if decisive:
        core.count(calls=1, evals=result.evaluations)
    else:
        core.count(dummies=result.evaluations)
    return result


def _before_block(core: ServiceCore, cred: Credential) -> None:
    if core.hook is None:
        return
    try:
        core.hook(cred)
    except Exception as exc:
        _log.warning("on_before_permanent_block hook failed (%s)", type(exc).__name__)


def _best_effort_audit(
    core: ServiceCore,
    rid: str,
    target: str,
    reason: str,
    *,
    outcome: Outcome,
    t0: float,
    event: str = "verify",
) -> None:
    """V22: the audit of a failed transaction, written in a separate one, best effort."""
    try:
        timeout = core.policy.lock_timeout_s
        if core.provider.audit_seal_key_id() is not None:
            opened = core.store.transaction(lock_timeout=timeout, sealer=core.provider)
        else:
            opened = core.store.transaction(lock_timeout=timeout)
        with opened as tx:
            tx.append_audit(
                core.entry(
                    event=event,
                    outcome=outcome.value,
                    reason=reason,
                    request_id=rid,
                    credential_id=target if target.startswith(CRED_PREFIX) else None,
                    operation_id=target if target.startswith(OP_PREFIX) else None,
                    duration_us=core.us(t0),
                )
            )
    except Exception as exc:
        _log.warning("audit of a failed verification not written (%s)", type(exc).__name__)
