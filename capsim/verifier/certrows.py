"""The certificate credential's tables in SQL, for SQLite and PostgreSQL alike.

A mixin of :class:`~capsim.verifier.sqlbase.SqlTransactionBase`: the same ``?``-placeholder
statements and value codecs, for the tables of migration 0007 (``cap_org``, ``cap_org_user``,
``cap_cert``, ``cap_cert_challenge``). The semantics are those of
:class:`~capsim.verifier.store.StoreTransaction`: inserts are ``ON CONFLICT DO NOTHING`` and
return the rows they touched (0 when a primary key or a unique index refused them: an
identity already registered in the organisation, a second administrator, a second live
certificate for one public key), updates are compare-and-swap on ``version`` (users and
certificates) or on ``consumed_at IS NULL AND attempts`` (challenges).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Final

from capsim.errors import ValidationError
from capsim.verifier.certmodel import (
    CertChallenge,
    CertCredential,
    CertState,
    ChallengePurpose,
    Organisation,
    OrgKind,
    OrgUser,
)
from capsim.verifier.model import UserRole
from capsim.verifier.sqlrows import SqlRowCodecs

__all__ = ["SqlCertTables"]

_ORG_COLS: Final = ("org_id", "name", "kind", "master_digest", "created_at")
_OUSER_COLS: Final = (
    "user_id", "org_id", "role", "id_digest", "created_at", "created_by", "disabled", "version",
)  # fmt: skip
_CERT_COLS: Final = (
    "cert_id", "user_id", "org_id", "state", "spki_digest", "cert_der", "serial", "subject", "not_after",
    "created_at", "supplementary", "label", "fail_count", "locked_until", "lock_escalations",
    "escalation_started_at", "version",
)  # fmt: skip
_CERT_MUTABLE: Final = (
    "state", "label", "fail_count", "locked_until", "lock_escalations", "escalation_started_at", "version",
)  # fmt: skip
_CH_COLS: Final = (
    "challenge_id", "purpose", "org_id", "cert_id", "nonce", "txn_digest", "details", "created_at",
    "expires_at", "attempts", "max_attempts", "consumed_at",
)  # fmt: skip


def _c(cols: Sequence[str]) -> str:
    return ", ".join(cols)


def _marks(cols: Sequence[str]) -> str:
    return ", ".join("?" * len(cols))


_SEL_ORG: Final = f"SELECT {_c(_ORG_COLS)} FROM cap_org WHERE org_id = ?"  # noqa: S608 constant
_SEL_OUSER: Final = f"SELECT {_c(_OUSER_COLS)} FROM cap_org_user"  # noqa: S608 constant
_SEL_CERT: Final = f"SELECT {_c(_CERT_COLS)} FROM cap_cert"  # noqa: S608 constant
_SEL_CH: Final = f"SELECT {_c(_CH_COLS)} FROM cap_cert_challenge WHERE challenge_id = ?"  # noqa: S608 constant


class SqlCertTables(SqlRowCodecs):
    """The certificate tables' statements (module docstring)."""

    FOR_UPDATE: ClassVar[str] = ""

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; its rows (SqlTransactionBase)."""

    @abstractmethod
    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run a query; its first row (SqlTransactionBase)."""

    @abstractmethod
    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the rows it touched (SqlTransactionBase)."""

    # -- organisations -------------------------------------------------------------------------
    def _org(self, row: Sequence[Any]) -> Organisation:
        return Organisation(
            org_id=row[0],
            name=row[1],
            kind=OrgKind(row[2]),
            master_digest=self._dec_bytes(row[3]),
            created_at=self._dec_time(row[4]),
        )

    def insert_org(self, org: Organisation) -> int:
        self._check_aware("org.created_at", org.created_at)
        return self._count(
            f"INSERT INTO cap_org ({_c(_ORG_COLS)}) VALUES ({_marks(_ORG_COLS)}) ON CONFLICT DO NOTHING",  # noqa: S608
            (
                org.org_id,
                org.name,
                OrgKind(org.kind).value,
                bytes(org.master_digest),
                self._enc_time(org.created_at),
            ),
        )

    def get_org(self, org_id: str) -> Organisation | None:
        row = self._one(_SEL_ORG, (org_id,))
        return None if row is None else self._org(row)

    def lock_org(self, org_id: str) -> Organisation | None:
        row = self._one(_SEL_ORG + self.FOR_UPDATE, (org_id,))
        return None if row is None else self._org(row)

    # -- users ---------------------------------------------------------------------------------
    def _org_user(self, row: Sequence[Any]) -> OrgUser:
        return OrgUser(
            user_id=row[0],
            org_id=row[1],
            role=UserRole(row[2]),
            id_digest=self._dec_bytes(row[3]),
            created_at=self._dec_time(row[4]),
            created_by=row[5],
            disabled=bool(row[6]),
            version=int(row[7]),
        )

    def insert_org_user(self, user: OrgUser) -> int:
        self._check_aware("user.created_at", user.created_at)
        return self._count(
            f"INSERT INTO cap_org_user ({_c(_OUSER_COLS)}) VALUES ({_marks(_OUSER_COLS)})"  # noqa: S608
            " ON CONFLICT DO NOTHING",
            (
                user.user_id,
                user.org_id,
                UserRole(user.role).value,
                bytes(user.id_digest),
                self._enc_time(user.created_at),
                user.created_by,
                self._enc_bool(user.disabled),
                user.version,
            ),
        )

    def get_org_user(self, user_id: str) -> OrgUser | None:
        row = self._one(_SEL_OUSER + " WHERE user_id = ?", (user_id,))
        return None if row is None else self._org_user(row)

    def find_org_user(self, org_id: str, id_digest: bytes) -> OrgUser | None:
        row = self._one(_SEL_OUSER + " WHERE org_id = ? AND id_digest = ?", (org_id, bytes(id_digest)))
        return None if row is None else self._org_user(row)

    def list_org_users(self, org_id: str) -> list[OrgUser]:
        rows = self._rows(_SEL_OUSER + " WHERE org_id = ? ORDER BY user_id", (org_id,))
        return [self._org_user(r) for r in rows]

    def update_org_user(self, user: OrgUser, *, expected_version: int) -> int:
        if user.version != expected_version + 1:
            raise ValidationError("user.version: expected expected_version + 1")
        return self._count(
            "UPDATE cap_org_user SET disabled = ?, version = ? WHERE user_id = ? AND version = ?",
            (self._enc_bool(user.disabled), user.version, user.user_id, expected_version),
        )

    # -- certificates --------------------------------------------------------------------------
    def _cert(self, row: Sequence[Any]) -> CertCredential:
        return CertCredential(
            cert_id=row[0],
            user_id=row[1],
            org_id=row[2],
            state=CertState(row[3]),
            spki_digest=self._dec_bytes(row[4]),
            cert_der=self._dec_bytes(row[5]),
            serial=row[6],
            subject=row[7],
            not_after=self._dec_time(row[8]),
            created_at=self._dec_time(row[9]),
            supplementary=bool(row[10]),
            label=row[11],
            fail_count=int(row[12]),
            locked_until=self._opt_time(row[13]),
            lock_escalations=int(row[14]),
            escalation_started_at=self._opt_time(row[15]),
            version=int(row[16]),
        )

    def _cert_values(self, c: CertCredential) -> dict[str, Any]:
        for name in ("not_after", "created_at", "locked_until", "escalation_started_at"):
            self._check_aware(f"cert.{name}", getattr(c, name))
        return {
            "cert_id": c.cert_id,
            "user_id": c.user_id,
            "org_id": c.org_id,
            "state": CertState(c.state).value,
            "spki_digest": bytes(c.spki_digest),
            "cert_der": bytes(c.cert_der),
            "serial": c.serial,
            "subject": c.subject,
            "not_after": self._enc_time(c.not_after),
            "created_at": self._enc_time(c.created_at),
            "supplementary": self._enc_bool(c.supplementary),
            "label": c.label,
            "fail_count": c.fail_count,
            "locked_until": self._enc_time(c.locked_until),
            "lock_escalations": c.lock_escalations,
            "escalation_started_at": self._enc_time(c.escalation_started_at),
            "version": c.version,
        }

    def insert_cert(self, cert: CertCredential) -> int:
        values = self._cert_values(cert)
        return self._count(
            f"INSERT INTO cap_cert ({_c(_CERT_COLS)}) VALUES ({_marks(_CERT_COLS)}) ON CONFLICT DO NOTHING",  # noqa: S608
            [values[c] for c in _CERT_COLS],
        )

    def get_cert(self, cert_id: str) -> CertCredential | None:
        row = self._one(_SEL_CERT + " WHERE cert_id = ?", (cert_id,))
        return None if row is None else self._cert(row)

    def lock_cert(self, cert_id: str) -> CertCredential | None:
        row = self._one(_SEL_CERT + " WHERE cert_id = ?" + self.FOR_UPDATE, (cert_id,))
        return None if row is None else self._cert(row)

    def find_live_cert(self, spki_digest: bytes) -> CertCredential | None:
        row = self._one(
            _SEL_CERT + " WHERE spki_digest = ? AND state IN ('active', 'blocked')", (bytes(spki_digest),)
        )
        return None if row is None else self._cert(row)

    def list_certs(self, *, org_id: str | None = None, user_id: str | None = None) -> list[CertCredential]:
        where, params = [], []
        if org_id is not None:
            where.append("org_id = ?")
            params.append(org_id)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        sql = _SEL_CERT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY cert_id"
        return [self._cert(r) for r in self._rows(sql, params)]

    def update_cert(self, cert: CertCredential, *, expected_version: int) -> int:
        if cert.version != expected_version + 1:
            raise ValidationError("cert.version: expected expected_version + 1")
        values = self._cert_values(cert)
        sets = ", ".join(f"{c} = ?" for c in _CERT_MUTABLE)
        return self._count(
            f"UPDATE cap_cert SET {sets} WHERE cert_id = ? AND version = ?",  # noqa: S608 constant columns
            [*(values[c] for c in _CERT_MUTABLE), cert.cert_id, expected_version],
        )

    # -- challenges ----------------------------------------------------------------------------
    def _challenge(self, row: Sequence[Any]) -> CertChallenge:
        details = self._dec_json(row[6])
        return CertChallenge(
            challenge_id=row[0],
            purpose=ChallengePurpose(row[1]),
            org_id=row[2],
            cert_id=row[3],
            nonce=self._dec_bytes(row[4]),
            txn_digest=self._dec_bytes(row[5]),
            details=tuple((str(k), str(v)) for k, v in details),
            created_at=self._dec_time(row[7]),
            expires_at=self._dec_time(row[8]),
            attempts=int(row[9]),
            max_attempts=int(row[10]),
            consumed_at=self._opt_time(row[11]),
        )

    def insert_cert_challenge(self, challenge: CertChallenge) -> int:
        ch = challenge
        for name in ("created_at", "expires_at", "consumed_at"):
            self._check_aware(f"challenge.{name}", getattr(ch, name))
        return self._count(
            f"INSERT INTO cap_cert_challenge ({_c(_CH_COLS)}) VALUES ({_marks(_CH_COLS)})"  # noqa: S608
            " ON CONFLICT DO NOTHING",
            (
                ch.challenge_id,
                ChallengePurpose(ch.purpose).value,
                ch.org_id,
                ch.cert_id,
                bytes(ch.nonce),
                bytes(ch.txn_digest),
                self._enc_json([list(p) for p in ch.details]),
                self._enc_time(ch.created_at),
                self._enc_time(ch.expires_at),
                ch.attempts,
                ch.max_attempts,
                self._enc_time(ch.consumed_at),
            ),
        )

    def get_cert_challenge(self, challenge_id: str) -> CertChallenge | None:
        row = self._one(_SEL_CH, (challenge_id,))
        return None if row is None else self._challenge(row)

    def update_cert_challenge(self, challenge: CertChallenge, *, expected_attempts: int) -> int:
        ch = challenge
        self._check_aware("challenge.consumed_at", ch.consumed_at)
        return self._count(
            "UPDATE cap_cert_challenge SET attempts = ?, consumed_at = ?"
            " WHERE challenge_id = ? AND consumed_at IS NULL AND attempts = ?",
            (ch.attempts, self._enc_time(ch.consumed_at), ch.challenge_id, expected_attempts),
        )
