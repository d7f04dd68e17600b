"""Certificate credentials: organisations, their users, certificates and signed challenges.

The values every store keeps for the certificate credential (:mod:`capsim.verifier.certificates`),
frozen and keyword-only like :mod:`capsim.verifier.model`. None of them holds a secret: an
organisation keeps only a keyed hash of its master code, a user only a keyed hash of its
identity number (:func:`capsim.verifier.certdecision.keyed_digest`), a certificate only public
data (its DER, the SHA-256 of its SubjectPublicKeyInfo, serial, subject and expiry).

Certificate lifecycle
---------------------
=========  ==================================================================================
state      meaning
=========  ==================================================================================
active     signatures are checked; ``locked_until`` is a time-limited bar inside it
blocked    too many temporary locks (``escalate_after`` within ``escalation_period_s``);
           the bank's operator unblocks it
revoked    terminal: revoked by the organisation's administrator or the bank, or its user
           was removed
=========  ==================================================================================

``active`` and ``blocked`` are *live*: one live certificate per public key (the stores' unique
index on ``spki_digest``), so a certificate belongs to one owner at a time (nominative).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from capsim.verifier.model import UserRole

__all__ = [
    "LIVE_CERT_STATES",
    "CertChallenge",
    "CertCredential",
    "CertState",
    "ChallengePurpose",
    "OrgKind",
    "OrgUser",
    "Organisation",
]


class OrgKind(StrEnum):
    """What an organisation is to the bank."""

    SUPPLIER = "supplier"
    CUSTOMER = "customer"


class CertState(StrEnum):
    """Lifecycle state of a certificate credential (module docstring)."""

    ACTIVE = "active"
    BLOCKED = "blocked"
    REVOKED = "revoked"


#: States that hold the public key (the unique index on ``spki_digest``).
LIVE_CERT_STATES: Final = frozenset({CertState.ACTIVE, CertState.BLOCKED})


class ChallengePurpose(StrEnum):
    """What a signed challenge proves."""

    REGISTER = "register"  # proof of possession of a certificate's key at registration
    OPERATION = "operation"  # approval of one operation (PSD2 dynamic linking)


@dataclass(frozen=True, kw_only=True, slots=True)
class Organisation:
    """A supplier or customer; ``master_digest`` is the keyed hash of its master code."""

    org_id: str
    name: str
    kind: OrgKind
    master_digest: bytes
    created_at: datetime

    def __repr__(self) -> str:
        return f"Organisation(org_id={self.org_id!r}, kind={self.kind.value!r})"


@dataclass(frozen=True, kw_only=True, slots=True)
class OrgUser:
    """A user of an organisation under a generated identifier; ``id_digest`` is the keyed hash
    of the identity number. At most one ``admin`` per organisation (unique index)."""

    user_id: str
    org_id: str
    role: UserRole
    id_digest: bytes
    created_at: datetime
    created_by: str | None = None
    disabled: bool = False
    version: int = 1

    def __repr__(self) -> str:
        return f"OrgUser(user_id={self.user_id!r}, org_id={self.org_id!r}, role={self.role.value!r})"


@dataclass(frozen=True, kw_only=True, slots=True)
class CertCredential:
    """One registered certificate of one user (module docstring).

    ``supplementary`` marks a certificate registered under an identifier that already had one
    (delegation). The failure counters follow the verifier policy's lockout rules (V28–V31).
    """

    cert_id: str
    user_id: str
    org_id: str
    state: CertState
    spki_digest: bytes
    cert_der: bytes
    serial: str
    subject: str
    not_after: datetime
    created_at: datetime
    supplementary: bool = False
    label: str = ""
    fail_count: int = 0
    locked_until: datetime | None = None
    lock_escalations: int = 0
    escalation_started_at: datetime | None = None
    version: int = 1

    def __repr__(self) -> str:
        return (
            f"CertCredential(cert_id={self.cert_id!r}, user_id={self.user_id!r}, state={self.state.value!r})"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class CertChallenge:
    """A single-use challenge the token signs (:attr:`message`).

    A registration challenge names its organisation; an operation challenge also names the
    certificate and carries the operation's data (``details``: sorted ``(name, value)`` pairs
    such as amount, currency and payee) and their digest ``txn_digest``. ``nonce`` is 32
    random bytes. ``attempts`` counts wrong signatures; the challenge closes at
    ``max_attempts`` and is consumed by the one accepted signature.
    """

    challenge_id: str
    purpose: ChallengePurpose
    org_id: str
    nonce: bytes
    txn_digest: bytes
    created_at: datetime
    expires_at: datetime
    cert_id: str | None = None
    details: tuple[tuple[str, str], ...] = ()
    attempts: int = 0
    max_attempts: int = 3
    consumed_at: datetime | None = None

    def is_open(self, now: datetime) -> bool:
        """True while a signature may still be presented."""
        return self.consumed_at is None and self.attempts < self.max_attempts and now < self.expires_at

    @property
    def message(self) -> bytes:
        """The exact bytes the token signs: every bound field, one per line, then the nonce.

        The host hashes them (SHA-256; SHA-384 for a P-384 key) and has the token sign the
        digest (ECDSA, or RSA PKCS#1 v1.5 over the DigestInfo block the host builds)."""
        lines = [
            "capsim certificate challenge v1",
            f"purpose={self.purpose.value}",
            f"challenge={self.challenge_id}",
            f"organisation={self.org_id}",
            f"certificate={self.cert_id or ''}",
            *(f"{k}={json.dumps(v, ensure_ascii=True)}" for k, v in self.details),
            f"digest={self.txn_digest.hex()}",
            f"nonce={self.nonce.hex()}",
        ]
        return ("\n".join(lines) + "\n").encode("ascii")
