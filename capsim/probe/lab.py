"""The probe's bench: emulated cards enrolled through an adapter, and the trail of what was tried.

Theory of operation
-------------------
1. **Cards.** :meth:`Lab.subject` personalises a fresh emulated card
   (:func:`capsim.cards.new_card`) from a built-in template with the issuer keys the verifier
   holds, under a new PAN (a private test range, Luhn-valid) or a given one, puts the reader
   (:class:`capsim.reader.CapReader` over :class:`capsim.transports.inprocess.InProcessTransport`)
   in front of it, and enrols it through the adapter with its first Identify code. Every check
   gets cards of its own, so a lock or an ATC jump in one check never leaks into another.
2. **Codes** are made the way a cardholder makes them: the reader, the card's PIN (fixed,
   never shown) and what the verifier displayed (:meth:`Subject.code_for`). Every code
   advances the card's ATC, as on a real card; a code made and never presented is how a check
   builds a stale or a far-future ATC.
3. **The trail** (:class:`Trail`) presents codes through the adapter and records each step: what
   was presented (the ATC, never the code), the verdict and the verdict a conforming verifier
   gives. A check passes when every step got its expected verdict; the steps are its evidence.
4. Users are ``probe-<run>-<n>``; request ids ``probe-<run>-r<n>``: a probe run never reuses
   another run's names, so probing the same database twice is safe.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from capsim.probe.adapter import Issued, OperationRequest, Target, Verdict, VerifierAdapter

if TYPE_CHECKING:
    from capsim.cards import EmvCapCard
    from capsim.issuerkeys import IssuerKeys
    from capsim.reader import CapReader, CapResult

__all__ = ["PIN", "Lab", "Step", "Subject", "Trail", "luhn_pan", "wrong_code"]

#: The PIN of every emulated card of a probe run (the reader needs one; it is never shown).
PIN: Final = "1234"
#: Issuer identification number of the probe's cards: a private test range.
_IIN: Final = "999909"


def luhn_pan(body: str) -> str:
    """``body`` followed by its Luhn check digit.

    >>> luhn_pan("541333900000151")
    '5413339000001513'
    """
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def wrong_code(code: str) -> str:
    """A well-formed code that is not ``code``: its last digit moved by 5.

    >>> wrong_code("12345678")
    '12345673'
    """
    return code[:-1] + str((int(code[-1]) + 5) % 10)


@dataclass
class Subject:
    """One emulated card enrolled with the verifier under probe."""

    card: EmvCapCard
    reader: CapReader
    credential: str
    user: str
    pan: str
    psn: str
    template: str
    #: The ATC of the last code the card made (the enrolment code first).
    atc: int = -1

    @property
    def login(self) -> Target:
        """The credential as the target of an Identify login."""
        return Target("credential", self.credential)

    def _took(self, result: CapResult) -> CapResult:
        self.atc = result.atc
        return result

    def identify(self) -> CapResult:
        return self._took(self.reader.identify(PIN))

    def respond(self, challenge: str) -> CapResult:
        return self._took(self.reader.respond(PIN, challenge))

    def sign(self, challenge: str | None, amount: int | None, currency: str | None) -> CapResult:
        return self._took(self.reader.sign(PIN, challenge, amount, currency))

    def tds(self, fields: tuple[str, ...]) -> CapResult:
        return self._took(self.reader.sign_data(PIN, list(fields)))

    def make(self, request: OperationRequest, challenge: str = "") -> CapResult:
        """The code a reader shows for ``request`` with ``challenge`` (what the user keys in)."""
        mode = request.mode
        if mode == "identify":
            return self.identify()
        if mode == "respond":
            return self.respond(challenge)
        if mode == "sign":
            return self.sign(challenge or None, request.amount_minor, request.currency)
        return self.tds(request.fields)

    def code_for(self, issued: Issued) -> CapResult:
        """The honest code for an operation the verifier issued."""
        return self.make(issued.request, issued.challenge)

    def skip(self, count: int) -> None:
        """Advance the card's ATC by ``count`` codes that are never presented."""
        for _ in range(count):
            self.identify()


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """One code presented: what it was, the verdict, the verdicts a conforming verifier gives."""

    what: str
    verdict: Verdict
    expected: frozenset[Verdict]

    @property
    def ok(self) -> bool:
        return self.verdict in self.expected

    def text(self) -> str:
        want = "/".join(sorted(v.value.upper() for v in self.expected))
        mark = "ok" if self.ok else "UNEXPECTED"
        return f"{self.what}: {self.verdict.value.upper()} (expected {want}) {mark}"

    def to_dict(self) -> dict[str, object]:
        return {
            "what": self.what,
            "verdict": self.verdict.value,
            "expected": sorted(v.value for v in self.expected),
            "ok": self.ok,
        }


@dataclass
class Trail:
    """The steps of one check (module docstring, rule 3)."""

    lab: Lab
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def submit(
        self,
        what: str,
        target: Target,
        code: str,
        *,
        expect: Verdict | Collection[Verdict],
        request_id: str | None = None,
    ) -> Verdict:
        """Present ``code`` for ``target`` and record the step."""
        rid = request_id if request_id is not None else self.lab.rid()
        verdict = self.lab.adapter.submit(target, code, request_id=rid)
        wanted = frozenset({expect} if isinstance(expect, Verdict) else expect)
        self.steps.append(Step(what=what, verdict=verdict, expected=wanted))
        return verdict

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def evidence(self) -> tuple[str, ...]:
        return (*self.notes, *(step.text() for step in self.steps))


class Lab:
    """Cards, users and request ids of one probe run (module docstring).

    Parameters
    ----------
    adapter:
        The verifier under probe.
    keys:
        The issuer keys the verifier holds (its ``issuer_key_id`` is the adapter's business).
    template:
        The built-in card template of the run's cards (a check may ask for another).
    """

    def __init__(self, adapter: VerifierAdapter, keys: IssuerKeys, *, template: str = "secur-acces") -> None:
        self.adapter = adapter
        self.keys = keys
        self.template = template
        self.run_id = secrets.token_hex(4)
        self._users = 0
        self._rids = 0

    def rid(self) -> str:
        """A request id never used before (module docstring, rule 4)."""
        self._rids += 1
        return f"probe-{self.run_id}-r{self._rids}"

    def user(self) -> str:
        self._users += 1
        return f"probe-{self.run_id}-{self._users}"

    def new_pan(self) -> str:
        return luhn_pan(_IIN + f"{secrets.randbelow(10**9):09d}")

    def trail(self) -> Trail:
        return Trail(self)

    def subject(
        self, *, template: str | None = None, user: str | None = None, pan: str | None = None, psn: str = "00"
    ) -> Subject:
        """A new card (module docstring, rule 1), enrolled with its first Identify code."""
        from capsim.cards import new_card
        from capsim.reader import CapReader
        from capsim.transports.inprocess import InProcessTransport

        name = template or self.template
        pan = pan or self.new_pan()
        card = new_card(
            name,
            pan=pan,
            psn=psn,
            pin=PIN,
            imk_ac=self.keys.imk_ac,
            imk_smi=self.keys.imk_smi,
            imk_smc=self.keys.imk_smc,
        )
        reader = CapReader(InProcessTransport(card))
        owner = user or self.user()
        first = reader.identify(PIN)
        credential = self.adapter.enroll(card, user=owner, first_code=first.code)
        return Subject(
            card=card,
            reader=reader,
            credential=credential,
            user=owner,
            pan=pan,
            psn=psn,
            template=name,
            atc=first.atc,
        )
