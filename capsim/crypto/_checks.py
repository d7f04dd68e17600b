"""Argument checks and byte helpers shared by the :mod:`capsim.crypto` modules (private).

Every public function of the package checks its arguments with these before any computation,
so a bad argument raises :class:`capsim.errors.ValidationError` naming it and the expected form.
"""

from __future__ import annotations

from typing import Final

from capsim._validate import as_bytes
from capsim.errors import ValidationError

ZERO8: Final = bytes(8)
ZERO6: Final = bytes(6)

# Byte -> the same byte with odd parity (bit 0 flipped when the popcount is even).
PARITY_TABLE: Final = bytes(b if bin(b).count("1") % 2 else b ^ 1 for b in range(256))


def key16(name: str, value: object) -> bytes:
    b = as_bytes(name, value)
    if len(b) != 16:
        raise ValidationError(f"{name}: expected a 16-byte double-length TDES key, got {len(b)} bytes")
    return b


def pan_digits(pan: object) -> str:
    if not isinstance(pan, str) or not pan.isascii() or not pan.isdigit():
        raise ValidationError("pan: expected a string of 12 to 19 ASCII digits")
    if not 12 <= len(pan) <= 19:
        raise ValidationError(f"pan: expected 12 to 19 digits, got {len(pan)}")
    return pan


def psn_digits(psn: object) -> str:
    if not isinstance(psn, str) or len(psn) != 2 or not psn.isascii() or not psn.isdigit():
        raise ValidationError("psn: expected exactly 2 ASCII digits (use '00' when 5F34 is absent)")
    return psn


def padding_method(padding: object) -> int:
    if isinstance(padding, bool) or not isinstance(padding, int) or padding not in (1, 2):
        raise ValidationError(f"padding: expected 1 or 2 (ISO/IEC 9797-1 method), got {padding!r}")
    return padding


def xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def pad(data: bytes, padding: int) -> bytes:
    """ISO/IEC 9797-1 padding method ``padding`` (1 or 2) on checked bytes."""
    if padding == 2:
        return data + b"\x80" + bytes(-(len(data) + 1) % 8)
    if not data:
        return ZERO8
    return data + bytes(-len(data) % 8)
