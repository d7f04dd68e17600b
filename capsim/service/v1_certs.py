"""``/v1`` certificate credentials: organisations, registration, operation-bound signatures.

Every route is a thin translation onto :class:`capsim.verifier.certificates.CertificateVerifier`
(docs/certificate.md); the rules are the library's.

Theory of operation
-------------------
1. **One certificate verifier per worker**, made on first use over the worker's store and
   keys (:func:`certificates`). Its trust is read from the store's recorded setting
   (``capsim verifier cert trust``) and the files it names on every registration and
   authentication, so a new CRL file takes effect at once in every worker.
2. **Who may call what** (docs/http-api.md, "Certificate credentials"): the bank's operator
   creates organisations and unblocks certificates; the backend's ``verification`` key (and the
   operator) issues challenges, registers certificates and checks signatures; an
   organisation's administrator, through a ``customer-admin`` client bound to it
   (``capsim verifier client add --scope customer-admin --as usr-…``), reads its organisation,
   lists its users and certificates, revokes them and removes users, of its own organisation
   only. :func:`_own_organisation` refuses anything else with 403 (audited, as for customer
   administrators of CAP credentials) before the library checks ``acting_user`` again; an
   unknown target is refused the same way, so an administrator learns nothing of other
   organisations.
3. **Secrets in bodies only.** The master code and the identity number travel in request
   bodies (never a path or query, which logs record); the access log has the route template
   only, and every refused registration or signature is the one ``invalid-code`` problem
   (422, ``code rejected``) whatever failed: wrong master code or identity number, unknown or
   used challenge, certificate outside the trust, wrong signature, locked or revoked
   certificate. The reason goes to the audit only.
4. **Authentication** counts in the verification metrics; after a refusal, a background task
   (run once the answer is sent) counts a new lock of the certificate once across workers,
   as :func:`capsim.service.common.measured` does for cards. A signature is checked once: a
   retry after a lost answer is a replay and is refused (read the certificate, or issue a new
   challenge); these routes take no ``Idempotency-Key``.
5. Certificate routes name their path parameter ``credential_id``, so the per-credential rate
   limit of :class:`capsim.service.auth.Guard` applies to them as to cards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response, status

from capsim.errors import InvalidCode
from capsim.service.auth import Caller, audit_denial, runtime
from capsim.service.certschemas import (
    CertAcceptanceOut,
    CertChallengeOut,
    CertificateOut,
    OperationChallengeIn,
    OrganisationCreatedOut,
    OrganisationIn,
    OrganisationOut,
    OrgUserOut,
    RegistrationIn,
    SignatureIn,
    SupplementaryIn,
    certificate_bytes,
    signature_bytes,
)
from capsim.service.common import (
    ADMINISTRATION,
    OPERATOR,
    PROBLEM_RESPONSES,
    VERIFICATION,
    measured,
    not_found,
)
from capsim.service.metrics import LOCKOUTS, STORE_ERRORS
from capsim.service.problems import HttpProblem
from capsim.service.runtime import Runtime
from capsim.service.schemas import ReasonIn
from capsim.verifier.certificates import CertificateVerifier
from capsim.verifier.certmodel import CertCredential, CertState
from capsim.verifier.certtrust import TRUST_SETTING, CertTrust, trust_from_setting
from capsim.verifier.model import UserRole

__all__ = ["certificates", "router"]

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES, tags=["certificates"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
Administering = Annotated[Caller, Depends(ADMINISTRATION)]
Operating = Annotated[Caller, Depends(OPERATOR)]
Verifying = Annotated[Caller, Depends(VERIFICATION)]

_ORG = "/organisations/{org_id}"
_CERT = "/certificates/{credential_id}"


def certificates(request: Request) -> CertificateVerifier:
    """The worker's certificate verifier (rule 1)."""
    state = request.app.state
    cv: CertificateVerifier | None = getattr(state, "cert_verifier", None)
    if cv is None:
        rt = runtime(request)
        cv = CertificateVerifier(rt.session.store, rt.session.provider, trust=_trust_reader(rt))
        state.cert_verifier = cv
    return cv


