"""Lock timeouts and fault injection on the accept path (verifier.md V22, V23), PostgreSQL.

The fault injector is the store's ``fault_hook``: it is called before and after every
statement the store sends (COMMIT included) and, at the chosen step, terminates the backend
serving the transaction with ``pg_terminate_backend`` from a second connection, exactly as a
crashed server process or a dropped network link would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from capsim.errors import InvalidCode, TemporaryFailure
from capsim.verifier.audit import check_chain
from capsim.verifier.model import Outcome
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.postgres import PostgresStore
from tests.verifier.conftest import Bench, Clock, make_bench
from tests.verifier.pgcluster import PgCluster
from tests.verifier.test_postgres_store import _kill

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install capsim[postgres])")

pytestmark = pytest.mark.postgres



@pytest.fixture
def bench(pg_dsn: str) -> Iterator[Bench]:
    store = PostgresStore(pg_dsn, pool_size=4)
    yield make_bench(store, Clock(), policy=VerifierPolicy(lock_timeout_s=0.3))
    store.close()


# ---------------------------------------------------------------------------------------------
# V22


def test_V22_row_lock_not_granted_is_temporary_failure(bench: Bench, pg_dsn: str) -> None:
    op = bench.verifier.issue_operation(bench.cid, mode="respond")
    code = bench.reader.respond("1234", op.challenge)
    before = bench.refresh()
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM cap_credential WHERE credential_id = %s FOR UPDATE", (bench.cid,))
        started = time.monotonic()
        with pytest.raises(TemporaryFailure):
            bench.verifier.verify(op.operation_id, code.code, request_id="held")
        assert time.monotonic() - started < 5
        # nothing accepted, nothing counted, the operation still open
        other.execute("ROLLBACK")
    after = bench.refresh()
    assert after == before
    assert after.fail_count == 0
    with bench.store.transaction() as tx:
        assert tx.get_request("held") is None
        op_now = tx.get_operation(op.operation_id)
        assert op_now is not None
        assert op_now.consumed_at is None
        assert op_now.attempts == 0
        assert [a.atc for a in tx.list_acceptances(bench.cid)] == [bench.first.atc]
    # the audit record was written best-effort, in its own transaction
    last = list(bench.store.audit_records())[-1]
    assert last.entry.request_id == "held"
    assert last.entry.outcome == Outcome.TEMPORARY.value
    # once the lock is gone the same request succeeds
    acc = bench.verifier.verify(op.operation_id, code.code, request_id="held")
    assert acc.atc == code.atc


def test_V22_burst_behind_a_held_lock_counts_nothing(bench: Bench, pg_dsn: str) -> None:
    """Several wrong codes time out behind a held row lock: fail_count stays 0."""
    good = bench.identify()
    wrong = good.code[:-1] + str((int(good.code[-1]) + 1) % 10)
    outcomes: list[str] = []
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM cap_credential WHERE credential_id = %s FOR UPDATE", (bench.cid,))

        def attempt(i: int) -> None:
            try:
                bench.verifier.verify(bench.cid, wrong, request_id=f"w{i}")
                outcomes.append("accept")
            except TemporaryFailure:
                outcomes.append("temporary")
            except InvalidCode:
                outcomes.append("reject")

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        other.execute("ROLLBACK")
    assert outcomes == ["temporary"] * 3
    assert bench.refresh().fail_count == 0
    assert bench.verifier.verify(bench.cid, good.code, request_id="ok").atc == good.atc


# ---------------------------------------------------------------------------------------------
# V23


@dataclass
class Injector:
    """Kill the transaction's backend at the ``step``-th ``when`` event (then disarm)."""

    admin_dsn: str
    when: str = ""
    step: int = -1
    lost_reply: bool = False
    seen: int = 0
    log: list[str] | None = None
    fired: str = ""

    def __call__(self, when: str, sql: str, conn: Any) -> None:
        if self.log is not None and when == "before":
            self.log.append(sql)
        if when != self.when:
            return
        self.seen += 1
        if self.seen == self.step:
            self.fired = sql
            _kill(self.admin_dsn, conn.info.backend_pid)
            if self.lost_reply:  # the COMMIT reply never reached us
                raise psycopg.OperationalError("server closed the connection unexpectedly")


