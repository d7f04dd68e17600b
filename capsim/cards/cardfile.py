"""Card files: one emulated card (its personalisation and its state) in one JSON file.

Theory of operation
-------------------
1. A card file is one JSON document ``{"format": "capsim-card", "version": 1, "profile":
   {…}, "state": {…}}`` with binary values as upper-case hex, mode 0600.
2. It is created and rewritten atomically (:mod:`capsim.atomicfile`): a crash leaves either
   the old or the new document; :func:`create_card_file` never overwrites a file.
3. A corrupt, truncated, unknown-format or newer-version file, an unpersonalised profile or a
   PIN try counter above the limit raises :class:`~capsim.errors.StateFileError`; nothing is
   ever reset silently. Files over :data:`capsim.atomicfile.MAX_FILE_BYTES` are refused.
4. Rewriting a card file keeps its mode: capsim creates card files 0600, and one a user made
   readable by others stays so (the command line warns about it, ``capsim.cli``), never
   silently changed back.
5. Processes sharing a card file are serialised by ``fcntl.flock`` on a ``<file>.lock``
   sidecar, held for the lifetime of the open card (:class:`CardFileLock`); temporary files a
   killed writer left are removed under that lock.
5. A card file that does not exist (or is not a regular file) is refused before its lock is
   taken, so a mistyped path leaves no ``.lock`` file behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Final

from capsim.atomicfile import (
    FILE_MODE,
    atomic_create,
    atomic_replace,
    check_header,
    read_json,
    remove_stale_temps,
)
from capsim.cards.profile import CardProfile
from capsim.cards.state import CardState
from capsim.errors import StateFileError, ValidationError

__all__ = [
    "CARD_FILE_FORMAT",
    "CARD_FILE_VERSION",
    "LOCK_TIMEOUT_S",
    "CardFile",
    "CardFileLock",
    "create_card_file",
    "read_card_file",
]

CARD_FILE_FORMAT: Final = "capsim-card"
CARD_FILE_VERSION: Final = 1
#: Seconds a second opener waits for a card file's lock before giving up (the one default).
LOCK_TIMEOUT_S: Final = 5.0


def _card_document(profile_json: str, state: CardState) -> str:
    state_json = json.dumps(state.to_dict(), sort_keys=True)
    return (
        f'{{"format": "{CARD_FILE_FORMAT}", "version": {CARD_FILE_VERSION}, '
        f'"profile": {profile_json}, "state": {state_json}}}\n'
    )


def _parse_card(doc: Any, path: Path) -> tuple[CardProfile, CardState]:
    check_header(doc, path, CARD_FILE_FORMAT, CARD_FILE_VERSION, "capsim card file")
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
    return _parse_card(read_json(p, "card file"), p)


def create_card_file(path: str | os.PathLike[str], profile: CardProfile, state: CardState) -> None:
    """Write a new card file atomically; refuse to overwrite (:class:`StateFileError`)."""
    p = Path(path)
    atomic_create(p, _card_document(json.dumps(profile.to_dict(), sort_keys=True), state), "card file")


class CardFileLock:
    """An exclusive inter-process lock on ``<card file>.lock`` (``fcntl.flock``).

    Parameters
    ----------
    path:
        The card file.
    timeout:
        Seconds to wait for another holder before raising :class:`StateFileError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT_S) -> None:
        self._path = Path(str(path) + ".lock")
        self._timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, polling until ``timeout``."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, FILE_MODE)
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


def _check_exists(path: Path) -> None:
    """Rule 5: :class:`StateFileError` unless ``path`` is an existing regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise StateFileError(f"card file {path} does not exist") from None
    except OSError as exc:
        raise StateFileError(f"card file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise StateFileError(f"card file {path} is not a regular file")


class CardFile:
    """An open, locked card file that persists every new state atomically.

    Use :func:`capsim.cards.load_card` rather than this class directly.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        _check_exists(self.path)  # rule 5: before the lock file is created
        self._lock = CardFileLock(self.path, timeout=timeout)
        self._lock.acquire()
        try:
            remove_stale_temps(self.path)
            self.profile, self.state = read_card_file(self.path)
            self._mode = stat.S_IMODE(self.path.stat().st_mode)  # kept on every rewrite (rule 4)
        except OSError as exc:
            self._lock.release()
            raise StateFileError(f"card file {self.path} cannot be read: {exc}") from exc
        except BaseException:
            self._lock.release()
            raise
        self._profile_json = json.dumps(self.profile.to_dict(), sort_keys=True)

    def save_state(self, state: CardState) -> None:
        """Persist ``state`` (temp file, fsync, rename, fsync of the directory)."""
        if not self._lock.held:
            raise StateFileError(f"card file {self.path} is closed")
        try:
            atomic_replace(self.path, _card_document(self._profile_json, state), mode=self._mode)
        except OSError as exc:
            raise StateFileError(f"card file {self.path} cannot be written: {exc}") from exc
        self.state = state

    def close(self) -> None:
        """Release the lock."""
        self._lock.release()
