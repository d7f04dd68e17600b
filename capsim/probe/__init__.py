"""``capsim probe``: an automated conformance run of the CAP attack battery against a verifier.

The probe enrols emulated cards with a verifier through an adapter
(:class:`~capsim.probe.adapter.VerifierAdapter`: enrol, issue an operation, submit a code),
runs the checks of :data:`~capsim.probe.checks.CHECKS` (replay, cross-credential, cross-mode,
___domain separation, wrong amount and payee, stale and far-future ATCs, the exact lockout
count, lock bypass through a sibling card, request-id reuse, uniform-reject timing) and
reports each with its evidence (:class:`~capsim.probe.run.ProbeReport`). Guide:
``docs/probe.md``.

>>> from capsim.probe import LibraryAdapter, Lab, memory_verifier, run_probe, select_checks
>>> verifier, keys, key_id = memory_verifier()
>>> lab = Lab(LibraryAdapter(verifier, issuer_key_id=key_id), keys)
>>> report = run_probe(lab, select_checks(["replay-same-operation"]))
>>> report.failed, report.status("replay-same-operation").value
(False, 'pass')
"""

from __future__ import annotations

from capsim.probe.adapter import (
    ALL_MODES,
    Capabilities,
    Enroller,
    Issued,
    Limits,
    OperationRequest,
    Refused,
    Target,
    Verdict,
    VerifierAdapter,
)
from capsim.probe.checks import CHECKS, CHECKS_BY_NAME
from capsim.probe.lab import Lab, Subject
from capsim.probe.local import LibraryAdapter, memory_verifier
from capsim.probe.model import Check, Outcome, ProbeOptions, Status
from capsim.probe.run import CheckResult, ProbeReport, run_probe, select_checks

__all__ = [
    "ALL_MODES",
    "CHECKS",
    "CHECKS_BY_NAME",
    "Capabilities",
    "Check",
    "CheckResult",
    "Enroller",
    "Issued",
    "Lab",
    "LibraryAdapter",
    "Limits",
    "OperationRequest",
    "Outcome",
    "ProbeOptions",
    "ProbeReport",
    "Refused",
    "Status",
    "Subject",
    "Target",
    "Verdict",
    "VerifierAdapter",
    "memory_verifier",
    "run_probe",
    "select_checks",
]
