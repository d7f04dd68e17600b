"""Answer-to-reset checking: is a byte string a well-formed ATR, and which protocols does it offer.

Theory of operation (ISO/IEC 7816-3 §8.2)
-----------------------------------------
1. ``TS`` is ``3B`` (direct convention) or ``3F`` (inverse convention).
2. ``T0``: its high nibble ``Y1`` says which of ``TA1``, ``TB1``, ``TC1``, ``TD1`` follow (bits
   5 to 8 in that order); its low nibble ``K`` is the number of historical bytes.
3. Each ``TDi`` present says, in its high nibble, which of ``TA(i+1)`` … ``TD(i+1)`` follow, and
   in its low nibble a protocol ``T``. An ATR without ``TD1`` offers T=0 only. ``T=15`` is not
   a transmission protocol: it introduces global interface bytes.
4. Then come the ``K`` historical bytes, and a check byte ``TCK`` exactly when some ``TDi``
   names a ``T`` other than 0. ``TCK`` makes the XOR of every byte from ``T0`` to ``TCK`` zero.
5. An ATR has at most 33 bytes (``TS`` and 32 more). Nothing may follow ``TCK`` (or the
   historical bytes when there is no ``TCK``).

Rules are applied by :func:`parse_atr`, a pure function over bytes; every violation is one
:class:`~capsim.errors.ValidationError` naming the byte at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from capsim.errors import ValidationError
from capsim.hexinput import parse_hex

__all__ = ["MAX_ATR_LENGTH", "AtrInfo", "atr_from_hex", "check_atr", "parse_atr"]

#: The longest ATR ISO/IEC 7816-3 allows: TS and 32 more bytes.
MAX_ATR_LENGTH = 33
_GLOBAL = 15


@dataclass(frozen=True)
class AtrInfo:
    """What a well-formed ATR says.

    Attributes
    ----------
    protocols:
        The transmission protocols offered, in the order the ATR names them (the first one
        is the card's default): ``(0,)`` for an ATR without ``TD1``.
    historical:
        The historical bytes.
    has_tck:
        Whether the ATR ends with a check byte.
    """

    protocols: tuple[int, ...]
    historical: bytes
    has_tck: bool


def parse_atr(atr: bytes) -> AtrInfo:
    """Check ``atr`` against ISO/IEC 7816-3 and say which protocols it offers.

    Raises
    ------
    ValidationError
        When the bytes are no well-formed ATR; the message says why.

    Examples
    --------
    >>> parse_atr(bytes.fromhex("3B66000063617073696D")).protocols
    (0,)
    >>> parse_atr(bytes.fromhex("3B80800101")).protocols
    (0, 1)
    >>> parse_atr(bytes.fromhex("3B80800100"))
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: atr: wrong check byte TCK 00 (expected 01)
    """
    if not isinstance(atr, bytes | bytearray):
        raise ValidationError("atr: expected bytes")
    atr = bytes(atr)
    if len(atr) < 2:
        raise ValidationError(f"atr: expected at least 2 bytes (TS and T0), got {len(atr)}")
    if len(atr) > MAX_ATR_LENGTH:
        raise ValidationError(f"atr: expected at most {MAX_ATR_LENGTH} bytes, got {len(atr)}")
    if atr[0] not in (0x3B, 0x3F):
        raise ValidationError(f"atr: TS must be 3B (direct) or 3F (inverse convention), got {atr[0]:02X}")
    k = atr[1] & 0x0F
    y = atr[1] >> 4
    pos = 2
    protocols: list[int] = []
    level = 1
    while True:
        present = bin(y).count("1")
        if pos + present > len(atr):
            raise ValidationError(f"atr: too short: the interface bytes of level {level} are cut off")
        if not y & 0x8:  # no TDi: the interface bytes end here
            pos += present
            break
        pos += present
        td = atr[pos - 1]
        if td & 0x0F not in protocols:
            protocols.append(td & 0x0F)
        y = td >> 4
        level += 1
    if not protocols:
        protocols.append(0)
    has_tck = any(t != 0 for t in protocols)
    expected = pos + k + (1 if has_tck else 0)
    if len(atr) < expected:
        what = "the historical bytes and TCK" if has_tck else "the historical bytes"
        raise ValidationError(
            f"atr: too short: T0 announces {k} historical bytes; expected {expected} bytes with "
            f"{what}, got {len(atr)}"
        )
    if len(atr) > expected:
        extra = "after TCK" if has_tck else "(an ATR offering only T=0 has no TCK)"
        raise ValidationError(
            f"atr: {len(atr) - expected} byte(s) too many {extra}; expected {expected} bytes"
        )
    if has_tck:
        check = reduce(lambda a, b: a ^ b, atr[1:-1], 0)
        if check != atr[-1]:
            raise ValidationError(f"atr: wrong check byte TCK {atr[-1]:02X} (expected {check:02X})")
    offered = tuple(t for t in protocols if t != _GLOBAL) or (0,)
    return AtrInfo(protocols=offered, historical=atr[pos : pos + k], has_tck=has_tck)


def check_atr(atr: bytes) -> bytes:
    """``atr`` unchanged when it is a well-formed ATR (:func:`parse_atr`); else ``ValidationError``."""
    parse_atr(atr)
    return bytes(atr)


def atr_from_hex(text: str, name: str = "atr") -> bytes:
    """A well-formed ATR typed as hex (:func:`capsim.hexinput.parse_hex`'s forms: spaces, colons,
    a ``0x`` prefix), or ``ValidationError`` naming ``name``.

    Examples
    --------
    >>> atr_from_hex("3B 02 14 50").hex().upper()
    '3B021450'
    """
    return check_atr(parse_hex(name, text, min_bytes=2, max_bytes=MAX_ATR_LENGTH))
