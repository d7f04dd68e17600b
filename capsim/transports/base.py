"""The transport contract and two decorators: tracing (with redaction) and T=0 continuation.

A transport moves raw APDUs between a reader and a card (architecture.md §6):
``connect() -> ATR``, ``transmit(command) -> response`` with the status word included, and
``disconnect()``; every transport is also a context manager that connects on entry and
disconnects on exit. :class:`Transport` is a structural :class:`typing.Protocol`, so a third
party can add one without importing capsim internals.

Decorators wrap any transport and are transports themselves:

* :class:`TracingTransport` records and logs every exchange. By default it **redacts** the
  VERIFY PIN block, the PAN and track data (``5A``, ``57``, ``9F6B``, ``5F20``) and the
  data of issuer-script commands (enciphered PINs, keys); ``redact=False`` turns that off.
* :class:`T0Handling` answers ``61xx`` with GET RESPONSE and ``6Cxx`` by re-sending with
  the right Le (cap-protocol.md §2 step 8), so a reader session never sees those SWs.

A transport whose answers never carry ``61xx``/``6Cxx`` (it resolves them itself) says so with
a true ``resolves_t0`` attribute: :class:`T0Handling` has it, :class:`TracingTransport` passes
on its inner transport's, and :class:`capsim.reader.CapReader` wraps only transports without
it, so no link resolves T=0 twice.

>>> redact_command(bytes.fromhex("0020008008241234FFFFFFFFFF")).hex().upper()
'0020008008FFFFFFFFFFFFFFFF'
>>> redact_response(bytes.fromhex("70055A03123456" "9000")).hex().upper()
'70055A03FFFFFF9000'
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

from capsim.apdu.t0 import transmit_with_t0

__all__ = [
    "REDACTED_BYTE",
    "SENSITIVE_TAGS",
    "T0Handling",
    "TracingTransport",
    "Transport",
    "TransportBase",
    "redact_command",
    "redact_response",
]

_log = logging.getLogger(__name__)

#: Tags whose values are replaced in traces: PAN, track 2, track 2 (contactless), cardholder name.
SENSITIVE_TAGS: Final = frozenset({0x5A, 0x57, 0x9F6B, 0x5F20, 0x9F1F, 0x56})

_T0_SW1: Final = (0x61, 0x6C)  # 61xx more data, 6Cxx wrong Le

#: Every redacted byte becomes this value (a PIN block of all ``FF`` is never a valid block).
REDACTED_BYTE: Final = 0xFF


@runtime_checkable
class Transport(Protocol):
    """What a reader needs from a link to a card (architecture.md §3, §6)."""

    def connect(self) -> bytes:
        """Power the card up (or connect to it) and return its ATR."""
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU and return the response, status word included."""
        ...

    def disconnect(self) -> None:
        """Release the card."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class TransportBase(ABC):
    """Base giving a transport its context-manager behaviour (connect on entry)."""

    @abstractmethod
    def connect(self) -> bytes:
        """Power the card up (or reach it) and return its ATR."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the card."""

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()


# --------------------------------------------------------------------------------------------
# Redaction


def _sensitive_spans(data: bytes) -> list[tuple[int, int]]:
    """Value spans of sensitive tags in a BER-TLV byte string (tolerant: stops at bad data)."""
    spans: list[tuple[int, int]] = []

    def scan(start: int, end: int, depth: int) -> None:
        i = start
        while i < end and depth < 8:
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
    """``response`` with the values of :data:`SENSITIVE_TAGS` overwritten by ``FF`` bytes."""
    if len(response) < 2:
        return response
    body = bytearray(response[:-2])
    for a, b in _sensitive_spans(bytes(body)):
        body[a:b] = bytes([REDACTED_BYTE]) * (b - a)
    return bytes(body) + response[-2:]


def redact_command(command: bytes) -> bytes:
    """``command`` with the VERIFY PIN block and issuer-script data overwritten by ``FF`` bytes."""
    if len(command) < 6:
        return command
    cla, ins = command[0], command[1]
    if ins == 0x20 or (cla & 0x0C and ins in (0x24, 0xDA, 0xDC)):
        lc = command[4]
        end = min(len(command), 5 + lc)
        return command[:5] + bytes([REDACTED_BYTE]) * (end - 5) + command[end:]
    return command


# --------------------------------------------------------------------------------------------
# Decorators


