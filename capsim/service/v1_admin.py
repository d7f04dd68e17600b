"""``/v1`` administration routes: users, activation codes, enrolment, lifecycle, PIN scripts, audit.

Who may call what (docs/http-api.md, "Clients and scopes"): the bank's operator everything;
a customer administrator's client adds users to, issues activation codes for, lists, and
suspends, resumes and revokes the credentials of its own customer account only. For those
routes :func:`capsim.service.auth.admin_guard` checks the account first (403, audited) and
the verifier checks it again through ``acting_user`` (:mod:`capsim.verifier.authority`).
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Header, Path, Query, Request, status

from capsim.hexinput import parse_hex
from capsim.service.auth import Caller, OneHopRoute, admin_guard, runtime
from capsim.service.common import ADMINISTRATION, OPERATOR, PROBLEM_RESPONSES, not_found, request_id
from capsim.service.problems import HttpProblem
from capsim.service.schemas import (
    ActivationCodeIn,
    ActivationCodeOut,
    AuditCheckIn,
    AuditCheckOut,
    AuditProblemOut,
    AuditTipOut,
    CredentialOut,
    EnrolmentIn,
    LockIn,
    LostIn,
    LostOut,
    PinScriptIn,
    PinScriptOut,
    ReasonIn,
    ReplaceIn,
    UserIn,
    UserOut,
)
from capsim.verifier.audit import AuditTip
from capsim.verifier.authority import Power
from capsim.verifier.model import Credential, CredentialProfile
from capsim.verifier.service import Verifier
from capsim.verifier.session import check_audit

__all__ = ["router"]

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES, route_class=OneHopRoute)

Id = Annotated[str, Path(min_length=1, max_length=64)]
Administering = Annotated[Caller, Depends(ADMINISTRATION)]
Operating = Annotated[Caller, Depends(OPERATOR)]


def _credential(request: Request, caller: Caller, credential_id: str, power: Power) -> Credential:
    cred = runtime(request).verifier.get_credential(credential_id)
    admin_guard(request, caller, power, None if cred is None else cred.customer_id)
    if cred is None:
        raise not_found("credential")
    return cred


def _profile(raw: dict[str, object] | None) -> CredentialProfile | None:
    return None if raw is None else CredentialProfile.from_dict(raw)


# -- users and activation codes ----------------------------------------------------------------
@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"], summary="Add a user")
def add_user(body: UserIn, request: Request, caller: Administering) -> UserOut:
    if caller.admin is not None:
        admin_guard(request, caller, Power.ADD_USER, body.customer_id or caller.admin.customer_id)
    user = runtime(request).verifier.add_user(
        body.user_id,
        customer_id=body.customer_id,
        admin=body.admin,
        acting_user=caller.acting_user,
        name=body.name,
    )
    return UserOut.of(user)


@router.get("/users", tags=["users"], summary="List users (of one customer account)")
def list_users(
    request: Request,
    caller: Administering,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[UserOut]:
    if not caller.is_operator:
        own = caller.admin.customer_id if caller.admin is not None else None
        admin_guard(request, caller, Power.LIST, own if customer_id in (None, own) else None)
        customer_id = own
    return [UserOut.of(u) for u in runtime(request).verifier.list_users(customer_id)]


@router.get("/users/{user_id}", tags=["users"], summary="Read a user")
def get_user(user_id: Id, request: Request, caller: Administering) -> UserOut:
    user = runtime(request).verifier.get_user(user_id)
    admin_guard(request, caller, Power.LIST, None if user is None else user.customer_id)
    if user is None:
        raise not_found("user")
    return UserOut.of(user)


@router.get("/users/{user_id}/credentials", tags=["users"], summary="A user's credentials")
def list_credentials(user_id: Id, request: Request, caller: Administering) -> list[CredentialOut]:
    verifier = runtime(request).verifier
    user = verifier.get_user(user_id)
    admin_guard(request, caller, Power.LIST, None if user is None else user.customer_id)
    if user is None:
        raise not_found("user")
    return [CredentialOut.of(c) for c in verifier.list_credentials(user_id, acting_user=caller.acting_user)]


@router.post(
    "/users/{user_id}/activation-codes",
    status_code=status.HTTP_201_CREATED,
    tags=["users"],
    summary="Issue a single-use activation code (shown once)",
)
def issue_activation_code(
    user_id: Id, body: ActivationCodeIn, request: Request, caller: Administering
) -> ActivationCodeOut:
    verifier = runtime(request).verifier
    user = verifier.get_user(user_id)
    admin_guard(request, caller, Power.ISSUE_ACTIVATION, None if user is None else user.customer_id)
    if user is None:
        raise not_found("user")
    code = verifier.issue_activation_code(user_id, acting_user=caller.acting_user, ttl_s=body.ttl_s)
    return ActivationCodeOut.of(code)


@router.post("/enrolments", status_code=status.HTTP_201_CREATED, tags=["credentials"], summary="Enrol a card")
def enroll(
    body: EnrolmentIn,
    request: Request,
    caller: Operating,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=64)] = None,
) -> CredentialOut:
    profile = _profile(body.profile)
    assert profile is not None
    cred = runtime(request).verifier.enroll(
        body.activation_code,
        pan=body.pan,
        psn=body.psn,
        profile=profile,
        issuer_key_id=body.issuer_key_id,
        first_code=body.first_code,
        request_id=request_id(caller, idempotency_key),
        label=body.label,
    )
    return CredentialOut.of(cred)


# -- credentials -----------------------------------------------------------------------------
@router.get("/credentials/{credential_id}", tags=["credentials"], summary="Read a credential")
def get_credential(credential_id: Id, request: Request, caller: Administering) -> CredentialOut:
    return CredentialOut.of(_credential(request, caller, credential_id, Power.LIST))


class _LifecycleAct(Protocol):
    """A :class:`~capsim.verifier.service.Verifier` lifecycle method, unbound."""

    def __call__(
        self, verifier: Verifier, credential_id: str, /, *, acting_user: str | None = ..., reason: str = ...
    ) -> Credential: ...


def _lifecycle(name: str, act: _LifecycleAct, power: Power, summary: str) -> None:
    def route(credential_id: Id, body: ReasonIn, request: Request, caller: Administering) -> CredentialOut:
        _credential(request, caller, credential_id, power)
        verifier = runtime(request).verifier
        return CredentialOut.of(
            act(verifier, credential_id, acting_user=caller.acting_user, reason=body.reason)
        )

    route.__name__ = f"credential_{name}"
    router.post(f"/credentials/{{credential_id}}/{name}", tags=["credentials"], summary=summary)(route)


_lifecycle("suspend", Verifier.suspend, Power.SUSPEND, "Suspend a credential")
_lifecycle("resume", Verifier.resume, Power.RESUME, "Resume a suspended credential")
_lifecycle("revoke", Verifier.revoke, Power.REVOKE, "Revoke a credential (terminal)")
_lifecycle("unlock", Verifier.unlock, Power.UNLOCK, "Clear a lock or unblock a blocked credential (operator)")


@router.post(
    "/credentials/{credential_id}/admin-activate",
    tags=["credentials"],
    summary="Activate a pending credential without a first code (operator)",
)
def admin_activate(credential_id: Id, request: Request, caller: Operating) -> CredentialOut:
    return CredentialOut.of(runtime(request).verifier.admin_activate(credential_id))


@router.post(
    "/credentials/{credential_id}/lock", tags=["credentials"], summary="Lock a credential for a time"
)
def lock(credential_id: Id, body: LockIn, request: Request, caller: Operating) -> CredentialOut:
    return CredentialOut.of(
        runtime(request).verifier.lock(credential_id, seconds=body.seconds, reason=body.reason)
    )


@router.post(
    "/credentials/{credential_id}/report-lost",
    tags=["credentials"],
    summary="Report a card lost (with its replacement when reissued)",
)
def report_lost(credential_id: Id, body: LostIn, request: Request, caller: Operating) -> LostOut:
    new = runtime(request).verifier.report_lost(
        credential_id,
        replacement_pan=body.replacement_pan,
        replacement_psn=body.replacement_psn,
        issuer_key_id=body.issuer_key_id,
        profile=_profile(body.profile),
    )
    return LostOut(replacement=None if new is None else CredentialOut.of(new))


@router.post("/credentials/{credential_id}/replace", tags=["credentials"], summary="Replace a card (reissue)")
def replace(credential_id: Id, body: ReplaceIn, request: Request, caller: Operating) -> CredentialOut:
    new = runtime(request).verifier.replace(
        credential_id,
        pan=body.pan,
        psn=body.psn,
        issuer_key_id=body.issuer_key_id,
        profile=_profile(body.profile),
    )
    return CredentialOut.of(new)


@router.post(
    "/credentials/{credential_id}/pin-script",
    tags=["credentials"],
    summary="Build an issuer PIN UNBLOCK or PIN CHANGE script",
)
def pin_script(credential_id: Id, body: PinScriptIn, request: Request, caller: Operating) -> PinScriptOut:
    arqc = parse_hex("arqc", body.arqc, min_bytes=8, max_bytes=8)
    command = runtime(request).verifier.build_pin_script(
        credential_id, arqc=arqc, atc=body.atc, new_pin=body.new_pin, current_pin=body.current_pin
    )
    return PinScriptOut(command=command.hex().upper())


# -- audit ---------------------------------------------------------------------------------------
@router.post("/audit/check", tags=["audit"], summary="Check the audit chain, seals and an exported tip")
def audit_check(body: AuditCheckIn, request: Request, caller: Operating) -> AuditCheckOut:
    tip = None if body.tip is None else AuditTip.from_json(body.tip.model_dump_json())
    report = check_audit(runtime(request).session, tip=tip)
    return AuditCheckOut(
        records=report.records,
        intact=report.intact,
        sealed_from=report.sealed_from,
        problems=[AuditProblemOut.of(p) for p in report.problems],
    )


@router.get("/audit/tip", tags=["audit"], summary="Export the anchor of the newest audit record")
def audit_tip(request: Request, caller: Operating) -> AuditTipOut:
    last = None
    for last in runtime(request).session.store.audit_records():  # noqa: B007 - the newest one is kept
        pass
    if last is None:
        raise HttpProblem("not-found", "the audit is empty; there is nothing to anchor")
    return AuditTipOut.of(AuditTip.of(last))
