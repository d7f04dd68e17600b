"""The card-OS contract and a lean ISO 7816-4 command dispatcher.

Theory of operation
-------------------
1. A card is anything with ``atr``, ``power_on()``, ``power_off()``, ``reset()`` and
   ``process(apdu) -> bytes`` (:class:`CardOS`). ``process`` never raises: every outcome,
   including garbage input, is an R-APDU of at least two bytes ending in a status word.
2. :func:`parse_command` splits a short C-APDU (ISO 7816-4 cases 1-4) into header, data and
   Le. Bytes that are no valid short APDU raise :class:`StatusError` (``6700``).
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
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from capsim.apdu.sw import SW

__all__ = ["CardOS", "Command", "Dispatcher", "Handler", "StatusError", "parse_command"]

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


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed short C-APDU.

    ``lc`` is ``len(data)``; ``le`` is ``None`` when absent and 256 for an encoded ``00``.
    ``repr`` leaves the data out (a VERIFY carries the PIN block, a script the new PIN).
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = field(repr=False)
    le: int | None


def parse_command(apdu: bytes) -> Command:
    """Parse a short C-APDU (ISO 7816-4 §5.1, cases 1 to 4).

    Raises
    ------
    StatusError
        ``6700`` when the bytes are not a short APDU (too short, Lc inconsistent, extended).

    Examples
    --------
    >>> c = parse_command(bytes.fromhex("00A4040002A0B100"))
    >>> (hex(c.ins), c.data.hex(), c.le)
    ('0xa4', 'a0b1', 256)
    """
    n = len(apdu)
    if n < 4:
        raise StatusError(SW.WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    if n == 4:
        return Command(cla, ins, p1, p2, b"", None)
    if n == 5:
        return Command(cla, ins, p1, p2, b"", apdu[4] or 256)
    lc = apdu[4]
    if lc == 0:  # extended length encoding: not supported by this card
        raise StatusError(SW.WRONG_LENGTH)
    if n == 5 + lc:
        return Command(cla, ins, p1, p2, apdu[5:], None)
    if n == 6 + lc:
        return Command(cla, ins, p1, p2, apdu[5 : 5 + lc], apdu[-1] or 256)
    raise StatusError(SW.WRONG_LENGTH)


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

    def dispatch(self, apdu: bytes) -> bytes:
        """Run one C-APDU through the table; :class:`StatusError` becomes an R-APDU.

        Other exceptions propagate: the card wraps this call and maps them to ``6F00``.
        """
        try:
            cmd = parse_command(apdu)
            route = self._routes.get((cmd.cla, cmd.ins))
            if route is None:
                if cmd.ins not in self._known_ins:
                    raise StatusError(SW.INS_NOT_SUPPORTED)
                raise StatusError(SW.CLA_NOT_SUPPORTED)
            handler, phases = route
            if self._phase() not in phases:
                raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
            data = handler(cmd)
        except StatusError as exc:
            return exc.data + exc.sw.to_bytes(2, "big")
        le = cmd.le
        if le is not None and le < len(data):
            return b"\x6c" + bytes([len(data) & 0xFF])
        return data + SW_OK
