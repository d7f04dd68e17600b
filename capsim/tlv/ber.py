"""BER-TLV as EMV uses it (EMV 4.3 Book 3 Annex B): tags, lengths, :class:`Tlv`, decoding,
encoding, searching and printing.

Theory of operation
-------------------
1. A tag is one byte, or, when the low five bits of the first byte are all set, that byte
   plus following bytes up to the first one with bit 8 clear (``9F02``, ``BF0C``,
   ``DF8101``). Tags longer than 4 bytes are rejected.
2. A length is one byte ``00``..``7F``, or ``81``/``82``/``83`` followed by 1, 2 or 3 length
   bytes. The indefinite form ``80`` and ``84``..``FF`` are rejected. Non-minimal lengths
   (``81 05``) are accepted and re-encoded minimally: a tree re-encodes to the canonical bytes,
   which decode to the same tree.
3. Bytes ``00`` and ``FF`` before, between and after objects are padding and are skipped
   (Book 3 Annex B1), at top level and inside templates.
4. A constructed object (bit 6 of the first tag byte set, e.g. ``6F``, ``70``, ``77``,
   ``A5``, ``BF0C``) must hold BER-TLV; its ``children`` are decoded recursively, at most
   :data:`MAX_DEPTH` levels deep. Its ``value`` is the canonical encoding of the children.
5. Any violation raises :class:`~capsim.errors.ApduFormatError` with the offset of the
   offending byte; nothing else escapes.

>>> fci = decode(bytes.fromhex("6F108407A0000000048002A5055F2D02656E"))
>>> print(format_tree(fci))
6F File Control Information (FCI) Template (16 bytes)
  84 Dedicated File (DF) Name (7 bytes) A0000000048002
  A5 FCI Proprietary Template (5 bytes)
    5F2D Language Preference (2 bytes) 656E "en"
>>> find(fci, 0x84).value.hex().upper()
'A0000000048002'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from capsim._validate import as_bytes
from capsim.errors import ApduFormatError, ValidationError
from capsim.tags import TagFormat, tag_info, tag_name
from capsim.tags import _constructed as _is_constructed_tag

__all__ = [
    "MAX_DEPTH",
    "Tlv",
    "decode",
    "encode",
    "encode_constructed",
    "encode_length",
    "encode_tag",
    "find",
    "find_all",
    "format_tree",
    "walk",
]

MAX_DEPTH = 32
"""Deepest template nesting :func:`decode` accepts (real EMV data nests at most 4 deep)."""

_MAX_LENGTH = 0xFFFFFF
_MAX_TAG_BYTES = 4
_PADDING = (0x00, 0xFF)


# --------------------------------------------------------------------------- tags and lengths


def encode_tag(tag: int) -> bytes:
    """The bytes of ``tag`` (ISO/IEC 8825-1 §8.1.2), after checking it is a well-formed tag.

    Raises
    ------
    ValidationError
        When ``tag`` is not an int whose big-endian bytes form one BER tag of 1..4 bytes, or
        when its first byte is ``00``/``FF`` (EMV padding, so it could never be decoded).

    >>> encode_tag(0x9F02).hex().upper()
    '9F02'
    >>> encode_tag(0x1F)
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: tag must be a BER-TLV tag of 1..4 bytes, got 0x1F
    """
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 < tag <= 0xFFFFFFFF:
        raise ValidationError(f"tag must be a BER-TLV tag of 1..4 bytes, got {tag!r}")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    first = raw[0]
    ok = first not in _PADDING
    if len(raw) == 1:
        ok = ok and first & 0x1F != 0x1F
    else:
        ok = ok and first & 0x1F == 0x1F and all(b & 0x80 for b in raw[1:-1]) and not raw[-1] & 0x80
    if not ok:
        raise ValidationError(f"tag must be a BER-TLV tag of 1..4 bytes, got 0x{tag:X}")
    return raw


def encode_length(length: int) -> bytes:
    """The minimal BER length field for ``length`` (0..16 777 215).

    >>> [encode_length(n).hex().upper() for n in (5, 127, 128, 256, 65536)]
    ['05', '7F', '8180', '820100', '83010000']
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= _MAX_LENGTH:
        raise ValidationError(f"length must be an int in 0..{_MAX_LENGTH}, got {length!r}")
    if length < 0x80:
        return bytes((length,))
    if length <= 0xFF:
        return b"\x81" + bytes((length,))
    if length <= 0xFFFF:
        return b"\x82" + length.to_bytes(2, "big")
    return b"\x83" + length.to_bytes(3, "big")


