"""The accept/reject decision of a verification: one pure function over the rows read.

Theory of operation (verifier.md §1, §4, §5; V1–V36)
-----------------------------------------------------
A verification (``verify``, ``activate``, ``resync``) runs in three steps, and only the middle
one is here:

1. the service reads, under the credential row lock, everything the decision needs into a
   :class:`~capsim.verifier.model.Snapshot` (the target credential and its siblings, the
   operation, the recorded request);
2. **this module decides**, without clock, randomness, keys or I/O:

   a. :func:`screen` checks the request id binding (the same call again replays its recorded
      outcome; any other call with that id is a conflict) and, in this order, the target
      (unknown credential or operation), the credential state, its temporary lock, the
      operation (owner, consumed, expired, closed) and whether an operation is required. It
      always returns the same :class:`Probe` list that an evaluable call would get (for an
      unknown target, the same shape over a dummy card), so a refused call makes the same
      provider calls as a wrong code (V30); the refusal reason rides along;
   b. the service runs each probe through the matcher (:func:`capsim.verifier.engine.match`)
      and pads the evaluations to a fixed count;
   c. :func:`settle` turns the screen and the match results into a :class:`Decision`: the
      outcome, the ledger row, and every row to write as data
      (:class:`~capsim.verifier.model.Changes`), including the failure counting, lock and
      escalation of each credential the guess was tested against;

3. the service writes the changes and the audit record in the same transaction, and commits.

Rules applied here, each once:

- **Request ids** are bound to (method, target, code fingerprint).
- **Siblings** (V11): other cards of the same user and PAN are tried only when active and not
  locked; a locked, suspended or blocked sibling is never tried. A miss counts as a failure
  against *every* credential it was tested against; a match resets only the matched one.
- **Replay floor**: a code is only accepted above the credential's ``last_atc``, which starts
  at the card's floor (the service sets it at enrolment) and never decreases.
- **Lockout** (V28–V31): :func:`count_failure`.
- **History variants** (V10): the first code of a credential is tried with at least two IAD
  variants; after an issuer script, with all of them until a code above the script's ATC.

>>> from datetime import datetime, timezone
>>> from capsim.verifier.policy import VerifierPolicy
>>> snap = Snapshot(now=datetime(2026, 1, 1, tzinfo=timezone.utc), operation=None,
...                 credentials=(), request=None)
>>> call = Call(method="verify", target="cr-unknown", request_id="r1", fingerprint=b"x")
>>> s = screen(call, snap, VerifierPolicy(), dummy_key_ref="dummy")
>>> s.refusal, [c.key_ref for p in s.probes for c in p.cards]
('unknown-credential', ['dummy'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from capsim.verifier.engine import CardCandidate, Match, MatchRequest, MatchResult
from capsim.verifier.model import (
    Acceptance,
    Action,
    Changes,
    Credential,
    CredentialProfile,
    CredentialState,
    CredentialWrite,
    Operation,
    OperationMode,
    OperationWrite,
    Outcome,
    RequestRecord,
    Snapshot,
    transition,
)
from capsim.verifier.padding import (
    DUMMY_PROFILE,
    PAD_CREDENTIAL_ID,
    PAD_OPERATION_CREDENTIAL_ID,
    PAD_OPERATION_ID,
    is_padding,
)
from capsim.verifier.policy import VerifierPolicy

__all__ = [
    "DUMMY_PROFILE",
    "Call",
    "Decision",
    "Probe",
    "Screen",
    "candidate",
    "count_failure",
    "match_request",
    "screen",
    "settle",
]

_OP_PREFIX: Final = "op-"


@dataclass(frozen=True, kw_only=True, slots=True)
class Call:
    """What the caller asked: the method, its target, the request id and a keyed digest of
    the presented code(s); ``codes`` is how many codes were presented (resync: 2 or 3)."""

    method: str
    target: str
    request_id: str
    fingerprint: bytes
    codes: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Probe:
    """One matcher run: presented code ``code_index`` against ``cards`` over ``window``."""

    code_index: int
    cards: tuple[CardCandidate, ...]
    request: MatchRequest
    window: int
    purpose: str = "match"


@dataclass(frozen=True, kw_only=True, slots=True)
class Screen:
    """The first half of the decision (module docstring, step 2a)."""

    replay: RequestRecord | None = None
    conflict: bool = False
    refusal: str = ""
    original: Credential | None = None
    target: Credential | None = None
    operation: Operation | None = None
    tried: tuple[Credential, ...] = ()
    probes: tuple[Probe, ...] = ()
    padding: Credential | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The outcome and every row to write (module docstring, step 2c)."""

    outcome: Outcome
    reason: str
    changes: Changes
    acceptance: Acceptance | None = None
    atc: int | None = None
    credential_id: str | None = None
    newly_blocked: tuple[Credential, ...] = ()


