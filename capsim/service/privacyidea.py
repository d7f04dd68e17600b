"""A privacyIDEA-compatible front (``/validate/…``): existing RADIUS, PAM, Keycloak, ADFS and SAML
plugins use capsim as their CAP backend.

Theory of operation
-------------------
1. **Parameters** come as privacyIDEA takes them: query string, form body
   (``application/x-www-form-urlencoded``) or JSON body; ``user``, ``pass``,
   ``transaction_id`` and ``serial`` are read, ``realm`` and everything else is ignored. The
   capsim user id is privacyIDEA's login name; ``serial`` is a capsim credential id.
2. **The credential** of a user is ``serial`` when given (it must be that user's), else the
   user's first active credential by id. A user without one is answered exactly like a wrong
   code: the verifier is called with a target that does not exist, so it pads the call like
   any other refusal (V30) and the answer says nothing about the user.
3. ``/validate/triggerchallenge`` (``user``) issues a **Respond** operation on that credential
   and answers privacyIDEA's challenge shape: ``transaction_id`` (the operation id),
   ``multi_challenge`` with the challenge in ``attributes.challenge`` and in the message.
4. ``/validate/check`` with ``transaction_id`` verifies ``pass`` as the Respond code of that
   operation (which must belong to the user's credential); without it, ``pass`` is an
   **Identify** login against the credential. ``/validate/samlcheck`` does the same and
   answers ``value: {"auth": …, "attributes": {…}}``.
5. **Answers** have privacyIDEA's envelope (``jsonrpc``, ``id``, ``result``, ``detail``,
   ``version``, ``time``): an accept is ``result.value = true`` with ``authentication:
   ACCEPT``, every refusal the same ``value = false``, ``authentication: REJECT`` and the
   same message; a missing parameter is ``status = false`` with privacyIDEA's error 905.
   The key (``Authorization``, bare or ``Bearer``) must be of an operator or verification
   client. Not supported: PIN prefixes in ``pass`` (the card checks the PIN), token
   enrolment and administration (``/token``, ``/user``, ``/auth``), ``otponly``, realms,
   response signatures, push and WebAuthn.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from capsim._version import __version__
from capsim.errors import CapsimError, InvalidCode, ValidationError
from capsim.service.auth import Caller, runtime
from capsim.service.common import PROBLEM_RESPONSES, VERIFICATION, measured, request_id
from capsim.service.runtime import Runtime
from capsim.verifier.model import CredentialState
from capsim.verifier.service import Verifier

__all__ = ["router"]

router = APIRouter(prefix="/validate", tags=["privacyIDEA"], responses=PROBLEM_RESPONSES)
Verifying = Annotated[Caller, Depends(VERIFICATION)]

_NOWHERE: Final = "cr-0000000000000000"  # never issued: refused like any unknown credential
_VERSION: Final = f"privacyIDEA 3.9 (capsim {__version__})"
_PARAMS: Final = {
    "type": "object",
    "properties": {
        "user": {"type": "string", "minLength": 1, "maxLength": 64},
        "pass": {"type": "string", "maxLength": 32},
        "transaction_id": {"type": "string", "maxLength": 64},
        "serial": {"type": "string", "maxLength": 64},
        "realm": {"type": "string", "maxLength": 64},
    },
}
_BODY: Final = {
    "requestBody": {
        "content": {
            "application/x-www-form-urlencoded": {"schema": _PARAMS},
            "application/json": {"schema": _PARAMS},
        }
    },
    "responses": {
        "200": {"description": "privacyIDEA's answer", "content": {"application/json": {}}},
        "400": {"description": "privacyIDEA's error (no parameter)", "content": {"application/json": {}}},
    },
}


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params.items())
    raw = await request.body()
    if raw:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind == "application/json":
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                params.update({str(k): str(v) for k, v in doc.items() if v is not None})
            else:
                params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            raise ValidationError("the body is neither a form nor a JSON object") from None
    return params


def _envelope(
    result: dict[str, Any], detail: dict[str, Any] | None = None, status: int = 200
) -> JSONResponse:
    body: dict[str, Any] = {
        "id": 1,
        "jsonrpc": "2.0",
        "result": result,
        "time": time.time(),
        "version": _VERSION,
    }
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def _missing(name: str) -> JSONResponse:
    error = {"code": 905, "message": f"ERR905: Missing parameter: {name!r}"}
    return _envelope({"status": False, "error": error}, status=400)


def credential_of(verifier: Verifier, user: str, serial: str | None) -> str:
    """The credential the request is about (rule 2), or a target that does not exist.

    The same store statements whether the user exists or not (the user and the credential list
    are read either way), so an answer's timing does not tell which user names exist (V30)."""
    try:
        listed = verifier.list_credentials(user)
    except ValidationError:  # no such user (or not a user id at all)
        listed = []
    creds = [c for c in listed if c.state is CredentialState.ACTIVE]
    if serial is not None:
        creds = [c for c in creds if c.credential_id == serial]
    return creds[0].credential_id if creds else _NOWHERE


