"""Who is calling, what it may do, and how often: API keys, scopes, denials and rate limits.

Theory of operation
-------------------
1. **Every request but the probes is authenticated.** The key comes in ``Authorization:
   Bearer <key>`` (or the bare key, as privacyIDEA plugins send their token); it is parsed
   without any I/O (:func:`capsim.verifier.clients.parse_api_key`), then the client row is
   read and the digest compared in constant time. A revoked client is refused like an unknown
   one.
2. **Scopes.** Each route names the scopes it admits (:class:`Guard`); a customer
   administrator's client is also bound to its administrator user, whose own account the
   route checks with :func:`capsim.verifier.authority.authorize` (:func:`admin_guard`)
   before the verifier checks it again.
3. **Every denial is audited**, in a store transaction of its own right after the lookup that
   found it: event ``http``, outcome ``denied``, the reason (``unauthenticated``, ``scope``,
   ``account``), the client id when known, the method and the route template. Never the key.
4. **Rate limits** are fixed windows counted in the store (``StoreTransaction.hit_rate``, one
   atomic upsert per hit), right after the client lookup: one bucket per client and, for
   routes on a credential or an operation, one per credential, so N workers enforce one limit.
   Over a limit the answer is 429 with ``Retry-After``; every authenticated answer carries the
   ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers).
5. **No cache, one round trip.** Nothing of a client is kept between requests: every request
   reads the client row afresh, so a key revoked or rotated is refused by every worker from
   the first request whose lookup starts after the change committed. On PostgreSQL the lookup
   and the counters run as single statements outside a transaction
   (:meth:`capsim.verifier.postgres.PostgresStore.autocommit`): one round trip for the key,
   none for ``BEGIN``/``COMMIT``; the other stores use one transaction as before.
6. **One thread hand-over per request.** The check is blocking store I/O, so it runs in a
   worker thread. On a :class:`OneHopRoute` (the ``/v1`` routers) the guard, an async
   dependency, only hands a :class:`PendingCaller` to the endpoint, which resolves it first
   thing in its own worker-thread call: nothing of the route runs before the check. Parameters
   and the body are validated by FastAPI before the endpoint runs; when they fail, the
   schema-error handler resolves the pending check first (:func:`pending_caller`), so a caller
   without a valid key, scope or rate gets that refusal, never the schema error. Elsewhere the
   guard runs the check in a thread call of its own before the route, as before.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated, Any, get_origin, get_type_hints

from fastapi import Request, params
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from capsim.errors import ValidationError
from capsim.service.metrics import DENIALS
from capsim.service.problems import HttpProblem
from capsim.service.runtime import Runtime
from capsim.verifier.audit import AuditEntry
from capsim.verifier.authority import Power, authorize
from capsim.verifier.clients import ApiClient, ClientScope, key_matches, parse_api_key
from capsim.verifier.model import User
from capsim.verifier.postgres import PostgresStore
from capsim.verifier.store import StoreTransaction

__all__ = [
    "Caller",
    "Guard",
    "OneHopRoute",
    "PendingCaller",
    "admin_guard",
    "audit_denial",
    "pending_caller",
    "runtime",
]

ALL_SCOPES = frozenset(ClientScope)


@dataclass(frozen=True)
class Caller:
    """An authenticated client; ``admin`` is a customer administrator's user."""

    client: ApiClient
    admin: User | None = None

    @property
    def acting_user(self) -> str | None:
        """What the verifier calls ``acting_user`` (``None``: the bank's operator)."""
        return self.client.acting_user if self.client.scope is ClientScope.CUSTOMER_ADMIN else None

    @property
    def is_operator(self) -> bool:
        return self.client.scope is ClientScope.OPERATOR


def runtime(request: Request) -> Runtime:
    """The worker's :class:`~capsim.service.runtime.Runtime`."""
    rt: Runtime = request.app.state.runtime
    return rt


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "") or "?")


