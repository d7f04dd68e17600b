"""Cryptographic correctness of the verifier against the emulated card (verifier.md V1–V12).

Every code here comes from the card emulator through the CAP reader (the reference): the
verifier must accept exactly those codes, in every mode and for every supported CVN, and
nothing else.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.verifier import engine
from capsim.verifier.model import CredentialProfile, OperationMode
from capsim.verifier.policy import VerifierPolicy, false_accept_bound
from capsim.verifier.service import Verifier, credential_profile_from_card
from tests.verifier.conftest import PAN, PIN, Clock, StoreFactory, make_bench, make_provider
from tests.verifier.helpers import (
    CVN_PROFILES,
    MODES,
    PROFILES,
    CountingProvider,
    CountingStore,
    new_op,
    policy_for,
    run_mode,
)

VERIFIER_DIR = Path(engine.__file__).parent


# -- V1 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cvn", sorted(CVN_PROFILES))
@pytest.mark.parametrize("mode", MODES)
def test_v1_every_atc_in_window_accepted_and_outside_rejected(
    memory_factory: StoreFactory, clock: Clock, mode: str, cvn: int
) -> None:
    window = 4
    profile = CVN_PROFILES[cvn]
    b = make_bench(
        memory_factory(clock),
        clock,
        profile=profile,
        cvn=cvn,
        policy=policy_for(profile, atc_window=window, max_atc_gap=window),
    )
    for k in range(1, window + 1):  # k = 1..W: accepted
        last = b.refresh().last_atc
        op = new_op(b, mode)
        for _ in range(k - 1):
            b.identify()
        result = run_mode(b, op)
        assert result.atc == last + k
        acc = b.verifier.verify(op.operation_id, result.code, request_id=b.rid())
        assert acc.atc == last + k
        assert acc.mode is OperationMode(mode)
    # k = W + 1: rejected
    op = new_op(b, mode)
    for _ in range(window):
        b.identify()
    late = run_mode(b, op)
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, late.code, request_id=b.rid())
    b.verifier.advance_floor(b.cid, late.atc)
    # k <= 0: a valid code for its own operation, at an ATC not above last_atc
    op_a, op_b = new_op(b, mode), new_op(b, mode)
    code_a = run_mode(b, op_a)
    code_b = run_mode(b, op_b)
    b.verifier.verify(op_b.operation_id, code_b.code, request_id=b.rid())
    with pytest.raises(InvalidCode):
        b.verifier.verify(op_a.operation_id, code_a.code, request_id=b.rid())


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("mode", MODES)
def test_v1_every_builtin_profile_and_mode(
    memory_factory: StoreFactory, clock: Clock, profile: str, mode: str
) -> None:
    b = make_bench(memory_factory(clock), clock, profile=profile, policy=policy_for(profile))
    for _ in range(3):
        op = new_op(b, mode)
        result = run_mode(b, op)
        assert b.verifier.verify(op.operation_id, result.code, request_id=b.rid()).atc == result.atc


def test_v1_first_code_of_a_new_card_verifies(store_factory: StoreFactory, clock: Clock) -> None:
    """The enrolment code is the card's very first code (ATC 1, 'new card' history)."""
    b = make_bench(store_factory(clock), clock, profile="natwest")
    assert b.first.atc == 1
    assert b.refresh().last_atc == 1
    # the first code's IAD differs from the later ones' (cap-protocol.md §9.6)
    later = b.identify()
    assert later.cryptogram != b.first.cryptogram
    assert b.verifier.verify(b.cid, later.code, request_id=b.rid()).atc == 2


# -- V2, V3 -----------------------------------------------------------------------------------------


def test_v2_last_atc_is_exactly_the_matched_atc_and_replay_rejected_after_restart(
    store_factory: StoreFactory, clock: Clock
) -> None:
    store = store_factory(clock)
    b = make_bench(store, clock)
    b.identify()
    b.identify()
    r = b.identify()
    acc = b.verifier.verify(b.cid, r.code, request_id=b.rid())
    assert acc.atc == r.atc == b.refresh().last_atc
    # a fresh Verifier on the same store (a restart): n is still rejected, n + 1 accepted
    again = Verifier(store, b.provider)
    with pytest.raises(InvalidCode):
        again.verify(b.cid, r.code, request_id="restart-1")
    nxt = b.identify()
    assert again.verify(b.cid, nxt.code, request_id="restart-2").atc == r.atc + 1


