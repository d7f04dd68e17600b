"""The uniform-reject timing check: can an attacker tell reject classes apart by time (V30)?

Theory of operation
-------------------
1. **Classes.** A verifier refuses a code for many reasons; V30 makes every refusal the same
   answer *and the same cost*, so neither the message nor the time tells an attacker whether
   a credential or operation exists. The check times pairs of classes that differ only in
   what the attacker wants to learn: a *locked* credential against an *unknown* one
   (does this user have a card?), and a *consumed* operation against an *unknown* one
   (was this operation ever issued?) when the adapter can issue operations.
2. **Sampling.** ``timing_samples`` presentations per class, after a warm-up round, in an
   order shuffled with a seeded generator (the seed is reported), so a drift of the machine's
   speed over time lands on every class alike. Each presentation is timed around the
   adapter's ``submit`` with :func:`time.perf_counter_ns`; every one must be a ``REJECT``.
3. **Test.** The two-sided Mann-Whitney U test (:func:`mann_whitney_u`: normal approximation
   with tie and continuity corrections; no distribution is assumed, so outliers from a busy
   machine do not dominate as they would a t-test), at ``timing_alpha`` divided by the number
   of comparisons (Bonferroni). A p-value below it means the classes' times differ.
4. **Verdict.** A difference is a ``warn``, not a ``fail``, unless ``--strict-timing``: shared
   and virtual machines are noisy, and a probe that fails at random would be ignored. An
   accepted code among the samples is always a ``fail``.
"""

from __future__ import annotations

import math
import random
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle

from capsim.probe.adapter import OperationRequest, Target, Verdict
from capsim.probe.binding import issue
from capsim.probe.counters import present_wrong, wrong_codes
from capsim.probe.lab import Lab, Trail
from capsim.probe.model import Outcome, ProbeOptions, Status

__all__ = ["Comparison", "check_uniform_reject_timing", "mann_whitney_u"]

_WARMUP = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """One pair of reject classes and the test's result."""

    first: str
    second: str
    median_first_us: float
    median_second_us: float
    u: float
    p_value: float

    def text(self) -> str:
        return (
            f"{self.first} vs {self.second}: median {self.median_first_us:.1f} µs vs "
            f"{self.median_second_us:.1f} µs, U = {self.u:.1f}, p = {self.p_value:.4g}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "first": self.first,
            "second": self.second,
            "median_first_us": round(self.median_first_us, 3),
            "median_second_us": round(self.median_second_us, 3),
            "u": self.u,
            "p_value": self.p_value,
        }


def mann_whitney_u(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """The U statistic of ``xs`` and the two-sided p-value (normal approximation).

    Ties get average ranks and the variance their correction; a continuity correction of 1/2
    is applied. Identical samples give p = 1.

    >>> u, p = mann_whitney_u([1, 2, 3, 4, 5, 6, 7, 8], [11, 12, 13, 14, 15, 16, 17, 18])
    >>> u, round(p, 5)
    (0.0, 0.00094)
    >>> mann_whitney_u([1, 1, 1], [1, 1, 1])
    (4.5, 1.0)
    """
    n1, n2 = len(xs), len(ys)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = sorted([(float(v), 0) for v in xs] + [(float(v), 1) for v in ys])
    n = n1 + n2
    rank_sum = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        average = (i + j + 2) / 2  # ranks are 1-based
        rank_sum += average * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        size = j - i + 1
        tie_term += size**3 - size
        i = j + 1
    u = rank_sum - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return u, 1.0
    delta = u - mean
    corrected = max(abs(delta) - 0.5, 0.0)
    z = corrected / math.sqrt(variance)
    return u, min(1.0, math.erfc(z / math.sqrt(2)))


def _classes(lab: Lab) -> tuple[dict[str, Target], Trail]:
    """Targets of the reject classes (module docstring, rule 1)."""
    setup = lab.trail()
    locked = lab.subject()
    present_wrong(setup, locked, lab.adapter.limits.max_fail, "lock")
    targets = {"locked credential": locked.login, "unknown credential": lab.adapter.unknown("credential")}
    if "respond" in lab.adapter.modes:
        used = lab.subject()
        op = issue(lab, used, OperationRequest(mode="respond"))
        code = used.code_for(op)
        setup.submit("consume an operation", op.target, code.code, expect=Verdict.ACCEPT)
        targets["consumed operation"] = op.target
        targets["unknown operation"] = lab.adapter.unknown("operation")
    return targets, setup


def check_uniform_reject_timing(lab: Lab, options: ProbeOptions) -> Outcome:
    """Reject classes take the same time (module docstring)."""
    targets, setup = _classes(lab)
    if not setup.ok:
        return Outcome(
            status=Status.ERROR,
            summary="the reject classes could not be set up",
            evidence=setup.evidence(),
        )
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    rng = random.Random(seed)
    names = list(targets)
    codes = cycle(list(wrong_codes("31415926")))
    schedule = [name for name in names for _ in range(_WARMUP)]
    measured = [name for name in names for _ in range(options.timing_samples)]
    rng.shuffle(measured)
    samples: dict[str, list[float]] = {name: [] for name in names}
    accepted = 0
    for index, name in enumerate(schedule + measured):
        code = next(codes)
        rid = lab.rid()
        start = time.perf_counter_ns()
        verdict = lab.adapter.submit(targets[name], code, request_id=rid)
        elapsed = (time.perf_counter_ns() - start) / 1000
        if verdict is not Verdict.REJECT:
            accepted += 1
        if index >= len(schedule):
            samples[name].append(elapsed)
    pairs = [("locked credential", "unknown credential"), ("consumed operation", "unknown operation")]
    comparisons = []
    for first, second in pairs:
        if first in samples and second in samples:
            u, p = mann_whitney_u(samples[first], samples[second])
            comparisons.append(
                Comparison(
                    first=first,
                    second=second,
                    median_first_us=statistics.median(samples[first]),
                    median_second_us=statistics.median(samples[second]),
                    u=u,
                    p_value=p,
                )
            )
    threshold = options.timing_alpha / len(comparisons)
    evidence = [
        f"{options.timing_samples} samples per class, interleaved (seed {seed}); "
        f"Mann-Whitney U, two-sided, alpha {options.timing_alpha} / {len(comparisons)} comparisons",
        *(c.text() for c in comparisons),
    ]
    data = {
        "seed": seed,
        "samples": options.timing_samples,
        "threshold": threshold,
        "comparisons": [c.to_dict() for c in comparisons],
    }
    if accepted:
        evidence.append(f"{accepted} sample(s) were not refused")
        return Outcome(
            status=Status.FAIL,
            summary="a reject-class sample was not refused",
            evidence=tuple(evidence),
            data=data,
        )
    smallest = min(comparisons, key=lambda c: c.p_value)
    if smallest.p_value < threshold:
        status = Status.FAIL if options.strict_timing else Status.WARN
        summary = f"{smallest.first} and {smallest.second} differ in time (p = {smallest.p_value:.3g})"
        if not options.strict_timing:
            summary += "; a warning (--strict-timing makes it a failure)"
        return Outcome(status=status, summary=summary, evidence=tuple(evidence), data=data)
    return Outcome(
        status=Status.PASS,
        summary=f"no timing difference between reject classes (smallest p = {smallest.p_value:.3g})",
        evidence=tuple(evidence),
        data=data,
    )
