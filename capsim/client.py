"""A Python client for the verifier's HTTP API (``/v1``, docs/http-api.md), on httpx.

Theory of operation
-------------------
1. One :class:`VerifierClient` talks to one service (``base_url``) with one API key, given
   as an argument (the client never reads it from a file or the environment; the command line
   takes it from ``CAPSIM_API_KEY``). The key travels only in the ``Authorization: Bearer``
   header; neither it nor any code, PIN or PAN is ever logged or put into an error message.
2. Every method is one request; the answer is a **typed, frozen value** mirroring the API's
   response model of docs/openapi.json (:class:`Operation`, :class:`VerifyResult`,
   :class:`Credential`, :class:`User`, :class:`ActivationCode`, :class:`AuditReport`; for
   certificate credentials :class:`Organisation`, :class:`NewOrganisation`,
   :class:`CertChallenge`, :class:`Certificate`, :class:`OrgUser`, :class:`CertAcceptance`, in
   :mod:`capsim.client_certs`, with their methods; and the
   library's own :class:`~capsim.verifier.audit.AuditTip`), with times as aware
   :class:`~datetime.datetime`; an answer that does not have the documented shape is a
   :class:`~capsim.errors.CapsimError`, never a ``KeyError``. ``to_dict()`` gives the JSON
   object back. Request ids become the ``Idempotency-Key`` header, so a retry with the same id
   returns the recorded answer (and another request under the same id is refused).
3. An error answer (RFC 9457 ``application/problem+json``) becomes the capsim error of its
   ``type`` (:func:`error_for`): ``invalid-code`` → :class:`~capsim.errors.InvalidCode` (the one
   uniform reject), ``request-conflict`` → :class:`~capsim.errors.RequestConflict`,
   ``temporary-failure`` and ``rate-limited`` → :class:`RetryLater` (a
   :class:`~capsim.errors.TemporaryFailure` carrying ``Retry-After``), ``validation-error``,
   ``not-found``, ``payload-too-large`` … → :class:`~capsim.errors.ValidationError`,
   ``config-error``, ``unauthenticated``, ``forbidden`` → :class:`~capsim.errors.ConfigError`,
   ``server-state`` → :class:`~capsim.errors.StateFileError`; anything else is a
   :class:`~capsim.errors.CapsimError`. A service that cannot be reached, or times out, is a
   :class:`RetryLater` too: nothing was decided that the caller knows of, and a retry with the
   same request id is safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final

import httpx

from capsim._clientparts import Answer, drop_none, field_value, seg, shape
from capsim.client_certs import (
    CertAcceptance,
    CertChallenge,
    Certificate,
    CertificateCalls,
    NewOrganisation,
    Organisation,
    OrgUser,
)
from capsim.errors import (
    CapsimError,
    ConfigError,
    InvalidCode,
    RequestConflict,
    StateFileError,
    TemporaryFailure,
    ValidationError,
)
from capsim.verifier.audit import AuditProblem, AuditTip

__all__ = [
    "PROBLEM_PREFIX",
    "ActivationCode",
    "AuditReport",
    "CertAcceptance",
    "CertChallenge",
    "Certificate",
    "Credential",
    "NewOrganisation",
    "Operation",
    "OrgUser",
    "Organisation",
    "RetryLater",
    "User",
    "VerifierClient",
    "VerifyResult",
    "error_for",
]

#: The prefix of every problem ``type`` the service answers with.
PROBLEM_PREFIX: Final = "urn:capsim:problem:"
_INPUT: Final = frozenset(
    {"validation-error", "not-found", "payload-too-large", "method-not-allowed", "unsupported-media-type"}
)
_REFUSED: Final = frozenset({"config-error", "unauthenticated", "forbidden"})


class RetryLater(TemporaryFailure):
    """The service could not decide now (503, 429 rate limit, unreachable): retry after
    ``retry_after`` seconds (``None`` when the service named no delay) with the same request id."""

    def __init__(self, message: str, *, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for(response: httpx.Response) -> CapsimError:
    """The capsim error of an error answer (module docstring, rule 3)."""
    slug, detail = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        kind = body.get("type")
        if isinstance(kind, str) and kind.startswith(PROBLEM_PREFIX):
            slug = kind[len(PROBLEM_PREFIX) :]
        text = body.get("detail")
        detail = text if isinstance(text, str) else ""
    status = response.status_code
    said = f"the service answered {status}" + (f": {detail}" if detail else "")
    if slug == "invalid-code":
        return InvalidCode()
    if slug == "request-conflict":
        return RequestConflict()
    if slug in ("temporary-failure", "rate-limited") or status in (429, 503):
        limited = slug == "rate-limited" or status == 429
        return RetryLater(
            said, retry_after=_retry_after(response.headers.get("Retry-After")), rate_limited=limited
        )
    if slug in _INPUT:
        return ValidationError(said)
    if slug in _REFUSED:
        return ConfigError(said)
    if slug == "server-state":
        return StateFileError(said)
    return CapsimError(said)


# ------------------------------------------------------------------------------------------------
# Typed answers (rule 2): one frozen dataclass per response model of the API


@dataclass(frozen=True, slots=True)
class Operation(Answer):
    """An operation (challenge) as ``POST /v1/credentials/{id}/operations`` answers it."""

    operation_id: str
    credential_id: str
    mode: str
    challenge: str
    created_at: datetime
    expires_at: datetime
    amount_minor: int | None
    currency: str | None
    payee: str | None
    fields: tuple[str, ...]
    payment: bool
    attempts: int
    max_attempts: int
    consumed: bool


@dataclass(frozen=True, slots=True)
class VerifyResult(Answer):
    """An accepted code (verify, login, activate): its ledger row. A refusal is never a value:
    it is :class:`~capsim.errors.InvalidCode`."""

    credential_id: str
    operation_id: str | None
    atc: int
    mode: str
    accepted_at: datetime


@dataclass(frozen=True, slots=True)
class Credential(Answer):
    """A credential (a card bound to a user); the PAN's last four digits only."""

    credential_id: str
    user_id: str
    customer_id: str
    state: str
    pan_last4: str
    psn: str
    reader_profile: str
    last_atc: int
    fail_count: int
    max_fail: int
    locked_until: datetime | None
    label: str
    created_at: datetime
    replaces: str | None
    replaced_by: str | None


