"""The reader's vocabulary: where a session is (:class:`Phase`), what the card answered
(:class:`Answer`), what a handler decides (:class:`Step`), and the session's limits.

Theory of operation
===================

1. A :class:`Phase` names the command a session waits an answer to; ``DONE`` and ``ERROR``
   are terminal. ``PIN`` alone waits for no card answer: the session waits for the
   cardholder's PIN (:meth:`capsim.reader.CapSession.enter_pin`), asked only once the card
   has shown that its PIN is not blocked.
2. An :class:`Answer` classifies a status word alone (:meth:`Answer.of`); the data of the
   answer is the handler's business.
3. A handler returns a :class:`Step`: the next phase and the command that waits in it
   (none for ``DONE`` and ``PIN``). The session checks the phase against the graph
   (:data:`capsim.reader.graph.TRANSITIONS`) before it accepts the step.
4. The limits bound what a hostile card can make a session do.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, NamedTuple

from capsim.apdu.command import CommandApdu

__all__ = ["MAX_COMMANDS", "MAX_IAD", "MAX_RECORDS", "MAX_RESPONSE", "Answer", "Phase", "Step"]

#: Most commands one session sends after its first.
MAX_COMMANDS: Final = 128
#: Most records read over the AFL.
MAX_RECORDS: Final = 64
#: Largest response (data bytes) accepted from the card.
MAX_RESPONSE: Final = 4096
#: Largest IAD accepted in a GENERATE AC response (cap-protocol.md §6 step 1).
MAX_IAD: Final = 32


class Phase(Enum):
    """Where a :class:`~capsim.reader.CapSession` is (the command it waits an answer to)."""

    SELECT = "select"
    SELECT_PSE = "select-pse"
    READ_PSE = "read-pse"
    GPO = "gpo"
    READ_RECORD = "read-record"
    GET_PTC = "get-ptc"
    PIN = "pin"  # waiting for the cardholder's PIN, not for the card
    VERIFY = "verify"
    FIRST_AC = "first-ac"
    SECOND_AC = "second-ac"
    DONE = "done"
    ERROR = "error"


class Answer(Enum):
    """A card answer, classified by its status word only.

    >>> [Answer.of(sw).value for sw in (0x9000, 0x6A82, 0x63C1, 0x6A81, 0x6D00, 0x6985)]
    ['ok', 'not-found', 'pin-retry', 'blocked', 'data-unavailable', 'other']
    """

    OK = "ok"  # 9000
    NOT_FOUND = "not-found"  # 6A82
    RECORD_NOT_FOUND = "record-not-found"  # 6A83
    BLOCKED = "blocked"  # 6283 application blocked, 6A81 card blocked (on SELECT)
    DATA_UNAVAILABLE = "data-unavailable"  # 6A88, 6D00, 6E00 (GET DATA not supported)
    PIN_RETRY = "pin-retry"  # 63Cx
    PIN_BLOCKED = "pin-blocked"  # 6983, 6984
    OTHER = "other"

    @classmethod
    def of(cls, sw: int) -> Answer:
        """Classify a status word."""
        if sw == 0x9000:
            return cls.OK
        if sw == 0x6A82:
            return cls.NOT_FOUND
        if sw == 0x6A83:
            return cls.RECORD_NOT_FOUND
        if sw in (0x6283, 0x6A81):
            return cls.BLOCKED
        if sw in (0x6A88, 0x6D00, 0x6E00):
            return cls.DATA_UNAVAILABLE
        if sw & 0xFFF0 == 0x63C0:
            return cls.PIN_RETRY
        if sw in (0x6983, 0x6984):
            return cls.PIN_BLOCKED
        return cls.OTHER


class Step(NamedTuple):
    """A handler's decision: go to ``phase`` and send ``command`` (``None`` only for ``DONE``
    and ``PIN``)."""

    phase: Phase
    command: CommandApdu | None = None
