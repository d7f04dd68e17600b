"""What the routers share: guards by scope, idempotency keys, measured verifications.

Theory of operation
-------------------
1. **Guards.** :data:`OPERATOR`, :data:`VERIFICATION` (operator or verification client) and
   :data:`ADMINISTRATION` (operator or customer administrator) are the route dependencies of
   :class:`capsim.service.auth.Guard`.
2. **Idempotency keys** (:func:`request_id`): the ``Idempotency-Key`` header, 1–64 printable
   ASCII characters, becomes the verifier's request id ``k:<client id>:<key>``, so keys are
   scoped per client: the same key and the same request return the recorded answer, the same
   key with another request is ``RequestConflict`` (409). Without the header every request
   gets a fresh random id.
3. **Verifications are measured** (:func:`measured`): outcome counter and latency histogram;
   after a reject, a background task (run once the answer is sent, so every reject answers in
   the same time) reads the credential and counts a lockout exactly once across workers: the
   store's counter for ``lockout:<credential>`` keyed by the lock's end time returns 1 only to
   the first worker that sees that lock.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from fastapi import BackgroundTasks, Request
from pydantic import BaseModel

from capsim.errors import InvalidCode, RequestConflict, TemporaryFailure, ValidationError
from capsim.service.auth import Caller, Guard, runtime
from capsim.service.metrics import LOCKOUTS, STORE_ERRORS, VERIFICATION_SECONDS, VERIFICATIONS
from capsim.service.problems import PROBLEM_MEDIA_TYPE, PROBLEMS, HttpProblem
from capsim.service.runtime import Runtime
from capsim.verifier.clients import ClientScope
from capsim.verifier.model import CredentialState

__all__ = [
    "ADMINISTRATION",
    "OPERATOR",
    "PROBLEM_RESPONSES",
    "VERIFICATION",
    "ProblemOut",
    "measured",
    "not_found",
    "request_id",
]

T = TypeVar("T")

OPERATOR: Final = Guard(ClientScope.OPERATOR)
VERIFICATION: Final = Guard(ClientScope.OPERATOR, ClientScope.VERIFICATION)
ADMINISTRATION: Final = Guard(ClientScope.OPERATOR, ClientScope.CUSTOMER_ADMIN)

_KEY_RE: Final = re.compile(r"^[\x21-\x7e]{1,64}$")


class ProblemOut(BaseModel):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, Any]] | None = None


def _problem_response(status: int) -> dict[str, Any]:
    titles = sorted({p.title for p in PROBLEMS.values() if p.status == status})
    return {
        "description": "; ".join(titles),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemOut"}}},
    }


#: The problem answers every route may give (documented in the OpenAPI document).
PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    s: _problem_response(s) for s in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}


def request_id(caller: Caller, key: str | None) -> str:
    """The verifier request id of an ``Idempotency-Key`` (module docstring, rule 2)."""
    if key is None:
        return "r:" + secrets.token_hex(16)
    if not _KEY_RE.match(key):
        raise ValidationError("Idempotency-Key: expected 1..64 printable ASCII characters")
    return f"k:{caller.client.client_id}:{key}"


def measured(request: Request, background: BackgroundTasks, target: str | None, call: Callable[[], T]) -> T:
    """Run one verification with its metrics (module docstring, rule 3)."""
    t0 = time.perf_counter()
    outcome = "error"
    try:
        result = call()
        outcome = "accept"
        return result
    except InvalidCode:
        outcome = "reject"
        if target is not None:
            background.add_task(_count_lockout, runtime(request), target)
        raise
    except RequestConflict:
        outcome = "conflict"
        raise
    except TemporaryFailure:
        STORE_ERRORS.inc()
        raise
    except ValidationError:
        outcome = "invalid"
        raise
    finally:
        VERIFICATIONS.labels(outcome=outcome).inc()
        VERIFICATION_SECONDS.observe(time.perf_counter() - t0)


def _count_lockout(rt: Runtime, target: str) -> None:
    try:
        cid = target
        if target.startswith("op-"):
            op = rt.verifier.get_operation(target)
            if op is None:
                return
            cid = op.credential_id
        cred = rt.verifier.get_credential(cid)
        if cred is None or cred.locked_until is None:
            return
        kind = "permanent" if cred.state is CredentialState.BLOCKED else "temporary"
        with rt.session.transaction() as tx:
            first = tx.hit_rate(f"lockout-{kind}:{cid}", int(cred.locked_until.timestamp())) == 1
        if first:
            LOCKOUTS.labels(kind=kind).inc()
    except Exception:  # a metric must never fail a request
        STORE_ERRORS.inc()


def not_found(what: str) -> HttpProblem:
    """A 404 problem naming the kind of resource (never echoing the id)."""
    return HttpProblem("not-found", f"no such {what}")
