"""Exactly-once and exact lockout through HTTP: two worker processes on the throwaway PostgreSQL
cluster (and on SQLite); many concurrent verifications of one correct code give one accept, and
many concurrent wrong codes leave exactly ``max_fail`` failures and the credential locked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Service, start_service
from tests.verifier.pgcluster import pg_unavailable_reason, session_cluster

pytestmark = pytest.mark.timeout(240)

RACERS = 30


def _race(svc: Service) -> None:
    cid = svc.world.enroll()
    with svc.http("verification") as http:
        op = http.post(f"/v1/credentials/{cid}/operations", json={"mode": "respond"}).json()
    code = svc.world.code("respond", "--challenge", op["challenge"])
    url = f"{svc.base}/v1/operations/{op['operation_id']}/verify"
    headers = {"Authorization": f"Bearer {svc.keys['verification']}"}

    def one(_: int) -> int:
        with httpx.Client(headers=headers, timeout=60) as http:
            return http.post(url, json={"code": code}).status_code

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        statuses = list(pool.map(one, range(RACERS)))
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 422}, statuses
    with svc.http("operator") as http:
        assert http.get(f"/v1/operations/{op['operation_id']}").json()["consumed"] is True
        text = http.get("/metrics").text
    # both workers answered, and /metrics sums them: every racer is counted once
    lines = [ln for ln in text.splitlines() if ln.startswith("capsim_verifications_total")]
    samples = dict(ln.split(" ", 1) for ln in lines)
    assert float(samples['capsim_verifications_total{outcome="accept"}']) == 1
    assert float(samples['capsim_verifications_total{outcome="reject"}']) == RACERS - 1


def test_one_accept_among_racing_verifications_on_postgres_with_two_workers(tmp_path: Path) -> None:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = session_cluster()
    dsn = cluster.create_schema(migrated=True)
    svc = start_service(tmp_path, db=dsn, workers=2, extra=("--rate-credential", "0"))
    try:
        _race(svc)
        log = svc.stop()
        assert log.count("Application startup complete") == 2
    finally:
        svc.stop()
        cluster.drop_schema(dsn)


def test_one_accept_among_racing_verifications_on_sqlite_with_two_workers(tmp_path: Path) -> None:
    svc = start_service(tmp_path, workers=2, extra=("--rate-credential", "0"))
    try:
        _race(svc)
    finally:
        svc.stop()


WRONG = 24


def _lockout(svc: Service) -> None:
    """V20 through HTTP: concurrent wrong Identify codes against one credential leave exactly
    ``max_fail`` (5) failures and a lock, whichever worker served each request; the right code
    is then refused too (the uniform answer), and nothing was accepted."""
    cid = svc.world.enroll()
    url = f"{svc.base}/v1/credentials/{cid}/login"
    headers = {"Authorization": f"Bearer {svc.keys['verification']}"}

    def one(i: int) -> int:
        with httpx.Client(headers=headers, timeout=60) as http:
            return http.post(url, json={"code": f"{10_000_000 + i:08d}"}).status_code

    with ThreadPoolExecutor(max_workers=WRONG) as pool:
        statuses = list(pool.map(one, range(WRONG)))
    assert set(statuses) <= {422, 503}, statuses  # the uniform reject, or retry later
    right = svc.world.code("identify")
    with httpx.Client(headers=headers, timeout=60) as http:
        assert http.post(url, json={"code": right}).status_code == 422  # locked: refused
    with svc.http("operator") as http:
        cred = http.get(f"/v1/credentials/{cid}").json()
    assert cred["fail_count"] == 5, cred
    assert cred["locked_until"] is not None


def test_exact_lockout_through_http_on_postgres_with_two_workers(tmp_path: Path) -> None:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = session_cluster()
    dsn = cluster.create_schema(migrated=True)
    svc = start_service(tmp_path, db=dsn, workers=2, extra=("--rate-credential", "0"))
    try:
        _lockout(svc)
    finally:
        svc.stop()
        cluster.drop_schema(dsn)


def test_exact_lockout_through_http_on_sqlite_with_two_workers(tmp_path: Path) -> None:
    svc = start_service(tmp_path, workers=2, extra=("--rate-credential", "0"))
    try:
        _lockout(svc)
    finally:
        svc.stop()
