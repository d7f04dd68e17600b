"""Regression tests for the holes found at the verifier's seams, one test (or more) per finding.

Each test names the finding it closes; each failed on the verifier before the decision core
(request ids bound to their call, enrolment under the user lock with a unique live card,
the card's replay floor, sibling eligibility, uniform rejects, administrators' powers).
"""

from __future__ import annotations

from typing import Any

import pytest

from capsim.cards import new_card
from capsim.errors import InvalidCode, RequestConflict, ValidationError
from capsim.verifier.model import CredentialState
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import AcFunction, SoftwareProvider
from capsim.verifier.service import Verifier
from tests.verifier.conftest import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    PIN,
    Bench,
    Clock,
    StoreFactory,
    make_bench,
    make_provider,
)
from tests.verifier.helpers import new_op, run_mode
from tests.verifier.test_concurrency import _run_threads


def _audit_len(b: Bench) -> int:
    return len(list(b.store.audit_records()))


# -- finding 1: a repeated request_id accepts anything -------------------------------------------


def test_seam1_request_id_reused_for_another_operation_is_refused_and_changes_nothing(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    op1 = new_op(b, "sign", amount=1500)
    op2 = new_op(b, "sign", amount=999_999, payee="NL00 ATTACKER")
    code1 = run_mode(b, op1).code
    acc = b.verifier.verify(op1.operation_id, code1, request_id="req-1")
    audit = _audit_len(b)
    with pytest.raises(RequestConflict):
        b.verifier.verify(op2.operation_id, "00000000", request_id="req-1")
    assert _audit_len(b) == audit  # nothing written
    stored = b.verifier.get_operation(op2.operation_id)
    assert stored is not None
    assert stored.consumed_at is None
    assert stored.attempts == 0
    # the same call again still returns what was recorded for it
    again = b.verifier.verify(op1.operation_id, code1, request_id="req-1")
    assert again == acc
    # and op2 still works with a fresh id
    assert b.verifier.verify(op2.operation_id, run_mode(b, op2).code, request_id="req-2").operation_id == (
        op2.operation_id
    )


def test_seam1_same_request_id_with_another_code_is_a_conflict(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    r = b.identify()
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "11111111", request_id="wrong-1")
    with pytest.raises(RequestConflict):  # not a second guess under the first one's outcome
        b.verifier.verify(b.cid, r.code, request_id="wrong-1")
    assert b.refresh().fail_count == 1
    assert b.verifier.verify(b.cid, r.code, request_id="right-1").atc == r.atc


def test_seam1_resync_and_activate_with_a_used_request_id_are_refused(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    b.verifier.verify(b.cid, b.identify().code, request_id="used")
    codes = [b.identify().code for _ in range(b.verifier.policy.resync_count)]
    last = b.refresh().last_atc
    with pytest.raises(RequestConflict):
        b.verifier.resync(b.cid, codes, request_id="used")
    assert b.refresh().last_atc == last
    pending = b.verifier.report_lost(
        b.cid, replacement_pan="5413339000001513", replacement_psn="07", issuer_key_id="bank"
    )
    assert pending is not None
    with pytest.raises(RequestConflict):
        b.verifier.activate(pending.credential_id, "12345678", request_id="used")
    after = b.verifier.get_credential(pending.credential_id)
    assert after is not None
    assert after.state is CredentialState.PENDING


# -- finding 2: enrolment races ------------------------------------------------------------------


def test_seam2_one_card_enrolled_concurrently_under_two_users_binds_once(
    store_factory: StoreFactory, clock: Clock
) -> None:
    for trial in range(5):
        store = store_factory(clock)
        v = Verifier(store, make_provider())
        card = new_card("secur-acces", pan="5413339000001513", psn="00", pin=PIN, imk_ac=IMK_AC)
        codes = {}
        for user in ("alice", "bob"):
            v.add_user(user)
            codes[user] = v.issue_activation_code(user).code

        def enrol(i: int, v: Verifier = v, card: Any = card, codes: dict[str, str] = codes) -> Any:
            return v.enroll_card(codes[("alice", "bob")[i]], card.profile, issuer_key_id="bank")

        results = _run_threads(2, enrol)
        ok = [r for r in results if not isinstance(r, BaseException)]
        assert len(ok) == 1, (trial, results)
        assert all(isinstance(r, ValidationError) for r in results if isinstance(r, BaseException))
        live = [
            c
            for u in ("alice", "bob")
            for c in v.list_credentials(u)
            if c.state in (CredentialState.PENDING, CredentialState.ACTIVE)
        ]
        assert len(live) == 1


def test_seam2_concurrent_enrolments_never_exceed_the_per_user_limit(
    store_factory: StoreFactory, clock: Clock
) -> None:
    store = store_factory(clock)
    v = Verifier(store, make_provider(), policy=VerifierPolicy(max_active_credentials=2))
    v.add_user("alice")
    cards = [new_card("secur-acces", pan=f"54133390000015{i:02d}", pin=PIN, imk_ac=IMK_AC) for i in range(6)]
    codes = [v.issue_activation_code("alice").code for _ in cards]

    def enrol(i: int) -> Any:
        return v.enroll_card(codes[i], cards[i].profile, issuer_key_id="bank")

    results = _run_threads(len(cards), enrol)
    assert sum(not isinstance(r, BaseException) for r in results) == 2, results
    assert len(v.list_credentials("alice")) == 2


# -- finding 3: codes accepted again after re-enrolment ------------------------------------------


def _accepted_codes(b: Bench, n: int) -> list[str]:
    codes = []
    for _ in range(n):
        r = b.identify()
        b.verifier.verify(b.cid, r.code, request_id=b.rid())
        codes.append(r.code)
    return codes


def test_seam3_re_enrolment_after_revoke_never_accepts_an_old_code(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    old = _accepted_codes(b, 6)
    b.verifier.revoke(b.cid)
    again = b.verifier.enroll_card(
        b.verifier.issue_activation_code("alice").code, b.card.profile, issuer_key_id="bank"
    )
    assert again.last_atc == b.refresh().last_atc  # the card's floor, not −1
    b.verifier.admin_activate(again.credential_id)
    for code in old:
        with pytest.raises(InvalidCode):
            b.verifier.verify(again.credential_id, code, request_id=b.rid())
    b.verifier.unlock(again.credential_id)  # six refusals locked it
    fresh = b.identify()
    assert b.verifier.verify(again.credential_id, fresh.code, request_id=b.rid()).atc == fresh.atc


def test_seam3_replacement_with_the_same_card_never_accepts_an_old_code(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    old = _accepted_codes(b, 6)
    new = b.verifier.replace(b.cid, pan=b.card.profile.pan, psn=b.card.profile.psn, issuer_key_id="bank")
    b.verifier.admin_activate(new.credential_id)
    for code in old:
        with pytest.raises(InvalidCode):
            b.verifier.verify(new.credential_id, code, request_id=b.rid())


# -- finding 4: a sibling card bypasses another card's lock --------------------------------------


def _siblings(store_factory: StoreFactory, clock: Clock) -> tuple[Bench, Bench]:
    a = make_bench(store_factory(clock), clock, psn="00")
    b = make_bench(a.store, clock, psn="01", verifier=a.verifier, provider=a.provider)
    return a, b


def _lock(b: Bench) -> None:
    for i in range(b.verifier.policy.max_fail):
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, f"{10_000_000 + i:08d}", request_id=b.rid())
    assert b.refresh().locked_until is not None


def test_seam4_a_locked_sibling_is_never_tried_through_another_card(
    store_factory: StoreFactory, clock: Clock
) -> None:
    a, b = _siblings(store_factory, clock)
    _lock(b)
    locked = b.refresh()
    code = b.identify().code
    with pytest.raises(InvalidCode):
        b.verifier.verify(a.cid, code, request_id=b.rid())  # B's right code through A's target
    after = b.refresh()
    assert after.locked_until == locked.locked_until
    assert after.fail_count == locked.fail_count
    assert after.last_atc == locked.last_atc


def test_seam4_a_guess_counts_against_every_card_it_was_tested_against(
    store_factory: StoreFactory, clock: Clock
) -> None:
    a, b = _siblings(store_factory, clock)
    with pytest.raises(InvalidCode):
        a.verifier.verify(a.cid, "10000000", request_id=a.rid())
    assert a.refresh().fail_count == 1
    assert b.refresh().fail_count == 1
    # a sibling's right code through A's target still works, and resets only the sibling
    r = b.identify()
    assert a.verifier.verify(a.cid, r.code, request_id=a.rid()).credential_id == b.cid
    assert b.refresh().fail_count == 0
    assert a.refresh().fail_count == 1


def test_seam4_suspended_sibling_is_never_tried(store_factory: StoreFactory, clock: Clock) -> None:
    a, b = _siblings(store_factory, clock)
    b.verifier.suspend(b.cid)
    with pytest.raises(InvalidCode):
        a.verifier.verify(a.cid, b.identify().code, request_id=a.rid())
    assert b.refresh().state is CredentialState.SUSPENDED


# -- finding 5: uniform rejects make the same provider calls ---------------------------------------


class CallCounter(SoftwareProvider):
    """Counts the provider's real calls: AC functions fetched and cryptograms computed."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched = 0
        self.computed = 0

    def ac_function(self, key_ref: str, **kwargs: Any) -> AcFunction:
        inner = super().ac_function(key_ref, **kwargs)
        self.fetched += 1

        def counted(cdol: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes) -> bytes:
            self.computed += 1
            return inner(cdol, aip, atc, iad, un)

        return counted

    def take(self) -> tuple[int, int]:
        out = (self.fetched, self.computed)
        self.fetched = self.computed = 0
        return out


def test_seam5_every_reject_class_makes_the_same_provider_calls(
    store_factory: StoreFactory, clock: Clock
) -> None:
    provider = CallCounter()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    b = make_bench(store_factory(clock), clock, provider=provider)
    calls: dict[str, tuple[int, int]] = {}

    provider.take()
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "10000000", request_id=b.rid())
    calls["wrong code"] = provider.take()
    with pytest.raises(InvalidCode):
        b.verifier.verify("cr-0000000000000000", "10000000", request_id=b.rid())
    calls["unknown"] = provider.take()
    b.verifier.lock(b.cid)
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "10000000", request_id=b.rid())
    calls["locked"] = provider.take()
    b.verifier.unlock(b.cid)
    b.verifier.suspend(b.cid)
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "10000000", request_id=b.rid())
    calls["suspended"] = provider.take()
    b.verifier.revoke(b.cid)
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, "10000000", request_id=b.rid())
    calls["revoked"] = provider.take()
    assert len(set(calls.values())) == 1, calls
    assert calls["wrong code"][1] >= 1


def test_seam5_the_provider_computes_every_evaluation_the_verifier_reports(
    store_factory: StoreFactory, clock: Clock
) -> None:
    """Padding is real work: for every reject class (and an accept) the provider computes as many
    cryptograms as the verifier's metrics count (candidates + padding), and the total per call
    is the same for every reject class (V30)."""
    provider = CallCounter()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    b = make_bench(store_factory(clock), clock, provider=provider)

    def evaluations(bench: Bench = b) -> int:
        m = bench.verifier.metrics
        return m.candidate_evaluations + m.dummy_evaluations

    def reject(credential_id: str) -> tuple[int, int]:
        before = evaluations()
        provider.take()
        with pytest.raises(InvalidCode):
            b.verifier.verify(credential_id, "10000000", request_id=b.rid())
        return evaluations() - before, provider.take()[1]

    seen: dict[str, tuple[int, int]] = {"wrong code": reject(b.cid)}
    seen["unknown"] = reject("cr-0000000000000000")
    b.verifier.lock(b.cid)
    seen["locked"] = reject(b.cid)
    b.verifier.unlock(b.cid)
    b.verifier.suspend(b.cid)
    seen["suspended"] = reject(b.cid)
    b.verifier.revoke(b.cid)
    seen["revoked"] = reject(b.cid)
    for name, (reported, computed) in seen.items():
        assert computed == reported, (name, seen)
        assert computed >= 2, (name, seen)
    assert len(set(seen.values())) == 1, seen

    ok = make_bench(store_factory(clock), clock, provider=provider, user="bob", pan="5555666677778888")
    before = evaluations(ok)
    provider.take()
    ok.verifier.verify(ok.cid, ok.identify().code, request_id=ok.rid())
    assert provider.take()[1] == evaluations(ok) - before


# -- finding 11: administrators' powers -------------------------------------------------------------


def test_seam11_customer_admin_cannot_unlock_a_blocked_credential_or_build_pin_scripts(
    store_factory: StoreFactory, clock: Clock
) -> None:
    store = store_factory(clock)
    v = Verifier(store, make_provider(), policy=VerifierPolicy(escalate_after=1))
    v.add_user("boss")  # the first user of a new account: its administrator
    v.add_user("clerk", acting_user="boss")
    b = make_bench(store, clock, verifier=v, user="clerk")
    _lock(b)
    assert b.refresh().state is CredentialState.BLOCKED
    with pytest.raises(ValidationError, match="may not unlock"):
        v.unlock(b.cid, acting_user="boss")
    assert b.refresh().state is CredentialState.BLOCKED
    with pytest.raises(ValidationError, match="may not build issuer PIN scripts"):
        v.build_pin_script(b.cid, arqc=bytes(8), atc=5, acting_user="boss")
    with pytest.raises(ValidationError, match="may not"):
        v.report_lost(b.cid, acting_user="boss")
    # what an administrator may do, within its own account
    assert v.list_credentials("clerk", acting_user="boss")
    v.issue_activation_code("clerk", acting_user="boss")
    v.revoke(b.cid, acting_user="boss")
    # the bank's operator may do everything
    other = make_bench(store, clock, verifier=v, user="clerk", pan="5413339000001521")
    v.suspend(other.cid, acting_user="boss")
    v.resume(other.cid, acting_user="boss")
    v.unlock(other.cid)
