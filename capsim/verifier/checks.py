"""Argument checks of the verifier service: every public method validates before any I/O.

Theory of operation (verifier.md V7, V42)
-----------------------------------------
1. **Before anything else.** The :class:`~capsim.verifier.service.Verifier` methods run these
   checks on their arguments before they touch the store or the provider, so a malformed
   argument costs nothing and changes nothing.
2. **One error, naming the argument.** Each check returns the value (in canonical form where
   it has one) or raises :class:`~capsim.errors.ValidationError` whose message starts with the
   argument's name. No clock, store, provider or randomness is used here.
3. **Activation codes** are 16 Crockford base32 characters; dashes, spaces and case are
   ignored (:func:`normalise_activation`). Only a ___domain-separated SHA-256 digest of the
   normalised code is ever stored (:func:`activation_digest`).

>>> ident("user_id", "alice")
'alice'
>>> normalise_activation("abcd-efgh-jkmn-pqrs")
'ABCDEFGHJKMNPQRS'
>>> atc("atc", b"\\x01\\x02")
258
"""

from __future__ import annotations

import hashlib
from typing import Final

from capsim.errors import ValidationError

__all__ = [
    "ACT_ALPHABET",
    "MAX_ATC",
    "MAX_TEXT",
    "activation_digest",
    "atc",
    "ident",
    "normalise_activation",
    "request_id",
    "seconds",
    "text",
]

#: The alphabet of activation codes (Crockford base32: no I, L, O, U).
ACT_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Longest free text (names, labels, payees, reasons), in UTF-8 bytes.
MAX_TEXT: Final = 128
#: Highest ATC (two bytes).
MAX_ATC: Final = 0xFFFF


def text(name: str, value: object, *, lo: int = 1, hi: int = MAX_TEXT) -> str:
    """Free text of ``lo``..``hi`` UTF-8 bytes without control characters."""
    if not isinstance(value, str) or not lo <= len(value.encode("utf-8")) <= hi:
        raise ValidationError(f"{name}: expected a str of {lo}..{hi} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValidationError(f"{name}: control characters are not allowed")
    return value


def ident(name: str, value: object) -> str:
    """An identifier: 1..64 ASCII letters, digits, ``-``, ``_``, ``.`` or ``@``."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not value.isascii()
        or not all(c.isalnum() or c in "-_.@" for c in value)
    ):
        raise ValidationError(f"{name}: expected 1..64 ASCII letters, digits, '-', '_', '.' or '@'")
    return value


def request_id(value: object) -> str:
    """A caller's request id: 1..128 printable ASCII characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT or not value.isascii():
        raise ValidationError("request_id: expected 1..128 printable ASCII characters")
    if not value.isprintable():
        raise ValidationError("request_id: expected 1..128 printable ASCII characters")
    return value


def atc(name: str, value: object) -> int:
    """An ATC: two big-endian bytes or an int 0..65535."""
    if isinstance(value, bytes):
        if len(value) != 2:
            raise ValidationError(f"{name}: expected 2 bytes or an int 0..65535")
        return int.from_bytes(value, "big")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ATC:
        raise ValidationError(f"{name}: expected an int 0..65535")
    return value


def seconds(name: str, value: object, hi: int) -> int:
    """Whole seconds 1..``hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValidationError(f"{name}: expected whole seconds 1..{hi}")
    return value


def normalise_activation(code: object) -> str:
    """The 16 characters of an activation code as issued (upper case, no dashes)."""
    if not isinstance(code, str) or len(code) > 64:
        raise ValidationError("activation_code: expected 16 characters (dashes optional)")
    cleaned = code.replace("-", "").replace(" ", "").upper()
    if len(cleaned) != 16 or not all(c in ACT_ALPHABET for c in cleaned):
        raise ValidationError("activation_code: expected 16 characters (dashes optional)")
    return cleaned


def activation_digest(cleaned: str) -> bytes:
    """What the store keeps of a normalised activation code."""
    return hashlib.sha256(b"capsim activation v1|" + cleaned.encode("ascii")).digest()
