"""PostgreSQL store: Store protocol semantics against a real server (throwaway cluster).

* V26: the same differential programs as the SQLite store, against the memory reference.
* V22 at the store level: a credential row lock not granted within ``lock_timeout`` is
  SQLSTATE 55P03 and becomes ``TemporaryFailure``; nothing is written.
* Lost connections (the backend killed with ``pg_terminate_backend``) roll back and the pool
  recovers; a connection lost during COMMIT is an unknown outcome (``TemporaryFailure``).
* Concurrency: compare-and-swap winners, lock ordering without deadlocks, the audit chain.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given

from capsim.errors import TemporaryFailure, ValidationError
from capsim.verifier.audit import AuditEntry, check_chain
from capsim.verifier.dburl import open_store
from capsim.verifier.model import Acceptance, OperationMode
from capsim.verifier.postgres import PostgresStore
from capsim.verifier.store import Store
from tests.verifier.pgcluster import PgCluster
from tests.verifier.test_sqlite_store import (
    T0,
    TxPlan,
    cert_programs,
    make_credential,
    programs,
    run_differential,
)

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install capsim[postgres])")

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_dsn, clock=lambda: T0, lock_timeout=0.3)
    yield s
    s.close()


def _kill(admin_dsn: str, pid: int) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # wait until the server has really ended it
    for _ in range(200):
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.01)


class _KeepOpen:
    """A store whose ``close`` is a no-op, so the differential examples share one pool."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.transaction = store.transaction
        self.audit_records = store.audit_records

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def diff_store(pg_cluster: PgCluster) -> Iterator[tuple[_KeepOpen, psycopg.Connection[Any]]]:
    dsn = pg_cluster.create_schema(migrated=True)
    store = PostgresStore(dsn, clock=lambda: T0, pool_size=2, migrate=False)
    admin = psycopg.connect(dsn, autocommit=True)
    yield _KeepOpen(store), admin
    admin.close()
    store.close()
    pg_cluster.drop_schema(dsn)


def _reset(admin: psycopg.Connection[Any]) -> None:
    with admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")  # skip the append-only guard
        for table in (
            "cap_credential", "cap_operation", "cap_acceptance", "cap_request", "cap_audit",
            "cap_setting", "cap_customer", "cap_user", "cap_activation", "cap_org", "cap_org_user",
            "cap_cert", "cap_cert_challenge",
        ):  # fmt: skip
            admin.execute(f"DELETE FROM {table}".encode())
        admin.execute("UPDATE cap_audit_head SET seq = 0, record_hash = %s", (bytes(32),))


@given(program=programs)
def test_V26_postgres_matches_memory_reference(
    diff_store: tuple[_KeepOpen, psycopg.Connection[Any]], program: list[TxPlan]
) -> None:
    store, admin = diff_store

    def make() -> Iterator[Store]:
        _reset(admin)
        yield store  # type: ignore[misc]

    run_differential(make, program)


@given(program=cert_programs)
def test_V26_postgres_certificate_tables_match_memory_reference(
    diff_store: tuple[_KeepOpen, psycopg.Connection[Any]], program: list[TxPlan]
) -> None:
    store, admin = diff_store

    def make() -> Iterator[Store]:
        _reset(admin)
        yield store  # type: ignore[misc]

    run_differential(make, program)


def test_database_clock_is_used_by_default(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn)
    try:
        with s.transaction() as tx:
            a = tx.now()
            time.sleep(0.01)
            assert tx.now() == a  # constant within the transaction
            assert a.utcoffset() is not None
            assert a.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        with s.transaction() as tx:
            assert tx.now() > a
    finally:
        s.close()


def test_V22_row_lock_timeout_is_temporary_failure(store: PostgresStore) -> None:
    with store.transaction() as tx:
        tx.insert_credential(make_credential("c1"))
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.transaction() as tx:
            assert tx.lock_credential("c1") is not None
            holding.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()

        def waiter() -> None:
            with store.transaction(lock_timeout=0.2) as tx:
                tx.set_setting("written-before-the-lock", "x")
                tx.lock_credential("c1")

        with pytest.raises(TemporaryFailure, match="lock_timeout"):
            waiter()
        assert 0.15 <= time.monotonic() - started < 5
    finally:
        release.set()
        t.join()
    with store.transaction() as tx:
        assert tx.get_setting("written-before-the-lock") is None  # rolled back
        assert tx.lock_credential("c1") is not None  # and the pool connection is healthy


