"""Dynamic linking and operations (verifier.md V13–V18; RTS Art. 5)."""

from __future__ import annotations

import pytest

from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.verifier.model import BatchItem, OperationMode
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.service import Verifier, operation_digest
from tests.verifier.conftest import PIN, Clock, StoreFactory, make_bench
from tests.verifier.helpers import new_op, run_mode


def _digest(**kw: object) -> bytes:
    base: dict[str, object] = {
        "mode": OperationMode.SIGN,
        "challenge": "12345678",
        "amount_minor": 1500,
        "currency": "978",
        "payee": "NL91ABNA0417164300",
        "tds_fields": (),
    }
    base.update(kw)
    return operation_digest(**base)  # type: ignore[arg-type]


def test_v13_digest_changes_with_one_minor_unit_currency_or_payee_char() -> None:
    ref = _digest()
    assert _digest(amount_minor=1501) != ref
    assert _digest(currency="840") != ref
    assert _digest(payee="NL91ABNA0417164301") != ref
    assert _digest() == ref


def test_v13_amount_change_rejects(store_factory: StoreFactory, clock: Clock) -> None:
    """A code for 1500.00 is refused for an operation of 1500.01 (card signs the amount)."""
    b = make_bench(store_factory(clock), clock, profile="barclays")  # IAF A0: amount in the AC
    op = new_op(b, "sign", amount=150000)
    other = new_op(b, "sign", amount=150001)
    r = b.reader.sign(PIN, op.challenge, 150000)
    with pytest.raises(InvalidCode):
        b.verifier.verify(other.operation_id, r.code, request_id=b.rid())
    assert b.verifier.verify(op.operation_id, r.code, request_id=b.rid()).atc == r.atc


def test_v13_payee_or_currency_change_rejects(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, profile="secur-acces")
    op = new_op(b, "sign", amount=500, currency="EUR", payee="ACME BV")
    for change in ({"payee": "ACME BW"}, {"currency": "USD"}):
        kwargs = {"amount": 500, "currency": "EUR", "payee": "ACME BV", **change}
        other = new_op(b, "sign", **kwargs)
        assert other.txn_digest != op.txn_digest
        r = b.reader.sign(PIN, op.challenge, 500, "EUR")
        with pytest.raises(InvalidCode):
            b.verifier.verify(other.operation_id, r.code, request_id=b.rid())
        b.verifier.advance_floor(b.cid, r.atc)


def test_v14_operation_consumed_on_accept(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "respond")
    r1 = b.reader.respond(PIN, op.challenge)
    b.verifier.verify(op.operation_id, r1.code, request_id=b.rid())
    r2 = b.reader.respond(PIN, op.challenge)  # another valid code for the same challenge
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, r2.code, request_id=b.rid())
    stored = b.verifier.get_operation(op.operation_id)
    assert stored is not None
    assert stored.consumed_at is not None


def test_v14_operation_closes_after_max_attempts(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "respond")
    assert op.max_attempts == 3
    for i in range(3):
        with pytest.raises(InvalidCode):
            b.verifier.verify(op.operation_id, f"{11111111 * (i + 1):08d}", request_id=b.rid())
    stored = b.verifier.get_operation(op.operation_id)
    assert stored is not None
    assert stored.attempts == 3
    r = b.reader.respond(PIN, op.challenge)
    evals = b.verifier.metrics.evaluation_calls
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, r.code, request_id=b.rid())
    assert b.verifier.metrics.evaluation_calls == evals  # closed: not even evaluated
    assert b.refresh().fail_count == 3


def test_v14_max_attempts_never_above_max_fail() -> None:
    with pytest.raises(ConfigError):
        VerifierPolicy(max_fail=2, max_attempts_per_operation=3)


def test_v15_expired_operation_rejected_by_store_clock(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "respond")
    assert (op.expires_at - op.created_at).total_seconds() == 120
    r = b.reader.respond(PIN, op.challenge)
    clock.advance(120)
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, r.code, request_id=b.rid())
    op2 = new_op(b, "respond")
    r2 = b.reader.respond(PIN, op2.challenge)
    clock.advance(119)
    assert b.verifier.verify(op2.operation_id, r2.code, request_id=b.rid()).atc == r2.atc


