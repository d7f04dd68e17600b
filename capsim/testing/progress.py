"""A live progress line for long fuzzing runs (examples/s, findings, elapsed, budget).

The display writes to a text stream the caller gives (the CLI passes stderr); it redraws one
line with ``\\r`` on a terminal and prints a plain line every ``interval`` seconds otherwise.
The clock is a parameter, so tests drive it.

>>> import io
>>> out = io.StringIO()
>>> t = iter([0.0, 2.0])
>>> p = Progress(out, budget=10.0, clock=lambda: next(t), interval=1.0, tty=False)
>>> p.update(examples=50, apdus=900, findings=0)
>>> p.finish()
>>> out.getvalue().splitlines()[0]
'fuzz: 50 examples (25.0/s), 900 APDUs (450/s), 0 finding(s), 2.0 s of 10.0 s'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Progress display.

    Parameters
    ----------
    stream:
        Where to write (``None``: nothing is shown, as with ``--json``).
    budget:
        The time budget in seconds, shown beside the elapsed time (``None``: no budget).
    clock:
        Monotonic clock (default :func:`time.monotonic`).
    interval:
        Minimum seconds between two redraws.
    tty:
        Redraw in place (default: ``stream.isatty()``).
    label:
        Prefix of the line.
    """

    def __init__(
        self,
        stream: TextIO | None,
        *,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.5,
        tty: bool | None = None,
        label: str = "fuzz",
    ) -> None:
        self.stream = stream
        self.budget = budget
        self.clock = clock
        self.interval = interval
        self.label = label
        self.tty = bool(stream is not None and (tty if tty is not None else _isatty(stream)))
        if not self.tty and tty is None:
            self.interval = max(interval, 5.0)
        self.start = clock()
        self._last_draw = self.start
        self._line = ""
        self._dirty = False

    def update(self, *, examples: int, apdus: int = 0, findings: int = 0) -> None:
        """Record the counts; redraw when ``interval`` has passed."""
        if self.stream is None:
            return
        now = self.clock()
        elapsed = max(now - self.start, 1e-9)
        budget = f" of {self.budget:.1f} s" if self.budget is not None else ""
        self._line = (
            f"{self.label}: {examples} examples ({examples / elapsed:.1f}/s), {apdus} APDUs "
            f"({apdus / elapsed:.0f}/s), {findings} finding(s), {elapsed:.1f} s{budget}"
        )
        self._dirty = True
        if now - self._last_draw >= self.interval:
            self._draw(now)

    def _draw(self, now: float) -> None:
        if self.stream is None or not self._line:
            return
        if self.tty:
            self.stream.write("\r" + self._line + "\x1b[K")
        else:
            self.stream.write(self._line + "\n")
        self.stream.flush()
        self._last_draw = now
        self._dirty = False

    def finish(self) -> None:
        """Draw the last state and end the line."""
        if self.stream is None:
            return
        if self._dirty:
            self._draw(self.clock())
        if self.tty and self._line:
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
