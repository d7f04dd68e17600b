"""Verifier store benchmark: a user's login on SQLite and PostgreSQL, from worker processes.

What it measures
----------------
1. **Throughput and latency** (V44, V45). Each worker *process* opens its own store and
   :class:`~capsim.verifier.service.Verifier`, enrols its own emulated ``secur-acces`` card
   (one user per worker, so workers contend on the audit chain and the server, not on one
   credential row) and then repeats the path a user takes to log in: ``issue_operation``
   (an Identify operation), the code made with the emulated card and the real
   :class:`~capsim.reader.CapReader`, and ``verify`` of that code against the operation.
   The codes are made **before** the timed section (the reader's cost is in
   docs/performance.md, Reader); the timed section is ``issue_operation`` + ``verify``. A few
   warm-up logins per worker run before it (connections opened, statements prepared).
   Reported: verifications/s over all workers (one verification per login; wall clock from
   the first worker's start to the last one's end), p50/p95/p99 of ``verify`` and p50/p99 of
   the whole login. The in-memory store runs the same workload as the baseline, one private
   store per worker process (nothing shared: the service path without storage); ratios are
   against it at the same number of processes, in the same run.
2. **Statements and round trips per verify path** (PostgreSQL). One store and one verifier in
   this process; each path runs several times on one pooled connection and the last run is
   reported (steady state: psycopg has prepared the statements by then; the first run of a
   statement that becomes prepared costs one more round trip, shown as "max"). Counted
   through the driver: the store's statement hook gives each connection the store uses, and
   libpq's protocol trace (``PGconn.trace``) of that connection gives the statements the
   server completed (``CommandComplete`` and ``ErrorResponse`` messages) and the round trips
   (each switch from client messages to server messages is one wait for the server, so a
   psycopg pipeline batch counts as one). "execute calls" counts the hook's calls.

Usage::

    .venv/bin/python benchmarks/verifier_stores.py [--quick] [--processes 1,2]
        [--per-worker N] [--stores memory,sqlite,postgres] [--part all|throughput|statements]
        [--pg-dsn DSN]

Default processes: 1 and 2, and 4 where ``os.cpu_count() >= 4``. Without ``--pg-dsn`` a
throwaway PostgreSQL cluster is started from the Debian binaries as the tests do
(tests/verifier/pgcluster.py: unix socket only, ``fsync=off``, ``synchronous_commit=off``),
one fresh schema per measurement, and stopped at the end. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure the tree this script belongs to

from benchmarks._machine import loadavg, luhn_pan, machine_line  # noqa: E402
from capsim.cards import new_card  # noqa: E402
from capsim.errors import InvalidCode  # noqa: E402
from capsim.reader import CapReader  # noqa: E402
from capsim.transports.inprocess import InProcessTransport  # noqa: E402
from capsim.verifier.memory import MemoryStore  # noqa: E402
from capsim.verifier.policy import VerifierPolicy  # noqa: E402
from capsim.verifier.provider import SoftwareProvider  # noqa: E402
from capsim.verifier.service import Verifier  # noqa: E402
from capsim.verifier.sqlite import SqliteStore  # noqa: E402
from capsim.verifier.store import Store  # noqa: E402

IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IMK_SMI = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
IMK_SMC = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
PIN = "1234"
POLICY = VerifierPolicy(lock_timeout_s=30.0)
WAIT_S = 600.0  # longest wait for a worker (setup or results)


# ------------------------------------------------------------------------------------------------
# Machine and run description


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of ``values``, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


# ------------------------------------------------------------------------------------------------
# Stores, verifiers, cards


def open_store(kind: str, where: str, *, pool_size: int = 2) -> Store:
    if kind == "memory":
        return MemoryStore(lock_timeout=30)
    if kind == "sqlite":
        return SqliteStore(where, lock_timeout=30)
    from capsim.verifier.postgres import PostgresStore

    return PostgresStore(where, pool_size=pool_size, lock_timeout=30)


def new_verifier(store: Store) -> Verifier:
    provider = SoftwareProvider()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    return Verifier(store, provider, policy=POLICY)


def enrol(verifier: Verifier, index: int) -> tuple[str, CapReader]:
    """One user with one ``secur-acces`` card; returns the credential id and the card's reader."""
    card = new_card(
        "secur-acces", pan=luhn_pan(f"541333{index:09d}"), pin=PIN,
        imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC,
    )  # fmt: skip
    reader = CapReader(InProcessTransport(card))
    user = f"user{index}"
    verifier.add_user(user)
    activation = verifier.issue_activation_code(user)
    cred = verifier.enroll_card(
        activation.code, card.profile, issuer_key_id="bank", first_code=reader.identify(PIN).code
    )
    return cred.credential_id, reader