def test_v3_valid_code_at_or_below_last_atc_rejected(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    old = b.identify()
    newer = b.identify()
    b.verifier.verify(b.cid, newer.code, request_id=b.rid())
    with pytest.raises(InvalidCode):
        b.verifier.verify(b.cid, old.code, request_id=b.rid())


def test_v3_atc_never_wraps(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, initial_atc=0xFFFC)
    assert b.first.atc == 0xFFFD
    for _ in range(2):
        r = b.identify()
        b.verifier.verify(b.cid, r.code, request_id=b.rid())
    assert b.refresh().last_atc == 0xFFFF
    cred = b.refresh()
    card = engine.CardCandidate(
        credential_id=cred.credential_id,
        key_ref=cred.key_ref,
        psn=cred.psn,
        profile=cred.profile,
        last_atc=-1,
    )
    request = engine.MatchRequest(mode=OperationMode.IDENTIFY)
    for atc in (0, 1):
        wrapped = engine.expected_code(card, request, atc, 0, b.provider)
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, wrapped, request_id=b.rid())
    lay = engine.code_layout(cred.profile.ipb, cred.profile.psn_in_data)
    assert engine.candidate_atcs(0xFFFF, 16, lay, 0) == []
    assert max(engine.candidate_atcs(0xFFF0, 64, lay, 0) or [0]) <= 0xFFFF


# -- V4 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_v4_evaluations_bounded_by_matching_atcs_times_variants(
    memory_factory: StoreFactory, clock: Clock, profile: str
) -> None:
    window = 40
    policy = policy_for(profile, atc_window=window, max_atc_gap=window, max_fail=3)
    b = make_bench(memory_factory(clock), clock, profile=profile, policy=policy)
    cred = b.refresh()
    lay = engine.code_layout(cred.profile.ipb, cred.profile.psn_in_data)
    variants = policy.history_variants
    bound = math.ceil(window / (1 << lay.atc_bits)) * variants
    for trial in range(6):
        before = b.verifier.metrics.candidate_evaluations
        if trial % 2:
            r = b.identify()
            b.verifier.verify(b.cid, r.code, request_id=b.rid())
        else:
            with pytest.raises(InvalidCode):
                b.verifier.verify(b.cid, f"{(12345678 + trial * 7919) % 10**8:08d}", request_id=b.rid())
            b.verifier.unlock(b.cid)
        spent = b.verifier.metrics.candidate_evaluations - before
        cred = b.refresh()
        assert spent <= bound


@given(code=st.integers(0, 10**8 - 1), last=st.integers(-1, 0xFFFF), window=st.integers(1, 300))
def test_v4_candidate_atcs_match_disclosed_bits(code: int, last: int, window: int) -> None:
    ipb = bytes.fromhex("00001F00000000000FFFFF00000000008000")  # NatWest: 5 low ATC bits
    lay = engine.code_layout(ipb, False)
    atcs = engine.candidate_atcs(last, window, lay, code)
    want = (code >> 21) & 0x1F
    brute = [a for a in range(max(last + 1, 0), min(last + window, 0xFFFF) + 1) if a & 0x1F == want]
    assert atcs == brute
    assert len(atcs) <= math.ceil(window / 32)


# -- V5 ---------------------------------------------------------------------------------------------


def test_v5_false_accept_bound_above_ceiling_raises_config_error(
    store_factory: StoreFactory, clock: Clock
) -> None:
    from capsim.cards import builtin_profile

    rabo = credential_profile_from_card(builtin_profile("rabobank"))
    report = false_accept_bound(rabo, VerifierPolicy())
    assert report.ac_bits == 16
    assert report.probability == pytest.approx(5 * 1 * 2 / 2**16)
    with pytest.raises(ConfigError, match="false-accept bound"):
        Verifier(store_factory(clock), make_provider(), profiles=[rabo])
    store = store_factory(clock)
    Verifier(store, make_provider(), policy=VerifierPolicy(max_fail=3), profiles=[rabo])
    natwest = credential_profile_from_card(builtin_profile("natwest"))
    nat = false_accept_bound(natwest, VerifierPolicy())
    assert (nat.atc_bits, nat.ac_bits) == (5, 20)
    assert nat.probability < 1e-4


