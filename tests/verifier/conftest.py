"""Fixtures of the verifier conformance suite.

Every store-backed test takes ``store_factory``, parametrized over :data:`STORE_BACKENDS`.
A backend is registered with one entry in :data:`STORE_FACTORIES` and its name appended to
:data:`STORE_BACKENDS`::

    STORE_FACTORIES["sqlite"] = lambda request, tmp_path, clock: SqliteStore(tmp_path / "v.db", clock=clock)
    STORE_BACKENDS.append("sqlite")

A factory gets the pytest ``request`` (to reach other fixtures with
``request.getfixturevalue``), a temporary directory and the test's :class:`Clock`, and
returns a fresh, empty, migrated store. Stores are closed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from capsim.cards import EmvCapCard, new_card
from capsim.reader import CapReader, CapResult
from capsim.transports.inprocess import InProcessTransport
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import Credential
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.service import Verifier
from capsim.verifier.store import Store

IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # IMK-A of vectors.md
IMK_SMI = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")  # IMK-B
IMK_SMC = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")  # IMK-C
PAN = "5413339000001513"
PIN = "1234"
T0 = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)


@dataclass
class Clock:
    """The injectable store clock: tests move time explicitly."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


StoreMaker = Callable[[pytest.FixtureRequest, Path, Clock], Store]

STORE_FACTORIES: dict[str, StoreMaker] = {
    "memory": lambda request, tmp_path, clock: MemoryStore(clock=clock),
}
STORE_BACKENDS: list[str] = ["memory"]

# Persistent stores: SQLite in the test's directory, PostgreSQL on the session's throwaway
# cluster (tests/verifier/pgcluster.py; a fresh migrated database per store).
from capsim.verifier.postgres import PostgresStore  # noqa: E402
from capsim.verifier.sqlite import SqliteStore  # noqa: E402
from tests.verifier.pgcluster import new_test_database, pg_cluster, pg_dsn, pg_empty_dsn  # noqa: E402, F401

STORE_FACTORIES["sqlite"] = lambda request, tmp_path, clock: SqliteStore(tmp_path / "v.db", clock=clock)
STORE_FACTORIES["postgres"] = lambda request, tmp_path, clock: PostgresStore(
    new_test_database(request), clock=clock
)
STORE_BACKENDS += ["sqlite", "postgres"]


@dataclass
class StoreFactory:
    """Makes stores of one backend; every store made is closed at teardown."""

    backend: str
    _make: Callable[[Clock], Store]
    made: list[Store] = field(default_factory=list)

    def __call__(self, clock: Clock | None = None) -> Store:
        store = self._make(clock or Clock())
        self.made.append(store)
        return store


@pytest.fixture(params=STORE_BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh stores of each registered backend (see the module docstring)."""
    backend = str(request.param)
    maker = STORE_FACTORIES[backend]
    counter = iter(range(1_000_000))

    def make(clock: Clock) -> Store:
        sub = tmp_path / f"store{next(counter)}"
        sub.mkdir()
        return maker(request, sub, clock)

    factory = StoreFactory(backend, make)
    yield factory
    for store in factory.made:
        store.close()


@pytest.fixture
def memory_factory(tmp_path: Path) -> Iterator[StoreFactory]:
    """In-memory stores only: for the cryptographic tables, whose outcome does not depend on
    the backend (the store semantics are covered by ``store_factory`` tests)."""
    factory = StoreFactory("memory", lambda clock: MemoryStore(clock=clock))
    yield factory
    for store in factory.made:
        store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_provider() -> SoftwareProvider:
    provider = SoftwareProvider()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    return provider


@dataclass
class Bench:
    """A verifier, its store and clock, and one enrolled emulated card with its reader."""

    verifier: Verifier
    store: Store
    clock: Clock
    provider: SoftwareProvider
    card: EmvCapCard
    reader: CapReader
    credential: Credential
    first: CapResult
    serial: int = 0

    @property
    def cid(self) -> str:
        return self.credential.credential_id

    def rid(self) -> str:
        self.serial += 1
        return f"req-{self.serial}"

    def identify(self) -> CapResult:
        return self.reader.identify(PIN)

    def refresh(self) -> Credential:
        cred = self.verifier.get_credential(self.cid)
        assert cred is not None
        return cred


def make_bench(
    store: Store,
    clock: Clock,
    *,
    profile: str = "secur-acces",
    policy: VerifierPolicy | None = None,
    pan: str = PAN,
    psn: str = "00",
    user: str = "alice",
    provider: SoftwareProvider | None = None,
    verifier: Verifier | None = None,
    **card_overrides: Any,
) -> Bench:
    """Personalise a card, enrol it with its very first Identify code, return the bench."""
    provider = provider or make_provider()
    if verifier is None:
        verifier = Verifier(store, provider, policy=policy or VerifierPolicy())
    card = new_card(
        profile, pan=pan, psn=psn, pin=PIN, imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC, **card_overrides
    )
    reader = CapReader(InProcessTransport(card))
    if verifier.get_user(user) is None:
        verifier.add_user(user)
    activation = verifier.issue_activation_code(user)
    first = reader.identify(PIN)
    credential = verifier.enroll_card(
        activation.code, card.profile, issuer_key_id="bank", first_code=first.code
    )
    return Bench(
        verifier=verifier,
        store=store,
        clock=clock,
        provider=provider,
        card=card,
        reader=reader,
        credential=credential,
        first=first,
    )


@pytest.fixture
def bench(store_factory: StoreFactory, clock: Clock) -> Bench:
    """One enrolled ``secur-acces`` card on a fresh store of each backend."""
    return make_bench(store_factory(clock), clock)
