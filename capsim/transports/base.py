"""The transport contract and two decorators: tracing (with redaction) and T=0 continuation.

A transport moves raw APDUs between a reader and a card (architecture.md §6):
``connect() -> ATR``, ``transmit(command) -> response`` with the status word included,
``disconnect()``, and ``resolves_t0``, which says whether its answers may still carry T=0
``61xx``/``6Cxx`` status words; every transport is also a context manager that connects on
entry and disconnects on exit. :class:`Transport` is a structural :class:`typing.Protocol`, so a
third party can add one without importing capsim internals (:class:`TransportBase` gives the
context manager and ``resolves_t0 = False``).

Decorators wrap any transport and are transports themselves:

* :class:`TracingTransport` records and logs every exchange. By default it **redacts** the
  VERIFY PIN block, the PAN and track data (``5A``, ``57``, ``9F6B``, ``5F20``) and the
  data of issuer-script commands (enciphered PINs, keys); ``redact=False`` turns that off.
  The rules are :mod:`capsim.apdu.redact`'s (re-exported here).
* :class:`T0Handling` answers ``61xx`` with GET RESPONSE and ``6Cxx`` by re-sending with
  the right Le (cap-protocol.md §2 step 8, :func:`capsim.apdu.t0.transmit_with_t0`), so a
  reader session never sees those SWs.

``resolves_t0`` is true on :class:`T0Handling` and on the PC/SC transport (which resolves T=0
inside ``transmit``); :class:`TracingTransport` passes on its inner transport's. A reader adds
T=0 handling only over a transport whose ``resolves_t0`` is false, so no link resolves T=0
twice.

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
from typing import Protocol, Self, runtime_checkable

from capsim.apdu.describe import describe_command, describe_exchange
from capsim.apdu.redact import REDACTED_BYTE, SENSITIVE_TAGS, redact_command, redact_response
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

    @property
    def resolves_t0(self) -> bool:
        """True when :meth:`transmit` never returns ``61xx``/``6Cxx``: the transport continues
        T=0 exchanges itself (then a reader adds no T=0 handling of its own)."""
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

    @property
    def resolves_t0(self) -> bool:
        """False: answers may carry T=0 ``61xx``/``6Cxx`` (override where ``transmit`` resolves them)."""
        return False

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
    decode:
        Also give the sink each exchange decoded (:func:`capsim.apdu.describe.describe_exchange`:
        the instruction's name, the status word's meaning, the answer as a TLV tree), indented
        below the same ``>``/``<`` lines.

    Attributes
    ----------
    exchanges:
        ``(command, response)`` pairs in order, redacted like the log.
    atr:
        The ATR from the last :meth:`connect`.
    """

    def __init__(
        self,
        inner: Transport,
        *,
        redact: bool = True,
        sink: Callable[[str], None] | None = None,
        decode: bool = False,
    ) -> None:
        self.inner = inner
        self.redact = redact
        self.sink = sink
        self.decode = decode
        self.exchanges: list[tuple[bytes, bytes]] = []
        self.atr: bytes | None = None

    @property
    def resolves_t0(self) -> bool:
        """True when ``inner`` resolves T=0 ``61xx``/``6Cxx`` itself (then so does this tracer)."""
        return self.inner.resolves_t0

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
        decoded = emit and self.decode
        if decoded:
            for line in describe_command(apdu, redact=self.redact):
                self._emit(line)
        elif emit:
            self._emit(f"> {shown_cmd.hex().upper()}")
        response = self.inner.transmit(apdu)
        shown_rsp = redact_response(response) if self.redact else response
        if decoded:
            for line in describe_exchange(apdu, response, redact=self.redact)[2:]:
                self._emit(line)
        elif emit:
            self._emit(f"< {shown_rsp.hex().upper()}")
        self.exchanges.append((shown_cmd, shown_rsp))
        return response

    def disconnect(self) -> None:
        self.inner.disconnect()

    def save(self, path: str, *, source: str, meta: dict[str, str] | None = None) -> None:
        """Write the recorded exchanges as a replayable transcript (:mod:`capsim.transcript`)."""
        from capsim.transcript import write_transcript  # only a recorded session needs it

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

    def __init__(self, inner: Transport, *, max_get_response: int = 32) -> None:
        self.inner = inner
        self.max_get_response = max_get_response

    @property
    def resolves_t0(self) -> bool:
        """True: answers never carry ``61xx``/``6Cxx`` (see the module docstring)."""
        return True

    def connect(self) -> bytes:
        return self.inner.connect()

    def transmit(self, apdu: bytes) -> bytes:
        return transmit_with_t0(self.inner.transmit, apdu, max_get_response=self.max_get_response)

    def disconnect(self) -> None:
        self.inner.disconnect()
