"""Boundaries of the decision no other test pins.

- **Audit of a reject** (V37): a verification that accepts nothing records no ATC: the audit
  record of a wrong code or an unknown credential carries ``atc`` None (never an empty or
  placeholder value), and the accepted code's record its ATC.
- **Auto-resync window** (V35): a code parked beyond the window is completed by the next
  consecutive code presented up to ``resync_max_interval_s`` after it, the limit included;
  a microsecond later the parked code has expired.
- **Issuer-script history** (V10): a credential keeps the ATC of the transaction that was sent
  an issuer script while the accepted codes are at or below it, so the card's next code, which
  reports the script in its IAD, is still tried with every history variant.

Every test runs on the in-memory store (the store semantics are the conformance suite's).
"""

from __future__ import annotations

import pytest

from capsim.errors import InvalidCode
from capsim.verifier.policy import VerifierPolicy
from tests.cards.helpers import sw
from tests.verifier.conftest import Bench, Clock, StoreFactory, make_bench

WRONG = "10000000"


def _verify_records(b: Bench) -> list[tuple[str, str, str | None, int | None]]:
    return [
        (r.entry.outcome, r.entry.reason, r.entry.credential_id, r.entry.atc)
        for r in b.store.audit_records()
        if r.entry.event == "verify"
    ]


# -- audit of a reject ----------------------------------------------------------------------------


def test_the_audit_of_a_rejected_code_records_no_atc(memory_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(memory_factory(clock), clock)
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, WRONG, request_id=b.rid())
    unknown = "cr-0000000000000000"
    with pytest.raises(InvalidCode):
        b.verifier.verify(unknown, WRONG, request_id=b.rid())
    good = b.identify()
    b.verifier.verify(b.cid, good.code, request_id=b.rid())
    records = _verify_records(b)
    assert records == [
        ("reject", "wrong-code", b.cid, None),
        ("reject", "unknown-credential", unknown, None),
        ("accept", "match", b.cid, good.atc),
    ]
    assert all(atc is None or isinstance(atc, int) for *_, atc in records)


# -- auto-resync window (V35) ---------------------------------------------------------------------


def _park(b: Bench) -> tuple[int, str]:
    """Move the card beyond the ATC window, present one code (parked), return the next one."""
    for _ in range(30):
        b.identify()
    first, second = b.identify(), b.identify()
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, first.code, request_id=b.rid())
    assert b.refresh().parked_atc == first.atc
    return second.atc, second.code


@pytest.mark.parametrize("interval", [1, 300])
def test_a_parked_code_is_completed_up_to_the_interval_included(
    memory_factory: StoreFactory, clock: Clock, interval: int
) -> None:
    policy = VerifierPolicy(auto_resync=True, sync_window=64, resync_max_interval_s=interval)
    b = make_bench(memory_factory(clock), clock, policy=policy)
    atc, code = _park(b)
    clock.advance(interval)  # exactly the limit
    assert b.verifier.verify(b.cid, code, request_id=b.rid()).atc == atc
    assert b.refresh().last_atc == atc


@pytest.mark.parametrize("interval", [1, 300])
def test_a_parked_code_expires_just_after_the_interval(
    memory_factory: StoreFactory, clock: Clock, interval: int
) -> None:
    policy = VerifierPolicy(auto_resync=True, sync_window=64, resync_max_interval_s=interval)
    b = make_bench(memory_factory(clock), clock, policy=policy)
    before = b.refresh().last_atc
    atc, code = _park(b)
    clock.advance(interval + 0.000001)  # one microsecond late
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, code, request_id=b.rid())
    cred = b.refresh()
    assert cred.last_atc == before
    assert cred.parked_atc == atc  # the late code is parked in place of the expired one


# -- issuer-script history (V10) ------------------------------------------------------------------


def test_accepting_the_script_transactions_own_code_keeps_every_history_variant(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    # one history variant in steady state: a code reporting a script matches only while the
    # credential still records the script
    policy = VerifierPolicy(history_variants=1)
    b = make_bench(memory_factory(clock), clock, policy=policy)
    steady = b.identify()
    assert b.verifier.verify(b.cid, steady.code, request_id=b.rid()).atc == steady.atc
    # the script is built from this run's ARQC (ATC n) and processed in the same transaction
    run = b.identify()
    script = b.verifier.build_pin_script(b.cid, arqc=run.cryptogram, atc=run.atc)
    assert sw(b.card.process(script)) == 0x9000
    assert b.refresh().script_atc == run.atc
    # the code of ATC n itself is accepted: n is not above the script's ATC, so it stays
    assert b.verifier.verify(b.cid, run.code, request_id=b.rid()).atc == run.atc
    assert b.refresh().script_atc == run.atc
    # the next code reports the processed script in its IAD (a later history variant)
    after = b.identify()
    assert b.verifier.verify(b.cid, after.code, request_id=b.rid()).atc == after.atc
    # a code above the script's ATC ends it
    assert b.refresh().script_atc is None
