"""The privacyIDEA-compatible front through a real service: a triggerchallenge + check round
trip with the card's Respond code accepted once and rejected on replay, Identify logins, and one
answer for every refusal."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.service.conftest import Service

pytestmark = pytest.mark.timeout(120)


def _result(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["jsonrpc"] == "2.0"
    assert body["version"].startswith("privacyIDEA")
    return body


def _bare(svc: Service, name: str = "verification") -> httpx.Client:
    """privacyIDEA plugins send their token in Authorization without a scheme."""
    return httpx.Client(base_url=svc.base, headers={"Authorization": svc.keys[name]}, timeout=30)


def test_triggerchallenge_then_check_accepts_once(sqlite_service: Service) -> None:
    svc = sqlite_service
    cid = svc.world.enroll()
    with _bare(svc) as http:
        trig = _result(http.post("/validate/triggerchallenge", data={"user": "alice", "realm": "bank"}))
        assert trig["result"] == {"status": True, "value": 1, "authentication": "CHALLENGE"}
        (challenge,) = trig["detail"]["multi_challenge"]
        tid = trig["detail"]["transaction_id"]
        assert challenge["transaction_id"] == tid
        assert challenge["serial"] == cid
        assert challenge["attributes"]["challenge"] in trig["detail"]["message"]
        code = svc.world.code("respond", "--challenge", challenge["attributes"]["challenge"])
        form = {"user": "alice", "pass": code, "transaction_id": tid}
        ok = _result(http.post("/validate/check", data=form))
        assert ok["result"] == {"status": True, "value": True, "authentication": "ACCEPT"}
        assert ok["detail"]["serial"] == cid
        replay = _result(http.post("/validate/check", data=form))
        assert replay["result"] == {"status": True, "value": False, "authentication": "REJECT"}
    assert code not in svc.log.read_text()


def test_check_without_transaction_is_an_identify_login(sqlite_service: Service) -> None:
    svc = sqlite_service
    code = svc.world.code("identify")
    with _bare(svc) as http:
        # JSON body, and the GET form with pass in the query string (never logged)
        ok = _result(http.post("/validate/samlcheck", json={"user": "alice", "pass": code}))
        assert ok["result"]["value"] == {"auth": True, "attributes": {"username": "alice"}}
        again = _result(http.get("/validate/check", params={"user": "alice", "pass": code}))
        assert again["result"]["authentication"] == "REJECT"
    assert code not in svc.log.read_text()


def test_every_refusal_is_the_same_answer(sqlite_service: Service) -> None:
    svc = sqlite_service
    with _bare(svc) as http:
        trig = _result(http.post("/validate/triggerchallenge", data={"user": "alice"}))
        tid = trig["detail"]["transaction_id"]
        answers = [
            http.post("/validate/check", data={"user": "alice", "pass": "12345678", "transaction_id": tid}),
            http.post("/validate/check", data={"user": "nobody", "pass": "12345678"}),
            http.post("/validate/check", data={"user": "alice", "pass": "12ab"}),
            http.post("/validate/check", data={"user": "nobody", "pass": "12345678", "transaction_id": tid}),
        ]
        shapes = [{k: v for k, v in _result(r).items() if k != "time"} for r in answers]
        assert all(s == shapes[0] for s in shapes)
        assert shapes[0]["result"]["authentication"] == "REJECT"
        missing = http.post("/validate/check", data={"user": "alice"})
        assert missing.status_code == 400
        assert missing.json()["result"]["error"]["code"] == 905
        nobody = _result(http.post("/validate/triggerchallenge", data={"user": "nobody"}))
        assert nobody["result"]["value"] == 0
    with httpx.Client(base_url=svc.base) as http:
        assert http.post("/validate/check", data={"user": "alice", "pass": "1"}).status_code == 401
