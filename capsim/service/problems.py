"""RFC 9457 problem details: one stable ``type`` per error class, no secret in any of them.

Theory of operation
-------------------
1. Every error answer of the service is ``application/problem+json`` with ``type``,
   ``title``, ``status`` and ``detail``; the ``type`` is one of :data:`PROBLEMS` and never
   changes meaning (integrators switch on it, not on the text).
2. A capsim error maps by class (:func:`problem_for`): :class:`~capsim.errors.InvalidCode` is
   the one uniform reject (same type, title, detail and status for every refusal reason, V30);
   :class:`~capsim.errors.RequestConflict` is 409 (an ``Idempotency-Key`` used for another
   request); :class:`~capsim.errors.TemporaryFailure` is 503 with ``Retry-After``.
3. The detail of a validation error is the capsim message, which names the argument and never
   repeats a code, PIN, key or PAN; request-schema errors list only the field location and
   pydantic's message, never the rejected input. Unexpected errors say nothing but
   ``internal error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from capsim.errors import (
    CapsimError,
    ConfigError,
    InvalidCode,
    RequestConflict,
    StateFileError,
    TemporaryFailure,
    ValidationError,
)

__all__ = ["PROBLEMS", "PROBLEM_MEDIA_TYPE", "HttpProblem", "Problem", "problem_body", "problem_for"]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_BASE: Final = "urn:capsim:problem:"


@dataclass(frozen=True)
class Problem:
    """One problem type: its URI, HTTP status and title."""

    slug: str
    status: int
    title: str

    @property
    def type(self) -> str:
        return _BASE + self.slug


#: Every problem type the service answers with (docs/http-api.md, "Errors").
PROBLEMS: Final = {
    p.slug: p
    for p in (
        Problem("invalid-code", 422, "Code rejected"),
        Problem("request-conflict", 409, "Idempotency key used for another request"),
        Problem("temporary-failure", 503, "Temporarily unable to decide"),
        Problem("validation-error", 400, "Invalid request"),
        Problem("config-error", 422, "Refused by the verifier's configuration"),
        Problem("not-found", 404, "Not found"),
        Problem("unauthenticated", 401, "Authentication required"),
        Problem("forbidden", 403, "Not allowed for this client"),
        Problem("rate-limited", 429, "Too many requests"),
        Problem("payload-too-large", 413, "Request body too large"),
        Problem("method-not-allowed", 405, "Method not allowed"),
        Problem("unsupported-media-type", 415, "Unsupported media type"),
        Problem("server-state", 500, "Server state problem"),
        Problem("internal", 500, "Internal error"),
    )
}


class HttpProblem(Exception):  # noqa: N818 - an answer, not a failure of the service
    """Raised inside the service to answer with a problem (``slug`` of :data:`PROBLEMS`)."""

    def __init__(
        self, slug: str, detail: str = "", *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or PROBLEMS[slug].title)
        self.problem = PROBLEMS[slug]
        self.detail = detail or self.problem.title
        self.headers = headers or {}
        self.extra = extra


def problem_for(exc: CapsimError) -> HttpProblem:
    """The problem answering a capsim error (module docstring, rule 2)."""
    if isinstance(exc, InvalidCode):
        return HttpProblem("invalid-code", "code rejected")
    if isinstance(exc, RequestConflict):
        return HttpProblem("request-conflict", "Idempotency-Key already used for another request")
    if isinstance(exc, TemporaryFailure):
        return HttpProblem(
            "temporary-failure", "nothing was accepted or counted; retry", headers={"Retry-After": "1"}
        )
    if isinstance(exc, ValidationError):
        return HttpProblem("validation-error", str(exc))
    if isinstance(exc, StateFileError):
        return HttpProblem("server-state", "the verifier's key files do not match its database")
    if isinstance(exc, ConfigError):
        return HttpProblem("config-error", str(exc))
    return HttpProblem("internal", "internal error")


def problem_body(problem: HttpProblem, instance: str) -> dict[str, Any]:
    """The JSON body of ``problem`` for the request path ``instance``."""
    body: dict[str, Any] = {
        "type": problem.problem.type,
        "title": problem.problem.title,
        "status": problem.problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    body.update(problem.extra)
    return body
