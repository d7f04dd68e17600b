"""The PostgreSQL store behind PgBouncer in transaction pooling mode (verifier.md §5, "Pooling").

Twelve client connections share three server connections, so a client's consecutive
transactions land on different server sessions. Anything session-level (advisory locks, a
``SET`` outside a transaction, prepared statements on PgBouncer < 1.21) would break here; the
store uses none, and exactly-once, the lock timeout and migrations still hold.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from capsim.errors import InvalidCode, TemporaryFailure
from capsim.verifier import migrate
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.postgres import PostgresStore
from tests.verifier.conftest import Clock, make_bench
from tests.verifier.pgcluster import PgBouncer, PgCluster, find_pgbouncer

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install capsim[postgres])")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        find_pgbouncer() is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
    ),
]

CLIENTS = 12
ROUNDS = 12


@pytest.fixture(scope="module")
def bouncer(pg_cluster: PgCluster) -> Iterator[PgBouncer]:
    name = pg_cluster.create_database()
    b = PgBouncer(pg_cluster, name, server_pool=3)
    b.start()
    yield b
    b.stop()
    pg_cluster.drop_database(name)


def _server_sessions(cluster: PgCluster, dbname: str) -> int:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_migrations_through_pgbouncer_are_applied_once(bouncer: PgBouncer) -> None:
    with psycopg.connect(bouncer.dsn(), autocommit=True, prepare_threshold=None) as conn:
        first = migrate.upgrade(conn)
        assert migrate.upgrade(conn) == ()
        assert migrate.current_version(conn) == migrate.head_version("postgres")
    assert first in ((), tuple(range(1, migrate.head_version("postgres") + 1)))


def test_exactly_once_through_transaction_pooling(bouncer: PgBouncer, pg_cluster: PgCluster) -> None:
    store = PostgresStore(bouncer.dsn(), pool_size=CLIENTS, prepare_threshold=None, lock_timeout=30)
    try:
        bench = make_bench(store, Clock(), policy=VerifierPolicy(lock_timeout_s=30.0))
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _server_sessions(pg_cluster, bouncer.dbname))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for rnd in range(ROUNDS):
                op = bench.verifier.issue_operation(bench.cid, mode="respond")
                code = bench.reader.respond("1234", op.challenge).code
                barrier = threading.Barrier(CLIENTS)
                outcomes: Counter[str] = Counter()
                lock = threading.Lock()

                def attempt(
                    i: int,
                    op_id: str = op.operation_id,
                    code: str = code,
                    rnd: int = rnd,
                    barrier: threading.Barrier = barrier,
                    outcomes: Counter[str] = outcomes,
                    lock: threading.Lock = lock,
                ) -> None:
                    barrier.wait()
                    try:
                        bench.verifier.verify(op_id, code, request_id=f"b{rnd}-{i}")
                        out = "accept"
                    except InvalidCode:
                        out = "reject"
                    except TemporaryFailure:
                        out = "temporary"
                    with lock:
                        outcomes[out] += 1

                threads = [threading.Thread(target=attempt, args=(i,)) for i in range(CLIENTS)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert outcomes["accept"] == 1, f"round {rnd}: {dict(outcomes)}"
        finally:
            stop.set()
            sampler.join()
        # twelve client connections really were multiplexed over at most three server sessions
        assert 1 <= peak[0] <= bouncer.server_pool
        with store.transaction() as tx:
            assert len(tx.list_acceptances(bench.cid)) == ROUNDS + 1
        assert bench.verifier.check_audit() == ()
    finally:
        store.close()


def test_lock_timeout_is_transaction_local_through_pgbouncer(bouncer: PgBouncer) -> None:
    """``SET LOCAL lock_timeout`` travels with the transaction, whatever server session runs it."""
    store = PostgresStore(bouncer.dsn(), pool_size=4, prepare_threshold=None)
    try:
        bench = make_bench(
            store, Clock(), policy=VerifierPolicy(lock_timeout_s=0.3), user="bob", pan="4761739001010119"
        )
        code = bench.identify()
        held = threading.Event()
        release = threading.Event()

        def holder() -> None:
            with store.transaction() as tx:
                tx.lock_credential(bench.cid)
                held.set()
                release.wait(10)

        t = threading.Thread(target=holder)
        t.start()
        try:
            assert held.wait(10)
            with pytest.raises(TemporaryFailure):
                bench.verifier.verify(bench.cid, code.code, request_id="held")
        finally:
            release.set()
            t.join()
        assert bench.verifier.verify(bench.cid, code.code, request_id="held").atc == code.atc
        # the lock timeout did not leak into other transactions' sessions
        with psycopg.connect(bouncer.dsn(), autocommit=True, prepare_threshold=None) as conn:
            assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)
    finally:
        store.close()
