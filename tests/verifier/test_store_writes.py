"""The rule of a verification's writes, the same on every store: a *required* write that touches
no row makes ``write_verification`` report failure (the caller then rolls back); a write that is
not required may touch nothing. The in-memory store is the reference the SQL stores are checked
against, so it must apply the rule to the operation write with no operation id too (the SQL
stores send their UPDATE for it, which matches no row)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capsim.verifier.audit import AuditEntry
from capsim.verifier.model import Changes, OperationWrite, Outcome, RequestRecord
from tests.verifier.conftest import Clock, StoreFactory

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _changes(request_id: str, operation: OperationWrite) -> Changes:
    return Changes(
        credentials=(),
        operation=operation,
        request=RequestRecord(request_id=request_id, outcome=Outcome.REJECT, recorded_at=AT),
    )


@pytest.mark.parametrize(
    ("operation_id", "required", "ok"),
    [
        ("", False, True),  # no operation: nothing to touch, nothing owed
        ("", True, False),  # required, yet touches no row
        ("op-that-does-not-exist", False, True),
        ("op-that-does-not-exist", True, False),
    ],
    ids=["no-operation-optional", "no-operation-required", "unknown-optional", "unknown-required"],
)
def test_a_required_write_that_touches_no_row_fails_on_every_store(
    store_factory: StoreFactory, clock: Clock, operation_id: str, required: bool, ok: bool
) -> None:
    store = store_factory(clock)
    write = OperationWrite(
        operation_id=operation_id, expected_attempts=0, attempts=1, consumed_at=None, required=required
    )
    with store.transaction() as tx:
        done, record = tx.write_verification(
            _changes("req-1", write), AuditEntry(event="verify", outcome="reject", reason="test")
        )
    assert done is ok
    assert record.entry.event == "verify"
