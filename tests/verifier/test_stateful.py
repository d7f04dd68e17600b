"""Property-based and fuzz tests, and lookup scaling (verifier.md V41–V43)."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from capsim.errors import CapsimError, ConfigError, InvalidCode, TemporaryFailure, ValidationError
from capsim.reader import CapResult
from capsim.verifier import engine
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import Acceptance, Credential, CredentialState
from capsim.verifier.policy import VerifierPolicy
from tests.verifier.conftest import PAN, PIN, Clock, StoreFactory, make_bench
from tests.verifier.helpers import CountingStore

# -- V41 ----------------------------------------------------------------------------------------------

POLICY = VerifierPolicy(
    atc_window=8, max_atc_gap=8, lock_duration_s=60, escalate_after=3, escalation_period_s=600, sync_window=32
)


@dataclasses.dataclass
class Model:
    """The reference model of one credential (verifier.md V28–V36)."""

    state: CredentialState
    last_atc: int
    fail_count: int = 0
    locked_until: datetime | None = None
    escalations: int = 0
    escalation_start: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.state is CredentialState.ACTIVE and (
            self.locked_until is None or now >= self.locked_until
        )

    def expire_lock(self, now: datetime) -> None:
        if self.locked_until is not None and now >= self.locked_until:
            self.locked_until = None
            self.fail_count = 0

    def failure(self, now: datetime) -> None:
        self.fail_count = min(self.fail_count + 1, POLICY.max_fail)
        if self.fail_count >= POLICY.max_fail:
            period = timedelta(seconds=POLICY.escalation_period_s)
            if self.escalation_start is None or now - self.escalation_start > period:
                self.escalation_start, self.escalations = now, 1
            else:
                self.escalations += 1
            self.locked_until = now + timedelta(seconds=POLICY.lock_duration_s)
            if self.escalations >= POLICY.escalate_after:
                self.state = CredentialState.BLOCKED


class VerifierMachine(RuleBasedStateMachine):
    """Random issue/verify/resync/lock/unlock/revoke/replace/advance_floor steps vs the model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.b = make_bench(MemoryStore(clock=self.clock), self.clock, policy=POLICY)
        self.model = Model(state=CredentialState.ACTIVE, last_atc=self.b.first.atc)
        self.pool: list[CapResult] = []
        self.accepted: set[int] = set()
        self.consumed_ops: set[str] = set()
        self.max_last = self.model.last_atc
        self.n = 0

    def _rid(self) -> str:
        self.n += 1
        return f"m-{self.n}"

    def _check(self, cred: Credential) -> None:
        assert cred.state is self.model.state
        assert cred.last_atc == self.model.last_atc
        assert cred.fail_count == self.model.fail_count
        assert cred.locked_until == self.model.locked_until

    def _verify(self, target: str, code: str, valid_atc: int | None, window: int) -> None:
        now = self.clock.now
        was_usable = self.model.usable(now)
        try:
            acc: Acceptance | None = self.b.verifier.verify(target, code, request_id=self._rid())
        except InvalidCode:
            acc = None
        if not was_usable:
            assert acc is None  # no ACCEPT unless active and unlocked
        else:
            self.model.expire_lock(now)
            m = self.model
            if valid_atc is not None and m.last_atc < valid_atc <= min(m.last_atc + window, 0xFFFF):
                assert acc is not None
                assert acc.atc == valid_atc
                assert valid_atc not in self.accepted  # at most one ACCEPT per (credential, ATC)
                self.accepted.add(valid_atc)
                m.last_atc, m.fail_count, m.locked_until = valid_atc, 0, None
            else:
                assert acc is None
                m.failure(now)
        self._check(self.b.refresh())

    @rule()
    def card_run(self) -> None:
        self.pool.append(self.b.identify())

    @precondition(lambda self: bool(self.pool))
    @rule(i=st.integers(0, 10**6))
    def verify_identify(self, i: int) -> None:
        r = self.pool[i % len(self.pool)]
        self._verify(self.b.cid, r.code, r.atc, POLICY.max_atc_gap)

    @rule(code=st.integers(0, 10**8 - 1))
    def verify_wrong(self, code: int) -> None:
        text = f"{code:08d}"
        if any(text == r.code for r in self.pool):
            return
        self._verify(self.b.cid, text, None, POLICY.max_atc_gap)

    @rule()
    def issue_and_verify_respond(self) -> None:
        try:
            op = self.b.verifier.issue_operation(self.b.cid, mode="respond")
        except ValidationError:
            assert self.model.state is not CredentialState.ACTIVE
            return
        r = self.b.reader.respond(PIN, op.challenge)
        self._verify(op.operation_id, r.code, r.atc, POLICY.atc_window)
        stored = self.b.verifier.get_operation(op.operation_id)
        assert stored is not None
        if stored.consumed_at is not None:
            assert op.operation_id not in self.consumed_ops  # one ACCEPT per operation
            self.consumed_ops.add(op.operation_id)
            again = self.b.reader.respond(PIN, op.challenge)
            with pytest.raises(InvalidCode):
                self.b.verifier.verify(op.operation_id, again.code, request_id=self._rid())
            self._check(self.b.refresh())

    @precondition(lambda self: len(self.pool) >= 2)
    @rule(i=st.integers(0, 10**6))
    def resync(self, i: int) -> None:
        k = i % (len(self.pool) - 1)
        c1, c2 = self.pool[k], self.pool[k + 1]
        now = self.clock.now
        was_usable = self.model.usable(now)
        try:
            atc: int | None = self.b.verifier.resync(self.b.cid, [c1.code, c2.code], request_id=self._rid())
        except InvalidCode:
            atc = None
        if not was_usable:
            assert atc is None
        else:
            self.model.expire_lock(now)
            m = self.model
            ok = c2.atc == c1.atc + 1 and m.last_atc < c1.atc <= m.last_atc + POLICY.sync_window
            if ok:
                assert atc == c2.atc
                m.last_atc, m.fail_count, m.locked_until = c2.atc, 0, None
                self.accepted.add(c2.atc)
            else:
                assert atc is None
                m.failure(now)
        self._check(self.b.refresh())

    @rule(seconds=st.integers(0, 120))
    def lock(self, seconds: int) -> None:
        if seconds:
            self.b.verifier.lock(self.b.cid, seconds=seconds)
            self.model.locked_until = self.clock.now + timedelta(seconds=seconds)
        self._check(self.b.refresh())

    @rule()
    def unlock(self) -> None:
        try:
            self.b.verifier.unlock(self.b.cid)
        except ValidationError:
            return
        m = self.model
        m.locked_until, m.fail_count, m.escalations, m.escalation_start = None, 0, 0, None
        if m.state is CredentialState.BLOCKED:
            m.state = CredentialState.ACTIVE
        self._check(self.b.refresh())

    @rule(kind=st.sampled_from(["revoke", "replace"]))
    def retire(self, kind: str) -> None:
        if self.model.state in (CredentialState.REVOKED, CredentialState.REPLACED):
            with pytest.raises(ValidationError):
                self.b.verifier.revoke(self.b.cid)
            return
        if kind == "revoke":
            self.b.verifier.revoke(self.b.cid)
            self.model.state = CredentialState.REVOKED
        else:
            new = self.b.verifier.replace(self.b.cid, pan=PAN, psn="07", issuer_key_id="bank")
            assert new.state is CredentialState.PENDING
            self.model.state = CredentialState.REPLACED
        self._check(self.b.refresh())

    @rule(delta=st.integers(-3, 6))
    def advance_floor(self, delta: int) -> None:
        target = max(0, min(self.model.last_atc + delta, 0xFFFF))
        assert self.b.verifier.advance_floor(self.b.cid, target) == max(self.model.last_atc, target)
        self.model.last_atc = max(self.model.last_atc, target)
        self._check(self.b.refresh())

    @rule(seconds=st.integers(1, 200))
    def advance_time(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def invariants(self) -> None:
        cred = self.b.refresh()
        assert cred.last_atc >= self.max_last  # last_atc never decreases
        self.max_last = cred.last_atc
        assert 0 <= cred.fail_count <= cred.max_fail
        with self.b.store.transaction() as tx:
            ledger = tx.list_acceptances(self.b.cid)
        atcs = [a.atc for a in ledger]
        assert len(atcs) == len(set(atcs))
        ops = [a.operation_id for a in ledger if a.operation_id]
        assert len(ops) == len(set(ops))


VerifierMachine.TestCase.settings = settings(VerifierMachine.TestCase.settings, stateful_step_count=25)
test_v41_verifier_matches_reference_model = VerifierMachine.TestCase


# -- V42 ----------------------------------------------------------------------------------------------


@given(st.one_of(st.text(max_size=40), st.binary(max_size=20), st.integers(), st.none(), st.floats()))
def test_v42_code_parsing_raises_only_validation_error(value: Any) -> None:
    try:
        parsed = engine.parse_code(value)
    except ValidationError:
        return
    assert isinstance(value, str)
    assert len(value) == 8
    assert all("0" <= c <= "9" for c in value)
    assert parsed.text == value.encode("ascii")


def test_v42_code_examined_up_to_16_characters() -> None:
    class Probe(str):
        def __iter__(self) -> Any:
            raise AssertionError("a long input must be refused before it is scanned")

    with pytest.raises(ValidationError):
        engine.parse_code(Probe("9" * 100_000))


@pytest.fixture(scope="module")
def fuzz_bench() -> Any:
    clock = Clock()
    return make_bench(MemoryStore(clock=clock), clock, profile="barclays")


@given(
    mode=st.sampled_from(["identify", "respond", "sign", "tds", "bogus", ""]),
    reference=st.one_of(st.none(), st.text(max_size=12)),
    amount=st.one_of(st.none(), st.integers(-10, 10**13), st.text(max_size=16), st.floats()),
    currency=st.one_of(st.none(), st.text(max_size=5), st.sampled_from(["EUR", "978", "USD", "XYZ"])),
    payee=st.one_of(st.none(), st.text(max_size=140)),
    fields=st.one_of(st.none(), st.lists(st.text(alphabet="0123456789a ", max_size=12), max_size=12)),
)
def test_v42_operation_inputs_raise_only_validation_error(
    fuzz_bench: Any, mode: str, reference: Any, amount: Any, currency: Any, payee: Any, fields: Any
) -> None:
    with contextlib.suppress(ValidationError, ConfigError):
        fuzz_bench.verifier.issue_operation(
            fuzz_bench.cid,
            mode=mode,
            reference=reference,
            amount=amount,
            currency=currency,
            payee=payee,
            fields=fields,
        )


@given(code=st.text(max_size=20), target=st.text(max_size=70), rid=st.text(max_size=140))
def test_v42_verify_inputs_raise_only_typed_errors(fuzz_bench: Any, code: str, target: str, rid: str) -> None:
    try:
        fuzz_bench.verifier.verify(target, code, request_id=rid)
    except (ValidationError, InvalidCode, TemporaryFailure):
        pass
    except CapsimError as exc:  # pragma: no cover - reported
        raise AssertionError(type(exc)) from exc


def test_v42_size_limits(fuzz_bench: Any) -> None:
    v, cid = fuzz_bench.verifier, fuzz_bench.cid
    with pytest.raises(ValidationError):
        v.issue_operation(cid, mode="sign", reference="123456789", amount=1)
    with pytest.raises(ValidationError):
        v.issue_operation(cid, mode="sign", amount=10**12)
    v.issue_operation(cid, mode="sign", amount=10**12 - 1)
    with pytest.raises(ValidationError):
        v.issue_operation(cid, mode="tds", fields=["1"] * 11)
    with pytest.raises(ValidationError):
        v.issue_operation(cid, mode="tds", fields=["12345678901"])
    v.issue_operation(cid, mode="tds", fields=["1234567890"] * 10)
    with pytest.raises(ValidationError):
        v.issue_operation(cid, mode="sign", amount=1, payee="x" * 129)
    v.issue_operation(cid, mode="sign", amount=1, payee="x" * 128)
    with pytest.raises(ValidationError):
        v.verify(cid, "12345678", request_id="r" * 129)


# -- V43 ----------------------------------------------------------------------------------------------


class _IterationCounter(dict):  # type: ignore[type-arg]
    iterations = 0

    def __iter__(self) -> Any:
        type(self).iterations += 1
        return super().__iter__()

    def values(self) -> Any:
        type(self).iterations += 1
        return super().values()


def _bulk(store: MemoryStore, template: Credential, count: int) -> None:
    with store.transaction() as tx:
        for i in range(count):
            tx.insert_credential(
                dataclasses.replace(
                    template, credential_id=f"cr-bulk{i:08d}", pan_token=f"t{i}", user_id=f"u{i}"
                )
            )


@pytest.mark.parametrize("count", [10, 5000])
def test_v43_store_work_per_verify_independent_of_credential_count(count: int) -> None:
    results = {}
    for n in (10, count):
        clock = Clock()
        store = MemoryStore(clock=clock)
        counting = CountingStore(store)
        b = make_bench(counting, clock)  # type: ignore[arg-type]
        _bulk(store, b.refresh(), n)
        store.credentials = _IterationCounter(store.credentials)
        _IterationCounter.iterations = 0
        counting.calls.clear()
        b.verifier.verify(b.cid, b.identify().code, request_id="scale-ok")
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, "00000000", request_id="scale-bad")
        op = b.verifier.issue_operation(b.cid, mode="respond")
        b.verifier.verify(op.operation_id, b.reader.respond(PIN, op.challenge).code, request_id="scale-op")
        assert _IterationCounter.iterations == 0  # no scan over all credentials
        results[n] = dict(counting.calls)
    assert results[10] == results[count]


def test_v43_store_factory_backends_list_credentials_by_index(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    token = b.refresh().pan_token
    with b.store.transaction() as tx:
        same = tx.list_credentials(pan_token=token)
        mine = tx.list_credentials(user_id="alice")
        none = tx.list_credentials(pan_token="nope")
    assert [c.credential_id for c in same] == [b.cid]
    assert [c.credential_id for c in mine] == [b.cid]
    assert none == []
