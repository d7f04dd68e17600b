"""``capsim fuzz reader`` and ``capsim fuzz serve``: a hostile card against a terminal.

``fuzz reader`` runs capsim's own :class:`~capsim.reader.CapReader` against a
:class:`~capsim.testing.hostile.HostileCard` in process, with a Hypothesis-drawn mutation plan
and CAP inputs (mode, challenge, amount, currency, TDS fields). Invariants:

1. ``exception``: the reader returns a :class:`~capsim.reader.CapResult` or raises a
   :class:`~capsim.errors.CapsimError`; nothing else escapes;
2. ``hang``: it gives up within :data:`MAX_APDUS` exchanges (61xx/6Cxx loops included);
3. ``honest``: with an all-honest plan it returns a code (the card works);
4. ``code``: a returned code is only decimal digits.

Findings are the card-side transcripts, replayable with :func:`replay_reader_finding`
(the reader runs again over the ``replay:`` transport and must fail the same way).

``fuzz serve`` serves the same hostile card through vpcd (:mod:`capsim.transports.vpcd`) with
mutations drawn from a seeded :class:`random.Random`, so that any PC/SC program (a reader
implementation under test) can be fuzzed while the user runs it; see :func:`serve_hostile`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

from hypothesis import strategies as st

from capsim.cards import EmvCapCard, new_card
from capsim.errors import CapsimError, ValidationError
from capsim.testing.findings import Finding, save_finding
from capsim.testing.fuzz_engine import FuzzReport, _FailedError, _Run, run_engine
from capsim.testing.hostile import HostileCard, Mutation, MutationKind, mutations, random_mutation
from capsim.testing.model import Violation
from capsim.testing.strategies import amounts, challenges, currencies, tds_fields
from capsim.transports.base import TransportBase, redact_command
from capsim.transports.inprocess import (
    TEST_IMK_AC,
    TEST_IMK_SMC,
    TEST_IMK_SMI,
    TEST_PAN,
    TEST_PIN,
    InProcessTransport,
)

__all__ = [
    "MAX_APDUS",
    "ReaderCase",
    "fuzz_reader",
    "reader_cases",
    "replay_reader_finding",
    "run_reader_case",
    "serve_hostile",
]

_log = logging.getLogger(__name__)

#: A reader that sends more APDUs than this for one code is considered hung.
MAX_APDUS = 200


@dataclass(frozen=True, kw_only=True)
class ReaderCase:
    """One example: CAP inputs and the mutation plan."""

    mode: str
    challenge: str | None = None
    amount: int | None = None
    currency: str | None = None
    fields: tuple[str, ...] | None = None
    plan: tuple[Mutation, ...] = ()

    def meta(self) -> dict[str, str]:
        """Replay parameters for a finding's metadata."""
        out = {"mode": self.mode}
        if self.challenge is not None:
            out["challenge"] = self.challenge
        if self.amount is not None:
            out["amount"] = str(self.amount)
        if self.currency is not None:
            out["currency"] = self.currency
        if self.fields is not None:
            out["fields"] = ",".join(self.fields)
        return out


@st.composite
def reader_cases(draw: st.DrawFn, *, max_plan: int = 20) -> ReaderCase:
    """Hypothesis strategy of :class:`ReaderCase` values (all four CAP modes)."""
    mode = draw(st.sampled_from(("identify", "respond", "sign", "tds")))
    plan = tuple(draw(st.lists(mutations(), max_size=max_plan)))
    if mode == "identify":
        return ReaderCase(mode=mode, plan=plan)
    if mode == "respond":
        return ReaderCase(mode=mode, challenge=draw(challenges()), plan=plan)
    if mode == "sign":
        return ReaderCase(
            mode=mode,
            challenge=draw(challenges()),
            amount=draw(amounts(max_value=10**9)),
            currency=draw(currencies()),
            plan=plan,
        )
    return ReaderCase(mode=mode, fields=draw(tds_fields()), plan=plan)


class _HangError(Exception):
    """The reader exceeded :data:`MAX_APDUS` (raised inside the transport, caught here)."""