# ------------------------------------------------------------------------------------------------
# Step 2a


def match_request(op: Operation | None) -> MatchRequest:
    """The bound data a code is checked against: the stored operation's, or Identify (V8)."""
    if op is None:
        return MatchRequest(mode=OperationMode.IDENTIFY)
    return MatchRequest(
        mode=op.mode,
        challenge=op.challenge,
        amount_minor=op.amount_minor,
        currency=op.currency,
        tds_fields=op.tds_fields,
    )


def _locked(cred: Credential, now: datetime) -> bool:
    return cred.locked_until is not None and now < cred.locked_until


def candidate(
    cred: Credential,
    policy: VerifierPolicy,
    *,
    first_use: bool,
    key_ref: str | None = None,
    profile: CredentialProfile | None = None,
) -> CardCandidate:
    """The matcher's view of a credential, with the history-variant rule (V10): every variant
    after an issuer script; at least two for a first code; else ``policy.history_variants``.
    ``key_ref`` and ``profile`` replace the credential's (the dummy card of a padding row)."""
    steady = policy.history_variants
    variants: int | None
    if cred.script_atc is not None:
        variants = None  # the card reports the script in its next ARQCs: every variant
    elif first_use or cred.last_atc < 0:
        variants = max(steady, 2)  # a card's very first code differs ("new card" history)
    else:
        variants = steady
    return CardCandidate(
        credential_id=cred.credential_id,
        key_ref=cred.key_ref if key_ref is None else key_ref,
        psn=cred.psn,
        profile=cred.profile if profile is None else profile,
        last_atc=cred.last_atc,
        variants=variants,
    )


def _refusal(
    call: Call, now: datetime, op: Operation | None, target: Credential | None, policy: VerifierPolicy
) -> str:
    """The internal reason a call is refused without looking at its code, or ``""``."""
    is_op = call.target.startswith(_OP_PREFIX) and call.method == "verify"
    if target is None:
        return "unknown-operation" if is_op and op is None else "unknown-credential"
    wanted = CredentialState.PENDING if call.method == "activate" else CredentialState.ACTIVE
    if target.state is not wanted:
        return f"state-{target.state.value}"
    if _locked(target, now):
        return "locked"
    if op is not None:
        if op.credential_id != target.credential_id:
            return "operation-mismatch"
        if op.consumed_at is not None:
            return "operation-consumed"
        if now >= op.expires_at:
            return "operation-expired"
        if op.attempts >= op.max_attempts:
            return "operation-closed"
    elif is_op:
        return "unknown-operation"
    elif call.method == "verify" and not policy.allow_identify_without_operation:
        return "operation-required"
    return ""


