"""The state of one CAP run: the caller's checked inputs and what the card said so far.

Theory of operation
===================

1. :func:`check_inputs` validates every input (PIN, challenge, amount, currency, TDS fields,
   profile, AID) before any command exists. A bad input raises
   :class:`~capsim.errors.ValidationError` and nothing reaches the card, so no PIN try and no
   ATC is spent. The PIN leaves this function only as an ISO 9564 format-2 block; no PIN
   (``None``) means a run without cardholder verification (no VERIFY is sent);
   :data:`ASK_PIN` means the PIN is asked for later, once the card's PIN try counter shows
   it is not blocked (the session then waits in ``Phase.PIN``; the PIN entered is checked
   and turned into its block by :meth:`capsim.reader.CapSession.enter_pin`).
2. :class:`Run` is the mutable record the handlers of :mod:`capsim.reader.graph` read and
   write: the selection queue, the FCI, the records' values, the terminal's CDOL values, the
   first GENERATE AC and the warnings. It does no I/O and decides nothing about phases; the
   handlers decide, the session enforces the graph.
3. :meth:`Run.start` orders the candidate applications: an explicit AID alone (with its
   profile, or :data:`~capsim.profiles.DEFAULT_READER_PROFILE` and a warning when no profile
   knows it), else every AID of the named profile, or of every built-in profile in preference
   order. Either way a card is read with the profile
   :func:`capsim.profiles.default_reader_profile` gives for its AID unless one is named, which
   is the profile its card template names (tests/cards/test_reader_profile.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, NamedTuple

from capsim.apdu.pinblock import pin_block_iso2
from capsim.cap import CapMode, canonical_challenge, currency_numeric, parse_amount, validate_tds_fields
from capsim.errors import LocalProtocolError, ValidationError
from capsim.profiles import (
    DEFAULT_READER_PROFILE,
    READER_PROFILES,
    CodeFunction,
    ReaderProfile,
    get_reader_profile,
    profile_for_aid,
)
from capsim.reader.result import Explanation
from capsim.tlv import DolEntry

__all__ = ["ASK_PIN", "Candidate", "FirstAc", "InputError", "Inputs", "PinEntry", "Run", "check_inputs"]

_log = logging.getLogger("capsim.reader")


class InputError(ValidationError):
    """Caller input the card's data turned out to need (not card misbehaviour)."""


class PinEntry(Enum):
    """A PIN not given up front (rule 1)."""

    ASK = "ask"


#: ``CapSession(pin=ASK_PIN)``: ask for the PIN only when the card is ready for it (rule 1).
ASK_PIN: Final = PinEntry.ASK


@dataclass(frozen=True)
class Candidate:
    """An application to try, with the reader profile it would be read with."""

    aid: bytes
    profile: ReaderProfile


@dataclass(frozen=True, repr=False)
class Inputs:
    """The caller's inputs, checked (rule 1). ``repr`` shows no PIN material."""

    mode: CapMode
    pin_block: bytes | None
    challenge: str | None = None
    amount: int | None = None
    currency: str | None = None
    fields: tuple[str, ...] = ()
    profile: ReaderProfile | None = None
    aid: bytes | None = None
    #: The amount was a decimal string scaled by the currency's decimals (not by the default 2).
    amount_scaled_by_currency: bool = False
    ask_pin: bool = False

    def __repr__(self) -> str:
        return f"Inputs(mode={self.mode.value}, profile={self.profile.name if self.profile else None})"

    @property
    def verifies(self) -> bool:
        """True when the run verifies the cardholder's PIN (given now or asked for later)."""
        return self.pin_block is not None or self.ask_pin