# ------------------------------------------------------------------------------------------------
# Part 1: throughput and latency from worker processes


@dataclass(frozen=True)
class WorkerSpec:
    kind: str
    where: str
    index: int
    logins: int
    warmup: int


@dataclass
class WorkerResult:
    index: int
    start: float = 0.0
    end: float = 0.0
    verify: list[float] = field(default_factory=list)
    login: list[float] = field(default_factory=list)
    error: str = ""


def worker_main(spec: WorkerSpec, barrier: Any, results: Any) -> None:
    """One worker process: set up, wait for the others, run the timed logins, report."""
    out = WorkerResult(spec.index)
    store: Store | None = None
    try:
        store = open_store(spec.kind, spec.where)
        verifier = new_verifier(store)
        cid, reader = enrol(verifier, spec.index)
        # the codes are made before the timed section (Identify codes take no challenge)
        codes = [reader.identify(PIN).code for _ in range(spec.warmup + spec.logins)]
        for n, code in enumerate(codes[: spec.warmup]):
            op = verifier.issue_operation(cid, mode="identify")
            verifier.verify(op.operation_id, code, request_id=f"w{spec.index}-warm-{n}")
        barrier.wait(WAIT_S)
        clock = time.perf_counter
        out.start = clock()
        for n, code in enumerate(codes[spec.warmup :]):
            t0 = clock()
            op = verifier.issue_operation(cid, mode="identify")
            t1 = clock()
            verifier.verify(op.operation_id, code, request_id=f"w{spec.index}-{n}")
            t2 = clock()
            out.verify.append(t2 - t1)
            out.login.append(t2 - t0)
        out.end = clock()
    except BaseException as exc:  # reported to the parent, which fails the run
        out.error = f"{type(exc).__name__}: {exc}"
        barrier.abort()
    finally:
        if store is not None:
            store.close()
    results.put(dataclasses.asdict(out))  # plain data: the class lives in the child's __mp_main__


@dataclass
class LevelResult:
    store: str
    processes: int
    verifications: int
    seconds: float
    verify: list[float]
    login: list[float]
    load: str

    @property
    def rate(self) -> float:
        return self.verifications / self.seconds


def run_level(kind: str, where: str, processes: int, logins: int, warmup: int) -> LevelResult:
    """``processes`` spawned workers on one store; returns the merged figures."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker_main,
            args=(WorkerSpec(kind, where, i, logins, warmup), barrier, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    got: list[WorkerResult] = []
    try:
        for _ in procs:
            got.append(WorkerResult(**results.get(timeout=WAIT_S)))
    except queue.Empty:
        raise SystemExit(f"{kind} x{processes}: a worker did not report within {WAIT_S:.0f} s") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [r.error for r in got if r.error]
    if errors:
        raise SystemExit(f"{kind} x{processes}: worker failed: {errors[0]}")
    verify = [x for r in got for x in r.verify]
    login = [x for r in got for x in r.login]
    seconds = max(r.end for r in got) - min(r.start for r in got)
    return LevelResult(kind, processes, len(verify), seconds, verify, login, loadavg())


def print_throughput(results: list[LevelResult], logins: int, warmup: int) -> None:
    base = {r.processes: r for r in results if r.store == "memory"}
    print(
        "\n| store | processes | verifications | verif/s | verify p50 ms | verify p95 ms | verify p99 ms"
        " | login p50 ms | login p99 ms | vs memory | load 1/5/15 after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.rate / base[r.processes].rate:.2f}" if r.processes in base else "-"
        print(
            f"| {r.store} | {r.processes} | {r.verifications} | {r.rate:,.0f} | {pct(r.verify, 0.50):.2f}"
            f" | {pct(r.verify, 0.95):.2f} | {pct(r.verify, 0.99):.2f} | {pct(r.login, 0.50):.2f}"
            f" | {pct(r.login, 0.99):.2f} | {ratio} | {r.load} |"
        )
    print(
        f"\nEach worker process: {warmup} untimed warm-up logins, then {logins} timed logins"
        " (issue_operation identify + verify of a code made ahead with the emulated card and reader)."
        "\nverif/s: timed logins of all workers / wall time (first start to last end); one"
        " verification per login. verify: Verifier.verify alone; login: issue_operation + verify."
        "\nvs memory: verif/s over the in-memory store's at the same number of processes, same run"
        " (memory: one private store per process, nothing shared)."
    )


# ------------------------------------------------------------------------------------------------
# Part 2: statements and round trips per verify path (PostgreSQL)


@dataclass(frozen=True)
class Count:
    calls: int  # statement-hook calls (one per execute, COMMIT included)
    statements: int  # statements the server completed (CommandComplete / ErrorResponse)
    round_trips: int  # switches from client to server messages in the protocol trace


class TraceCounter:
    """Counts the store's statements and round trips between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.active = False
        self.calls = 0
        self._traced: list[tuple[Any, int, str]] = []
        self._seen: set[int] = set()

    def hook(self, when: str, sql: str, conn: Any) -> None:
        del sql
        if not self.active or when != "before":
            return
        self.calls += 1
        if id(conn) not in self._seen:
            from psycopg import pq

            self._seen.add(id(conn))
            fd, path = tempfile.mkstemp(prefix="capsim-pqtrace-")
            conn.pgconn.trace(fd)
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            self._traced.append((conn, fd, path))

    def start(self) -> None:
        self.active, self.calls = True, 0
        self._traced, self._seen = [], set()

    def stop(self) -> Count:
        self.active = False
        statements = round_trips = 0
        for conn, fd, path in self._traced:
            conn.pgconn.untrace()  # flushes the trace stream
            os.close(fd)
            try:
                lines = Path(path).read_text(errors="replace").splitlines()
            finally:
                os.unlink(path)
            prev = ""
            for line in lines:
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                side, msg = parts[0], parts[2].strip()
                if side == "B" and msg in ("CommandComplete", "ErrorResponse"):
                    statements += 1
                if side == "B" and prev == "F":
                    round_trips += 1
                prev = side
        return Count(self.calls, statements, round_trips)