def screen(
    call: Call,
    snap: Snapshot,
    policy: VerifierPolicy,
    *,
    dummy_key_ref: str,
    dummy_profile: CredentialProfile = DUMMY_PROFILE,
) -> Screen:
    """Step 2a: request binding, refusals, and the probes to run (module docstring).

    An unknown target is evaluated against a dummy card with ``dummy_key_ref`` and
    ``dummy_profile`` (the caller passes the profile of the credentials it usually sees, so
    the dummy costs what a real card costs). When the store returned its padding rows
    (:mod:`capsim.verifier.padding`) the dummy card stands in for the padding credential and
    goes through the same steps as a real target, with the padding operation's data when the
    call names an operation."""
    previous = snap.request
    if previous is not None:
        same = previous.binds(method=call.method, target=call.target, fingerprint=call.fingerprint)
        return Screen(replay=previous) if same else Screen(conflict=True)
    is_op = call.target.startswith(_OP_PREFIX) and call.method == "verify"
    read = snap.operation if is_op else None
    op = None if read is None or is_padding(read.operation_id) else read
    target_id = op.credential_id if op is not None else (None if is_op else call.target)
    by_id = {c.credential_id: c for c in snap.credentials}
    target = by_id.get(target_id) if target_id is not None and not is_padding(target_id) else None
    refusal = _refusal(call, snap.now, op, target, policy)

    subject = target
    stand_in: tuple[str | None, CredentialProfile | None] = (None, None)
    if target is None:
        padding = by_id.get(PAD_OPERATION_CREDENTIAL_ID if is_op else PAD_CREDENTIAL_ID)
        if padding is None:  # a store without padding rows: the dummy card alone
            dummy = CardCandidate(
                credential_id="",
                key_ref=dummy_key_ref,
                psn="00",
                profile=dummy_profile,
                last_atc=-1,
                variants=policy.history_variants,
            )
            probe = Probe(code_index=0, cards=(dummy,), request=match_request(None), window=policy.atc_window)
            return Screen(refusal=refusal, probes=(probe,) * call.codes)
        # the padding row with the dummy card's key and profile: the same steps as a real
        # target (V30)
        subject, stand_in = padding, (dummy_key_ref, dummy_profile)
        # the operation read (the padding operation for an unknown one) shapes the probe, as
        # a known operation's data would; it is never the target's. ``op`` is ``read`` or
        # ``None`` here, so this only puts the padding operation in.
        op = read
    assert subject is not None

    if _locked(subject, snap.now) or subject.locked_until is None:
        fresh = subject
    else:  # the lock expired: counting starts again (V29)
        fresh = dataclasses.replace(subject, locked_until=None, fail_count=0)
    tried = [fresh]
    if call.method == "verify" and policy.try_sibling_cards:
        tried += [
            c
            for c in snap.credentials
            if c.credential_id != subject.credential_id
            and c.user_id == subject.user_id
            and c.pan_token == subject.pan_token
            and c.state is CredentialState.ACTIVE
            and not _locked(c, snap.now)
        ]
    first_use = call.method == "activate"
    cards: tuple[CardCandidate, ...] = (
        candidate(fresh, policy, first_use=first_use, key_ref=stand_in[0], profile=stand_in[1]),
    )
    cards += tuple(candidate(c, policy, first_use=first_use) for c in tried[1:])
    request = match_request(op)
    if call.method == "resync":
        probes = tuple(
            Probe(code_index=i, cards=cards, request=request, window=policy.sync_window)
            for i in range(call.codes)
        )
    else:
        window = policy.atc_window if (op is not None or first_use) else policy.max_atc_gap
        probes = (Probe(code_index=0, cards=cards, request=request, window=window),)
        if op is None and policy.auto_resync and call.method == "verify":
            probes += (
                Probe(
                    code_index=0,
                    cards=cards[:1],
                    request=request,
                    window=policy.sync_window,
                    purpose="auto-resync",
                ),
            )
    if target is None:
        return Screen(refusal=refusal, padding=subject, probes=probes)
    return Screen(
        refusal=refusal, original=target, target=fresh, operation=op, tried=tuple(tried), probes=probes
    )


# ------------------------------------------------------------------------------------------------
# Step 2c


def count_failure(cred: Credential, now: datetime, policy: VerifierPolicy) -> Credential:
    """The credential after one counted failure (V28, V29, V31); ``version`` unchanged.

    ``max_fail`` consecutive failures set ``locked_until``; ``escalate_after`` locks inside
    ``escalation_period_s`` block the credential permanently.
    """
    return dataclasses.replace(cred, **_failure(cred, now, policy))


