"""Open a verifier store from a database URL (the CLI's ``--db URL``).

Accepted forms
--------------
``/path/to/verifier.db``, ``relative.db``, any :class:`os.PathLike`
    A plain path: the SQLite store in that file (created, mode 0600, if missing).
``sqlite:///abs/path.db``, ``sqlite:relative.db``
    The same, spelled as a URL (three slashes before an absolute path). ``sqlite:PATH`` names
    any file, even one whose name contains ``=``.
``postgresql://user@host/db``, ``postgres://…``, ``postgresql://user@/db?host=/run/sock``
    The PostgreSQL store (psycopg 3; ``pip install capsim[postgres]``). Everything libpq
    accepts in a URL works, unix-socket directories included.
``host=/run/postgresql dbname=capsim user=bank``
    The PostgreSQL store, as a libpq keyword/value connection string.
``memory:``
    A fresh in-memory store (tests and demos; nothing is kept).

The store is migrated to the current schema when opened unless ``migrate=False``.

Classification and redaction are pure functions of the text, in :mod:`capsim.verifier.dbparse`
(re-exported here); this module adds :func:`open_store`, which imports the store the URL
names, so it sits above every store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capsim.verifier.dbparse import (
    LIBPQ_KEYWORDS,
    SECRET_KEYWORDS,
    DbKind,
    DbUrl,
    parse_db_url,
    redact_db_url,
)

if TYPE_CHECKING:
    from capsim.verifier.store import Store

__all__ = [
    "LIBPQ_KEYWORDS",
    "SECRET_KEYWORDS",
    "DbKind",
    "DbUrl",
    "open_store",
    "parse_db_url",
    "redact_db_url",
]


def open_store(url: str | os.PathLike[str], *, migrate: bool = True, **options: Any) -> Store:
    """Open the store ``url`` selects (see the module docstring for the forms).

    Parameters
    ----------
    url:
        A path, URL or libpq keyword string.
    migrate:
        Bring the schema to the current version first (default). With ``False`` an outdated
        schema is refused instead.
    **options:
        Passed to the store's constructor (``busy_timeout``, ``lock_timeout``, ``pool_size`` …).

    Raises
    ------
    ValidationError
        ``url`` is not a supported form.
    NotADatabaseError
        The SQLite file exists but is not a capsim verifier database (permanent).
    ConfigError
        The PostgreSQL extra is not installed, libpq refuses the connection string, or the
        schema is newer than this capsim.
    TemporaryFailure
        The database cannot be reached, or is locked by another process.
    """
    parsed = parse_db_url(url)
    if parsed.kind is DbKind.SQLITE:
        from capsim.verifier.sqlite import SqliteStore

        return SqliteStore(Path(parsed.target), migrate=migrate, **options)
    if parsed.kind is DbKind.POSTGRES:
        from capsim.verifier.postgres import PostgresStore

        return PostgresStore(parsed.target, migrate=migrate, **options)
    from capsim.verifier.memory import MemoryStore

    return MemoryStore(**options)
