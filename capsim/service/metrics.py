"""Prometheus metrics of the service, aggregated across worker processes.

Theory of operation
-------------------
1. The metrics are module-level ``prometheus_client`` objects: verifications by outcome, a
   verification latency histogram, lockouts (temporary and permanent), store errors
   (:class:`~capsim.errors.TemporaryFailure` answers), denials and HTTP answers by status.
2. ``capsim verifier serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before
   the workers start, so every worker writes its samples to memory-mapped files there and
   :func:`exposition` (``GET /metrics``) sums them over every worker: one scrape sees the whole
   service whichever worker answers it. Without that variable (one process, tests) the
   process's own registry is exposed.
3. Labels are closed sets (outcomes, kinds, status codes): no identifier, code or key ever
   becomes a label value.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = [
    "CONTENT_TYPE",
    "DENIALS",
    "HTTP_ANSWERS",
    "LOCKOUTS",
    "STORE_ERRORS",
    "VERIFICATIONS",
    "VERIFICATION_SECONDS",
    "exposition",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

VERIFICATIONS: Final = Counter(
    "capsim_verifications",
    "Code verifications (verify, login, activate, resync, privacyIDEA check) by outcome",
    ["outcome"],
)
VERIFICATION_SECONDS: Final = Histogram(
    "capsim_verification_seconds",
    "Time to answer a code verification, in seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOCKOUTS: Final = Counter(
    "capsim_lockouts", "Credentials locked (temporary) or blocked (permanent) by failed codes", ["kind"]
)
STORE_ERRORS: Final = Counter(
    "capsim_store_errors", "Requests answered 503 because the store or the key provider failed"
)
DENIALS: Final = Counter("capsim_denials", "Requests refused by authentication or scope", ["reason"])
HTTP_ANSWERS: Final = Counter("capsim_http_responses", "HTTP answers by status code", ["status"])

for _outcome in ("accept", "reject", "conflict", "invalid", "error"):
    VERIFICATIONS.labels(outcome=_outcome)
for _kind in ("temporary", "permanent"):
    LOCKOUTS.labels(kind=_kind)


def exposition() -> bytes:
    """The Prometheus text format of every worker's metrics (module docstring, rule 2)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
