"""``/v1`` routes that take codes: operations, verification, login, activation, resync, floor.

Every route is a thin translation: parse the body (:mod:`capsim.service.schemas`), call one
:class:`~capsim.verifier.service.Verifier` method, return its value as JSON. Refusals of a
code are the verifier's one :class:`~capsim.errors.InvalidCode`, answered as the one
``invalid-code`` problem (:mod:`capsim.service.problems`). The ``Idempotency-Key`` header is
honoured by the routes that declare it (:func:`capsim.service.common.request_id`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Path, Request, status

from capsim.service.auth import Caller, OneHopRoute, runtime
from capsim.service.common import OPERATOR, PROBLEM_RESPONSES, VERIFICATION, measured, not_found, request_id
from capsim.service.schemas import (
    AcceptanceOut,
    ActivateIn,
    CodeIn,
    FloorIn,
    FloorOut,
    OperationIn,
    OperationOut,
    ResyncIn,
)
from capsim.verifier.model import BatchItem

__all__ = ["router"]

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES, route_class=OneHopRoute)

CredentialId = Annotated[str, Path(min_length=1, max_length=64)]
OperationId = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=64,
        description="1-64 printable ASCII characters, scoped to the calling client",
    ),
]
Verifying = Annotated[Caller, Depends(VERIFICATION)]
Operating = Annotated[Caller, Depends(OPERATOR)]


@router.post(
    "/credentials/{credential_id}/operations",
    status_code=status.HTTP_201_CREATED,
    tags=["operations"],
    summary="Create an operation (challenge) on a credential",
)
def create_operation(
    credential_id: CredentialId, body: OperationIn, request: Request, caller: Verifying
) -> OperationOut:
    batch = (
        None
        if body.batch is None
        else [BatchItem(payee=b.payee, amount_minor=b.amount_minor) for b in body.batch]
    )
    op = runtime(request).verifier.issue_operation(
        credential_id,
        mode=body.mode,
        reference=body.reference,
        amount=body.amount,
        currency=body.currency,
        payee=body.payee,
        fields=body.fields,
        batch=batch,
        payment=body.payment,
        ttl_s=body.ttl_s,
    )
    return OperationOut.of(op)


@router.get("/operations/{operation_id}", tags=["operations"], summary="Read an operation")
def get_operation(operation_id: OperationId, request: Request, caller: Verifying) -> OperationOut:
    op = runtime(request).verifier.get_operation(operation_id)
    if op is None:
        raise not_found("operation")
    return OperationOut.of(op)


@router.post(
    "/operations/{operation_id}/verify",
    tags=["operations"],
    summary="Verify the code the user typed for an operation",
)
def verify_operation(
    *,
    operation_id: OperationId,
    body: CodeIn,
    request: Request,
    background: BackgroundTasks,
    caller: Verifying,
    idempotency_key: IdempotencyKey = None,
) -> AcceptanceOut:
    rid = request_id(caller, idempotency_key)
    verifier = runtime(request).verifier
    acc = measured(
        request, background, operation_id, lambda: verifier.verify(operation_id, body.code, request_id=rid)
    )
    return AcceptanceOut.of(acc)


@router.post(
    "/credentials/{credential_id}/login",
    tags=["credentials"],
    summary="Log in with an Identify code (no operation)",
)
def login(
    *,
    credential_id: CredentialId,
    body: CodeIn,
    request: Request,
    background: BackgroundTasks,
    caller: Verifying,
    idempotency_key: IdempotencyKey = None,
) -> AcceptanceOut:
    if credential_id.startswith("op-"):
        raise not_found("credential")
    rid = request_id(caller, idempotency_key)
    verifier = runtime(request).verifier
    acc = measured(
        request, background, credential_id, lambda: verifier.verify(credential_id, body.code, request_id=rid)
    )
    return AcceptanceOut.of(acc)


@router.post(
    "/credentials/{credential_id}/activate",
    tags=["credentials"],
    summary="Activate a pending credential with its first Identify code",
)
def activate(
    *,
    credential_id: CredentialId,
    body: ActivateIn,
    request: Request,
    background: BackgroundTasks,
    caller: Verifying,
    idempotency_key: IdempotencyKey = None,
) -> AcceptanceOut:
    rid = request_id(caller, idempotency_key)
    verifier = runtime(request).verifier
    acc = measured(
        request,
        background,
        credential_id,
        lambda: verifier.activate(credential_id, body.code, request_id=rid),
    )
    return AcceptanceOut.of(acc)


@router.post(
    "/credentials/{credential_id}/resync",
    tags=["credentials"],
    summary="Resynchronise with consecutive Identify codes",
)
def resync(
    *,
    credential_id: CredentialId,
    body: ResyncIn,
    request: Request,
    background: BackgroundTasks,
    caller: Operating,
    idempotency_key: IdempotencyKey = None,
) -> FloorOut:
    rid = request_id(caller, idempotency_key)
    verifier = runtime(request).verifier
    atc = measured(
        request, background, credential_id, lambda: verifier.resync(credential_id, body.codes, request_id=rid)
    )
    return FloorOut(last_atc=atc)


@router.post(
    "/credentials/{credential_id}/advance-floor",
    tags=["credentials"],
    summary="Raise the replay floor to an ATC seen in a payment authorisation",
)
def advance_floor(
    credential_id: CredentialId, body: FloorIn, request: Request, caller: Operating
) -> FloorOut:
    return FloorOut(last_atc=runtime(request).verifier.advance_floor(credential_id, body.atc))