def test_lost_connection_mid_transaction_rolls_back_and_pool_recovers(
    store: PostgresStore, pg_cluster: PgCluster
) -> None:
    def kill_on_audit(when: str, sql: str, conn: Any) -> None:
        if when == "before" and "INSERT INTO cap_audit " in sql:
            _kill(pg_cluster.dsn(), conn.info.backend_pid)

    store.fault_hook = kill_on_audit

    def body() -> None:
        with store.transaction() as tx:
            tx.insert_credential(make_credential("c1"))
            tx.append_audit(AuditEntry(event="verify", outcome="accept"))

    with pytest.raises(TemporaryFailure, match="connection lost"):
        body()
    store.fault_hook = None
    with store.transaction() as tx:
        assert tx.get_credential("c1") is None
    assert list(store.audit_records()) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_connection_lost_around_commit(store: PostgresStore, pg_cluster: PgCluster, when: str) -> None:
    """Before COMMIT: rolled back. During/after COMMIT: outcome unknown → TemporaryFailure, data kept."""

    def hook(w: str, sql: str, conn: Any) -> None:
        if sql == "COMMIT" and w == when:
            _kill(pg_cluster.dsn(), conn.info.backend_pid)
            if when == "after":  # the reply to COMMIT never arrived
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    store.fault_hook = hook
    with pytest.raises(TemporaryFailure), store.transaction() as tx:
        tx.insert_credential(make_credential("c1"))
    store.fault_hook = None
    with store.transaction() as tx:
        found = tx.get_credential("c1")
    assert (found is not None) == (when == "after")


def test_compare_and_swap_has_one_winner_under_concurrency(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn, pool_size=16, lock_timeout=10)
    try:
        with s.transaction() as tx:
            tx.insert_credential(make_credential("c1"))
        wins: list[int] = []
        zero_rows: list[int] = []
        barrier = threading.Barrier(16)

        def worker(i: int) -> None:
            barrier.wait()
            with s.transaction() as tx:
                # deliberately no row lock: the conditional UPDATE alone must serialise
                cur = tx.get_credential("c1")
                assert cur is not None
                new = dataclasses.replace(cur, last_atc=cur.last_atc + 1, version=cur.version + 1)
                if tx.update_credential(new, expected_version=cur.version) == 1:
                    acc = Acceptance(
                        credential_id="c1",
                        atc=new.last_atc,
                        mode=OperationMode.IDENTIFY,
                        request_id=f"r{i}",
                        accepted_at=T0,
                    )
                    assert tx.insert_acceptance(acc) == 1
                    wins.append(i)
                else:
                    zero_rows.append(i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) + len(zero_rows) == 16
        with s.transaction() as tx:
            cred = tx.get_credential("c1")
            ledger = tx.list_acceptances("c1")
        assert cred is not None
        assert cred.last_atc + 1 == len(wins) == len(ledger)
        assert [a.atc for a in ledger] == list(range(len(wins)))
    finally:
        s.close()


def test_ledger_refuses_duplicates_from_concurrent_transactions(pg_dsn: str) -> None:
    """Two transactions insert the same (credential, ATC): the second gets 0 rows after the first commits."""
    s = PostgresStore(pg_dsn, pool_size=4)
    try:
        results: list[int] = []
        first_inserted = threading.Event()
        acc = Acceptance(
            credential_id="c1", atc=9, mode=OperationMode.IDENTIFY, request_id="r1", accepted_at=T0
        )

        def first() -> None:
            with s.transaction() as tx:
                results.append(tx.insert_acceptance(acc))
                first_inserted.set()
                time.sleep(0.2)

        t = threading.Thread(target=first)
        t.start()
        assert first_inserted.wait(5)
        with s.transaction() as tx:
            results.append(tx.insert_acceptance(dataclasses.replace(acc, request_id="r2")))
        t.join()
        assert results == [1, 0]
    finally:
        s.close()


