"""Users, enrolment, lockout, lifecycle, resync, ATC floor and PIN unblock (verifier.md V28–V36)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cards import new_card
from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.reader import CapReader
from capsim.transports.inprocess import InProcessTransport
from capsim.verifier.model import TRANSITIONS, Action, Credential, CredentialState, transition
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.service import Verifier
from tests.cards.helpers import gac1_command, parse_gac, start, sw, verify
from tests.verifier.conftest import IMK_AC, PAN, PIN, Bench, Clock, StoreFactory, make_bench, make_provider
from tests.verifier.helpers import CountingProvider, new_op

WRONG = "00000000"


def unblock_pin_with_script(b: Bench) -> bytes:
    """Block the card's PIN with three wrong tries, then unblock it with the verifier's script.

    Returns the script command that the card accepted.
    """
    card = b.card
    start(card)
    assert [verify(card, "9999") for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert verify(card, PIN) == 0x6983
    resp = card.process(gac1_command(card))
    gac = parse_gac(resp[:-2])
    script = b.verifier.build_pin_script(b.cid, arqc=gac.ac, atc=gac.atc)
    assert sw(card.process(script)) == 0x9000
    assert card.state.ptc == card.profile.pin_try_limit
    return script


def _fail(b: Bench, times: int, code: str = WRONG) -> None:
    for _ in range(times):
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, code, request_id=b.rid())


# -- users, activation codes, enrolment ---------------------------------------------------------------


def _second_card(pan: str = "5413339000007777") -> tuple[Any, CapReader]:
    card = new_card("secur-acces", pan=pan, pin=PIN, imk_ac=IMK_AC)
    return card, CapReader(InProcessTransport(card))


def test_activation_code_single_use_and_expires_after_24h(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    ac = b.verifier.issue_activation_code("alice")
    assert (ac.expires_at - clock.now).total_seconds() == 86_400
    assert ac.code not in repr(ac)
    card, reader = _second_card()
    cred = b.verifier.enroll_card(
        ac.code, card.profile, issuer_key_id="bank", first_code=reader.identify(PIN).code
    )
    assert cred.state is CredentialState.ACTIVE
    card3, reader3 = _second_card("5413339000008888")
    with pytest.raises(InvalidCode):  # used
        b.verifier.enroll_card(
            ac.code, card3.profile, issuer_key_id="bank", first_code=reader3.identify(PIN).code
        )
    late = b.verifier.issue_activation_code("alice")
    clock.advance(86_400)
    with pytest.raises(InvalidCode):  # expired
        b.verifier.enroll_card(
            late.code, card3.profile, issuer_key_id="bank", first_code=reader3.identify(PIN).code
        )


def test_enrolment_wrong_first_code_creates_nothing(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    ac = b.verifier.issue_activation_code("alice")
    card, reader = _second_card()
    with pytest.raises(InvalidCode):
        b.verifier.enroll_card(ac.code, card.profile, issuer_key_id="bank", first_code=WRONG)
    assert len(b.verifier.list_credentials("alice")) == 1
    cred = b.verifier.enroll_card(
        ac.code, card.profile, issuer_key_id="bank", first_code=reader.identify(PIN).code
    )
    assert cred.state is CredentialState.ACTIVE


def test_one_card_is_enrolled_once(store_factory: StoreFactory, clock: Clock) -> None:
    """A second live credential for the same PAN and PSN would accept each code twice."""
    b = make_bench(store_factory(clock), clock)
    b.verifier.add_user("mallory")
    ac = b.verifier.issue_activation_code("mallory")
    with pytest.raises(ValidationError, match="already enrolled"):
        b.verifier.enroll_card(ac.code, b.card.profile, issuer_key_id="bank", first_code=b.identify().code)
    b.verifier.revoke(b.cid)
    cred = b.verifier.enroll_card(ac.code, b.card.profile, issuer_key_id="bank", first_code=b.identify().code)
    assert cred.user_id == "mallory"


def test_credential_keeps_only_pan_reference_and_last4(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    cred = b.refresh()
    assert cred.pan_last4 == PAN[-4:]
    assert PAN not in repr(cred)
    assert PAN not in cred.key_ref
    assert PAN not in cred.pan_token


def test_at_most_five_active_credentials_per_user(store_factory: StoreFactory, clock: Clock) -> None:
    store = store_factory(clock)
    b = make_bench(store, clock)
    for i in range(4):
        make_bench(store, clock, provider=b.provider, verifier=b.verifier, pan=f"541333900000{1600 + i}")
    ac = b.verifier.issue_activation_code("alice")
    with pytest.raises(ValidationError, match="limit"):
        b.verifier.enroll(ac.code, pan="5413339000009999", profile=b.refresh().profile, issuer_key_id="bank")
    b.verifier.revoke(b.cid)
    b.verifier.enroll(ac.code, pan="5413339000009999", profile=b.refresh().profile, issuer_key_id="bank")


def test_secondary_users_only_by_admin_of_same_customer(store_factory: StoreFactory, clock: Clock) -> None:
    v = Verifier(store_factory(clock), make_provider())
    owner = v.add_user("owner", customer_id="acme")
    assert owner.role == "admin"
    clerk = v.add_user("clerk", acting_user="owner")
    assert clerk.customer_id == "acme"
    assert clerk.role == "user"
    with pytest.raises(ValidationError):
        v.add_user("intruder", acting_user="clerk")  # not an admin
    v.add_user("other", customer_id="globex")
    with pytest.raises(ValidationError):
        v.add_user("x", acting_user="other", customer_id="acme")
    with pytest.raises(ValidationError):
        v.issue_activation_code("clerk", acting_user="other")
    v.issue_activation_code("clerk", acting_user="owner")
    assert [u.user_id for u in v.list_users("acme")] == ["clerk", "owner"]


def test_admin_lists_suspends_and_revokes_credentials(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    v = b.verifier
    v.add_user("boss", customer_id="cu-alice", admin=True)
    assert [c.credential_id for c in v.list_credentials("alice", acting_user="boss")] == [b.cid]
    assert v.suspend(b.cid, acting_user="boss").state is CredentialState.SUSPENDED
    with pytest.raises(InvalidCode):
        v.verify(b.cid, b.identify().code, request_id=b.rid())
    assert v.resume(b.cid, acting_user="boss").state is CredentialState.ACTIVE
    v.add_user("stranger", customer_id="elsewhere")
    with pytest.raises(ValidationError):
        v.revoke(b.cid, acting_user="stranger")
    assert v.revoke(b.cid, acting_user="boss").state is CredentialState.REVOKED


# -- V28, V29 -----------------------------------------------------------------------------------------


def test_v28_default_max_fail_5_psd2_refuses_more_success_resets(
    store_factory: StoreFactory, clock: Clock
) -> None:
    assert VerifierPolicy().max_fail == 5
    with pytest.raises(ConfigError):
        VerifierPolicy.psd2_profile(max_fail=6)
    b = make_bench(store_factory(clock), clock)
    _fail(b, 4)
    assert b.refresh().fail_count == 4
    b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    assert b.refresh().fail_count == 0


def test_v28_increments_atomic_across_workers(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(max_fail=5, escalate_after=99))
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with pytest.raises(InvalidCode):
                b.verifier.verify(b.cid, f"{n:08d}", request_id=f"w-{n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert b.refresh().fail_count == 3


def test_v29_first_failure_after_lock_expiry_sets_count_to_1(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    _fail(b, 5)
    cred = b.refresh()
    assert cred.fail_count == 5
    assert cred.locked_until is not None
    clock.advance(b.verifier.policy.lock_duration_s)
    _fail(b, 1)
    cred = b.refresh()
    assert cred.fail_count == 1
    assert cred.locked_until is None


def test_v29_at_most_max_fail_evaluations_per_lock_period(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(escalate_after=99))
    for period in range(3):
        before = b.verifier.metrics.evaluation_calls
        _fail(b, 12)  # 12 guesses in one lock period
        assert b.verifier.metrics.evaluation_calls - before == 5
        clock.advance(b.verifier.policy.lock_duration_s)
        assert period >= 0
    # a correct code during a lock fails too, and is not evaluated
    _fail(b, 5)
    before = b.verifier.metrics.evaluation_calls
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    assert b.verifier.metrics.evaluation_calls == before


# -- V30 ----------------------------------------------------------------------------------------------


def test_v30_every_refusal_is_the_same_exception(store_factory: StoreFactory, clock: Clock) -> None:
    store = store_factory(clock)
    provider = CountingProvider()
    provider.add_issuer_keys(
        "bank", imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), imk_smi=bytes(16), imk_smc=bytes(16)
    )
    b = make_bench(store, clock, provider=provider)
    v = b.verifier
    caught: dict[str, InvalidCode] = {}

    def grab(name: str, target: str, code: str) -> None:
        with pytest.raises(InvalidCode) as info:
            v.verify(target, code, request_id=b.rid())
        caught[name] = info.value

    grab("wrong", b.cid, WRONG)
    r = b.identify()
    v.verify(b.cid, r.code, request_id=b.rid())
    grab("replayed", b.cid, r.code)
    op = new_op(b, "respond")
    ok = b.reader.respond(PIN, op.challenge)
    v.verify(op.operation_id, ok.code, request_id=b.rid())
    grab("consumed", op.operation_id, b.reader.respond(PIN, op.challenge).code)
    op2 = new_op(b, "respond")
    late = b.reader.respond(PIN, op2.challenge)
    clock.advance(200)
    grab("expired", op2.operation_id, late.code)
    provider.calls = 0
    grab("unknown", "cr-00000000deadbeef", b.identify().code)
    assert provider.calls >= 1  # dummy evaluation
    grab("unknown-op", "op-00000000deadbeef", b.identify().code)
    _fail(b, 5)
    grab("locked", b.cid, b.identify().code)
    v.unlock(b.cid)
    v.revoke(b.cid)
    grab("revoked", b.cid, b.identify().code)
    shapes = {(type(e), str(e), e.args, tuple(sorted(vars(e).items()))) for e in caught.values()}
    assert len(shapes) == 1
    reasons = {r.entry.reason for r in store.audit_records() if r.entry.event == "verify"}
    assert {
        "unknown-credential",
        "unknown-operation",
        "locked",
        "state-revoked",
        "operation-consumed",
        "operation-expired",
        "wrong-code",
    } <= reasons


def test_v30_unknown_credential_costs_a_dummy_evaluation(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    before = b.verifier.metrics
    with pytest.raises(InvalidCode):
        b.verifier.verify("cr-ffffffffffffffff", WRONG, request_id=b.rid())
    after = b.verifier.metrics
    assert after.dummy_evaluations > before.dummy_evaluations
    assert after.candidate_evaluations == before.candidate_evaluations


# -- V31 ----------------------------------------------------------------------------------------------


def test_v31_escalation_blocks_permanently_after_hook(store_factory: StoreFactory, clock: Clock) -> None:
    store = store_factory(clock)
    seen: list[Credential] = []
    policy = VerifierPolicy(escalate_after=2, escalation_period_s=3600, lock_duration_s=60)
    b = make_bench(store, clock, policy=policy)
    v = Verifier(store, b.provider, policy=policy, on_before_permanent_block=seen.append)
    b.verifier = v
    _fail(b, 5)
    assert b.refresh().state is CredentialState.ACTIVE
    assert not seen
    clock.advance(61)
    _fail(b, 5)
    assert len(seen) == 1
    assert seen[0].state is CredentialState.BLOCKED
    assert b.refresh().state is CredentialState.BLOCKED
    clock.advance(10 * 3600)  # no timer unblocks it
    with pytest.raises(InvalidCode):
        v.verify(b.cid, b.identify().code, request_id=b.rid())
    v.unlock(b.cid)  # the administrator path
    assert v.verify(b.cid, b.identify().code, request_id=b.rid()).atc > 0


def test_v31_locks_outside_the_period_do_not_escalate(store_factory: StoreFactory, clock: Clock) -> None:
    policy = VerifierPolicy(escalate_after=2, escalation_period_s=600, lock_duration_s=60)
    b = make_bench(store_factory(clock), clock, policy=policy)
    _fail(b, 5)
    clock.advance(601)
    _fail(b, 5)
    assert b.refresh().state is CredentialState.ACTIVE


# -- V32, V33 -----------------------------------------------------------------------------------------


@given(state=st.sampled_from(CredentialState), action=st.sampled_from(Action))
def test_v32_transition_table_total(state: CredentialState, action: Action) -> None:
    if (state, action) in TRANSITIONS:
        assert transition(state, action) is TRANSITIONS[(state, action)]
    else:
        with pytest.raises(ValidationError):
            transition(state, action)
    if state in (CredentialState.REVOKED, CredentialState.REPLACED):
        assert (state, action) not in TRANSITIONS


def test_v32_pending_needs_first_code_or_admin(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    ac = b.verifier.issue_activation_code("alice")
    card2 = make_bench(b.store, clock, provider=b.provider, verifier=b.verifier, pan="5413339000002222")
    pending = b.verifier.enroll(
        ac.code, pan="5413339000003333", profile=b.refresh().profile, issuer_key_id="bank"
    )
    assert pending.state is CredentialState.PENDING
    with pytest.raises(InvalidCode):
        b.verifier.verify(pending.credential_id, card2.identify().code, request_id=b.rid())
    assert b.verifier.admin_activate(pending.credential_id).state is CredentialState.ACTIVE
    with pytest.raises(ValidationError):
        b.verifier.admin_activate(pending.credential_id)


def test_v32_activate_with_first_valid_code(store_factory: StoreFactory, clock: Clock) -> None:
    from capsim.cards import new_card
    from capsim.reader import CapReader
    from capsim.transports.inprocess import InProcessTransport

    b = make_bench(store_factory(clock), clock)
    card = new_card(
        "natwest", pan="5413339000004444", imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    )
    reader = CapReader(InProcessTransport(card))
    ac = b.verifier.issue_activation_code("alice")
    cred = b.verifier.enroll_card(ac.code, card.profile, issuer_key_id="bank")
    assert cred.state is CredentialState.PENDING
    with pytest.raises(InvalidCode):
        b.verifier.activate(cred.credential_id, WRONG, request_id=b.rid())
    acc = b.verifier.activate(cred.credential_id, reader.identify(PIN).code, request_id=b.rid())
    assert acc.atc == 1
    assert b.verifier.get_credential(cred.credential_id).state is CredentialState.ACTIVE  # type: ignore[union-attr]


def test_v33_lost_card_replaced_in_one_transaction(store_factory: StoreFactory, clock: Clock) -> None:
    from capsim.reader import CapReader
    from capsim.transports.inprocess import InProcessTransport

    b = make_bench(store_factory(clock), clock)
    old_code = b.identify()
    new = b.verifier.report_lost(b.cid, replacement_pan=PAN, replacement_psn="01", issuer_key_id="bank")
    assert new is not None
    assert new.psn == "01"
    assert new.last_atc == -1
    assert new.replaces == b.cid
    old = b.refresh()
    assert old.state is CredentialState.REPLACED
    assert old.replaced_by == new.credential_id
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, old_code.code, request_id=b.rid())
    with pytest.raises(InvalidCode):  # the old card does not open the new credential
        b.verifier.activate(new.credential_id, b.identify().code, request_id=b.rid())
    from capsim.cards import new_card
    from tests.verifier.conftest import IMK_AC

    card = new_card("secur-acces", pan=PAN, psn="01", imk_ac=IMK_AC)
    acc = b.verifier.activate(
        new.credential_id, CapReader(InProcessTransport(card)).identify(PIN).code, request_id=b.rid()
    )
    assert acc.credential_id == new.credential_id


def test_v33_lost_without_replacement(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    assert b.verifier.report_lost(b.cid) is None
    assert b.refresh().state is CredentialState.LOST
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())


# -- V34, V35 -----------------------------------------------------------------------------------------


def test_v34_resync_with_two_consecutive_codes(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    for _ in range(40):  # far beyond the window of 16
        b.identify()
    c1, c2 = b.identify(), b.identify()
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, c1.code, request_id=b.rid())
    assert b.verifier.resync(b.cid, [c1.code, c2.code], request_id=b.rid()) == c2.atc
    assert b.refresh().last_atc == c2.atc
    assert b.refresh().fail_count == 0
    nxt = b.identify()
    assert b.verifier.verify(b.cid, nxt.code, request_id=b.rid()).atc == nxt.atc


def test_v34_resync_failures_count_and_last_atc_never_decreases(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    c1, c2 = b.identify(), b.identify()
    c3 = b.identify()
    b.verifier.verify(b.cid, c3.code, request_id=b.rid())
    with pytest.raises(InvalidCode):  # below last_atc
        b.verifier.resync(b.cid, [c1.code, c2.code], request_id=b.rid())
    assert b.refresh().last_atc == c3.atc
    assert b.refresh().fail_count == 1
    d1, _skip, d3 = b.identify(), b.identify(), b.identify()
    with pytest.raises(InvalidCode):  # not consecutive
        b.verifier.resync(b.cid, [d1.code, d3.code], request_id=b.rid())
    assert b.refresh().fail_count == 2
    with pytest.raises(ValidationError):
        b.verifier.resync(b.cid, [d1.code], request_id=b.rid())


def test_v34_resync_configurable_to_three_codes(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(resync_count=3))
    for _ in range(30):
        b.identify()
    codes = [b.identify() for _ in range(3)]
    with pytest.raises(ValidationError):
        b.verifier.resync(b.cid, [c.code for c in codes[:2]], request_id=b.rid())
    assert b.verifier.resync(b.cid, [c.code for c in codes], request_id=b.rid()) == codes[2].atc
    with pytest.raises(ConfigError):
        VerifierPolicy(resync_count=4)


def test_v35_auto_resync_off_by_default(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    assert not b.verifier.policy.auto_resync
    for _ in range(30):
        b.identify()
    c1, c2 = b.identify(), b.identify()
    _fail(b, 1, c1.code)
    _fail(b, 1, c2.code)


def test_v35_auto_resync_parks_then_accepts_next_and_expires(
    store_factory: StoreFactory, clock: Clock
) -> None:
    policy = VerifierPolicy(auto_resync=True, sync_window=64)
    b = make_bench(store_factory(clock), clock, policy=policy)
    for _ in range(30):
        b.identify()
    c1, c2 = b.identify(), b.identify()
    _fail(b, 1, c1.code)
    assert b.refresh().parked_atc == c1.atc
    assert b.verifier.verify(b.cid, c2.code, request_id=b.rid()).atc == c2.atc
    # expiry: a parked code older than 300 s does not help
    for _ in range(30):
        b.identify()
    d1, d2 = b.identify(), b.identify()
    _fail(b, 1, d1.code)
    clock.advance(301)
    _fail(b, 1, d2.code)  # too late for d1; d2 is parked in its place
    assert b.refresh().parked_atc == d2.atc
    # an unrelated code clears the parked one
    for _ in range(30):
        b.identify()
    e1, e2 = b.identify(), b.identify()
    _fail(b, 1, e1.code)
    _fail(b, 1, WRONG)
    assert b.refresh().parked_atc is None
    _fail(b, 1, e2.code)


# -- V36 ----------------------------------------------------------------------------------------------


def test_v36_advance_floor_monotone_idempotent_no_failures(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    old = b.identify()
    assert b.verifier.advance_floor(b.cid, 10) == 10
    assert b.verifier.advance_floor(b.cid, 10) == 10
    assert b.verifier.advance_floor(b.cid, 5) == 10
    assert b.verifier.advance_floor(b.cid, b"\x00\x03") == 10
    cred = b.refresh()
    assert cred.last_atc == 10
    assert cred.fail_count == 0
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, old.code, request_id=b.rid())
    with pytest.raises(ValidationError):
        b.verifier.advance_floor(b.cid, 65536)


def test_v36_advance_floor_safe_against_concurrent_verify(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(atc_window=64, max_atc_gap=64))
    codes = [b.identify() for _ in range(20)]
    outcomes: list[int] = []
    lock = threading.Lock()

    def floor() -> None:
        for c in codes[::2]:
            b.verifier.advance_floor(b.cid, c.atc)

    def verifier() -> None:
        for i, c in enumerate(codes):
            try:
                acc = b.verifier.verify(b.cid, c.code, request_id=f"cc-{i}")
                with lock:
                    outcomes.append(acc.atc)
            except InvalidCode:
                pass

    threads = [threading.Thread(target=floor), threading.Thread(target=verifier)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == sorted(set(outcomes))
    assert b.refresh().last_atc == max([codes[-2].atc, *outcomes])


# -- PIN unblock ("3 wrong PINs") ---------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["secur-acces", "barclays", "natwest", "rabobank", "visa-dpa"])
def test_pin_unblock_script_restores_the_pin(
    memory_factory: StoreFactory, clock: Clock, profile: str
) -> None:
    policy = VerifierPolicy(max_fail=3) if profile == "rabobank" else None
    b = make_bench(memory_factory(clock), clock, profile=profile, policy=policy)
    unblock_pin_with_script(b)
    start(b.card)
    assert verify(b.card, PIN) == 0x9000
    r = b.identify()
    assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == r.atc
    assert any(rec.entry.event == "issuer-script" for rec in b.store.audit_records())


def test_pin_unblock_tampered_script_refused_by_card(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    card = b.card
    start(card)
    for _ in range(3):
        verify(card, "9999")
    gac = parse_gac(card.process(gac1_command(card))[:-2])
    script = bytearray(b.verifier.build_pin_script(b.cid, arqc=gac.ac, atc=gac.atc))
    script[-1] ^= 0x01
    assert sw(card.process(bytes(script))) == 0x6988
    assert card.state.ptc == 0


def test_pin_change_script(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    card = b.card
    start(card)
    assert verify(card, PIN) == 0x9000
    gac = parse_gac(card.process(gac1_command(card))[:-2])
    script = b.verifier.build_pin_script(b.cid, arqc=gac.ac, atc=gac.atc, new_pin="4321")
    assert sw(card.process(script)) == 0x9000
    start(card)
    assert verify(card, "4321") == 0x9000
    with pytest.raises(ValidationError):
        b.verifier.build_pin_script(b.cid, arqc=b"short", atc=1)


def test_v30_every_verification_costs_the_same_number_of_recomputations(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock, profile="barclays")
    v = b.verifier

    def cost(target: str, code: str) -> int:
        before = v.metrics
        with contextlib.suppress(InvalidCode):
            v.verify(target, code, request_id=b.rid())
        after = v.metrics
        return (after.candidate_evaluations - before.candidate_evaluations) + (
            after.dummy_evaluations - before.dummy_evaluations
        )

    last = b.refresh().last_atc
    no_candidate = f"{(1 << 25) | (((last + 100) & 0xFF) << 17):08d}"  # ATC bits outside the window
    with_candidate = f"{(1 << 25) | (((last + 1) & 0xFF) << 17) | 12345:08d}"
    costs = {
        "correct": cost(b.cid, b.identify().code),
        "no-candidate": cost(b.cid, no_candidate),
        "candidate": cost(b.cid, with_candidate),
        "unknown": cost("cr-0000000000000000", with_candidate),
    }
    assert set(costs.values()) == {v.policy.history_variants}, costs
