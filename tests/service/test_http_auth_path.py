"""The API-key check's path on PostgreSQL: one statement without ``BEGIN``/``COMMIT``, run in the
same worker-thread call as the route; authentication still answered before any schema error;
a key revoked or rotated refused from the next request on.

The application runs in this process (httpx's ASGI transport, real ASGI) over a real
PostgreSQL schema of the throwaway cluster, so the store's statement hook can watch what each
request sends, and from which thread call: a context variable set while the key is checked is
visible to the route's own statements only if both ran in one call (each worker-thread call
runs in a copy of the request's context)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from capsim.cli.verifier import default_keyring
from capsim.service.app import create_app
from capsim.service.runtime import ServiceConfig, open_runtime
from capsim.verifier.clients import ApiClient, ClientScope, new_api_key, new_client_id
from capsim.verifier.postgres import PostgresStore
from tests.cli.helpers import make_world
from tests.verifier.pgcluster import pg_unavailable_reason, session_cluster

pytestmark = pytest.mark.timeout(120)

_STEP: ContextVar[str] = ContextVar("step", default="")


class Http:
    """Requests to the application in this process, each in an event loop of its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://capsim.test") as http:
                return await http.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@dataclass
class Api:
    http: Http
    store: PostgresStore
    dsn: str
    keys: dict[str, str]
    seen: list[tuple[str, str]] = field(default_factory=list)  # (statement, step visible to it)

    def watch(self, when: str, sql: str, conn: Any) -> None:
        if when != "before":
            return
        self.seen.append((sql, _STEP.get()))
        if "FROM cap_client" in sql:
            _STEP.set("key checked")


def _client(store: PostgresStore, scope: ClientScope) -> str:
    cid = new_client_id()
    key, digest = new_api_key(cid)
    with store.transaction() as tx:
        client = ApiClient(
            client_id=cid, name=scope.value, scope=scope, key_digest=digest, created_at=datetime.now(UTC)
        )
        tx.insert_client(client)
    return key


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = session_cluster()
    dsn = cluster.create_schema(migrated=True)
    world = make_world(tmp_path, db=dsn)  # capsim verifier init: keys, keyring, audit seal key
    monkeypatch.setenv("CAPSIM_HOME", str(world.cli.home))
    keyring = default_keyring(dsn)
    config = ServiceConfig(db=dsn, keyring=str(keyring), rate_client=100, rate_credential=50)
    try:
        with open_runtime(config) as rt:
            app = create_app(config)
            app.state.runtime = rt  # what the lifespan does in a served worker
            store = rt.session.store
            assert isinstance(store, PostgresStore)
            keys = {s.value: _client(store, s) for s in (ClientScope.OPERATOR, ClientScope.VERIFICATION)}
            api = Api(http=Http(app), store=store, dsn=dsn, keys=keys)
            store.fault_hook = api.watch
            yield api
            store.fault_hook = None
    finally:
        cluster.drop_schema(dsn)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_key_check_is_one_statement_in_the_routes_own_thread_call(api: Api) -> None:
    r = api.http.get("/v1/operations/op-0000000000000000", headers=_auth(api.keys["verification"]))
    assert r.status_code == 404, r.text
    sql = [s for s, _ in api.seen]
    # the key: one SELECT, not batched behind a BEGIN, and no COMMIT after it
    assert "FROM cap_client" in sql[0]
    assert "BEGIN" not in sql[0]
    assert sql[1] != "COMMIT"
    # the rate counters are single statements too
    assert [s for s in sql[:3] if "cap_rate" in s]
    assert all("BEGIN" not in s for s in sql[:3])
    # the route's own read ran in the same thread call as the key check
    route = [(s, step) for s, step in api.seen if "FROM cap_operation" in s]
    assert route
    assert all(step == "key checked" for _, step in route)


def test_authentication_is_answered_before_any_schema_error(api: Api) -> None:
    url = "/v1/credentials/cr-0000000000000000/login"
    bad_body = {"code": "12345678", "unexpected": 1}
    bad_header = {"Idempotency-Key": "x" * 65}
    for headers in ({}, _auth("capsim_cl-0000000000000000_" + "A" * 43)):
        for body, extra in ((bad_body, {}), ({"code": "12345678"}, bad_header), ({}, {})):
            r = api.http.post(url, json=body, headers={**headers, **extra})
            assert r.status_code == 401, r.text
            assert "errors" not in r.json()
    # a valid key of another scope: the scope refusal, not the schema error
    r = api.http.post("/v1/credentials/cr-0000000000000000/advance-floor", json={"atc": "x"},
                      headers=_auth(api.keys["verification"]))  # fmt: skip
    assert r.status_code == 403, r.text
    assert "errors" not in r.json()
    # an authenticated caller gets the schema error, with the rate fields of its request
    r = api.http.post(url, json=bad_body, headers=_auth(api.keys["verification"]))
    assert r.status_code == 400, r.text
    assert r.json()["errors"]
    assert "ratelimit" in r.headers
    # every refusal audited exactly once
    with api.store.transaction() as tx:
        denials = [r.entry.reason for r in tx.audit_page(0, 100) if r.entry.event == "http"]
    assert denials == ["unauthenticated"] * 6 + ["scope"]


def test_a_revoked_key_is_refused_from_the_next_request(api: Api) -> None:
    key = _client(api.store, ClientScope.VERIFICATION)
    assert api.http.get("/v1/operations/op-0000000000000000", headers=_auth(key)).status_code == 404
    other = PostgresStore(api.dsn)  # another worker's store: its own connections
    try:
        cid = key.split("_")[1]
        with other.transaction() as tx:
            client = tx.get_client(cid)
            assert client is not None
            revoked = ApiClient(
                client_id=client.client_id, name=client.name, scope=client.scope,
                key_digest=client.key_digest, created_at=client.created_at,
                revoked_at=datetime.now(UTC), version=client.version + 1,
            )  # fmt: skip
            assert tx.update_client(revoked, expected_version=client.version) == 1
    finally:
        other.close()
    assert api.http.get("/v1/operations/op-0000000000000000", headers=_auth(key)).status_code == 401