def test_lock_order_prevents_deadlocks(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn, pool_size=8, lock_timeout=10)
    try:
        with s.transaction() as tx:
            for cid in ("c1", "c2", "c3"):
                tx.insert_credential(make_credential(cid, psn=f"0{cid[-1]}"))  # one live credential per card
        errors: list[BaseException] = []

        def worker(order: list[str]) -> None:
            try:
                for _ in range(30):
                    with s.transaction() as tx:
                        locked = tx.lock_credentials(order)
                        assert [c.credential_id for c in locked] == sorted(order)
                        for c in locked:
                            tx.update_credential(
                                dataclasses.replace(
                                    c, fail_count=(c.fail_count + 1) % 5, version=c.version + 1
                                ),
                                expected_version=c.version,
                            )
            except BaseException as exc:
                errors.append(exc)

        orders = [["c1", "c2", "c3"], ["c3", "c2", "c1"], ["c2", "c3", "c1"], ["c3", "c1"]]
        threads = [threading.Thread(target=worker, args=(o,)) for o in orders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with s.transaction() as tx:
            versions = [tx.get_credential(c).version for c in ("c1", "c2", "c3")]  # type: ignore[union-attr]
        assert versions == [1 + 30 * 4, 1 + 30 * 3, 1 + 30 * 4]  # lock counts per credential
    finally:
        s.close()


def test_audit_chain_stays_intact_under_concurrent_appends(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn, pool_size=8)
    try:

        def worker(i: int) -> None:
            for j in range(15):
                with s.transaction() as tx:
                    tx.append_audit(AuditEntry(event="verify", outcome="reject", request_id=f"r{i}-{j}"))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = list(s.audit_records())
        assert [r.seq for r in records] == list(range(1, 121))
        assert check_chain(records) == ()
        assert [r.seq for r in s.audit_records(after_seq=100)] == list(range(101, 121))
    finally:
        s.close()


def test_audit_is_append_only_in_the_database(store: PostgresStore, pg_dsn: str) -> None:
    with store.transaction() as tx:
        tx.append_audit(AuditEntry(event="verify", outcome="reject"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for sql in ("UPDATE cap_audit SET outcome = 'accept'", "DELETE FROM cap_audit", "TRUNCATE cap_audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql.encode())


def test_bad_values_are_validation_errors(store: PostgresStore) -> None:
    with pytest.raises(ValidationError), store.transaction() as tx:
        tx.insert_credential(make_credential("c1", last_atc=65536))
    with pytest.raises(ValidationError), store.transaction() as tx:
        tx.get_credential("nul\x00byte")
    with pytest.raises(ValidationError, match="pool_size"):
        PostgresStore("host=/nonexistent", pool_size=0)


def test_pool_exhaustion_is_temporary_failure(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn, pool_size=1, connect_timeout=0.3)
    try:
        result: list[BaseException] = []

        def other() -> None:
            try:
                with s.transaction():
                    pass
            except BaseException as exc:
                result.append(exc)

        with s.transaction():
            t = threading.Thread(target=other)
            t.start()
            t.join()
        assert len(result) == 1
        assert isinstance(result[0], TemporaryFailure)
        assert "no pooled" in str(result[0])
    finally:
        s.close()


def test_unreachable_server_is_temporary_failure(tmp_path: Any) -> None:
    with pytest.raises(TemporaryFailure, match="cannot connect"):
        PostgresStore(f"host={tmp_path} port=1 user=postgres dbname=x", connect_timeout=1)


def test_open_store_from_url_and_redacted_repr(pg_cluster: PgCluster) -> None:
    name = pg_cluster.create_database()
    try:
        s = open_store(pg_cluster.url(name))
        assert isinstance(s, PostgresStore)
        with s.transaction() as tx:
            tx.set_setting("k", "v")
        s.close()
        s2 = PostgresStore(pg_cluster.dsn(name).replace("user=postgres", "user=postgres password=hunter2"))
        assert "hunter2" not in repr(s2)
        s2.close()
    finally:
        pg_cluster.drop_database(name)


def test_closed_store_is_temporary_failure(pg_dsn: str) -> None:
    s = PostgresStore(pg_dsn)
    s.close()
    with pytest.raises(TemporaryFailure), s.transaction():
        pass