def _state(bench: Bench, op_id: str, rid: str) -> tuple[bool, ...]:
    """Which of the accept's effects are in the database (each must agree with the others)."""
    with bench.store.transaction() as tx:
        cred = tx.get_credential(bench.cid)
        op = tx.get_operation(op_id)
        ledger = [a for a in tx.list_acceptances(bench.cid) if a.operation_id == op_id]
        request = tx.get_request(rid)
    assert cred is not None
    assert op is not None
    audit_accepts = [
        r
        for r in bench.store.audit_records()
        if r.entry.operation_id == op_id
        and r.entry.outcome == "accept"
        and r.entry.request_id == rid
        and r.entry.reason != "repeated-request"
    ]
    return (
        bool(ledger),
        op.consumed_at is not None,
        request is not None and request.outcome is Outcome.ACCEPT,
        bool(ledger) and cred.last_atc == ledger[0].atc,
        len(audit_accepts) == 1,
    )


def _accept_path_statements(bench: Bench) -> list[str]:
    """A dry run that records the statements of one accepting verification."""
    op = bench.verifier.issue_operation(bench.cid, mode="respond")
    code = bench.reader.respond("1234", op.challenge)
    log: list[str] = []
    bench.store.fault_hook = Injector(admin_dsn="", log=log)  # type: ignore[attr-defined]
    try:
        bench.verifier.verify(op.operation_id, code.code, request_id="dry-run")
    finally:
        bench.store.fault_hook = None  # type: ignore[attr-defined]
    return log


def test_V23_fault_injection_every_accept_path_statement(bench: Bench, pg_cluster: PgCluster) -> None:
    statements = _accept_path_statements(bench)
    assert statements[0].startswith("BEGIN")
    assert statements[-1] == "COMMIT"
    assert any("INSERT INTO cap_acceptance" in s for s in statements)
    assert len(statements) == 3  # read under lock, write the decision, COMMIT: one round trip each
    plans = [(when, k, False) for k in range(1, len(statements) + 1) for when in ("before", "after")]
    plans.append(("after", len(statements), True))  # COMMIT applied, its reply lost
    committed_runs = 0
    for n, (when, k, lost) in enumerate(plans):
        op = bench.verifier.issue_operation(bench.cid, mode="respond")
        code = bench.reader.respond("1234", op.challenge)
        rid = f"fault-{n}"
        injector = Injector(admin_dsn=pg_cluster.dsn(), when=when, step=k, lost_reply=lost)
        bench.store.fault_hook = injector  # type: ignore[attr-defined]
        try:
            try:
                acc = bench.verifier.verify(op.operation_id, code.code, request_id=rid)
                outcome = "accept"
            except TemporaryFailure:
                outcome = "temporary"
        finally:
            bench.store.fault_hook = None  # type: ignore[attr-defined]
        assert injector.fired, f"{when} {k}: the fault never fired"
        effects = _state(bench, op.operation_id, rid)
        # all or nothing: ledger, consumed operation, recorded request, ATC and audit agree
        assert effects in ((True,) * 5, (False,) * 5), f"{when} {injector.fired!r}: {effects}"
        committed = effects[0]
        committed_runs += committed
        if outcome == "accept":
            assert committed  # no ACCEPT without a ledger row
            assert acc.atc == code.atc
        if lost:
            assert outcome == "temporary"  # unknown commit outcome
            assert committed
        # a retry with the same request id gives the recorded outcome, or accepts now
        retry = bench.verifier.verify(op.operation_id, code.code, request_id=rid)
        assert retry.atc == code.atc
        assert _state(bench, op.operation_id, rid) == (True,) * 5
    # the kills before COMMIT rolled back; the ones after it (and the lost reply) committed
    assert 2 <= committed_runs <= len(plans) - len(statements)
    assert check_chain(list(bench.store.audit_records())) == ()
    with bench.store.transaction() as tx:
        atcs = [a.atc for a in tx.list_acceptances(bench.cid)]
    assert atcs == sorted(set(atcs))
