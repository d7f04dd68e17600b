"""The reader as a state graph: for each (phase, answer class), the handler and where it may go.

Theory of operation
===================

1. A session starts with :data:`START` (SELECT the first candidate application), then waits in
   a :class:`~capsim.reader.phases.Phase`. The card's status word is classified
   (:meth:`~capsim.reader.phases.Answer.of`) and the pair (phase, answer) looks up an
   :class:`Edge` in :data:`TRANSITIONS`.
2. A pair missing from the table is the status word's typed error
   (:func:`capsim.apdu.response.status_error`: ``PinError``, ``StatusWordError``, …) and the
   session ends in ``ERROR``.
3. The edge's handler reads the answer, updates the :class:`~capsim.reader.run.Run` and returns
   a :class:`~capsim.reader.phases.Step`: the next phase and its command. The session accepts
   the step only when its phase is one of the edge's ``to`` phases; anything else is a bug in
   capsim, raised as :class:`~capsim.errors.LocalProtocolError`. An edge with no ``to`` phase
   always raises (a wrong PIN).
4. ``PIN`` is the one phase that waits for the cardholder, not for the card: a run whose PIN
   is asked for later (:data:`~capsim.reader.run.ASK_PIN`) enters it after GET DATA ``9F17``
   has shown the PIN is not blocked, and leaves it by :data:`ENTER_PIN` when the PIN is
   entered (:meth:`capsim.reader.CapSession.enter_pin`), so a blocked card fails before
   anyone is asked for a PIN.
5. What each phase sends, and where the data of its command comes from:

   ===========  =====================================  ==========================================
   phase        command sent                           data (module)
   ===========  =====================================  ==========================================
   SELECT       SELECT candidate AID                   :mod:`~capsim.reader.selection`
   SELECT_PSE   SELECT ``1PAY.SYS.DDF01``              :mod:`~capsim.reader.selection`
   READ_PSE     READ RECORD of the PSE directory       :mod:`~capsim.reader.selection`
   GPO          GET PROCESSING OPTIONS                 PDOL filled with :func:`capsim.cap.cdol_values`
   READ_RECORD  READ RECORD of each AFL record         :mod:`~capsim.reader.transaction`
   GET_PTC      GET DATA ``9F17`` (PIN try counter)    —
   PIN          nothing: waits for the PIN             :meth:`~capsim.reader.CapSession.enter_pin`
   VERIFY       VERIFY, ISO 9564 format-2 PIN block    :func:`capsim.apdu.pinblock.pin_block_iso2`
                (not in a run without a PIN)
   FIRST_AC     GENERATE AC (ARQC)                     CDOL1 filled with :func:`capsim.cap.cdol_values`
   SECOND_AC    GENERATE AC (AAC)                      CDOL2: :func:`capsim.cap.build_cdol2_data`
   ===========  =====================================  ==========================================

The whole graph, as :func:`describe` prints it:

>>> print(describe())
start                           next_candidate       -> SELECT | SELECT_PSE
PIN         entered             on_pin_entered       -> VERIFY
SELECT      OK                  on_selected          -> GPO
SELECT      NOT_FOUND           on_select_refused    -> SELECT | SELECT_PSE
SELECT      BLOCKED             on_select_blocked    -> SELECT | SELECT_PSE
SELECT      DATA_UNAVAILABLE    on_select_refused    -> SELECT | SELECT_PSE
SELECT_PSE  OK                  on_pse_selected      -> SELECT | READ_PSE
SELECT_PSE  NOT_FOUND           on_pse_end           -> SELECT
SELECT_PSE  BLOCKED             on_pse_end           -> SELECT
SELECT_PSE  DATA_UNAVAILABLE    on_pse_end           -> SELECT
SELECT_PSE  OTHER               on_pse_end           -> SELECT
READ_PSE    OK                  on_pse_record        -> SELECT | READ_PSE
READ_PSE    NOT_FOUND           on_pse_end           -> SELECT
READ_PSE    RECORD_NOT_FOUND    on_pse_end           -> SELECT
READ_PSE    OTHER               on_pse_end           -> SELECT
GPO         OK                  on_gpo               -> READ_RECORD
READ_RECORD OK                  on_record            -> READ_RECORD | GET_PTC
GET_PTC     OK                  on_ptc               -> PIN | VERIFY | FIRST_AC
GET_PTC     NOT_FOUND           on_ptc_unavailable   -> PIN | VERIFY | FIRST_AC
GET_PTC     RECORD_NOT_FOUND    on_ptc_unavailable   -> PIN | VERIFY | FIRST_AC
GET_PTC     DATA_UNAVAILABLE    on_ptc_unavailable   -> PIN | VERIFY | FIRST_AC
GET_PTC     OTHER               on_ptc_unavailable   -> PIN | VERIFY | FIRST_AC
VERIFY      OK                  on_verified          -> FIRST_AC
VERIFY      PIN_RETRY           on_wrong_pin         -> (raises)
VERIFY      PIN_BLOCKED         on_wrong_pin         -> (raises)
FIRST_AC    OK                  on_first_ac          -> SECOND_AC | DONE
SECOND_AC   OK                  on_second_ac         -> DONE
SECOND_AC   NOT_FOUND           on_second_ac         -> DONE
SECOND_AC   RECORD_NOT_FOUND    on_second_ac         -> DONE
SECOND_AC   BLOCKED             on_second_ac         -> DONE
SECOND_AC   DATA_UNAVAILABLE    on_second_ac         -> DONE
SECOND_AC   PIN_RETRY           on_second_ac         -> DONE
SECOND_AC   PIN_BLOCKED         on_second_ac         -> DONE
SECOND_AC   OTHER               on_second_ac         -> DONE
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from capsim.apdu.response import ResponseApdu
from capsim.reader.phases import Answer, Phase, Step
from capsim.reader.run import Run
from capsim.reader.selection import (
    next_candidate,
    on_pse_end,
    on_pse_record,
    on_pse_selected,
    on_select_blocked,
    on_select_refused,
    on_selected,
)
from capsim.reader.transaction import (
    on_first_ac,
    on_gpo,
    on_pin_entered,
    on_ptc,
    on_ptc_unavailable,
    on_record,
    on_second_ac,
    on_verified,
    on_wrong_pin,
)

__all__ = ["ENTER_PIN", "START", "TRANSITIONS", "Edge", "Handler", "PinEntered", "Start", "describe"]

#: What a handler is: the run and the card's answer in, the next step out.
Handler = Callable[[Run, ResponseApdu], Step]


@dataclass(frozen=True, slots=True)
class Edge:
    """One row of the graph: the handler of an answer, and the phases it may move to."""

    handler: Handler
    to: tuple[Phase, ...]


@dataclass(frozen=True, slots=True)
class Start:
    """How a session begins: the first step, and the phases it may be in."""

    handler: Callable[[Run], Step]
    to: tuple[Phase, ...]


@dataclass(frozen=True, slots=True)
class PinEntered:
    """How the ``PIN`` phase ends: the PIN's block in, the next step out (rule 4)."""

    handler: Callable[[Run, bytes], Step]
    to: tuple[Phase, ...]