class TracingTransport(TransportBase):
    """Records and logs every exchange of ``inner`` (redacted unless ``redact=False``).

    Parameters
    ----------
    inner:
        The transport to trace.
    redact:
        Overwrite PIN blocks, PAN/track data and script data in records and logs (default).
    sink:
        Optional callable receiving one formatted line per APDU (``"> 00A4…"``/``"< 6F…"``);
        the CLI's ``--trace`` prints them.

    Attributes
    ----------
    exchanges:
        ``(command, response)`` pairs in order, redacted like the log.
    atr:
        The ATR from the last :meth:`connect`.
    """

    def __init__(
        self, inner: Transport, *, redact: bool = True, sink: Callable[[str], None] | None = None
    ) -> None:
        self.inner = inner
        self.redact = redact
        self.sink = sink
        self.exchanges: list[tuple[bytes, bytes]] = []
        self.atr: bytes | None = None

    @property
    def resolves_t0(self) -> bool:
        """True when ``inner`` resolves T=0 ``61xx``/``6Cxx`` itself (then so does this tracer)."""
        return getattr(self.inner, "resolves_t0", False) is True

    def _emit(self, line: str) -> None:
        _log.debug("%s", line)
        if self.sink is not None:
            self.sink(line)

    def connect(self) -> bytes:
        self.atr = self.inner.connect()
        self._emit(f"ATR {self.atr.hex().upper()}")
        return self.atr

    def transmit(self, apdu: bytes) -> bytes:
        shown_cmd = redact_command(apdu) if self.redact else apdu
        # lines are formatted only for someone who reads them (a sink or the debug log)
        emit = self.sink is not None or _log.isEnabledFor(logging.DEBUG)
        if emit:
            self._emit(f"> {shown_cmd.hex().upper()}")
        response = self.inner.transmit(apdu)
        shown_rsp = redact_response(response) if self.redact else response
        if emit:
            self._emit(f"< {shown_rsp.hex().upper()}")
        self.exchanges.append((shown_cmd, shown_rsp))
        return response

    def disconnect(self) -> None:
        self.inner.disconnect()

    def save(self, path: str, *, source: str, meta: dict[str, str] | None = None) -> None:
        """Write the recorded exchanges as a replayable transcript (see :mod:`capsim.transports.replay`)."""
        from capsim.transports.replay import write_transcript

        write_transcript(path, self.exchanges, atr=self.atr, source=source, meta=meta)


class T0Handling(TransportBase):
    """Resolves T=0 ``61xx``/``6Cxx`` status words for ``inner`` (cap-protocol.md §2 step 8).

    Parameters
    ----------
    inner:
        The transport to wrap.
    max_get_response:
        Bound on chained GET RESPONSE commands (a card answering ``61xx`` forever cannot hang
        the reader: :class:`~capsim.errors.RemoteProtocolError`).

    Examples
    --------
    >>> answers = {"80CA9F1700": "6C04", "80CA9F1704": "9F1701039000", "00B2010C00": "6A83"}
    >>> class Scripted(TransportBase):
    ...     def connect(self) -> bytes:
    ...         return b""
    ...     def disconnect(self) -> None:
    ...         pass
    ...     def transmit(self, apdu: bytes) -> bytes:
    ...         return bytes.fromhex(answers[apdu.hex().upper()])
    >>> link = T0Handling(Scripted())
    >>> link.transmit(bytes.fromhex("80CA9F1700")).hex().upper()  # 6C04: re-sent with Le 04
    '9F1701039000'
    >>> link.transmit(bytes.fromhex("00B2010C00")).hex().upper()  # a final answer, as it is
    '6A83'
    >>> link.resolves_t0, TracingTransport(link).resolves_t0, TracingTransport(Scripted()).resolves_t0
    (True, True, False)
    """

    #: Answers never carry ``61xx``/``6Cxx`` (see the module docstring).
    resolves_t0: Final = True

    def __init__(self, inner: Transport, *, max_get_response: int = 32) -> None:
        self.inner = inner
        self.max_get_response = max_get_response

    def connect(self) -> bytes:
        return self.inner.connect()

    def transmit(self, apdu: bytes) -> bytes:
        limit = self.max_get_response
        send = self.inner.transmit
        if type(apdu) is bytes and type(limit) is int and limit >= 0:
            # The common case in one call: an answer that needs no continuation is returned
            # as is (exactly what the T=0 exchange would return); any other answer is handed
            # to the exchange as the answer to its first command.
            first = send(apdu)
            if type(first) is bytes and len(first) >= 2 and first[-2] not in _T0_SW1:
                return first
            answers = [first]

            def replay_first(command: bytes) -> bytes:
                return answers.pop() if answers else send(command)

            return transmit_with_t0(replay_first, apdu, max_get_response=limit)
        return transmit_with_t0(send, apdu, max_get_response=limit)

    def disconnect(self) -> None:
        self.inner.disconnect()
