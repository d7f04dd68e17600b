"""The card-OS contract and a lean ISO 7816-4 command dispatcher.

Theory of operation
-------------------
1. A card is anything with ``atr``, ``power_on()``, ``power_off()``, ``reset()`` and
   ``process(apdu) -> bytes`` (:class:`CardOS`). ``process`` never raises: every outcome,
   including garbage input, is an R-APDU of at least two bytes ending in a status word.
2. :func:`parse_command` decodes a C-APDU with the APDU layer's one parser
   (:meth:`capsim.apdu.command.CommandApdu.from_bytes`) and keeps short ones (ISO 7816-4
   cases 1-4). Bytes that are no APDU, and extended APDUs, raise :class:`StatusError`
   (``6700``).
3. Handlers raise the private :class:`StatusError` for every non-``9000`` answer; only the
   dispatcher turns it into an R-APDU (architecture.md §10 rule 3).
4. The :class:`Dispatcher` maps ``(CLA, INS)`` to a handler and the set of phases in which it
   is allowed (cap-protocol.md §9.3): unknown INS gives ``6D00``, a known INS with an unknown
   class gives ``6E00``, a phase outside the set gives ``6985``.
5. An Le shorter than the data answers ``6Cxx`` with the exact length (ISO 7816-3 T=0 style
   "wrong Le"); Le ``00`` or an absent Le accepts any length up to 256 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from capsim.apdu.command import CommandApdu
from capsim.apdu.sw import SW
from capsim.errors import ApduFormatError

__all__ = ["CardOS", "ClosableCard", "Command", "Dispatcher", "Handler", "StatusError", "parse_command"]

SW_OK = b"\x90\x00"


@runtime_checkable
class CardOS(Protocol):
    """The five-method contract every emulated card offers (architecture.md §3)."""

    @property
    def atr(self) -> bytes:
        """The answer to reset."""
        ...

    def power_on(self) -> bytes:
        """Cold reset: clear volatile state and return the ATR."""
        ...

    def reset(self) -> bytes:
        """Warm reset: clear volatile state and return the ATR."""
        ...

    def power_off(self) -> None:
        """Remove power: the volatile state is lost."""
        ...

    def process(self, apdu: bytes) -> bytes:
        """Answer one C-APDU with an R-APDU (data and SW). Never raises."""
        ...


class ClosableCard:
    """An emulated card that may hold a resource (its card file's lock): :meth:`close` releases
    it once, and the card is a context manager. Subclasses set ``_on_close`` and ``_closed``."""

    _on_close: Callable[[], None] | None
    _closed: bool

    def close(self) -> None:
        """Release resources (a card file's lock). Idempotent."""
        if not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StatusError(Exception):
    """A handler's non-``9000`` answer; it never leaves :meth:`Dispatcher.dispatch`.

    Parameters
    ----------
    sw:
        The status word, for example ``0x6985``.
    data:
        Response data sent with the status word (``6283`` carries the FCI).
    """

    def __init__(self, sw: int, data: bytes = b"") -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw
        self.data = data


class Command(CommandApdu):
    """One parsed short C-APDU: a :class:`~capsim.apdu.command.CommandApdu` whose ``repr``
    leaves the data out (a VERIFY carries the PIN block, a script the new PIN).

    ``le`` is ``None`` when absent and 256 for an encoded ``00``; ``len(data)`` is Lc.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        le = "" if self.le is None else f", le={self.le}"
        return (
            f"Command(cla=0x{self.cla:02X}, ins=0x{self.ins:02X}, p1=0x{self.p1:02X}, "
            f"p2=0x{self.p2:02X}, lc={len(self.data)}{le})"
        )


def parse_command(apdu: bytes) -> Command:
    """Parse a short C-APDU (ISO 7816-4 §5.1, cases 1 to 4) with the APDU layer's decoder.

    Raises
    ------
    StatusError
        ``6700`` when the bytes are no APDU (:meth:`CommandApdu.from_bytes` refuses them: too
        short, Lc inconsistent) or an extended one, which this card does not support.

    Examples
    --------
    >>> c = parse_command(bytes.fromhex("00A4040002A0B100"))
    >>> (hex(c.ins), c.data.hex(), c.le)
    ('0xa4', 'a0b1', 256)
    >>> c
    Command(cla=0x00, ins=0xA4, p1=0x04, p2=0x00, lc=2, le=256)
    """
    try:
        cmd = Command.from_bytes(apdu)
    except ApduFormatError:
        raise StatusError(SW.WRONG_LENGTH) from None
    if cmd.extended:
        raise StatusError(SW.WRONG_LENGTH)
    return cmd


Handler = Callable[[Command], bytes]


class Dispatcher:
    """``(CLA, INS)`` → handler table with a phase guard (cap-protocol.md §9.3).

    Parameters
    ----------
    routes:
        ``(cla, ins) -> (handler, allowed_phases)``. ``allowed_phases`` is any container of
        phase values; the current phase comes from ``phase()``.
    phase:
        Returns the card's current phase.

    Examples
    --------
    >>> d = Dispatcher({(0x00, 0x84): (lambda c: b"\\x01\\x02", {1})}, phase=lambda: 1)
    >>> d.dispatch(bytes.fromhex("0084000002")).hex()
    '01029000'
    >>> d.dispatch(bytes.fromhex("00CA000000")).hex(), d.dispatch(bytes.fromhex("B0840000")).hex()
    ('6d00', '6e00')
    """

    def __init__(
        self,
        routes: Mapping[tuple[int, int], tuple[Handler, Iterable[object]]],
        *,
        phase: Callable[[], object],
    ) -> None:
        self._routes: dict[tuple[int, int], tuple[Handler, frozenset[object]]] = {
            key: (handler, frozenset(phases)) for key, (handler, phases) in routes.items()
        }
        self._known_ins = frozenset(ins for _, ins in self._routes)
        self._phase = phase

    def route(self, cmd: Command) -> bytes:
        """The handler's data for a parsed command (rule 4); every refusal is a
        :class:`StatusError`. A card with its own answer rules (response chaining) calls this."""
        found = self._routes.get((cmd.cla, cmd.ins))
        if found is None:
            if cmd.ins not in self._known_ins:
                raise StatusError(SW.INS_NOT_SUPPORTED)
            raise StatusError(SW.CLA_NOT_SUPPORTED)
        handler, phases = found
        if self._phase() not in phases:
            raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
        return handler(cmd)

    def dispatch(self, apdu: bytes) -> bytes:
        """Run one C-APDU through the table; :class:`StatusError` becomes an R-APDU, and an Le
        shorter than the data answers ``6Cxx`` (rule 5).

        Other exceptions propagate: the card wraps this call and maps them to ``6F00``.
        """
        try:
            cmd = parse_command(apdu)
            data = self.route(cmd)
        except StatusError as exc:
            return exc.data + exc.sw.to_bytes(2, "big")
        le = cmd.le
        if le is not None and le < len(data):
            return b"\x6c" + bytes([len(data) & 0xFF])
        return data + SW_OK
