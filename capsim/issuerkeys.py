"""Issuer-keys files: the three issuer master keys of a card range, with their check values.

Both the card side (personalisation, ``capsim card new``) and the bank side (the verifier's
keyring) read these files, so the format sits below both.

Theory of operation
-------------------
1. An issuer-keys file is one JSON document ``{"format": "capsim-issuer-keys", "version": 1,
   "derivation": …, "keys": {"imk-ac": {"key": HEX, "kcv": HEX}, …}}``, written atomically,
   mode 0600, never over an existing file (:mod:`capsim.atomicfile`).
2. On load every key's check value is recomputed and compared with the recorded one
   (``hmac.compare_digest``); a mismatch, a wrong length, a missing key, an unknown format or
   a newer version raises :class:`~capsim.errors.StateFileError`.
3. ``repr`` never shows key bytes (:class:`IssuerKeys` shows only the derivation).
4. As ``ssh`` refuses a private key file that other users can read, :func:`load_issuer_keys`
   refuses a file whose group or other permission bits are set
   (:class:`~capsim.errors.UnsafeFileModeError`, naming the ``chmod 600`` to run), before
   reading it. Files written here are 0600.
"""

from __future__ import annotations

import hmac
import json
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from capsim.atomicfile import atomic_create, check_header, read_json
from capsim.crypto import key_check_value
from capsim.errors import StateFileError, UnsafeFileModeError, ValidationError

__all__ = [
    "ISSUER_KEYS_FORMAT",
    "ISSUER_KEYS_VERSION",
    "IssuerKeys",
    "load_issuer_keys",
    "save_issuer_keys",
]

ISSUER_KEYS_FORMAT: Final = "capsim-issuer-keys"
ISSUER_KEYS_VERSION: Final = 1


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
    """Write an issuer-keys file: JSON, mode 0600, atomic, never overwriting (rule 1)."""
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
    atomic_create(Path(path), json.dumps(doc, indent=2) + "\n", "issuer keys file")


def load_issuer_keys(path: str | os.PathLike[str]) -> IssuerKeys:
    """Read an issuer-keys file; every KCV is checked (rule 2), its mode first (rule 4).

    Raises :class:`StateFileError` (:class:`~capsim.errors.UnsafeFileModeError` for a file
    other users can access).
    """
    p = Path(path)
    _check_mode(p)
    doc = read_json(p, "issuer keys file")
    check_header(doc, p, ISSUER_KEYS_FORMAT, ISSUER_KEYS_VERSION, "issuer keys file")
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


def _check_mode(path: Path) -> None:
    """Rule 4: refuse an issuer-keys file other users can access."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # reading it reports the problem
    if mode & 0o077:
        raise UnsafeFileModeError(
            f"issuer keys file {path} is accessible to other users (mode {mode:04o}); "
            f"it holds secret keys and is refused: run chmod 600 {shlex.quote(str(path))}",
            str(path),
            mode,
        )
