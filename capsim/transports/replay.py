"""Replay a recorded card session, and write sessions in the same format.

The transcript format (``vectors/transcripts/*.txt``) is plain text: ``#`` comment lines (a
``# Source:`` provenance line first), ``@ KEY = value`` metadata, an optional ``ATR <hex>``
line, then ``> <command hex>`` / ``< <response hex, SW included>`` pairs. Spaces inside hex
are ignored. A file over :data:`MAX_TRANSCRIPT_BYTES` (16 MiB) is refused with
:class:`~capsim.errors.StateFileError` before it is read whole.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from capsim.errors import RemoteProtocolError, StateFileError, ValidationError
from capsim.transports.base import REDACTED_BYTE, TransportBase

__all__ = [
    "MAX_TRANSCRIPT_BYTES",
    "RecordedSession",
    "ReplayTransport",
    "read_transcript",
    "write_transcript",
]

_log = logging.getLogger(__name__)

#: Largest transcript read (a recorded fuzzing session of hours stays well below it); a larger
#: file is refused before it is read whole.
MAX_TRANSCRIPT_BYTES: Final = 16 << 20
_INS_VERIFY = 0x20
_INS_GET_DATA = 0xCA


@dataclass(frozen=True, kw_only=True)
class RecordedSession:
    """A parsed transcript (``repr`` leaves the exchanges out: they may hold a PAN or PIN block)."""

    meta: Mapping[str, str] = field(default_factory=dict)
    atr: bytes | None = None
    exchanges: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)


def _unhex(text: str, where: str) -> bytes:
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise StateFileError(f"transcript: {where}: not hex") from None


def read_transcript(path: str | os.PathLike[str]) -> RecordedSession:
    """Parse a transcript file.

    Raises
    ------
    StateFileError
        The file cannot be read, is larger than :data:`MAX_TRANSCRIPT_BYTES` or is malformed
        (the message names the line).
    """
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_TRANSCRIPT_BYTES + 1)
        if len(data) > MAX_TRANSCRIPT_BYTES:
            raise StateFileError(
                f"transcript {path}: larger than {MAX_TRANSCRIPT_BYTES} bytes; refusing to read it"
            )
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"transcript {path}: cannot read it ({exc.__class__.__name__})") from None
    meta: dict[str, str] = {}
    atr: bytes | None = None
    exchanges: list[tuple[bytes, bytes]] = []
    pending: bytes | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path} line {n}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            key, _, value = line[1:].partition("=")
            meta[key.strip()] = value.strip()
        elif line.startswith("ATR"):
            atr = _unhex(line[3:], where)
        elif line.startswith(">"):
            if pending is not None:
                raise StateFileError(f"transcript: {where}: two commands without a response")
            pending = _unhex(line[1:], where)
        elif line.startswith("<"):
            if pending is None:
                raise StateFileError(f"transcript: {where}: response without a command")
            response = _unhex(line[1:], where)
            if len(response) < 2:
                raise StateFileError(f"transcript: {where}: response without a status word")
            exchanges.append((pending, response))
            pending = None
        else:
            raise StateFileError(f"transcript: {where}: expected '#', '@', 'ATR', '>' or '<'")
    if pending is not None:
        raise StateFileError(f"transcript {path}: the last command has no response")
    return RecordedSession(meta=meta, atr=atr, exchanges=tuple(exchanges))


def write_transcript(
    path: str | os.PathLike[str],
    exchanges: Iterable[tuple[bytes, bytes]],
    *,
    source: str,
    atr: bytes | None = None,
    meta: Mapping[str, str] | None = None,
) -> None:
    """Write ``exchanges`` as a transcript :class:`ReplayTransport` can play.

    Parameters
    ----------
    source:
        Provenance text for the ``# Source:`` header (one line).
    """
    if "\n" in source:
        raise ValidationError("source: expected a single line")
    lines = [f"# Source: {source}", "# Cross-checked: not cross-checked (recorded by capsim)"]
    for key, value in (meta or {}).items():
        lines.append(f"@ {key} = {value}")
    if atr is not None:
        lines.append(f"ATR {atr.hex().upper()}")
    for command, response in exchanges:
        lines.append(f"> {command.hex().upper()}")
        lines.append(f"< {response.hex().upper()}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


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