def _target(rt: Runtime, user: str, serial: str | None, transaction_id: str | None) -> str:
    cid = credential_of(rt.verifier, user, serial)
    if transaction_id is None:
        return cid
    op = rt.verifier.get_operation(transaction_id)
    return transaction_id if op is not None and op.credential_id == cid else "op-" + _NOWHERE[3:]


async def _check(
    request: Request, background: BackgroundTasks, caller: Caller, *, saml: bool
) -> JSONResponse:
    params = await _params(request)
    user, code = params.get("user"), params.get("pass")
    if not user:
        return _missing("user")
    if code is None:
        return _missing("pass")
    rt = runtime(request)
    target = await run_in_threadpool(_target, rt, user, params.get("serial"), params.get("transaction_id"))
    rid = request_id(caller, None)
    serial = ""
    try:
        acc = await run_in_threadpool(
            measured, request, background, target, lambda: rt.verifier.verify(target, code, request_id=rid)
        )
        accepted, serial = True, acc.credential_id
    except (InvalidCode, ValidationError):
        accepted = False  # a malformed code is refused like a wrong one: plugins know no other answer
    if saml:
        value: Any = {"auth": accepted, "attributes": {"username": user} if accepted else {}}
    else:
        value = accepted
    result = {"status": True, "value": value, "authentication": "ACCEPT" if accepted else "REJECT"}
    detail: dict[str, Any] = {
        "message": "matching 1 tokens" if accepted else "wrong otp value",
        "threadid": 0,
    }
    if accepted:
        detail.update({"serial": serial, "type": "cap"})
    return _envelope(result, detail)


@router.post("/check", openapi_extra=_BODY, summary="privacyIDEA /validate/check")
async def check(request: Request, background: BackgroundTasks, caller: Verifying) -> JSONResponse:
    return await _check(request, background, caller, saml=False)


@router.get("/check", include_in_schema=False)
async def check_get(request: Request, background: BackgroundTasks, caller: Verifying) -> JSONResponse:
    return await _check(request, background, caller, saml=False)


@router.post("/samlcheck", openapi_extra=_BODY, summary="privacyIDEA /validate/samlcheck")
async def samlcheck(request: Request, background: BackgroundTasks, caller: Verifying) -> JSONResponse:
    return await _check(request, background, caller, saml=True)


@router.get("/samlcheck", include_in_schema=False)
async def samlcheck_get(request: Request, background: BackgroundTasks, caller: Verifying) -> JSONResponse:
    return await _check(request, background, caller, saml=True)


async def _trigger(request: Request) -> JSONResponse:
    params = await _params(request)
    user = params.get("user")
    if not user:
        return _missing("user")
    rt = runtime(request)
    cid = await run_in_threadpool(credential_of, rt.verifier, user, params.get("serial"))
    if cid == _NOWHERE:
        return _envelope({"status": True, "value": 0}, {"messages": [], "multi_challenge": [], "threadid": 0})
    try:
        op = await run_in_threadpool(lambda: rt.verifier.issue_operation(cid, mode="respond"))
    except CapsimError:
        return _envelope({"status": True, "value": 0}, {"messages": [], "multi_challenge": [], "threadid": 0})
    message = f"Enter the challenge {op.challenge} in your card reader (Respond) and type the code it shows"
    challenge = {
        "transaction_id": op.operation_id,
        "serial": cid,
        "type": "cap",
        "message": message,
        "client_mode": "interactive",
        "attributes": {"challenge": op.challenge, "expires_at": op.expires_at.isoformat()},
    }
    detail = {
        "transaction_id": op.operation_id,
        "transaction_ids": [op.operation_id],
        "message": message,
        "messages": [message],
        "multi_challenge": [challenge],
        "threadid": 0,
    }
    return _envelope({"status": True, "value": 1, "authentication": "CHALLENGE"}, detail)


@router.post("/triggerchallenge", openapi_extra=_BODY, summary="privacyIDEA /validate/triggerchallenge")
async def triggerchallenge(request: Request, caller: Verifying) -> JSONResponse:
    return await _trigger(request)


@router.get("/triggerchallenge", include_in_schema=False)
async def triggerchallenge_get(request: Request, caller: Verifying) -> JSONResponse:
    return await _trigger(request)