def _trust_reader(rt: Runtime) -> Callable[[], CertTrust]:
    def read() -> CertTrust:
        with rt.session.transaction() as tx:
            recorded = tx.get_setting(TRUST_SETTING)
        return trust_from_setting(recorded)

    return read


def _own_organisation(request: Request, caller: Caller, org_id: str | None) -> None:
    """Rule 2: the operator passes; an organisation's administrator only for ``org_id``
    (``None``: an unknown target, refused alike)."""
    if caller.is_operator:
        return
    acting = caller.client.acting_user
    with runtime(request).session.transaction() as tx:
        actor = tx.get_org_user(acting) if acting is not None and org_id is not None else None
        allowed = (
            actor is not None
            and not actor.disabled
            and actor.role is UserRole.ADMIN
            and actor.org_id == org_id
        )
        if not allowed:
            audit_denial(tx, request, "account", caller.client.client_id)
    if not allowed:
        raise HttpProblem("forbidden", "not an administrator of this organisation")


def _organisation(request: Request, caller: Caller, org_id: str) -> None:
    org = certificates(request).get_organisation(org_id)
    _own_organisation(request, caller, None if org is None else org.org_id)
    if org is None:
        raise not_found("organisation")


def _certificate(request: Request, caller: Caller, cert_id: str) -> CertCredential:
    cert = certificates(request).get_certificate(cert_id)
    _own_organisation(request, caller, None if cert is None else cert.org_id)
    if cert is None:
        raise not_found("certificate")
    return cert


# -- organisations ---------------------------------------------------------------------------------
@router.post(
    "/organisations",
    status_code=status.HTTP_201_CREATED,
    summary="Create an organisation; its master code is in this answer only (operator)",
)
def create_organisation(
    body: OrganisationIn, request: Request, response: Response, caller: Operating
) -> OrganisationCreatedOut:
    response.headers["Cache-Control"] = "no-store"  # the master code: no cache keeps it
    cv = certificates(request)
    mc = cv.create_organisation(body.name, kind=body.kind)
    org = cv.get_organisation(mc.org_id)
    assert org is not None
    return OrganisationCreatedOut.created(mc, org)


@router.get(_ORG, summary="Read an organisation")
def get_organisation(org_id: Id, request: Request, caller: Administering) -> OrganisationOut:
    org = certificates(request).get_organisation(org_id)
    _own_organisation(request, caller, None if org is None else org.org_id)
    if org is None:
        raise not_found("organisation")
    return OrganisationOut.of(org)


@router.get(_ORG + "/users", summary="List an organisation's users")
def list_org_users(org_id: Id, request: Request, caller: Administering) -> list[OrgUserOut]:
    _organisation(request, caller, org_id)
    users = certificates(request).list_users(org_id, acting_user=caller.acting_user)
    return [OrgUserOut.of(u) for u in users]


