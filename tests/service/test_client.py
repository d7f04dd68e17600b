"""``capsim.client.VerifierClient`` against a real ``capsim verifier serve``: problems come back
as capsim's own errors, a rate limit as ``RetryLater`` with the service's ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import FrozenInstanceError

import pytest

from capsim.cli.remote import _card as card_fields
from capsim.client import (
    ActivationCode,
    AuditReport,
    Credential,
    Operation,
    RetryLater,
    User,
    VerifierClient,
    VerifyResult,
)
from capsim.errors import CapsimError, ConfigError, InvalidCode, RequestConflict, ValidationError
from capsim.verifier.audit import AuditTip
from tests.service.conftest import Service, start_service

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service allowing each client 8 requests a minute."""
    service = start_service(tmp_path_factory.mktemp("client"), extra=("--rate-client", "8"))
    yield service
    service.stop()


def _until_limited(api: VerifierClient) -> RetryLater:
    for _ in range(12):
        try:
            api.get_operation("op-does-not-exist")
        except ValidationError:
            continue  # 404: counted, not yet limited
        except RetryLater as exc:
            return exc
    raise AssertionError("no 429 within 12 requests at 8 a minute")


def test_problems_become_capsim_errors_and_429_carries_retry_after(limited: Service) -> None:
    cid = limited.world.enroll()
    with VerifierClient(limited.base, limited.keys["verification"]) as api:
        code = limited.world.code("identify")
        assert api.login(cid, code, request_id="k1").credential_id == cid
        with pytest.raises(InvalidCode):
            api.login(cid, code, request_id="k2")  # a replay
        with pytest.raises(RequestConflict):
            api.login(cid, limited.world.code("identify"), request_id="k1")
        with pytest.raises(ValidationError):
            api.get_operation("op-does-not-exist")
        with pytest.raises(ConfigError):
            api.list_users()  # the verification scope may not administer
        caught = _until_limited(api)
        assert caught.rate_limited
        assert caught.retry_after is not None
        assert caught.retry_after > 0
    with pytest.raises(ConfigError), VerifierClient(limited.base, limited.keys["operator"] + "x") as api:
        api.list_users()
    with pytest.raises(ConfigError):
        VerifierClient("ftp://example", "k")


def test_answers_are_typed_values_mirroring_the_api(sqlite_service: Service) -> None:
    """Typed, frozen results with aware datetimes; ``to_dict`` gives the API's JSON back."""
    world = sqlite_service.world
    with VerifierClient(sqlite_service.base, sqlite_service.keys["operator"]) as api:
        user = api.add_user("typed-user")
        assert isinstance(user, User)
        assert (user.user_id, user.disabled, user.created_by) == ("typed-user", False, None)
        assert user.role in ("user", "admin")
        assert user.created_at.tzinfo is not None
        act = api.issue_activation_code("typed-user")
        assert isinstance(act, ActivationCode)
        assert act.expires_at > user.created_at
        card = card_fields(world.card, None)
        cred = api.enroll(act.code, first_code=world.code("identify"), request_id="typed-enrol", **card)
        assert isinstance(cred, Credential)
        assert (cred.user_id, cred.state, cred.pan_last4) == ("typed-user", "active", card["pan"][-4:])
        with pytest.raises(FrozenInstanceError):
            cred.state = "revoked"  # type: ignore[misc]
        assert api.list_credentials("typed-user") == [api.get_credential(cred.credential_id)]
        op = api.issue_operation(cred.credential_id, mode="identify")
        assert isinstance(op, Operation)
        assert (op.credential_id, op.mode, op.consumed, op.fields) == (
            cred.credential_id,
            "identify",
            False,
            (),
        )
        assert op.expires_at > op.created_at
        with sqlite_service.http() as http:
            raw = http.get(f"/v1/operations/{op.operation_id}").json()
        assert api.get_operation(op.operation_id).to_dict() == raw
        got = api.verify(op.operation_id, world.code("identify"), request_id="typed-verify")
        assert isinstance(got, VerifyResult)
        assert (got.credential_id, got.operation_id, got.mode) == (
            cred.credential_id,
            op.operation_id,
            "identify",
        )
        assert api.get_operation(op.operation_id).consumed
        suspended = api.lifecycle(cred.credential_id, "suspend", reason="typed")
        assert suspended.state == "suspended"
        report = api.audit_check()
        assert isinstance(report, AuditReport)
        assert report.intact
        assert report.problems == ()
        tip = api.audit_tip()
        assert isinstance(tip, AuditTip)
        assert api.audit_check(tip).intact


def test_an_identifier_never_changes_the_request_path(sqlite_service: Service) -> None:
    """An id with '/', '?' or '..' is refused before sending (before, 'alice/credentials' read
    the credential list as if it were a user, and 'alice?x=1' read alice)."""
    with VerifierClient(sqlite_service.base, sqlite_service.keys["operator"]) as api:
        api.add_user("seg-user")
        with pytest.raises(ValidationError):
            api.get_user("seg-user/credentials")
        with pytest.raises(ValidationError):
            api.get_user("seg-user?x=1")
        with pytest.raises(ValidationError):
            api.lifecycle("..", "suspend")
        assert api.get_user("seg-user").user_id == "seg-user"


def test_an_answer_of_another_shape_is_a_capsim_error() -> None:
    """A missing field, a wrong type or a naive time is a CapsimError, never a KeyError."""
    good = {"code": "ABCD-EFGH", "user_id": "u", "expires_at": "2030-01-01T00:00:00Z"}
    assert ActivationCode.from_json(good).expires_at.tzinfo is not None
    assert ActivationCode.from_json(good).to_dict() == good
    for bad in (
        {"user_id": "u", "expires_at": "2030-01-01T00:00:00Z"},
        {**good, "user_id": 7},
        {**good, "expires_at": "2030-01-01T00:00:00"},
        {**good, "expires_at": "tomorrow"},
        ["not", "an", "object"],
    ):
        with pytest.raises(CapsimError) as caught:
            ActivationCode.from_json(bad)
        assert type(caught.value) is CapsimError
    with pytest.raises(CapsimError):
        VerifyResult.from_json(
            {"credential_id": "c", "operation_id": None, "atc": True, "mode": "identify",
             "accepted_at": "2030-01-01T00:00:00Z"}
        )  # fmt: skip
