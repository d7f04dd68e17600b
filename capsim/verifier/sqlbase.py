"""The :class:`~capsim.verifier.store.StoreTransaction` written once in SQL, for SQLite and PostgreSQL.

(Slightly over 600 lines on purpose: every SQL statement the stores send is here, so that SQLite
and PostgreSQL cannot drift; the row codecs are already in :mod:`.sqlrows`.)

Theory of operation
-------------------
1. **One SQL text, two engines.** Statements are written with ``?`` placeholders; a driver
   binding with ``PLACEHOLDER = "%s"`` (PostgreSQL) gets them rewritten once per statement text
   (and cached), and ``FOR_UPDATE`` is appended where a row is locked (empty for SQLite, whose
   ``BEGIN IMMEDIATE`` already serialises writers).
2. **Driver hooks.** A binding provides :meth:`SqlTransactionBase._exec` (run one statement,
   return its rows and row count) and the value codecs of
   :class:`~capsim.verifier.sqlrows.SqlRowCodecs`, which this class extends with the
   statements. :mod:`capsim.verifier.sqlite` and :mod:`capsim.verifier.postgres` are the
   bindings; PostgreSQL also overrides the verification and audit methods to pipeline them.
3. **Conditional single-row writes.** ``update_credential`` is a compare-and-swap on
   ``version`` with ``last_atc`` never decreasing (V34), ``rebind_credential`` (a key
   migration) is one on ``version`` alone, ``update_operation`` requires
   ``consumed_at IS NULL`` and the expected attempt count, and inserts are
   ``ON CONFLICT DO NOTHING``. Each returns the rows it touched; the service decides what a
   count other than one means (:mod:`capsim.verifier.store`).
4. **One verification.** :meth:`~SqlTransactionBase.read_verification` locks the target
   credential and its siblings in one statement (ascending id order), then reads the
   operation and the request record; :meth:`~SqlTransactionBase.write_verification` sends its
   statements in a fixed order (credentials, operation, request, the ledger row of an accept,
   the audit record), and the same statements for every reject whatever its reason (V30).
5. **Audit chain.** :meth:`~SqlTransactionBase.append_audit` chains the record on the last
   one and inserts it, then its keyed seal when the transaction has a sealer
   (:mod:`capsim.verifier.audit`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from capsim.errors import ValidationError
from capsim.verifier.audit import GENESIS_HASH, AuditEntry, AuditRecord, KeyedSealer, seal
from capsim.verifier.certrows import SqlCertTables
from capsim.verifier.clients import ApiClient, ClientScope
from capsim.verifier.model import (
    Acceptance,
    ActivationRecord,
    Changes,
    Credential,
    CredentialState,
    CustomerAccount,
    Operation,
    OperationMode,
    RequestRecord,
    Snapshot,
    User,
    UserRole,
)
from capsim.verifier.padding import PAD_CREDENTIAL_ID, PAD_OPERATION_CREDENTIAL_ID, PAD_OPERATION_ID
from capsim.verifier.sqlrows import (
    _ACC_COLS,
    _ACT_COLS,
    _AUDIT_COLS,
    _CRED_COLS,
    _CRED_MUTABLE,
    _OP_COLS,
    _REQ_COLS,
    _USER_COLS,
    SqlRowCodecs,
)
from capsim.verifier.store import check_rebind

__all__ = ["SqlTransactionBase"]

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
# the operation a verification names, or the padding operation when it does not exist (V30)
_SELECT_VERIFY_OPERATION: Final = (
    f"SELECT {_cols(_OP_COLS)} FROM cap_operation WHERE operation_id = coalesce("  # noqa: S608 constant
    f"(SELECT operation_id FROM cap_operation WHERE operation_id = ?), '{PAD_OPERATION_ID}')"
)
_SELECT_REQUEST: Final = f"SELECT {_cols(_REQ_COLS)} FROM cap_request WHERE request_id = ?"  # noqa: S608
_CLIENT_COLS: Final = (
    "client_id", "name", "scope", "acting_user", "key_digest", "created_at", "revoked_at", "version",
)  # fmt: skip
# One statement per hit: a newer window restarts the count, the same (or an older) one adds to it.
_HIT_RATE: Final = (
    "INSERT INTO cap_rate (bucket, slot, hits) VALUES (?, ?, 1) ON CONFLICT (bucket) DO UPDATE SET"
    " hits = CASE WHEN excluded.slot > cap_rate.slot THEN 1 ELSE cap_rate.hits + 1 END,"
    " slot = CASE WHEN excluded.slot > cap_rate.slot THEN excluded.slot ELSE cap_rate.slot END"
    " RETURNING hits"
)
_INSERT_REQUEST: Final = (
    f"INSERT INTO cap_request ({_cols(_REQ_COLS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 constant
    " ON CONFLICT DO NOTHING"
)


class SqlTransactionBase(SqlCertTables, SqlRowCodecs):
    """The :class:`~capsim.verifier.store.StoreTransaction` methods written once in SQL.

    Subclasses bind it to a driver: they provide :meth:`_exec` (run one statement and return
    its rows and row count), the placeholder style (``?`` or ``%s``) and the value codecs for
    times, JSON, booleans and bytes (:class:`~capsim.verifier.sqlrows.SqlRowCodecs`). SQL in
    this class uses ``?`` placeholders; a subclass with ``PLACEHOLDER = "%s"`` gets them
    rewritten once per statement text (and cached).
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
        else:  # the padding rows are no one's credentials
            where.append("substr(credential_id, 1, 7) <> 'cr:pad:'")
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

    def rebind_credential(
        self, credential_id: str, *, key_ref: str, pan_token: str, expected_version: int
    ) -> int:
        check_rebind(key_ref, pan_token)
        return self._count(
            "UPDATE cap_credential SET key_ref = ?, pan_token = ?, version = version + 1"
            " WHERE credential_id = ? AND version = ?",
            (key_ref, pan_token, credential_id, expected_version),
        )

    # -- operations ------------------------------------------------------------------------------
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

    def insert_request(self, record: RequestRecord) -> int:
        return self._count(_INSERT_REQUEST, self._request_params(record))

    # -- one verification ------------------------------------------------------------------------
    def _lock_group_statement(
        self, *, operation_id: str | None, credential_id: str | None, siblings: bool
    ) -> tuple[str, tuple[Any, ...]]:
        """One statement that locks the target credential (found through the operation when
        given; the padding credential when there is none, V30) and, with ``siblings``, the
        user's other credentials of the same PAN, in ascending id order (store rule 3)."""
        found = (
            "(SELECT credential_id FROM cap_operation WHERE operation_id = ?)"
            if operation_id is not None
            else "(SELECT credential_id FROM cap_credential WHERE credential_id = ?)"
        )
        padding = PAD_OPERATION_CREDENTIAL_ID if operation_id is not None else PAD_CREDENTIAL_ID
        target_sql = f"coalesce({found}, '{padding}')"
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
        operation and the request record (store rule 3: the credential row first); the
        padding rows stand in for a target that is not found (V30)."""
        sql, params = self._lock_group_statement(
            operation_id=operation_id, credential_id=credential_id, siblings=siblings
        )
        creds = tuple(self._credential(r) for r in self._rows(sql, params))
        op = None
        if operation_id is not None:
            row = self._one(_SELECT_VERIFY_OPERATION, (operation_id,))
            op = None if row is None else self._operation(row)
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

    def _audit_values(self, e: AuditEntry) -> tuple[Any, ...]:
        """The audit columns from ``event`` to ``details``, encoded for this engine."""
        details = self._enc_json({str(k): str(v) for k, v in dict(e.details).items()})
        return (
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
            details,
        )

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
                *self._audit_values(e),
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

    def audit_page(self, after_seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` audit records with ``seq > after_seq``, in order, with their seals."""
        rows = self._rows(
            f"SELECT {_AUDIT_SELECT} FROM cap_audit a LEFT JOIN cap_audit_seal s ON s.seq = a.seq"  # noqa: S608
            " WHERE a.seq > ? ORDER BY a.seq LIMIT ?",
            (after_seq, limit),
        )
        return [self._audit_record(r) for r in rows]

    # -- API clients and rate counters ------------------------------------------------------------
    def _client(self, row: Sequence[Any]) -> ApiClient:
        return ApiClient(
            client_id=row[0],
            name=row[1],
            scope=ClientScope(row[2]),
            acting_user=row[3],
            key_digest=self._dec_bytes(row[4]),
            created_at=self._dec_time(row[5]),
            revoked_at=None if row[6] is None else self._dec_time(row[6]),
            version=int(row[7]),
        )

    def insert_client(self, client: ApiClient) -> int:
        self._check_aware("client.created_at", client.created_at)
        marks = ", ".join("?" * len(_CLIENT_COLS))
        return self._count(
            f"INSERT INTO cap_client ({_cols(_CLIENT_COLS)}) VALUES ({marks})"  # noqa: S608 constant columns
            " ON CONFLICT DO NOTHING",
            (
                client.client_id,
                client.name,
                ClientScope(client.scope).value,
                client.acting_user,
                bytes(client.key_digest),
                self._enc_time(client.created_at),
                self._enc_time(client.revoked_at),
                client.version,
            ),
        )

    def get_client(self, client_id: str) -> ApiClient | None:
        row = self._one(
            f"SELECT {_cols(_CLIENT_COLS)} FROM cap_client WHERE client_id = ?",  # noqa: S608
            (client_id,),
        )
        return None if row is None else self._client(row)

    def list_clients(self) -> list[ApiClient]:
        rows = self._rows(f"SELECT {_cols(_CLIENT_COLS)} FROM cap_client ORDER BY client_id")  # noqa: S608
        return [self._client(r) for r in rows]

    def update_client(self, client: ApiClient, *, expected_version: int) -> int:
        if client.version != expected_version + 1:
            raise ValidationError("client.version: expected expected_version + 1")
        self._check_aware("client.revoked_at", client.revoked_at)
        return self._count(
            "UPDATE cap_client SET name = ?, key_digest = ?, revoked_at = ?, version = ?"
            " WHERE client_id = ? AND version = ?",
            (
                client.name,
                bytes(client.key_digest),
                self._enc_time(client.revoked_at),
                client.version,
                client.client_id,
                expected_version,
            ),
        )

    def hit_rate(self, bucket: str, slot: int) -> int:
        row = self._one(_HIT_RATE, (bucket, int(slot)))
        return 0 if row is None else int(row[0])

    def schema_version(self) -> int | None:
        row = self._one("SELECT coalesce(max(version), 0) FROM capsim_schema_migrations")
        return None if row is None else int(row[0])

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
