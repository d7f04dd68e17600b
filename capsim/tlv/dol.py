"""Data Object Lists (EMV 4.3 Book 3 §5.4): parsing, encoding and filling.

Theory of operation
-------------------
1. A DOL is a list of (tag, length) pairs: a BER tag (as :mod:`capsim.tlv.ber` reads tags)
   followed by one length byte, no values. A tag starting with ``00`` or ``FF`` or an entry
   without its length byte raises :class:`~capsim.errors.ApduFormatError`.
2. :func:`fill_dol` concatenates the value each entry asks for, fitted to the entry's length by
   the tag's format (:mod:`capsim.tags`): ``n`` right-justified with leading zeros, ``cn``
   left-justified with trailing ``FF``, everything else left-justified with trailing zeros;
   too long a value is cut on the padding side. A missing tag, and always a constructed one,
   is zero-filled; a missing tag unknown to the tag table is reported after the fill.
3. Two bounded caches, both keyed by DOL bytes, hold parsed DOLs and their fill plans: each a
   :func:`functools.lru_cache` on a pure function (least recently used out first; DOLs longer
   than any card's are not cached), so hostile input cannot grow them. What each buys is
   measured in docs/performance.md ("Reader").

>>> fill_dol(bytes.fromhex("9F3704"), {0x9F37: bytes.fromhex("DEADBEEF")}).hex().upper()
'DEADBEEF'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from capsim.errors import ApduFormatError, ValidationError
from capsim.tags import TagFormat, tag_info
from capsim.tags import _constructed as _is_constructed_tag
from capsim.tlv.ber import _PADDING, _as_bytes, _read_tag, encode_tag

__all__ = ["DolEntry", "encode_dol", "fill_dol", "parse_dol"]

_log = logging.getLogger("capsim.tlv")

_DOL_CACHE = 256
_MAX_CACHED_DOL = 252


@dataclass(frozen=True, slots=True)
class DolEntry:
    """One DOL entry: a tag and the number of value bytes it asks for (EMV 4.3 Book 3 §5.4)."""

    tag: int
    length: int

    def __post_init__(self) -> None:
        encode_tag(self.tag)
        n = self.length
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 0xFF:
            raise ValidationError(f"length must be an int in 0..255, got {n!r}")

    def to_bytes(self) -> bytes:
        """Tag followed by the one-byte length.

        >>> DolEntry(0x9F02, 6).to_bytes().hex().upper()
        '9F0206'
        """
        return encode_tag(self.tag) + bytes((self.length,))

    def __repr__(self) -> str:
        return f"DolEntry(0x{encode_tag(self.tag).hex().upper()}, {self.length})"


def parse_dol(data: bytes) -> tuple[DolEntry, ...]:
    """Parse a DOL (CDOL1, CDOL2, PDOL, DDOL, TDOL) into entries.

    Raises
    ------
    ApduFormatError
        On a truncated tag or a missing length byte, or a tag whose first byte is ``00``
        or ``FF``.

    >>> parse_dol(bytes.fromhex("9F02069F3704"))
    (DolEntry(0x9F02, 6), DolEntry(0x9F37, 4))
    """
    data = _as_bytes("data", data)
    return (_cached_parse_dol if len(data) <= _MAX_CACHED_DOL else _parse_dol)(data)


def _parse_dol(data: bytes) -> tuple[DolEntry, ...]:
    out: list[DolEntry] = []
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] in _PADDING:
            raise ApduFormatError(f"DOL tag cannot start with {data[pos]:02X}", pos)
        tag, pos = _read_tag(data, pos, end)
        if pos >= end:
            raise ApduFormatError(f"DOL entry for tag {tag:X} has no length byte", pos)
        out.append(DolEntry(tag, data[pos]))
        pos += 1
    return tuple(out)


_cached_parse_dol = lru_cache(maxsize=_DOL_CACHE)(_parse_dol)


def encode_dol(entries: Iterable[DolEntry]) -> bytes:
    """The DOL bytes of ``entries`` (inverse of :func:`parse_dol`).

    >>> encode_dol([DolEntry(0x9F37, 4)]).hex().upper()
    '9F3704'
    """
    return b"".join(e.to_bytes() for e in entries)


def _fit(fmt: TagFormat, value: bytes, length: int) -> bytes:
    if fmt is TagFormat.N:
        if len(value) >= length:
            return value[len(value) - length :]
        return bytes(length - len(value)) + value
    pad = b"\xff" if fmt is TagFormat.CN else b"\x00"
    if len(value) >= length:
        return value[:length]
    return value + pad * (length - len(value))


def fill_dol(
    dol: bytes | Iterable[DolEntry],
    values: Mapping[int, bytes],
    *,
    unknown: Callable[[int], None] | None = None,
) -> bytes:
    """Concatenate the values a DOL asks for (EMV 4.3 Book 3 §5.4; cap-protocol.md §2).

    For each entry, the value from ``values`` is fitted to the entry's length by the tag's
    format (:mod:`capsim.tags`; tags capsim does not know are treated as binary):

    * ``n``: right-justified, padded on the left with ``00``; too long keeps the rightmost bytes;
    * ``cn``: left-justified, padded on the right with ``FF``; too long is cut on the right;
    * ``b``, ``an``, ``ans``: left-justified, padded on the right with ``00``; cut on the right.

    A tag missing from ``values`` is filled with zeros; when it is also unknown to the tag
    table, ``unknown(tag)`` is called first (so a reader can log it). A constructed tag is
    always zero-filled (Book 3 §5.4).

    Parameters
    ----------
    dol:
        The DOL bytes or parsed entries.
    values:
        Tag → value bytes.
    unknown:
        Called with each tag that is missing from ``values`` and unknown to the tag table.

    Raises
    ------
    ApduFormatError
        When ``dol`` bytes are malformed.
    ValidationError
        When a value is not bytes.

    >>> cdol = bytes.fromhex("9F02065A049F3704")
    >>> fill_dol(cdol, {0x9F02: b"\\x12\\x34", 0x5A: b"\\x46\\x58\\x12"}).hex().upper()
    '000000001234465812FF00000000'
    """
    if type(values) is not dict and not isinstance(values, Mapping):
        raise ValidationError(f"values must be a mapping of tag to bytes, got {type(values).__name__}")
    if isinstance(dol, bytes | bytearray | memoryview):
        dol = bytes(dol)
        plan = (_cached_fill_plan_of if len(dol) <= _MAX_CACHED_DOL else _fill_plan_of)(dol)
    elif isinstance(dol, Iterable) and not isinstance(dol, str):
        plan = _fill_plan(tuple(dol), values)
    else:
        raise ValidationError(f"dol must be bytes or DolEntry items, got {type(dol).__name__}")
    # One pass that checks every value while filling; missing unknown tags are reported only
    # after it, so bad input neither half-fills nor reports tags.
    out = bytearray()
    missing: list[int] = []
    for tag, length, unknown_tag, constructed, fmt in plan:
        value = values.get(tag)
        if value is None:
            if unknown_tag:
                missing.append(tag)
            out += bytes(length)
            continue
        if type(value) is not bytes:
            value = _as_bytes(f"values[0x{tag:X}]", value)
        if constructed:
            out += bytes(length)
        elif len(value) == length:
            out += value
        else:
            out += _fit(fmt, value, length)
    for tag in missing:
        _log.debug("DOL asks for tag %X, unknown to the tag table: zero-filled", tag)
        if unknown is not None:
            unknown(tag)
    return bytes(out)


#: How one DOL entry is filled: tag, length, unknown to the tag table, constructed, format.
_FillRow = tuple[int, int, bool, bool, TagFormat]


def _fill_plan(
    entries: tuple[object, ...], values: Mapping[int, object] | None = None
) -> tuple[_FillRow, ...]:
    """How to fill ``entries`` (checked to be DolEntry items; with ``values``, in the order
    :func:`fill_dol` has always checked them: each entry, then its value)."""
    rows: list[_FillRow] = []
    for entry in entries:
        if not isinstance(entry, DolEntry):
            raise ValidationError(f"dol must be bytes or DolEntry items, got {type(entry).__name__}")
        tag = entry.tag
        if values is not None:
            raw = values.get(tag)
            if raw is not None and type(raw) is not bytes:
                _as_bytes(f"values[0x{tag:X}]", raw)
        rows.append((tag, entry.length, *_fill_rule(tag)))
    return tuple(rows)


def _fill_rule(tag: int) -> tuple[bool, bool, TagFormat]:
    """How ``tag`` is filled: unknown to the tag table, constructed, its format."""
    info = tag_info(tag)
    return info is None, _is_constructed_tag(tag), info.fmt if info is not None else TagFormat.B


def _fill_plan_of(dol: bytes) -> tuple[_FillRow, ...]:
    """The fill plan of DOL bytes (raises as :func:`parse_dol`)."""
    return _fill_plan(parse_dol(dol))


_cached_fill_plan_of = lru_cache(maxsize=_DOL_CACHE)(_fill_plan_of)