def test_v5_bound_recorded_in_audit_of_policy_change(store_factory: StoreFactory, clock: Clock) -> None:
    from capsim.cards import builtin_profile

    store = store_factory(clock)
    natwest = credential_profile_from_card(builtin_profile("natwest"))
    Verifier(store, make_provider(), profiles=[natwest])
    Verifier(store, make_provider(), profiles=[natwest])  # same policy: no new record
    Verifier(store, make_provider(), policy=VerifierPolicy(max_fail=4), profiles=[natwest])
    policy_records = [r for r in store.audit_records() if r.entry.event == "policy"]
    assert len(policy_records) == 2
    expected = false_accept_bound(natwest, VerifierPolicy(max_fail=4)).probability
    assert policy_records[-1].entry.details["false_accept_bound"] == f"{expected:.3g}"


def test_v5_enrolment_refuses_profile_above_ceiling(store_factory: StoreFactory, clock: Clock) -> None:
    with pytest.raises(ConfigError):
        make_bench(store_factory(clock), clock, profile="rabobank", policy=VerifierPolicy())


# -- V6 ---------------------------------------------------------------------------------------------

_SENSITIVE = ("code", "codes", "cryptogram", "cryptograms", "arqc", "ac", "mac", "presented", "tag")
_SENSITIVE_EXACT = ("expected", "text")


def _names(node: ast.AST) -> set[str]:
    """Names and attributes a comparison reads; ``len(x)`` only reads a length."""
    out: set[str] = set()
    stack = [node]
    while stack:
        sub = stack.pop()
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "len":
            continue
        if isinstance(sub, ast.Name):
            out.add(sub.id.lower())
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr.lower())
        stack.extend(ast.iter_child_nodes(sub))
    return out


def _is_sensitive(name: str) -> bool:
    name = name.strip("_")
    return name in _SENSITIVE_EXACT or any(p in _SENSITIVE for p in name.split("_"))


