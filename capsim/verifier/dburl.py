"""Open a verifier store from a database URL (the CLI's ``--db URL``).

Accepted forms
--------------
``/path/to/verifier.db``, ``relative.db``
    A plain path: the SQLite store in that file (created, mode 0600, if missing).
``sqlite:///abs/path.db``, ``sqlite:relative.db``
    The same, spelled as a URL (three slashes before an absolute path).
``postgresql://user@host/db``, ``postgres://…``, ``postgresql://user@/db?host=/run/sock``
    The PostgreSQL store (psycopg 3; ``pip install capsim[postgres]``). Everything libpq
    accepts in a URL works, unix-socket directories included.
``memory:``
    A fresh in-memory store (tests and demos; nothing is kept).

The store is migrated to the current schema when opened unless ``migrate=False``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from capsim.errors import ValidationError

if TYPE_CHECKING:
    from capsim.verifier.store import Store

__all__ = ["DbKind", "DbUrl", "open_store", "parse_db_url", "redact_db_url"]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_KW_PASSWORD_RE = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


class DbKind(StrEnum):
    """Which store a URL selects."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"
    MEMORY = "memory"


@dataclass(frozen=True, kw_only=True)
class DbUrl:
    """A parsed ``--db`` value.

    Attributes
    ----------
    kind:
        The store it selects.
    target:
        The SQLite file path, the libpq URL for PostgreSQL, or ``""`` for memory.
    """

    kind: DbKind
    target: str

    def __repr__(self) -> str:
        return f"DbUrl(kind={self.kind.value!r}, target={redact_db_url(self.target)!r})"


def parse_db_url(url: str | os.PathLike[str]) -> DbUrl:
    """Classify ``url`` without opening anything.

    Examples
    --------
    >>> parse_db_url("/var/lib/capsim/verifier.db")
    DbUrl(kind='sqlite', target='/var/lib/capsim/verifier.db')
    >>> parse_db_url("sqlite:///tmp/v.db").target
    '/tmp/v.db'
    >>> parse_db_url("postgresql://bank@db.example/capsim").kind
    <DbKind.POSTGRES: 'postgres'>
    >>> parse_db_url("mysql://x")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: db url: unsupported scheme 'mysql'; ...
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise ValidationError(f"db url must be a str or path, got {type(url).__name__}")
    if not url or "\x00" in url:
        raise ValidationError("db url must be a non-empty path or URL without NUL characters")
    match = _SCHEME_RE.match(url)
    # A one-letter "scheme" is a Windows drive letter; treat it as a path.
    if match is None or len(match.group(1)) == 1:
        return DbUrl(kind=DbKind.SQLITE, target=url)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        rest = url[len("sqlite:") :]
        if rest.startswith("//"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise ValidationError("db url: sqlite URLs take no host; use sqlite:///ABSOLUTE/PATH")
            path = unquote(parts.path)
        else:
            path = unquote(rest)
        if not path:
            raise ValidationError("db url: sqlite URL without a path; use sqlite:///ABSOLUTE/PATH")
        return DbUrl(kind=DbKind.SQLITE, target=path)
    if scheme in ("postgresql", "postgres"):
        return DbUrl(kind=DbKind.POSTGRES, target=url)
    if scheme == "memory":
        return DbUrl(kind=DbKind.MEMORY, target="")
    raise ValidationError(
        f"db url: unsupported scheme {scheme!r}; expected a path, sqlite:///PATH, postgresql://… or memory:"
    )


def redact_db_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs).

    Examples
    --------
    >>> redact_db_url("postgresql://bank:s3cret@db/capsim")
    'postgresql://bank:***@db/capsim'
    >>> redact_db_url("host=db user=bank password='s3 cret'")
    'host=db user=bank password=***'
    >>> redact_db_url("/tmp/v.db")
    '/tmp/v.db'
    """
    match = _SCHEME_RE.match(url)
    if match is None or len(match.group(1)) == 1:
        # a path, or a libpq keyword string ("host=… password=…")
        return _KW_PASSWORD_RE.sub(r"\1***", url)
    parts = urlsplit(url)
    if parts.password is None:
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit(parts._replace(query=query))
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def open_store(url: str | os.PathLike[str], *, migrate: bool = True, **options: Any) -> Store:
    """Open the store ``url`` selects (see the module docstring for the forms).

    Parameters
    ----------
    url:
        A path or URL.
    migrate:
        Bring the schema to the current version first (default). With ``False`` an outdated
        schema is refused instead.
    **options:
        Passed to the store's constructor (``busy_timeout``, ``lock_timeout``, ``pool_size`` …).

    Raises
    ------
    ValidationError
        ``url`` is not a supported form.
    ConfigError
        The PostgreSQL extra is not installed, or the schema is newer than this capsim.
    TemporaryFailure
        The database cannot be reached.
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
