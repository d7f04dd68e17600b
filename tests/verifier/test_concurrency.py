"""Exactly-once, lockout under bursts, timeouts, faults and idempotency (verifier.md V19–V26).

These run on every backend of ``store_factory`` with threads (the in-memory store must pass
the same threaded conformance tests as PostgreSQL, V26). The multi-process PostgreSQL runs of
V19–V23 live with the PostgreSQL store's tests.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import CapsimError, InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import Acceptance, CredentialState
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import AcFunction, SoftwareProvider
from capsim.verifier.service import Verifier
from capsim.verifier.store import Store, StoreTransaction
from tests.verifier.conftest import IMK_AC, IMK_SMC, IMK_SMI, Clock, StoreFactory, make_bench
from tests.verifier.helpers import new_op

BURST = 50


def _run_threads(n: int, target: Any) -> list[Any]:
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def wrap(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_v26_threaded_same_code_exactly_one_accept(store_factory: StoreFactory, clock: Clock) -> None:
    """V19's property on every backend, with threads: one valid code, 50 racers, one ACCEPT."""
    b = make_bench(store_factory(clock), clock)
    for round_ in range(3):
        r = b.identify()
        results = _run_threads(
            BURST, lambda i, r=r, n=round_: b.verifier.verify(b.cid, r.code, request_id=f"r{n}-{i}")
        )
        accepts = [x for x in results if isinstance(x, Acceptance)]
        assert len(accepts) == 1
        assert all(isinstance(x, Acceptance | InvalidCode | TemporaryFailure) for x in results)
        assert accepts[0].atc == r.atc
        b.verifier.unlock(b.cid)
    with b.store.transaction() as tx:
        ledger = tx.list_acceptances(b.cid)
    atcs = [a.atc for a in ledger]
    assert len(atcs) == len(set(atcs))


def test_v26_threaded_operation_accepted_once(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "respond")
    r = b.reader.respond("1234", op.challenge)
    results = _run_threads(20, lambda i: b.verifier.verify(op.operation_id, r.code, request_id=f"op-{i}"))
    assert sum(isinstance(x, Acceptance) for x in results) == 1


def test_v20_burst_of_wrong_codes_locks_after_max_fail(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(escalate_after=99))
    before = b.verifier.metrics.evaluation_calls
    results = _run_threads(
        BURST, lambda i: b.verifier.verify(b.cid, f"{10000000 + i:08d}", request_id=f"w{i}")
    )
    assert all(isinstance(x, InvalidCode | TemporaryFailure) for x in results)
    cred = b.refresh()
    assert cred.fail_count == 5
    assert cred.locked_until is not None
    assert b.verifier.metrics.evaluation_calls - before <= 5
    with pytest.raises(InvalidCode):  # a correct code after the burst fails
        b.verifier.verify(b.cid, b.identify().code, request_id="late-correct")


def test_v21_random_interleaving_keeps_invariants(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(atc_window=64, max_atc_gap=64))
    codes = [b.identify() for _ in range(60)]
    accepted: list[Acceptance] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(25):
            action = rng.choice(["verify", "verify", "wrong", "floor", "unlock", "resync"])
            try:
                if action == "verify":
                    c = rng.choice(codes)
                    acc = b.verifier.verify(b.cid, c.code, request_id=f"s{seed}-{n}")
                    with lock:
                        accepted.append(acc)
                elif action == "wrong":
                    b.verifier.verify(b.cid, f"{rng.randrange(10**8):08d}", request_id=f"s{seed}-{n}")
                elif action == "floor":
                    b.verifier.advance_floor(b.cid, rng.randrange(0, 30))
                elif action == "unlock":
                    b.verifier.unlock(b.cid)
                else:
                    i = rng.randrange(len(codes) - 1)
                    b.verifier.resync(b.cid, [codes[i].code, codes[i + 1].code], request_id=f"s{seed}-{n}")
            except (InvalidCode, TemporaryFailure):
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    _run_threads(4, worker)
    assert errors == []
    atcs = [a.atc for a in accepted]
    assert len(atcs) == len(set(atcs))
    cred = b.refresh()
    assert 0 <= cred.fail_count <= cred.max_fail
    assert cred.last_atc >= max(atcs, default=-1)