def test_v6_no_equality_on_codes_cryptograms_or_macs_in_verifier() -> None:
    offenders = []
    for path in sorted(VERIFIER_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                names = _names(node)
                if any(_is_sensitive(n) for n in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_v6_exactly_one_compare_digest_on_codes() -> None:
    tree = ast.parse((VERIFIER_DIR / "engine.py").read_text(encoding="utf-8"))
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "compare_digest"
    ]
    assert len(calls) == 1
    owner = [
        f.name
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and any(c in ast.walk(f) for c in calls)
    ]
    assert owner == ["_codes_equal"]
    # the AST test catches an offender
    bad = ast.parse("if expected_code == presented.text:\n    pass\n")
    assert any(isinstance(n, ast.Compare) and any(_is_sensitive(x) for x in _names(n)) for n in ast.walk(bad))


# -- V7 ---------------------------------------------------------------------------------------------

BAD_CODES = [
    "٣٣٣٣٣٣٣٣",
    "1234567²",
    " 12345678",
    "12345678 ",
    "+1234567",
    "-1234567",
    "1234567",
    "123456789",
    "",
    "1234 678",
    "１２３４５６７８",
    "0x123456",
    "12345678\n",
    "1" * 17,
    "1" * 10_000,
]


@pytest.mark.parametrize("bad", BAD_CODES)
def test_v7_malformed_code_rejected_before_any_crypto_or_database_access(
    store_factory: StoreFactory, clock: Clock, bad: str
) -> None:
    counting = CountingStore(store_factory(clock))
    provider = CountingProvider()
    provider.add_issuer_keys("bank", imk_ac=bytes(16))
    verifier = Verifier(counting, provider)
    tx_before, calls_before = counting.transactions, provider.calls
    with pytest.raises(ValidationError, match="code"):
        verifier.verify("cr-0123456789abcdef", bad, request_id="r1")
    assert counting.transactions == tx_before
    assert provider.calls == calls_before


def test_v7_malformed_code_not_counted_as_failure(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock)
    with pytest.raises(ValidationError):
        b.verifier.verify(b.cid, "1234567", request_id=b.rid())
    assert b.refresh().fail_count == 0


@pytest.mark.parametrize(
    "bad",
    [
        "1234567",
        "123456789",
        "1" * 10_000,
        "1234567x",
        "1234567:",
        "1234567/",
        "１２３４５６７８",
        " 12345678",
    ],
)
def test_v7_malformed_code_message_names_the_rule(bad: str) -> None:
    """The message a caller (and the CLI) shows for a malformed code is the rule, never the code."""
    with pytest.raises(ValidationError) as info:
        engine.parse_code(bad)
    assert str(info.value) == "code: expected exactly 8 ASCII digits"


def test_each_wrong_code_for_an_operation_counts_one_attempt(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "sign", amount=1500)
    for n in (1, 2):
        with pytest.raises(InvalidCode):
            b.verifier.verify(op.operation_id, "10000000", request_id=b.rid())
        stored = b.verifier.get_operation(op.operation_id)
        assert stored is not None
        assert stored.attempts == n


def test_v7_parse_code_uses_neither_int_nor_isdigit() -> None:
    tree = ast.parse(inspect.getsource(engine.parse_code))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            assert not (isinstance(func, ast.Name) and func.id == "int")
            assert not (
                isinstance(func, ast.Attribute) and func.attr in {"isdigit", "isdecimal", "isnumeric"}
            )


def test_v7_unpadded_codes_only_when_enabled(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, profile="natwest")  # codes start with '0'
    r = b.identify()
    assert r.code.startswith("0")
    with pytest.raises(ValidationError):
        b.verifier.verify(b.cid, r.code.lstrip("0"), request_id=b.rid())
    lenient = Verifier(b.store, b.provider, policy=VerifierPolicy(accept_unpadded=True))
    assert lenient.verify(b.cid, r.code.lstrip("0"), request_id=b.rid()).atc == r.atc


# -- V8 ---------------------------------------------------------------------------------------------


def test_v8_verify_takes_no_transaction_data() -> None:
    params = list(inspect.signature(Verifier.verify).parameters)
    assert params == ["self", "target", "code", "request_id"]


@pytest.mark.parametrize("code_mode", MODES)
def test_v8_code_for_one_operation_rejected_for_any_other_at_same_atc(
    memory_factory: StoreFactory, clock: Clock, code_mode: str
) -> None:
    b = make_bench(memory_factory(clock), clock, profile="barclays")
    for other_mode in MODES:
        if other_mode == code_mode:
            continue
        mine = new_op(b, code_mode)
        other = new_op(b, other_mode)
        result = run_mode(b, mine)
        with pytest.raises(InvalidCode):
            b.verifier.verify(other.operation_id, result.code, request_id=b.rid())
        assert b.verifier.verify(mine.operation_id, result.code, request_id=b.rid()).atc == result.atc


@pytest.mark.parametrize("mode", MODES)
def test_v8_same_mode_operations_never_share_a_code(
    memory_factory: StoreFactory, clock: Clock, mode: str
) -> None:
    """Respond/Sign operations get distinct challenges; a second Identify/TDS operation with the
    same input supersedes the first, so a code never satisfies two open operations."""
    b = make_bench(memory_factory(clock), clock, profile="barclays")
    first = new_op(b, mode)
    second = new_op(b, mode)
    result = run_mode(b, first)
    with pytest.raises(InvalidCode):
        b.verifier.verify(
            first.operation_id if mode in ("identify", "tds") else second.operation_id,
            result.code,
            request_id=b.rid(),
        )
    if mode in ("respond", "sign"):
        assert first.challenge != second.challenge
        assert b.verifier.verify(first.operation_id, result.code, request_id=b.rid()).atc == result.atc
    else:
        assert b.verifier.verify(second.operation_id, result.code, request_id=b.rid()).atc == result.atc


# -- V9 ---------------------------------------------------------------------------------------------


def test_v9_challenges_server_generated_canonical_never_zero(
    store_factory: StoreFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secrets

    b = make_bench(store_factory(clock), clock)
    draws = iter([0, 1234, 99999999])
    monkeypatch.setattr(secrets, "randbelow", lambda n: next(draws))
    op = new_op(b, "respond")
    assert op.challenge == "00001234"
    op2 = new_op(b, "sign")
    assert op2.challenge == "99999999"
    monkeypatch.undo()
    for _ in range(20):
        c = new_op(b, "respond").challenge
        assert len(c) == 8
        assert c.isascii()
        assert c != "00000000"


def test_v9_sign_reference_canonicalised(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, profile="barclays")
    op = new_op(b, "sign", reference="1234")
    assert op.challenge == "00001234"
    assert op.reference_supplied
    r = b.reader.sign(PIN, "00001234", op.amount_minor)
    assert b.verifier.verify(op.operation_id, r.code, request_id=b.rid()).atc == r.atc
    with pytest.raises(ValidationError):
        new_op(b, "sign", reference="123456789")


# -- V10 --------------------------------------------------------------------------------------------


def test_v10_history_variants_in_documented_order(store_factory: StoreFactory, clock: Clock) -> None:
    from capsim.cards import builtin_profile, history_variants, predict_arqc_iad

    card_profile = builtin_profile("barclays")
    profile = credential_profile_from_card(card_profile)
    assert profile.iad_variants == tuple(
        predict_arqc_iad(card_profile, h) for h in history_variants(card_profile)
    )
    provider = CountingProvider()
    provider.add_issuer_keys("bank", imk_ac=bytes(16))
    keys = provider.register_card(issuer_key_id="bank", pan=PAN)
    card = engine.CardCandidate(
        credential_id="c", key_ref=keys.key_ref, psn="00", profile=profile, last_atc=0, variants=3
    )
    lay = engine.code_layout(profile.ipb, False)
    code = engine.parse_code(f"{(1 << 25) | (1 << 17):08d}")  # CID bit, ATC 1
    assert engine.candidate_atcs(0, 4, lay, code.value) == [1]
    engine.match([card], code, engine.MatchRequest(mode=OperationMode.IDENTIFY), provider, window=4)
    assert provider.iads == list(profile.iad_variants[:3])


def test_v10_code_after_an_issuer_script_verifies(store_factory: StoreFactory, clock: Clock) -> None:
    """After a PIN UNBLOCK script the card's next ARQC reports the script: still accepted."""
    from tests.verifier.test_lifecycle import unblock_pin_with_script

    b = make_bench(store_factory(clock), clock, profile="barclays")
    unblock_pin_with_script(b)
    r = b.identify()
    assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == r.atc
    r2 = b.identify()
    assert b.verifier.verify(b.cid, r2.code, request_id=b.rid()).atc == r2.atc


@pytest.mark.parametrize("profile", ["barclays", "secur-acces"])
def test_v10_one_steady_variant_still_enrols_with_the_first_code(
    store_factory: StoreFactory, clock: Clock, profile: str
) -> None:
    """``history_variants=1`` is allowed: the card's very first code (its "new card" history,
    the second variant) still enrols, and the steady codes after it verify."""
    policy = VerifierPolicy(history_variants=1)
    b = make_bench(store_factory(clock), clock, profile=profile, policy=policy)  # enrols with code #1
    assert b.verifier.policy.history_variants == 1
    assert b.refresh().last_atc == b.first.atc
    for _ in range(2):
        r = b.identify()
        assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == r.atc


# -- V11 --------------------------------------------------------------------------------------------


def test_v11_cards_sharing_a_pan_each_tried_only_matched_changes(
    store_factory: StoreFactory, clock: Clock
) -> None:
    store = store_factory(clock)
    a = make_bench(store, clock, profile="barclays", psn="00")
    b = make_bench(store, clock, profile="barclays", psn="01", provider=a.provider, verifier=a.verifier)
    before_a = a.refresh().last_atc
    r = b.identify()
    evals = a.verifier.metrics.candidate_evaluations
    acc = a.verifier.verify(a.cid, r.code, request_id=a.rid())
    assert acc.credential_id == b.cid
    assert a.refresh().last_atc == before_a
    assert b.refresh().last_atc == r.atc
    assert a.verifier.metrics.candidate_evaluations - evals == 2 * a.verifier.policy.history_variants


def test_v11_psn_bits_filter_cards_first(store_factory: StoreFactory, clock: Clock) -> None:
    store = store_factory(clock)
    policy = policy_for("rabobank")
    a = make_bench(store, clock, profile="rabobank", psn="00", policy=policy)
    b = make_bench(store, clock, profile="rabobank", psn="01", provider=a.provider, verifier=a.verifier)
    assert a.refresh().profile.psn_in_data
    r = b.identify()
    evals = a.verifier.metrics.candidate_evaluations
    assert a.verifier.verify(a.cid, r.code, request_id=a.rid()).credential_id == b.cid
    # only the card whose PSN bits match the code was evaluated
    assert a.verifier.metrics.candidate_evaluations - evals == policy.history_variants


# -- V12 --------------------------------------------------------------------------------------------


def test_v12_tds_fields_stored_and_mac_recomputed(store_factory: StoreFactory, clock: Clock) -> None:
    b = make_bench(store_factory(clock), clock, profile="rabobank", policy=policy_for("rabobank"))
    op = new_op(b, "tds", fields=["0530026806"])
    assert op.tds_fields == ("0530026806",)
    stored = b.verifier.get_operation(op.operation_id)
    assert stored is not None
    assert stored.tds_fields == ("0530026806",)
    wrong = b.reader.sign_data(PIN, ["0530026807"])
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, wrong.code, request_id=b.rid())
    right = b.reader.sign_data(PIN, ["0530026806"])
    assert b.verifier.verify(op.operation_id, right.code, request_id=b.rid()).atc == right.atc
    with pytest.raises(ValidationError):
        new_op(b, "tds", fields=["1"] * 11)
    with pytest.raises(ValidationError):
        new_op(b, "tds", fields=["12345678901"])


def test_v12_engine_matches_published_synthetic_vectors() -> None:
    """CAP-SYNTH (vectors.md §1): the engine's expected codes equal the published ones."""
    provider = make_provider()
    keys = provider.register_card(issuer_key_id="bank", pan="1234567890123456", psn="00")
    profile = CredentialProfile(
        reader_profile="visa-dpa",
        cdol1=bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704"),
        aip=bytes.fromhex("1000"),
        ipb=bytes.fromhex("8000FF000000000001FFFF00000000000000"),
        iaf=b"\xa0",
        cvn=0x0A,
        iad_variants=(bytes.fromhex("060A0A03A49000"),),
    )
    card = engine.CardCandidate(
        credential_id="c", key_ref=keys.key_ref, psn="00", profile=profile, last_atc=0x10
    )
    cases = [
        (engine.MatchRequest(mode=OperationMode.IDENTIFY), "36521295"),
        (engine.MatchRequest(mode=OperationMode.RESPOND, challenge="78901234"), "36481997"),
        (engine.MatchRequest(mode=OperationMode.SIGN, challenge="78901234", amount_minor=123456), "36563520"),
    ]
    for request, code in cases:
        assert engine.expected_code(card, request, 0x16, 0, provider) == code
        result = engine.match([card], engine.parse_code(code), request, provider, window=16)
        assert result.match is not None
        assert result.match.atc == 22
    assert dataclasses.is_dataclass(card)


# -- credential parameters: derivation option and session-key method ------------------------------------


@pytest.mark.parametrize(
    ("method", "tree"),
    [
        ("none", None),
        ("emv-csk", None),
        ("mastercard-skd", None),
        ("emv2000-tree", (2, 16, bytes(16))),
        ("emv2000-tree", (4, 8, bytes.fromhex("00112233445566778899AABBCCDDEEFF"))),
    ],
)
def test_v1_session_key_method_is_a_credential_parameter(
    method: str, tree: tuple[int, int, bytes] | None
) -> None:
    """The engine's codes equal codes built directly from capsim.crypto with that method."""
    from capsim.cap import compute_code
    from capsim.crypto import CVN, SessionKeyMethod, TreeParams, derive_icc_mk, generate_ac

    provider = make_provider()
    keys = provider.register_card(issuer_key_id="bank", pan=PAN, psn="01")
    extra = (
        {} if tree is None else {"tree_branch_factor": tree[0], "tree_height": tree[1], "tree_iv": tree[2]}
    )
    profile = CredentialProfile(
        reader_profile="mc-cap",
        cdol1=bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704"),
        aip=bytes.fromhex("1000"),
        ipb=bytes.fromhex("00001F00000000000FFFFF00000000008000"),
        iaf=b"\xa0",
        cvn=0x12,
        iad_variants=(bytes.fromhex("06011203A48000"),),
        session_key_method=method,
        **extra,  # type: ignore[arg-type]
    )
    card = engine.CardCandidate(
        credential_id="c", key_ref=keys.key_ref, psn="01", profile=profile, last_atc=0x40
    )
    request = engine.MatchRequest(mode=OperationMode.RESPOND, challenge="12345678")
    mk = derive_icc_mk(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), PAN, "01")
    cdol = engine.cdol_data_for(profile, request)
    params = None if tree is None else TreeParams(branch_factor=tree[0], height=tree[1], iv=tree[2])
    for atc in (0x41, 0x47, 0x5A):
        atc_b = atc.to_bytes(2, "big")
        iad = profile.iad_variants[0]
        ac = generate_ac(
            CVN.VISA_18,
            mk,
            cdol1_data=cdol,
            aip=profile.aip,
            atc=atc_b,
            iad=iad,
            un=bytes.fromhex("12345678"),
            method=SessionKeyMethod(method),
            tree=params,
        )
        want = compute_code(profile.ipb, b"\x80", atc_b, ac, iad)
        assert engine.expected_code(card, request, atc, 0, provider) == want
        result = engine.match([card], engine.parse_code(want), request, provider, window=32)
        assert result.match is not None
        assert result.match.atc == atc


