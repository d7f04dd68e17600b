"""Versioned schema migrations for the SQLite and PostgreSQL verifier stores (verifier.md V27).

Theory of operation
-------------------
1. Migrations are numbered SQL files shipped in the package, one directory per engine:
   ``capsim/verifier/migrations/<engine>/NNNN_<name>.sql``. Numbers start at 1 and increase;
   a number may be skipped (reserved by a change released separately); ``head`` is the
   highest number. A released file is never edited: a schema change is a new file.
2. The database records what it has applied in ``capsim_schema_migrations`` (one row per
   applied migration: version, name, time). The schema version is the highest recorded
   version, 0 for an empty database. Every shipped migration that is not recorded yet (up to
   the target) is applied, in number order, so a skipped number shipped later still runs.
3. Every migration runs in **one** transaction together with the row that stamps it, so a
   migration that fails part-way leaves neither half-made objects nor a new stamp behind
   (both engines have transactional DDL). The failure is raised as :class:`VerifierError`
   naming the migration, and the version stays where it was.
4. Upgrading an up-to-date database does nothing (a repeated upgrade is a no-op). A database
   whose version is above this capsim's head is refused (an older capsim must not write to
   a newer schema).
5. Concurrent upgraders are serialised: SQLite through ``BEGIN IMMEDIATE`` (the writer
   lock), PostgreSQL through a transaction-scoped advisory lock (``pg_advisory_xact_lock``,
   safe under PgBouncer transaction pooling). Each re-reads the version under the lock, so
   a migration is applied exactly once.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import TYPE_CHECKING, Any

from capsim.errors import ConfigError, ValidationError, VerifierError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "VERSION_TABLE",
    "Engine",
    "Migration",
    "current_version",
    "head_version",
    "load_migrations",
    "upgrade",
]

_log = logging.getLogger(__name__)

VERSION_TABLE = "capsim_schema_migrations"
"""Name of the table that stamps applied migrations."""

_SELECT_VERSION = f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}"  # noqa: S608 constant name
_SELECT_RECORDED = f"SELECT version FROM {VERSION_TABLE}"  # noqa: S608 constant name
_INSERT_VERSION = f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (%s, %s)"  # noqa: S608 constant name
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant key for pg_advisory_xact_lock: "capsim" in ASCII.
_PG_LOCK_KEY = 0x636170_73696D


class Engine(StrEnum):
    """A database engine with its own migration directory."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One numbered schema change.

    Attributes
    ----------
    version:
        Its number (1, 2, …); the schema version after it ran.
    name:
        The descriptive part of the file name (``initial``).
    sql:
        The statements, separated by ``;``.
    """

    version: int
    name: str
    sql: str

    def __repr__(self) -> str:
        return f"Migration(version={self.version}, name={self.name!r})"


def load_migrations(engine: Engine | str) -> tuple[Migration, ...]:
    """The migrations shipped for ``engine``, in order.

    Parameters
    ----------
    engine:
        ``"sqlite"`` or ``"postgres"``.

    Returns
    -------
    tuple of Migration
        In increasing number order (a number may be skipped).

    Examples
    --------
    >>> ms = load_migrations("sqlite")
    >>> ms[0].version == 1 and all(a.version < b.version for a, b in zip(ms, ms[1:]))
    True
    """
    eng = _engine(engine)
    folder = resources.files("capsim.verifier") / "migrations" / eng.value
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(version=int(match.group(1)), name=match.group(2), sql=entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    _check_sequence(found)
    return tuple(found)


def head_version(engine: Engine | str) -> int:
    """The highest migration number shipped for ``engine``."""
    ms = load_migrations(engine)
    return ms[-1].version if ms else 0


def current_version(conn: sqlite3.Connection | psycopg.Connection[Any]) -> int:
    """The schema version recorded in the database behind ``conn`` (0 when none is).

    Reads without taking a lock; use it for display and checks, not to decide to migrate.
    """
    if isinstance(conn, sqlite3.Connection):
        row = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
        ).fetchone()
        if not row or not row[0]:
            return 0
        (ver,) = conn.execute(_SELECT_VERSION).fetchone()
        return int(ver)
    row2 = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if not row2 or not row2[0]:
        if not conn.autocommit:
            conn.rollback()
        return 0
    row3 = conn.execute(_SELECT_VERSION).fetchone()
    if not conn.autocommit:
        conn.rollback()
    return int(row3[0]) if row3 else 0


def upgrade(
    conn: sqlite3.Connection | psycopg.Connection[Any],
    *,
    target: int | None = None,
    migrations: Sequence[Migration] | None = None,
) -> tuple[int, ...]:
    """Apply every pending migration up to ``target`` (default: head), each in one transaction.

    Parameters
    ----------
    conn:
        A :class:`sqlite3.Connection` opened with ``isolation_level=None`` (autocommit; the
        runner issues ``BEGIN IMMEDIATE`` itself) or a psycopg connection with no open
        transaction.
    target:
        Stop after this version (for tests that start from an older released schema).
    migrations:
        Override the shipped migrations (tests only).

    Returns
    -------
    tuple of int
        The versions applied by this call; empty when the database was up to date.

    Raises
    ------
    VerifierError
        A migration failed; it was rolled back and the version stamp is unchanged.
    ConfigError
        The database is newer than this capsim, or ``target`` is not a shipped version.
    """
    engine = Engine.SQLITE if isinstance(conn, sqlite3.Connection) else Engine.POSTGRES
    ms = tuple(migrations) if migrations is not None else load_migrations(engine)
    _check_sequence(ms)
    head = ms[-1].version if ms else 0
    if target is None:
        target = head
    if isinstance(target, bool) or not isinstance(target, int) or target not in {0, *(m.version for m in ms)}:
        raise ValidationError(f"target must be an int in 0..{head} (a shipped migration), got {target!r}")
    if engine is Engine.SQLITE:
        assert isinstance(conn, sqlite3.Connection)
        return _upgrade_sqlite(conn, ms, target, head)
    assert not isinstance(conn, sqlite3.Connection)
    return _upgrade_postgres(conn, ms, target, head)


# ---------------------------------------------------------------------------------------------
# internals


def _engine(engine: Engine | str) -> Engine:
    try:
        return Engine(engine)
    except ValueError:
        raise ValidationError(f"engine must be 'sqlite' or 'postgres', got {engine!r}") from None


def _check_sequence(ms: Sequence[Migration]) -> None:
    previous = 0
    for i, m in enumerate(ms, start=1):
        if m.version <= previous:
            raise ConfigError(
                f"migrations must be numbered upwards from 1; found {m.version} at position {i}"
            )
        previous = m.version


def _pending(ms: Sequence[Migration], recorded: set[int], target: int) -> Migration | None:
    """The first shipped migration up to ``target`` that the database has not recorded."""
    return next((m for m in ms if m.version <= target and m.version not in recorded), None)


def _newer(found: int, head: int) -> ConfigError:
    return ConfigError(
        f"the database schema is at version {found}, newer than this capsim understands (head {head});"
        " upgrade capsim"
    )


def _sqlite_statements(sql: str) -> list[str]:
    """Split a script into complete statements (trigger bodies stay whole)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                out.append(buf)
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        out.append(buf)
    return out


