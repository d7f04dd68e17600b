"""The native API through a real ``capsim verifier serve`` on SQLite: a real card's codes end to
end, the one uniform reject, idempotency keys, scopes and audited denials, body limits, metrics,
client keys, and no secret in the service's log."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, start_service

pytestmark = pytest.mark.timeout(180)

_SECRETS: list[str] = []  # every code, key and PAN the tests sent; none may reach the log


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:capsim:problem:{slug}"
    assert body["status"] == status
    return body


def _enrolled(svc: Service) -> str:
    cid = getattr(svc, "_cid", None)
    if cid is None:
        cid = svc.world.enroll()
        svc._cid = cid  # type: ignore[attr-defined]
    return str(cid)


def _audit(svc: Service) -> list[dict[str, Any]]:
    run = svc.world.v("audit", "--json")
    assert run.exit_code == 0, run.stderr
    records: list[dict[str, Any]] = run.json()["records"]
    return records


def test_probes_need_no_key_and_everything_else_does(sqlite_service: Service) -> None:
    with sqlite_service.http(None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}
        _problem(http.get("/v1/users"), 401, "unauthenticated")
        _problem(http.get("/metrics"), 401, "unauthenticated")
    with sqlite_service.http("capsim_cl-0000000000000000_" + "A" * 43) as http:
        body = _problem(http.get("/v1/users"), 401, "unauthenticated")
        assert "capsim_cl" not in json.dumps(body)
    denied = [r for r in _audit(sqlite_service) if r["event"] == "http"]
    assert len(denied) >= 3
    assert all(r["outcome"] == "denied" for r in denied)


def test_sign_operation_end_to_end_with_the_card(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = _enrolled(svc)
    with svc.http("verification") as http:
        r = http.post(
            f"/v1/credentials/{cid}/operations",
            json={"mode": "sign", "amount": 12500, "currency": "EUR", "payee": "NL91ABNA0417164300"},
        )
        assert r.status_code == 201, r.text
        op = r.json()
        assert op["amount_minor"] == 12500
        assert len(op["challenge"]) == 8
        assert http.get(f"/v1/operations/{op['operation_id']}").json()["consumed"] is False
        code = svc.world.code(
            "sign", "--challenge", op["challenge"], "--amount", "125.00", "--currency", "EUR"
        )
        _SECRETS.append(code)
        r = http.post(f"/v1/operations/{op['operation_id']}/verify", json={"code": code})
        assert r.status_code == 200, r.text
        acc = r.json()
        assert acc["credential_id"] == cid
        assert acc["mode"] == "sign"
        assert acc["operation_id"] == op["operation_id"]
        assert "ratelimit" in r.headers
        assert "ratelimit-policy" in r.headers
        # replayed: the one uniform reject
        _problem(
            http.post(f"/v1/operations/{op['operation_id']}/verify", json={"code": code}), 422, "invalid-code"
        )
        assert http.get(f"/v1/operations/{op['operation_id']}").json()["consumed"] is True


def test_every_invalid_code_case_gets_the_same_answer(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = _enrolled(svc)
    with svc.http("verification") as http:
        op = http.post(f"/v1/credentials/{cid}/operations", json={"mode": "respond"}).json()
        wrong = http.post(f"/v1/operations/{op['operation_id']}/verify", json={"code": "12345678"})
        unknown = http.post("/v1/operations/op-doesnotexist/verify", json={"code": "12345678"})
        login = http.post("/v1/credentials/cr-doesnotexist/login", json={"code": "12345678"})
        answers = [wrong, unknown, login]
        bodies = [_problem(r, 422, "invalid-code") for r in answers]
        assert len({json.dumps({k: v for k, v in b.items() if k != "instance"}) for b in bodies}) == 1
        assert all("12345678" not in r.text for r in answers)
        # a malformed code is an input error, not a reject (nothing counted)
        _problem(
            http.post(f"/v1/operations/{op['operation_id']}/verify", json={"code": "12ab"}),
            400,
            "validation-error",
        )
        # a body that does not match its schema: locations only, never the input
        r = http.post(f"/v1/operations/{op['operation_id']}/verify", json={"code": "98765432", "pin": "1234"})
        body = _problem(r, 400, "validation-error")
        assert "98765432" not in r.text
        assert "1234" not in r.text
        assert body["errors"]


def test_idempotency_key_replays_the_recorded_answer_and_conflicts_otherwise(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = _enrolled(svc)
    with svc.http("verification") as http:
        op = http.post(f"/v1/credentials/{cid}/operations", json={"mode": "respond"}).json()
        code = svc.world.code("respond", "--challenge", op["challenge"])
        _SECRETS.append(code)
        url = f"/v1/operations/{op['operation_id']}/verify"
        first = http.post(url, json={"code": code}, headers={"Idempotency-Key": "pay-1"})
        again = http.post(url, json={"code": code}, headers={"Idempotency-Key": "pay-1"})
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        _problem(
            http.post(url, json={"code": "11111111"}, headers={"Idempotency-Key": "pay-1"}),
            409,
            "request-conflict",
        )
    # keys are scoped per client: the operator's "pay-1" is another request id
    with svc.http("operator") as http:
        _problem(
            http.post(url, json={"code": code}, headers={"Idempotency-Key": "pay-1"}), 422, "invalid-code"
        )


def test_scopes_and_customer_administrators(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = _enrolled(svc)
    with svc.http("verification") as http:
        _problem(http.post("/v1/users", json={"user_id": "mallory"}), 403, "forbidden")
        _problem(http.post(f"/v1/credentials/{cid}/unlock", json={}), 403, "forbidden")
        _problem(http.get("/metrics"), 403, "forbidden")
    with svc.http("operator") as http:
        assert http.post("/v1/users", json={"user_id": "boss"}).status_code == 201  # admin of cu-boss
    svc.add_client("boss-portal", "--scope", "customer-admin", "--as", "boss")
    with svc.http("boss-portal") as http:
        r = http.post("/v1/users", json={"user_id": "clerk"})
        assert r.status_code == 201
        assert r.json()["customer_id"] == "cu-boss"
        assert [u["user_id"] for u in http.get("/v1/users").json()] == ["boss", "clerk"]
        code = http.post("/v1/users/clerk/activation-codes", json={}).json()["code"]
        _SECRETS.append(code)
        # another account's user and credential: refused, and audited
        _problem(http.get("/v1/users", params={"customer_id": "cu-alice"}), 403, "forbidden")
        _problem(http.get(f"/v1/credentials/{cid}"), 403, "forbidden")
        _problem(http.post(f"/v1/credentials/{cid}/suspend", json={}), 403, "forbidden")
        _problem(http.post("/v1/users/alice/activation-codes", json={}), 403, "forbidden")
        # bank-only acts: refused by scope
        _problem(http.post(f"/v1/credentials/{cid}/advance-floor", json={"atc": 1}), 403, "forbidden")
    with svc.http("operator") as http:
        assert http.get(f"/v1/credentials/{cid}").json()["state"] == "active"
    reasons = [r["reason"] for r in _audit(svc) if r["event"] == "http"]
    assert reasons.count("account") >= 4
    assert reasons.count("scope") >= 4


def test_login_with_an_identify_code(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = _enrolled(svc)
    code = svc.world.code("identify")
    _SECRETS.append(code)
    with svc.http("verification") as http:
        r = http.post(f"/v1/credentials/{cid}/login", json={"code": code})
        assert r.status_code == 200
        assert r.json()["mode"] == "identify"
        _problem(http.post(f"/v1/credentials/{cid}/login", json={"code": code}), 422, "invalid-code")


def test_lifecycle_and_floor_through_the_api(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = _enrolled(svc)
    with svc.http("operator") as http:
        assert (
            http.post(f"/v1/credentials/{cid}/suspend", json={"reason": "t"}).json()["state"] == "suspended"
        )
        op = http.post(f"/v1/credentials/{cid}/operations", json={"mode": "identify"})
        assert op.status_code == 400  # no operation on a suspended credential
        assert http.post(f"/v1/credentials/{cid}/resume", json={}).json()["state"] == "active"
        # the floor is the card's: raising it retires the card's next code (run last with codes)
        before = http.get(f"/v1/credentials/{cid}").json()["last_atc"]
        assert http.post(f"/v1/credentials/{cid}/advance-floor", json={"atc": before + 1}).json() == {
            "last_atc": before + 1
        }
        users = http.get("/v1/users/alice/credentials").json()
        assert [c["credential_id"] for c in users] == [cid]
        assert users[0]["pan_last4"]
        _problem(http.get("/v1/credentials/cr-nope"), 404, "not-found")
        tip = http.get("/v1/audit/tip").json()
        check = http.post("/v1/audit/check", json={"tip": tip}).json()
        assert check["intact"] is True
        assert check["records"] >= tip["seq"]


def test_request_body_limit(sqlite_service: Service) -> None:
    with sqlite_service.http("operator") as http:
        big = {"user_id": "x", "name": "n" * (100 * 1024)}
        _problem(http.post("/v1/users", json=big), 413, "payload-too-large")

        def chunks() -> Any:
            for _ in range(100):
                yield b"x" * 1024

        r = http.post("/v1/users", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_metrics_count_verifications(sqlite_service: Service) -> None:
    with sqlite_service.http("operator") as http:
        text = http.get("/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"
    }
    assert samples['capsim_verifications_total{outcome="accept"}'] >= 3
    assert samples['capsim_verifications_total{outcome="reject"}'] >= 3
    assert samples["capsim_verification_seconds_count"] >= 6
    assert 'capsim_lockouts_total{kind="temporary"}' in samples


def test_client_rotate_and_revoke(sqlite_service: Service) -> None:
    svc = sqlite_service
    old = svc.add_client("rotating", "--scope", "verification")
    cl = old.split("_")[1]
    with svc.http(old) as http:
        assert http.get("/v1/operations/op-x").status_code == 404
    run = svc.world.v("client", "rotate", cl, "--json")
    new = run.json()["key"]
    _SECRETS.extend([old, new])
    with svc.http(old) as http:
        _problem(http.get("/v1/operations/op-x"), 401, "unauthenticated")
    with svc.http(new) as http:
        assert http.get("/v1/operations/op-x").status_code == 404
    assert svc.world.v("client", "revoke", cl).exit_code == 0
    with svc.http(new) as http:
        _problem(http.get("/v1/operations/op-x"), 401, "unauthenticated")
    listed = svc.world.v("client", "list", "--json").json()["clients"]
    assert any(c["client_id"] == cl and c["revoked_at"] for c in listed)
    assert new not in json.dumps(listed)


def test_no_secret_in_the_service_log(sqlite_service: Service) -> None:
    svc = sqlite_service
    _SECRETS.extend(svc.keys.values())
    text = svc.log.read_text()
    assert "POST /v1/operations/{operation_id}/verify 200" in text
    for secret in _SECRETS:
        assert secret not in text
    assert "541333" not in text  # the card's PAN prefix


def test_rate_limits_per_credential_with_retry_after(tmp_path: Any) -> None:
    svc = start_service(tmp_path, extra=("--rate-credential", "3", "--rate-window", "60"))
    try:
        cid = svc.world.enroll()
        with svc.http("verification") as http:
            answers = [
                http.post(f"/v1/credentials/{cid}/operations", json={"mode": "respond"}) for _ in range(4)
            ]
            assert [r.status_code for r in answers] == [201, 201, 201, 429]
            limited = _problem(answers[-1], 429, "rate-limited")
            assert "credential" in limited["detail"]
            assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
            assert answers[0].headers["ratelimit"].startswith('"credential";r=2;')
            # another credential's bucket is untouched; the client's own limit is far away
            assert http.get("/v1/operations/op-x").status_code == 404
    finally:
        svc.stop()
