"""Contracts of the decision, the matcher and the read → decide → write path no other test pins.

- **Operations** (V8, V16, V30): an accepted code consumes its operation without counting an
  attempt; an unknown operation is evaluated against the padding operation's data, so it makes
  the provider calls of a wrong code on a known one; a refusal that names an operation touches
  an operation row (its own, or the padding operation) and one that names a credential none.
- **Audit reasons** (V31, V37): the failure that locks or permanently blocks a credential says
  so in its audit record; an operation out of attempts is closed, even to its right code; an
  unknown target's record names what the call named (an unknown operation: the padding
  credential written in its place).
- **Dummy card** (V30): an unknown credential is evaluated under the CVN and key method of the
  cards the verifier sees; a SIGN request stored without an amount stands for the amount 0.
- **Logging** (V31, V22): a failing ``on_before_permanent_block`` hook and an audit record
  that could not be written are logged by exception type only (no code, PIN or PAN), and the
  call's outcome is unchanged.
- **Limits**: a code is examined up to 16 characters (V42); a resync run may end on the last
  ATC a card ever produces (65535, V34).
- **Value classes**: the matcher's and the decision's results are frozen and keyword-only,
  so a decision cannot be altered after it is taken.

Every test runs on the in-memory store (the store semantics are the conformance suite's).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from capsim.errors import InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier import decision, engine, memory
from capsim.verifier.model import Credential, CredentialState, OperationMode, Snapshot
from capsim.verifier.padding import PAD_OPERATION_CREDENTIAL_ID, PAD_OPERATION_ID
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import AcFunction, SoftwareProvider
from capsim.verifier.service import Verifier
from tests.verifier.conftest import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    PAN,
    PIN,
    Bench,
    Clock,
    StoreFactory,
    make_bench,
    make_provider,
)
from tests.verifier.helpers import new_op, transaction_held
from tests.verifier.test_seams import CallCounter
from tests.verifier.test_uniform_reject import Log, statement_log

WRONG = "10000000"
WRONG2 = "10000001"


def _reasons(b: Bench) -> list[str]:
    return [r.entry.reason for r in b.store.audit_records() if r.entry.event in ("verify", "resync")]


# -- operations -------------------------------------------------------------------------------------


def test_an_accepted_code_consumes_its_operation_without_counting_an_attempt(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(memory_factory(clock), clock)
    op = new_op(b, "respond")
    b.verifier.verify(op.operation_id, b.reader.respond(PIN, op.challenge).code, request_id=b.rid())
    done = b.verifier.get_operation(op.operation_id)
    assert done is not None
    assert (done.attempts, done.consumed_at) == (0, clock.now)
    # after one wrong code: that one attempt, and the accept adds none
    op2 = new_op(b, "respond")
    with pytest.raises(InvalidCode):
        b.verifier.verify(op2.operation_id, WRONG, request_id=b.rid())
    b.verifier.verify(op2.operation_id, b.reader.respond(PIN, op2.challenge).code, request_id=b.rid())
    done2 = b.verifier.get_operation(op2.operation_id)
    assert done2 is not None
    assert (done2.attempts, done2.consumed_at) == (1, clock.now)


def test_every_reject_of_an_operation_makes_the_same_provider_calls(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    """With auto-resync on, an Identify login without an operation runs a second probe; a call
    naming an operation never does. An unknown operation is evaluated with the padding
    operation's data (a RESPOND operation), so it costs what a wrong code on a known
    operation costs (V30), not what a login without an operation costs."""
    provider = CallCounter()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    policy = VerifierPolicy(auto_resync=True)
    b = make_bench(memory_factory(clock), clock, provider=provider, policy=policy)
    calls: dict[str, tuple[int, int]] = {}

    def reject(name: str, target: str, code: str = WRONG) -> None:
        provider.take()
        with pytest.raises(InvalidCode):
            b.verifier.verify(target, code, request_id=b.rid())
        calls[name] = provider.take()

    op = new_op(b, "respond")
    reject("wrong code", op.operation_id)
    b.verifier.verify(op.operation_id, b.reader.respond(PIN, op.challenge).code, request_id=b.rid())
    reject("consumed", op.operation_id)
    late = new_op(b, "respond")
    clock.advance(400)
    reject("expired", late.operation_id)
    reject("unknown", "op-00000000deadbeef")
    assert len(set(calls.values())) == 1, calls
    assert calls["unknown"][0] == 2  # the one probe's AC function, then the padding's
    # a login without an operation: the window probe and the auto-resync probe
    reject("identify", b.cid)
    assert calls["identify"][0] == 3, calls


def _operation_rows(log: Log) -> list[tuple[str, int]]:
    return [(name, n) for name, n in log if name in ("get_operation", "update_operation")]


def test_a_refusal_touches_an_operation_row_only_when_the_call_names_an_operation(
    memory_factory: StoreFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make_bench(memory_factory(clock), clock)
    op = new_op(b, "respond")
    late = new_op(b, "respond")
    seen: dict[str, Log] = {}
    with statement_log("memory", monkeypatch) as log:

        def reject(name: str, target: str, method: str = "verify") -> None:
            log.clear()
            with pytest.raises(InvalidCode):
                getattr(b.verifier, method)(target, WRONG, request_id=b.rid())
            seen[name] = list(log)

        reject("wrong code on an operation", op.operation_id)
        clock.advance(400)
        reject("expired operation", late.operation_id)
        reject("unknown operation", "op-00000000deadbeef")
        reject("wrong code on a credential", b.cid)
        reject("unknown credential", "cr-00000000deadbeef")
        b.verifier.lock(b.cid)
        reject("locked credential", b.cid)
        reject("activate an active credential", b.cid, "activate")
    touched = [("get_operation", -1), ("update_operation", 1)]
    # the operation named, read after the lock and written (attempts + 1, or unchanged)
    for name in ("wrong code on an operation", "expired operation", "unknown operation"):
        assert _operation_rows(seen[name])[-2:] == touched, (name, seen[name])
    for name in ("wrong code on a credential", "unknown credential", "locked credential"):
        assert _operation_rows(seen[name]) == [], (name, seen[name])
    assert _operation_rows(seen["activate an active credential"]) == []
    # the expired operation was touched unchanged; the wrong code counted one attempt
    expired = b.verifier.get_operation(late.operation_id)
    assert expired is not None
    assert expired.attempts == 0
    wrong = b.verifier.get_operation(op.operation_id)
    assert wrong is not None
    assert wrong.attempts == 1
    # the same statements, operation or credential, whatever the refusal (V30)
    ops = {tuple(seen[n]) for n in seen if "operation" in n}
    creds = {tuple(seen[n]) for n in seen if "credential" in n and not n.startswith("activate")}
    assert len(ops) == 1, seen
    assert len(creds) == 1, seen


def test_a_refusal_of_a_consumed_operation_touches_the_padding_operation(
    memory_factory: StoreFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make_bench(memory_factory(clock), clock)
    op = new_op(b, "respond")
    code = b.reader.respond(PIN, op.challenge).code
    b.verifier.verify(op.operation_id, code, request_id=b.rid())
    touched: list[str] = []
    update = memory._MemoryTransaction.update_operation

    def traced(self: memory._MemoryTransaction, new: object, **kw: object) -> int:
        n = update(self, new, **kw)  # type: ignore[arg-type]
        touched.append(f"{getattr(new, 'operation_id', '?')}:{n}")
        return n

    monkeypatch.setattr(memory._MemoryTransaction, "update_operation", traced)
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, code, request_id=b.rid())
    assert touched == [f"{PAD_OPERATION_ID}:1"]


# -- audit reasons ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("escalate_after", "last"), [(1, "blocked"), (2, "locked")])
@pytest.mark.parametrize(("method", "reason"), [("verify", "wrong-code"), ("resync", "resync-failed")])
def test_the_failure_that_locks_or_blocks_says_so_in_the_audit(
    memory_factory: StoreFactory, clock: Clock, escalate_after: int, last: str, method: str, reason: str
) -> None:
    policy = VerifierPolicy(max_fail=3, escalate_after=escalate_after)
    b = make_bench(memory_factory(clock), clock, policy=policy)

    def fail() -> object:
        if method == "verify":
            return b.verifier.verify(b.cid, WRONG, request_id=b.rid())
        return b.verifier.resync(b.cid, [WRONG, WRONG2], request_id=b.rid())

    for _ in range(3):
        with pytest.raises(InvalidCode):
            fail()
    assert _reasons(b)[-3:] == [reason, reason, f"{reason}-{last}"]
    state = CredentialState.BLOCKED if last == "blocked" else CredentialState.ACTIVE
    assert b.refresh().state is state
    record = list(b.store.audit_records())[-1].entry
    assert (record.outcome, record.credential_id) == ("reject", b.cid)


# -- logging --------------------------------------------------------------------------------------


def test_a_failing_block_hook_is_logged_by_type_and_the_block_still_happens(
    memory_factory: StoreFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = memory_factory(clock)
    policy = VerifierPolicy(max_fail=2, escalate_after=1, max_attempts_per_operation=2)
    b = make_bench(store, clock, policy=policy)
    calls: list[Credential] = []

    def hook(cred: Credential) -> None:
        calls.append(cred)
        raise RuntimeError(f"hook saw {PAN} {WRONG2} {PIN}")

    v = Verifier(store, b.provider, policy=policy, on_before_permanent_block=hook)
    caplog.set_level(logging.DEBUG)
    for guess in (WRONG, WRONG2):
        with pytest.raises(InvalidCode):
            v.verify(b.cid, guess, request_id=b.rid())
    assert len(calls) == 1
    assert v.get_credential(b.cid).state is CredentialState.BLOCKED  # type: ignore[union-attr]
    assert _reasons(b)[-1] == "wrong-code-blocked"
    mine = [r for r in caplog.records if r.name == "capsim.verifier.service"]
    assert [(r.levelno, r.getMessage()) for r in mine] == [
        (logging.WARNING, "on_before_permanent_block hook failed (RuntimeError)")
    ]
    for secret in (PAN, WRONG2, PIN, "hook saw"):
        assert secret not in caplog.text


def test_an_audit_that_cannot_be_written_is_logged_and_the_caller_gets_the_temporary_failure(
    memory_factory: StoreFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = memory_factory(clock)
    b = make_bench(store, clock)
    quick = Verifier(store, b.provider, policy=VerifierPolicy(lock_timeout_s=0.2))
    code = b.identify().code
    caplog.set_level(logging.DEBUG)
    with transaction_held(store), pytest.raises(TemporaryFailure):
        quick.verify(b.cid, code, request_id="held")
    mine = [r for r in caplog.records if r.name == "capsim.verifier.service"]
    assert [(r.levelno, r.getMessage()) for r in mine] == [
        (logging.WARNING, "audit of a failed verification not written (TemporaryFailure)")
    ]
    assert code not in caplog.text
    assert PAN not in caplog.text
    assert "held" not in [r.entry.request_id for r in store.audit_records()]
    # nothing was counted: the code still verifies
    assert b.verifier.verify(b.cid, code, request_id=b.rid()).atc == b.refresh().last_atc


# -- limits ---------------------------------------------------------------------------------------


def test_a_code_is_examined_up_to_16_characters() -> None:
    assert engine.MAX_CODE_CHARS == 16
    assert engine.parse_code("1" * 16, digits=16).value == int("1" * 16)
    with pytest.raises(ValidationError) as exc:
        engine.parse_code("1" * 17, digits=17)
    assert str(exc.value) == "code: expected exactly 17 ASCII digits"
    with pytest.raises(ValidationError) as exc:
        engine.parse_code("1" * 17, digits=20, accept_unpadded=True)
    assert str(exc.value) == "code: expected exactly 20 ASCII digits"
    assert engine.parse_code("7" * 16, digits=20, accept_unpadded=True).value == int("7" * 16)


@pytest.mark.parametrize("count", [2, 3])
def test_a_resync_may_end_on_the_last_atc_a_card_produces(
    memory_factory: StoreFactory, clock: Clock, count: int
) -> None:
    policy = VerifierPolicy(resync_count=count)
    b = make_bench(memory_factory(clock), clock, policy=policy, initial_atc=0xFF00)
    assert b.first.atc == 0xFF01
    while True:  # far beyond the window, up to the card's last codes
        r = b.identify()
        if r.atc == 0xFFFF - count:
            break
    codes = [b.identify() for _ in range(count)]
    assert codes[-1].atc == 0xFFFF
    with pytest.raises(InvalidCode):  # beyond the Identify gap
        b.verifier.verify(b.cid, codes[0].code, request_id=b.rid())
    assert b.verifier.resync(b.cid, [c.code for c in codes], request_id=b.rid()) == 0xFFFF
    assert b.refresh().last_atc == 0xFFFF


# -- value classes ----------------------------------------------------------------------------------


def _values() -> list[object]:
    """One instance of each public value class of the matcher and the decision, as the
    verifier makes them."""
    provider = make_provider()
    keys = provider.register_card(issuer_key_id="bank", pan=PAN)
    card = engine.CardCandidate(
        credential_id="c", key_ref=keys.key_ref, psn="00", profile=decision.DUMMY_PROFILE, last_atc=0
    )
    request = engine.MatchRequest(mode=OperationMode.IDENTIFY)
    code = engine.parse_code(engine.expected_code(card, request, 1, 0, provider))
    result = engine.match([card], code, request, provider, window=4)
    assert result.match is not None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    snap = Snapshot(now=now, operation=None, credentials=(), request=None)
    call = decision.Call(method="verify", target="cr-unknown", request_id="r1", fingerprint=b"x")
    scr = decision.screen(call, snap, VerifierPolicy(), dummy_key_ref="dummy")
    settled = decision.settle(call, snap, scr, [], VerifierPolicy())
    return [code, card, request, result.match, result, call, scr.probes[0], scr, settled]


@pytest.mark.parametrize("index", range(9))
def test_match_and_decision_results_are_frozen_and_keyword_only(index: int) -> None:
    value = _values()[index]
    fields = dataclasses.fields(value)  # type: ignore[arg-type]
    for f in fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, f.name, getattr(value, f.name))
    with pytest.raises(TypeError):
        type(value)(*(getattr(value, f.name) for f in fields))
    assert type(value)(**{f.name: getattr(value, f.name) for f in fields}) == value


# -- closed operations, unknown targets, the dummy card ------------------------------------------------


def test_an_operation_out_of_attempts_is_closed_even_to_its_right_code(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    policy = VerifierPolicy(max_attempts_per_operation=2)
    b = make_bench(memory_factory(clock), clock, policy=policy)
    op = new_op(b, "respond")
    for _ in range(2):
        with pytest.raises(InvalidCode):
            b.verifier.verify(op.operation_id, WRONG, request_id=b.rid())
    code = b.reader.respond(PIN, op.challenge).code
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, code, request_id=b.rid())
    assert _reasons(b)[-3:] == ["wrong-code", "wrong-code", "operation-closed"]
    closed = b.verifier.get_operation(op.operation_id)
    assert closed is not None
    assert (closed.attempts, closed.consumed_at) == (2, None)
    assert b.refresh().fail_count == 2  # the refusal counted nothing


def test_the_audit_of_an_unknown_target_names_what_the_call_named(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    """An unknown credential is recorded under the id the call named; an unknown operation
    under the padding credential written in its place (the same record size, V30)."""
    b = make_bench(memory_factory(clock), clock)
    for target in ("cr-00000000deadbeef", "op-00000000deadbeef"):
        with pytest.raises(InvalidCode):
            b.verifier.verify(target, WRONG, request_id=b.rid())
    with pytest.raises(InvalidCode):
        b.verifier.activate("cr-00000000deadbee0", WRONG, request_id=b.rid())
    with pytest.raises(InvalidCode):
        b.verifier.resync("cr-00000000deadbee1", [WRONG, WRONG2], request_id=b.rid())
    records = [r.entry for r in b.store.audit_records()][-4:]
    assert [(e.reason, e.credential_id, e.operation_id) for e in records] == [
        ("unknown-credential", "cr-00000000deadbeef", None),
        ("unknown-operation", PAD_OPERATION_CREDENTIAL_ID, "op-00000000deadbeef"),
        ("unknown-credential", "cr-00000000deadbee0", None),
        ("unknown-credential", "cr-00000000deadbee1", None),
    ]
    # an activation is audited as a verification, a resync as a resync
    assert [e.event for e in records] == ["verify", "verify", "verify", "resync"]


class KeyPathRecorder(SoftwareProvider):
    """A software provider that records the key path of every AC function fetched."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[tuple[object, ...]] = []

    def ac_function(self, key_ref: str, **kwargs: Any) -> AcFunction:
        self.paths.append((kwargs.get("cvn"), kwargs.get("method"), kwargs.get("tree")))
        return super().ac_function(key_ref, **kwargs)


