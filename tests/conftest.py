"""Shared pytest configuration: Hypothesis profiles and the per-DES-backend ``backend`` fixture.

``HYPOTHESIS_PROFILE=ci`` (the default in scripts/test.sh) keeps the suite fast;
``HYPOTHESIS_PROFILE=deep`` runs many more examples for local fuzzing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from capsim import _des

settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "deep", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(params=_des.BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per DES backend (emv-crypto.md §2), skipping one whose package is missing."""
    name: str = request.param
    if name not in _des.available_backends():
        pytest.skip(f"DES backend {name!r}: its package is not installed")
    with _des.use_backend(name):
        yield name
