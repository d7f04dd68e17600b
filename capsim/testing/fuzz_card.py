"""``capsim fuzz card``: structured and random APDU sequences against any card.

The targets (``inproc:``, ``file:``, ``pcsc:``, ``py:``) and the guard that keeps a real card
safe are in :mod:`capsim.testing.fuzz_card_target`; the grammar of the sequences is in
:mod:`capsim.testing.fuzz_card_gen`. A PIV card (``inproc:piv``, a PIV card file) has its own
grammar and model (:mod:`capsim.testing.fuzz_piv`, :mod:`capsim.testing.fuzz_piv_model`).
This module runs them.

Theory of operation
-------------------
1. Example ``i`` of a run seeded ``s`` is the sequence
   ``SequenceGenerator(info).draw(example_random(s, i))``: a function of ``s`` and ``i`` only.
   Examples run one after the other until ``max_examples``, the time budget, or
   ``max_findings`` failing examples.
2. Every example is a prologue (SELECT the application, GET DATA ``9F36`` and ``9F17``; for
   a PIV card SELECT PIV and a status VERIFY) and the drawn sequence, sent to the target's
   card (a fresh one for ``inproc:`` and ``py:``). Each exchange goes through
   :class:`capsim.testing.model.CardModel` (a PIV card:
   :class:`capsim.testing.fuzz_piv_model.PivModel`); the first broken invariant ends the
   example. An in-process card that raises is an ``exception`` violation.
3. A failing sequence is cut after the step that broke the invariant, then minimised by delta
   debugging (:func:`minimise`): chunks of steps, then single steps, are removed while the
   sequence still breaks the same invariant (on a fresh card for ``inproc:`` and ``py:``; on
   the same card for ``file:`` and ``pcsc:``, at most :data:`MAX_SHRINK_RUNS` reruns). The
   minimal sequence is run once more and saved as a finding (duplicates, same invariant and
   detail, are reported once). A PIV finding also records the counters the card persisted
   after each exchange (meta ``persisted``), so its replay checks them against the answers.
4. The report carries a SHA-256 digest of every command sent and every power cycle, in order
   (:class:`~capsim.testing.fuzz_engine.FuzzReport`): two runs with the same seed and the same
   number of examples on cards that answer the same have the same digest.
5. Nothing here imports Hypothesis; it stays for the strategies tests use
   (:func:`~capsim.testing.fuzz_card_gen.actions`, :mod:`capsim.testing.strategies`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from capsim.cards import CardOS
from capsim.errors import CapsimError, ValidationError
from capsim.testing.findings import Finding, save_finding
from capsim.testing.fuzz_card_gen import SequenceGenerator, actions, example_random, transactions
from capsim.testing.fuzz_card_target import (
    _GET_ATC,
    _GET_PTC,
    _POWER,
    SAFE_INS,
    Action,
    CardInfo,
    CardTarget,
    StateChangeGuard,
    _CrashError,
    discover_card_info,
    is_state_changing,
    open_emv_target,
)
from capsim.testing.fuzz_engine import FuzzReport, _Run, run_engine
from capsim.testing.model import CardModel, Violation, parse_pin_block

if TYPE_CHECKING:
    from capsim.testing.fuzz_piv import PivSequenceGenerator
    from capsim.testing.fuzz_piv_model import PivModel

__all__ = [
    "SAFE_INS",
    "Action",
    "CardInfo",
    "CardTarget",
    "FuzzReport",
    "SequenceGenerator",
    "StateChangeGuard",
    "actions",
    "discover_card_info",
    "example_random",
    "fuzz_card",
    "is_state_changing",
    "minimise",
    "open_card_target",
    "replay_card_finding",
    "run_card_sequence",
    "run_engine",
    "transactions",
]

_log = logging.getLogger(__name__)

#: The PIV prologue's status VERIFY (tries left; no PIN sent).
_PIV_STATUS = bytes.fromhex("00200080")
#: Most sequence runs :func:`minimise` spends on one failure.
MAX_SHRINK_RUNS = 2000


def _prologue(info: CardInfo) -> list[Action]:
    select = bytes((0x00, 0xA4, 0x04, 0x00, len(info.aid))) + info.aid + b"\x00"
    if info.kind == "piv":
        return [select, _PIV_STATUS]
    return [select, _GET_ATC, _GET_PTC]


def _model(info: CardInfo, probe: Callable[[], object] | None, run: _Run) -> CardModel | PivModel:
    """The reference model of the card's kind (rule 2)."""
    if info.kind == "piv":
        from capsim.testing.fuzz_piv_model import PivModel

        return PivModel(info, probe=probe, log=run.counters)
    return CardModel(aid=info.aid, pin=info.pin, pin_try_limit=info.pin_try_limit)


