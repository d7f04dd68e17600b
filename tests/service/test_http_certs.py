"""Certificate credentials through a real ``capsim verifier serve`` (a subprocess on a real socket),
on a SQLite file and on the throwaway PostgreSQL cluster: organisations, registration with proof
of possession, supplementary certificates, operation challenges signed by the emulated PIV card
through its APDUs (accepted once, refused on replay and for another operation, locked after
``max_fail``), the one uniform reject, administration by scope, and no secret in the log or in
any error body."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import Encoding

from capsim.cards.piv import PivAlgorithm
from capsim.cli import main
from capsim.client import (
    CertAcceptance,
    CertChallenge,
    Certificate,
    NewOrganisation,
    Organisation,
    OrgUser,
    VerifierClient,
)
from capsim.errors import InvalidCode, ValidationError
from capsim.verifier.policy import VerifierPolicy
from tests.cli.helpers import Run
from tests.service.conftest import Service, start_service
from tests.verifier.certpki import Ca, Token, new_token, write_pem
from tests.verifier.pgcluster import pg_unavailable_reason, session_cluster

pytestmark = pytest.mark.timeout(240)

IDENTITY = "1850775123456"
PAYEE = "FR7630006000011234567890189"
MAX_FAIL = VerifierPolicy().max_fail  # the stored policy of a fresh database


@dataclass
class Pki:
    """The service, its CA recorded as trust, and every secret the tests sent."""

    svc: Service
    ca: Ca
    secrets: list[str] = field(default_factory=list)


def _pki(svc: Service) -> Pki:
    ca = Ca("capsim HTTP CA", at=dt.datetime.now(dt.UTC))  # the service runs on the real clock
    tmp = svc.world.tmp
    anchor, crl = write_pem(tmp / "ca.pem", ca.cert), write_pem(tmp / "ca.crl", ca.crl())
    run = svc.world.v("cert", "trust", "--anchor", str(anchor), "--crl", str(crl))
    assert run.exit_code == 0, run.stderr
    return Pki(svc=svc, ca=ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    svc = start_service(tmp_path_factory.mktemp("certsvc"))
    yield _pki(svc)
    svc.stop()


def _reject(r: httpx.Response) -> dict[str, Any]:
    """The one uniform reject: same status, type, title and detail whatever failed."""
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert {k: body[k] for k in ("type", "title", "status", "detail")} == {
        "type": "urn:capsim:problem:invalid-code",
        "title": "Code rejected",
        "status": 422,
        "detail": "code rejected",
    }
    return body


def _org(p: Pki, name: str = "ACME Fournitures") -> dict[str, Any]:
    with p.svc.http("operator") as http:
        r = http.post("/v1/organisations", json={"name": name, "kind": "supplier"})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    org: dict[str, Any] = r.json()
    p.secrets.append(org["master_code"])
    return org


def _registration(
    p: Pki, org: dict[str, Any], token: Token, *, identity: str = IDENTITY, master: str | None = None,
    sign_other: bool = False, user_id: str | None = None, **extra: Any,
) -> httpx.Response:  # fmt: skip
    p.secrets.append(identity)
    with p.svc.http("verification") as http:
        ch = http.post(f"/v1/organisations/{org['org_id']}/registration-challenges").json()
        message = ch["message"].encode("ascii")
        body = {
            "master_code": master or org["master_code"],
            "identity_number": identity,
            "certificate": token.cert.public_bytes(_PEM).decode(),
            "challenge_id": ch["challenge_id"],
            "signature": token.sign(message + b"x" if sign_other else message).hex(),
            **extra,
        }
        path = f"/v1/organisations/{org['org_id']}" + (
            "/certificates" if user_id is None else f"/users/{user_id}/certificates"
        )
        return http.post(path, json=body)


def _pay(p: Pki, cert_id: str, amount: str = "150.00") -> dict[str, Any]:
    with p.svc.http("verification") as http:
        r = http.post(
            f"/v1/certificates/{cert_id}/challenges",
            json={"kind": "payment", "amount": amount, "currency": "EUR", "payee": PAYEE},
        )
    assert r.status_code == 201, r.text
    ch: dict[str, Any] = r.json()
    return ch


def _authenticate(p: Pki, challenge: dict[str, Any], signature: bytes) -> httpx.Response:
    with p.svc.http("verification") as http:
        return http.post(
            f"/v1/certificate-challenges/{challenge['challenge_id']}/authenticate",
            json={"signature": signature.hex()},
        )


def _audit(svc: Service, event: str) -> list[dict[str, Any]]:
    run = svc.world.v("audit", "--json")
    assert run.exit_code == 0, run.stderr
    return [r for r in run.json()["records"] if r["event"] == event]


_PEM = Encoding.PEM


# -- the flow, on one backend ---------------------------------------------------------------------


def _flow(p: Pki) -> None:
    """Register, approve a payment once, replay, other operation, lockout, unblock."""
    org = _org(p)
    assert len(org["master_code"]) == 16
    token = new_token(p.ca)
    # every failed registration check answers the same
    bodies = [
        _reject(_registration(p, org, token, master="0" * 16)),
        _reject(_registration(p, org, token, sign_other=True)),
        _reject(_registration(p, org, new_token(Ca("rogue CA", at=p.ca.at)))),
    ]
    assert len({json.dumps(b, sort_keys=True) for b in bodies}) == 1
    r = _registration(p, org, token, administrator=True, label="office key")
    assert r.status_code == 201, r.text
    cert = r.json()
    assert cert["state"] == "active"
    assert cert["supplementary"] is False
    cid = cert["cert_id"]

    # a signature approves its operation once, and no other operation
    pay = _pay(p, cid)
    assert pay["details"] == {"amount_minor": "15000", "currency": "978", "kind": "payment", "payee": PAYEE}
    signature = token.sign(pay["message"].encode("ascii"))
    other = _pay(p, cid, amount="1500.00")
    bodies = [_reject(_authenticate(p, other, signature))]  # the payment's signature, another amount
    ok = _authenticate(p, pay, signature)
    assert ok.status_code == 200, ok.text
    accepted = ok.json()
    assert accepted["cert_id"] == cid
    assert accepted["details"]["amount_minor"] == "15000"
    bodies.append(_reject(_authenticate(p, pay, signature)))  # replay
    bodies.append(_reject(_authenticate(p, {"challenge_id": "cc-0000000000000000"}, signature)))
    assert {json.dumps({**b, "instance": ""}) for b in bodies} == {json.dumps({**bodies[0], "instance": ""})}

    # lockout after max_fail wrong signatures (other challenges close after their attempts)
    intruder = new_token(p.ca)
    wrong = 0
    while wrong < MAX_FAIL:
        ch = _pay(p, cid)
        for _ in range(min(pay["max_attempts"], MAX_FAIL - wrong)):
            _reject(_authenticate(p, ch, intruder.sign(ch["message"].encode("ascii"))))
            wrong += 1
        with p.svc.http("operator") as http:
            state = http.get(f"/v1/certificates/{cid}").json()
        assert (state["locked_until"] is not None) == (wrong >= MAX_FAIL), (wrong, state)
    locked = _pay(p, cid)
    _reject(_authenticate(p, locked, token.sign(locked["message"].encode("ascii"))))  # right, but locked
    with p.svc.http("operator") as http:
        assert (
            http.post(f"/v1/certificates/{cid}/unblock", json={"reason": "called the holder"}).status_code
            == 200
        )
        assert "capsim_lockouts_total" in http.get("/metrics").text
    fresh = _pay(p, cid)
    assert _authenticate(p, fresh, token.sign(fresh["message"].encode("ascii"))).status_code == 200

    # the audit has every decision with its reason; the answers never had one
    reasons = [r["reason"] for r in _audit(p.svc, "cert-authenticate")]
    assert "wrong-signature" in reasons
    assert "wrong-signature-locked" in reasons
    assert reasons.count("signature") == 2


def test_certificate_flow_through_http_on_sqlite(pki: Pki) -> None:
    _flow(pki)


def test_certificate_flow_through_http_on_postgres(tmp_path: Path) -> None:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = session_cluster()
    dsn = cluster.create_schema(migrated=True)
    svc = start_service(tmp_path, db=dsn)
    try:
        p = _pki(svc)
        _flow(p)
        log = svc.stop()
        for secret in p.secrets:
            assert secret not in log
    finally:
        svc.stop()
        cluster.drop_schema(dsn)


# -- supplementary certificates, administrators, scopes ---------------------------------------------


def test_supplementary_certificate_and_the_organisation_administrator(pki: Pki) -> None:
    p = pki
    org, other_org = _org(p), _org(p, "Other SARL")
    admin_token, user_token, delegate = new_token(p.ca), new_token(p.ca), new_token(p.ca)
    admin = _registration(p, org, admin_token, identity="AB123456", administrator=True).json()
    user = _registration(p, org, user_token, identity="CD987654").json()
    # a supplementary certificate needs the same identity number under the identifier
    _reject(_registration(p, org, delegate, identity="EF000000", user_id=user["user_id"]))
    extra = _registration(p, org, delegate, identity="CD987654", user_id=user["user_id"])
    assert extra.status_code == 201, extra.text
    assert extra.json()["supplementary"] is True
    assert extra.json()["user_id"] == user["user_id"]
    # the same key again (nominative): refused like any other failed registration
    _reject(_registration(p, org, delegate, identity="GH111111"))
    outsider = _registration(p, other_org, new_token(p.ca), identity="ZZ999999", administrator=True).json()

    # only an enabled administrator may be bound to a customer-admin key
    refused = p.svc.world.v("client", "add", "x", "--scope", "customer-admin", "--as", user["user_id"])
    assert refused.exit_code == 13, refused.output
    assert "not an administrator" in refused.stderr
    key = p.svc.add_client("acme-admin", "--scope", "customer-admin", "--as", admin["user_id"])
    p.secrets.append(key)
    with p.svc.http("acme-admin") as http:
        assert http.get(f"/v1/organisations/{org['org_id']}").json()["name"] == "ACME Fournitures"
        users = http.get(f"/v1/organisations/{org['org_id']}/users").json()
        assert {u["user_id"] for u in users} == {admin["user_id"], user["user_id"]}
        certs = http.get(
            f"/v1/organisations/{org['org_id']}/certificates", params={"user_id": user["user_id"]}
        )
        assert len(certs.json()) == 2
        # another organisation, or an unknown one: the same 403, audited
        for path in (f"/v1/organisations/{other_org['org_id']}/users", "/v1/organisations/org-00/users",
                     f"/v1/certificates/{outsider['cert_id']}", "/v1/certificates/crt-00"):  # fmt: skip
            assert http.get(path).status_code == 403, path
        assert http.post(f"/v1/certificates/{outsider['cert_id']}/revoke", json={}).status_code == 403
        assert http.post(f"/v1/organisation-users/{outsider['user_id']}/remove").status_code == 403
        # a customer account's routes are not an organisation administrator's
        assert http.get("/v1/users").status_code == 403
        assert http.get(f"/v1/users/{p.svc.world.user}").status_code == 403
        # the bank's acts: creating organisations, unblocking, registering
        assert http.post("/v1/organisations", json={"name": "x"}).status_code == 403
        assert http.post(f"/v1/certificates/{extra.json()['cert_id']}/unblock", json={}).status_code == 403
        # its own organisation's acts
        revoked = http.post(f"/v1/certificates/{extra.json()['cert_id']}/revoke", json={"reason": "left"})
        assert revoked.json()["state"] == "revoked"
        gone = http.post(f"/v1/organisation-users/{user['user_id']}/remove")
        assert gone.status_code == 200, gone.text
        assert gone.json()["disabled"] is True
    with p.svc.http("operator") as http:
        assert http.get(f"/v1/certificates/{user['cert_id']}").json()["state"] == "revoked"
    with p.svc.http("verification") as http:
        assert http.post("/v1/organisations", json={"name": "x"}).status_code == 403
        assert http.get(f"/v1/organisations/{org['org_id']}/users").status_code == 403
    denied = [r for r in _audit(p.svc, "http") if r["outcome"] == "denied"]
    assert sum(r["reason"] == "account" for r in denied) >= 6


def test_no_secret_in_the_log_or_any_error_body(pki: Pki) -> None:
    p = pki
    org = _org(p)
    token = new_token(p.ca)
    bad = _registration(p, org, token, identity="XY5555555", master=org["master_code"][:-1] + "Z")
    text = bad.text
    # a malformed master code or identity is a validation error that never repeats it
    with p.svc.http("verification") as http:
        ch = http.post(f"/v1/organisations/{org['org_id']}/registration-challenges").json()
        body = {"master_code": "SECRET-not-a-code-!!", "identity_number": "ID-SECRET-%%", "certificate": "x",
                "challenge_id": ch["challenge_id"], "signature": "zz-SECRETSIG"}  # fmt: skip
        path = f"/v1/organisations/{org['org_id']}/certificates"
        for r in (http.post(path, json=body), http.post(path, json={**body, "extra": 1})):
            assert r.status_code == 400, r.text
            text += r.text
    for secret in (*p.secrets, "SECRET-not-a-code", "ID-SECRET", "SECRETSIG", "XY5555555"):
        assert secret not in text
    log = p.svc.log.read_text()
    assert "POST /v1/organisations/{org_id}/certificates" in log
    assert "Traceback" not in log
    for secret in p.secrets:
        assert secret not in log
    for record in _audit(p.svc, "cert-register"):
        assert not any(s in json.dumps(record) for s in p.secrets)


# -- the Python client and the command line over HTTP ----------------------------------------------


def test_the_python_client_gives_typed_answers(pki: Pki) -> None:
    p = pki
    token = new_token(p.ca, PivAlgorithm.RSA_2048)
    with VerifierClient(p.svc.base, p.svc.keys["operator"]) as c:
        org = c.create_organisation("Client SAS", kind="customer")
        p.secrets.append(org.master_code)
        assert isinstance(org, NewOrganisation)
        assert org.master_code not in repr(org)
        assert c.get_organisation(org.org_id) == Organisation(
            org_id=org.org_id, name="Client SAS", kind="customer", created_at=org.created_at
        )
        ch = c.registration_challenge(org.org_id)
        assert isinstance(ch, CertChallenge)
        assert ch.purpose == "register"
        assert ch.details == ()
        cert = c.register_certificate(
            org.org_id, master_code=org.master_code, identity_number=IDENTITY, certificate=token.der,
            challenge_id=ch.challenge_id, signature=token.sign(ch.message.encode()), administrator=True,
        )  # fmt: skip
        assert isinstance(cert, Certificate)
        assert Certificate.from_json(cert.to_dict()) == cert
        op = c.operation_challenge(cert.cert_id, kind="beneficiary", payee=PAYEE, name="Alice Martin")
        assert dict(op.details) == {"kind": "beneficiary", "name": "Alice Martin", "payee": PAYEE}
        assert op.to_dict()["details"] == dict(op.details)
        signature = token.sign(op.message.encode("ascii"))
        acc = c.authenticate(op.challenge_id, signature)
        assert isinstance(acc, CertAcceptance)
        assert (acc.cert_id, acc.details) == (cert.cert_id, op.details)
        with pytest.raises(InvalidCode):
            c.authenticate(op.challenge_id, signature)
        users = c.list_org_users(org.org_id)
        assert [(u.user_id, u.role) for u in users] == [(cert.user_id, "admin")]
        assert isinstance(users[0], OrgUser)
        assert [x.cert_id for x in c.list_certificates(org.org_id, user_id=cert.user_id)] == [cert.cert_id]
        assert c.certificate_lifecycle(cert.cert_id, "revoke", reason="lost").state == "revoked"
        with pytest.raises(ValidationError):
            c.get_certificate("crt-0000000000000000")


def _remote(p: Pki, *args: str, stdin: str | None = None, key: str = "operator") -> Run:
    env = {
        "CAPSIM_HOME": str(p.svc.world.tmp / "remote-home"),
        "CAPSIM_DB": None,
        "CAPSIM_API_KEY": p.svc.keys[key],
    }
    result = CliRunner(env=env).invoke(
        main, ["verifier", "cert", *args, "--db", p.svc.base], input=stdin, catch_exceptions=False
    )
    return Run(result.exit_code, result.stdout, result.stderr)


def test_verifier_cert_commands_against_the_service(pki: Pki, tmp_path: Path) -> None:
    p = pki
    token = new_token(p.ca)
    cert_file = write_pem(tmp_path / "token.pem", token.cert)
    org = _remote(p, "org-new", "Remote SA", "--json")
    assert org.exit_code == 0, org.stderr
    org_id, code = org.json()["org_id"], org.json()["master_code"]
    p.secrets.append(code)
    ch = _remote(p, "challenge", "--org", org_id, "--out", str(tmp_path / "reg.msg"), "--json")
    assert ch.exit_code == 0, ch.stderr
    sig = tmp_path / "reg.sig"
    sig.write_bytes(token.sign((tmp_path / "reg.msg").read_bytes()))
    args = ("register", "--org", org_id, "--cert", str(cert_file), "--challenge", ch.json()["challenge_id"],
            "--signature-file", str(sig), "--secrets-stdin")  # fmt: skip
    wrong = _remote(p, *args, stdin=f"{'0' * 16}\n{IDENTITY}\n", key="verification")
    assert (wrong.exit_code, wrong.stderr, wrong.stdout) == (10, "capsim: error: code rejected\n", "")
    reg = _remote(p, *args, "--admin", "--json", stdin=f"{code}\n{IDENTITY}\n", key="verification")
    assert reg.exit_code == 0, reg.stderr
    cid = reg.json()["cert_id"]
    assert code not in reg.output
    assert IDENTITY not in reg.output
    op = _remote(p, "operation", cid, "--payment", "99.90", "EUR", PAYEE, "--out", str(tmp_path / "op.msg"))
    assert op.exit_code == 0, op.stderr
    challenge_id = op.stdout.split()[1]
    signature = token.sign((tmp_path / "op.msg").read_bytes()).hex()
    accepted = _remote(p, "authenticate", challenge_id, "--signature", signature, "--json")
    assert accepted.exit_code == 0, accepted.stderr
    assert accepted.json()["accepted"] is True
    replay = _remote(p, "authenticate", challenge_id, "--signature", signature, "--json")
    assert replay.exit_code == 10
    assert json.loads(replay.stdout)["accepted"] is False
    listed = _remote(p, "list", "--org", org_id, "--json").json()["certificates"]
    assert [c["cert_id"] for c in listed] == [cid]
    assert _remote(p, "users", "--org", org_id).stdout.startswith(reg.json()["user_id"] + "  admin")
    assert _remote(p, "unblock", cid, "--json").json()["state"] == "active"
    assert _remote(p, "remove-user", reg.json()["user_id"], "--json").json()["disabled"] is True
    trust = _remote(p, "trust", "--anchor", str(cert_file))
    assert trust.exit_code == 13
    assert "not available against a verifier service" in trust.stderr
    acting = _remote(p, "users", "--org", org_id, "--as", reg.json()["user_id"])
    assert acting.exit_code == 13
    assert "--as" in acting.stderr