def _hook_attribute(store: Any) -> str | None:
    for name in ("fault_hook", "statement_hook"):
        if hasattr(store, name):
            return name
    return None


def count_statements(dsn: str, reps: int) -> list[tuple[str, Count, Count]] | str:
    """Per path: (name, last run, per-field max over the runs); or why nothing was counted."""
    store = open_store("postgres", dsn, pool_size=1)
    try:
        attr = _hook_attribute(store)
        if attr is None:
            return "not counted: the PostgreSQL store has no statement hook"
        counter = TraceCounter()
        setattr(store, attr, counter.hook)
        verifier = new_verifier(store)
        cid, reader = enrol(verifier, 900)
        unknown_op, unknown_cred = "op-" + "0" * 16, "cr-" + "0" * 16
        seq = [0]

        def rid() -> str:
            seq[0] += 1
            return f"count-{seq[0]}"

        def wrong(code: str) -> str:
            # flip the lowest AC bit of a real code (secur-acces: the lowest code bit is the IAD
            # bit, the AC's 20 bits are above it): its ATC and IAD bits still find a candidate
            return f"{int(code) ^ 2:0{len(code)}d}"

        # a real code whose ATC is next in the window but never verified: wrong codes made from
        # it find a candidate; wrong codes move nothing, so it stays next until an accept
        pending = [""]

        def next_real() -> str:
            if not pending[0]:
                pending[0] = reader.identify(PIN).code
            return pending[0]

        def accepted_code() -> str:
            code = next_real()
            pending[0] = ""
            return code

        def op_accept() -> Callable[[], object]:
            op, code = verifier.issue_operation(cid, mode="identify"), accepted_code()
            return lambda: verifier.verify(op.operation_id, code, request_id=rid())

        def op_wrong() -> Callable[[], object]:
            verifier.unlock(cid)  # keep the failure counter below max_fail (uncounted)
            op, code = verifier.issue_operation(cid, mode="identify"), wrong(next_real())
            return lambda: verifier.verify(op.operation_id, code, request_id=rid())

        def op_unknown() -> Callable[[], object]:
            return lambda: verifier.verify(unknown_op, wrong(next_real()), request_id=rid())

        def cred_accept() -> Callable[[], object]:
            code = accepted_code()
            return lambda: verifier.verify(cid, code, request_id=rid())

        def cred_wrong() -> Callable[[], object]:
            verifier.unlock(cid)
            code = wrong(next_real())
            return lambda: verifier.verify(cid, code, request_id=rid())

        def cred_unknown() -> Callable[[], object]:
            return lambda: verifier.verify(unknown_cred, wrong(next_real()), request_id=rid())

        issued: list[str] = []

        def issue() -> Callable[[], object]:
            if issued:  # consume the previous one (uncounted), so that nothing is superseded
                verifier.verify(issued.pop(), accepted_code(), request_id=rid())
            return lambda: issued.append(verifier.issue_operation(cid, mode="identify").operation_id)

        def measure(name: str, fn: Callable[[], object], reject: bool) -> Count:
            counter.start()
            rejected = False
            try:
                fn()
            except InvalidCode:
                rejected = True
            finally:
                count = counter.stop()
            if rejected != reject:
                raise SystemExit(f"statement count: {name} was {'rejected' if rejected else 'accepted'}")
            return count

        paths: list[tuple[str, Callable[[], Callable[[], object]], bool]] = [
            ("issue_operation (identify)", issue, False),
            ("verify operation: accept", op_accept, False),
            ("verify operation: wrong code", op_wrong, True),
            ("verify operation: unknown operation id", op_unknown, True),
            ("verify credential (Identify login): accept", cred_accept, False),
            ("verify credential: wrong code", cred_wrong, True),
            ("verify credential: unknown credential id", cred_unknown, True),
        ]
        out: list[tuple[str, Count, Count]] = []
        for name, prepare, reject in paths:
            runs = [measure(name, prepare(), reject) for _ in range(reps)]
            top = Count(*(max(getattr(c, f) for c in runs) for f in ("calls", "statements", "round_trips")))
            out.append((name, runs[-1], top))
        return out
    finally:
        store.close()


