"""Experiments that change the analysed card's state: ``capsim analyze --allow-state-changes``.

Theory of operation
-------------------
1. **Said first.** :func:`plan` counts, before anything is sent, what the experiments cost:
   one GENERATE AC run per ATC (every run's GET PROCESSING OPTIONS counts one), and one PIN
   try for the VERIFY probe. The command shows it and asks before running (:class:`Plan`).
2. **The learning run** goes first: one PIN-verified Identify run. Its ARQC IAD gives the
   card's CVN and IAD variants (:func:`capsim.analysis.card.with_arqc_iad`), and it checks the
   PIN before any other try is spent. It also lets the card's history bits (a new card's flag)
   settle before the pairs are compared.
3. **The VERIFY probe** (``--probe-pin`` only): one run with a PIN that is not the given one;
   the card's answer to it and the learning run's answer to the right PIN are the VERIFY
   answers. It spends one PIN try; the next right VERIFY (a pair run, or one more Identify
   run when there is no pair) gives it back.
4. **The pairs**: every non-control pair the derivation says collides
   (:func:`capsim.analysis.confusion.derive`) is run on the card, one run after the other.
   Their codes are at two ATCs and always differ, so they are not compared. What the card
   MACs besides the ATC is compared instead: the GENERATE AC command data (the CDOL1 data the
   reader sent) and the CID and IAD the card answered. All equal: at one ATC the card computes
   the same AC and so the same code (confirmed on the card).
5. Nothing else is kept: no code, no AC, no PIN; the evidence is which of the three were
   equal and the status words.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Final

from capsim.analysis.card import CardDescription, with_arqc_iad
from capsim.analysis.confusion import ConfusionCase, confusion_cases, derive
from capsim.analysis.emulate import session_for, verify_sw
from capsim.errors import CapsimError, ValidationError
from capsim.profiles import ReaderProfile
from capsim.reader import CapReader, CapResult, CardLink
from capsim.reader.session import CapSession
from capsim.verifier.engine import MatchRequest
from capsim.verifier.model import OperationMode

__all__ = ["OnCard", "PairResult", "Plan", "plan", "run_plan"]

_GENERATE_AC: Final = 0xAE
_IDENTIFY: Final = MatchRequest(mode=OperationMode.IDENTIFY)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What the experiments will do and cost (step 1)."""

    pairs: tuple[ConfusionCase, ...]
    probe_pin: bool

    @property
    def generate_acs(self) -> int:
        """PIN-verified runs to GENERATE AC: the learning run, two per pair, one to restore a
        try when the probe is not followed by a pair."""
        return 1 + 2 * len(self.pairs) + (1 if self.probe_pin and not self.pairs else 0)

    @property
    def atcs(self) -> int:
        """ATCs the runs use (the probe's run stops at VERIFY but has had its GPO)."""
        return self.generate_acs + (1 if self.probe_pin else 0)

    @property
    def pin_tries(self) -> int:
        """PIN tries the probe spends (given back by the next right VERIFY)."""
        return 1 if self.probe_pin else 0

    def describe(self) -> str:
        """The sentence shown before asking (step 1)."""
        text = (
            f"this runs {self.generate_acs} GENERATE AC on the card (its ATC goes up by {self.atcs}): "
            f"one to learn its CVN and IAD, two for each of {len(self.pairs)} colliding pair(s)"
        )
        if self.probe_pin:
            text += (
                "; the VERIFY probe sends one wrong PIN: it spends 1 PIN try, given back by the next "
                "right PIN"
            )
        return text


def plan(card: CardDescription, *, probe_pin: bool) -> Plan:
    """The experiments for ``card`` (steps 1 and 4): its derived, colliding, non-control pairs."""
    cred = card.credential_profile()
    pairs = tuple(c for c in confusion_cases(cred) if not c.control and derive(cred, c)["collides"])
    return Plan(pairs=pairs, probe_pin=probe_pin)


