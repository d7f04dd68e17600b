"""Command APDUs (ISO/IEC 7816-4 §5.1, ISO/IEC 7816-3 §12.1).

A command APDU is a 4-byte header ``CLA INS P1 P2`` followed by an optional body. The four
cases of ISO 7816-4 are:

====  ============  ===============================================
case  body          short form / extended form
====  ============  ===============================================
1     none          ``CLA INS P1 P2``
2     Le            ``Le`` (1 byte) / ``00 Le1 Le2``
3     Lc, data      ``Lc data`` / ``00 Lc1 Lc2 data``
4     Lc, data, Le  ``Lc data Le`` / ``00 Lc1 Lc2 data Le1 Le2``
====  ============  ===============================================

``le`` is the maximum number of response bytes, 1..65536; Le 256 is the short byte ``00`` and
Le 65536 the extended ``0000``. ``le=None`` means no Le field. There is no ``le=0``: write
``le=256`` for the byte ``00``. The extended form is chosen automatically when the data are
longer than 255 bytes or Le is above 256, and may be forced with ``extended=True``.

>>> apdu = CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A0000000048002"), 256)
>>> apdu.to_bytes().hex().upper()
'00A4040007A000000004800200'
>>> apdu.case
4
>>> CommandApdu.from_bytes(apdu.to_bytes()) == apdu
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from capsim.errors import ApduFormatError, ValidationError

__all__ = ["CommandApdu"]

_MAX_SHORT_LC = 255
_MAX_SHORT_LE = 256
_MAX_EXT_LC = 65535
_MAX_EXT_LE = 65536


def _byte(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValidationError(f"{name} must be an int in 0..255, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """An immutable command APDU (ISO/IEC 7816-4 §5.1).

    Parameters
    ----------
    cla, ins, p1, p2:
        Header bytes, each an int in 0..255. INS values ``6x``/``9x`` are accepted although
        ISO 7816-3 forbids them under T=0.
    data:
        The command data (``Lc`` is its length), 0..65535 bytes.
    le:
        Expected response length 1..65536, or ``None`` for no Le field.
    extended:
        ``None`` chooses the form automatically; ``True``/``False`` forces it. After
        construction the attribute holds the form actually used (a ``bool``).

    Raises
    ------
    ValidationError
        On a field out of range, or a forced short form that cannot hold the data or Le.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _byte(name, getattr(self, name))
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise ValidationError(f"data must be bytes, got {type(self.data).__name__}")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > _MAX_EXT_LC:
            raise ValidationError(f"data must be at most {_MAX_EXT_LC} bytes, got {len(self.data)}")
        le = self.le
        if le is not None and (
            isinstance(le, bool) or not isinstance(le, int) or not 1 <= le <= _MAX_EXT_LE
        ):
            raise ValidationError(
                f"le must be None or an int in 1..{_MAX_EXT_LE} (256 encodes as 00), got {le!r}"
            )
        need_ext = len(self.data) > _MAX_SHORT_LC or (le is not None and le > _MAX_SHORT_LE)
        ext = self.extended
        if ext is None:
            ext = need_ext
        elif not isinstance(ext, bool):
            raise ValidationError(f"extended must be None, True or False, got {ext!r}")
        elif not ext and need_ext:
            raise ValidationError(
                "extended=False cannot hold data longer than 255 bytes or le above 256"
            )
        elif ext and not self.data and le is None:
            raise ValidationError("extended=True needs data or le: case 1 has no extended form")
        object.__setattr__(self, "extended", ext)

    @property
    def case(self) -> int:
        """The ISO 7816-4 case: 1 (no body), 2 (Le), 3 (data), 4 (data and Le)."""
        if self.data:
            return 3 if self.le is None else 4
        return 1 if self.le is None else 2

    def to_bytes(self) -> bytes:
        """Encode the APDU exactly as sent to the card.

        >>> CommandApdu(0x00, 0xB2, 0x01, 0x0C, le=256).to_bytes().hex().upper()
        '00B2010C00'
        >>> CommandApdu(0x00, 0xB0, 0x00, 0x00, le=65536).to_bytes().hex().upper()
        '00B00000000000'
        """
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        n = len(self.data)
        if self.extended:
            if n:
                out += b"\x00" + n.to_bytes(2, "big") + self.data
                if self.le is not None:
                    out += (self.le % _MAX_EXT_LE).to_bytes(2, "big")
            elif self.le is not None:
                out += b"\x00" + (self.le % _MAX_EXT_LE).to_bytes(2, "big")
        else:
            if n:
                out.append(n)
                out += self.data
            if self.le is not None:
                out.append(self.le % _MAX_SHORT_LE)
        return bytes(out)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __len__(self) -> int:
        """Length of the encoded APDU."""
        n = len(self.data)
        if self.extended:
            return 4 + (3 + n if n else 0) + (0 if self.le is None else (2 if n else 3))
        return 4 + (1 + n if n else 0) + (0 if self.le is None else 1)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        """Decode an APDU (ISO/IEC 7816-3 §12.1.3 decoding of the body).

        Raises
        ------
        ApduFormatError
            When ``raw`` is not a well-formed APDU; ``offset`` is the first byte that does
            not fit.

        >>> CommandApdu.from_bytes(bytes.fromhex("0020008008241234FFFFFFFFFF")).case
        3
        >>> CommandApdu.from_bytes(b"\\x00\\xa4")
        Traceback (most recent call last):
        ...
        capsim.errors.ApduFormatError: command APDU shorter than its 4-byte header (at offset 2)
        """
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise ValidationError(f"raw must be bytes, got {type(raw).__name__}")
        raw = bytes(raw)
        if len(raw) < 4:
            raise ApduFormatError("command APDU shorter than its 4-byte header", len(raw))
        body = len(raw) - 4
        if body == 0:
            return cls._decoded(raw, b"", None, False)
        if body == 1:
            return cls._decoded(raw, b"", raw[4] or _MAX_SHORT_LE, False)
        if raw[4] != 0:
            lc = raw[4]
            if body == 1 + lc:
                return cls._decoded(raw, raw[5:], None, False)
            if body == 2 + lc:
                return cls._decoded(raw, raw[5:-1], raw[-1] or _MAX_SHORT_LE, False)
            raise ApduFormatError(
                f"short Lc {lc} does not match the {body - 1} bytes that follow it",
                len(raw) if body < 1 + lc else 6 + lc,
            )
        # First body byte 00 and more than one body byte: extended length fields.
        if body == 2:
            raise ApduFormatError("truncated extended length field", 6)
        if body == 3:
            le = int.from_bytes(raw[5:7], "big") or _MAX_EXT_LE
            return cls._decoded(raw, b"", le, True)
        lc = int.from_bytes(raw[5:7], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of 0 followed by more bytes", 5)
        if body == 3 + lc:
            return cls._decoded(raw, raw[7:], None, True)
        if body == 5 + lc:
            le = int.from_bytes(raw[-2:], "big") or _MAX_EXT_LE
            return cls._decoded(raw, raw[7:-2], le, True)
        raise ApduFormatError(
            f"extended Lc {lc} does not match the {body - 3} bytes that follow it",
            len(raw) if body < 3 + lc else (7 + lc if body == 4 + lc else 9 + lc),
        )

    @classmethod
    def _decoded(cls, raw: bytes, data: bytes, le: int | None, extended: bool) -> Self:
        """The APDU :meth:`from_bytes` decoded from ``raw``: its fields are in range and
        consistent by construction, so ``__post_init__``'s checks are not repeated (a card
        parses every command it gets)."""
        apdu = object.__new__(cls)
        put = object.__setattr__
        put(apdu, "cla", raw[0])
        put(apdu, "ins", raw[1])
        put(apdu, "p1", raw[2])
        put(apdu, "p2", raw[3])
        put(apdu, "data", data)
        put(apdu, "le", le)
        put(apdu, "extended", extended)
        return apdu

    def replace_le(self, le: int | None) -> CommandApdu:
        """A copy with another Le (same form unless the new Le needs the extended one).

        >>> CommandApdu(0x80, 0xCA, 0x9F, 0x17, le=256).replace_le(4).to_bytes().hex().upper()
        '80CA9F1704'
        """
        # Keep a forced extended form, except where it cannot apply (a case 1 result);
        # a short APDU switches to extended only when the new Le needs it.
        ext: bool | None = self.extended
        if not ext or (not self.data and le is None):
            ext = None
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.data, le, extended=ext)

    def __repr__(self) -> str:
        parts = [
            f"cla=0x{self.cla:02X}",
            f"ins=0x{self.ins:02X}",
            f"p1=0x{self.p1:02X}",
            f"p2=0x{self.p2:02X}",
        ]
        if self.data:
            parts.append(f"data={self.data.hex().upper()}")
        if self.le is not None:
            parts.append(f"le={self.le}")
        if self.extended:
            parts.append("extended=True")
        return f"CommandApdu({', '.join(parts)})"
