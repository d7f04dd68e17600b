"""The certificate credential's tables in the in-memory store (the reference of the SQL ones).

A mixin of the memory store's transaction: plain dicts in :class:`CertTables`, every write
through the transaction's undo log, and the same refusals as the SQL schema of migration 0007
(:mod:`capsim.verifier.certrows`): one identifier per identity and organisation, one
administrator per organisation, one live certificate per public key (an insert touching no
row; a state change that would break it is the schema's :class:`ValidationError`).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from capsim.errors import ValidationError
from capsim.verifier.certmodel import (
    LIVE_CERT_STATES,
    CertChallenge,
    CertCredential,
    Organisation,
    OrgUser,
)
from capsim.verifier.model import UserRole

__all__ = ["CertTables", "MemoryCertTables"]

_CERT_FIXED = (
    "user_id", "org_id", "spki_digest", "cert_der", "serial", "subject", "not_after", "created_at",
    "supplementary",
)  # fmt: skip


@dataclass
class CertTables:
    """The rows of the certificate credential, by primary key."""

    orgs: dict[str, Organisation] = field(default_factory=dict)
    users: dict[str, OrgUser] = field(default_factory=dict)
    certs: dict[str, CertCredential] = field(default_factory=dict)
    challenges: dict[str, CertChallenge] = field(default_factory=dict)


class MemoryCertTables:
    """The certificate tables' methods of the memory transaction (module docstring)."""

    @abstractmethod
    def _check(self) -> None:
        """Refuse a finished transaction (the memory transaction)."""

    @abstractmethod
    def _set(self, table: Any, key: Any, value: Any) -> None:
        """Write through the undo log (the memory transaction)."""

    @property
    @abstractmethod
    def _cert_tables(self) -> CertTables:
        """The store's certificate tables."""

    # -- organisations -------------------------------------------------------------------------
    def insert_org(self, org: Organisation) -> int:
        self._check()
        t = self._cert_tables
        if org.org_id in t.orgs:
            return 0
        self._set(t.orgs, org.org_id, org)
        return 1

    def get_org(self, org_id: str) -> Organisation | None:
        self._check()
        return self._cert_tables.orgs.get(org_id)

    def lock_org(self, org_id: str) -> Organisation | None:
        return self.get_org(org_id)  # the store lock serialises every transaction

    # -- users ---------------------------------------------------------------------------------
    def insert_org_user(self, user: OrgUser) -> int:
        self._check()
        t = self._cert_tables
        if user.user_id in t.users:
            return 0
        for other in t.users.values():
            if other.org_id != user.org_id:
                continue
            if other.id_digest == user.id_digest:
                return 0  # one identifier per identity and organisation
            if other.role is UserRole.ADMIN and user.role is UserRole.ADMIN:
                return 0  # one administrator per organisation
        self._set(t.users, user.user_id, user)
        return 1

    def get_org_user(self, user_id: str) -> OrgUser | None:
        self._check()
        return self._cert_tables.users.get(user_id)

    def find_org_user(self, org_id: str, id_digest: bytes) -> OrgUser | None:
        self._check()
        for user in self._cert_tables.users.values():
            if user.org_id == org_id and user.id_digest == id_digest:
                return user
        return None

    def list_org_users(self, org_id: str) -> list[OrgUser]:
        self._check()
        return sorted(
            (u for u in self._cert_tables.users.values() if u.org_id == org_id), key=lambda u: u.user_id
        )

    def update_org_user(self, user: OrgUser, *, expected_version: int) -> int:
        self._check()
        if user.version != expected_version + 1:
            raise ValidationError("user.version: expected expected_version + 1")
        t = self._cert_tables
        old = t.users.get(user.user_id)
        if old is None or old.version != expected_version:
            return 0
        self._set(
            t.users, user.user_id, dataclasses.replace(old, disabled=user.disabled, version=user.version)
        )
        return 1

    # -- certificates --------------------------------------------------------------------------
    def _live_with_key(self, spki_digest: bytes, *, other_than: str = "") -> CertCredential | None:
        for cert in self._cert_tables.certs.values():
            if (
                cert.spki_digest == spki_digest
                and cert.state in LIVE_CERT_STATES
                and cert.cert_id != other_than
            ):
                return cert
        return None

    def insert_cert(self, cert: CertCredential) -> int:
        self._check()
        t = self._cert_tables
        if cert.cert_id in t.certs:
            return 0
        if cert.state in LIVE_CERT_STATES and self._live_with_key(cert.spki_digest) is not None:
            return 0  # one live certificate per public key
        self._set(t.certs, cert.cert_id, cert)
        return 1

    def get_cert(self, cert_id: str) -> CertCredential | None:
        self._check()
        return self._cert_tables.certs.get(cert_id)

    def lock_cert(self, cert_id: str) -> CertCredential | None:
        return self.get_cert(cert_id)

    def find_live_cert(self, spki_digest: bytes) -> CertCredential | None:
        self._check()
        return self._live_with_key(spki_digest)

    def list_certs(self, *, org_id: str | None = None, user_id: str | None = None) -> list[CertCredential]:
        self._check()
        found = [
            c
            for c in self._cert_tables.certs.values()
            if (org_id is None or c.org_id == org_id) and (user_id is None or c.user_id == user_id)
        ]
        return sorted(found, key=lambda c: c.cert_id)

    def update_cert(self, cert: CertCredential, *, expected_version: int) -> int:
        self._check()
        if cert.version != expected_version + 1:
            raise ValidationError("cert.version: expected expected_version + 1")
        t = self._cert_tables
        old = t.certs.get(cert.cert_id)
        if old is None or old.version != expected_version:
            return 0
        if (
            cert.state in LIVE_CERT_STATES
            and old.state not in LIVE_CERT_STATES
            and self._live_with_key(old.spki_digest, other_than=old.cert_id) is not None
        ):
            raise ValidationError("value outside the schema's constraints (one live certificate per key)")
        new = dataclasses.replace(cert, **{n: getattr(old, n) for n in _CERT_FIXED})
        self._set(t.certs, cert.cert_id, new)
        return 1

    # -- challenges ----------------------------------------------------------------------------
    def insert_cert_challenge(self, challenge: CertChallenge) -> int:
        ch = challenge
        self._check()
        t = self._cert_tables
        if ch.challenge_id in t.challenges:
            return 0
        self._set(t.challenges, ch.challenge_id, ch)
        return 1

    def get_cert_challenge(self, challenge_id: str) -> CertChallenge | None:
        self._check()
        return self._cert_tables.challenges.get(challenge_id)

    def update_cert_challenge(self, challenge: CertChallenge, *, expected_attempts: int) -> int:
        ch = challenge
        self._check()
        t = self._cert_tables
        old = t.challenges.get(ch.challenge_id)
        if old is None or old.consumed_at is not None or old.attempts != expected_attempts:
            return 0
        self._set(
            t.challenges,
            ch.challenge_id,
            dataclasses.replace(old, attempts=ch.attempts, consumed_at=ch.consumed_at),
        )
        return 1
