"""Durable files: atomic, 0600, size-limited JSON documents with a format header.

Every file capsim keeps (card files, issuer-keys files, the verifier's keyring) is written and
read through these functions; the formats themselves live with their owners
(:mod:`capsim.cards.cardfile`, :mod:`capsim.issuerkeys`, :mod:`capsim.verifier.keyring`).

Theory of operation
-------------------
1. Every write goes to a temporary file in the same directory (mode 0600, or the mode a
   replaced file keeps when its owner asks: :func:`atomic_replace`), is fsynced,
   renamed over the target with :func:`os.replace` (:func:`atomic_replace`) and followed by
   an fsync of the directory, so a crash leaves either the old or the new document, never a
   mixture. New files are published with :func:`os.link` (:func:`atomic_create`), which
   refuses to overwrite an existing file.
2. :func:`read_json` refuses a file over :data:`MAX_FILE_BYTES` (1 MiB) before reading it
   whole and parses it with :func:`capsim.jsonlimits.loads_limited`, so a hostile file gives
   :class:`~capsim.errors.StateFileError`, never ``RecursionError`` or a memory blow-up.
3. :func:`check_header` accepts a document only when its ``format`` is the expected one and
   its integer ``version`` is between 1 and the newest this capsim writes: a newer file is an
   error, never reset silently.
4. A killed writer may leave ``.<name>.*.tmp`` files behind; :func:`remove_stale_temps`
   deletes them (call it while holding the file's lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Final

from capsim.errors import StateFileError
from capsim.jsonlimits import DEFAULT_MAX_BYTES, loads_limited

__all__ = [
    "FILE_MODE",
    "MAX_FILE_BYTES",
    "atomic_create",
    "atomic_replace",
    "check_header",
    "read_json",
    "remove_stale_temps",
]

_log = logging.getLogger(__name__)

#: Mode of every file written here.
FILE_MODE: Final = 0o600
#: Largest JSON file read (rule 2; a card file is a few KiB).
MAX_FILE_BYTES: Final = DEFAULT_MAX_BYTES


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, text: str, mode: int = FILE_MODE) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return Path(tmp)


def atomic_replace(path: Path, text: str, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` by ``text`` atomically, the new file with ``mode`` (rule 1). Raises
    :class:`OSError`."""
    tmp = _write_temp(path, text, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_create(path: Path, text: str, what: str) -> None:
    """Publish a new file ``path`` holding ``text``; never overwrite one (rule 1).

    Raises
    ------
    StateFileError
        ``path`` exists, its directory does not, or the write fails (the message starts with
        ``what``, e.g. ``"card file"``).
    """
    try:
        _atomic_create_unchecked(path, text, what)
    except OSError as exc:
        raise StateFileError(f"{what} {path} cannot be written: {exc}") from exc


def _atomic_create_unchecked(path: Path, text: str, what: str) -> None:
    if not path.parent.is_dir():
        raise StateFileError(f"{what} {path}: directory {path.parent} does not exist")
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StateFileError(f"{what} {path} already exists; refusing to overwrite it") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def read_json(path: Path, what: str) -> Any:
    """Read and parse a JSON file of at most :data:`MAX_FILE_BYTES` (rule 2).

    Raises
    ------
    StateFileError
        Missing, unreadable, too large, corrupt or truncated.
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise StateFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise StateFileError(f"{what} {path} cannot be read: {exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise StateFileError(f"{what} {path} is larger than {MAX_FILE_BYTES} bytes; refusing to parse it")
    return loads_limited(raw, what=f"{what} {path} is corrupt or truncated", error=StateFileError)


def check_header(doc: Any, path: Path, fmt: str, version: int, what: str) -> None:
    """Raise :class:`StateFileError` unless ``doc`` is a ``fmt`` document of a known version (rule 3)."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise StateFileError(f"{path} is not {article} {what} (format is not {fmt!r})")
    found = doc.get("version")
    if type(found) is not int:
        raise StateFileError(f"{path}: {what} without an integer version")
    if found > version:
        raise StateFileError(f"{path}: {what} version {found} is newer than this capsim supports ({version})")
    if found < 1:
        raise StateFileError(f"{path}: {what} version {found} is not valid")


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files a killed writer of ``path`` left behind (rule 4)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
            _log.info("removed a stale temporary file of %s", path.name)
