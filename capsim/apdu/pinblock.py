"""PIN blocks as cards receive them: ISO 9564 format 2 for EMV, FF-padded ASCII for PIV.

ISO 9564 format 2 is the plaintext PIN of VERIFY and of the PIN scripts (emv-crypto.md §7.4).

A format 2 block is plain data, no key involved: ``2`` ‖ PIN length ‖ PIN digits ‖ ``F`` fill, 8
bytes. The reader sends it in VERIFY as it is; secure messaging (:mod:`capsim.sm`, which
re-exports both functions) enciphers it for PIN CHANGE/UNBLOCK scripts. It lives here, beside
the commands, so that a reader builds its VERIFY without loading the script cryptography.

>>> pin_block_iso2("1234").hex().upper()
'241234FFFFFFFFFF'
>>> parse_pin_block_iso2(pin_block_iso2("999999999999"))
'999999999999'

A PIV PIN or PUK (SP 800-73-4 part 2 §3.2.1) is 6 to 8 ASCII digits padded with ``FF`` to 8
bytes; the host builds it (:func:`piv_reference_block`) and the card parses it
(:func:`parse_piv_reference_block`) with the same rule.

>>> piv_reference_block("123456").hex().upper()
'313233343536FFFF'
"""

from __future__ import annotations

from capsim._validate import digits
from capsim._validate import fixed_bytes as _fixed
from capsim.errors import ValidationError

__all__ = ["parse_pin_block_iso2", "parse_piv_reference_block", "pin_block_iso2", "piv_reference_block"]


def pin_block_iso2(pin: str) -> bytes:
    """ISO 9564 format 2 PIN block: ``2`` ‖ L ‖ digits ‖ ``F`` fill, 8 bytes (emv-crypto.md §7.4).

    ``pin`` is 4 to 12 decimal digits, else :class:`~capsim.errors.ValidationError`.

    >>> pin_block_iso2("999999999999").hex().upper()
    '2C999999999999FF'
    """
    p = digits("pin", pin, 4, 12)
    return bytes.fromhex(f"2{len(p):X}{p}".ljust(16, "F"))


def parse_pin_block_iso2(block: bytes) -> str:
    """The PIN of an ISO 9564 format 2 block; strict (emv-crypto.md §7.4).

    The first nibble must be 2, the length 4–12, the PIN nibbles decimal and every other
    nibble ``F``; otherwise :class:`~capsim.errors.ValidationError`.

    >>> parse_pin_block_iso2(bytes.fromhex("249999FFFFFFFFFF"))
    '9999'
    """
    b = _fixed("block", block, 8)
    h = b.hex().upper()
    if h[0] != "2":
        raise ValidationError("block: not an ISO 9564 format 2 PIN block (first nibble is not 2)")
    n = int(h[1], 16)
    if not 4 <= n <= 12:
        raise ValidationError("block: PIN length nibble outside 4-12")
    pin, fill = h[2 : 2 + n], h[2 + n :]
    if not pin.isdigit() or fill != "F" * len(fill):
        raise ValidationError("block: PIN digits not decimal or fill not F")
    return pin


def piv_reference_block(value: str, name: str = "PIN") -> bytes:
    """A PIV PIN or PUK as the card receives it: 6 to 8 ASCII digits padded with ``FF`` to 8
    bytes; anything else is a :class:`~capsim.errors.ValidationError` naming ``name``."""
    if not isinstance(value, str) or not 6 <= len(value) <= 8 or not value.isascii() or not value.isdigit():
        raise ValidationError(f"{name}: expected 6 to 8 digits")
    return value.encode("ascii") + b"\xff" * (8 - len(value))


def parse_piv_reference_block(block: bytes) -> str:
    """The PIN or PUK of an 8-byte PIV reference block (strict: 6 to 8 ASCII digits, then only
    ``FF``); :class:`~capsim.errors.ValidationError` otherwise.

    >>> parse_piv_reference_block(bytes.fromhex("313233343536FFFF"))
    '123456'
    """
    if not isinstance(block, bytes) or len(block) != 8:
        raise ValidationError("reference data: expected 8 bytes")
    value = block.rstrip(b"\xff")
    if not 6 <= len(value) <= 8 or not all(0x30 <= b <= 0x39 for b in value):
        raise ValidationError("reference data: expected 6 to 8 ASCII digits padded with FF")
    return value.decode("ascii")