@dataclass(frozen=True, slots=True)
class User(Answer):
    """A user of a customer account (``role``: user or admin)."""

    user_id: str
    customer_id: str
    role: str
    created_at: datetime
    created_by: str | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class ActivationCode(Answer):
    """A single-use activation code, shown once (the service keeps only its digest)."""

    code: str
    user_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditReport:
    """``POST /v1/audit/check``: the chain's records, whether it is intact, where sealing starts
    and every defect found (the library's :class:`~capsim.verifier.audit.AuditProblem`)."""

    records: int
    intact: bool
    sealed_from: int | None
    problems: tuple[AuditProblem, ...]

    @classmethod
    def from_json(cls, obj: object) -> AuditReport:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("problems"), list):
            raise shape("expected an audit report")
        problems = []
        for p in obj["problems"]:
            if not isinstance(p, Mapping):
                raise shape("expected an audit problem")
            problems.append(
                AuditProblem(
                    seq=field_value(p, "seq", "int"),
                    kind=field_value(p, "kind", "str"),
                    detail=field_value(p, "detail", "str"),
                )
            )
        return cls(
            records=field_value(obj, "records", "int"),
            intact=field_value(obj, "intact", "bool"),
            sealed_from=field_value(obj, "sealed_from", "int?"),
            problems=tuple(problems),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "intact": self.intact,
            "sealed_from": self.sealed_from,
            "problems": [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in self.problems],
        }