@router.get(_ORG + "/certificates", summary="List an organisation's certificates (of one user)")
def list_certificates(
    org_id: Id,
    request: Request,
    caller: Administering,
    user_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[CertificateOut]:
    _organisation(request, caller, org_id)
    certs = certificates(request).list_certificates(org_id, user_id=user_id, acting_user=caller.acting_user)
    return [CertificateOut.of(c) for c in certs]


@router.post(
    "/organisation-users/{user_id}/remove", summary="Remove a user: disable it and revoke its certificates"
)
def remove_user(user_id: Id, request: Request, caller: Administering) -> OrgUserOut:
    with runtime(request).session.transaction() as tx:
        user = tx.get_org_user(user_id)
    _own_organisation(request, caller, None if user is None else user.org_id)
    if user is None:
        raise not_found("user")
    return OrgUserOut.of(certificates(request).remove_user(user_id, acting_user=caller.acting_user))


# -- registration ----------------------------------------------------------------------------------
@router.post(
    _ORG + "/registration-challenges",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a registration challenge (the registrant's token signs its message)",
)
def registration_challenge(org_id: Id, request: Request, caller: Verifying) -> CertChallengeOut:
    cv = certificates(request)
    if cv.get_organisation(org_id) is None:
        raise not_found("organisation")
    return CertChallengeOut.of(cv.registration_challenge(org_id))


def _register(request: Request, org_id: str, body: SupplementaryIn, user_id: str | None) -> CertificateOut:
    cert = certificates(request).register_certificate(
        org_id,
        master_code=body.master_code,
        identity_number=body.identity_number,
        certificate=certificate_bytes(body.certificate),
        challenge_id=body.challenge_id,
        signature=signature_bytes(body.signature),
        administrator=isinstance(body, RegistrationIn) and body.administrator,
        user_id=user_id,
        label=body.label,
    )
    return CertificateOut.of(cert)


@router.post(
    _ORG + "/certificates",
    status_code=status.HTTP_201_CREATED,
    summary="Register a certificate for a new identity (master code, identity number, proof of possession)",
)
def register_certificate(
    org_id: Id, body: RegistrationIn, request: Request, caller: Verifying
) -> CertificateOut:
    return _register(request, org_id, body, None)


@router.post(
    _ORG + "/users/{user_id}/certificates",
    status_code=status.HTTP_201_CREATED,
    summary="Register a supplementary certificate under an existing identifier",
)
def register_supplementary(
    org_id: Id, user_id: Id, body: SupplementaryIn, request: Request, caller: Verifying
) -> CertificateOut:
    return _register(request, org_id, body, user_id)


# -- certificates ----------------------------------------------------------------------------------
@router.get(_CERT, summary="Read a certificate credential")
def get_certificate(credential_id: Id, request: Request, caller: Administering) -> CertificateOut:
    return CertificateOut.of(_certificate(request, caller, credential_id))


@router.post(
    _CERT + "/challenges",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a challenge bound to one operation (PSD2 dynamic linking)",
)
def operation_challenge(
    credential_id: Id, body: OperationChallengeIn, request: Request, caller: Verifying
) -> CertChallengeOut:
    cv = certificates(request)
    if cv.get_certificate(credential_id) is None:
        raise not_found("certificate")
    ch = cv.operation_challenge(
        credential_id,
        kind=body.kind,
        payee=body.payee,
        amount=body.amount,
        currency=body.currency,
        name=body.name,
        ttl_s=body.ttl_s,
    )
    return CertChallengeOut.of(ch)


@router.post(
    "/certificate-challenges/{challenge_id}/authenticate",
    summary="Check the token's signature of an operation challenge, once",
)
def authenticate(
    *, challenge_id: Id, body: SignatureIn, request: Request, background: BackgroundTasks, caller: Verifying
) -> CertAcceptanceOut:
    signature = signature_bytes(body.signature)
    cv = certificates(request)
    try:
        acc = measured(request, background, None, lambda: cv.authenticate(challenge_id, signature))
    except InvalidCode:
        background.add_task(_count_lockout, runtime(request), challenge_id)
        raise
    return CertAcceptanceOut.of(acc)


def _count_lockout(rt: Runtime, challenge_id: str) -> None:
    """Count a certificate's new lock once across workers (rule 4)."""
    try:
        with rt.session.transaction() as tx:
            ch = tx.get_cert_challenge(challenge_id)
            cert = tx.get_cert(ch.cert_id) if ch is not None and ch.cert_id else None
            if cert is None or cert.locked_until is None:
                return
            kind = "permanent" if cert.state is CertState.BLOCKED else "temporary"
            first = tx.hit_rate(f"lockout-{kind}:{cert.cert_id}", int(cert.locked_until.timestamp())) == 1
        if first:
            LOCKOUTS.labels(kind=kind).inc()
    except Exception:  # a metric must never fail a request
        STORE_ERRORS.inc()


@router.post(
    _CERT + "/revoke", summary="Revoke a certificate for good (operator, or its organisation's administrator)"
)
def revoke_certificate(
    credential_id: Id, body: ReasonIn, request: Request, caller: Administering
) -> CertificateOut:
    _certificate(request, caller, credential_id)
    cv = certificates(request)
    return CertificateOut.of(
        cv.revoke_certificate(credential_id, acting_user=caller.acting_user, reason=body.reason)
    )


@router.post(_CERT + "/unblock", summary="Clear a certificate's lock and failure counters (operator)")
def unblock_certificate(
    credential_id: Id, body: ReasonIn, request: Request, caller: Operating
) -> CertificateOut:
    _certificate(request, caller, credential_id)
    return CertificateOut.of(certificates(request).unblock_certificate(credential_id, reason=body.reason))