def test_v15_psd2_profile_refuses_ttl_above_300s(store_factory: StoreFactory, clock: Clock) -> None:
    with pytest.raises(ConfigError):
        VerifierPolicy.psd2_profile(operation_ttl_s=301)
    assert VerifierPolicy.psd2_profile(operation_ttl_s=300).operation_ttl_s == 300
    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy.psd2_profile())
    with pytest.raises(ConfigError):
        new_op(b, "respond", ttl_s=301)


def test_v16_challenges_unique_among_open_operations(
    store_factory: StoreFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secrets

    b = make_bench(store_factory(clock), clock)
    draws = iter([42, 42, 42, 43])
    monkeypatch.setattr(secrets, "randbelow", lambda n: next(draws))
    first = new_op(b, "respond")
    second = new_op(b, "sign")
    assert (first.challenge, second.challenge) == ("00000042", "00000043")


def test_v16_same_cryptogram_input_refused_while_open(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, profile="barclays")  # IAF A0: no currency in the AC
    new_op(b, "sign", reference="12345678", amount=100, currency="EUR")
    with pytest.raises(ValidationError, match="V16"):
        new_op(b, "sign", reference="12345678", amount=100, currency="USD")
    new_op(b, "sign", reference="12345678", amount=101, currency="EUR")  # another cryptogram input
    clock.advance(121)  # the first ones expired: the reference is free again
    new_op(b, "sign", reference="12345678", amount=100, currency="EUR")


def test_v16_batch_digest_covers_total_and_every_payee(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    items = [BatchItem(payee="A", amount_minor=100), BatchItem(payee="B", amount_minor=250)]
    op = new_op(b, "sign", amount=None, batch=items)
    assert op.amount_minor == 350
    other = new_op(b, "sign", amount=None, batch=[items[0], BatchItem(payee="C", amount_minor=250)])
    assert other.txn_digest != op.txn_digest
    with pytest.raises(ValidationError):
        new_op(b, "sign", amount=351, batch=items)


def test_v17_psd2_payment_needs_signed_amount_or_tds_over_amount_and_payee(
    store_factory: StoreFactory, clock: Clock
) -> None:
    policy = VerifierPolicy.psd2_profile()
    store = store_factory(clock)
    b = make_bench(store, clock, profile="barclays", policy=policy)  # IAF A0: signs the amount
    new_op(b, "sign", payment=True)
    with pytest.raises(ConfigError):
        new_op(b, "respond", payment=True)
    with pytest.raises(ConfigError):
        new_op(b, "identify", payment=True)
    with pytest.raises(ConfigError):
        new_op(b, "tds", payment=True, fields=["1", "2"])
    new_op(b, "tds", payment=True, amount=1500, payee="NL91ABNA0417164300", fields=["1500", "0417164300"])
    nat = make_bench(store, clock, profile="secur-acces", policy=policy, user="bob", pan="5413339000001521")
    iaf = nat.refresh().profile.iaf
    if not iaf[0] & 0x80:  # a card that does not sign the amount: no SIGN payment
        with pytest.raises(ConfigError):
            new_op(nat, "sign", payment=True)
    # outside the PSD2 profile the flag is informative only
    plain = Verifier(store, b.provider, policy=VerifierPolicy())
    plain.issue_operation(b.cid, mode="respond", payment=True)


def test_v18_identify_without_operation_bounded_by_max_atc_gap(
    store_factory: StoreFactory, clock: Clock
) -> None:
    policy = VerifierPolicy(atc_window=8, max_atc_gap=3)
    b = make_bench(store_factory(clock), clock, policy=policy)
    last = b.refresh().last_atc
    for _ in range(2):
        b.identify()
    r = b.identify()  # gap 3: accepted
    assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == last + 3
    for _ in range(3):
        b.identify()
    r = b.identify()  # gap 4 = max_atc_gap + 1: rejected
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, r.code, request_id=b.rid())
    with pytest.raises(ConfigError):
        VerifierPolicy(atc_window=8, max_atc_gap=9)


def test_v18_identify_without_operation_can_be_disabled(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    strict = Verifier(b.store, b.provider, policy=VerifierPolicy(allow_identify_without_operation=False))
    r = b.identify()
    with pytest.raises(InvalidCode):
        strict.verify(b.cid, r.code, request_id=b.rid())
    op = strict.issue_operation(b.cid, mode="identify")
    r2 = run_mode(b, op)
    assert strict.verify(op.operation_id, r2.code, request_id=b.rid()).atc == r2.atc
