"""Argument checks shared by the pure core (crypto, sm, tlv, the verifier): bytes, digits, enums.

Every check returns the normalised value or raises :class:`capsim.errors.ValidationError` naming
the parameter and the expected form (architecture.md, "Errors"), so callers never change state on
bad input.

>>> as_bytes("data", bytearray(b"ab"))
b'ab'
>>> digits("psn", "01", 2, 2)
'01'
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from capsim.errors import ValidationError

__all__ = ["as_bytes", "digits", "enum_member", "fixed_bytes"]

_E = TypeVar("_E", bound=Enum)


def as_bytes(name: str, value: object, *, phrase: str = "{name}: expected bytes") -> bytes:
    """``value`` as :class:`bytes` (``bytearray`` and ``memoryview`` are copied).

    Parameters
    ----------
    name:
        The parameter name used in the error message.
    value:
        The argument to check.
    phrase:
        The message before ``", got <type>"``; ``{name}`` is replaced by ``name``.

    >>> as_bytes("value", "ab", phrase="{name} must be bytes")
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: value must be bytes, got str
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise ValidationError(f"{phrase.format(name=name)}, got {type(value).__name__}")


def fixed_bytes(name: str, value: object, length: int) -> bytes:
    """``value`` as :class:`bytes` of exactly ``length`` bytes.

    >>> fixed_bytes("atc", b"\\x00", 2)
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: atc: expected 2 bytes, got 1
    """
    b = as_bytes(name, value)
    if len(b) != length:
        raise ValidationError(f"{name}: expected {length} bytes, got {len(b)}")
    return b


def digits(name: str, value: object, lo: int, hi: int) -> str:
    """``value`` if it is a string of ``lo`` to ``hi`` ASCII digits ``0``-``9``.

    >>> digits("pan", "12345678901٣", 12, 19)
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: pan: expected 12 to 19 ASCII digits
    """
    if not isinstance(value, str) or not lo <= len(value) <= hi or not all("0" <= c <= "9" for c in value):
        raise ValidationError(f"{name}: expected {lo} to {hi} ASCII digits")
    return value


def enum_member(name: str, cls: type[_E], value: object) -> _E:
    """The member of ``cls`` whose value (or which) ``value`` is.

    >>> from capsim.crypto import Encipherment
    >>> enum_member("variant", Encipherment, "visa-ecb") is Encipherment.VISA_ECB
    True
    >>> enum_member("variant", Encipherment, "x")
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: variant: expected one of ['visa-ecb', 'mastercard-cbc', 'ccd-cbc'], got 'x'
    """
    try:
        return cls(value)
    except ValueError:
        raise ValidationError(f"{name}: expected one of {[m.value for m in cls]}, got {value!r}") from None
