"""Hex typed by people: the one parser behind every hex option, argument and field.

Theory of operation
===================

1. One form everywhere. Hex may start with one ``0x`` (or ``0X``) prefix; digits are upper or
   lower case; spaces, tabs, newlines and colons may separate them anywhere (``9F:17:01:03``,
   ``9f 17 01 03``, ``0x9F170103`` are the same four bytes). Nothing else is accepted.
2. Errors name the value and the fault, in the user's terms: the option or argument name as
   the user typed it (``--aid``, ``APDU 2``), then either the first character that is not a hex
   digit with its 1-based position in what was typed, or an odd digit count ("9 hex digits: an
   odd count, two digits make a byte"), or a byte count outside the allowed range. Every error
   is a :class:`~capsim.errors.ValidationError`. For a secret (a key component) the message
   gives positions and counts only, never a character or a byte of the value.
3. The checks are a pure function of the text; nothing is read or written.
4. :func:`parse_command_apdu` adds the APDU rule: the bytes must decode as an ISO 7816-4
   command APDU (:meth:`capsim.apdu.command.CommandApdu.from_bytes`: the 4-byte header, a body
   whose Lc and Le agree with its length), so a short or malformed APDU is refused before
   anything is sent to a card.

>>> parse_hex("--aid", "0xA0:00:00:00:04 80 02").hex().upper()
'A0000000048002'
>>> parse_hex("APDU 1", "80CA9F170")
Traceback (most recent call last):
...
capsim.errors.ValidationError: APDU 1: 9 hex digits: an odd count (two digits make a byte)
>>> parse_hex("HEX", "9F:1G")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
capsim.errors.ValidationError: HEX: 'G' (position 5) is not a hex digit; use 0-9 and A-F, ...
"""

from __future__ import annotations

from typing import Final

from capsim.apdu.command import CommandApdu
from capsim.errors import ApduFormatError, ValidationError

__all__ = ["HEX_FORMS", "parse_command_apdu", "parse_hex"]

#: How the accepted forms are described in help texts and docs.
HEX_FORMS: Final = "hex digits, optionally separated by spaces or colons, with an optional 0x prefix"

_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_SEPARATORS: Final = frozenset(" \t\r\n\v\f:")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def parse_hex(
    name: str, text: str, *, min_bytes: int = 1, max_bytes: int | None = None, secret: bool = False
) -> bytes:
    """The bytes written as hex in ``text`` (rule 1), or a :class:`ValidationError` naming ``name``.

    Parameters
    ----------
    name:
        How the user knows this value: ``"--aid"``, ``"APDU 2"``, ``"HEX"``.
    text:
        What the user typed.
    min_bytes, max_bytes:
        The allowed number of bytes (``max_bytes=None``: no upper bound). ``min_bytes=0``
        accepts an empty value.
    secret:
        The value is a key or another secret: errors give positions and counts, never a
        character or a byte of it.

    >>> parse_hex("x", "  0X 9f:17  ")
    b'\\x9f\\x17'
    >>> parse_hex("--aid", "A000", min_bytes=5, max_bytes=16)
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: --aid: expected 5 to 16 bytes, got 2 bytes (A000)
    """
    if not isinstance(text, str):
        raise ValidationError(f"{name}: expected hex text, got {type(text).__name__}")
    start = len(text) - len(text.lstrip())
    body = text[start:]
    if body[:2] in ("0x", "0X"):
        start += 2
    digits: list[str] = []
    for position, ch in enumerate(text[start:], start + 1):
        if ch in _DIGITS:
            digits.append(ch)
        elif ch not in _SEPARATORS:
            shown = "a character" if secret else repr(ch)
            raise ValidationError(
                f"{name}: {shown} (position {position}) is not a hex digit; use 0-9 and A-F, "
                "optionally separated by spaces or colons, with an optional 0x prefix"
            )
    count = len(digits)
    if count % 2:
        raise ValidationError(f"{name}: {count} hex digits: an odd count (two digits make a byte)")
    value = bytes.fromhex("".join(digits))
    n = len(value)
    if n < min_bytes or (max_bytes is not None and n > max_bytes):
        if not n:
            raise ValidationError(f"{name}: expected hex digits, got nothing")
        if max_bytes is None:
            wanted = f"at least {_plural(min_bytes, 'byte')}"
        elif min_bytes == max_bytes:
            wanted = _plural(min_bytes, "byte")
        else:
            wanted = f"{min_bytes} to {max_bytes} bytes"
        shown = "" if secret else f" ({value.hex().upper() if n <= 32 else value[:32].hex().upper() + '…'})"
        raise ValidationError(f"{name}: expected {wanted}, got {_plural(n, 'byte')}{shown}")
    return value


def parse_command_apdu(name: str, text: str) -> bytes:
    """A command APDU written as hex: :func:`parse_hex`, then the APDU rule (rule 4).

    >>> parse_command_apdu("APDU 1", "80 CA 9F 17 00").hex().upper()
    '80CA9F1700'
    >>> parse_command_apdu("APDU 2", "00A404")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: APDU 2: too short (3 bytes): a command APDU has at least the 4 ...
    >>> parse_command_apdu("APDU 3", "00A4040007A0000000")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: APDU 3: not a well-formed command APDU: short Lc 7 does not match ...
    """
    raw = parse_hex(name, text, min_bytes=0)
    if len(raw) < 4:
        got = "empty" if not raw else f"too short ({_plural(len(raw), 'byte')})"
        raise ValidationError(f"{name}: {got}: a command APDU has at least the 4 header bytes CLA INS P1 P2")
    try:
        CommandApdu.from_bytes(raw)
    except ApduFormatError as exc:
        raise ValidationError(f"{name}: not a well-formed command APDU: {exc}") from None
    return raw