class _Bounded(TransportBase):
    """Counts exchanges and stops a reader that never stops."""

    def __init__(self, inner: InProcessTransport, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.count = 0

    def connect(self) -> bytes:
        return self.inner.connect()

    def transmit(self, apdu: bytes) -> bytes:
        self.count += 1
        if self.count > self.limit:
            raise _HangError(f"more than {self.limit} APDUs for one code")
        return self.inner.transmit(apdu)

    def disconnect(self) -> None:
        self.inner.disconnect()


def _run_reader(transport: Any, case: ReaderCase) -> Any:
    from capsim.reader import CapReader

    reader = CapReader(transport)
    if case.mode == "identify":
        return reader.identify(TEST_PIN)
    if case.mode == "respond":
        return reader.respond(TEST_PIN, case.challenge or "0")
    if case.mode == "sign":
        return reader.sign(TEST_PIN, case.challenge or "0", case.amount, case.currency)
    return reader.sign_data(TEST_PIN, list(case.fields or ("0",)))


def _outcome(run: Callable[[], Any], *, honest: bool) -> Violation | None:
    try:
        result = run()
    except _HangError as exc:
        return Violation(invariant="hang", detail=str(exc))
    except CapsimError as exc:
        if honest:
            return Violation(invariant="honest", detail=f"an honest card gave {type(exc).__name__}: {exc}")
        return None
    except Exception as exc:  # the invariant under test: anything else is a finding
        return Violation(invariant="exception", detail=f"the reader raised {type(exc).__name__}: {exc}")
    code = getattr(result, "code", "")
    if not (isinstance(code, str) and code.isdigit()):
        return Violation(invariant="code", detail=f"the reader returned a code that is not digits: {code!r}")
    return None


def run_reader_case(card: EmvCapCard, case: ReaderCase) -> tuple[Violation | None, _Run]:
    """Run capsim's reader once against ``card`` mutated by ``case.plan``."""
    hostile = HostileCard(card, case.plan)
    transport = _Bounded(InProcessTransport(hostile), MAX_APDUS)
    honest = all(m.kind is MutationKind.HONEST for m in case.plan)
    violation = _outcome(lambda: _run_reader(transport, case), honest=honest)
    run = _Run(exchanges=[(redact_command(c), r) for c, r in hostile.exchanges])
    return violation, run


def _fresh_card_factory(profile: str) -> Callable[[], EmvCapCard]:
    first = new_card(
        profile, pan=TEST_PAN, pin=TEST_PIN, imk_ac=TEST_IMK_AC, imk_smi=TEST_IMK_SMI, imk_smc=TEST_IMK_SMC,
        rng=bytes,
    )  # fmt: skip
    profile_obj, state = first.profile, first.state
    return lambda: EmvCapCard(profile_obj, state, rng=bytes)


def fuzz_reader(
    *,
    profile: str = "secur-acces",
    seed: int = 0,
    max_examples: int = 1000,
    time_budget: float | None = 60.0,
    findings_dir: str | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
    max_findings: int = 1,
) -> FuzzReport:
    """Fuzz capsim's reader with a hostile ``profile`` card (module docstring)."""
    from capsim.cards import BUILTIN_PROFILES

    if profile not in BUILTIN_PROFILES:
        names = ", ".join(sorted(BUILTIN_PROFILES))
        raise ValidationError(f"profile: expected one of {names}, got {profile!r}")
    if max_examples < 1:
        raise ValidationError("max_examples: expected a positive number of examples")
    make = _fresh_card_factory(profile)
    cases: dict[int, ReaderCase] = {}

    def body(case: ReaderCase) -> int:
        violation, run = run_reader_case(make(), case)
        if violation is not None:
            cases[id(run)] = case
            raise _FailedError(violation, run)
        return len(run.exchanges)

    started = time.monotonic()
    examples, apdus, stopped, failures, seeds = run_engine(
        body,
        reader_cases(),
        seed=seed,
        max_examples=max_examples,
        time_budget=time_budget,
        on_example=on_progress,
        max_findings=max_findings,
    )
    findings = []
    distinct: dict[tuple[str, str], tuple[_FailedError, int]] = {}
    for failed, chunk_seed in zip(failures, seeds, strict=True):
        distinct.setdefault((failed.violation.invariant, failed.violation.detail), (failed, chunk_seed))
    for failed, chunk_seed in distinct.values():
        case = cases.get(id(failed.run))
        finding = Finding(
            fuzzer="reader",
            target=f"hostile:{profile}",
            seed=chunk_seed,
            invariant=failed.violation.invariant,
            detail=failed.violation.detail,
            exchanges=tuple(failed.run.exchanges),
            meta=case.meta() if case is not None else {},
        )
        if findings_dir is not None:
            finding = save_finding(findings_dir, finding)
        findings.append(finding)
    if on_progress is not None:
        on_progress(examples, apdus, len(findings))
    return FuzzReport(
        fuzzer="reader",
        target=f"hostile:{profile}",
        seed=seed,
        examples=examples,
        apdus=apdus,
        elapsed=time.monotonic() - started,
        findings=tuple(findings),
        stopped=stopped,
    )


def replay_reader_finding(finding: Finding) -> Violation | None:
    """Run capsim's reader again over the finding's transcript (the ``replay:`` transport).

    Returns the violation it shows now, or ``None`` when the reader now copes.
    """
    from capsim.transports.replay import RecordedSession, ReplayTransport

    meta = finding.meta
    fields = tuple(meta["fields"].split(",")) if meta.get("fields") else None
    case = ReaderCase(
        mode=meta.get("mode", "identify"),
        challenge=meta.get("challenge"),
        amount=int(meta["amount"]) if meta.get("amount") else None,
        currency=meta.get("currency"),
        fields=fields,
    )
    replay = ReplayTransport(RecordedSession(exchanges=finding.exchanges), synthesize_pin=False)
    counting = _Bounded(replay, MAX_APDUS)  # type: ignore[arg-type]
    return _outcome(lambda: _run_reader(counting, case), honest=False)


def serve_hostile(
    *,
    profile: str = "secur-acces",
    seed: int = 0,
    rate: float = 0.3,
    host: str = "127.0.0.1",
    port: int = 35963,
    slot: int = 0,
    time_budget: float | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> HostileCard:
    """Serve a hostile card through vpcd until ``time_budget`` runs out or ``stop`` is set.

    Each exchange is mutated with probability ``rate`` by :func:`random_mutation` drawn from
    ``random.Random(seed)``; the card's exchanges are kept in ``HostileCard.exchanges`` for the
    caller to save as a transcript.
    """
    from capsim.transports.vpcd import VpcdCardServer

    if not 0.0 <= rate <= 1.0:
        raise ValidationError("rate: expected a probability between 0 and 1")
    rng = random.Random(seed)  # reproducible test data, not a secret
    plan = _LazyPlan(rng, rate)
    card = HostileCard(_fresh_card_factory(profile)(), plan)
    server = VpcdCardServer(card, host=host, port=port, slot=slot)
    event = stop or threading.Event()
    started = time.monotonic()
    server.start()
    try:
        while not event.is_set():
            if time_budget is not None and time.monotonic() - started >= time_budget:
                break
            event.wait(0.25)
            if on_progress is not None:
                on_progress(len(card.exchanges))
    finally:
        server.stop()
    return card


class _LazyPlan(Sequence[Mutation]):
    """An endless plan: mutation *i* drawn from the RNG on first use."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.drawn: list[Mutation] = []

    def __len__(self) -> int:
        return 1 << 62

    @overload
    def __getitem__(self, index: int) -> Mutation: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Mutation]: ...
    def __getitem__(self, index: int | slice) -> Mutation | Sequence[Mutation]:
        if isinstance(index, slice):
            raise TypeError("index: an endless plan cannot be sliced")
        while len(self.drawn) <= index:
            self.drawn.append(random_mutation(self.rng, rate=self.rate))
        return self.drawn[index]
