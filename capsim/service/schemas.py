"""Request and response bodies of the native API (``/v1``), as pydantic v2 models.

Request models refuse unknown fields and bound every string and list, so the OpenAPI
document says exactly what is accepted; the verifier still checks every value itself (a code's
form, an amount, a currency) and answers a ``validation-error`` problem. Response models are
built from the verifier's model values by the ``of`` class methods; none of them carries a
code, a PIN, a key or a full PAN (credentials show the last four digits only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from capsim.verifier.audit import AuditProblem, AuditTip
from capsim.verifier.model import Acceptance, ActivationCode, Credential, Operation, User

__all__ = [
    "AcceptanceOut",
    "ActivateIn",
    "ActivationCodeIn",
    "ActivationCodeOut",
    "AuditCheckIn",
    "AuditCheckOut",
    "AuditTipOut",
    "CodeIn",
    "CredentialOut",
    "EnrolmentIn",
    "FloorIn",
    "FloorOut",
    "LockIn",
    "LostIn",
    "LostOut",
    "OperationIn",
    "OperationOut",
    "PinScriptIn",
    "PinScriptOut",
    "ReasonIn",
    "ReplaceIn",
    "ResyncIn",
    "UserIn",
    "UserOut",
]

_Id = Field(min_length=1, max_length=64)
_PAN = r"^[0-9]{12,19}$"
_PSN = r"^[0-9]{2}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeIn(_In):
    """A code as the user typed it (the verifier checks its form)."""

    code: str = Field(min_length=1, max_length=32)


ActivateIn = CodeIn


class ResyncIn(_In):
    """``resync_count`` consecutive Identify codes."""

    codes: list[str] = Field(min_length=1, max_length=3)


class FloorIn(_In):
    """An ATC seen in a payment authorisation."""

    atc: int = Field(ge=0, le=0xFFFF)


class FloorOut(BaseModel):
    last_atc: int


class BatchItemIn(_In):
    payee: str = Field(min_length=1, max_length=128)
    amount_minor: int = Field(ge=0, le=999_999_999_999)


class OperationIn(_In):
    """A new operation on a credential (verifier.md V8–V17)."""

    mode: Literal["identify", "respond", "sign", "tds"]
    reference: str | None = Field(default=None, pattern=r"^[0-9]{1,8}$", description="sign only: 1-8 digits")
    amount: int | str | None = Field(
        default=None, description="minor units (integer) or a decimal string in major units"
    )
    currency: str | None = Field(
        default=None, pattern=r"^([A-Za-z]{3}|[0-9]{3})$", description="ISO 4217, alphabetic or numeric"
    )
    payee: str | None = Field(default=None, max_length=128)
    fields: list[str] | None = Field(default=None, max_length=10)
    batch: list[BatchItemIn] | None = Field(default=None, max_length=100)
    payment: bool = False
    ttl_s: int | None = Field(default=None, ge=1, le=86_400)


class OperationOut(BaseModel):
    operation_id: str
    credential_id: str
    mode: str
    challenge: str
    created_at: datetime
    expires_at: datetime
    amount_minor: int | None
    currency: str | None
    payee: str | None
    fields: list[str]
    payment: bool
    attempts: int
    max_attempts: int
    consumed: bool

    @classmethod
    def of(cls, op: Operation) -> OperationOut:
        return cls(
            operation_id=op.operation_id,
            credential_id=op.credential_id,
            mode=str(op.mode.value),
            challenge=op.challenge,
            created_at=op.created_at,
            expires_at=op.expires_at,
            amount_minor=op.amount_minor,
            currency=op.currency,
            payee=op.payee,
            fields=list(op.tds_fields),
            payment=op.payment,
            attempts=op.attempts,
            max_attempts=op.max_attempts,
            consumed=op.consumed_at is not None,
        )


class AcceptanceOut(BaseModel):
    """An accepted code: its ledger row."""

    credential_id: str
    operation_id: str | None
    atc: int
    mode: str
    accepted_at: datetime

    @classmethod
    def of(cls, acc: Acceptance) -> AcceptanceOut:
        return cls(
            credential_id=acc.credential_id,
            operation_id=acc.operation_id,
            atc=acc.atc,
            mode=str(acc.mode.value),
            accepted_at=acc.accepted_at,
        )


class CredentialOut(BaseModel):
    credential_id: str
    user_id: str
    customer_id: str
    state: str
    pan_last4: str
    psn: str
    reader_profile: str
    last_atc: int
    fail_count: int
    max_fail: int
    locked_until: datetime | None
    label: str
    created_at: datetime
    replaces: str | None
    replaced_by: str | None

    @classmethod
    def of(cls, c: Credential) -> CredentialOut:
        return cls(
            credential_id=c.credential_id,
            user_id=c.user_id,
            customer_id=c.customer_id,
            state=str(c.state.value),
            pan_last4=c.pan_last4,
            psn=c.psn,
            reader_profile=c.profile.reader_profile,
            last_atc=c.last_atc,
            fail_count=c.fail_count,
            max_fail=c.max_fail,
            locked_until=c.locked_until,
            label=c.label,
            created_at=c.created_at,
            replaces=c.replaces,
            replaced_by=c.replaced_by,
        )


class ReasonIn(_In):
    reason: str = Field(default="", max_length=256)


class LockIn(ReasonIn):
    seconds: int | None = Field(default=None, ge=1, le=30 * 86_400)


class LostIn(_In):
    """A lost card, with the replacement card's PSN (and PAN when it changes) when reissued."""

    replacement_psn: str | None = Field(default=None, pattern=_PSN)
    replacement_pan: str | None = Field(default=None, pattern=_PAN)
    issuer_key_id: str | None = Field(default=None, max_length=64)
    profile: dict[str, Any] | None = None