@pytest.mark.parametrize(("profile", "cvn"), [("secur-acces", 0x10), ("visa-dpa", 0x12)])
def test_an_unknown_credential_is_evaluated_under_the_profile_of_the_cards_seen(
    memory_factory: StoreFactory, clock: Clock, profile: str, cvn: int
) -> None:
    """The dummy card of an unknown target takes the CVN and session-key method of the last
    real credential evaluated, so it costs what that card costs (V30)."""
    provider = KeyPathRecorder()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    b = make_bench(memory_factory(clock), clock, profile=profile, provider=provider, cvn=cvn)
    assert b.credential.profile.cvn == cvn != decision.DUMMY_PROFILE.cvn
    seen: dict[str, list[tuple[object, ...]]] = {}
    for name, target in (("wrong code", b.cid), ("unknown", "cr-00000000deadbeef")):
        provider.paths.clear()
        with pytest.raises(InvalidCode):
            b.verifier.verify(target, WRONG, request_id=b.rid())
        seen[name] = list(provider.paths)
    assert seen["unknown"] == seen["wrong code"]
    assert {p[0] for p in seen["unknown"]} == {b.credential.profile.cvn}


def test_a_sign_request_without_an_amount_is_evaluated_for_the_amount_zero() -> None:
    """The card's IAF asks for an amount: a SIGN request that stores none stands for 0."""
    profile = decision.DUMMY_PROFILE
    assert profile.iaf[0] & 0x80
    request = engine.MatchRequest(mode=OperationMode.SIGN, challenge="12345678", currency="978")
    zero = dataclasses.replace(request, amount_minor=0)
    one = dataclasses.replace(request, amount_minor=1)
    assert engine.cdol_data_for(profile, request) == engine.cdol_data_for(profile, zero)
    assert engine.cdol_data_for(profile, request) != engine.cdol_data_for(profile, one)
