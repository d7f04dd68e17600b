"""A Python client for the verifier's HTTP API (``/v1``, docs/http-api.md), on httpx.

Theory of operation
-------------------
1. One :class:`VerifierClient` talks to one service (``base_url``) with one API key, given
   as an argument (the client never reads it from a file or the environment; the command line
   takes it from ``CAPSIM_API_KEY``). The key travels only in the ``Authorization: Bearer``
   header; neither it nor any code, PIN or PAN is ever logged or put into an error message.
2. Every method is one request; the answer is the service's JSON object (or list), as
   documented in docs/openapi.json. Request ids become the ``Idempotency-Key`` header, so a
   retry with the same id returns the recorded answer (and another request under the same id
   is refused).
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

from types import TracebackType
from typing import Any, Final

import httpx

from capsim.errors import (
    CapsimError,
    ConfigError,
    InvalidCode,
    RequestConflict,
    StateFileError,
    TemporaryFailure,
    ValidationError,
)

__all__ = ["PROBLEM_PREFIX", "RetryLater", "VerifierClient", "error_for"]

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


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


class VerifierClient:
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
    ) -> dict[str, Any]:
        body = _drop_none({"user_id": user_id, "customer_id": customer_id, "admin": admin, "name": name})
        return self._object("POST", "/v1/users", body=body)

    def list_users(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        return self._list("/v1/users", params=None if customer_id is None else {"customer_id": customer_id})

    def get_user(self, user_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/users/{user_id}")

    def list_credentials(self, user_id: str) -> list[dict[str, Any]]:
        return self._list(f"/v1/users/{user_id}/credentials")

    def issue_activation_code(self, user_id: str, *, ttl_s: int | None = None) -> dict[str, Any]:
        body = _drop_none({"ttl_s": ttl_s})
        return self._object("POST", f"/v1/users/{user_id}/activation-codes", body=body)

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
    ) -> dict[str, Any]:
        body = _drop_none(
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
        return self._object("POST", "/v1/enrolments", body=body, request_id=request_id)

    def get_credential(self, credential_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/credentials/{credential_id}")

    def lifecycle(self, credential_id: str, action: str, *, reason: str = "") -> dict[str, Any]:
        """``action`` is ``suspend``, ``resume``, ``revoke`` or ``unlock``."""
        if action not in ("suspend", "resume", "revoke", "unlock"):
            raise ValidationError("action: expected suspend, resume, revoke or unlock")
        return self._object("POST", f"/v1/credentials/{credential_id}/{action}", body={"reason": reason})

    def admin_activate(self, credential_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/credentials/{credential_id}/admin-activate")

    def activate(self, credential_id: str, code: str, *, request_id: str | None = None) -> dict[str, Any]:
        path = f"/v1/credentials/{credential_id}/activate"
        return self._object("POST", path, body={"code": code}, request_id=request_id)

    def report_lost(
        self,
        credential_id: str,
        *,
        replacement_pan: str | None = None,
        replacement_psn: str | None = None,
        issuer_key_id: str | None = None,
        profile: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _drop_none(
            {
                "replacement_pan": replacement_pan,
                "replacement_psn": replacement_psn,
                "issuer_key_id": issuer_key_id,
                "profile": profile,
            }
        )
        return self._object("POST", f"/v1/credentials/{credential_id}/report-lost", body=body)

    def replace(
        self, credential_id: str, *, pan: str, psn: str, issuer_key_id: str, profile: dict[str, Any] | None
    ) -> dict[str, Any]:
        body = _drop_none({"pan": pan, "psn": psn, "issuer_key_id": issuer_key_id, "profile": profile})
        return self._object("POST", f"/v1/credentials/{credential_id}/replace", body=body)

    def resync(self, credential_id: str, codes: list[str], *, request_id: str | None = None) -> int:
        path = f"/v1/credentials/{credential_id}/resync"
        return int(self._object("POST", path, body={"codes": codes}, request_id=request_id)["last_atc"])

    def advance_floor(self, credential_id: str, atc: int) -> int:
        path = f"/v1/credentials/{credential_id}/advance-floor"
        return int(self._object("POST", path, body={"atc": atc})["last_atc"])

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
    ) -> dict[str, Any]:
        body = _drop_none(
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
        return self._object("POST", f"/v1/credentials/{credential_id}/operations", body=body)

    def get_operation(self, operation_id: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/operations/{operation_id}")

    def verify(self, operation_id: str, code: str, *, request_id: str | None = None) -> dict[str, Any]:
        path = f"/v1/operations/{operation_id}/verify"
        return self._object("POST", path, body={"code": code}, request_id=request_id)

    def login(self, credential_id: str, code: str, *, request_id: str | None = None) -> dict[str, Any]:
        path = f"/v1/credentials/{credential_id}/login"
        return self._object("POST", path, body={"code": code}, request_id=request_id)

    # -- audit ------------------------------------------------------------------------------------
    def audit_check(self, tip: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._object("POST", "/v1/audit/check", body={"tip": tip})

    def audit_tip(self) -> dict[str, Any]:
        return self._object("GET", "/v1/audit/tip")
