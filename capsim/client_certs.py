"""Certificate credentials in :mod:`capsim.client`: the typed answers of the certificate routes
(docs/http-api.md, "Certificate credentials") and the :class:`~capsim.client.VerifierClient`
methods that call them (:class:`CertificateCalls`). Every refused registration or signature is
:class:`~capsim.errors.InvalidCode`; the master code and the identity number go only into
request bodies.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capsim._clientparts import Answer, drop_none, seg
from capsim.errors import ValidationError

__all__ = [
    "CertAcceptance",
    "CertChallenge",
    "Certificate",
    "CertificateCalls",
    "NewOrganisation",
    "OrgUser",
    "Organisation",
]


@dataclass(frozen=True, slots=True)
class Organisation(Answer):
    """An organisation of certificate credentials (``kind``: supplier or customer)."""

    org_id: str
    name: str
    kind: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewOrganisation(Answer):
    """A new organisation and its master code, shown once (the service keeps a keyed hash)."""

    org_id: str
    name: str
    kind: str
    created_at: datetime
    master_code: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CertChallenge(Answer):
    """A challenge the token signs: ``message`` is the exact text (registration, or one
    operation's bound ``details``)."""

    challenge_id: str
    purpose: str
    org_id: str
    cert_id: str | None
    details: tuple[tuple[str, str], ...]
    created_at: datetime
    expires_at: datetime
    max_attempts: int
    message: str


@dataclass(frozen=True, slots=True)
class Certificate(Answer):
    """A registered certificate credential (public data only)."""

    cert_id: str
    user_id: str
    org_id: str
    state: str
    subject: str
    serial: str
    not_after: datetime
    created_at: datetime
    supplementary: bool
    label: str
    fail_count: int
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class OrgUser(Answer):
    """A user of an organisation under its generated identifier (``role``: user or admin)."""

    user_id: str
    org_id: str
    role: str
    disabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CertAcceptance(Answer):
    """An accepted signature. A refusal is never a value: it is :class:`~capsim.errors.InvalidCode`."""

    cert_id: str
    user_id: str
    org_id: str
    challenge_id: str
    details: tuple[tuple[str, str], ...]
    txn_digest: str
    accepted_at: datetime


def _certificate_text(data: bytes) -> str:
    """A certificate for the API: PEM as it is, DER as base64."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return data.decode("ascii", errors="replace")
    return base64.b64encode(data).decode("ascii")


class CertificateCalls:
    """The certificate-credential methods of :class:`~capsim.client.VerifierClient`."""

    # Provided by VerifierClient (one HTTP call, decoded; a list of objects).
    _call: Callable[..., Any]
    _list: Callable[..., list[dict[str, Any]]]

    # -- certificate credentials (docs/certificate.md) ---------------------------------------------
    def create_organisation(self, name: str, *, kind: str = "supplier") -> NewOrganisation:
        """A new organisation; its master code is in this answer only (operator)."""
        return NewOrganisation.from_json(
            self._call("POST", "/v1/organisations", body={"name": name, "kind": kind})
        )

    def get_organisation(self, org_id: str) -> Organisation:
        return Organisation.from_json(self._call("GET", f"/v1/organisations/{seg(org_id)}"))

    def registration_challenge(self, org_id: str) -> CertChallenge:
        path = f"/v1/organisations/{seg(org_id)}/registration-challenges"
        return CertChallenge.from_json(self._call("POST", path))

    def register_certificate(
        self,
        org_id: str,
        *,
        master_code: str,
        identity_number: str,
        certificate: bytes,
        challenge_id: str,
        signature: bytes,
        administrator: bool = False,
        user_id: str | None = None,
        label: str = "",
    ) -> Certificate:
        """Register a certificate (PEM or DER bytes) with the token's ``signature`` of the
        registration challenge; ``user_id`` registers a supplementary certificate under that
        identifier. Every refusal is :class:`~capsim.errors.InvalidCode`."""
        body: dict[str, Any] = {
            "master_code": master_code,
            "identity_number": identity_number,
            "certificate": _certificate_text(certificate),
            "challenge_id": challenge_id,
            "signature": signature.hex(),
            "label": label,
        }
        path = f"/v1/organisations/{seg(org_id)}"
        if user_id is None:
            body["administrator"] = administrator
            path += "/certificates"
        elif administrator:
            raise ValidationError("administrator: a supplementary certificate takes no role")
        else:
            path += f"/users/{seg(user_id)}/certificates"
        return Certificate.from_json(self._call("POST", path, body=body))

    def operation_challenge(
        self,
        cert_id: str,
        *,
        kind: str,
        payee: str,
        amount: int | str | None = None,
        currency: str | None = None,
        name: str | None = None,
        ttl_s: int | None = None,
    ) -> CertChallenge:
        """A challenge bound to a payment (amount, currency, payee) or a beneficiary addition
        (payee, holder ``name``)."""
        body = drop_none(
            {
                "kind": kind,
                "payee": payee,
                "amount": amount,
                "currency": currency,
                "name": name,
                "ttl_s": ttl_s,
            }
        )
        path = f"/v1/certificates/{seg(cert_id)}/challenges"
        return CertChallenge.from_json(self._call("POST", path, body=body))

    def authenticate(self, challenge_id: str, signature: bytes) -> CertAcceptance:
        """The token's signature of an operation challenge, checked once; a refusal raises
        :class:`~capsim.errors.InvalidCode`."""
        path = f"/v1/certificate-challenges/{seg(challenge_id)}/authenticate"
        return CertAcceptance.from_json(self._call("POST", path, body={"signature": signature.hex()}))

    def get_certificate(self, cert_id: str) -> Certificate:
        return Certificate.from_json(self._call("GET", f"/v1/certificates/{seg(cert_id)}"))

    def list_org_users(self, org_id: str) -> list[OrgUser]:
        return [OrgUser.from_json(x) for x in self._list(f"/v1/organisations/{seg(org_id)}/users")]

    def list_certificates(self, org_id: str, *, user_id: str | None = None) -> list[Certificate]:
        params = None if user_id is None else {"user_id": user_id}
        path = f"/v1/organisations/{seg(org_id)}/certificates"
        return [Certificate.from_json(x) for x in self._list(path, params=params)]

    def certificate_lifecycle(self, cert_id: str, action: str, *, reason: str = "") -> Certificate:
        """``action`` is ``revoke`` (operator or the organisation's administrator) or ``unblock``
        (operator)."""
        if action not in ("revoke", "unblock"):
            raise ValidationError("action: expected revoke or unblock")
        path = f"/v1/certificates/{seg(cert_id)}/{action}"
        return Certificate.from_json(self._call("POST", path, body={"reason": reason}))

    def remove_org_user(self, user_id: str) -> OrgUser:
        """Disable a user of an organisation and revoke its certificates."""
        path = f"/v1/organisation-users/{seg(user_id)}/remove"
        return OrgUser.from_json(self._call("POST", path))