def _edge(handler: Handler, *to: Phase) -> Edge:
    return Edge(handler, to)


_SELECT_NEXT: Final = (Phase.SELECT, Phase.SELECT_PSE)  # the next candidate, else the PSE
_READ_PSE_ON: Final = (Phase.READ_PSE, Phase.SELECT)  # the next directory record, or its entries
_RECORD_ON: Final = (Phase.READ_RECORD, Phase.GET_PTC)  # the next record, or the PIN's turn
# wait for the PIN, VERIFY it, or the cryptogram in a run without a PIN
_PIN_ON: Final = (Phase.PIN, Phase.VERIFY, Phase.FIRST_AC)

#: The first step of every session (theory of operation, rule 1).
START: Final = Start(next_candidate, _SELECT_NEXT)

#: The way out of the ``PIN`` phase: the PIN was entered (rule 4).
ENTER_PIN: Final = PinEntered(on_pin_entered, (Phase.VERIFY,))

#: The state graph (rules 1–3): (phase, answer class) → edge. Read-only.
TRANSITIONS: Final[Mapping[tuple[Phase, Answer], Edge]] = MappingProxyType(
    {
        # ---- application selection (selection.py)
        (Phase.SELECT, Answer.OK): _edge(on_selected, Phase.GPO),
        (Phase.SELECT, Answer.NOT_FOUND): _edge(on_select_refused, *_SELECT_NEXT),
        (Phase.SELECT, Answer.BLOCKED): _edge(on_select_blocked, *_SELECT_NEXT),
        (Phase.SELECT, Answer.DATA_UNAVAILABLE): _edge(on_select_refused, *_SELECT_NEXT),
        (Phase.SELECT_PSE, Answer.OK): _edge(on_pse_selected, *_READ_PSE_ON),
        (Phase.SELECT_PSE, Answer.NOT_FOUND): _edge(on_pse_end, Phase.SELECT),
        (Phase.SELECT_PSE, Answer.BLOCKED): _edge(on_pse_end, Phase.SELECT),
        (Phase.SELECT_PSE, Answer.DATA_UNAVAILABLE): _edge(on_pse_end, Phase.SELECT),
        (Phase.SELECT_PSE, Answer.OTHER): _edge(on_pse_end, Phase.SELECT),
        (Phase.READ_PSE, Answer.OK): _edge(on_pse_record, *_READ_PSE_ON),
        (Phase.READ_PSE, Answer.NOT_FOUND): _edge(on_pse_end, Phase.SELECT),
        (Phase.READ_PSE, Answer.RECORD_NOT_FOUND): _edge(on_pse_end, Phase.SELECT),
        (Phase.READ_PSE, Answer.OTHER): _edge(on_pse_end, Phase.SELECT),
        # ---- transaction (transaction.py)
        (Phase.GPO, Answer.OK): _edge(on_gpo, Phase.READ_RECORD),  # an AFL is never empty
        (Phase.READ_RECORD, Answer.OK): _edge(on_record, *_RECORD_ON),
        (Phase.GET_PTC, Answer.OK): _edge(on_ptc, *_PIN_ON),
        (Phase.GET_PTC, Answer.NOT_FOUND): _edge(on_ptc_unavailable, *_PIN_ON),
        (Phase.GET_PTC, Answer.RECORD_NOT_FOUND): _edge(on_ptc_unavailable, *_PIN_ON),
        (Phase.GET_PTC, Answer.DATA_UNAVAILABLE): _edge(on_ptc_unavailable, *_PIN_ON),
        (Phase.GET_PTC, Answer.OTHER): _edge(on_ptc_unavailable, *_PIN_ON),
        (Phase.VERIFY, Answer.OK): _edge(on_verified, Phase.FIRST_AC),
        (Phase.VERIFY, Answer.PIN_RETRY): _edge(on_wrong_pin),
        (Phase.VERIFY, Answer.PIN_BLOCKED): _edge(on_wrong_pin),
        (Phase.FIRST_AC, Answer.OK): _edge(on_first_ac, Phase.SECOND_AC, Phase.DONE),
        # the closing AAC ends the run whatever the card answers
        **{(Phase.SECOND_AC, answer): _edge(on_second_ac, Phase.DONE) for answer in Answer},
    }
)


def _phases(to: tuple[Phase, ...]) -> str:
    order = list(Phase)
    return " | ".join(p.name for p in sorted(to, key=order.index)) or "(raises)"


def describe() -> str:
    """The graph as text, one edge a line: phase, answer class (or how the phase ends), handler,
    next phases."""
    lines = [
        f"{'start':<31} {START.handler.__name__:<20} -> {_phases(START.to)}",
        f"{'PIN':<11} {'entered':<19} {ENTER_PIN.handler.__name__:<20} -> {_phases(ENTER_PIN.to)}",
    ]
    lines.extend(
        f"{phase.name:<11} {answer.name:<19} {edge.handler.__name__:<20} -> {_phases(edge.to)}"
        for (phase, answer), edge in TRANSITIONS.items()
    )
    return "\n".join(lines)