def _failure(cred: Credential, now: datetime, policy: VerifierPolicy) -> dict[str, Any]:
    """The columns one counted failure changes (:func:`count_failure`)."""
    fails = min(cred.fail_count + 1, cred.max_fail)
    if fails < cred.max_fail:
        return {"fail_count": fails}
    started = cred.escalation_started_at
    if started is None or now - started > timedelta(seconds=policy.escalation_period_s):
        started, escalations = now, 1
    else:
        escalations = cred.lock_escalations + 1
    changes: dict[str, Any] = {
        "fail_count": fails,
        "locked_until": now + timedelta(seconds=policy.lock_duration_s),
        "lock_escalations": escalations,
        "escalation_started_at": started,
    }
    if escalations >= policy.escalate_after:
        changes["state"] = transition(cred.state, Action.BLOCK)
    return changes


def _write(old: Credential, **changes: Any) -> CredentialWrite:
    """The compare-and-swap of ``old`` with ``changes`` (and the next version): one copy."""
    return CredentialWrite(
        credential_id=old.credential_id,
        expected_version=old.version,
        new=dataclasses.replace(old, version=old.version + 1, **changes),
    )


def _op_write(
    op: Operation | None, *, consumed_at: datetime | None = None, failed: bool = False
) -> OperationWrite:
    """The operation row an evaluated code writes: consumed by an accept, one attempt more
    after a miss; none without an operation. The write is required (the
    :class:`OperationWrite` default): the row was read under the credential row lock, which
    every writer of an operation row holds, so a write that touches nothing means the store
    broke that rule and the whole verification rolls back."""
    if op is None:
        return OperationWrite(
            operation_id="", expected_attempts=0, attempts=0, consumed_at=None, required=False
        )
    return OperationWrite(
        operation_id=op.operation_id,
        expected_attempts=op.attempts,
        attempts=op.attempts + (1 if failed else 0),
        consumed_at=consumed_at,
    )


def _named_credential(call: Call, scr: Screen) -> str | None:
    """The credential id a call named, or for an operation the padding credential's."""
    if call.target.startswith(_OP_PREFIX) and call.method == "verify":
        return None if scr.padding is None else scr.padding.credential_id
    return call.target


def _op_touch(call: Call, op: Operation | None, *, padded: bool) -> OperationWrite:
    """The operation row a refusal touches unchanged (padding module, rule 2): the named
    operation while it is not consumed, else the padding operation; none for a call that
    names a credential (or a store without padding rows)."""
    if not (call.target.startswith(_OP_PREFIX) and call.method == "verify") or not padded:
        return _op_write(None)
    if op is not None and op.consumed_at is None:
        return OperationWrite(
            operation_id=op.operation_id,
            expected_attempts=op.attempts,
            attempts=op.attempts,
            consumed_at=None,
            required=False,
        )
    return OperationWrite(
        operation_id=PAD_OPERATION_ID, expected_attempts=0, attempts=0, consumed_at=None, required=False
    )


def _resync_atc(results: Sequence[MatchResult], codes: int) -> int | None:
    """The last ATC of the lowest run a, a+1(, a+2) matched by the codes in order (V34).
    A run never ends above 65535: the matcher finds no ATC above it
    (:func:`capsim.codelayout.candidate_atcs`)."""
    sets = [{m.atc for m in r.matches} for r in results]
    for start in sorted(sets[0]):
        if all(start + k in sets[k] for k in range(1, codes)):
            return start + codes - 1
    return None


def _auto_resync(
    target: Credential, now: datetime, result: MatchResult, policy: VerifierPolicy
) -> tuple[Match | None, int | None, datetime | None]:
    """V35: park a code found beyond the window; accept the next consecutive one in time."""
    fresh = (
        target.parked_atc is not None
        and target.parked_at is not None
        and now - target.parked_at <= timedelta(seconds=policy.resync_max_interval_s)
    )
    if fresh and target.parked_atc is not None:
        for m in result.matches:
            if m.atc == target.parked_atc + 1:
                return m, None, None
    if result.match is not None:
        return None, result.match.atc, now
    return None, None, None  # an unrelated code clears the parked one


def _record(call: Call, now: datetime, outcome: Outcome, acc: Acceptance | None = None) -> RequestRecord:
    return RequestRecord(
        request_id=call.request_id,
        outcome=outcome,
        recorded_at=now,
        acceptance=acc,
        method=call.method,
        target=call.target,
        fingerprint=call.fingerprint,
    )


