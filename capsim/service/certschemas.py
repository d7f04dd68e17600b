"""Request and response bodies of the certificate-credential routes (``/v1``, pydantic v2).

As in :mod:`capsim.service.schemas`: requests refuse unknown fields and bound every string;
the verifier still checks every value itself. Two values are secrets and travel only in
request bodies: an organisation's **master code** and a user's **identity number** (never in
a path or query string, which access logs and proxies record); the master code is also in
one answer, the organisation's creation, shown once. No answer carries an identity number;
the store keeps both only as keyed hashes. Binary values are text: the certificate as PEM or
as the DER in base64, signatures as hex (like ``capsim verifier cert … --signature HEX``).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from capsim.errors import ValidationError
from capsim.hexinput import parse_hex
from capsim.verifier.certificates import CertAcceptance, MasterCode
from capsim.verifier.certmodel import CertChallenge, CertCredential, Organisation, OrgUser

__all__ = [
    "CertAcceptanceOut",
    "CertChallengeOut",
    "CertificateOut",
    "OperationChallengeIn",
    "OrgUserOut",
    "OrganisationCreatedOut",
    "OrganisationIn",
    "OrganisationOut",
    "RegistrationIn",
    "SignatureIn",
    "SupplementaryIn",
    "certificate_bytes",
    "signature_bytes",
]

_MAX_SIGNATURE = 1024
_MAX_CERT_TEXT = 24_000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def signature_bytes(value: str) -> bytes:
    """A signature given as hex (the library bounds its length)."""
    return parse_hex("signature", value, min_bytes=1, max_bytes=_MAX_SIGNATURE, secret=True)


def certificate_bytes(value: str) -> bytes:
    """A certificate given as PEM text or as base64 DER (the library parses it)."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii", errors="replace")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("certificate: expected PEM text or the DER in base64") from None


class OrganisationIn(_In):
    """A new organisation (the bank's act)."""

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["supplier", "customer"] = "supplier"


class OrganisationOut(BaseModel):
    org_id: str
    name: str
    kind: str
    created_at: datetime

    @classmethod
    def of(cls, org: Organisation) -> OrganisationOut:
        return cls(org_id=org.org_id, name=org.name, kind=org.kind.value, created_at=org.created_at)


class OrganisationCreatedOut(OrganisationOut):
    """The new organisation and its master code, shown only in this answer."""

    master_code: str = Field(description="16 characters; the service keeps only a keyed hash")

    @classmethod
    def created(cls, mc: MasterCode, org: Organisation) -> OrganisationCreatedOut:
        return cls(**OrganisationOut.of(org).model_dump(), master_code=mc.code)


class CertChallengeOut(BaseModel):
    """A challenge: the token signs ``message`` (its exact ASCII text, SHA-256 or SHA-384 of it)."""

    challenge_id: str
    purpose: str
    org_id: str
    cert_id: str | None
    details: dict[str, str]
    created_at: datetime
    expires_at: datetime
    max_attempts: int
    message: str

    @classmethod
    def of(cls, ch: CertChallenge) -> CertChallengeOut:
        return cls(
            challenge_id=ch.challenge_id,
            purpose=ch.purpose.value,
            org_id=ch.org_id,
            cert_id=ch.cert_id,
            details=dict(ch.details),
            created_at=ch.created_at,
            expires_at=ch.expires_at,
            max_attempts=ch.max_attempts,
            message=ch.message.decode("ascii"),
        )


class _Signed(_In):
    signature: str = Field(
        min_length=2, max_length=2 * _MAX_SIGNATURE, description="the token's signature of the message, hex"
    )


class SupplementaryIn(_Signed):
    """A supplementary certificate under an existing identifier (delegation)."""

    master_code: str = Field(min_length=1, max_length=64, description="the organisation's master code")
    identity_number: str = Field(min_length=1, max_length=64, description="the user's identity number")
    certificate: str = Field(min_length=1, max_length=_MAX_CERT_TEXT, description="PEM, or the DER in base64")
    challenge_id: str = Field(min_length=1, max_length=64, description="the registration challenge signed")
    label: str = Field(default="", max_length=128)


class RegistrationIn(SupplementaryIn):
    """A certificate for a new identity; ``administrator`` asks for the organisation's one
    administrator role (its first registrant only)."""

    administrator: bool = False


class OperationChallengeIn(_In):
    """An operation to approve: a payment (amount, currency, payee) or a beneficiary addition
    (payee account and holder ``name``)."""

    kind: Literal["payment", "beneficiary"]
    payee: str = Field(min_length=1, max_length=128)
    amount: int | str | None = Field(
        default=None, description="payment: minor units (integer) or a decimal string in major units"
    )
    currency: str | None = Field(default=None, min_length=3, max_length=3, description="payment: ISO 4217")
    name: str | None = Field(default=None, min_length=1, max_length=128, description="beneficiary: holder")
    ttl_s: int | None = Field(default=None, ge=10, le=86_400)


SignatureIn = _Signed


class CertificateOut(BaseModel):
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

    @classmethod
    def of(cls, c: CertCredential) -> CertificateOut:
        return cls(
            cert_id=c.cert_id,
            user_id=c.user_id,
            org_id=c.org_id,
            state=c.state.value,
            subject=c.subject,
            serial=c.serial,
            not_after=c.not_after,
            created_at=c.created_at,
            supplementary=c.supplementary,
            label=c.label,
            fail_count=c.fail_count,
            locked_until=c.locked_until,
        )


class OrgUserOut(BaseModel):
    user_id: str
    org_id: str
    role: str
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, u: OrgUser) -> OrgUserOut:
        return cls(
            user_id=u.user_id,
            org_id=u.org_id,
            role=u.role.value,
            disabled=u.disabled,
            created_at=u.created_at,
        )


class CertAcceptanceOut(BaseModel):
    """An accepted signature: which certificate approved which operation. A refusal is never
    this: it is the one ``invalid-code`` problem."""

    cert_id: str
    user_id: str
    org_id: str
    challenge_id: str
    details: dict[str, str]
    txn_digest: str = Field(description="SHA-256 of the operation's bound data, hex")
    accepted_at: datetime

    @classmethod
    def of(cls, acc: CertAcceptance) -> CertAcceptanceOut:
        return cls(
            cert_id=acc.cert_id,
            user_id=acc.user_id,
            org_id=acc.org_id,
            challenge_id=acc.challenge_id,
            details=dict(acc.details),
            txn_digest=acc.txn_digest.hex(),
            accepted_at=acc.accepted_at,
        )
