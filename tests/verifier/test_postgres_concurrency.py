"""Exactly-once under real concurrency on PostgreSQL (verifier.md V19, V20, V21).

Worker *processes* (spawned, each with its own :class:`Verifier`, its own
:class:`PostgresStore` connection pool and a thread pool) verify codes produced by the real
emulated card and reader. The parent drives rounds over pipes, so several processes hit one
credential row at the same moment.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from capsim.errors import InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier.audit import check_chain
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.postgres import PostgresStore
from capsim.verifier.service import Verifier
from tests.verifier.conftest import Clock, make_bench, make_provider

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install capsim[postgres])")

pytestmark = pytest.mark.postgres


PROCESSES = 4
CONCURRENT = 50
POLICY = VerifierPolicy(lock_timeout_s=30.0)


# ---------------------------------------------------------------------------------------------
# Worker processes


@dataclass
class WorkerState:
    index: int
    verifier: Verifier
    store: PostgresStore
    pool: ThreadPoolExecutor
    extra: dict[str, Any] = field(default_factory=dict)


def _outcome(fn: Callable[[], object]) -> str:
    try:
        fn()
    except InvalidCode:
        return "reject"
    except TemporaryFailure as exc:
        return "deadlock" if "deadlock" in str(exc) else "temporary"
    except ValidationError:
        return "invalid"
    return "accept"


def job_verify_burst(state: WorkerState, payload: tuple[str, str, int, str]) -> dict[str, Any]:
    """``n`` threads verify ``code`` against ``target`` at the same moment."""
    target, code, n, tag = payload
    before = state.verifier.metrics
    barrier = threading.Barrier(n)

    def one(i: int) -> str:
        barrier.wait()
        return _outcome(lambda: state.verifier.verify(target, code, request_id=f"{tag}-{state.index}-{i}"))

    counts = Counter(state.pool.map(one, range(n)))
    after = state.verifier.metrics
    return {
        "counts": counts,
        "evaluation_calls": after.evaluation_calls - before.evaluation_calls,
    }


JOBS: dict[str, Callable[[WorkerState, Any], Any]] = {"verify_burst": job_verify_burst}


def worker_main(index: int, threads: int, conn: multiprocessing.connection.Connection) -> None:
    """A worker process: ``("connect", dsn)`` (re)binds it to a schema; other jobs run in it."""
    state: WorkerState | None = None
    conn.send("ready")

    def disconnect() -> None:
        if state is not None:
            state.pool.shutdown()
            state.store.close()

    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            name, payload = msg
            try:
                if name == "connect":
                    disconnect()
                    store = PostgresStore(payload, pool_size=threads, lock_timeout=30)
                    verifier = Verifier(store, make_provider(), policy=POLICY, node=f"worker-{index}")
                    state = WorkerState(index, verifier, store, ThreadPoolExecutor(threads))
                    conn.send(("ok", None))
                else:
                    assert state is not None
                    conn.send(("ok", JOBS[name](state, payload)))
            except BaseException as exc:
                conn.send(("error", repr(exc)))
    finally:
        disconnect()


class Workers:
    """``PROCESSES`` spawned workers; :meth:`run` sends one job to each and gathers results."""

    def __init__(self, processes: int, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs = []
        for i in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(i, threads, child), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            if not c.poll(120):
                raise RuntimeError("worker did not start")
            assert c.recv() == "ready"

    def connect(self, dsn: str) -> None:
        self.run("connect", [dsn] * len(self.conns))

    def run(self, name: str, payloads: list[Any]) -> list[Any]:
        for c, payload in zip(self.conns, payloads, strict=True):
            c.send((name, payload))
        out = []
        for c in self.conns:
            if not c.poll(300):
                raise RuntimeError("worker timed out")
            status, value = c.recv()
            if status != "ok":
                raise AssertionError(f"worker failed: {value}")
            out.append(value)
        return out

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(None)
        for p in self.procs:
            p.join(30)
            if p.is_alive():  # pragma: no cover
                p.terminate()
                p.join(5)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@pytest.fixture(scope="module")
def worker_pool() -> Iterator[Workers]:
    """Spawned once per module (starting interpreters is the slow part)."""
    w = Workers(PROCESSES, threads=max(_split(CONCURRENT, PROCESSES)))
    yield w
    w.close()


@pytest.fixture
def workers(pg_dsn: str, worker_pool: Workers) -> Workers:
    """The worker processes, bound to this test's fresh schema."""
    worker_pool.connect(pg_dsn)
    return worker_pool