def test_v1_option_b_derivation_for_long_pans(memory_factory: StoreFactory, clock: Clock) -> None:
    """A 19-digit PAN uses ICC master-key derivation option B (emv-crypto.md §4.1)."""
    long_pan = "5413339000001513123"
    b = make_bench(memory_factory(clock), clock, profile="barclays", pan=long_pan)
    assert b.refresh().profile.key_derivation == "auto"
    r = b.identify()
    assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == r.atc
    wrong_option = make_provider()
    keys = wrong_option.register_card(issuer_key_id="bank", pan=long_pan, derivation="A")
    cred = b.refresh()
    card = engine.CardCandidate(
        credential_id="x", key_ref=keys.key_ref, psn="00", profile=cred.profile, last_atc=cred.last_atc
    )
    r2 = b.identify()
    miss = engine.match(
        [card],
        engine.parse_code(r2.code),
        engine.MatchRequest(mode=OperationMode.IDENTIFY),
        wrong_option,
        window=16,
    )
    assert miss.match is None


def test_v1_default_window_edges(memory_factory: StoreFactory, clock: Clock) -> None:
    """With the default policy (W = 16): k = 16 accepted, k = 17 rejected."""
    b = make_bench(memory_factory(clock), clock)
    window = b.verifier.policy.atc_window
    assert window == 16
    for k, accepted in ((window, True), (window + 1, False)):
        last = b.refresh().last_atc
        op = new_op(b, "respond")
        for _ in range(k - 1):
            b.identify()
        r = run_mode(b, op)
        assert r.atc == last + k
        if accepted:
            assert b.verifier.verify(op.operation_id, r.code, request_id=b.rid()).atc == r.atc
        else:
            with pytest.raises(InvalidCode):
                b.verifier.verify(op.operation_id, r.code, request_id=b.rid())
