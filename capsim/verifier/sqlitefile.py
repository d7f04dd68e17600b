"""Is this file a capsim SQLite verifier database? The checks the SQLite store makes as it opens.

A ``--db`` that names a file which is not a capsim database (a text file, a card file, a
truncated or corrupt database, another program's database) is a permanent configuration
error, :class:`~capsim.errors.NotADatabaseError`, never a :class:`~capsim.errors.TemporaryFailure`
(that one means "retry", and retrying cannot help). The file is left exactly as it was.

Theory of operation
-------------------
1. **Header first.** Before SQLite touches an existing file, its first 100 bytes are read
   (:func:`read_header`) and judged (:func:`inspect_header`, a pure function): an empty file
   is a new database; anything else must start with SQLite's magic string, hold a whole
   header and declare a valid page size, or it is not a database. SQLite never opens such a
   file, so no ``-wal``/``-shm`` companion is created and its mode is not changed.
2. **Size.** When the header's page count is valid (its change counter equals its
   version-valid-for number), a file shorter than ``page_count × page_size``, or not a whole
   number of pages, is *suspect*: a truncated copy, or another process in the middle of a
   checkpoint. SQLite's ``PRAGMA quick_check``, run on a consistent snapshot, decides: ``ok``
   opens normally, anything else is not a database.
3. **Schema.** A database with tables but without capsim's version table
   (:data:`capsim.verifier.migrate.VERSION_TABLE`) belongs to another program
   (:func:`is_foreign_schema`): it is refused before anything is written to it (not even the
   switch to WAL). A database without tables is a new capsim database.
4. **SQLite's own verdicts** while opening: ``SQLITE_NOTADB`` and ``SQLITE_CORRUPT`` are
   permanent (:func:`is_permanent`); ``SQLITE_BUSY``/``SQLITE_LOCKED`` (another process holds
   a lock), I/O errors and the rest stay temporary.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from capsim.errors import NotADatabaseError
from capsim.verifier.migrate import VERSION_TABLE

__all__ = [
    "HEADER_SIZE",
    "SQLITE_MAGIC",
    "FileVerdict",
    "inspect_header",
    "is_foreign_schema",
    "is_permanent",
    "not_a_database",
    "read_header",
]

#: Size of the SQLite database header.
HEADER_SIZE: Final = 100
#: The first 16 bytes of every SQLite 3 database.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


class FileVerdict(StrEnum):
    """What the header of an existing file says (rules 1–2)."""

    EMPTY = "empty"  # a new database
    SQLITE = "sqlite"  # a plausible SQLite database
    SUSPECT = "suspect"  # SQLite header, but the file is shorter than it declares
    NOT_SQLITE = "not-sqlite"  # not an SQLite database at all


def inspect_header(head: bytes, file_size: int) -> FileVerdict:
    """Judge a file from its first :data:`HEADER_SIZE` bytes and its size (rules 1–2).

    Examples
    --------
    >>> inspect_header(b"", 0)
    <FileVerdict.EMPTY: 'empty'>
    >>> inspect_header(b"hello\\n", 6)
    <FileVerdict.NOT_SQLITE: 'not-sqlite'>
    >>> head = SQLITE_MAGIC + bytes([0x10, 0]) + bytes(82)  # 4096-byte pages, no valid count
    >>> inspect_header(head, 8192)
    <FileVerdict.SQLITE: 'sqlite'>
    >>> inspect_header(head, 6000)  # not a whole number of pages
    <FileVerdict.SUSPECT: 'suspect'>
    """
    if file_size == 0 and not head:
        return FileVerdict.EMPTY
    if len(head) < HEADER_SIZE or not head.startswith(SQLITE_MAGIC):
        return FileVerdict.NOT_SQLITE
    (raw_page_size,) = struct.unpack_from(">H", head, 16)
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    if page_size < 512 or page_size & (page_size - 1):
        return FileVerdict.NOT_SQLITE
    (change_counter, page_count) = struct.unpack_from(">II", head, 24)
    (valid_for,) = struct.unpack_from(">I", head, 92)
    if file_size % page_size:
        return FileVerdict.SUSPECT
    if page_count and change_counter == valid_for and file_size < page_count * page_size:
        return FileVerdict.SUSPECT
    return FileVerdict.SQLITE


def read_header(fd: int) -> tuple[bytes, int]:
    """The first :data:`HEADER_SIZE` bytes of the open file ``fd`` and its size (no writes)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, HEADER_SIZE, 0), size


def is_foreign_schema(table_names: Iterable[str]) -> bool:
    """Whether a database with these tables belongs to another program (rule 3).

    >>> is_foreign_schema([])
    False
    >>> is_foreign_schema(["capsim_schema_migrations", "cap_user"])
    False
    >>> is_foreign_schema(["moz_places"])
    True
    """
    tables = {t for t in table_names if not t.startswith("sqlite_")}
    return bool(tables) and VERSION_TABLE not in tables


def is_permanent(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error says the file is not (or no longer) a usable database (rule 4)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def not_a_database(path: str | os.PathLike[str], why: str) -> NotADatabaseError:
    """The error for ``path``: names the file and says why, on one line."""
    return NotADatabaseError(
        f"{os.fspath(path)}: not a capsim verifier database ({why}); the file was left unchanged"
    )
