"""What a probe check is and what it answers: :class:`Check`, :class:`Outcome`, :class:`Status`.

Theory of operation
-------------------
1. A check is **data**: a name, what it proves, the verifier.md requirements it comes from,
   what it needs from the adapter (:class:`~capsim.probe.adapter.Capabilities`) and a function
   ``run(lab, options) -> Outcome``. The function does no I/O of its own: it makes codes with
   the lab's emulated cards and presents them through the lab's adapter.
2. An outcome has a :class:`Status`: ``pass``; ``fail`` (a step got a verdict a conforming
   verifier never gives, or the verifier accepted what it must refuse); ``warn`` (a measurement
   suggests a weakness but a noisy machine could cause it, e.g. the timing test without
   ``--strict-timing``); ``skip`` (the adapter cannot run it, with the reason); ``error`` (the
   check could not finish: the verifier refused a step the check needs, e.g. an enrolment).
   ``fail`` and ``error`` make ``capsim probe`` exit 14.
3. Evidence is text a reviewer can follow (which code, at which ATC, for which target, what
   came back) and never holds a code, a key, a PIN or a PAN.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capsim.probe.adapter import Capabilities

if TYPE_CHECKING:
    from capsim.probe.lab import Lab, Trail

__all__ = ["Check", "CheckFunction", "Outcome", "ProbeOptions", "Status", "from_trail"]


class Status(enum.Enum):
    """A check's result (module docstring, rule 2)."""

    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"

    @property
    def failed(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    """Knobs of a run.

    Attributes
    ----------
    strict_timing:
        A timing difference fails the timing check instead of warning.
    timing_samples:
        Samples per reject class of the timing check.
    timing_alpha:
        The family-wise significance level of the timing check (Bonferroni over its comparisons).
    seed:
        Seed of the timing check's interleaving (``None``: a random one, reported).
    """

    strict_timing: bool = False
    timing_samples: int = 50
    timing_alpha: float = 0.01
    seed: int | None = None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one check found."""

    status: Status
    summary: str
    evidence: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


CheckFunction = Callable[["Lab", ProbeOptions], Outcome]


@dataclass(frozen=True, kw_only=True)
class Check:
    """One check of the battery (module docstring, rule 1)."""

    name: str
    title: str
    proves: str
    sources: tuple[str, ...]
    run: CheckFunction
    needs: Capabilities = field(default_factory=Capabilities)


def from_trail(trail: Trail, *, passed: str, failed: str, **data: Any) -> Outcome:
    """``pass`` with ``passed`` when every step of ``trail`` got its expected verdict, else
    ``fail`` with ``failed``; the steps are the evidence."""
    ok = trail.ok
    return Outcome(
        status=Status.PASS if ok else Status.FAIL,
        summary=passed if ok else failed,
        evidence=trail.evidence(),
        data={"steps": [s.to_dict() for s in trail.steps], **data},
    )