def _upgrade_sqlite(
    conn: sqlite3.Connection, ms: Sequence[Migration], target: int, head: int
) -> tuple[int, ...]:
    if conn.isolation_level is not None:
        raise ValidationError(
            "conn must be opened with isolation_level=None (the runner manages transactions)"
        )
    applied: list[int] = []
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
            )
            recorded = {int(r[0]) for r in conn.execute(_SELECT_RECORDED).fetchall()}
            ver = max(recorded, default=0)
            if ver > head:
                raise _newer(ver, head)
            m = _pending(ms, recorded, target)
            if m is None:
                conn.execute("COMMIT")
                return tuple(applied)
            try:
                for stmt in _sqlite_statements(m.sql):
                    conn.execute(stmt)
                conn.execute(_INSERT_VERSION.replace("%s", "?"), (m.version, m.name))
            except sqlite3.Error as exc:
                raise VerifierError(
                    f"migration {m.version:04d}_{m.name} failed and was rolled back;"
                    f" schema stays at version {ver}"
                ) from exc
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        _log.info("sqlite schema migrated to version %d", m.version)
        applied.append(m.version)


def _upgrade_postgres(
    conn: psycopg.Connection[Any], ms: Sequence[Migration], target: int, head: int
) -> tuple[int, ...]:
    import psycopg

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValidationError("conn must have no open transaction (the runner manages transactions)")
    applied: list[int] = []
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            recorded = {int(r[0]) for r in conn.execute(_SELECT_RECORDED).fetchall()}
            ver = max(recorded, default=0)
            if ver > head:
                raise _newer(ver, head)
            pending = _pending(ms, recorded, target)
            if pending is None:
                break
            m = pending
            try:
                conn.execute(m.sql.encode())
                conn.execute(_INSERT_VERSION, (m.version, m.name))
            except psycopg.Error as exc:
                raise VerifierError(
                    f"migration {m.version:04d}_{m.name} failed and was rolled back;"
                    f" schema stays at version {ver}"
                ) from exc
        _log.info("postgres schema migrated to version %d", m.version)
        applied.append(m.version)
    return tuple(applied)