def settle(
    call: Call, snap: Snapshot, scr: Screen, results: Sequence[MatchResult], policy: VerifierPolicy
) -> Decision:
    """Step 2c: the outcome and the rows to write, from the screen and the probes' results."""
    now = snap.now
    target = scr.target
    op = scr.operation
    if scr.refusal or target is None:
        # the same statements and rows as a wrong code: touch the target row (the padding
        # row when there is none), an operation row when the call names one, the request
        # row (V30); nothing is counted
        orig = scr.original if scr.original is not None else scr.padding
        touch = (
            _write(orig)
            if orig is not None
            else CredentialWrite(credential_id=call.target, expected_version=-1, new=None, required=False)
        )
        return Decision(
            outcome=Outcome.REJECT,
            reason=scr.refusal or "unknown-credential",
            changes=Changes(
                credentials=(touch,),
                operation=_op_touch(call, scr.operation, padded=scr.padding is not None or orig is not None),
                request=_record(call, now, Outcome.REJECT),
            ),
            # the audit names the credential the call named, known or not, or for an unknown
            # operation the padding credential written in its place (the same record size)
            credential_id=target.credential_id if target is not None else _named_credential(call, scr),
        )

    match: Match | None
    parked_atc, parked_at = target.parked_atc, target.parked_at
    if call.method == "resync":
        atc = _resync_atc(results, call.codes)
        match = None if atc is None else Match(credential_id=target.credential_id, atc=atc, variant=0)
    else:
        match = results[0].match
        auto = [r for p, r in zip(scr.probes, results, strict=True) if p.purpose == "auto-resync"]
        if match is None and auto:
            match, parked_atc, parked_at = _auto_resync(target, now, auto[0], policy)

    if match is not None:
        winner = next(c for c in scr.tried if c.credential_id == match.credential_id)
        script_atc = (
            winner.script_atc if winner.script_atc is not None and match.atc <= winner.script_atc else None
        )
        accepted = _write(
            winner,
            state=transition(winner.state, Action.ACTIVATE) if call.method == "activate" else winner.state,
            last_atc=match.atc,
            fail_count=0,
            locked_until=None,
            parked_atc=None,
            parked_at=None,
            script_atc=script_atc,
        )
        acc = Acceptance(
            credential_id=winner.credential_id,
            atc=match.atc,
            mode=OperationMode.IDENTIFY if op is None else op.mode,
            request_id=call.request_id,
            accepted_at=now,
            operation_id=None if op is None else op.operation_id,
            txn_digest=b"" if op is None else op.txn_digest,
        )
        writes = [accepted]
        if winner is not target:  # a sibling matched: the target row is left as it was
            writes.append(_write(target))
        writes.sort(key=lambda w: w.credential_id)
        reason = {"activate": "activated", "resync": "resync"}.get(call.method, "match")
        return Decision(
            outcome=Outcome.ACCEPT,
            reason=reason,
            changes=Changes(
                credentials=tuple(writes),
                operation=_op_write(op, consumed_at=now),
                request=_record(call, now, Outcome.ACCEPT, acc),
                acceptance=acc,
            ),
            acceptance=acc,
            atc=match.atc,
            credential_id=winner.credential_id,
        )

    # a miss: it counts against every credential it was tested against (V28, V29, V31, V11)
    writes = []
    blocked = []
    mine: dict[str, Any] = {}
    for cred in scr.tried:
        changes = _failure(cred, now, policy)
        if cred is target:
            changes.update(parked_atc=parked_atc, parked_at=parked_at)
            mine = changes
        write = _write(cred, **changes)
        if changes.get("state") is CredentialState.BLOCKED and write.new is not None:
            blocked.append(write.new)
        writes.append(write)
    base = "resync-failed" if call.method == "resync" else "wrong-code"
    reason = base
    if mine.get("state") is CredentialState.BLOCKED:
        reason = f"{base}-blocked"
    elif "locked_until" in mine:
        reason = f"{base}-locked"
    return Decision(
        outcome=Outcome.REJECT,
        reason=reason,
        changes=Changes(
            credentials=tuple(writes),
            operation=_op_write(op, failed=True),
            request=_record(call, now, Outcome.REJECT),
        ),
        credential_id=target.credential_id,
        newly_blocked=tuple(blocked),
    )
