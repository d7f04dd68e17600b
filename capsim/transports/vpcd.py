"""Serve an emulated card to pcscd through vsmartcard's ``vpcd`` reader driver.

``vpcd`` is a PC/SC reader driver loaded by pcscd. Each configured entry listens on a TCP
port per slot; a "card" is whatever connects to that port and answers its messages.
:class:`VpcdCardServer` is capsim's own implementation of that small protocol
(``pcsc.md`` §4, ``architecture.md`` §6). It serves any object with the card-OS methods
of :class:`capsim.cards.base.CardOS` (an :class:`capsim.cards.EmvCapCard`, or a test
double), so every
PC/SC program on the machine sees the emulated card in a reader named
``"<FRIENDLYNAME> 00 00"`` (slot 0) or ``"… 00 01"`` (slot 1).

Wire protocol (``pcsc.md`` §4), both directions: a 2-byte big-endian length, then that
many bytes.

* driver → card, length 1: a control byte. ``00`` power off, ``01`` power on, ``02``
  reset (no reply); ``04`` get ATR (the reply is the framed ATR).
* driver → card, length ≥ 2: a command APDU, passed to :meth:`CardOS.process` unchanged;
  the reply is the framed response APDU (data ‖ SW1 SW2).

Only normal mode is implemented: vpcd listens and the card connects (reversed mode aborts
pcscd with Debian 12's vpcd 0.8). The socket rules that avoid the 44 ms Nagle/delayed-ACK
stall are followed: ``TCP_NODELAY``, one ``sendall`` per frame, ``TCP_QUICKACK`` before
every ``recv`` where the platform has it, and a ``recv`` loop until the frame is whole.

When pcscd stops, vpcd closes the connection; the server powers the card off (volatile
state only: ATC and PIN try counter stay) and reconnects with exponential backoff until
it is stopped. While vpcd cannot be reached, the first failed attempt is logged at WARNING
with what to check (:func:`unreachable_hint`), and then every ``report_interval`` seconds a
WARNING says what the server is still waiting for: address, attempts so far, for how long.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from enum import IntEnum
from types import TracebackType
from typing import Final

from capsim.cards.base import CardOS
from capsim.errors import LocalProtocolError, ValidationError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "VPCD_SLOTS",
    "VpcdCardServer",
    "VpcdControl",
    "decode_frames",
    "encode_frame",
    "parse_vpcd_address",
    "unreachable_hint",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
"""Where vpcd listens by default (it binds every interface; capsim connects over loopback)."""
DEFAULT_PORT: Final = 35963
"""Port of slot 0 of Debian's default vpcd entry (``/etc/reader.conf.d/vpcd``); slot 1 is +1."""
VPCD_SLOTS: Final = 2
"""Slots per vpcd entry (compile-time ``VPCDSLOTS`` of the Debian driver), on PORT and PORT+1."""

_MAX_FRAME: Final = 0xFFFF
_SW_INTERNAL_ERROR: Final = b"\x6f\x00"
_HAS_QUICKACK: Final = hasattr(socket, "TCP_QUICKACK")


class VpcdControl(IntEnum):
    """Control bytes vpcd sends as one-byte messages (``pcsc.md`` §4)."""

    POWER_OFF = 0x00
    POWER_ON = 0x01
    RESET = 0x02
    GET_ATR = 0x04


def encode_frame(payload: bytes) -> bytes:
    """Frame ``payload`` for the vpcd link: 2-byte big-endian length ‖ payload (``pcsc.md`` §4).

    >>> encode_frame(bytes.fromhex("9000")).hex()
    '00029000'
    >>> encode_frame(b"")
    b'\\x00\\x00'
    """
    if len(payload) > _MAX_FRAME:
        raise ValidationError(f"payload: at most {_MAX_FRAME} bytes fit in a vpcd frame, got {len(payload)}")
    return struct.pack(">H", len(payload)) + payload


