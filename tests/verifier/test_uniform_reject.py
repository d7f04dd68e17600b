"""Every reject class costs the same store work and the same time (V30; docs/verifier.md).

A refusal of an unknown credential or operation reads, decodes and writes the padding rows
(capsim.verifier.padding) where a refusal of a known one reads and writes its own row, so the
store sees the same statements touching the same number of rows of the same tables, and the
audit record has the same fields. Checked per store from the store's own statement log (the
SQL each SQL store sends with the rows it returned or touched; the memory store's method calls
and their results), then in time with the probe's Mann-Whitney check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from capsim.errors import InvalidCode, ValidationError
from capsim.probe import ProbeOptions, Status
from capsim.probe.timing import check_uniform_reject_timing
from capsim.verifier import memory, postgres, sqlite
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import ACTIVE_STATES
from capsim.verifier.padding import (
    PAD_CREDENTIAL_ID,
    PAD_OPERATION_CREDENTIAL_ID,
    PAD_OPERATION_ID,
    padding_credential,
    padding_operation,
)
from capsim.verifier.service import Verifier
from capsim.verifier.sqlite import SqliteStore
from capsim.verifier.store import Store
from tests.probe.conftest import lab_for
from tests.probe.conftest import provider as probe_provider
from tests.verifier.conftest import PIN, Bench, Clock, StoreFactory, make_bench
from tests.verifier.helpers import new_op

WRONG = "10000000"
Log = list[tuple[str, int]]


def _size(result: Any) -> int:
    """What a store call returned, as a row count: rows read, or rows touched."""
    if isinstance(result, bool):
        return int(result)
    if isinstance(result, int):
        return result
    if isinstance(result, list | tuple):
        return len(result)
    return 0 if result is None else 1


@contextmanager
def statement_log(backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Log]:
    """Every statement the store sends with the rows it read or touched: the SQL text for the
    SQL stores (their own ``_exec``, and PostgreSQL's pipelined batches), the transaction
    method for the memory store (whose point lookups of a target and of its padding row are
    logged without their result: one or the other is found, as in the SQL stores' coalesce)."""
    log: Log = []
    if backend == "sqlite":
        inner = sqlite._SqliteTransaction._exec

        def traced(self: Any, sql: str, params: Any = ()) -> tuple[list[Any], int]:
            rows, count = inner(self, sql, params)
            log.append((sql, len(rows) if rows else count))
            return rows, count

        monkeypatch.setattr(sqlite._SqliteTransaction, "_exec", traced)
    elif backend == "postgres":
        execute, pipeline = postgres.PostgresStore._execute, postgres.PostgresStore._pipeline

        def traced_execute(self: Any, conn: Any, sql: str, params: Any = (), *, context: str) -> Any:
            rows, count = execute(self, conn, sql, params, context=context)
            log.append((sql, len(rows) if rows else count))
            return rows, count

        def traced_pipeline(self: Any, conn: Any, statements: Any, *, context: str) -> Any:
            out = pipeline(self, conn, statements, context=context)
            if len(statements) > 1:  # a single statement went through _execute
                for (sql, _params), (rows, count) in zip(statements, out, strict=True):
                    log.append((sql, len(rows) if rows else count))
            return out

        monkeypatch.setattr(postgres.PostgresStore, "_execute", traced_execute)
        monkeypatch.setattr(postgres.PostgresStore, "_pipeline", traced_pipeline)
    else:
        tx_class = memory._MemoryTransaction
        for name in (
            "get_credential", "lock_credentials", "list_credentials", "update_credential",
            "get_operation", "update_operation", "get_request", "insert_request",
            "insert_acceptance", "append_audit",
        ):  # fmt: skip
            method = getattr(tx_class, name)

            def traced_call(
                self: Any, *args: Any, _m: Callable[..., Any] = method, _n: str = name, **kw: Any
            ) -> Any:
                result = _m(self, *args, **kw)
                # a point lookup of the target and of its padding row: one of them is found
                log.append((_n, -1 if _n.startswith("get_") and _n != "get_request" else _size(result)))
                return result

            monkeypatch.setattr(tx_class, name, traced_call)
    yield log


def _refuse(b: Bench, log: Log, target: str, code: str = WRONG) -> tuple[Log, tuple[bool, ...]]:
    """The statements of one refused ``verify`` and which audit fields its record filled."""
    log.clear()
    with pytest.raises(InvalidCode):
        b.verifier.verify(target, code, request_id=b.rid())
    statements = list(log)
    last = list(b.store.audit_records())[-1].entry
    fields = (last.credential_id, last.operation_id, last.mode, last.txn_digest, last.request_id)
    return statements, tuple(bool(f) for f in fields)


def _reject_classes(b: Bench, log: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reject classes of a credential target and of an operation target."""
    creds: dict[str, Any] = {"wrong code": _refuse(b, log, b.cid)}
    ops: dict[str, Any] = {}
    op = new_op(b, "respond")
    ops["wrong code"] = _refuse(b, log, op.operation_id)
    b.verifier.verify(op.operation_id, b.reader.respond(PIN, op.challenge).code, request_id=b.rid())
    ops["consumed operation"] = _refuse(b, log, op.operation_id, b.reader.respond(PIN, op.challenge).code)
    late = new_op(b, "respond")
    b.clock.advance(400)
    ops["expired operation"] = _refuse(b, log, late.operation_id)
    ops["unknown operation"] = _refuse(b, log, "op-00000000deadbeef")
    creds["unknown credential"] = _refuse(b, log, "cr-00000000deadbeef")
    creds["the padding credential named"] = _refuse(b, log, PAD_CREDENTIAL_ID)
    creds["the padding operation named"] = _refuse(b, log, PAD_OPERATION_ID)  # no "op-": a credential
    for _ in range(5):
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, WRONG, request_id=b.rid())
    creds["locked"] = _refuse(b, log, b.cid)
    b.verifier.unlock(b.cid)
    b.verifier.suspend(b.cid)
    creds["suspended"] = _refuse(b, log, b.cid)
    b.verifier.revoke(b.cid)
    creds["revoked"] = _refuse(b, log, b.cid)
    return creds, ops


def test_every_reject_class_sends_the_same_statements_touching_the_same_rows(
    store_factory: StoreFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make_bench(store_factory(clock), clock)
    with statement_log(store_factory.backend, monkeypatch) as log:
        creds, ops = _reject_classes(b, log)
    for classes in (creds, ops):
        first = next(iter(classes.values()))
        for name, seen in classes.items():
            diff = [(i, a, z) for i, (a, z) in enumerate(zip(seen[0], first[0], strict=False)) if a != z]
            assert seen == first, (name, diff, len(seen[0]), len(first[0]), seen[1], first[1])
    # an unknown target writes a real row: the credential row, and for an operation an
    # operation row too (a call that names a credential touches none, as a wrong code)
    assert _written(creds["unknown credential"][0]) == ["credential"]
    assert _written(ops["unknown operation"][0]) == ["credential", "operation"]


def _written(statements: Log) -> list[str]:
    """The kinds of row the updates of a statement log touched."""
    return [
        kind
        for sql, n in statements
        for kind in ("credential", "operation")
        if n == 1 and sql.startswith((f"UPDATE cap_{kind} ", f"update_{kind}"))
    ]


def test_an_unknown_target_writes_the_padding_row_and_nothing_else(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    before = b.refresh()
    with b.store.transaction() as tx:
        pad = tx.get_credential(PAD_CREDENTIAL_ID)
        pad_op = tx.get_operation(PAD_OPERATION_ID)
    assert pad is not None
    assert pad_op is not None
    assert dataclasses.replace(pad, version=1) == padding_credential()  # the migration's rows
    assert pad_op == padding_operation()
    with b.store.transaction() as tx:
        op_pad = tx.get_credential(PAD_OPERATION_CREDENTIAL_ID)
    assert op_pad == padding_credential(PAD_OPERATION_CREDENTIAL_ID)
    with pytest.raises(InvalidCode):
        b.verifier.verify("cr-00000000deadbeef", WRONG, request_id=b.rid())
    with pytest.raises(InvalidCode):
        b.verifier.verify("op-00000000deadbeef", WRONG, request_id=b.rid())
    with b.store.transaction() as tx:
        after = tx.get_credential(PAD_CREDENTIAL_ID)
        assert tx.get_operation(PAD_OPERATION_ID) == pad_op  # touched, unchanged
    assert after == dataclasses.replace(pad, version=pad.version + 1)
    assert b.refresh() == before
    record = list(b.store.audit_records())[-1].entry
    assert record.reason == "unknown-operation"
    assert record.operation_id == "op-00000000deadbeef"


def test_the_padding_rows_are_no_ones(store_factory: StoreFactory, clock: Clock) -> None:
    """Never listed, never a user's, never reachable by an identifier, never a live card."""
    b = make_bench(store_factory(clock), clock)
    with b.store.transaction() as tx:
        everything = tx.list_credentials()
        by_user = tx.list_credentials(user_id="alice")
        live = tx.list_credentials(states=ACTIVE_STATES)
        assert tx.list_open_operations(PAD_CREDENTIAL_ID, tx.now()) == []
    assert [c.credential_id for c in everything] == [b.cid]
    assert [c.credential_id for c in by_user] == [b.cid]
    assert [c.credential_id for c in live] == [b.cid]
    for call in (
        lambda: b.verifier.get_credential(PAD_CREDENTIAL_ID),
        lambda: b.verifier.suspend(PAD_CREDENTIAL_ID),
        lambda: b.verifier.unlock(PAD_CREDENTIAL_ID),
        lambda: b.verifier.revoke(PAD_CREDENTIAL_ID),
        lambda: b.verifier.issue_operation(PAD_CREDENTIAL_ID, mode="respond"),
        lambda: b.verifier.activate(PAD_CREDENTIAL_ID, WRONG, request_id=b.rid()),
    ):
        with pytest.raises(ValidationError):
            call()
    # a call that names a padding row is the unknown-target refusal
    with pytest.raises(InvalidCode):
        b.verifier.verify(PAD_CREDENTIAL_ID, b.identify().code, request_id=b.rid())
    assert list(b.store.audit_records())[-1].entry.reason == "unknown-credential"


# ------------------------------------------------------------------------------------------------
# In time: the probe's check, on the stores whose difference it found (in process)

TIMING_STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SqliteStore(tmp / "timing.db"),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(TIMING_STORES))
def test_reject_classes_take_the_same_time(backend: str, tmp_path: Path) -> None:
    """Locked vs unknown credential, consumed vs unknown operation: the probe's Mann-Whitney U
    over interleaved samples finds no difference (p > 0.01) in one of two runs (before the
    padding rows: p < 1e-20 at these sample counts). Two runs, because on a shared machine a
    true no-difference still gives p < 0.01 one time in a hundred per comparison."""
    store = TIMING_STORES[backend](tmp_path)
    lab = lab_for(Verifier(store, probe_provider()))
    runs = []
    try:
        for seed in (101, 202):
            outcome = check_uniform_reject_timing(lab, ProbeOptions(timing_samples=500, seed=seed))
            assert outcome.status in (Status.PASS, Status.WARN), outcome.evidence
            smallest = min(c["p_value"] for c in outcome.data["comparisons"])
            runs.append((smallest, outcome.evidence))
            if smallest > 0.01:
                break
    finally:
        store.close()
    assert runs[-1][0] > 0.01, runs
