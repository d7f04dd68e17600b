"""Verifier data model: credentials, operations, acceptances, users and their lifecycle.

Everything here is a frozen, keyword-only value (verifier.md §1). A store keeps these values
and hands back new ones; the service changes them with :func:`dataclasses.replace`. None of
them holds a key, a PIN, a full PAN or a presented code: a card's keys and PAN are reachable
only through its ``key_ref`` in the :class:`~capsim.verifier.provider.CryptogramProvider`,
and the credential keeps the last four PAN digits for display.

Credential lifecycle (verifier.md V32)
--------------------------------------
The transition table :data:`TRANSITIONS` maps ``(state, action)`` to the next state; a pair
missing from it is refused with :class:`~capsim.errors.ValidationError` and changes nothing.

=============  ===========================================================================
state          allowed actions → next state
=============  ===========================================================================
pending        activate → active (a first valid code, or an administrator);
               report_lost → lost; revoke → revoked; replace → replaced
active         suspend → suspended; block → blocked; report_lost → lost;
               revoke → revoked; replace → replaced
suspended      resume → active; block → blocked; report_lost → lost; revoke → revoked;
               replace → replaced
blocked        unblock → active (administrator or reissue path only); report_lost → lost;
               revoke → revoked; replace → replaced
lost           revoke → revoked; replace → replaced
revoked        (terminal)
replaced       (terminal)
=============  ===========================================================================

``verify`` accepts only in ``active``; in every other state it is the uniform reject. A
temporary lock (``locked_until``) is not a state: it is a time-limited bar inside ``active``.

>>> transition(CredentialState.PENDING, Action.ACTIVATE)
<CredentialState.ACTIVE: 'active'>
>>> transition(CredentialState.REVOKED, Action.RESUME)
Traceback (most recent call last):
...
capsim.errors.ValidationError: action 'resume' is not allowed in credential state 'revoked'

Compatibility note: this module is the shared model of every store (memory, SQLite,
PostgreSQL). Fields may be added with defaults; existing fields keep their meaning.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from capsim.cap import CapMode
from capsim.errors import ValidationError

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Acceptance",
    "Action",
    "ActivationCode",
    "ActivationRecord",
    "BatchItem",
    "Changes",
    "Credential",
    "CredentialProfile",
    "CredentialState",
    "CredentialWrite",
    "CustomerAccount",
    "Operation",
    "OperationMode",
    "OperationWrite",
    "Outcome",
    "RequestRecord",
    "Snapshot",
    "User",
    "UserRole",
    "transition",
]


class CredentialState(StrEnum):
    """Lifecycle state of a credential (verifier.md V32)."""

    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BLOCKED = "blocked"
    LOST = "lost"
    REVOKED = "revoked"
    REPLACED = "replaced"


class Action(StrEnum):
    """Lifecycle actions, the inputs of the transition table."""

    ACTIVATE = "activate"
    SUSPEND = "suspend"
    RESUME = "resume"
    BLOCK = "block"
    UNBLOCK = "unblock"
    REPORT_LOST = "report_lost"
    REVOKE = "revoke"
    REPLACE = "replace"


_S = CredentialState
_A = Action

#: The documented transition table (verifier.md V32); missing pairs are refused.
TRANSITIONS: Final[Mapping[tuple[CredentialState, Action], CredentialState]] = MappingProxyType(
    {
        (_S.PENDING, _A.ACTIVATE): _S.ACTIVE,
        (_S.PENDING, _A.REPORT_LOST): _S.LOST,
        (_S.PENDING, _A.REVOKE): _S.REVOKED,
        (_S.PENDING, _A.REPLACE): _S.REPLACED,
        (_S.ACTIVE, _A.SUSPEND): _S.SUSPENDED,
        (_S.ACTIVE, _A.BLOCK): _S.BLOCKED,
        (_S.ACTIVE, _A.REPORT_LOST): _S.LOST,
        (_S.ACTIVE, _A.REVOKE): _S.REVOKED,
        (_S.ACTIVE, _A.REPLACE): _S.REPLACED,
        (_S.SUSPENDED, _A.RESUME): _S.ACTIVE,
        (_S.SUSPENDED, _A.BLOCK): _S.BLOCKED,
        (_S.SUSPENDED, _A.REPORT_LOST): _S.LOST,
        (_S.SUSPENDED, _A.REVOKE): _S.REVOKED,
        (_S.SUSPENDED, _A.REPLACE): _S.REPLACED,
        (_S.BLOCKED, _A.UNBLOCK): _S.ACTIVE,
        (_S.BLOCKED, _A.REPORT_LOST): _S.LOST,
        (_S.BLOCKED, _A.REVOKE): _S.REVOKED,
        (_S.BLOCKED, _A.REPLACE): _S.REPLACED,
        (_S.LOST, _A.REVOKE): _S.REVOKED,
        (_S.LOST, _A.REPLACE): _S.REPLACED,
    }
)

#: States a credential never leaves.
TERMINAL_STATES: Final = frozenset({_S.REVOKED, _S.REPLACED})
#: States that count against a user's limit of active credentials.
ACTIVE_STATES: Final = frozenset({_S.PENDING, _S.ACTIVE, _S.SUSPENDED, _S.BLOCKED})


def transition(state: CredentialState, action: Action) -> CredentialState:
    """Return the state after ``action`` in ``state`` (verifier.md V32).

    Raises
    ------
    ValidationError
        The pair is not in :data:`TRANSITIONS` (for example anything out of a terminal state).
    """
    try:
        return TRANSITIONS[(CredentialState(state), Action(action))]
    except (KeyError, ValueError):
        raise ValidationError(
            f"action {str(action)!r} is not allowed in credential state {str(state)!r}"
        ) from None


#: The CAP mode an operation asks for: the reader's own :class:`capsim.cap.CapMode` (one mode
#: enum for reader and verifier; the name stays for the verifier's API).
OperationMode = CapMode


class Outcome(StrEnum):
    """Recorded outcome of a request (audit and idempotency table)."""

    ACCEPT = "accept"
    REJECT = "reject"
    TEMPORARY = "temporary"


class UserRole(StrEnum):
    """Role of a user inside its customer account."""

    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True, kw_only=True, slots=True)
class CredentialProfile:
    """Everything the verifier needs to recompute a card's codes, without any key.

    Built from the card's personalisation and the issuer's reader profile at enrolment
    (cap-protocol.md §9.1, §10). ``iad_variants`` are the ARQC IADs the card can produce after
    a correct PIN, most likely first (V10): the history-bit variants of cap-protocol.md §9.6.

    Attributes
    ----------
    reader_profile:
        Name of the :class:`capsim.profiles.ReaderProfile` the bank's readers use.
    cdol1, aip, ipb, iaf:
        The card's CDOL1 (tag/length list), AIP, issuer proprietary bitmap and IAF.
    cvn:
        Cryptogram version number (emv-crypto.md §5).
    iad_variants:
        Candidate IADs, most likely first.
    key_derivation:
        ``"auto"``, ``"A"`` or ``"B"`` (emv-crypto.md §4.1).
    session_key_method:
        ``None`` for the CVN's own method, else ``"none"``, ``"emv-csk"``,
        ``"mastercard-skd"`` or ``"emv2000-tree"`` (emv-crypto.md §4.2).
    tree_branch_factor, tree_height, tree_iv:
        EMV2000 tree parameters, used only with ``"emv2000-tree"``.
    display_digits:
        Digits the reader shows (8); must equal the verifier policy's ``display_digits``
        (checked at enrolment).
    accept_unpadded:
        The issuer's wish to accept codes typed without their leading zeros (V7). The code's
        form is checked before any credential is read, so the verifier applies its policy's
        ``accept_unpadded``; this field records the issuer's setting for that policy.
    """

    reader_profile: str
    cdol1: bytes
    aip: bytes
    ipb: bytes
    iaf: bytes
    cvn: int
    iad_variants: tuple[bytes, ...]
    key_derivation: str = "auto"
    session_key_method: str | None = None
    tree_branch_factor: int = 2
    tree_height: int = 16
    tree_iv: bytes = bytes(16)
    display_digits: int = 8
    accept_unpadded: bool = False

    @property
    def psn_in_data(self) -> bool:
        """IAF b7: the PSN byte is prepended to the data string (cap-protocol.md §6)."""
        return bool(self.iaf[:1]) and bool(self.iaf[0] & 0x40)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (bytes as upper-case hex)."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bytes):
                value = value.hex().upper()
            elif isinstance(value, tuple):
                value = [v.hex().upper() for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CredentialProfile:
        """Inverse of :meth:`to_dict`; raises :class:`ValidationError` on a malformed mapping."""
        try:
            kwargs: dict[str, object] = {}
            for f in dataclasses.fields(cls):
                if f.name not in data:
                    continue
                value = data[f.name]
                if f.name in {"cdol1", "aip", "ipb", "iaf", "tree_iv"}:
                    value = bytes.fromhex(str(value))
                elif f.name == "iad_variants":
                    if not isinstance(value, list | tuple):
                        raise TypeError(f.name)
                    value = tuple(bytes.fromhex(str(v)) for v in value)
                kwargs[f.name] = value
            return cls(**kwargs)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"credential profile: malformed mapping ({exc})") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Credential:
    """One card bound to one user (verifier.md §1).

    The PAN is never here: ``key_ref`` is the provider's reference for the card keys (and,
    for a software provider, its encrypted PAN/PSN), ``pan_token`` a keyed one-way token
    grouping cards that share a PAN (V11) and ``pan_last4`` the digits shown to people.

    ``last_atc`` is −1 before the first accepted code; a credential bound to a card that was
    enrolled before starts at that card's replay floor (the highest ATC any credential of the
    card ever had), never lower. ``script_atc`` is the ATC of the transaction that was last
    sent an issuer script, until a code above it is accepted (its next codes may show any IAD
    history variant). ``version`` increases by one on every change; stores update a
    credential only under ``version = expected_version``.
    """

    credential_id: str
    user_id: str
    customer_id: str
    state: CredentialState
    key_ref: str
    pan_token: str
    pan_last4: str
    psn: str
    profile: CredentialProfile
    created_at: datetime
    last_atc: int = -1
    fail_count: int = 0
    max_fail: int = 5
    locked_until: datetime | None = None
    lock_escalations: int = 0
    escalation_started_at: datetime | None = None
    parked_atc: int | None = None
    parked_at: datetime | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    label: str = ""
    script_atc: int | None = None
    version: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchItem:
    """One payee of a batch payment (V16, EBA Q&A 2018_4435)."""

    payee: str
    amount_minor: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Operation:
    """A server-created, single-use operation a code is bound to (verifier.md §1, V8–V16).

    ``challenge`` is the canonical 8-digit UN for RESPOND and SIGN and ``""`` for IDENTIFY
    and TDS. ``txn_digest`` is the canonical SHA-256 of every bound field
    (:func:`capsim.verifier.service.operation_digest`). ``attempts`` counts failed
    verifications; the operation closes at ``max_attempts``.
    """

    operation_id: str
    credential_id: str
    mode: OperationMode
    challenge: str
    txn_digest: bytes
    created_at: datetime
    expires_at: datetime
    amount_minor: int | None = None
    currency: str | None = None
    payee: str | None = None
    tds_fields: tuple[str, ...] = ()
    batch: tuple[BatchItem, ...] = ()
    reference_supplied: bool = False
    payment: bool = False
    attempts: int = 0
    max_attempts: int = 3
    consumed_at: datetime | None = None

    def is_open(self, now: datetime) -> bool:
        """True while the operation can still accept a code."""
        return self.consumed_at is None and self.attempts < self.max_attempts and now < self.expires_at


@dataclass(frozen=True, kw_only=True, slots=True)
class Acceptance:
    """The result of an accepted verification; one ledger row (verifier.md §5).

    Never a boolean: :meth:`capsim.verifier.service.Verifier.verify` returns this or raises.
    """

    credential_id: str
    atc: int
    mode: OperationMode
    request_id: str
    accepted_at: datetime
    operation_id: str | None = None
    txn_digest: bytes = b""


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestRecord:
    """Recorded outcome of one ``request_id`` (idempotent retries, V24).

    A request id is bound to the call it was first used for: ``method`` (``verify``,
    ``activate``, ``resync``, ``enroll``), ``target`` (operation or credential id) and
    ``fingerprint``, a keyed digest of the presented code(s) (never the code itself). The
    same call again returns the recorded outcome; any other call with the id is refused
    (:class:`~capsim.errors.RequestConflict`). Records written before binding existed have
    an empty ``method`` and bind to nothing: their id can no longer be used.
    """

    request_id: str
    outcome: Outcome
    recorded_at: datetime
    acceptance: Acceptance | None = None
    method: str = ""
    target: str = ""
    fingerprint: bytes = b""

    def binds(self, *, method: str, target: str, fingerprint: bytes) -> bool:
        """True when this record was made by the same call (constant-time on the digest)."""
        same_digest = hmac.compare_digest(self.fingerprint, fingerprint)
        return bool(self.method) and self.method == method and self.target == target and same_digest


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomerAccount:
    """A bank customer (a person or a company) owning users."""

    customer_id: str
    created_at: datetime
    name: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class User:
    """A user of a customer account; admins may create secondary users of their account."""

    user_id: str
    customer_id: str
    role: UserRole
    created_at: datetime
    created_by: str | None = None
    disabled: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivationRecord:
    """Stored form of an activation code: only its SHA-256 digest, never the code."""

    code_digest: bytes
    user_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    attempts: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivationCode:
    """An activation code as handed to the administrator (shown once, stored hashed)."""

    code: str = field(repr=False)
    user_id: str
    expires_at: datetime


# ------------------------------------------------------------------------------------------------
# What one verification reads and writes (the store's verification pair, the decision's data)


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """The rows one verification reads, under the credential row lock, in one go.

    ``credentials`` are the target credential and, when siblings are asked for, every other
    credential of the same user and PAN token (any state), locked in ascending id order.
    ``operation`` is read after the lock. ``request`` is the recorded outcome of the
    request id, if any.
    """

    now: datetime
    operation: Operation | None
    credentials: tuple[Credential, ...]
    request: RequestRecord | None


@dataclass(frozen=True, kw_only=True, slots=True)
class CredentialWrite:
    """A compare-and-swap of one credential row (``version = expected_version``).

    ``new`` is ``None`` for a target that does not exist: the store sends the same statement,
    which touches no row, so that every reject costs the same statements (V30). ``required``
    writes must touch exactly one row, or the whole verification rolls back.
    """

    credential_id: str
    expected_version: int
    new: Credential | None
    required: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class OperationWrite:
    """Attempts and consumption of one operation row (``consumed_at IS NULL`` and
    ``attempts = expected_attempts``); an empty ``operation_id`` touches no row, so such a write
    fails unless it is not ``required``, on every store."""

    operation_id: str
    expected_attempts: int
    attempts: int
    consumed_at: datetime | None
    required: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class Changes:
    """Every row one verification writes, as data: the decision's output, the store's input."""

    credentials: tuple[CredentialWrite, ...]
    operation: OperationWrite
    request: RequestRecord
    acceptance: Acceptance | None = None
