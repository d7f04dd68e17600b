"""The PC/SC transport: real and virtual readers through pcscd and pyscard.

Card sessions use pyscard's ``smartcard.scard`` layer (the PC/SC calls themselves, with their
result codes and the module-level protocol constants). The transport converts pyscard's
``list[int]`` into capsim's ``bytes`` (data ‖ SW), handles T=0 continuation (``61xx`` → GET
RESPONSE, ``6Cxx`` → re-send with the right Le) with :func:`capsim.apdu.t0.transmit_with_t0`,
and raises only :class:`capsim.errors.TransportError` subclasses (``pcsc.md`` §3, §5;
``architecture.md`` §6).

With :mod:`capsim.transports.pcsc_errors` (every pyscard exception and PC/SC result code mapped
onto a capsim error) and :mod:`capsim.transports.pcsc_readers` (listing and choosing readers,
their states, waiting for a card), this is the only code that speaks pyscard (≥ 2.3, the
optional ``pcsc`` extra: ``pip install 'capsim[pcsc]'``); their public names are re-exported
here.

A card that never answers blocks ``SCardTransmit`` forever (vpcd has no timeout), so every
blocking PC/SC call runs on a worker thread and the caller waits at most ``timeout``
seconds (:class:`capsim.errors.TransportTimeoutError`).

Readers are chosen by exact name, by a unique substring, or by their index in pcscd's list
(:func:`resolve_reader`; ``capsim readers`` prints the indexes). Indexes change when devices
are plugged in, names do not. :func:`reader_states` reads each reader's card presence and ATR
without connecting (``SCardGetStatusChange``), and a transport created with ``wait=SECONDS``
waits that long for a card to be inserted before connecting
(:class:`capsim.errors.CardWaitTimeoutError` when none comes).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, TypeVar

from capsim.apdu.t0 import transmit_with_t0
from capsim.errors import (
    CardRemovedError,
    CardWaitTimeoutError,
    TransportError,
    TransportTimeoutError,
    ValidationError,
)
from capsim.transports.pcsc_errors import hresult_error, import_scard, map_pyscard_error
from capsim.transports.pcsc_readers import (
    ReaderState,
    list_readers,
    reader_names,
    reader_states,
    resolve_reader,
    wait_for_card,
)

__all__ = [
    "PcscTransport",
    "ReaderState",
    "list_readers",
    "map_pyscard_error",
    "reader_states",
    "resolve_reader",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Worker:
    """One daemon thread that runs the blocking PC/SC calls of one transport.

    Requests and results travel through two C-implemented ``SimpleQueue`` objects: the
    hand-off costs a few microseconds, and the caller's wait is bounded by ``timeout``. A
    transport abandons its worker after a timeout, so a late result is never mistaken
    for the answer to a later call.
    """

    def __init__(self, name: str) -> None:
        self._requests: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        requests, results = self._requests, self._results
        while True:
            func = requests.get()
            if func is None:
                return
            try:
                results.put((True, func()))
            except BaseException as exc:  # handed to the waiting caller
                results.put((False, exc))

    def call(self, func: Callable[[], T], timeout: float | None) -> T:
        self._requests.put(func)
        try:
            ok, value = self._results.get(timeout=timeout)
        except queue.Empty:
            raise TransportTimeoutError(f"the card did not answer within {timeout} s") from None
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def submit(self, func: Callable[[], object]) -> None:
        """Queue ``func`` without waiting (it runs after any call still blocked)."""
        self._requests.put(func)

    def close(self) -> None:
        self._requests.put(None)


class PcscTransport:
    """A card in a PC/SC reader, as a capsim Transport (``architecture.md`` §6).

    Parameters
    ----------
    reader:
        Exact reader name, a unique substring of it, or its index in pcscd's list (see
        :func:`resolve_reader`); resolved when :meth:`connect` runs.
    timeout:
        Seconds to wait for any one PC/SC operation (connect, one APDU exchange including
        its T=0 continuation, disconnect). ``None`` waits forever.
    wait:
        Seconds :meth:`connect` waits for a card to be inserted in the reader
        (:class:`~capsim.errors.CardWaitTimeoutError` when none comes); ``None`` (default):
        no card is :class:`~capsim.errors.NoCardError` at once.

    Examples
    --------
    ::

        with PcscTransport("ACR39") as t:      # connect() on enter, disconnect() on exit
            rapdu = t.transmit(bytes.fromhex("00A404000E315041592E5359532E444446303100"))
    """

    #: Answers never carry ``61xx``/``6Cxx``: the T=0 continuation runs inside :meth:`transmit`.
    resolves_t0: Final = True

    def __init__(
        self, reader: str | int, *, timeout: float | None = 10.0, wait: float | None = None
    ) -> None:
        if isinstance(reader, bool) or not (
            (isinstance(reader, int) and reader >= 0) or (isinstance(reader, str) and reader.strip())
        ):
            raise ValidationError(
                f"reader: expected a reader name, a part of one or an index, got {reader!r}"
            )
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValidationError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0):
            raise ValidationError(f"wait: expected a number of seconds >= 0 or None, got {wait!r}")
        self._wanted = reader
        self._wait = wait
        self._timeout = timeout
        self._name: str | None = None
        self._conn: _Session | None = None
        self._worker: _Worker | None = None
        self._atr = b""
        self._protocol: str | None = None
        self._broken = False

    # -- properties -----------------------------------------------------------------

    @property
    def reader_name(self) -> str | None:
        """The full name of the reader in use (``None`` before :meth:`connect`)."""
        return self._name

    @property
    def atr(self) -> bytes:
        """The card's ATR (empty before :meth:`connect`)."""
        return self._atr

    @property
    def protocol(self) -> str | None:
        """The protocol pcscd negotiated: ``"T=0"`` or ``"T=1"``."""
        return self._protocol

    @property
    def connected(self) -> bool:
        """Whether a card session is open."""
        return self._conn is not None

    # -- Transport protocol ---------------------------------------------------------

    def connect(self) -> bytes:
        """Resolve the reader, power the card and open a session; returns the ATR.

        Raises
        ------
        PcscUnavailableError, ReaderNotFoundError, ReaderAmbiguousError, NoCardError,
        TransportTimeoutError, TransportError
        """
        if self._conn is not None:
            self.disconnect()
        timeout = self._timeout
        worker = _Worker(f"capsim-pcsc-{self._wanted}") if timeout is not None else None
        try:
            if worker is None or timeout is None:
                conn, name, atr, protocol = self._open()
            else:  # a wait for the card extends the bound of this one call
                conn, name, atr, protocol = worker.call(self._open, timeout + (self._wait or 0))
        except TransportTimeoutError as exc:
            if worker is not None:
                worker.close()
            if isinstance(exc, CardWaitTimeoutError):
                raise
            raise TransportTimeoutError(f"connecting to the card in {self._wanted!r} timed out") from None
        except BaseException:
            if worker is not None:
                worker.close()
            raise
        self._worker = worker
        self._conn = conn
        self._name = name
        self._atr = atr
        self._protocol = protocol
        self._broken = False
        logger.debug("connected to %r (%s, ATR %s)", name, protocol, atr.hex().upper())
        return atr

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; returns the response data ‖ SW1 SW2.

        ``61xx`` and ``6Cxx`` are resolved here (GET RESPONSE, re-send with Le = xx), so
        the caller sees the final response.

        Raises
        ------
        CardRemovedError
            The card was removed or reset (the session is then closed: call
            :meth:`connect` again).
        TransportTimeoutError
            No answer within ``timeout`` (the session is abandoned).
        """
        if not isinstance(apdu, bytes | bytearray) or len(apdu) < 4:
            raise ValidationError(f"apdu: expected at least 4 bytes (CLA INS P1 P2), got {apdu!r:.40}")
        conn, worker = self._session()
        raw = bytes(apdu)
        return self._guarded(
            worker,
            lambda: self._exchange(conn, raw),
            "the card in {name!r} did not answer within {timeout} s",
        )

    def _session(self) -> tuple[_Session, _Worker | None]:
        """The open session and its worker, or the error that says why there is none."""
        conn = self._conn
        if conn is None:
            if self._broken:
                raise CardRemovedError(f"the session with the card in {self._name!r} was lost; connect again")
            raise TransportError("not connected: call connect() first")
        return conn, self._worker

    def _guarded(self, worker: _Worker | None, call: Callable[[], T], timeout_message: str) -> T:
        """Run ``call`` (on ``worker`` within the timeout, if any); abandon the session on failure.

        ``timeout_message`` is formatted with ``name`` (the reader) and ``timeout`` on a timeout.
        """
        try:
            if worker is None:  # timeout=None: no bound, no hand-off
                return call()
            return worker.call(call, self._timeout)
        except TransportTimeoutError:
            self._abandon()
            raise TransportTimeoutError(
                timeout_message.format(name=self._name, timeout=self._timeout)
            ) from None
        except TransportError:
            self._abandon()
            raise

    def reset(self) -> bytes:
        """Warm reset of the card (``SCardReconnect`` with ``SCARD_RESET_CARD``); returns the ATR.

        The card clears its volatile state (selected application, transaction) and keeps ATC
        and PIN try counter (``pcsc.md`` §4: vpcd passes it on as its RESET control byte).

        Raises
        ------
        CardRemovedError, TransportTimeoutError, TransportError
        """
        session, worker = self._session()
        atr = self._guarded(
            worker, lambda: self._reset(session), "resetting the card in {name!r} timed out"
        )
        self._atr = atr
        return atr

    def disconnect(self) -> None:
        """Close the session and power the card down; idempotent, never raises for a gone card."""
        conn, worker = self._conn, self._worker
        self._conn = None
        self._worker = None
        if conn is None:
            return
        if worker is None:
            self._close(conn)
            return
        try:
            worker.call(lambda: self._close(conn), self._timeout)
        except TransportTimeoutError:
            logger.debug("disconnect from %r timed out; session abandoned", self._name)
        finally:
            worker.close()

    def __enter__(self) -> PcscTransport:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    # -- worker-side operations -----------------------------------------------------

    def _open(self) -> tuple[_Session, str, bytes, str]:
        sc = import_scard()
        hresult, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
        if hresult != sc.SCARD_S_SUCCESS:
            raise hresult_error(sc, hresult, "establishing a PC/SC context")
        try:
            name = resolve_reader(self._wanted, reader_names(sc, context))
            if self._wait is not None:
                wait_for_card(sc, context, name, self._wait)
            # Protocol constants from the scard module itself (pyscard >= 2.3).
            t0, t1 = sc.SCARD_PROTOCOL_T0, sc.SCARD_PROTOCOL_T1
            hresult, card, active = sc.SCardConnect(context, name, sc.SCARD_SHARE_SHARED, t0 | t1)
            if hresult != sc.SCARD_S_SUCCESS:
                raise hresult_error(sc, hresult, "connecting to the card", reader=name)
            session = _Session(sc, context, card, sc.SCARD_PCI_T0 if active == t0 else sc.SCARD_PCI_T1)
            hresult, _reader, _state, _protocol, atr = sc.SCardStatus(card)
            if hresult != sc.SCARD_S_SUCCESS:
                session.close()
                raise hresult_error(sc, hresult, "reading the ATR", reader=name)
        except BaseException:
            sc.SCardReleaseContext(context)
            raise
        protocol = "T=0" if active == t0 else "T=1" if active == t1 else f"0x{active:x}"
        return session, name, bytes(atr), protocol

    def _exchange(self, session: _Session, apdu: bytes) -> bytes:
        sc, card, pci = session.scard, session.card, session.pci
        success = sc.SCARD_S_SUCCESS
        name = self._name

        def send(command: bytes) -> bytes:
            hresult, response = sc.SCardTransmit(card, pci, list(command))
            if hresult != success:
                raise hresult_error(sc, hresult, "transmit", reader=name, connected=True)
            if len(response) < 2:  # pcscd said success with no bytes: the card went away
                raise CardRemovedError(f"the card in reader {name!r} was removed (no response)")
            return bytes(response)

        first = send(apdu)
        if first[-2] not in (0x61, 0x6C):  # the common case: no T=0 continuation
            return first
        answers = iter((first,))
        return transmit_with_t0(lambda command: next(answers, None) or send(command), apdu)

    def _reset(self, session: _Session) -> bytes:
        sc = session.scard
        protocols = sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1
        hresult, active = sc.SCardReconnect(
            session.card, sc.SCARD_SHARE_SHARED, protocols, sc.SCARD_RESET_CARD
        )
        if hresult != sc.SCARD_S_SUCCESS:
            raise hresult_error(sc, hresult, "resetting the card", reader=self._name, connected=True)
        session.pci = sc.SCARD_PCI_T0 if active == sc.SCARD_PROTOCOL_T0 else sc.SCARD_PCI_T1
        hresult, _reader, _state, _protocol, atr = sc.SCardStatus(session.card)
        if hresult != sc.SCARD_S_SUCCESS:
            raise hresult_error(sc, hresult, "reading the ATR", reader=self._name, connected=True)
        return bytes(atr)

    def _close(self, session: _Session) -> None:
        session.close()

    def _abandon(self) -> None:
        """Drop a session that failed; its cleanup runs on the worker once it is free."""
        conn, worker = self._conn, self._worker
        self._conn = None
        self._worker = None
        self._broken = True
        if worker is None:
            if conn is not None:
                self._close(conn)
        else:
            if conn is not None:
                worker.submit(lambda: self._close(conn))
            worker.close()


class _Session:
    """One PC/SC card handle and its context (``smartcard.scard`` objects)."""

    __slots__ = ("card", "context", "pci", "scard")

    def __init__(self, scard: Any, context: Any, card: Any, pci: Any) -> None:
        self.scard = scard
        self.context = context
        self.card = card
        self.pci = pci

    def close(self) -> None:
        """Unpower the card and release the context; errors of a gone card are only logged."""
        sc = self.scard
        hresult = sc.SCardDisconnect(self.card, sc.SCARD_UNPOWER_CARD)
        if hresult != sc.SCARD_S_SUCCESS:
            logger.debug("SCardDisconnect: 0x%08X", hresult & 0xFFFFFFFF)
        hresult = sc.SCardReleaseContext(self.context)
        if hresult != sc.SCARD_S_SUCCESS:
            logger.debug("SCardReleaseContext: 0x%08X", hresult & 0xFFFFFFFF)
