"""PIV card files: one emulated PIV card in one JSON file, written like an EMV card file.

Theory of operation
-------------------
1. A PIV card file is ``{"format": "capsim-piv-card", "version": 1, "atr": HEX, "state":
   {…}}`` (:meth:`capsim.cards.piv.state.PivState.to_dict`), mode 0600. It holds private keys
   and the PIN: treat it like a key file.
2. It is created and rewritten with :mod:`capsim.atomicfile` (a crash leaves the old or the new
   document, never a mix) and opened under the same ``<file>.lock`` as EMV card files
   (:class:`capsim.cards.cardfile.CardFileLock`): the card persists each new state before it
   answers, so a PIN try is never lost.
3. Anything malformed raises :class:`~capsim.errors.StateFileError`; nothing is reset silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from capsim.atomicfile import atomic_create, atomic_replace, check_header, read_json, remove_stale_temps
from capsim.cards.cardfile import LOCK_TIMEOUT_S, CardFileLock
from capsim.cards.piv.state import PivState
from capsim.errors import StateFileError

__all__ = [
    "PIV_CARD_FILE_FORMAT",
    "PIV_CARD_FILE_VERSION",
    "PivCardFile",
    "create_piv_card_file",
    "is_piv_card_file",
    "read_piv_card_file",
]

PIV_CARD_FILE_FORMAT: Final = "capsim-piv-card"
PIV_CARD_FILE_VERSION: Final = 1


def _document(atr: bytes, state: PivState) -> str:
    doc = {
        "format": PIV_CARD_FILE_FORMAT,
        "version": PIV_CARD_FILE_VERSION,
        "atr": atr.hex().upper(),
        "state": state.to_dict(),
    }
    return json.dumps(doc, sort_keys=True) + "\n"


def _parse(doc: Any, path: Path) -> tuple[bytes, PivState]:
    check_header(doc, path, PIV_CARD_FILE_FORMAT, PIV_CARD_FILE_VERSION, "capsim PIV card file")
    extra = set(doc) - {"format", "version", "atr", "state"}
    if extra:
        raise StateFileError(f"{path}: unknown top-level keys {sorted(extra)}")
    try:
        atr = bytes.fromhex(doc["atr"])
        state = PivState.from_dict(doc["state"])
    except KeyError as exc:
        raise StateFileError(f"{path}: PIV card file without {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:  # ValidationError is a ValueError
        raise StateFileError(f"{path}: invalid PIV card file: {exc}") from None
    if not 2 <= len(atr) <= 33:
        raise StateFileError(f"{path}: invalid PIV card file: atr of {len(atr)} bytes")
    return atr, state


def read_piv_card_file(path: str | os.PathLike[str]) -> tuple[bytes, PivState]:
    """Read and validate a PIV card file (no lock). Raises :class:`StateFileError`."""
    p = Path(path)
    return _parse(read_json(p, "PIV card file"), p)


def is_piv_card_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a JSON document with the PIV card file's ``format`` (no lock, no
    validation beyond that: opening it checks the rest). An unreadable file is not one."""
    try:
        doc = read_json(Path(path), "card file")
    except StateFileError:
        return False
    return isinstance(doc, dict) and doc.get("format") == PIV_CARD_FILE_FORMAT


def create_piv_card_file(path: str | os.PathLike[str], atr: bytes, state: PivState) -> None:
    """Write a new PIV card file atomically; refuse to overwrite (:class:`StateFileError`)."""
    atomic_create(Path(path), _document(atr, state), "PIV card file")


class PivCardFile:
    """An open, locked PIV card file that persists every new state atomically."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._lock = CardFileLock(self.path, timeout=timeout)
        self._lock.acquire()
        try:
            remove_stale_temps(self.path)
            self.atr, self.state = read_piv_card_file(self.path)
        except BaseException:
            self._lock.release()
            raise

    def save_state(self, state: PivState) -> None:
        """Persist ``state`` (temp file, fsync, rename, fsync of the directory)."""
        if not self._lock.held:
            raise StateFileError(f"PIV card file {self.path} is closed")
        try:
            atomic_replace(self.path, _document(self.atr, state))
        except OSError as exc:
            raise StateFileError(f"PIV card file {self.path} cannot be written: {exc}") from exc
        self.state = state

    def close(self) -> None:
        """Release the lock."""
        self._lock.release()