def test_v22_lock_timeout_is_temporary_failure_without_side_effects(
    store_factory: StoreFactory, clock: Clock
) -> None:
    store = store_factory(clock)
    b = make_bench(store, clock)
    quick = Verifier(store, b.provider, policy=VerifierPolicy(lock_timeout_s=0.2))
    r = b.identify()
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.transaction() as tx:
            tx.lock_credential(b.cid)
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    try:
        with pytest.raises(TemporaryFailure):
            quick.verify(b.cid, r.code, request_id="blocked")
    finally:
        release.set()
        t.join()
    cred = b.refresh()
    assert cred.fail_count == 0
    assert cred.last_atc == b.first.atc
    if store_factory.backend == "postgres":  # row locks: the separate audit transaction got through
        last = list(store.audit_records())[-1].entry
        assert (last.outcome, last.reason, last.request_id) == ("temporary", "temporary-failure", "blocked")
    # nothing was recorded for the request: a retry decides normally
    assert quick.verify(b.cid, r.code, request_id="blocked").atc == r.atc


# -- V23: faults on the accept path ---------------------------------------------------------------


class FaultyStore:
    """Raises ``exc`` at the n-th transaction call (before or after it runs), or at commit."""

    def __init__(self, inner: Store, *, fail_at: int, after: bool, at_commit: str | None = None) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.after = after
        self.at_commit = at_commit  # None, "before" (rolled back) or "after" (committed, outcome unknown)
        self.armed = False
        self.count = 0

    def transaction(self, *, lock_timeout: float | None = None) -> AbstractContextManager[StoreTransaction]:
        return self._tx(lock_timeout)

    @contextmanager
    def _tx(self, lock_timeout: float | None) -> Iterator[StoreTransaction]:
        armed = self.armed
        with self.inner.transaction(lock_timeout=lock_timeout) as tx:
            yield _FaultyTx(tx, self) if armed else tx  # type: ignore[misc]
            if armed and self.at_commit == "before":
                raise ConnectionError("connection lost before COMMIT")
        if armed and self.at_commit == "after":
            raise TemporaryFailure("commit outcome unknown")

    def audit_records(self, *, after_seq: int = 0) -> Any:
        return self.inner.audit_records(after_seq=after_seq)

    def close(self) -> None:
        self.inner.close()


class _FaultyTx:
    def __init__(self, tx: StoreTransaction, owner: FaultyStore) -> None:
        self._tx = tx
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._tx, name)
        if name == "now":
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            o = self._owner
            o.count += 1
            if o.at_commit is None and o.count == o.fail_at and not o.after:
                raise ConnectionError(f"connection lost before {name}")
            result = target(*args, **kwargs)
            if o.at_commit is None and o.count == o.fail_at and o.after:
                raise ConnectionError(f"connection lost after {name}")
            return result

        return call


def _snapshot(store: Store, cid: str) -> tuple[Any, ...]:
    with store.transaction() as tx:
        cred = tx.get_credential(cid)
        ledger = tuple(tx.list_acceptances(cid))
    audit = len(list(store.audit_records()))
    assert cred is not None
    return cred.last_atc, cred.fail_count, cred.version, ledger, audit


