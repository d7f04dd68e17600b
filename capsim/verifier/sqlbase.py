"""SQLite verifier store: the embedded default (a single file, WAL, ``BEGIN IMMEDIATE``).

Theory of operation
-------------------
1. **One file.** The database is one file (plus SQLite's ``-wal``/``-shm`` companions),
   created with mode 0600 and journal mode WAL. The schema is brought to the current version
   by :mod:`capsim.verifier.migrate` when the store opens. An existing file that is not a
   capsim database (not SQLite, truncated, another program's) is refused with
   :class:`~capsim.errors.NotADatabaseError` before anything is written to it
   (:mod:`capsim.verifier.sqlitefile`).
2. **Writer serialisation.** Every transaction starts with ``BEGIN IMMEDIATE``, which takes
   SQLite's single write lock up front (threads of one process first queue on an in-process
   lock, so that they do not sleep in SQLite's busy handler). At most one transaction on the
   file runs at a time, across threads *and* processes, so a verification's read-check-write
   cannot interleave with another's: two processes verifying the same code give exactly one accept. The
   credential "row lock" of :mod:`.store` rule 3 is therefore implicit.
3. **Busy timeout.** Waiting for the write lock longer than ``lock_timeout`` (SQLite's busy
   timeout) raises :class:`~capsim.errors.TemporaryFailure`; nothing has changed.
4. **Scope.** SQLite is documented as the single-process (or few processes on one machine)
   store: it is safe per credential because writers are serialised, but it does not scale
   writers and must not be put on a network file system. Use PostgreSQL for several nodes.
5. **Clock.** There is no database server: :meth:`StoreTransaction.now` is this machine's
   UTC clock (``clock=`` injects another one for tests), read once per transaction.
6. **Threads.** Each thread gets its own connection (SQLite connections are not shared
   between threads); :meth:`SqliteStore.close` closes them all.

The SQL and the row ↔ model conversion are shared with :mod:`capsim.verifier.postgres`
through :class:`SqlTransactionBase`, which is parametrised by placeholder style and value
encoding only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final

from capsim.errors import ConfigError, TemporaryFailure, ValidationError
from capsim.verifier import migrate as _migrate
from capsim.verifier import sqlitefile as _sqlitefile
from capsim.verifier.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    AuditSealer,
    KeyedSealer,
    malformed_record,
    resolve_sealer,
    seal,
)
from capsim.verifier.model import (
    Acceptance,
    ActivationRecord,
    BatchItem,
    Changes,
    Credential,
    CredentialProfile,
    CredentialState,
    CustomerAccount,
    Operation,
    OperationMode,
    Outcome,
    RequestRecord,
    Snapshot,
    User,
    UserRole,
)
from capsim.verifier.sqlitefile import FileVerdict

__all__ = ["SqlTransactionBase", "SqliteStore"]

_log = logging.getLogger(__name__)

_CRED_COLS: Final = (
    "credential_id", "user_id", "customer_id", "state", "key_ref", "pan_token", "pan_last4", "psn",
    "profile", "created_at", "last_atc", "fail_count", "max_fail", "locked_until", "lock_escalations",
    "escalation_started_at", "parked_atc", "parked_at", "replaces", "replaced_by", "label", "script_atc",
    "version",
)  # fmt: skip
_CRED_MUTABLE: Final = (
    "state", "last_atc", "fail_count", "max_fail", "locked_until", "lock_escalations",
    "escalation_started_at", "parked_atc", "parked_at", "replaces", "replaced_by", "label", "script_atc",
    "version",
)  # fmt: skip
_REQ_COLS: Final = ("request_id", "outcome", "recorded_at", "acceptance", "method", "target", "fingerprint")
_CRED_TIMES: Final = frozenset({"created_at", "locked_until", "escalation_started_at", "parked_at"})
_OP_COLS: Final = (
    "operation_id", "credential_id", "mode", "challenge", "txn_digest", "created_at", "expires_at",
    "amount_minor", "currency", "payee", "tds_fields", "batch", "reference_supplied", "payment",
    "attempts", "max_attempts", "consumed_at",
)  # fmt: skip
_ACC_COLS: Final = (
    "credential_id", "atc", "mode", "request_id", "accepted_at", "operation_id", "txn_digest",
)  # fmt: skip
_USER_COLS: Final = ("user_id", "customer_id", "role", "created_at", "created_by", "disabled")
_ACT_COLS: Final = ("code_digest", "user_id", "created_at", "expires_at", "used_at", "attempts")
_AUDIT_COLS: Final = (
    "seq", "at", "event", "outcome", "reason", "request_id", "credential_id", "operation_id", "mode",
    "atc", "txn_digest", "node", "duration_us", "details", "prev_hash", "record_hash",
)  # fmt: skip


_AUDIT_SELECT: Final = ", ".join([*(f"a.{c}" for c in _AUDIT_COLS), "s.key_id", "s.seal"])


def _cols(cols: Sequence[str]) -> str:
    return ", ".join(cols)


# last_atc never decreases (V34); the version makes it a compare-and-swap (§5 step 4)
_UPDATE_CREDENTIAL: Final = (
    f"UPDATE cap_credential SET {', '.join(f'{name} = ?' for name in _CRED_MUTABLE)}"  # noqa: S608 constant
    " WHERE credential_id = ? AND version = ? AND last_atc <= ?"
)
_UPDATE_OPERATION: Final = (
    "UPDATE cap_operation SET attempts = ?, consumed_at = ? WHERE operation_id = ? AND consumed_at IS NULL"
    " AND attempts = ?"
)
_INSERT_ACCEPTANCE: Final = (
    f"INSERT INTO cap_acceptance ({_cols(_ACC_COLS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 constant
    " ON CONFLICT DO NOTHING"
)
_SELECT_OPERATION: Final = f"SELECT {_cols(_OP_COLS)} FROM cap_operation WHERE operation_id = ?"  # noqa: S608
_SELECT_REQUEST: Final = f"SELECT {_cols(_REQ_COLS)} FROM cap_request WHERE request_id = ?"  # noqa: S608
_INSERT_REQUEST: Final = (
    f"INSERT INTO cap_request ({_cols(_REQ_COLS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 constant
    " ON CONFLICT DO NOTHING"
)


def _need(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _acceptance_to_json(acc: Acceptance) -> dict[str, Any]:
    return {
        "credential_id": acc.credential_id,
        "atc": acc.atc,
        "mode": acc.mode.value,
        "request_id": acc.request_id,
        "accepted_at": acc.accepted_at.astimezone(UTC).isoformat(),
        "operation_id": acc.operation_id,
        "txn_digest": acc.txn_digest.hex(),
    }


def _acceptance_from_json(d: dict[str, Any]) -> Acceptance:
    return Acceptance(
        credential_id=d["credential_id"],
        atc=int(d["atc"]),
        mode=OperationMode(d["mode"]),
        request_id=d["request_id"],
        accepted_at=datetime.fromisoformat(d["accepted_at"]).astimezone(UTC),
        operation_id=d["operation_id"],
        txn_digest=bytes.fromhex(d["txn_digest"]),
    )


class SqlTransactionBase(ABC):
    """The :class:`~capsim.verifier.store.StoreTransaction` methods written once in SQL.

    Subclasses bind it to a driver: they provide :meth:`_exec` (run one statement and return
    its rows and row count), the placeholder style (``?`` or ``%s``) and the value codecs for
    times, JSON, booleans and bytes. SQL in this class uses ``?`` placeholders; a subclass with
    ``PLACEHOLDER = "%s"`` gets them rewritten once per statement text (and cached).
    """

    PLACEHOLDER: ClassVar[str] = "?"
    FOR_UPDATE: ClassVar[str] = ""
    _sql_cache: ClassVar[dict[str, str]]
    #: Seals the audit records of this transaction (set by the store; ``None``: unsealed).
    sealer: KeyedSealer | None = None

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValidationError("clock: expected a timezone-aware datetime")
        self._now = now.astimezone(UTC)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._sql_cache = {}

    # -- driver hooks ----------------------------------------------------------------------
    @abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], int]:
        """Driver hook."""

    @abstractmethod
    def _enc_time(self, value: datetime | None) -> Any:
        """Driver hook."""

    @abstractmethod
    def _dec_time(self, value: Any) -> datetime:
        """Driver hook."""

    @abstractmethod
    def _enc_json(self, value: Any) -> Any:
        """Driver hook."""

    @abstractmethod
    def _dec_json(self, value: Any) -> Any:
        """Driver hook."""

    def _enc_bool(self, value: bool) -> Any:
        return value

    def _dec_bytes(self, value: Any) -> bytes:
        return bytes(value)

    # -- helpers ---------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        if self.PLACEHOLDER == "?":
            return sql
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = sql.replace("?", self.PLACEHOLDER)
            self._sql_cache[sql] = cached
        return cached

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._exec(self._sql(sql), params)[0]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._exec(self._sql(sql), params)[1]

    def _opt_time(self, value: Any) -> datetime | None:
        return None if value is None else self._dec_time(value)

    def _check_aware(self, name: str, value: datetime | None) -> None:
        if value is not None and value.tzinfo is None:
            raise ValidationError(f"{name}: expected a timezone-aware datetime")

    # -- clock -----------------------------------------------------------------------------
    def now(self) -> datetime:
        return self._now

    # -- customers and users -----------------------------------------------------------------
    def insert_customer(self, customer: CustomerAccount) -> int:
        self._check_aware("customer.created_at", customer.created_at)
        return self._count(
            "INSERT INTO cap_customer (customer_id, created_at, name) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (customer.customer_id, self._enc_time(customer.created_at), customer.name),
        )

    def get_customer(self, customer_id: str) -> CustomerAccount | None:
        row = self._one(
            "SELECT customer_id, created_at, name FROM cap_customer WHERE customer_id = ?", (customer_id,)
        )
        if row is None:
            return None
        return CustomerAccount(customer_id=row[0], created_at=self._dec_time(row[1]), name=row[2])

    def _user(self, row: tuple[Any, ...]) -> User:
        return User(
            user_id=row[0],
            customer_id=row[1],
            role=UserRole(row[2]),
            created_at=self._dec_time(row[3]),
            created_by=row[4],
            disabled=bool(row[5]),
        )

    def insert_user(self, user: User) -> int:
        self._check_aware("user.created_at", user.created_at)
        return self._count(
            f"INSERT INTO cap_user ({_cols(_USER_COLS)}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608 constant columns
            " ON CONFLICT DO NOTHING",
            (
                user.user_id,
                user.customer_id,
                UserRole(user.role).value,
                self._enc_time(user.created_at),
                user.created_by,
                self._enc_bool(user.disabled),
            ),
        )

    def get_user(self, user_id: str) -> User | None:
        row = self._one(f"SELECT {_cols(_USER_COLS)} FROM cap_user WHERE user_id = ?", (user_id,))  # noqa: S608
        return None if row is None else self._user(row)

    def lock_user(self, user_id: str) -> User | None:
        row = self._one(
            f"SELECT {_cols(_USER_COLS)} FROM cap_user WHERE user_id = ?{self.FOR_UPDATE}",  # noqa: S608
            (user_id,),
        )
        return None if row is None else self._user(row)

    def list_users(self, customer_id: str | None = None) -> list[User]:
        if customer_id is None:
            rows = self._rows(f"SELECT {_cols(_USER_COLS)} FROM cap_user ORDER BY user_id")  # noqa: S608
        else:
            rows = self._rows(
                f"SELECT {_cols(_USER_COLS)} FROM cap_user WHERE customer_id = ? ORDER BY user_id",  # noqa: S608
                (customer_id,),
            )
        return [self._user(r) for r in rows]

    # -- activation codes ----------------------------------------------------------------------
    def _activation(self, row: tuple[Any, ...]) -> ActivationRecord:
        return ActivationRecord(
            code_digest=self._dec_bytes(row[0]),
            user_id=row[1],
            created_at=self._dec_time(row[2]),
            expires_at=self._dec_time(row[3]),
            used_at=self._opt_time(row[4]),
            attempts=int(row[5]),
        )

    def insert_activation(self, record: ActivationRecord) -> int:
        return self._count(
            f"INSERT INTO cap_activation ({_cols(_ACT_COLS)}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608 constant
            " ON CONFLICT DO NOTHING",
            (
                bytes(record.code_digest),
                record.user_id,
                self._enc_time(record.created_at),
                self._enc_time(record.expires_at),
                self._enc_time(record.used_at),
                record.attempts,
            ),
        )

    def get_activation(self, code_digest: bytes) -> ActivationRecord | None:
        row = self._one(
            f"SELECT {_cols(_ACT_COLS)} FROM cap_activation WHERE code_digest = ?",  # noqa: S608
            (bytes(code_digest),),
        )
        return None if row is None else self._activation(row)

    def update_activation(self, record: ActivationRecord, *, expected_attempts: int) -> int:
        return self._count(
            "UPDATE cap_activation SET used_at = ?, attempts = ?"
            " WHERE code_digest = ? AND used_at IS NULL AND attempts = ?",
            (self._enc_time(record.used_at), record.attempts, bytes(record.code_digest), expected_attempts),
        )

    # -- credentials ---------------------------------------------------------------------------
    def _credential(self, row: tuple[Any, ...]) -> Credential:
        values = dict(zip(_CRED_COLS, row, strict=True))
        for name in _CRED_TIMES:
            values[name] = self._opt_time(values[name])
        values["state"] = CredentialState(values["state"])
        values["profile"] = CredentialProfile.from_dict(self._dec_json(values["profile"]))
        return Credential(**values)

    def _cred_params(self, c: Credential, cols: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        for name in cols:
            value = getattr(c, name)
            if name in _CRED_TIMES:
                self._check_aware(f"credential.{name}", value)
                value = self._enc_time(value)
            elif name == "state":
                value = CredentialState(value).value
            elif name == "profile":
                value = self._enc_json(value.to_dict())
            out.append(value)
        return out

    def insert_credential(self, credential: Credential) -> int:
        marks = ", ".join("?" * len(_CRED_COLS))
        return self._count(
            f"INSERT INTO cap_credential ({_cols(_CRED_COLS)}) VALUES ({marks})"  # noqa: S608 constant columns
            " ON CONFLICT DO NOTHING",
            self._cred_params(credential, _CRED_COLS),
        )

    def get_credential(self, credential_id: str) -> Credential | None:
        row = self._one(
            f"SELECT {_cols(_CRED_COLS)} FROM cap_credential WHERE credential_id = ?",  # noqa: S608
            (credential_id,),
        )
        return None if row is None else self._credential(row)

    def card_floor(self, pan_token: str, psn: str) -> int:
        row = self._one(
            "SELECT coalesce(max(last_atc), -1) FROM cap_credential WHERE pan_token = ? AND psn = ?",
            (pan_token, psn),
        )
        return -1 if row is None else int(row[0])

    def lock_credential(self, credential_id: str) -> Credential | None:
        row = self._one(
            f"SELECT {_cols(_CRED_COLS)} FROM cap_credential WHERE credential_id = ?{self.FOR_UPDATE}",  # noqa: S608
            (credential_id,),
        )
        return None if row is None else self._credential(row)

    def lock_credentials(self, credential_ids: Sequence[str]) -> list[Credential]:
        out: list[Credential] = []
        # one statement per row, in ascending id order: the lock order is explicit (store rule 3)
        for cid in sorted(set(credential_ids)):
            cred = self.lock_credential(cid)
            if cred is not None:
                out.append(cred)
        return out

    def list_credentials(
        self,
        *,
        user_id: str | None = None,
        pan_token: str | None = None,
        states: frozenset[CredentialState] | None = None,
    ) -> list[Credential]:
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if pan_token is not None:
            where.append("pan_token = ?")
            params.append(pan_token)
        sql = f"SELECT {_cols(_CRED_COLS)} FROM cap_credential"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY credential_id"
        creds = [self._credential(r) for r in self._rows(sql, params)]
        if states is not None:
            wanted = frozenset(CredentialState(s) for s in states)
            creds = [c for c in creds if c.state in wanted]
        return creds

    def update_credential(self, credential: Credential, *, expected_version: int) -> int:
        if credential.version != expected_version + 1:
            raise ValidationError("credential.version: expected expected_version + 1")
        params = self._cred_params(credential, _CRED_MUTABLE)
        params += [credential.credential_id, expected_version, credential.last_atc]
        return self._count(_UPDATE_CREDENTIAL, params)

    # -- operations ------------------------------------------------------------------------------
    def _operation(self, row: tuple[Any, ...]) -> Operation:
        v = dict(zip(_OP_COLS, row, strict=True))
        return Operation(
            operation_id=v["operation_id"],
            credential_id=v["credential_id"],
            mode=OperationMode(v["mode"]),
            challenge=v["challenge"],
            txn_digest=self._dec_bytes(v["txn_digest"]),
            created_at=self._dec_time(v["created_at"]),
            expires_at=self._dec_time(v["expires_at"]),
            amount_minor=v["amount_minor"],
            currency=v["currency"],
            payee=v["payee"],
            tds_fields=tuple(str(f) for f in self._dec_json(v["tds_fields"])),
            batch=tuple(
                BatchItem(payee=str(b["payee"]), amount_minor=int(b["amount_minor"]))
                for b in self._dec_json(v["batch"])
            ),
            reference_supplied=bool(v["reference_supplied"]),
            payment=bool(v["payment"]),
            attempts=int(v["attempts"]),
            max_attempts=int(v["max_attempts"]),
            consumed_at=self._opt_time(v["consumed_at"]),
        )

    def insert_operation(self, operation: Operation) -> int:
        o = operation
        for name in ("created_at", "expires_at", "consumed_at"):
            self._check_aware(f"operation.{name}", getattr(o, name))
        params = (
            o.operation_id,
            o.credential_id,
            OperationMode(o.mode).value,
            o.challenge,
            bytes(o.txn_digest),
            self._enc_time(o.created_at),
            self._enc_time(o.expires_at),
            o.amount_minor,
            o.currency,
            o.payee,
            self._enc_json(list(o.tds_fields)),
            self._enc_json([{"payee": b.payee, "amount_minor": b.amount_minor} for b in o.batch]),
            self._enc_bool(o.reference_supplied),
            self._enc_bool(o.payment),
            o.attempts,
            o.max_attempts,
            self._enc_time(o.consumed_at),
        )
        marks = ", ".join("?" * len(_OP_COLS))
        return self._count(
            f"INSERT INTO cap_operation ({_cols(_OP_COLS)}) VALUES ({marks})"  # noqa: S608 constant columns
            " ON CONFLICT DO NOTHING",
            params,
        )

    def get_operation(self, operation_id: str) -> Operation | None:
        row = self._one(
            _SELECT_OPERATION,
            (operation_id,),
        )
        return None if row is None else self._operation(row)

    def list_open_operations(self, credential_id: str, now: datetime) -> list[Operation]:
        self._check_aware("now", now)
        rows = self._rows(
            f"SELECT {_cols(_OP_COLS)} FROM cap_operation WHERE credential_id = ?"  # noqa: S608
            " AND consumed_at IS NULL AND expires_at > ? AND attempts < max_attempts ORDER BY operation_id",
            (credential_id, self._enc_time(now)),
        )
        return [self._operation(r) for r in rows]

    def update_operation(self, operation: Operation, *, expected_attempts: int) -> int:
        self._check_aware("operation.consumed_at", operation.consumed_at)
        return self._count(
            _UPDATE_OPERATION,
            (
                operation.attempts,
                self._enc_time(operation.consumed_at),
                operation.operation_id,
                expected_attempts,
            ),
        )

    # -- ledger and requests -------------------------------------------------------------------
    def insert_acceptance(self, acceptance: Acceptance) -> int:
        return self._count(_INSERT_ACCEPTANCE, self._acceptance_params(acceptance))

    def _acceptance_params(self, a: Acceptance) -> tuple[Any, ...]:
        self._check_aware("acceptance.accepted_at", a.accepted_at)
        return (
            a.credential_id,
            a.atc,
            OperationMode(a.mode).value,
            a.request_id,
            self._enc_time(a.accepted_at),
            a.operation_id,
            bytes(a.txn_digest),
        )

    def list_acceptances(self, credential_id: str) -> list[Acceptance]:
        rows = self._rows(
            f"SELECT {_cols(_ACC_COLS)} FROM cap_acceptance WHERE credential_id = ? ORDER BY atc",  # noqa: S608
            (credential_id,),
        )
        return [
            Acceptance(
                credential_id=r[0],
                atc=int(r[1]),
                mode=OperationMode(r[2]),
                request_id=r[3],
                accepted_at=self._dec_time(r[4]),
                operation_id=r[5],
                txn_digest=self._dec_bytes(r[6]),
            )
            for r in rows
        ]

    def get_request(self, request_id: str) -> RequestRecord | None:
        row = self._one(
            _SELECT_REQUEST,
            (request_id,),
        )
        return None if row is None else self._request(row)

    def _request(self, row: tuple[Any, ...]) -> RequestRecord:
        acc = None if row[3] is None else _acceptance_from_json(self._dec_json(row[3]))
        return RequestRecord(
            request_id=row[0],
            outcome=Outcome(row[1]),
            recorded_at=self._dec_time(row[2]),
            acceptance=acc,
            method=row[4],
            target=row[5],
            fingerprint=self._dec_bytes(row[6]),
        )

    def _request_params(self, record: RequestRecord) -> tuple[Any, ...]:
        self._check_aware("record.recorded_at", record.recorded_at)
        acc = None if record.acceptance is None else self._enc_json(_acceptance_to_json(record.acceptance))
        return (
            record.request_id,
            Outcome(record.outcome).value,
            self._enc_time(record.recorded_at),
            acc,
            record.method,
            record.target,
            bytes(record.fingerprint),
        )

    def insert_request(self, record: RequestRecord) -> int:
        return self._count(_INSERT_REQUEST, self._request_params(record))

    # -- one verification ------------------------------------------------------------------------
    def _lock_group_statement(
        self, *, operation_id: str | None, credential_id: str | None, siblings: bool
    ) -> tuple[str, tuple[Any, ...]]:
        """One statement that locks the target credential (found through the operation when
        given) and, with ``siblings``, the user's other credentials of the same PAN, in
        ascending id order (store rule 3)."""
        target_sql = (
            "(SELECT credential_id FROM cap_operation WHERE operation_id = ?)"
            if operation_id is not None
            else "?"
        )
        target = operation_id if operation_id is not None else credential_id
        if not siblings:
            sql = f"SELECT {_cols(_CRED_COLS)} FROM cap_credential WHERE credential_id = {target_sql}"  # noqa: S608
            return sql + self.FOR_UPDATE, (target,)
        sql = (
            f"SELECT {_cols(_CRED_COLS)} FROM cap_credential WHERE credential_id = {target_sql}"  # noqa: S608
            " OR (pan_token, user_id) = (SELECT pan_token, user_id FROM cap_credential"
            f" WHERE credential_id = {target_sql}) ORDER BY credential_id{self.FOR_UPDATE}"
        )
        return sql, (target, target)

    def read_verification(
        self, *, operation_id: str | None, credential_id: str | None, request_id: str, siblings: bool
    ) -> Snapshot:
        """The target credential's group in one statement (each row read once), then the
        operation and the request record (store rule 3: the credential row first)."""
        sql, params = self._lock_group_statement(
            operation_id=operation_id, credential_id=credential_id, siblings=siblings
        )
        creds = tuple(self._credential(r) for r in self._rows(sql, params))
        op = self.get_operation(operation_id) if operation_id is not None else None
        return Snapshot(now=self._now, operation=op, credentials=creds, request=self.get_request(request_id))

    def _changes_statements(self, changes: Changes, audit_sql: str = "") -> list[tuple[str, Sequence[Any]]]:
        """The statements of :meth:`write_verification`, in order (the same for every reject)."""
        out: list[tuple[str, Sequence[Any]]] = []
        for w in changes.credentials:
            if w.new is None:
                params: list[Any] = [None] * len(_CRED_MUTABLE) + [w.credential_id, -1, None]
            else:
                if w.new.version != w.expected_version + 1:
                    raise ValidationError("credential.version: expected expected_version + 1")
                params = self._cred_params(w.new, _CRED_MUTABLE)
                params += [w.credential_id, w.expected_version, w.new.last_atc]
            out.append((_UPDATE_CREDENTIAL, params))
        o = changes.operation
        self._check_aware("operation.consumed_at", o.consumed_at)
        out.append(
            (
                _UPDATE_OPERATION,
                (o.attempts, self._enc_time(o.consumed_at), o.operation_id, o.expected_attempts),
            )
        )
        out.append((_INSERT_REQUEST, self._request_params(changes.request)))
        if changes.acceptance is not None:
            out.append((_INSERT_ACCEPTANCE, self._acceptance_params(changes.acceptance)))
        return out

    def write_verification(self, changes: Changes, audit: AuditEntry) -> tuple[bool, AuditRecord]:
        required = [w.required for w in changes.credentials] + [changes.operation.required, True]
        if changes.acceptance is not None:
            required.append(True)
        ok = True
        for (sql, params), must in zip(self._changes_statements(changes), required, strict=True):
            touched = self._count(sql, params)
            ok = ok and (touched == 1 or not must)
        return ok, self.append_audit(audit)

    # -- audit and settings ------------------------------------------------------------------------
    def _audit_tip(self) -> tuple[int, bytes]:
        row = self._one("SELECT seq, record_hash FROM cap_audit ORDER BY seq DESC LIMIT 1")
        if row is None:
            return 0, GENESIS_HASH
        return int(row[0]), self._dec_bytes(row[1])

    def _insert_audit(self, record: AuditRecord, sql: str, params: Sequence[Any]) -> None:
        """Insert the sealed record (PostgreSQL also moves its chain-tip row in the same statement)."""
        self._count(sql, params)

    def append_audit(self, entry: AuditEntry) -> AuditRecord:
        seq, prev = self._audit_tip()
        record = seal(entry, seq=seq + 1, at=self._now, prev_hash=prev, sealer=self.sealer)
        e = record.entry
        marks = ", ".join("?" * len(_AUDIT_COLS))
        self._insert_audit(
            record,
            f"INSERT INTO cap_audit ({_cols(_AUDIT_COLS)}) VALUES ({marks})",  # noqa: S608
            (
                record.seq,
                self._enc_time(record.at),
                e.event,
                e.outcome,
                e.reason,
                e.request_id,
                e.credential_id,
                e.operation_id,
                e.mode,
                e.atc,
                bytes(e.txn_digest),
                e.node,
                e.duration_us,
                self._enc_json({str(k): str(v) for k, v in dict(e.details).items()}),
                record.prev_hash,
                record.record_hash,
            ),
        )
        if record.seal:
            self._insert_seal(record)
        return record

    def _insert_seal(self, record: AuditRecord) -> None:
        """Store the record's keyed seal (PostgreSQL defers it to the COMMIT round trip)."""
        self._count(
            "INSERT INTO cap_audit_seal (seq, key_id, seal) VALUES (?, ?, ?)",
            (record.seq, record.seal_key_id, record.seal),
        )

    def _audit_record(self, row: tuple[Any, ...]) -> AuditRecord:
        """Decode one audit row (with its seal columns); never raises on a tampered row: a value
        that no writer produces gives a record with ``malformed`` naming the column."""
        v = dict(zip((*_AUDIT_COLS, "seal_key_id", "seal"), row, strict=True))
        seq = int(v["seq"])
        column = "at"
        try:
            at = self._dec_time(v["at"])
            for column in ("event", "outcome", "reason", "node"):
                _need(isinstance(v[column], str), "not text")
            for column in ("request_id", "credential_id", "operation_id", "mode"):
                _need(v[column] is None or isinstance(v[column], str), "not text")
            for column in ("atc", "duration_us"):
                value = v[column]
                _need((value is None and column == "atc") or _is_int(value), "not an integer")
            for column in ("txn_digest", "prev_hash", "record_hash"):
                _need(isinstance(v[column], bytes | bytearray | memoryview), "not bytes")
            column = "details"
            details = self._dec_json(v["details"])
            _need(isinstance(details, dict), "not a JSON object")
            _need(all(isinstance(k, str) and isinstance(x, str) for k, x in details.items()), "not strings")
            column = "seal"
            _need(v["seal"] is None or isinstance(v["seal"], bytes | bytearray | memoryview), "not bytes")
            _need(v["seal_key_id"] is None or isinstance(v["seal_key_id"], str), "not text")
        except (ValueError, TypeError, OverflowError, AttributeError) as exc:
            return malformed_record(
                seq, f"{column}: {exc}", prev_hash=v["prev_hash"], record_hash=v["record_hash"]
            )
        entry = AuditEntry(
            event=v["event"],
            outcome=v["outcome"],
            reason=v["reason"],
            request_id=v["request_id"],
            credential_id=v["credential_id"],
            operation_id=v["operation_id"],
            mode=v["mode"],
            atc=v["atc"],
            txn_digest=self._dec_bytes(v["txn_digest"]),
            node=v["node"],
            duration_us=v["duration_us"],
            details=details,
        )
        return AuditRecord(
            seq=seq,
            at=at,
            entry=entry,
            prev_hash=self._dec_bytes(v["prev_hash"]),
            record_hash=self._dec_bytes(v["record_hash"]),
            seal=b"" if v["seal"] is None else self._dec_bytes(v["seal"]),
            seal_key_id=v["seal_key_id"] or "",
        )

    def audit_page(self, after_seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` audit records with ``seq > after_seq``, in order, with their seals."""
        rows = self._rows(
            f"SELECT {_AUDIT_SELECT} FROM cap_audit a LEFT JOIN cap_audit_seal s ON s.seq = a.seq"  # noqa: S608
            " WHERE a.seq > ? ORDER BY a.seq LIMIT ?",
            (after_seq, limit),
        )
        return [self._audit_record(r) for r in rows]

    def get_setting(self, name: str) -> str | None:
        row = self._one("SELECT value FROM cap_setting WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        if not isinstance(value, str):
            raise ValidationError(f"value must be a str, got {type(value).__name__}")
        self._count(
            "INSERT INTO cap_setting (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )


# ---------------------------------------------------------------------------------------------
# SQLite binding


def _sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _SqliteTransaction(SqlTransactionBase):
    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        super().__init__(now)
        self._conn = conn
        self.active = True

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], int]:
        if not self.active:
            raise TemporaryFailure("transaction already finished")
        try:
            cur = self._conn.execute(sql, tuple(params))
            rows = cur.fetchall()
            return rows, cur.rowcount
        except sqlite3.IntegrityError as exc:
            raise ValidationError(f"value outside the schema's constraints ({exc})") from None
        except sqlite3.Error as exc:
            raise TemporaryFailure("SQLite store unavailable or busy") from exc

    def _enc_time(self, value: datetime | None) -> Any:
        return _sqlite_time(value)

    def _dec_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(str(value)).astimezone(UTC)

    def _enc_json(self, value: Any) -> Any:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def _dec_json(self, value: Any) -> Any:
        return json.loads(value)

    def _enc_bool(self, value: bool) -> Any:
        return 1 if value else 0


class SqliteStore:
    """The SQLite :class:`~capsim.verifier.store.Store` (see the module docstring).

    Parameters
    ----------
    path:
        The database file; created with mode 0600 when missing (its directory must exist).
    migrate:
        Bring the schema to the current version when opening (default). With ``False`` a
        database below the current version raises :class:`~capsim.errors.ConfigError`.
    lock_timeout:
        Default seconds to wait for the write lock (SQLite's busy timeout), 5.0.
    clock:
        The store's clock (timezone-aware UTC); defaults to the system clock.

    Raises
    ------
    NotADatabaseError
        ``path`` exists but is not a capsim verifier database (permanent; the file is left
        unchanged).
    TemporaryFailure
        The database is locked by another process beyond ``lock_timeout``, or unreadable.

    Examples
    --------
    >>> import tempfile, os
    >>> tmp = tempfile.TemporaryDirectory()
    >>> d = tmp.name
    >>> store = SqliteStore(os.path.join(d, "v.db"))
    >>> with store.transaction() as tx:
    ...     tx.set_setting("policy", "{}")
    >>> with store.transaction() as tx:
    ...     tx.get_setting("policy")
    '{}'
    >>> oct(os.stat(os.path.join(d, "v.db")).st_mode & 0o777)
    '0o600'
    >>> store.close()
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        migrate: bool = True,
        lock_timeout: float = 5.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or lock_timeout < 0:
            raise ValidationError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
        self._path = Path(path)
        if str(self._path) in ("", ":memory:"):
            raise ValidationError("path must name a database file (use MemoryStore for memory)")
        self._default_timeout = float(lock_timeout)
        self._clock = clock or _utcnow
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._writer = threading.Lock()
        self._closed = False
        verdict = self._open_file()
        conn = self._connection(verdict=verdict)
        try:
            if migrate:
                _migrate.upgrade(conn)
            else:
                have, head = _migrate.current_version(conn), _migrate.head_version("sqlite")
                if have != head:
                    raise ConfigError(
                        f"database schema is at version {have}, expected {head}; run the migrations"
                    )
        except sqlite3.Error as exc:
            self.close()
            raise self._open_error(exc) from exc
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self._path)!r}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _open_file(self) -> FileVerdict:
        """Create the file (mode 0600) if missing and judge its header (:mod:`.sqlitefile` rule 1).

        A file that is not an SQLite database is refused here, before SQLite opens it.
        """
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"path: cannot open or create the database file ({exc.strerror})") from None
        try:
            head, size = _sqlitefile.read_header(fd)
        except OSError as exc:
            raise TemporaryFailure(f"SQLite store unavailable ({exc.strerror})") from None
        finally:
            os.close(fd)
        verdict = _sqlitefile.inspect_header(head, size)
        if verdict is FileVerdict.NOT_SQLITE:
            raise _sqlitefile.not_a_database(self._path, "not an SQLite database file")
        return verdict

    def _tighten_mode(self) -> None:
        """A capsim database that others may read becomes 0600 (after the checks: a file that is
        not a capsim database keeps its mode)."""
        try:
            if stat.S_IMODE(self._path.stat().st_mode) & 0o077:
                self._path.chmod(0o600)
        except OSError:  # pragma: no cover - another user owns it: opening still works
            _log.warning("cannot restrict the database file's mode to 0600")

    def _open_error(self, exc: sqlite3.Error) -> Exception:
        """The capsim error for an SQLite error met while opening (:mod:`.sqlitefile` rule 4)."""
        if _sqlitefile.is_permanent(exc):
            return _sqlitefile.not_a_database(self._path, "a corrupt or truncated SQLite database")
        return TemporaryFailure("SQLite store unavailable or busy")

    def _check_contents(self, conn: sqlite3.Connection, verdict: FileVerdict) -> None:
        """Refuse a truncated database or another program's (:mod:`.sqlitefile` rules 2–3), by
        reading only: nothing is written to a file that is not a capsim database."""
        if verdict is FileVerdict.SUSPECT:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                raise _sqlitefile.not_a_database(self._path, "a corrupt or truncated SQLite database")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if _sqlitefile.is_foreign_schema(tables):
            raise _sqlitefile.not_a_database(
                self._path, "an SQLite database of another program: it has tables but no capsim schema"
            )

    def _connection(self, *, verdict: FileVerdict | None = None) -> sqlite3.Connection:
        """This thread's connection; the first one (``verdict`` given) also checks the file."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise TemporaryFailure("store is closed")
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, timeout=self._default_timeout, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        try:
            if verdict is not None:
                self._check_contents(conn, verdict)
                self._tighten_mode()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            companion = Path(str(self._path) + suffix)
            try:
                if companion.exists() and stat.S_IMODE(companion.stat().st_mode) & 0o077:
                    companion.chmod(0o600)
            except OSError:  # pragma: no cover - another process owns it
                pass
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @contextmanager
    def transaction(
        self, *, lock_timeout: float | None = None, sealer: AuditSealer | None = None
    ) -> Iterator[SqlTransactionBase]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on exception); see the module docstring.
        ``sealer`` seals the audit records appended in it (:mod:`.store` rule 7)."""
        keyed = resolve_sealer(sealer)
        timeout = self._default_timeout if lock_timeout is None else lock_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise ValidationError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
        conn = self._connection()
        if conn.in_transaction:
            raise ValidationError("transaction: nested transactions on one thread are not supported")
        # Threads of this process queue on a lock (woken at once when it is free) instead of in
        # SQLite's busy handler, which sleeps and retries: same serialisation, far shorter tail
        # latency. Other processes are still kept out by BEGIN IMMEDIATE and the busy timeout.
        started = time.monotonic()
        if not self._writer.acquire(timeout=timeout):
            raise TemporaryFailure("SQLite write lock not granted within lock_timeout")
        try:
            remaining = max(0.0, timeout - (time.monotonic() - started))
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(remaining * 1000)}")
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise TemporaryFailure("SQLite write lock not granted within lock_timeout") from exc
            tx = _SqliteTransaction(conn, self._clock())
            tx.sealer = keyed
            try:
                yield tx
            except BaseException:
                tx.active = False
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # pragma: no cover - the connection is gone
                    _log.warning("SQLite rollback failed")
                raise
            tx.active = False
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise TemporaryFailure("SQLite commit failed; nothing was recorded") from exc
        finally:
            self._writer.release()

    def audit_records(self, *, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Committed audit records after ``after_seq``, in order, read in pages."""
        conn = self._connection()
        last = after_seq
        while True:
            tx = _SqliteTransaction(conn, self._clock())
            page = tx.audit_page(last, 500)
            yield from page
            if len(page) < 500:
                return
            last = page[-1].seq

    def close(self) -> None:
        """Close every connection; later transactions raise :class:`TemporaryFailure`."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.ProgrammingError):
                conn.close()
        self._local = threading.local()
