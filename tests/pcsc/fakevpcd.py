"""The driver side of the vpcd link, in Python: listens like vpcd does and talks to one card.

It lets the card server's framing, control bytes, reconnection and shutdown be tested
without pcscd. It writes the length and the payload in separate ``send`` calls, like
Debian's vpcd 0.8 does (pcsc.md §4), unless told to send whole frames or byte by byte.
"""

from __future__ import annotations

import socket
import struct


class FakeVpcd:
    """A listening socket on the loopback standing in for one vpcd slot."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4)
        self.port: int = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self._buffer = b""

    def accept(self, timeout: float = 5.0) -> None:
        self.listener.settimeout(timeout)
        conn, _ = self.listener.accept()
        conn.settimeout(timeout)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        self._buffer = b""

    def _require(self) -> socket.socket:
        if self.conn is None:
            raise RuntimeError("no card connected")
        return self.conn

    def send_raw(self, data: bytes) -> None:
        self._require().sendall(data)

    def send(self, payload: bytes) -> None:
        conn = self._require()
        conn.sendall(struct.pack(">H", len(payload)))
        conn.sendall(payload)

    def recv_exact(self, n: int) -> bytes:
        conn = self._require()
        while len(self._buffer) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError("card closed the connection")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def recv_frame(self) -> bytes:
        (length,) = struct.unpack(">H", self.recv_exact(2))
        return self.recv_exact(length)

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.recv_frame()

    def get_atr(self) -> bytes:
        return self.exchange(b"\x04")

    def at_eof(self, timeout: float = 5.0) -> bool:
        """Whether the card closed the connection (waits up to ``timeout``)."""
        conn = self._require()
        conn.settimeout(timeout)
        try:
            return conn.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def drop(self) -> None:
        """Close the connection to the card (what vpcd does when pcscd stops)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        self.listener.close()