def print_counts(counts: list[tuple[str, Count, Count]] | str, reps: int) -> None:
    print("\nPostgreSQL statements and round trips per call (counted through the driver):")
    if isinstance(counts, str):
        print(counts)
        return
    print("\n| path | statements | round trips | execute calls | max statements | max round trips |")
    print("|---|---|---|---|---|---|")
    for name, last, top in counts:
        print(
            f"| {name} | {last.statements} | {last.round_trips} | {last.calls} | {top.statements}"
            f" | {top.round_trips} |"
        )
    print(
        f"\nEach path ran {reps} times on one connection; the first three columns are its last run"
        " (statements prepared), the max columns the most over all runs. statements: server"
        " CommandComplete/ErrorResponse messages; round trips: client-to-server turns in libpq's"
        " protocol trace; execute calls: calls of the store's statement hook."
    )


# ------------------------------------------------------------------------------------------------


@contextmanager
def postgres_dsn(given: str | None, wanted: bool) -> Iterator[Callable[[], str]]:
    """A function returning a DSN to a fresh, migrated schema for each measurement."""
    if not wanted:
        yield lambda: ""
        return
    if given:
        yield lambda: given
        return
    from tests.verifier.pgcluster import PgCluster

    with PgCluster.running() as cluster:
        yield lambda: cluster.create_schema(migrated=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cpus = os.cpu_count() or 1
    ap.add_argument("--processes", default="1,2,4" if cpus >= 4 else "1,2", help="worker process counts")
    ap.add_argument(
        "--per-worker", type=int, default=0, help="timed logins per worker (default 400; quick 8)"
    )
    ap.add_argument("--stores", default="memory,sqlite,postgres")
    ap.add_argument("--part", choices=["all", "throughput", "statements"], default="all")
    ap.add_argument("--quick", action="store_true", help="few logins and repetitions (for the tests)")
    ap.add_argument("--pg-dsn", default=None, help="an existing server (default: a throwaway cluster)")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.processes.split(",")]
    stores = args.stores.split(",")
    unknown = set(stores) - {"memory", "sqlite", "postgres"}
    if unknown:
        ap.error(f"unknown store {sorted(unknown)[0]!r}")
    logins = args.per_worker or (8 if args.quick else 400)
    warmup = 3 if args.quick else 10
    reps = 7 if args.quick else 10

    print(f"capsim verifier store benchmark: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"start: {machine_line()}", flush=True)
    results: list[LevelResult] = []
    counts: list[tuple[str, Count, Count]] | str | None = None
    with tempfile.TemporaryDirectory() as tmp, postgres_dsn(args.pg_dsn, "postgres" in stores) as new_pg:
        if args.part in ("all", "throughput"):
            for level in levels:
                for kind in stores:
                    where = ""
                    if kind == "sqlite":  # one file, migrated once, before the workers open it
                        where = str(Path(tmp) / f"v{level}.db")
                        open_store(kind, where).close()
                    elif kind == "postgres":
                        where = new_pg()
                    results.append(run_level(kind, where, level, logins, warmup))
                    print(f"  {kind} x{level} done (load {loadavg()})", flush=True)
        if "postgres" in stores and args.part in ("all", "statements"):
            counts = count_statements(new_pg(), reps)
    if results:
        print_throughput(results, logins, warmup)
    if counts is not None:
        print_counts(counts, reps)
    print(f"\nend: load average {loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
