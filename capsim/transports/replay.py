"""Replay a recorded card session.

The transcript format (``vectors/transcripts/*.txt``) and its reader and writer are in
:mod:`capsim.transcript` (re-exported here: :func:`read_transcript`, :func:`write_transcript`,
:class:`RecordedSession`, :data:`MAX_TRANSCRIPT_BYTES`).

:class:`ReplayTransport` answers each command with the recorded response, in order. A command
that differs from the recording raises :class:`~capsim.errors.RemoteProtocolError` naming the
first differing byte, and moves the transport to a failed state. Two tolerances:

* a recorded command without an Le byte matches a sent command that has one (several
  published traces did not record Le; the header and data must still match);
* a recorded VERIFY whose PIN block is all ``FF`` (redacted by
  :class:`~capsim.transports.base.TracingTransport`) matches any PIN block.

Some published traces omit the PIN steps altogether. With ``synthesize_pin=True`` (the
default when the recording has no VERIFY at all) a VERIFY that is not in the recording is
answered ``9000`` and a GET DATA that is not in it ``6A88``; each such answer is logged.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "t.txt")
>>> write_transcript(p, [(bytes.fromhex("00A4040007A000000004800200"), bytes.fromhex("6A82"))],
...                  source="doctest")
>>> with ReplayTransport(p) as t:
...     t.transmit(bytes.fromhex("00A4040007A000000004800200")).hex()
'6a82'
"""

from __future__ import annotations

import logging
import os

from capsim.errors import RemoteProtocolError
from capsim.transcript import MAX_TRANSCRIPT_BYTES, RecordedSession, read_transcript, write_transcript
from capsim.transports.base import REDACTED_BYTE, TransportBase

__all__ = [
    "MAX_TRANSCRIPT_BYTES",
    "RecordedSession",
    "ReplayTransport",
    "read_transcript",
    "write_transcript",
]

_log = logging.getLogger(__name__)

_INS_VERIFY = 0x20
_INS_GET_DATA = 0xCA


def _header_and_body(raw: bytes) -> tuple[bytes, int | None]:
    """Split a short-form command into (everything but Le, Le or None)."""
    if len(raw) <= 4:
        return raw, None
    if len(raw) == 5:
        return raw[:4], raw[4]
    lc = raw[4]
    if lc and len(raw) == 5 + lc:
        return raw, None
    if lc and len(raw) == 6 + lc:
        return raw[:-1], raw[-1]
    return raw, None


def _matches(recorded: bytes, sent: bytes) -> bool:
    if recorded == sent:
        return True
    rec_body, rec_le = _header_and_body(recorded)
    sent_body, _ = _header_and_body(sent)
    if rec_le is None and rec_body == sent_body:
        return True
    if len(recorded) == len(sent) == 13 and recorded[1] == sent[1] == _INS_VERIFY:
        return recorded[:5] == sent[:5] and recorded[5:] == bytes([REDACTED_BYTE]) * 8
    return False


class ReplayTransport(TransportBase):
    """Plays a recorded session back (for tests, and to debug a card offline).

    Parameters
    ----------
    source:
        A transcript path or a parsed :class:`RecordedSession`.
    synthesize_pin:
        Answer a VERIFY missing from the recording with ``9000`` and such a GET DATA with
        ``6A88``. ``None`` (default) enables it exactly when the recording has no VERIFY.
    """

    def __init__(
        self, source: str | os.PathLike[str] | RecordedSession, *, synthesize_pin: bool | None = None
    ) -> None:
        self.session = source if isinstance(source, RecordedSession) else read_transcript(source)
        if synthesize_pin is None:
            synthesize_pin = not any(c[1:2] == bytes([_INS_VERIFY]) for c, _ in self.session.exchanges)
        self.synthesize_pin = synthesize_pin
        self._next = 0
        self._failed = False

    @property
    def remaining(self) -> int:
        """Recorded exchanges not yet played."""
        return len(self.session.exchanges) - self._next

    def connect(self) -> bytes:
        self._next = 0
        self._failed = False
        return self.session.atr or b""

    def transmit(self, apdu: bytes) -> bytes:
        if self._failed:
            raise RemoteProtocolError("replay: the recording already diverged from this session")
        exchanges = self.session.exchanges
        expected = exchanges[self._next][0] if self._next < len(exchanges) else None
        if expected is not None and _matches(expected, apdu):
            self._next += 1
            return exchanges[self._next - 1][1]
        if self.synthesize_pin and len(apdu) > 1 and apdu[1] in (_INS_VERIFY, _INS_GET_DATA):
            answer = b"\x90\x00" if apdu[1] == _INS_VERIFY else b"\x6a\x88"
            _log.info("replay: %02X not recorded, answering %s", apdu[1], answer.hex().upper())
            return answer
        self._failed = True
        if expected is None:
            raise RemoteProtocolError(
                f"replay: command {self._next + 1} ({apdu[:4].hex().upper()}…) is beyond the recording"
            )
        diff = next(
            (i for i, (a, b) in enumerate(zip(expected, apdu, strict=False)) if a != b),
            min(len(expected), len(apdu)),
        )
        got = f"{apdu[diff]:02X}" if diff < len(apdu) else "end of command"
        want = f"{expected[diff]:02X}" if diff < len(expected) else "end of command"
        if apdu[1:2] == bytes([_INS_VERIFY]) and diff >= 5:
            got = want = "(PIN block, not shown)"
        raise RemoteProtocolError(
            f"replay: command {self._next + 1} differs from the recording at byte {diff}: "
            f"sent {got}, recorded {want}"
        )

    def disconnect(self) -> None:
        return None
