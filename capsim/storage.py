"""Durable files: card files and issuer-key files (architecture.md §5).

Theory of operation
-------------------
1. A card file is one JSON document ``{"format": "capsim-card", "version": 1, "profile":
   {…}, "state": {…}}`` with binary values as upper-case hex, mode 0600.
2. Every write goes to a temporary file in the same directory, is fsynced, renamed over the
   target with :func:`os.replace` and followed by an fsync of the directory, so a crash leaves
   either the old or the new document, never a mixture. New files are published with
   :func:`os.link`, which refuses to overwrite an existing file.
3. A corrupt, truncated, unknown-format or newer-version file raises
   :class:`~capsim.errors.StateFileError`; nothing is ever reset silently.
4. Processes sharing a card file are serialised by ``fcntl.flock`` on a ``<file>.lock``
   sidecar, held for the lifetime of the open card (:class:`CardFileLock`).
5. Issuer-key files (``{"format": "capsim-issuer-keys", "version": 1, …}``) follow the same
   atomic, 0600, no-overwrite rules.
6. Files are parsed with :func:`capsim.jsonlimits.loads_limited`: a file over
   :data:`MAX_FILE_BYTES` (1 MiB; a card file is a few KiB) is refused before it is read
   whole, and one nested deeper than 32 levels before it is parsed, so a hostile file gives
   :class:`~capsim.errors.StateFileError`, never ``RecursionError`` or a memory blow-up.
7. ``repr`` never shows key bytes or a full PAN (:class:`IssuerKeys` shows only check values).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hmac
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsim.cards.profile import CardProfile
from capsim.cards.state import CardState
from capsim.crypto import key_check_value
from capsim.errors import StateFileError, ValidationError
from capsim.jsonlimits import DEFAULT_MAX_BYTES, loads_limited

__all__ = [
    "CARD_FILE_FORMAT",
    "CARD_FILE_VERSION",
    "ISSUER_KEYS_FORMAT",
    "ISSUER_KEYS_VERSION",
    "MAX_FILE_BYTES",
    "CardFile",
    "CardFileLock",
    "IssuerKeys",
    "create_card_file",
    "load_issuer_keys",
    "read_card_file",
    "save_issuer_keys",
]

_log = logging.getLogger(__name__)

CARD_FILE_FORMAT = "capsim-card"
CARD_FILE_VERSION = 1
ISSUER_KEYS_FORMAT = "capsim-issuer-keys"
ISSUER_KEYS_VERSION = 1
_FILE_MODE = 0o600
#: Largest card or issuer-keys file read (rule 6).
MAX_FILE_BYTES = DEFAULT_MAX_BYTES


# ---------------------------------------------------------------------------- atomic writes
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
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


def _atomic_replace(path: Path, text: str) -> None:
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _atomic_create(path: Path, text: str, what: str) -> None:
    try:
        _atomic_create_unchecked(path, text, what)
    except OSError as exc:
        raise StateFileError(f"{what} {path} cannot be written: {exc}") from exc


def _atomic_create_unchecked(path: Path, text: str, what: str) -> None:
    if path.exists():
        raise StateFileError(f"{what} {path} already exists; refusing to overwrite it")
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


def _read_json(path: Path, what: str) -> Any:
    """Read and parse a JSON file of at most ``MAX_FILE_BYTES`` (rule 6)."""
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


def _check_header(doc: Any, path: Path, fmt: str, version: int, what: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise StateFileError(f"{path} is not a {what} (format is not {fmt!r})")
    found = doc.get("version")
    if type(found) is not int:
        raise StateFileError(f"{path}: {what} without an integer version")
    if found > version:
        raise StateFileError(f"{path}: {what} version {found} is newer than this capsim supports ({version})")
    if found < 1:
        raise StateFileError(f"{path}: {what} version {found} is not valid")


# ---------------------------------------------------------------------------- card files
def _card_document(profile_json: str, state: CardState) -> str:
    state_json = json.dumps(state.to_dict(), sort_keys=True)
    return (
        f'{{"format": "{CARD_FILE_FORMAT}", "version": {CARD_FILE_VERSION}, '
        f'"profile": {profile_json}, "state": {state_json}}}\n'
    )


def _parse_card(doc: Any, path: Path) -> tuple[CardProfile, CardState]:
    _check_header(doc, path, CARD_FILE_FORMAT, CARD_FILE_VERSION, "capsim card file")
    extra = set(doc) - {"format", "version", "profile", "state"}
    if extra:
        raise StateFileError(f"{path}: unknown top-level keys {sorted(extra)}")
    try:
        profile = CardProfile.from_dict(doc["profile"])
        state = CardState.from_dict(doc["state"])
    except KeyError as exc:
        raise StateFileError(f"{path}: card file without {exc.args[0]!r}") from None
    except ValidationError as exc:
        raise StateFileError(f"{path}: invalid card file: {exc}") from exc
    if not profile.is_personalised:
        raise StateFileError(f"{path}: the profile has no PAN or keys")
    if state.ptc > profile.pin_try_limit:
        raise StateFileError(f"{path}: state.ptc {state.ptc} exceeds the PIN try limit")
    return profile, state


def read_card_file(path: str | os.PathLike[str]) -> tuple[CardProfile, CardState]:
    """Read and validate a card file (no lock). Raises :class:`StateFileError`."""
    p = Path(path)
    return _parse_card(_read_json(p, "card file"), p)


def create_card_file(path: str | os.PathLike[str], profile: CardProfile, state: CardState) -> None:
    """Write a new card file atomically; refuse to overwrite (:class:`StateFileError`)."""
    p = Path(path)
    _atomic_create(p, _card_document(json.dumps(profile.to_dict(), sort_keys=True), state), "card file")


class CardFileLock:
    """An exclusive inter-process lock on ``<card file>.lock`` (``fcntl.flock``).

    Parameters
    ----------
    path:
        The card file.
    timeout:
        Seconds to wait for another holder before raising :class:`StateFileError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self._path = Path(str(path) + ".lock")
        self._timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, polling until ``timeout``."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        except OSError as exc:
            raise StateFileError(f"cannot open lock file {self._path}: {exc}") from exc
        deadline = time.monotonic() + self._timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StateFileError(f"cannot lock {self._path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateFileError(
                        f"card file {str(self._path)[:-5]} is in use by another process "
                        f"(lock not obtained within {self._timeout:g} s)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files a killed writer left behind (called with the lock held)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
            _log.info("removed a stale temporary file of %s", path.name)


class CardFile:
    """An open, locked card file that persists every new state atomically.

    Use :func:`capsim.cards.load_card` rather than this class directly.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._lock = CardFileLock(self.path, timeout=timeout)
        self._lock.acquire()
        try:
            _remove_stale_temps(self.path)
            self.profile, self.state = read_card_file(self.path)
        except BaseException:
            self._lock.release()
            raise
        self._profile_json = json.dumps(self.profile.to_dict(), sort_keys=True)

    def save_state(self, state: CardState) -> None:
        """Persist ``state`` (temp file, fsync, rename, fsync of the directory)."""
        if not self._lock.held:
            raise StateFileError(f"card file {self.path} is closed")
        try:
            _atomic_replace(self.path, _card_document(self._profile_json, state))
        except OSError as exc:
            raise StateFileError(f"card file {self.path} cannot be written: {exc}") from exc
        self.state = state

    def close(self) -> None:
        """Release the lock."""
        self._lock.release()


# ---------------------------------------------------------------------------- issuer keys
@dataclass(frozen=True, kw_only=True)
class IssuerKeys:
    """Issuer master keys of a card (emv-crypto.md §4.1). Keys never appear in ``repr``.

    Attributes
    ----------
    imk_ac, imk_smi, imk_smc:
        16-byte issuer master keys for cryptograms, script integrity, script confidentiality.
    derivation:
        ICC key derivation option: ``"auto"`` (A up to 16 digits, else B), ``"A"`` or ``"B"``.
    """

    imk_ac: bytes = field(repr=False)
    imk_smi: bytes = field(repr=False)
    imk_smc: bytes = field(repr=False)
    derivation: str = "auto"

    def __post_init__(self) -> None:
        for name in ("imk_ac", "imk_smi", "imk_smc"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 16:
                raise ValidationError(f"{name}: expected 16 bytes (a double-length TDES key)")
        if self.derivation not in ("auto", "A", "B"):
            raise ValidationError("derivation: expected 'auto', 'A' or 'B'")

    def kcvs(self) -> dict[str, bytes]:
        """3-byte check values, by file key name."""
        return {
            "imk-ac": key_check_value(self.imk_ac),
            "imk-smi": key_check_value(self.imk_smi),
            "imk-smc": key_check_value(self.imk_smc),
        }


def save_issuer_keys(path: str | os.PathLike[str], keys: IssuerKeys) -> None:
    """Write an issuer-keys file: JSON, mode 0600, atomic, never overwriting."""
    kcvs = keys.kcvs()
    doc = {
        "format": ISSUER_KEYS_FORMAT,
        "version": ISSUER_KEYS_VERSION,
        "derivation": keys.derivation,
        "keys": {
            name: {"key": value.hex().upper(), "kcv": kcvs[name].hex().upper()}
            for name, value in (("imk-ac", keys.imk_ac), ("imk-smi", keys.imk_smi), ("imk-smc", keys.imk_smc))
        },
    }
    _atomic_create(Path(path), json.dumps(doc, indent=2) + "\n", "issuer keys file")


def load_issuer_keys(path: str | os.PathLike[str]) -> IssuerKeys:
    """Read an issuer-keys file; every KCV is checked. Raises :class:`StateFileError`."""
    p = Path(path)
    doc = _read_json(p, "issuer keys file")
    _check_header(doc, p, ISSUER_KEYS_FORMAT, ISSUER_KEYS_VERSION, "issuer keys file")
    try:
        entries = doc["keys"]
        if not isinstance(entries, Mapping):
            raise TypeError("keys is not an object")
        raw: dict[str, bytes] = {}
        for name in ("imk-ac", "imk-smi", "imk-smc"):
            entry = entries[name]
            key = bytes.fromhex(entry["key"])
            if len(key) != 16:
                raise ValueError(f"{name} is not 16 bytes")
            kcv = bytes.fromhex(entry["kcv"])
            if not kcv or not hmac.compare_digest(kcv, key_check_value(key, len(kcv))):
                raise StateFileError(f"{p}: the check value of {name} does not match its key")
            raw[name] = key
        return IssuerKeys(
            imk_ac=raw["imk-ac"],
            imk_smi=raw["imk-smi"],
            imk_smc=raw["imk-smc"],
            derivation=str(doc.get("derivation", "auto")),
        )
    except StateFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFileError(f"{p}: invalid issuer keys file ({exc})") from exc
