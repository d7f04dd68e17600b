"""What every fuzzer shares: the report, the record of one run, and the Hypothesis engine.

Theory of operation
-------------------
1. A fuzzer runs *examples*; each exchanges some APDUs (or verifier steps) and either passes
   or breaks an invariant (:class:`~capsim.testing.model.Violation`), which the example's body
   raises as :class:`_FailedError` carrying the record of the run (:class:`_Run`).
2. :func:`run_engine` drives a body with Hypothesis examples of a strategy, in chunks of
   examples seeded one after the other (``seed``, ``seed + 1`` ...), and lets Hypothesis
   shrink a failing example to a minimal one. ``capsim fuzz reader`` and ``capsim fuzz
   verifier`` run on it; ``capsim fuzz card`` draws from a seeded :class:`random.Random`
   instead, for speed and for a sequence that depends on the seed alone
   (:mod:`capsim.testing.fuzz_card`).
3. Every fuzzer returns a :class:`FuzzReport`: counts, why it stopped, and the findings.

Hypothesis is imported only when :func:`run_engine` runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capsim.testing.findings import Finding
from capsim.testing.model import Violation

if TYPE_CHECKING:
    from hypothesis import settings
    from hypothesis.strategies import SearchStrategy

__all__ = ["FuzzReport", "run_engine"]


@dataclass(kw_only=True)
class _Run:
    """The record of one example: exchanges, power cycles (exchange indices), refusals, and
    how many of the drawn steps ran (the rest came after the first violation); for a PIV card
    with a probe, its persisted (PIN tries, PUK tries) after each exchange."""

    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)
    power_cycles: list[int] = field(default_factory=list)
    refused: int = 0
    steps_done: int = 0
    counters: list[tuple[int, int]] = field(default_factory=list)


class _FailedError(Exception):
    def __init__(self, violation: Violation, run: _Run) -> None:
        super().__init__(f"{violation.invariant}: {violation.detail}")
        self.violation = violation
        self.run = run


@dataclass(frozen=True, kw_only=True)
class FuzzReport:
    """The result of a fuzzing run.

    ``digest`` (card fuzzer only): SHA-256 of every command sent and every power cycle, in
    order; two runs with the same seed and count on cards that answer the same agree on it.
    """

    fuzzer: str
    target: str
    seed: int
    examples: int
    apdus: int
    elapsed: float
    findings: tuple[Finding, ...] = ()
    refused: int = 0
    stopped: str = "max-examples"
    digest: str | None = None

    @property
    def ok(self) -> bool:
        """No invariant broke."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "fuzzer": self.fuzzer,
            "target": self.target,
            "seed": self.seed,
            "examples": self.examples,
            "apdus": self.apdus,
            "elapsed": round(self.elapsed, 3),
            "refused": self.refused,
            "stopped": self.stopped,
            "ok": self.ok,
        }
        if self.digest is not None:
            out["digest"] = self.digest
        out["findings"] = [f.to_dict() for f in self.findings]
        return out


def _hypothesis_settings(examples: int) -> settings:
    from hypothesis import HealthCheck, Phase, Verbosity, settings

    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        phases=(Phase.generate, Phase.shrink),
    )


def run_engine(
    body: Callable[[Any], int],
    strategy: SearchStrategy[Any],
    *,
    seed: int,
    max_examples: int,
    time_budget: float | None,
    on_example: Callable[[int, int, int], None] | None = None,
    chunk: int = 100,
    clock: Callable[[], float] = time.monotonic,
    max_findings: int = 1,
) -> tuple[int, int, str, list[_FailedError], list[int]]:
    """Run ``body`` on Hypothesis examples of ``strategy`` in chunks of ``chunk`` examples,
    one chunk seed after the other (``seed``, ``seed + 1``, ...), until ``max_examples`` or
    ``time_budget`` is reached or ``max_findings`` examples failed (each shrunk by Hypothesis;
    the chunk that found one ends there and the next chunk goes on).

    ``body`` returns the number of APDUs it exchanged and raises ``_FailedError`` on a violation.
    ``on_example(examples, apdus, findings)`` is called after every passing example.
    Returns (examples, apdus, stop reason, failures, seeds of the failures).
    """
    from hypothesis import given
    from hypothesis import seed as hypothesis_seed

    start = clock()
    counts = {"examples": 0, "apdus": 0}
    failing = {"seen": False}
    failures: list[_FailedError] = []
    seeds: list[int] = []

    def over_budget() -> bool:
        return time_budget is not None and clock() - start >= time_budget

    def wrapped(value: Any) -> None:
        if not failing["seen"] and over_budget():
            return
        try:
            n = body(value)
        except _FailedError:
            failing["seen"] = True
            raise
        counts["examples"] += 1
        counts["apdus"] += n
        if on_example is not None:
            on_example(counts["examples"], counts["apdus"], len(failures))

    index = 0
    stopped = "max-examples"
    while counts["examples"] < max_examples:
        if over_budget():
            stopped = "time-budget"
            break
        n = min(chunk, max_examples - counts["examples"])
        chunk_seed = seed + index
        index += 1
        test = hypothesis_seed(chunk_seed)(_hypothesis_settings(n)(given(strategy)(wrapped)))
        before = counts["examples"]
        try:
            test()
        except Exception as exc:  # a failure, possibly wrapped by Hypothesis (flaky, groups)
            failed = _find_failure(exc)
            if failed is None:
                raise
            failures.append(failed)
            seeds.append(chunk_seed)
            failing["seen"] = False
            if len(failures) >= max_findings:
                stopped = "finding"
                break
            continue
        if counts["examples"] == before:  # nothing ran (budget reached inside the chunk)
            stopped = "time-budget"
            break
    return counts["examples"], counts["apdus"], stopped, failures, seeds


def _find_failure(exc: BaseException) -> _FailedError | None:
    """The :class:`_FailedError` in ``exc``, its exception groups or its causes."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _FailedError):
            return item
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        for linked in (item.__cause__, item.__context__):
            if linked is not None:
                todo.append(linked)
    return None