def _generator(info: CardInfo, max_steps: int) -> SequenceGenerator | PivSequenceGenerator:
    """The grammar of the card's kind (rule 1)."""
    if info.kind == "piv":
        from capsim.testing.fuzz_piv import PivSequenceGenerator

        return PivSequenceGenerator(info, max_steps=max_steps)
    return SequenceGenerator(info, max_steps=max_steps)


def run_card_sequence(
    target: CardTarget,
    steps: Sequence[Action],
    *,
    allow_state_changes: bool = False,
    run: _Run | None = None,
) -> tuple[Violation | None, _Run]:
    """Run the prologue and ``steps`` on ``target``; return the first violation and the record
    (``run.steps_done``: how many of ``steps`` ran)."""
    run = run if run is not None else _Run()
    info = target.info
    model = _model(info, target.probe, run)
    exchanges = run.exchanges
    observe = model.observe
    found: list[Violation] = []

    def record(cmd: bytes, rsp: bytes) -> None:  # the guard's own GET DATA 9F17 reads
        exchanges.append((cmd, rsp))
        violation = observe(cmd, rsp)
        if violation is not None and not found:
            found.append(violation)

    guard = (
        StateChangeGuard(target.exchange, allow_state_changes=allow_state_changes, observe=record)
        if target.guarded
        else None
    )
    try:
        target.begin()
    except _CrashError as crash:
        return Violation(invariant="exception", detail=f"the card raised {crash} at power-on"), run
    if not isinstance(model, CardModel):
        model.start()
    prologue = _prologue(info)
    first_step = len(prologue)
    exchange = target.exchange
    violation: Violation | None = None
    for position, step in enumerate((*prologue, *steps)):
        if step == _POWER:
            try:
                target.power_cycle()
            except _CrashError as crash:
                detail = f"the card raised {crash} in a power cycle"
                violation = Violation(invariant="exception", detail=detail, index=len(exchanges))
            else:
                model.power_cycle()
                run.power_cycles.append(len(exchanges))
        else:
            try:
                answer = exchange(step) if guard is None else guard(step)
            except ValidationError:  # the transport refused to send it (e.g. under 4 bytes over PC/SC)
                run.refused += 1
                continue
            except _CrashError as crash:
                exchanges.append((step, b""))
                detail = f"the card raised {crash}"
                violation = Violation(invariant="exception", detail=detail, index=len(exchanges) - 1)
            else:
                if answer is None:  # refused by the guard
                    run.refused += 1
                else:
                    exchanges.append((step, answer))
                    violation = observe(step, answer)
        if found:  # the guard's own GET DATA 9F17 read came first
            violation = found[0]
        if violation is not None:
            run.steps_done = max(0, position + 1 - first_step)
            return violation, run
    run.steps_done = len(steps)
    return None, run