ACCEPT_PATH_CALLS = 12


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("fail_at", range(1, ACCEPT_PATH_CALLS + 1))
def test_v23_fault_on_accept_path_is_all_or_nothing(
    memory_factory: StoreFactory, clock: Clock, fail_at: int, after: bool
) -> None:
    faulty = FaultyStore(memory_factory(clock), fail_at=fail_at, after=after)
    b = make_bench(faulty, clock)  # type: ignore[arg-type]
    op = new_op(b, "respond")
    r = b.reader.respond("1234", op.challenge)
    before = _snapshot(faulty.inner, b.cid)
    faulty.armed = True
    try:
        acc = b.verifier.verify(op.operation_id, r.code, request_id="fault-1")
    except TemporaryFailure:
        acc = None
    faulty.armed = False
    after_state = _snapshot(faulty.inner, b.cid)
    if acc is None:
        assert after_state[:4] == before[:4]  # fully rolled back (only a best-effort audit added)
        stored = b.verifier.get_operation(op.operation_id)
        assert stored is not None
        assert stored.consumed_at is None
        assert b.verifier.verify(op.operation_id, r.code, request_id="fault-1").atc == r.atc
    else:  # the fault came after the last statement: everything committed together
        assert after_state[0] == r.atc
        assert len(after_state[3]) == len(before[3]) + 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_v23_commit_fault_and_retry_with_same_request_id(
    memory_factory: StoreFactory, clock: Clock, where: str
) -> None:
    faulty = FaultyStore(memory_factory(clock), fail_at=0, after=False, at_commit=where)
    b = make_bench(faulty, clock)  # type: ignore[arg-type]
    r = b.identify()
    before = _snapshot(faulty.inner, b.cid)
    faulty.armed = True
    with pytest.raises(TemporaryFailure):
        b.verifier.verify(b.cid, r.code, request_id="commit-1")
    faulty.armed = False
    now = _snapshot(faulty.inner, b.cid)
    if where == "before":
        assert now[:4] == before[:4]
    else:
        assert now[0] == r.atc
        assert len(now[3]) == len(before[3]) + 1
    acc = b.verifier.verify(b.cid, r.code, request_id="commit-1")  # the recorded (or a fresh) outcome
    assert acc.atc == r.atc
    assert _snapshot(faulty.inner, b.cid)[3][-1].request_id == "commit-1"


# -- V24, V25 ---------------------------------------------------------------------------------------


def test_v24_repeated_request_id_returns_identical_result(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    r = b.identify()
    first = b.verifier.verify(b.cid, r.code, request_id="same")
    cred = b.refresh()
    again = b.verifier.verify(b.cid, r.code, request_id="same")
    assert again == first
    assert b.refresh() == cred
    with pytest.raises(InvalidCode):  # the same code under a new request id is a replay
        b.verifier.verify(b.cid, r.code, request_id="other")
    # a rejected request repeats as a reject and counts nothing more
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "00000000", request_id="bad")
    fails = b.refresh().fail_count
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "00000000", request_id="bad")
    assert b.refresh().fail_count == fails


class BrokenProvider(SoftwareProvider):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc
        self.broken = False

    def ac_function(self, key_ref: str, **kwargs: Any) -> AcFunction:
        if self.broken:
            raise self.exc
        return super().ac_function(key_ref, **kwargs)


@pytest.mark.parametrize(
    "exc", [RuntimeError("hsm down"), OSError("socket"), KeyError("slot"), MemoryError()]
)
def test_v25_provider_failure_fails_closed(
    memory_factory: StoreFactory, clock: Clock, exc: BaseException
) -> None:
    provider = BrokenProvider(exc)
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    b = make_bench(memory_factory(clock), clock, provider=provider)
    r = b.identify()
    provider.broken = True
    with pytest.raises(TemporaryFailure):
        b.verifier.verify(b.cid, r.code, request_id="p1")
    assert b.refresh().fail_count == 0
    provider.broken = False
    assert b.verifier.verify(b.cid, r.code, request_id="p1").atc == r.atc


class ChaosStore:
    """Raises a random exception type at a random transaction call."""

    def __init__(self, inner: Store, rng: random.Random, exc: BaseException) -> None:
        self.inner = inner
        self.rng = rng
        self.exc = exc
        self.armed = False

    def transaction(self, *, lock_timeout: float | None = None) -> AbstractContextManager[StoreTransaction]:
        return self._tx(lock_timeout)

    @contextmanager
    def _tx(self, lock_timeout: float | None) -> Iterator[StoreTransaction]:
        with self.inner.transaction(lock_timeout=lock_timeout) as tx:
            yield _ChaosTx(tx, self) if self.armed else tx  # type: ignore[misc]

    def audit_records(self, *, after_seq: int = 0) -> Any:
        return self.inner.audit_records(after_seq=after_seq)

    def close(self) -> None:
        self.inner.close()


