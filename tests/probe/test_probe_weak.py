"""Each deliberately weakened verifier is reported by the check named after its weakness, and
only the checks that can see it fail; capsim's own verifier passes the same checks."""

from __future__ import annotations

from typing import Any

import pytest

import capsim.verifier.separation as separation
from capsim.probe import (
    CHECKS,
    Lab,
    LibraryAdapter,
    Limits,
    ProbeOptions,
    Status,
    Target,
    Verdict,
    run_probe,
    select_checks,
)
from capsim.verifier.memory import MemoryStore
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.service import Verifier
from tests.probe.conftest import KEYS, lab_for, provider
from tests.probe.weak import ForgetfulRequestIds, ReplayingVerifier, SiblingBypass, SlowOnKnownTargets

FAST = ProbeOptions(timing_samples=20, seed=7)


def _report(
    verifier: Verifier, names: list[str], *, limits: Limits | None = None, options: ProbeOptions = FAST
):
    return run_probe(lab_for(verifier, limits=limits), select_checks(names), options)


def _verifier(cls: type[Verifier] = Verifier, **policy: Any) -> Verifier:
    return cls(MemoryStore(), provider(), policy=VerifierPolicy(**policy))


def test_replay_allowed_is_reported_by_the_replay_check() -> None:
    report = _report(_verifier(ReplayingVerifier), ["replay-same-operation", "replay-other-operation"])
    assert report.status("replay-same-operation") is Status.FAIL
    assert report.failed
    # the code accepted twice is named in the evidence (as a step, never the code itself)
    (result,) = [r for r in report.results if r.check.name == "replay-same-operation"]
    assert (
        "the same code again, new request id: ACCEPT (expected REJECT) UNEXPECTED" in result.outcome.evidence
    )
    assert _report(_verifier(), ["replay-same-operation"]).status("replay-same-operation") is Status.PASS


def test_no_domain_separation_is_reported_by_the_separation_check(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _report(_verifier(), ["separation"]).status("separation") is Status.PASS
    monkeypatch.setattr(separation, "check_operation", lambda profile, request: None)
    report = _report(_verifier(), ["separation", "cross-mode", "wrong-amount"])
    assert report.status("separation") is Status.FAIL
    assert report.status("cross-mode") is Status.PASS  # a non-zero amount is still bound
    assert report.status("wrong-amount") is Status.PASS
    (result,) = [r for r in report.results if r.check.name == "separation"]
    assert any(
        "an identify code for it" in line and "ACCEPT (expected REJECT)" in line
        for line in result.outcome.evidence
    )


@pytest.mark.parametrize("real", [4, 6])
def test_a_lockout_off_by_one_is_reported_by_the_lockout_check(real: int) -> None:
    report = _report(
        _verifier(max_fail=real), ["lockout-count", "replay-same-operation"], limits=Limits(max_fail=5)
    )
    assert report.status("lockout-count") is Status.FAIL
    assert report.status("replay-same-operation") is Status.PASS
    exact = _report(_verifier(max_fail=real), ["lockout-count"])  # claimed = real: exact
    assert exact.status("lockout-count") is Status.PASS


def test_a_wider_atc_window_than_claimed_is_reported() -> None:
    report = _report(_verifier(atc_window=17, max_atc_gap=16), ["far-future-atc"], limits=Limits())
    assert report.status("far-future-atc") is Status.FAIL
    report = _report(_verifier(atc_window=16, max_atc_gap=15), ["far-future-atc"], limits=Limits())
    assert report.status("far-future-atc") is Status.FAIL  # the login edge at 16 is refused


def test_ignored_request_ids_are_reported_by_the_request_id_check() -> None:
    report = _report(_verifier(ForgetfulRequestIds), ["request-id-reuse", "stale-atc"])
    assert report.status("request-id-reuse") is Status.FAIL
    assert report.status("stale-atc") is Status.PASS


def test_a_lock_bypass_through_a_sibling_is_reported() -> None:
    report = _report(_verifier(SiblingBypass), ["sibling-lock-bypass", "cross-credential"])
    assert report.status("sibling-lock-bypass") is Status.FAIL
    assert report.status("cross-credential") is Status.PASS


def test_a_timing_leak_warns_and_fails_only_when_strict() -> None:
    verifier = _verifier(SlowOnKnownTargets)
    lenient = _report(verifier, ["uniform-reject-timing"])
    assert lenient.status("uniform-reject-timing") is Status.WARN
    assert not lenient.failed
    strict = _report(
        verifier,
        ["uniform-reject-timing"],
        options=ProbeOptions(timing_samples=20, seed=7, strict_timing=True),
    )
    assert strict.status("uniform-reject-timing") is Status.FAIL
    assert strict.failed
    (result,) = strict.results
    assert result.outcome.data["comparisons"][0]["p_value"] < 0.005


class _Always(LibraryAdapter):
    """A verifier front that answers every code with one verdict (enrolment and issue are real)."""

    def __init__(self, verdict: Verdict) -> None:
        verifier = _verifier()
        super().__init__(verifier, issuer_key_id="bank")
        self.verdict = verdict

    def submit(self, target: Target, code: str, *, request_id: str | None = None) -> Verdict:
        return self.verdict


@pytest.mark.parametrize("verdict", [Verdict.ACCEPT, Verdict.REJECT])
def test_no_check_passes_a_verifier_that_answers_everything_alike(verdict: Verdict) -> None:
    """Every check has a step that must be refused and one that must be accepted (its control)."""
    report = run_probe(Lab(_Always(verdict), KEYS), CHECKS, FAST)
    statuses = {r.check.name: r.outcome.status for r in report.results}
    if verdict is Verdict.ACCEPT:
        # the real verifier behind the front refuses to issue the colliding Sign 0.00: with
        # nothing lesser to present, the separation check has nothing to catch
        assert statuses.pop("separation") is Status.PASS
    assert all(s.failed for s in statuses.values()), statuses
    assert report.failed