def _ledger_duplicates(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT credential_id, atc, count(*) FROM cap_acceptance GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()


def _deadlocks(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------------------------------
# V19


@pytest.mark.parametrize(
    "rounds",
    [
        pytest.param(int(os.environ.get("CAPSIM_V19_QUICK_ROUNDS", "20")), id="quick"),
        pytest.param(1000, id="1000-rounds", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
    ],
)
def test_V19_one_accept_per_round_across_processes(pg_dsn: str, workers: Workers, rounds: int) -> None:
    """50 concurrent verifications of one valid code from 4 processes: exactly one ACCEPT per round."""
    store = PostgresStore(pg_dsn, lock_timeout=30)
    try:
        bench = make_bench(store, Clock(), policy=POLICY)
        shares = _split(CONCURRENT, PROCESSES)
        accepted_atcs: list[int] = []
        for rnd in range(rounds):
            op = bench.verifier.issue_operation(bench.cid, mode="respond")
            result = bench.reader.respond("1234", op.challenge)
            replies = workers.run(
                "verify_burst", [(op.operation_id, result.code, n, f"r{rnd}") for n in shares]
            )
            counts: Counter[str] = sum((r["counts"] for r in replies), Counter())
            assert counts["accept"] == 1, f"round {rnd}: {dict(counts)}"
            assert counts["accept"] + counts["reject"] + counts["temporary"] == CONCURRENT, dict(counts)
            accepted_atcs.append(result.atc)
        with store.transaction() as tx:
            ledger = tx.list_acceptances(bench.cid)
            cred = tx.get_credential(bench.cid)
        assert [a.atc for a in ledger] == [bench.first.atc, *accepted_atcs]
        assert len({a.operation_id for a in ledger[1:]}) == rounds
        assert cred is not None
        assert cred.last_atc == accepted_atcs[-1]
        assert cred.fail_count == 0
        assert _ledger_duplicates(pg_dsn) == []
        records = list(store.audit_records())
        assert check_chain(records) == ()
        accepts = [r for r in records if r.entry.event == "verify" and r.entry.outcome == "accept"]
        assert len(accepts) == rounds
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# V20


def test_V20_wrong_code_burst_locks_after_max_fail(pg_dsn: str, workers: Workers) -> None:
    """50 concurrent wrong codes vs max_fail 5: fail_count 5, locked, at most 5 evaluations."""
    store = PostgresStore(pg_dsn, lock_timeout=30)
    try:
        bench = make_bench(store, Clock(), policy=POLICY)
        good = bench.identify()
        wrong = good.code[:-1] + str((int(good.code[-1]) + 1) % 10)
        replies = workers.run(
            "verify_burst", [(bench.cid, wrong, n, "wrong") for n in _split(CONCURRENT, PROCESSES)]
        )
        counts: Counter[str] = sum((r["counts"] for r in replies), Counter())
        assert counts == Counter({"reject": CONCURRENT})
        assert sum(r["evaluation_calls"] for r in replies) <= POLICY.max_fail
        cred = bench.refresh()
        assert cred.fail_count == POLICY.max_fail
        assert cred.locked_until is not None
        # the correct code, arriving after the burst, is refused: the lock holds
        with pytest.raises(InvalidCode):
            bench.verifier.verify(bench.cid, good.code, request_id="after-burst")
        assert bench.refresh().last_atc == bench.first.atc
        with store.transaction() as tx:
            assert [a.atc for a in tx.list_acceptances(bench.cid)] == [bench.first.atc]
        reasons = Counter(r.entry.reason for r in store.audit_records() if r.entry.event == "verify")
        assert reasons["wrong-code"] + reasons["wrong-code-locked"] == POLICY.max_fail
        assert reasons["locked"] == CONCURRENT - POLICY.max_fail + 1
    finally:
        store.close()


def test_V20_correct_code_racing_a_wrong_burst(pg_dsn: str, workers: Workers) -> None:
    """A correct code inside the burst is either accepted before the lock or refused after it;
    never both, and the counters stay within bounds."""
    store = PostgresStore(pg_dsn, lock_timeout=30)
    try:
        bench = make_bench(store, Clock(), policy=POLICY)
        good = bench.identify()
        wrong = good.code[:-1] + str((int(good.code[-1]) + 1) % 10)
        shares = _split(CONCURRENT - 1, PROCESSES)
        burst = [(bench.cid, wrong, n, f"wrong{i}") for i, n in enumerate(shares)]
        result: list[str] = []
        racer = threading.Thread(
            target=lambda: result.append(
                _outcome(lambda: bench.verifier.verify(bench.cid, good.code, request_id="racer"))
            )
        )
        racer.start()
        workers.run("verify_burst", burst)
        racer.join()
        cred = bench.refresh()
        assert 0 <= cred.fail_count <= POLICY.max_fail
        with store.transaction() as tx:
            atcs = [a.atc for a in tx.list_acceptances(bench.cid)]
        if result == ["accept"]:
            assert atcs == [bench.first.atc, good.atc]
        else:
            assert result == ["reject"]
            assert atcs == [bench.first.atc]
            assert cred.locked_until is not None
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# V21


def job_stress(state: WorkerState, payload: tuple[int, int, list[str]]) -> dict[str, Any]:
    """Random verify/resync/revoke/unlock/advance_floor steps on the worker's own card, plus
    advance_floor/unlock/lock on every credential (the others' included)."""
    seed, steps, all_cids = payload
    rng = random.Random(seed)
    v = state.verifier
    bench = state.extra["bench"]
    counts: Counter[str] = Counter()
    accepted: list[tuple[str, int]] = []
    old_codes: list[str] = state.extra.setdefault("old_codes", [])
    serial = state.extra.setdefault("serial", [0])
    cid = bench.cid
    enrolled: list[str] = []

    def rid() -> str:
        serial[0] += 1
        return f"w{state.index}-{seed}-{serial[0]}"

    def verify(target: str, code: str, expected_atc: int | None = None) -> None:
        """Verify and note every accept as the service reports it (a re-presented code that was
        refused earlier, e.g. while the card was locked, may legitimately be accepted later)."""
        acc = v.verify(target, code, request_id=rid())
        if expected_atc is not None:
            assert acc.atc == expected_atc
        accepted.append((acc.credential_id, acc.atc))

    for _ in range(steps):
        kind = rng.choices(
            ["verify", "verify_op", "wrong", "replay", "resync", "advance_floor", "unlock", "lock", "revoke"],
            weights=[30, 20, 8, 6, 6, 12, 10, 4, 1],
        )[0]
        if kind == "verify":
            r = bench.identify()
            out = _outcome(lambda r=r, cid=cid: verify(cid, r.code, r.atc))
            old_codes.append(r.code)
        elif kind == "verify_op":
            amount = rng.randrange(1, 10**6)
            try:
                if rng.random() < 0.5:
                    op = v.issue_operation(cid, mode="respond")
                else:
                    op = v.issue_operation(cid, mode="sign", amount=amount, currency="EUR")
            except (InvalidCode, ValidationError, TemporaryFailure) as exc:
                counts[f"issue-{type(exc).__name__}"] += 1
                continue
            if op.mode.value == "respond":
                r = bench.reader.respond("1234", op.challenge)
            else:
                r = bench.reader.sign("1234", op.challenge, amount=amount, currency="EUR")
            out = _outcome(lambda r=r, op=op: verify(op.operation_id, r.code, r.atc))
        elif kind == "wrong":
            out = _outcome(lambda cid=cid: verify(cid, f"{rng.randrange(10**8):08d}"))
        elif kind == "replay" and old_codes:
            out = _outcome(lambda cid=cid: verify(cid, rng.choice(old_codes)))
        elif kind == "resync":
            for _skip in range(rng.randrange(0, 40)):
                bench.identify()
            a, b = bench.identify(), bench.identify()
            out = _outcome(lambda a=a, b=b, cid=cid: v.resync(cid, [a.code, b.code], request_id=rid()))
            if out == "accept":
                accepted.append((cid, b.atc))
        elif kind == "advance_floor":
            target = rng.choice(all_cids)
            cur = v.get_credential(target)
            floor = max(0, (cur.last_atc if cur else 0) + rng.randrange(-3, 4))
            out = _outcome(lambda t=target, f=floor: v.advance_floor(t, f, request_id=rid()))
        elif kind == "unlock":
            out = _outcome(lambda: v.unlock(rng.choice(all_cids)))
        elif kind == "lock":
            out = _outcome(lambda: v.lock(rng.choice(all_cids), seconds=1))
        elif kind == "revoke":
            out = _outcome(lambda cid=cid: v.revoke(cid, reason="stress"))
            if out == "accept":
                # the user gets a replacement card (next PSN) and carries on with it
                psn = f"{int(bench.card.profile.psn) + 1:02d}"
                bench = make_bench(
                    state.store,
                    Clock(),
                    pan=state.extra["pan"],
                    psn=psn,
                    user=bench.credential.user_id,
                    verifier=v,
                )
                state.extra["bench"] = bench
                enrolled.append(bench.cid)
                cid = bench.cid
        else:
            out = "skipped"
        counts[f"{kind}:{out}"] += 1
    return {"counts": counts, "accepted": accepted, "enrolled": enrolled}


def job_enrol(state: WorkerState, payload: tuple[str, str]) -> str:
    pan, user = payload
    bench = make_bench(state.store, Clock(), pan=pan, user=user, verifier=state.verifier)
    state.extra["bench"] = bench
    state.extra["pan"] = pan
    return bench.cid


JOBS["stress"] = job_stress
JOBS["enrol"] = job_enrol


@pytest.mark.parametrize(
    "total",
    [
        pytest.param(int(os.environ.get("CAPSIM_V21_QUICK_OPERATIONS", "800")), id="quick"),
        pytest.param(10_000, id="10000-operations", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
    ],
)
def test_V21_random_interleaving_stress(pg_dsn: str, workers: Workers, total: int) -> None:
    """10,000 random operations from 4 processes: no deadlock, V41 invariants hold."""
    w = workers
    deadlocks_before = _deadlocks(pg_dsn)
    pans = ["5413339000001513", "4761739001010119", "5413339000001521", "4761739001010127"]
    cids = w.run("enrol", [(pans[i], f"user{i}") for i in range(PROCESSES)])
    per_call = 50
    calls = total // (PROCESSES * per_call)
    counts: Counter[str] = Counter()
    accepted: list[tuple[str, int]] = []
    for k in range(calls):
        replies = w.run("stress", [(k * PROCESSES + i, per_call, cids) for i in range(PROCESSES)])
        for r in replies:
            counts.update(r["counts"])
            accepted += r["accepted"]
            cids += r["enrolled"]
    assert sum(counts.values()) == calls * PROCESSES * per_call == total
    for kind in ("verify", "verify_op", "resync", "advance_floor", "unlock"):
        assert counts[f"{kind}:accept"] > 0, counts
    # zero deadlock errors, at the client and at the server
    assert not [k for k in counts if k.endswith(":deadlock")], counts
    assert _deadlocks(pg_dsn) == deadlocks_before
    store = PostgresStore(pg_dsn)
    try:
        records = list(store.audit_records())
        assert check_chain(records) == ()
        with store.transaction() as tx:
            for cid in cids:
                cred = tx.get_credential(cid)
                assert cred is not None
                ledger = [a.atc for a in tx.list_acceptances(cid)]
                # at most one accept per (credential, ATC); accepts strictly increase in commit order
                accepts = [
                    r.entry.atc
                    for r in records
                    if r.entry.credential_id == cid
                    and r.entry.outcome == "accept"
                    and r.entry.event in ("verify", "resync")
                    and r.entry.reason != "repeated-request"
                ]
                # the ledger's first row is the enrolment (activation) code
                assert accepts == ledger[1:]
                assert len(ledger) == len(set(ledger))
                assert all(a is not None and b is not None and a < b for a, b in itertools.pairwise(accepts))
                # last_atc never decreased: it is at least every ATC ever accepted
                assert cred.last_atc >= max(ledger)
                assert 0 <= cred.fail_count <= cred.max_fail
                # no accept after the credential was revoked
                revoked_at = next(
                    (r.seq for r in records if r.entry.credential_id == cid and "revoke" in r.entry.reason),
                    None,
                )
                if revoked_at is not None:
                    assert not [
                        r
                        for r in records
                        if r.seq > revoked_at and r.entry.credential_id == cid and r.entry.outcome == "accept"
                    ]
        assert sorted(accepted) == sorted(
            (a.credential_id, a.atc)
            for cid in cids
            for a in _ledger(store, cid)[1:]
            if a.request_id.startswith("w")
        )
    finally:
        store.close()


def _ledger(store: PostgresStore, cid: str) -> list[Any]:
    with store.transaction() as tx:
        return tx.list_acceptances(cid)
