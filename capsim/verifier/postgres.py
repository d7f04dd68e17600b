"""PostgreSQL verifier store (psycopg 3): the exactly-once design of verifier.md §5.

(Slightly over 600 lines on purpose: the pool, the lazy BEGIN, the pipelined verification batches
and COMMIT with the audit seals are one exactly-once design, read together.)

Install with ``pip install capsim[postgres]``.

Theory of operation
-------------------
1. **One READ COMMITTED transaction per request.** :meth:`PostgresStore.transaction` sends
   ``BEGIN ISOLATION LEVEL READ COMMITTED`` and, in the same round trip, reads the database
   clock and sets ``set_config('lock_timeout', …, true)`` (the ``SET LOCAL`` form: it ends
   with the transaction). :meth:`StoreTransaction.now` is that transaction's ``now()``.
2. **Parent row first.** The service locks the credential row with ``SELECT … FOR UPDATE``
   (:meth:`lock_credential`) before anything else of that credential; operation rows are never
   locked on their own; several credentials are locked one by one in ascending id order. So
   two transactions never wait on each other in a cycle (no deadlocks, V21).
3. **Conditional single-row writes.** ``update_credential`` is a compare-and-swap on
   ``version`` (and ``last_atc`` never decreasing), ``update_operation`` requires
   ``consumed_at IS NULL`` and the expected attempt count, and the ledger ``cap_acceptance``
   (primary key (credential_id, atc), unique operation_id and request_id) takes inserts with
   ``ON CONFLICT DO NOTHING``. Each returns the number of rows it touched; the service rolls
   back and rejects when a write that must touch one row touches none (§5 step 4).
4. **Audit chain.** The chain tip lives in the single row ``cap_audit_head``. One statement
   locks it (``UPDATE``, the *last* lock of the transaction), takes the next sequence number,
   chains the record (``sha256`` in the server over the canonical encoding built here) and
   inserts it; the hash is re-checked with :func:`capsim.verifier.audit.seal`. Audit appends,
   which every transaction makes, are thus serialised only from that statement to COMMIT, and
   the tip never takes part in a lock cycle. A sealed transaction computes each record's keyed
   seal here and sends the ``cap_audit_seal`` insert *pipelined with COMMIT* (psycopg pipeline
   mode: both statements in one round trip), so sealing adds no round trip; if the insert
   fails, the COMMIT is skipped and the transaction rolled back.
5. **Errors.** SQLSTATE 55P03 (lock not granted within ``lock_timeout``), 40P01, 40001, a
   lost connection or any other server or driver error raises
   :class:`~capsim.errors.TemporaryFailure` after the transaction is rolled back; a
   constraint violation raises :class:`~capsim.errors.ValidationError`. A connection lost
   during ``COMMIT`` leaves the outcome unknown: that is a ``TemporaryFailure`` too, and a retry
   with the same ``request_id`` finds the recorded outcome (V23).
6. **Pooling.** A small thread-safe pool of autocommit connections; a connection that broke
   is discarded. Nothing session-level is used (no advisory locks, no ``SET`` outside a
   transaction, no temporary tables), so the store works behind PgBouncer in transaction
   pooling mode (with PgBouncer older than 1.21 pass ``prepare_threshold=None``).
7. **Clock.** All decisions use the database clock; ``clock=`` exists only so that the
   conformance tests can move time, and is never used in production.
8. **Statements outside a transaction** (:meth:`PostgresStore.autocommit`): the HTTP
   service's API-key read and rate counters need no transaction, so each goes as one statement
   in autocommit, one round trip, instead of a lazy ``BEGIN`` and a ``COMMIT`` (two). Each
   statement is its own transaction: it sees every change committed before it starts (a key
   revoked or rotated before the read is refused), and a counter's upsert is atomic on its
   own. Never used for a verification or anything that must commit or roll back together.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from capsim.errors import ConfigError, TemporaryFailure, ValidationError
from capsim.verifier import migrate as _migrate
from capsim.verifier.audit import (
    AuditEntry,
    AuditRecord,
    AuditSealer,
    canonical_bytes,
    malformed_record,
    resolve_sealer,
    seal,
)
from capsim.verifier.dbparse import redact_db_url
from capsim.verifier.model import Changes, Snapshot
from capsim.verifier.sqlbase import _SELECT_REQUEST, _SELECT_VERIFY_OPERATION, SqlTransactionBase

try:
    import psycopg
    from psycopg import errors as _pgerr
    from psycopg.types.json import Jsonb
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["FaultHook", "PostgresStore"]

_TUPLES_OK = 2  # libpq ExecStatusType PGRES_TUPLES_OK

_log = logging.getLogger(__name__)

FaultHook = Callable[[str, str, "psycopg.Connection[Any]"], None]
"""``hook(when, sql, conn)`` called with ``when`` = ``"before"``/``"after"`` around every
statement the store sends, ``COMMIT`` included (fault-injection tests only)."""


def _status(cur: psycopg.Cursor[Any]) -> int | None:
    res = cur.pgresult
    return None if res is None else int(res.status)


def _map_error(exc: BaseException, *, context: str) -> Exception:
    """Translate a driver error into the capsim error the store raises."""
    if isinstance(exc, _pgerr.LockNotAvailable):
        return TemporaryFailure("credential row lock not granted within lock_timeout")
    if isinstance(exc, _pgerr.DeadlockDetected):
        _log.error("deadlock detected during %s", context)
        return TemporaryFailure("deadlock detected; retry")
    if isinstance(exc, _pgerr.SerializationFailure):
        return TemporaryFailure("serialization failure; retry")
    if isinstance(exc, _pgerr.IntegrityError):
        return ValidationError(f"value outside the schema's constraints ({exc.sqlstate})")
    if isinstance(exc, psycopg.DataError):
        return ValidationError(f"value cannot be stored (for example a NUL character) ({exc.sqlstate})")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return TemporaryFailure("PostgreSQL store unavailable (connection lost)")
    return TemporaryFailure(f"PostgreSQL store error during {context}")


class _PgTransaction(SqlTransactionBase):
    PLACEHOLDER = "%s"
    FOR_UPDATE = " FOR UPDATE"

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any], timeout_ms: int) -> None:
        super().__init__(datetime.now(UTC))  # a placeholder: the database clock comes with BEGIN
        self._store = store
        self._conn = conn
        self._timeout_ms = timeout_ms
        self._begun = False
        self.active = True
        self.pending_seals: list[AuditRecord] = []

    # -- the lazy BEGIN (module docstring, rule 1) ------------------------------------------------
    def _begin_statements(self) -> list[tuple[str, Sequence[Any]]]:
        return [
            ("BEGIN ISOLATION LEVEL READ COMMITTED", ()),
            ("SELECT set_config('lock_timeout', %s, true), now()", (f"{self._timeout_ms}ms",)),
        ]

    def _started(self, clock_row: tuple[Any, ...]) -> None:
        self._begun = True
        clock = self._store._clock
        self._now = (clock() if clock is not None else clock_row[1]).astimezone(UTC)

    def _batch(self, statements: list[tuple[str, Sequence[Any]]]) -> list[tuple[list[tuple[Any, ...]], int]]:
        """Send ``statements`` (with the BEGIN if not sent yet) in one round trip."""
        if not self.active:
            raise TemporaryFailure("transaction already finished")
        if self._begun:
            return self._store._pipeline(self._conn, statements, context="transaction")
        first = self._begin_statements()
        try:
            results = self._store._pipeline(self._conn, first + statements, context="begin")
        except TemporaryFailure:
            if not self._conn.closed:
                raise
            # a pooled connection died while idle (server restart, proxy): nothing was done
            # yet, so take a fresh one once
            self._store._release(self._conn)
            self._conn = self._store._acquire()
            results = self._store._pipeline(self._conn, first + statements, context="begin")
        self._started(results[1][0][0])
        return results[len(first) :]

    def now(self) -> datetime:
        if not self._begun:
            self._batch([])
        return self._now

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], int]:
        if not self._begun:
            return self._batch([(sql, params)])[0]
        if not self.active:
            raise TemporaryFailure("transaction already finished")
        return self._store._execute(self._conn, sql, params, context="transaction")

    # -- one verification in two round trips (module docstring, rule 8) --------------------------
    def read_verification(
        self, *, operation_id: str | None, credential_id: str | None, request_id: str, siblings: bool
    ) -> Snapshot:
        """BEGIN, the clock, the credential locks, the operation and the request record: one
        round trip (the lock statement runs first, so the operation is read after it)."""
        lock_sql, lock_params = self._lock_group_statement(
            operation_id=operation_id, credential_id=credential_id, siblings=siblings
        )
        statements: list[tuple[str, Sequence[Any]]] = [(self._sql(lock_sql), lock_params)]
        if operation_id is not None:
            statements.append((self._sql(_SELECT_VERIFY_OPERATION), (operation_id,)))
        statements.append((self._sql(_SELECT_REQUEST), (request_id,)))
        results = self._batch(statements)
        creds = tuple(self._credential(r) for r in results[0][0])
        op = None
        if operation_id is not None and results[1][0]:
            op = self._operation(results[1][0][0])
        req_rows = results[-1][0]
        request = self._request(req_rows[0]) if req_rows else None
        return Snapshot(now=self._now, operation=op, credentials=creds, request=request)

    def write_verification(self, changes: Changes, audit: AuditEntry) -> tuple[bool, AuditRecord]:
        """Every write and the audit append: one pipelined round trip (COMMIT is the next)."""
        self.now()  # the audit record's time is the transaction's
        statements = [(self._sql(sql), params) for sql, params in self._changes_statements(changes)]
        audit_sql, audit_params, canon_ok = self._audit_statement(audit)
        if not canon_ok:  # pragma: no cover - a detail value mimics the marker
            ok = self._apply_counts(changes, [c for _rows, c in self._batch(statements)])
            return ok, self._append_audit_slow(audit)
        results = self._batch([*statements, (audit_sql, audit_params)])
        ok = self._apply_counts(changes, [count for _rows, count in results[:-1]])
        return ok, self._audit_result(audit, results[-1][0])

    def _apply_counts(self, changes: Changes, counts: list[int]) -> bool:
        required = [w.required for w in changes.credentials] + [changes.operation.required, True]
        if changes.acceptance is not None:
            required.append(True)
        return all(count == 1 or not must for count, must in zip(counts, required, strict=True))

    def _enc_time(self, value: datetime | None) -> Any:
        return value

    def _dec_time(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise TypeError("timestamp column did not decode to a datetime")
        return value.astimezone(UTC)

    def _enc_json(self, value: Any) -> Any:
        return Jsonb(value)

    def _dec_json(self, value: Any) -> Any:
        return value

    def append_audit(self, entry: AuditEntry) -> AuditRecord:
        """Chain and insert ``entry`` in one statement (module docstring, rule 4).

        The canonical encoding of the record (:func:`capsim.verifier.audit.canonical_bytes`) is
        built here around a placeholder sequence number; the server locks the tip row, takes
        the next number and the previous hash, hashes ``prev ‖ prefix ‖ seq ‖ suffix`` with
        ``sha256`` and inserts the record. The hash is then recomputed here with
        :func:`~capsim.verifier.audit.seal`; a mismatch rolls the transaction back.
        """
        self.now()
        sql, params, canon_ok = self._audit_statement(entry)
        if not canon_ok:  # pragma: no cover - a detail value mimics the marker
            return self._append_audit_slow(entry)
        rows, _ = self._exec(sql, params)
        return self._audit_result(entry, rows)

    def _audit_statement(self, entry: AuditEntry) -> tuple[str, Sequence[Any], bool]:
        canon = canonical_bytes(entry, seq=_SEQ_PLACEHOLDER, at=self._now)
        if canon.count(_SEQ_MARK) != 1:  # pragma: no cover - a detail value mimics the marker
            return "", (), False
        prefix, suffix = canon.split(_SEQ_MARK)
        params = (prefix + b'"seq":', suffix, self._now, *self._audit_values(entry))
        return _PG_APPEND_AUDIT, params, True

    def _audit_result(self, entry: AuditEntry, rows: list[tuple[Any, ...]]) -> AuditRecord:
        seq, prev, digest = int(rows[0][0]), bytes(rows[0][1]), bytes(rows[0][2])
        record = seal(entry, seq=seq, at=self._now, prev_hash=prev, sealer=self.sealer)
        if not hmac.compare_digest(record.record_hash, digest):
            raise TemporaryFailure("audit chain hash computed by the server differs; rolled back")
        if record.seal:
            self._insert_seal(record)
        return record

    def _insert_seal(self, record: AuditRecord) -> None:
        """Queue the seal: it is inserted in the COMMIT round trip (module docstring, rule 4)."""
        self.pending_seals.append(record)

    def _append_audit_slow(self, entry: AuditEntry) -> AuditRecord:  # pragma: no cover
        """The three-statement form: lock the tip, chain in Python, insert and move the tip."""
        return super().append_audit(entry)

    def _audit_tip(self) -> tuple[int, bytes]:  # pragma: no cover - slow path only
        row = self._one("SELECT seq, record_hash FROM cap_audit_head WHERE id = 1 FOR UPDATE")
        if row is None:
            raise TemporaryFailure("audit chain head row is missing")
        return int(row[0]), bytes(row[1])

    def _insert_audit(self, record: AuditRecord, sql: str, params: Sequence[Any]) -> None:  # pragma: no cover
        n = self._count(
            f"WITH ins AS ({sql}) UPDATE cap_audit_head"  # noqa: S608 - sql is the constant INSERT
            " SET seq = ?, prev_hash = record_hash, record_hash = ? WHERE id = 1 AND seq = ?",
            (*params, record.seq, record.record_hash, record.seq - 1),
        )
        if n != 1:
            raise TemporaryFailure("audit chain head moved under its lock")


_SEQ_PLACEHOLDER = 918_273_645_546_372_819
_SEQ_MARK = b'"seq":' + str(_SEQ_PLACEHOLDER).encode()
_PG_APPEND_AUDIT = (
    "WITH h AS (UPDATE cap_audit_head SET seq = seq + 1, prev_hash = record_hash,"
    " record_hash = sha256(record_hash || %s::bytea || convert_to((seq + 1)::text, 'UTF8') || %s::bytea)"
    " WHERE id = 1 RETURNING seq, prev_hash, record_hash)"
    " INSERT INTO cap_audit (seq, at, event, outcome, reason, request_id, credential_id, operation_id,"
    " mode, atc, txn_digest, node, duration_us, details, prev_hash, record_hash)"
    " SELECT h.seq, %s::timestamptz, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text,"
    " %s::text, %s::integer, %s::bytea, %s::text, %s::bigint, %s::jsonb, h.prev_hash, h.record_hash"
    " FROM h RETURNING seq, prev_hash, record_hash"
)


class PostgresStore:
    """The PostgreSQL :class:`~capsim.verifier.store.Store` (see the module docstring).

    Parameters
    ----------
    conninfo:
        A libpq connection string or ``postgresql://`` URL.
    migrate:
        Bring the schema to the current version when opening (default). With ``False`` a
        schema at another version raises :class:`~capsim.errors.ConfigError`.
    lock_timeout:
        Default seconds a transaction waits for a row lock (``SET LOCAL lock_timeout``), 2.0.
    pool_size:
        Most connections kept open (8). A transaction waits up to ``connect_timeout`` for one.
    connect_timeout:
        Seconds to wait for a new connection or a free pooled one (5.0).
    prepare_threshold:
        psycopg's automatic server-side prepare threshold (``None`` disables it, for
        PgBouncer before 1.21).
    clock:
        Test-only replacement of the database clock.
    fault_hook:
        Test-only :data:`FaultHook` called around every statement.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        migrate: bool = True,
        lock_timeout: float = 2.0,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        prepare_threshold: int | None = 5,
        clock: Callable[[], datetime] | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        if psycopg is None:  # pragma: no cover
            raise ConfigError("the PostgreSQL store needs psycopg 3: pip install capsim[postgres]")
        if not isinstance(conninfo, str) or not conninfo:
            raise ValidationError("conninfo must be a non-empty libpq connection string or URL")
        _check_seconds("lock_timeout", lock_timeout)
        _check_seconds("connect_timeout", connect_timeout)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 1000:
            raise ValidationError(f"pool_size must be an int in 1..1000, got {pool_size!r}")
        self._conninfo = conninfo
        self._default_timeout = float(lock_timeout)
        self._connect_timeout = float(connect_timeout)
        self._prepare_threshold = prepare_threshold
        self._clock = clock
        self.fault_hook = fault_hook
        self._max = pool_size
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._count_lock = threading.Lock()
        self._open = 0
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False
        conn = self._acquire()
        try:
            try:
                if migrate:
                    _migrate.upgrade(conn)
                else:
                    have, head = _migrate.current_version(conn), _migrate.head_version("postgres")
                    if have != head:
                        raise ConfigError(
                            f"database schema is at version {have}, expected {head}; run the migrations"
                        )
            except psycopg.Error as exc:
                raise _map_error(exc, context="migration") from exc
        except BaseException:
            conn.close()
            self._release(conn)
            self.close()
            raise
        self._release(conn)

    def __repr__(self) -> str:
        return f"<PostgresStore {redact_db_url(self._conninfo)!r}>"

    # -- pool -----------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name="capsim-verifier",
            )
        except psycopg.ProgrammingError:
            # libpq refused the string itself (unknown keyword or query parameter, bad syntax):
            # permanent. Its message may quote a fragment of a password, so it is not repeated.
            raise ConfigError(
                "db url: libpq refused the PostgreSQL connection string or URL (an unknown keyword "
                "or query parameter, or bad syntax)"
            ) from None
        except psycopg.Error as exc:
            raise TemporaryFailure("PostgreSQL store unavailable (cannot connect)") from exc
        conn.prepare_threshold = self._prepare_threshold
        return conn

    def _acquire(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise TemporaryFailure("store is closed")
        if not self._slots.acquire(timeout=self._connect_timeout):
            raise TemporaryFailure("no pooled PostgreSQL connection free within connect_timeout")
        try:
            while True:
                try:
                    conn = self._idle.get_nowait()
                except queue.Empty:
                    return self._connect()
                if not conn.closed and not conn.broken:
                    return conn
                conn.close()
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        try:
            healthy = (
                not self._closed
                and not conn.closed
                and not conn.broken
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            )
            if healthy:
                self._idle.put(conn)
            else:
                conn.close()
        finally:
            self._slots.release()

    def _execute(
        self, conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = (), *, context: str
    ) -> tuple[list[tuple[Any, ...]], int]:
        hook = self.fault_hook
        try:
            if hook is not None:
                hook("before", sql, conn)
            cur = conn.execute(sql.encode(), tuple(params) if params else None)
            # (the result status, not cur.description: building column descriptions is costly)
            while _status(cur) != _TUPLES_OK and cur.nextset():
                pass  # a multi-statement string: the rows are in its last result
            rows = cur.fetchall() if _status(cur) == _TUPLES_OK else []
            count = cur.rowcount
            if hook is not None:
                hook("after", sql, conn)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
                conn.broken or conn.info.transaction_status == psycopg.pq.TransactionStatus.UNKNOWN
            ):
                conn.close()
            raise _map_error(exc, context=context) from exc
        return rows, count

    def _pipeline(
        self, conn: psycopg.Connection[Any], statements: list[tuple[str, Sequence[Any]]], *, context: str
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """Send ``statements`` in one pipelined batch (one round trip); rows and row counts of
        each. The fault hook sees the batch as one statement (its texts joined by ``; ``)."""
        if len(statements) == 1:
            return [self._execute(conn, statements[0][0], statements[0][1], context=context)]
        hook = self.fault_hook
        text = "; ".join(sql for sql, _ in statements)
        try:
            if hook is not None:
                hook("before", text, conn)
            with conn.pipeline():
                cursors = [
                    conn.execute(sql.encode(), tuple(params) if params else None)
                    for sql, params in statements
                ]
            out = []
            for cur in cursors:
                rows = cur.fetchall() if _status(cur) == _TUPLES_OK else []
                out.append((rows, cur.rowcount))
            if hook is not None:
                hook("after", text, conn)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
                conn.broken or conn.info.transaction_status == psycopg.pq.TransactionStatus.UNKNOWN
            ):
                conn.close()
            raise _map_error(exc, context=context) from exc
        return out

    # -- Store protocol ---------------------------------------------------------------------------
    @contextmanager
    def transaction(
        self, *, lock_timeout: float | None = None, sealer: AuditSealer | None = None
    ) -> Iterator[SqlTransactionBase]:
        """One READ COMMITTED transaction (commit on normal exit, rollback on exception);
        ``sealer`` seals its audit records (module docstring, rule 4)."""
        keyed = resolve_sealer(sealer)
        timeout = self._default_timeout if lock_timeout is None else lock_timeout
        _check_seconds("lock_timeout", timeout)
        tx = _PgTransaction(self, self._acquire(), max(1, round(timeout * 1000)))
        try:
            tx.sealer = keyed
            try:
                yield tx
            except BaseException:
                tx.active = False
                if tx._begun:
                    self._rollback(tx._conn)
                raise
            tx.active = False
            if tx._begun:
                self._commit(tx._conn, tx.pending_seals)
        finally:
            conn = tx._conn
            if conn.info.transaction_status not in (
                psycopg.pq.TransactionStatus.IDLE,
                psycopg.pq.TransactionStatus.UNKNOWN,
            ):
                self._rollback(conn)
            self._release(conn)

    def _rollback(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken:
            return
        try:
            conn.execute(b"ROLLBACK")
        except psycopg.Error:
            _log.warning("rollback failed; discarding the connection")
            conn.close()

    def _commit(self, conn: psycopg.Connection[Any], seals: Sequence[AuditRecord] = ()) -> None:
        hook = self.fault_hook
        try:
            if hook is not None:
                hook("before", "COMMIT", conn)
        except psycopg.Error as exc:
            # the connection died before COMMIT was sent: the server rolls back
            raise _map_error(exc, context="commit") from exc
        try:
            if seals:
                _commit_with_seals(conn, seals)
            else:
                conn.execute(b"COMMIT")
            if hook is not None:
                hook("after", "COMMIT", conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # COMMIT may or may not have been applied: the caller retries with its request_id
            conn.close()
            raise TemporaryFailure("commit outcome unknown (connection lost during COMMIT)") from exc
        except psycopg.Error as exc:
            raise _map_error(exc, context="commit") from exc

    @contextmanager
    def autocommit(self) -> Iterator[SqlTransactionBase]:
        """Single statements outside any transaction (module docstring, rule 8): every call
        through the object yielded is one statement, one round trip, committed on its own
        (nothing to roll back). Meant for reads and self-contained counters only."""
        tx = _PgTransaction(self, self._acquire(), max(1, round(self._default_timeout * 1000)))
        tx._begun = True  # no BEGIN: the connection is in autocommit mode
        try:
            yield tx
        finally:
            tx.active = False
            self._release(tx._conn)

    def audit_records(self, *, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Committed audit records after ``after_seq``, in order, read in pages, with their seals.

        A page with a value the driver cannot load (a tampered column, e.g. an infinite
        timestamp) is read again row by row; each unloadable row becomes a ``malformed`` record.
        """
        last = after_seq
        while True:
            conn = self._acquire()
            try:
                tx = _PgTransaction(self, conn, 1000)
                tx._begun = True  # autocommit reads: no transaction needed
                try:
                    page = tx.audit_page(last, 500)
                except ValidationError:
                    page = self._audit_page_by_row(tx, last, 500)
            finally:
                self._release(conn)
            yield from page
            if len(page) < 500:
                return
            last = page[-1].seq

    def _audit_page_by_row(self, tx: _PgTransaction, after_seq: int, limit: int) -> list[AuditRecord]:
        seqs = tx._rows("SELECT seq FROM cap_audit WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        page: list[AuditRecord] = []
        for (seq,) in seqs:
            try:
                page += tx.audit_page(int(seq) - 1, 1)
            except ValidationError as exc:
                hashes = tx._one("SELECT prev_hash, record_hash FROM cap_audit WHERE seq = ?", (seq,))
                prev, digest = hashes if hashes is not None else (b"", b"")
                page.append(
                    malformed_record(
                        int(seq), f"a column cannot be loaded ({exc})", prev_hash=prev, record_hash=digest
                    )
                )
        return page

    def close(self) -> None:
        """Close the pooled connections; later transactions raise :class:`TemporaryFailure`."""
        self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            conn.close()


_INSERT_SEAL = "INSERT INTO cap_audit_seal (seq, key_id, seal) VALUES "


def _commit_with_seals(conn: psycopg.Connection[Any], seals: Sequence[AuditRecord]) -> None:
    """Insert the transaction's audit seals and COMMIT in one round trip (pipeline mode).

    An insert error skips the pipelined COMMIT (the server aborts the rest of the pipeline) and
    is raised here; the transaction is then rolled back by the caller.
    """
    values = ", ".join(["(%s, %s, %s)"] * len(seals))
    params: list[Any] = []
    for rec in seals:
        params += [rec.seq, rec.seal_key_id, rec.seal]
    with conn.pipeline():
        conn.execute((_INSERT_SEAL + values).encode(), params)
        conn.execute(b"COMMIT")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ValidationError(f"{name} must be a number of seconds in 0..3600, got {value!r}")
