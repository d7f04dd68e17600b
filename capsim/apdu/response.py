"""Response APDUs (ISO/IEC 7816-4 §5.1): response data followed by the status word.

>>> r = ResponseApdu.from_bytes(bytes.fromhex("9F1701039000"))
>>> r.data.hex().upper(), f"{r.sw:04X}", r.ok
('9F170103', '9000', True)
>>> ResponseApdu(b"", 0x63C2).raise_for_status(0x20)
Traceback (most recent call last):
...
capsim.errors.PinError: wrong PIN, 2 tries left
"""

from __future__ import annotations

from dataclasses import dataclass

from capsim.apdu.sw import SW, describe_sw
from capsim.errors import (
    ApduFormatError,
    ConditionsNotSatisfiedError,
    PinBlockedError,
    PinError,
    StatusWordError,
    ValidationError,
)

__all__ = ["ResponseApdu", "status_error"]


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """An immutable response APDU (ISO/IEC 7816-4 §5.1).

    Parameters
    ----------
    data:
        The response data (may be empty).
    sw:
        The status word ``SW1 SW2`` as an int in 0x0000..0xFFFF.

    Raises
    ------
    ValidationError
        When ``data`` is not bytes or ``sw`` is out of range.
    """

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise ValidationError(f"data must be bytes, got {type(self.data).__name__}")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        sw = self.sw
        if isinstance(sw, bool) or not isinstance(sw, int) or not 0 <= sw <= 0xFFFF:
            raise ValidationError(f"sw must be an int in 0x0000..0xFFFF, got {sw!r}")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        """Split raw response bytes into data and status word.

        Raises
        ------
        ApduFormatError
            When ``raw`` is shorter than the 2-byte status word.

        >>> ResponseApdu.from_bytes(b"\\x6a\\x82")
        ResponseApdu(sw=6A82 file or application not found)
        """
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise ValidationError(f"raw must be bytes, got {type(raw).__name__}")
        raw = bytes(raw)
        if len(raw) < 2:
            raise ApduFormatError("response APDU shorter than its 2-byte status word", len(raw))
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))

    def to_bytes(self) -> bytes:
        """Data followed by ``SW1 SW2``.

        >>> ResponseApdu(b"\\x01", 0x9000).to_bytes().hex().upper()
        '019000'
        """
        return self.data + self.sw.to_bytes(2, "big")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @property
    def sw1(self) -> int:
        """The first status byte."""
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        """The second status byte."""
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        """True when the status word is exactly ``9000``."""
        return self.sw == SW.OK

    def raise_for_status(self, ins: int | None = None) -> None:
        """Return if the status word is ``9000``, else raise the matching error.

        ``63Cx`` raises :class:`~capsim.errors.PinError`, ``6983``/``6984``
        :class:`~capsim.errors.PinBlockedError`, ``6985``
        :class:`~capsim.errors.ConditionsNotSatisfiedError`, anything else
        :class:`~capsim.errors.StatusWordError` with ``sw`` and ``ins`` set.

        Parameters
        ----------
        ins:
            The INS of the command this answers, recorded on the error.
        """
        if not self.ok:
            raise status_error(self.sw, ins)

    def __repr__(self) -> str:
        head = f"data={self.data.hex().upper()}, " if self.data else ""
        return f"ResponseApdu({head}sw={self.sw:04X} {describe_sw(self.sw)})"


def status_error(sw: int, ins: int | None = None) -> StatusWordError:
    """The typed error for a non-``9000`` status word (not raised, returned).

    >>> type(status_error(0x6983)).__name__
    'PinBlockedError'
    >>> str(status_error(0x6A82, 0xA4))
    'card answered 6A82 (file or application not found) to INS A4'
    """
    if sw & 0xFFF0 == 0x63C0:
        return PinError(sw, ins)
    if sw in (SW.PIN_BLOCKED, SW.REFERENCE_DATA_INVALIDATED):
        return PinBlockedError(sw, ins)
    message = f"card answered {sw:04X} ({describe_sw(sw)})" + (
        f" to INS {ins:02X}" if ins is not None else ""
    )
    if sw == SW.CONDITIONS_NOT_SATISFIED:
        return ConditionsNotSatisfiedError(sw, ins, message)
    return StatusWordError(sw, ins, message)
