"""PostgreSQL: every verify path in at most three round trips, and every reject class in the
same statements (verifier.md §5; V30), counted through the store's driver hook.

The store calls its ``fault_hook`` before and after every round trip it makes: one statement,
or one pipelined batch (the batch's statements joined by ``; ``), or COMMIT. A "before" event is
therefore one round trip, and its text says exactly which statements went to the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capsim.errors import InvalidCode, RequestConflict
from capsim.verifier.postgres import PostgresStore
from tests.verifier.conftest import PIN, Bench, Clock, make_bench

pytest.importorskip("psycopg", reason="psycopg is not installed (pip install capsim[postgres])")

pytestmark = pytest.mark.postgres

MAX_ROUND_TRIPS = 3


@pytest.fixture
def bench(pg_dsn: str) -> Iterator[Bench]:
    store = PostgresStore(pg_dsn, pool_size=4)
    yield make_bench(store, Clock())
    store.close()


def _trips(bench: Bench, call: Callable[[], Any]) -> list[str]:
    """The round trips (their statement texts) ``call`` makes, whatever it returns or raises."""
    sent: list[str] = []

    def hook(when: str, sql: str, conn: Any) -> None:
        if when == "before":
            sent.append(sql)

    store: Any = bench.store
    store.fault_hook = hook
    try:
        call()
    except (InvalidCode, RequestConflict):
        pass
    finally:
        store.fault_hook = None
    return sent


def test_every_verify_path_takes_at_most_three_round_trips(bench: Bench) -> None:
    v = bench.verifier
    op = v.issue_operation(bench.cid, mode="respond")
    code = bench.reader.respond(PIN, op.challenge).code
    paths: dict[str, Callable[[], Any]] = {
        "operation accept": lambda: v.verify(op.operation_id, code, request_id="p1"),
        "operation replayed request": lambda: v.verify(op.operation_id, code, request_id="p1"),
        "request id of another call": lambda: v.verify(op.operation_id, "12345678", request_id="p1"),
        "operation consumed": lambda: v.verify(op.operation_id, code, request_id="p2"),
        "unknown operation": lambda: v.verify("op-0000000000000000", "12345678", request_id="p3"),
        "identify accept": lambda: v.verify(bench.cid, bench.identify().code, request_id="p4"),
        "identify wrong code": lambda: v.verify(bench.cid, "12345678", request_id="p5"),
        "unknown credential": lambda: v.verify("cr-0000000000000000", "12345678", request_id="p6"),
        "resync": lambda: v.resync(
            bench.cid, [bench.identify().code for _ in range(v.policy.resync_count)], request_id="p7"
        ),
    }
    counts = {name: len(_trips(bench, call)) for name, call in paths.items()}
    assert all(1 <= n <= MAX_ROUND_TRIPS for n in counts.values()), counts
    assert counts["operation accept"] == 3  # read under lock, write the decision, COMMIT
    assert counts["request id of another call"] == 1  # read, then ROLLBACK: nothing written


def test_reject_classes_send_the_same_statements(bench: Bench) -> None:
    v = bench.verifier
    trips: dict[str, list[str]] = {}
    trips["wrong code"] = _trips(bench, lambda: v.verify(bench.cid, "10000000", request_id="w"))
    trips["unknown"] = _trips(bench, lambda: v.verify("cr-0000000000000000", "10000000", request_id="u"))
    v.lock(bench.cid)
    trips["locked"] = _trips(bench, lambda: v.verify(bench.cid, "10000000", request_id="l"))
    v.unlock(bench.cid)
    v.suspend(bench.cid)
    trips["suspended"] = _trips(bench, lambda: v.verify(bench.cid, "10000000", request_id="s"))
    v.revoke(bench.cid)
    trips["revoked"] = _trips(bench, lambda: v.verify(bench.cid, "10000000", request_id="r"))
    reference = trips["wrong code"]
    assert len(reference) == 3
    for name, sent in trips.items():
        assert sent == reference, name