def minimise(
    steps: Sequence[Action], fails: Callable[[list[Action]], bool], *, max_runs: int = 0
) -> list[Action]:
    """The shortest sublist of ``steps`` delta debugging finds for which ``fails`` holds
    (module docstring, rule 3): chunks of half the list, then smaller, are removed while
    ``fails`` still holds; it ends when no single step can be removed, or after ``max_runs``
    calls (default :data:`MAX_SHRINK_RUNS`). ``fails(list(steps))`` is assumed.

    >>> minimise(list(range(20)), lambda s: 3 in s and 17 in s)
    [3, 17]
    """
    budget = max_runs or MAX_SHRINK_RUNS
    current = list(steps)
    runs = 0
    size = max(1, len(current) // 2)
    while current and runs < budget:
        removed = False
        start = 0
        while start < len(current) and runs < budget:
            candidate = current[:start] + current[start + size :]
            runs += 1
            if fails(candidate):
                current = candidate
                removed = True
            else:
                start += size
        if not removed:
            if size == 1:
                break
            size = max(1, size // 2)
        else:
            size = max(1, min(size, len(current) // 2))
    return current


def _digest_run(digest: hashlib._Hash, run: _Run) -> None:
    """Add one example's commands and power cycles to the run's digest (rule 4)."""
    cycles = set(run.power_cycles)
    parts = [b"\xfe"]  # example boundary
    for i, (cmd, _) in enumerate(run.exchanges):
        if i in cycles:
            parts.append(b"\xff")
        parts.append(len(cmd).to_bytes(2, "big") + cmd)
    if len(run.exchanges) in cycles:
        parts.append(b"\xff")
    digest.update(b"".join(parts))


def _redact_pin(exchanges: list[tuple[bytes, bytes]], pin: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """VERIFY blocks carrying the card's real PIN become ``FF`` (the replay transport accepts them)."""
    out = []
    for cmd, rsp in exchanges:
        if pin is not None and len(cmd) == 13 and cmd[1] == 0x20 and parse_pin_block(cmd[5:]) == pin:
            out.append((cmd[:5] + b"\xff" * 8, rsp))
        else:
            out.append((cmd, rsp))
    return tuple(out)


def _redact_piv(exchanges: list[tuple[bytes, bytes]], info: CardInfo) -> tuple[tuple[bytes, bytes], ...]:
    """A PIV card's real PIN and PUK, wherever they appear padded in a command, become ``FF``s."""
    from capsim.cards.piv import pad_reference

    secrets = [pad_reference(v) for v in (info.pin, info.puk) if v is not None]
    out = []
    for cmd, rsp in exchanges:
        redacted = cmd
        for secret in secrets:
            redacted = redacted.replace(secret, b"\xff" * len(secret))
        out.append((redacted, rsp))
    return tuple(out)


def fuzz_card(
    target: CardTarget,
    *,
    seed: int = 0,
    max_examples: int = 2000,
    time_budget: float | None = 60.0,
    allow_state_changes: bool = False,
    findings_dir: str | os.PathLike[str] | None = None,
    max_steps: int = 30,
    on_progress: Callable[[int, int, int], None] | None = None,
    max_findings: int = 1,
    clock: Callable[[], float] = time.monotonic,
) -> FuzzReport:
    """Fuzz ``target`` (module docstring) and return a :class:`FuzzReport`.

    Parameters
    ----------
    seed:
        Seed of the sequences: the same seed repeats the run on a card that behaves the same.
    max_examples, time_budget:
        Stop after this many examples or seconds, whichever comes first.
    allow_state_changes:
        Guarded targets only: let state-changing commands through (VERIFY still needs PTC ≥ 2).
    findings_dir:
        Where findings are saved as transcripts (not saved when ``None``). For ``pcsc:`` and
        ``file:`` targets a VERIFY carrying the card's known PIN is saved with an all-``FF``
        block (the ``replay:`` transport accepts any block in its place).
    max_steps:
        Most parts (transactions or single actions) in one sequence.
    on_progress:
        Called as ``on_progress(examples, apdus, findings)`` after each example.
    max_findings:
        Stop after this many failing examples (duplicates, same invariant and detail, are
        reported once).
    """
    if max_examples < 1:
        raise ValidationError("max_examples: expected a positive number of examples")
    if time_budget is not None and time_budget <= 0:
        raise ValidationError("time_budget: expected a positive number of seconds")
    generator = _generator(target.info, max_steps)
    digest = hashlib.sha256()
    started = clock()
    deadline = None if time_budget is None else started + time_budget
    examples = apdus = refused = failures = 0
    stopped = "max-examples"
    findings: list[Finding] = []
    reported: set[tuple[str, str]] = set()
    for index in range(max_examples):
        if deadline is not None and clock() >= deadline:
            stopped = "time-budget"
            break
        steps = generator.draw(example_random(seed, index))
        violation, run = run_card_sequence(target, steps, allow_state_changes=allow_state_changes)
        _digest_run(digest, run)
        examples += 1
        apdus += len(run.exchanges)
        refused += run.refused
        if violation is not None:
            failures += 1
            finding = _shrunk_finding(
                target, steps[: run.steps_done], violation, seed=seed, index=index, allow=allow_state_changes
            )
            key = (finding.invariant, finding.detail)
            if key not in reported:
                reported.add(key)
                if findings_dir is not None:
                    finding = save_finding(findings_dir, finding)
                _log.info("finding: %s", finding.summary())
                findings.append(finding)
            if failures >= max_findings:
                stopped = "finding"
                break
        if on_progress is not None:
            on_progress(examples, apdus, len(findings))
    if on_progress is not None:
        on_progress(examples, apdus, len(findings))
    return FuzzReport(
        fuzzer="card",
        target=target.spec,
        seed=seed,
        examples=examples,
        apdus=apdus,
        elapsed=clock() - started,
        findings=tuple(findings),
        refused=refused,
        stopped=stopped,
        digest=digest.hexdigest(),
    )


def _shrunk_finding(
    target: CardTarget,
    steps: list[Action],
    violation: Violation,
    *,
    seed: int,
    index: int,
    allow: bool,
) -> Finding:
    """Minimise a failing sequence (rule 3) and make it a finding."""

    def attempt(candidate: Sequence[Action]) -> tuple[Violation | None, _Run]:
        return run_card_sequence(target, candidate, allow_state_changes=allow)

    def fails(candidate: list[Action]) -> bool:
        found, _ = attempt(candidate)
        return found is not None and found.invariant == violation.invariant

    shrunk = minimise(steps, fails)
    final, run = attempt(shrunk)
    if final is None or final.invariant != violation.invariant:  # a card that does not repeat itself
        final, run = attempt(steps)
        shrunk = steps
    if final is None:  # not even the original sequence fails again: report what was seen first
        final = violation
    # a real PIN (pcsc:, file:) never reaches a finding; inproc:/py: test PINs stay replayable
    real_pin = target.transport is not None or target.spec.startswith("file:")
    info = target.info
    if info.kind == "piv":
        exchanges = _redact_piv(run.exchanges, info) if real_pin else tuple(run.exchanges)
    else:
        exchanges = _redact_pin(run.exchanges, info.pin if real_pin else None)
    return Finding(
        fuzzer="card",
        target=target.spec,
        seed=seed,
        invariant=final.invariant,
        detail=final.detail,
        exchanges=exchanges,
        power_cycles=tuple(run.power_cycles),
        meta={
            "card": info.kind,
            "allow_state_changes": "yes" if allow else "no",
            "example": str(index),
            "shrunk": f"{len(shrunk)} of {len(steps)} steps",
            **({"persisted": " ".join(f"{a}/{b}" for a, b in run.counters)} if run.counters else {}),
        },
    )


def _parse_counters(text: str) -> list[tuple[int, int]] | None:
    """A finding's ``persisted`` counters (``"3/3 2/3 …"``), or ``None`` when there are none."""
    try:
        pairs = [item.split("/") for item in text.split()]
        return [(int(a), int(b)) for a, b in pairs] or None
    except ValueError:
        return None


def replay_card_finding(
    finding: Finding, *, target: CardTarget | None = None, info: CardInfo | None = None
) -> Violation | None:
    """Check a saved card finding again.

    Without ``target`` the recorded answers are played back through
    :class:`~capsim.transports.replay.ReplayTransport` and checked by the model; with
    ``target`` the recorded commands are sent to it (a fresh card) and its answers checked.
    Returns the violation seen, or ``None`` when the sequence now passes.
    """
    from capsim.transports.replay import RecordedSession, ReplayTransport

    cycles = set(finding.power_cycles)
    if target is not None:
        try:
            target.begin()
        except _CrashError as crash:
            return Violation(invariant="exception", detail=f"the card raised {crash} at power-on")
        send: Callable[[bytes], bytes] = target.exchange
        power: Callable[[], None] = target.power_cycle
        known = info or target.info
        probe = target.probe
    else:
        replay = ReplayTransport(RecordedSession(exchanges=finding.exchanges), synthesize_pin=False)
        replay.connect()
        send = replay.transmit
        power = _nothing
        known = info or CardInfo(
            aid=finding.exchanges[0][0][5:-1] if finding.exchanges else b"",
            kind=finding.meta.get("card", "emv"),
        )
        probe = None
    model: CardModel | PivModel
    if known.kind == "piv":
        from capsim.testing.fuzz_piv_model import PivModel

        recorded = None if probe is not None else _parse_counters(finding.meta.get("persisted", ""))
        model = PivModel(known, probe=probe, recorded=recorded)
        model.start()
    else:
        model = CardModel(aid=known.aid or None, pin=known.pin, pin_try_limit=known.pin_try_limit)
    for i, (cmd, _) in enumerate(finding.exchanges):
        if i in cycles:
            try:
                power()
            except _CrashError as crash:
                return Violation(
                    invariant="exception", detail=f"the card raised {crash} in a power cycle", index=i
                )
            model.power_cycle()
        try:
            answer = send(cmd)
        except _CrashError as crash:
            return Violation(invariant="exception", detail=f"the card raised {crash}", index=i)
        except CapsimError:
            raise
        violation = model.observe(cmd, answer)
        if violation is not None:
            return violation
    return None


def _nothing() -> None:
    return None


def _piv_py_target(
    spec: str, factory: Callable[[], CardOS], sample: CardOS, guarded: bool
) -> CardTarget | None:
    from capsim.cards.piv import PivCard
    from capsim.testing.fuzz_piv import py_piv_target

    return py_piv_target(spec, factory, sample, guarded=guarded) if isinstance(sample, PivCard) else None


def open_card_target(spec: str, *, pin: str | None = None, guarded: bool | None = None) -> CardTarget:
    """Open a ``--target`` spec: ``inproc:piv``, ``file:`` of a PIV card file and ``py:`` PIV
    factories open a PIV target (:mod:`capsim.testing.fuzz_piv`), everything else an EMV one
    (:func:`capsim.testing.fuzz_card_target.open_emv_target`)."""
    from capsim.testing.fuzz_piv import is_piv_spec, open_piv_target

    if isinstance(spec, str) and is_piv_spec(spec):
        return open_piv_target(spec, pin=pin, guarded=guarded)
    return open_emv_target(spec, pin=pin, guarded=guarded, other_card=_piv_py_target)
