"""The CAP reader: a sans-IO session over a state graph, and a driver over a transport.

Where things are
================

=============================  ==================================================================
module                         what it holds
=============================  ==================================================================
:mod:`capsim.reader.graph`     **the reader's table**: (phase, answer class) → handler and the
                               phases it may move to (:data:`TRANSITIONS`); what each phase sends
:mod:`capsim.reader.session`   :class:`CapSession`: one run, sans I/O; enforces the graph
:mod:`capsim.reader.driver`    :class:`CapReader`: a session over a transport (T=0 included)
:mod:`capsim.reader.result`    :class:`CapResult` and its lazily computed :class:`Explanation`
:mod:`capsim.reader.selection` handlers of application selection (SELECT, PSE)
:mod:`capsim.reader.transaction` handlers of GPO, READ RECORD, GET DATA, VERIFY, GENERATE AC
:mod:`capsim.reader.discover`  :func:`discover`: what a reader reads before the PIN (no VERIFY,
                               no GENERATE AC), for ``capsim card info``
:mod:`capsim.reader.run`       the checked inputs and the mutable state of one run
:mod:`capsim.reader.phases`    :class:`Phase`, :class:`Answer`, :class:`Step`, the limits
:mod:`capsim.reader.apdus`     the commands it sends, reading answers, the reader's caches
:mod:`capsim.reader.piv`       :class:`~capsim.reader.piv.PivClient`: the host side of a PIV
                               certificate token (not imported here; ``capsim token sign``)
=============================  ==================================================================

The pure CAP computations (CDOL values and fill, IPB, TDS, Belgian function) are in
:mod:`capsim.cap`; reader profiles in :mod:`capsim.profiles`. The reader imports nothing from
:mod:`capsim.transports`: redaction and T=0 continuation come from :mod:`capsim.apdu`.

>>> from capsim.transports import open_transport
>>> with open_transport("inproc:natwest") as card:
...     result = CapReader(card).identify("1234")
>>> result.code.isdigit(), [phase.name for phase in (Phase.SELECT, Phase.DONE)]
(True, ['SELECT', 'DONE'])
"""

from __future__ import annotations

from capsim.reader.discover import Application, CardSummary, ProfileSource, discover
from capsim.reader.driver import CapReader, CardLink
from capsim.reader.graph import ENTER_PIN, START, TRANSITIONS, Edge, PinEntered, Start
from capsim.reader.phases import MAX_COMMANDS, MAX_RECORDS, MAX_RESPONSE, Answer, Phase, Step
from capsim.reader.result import CapResult, Explanation
from capsim.reader.run import ASK_PIN, PinEntry
from capsim.reader.session import CapSession

__all__ = [
    "ASK_PIN",
    "ENTER_PIN",
    "MAX_COMMANDS",
    "MAX_RECORDS",
    "MAX_RESPONSE",
    "START",
    "TRANSITIONS",
    "Answer",
    "Application",
    "CapReader",
    "CapResult",
    "CapSession",
    "CardLink",
    "CardSummary",
    "Edge",
    "Explanation",
    "Phase",
    "PinEntered",
    "PinEntry",
    "ProfileSource",
    "Start",
    "Step",
    "discover",
]
