"""What a CAP deployment guarantees, measured: ``capsim analyze`` (docs/analysis.md).

:func:`analyze` takes a card's design (a built-in template or a card file's profile), a reader
profile and a verifier policy and returns a :class:`Report`: the code's anatomy, guessing
probabilities against the published limits, mode confusions (derived and confirmed on emulated
cards), freshness and PIN handling, each finding with a severity, its published source and what
a bank can change. :func:`render_text` and :func:`capsim.analysis.html.render_html` present it.
:func:`analyze_card` analyses a :class:`CardDescription` instead: a design's, or what the
reader's discovery read from a real card (``capsim analyze --reader``), with what it cannot know
without a GENERATE AC reported as unknown.
"""

from __future__ import annotations

from capsim.analysis.card import CardDescription
from capsim.analysis.model import SOURCE_TEXT, Change, Finding, Lever, Severity, Source
from capsim.analysis.report import Report, analyze, analyze_card, render_text

__all__ = [
    "SOURCE_TEXT",
    "CardDescription",
    "Change",
    "Finding",
    "Lever",
    "Report",
    "Severity",
    "Source",
    "analyze",
    "analyze_card",
    "render_text",
]
