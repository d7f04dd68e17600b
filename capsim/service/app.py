"""The ASGI application: routers, probes, metrics, problem answers, body limits, access log.

Theory of operation
-------------------
1. :func:`create_app` builds the FastAPI application; the worker's verifier is opened by the
   lifespan (:func:`capsim.service.runtime.open_runtime`) when the worker starts and closed
   when it stops, so uvicorn's graceful shutdown finishes the requests in flight, then
   closes the store. :func:`app_from_env` is the factory uvicorn calls in each worker.
2. **Probes** need no key: ``/healthz`` (the process answers) and ``/readyz`` (the store
   answers and its schema is at this capsim's migration head; 503 otherwise). ``/metrics``
   (Prometheus text, every worker summed: :mod:`capsim.service.metrics`) needs an operator key.
3. **Problems.** Every error, including FastAPI's own (unknown route, wrong method, a body
   that does not match its schema), is answered as ``application/problem+json``
   (:mod:`capsim.service.problems`); schema errors list field locations and messages only,
   never the input that was refused. On a route whose key check is deferred to the
   endpoint's thread (:class:`capsim.service.auth.OneHopRoute`), a schema error first runs
   that check: a caller without a valid key, scope or rate gets that refusal, never the
   schema error, exactly as when the check ran before validation.
4. **Limits and logs** (:class:`_Edge`, a plain ASGI middleware): a body larger than
   ``max_body`` is refused with 413 before it is read (by ``Content-Length``, or while reading
   a chunked body); every answer counts in ``capsim_http_responses`` and gets one access-log
   line with method, route path, status and duration: never the query string (privacyIDEA
   clients may send ``pass`` there), never a body or header value. Rate-limit fields found by
   the guard are added to the answer.
5. **Garbage collection.** Once the worker has opened its verifier, everything built so far
   (modules, the application, its schemas, the store) is moved out of the collector's
   generations (:func:`gc.freeze`): a full collection during load then walks only what requests
   created since, instead of stalling the worker for tens of milliseconds while it walks the
   whole start-up heap (measured: 70–85 ms per full collection before, in the middle of the
   timed load; docs/performance.md).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from capsim._version import __version__
from capsim.errors import CapsimError
from capsim.service import metrics
from capsim.service.auth import Caller, pending_caller, runtime
from capsim.service.common import OPERATOR, ProblemOut
from capsim.service.document import decorate
from capsim.service.problems import PROBLEM_MEDIA_TYPE, HttpProblem, problem_body, problem_for
from capsim.service.runtime import Runtime, ServiceConfig, open_runtime

__all__ = ["app_from_env", "create_app"]

_log = logging.getLogger("capsim.service")
_access = logging.getLogger("capsim.service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STATUS_SLUGS = {
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    401: "unauthenticated",
    403: "forbidden",
}


def _problem_response(problem: HttpProblem, request: Request) -> JSONResponse:
    headers = dict(getattr(request.state, "rate_headers", {}) or {})
    headers.update(problem.headers)
    return JSONResponse(
        problem_body(problem, request.url.path),
        status_code=problem.problem.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _install_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpProblem)
        return _problem_response(exc, request)

    async def on_capsim(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CapsimError)
        return _problem_response(problem_for(exc), request)

    async def on_schema(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        pending = pending_caller(request)
        if pending is not None:  # authentication first: refused callers learn nothing of the schema
            try:
                await run_in_threadpool(pending.resolve)
            except HttpProblem as refusal:
                return _problem_response(refusal, request)
            except CapsimError as failure:
                return _problem_response(problem_for(failure), request)
        errors = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return _problem_response(
            HttpProblem("validation-error", "the request does not match its schema", errors=errors), request
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = _STATUS_SLUGS.get(exc.status_code, "validation-error" if exc.status_code < 500 else "internal")
        return _problem_response(HttpProblem(slug), request)

    async def on_error(request: Request, exc: Exception) -> Response:
        _log.error("unexpected %s answering %s %s", type(exc).__name__, request.method, request.url.path)
        return _problem_response(HttpProblem("internal", "internal error"), request)

    app.add_exception_handler(HttpProblem, on_problem)
    app.add_exception_handler(CapsimError, on_capsim)
    app.add_exception_handler(RequestValidationError, on_schema)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)


class _Edge:
    """Body limit, response counter, rate-limit fields and the access log (rule 4)."""

    def __init__(self, app: ASGIApp, max_body: Callable[[], int]) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        limit = self.max_body()
        state: dict[str, Any] = {"status": 500, "started": False}
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(scope, send)
            self._log(scope, 413, t0)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if state.get("too_large"):
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # stop reading; whatever the app answers becomes a 413
                    state["too_large"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def tracking_send(message: Message) -> None:
            if state.get("too_large"):
                if message["type"] == "http.response.start":
                    state["status"] = 413
                    state["started"] = True
                    await _send_413(scope, send)
                return
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                rate = scope.get("state", {}).get("rate_headers")
                if rate:
                    headers = list(message.get("headers", []))
                    present = {k.lower() for k, _ in headers}
                    for k, v in rate.items():
                        if k.lower().encode() not in present:
                            headers.append((k.lower().encode(), v.encode()))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        self._log(scope, int(state["status"]), t0)

    @staticmethod
    def _log(scope: Scope, status: int, t0: float) -> None:
        metrics.HTTP_ANSWERS.labels(status=str(status)).inc()
        route = scope.get("route")
        path = getattr(route, "path", None) or "-"
        _access.info(
            "%s %s %d %.1fms", scope.get("method", "-"), path, status, (time.perf_counter() - t0) * 1000
        )


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(scope: Scope, send: Send) -> None:
    body = json.dumps(problem_body(HttpProblem("payload-too-large"), scope.get("path", ""))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The application; ``config=None`` reads it in the lifespan from the environment
    (:meth:`ServiceConfig.from_env`). The OpenAPI document needs no database."""
    from capsim.service import privacyidea, v1_admin, v1_certs, v1_codes

    holder: dict[str, ServiceConfig] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = config or ServiceConfig.from_env()
        holder["config"] = cfg
        with open_runtime(cfg) as rt:
            app.state.runtime = rt
            _freeze_startup_objects()
            yield
            _log.info("worker stopping: store closed after the requests in flight")

    app = FastAPI(
        title="capsim verifier",
        version=__version__,
        summary="Verifies Mastercard CAP / Visa DPA codes for any bank backend",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    _install_handlers(app)
    app.include_router(v1_codes.router)
    app.include_router(v1_admin.router)
    app.include_router(v1_certs.router)
    app.include_router(privacyidea.router)

    @app.get("/healthz", tags=["probes"], summary="The process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="The store answers and its schema is current",
        responses={503: {"model": ProblemOut}},
    )
    def readyz(request: Request) -> dict[str, str]:
        rt: Runtime = runtime(request)
        try:
            current = rt.schema_current()
        except CapsimError:
            current = False
        if not current:
            raise HttpProblem("temporary-failure", "the store is unreachable or its schema is not current")
        return {"status": "ready"}

    @app.get(
        "/metrics",
        tags=["probes"],
        summary="Prometheus metrics of every worker (operator key)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus(caller: Caller = Depends(OPERATOR)) -> Response:  # noqa: B008 - FastAPI dependency
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    def max_body() -> int:
        cfg = holder.get("config") or config
        return cfg.max_body if cfg is not None else 64 * 1024

    app.add_middleware(_Edge, max_body=max_body)
    _document(app)
    return app


def _freeze_startup_objects() -> None:
    """Keep what the worker built at start-up out of the collector's way (rule 5)."""
    gc.collect()
    gc.freeze()


def _document(app: FastAPI) -> None:
    """Serve the document with the API key and the links (:func:`capsim.service.document.decorate`)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = decorate(plain())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The uvicorn factory of each worker (``capsim.service.app:app_from_env``)."""
    return create_app(None)
