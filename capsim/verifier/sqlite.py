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

The SQL (:mod:`capsim.verifier.sqlbase`) and the row ↔ model conversion
(:mod:`capsim.verifier.sqlrows`) are shared with :mod:`capsim.verifier.postgres` through
:class:`~capsim.verifier.sqlbase.SqlTransactionBase`, which is parametrised by placeholder
style and value encoding only; it is re-exported here for code that imported it from this
module.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capsim.errors import ConfigError, TemporaryFailure, ValidationError
from capsim.verifier import migrate as _migrate
from capsim.verifier import sqlitefile as _sqlitefile
from capsim.verifier.audit import AuditRecord, AuditSealer, resolve_sealer
from capsim.verifier.sqlbase import SqlTransactionBase
from capsim.verifier.sqlitefile import FileVerdict

__all__ = ["SqlTransactionBase", "SqliteStore"]

_log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