class LostOut(BaseModel):
    replacement: CredentialOut | None


class ReplaceIn(_In):
    pan: str = Field(pattern=_PAN)
    psn: str = Field(pattern=_PSN)
    issuer_key_id: str = _Id
    profile: dict[str, Any] | None = None


class PinScriptIn(_In):
    """The ARQC and ATC of the transaction the script answers; PINs never leave the verifier."""

    arqc: str = Field(min_length=16, max_length=16, description="8 bytes, hex")
    atc: int = Field(ge=0, le=0xFFFF)
    new_pin: str | None = Field(default=None, min_length=4, max_length=12)
    current_pin: str | None = Field(default=None, min_length=4, max_length=12)


class PinScriptOut(BaseModel):
    command: str = Field(description="the issuer-script command APDU, hex")


class UserIn(_In):
    user_id: str = _Id
    customer_id: str | None = Field(default=None, min_length=1, max_length=64)
    admin: bool | None = None
    name: str = Field(default="", max_length=128)


class UserOut(BaseModel):
    user_id: str
    customer_id: str
    role: str
    created_at: datetime
    created_by: str | None
    disabled: bool

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(
            user_id=u.user_id,
            customer_id=u.customer_id,
            role=str(u.role.value),
            created_at=u.created_at,
            created_by=u.created_by,
            disabled=u.disabled,
        )


class ActivationCodeIn(_In):
    ttl_s: int | None = Field(default=None, ge=30, le=30 * 86_400)


class ActivationCodeOut(BaseModel):
    """Shown once: the verifier keeps only its digest."""

    code: str
    user_id: str
    expires_at: datetime

    @classmethod
    def of(cls, a: ActivationCode) -> ActivationCodeOut:
        return cls(code=a.code, user_id=a.user_id, expires_at=a.expires_at)


class EnrolmentIn(_In):
    """A card bound to the activation code's user, as the card-management system hands it over."""

    activation_code: str = Field(min_length=1, max_length=32)
    pan: str = Field(pattern=_PAN)
    psn: str = Field(default="00", pattern=_PSN)
    profile: dict[str, Any] = Field(description="capsim CredentialProfile.to_dict()")
    issuer_key_id: str = _Id
    first_code: str | None = Field(default=None, min_length=1, max_length=32)
    label: str = Field(default="", max_length=128)


class AuditTipOut(BaseModel):
    """The anchor of the newest audit record (``capsim verifier audit --export-tip``)."""

    format: str
    version: int
    seq: int
    record_hash: str
    seal: str
    seal_key_id: str

    @classmethod
    def of(cls, tip: AuditTip) -> AuditTipOut:
        return cls.model_validate_json(tip.to_json())


class AuditCheckIn(_In):
    tip: AuditTipOut | None = None


class AuditProblemOut(BaseModel):
    seq: int
    kind: str
    detail: str

    @classmethod
    def of(cls, p: AuditProblem) -> AuditProblemOut:
        return cls(seq=p.seq, kind=p.kind, detail=p.detail)


class AuditCheckOut(BaseModel):
    records: int
    intact: bool
    sealed_from: int | None
    problems: list[AuditProblemOut]