def audit_denial(
    tx: StoreTransaction,
    request: Request,
    reason: str,
    client_id: str | None,
    credential_id: str | None = None,
) -> None:
    """Append the audit record of a refused request (module docstring, rule 3)."""
    DENIALS.labels(reason=reason).inc()
    tx.append_audit(
        AuditEntry(
            event="http",
            outcome="denied",
            reason=reason,
            credential_id=credential_id,
            node="capsim-http",
            details={"client": client_id or "", "method": request.method, "route": _route(request)},
        )
    )


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    return rest.strip() if rest and scheme.lower() == "bearer" else header.strip()


class Guard:
    """A route dependency: authenticate, check the scope, count the rate (module docstring)."""

    def __init__(self, *scopes: ClientScope) -> None:
        self.scopes = frozenset(scopes) if scopes else ALL_SCOPES

    async def __call__(self, request: Request) -> Caller | PendingCaller:
        """On a :class:`OneHopRoute` that takes this guard as a parameter, a
        :class:`PendingCaller` its endpoint resolves first thing in its own thread (rule 6);
        elsewhere the checked :class:`Caller`, found in a thread of its own."""
        pending = PendingCaller(self, request)
        route = request.scope.get("route")
        if isinstance(route, OneHopRoute) and route.guard is self:
            request.state.pending_caller = pending
            return pending
        return await run_in_threadpool(pending.resolve)

    def check(self, request: Request) -> Caller:
        """Authenticate, check the scope and count the rate (blocking: store I/O)."""
        rt = runtime(request)
        presented = _presented_key(request)
        parsed = parse_api_key(presented) if presented else None
        target = request.path_params.get("credential_id")
        operation = request.path_params.get("operation_id")
        window = rt.config.rate_window_s
        now = time.time()
        slot = int(now // window)
        reset = max(1, int(window - (now % window)))
        denied: str | None = None
        over: str | None = None
        client: ApiClient | None = None
        admin: User | None = None
        remaining: dict[str, int] = {}
        with _reads(rt) as tx:
            if parsed is not None:
                client = tx.get_client(parsed[0])
                if client is not None and (
                    client.revoked_at is not None or not key_matches(parsed[1], client.key_digest)
                ):
                    client = None
            if client is None:
                denied = "unauthenticated"
            elif client.scope not in self.scopes:
                denied = "scope"
            else:
                if client.acting_user is not None:
                    admin = tx.get_user(client.acting_user)
                limits = [("client", client.client_id, rt.config.rate_client)]
                if operation is not None and target is None and rt.config.rate_credential > 0:
                    op = tx.get_operation(str(operation))
                    target = None if op is None else op.credential_id
                if target is not None:
                    limits.append(("credential", str(target), rt.config.rate_credential))
                for name, key, quota in limits:
                    if quota <= 0:
                        continue
                    hits = tx.hit_rate(f"{name}:{key}", slot)
                    remaining[name] = max(0, quota - hits)
                    if hits > quota and over is None:
                        over = name
        if denied is not None:
            with rt.session.transaction() as audit_tx:
                audit_denial(audit_tx, request, denied, None if client is None else client.client_id, target)
        if denied == "unauthenticated":
            raise HttpProblem(
                "unauthenticated", "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if denied == "scope":
            raise HttpProblem("forbidden", "this client's scope does not allow this request")
        headers = _rate_headers(rt, remaining, reset)
        request.state.rate_headers = headers
        if over is not None:
            DENIALS.labels(reason="rate").inc()
            raise HttpProblem(
                "rate-limited",
                f"the {over} rate limit is exhausted for this window",
                headers={**headers, "Retry-After": str(reset)},
            )
        assert client is not None
        return Caller(client=client, admin=admin)


@dataclass
class PendingCaller:
    """A guard's check not run yet: :meth:`resolve` runs it once (rule 6)."""

    guard: Guard
    request: Request
    caller: Caller | None = None

    def resolve(self) -> Caller:
        """The checked caller, or the guard's refusal (blocking: store I/O)."""
        if self.caller is None:
            self.caller = self.guard.check(self.request)
        return self.caller


def pending_caller(request: Request) -> PendingCaller | None:
    """This request's guard check if it has not run yet (the schema-error handler runs it
    before answering, so authentication still comes first: rule 6)."""
    pending = getattr(request.state, "pending_caller", None)
    return pending if isinstance(pending, PendingCaller) and pending.caller is None else None


class OneHopRoute(APIRoute):
    """A route whose guard check runs in the endpoint's own worker thread (rule 6).

    Only an endpoint with exactly one :class:`Guard` parameter (``Annotated[Caller,
    Depends(guard)]``) and no guard among the route's other dependencies takes this path;
    any other route behaves as a plain :class:`~fastapi.routing.APIRoute`.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        found = _guard_parameter(endpoint, kwargs.get("dependencies"))
        self.guard: Guard | None = None if found is None else found[1]
        if found is not None:
            endpoint = _resolving(endpoint, found[0])
        super().__init__(path, endpoint, **kwargs)


def _guard_parameter(endpoint: Callable[..., Any], dependencies: Any) -> tuple[str, Guard] | None:
    if any(isinstance(getattr(d, "dependency", None), Guard) for d in dependencies or ()):
        return None
    hints = get_type_hints(endpoint, include_extras=True)
    found: list[tuple[str, Guard]] = []
    for name, parameter in inspect.signature(endpoint).parameters.items():
        hint = hints.get(name)
        metadata = getattr(hint, "__metadata__", ()) if get_origin(hint) is Annotated else ()
        marks = [*metadata, parameter.default]
        found += [
            (name, m.dependency)
            for m in marks
            if isinstance(m, params.Depends) and isinstance(m.dependency, Guard)
        ]
    return found[0] if len(found) == 1 else None


def _resolving(endpoint: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``endpoint`` with its guard parameter resolved before its body runs."""

    def resolved(value: Any) -> Caller:
        return value if isinstance(value, Caller) else PendingCaller.resolve(value)

    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = await run_in_threadpool(resolved, kwargs[name])
            return await endpoint(*args, **kwargs)

        return run_async

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs[name] = resolved(kwargs[name])
        return endpoint(*args, **kwargs)

    return run


def _reads(rt: Runtime) -> AbstractContextManager[StoreTransaction]:
    """Where the guard reads the client and counts its hits (module docstring, rule 5)."""
    store = rt.session.store
    if isinstance(store, PostgresStore):
        return store.autocommit()
    return rt.session.transaction()


def _rate_headers(rt: Runtime, remaining: dict[str, int], reset: int) -> dict[str, str]:
    if not remaining:
        return {}
    quotas = {"client": rt.config.rate_client, "credential": rt.config.rate_credential}
    w = rt.config.rate_window_s
    policy = ", ".join(f'"{name}";q={quotas[name]};w={w}' for name in remaining)
    tightest = min(remaining, key=lambda name: remaining[name])
    return {"RateLimit-Policy": policy, "RateLimit": f'"{tightest}";r={remaining[tightest]};t={reset}'}


def admin_guard(request: Request, caller: Caller, power: Power, customer_id: str | None) -> None:
    """Refuse (403, audited) a customer administrator acting outside its powers or account;
    the operator passes. ``customer_id=None`` is an unknown target: refused for an
    administrator, so it learns nothing about other accounts."""
    if caller.is_operator:
        return
    try:
        if customer_id is None:
            raise ValidationError("unknown target")
        authorize(caller.admin, power, customer_id)
    except ValidationError:
        rt = runtime(request)
        with rt.session.transaction() as tx:
            audit_denial(tx, request, "account", caller.client.client_id)
        raise HttpProblem("forbidden", "not an administrator of this customer account for this act") from None
