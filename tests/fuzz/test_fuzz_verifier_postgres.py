"""``capsim fuzz verifier`` on PostgreSQL (marked ``postgres``; the verifier suite's cluster)."""

from __future__ import annotations

import pytest

from capsim.testing.fuzz_verifier import fuzz_verifier
from capsim.verifier.postgres import PostgresStore
from tests.verifier.pgcluster import pg_cluster, pg_dsn  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


def test_postgres_store_keeps_v41(pg_dsn: str) -> None:  # noqa: F811 - the fixture
    store = PostgresStore(pg_dsn)
    try:
        report = fuzz_verifier(store, store_name="postgres", seed=6, max_examples=20, time_budget=120)
    finally:
        store.close()
    assert report.ok, [f.summary() for f in report.findings]
    assert report.examples == 20