def check_inputs(
    mode: CapMode | str,
    *,
    pin: str | PinEntry | None,
    challenge: str | None = None,
    amount: int | str | None = None,
    currency: str | None = None,
    fields: Sequence[str] | None = None,
    profile: ReaderProfile | str | None = None,
    aid: bytes | None = None,
) -> Inputs:
    """The checked :class:`Inputs` of a run (rule 1; parameters as :class:`~capsim.reader.CapSession`).

    Raises
    ------
    ValidationError
        Any bad input.
    """
    try:
        cap_mode = CapMode(mode)
    except ValueError:
        raise ValidationError(
            f"mode: expected one of {', '.join(m.value for m in CapMode)}, got {mode!r}"
        ) from None
    ask_pin = pin is ASK_PIN
    pin_block = None if pin is None or isinstance(pin, PinEntry) else pin_block_iso2(pin)
    canonical = None if challenge is None else canonical_challenge(challenge)
    if cap_mode is CapMode.RESPOND and canonical is None:
        raise ValidationError("challenge: respond needs a challenge of 1 to 8 digits")
    if cap_mode is not CapMode.SIGN and (amount is not None or currency is not None):
        raise ValidationError(f"amount/currency: only sign takes them, not {cap_mode.value}")
    if cap_mode in (CapMode.IDENTIFY, CapMode.TDS) and challenge is not None:
        raise ValidationError(f"challenge: {cap_mode.value} takes no challenge")
    minor: int | None = None
    if cap_mode is CapMode.SIGN:
        if currency is not None:
            currency_numeric(currency)
        if amount is not None:
            minor = parse_amount(amount, currency)
    checked_fields: tuple[str, ...] = ()
    if cap_mode is CapMode.TDS:
        if fields is None:
            raise ValidationError("fields: tds needs 1 to 10 data fields")
        checked_fields = validate_tds_fields(fields)
    elif fields is not None:
        raise ValidationError(f"fields: only tds takes data fields, not {cap_mode.value}")
    if isinstance(profile, str):
        profile = get_reader_profile(profile)
    elif profile is not None and not isinstance(profile, ReaderProfile):
        raise ValidationError("profile: expected a ReaderProfile, a profile name or None")
    if aid is not None and (not isinstance(aid, bytes) or not 5 <= len(aid) <= 16):
        raise ValidationError("aid: expected 5 to 16 bytes")
    scaled = isinstance(amount, str) and currency is not None
    return Inputs(
        cap_mode, pin_block, canonical, minor, currency, checked_fields, profile, aid, scaled, ask_pin=ask_pin
    )


class FirstAc(NamedTuple):
    """The first GENERATE AC's answer and the code made from it (cap-protocol.md §6–§8)."""

    cid: int
    atc: bytes
    ac: bytes
    iad: bytes
    code: str
    explanation: Explanation
    tds_mac: bytes | None
    ipb: bytes | None
    code_function: CodeFunction


@dataclass
class Run:
    """What one run knows (rule 2). Built by :meth:`start`; changed only by the graph's handlers."""

    inputs: Inputs
    candidates: list[Candidate]
    current: Candidate
    warnings: list[str] = field(default_factory=list)
    # application selection
    tried: set[bytes] = field(default_factory=set)
    blocked: list[bytes] = field(default_factory=list)
    pse_done: bool = False
    pse_sfi: int = 0
    pse_record: int = 0
    pse_entries: list[tuple[bytes, int, str]] = field(default_factory=list)
    # the selected application and what it said
    selected: Candidate | None = None
    fci: Mapping[int, bytes] = field(default_factory=dict)
    records: list[tuple[int, int]] = field(default_factory=list)
    current_sfi: int = 0
    card: dict[int, bytes] = field(default_factory=dict)
    values: dict[int, bytes] = field(default_factory=dict)
    cdol1: tuple[DolEntry, ...] = ()
    pin_block: bytes | None = field(default=None, repr=False)
    first_ac: FirstAc | None = None

    @classmethod
    def start(cls, inputs: Inputs) -> Run:
        """A run before its first command, candidates ordered (rule 3)."""
        warnings: list[str] = []
        if inputs.aid is not None:
            chosen = inputs.profile or profile_for_aid(inputs.aid)
            if chosen is None:
                chosen = READER_PROFILES[DEFAULT_READER_PROFILE]
                message = (
                    f"AID {inputs.aid.hex().upper()} is unknown to the built-in profiles: using {chosen.name}"
                )
                _log.info("CAP: %s", message)
                warnings.append(message)
            candidates = [Candidate(inputs.aid, chosen)]
        else:
            pool = [inputs.profile] if inputs.profile is not None else list(READER_PROFILES.values())
            candidates = [Candidate(a, p) for p in pool for a in p.aids]
        return cls(
            inputs,
            candidates,
            candidates[0],
            warnings=warnings,
            pse_done=inputs.aid is not None,
            pin_block=inputs.pin_block,
        )

    def warn(self, message: str) -> None:
        """Add a warning for the result (and log it; warnings never carry secrets)."""
        _log.info("CAP: %s", message)
        self.warnings.append(message)

    @property
    def mode(self) -> CapMode:
        """The CAP function of the run."""
        return self.inputs.mode

    @property
    def application(self) -> Candidate:
        """The selected application and its reader profile."""
        if self.selected is None:  # the graph never asks before SELECT succeeded
            raise LocalProtocolError("CAP session: no application is selected yet")
        return self.selected

    @property
    def profile(self) -> ReaderProfile:
        """The reader profile of the selected application."""
        if self.selected is None:
            raise LocalProtocolError("CAP session: no application is selected yet")
        return self.selected.profile

    def iaf0(self) -> int:
        """The first IAF byte: a record's ``9F55``, else the FCI's, else the profile's default."""
        iaf = self.card.get(0x9F55)
        if iaf is None:
            iaf = self.fci.get(0x9F55)
        if not iaf:
            return self.profile.iaf_default[0]
        return iaf[0]