def decode_frames(buffer: bytes | bytearray) -> tuple[list[bytes], bytes]:
    """Split ``buffer`` into whole frames and the incomplete rest (``pcsc.md`` §4).

    Returns the payloads of every complete frame at the start of ``buffer`` and the bytes
    left over (a partial header or a partial payload), which belong to the next frame.

    >>> decode_frames(bytes.fromhex("000104" "0002" "90"))
    ([b'\\x04'], b'\\x00\\x02\\x90')
    """
    frames: list[bytes] = []
    pos = 0
    end = len(buffer)
    while end - pos >= 2:
        length = (buffer[pos] << 8) | buffer[pos + 1]
        if end - pos - 2 < length:
            break
        frames.append(bytes(buffer[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return frames, bytes(buffer[pos:])


def parse_vpcd_address(spec: str, *, slot: int = 0) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (the slot-0 port of a vpcd entry) and apply ``slot``.

    vpcd serves slot *n* of an entry on PORT + *n* (``pcsc.md`` §2).

    >>> parse_vpcd_address("127.0.0.1:35963", slot=1)
    ('127.0.0.1', 35964)
    >>> parse_vpcd_address("[::1]:40000")
    ('::1', 40000)
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValidationError(f"vpcd: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), got {spec!r}")
    host, _, port_text = spec.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isascii() or not port_text.isdigit():
        raise ValidationError(f"vpcd: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), got {spec!r}")
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < VPCD_SLOTS:
        raise ValidationError(f"slot: expected 0 or 1 (vpcd has {VPCD_SLOTS} slots), got {slot!r}")
    port = int(port_text) + slot
    if not 0 < port <= 0xFFFF:
        raise ValidationError(f"vpcd: port must be 1..65535 (after adding the slot), got {port}")
    return host, port


def _describe_command(apdu: bytes, show_sensitive: bool) -> str:
    """Header and length only unless the user asked for sensitive output (PIN blocks, PAN)."""
    if show_sensitive:
        return apdu.hex().upper()
    if len(apdu) >= 4:
        return f"{apdu[:4].hex().upper()} +{len(apdu) - 4} bytes"
    return f"{len(apdu)} bytes"


def _describe_response(rapdu: bytes, show_sensitive: bool) -> str:
    if show_sensitive:
        return rapdu.hex().upper()
    if len(rapdu) >= 2:
        return f"SW {rapdu[-2:].hex().upper()}, {len(rapdu) - 2} data bytes"
    return f"{len(rapdu)} bytes"


class _FrameReader:
    """Reads whole frames from a stream socket; keeps bytes that arrive early."""

    __slots__ = ("_buffer", "_pending", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._pending: list[bytes] = []

    def read(self) -> bytes | None:
        """The next frame's payload, or ``None`` when the peer closed the connection."""
        if self._pending:
            return self._pending.pop(0)
        sock = self._sock
        while True:
            if _HAS_QUICKACK:
                # Not sticky on Linux: without it before each recv the kernel delays the ACK
                # of vpcd's first small segment by ~40 ms and vpcd's second send waits for it.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
            frames, rest = decode_frames(self._buffer)
            if frames:
                self._buffer = bytearray(rest)
                self._pending.extend(frames[1:])
                return frames[0]


def unreachable_hint(host: str, port: int) -> str:
    """What to check when nothing listens on a vpcd port (the first "not reachable" message).

    >>> unreachable_hint("127.0.0.1", 35963)  # doctest: +ELLIPSIS
    'is pcscd running with the vpcd driver ... port 35963 ...'
    """
    return (
        "is pcscd running with the vpcd driver (Debian: apt-get install pcscd vsmartcard-vpcd), "
        f"with a vpcd reader entry listening on port {port} of {host}? (its reader.conf DEVICENAME "
        "is /dev/null:PORT; slot 1 listens on PORT+1; --vpcd HOST:PORT names another entry; "
        "see docs/pcsc.md)"
    )


class VpcdCardServer:
    """Expose a :class:`CardOS` as the card in one vpcd reader slot (``pcsc.md`` §2, §4).

    Parameters
    ----------
    card:
        The card to serve (for example ``capsim.cards.load_card("card.json")``).
    host, port:
        Where the vpcd entry listens: ``port`` is the entry's slot-0 port (DEVICENAME
        ``/dev/null:PORT`` in its reader.conf; Debian's default is 35963).
    slot:
        0 or 1; the server connects to ``port + slot``.
    backoff_initial, backoff_max:
        Reconnect delays in seconds (doubling from the first to the second) while vpcd is
        not listening, for example during a pcscd restart.
    reinsert_gap:
        Seconds the card stays out before the server plugs it in again after a link loss.
        pcscd notices a removal only when one of its 400 ms presence polls finds the slot
        empty; a card back sooner looks as if it had never left (``pcsc.md`` §3).
    idle_timeout:
        vpcd polls the card every 400 ms; silence for this many seconds means the link is
        dead and the server reconnects. ``None`` waits forever.
    show_sensitive:
        Log whole APDUs (PIN blocks, PAN, cryptograms). Off by default: logs show only the
        command header, lengths and status words.
    report_interval:
        While vpcd cannot be reached, seconds between two "still waiting" WARNING lines
        (address, attempts, time waited); the first failure is logged at once, with a hint.

    Notes
    -----
    Run it in the foreground with :meth:`serve_forever` (stop it from a signal handler
    with :meth:`stop`) or in a daemon thread with :meth:`start`. It is also a context
    manager that starts and stops the thread.
    """

    def __init__(
        self,
        card: CardOS,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        slot: int = 0,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        reinsert_gap: float = 0.5,
        idle_timeout: float | None = 30.0,
        connect_timeout: float = 5.0,
        show_sensitive: bool = False,
        report_interval: float = 30.0,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
            raise ValidationError(f"port: expected 1..65535, got {port!r}")
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < VPCD_SLOTS:
            raise ValidationError(f"slot: expected 0 or 1 (vpcd has {VPCD_SLOTS} slots), got {slot!r}")
        if port + slot > 0xFFFF:
            raise ValidationError(f"port: port + slot must be at most 65535, got {port + slot}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValidationError(
                "backoff_initial, backoff_max: expected 0 < initial <= max, "
                f"got {backoff_initial}, {backoff_max}"
            )
        if reinsert_gap < 0:
            raise ValidationError(f"reinsert_gap: expected seconds >= 0, got {reinsert_gap}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValidationError(f"idle_timeout: expected seconds > 0 or None, got {idle_timeout}")
        if connect_timeout <= 0:
            raise ValidationError(f"connect_timeout: expected seconds > 0, got {connect_timeout}")
        if isinstance(report_interval, bool) or not report_interval > 0:
            raise ValidationError(f"report_interval: expected seconds > 0, got {report_interval}")
        self._report_interval = report_interval
        self._card = card
        self._address = (host, port + slot)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._reinsert_gap = reinsert_gap
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._show_sensitive = show_sensitive
        self._stop = threading.Event()
        self._connected = threading.Event()
        # Re-entrant: stop() may run in a signal handler on the thread that holds it.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections = 0
        self._apdus = 0
        self._unplugged_at: float | None = None

    # -- introspection ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server connects to (the slot already applied)."""
        return self._address

    @property
    def connected(self) -> bool:
        """Whether the card is currently plugged into vpcd."""
        return self._connected.is_set()

    @property
    def connections(self) -> int:
        """How many times the server has connected to vpcd (1 + reconnections)."""
        return self._connections

    @property
    def apdu_count(self) -> int:
        """Command APDUs served so far (control messages not counted)."""
        return self._apdus

    @property
    def unplugged_at(self) -> float | None:
        """``time.monotonic()`` when the card last left vpcd (``None`` if it never did)."""
        return self._unplugged_at

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the card is plugged into vpcd; ``False`` on timeout."""
        return self._connected.wait(timeout)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> VpcdCardServer:
        """Serve in a daemon thread; returns ``self``. Stop it with :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            raise LocalProtocolError("this VpcdCardServer is already running")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"capsim-vpcd-{self._address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Unplug the card and end :meth:`serve_forever` (safe from a signal handler).

        When the server runs in a thread started by :meth:`start`, wait up to
        ``timeout`` seconds for it to finish.
        """
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> VpcdCardServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Connect to vpcd and answer it until :meth:`stop`, reconnecting with backoff."""
        host, port = self._address
        delay = self._backoff_initial
        failures = 0
        waiting_since = next_report = 0.0
        logger.info("serving the card to vpcd at %s:%d", host, port)
        while not self._stop.is_set():
            if self._unplugged_at is not None:
                gap = self._unplugged_at + self._reinsert_gap - time.monotonic()
                if gap > 0 and self._stop.wait(gap):
                    break
            try:
                sock = self._connect()
            except OSError as exc:
                failures += 1
                now = time.monotonic()
                if failures == 1:
                    waiting_since, next_report = now, now + self._report_interval
                    logger.warning(
                        "vpcd at %s:%d not reachable (%s); %s. Retrying until it is; Ctrl-C to stop",
                        host,
                        port,
                        exc,
                        unreachable_hint(host, port),
                    )
                elif now >= next_report:
                    next_report = now + self._report_interval
                    logger.warning(
                        "still waiting for vpcd at %s:%d: %d attempts in %.1f s (last: %s)",
                        host,
                        port,
                        failures,
                        now - waiting_since,
                        exc,
                    )
                else:
                    logger.debug("vpcd at %s:%d not reachable (%s); retry in %.2f s", host, port, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            delay = self._backoff_initial
            failures = 0
            try:
                self._serve_connection(sock)
            except TimeoutError:
                logger.warning("vpcd at %s:%d silent for %s s; reconnecting", host, port, self._idle_timeout)
            except OSError as exc:
                if not self._stop.is_set():
                    logger.info("vpcd link lost (%s); reconnecting", exc)
            finally:
                with self._lock:
                    self._sock = None
                self._connected.clear()
                sock.close()
                self._unplugged_at = time.monotonic()
                # Pulling the card out removes power: volatile state only.
                self._power(self._card.power_off, "power off")
        logger.info("stopped serving the card to vpcd at %s:%d", host, port)

    # -- internals -------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._idle_timeout)
        except OSError:
            sock.close()
            raise
        with self._lock:
            self._sock = sock
        if self._stop.is_set():  # stop() ran before the socket was visible to it
            with self._lock:
                self._sock = None
            sock.close()
            raise OSError("server stopped")
        self._connections += 1
        self._connected.set()
        logger.info("card inserted into vpcd at %s:%d", *self._address)
        return sock

    def _serve_connection(self, sock: socket.socket) -> None:
        reader = _FrameReader(sock)
        while True:
            frame = reader.read()
            if frame is None:
                if not self._stop.is_set():
                    logger.info("vpcd closed the connection (pcscd stopped?)")
                return
            if self._stop.is_set():
                return
            reply = self._handle(frame)
            if reply is not None:
                # One sendall per frame: length and payload in a single segment.
                sock.sendall(struct.pack(">H", len(reply)) + reply)

    def _handle(self, frame: bytes) -> bytes | None:
        if len(frame) == 1:
            return self._control(frame[0])
        if len(frame) < 4:
            logger.warning("ignoring a %d-byte message from vpcd", len(frame))
            return _SW_INTERNAL_ERROR if frame else None
        self._apdus += 1
        show = self._show_sensitive
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("C-APDU %s", _describe_command(frame, show))
        try:
            rapdu = self._card.process(frame)
        except Exception as exc:  # a CardOS must not raise; never let it kill the link
            logger.error("card raised %s on INS %02X; answering 6F00", type(exc).__name__, frame[1])
            rapdu = _SW_INTERNAL_ERROR
        if len(rapdu) < 2 or len(rapdu) > _MAX_FRAME:
            logger.error("card returned a %d-byte response; answering 6F00", len(rapdu))
            rapdu = _SW_INTERNAL_ERROR
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("R-APDU %s", _describe_response(rapdu, show))
        return rapdu

    def _control(self, code: int) -> bytes | None:
        if code == VpcdControl.GET_ATR:
            return self._card.atr
        if code == VpcdControl.POWER_ON:
            self._power(self._card.power_on, "power on")
        elif code == VpcdControl.RESET:
            self._power(self._card.reset, "reset")
        elif code == VpcdControl.POWER_OFF:
            self._power(self._card.power_off, "power off")
        else:
            logger.warning("ignoring unknown vpcd control byte %02X", code)
        return None

    @staticmethod
    def _power(action: Callable[[], object], name: str) -> None:
        logger.debug(name)
        try:
            action()
        except Exception as exc:  # a CardOS must not raise; never let it kill the link
            logger.error("card raised %s on %s", type(exc).__name__, name)