def _as_bytes(name: str, value: object) -> bytes:
    return as_bytes(name, value, phrase="{name} must be bytes")


# --------------------------------------------------------------------------- the Tlv type


@dataclass(frozen=True, slots=True, repr=False)
class Tlv:
    """One BER-TLV data object.

    Parameters
    ----------
    tag:
        The tag as an int (``0x9F02``).
    value:
        The value bytes. For a constructed tag it may be given instead of ``children``
        (it is then decoded), and it is always stored as the canonical encoding of the
        children.
    children:
        The decoded objects inside a constructed tag; empty for primitive tags.

    Raises
    ------
    ValidationError
        On a malformed tag, children on a primitive tag, a constructed value that is not
        BER-TLV, or a value inconsistent with the children.

    >>> t = Tlv(0x70, children=(Tlv(0x5F34, b"\\x01"),))
    >>> t.to_bytes().hex().upper(), t.constructed
    ('70045F340101', True)
    >>> Tlv(0x5A, bytes.fromhex("4658123456789009"))
    Tlv(0x5A, <redacted 8 bytes>)
    """

    tag: int
    value: bytes = b""
    children: tuple[Tlv, ...] = field(default=())

    def __post_init__(self) -> None:
        encode_tag(self.tag)
        value = _as_bytes("value", self.value)
        if len(value) > _MAX_LENGTH:
            raise ValidationError(f"value must be at most {_MAX_LENGTH} bytes, got {len(value)}")
        children = self.children
        if not isinstance(children, tuple):
            if isinstance(children, Iterable) and not isinstance(children, bytes | str):
                children = tuple(children)
            else:
                raise ValidationError(f"children must be a tuple of Tlv, got {type(children).__name__}")
        if not all(isinstance(c, Tlv) for c in children):
            raise ValidationError("children must be a tuple of Tlv")
        if not _is_constructed_tag(self.tag):
            if children:
                raise ValidationError(f"tag {self.tag:X} is primitive and cannot have children")
        elif children:
            canonical = b"".join(c.to_bytes() for c in children)
            if value and value != canonical:
                raise ValidationError(f"value of constructed tag {self.tag:X} does not match its children")
            value = canonical
        elif value:
            try:
                children = decode(value)
            except ApduFormatError as exc:
                raise ValidationError(
                    f"value of constructed tag {self.tag:X} must be BER-TLV: {exc}"
                ) from exc
            value = b"".join(c.to_bytes() for c in children)
        if len(value) > _MAX_LENGTH:
            raise ValidationError(f"value must be at most {_MAX_LENGTH} bytes, got {len(value)}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "children", children)

    @property
    def constructed(self) -> bool:
        """True for templates (bit 6 of the first tag byte set)."""
        return _is_constructed_tag(self.tag)

    @property
    def tag_bytes(self) -> bytes:
        """The encoded tag."""
        return encode_tag(self.tag)

    @property
    def name(self) -> str:
        """The EMV name of the tag (:func:`capsim.tags.tag_name`)."""
        return tag_name(self.tag)

    def to_bytes(self) -> bytes:
        """Tag, minimal length and value.

        >>> Tlv(0x9F36, b"\\x00\\x7c").to_bytes().hex().upper()
        '9F3602007C'
        """
        return encode_tag(self.tag) + encode_length(len(self.value)) + self.value

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def find(self, tag: int) -> Tlv | None:
        """The first descendant with ``tag`` (depth-first), or ``None``.

        >>> Tlv(0x77, bytes.fromhex("9F360200AA")).find(0x9F36).value.hex()
        '00aa'
        """
        return find(self.children, tag)

    def find_all(self, tag: int) -> list[Tlv]:
        """All descendants with ``tag``, depth-first."""
        return find_all(self.children, tag)

    def __repr__(self) -> str:
        info = tag_info(self.tag)
        tag = f"0x{encode_tag(self.tag).hex().upper()}"
        if self.constructed:
            return f"Tlv({tag}, children={self.children!r})"
        if info is not None and info.sensitive:
            return f"Tlv({tag}, <redacted {len(self.value)} bytes>)"
        return f"Tlv({tag}, {self.value.hex().upper()})"


# The slot descriptors of Tlv's fields: the decoder builds objects from already-validated parts
# through them, skipping __post_init__ and the frozen __setattr__.
_SET_TAG = Tlv.__dict__["tag"].__set__
_SET_VALUE = Tlv.__dict__["value"].__set__
_SET_CHILDREN = Tlv.__dict__["children"].__set__


# --------------------------------------------------------------------------- decode / encode


def _read_tag(data: bytes, pos: int, end: int) -> tuple[int, int]:
    start = pos
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        while True:
            if pos >= end:
                raise ApduFormatError("truncated multi-byte tag", pos)
            if pos - start >= _MAX_TAG_BYTES:
                raise ApduFormatError(f"tag longer than {_MAX_TAG_BYTES} bytes", start)
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
    return tag, pos


def _read_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise ApduFormatError("missing length field", pos)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x80:
        raise ApduFormatError("indefinite length (80) is not allowed", pos)
    n = first & 0x7F
    if n > 3:
        raise ApduFormatError(f"length field {first:02X} longer than 83 is not allowed", pos)
    if pos + 1 + n > end:
        raise ApduFormatError("truncated length field", end)
    return int.from_bytes(data[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def _decode(data: bytes, pos: int, end: int, depth: int) -> tuple[tuple[Tlv, ...], bool]:
    """The objects in ``data[pos:end]``, and whether those bytes are already their canonical encoding.

    Canonical means no padding and only minimal lengths (a decoded tag always re-encodes to
    the bytes it was read from), so a template whose content is canonical keeps its slice of
    ``data`` as its value instead of re-encoding its children.
    """
    if depth > MAX_DEPTH:
        raise ApduFormatError(f"templates nested deeper than {MAX_DEPTH} levels", pos)
    out: list[Tlv] = []
    append = out.append
    new, set_tag, set_value, set_children = object.__new__, _SET_TAG, _SET_VALUE, _SET_CHILDREN
    canonical = True
    while pos < end:
        first = data[pos]
        if first in _PADDING:
            pos += 1
            canonical = False
            continue
        start = pos
        if first & 0x1F != 0x1F:
            tag = first
            pos += 1
        else:
            tag, pos = _read_tag(data, pos, end)
        if pos < end and data[pos] < 0x80:
            length = data[pos]
            pos += 1
        else:
            length_at = pos
            length, pos = _read_length(data, pos, end)
            if pos - length_at != len(encode_length(length)):
                canonical = False
        stop = pos + length
        if stop > end:
            raise ApduFormatError(f"value of tag {tag:X} needs {length} bytes, only {end - pos} remain", end)
        if first & 0x20:
            children, inner_canonical = _decode(data, pos, stop, depth + 1)
            if inner_canonical:
                value = data[pos:stop]
            else:
                canonical = False
                value = b"".join(c.to_bytes() for c in children)
                if len(value) > _MAX_LENGTH:  # pragma: no cover - needs > 16 MB of input
                    raise ApduFormatError("re-encoded template longer than 16 MB", start)
        else:
            value = data[pos:stop]
            children = ()
        obj = new(Tlv)
        set_tag(obj, tag)
        set_value(obj, value)
        set_children(obj, children)
        append(obj)
        pos = stop
    return tuple(out), canonical


def decode(data: bytes) -> tuple[Tlv, ...]:
    """Decode concatenated BER-TLV objects (EMV 4.3 Book 3 Annex B).

    See the module docstring for the rules.

    Raises
    ------
    ApduFormatError
        With ``offset`` at the first byte that cannot be parsed.

    >>> decode(bytes.fromhex("00 9F3602007C FF"))
    (Tlv(0x9F36, 007C),)
    >>> decode(bytes.fromhex("9F3603007C"))
    Traceback (most recent call last):
    ...
    capsim.errors.ApduFormatError: value of tag 9F36 needs 3 bytes, only 2 remain (at offset 5)
    """
    data = _as_bytes("data", data)
    return _decode(data, 0, len(data), 0)[0]


def encode(tag: int, value: bytes) -> bytes:
    """Encode one object: tag, minimal length, value.

    ``value`` is taken as is, also for constructed tags.

    >>> encode(0x83, b"").hex().upper()
    '8300'
    >>> encode(0x9F17, b"\\x03").hex().upper()
    '9F170103'
    """
    value = _as_bytes("value", value)
    return encode_tag(tag) + encode_length(len(value)) + value


def encode_constructed(tag: int, parts: Iterable[bytes | Tlv]) -> bytes:
    """Encode a template around ``parts`` (encoded objects or :class:`Tlv`).

    Raises
    ------
    ValidationError
        When ``tag`` is not a constructed tag, or a part is neither bytes nor Tlv.

    >>> encode_constructed(0x77, [Tlv(0x9F27, b"\\x80"), encode(0x9F36, b"\\x00\\x01")]).hex().upper()
    '77099F2701809F36020001'
    """
    if not _is_constructed_tag(encode_tag(tag)[0]):
        raise ValidationError(f"tag must be a constructed tag for encode_constructed, got {tag:X}")
    chunks: list[bytes] = []
    for i, part in enumerate(parts):
        if isinstance(part, Tlv):
            chunks.append(part.to_bytes())
        else:
            chunks.append(_as_bytes(f"parts[{i}]", part))
    return encode(tag, b"".join(chunks))


# --------------------------------------------------------------------------- searching


def _roots(objs: Tlv | Iterable[Tlv]) -> list[Tlv]:
    if type(objs) is tuple:  # the common case (decode's result, children): skip the ABC checks
        roots = list(objs)
    elif isinstance(objs, Tlv):
        return [objs]
    elif isinstance(objs, bytes | bytearray | memoryview | str) or not isinstance(objs, Iterable):
        raise ValidationError(f"objs must be a Tlv or an iterable of Tlv, got {type(objs).__name__}")
    else:
        roots = list(objs)
    for o in roots:
        if not isinstance(o, Tlv):
            raise ValidationError("objs must be a Tlv or an iterable of Tlv")
    return roots


def walk(objs: Tlv | Iterable[Tlv]) -> Iterator[tuple[int, Tlv]]:
    """Yield ``(depth, obj)`` for every object, depth-first, parents before children.

    >>> [(d, f"{t.tag:X}") for d, t in walk(decode(bytes.fromhex("6F03840100")))]
    [(0, '6F'), (1, '84')]
    """
    stack: list[tuple[int, Tlv]] = [(0, t) for t in reversed(_roots(objs))]
    while stack:
        depth, obj = stack.pop()
        yield depth, obj
        stack.extend((depth + 1, c) for c in reversed(obj.children))


def find(objs: Tlv | Iterable[Tlv], tag: int) -> Tlv | None:
    """The first object with ``tag`` anywhere in ``objs`` (depth-first), or ``None``.

    >>> find(decode(bytes.fromhex("7003880101")), 0x88).value
    b'\\x01'
    """
    # walk()'s order without its generator: a stack of objects, children pushed in reverse.
    stack = _roots(objs)
    stack.reverse()
    while stack:
        obj = stack.pop()
        if obj.tag == tag:
            return obj
        if obj.children:
            stack.extend(reversed(obj.children))
    return None


def find_all(objs: Tlv | Iterable[Tlv], tag: int) -> list[Tlv]:
    """Every object with ``tag`` anywhere in ``objs``, depth-first.

    >>> [t.value.hex() for t in find_all(decode(bytes.fromhex("7006 4F01AA 4F01BB")), 0x4F)]
    ['aa', 'bb']
    """
    return [obj for _, obj in walk(objs) if obj.tag == tag]


# --------------------------------------------------------------------------- printing


def _ascii(value: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in value)


def format_tree(objs: Tlv | Iterable[Tlv], *, redact: bool = True) -> str:
    """A readable indented tree: tag, name, length and value (ASCII too for an/ans).

    Values of sensitive tags (:mod:`capsim.tags`) print as ``<redacted N bytes>`` unless
    ``redact=False``.

    >>> rec = decode(bytes.fromhex("70075A054658123456"))
    >>> print(format_tree(rec))
    70 READ RECORD Response Message Template (7 bytes)
      5A Application Primary Account Number (PAN) (5 bytes) <redacted 5 bytes>
    >>> print(format_tree(rec, redact=False).splitlines()[1])
      5A Application Primary Account Number (PAN) (5 bytes) 4658123456
    """
    lines: list[str] = []
    for depth, obj in walk(objs):
        info = tag_info(obj.tag)
        n = len(obj.value)
        head = (
            f"{'  ' * depth}{obj.tag_bytes.hex().upper()} {tag_name(obj.tag)} "
            f"({n} byte{'' if n == 1 else 's'})"
        )
        if obj.constructed:
            lines.append(head)
        elif redact and info is not None and info.sensitive:
            lines.append(f"{head} <redacted {n} bytes>")
        elif info is not None and info.fmt in (TagFormat.AN, TagFormat.ANS):
            lines.append(f'{head} {obj.value.hex().upper()} "{_ascii(obj.value)}"')
        else:
            lines.append(f"{head} {obj.value.hex().upper()}".rstrip())
    return "\n".join(lines)
