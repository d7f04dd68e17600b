"""Running the battery and reporting it: :func:`run_probe`, :class:`ProbeReport`.

Theory of operation
-------------------
1. :func:`run_probe` runs the selected rows of :data:`~capsim.probe.checks.CHECKS` in order
   against one adapter. A row whose needs the adapter lacks is ``skip`` with the reason. A
   row that raises a capsim error other than :class:`~capsim.errors.TemporaryFailure` is
   ``error`` with the error's message (the verifier refused a step the check needs); a
   temporary failure (the verifier went away) stops the run and propagates.
2. :class:`ProbeReport` is plain data: :meth:`ProbeReport.text` for people (one line per check,
   its evidence indented under it), :meth:`ProbeReport.to_dict` for ``--json``.
   :attr:`ProbeReport.failed` is true when any check is ``fail`` or ``error``: the command then
   exits 14.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capsim.errors import CapsimError, TemporaryFailure, ValidationError
from capsim.probe.checks import CHECKS, CHECKS_BY_NAME
from capsim.probe.lab import Lab
from capsim.probe.model import Check, Outcome, ProbeOptions, Status

__all__ = ["CheckResult", "ProbeReport", "run_probe", "select_checks"]


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """A check and its outcome."""

    check: Check
    outcome: Outcome
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.check.name,
            "title": self.check.title,
            "proves": self.check.proves,
            "sources": list(self.check.sources),
            "status": self.outcome.status.value,
            "summary": self.outcome.summary,
            "evidence": list(self.outcome.evidence),
            "data": dict(self.outcome.data),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    """The results of one run (module docstring, rule 2)."""

    target: str
    template: str
    limits: dict[str, int]
    results: tuple[CheckResult, ...]

    @property
    def failed(self) -> bool:
        return any(r.outcome.status.failed for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(r.outcome.status is s for r in self.results) for s in Status}

    def status(self, name: str) -> Status:
        """The status of the check ``name`` (for tests and scripts)."""
        for r in self.results:
            if r.check.name == name:
                return r.outcome.status
        raise ValidationError(f"check: {name!r} did not run")

    def text(self) -> str:
        limits = ", ".join(f"{k} {v}" for k, v in self.limits.items())
        lines = [
            f"capsim probe: {self.target}",
            f"card template {self.template}; claimed policy: {limits}",
            "",
        ]
        for r in self.results:
            sources = ", ".join(r.check.sources)
            lines.append(
                f"{r.outcome.status.value.upper():5}  {r.check.name}: {r.outcome.summary} [{sources}]"
            )
            lines.extend(f"         {line}" for line in r.outcome.evidence)
        c = self.counts()
        lines += [
            "",
            f"{len(self.results)} checks: {c['pass']} passed, {c['fail']} failed, {c['error']} errors, "
            f"{c['warn']} warnings, {c['skip']} skipped",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "template": self.template,
            "limits": dict(self.limits),
            "checks": [r.to_dict() for r in self.results],
            "counts": self.counts(),
            "failed": self.failed,
        }


def select_checks(names: Sequence[str] = ()) -> tuple[Check, ...]:
    """The rows named (all when none), in table order; an unknown name is a ``ValidationError``."""
    if not names:
        return CHECKS
    unknown = sorted(set(names) - set(CHECKS_BY_NAME))
    if unknown:
        raise ValidationError(
            f"--check: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS_BY_NAME)}"
        )
    wanted = set(names)
    return tuple(c for c in CHECKS if c.name in wanted)


def _run_one(lab: Lab, check: Check, options: ProbeOptions) -> Outcome:
    why = check.needs.missing(lab.adapter)
    if why is not None:
        return Outcome(status=Status.SKIP, summary=why)
    try:
        return check.run(lab, options)
    except TemporaryFailure:
        raise
    except CapsimError as exc:
        return Outcome(status=Status.ERROR, summary=f"the check could not finish: {exc}")


def run_probe(lab: Lab, checks: Sequence[Check] = CHECKS, options: ProbeOptions | None = None) -> ProbeReport:
    """Run ``checks`` against ``lab.adapter`` (module docstring, rule 1)."""
    options = options or ProbeOptions()
    results = []
    for check in checks:
        start = time.perf_counter()
        outcome = _run_one(lab, check, options)
        results.append(CheckResult(check=check, outcome=outcome, seconds=time.perf_counter() - start))
    return ProbeReport(
        target=lab.adapter.name,
        template=lab.template,
        limits=lab.adapter.limits.to_dict(),
        results=tuple(results),
    )
