"""Transcripts: recorded card sessions as plain text (``vectors/transcripts/*.txt``).

Theory of operation
-------------------
1. A transcript is ``#`` comment lines (a ``# Source:`` provenance line first), ``@ KEY =
   value`` metadata, an optional ``ATR <hex>`` line, then ``> <command hex>`` / ``< <response
   hex, SW included>`` pairs. Spaces inside hex are ignored.
2. :func:`read_transcript` refuses a file over :data:`MAX_TRANSCRIPT_BYTES` (16 MiB) before
   reading it whole; any malformed line raises :class:`~capsim.errors.StateFileError` naming it.
3. :func:`write_transcript` writes what it is given: redacting exchanges is the recorder's
   business (:class:`capsim.transports.TracingTransport` redacts by default).

The format sits below the transports: the tracing transport writes it and the replay
transport (:mod:`capsim.transports.replay`) plays it back.

>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "t.txt")
>>> write_transcript(p, [(bytes.fromhex("00A4040007A000000004800200"), bytes.fromhex("6A82"))],
...                  source="doctest", atr=bytes.fromhex("3B00"))
>>> session = read_transcript(p)
>>> session.atr.hex(), len(session.exchanges), session.meta
('3b00', 1, {})
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from capsim.errors import StateFileError, ValidationError

__all__ = ["MAX_TRANSCRIPT_BYTES", "RecordedSession", "read_transcript", "write_transcript"]

#: Largest transcript read (a recorded fuzzing session of hours stays well below it); a larger
#: file is refused before it is read whole.
MAX_TRANSCRIPT_BYTES: Final = 16 << 20


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