class _ChaosTx:
    def __init__(self, tx: StoreTransaction, owner: ChaosStore) -> None:
        self._tx = tx
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._tx, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._owner.rng.random() < 0.3:
                raise self._owner.exc
            return target(*args, **kwargs)

        return call


@given(
    seed=st.integers(0, 2**32),
    exc=st.sampled_from(
        [RuntimeError("x"), ConnectionError("x"), ValueError("x"), TimeoutError("x"), KeyError("x")]
    ),
    correct=st.booleans(),
)
def test_v25_any_storage_exception_is_non_accept_and_typed(
    seed: int, exc: BaseException, correct: bool
) -> None:
    clock = Clock()
    chaos = ChaosStore(MemoryStore(clock=clock), random.Random(seed), exc)
    b = make_bench(chaos, clock)  # type: ignore[arg-type]
    code = b.identify().code if correct else "12345678"
    before = _snapshot(chaos.inner, b.cid)
    chaos.armed = True
    try:
        outcome: object = b.verifier.verify(b.cid, code, request_id="chaos")
    except CapsimError as err:
        outcome = err
    assert isinstance(outcome, Acceptance | InvalidCode | TemporaryFailure | ValidationError)
    chaos.armed = False
    if isinstance(outcome, TemporaryFailure):
        assert _snapshot(chaos.inner, b.cid)[:4] == before[:4]
    if isinstance(outcome, Acceptance):
        assert correct


def test_v26_lifecycle_states_hold_under_threads(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    codes = [b.identify() for _ in range(8)]

    def work(i: int) -> object:
        if i == 0:
            return b.verifier.revoke(b.cid)
        return b.verifier.verify(b.cid, codes[i % len(codes)].code, request_id=f"lc-{i}")

    results = _run_threads(16, work)
    assert b.refresh().state is CredentialState.REVOKED
    assert not any(
        isinstance(x, BaseException) and not isinstance(x, InvalidCode | TemporaryFailure) for x in results
    )


class _StaleTx:
    """Every compare-and-swap update touches no row (as after a concurrent change)."""

    def __init__(self, tx: StoreTransaction) -> None:
        self._tx = tx

    def __getattr__(self, name: str) -> Any:
        if name in ("update_credential", "update_operation"):
            return lambda *args, **kwargs: 0
        if name == "write_verification":  # its compare-and-swaps touch no row either
            return lambda changes, audit: (False, self._tx.append_audit(audit))
        return getattr(self._tx, name)


class StaleStore(ChaosStore):
    @contextmanager
    def _tx(self, lock_timeout: float | None) -> Iterator[StoreTransaction]:
        with self.inner.transaction(lock_timeout=lock_timeout) as tx:
            yield _StaleTx(tx) if self.armed else tx  # type: ignore[misc]


def test_v25_write_touching_no_row_rolls_back_and_never_escapes_untyped(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    stale = StaleStore(memory_factory(clock), random.Random(0), RuntimeError("unused"))
    b = make_bench(stale, clock)  # type: ignore[arg-type]
    r = b.identify()
    before = _snapshot(stale.inner, b.cid)
    stale.armed = True
    with pytest.raises(InvalidCode):  # verify: the uniform reject
        b.verifier.verify(b.cid, r.code, request_id="stale-1")
    with pytest.raises(TemporaryFailure):  # administration: retry later
        b.verifier.revoke(b.cid)
    with pytest.raises(TemporaryFailure):
        b.verifier.advance_floor(b.cid, 60)
    stale.armed = False
    assert _snapshot(stale.inner, b.cid)[:4] == before[:4]
    assert b.verifier.verify(b.cid, r.code, request_id="stale-2").atc == r.atc