@dataclass(frozen=True, kw_only=True)
class PairResult:
    """One pair run on the card (step 4): confirmed when all three are equal."""

    equal: bool
    evidence: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class OnCard:
    """What the experiments measured."""

    card: CardDescription
    arqc_iad: bytes
    pairs: dict[str, PairResult] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    generate_acs: int = 0
    atcs: int = 0
    pin_tries_spent: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts and the IAD learnt (step 5)."""
        return {
            "generate_acs": self.generate_acs,
            "atcs": self.atcs,
            "pin_tries_spent": self.pin_tries_spent,
            "arqc_iad": self.arqc_iad.hex().upper(),
            "cvn": self.card.cvn,
        }


def _gac_data(transcript: tuple[tuple[bytes, bytes], ...]) -> bytes | None:
    for command, _ in transcript:
        if len(command) > 5 and command[1] == _GENERATE_AC:
            return command[5 : 5 + command[4]]
    return None


def _run(
    link: CardLink, card: CardDescription, reader: ReaderProfile, request: MatchRequest, pin: str
) -> tuple[CapResult, CapSession]:
    session = session_for(request, reader, pin=pin)
    result = CapReader(link, reader, aid=card.aid).run(session)
    return result, session


def _pair(
    link: CardLink, card: CardDescription, reader: ReaderProfile, case: ConfusionCase, pin: str
) -> PairResult:
    a, sa = _run(link, card, reader, case.first, pin)
    b, sb = _run(link, card, reader, case.second, pin)
    data_a, data_b = _gac_data(sa.transcript), _gac_data(sb.transcript)
    # public card data (the reader's CDOL1 data, the CID and IAD), never a code or an AC
    same_data = data_a is not None and data_a == data_b
    same_iad = a.iad == b.iad
    same_cid = a.cid == b.cid
    return PairResult(
        equal=same_data and same_iad and same_cid,
        evidence={
            "generate_ac_data_equal": same_data,
            "iad_equal": same_iad,
            "cid_equal": same_cid,
            "atcs": [a.atc, b.atc],
        },
    )


def _wrong_pin(pin: str) -> str:
    """A PIN of the same length that is not ``pin``."""
    wrong = "0" * len(pin)
    return wrong if wrong != pin else "1" * len(pin)


def run_plan(link: CardLink, card: CardDescription, reader: ReaderProfile, todo: Plan, pin: str) -> OnCard:
    """Run ``todo`` on the connected card (steps 2-4); the card's new description is ``.card``.

    Raises
    ------
    ValidationError
        The card's IAD has neither the VIS nor the M/Chip shape (its CVN stays unknown).
    CapsimError
        What a CAP run raises: a wrong PIN in the learning run (one try spent, nothing else
        done), a blocked card, the transport's errors.
    """
    learned, learn_session = _run(link, card, reader, _IDENTIFY, pin)
    card = with_arqc_iad(card, learned.iad)
    if card.cvn is None:
        raise ValidationError(
            f"card: its IAD {learned.iad.hex().upper()} has neither the VIS nor the M/Chip layout; "
            "the CVN stays unknown"
        )
    runs, atcs, verify = 1, 1, None
    if todo.probe_pin:
        probe = session_for(_IDENTIFY, reader, pin=_wrong_pin(pin))
        with contextlib.suppress(CapsimError):  # a wrong PIN ends the run: the transcript has the answer
            CapReader(link, reader, aid=card.aid).run(probe)
        atcs += 1
        wrong, right = verify_sw(probe.transcript), verify_sw(learn_session.transcript)
        verify = {
            "wrong_pin_sw": wrong,
            "right_pin_sw": right,
            "reveals": wrong is not None and right is not None and wrong != right,
        }
    pairs = {}
    for case in todo.pairs:
        pairs[case.id] = _pair(link, card, reader, case, pin)
        runs, atcs = runs + 2, atcs + 2
    if todo.probe_pin and not todo.pairs:
        _run(link, card, reader, _IDENTIFY, pin)  # give the probe's try back
        runs, atcs = runs + 1, atcs + 1
    return OnCard(
        card=card,
        arqc_iad=learned.iad,
        pairs=pairs,
        verify=verify,
        generate_acs=runs,
        atcs=atcs,
        pin_tries_spent=todo.pin_tries,
    )
