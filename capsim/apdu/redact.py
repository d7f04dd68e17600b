"""Redaction of APDUs before they are kept or shown: PIN blocks, PAN and track data, script data.

Theory of operation
===================

1. A command is redacted by its header alone: VERIFY (``INS 20``) and the issuer-script
   commands of a secure-messaging class (``CLA`` with bits ``0C``; ``INS 24``, ``DA``, ``DC``:
   enciphered PINs, keys) have their data field overwritten by :data:`REDACTED_BYTE`. The
   header, ``Lc`` and ``Le`` stay, so a redacted trace still shows which command was sent.
2. A response is redacted by its content: the values of :data:`SENSITIVE_TAGS` (PAN, track
   data, cardholder name) anywhere in its BER-TLV body are overwritten. The scan is tolerant:
   it stops at the first byte that is not BER-TLV and keeps the rest as it is (a malformed
   answer is still shown), and it descends at most 8 template levels.
3. Lengths never change, so a redacted transcript lines up byte for byte with the original.

Both the reader (its transcript) and the transports (their traces) use these functions; they
live here, below both, so neither imports the other.

>>> redact_command(bytes.fromhex("0020008008241234FFFFFFFFFF")).hex().upper()
'0020008008FFFFFFFFFFFFFFFF'
>>> redact_response(bytes.fromhex("70055A03123456" "9000")).hex().upper()
'70055A03FFFFFF9000'
"""

from __future__ import annotations

from typing import Final

from capsim.tags import TAGS

__all__ = ["REDACTED_BYTE", "SENSITIVE_TAGS", "redact_command", "redact_response"]

#: Tags whose values are replaced in traces: the tag table's sensitive tags (PAN, track data,
#: cardholder name, expiry date, PIN data …), the same list the TLV trees redact.
SENSITIVE_TAGS: Final = frozenset(tag for tag, info in TAGS.items() if info.sensitive)

#: Every redacted byte becomes this value (a PIN block of all ``FF`` is never a valid block).
REDACTED_BYTE: Final = 0xFF

_MAX_NESTING: Final = 8


def _sensitive_spans(data: bytes) -> list[tuple[int, int]]:
    """Value spans of sensitive tags in a BER-TLV byte string (rule 2: stops at bad data)."""
    spans: list[tuple[int, int]] = []

    def scan(start: int, end: int, depth: int) -> None:
        i = start
        while i < end and depth < _MAX_NESTING:
            if data[i] in (0x00, 0xFF):
                i += 1
                continue
            first = data[i]
            tag = first
            i += 1
            if first & 0x1F == 0x1F:
                while i < end:
                    tag = tag << 8 | data[i]
                    i += 1
                    if not tag & 0x80:
                        break
                    if tag > 0xFFFFFF:
                        return
            if i >= end:
                return
            length = data[i]
            i += 1
            if length & 0x80:
                n = length & 0x7F
                if n == 0 or n > 3 or i + n > end:
                    return
                length = int.from_bytes(data[i : i + n], "big")
                i += n
            if i + length > end:
                return
            if tag in SENSITIVE_TAGS:
                spans.append((i, i + length))
            elif first & 0x20:
                scan(i, i + length, depth + 1)
            i += length

    scan(0, len(data), 0)
    return spans


def redact_response(response: bytes) -> bytes:
    """``response`` with the values of :data:`SENSITIVE_TAGS` overwritten by ``FF`` bytes (rule 2)."""
    if len(response) < 2:
        return response
    body = bytearray(response[:-2])
    for a, b in _sensitive_spans(bytes(body)):
        body[a:b] = bytes([REDACTED_BYTE]) * (b - a)
    return bytes(body) + response[-2:]


def redact_command(command: bytes) -> bytes:
    """``command`` with the VERIFY PIN block and issuer-script data overwritten by ``FF`` bytes (rule 1).

    >>> redact_command(bytes.fromhex("84DA9F170A0102030405060708090A")).hex().upper()
    '84DA9F170AFFFFFFFFFFFFFFFFFFFF'
    >>> redact_command(bytes.fromhex("00B2010C00")).hex().upper()
    '00B2010C00'
    """
    if len(command) < 6:
        return command
    cla, ins = command[0], command[1]
    if ins == 0x20 or (cla & 0x0C and ins in (0x24, 0xDA, 0xDC)):
        lc = command[4]
        end = min(len(command), 5 + lc)
        return command[:5] + bytes([REDACTED_BYTE]) * (end - 5) + command[end:]
    return command