class VerifierClient(CertificateCalls):
    """The ``/v1`` API of one verifier service, authenticated by one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url: expected an http:// or https:// URL")
        if not api_key or any(c.isspace() for c in api_key):
            raise ConfigError(
                "api_key: expected the client's API key (shown once by 'capsim verifier client add')"
            )
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VerifierClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> Any:
        headers = {} if request_id is None else {"Idempotency-Key": request_id}
        try:
            response = self._http.request(method, path, json=body, params=params, headers=headers)
        except httpx.TimeoutException:
            raise RetryLater("the verifier service did not answer in time") from None
        except httpx.HTTPError as exc:
            raise RetryLater(f"the verifier service is unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise error_for(response)
        try:
            return response.json()
        except ValueError:
            raise CapsimError(f"the service answered {response.status_code} without JSON") from None

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        value = self._call(method, path, **kwargs)
        if not isinstance(value, dict):
            raise CapsimError("the service answered with an unexpected shape (expected an object)")
        return value

    def _list(self, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        value = self._call("GET", path, **kwargs)
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            raise CapsimError("the service answered with an unexpected shape (expected a list)")
        return value

    # -- users and activation codes -------------------------------------------------------------
    def add_user(
        self, user_id: str, *, customer_id: str | None = None, admin: bool | None = None, name: str = ""
    ) -> User:
        body = drop_none({"user_id": user_id, "customer_id": customer_id, "admin": admin, "name": name})
        return User.from_json(self._call("POST", "/v1/users", body=body))

    def list_users(self, customer_id: str | None = None) -> list[User]:
        params = None if customer_id is None else {"customer_id": customer_id}
        return [User.from_json(x) for x in self._list("/v1/users", params=params)]

    def get_user(self, user_id: str) -> User:
        return User.from_json(self._call("GET", f"/v1/users/{seg(user_id)}"))

    def list_credentials(self, user_id: str) -> list[Credential]:
        return [Credential.from_json(x) for x in self._list(f"/v1/users/{seg(user_id)}/credentials")]

    def issue_activation_code(self, user_id: str, *, ttl_s: int | None = None) -> ActivationCode:
        body = drop_none({"ttl_s": ttl_s})
        return ActivationCode.from_json(
            self._call("POST", f"/v1/users/{seg(user_id)}/activation-codes", body=body)
        )

    # -- enrolment and credentials ----------------------------------------------------------------
    def enroll(
        self,
        activation_code: str,
        *,
        pan: str,
        psn: str,
        profile: dict[str, Any],
        issuer_key_id: str,
        first_code: str | None = None,
        label: str = "",
        request_id: str | None = None,
    ) -> Credential:
        body = drop_none(
            {
                "activation_code": activation_code,
                "pan": pan,
                "psn": psn,
                "profile": profile,
                "issuer_key_id": issuer_key_id,
                "first_code": first_code,
                "label": label,
            }
        )
        return Credential.from_json(self._call("POST", "/v1/enrolments", body=body, request_id=request_id))

    def get_credential(self, credential_id: str) -> Credential:
        return Credential.from_json(self._call("GET", f"/v1/credentials/{seg(credential_id)}"))

    def lifecycle(self, credential_id: str, action: str, *, reason: str = "") -> Credential:
        """``action`` is ``suspend``, ``resume``, ``revoke`` or ``unlock``."""
        if action not in ("suspend", "resume", "revoke", "unlock"):
            raise ValidationError("action: expected suspend, resume, revoke or unlock")
        path = f"/v1/credentials/{seg(credential_id)}/{action}"
        return Credential.from_json(self._call("POST", path, body={"reason": reason}))

    def admin_activate(self, credential_id: str) -> Credential:
        return Credential.from_json(
            self._call("POST", f"/v1/credentials/{seg(credential_id)}/admin-activate")
        )

    def activate(self, credential_id: str, code: str, *, request_id: str | None = None) -> VerifyResult:
        path = f"/v1/credentials/{seg(credential_id)}/activate"
        return VerifyResult.from_json(self._call("POST", path, body={"code": code}, request_id=request_id))

    def report_lost(
        self,
        credential_id: str,
        *,
        replacement_pan: str | None = None,
        replacement_psn: str | None = None,
        issuer_key_id: str | None = None,
        profile: dict[str, Any] | None = None,
    ) -> Credential | None:
        """The replacement credential when a replacement card was given, else ``None``."""
        body = drop_none(
            {
                "replacement_pan": replacement_pan,
                "replacement_psn": replacement_psn,
                "issuer_key_id": issuer_key_id,
                "profile": profile,
            }
        )
        out = self._object("POST", f"/v1/credentials/{seg(credential_id)}/report-lost", body=body)
        new = out.get("replacement")
        return None if new is None else Credential.from_json(new)

    def replace(
        self, credential_id: str, *, pan: str, psn: str, issuer_key_id: str, profile: dict[str, Any] | None
    ) -> Credential:
        body = drop_none({"pan": pan, "psn": psn, "issuer_key_id": issuer_key_id, "profile": profile})
        return Credential.from_json(
            self._call("POST", f"/v1/credentials/{seg(credential_id)}/replace", body=body)
        )

    def resync(self, credential_id: str, codes: list[str], *, request_id: str | None = None) -> int:
        path = f"/v1/credentials/{seg(credential_id)}/resync"
        out = self._object("POST", path, body={"codes": codes}, request_id=request_id)
        return int(field_value(out, "last_atc", "int"))

    def advance_floor(self, credential_id: str, atc: int) -> int:
        path = f"/v1/credentials/{seg(credential_id)}/advance-floor"
        return int(field_value(self._object("POST", path, body={"atc": atc}), "last_atc", "int"))

    # -- operations and verification ----------------------------------------------------------------
    def issue_operation(
        self,
        credential_id: str,
        *,
        mode: str,
        reference: str | None = None,
        amount: int | str | None = None,
        currency: str | None = None,
        payee: str | None = None,
        fields: list[str] | None = None,
        payment: bool = False,
        ttl_s: int | None = None,
    ) -> Operation:
        body = drop_none(
            {
                "mode": mode,
                "reference": reference,
                "amount": amount,
                "currency": currency,
                "payee": payee,
                "fields": fields,
                "payment": payment,
                "ttl_s": ttl_s,
            }
        )
        return Operation.from_json(
            self._call("POST", f"/v1/credentials/{seg(credential_id)}/operations", body=body)
        )

    def get_operation(self, operation_id: str) -> Operation:
        return Operation.from_json(self._call("GET", f"/v1/operations/{seg(operation_id)}"))

    def verify(self, operation_id: str, code: str, *, request_id: str | None = None) -> VerifyResult:
        """The code of an operation; a refusal raises :class:`~capsim.errors.InvalidCode`."""
        path = f"/v1/operations/{seg(operation_id)}/verify"
        return VerifyResult.from_json(self._call("POST", path, body={"code": code}, request_id=request_id))

    def login(self, credential_id: str, code: str, *, request_id: str | None = None) -> VerifyResult:
        """An Identify code without an operation; a refusal raises :class:`~capsim.errors.InvalidCode`."""
        path = f"/v1/credentials/{seg(credential_id)}/login"
        return VerifyResult.from_json(self._call("POST", path, body={"code": code}, request_id=request_id))

    # -- audit ------------------------------------------------------------------------------------
    def audit_check(self, tip: AuditTip | None = None) -> AuditReport:
        body = {"tip": None if tip is None else json.loads(tip.to_json())}
        return AuditReport.from_json(self._call("POST", "/v1/audit/check", body=body))

    def audit_tip(self) -> AuditTip:
        try:
            return AuditTip.from_json(json.dumps(self._object("GET", "/v1/audit/tip")))
        except ValidationError:
            raise shape("expected an audit tip") from None
