"""Fixtures of the probe tests: a verifier on each store, its keys, and the probe's lab."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capsim.issuerkeys import IssuerKeys
from capsim.probe import Lab, LibraryAdapter, Limits
from capsim.verifier.memory import MemoryStore
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.postgres import PostgresStore
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.service import Verifier
from capsim.verifier.sqlite import SqliteStore
from capsim.verifier.store import Store
from tests.verifier.pgcluster import new_test_database, pg_cluster  # noqa: F401

KEYS = IssuerKeys(
    imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    imk_smi=bytes.fromhex("FEDCBA98765432100123456789ABCDEF"),
    imk_smc=bytes.fromhex("89ABCDEF0123456776543210FEDCBA98"),
)

StoreMaker = Callable[[pytest.FixtureRequest, Path], Store]
STORES: dict[str, StoreMaker] = {
    "memory": lambda request, tmp: MemoryStore(),
    "sqlite": lambda request, tmp: SqliteStore(tmp / "probe.db"),
    "postgres": lambda request, tmp: PostgresStore(new_test_database(request)),
}


def provider() -> SoftwareProvider:
    p = SoftwareProvider()
    p.add_issuer_keys("bank", imk_ac=KEYS.imk_ac, imk_smi=KEYS.imk_smi, imk_smc=KEYS.imk_smc)
    return p


def lab_for(verifier: Verifier, *, limits: Limits | None = None, template: str = "secur-acces") -> Lab:
    """A lab probing ``verifier`` through the library adapter (the claimed policy: ``limits``)."""
    return Lab(LibraryAdapter(verifier, issuer_key_id="bank", limits=limits), KEYS, template=template)


@pytest.fixture
def memory_verifier() -> Iterator[Verifier]:
    store = MemoryStore()
    yield Verifier(store, provider(), policy=VerifierPolicy())
    store.close()
