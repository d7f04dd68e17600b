"""The privacyIDEA front does not tell which user names exist.

``capsim probe``'s timing check measured an unknown user answered about 0.85 ms sooner than a
known user's locked card over HTTP: the front read the credential list only for users that
exist. It now makes the same store calls either way (V30), which this test counts.
"""

from __future__ import annotations

from capsim.service.privacyidea import credential_of
from capsim.verifier.memory import MemoryStore
from capsim.verifier.service import Verifier
from tests.verifier.conftest import Clock, make_bench
from tests.verifier.helpers import CountingStore


def _calls(store: CountingStore, verifier: Verifier, user: str) -> tuple[int, dict[str, int]]:
    store.transactions, store.calls = 0, {}
    credential_of(verifier, user, None)
    return store.transactions, dict(store.calls)


def test_known_and_unknown_users_cost_the_same_store_calls() -> None:
    clock = Clock()
    store = CountingStore(MemoryStore(clock=clock))
    b = make_bench(store, clock)  # type: ignore[arg-type]
    known = _calls(store, b.verifier, "alice")
    assert credential_of(b.verifier, "alice", None) == b.cid
    unknown = _calls(store, b.verifier, "mallory")
    assert credential_of(b.verifier, "mallory", None) != b.cid
    assert known == unknown
    assert known[1].get("list_credentials") == 1
    malformed = _calls(store, b.verifier, "no such user/with a slash")
    assert malformed[0] <= known[0]  # refused before any store call, like any bad input
