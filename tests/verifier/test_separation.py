"""Domain separation (capsim.verifier.separation): no operation that a lesser CAP mode's code satisfies.

The verdicts of :func:`colliding_modes` are checked against a brute-force comparison of
cryptogram inputs (CDOL1 data, and the TDS message) over a sampled input space, on every
built-in card template and on generated CDOL1/IAF combinations; the collisions themselves
are reproduced with the card emulator and the reader; the verifier refuses to issue the
operations a lesser mode satisfies and keeps issuing everything else.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cap import CURRENCIES as ISO_CURRENCIES
from capsim.cap import MAX_AMOUNT, tds_message
from capsim.cards import builtin_profile, new_card
from capsim.cli._common import ExitCode
from capsim.errors import InvalidCode, ValidationError
from capsim.reader import CapReader, CapResult
from capsim.tlv import DolEntry, encode_dol
from capsim.transports.inprocess import InProcessTransport
from capsim.verifier import engine
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import CredentialProfile, OperationMode
from capsim.verifier.separation import (
    CryptogramInput,
    colliding_modes,
    cryptogram_input,
    producible,
    separation_refusal,
    witness,
)
from capsim.verifier.service import credential_profile_from_card
from tests.cli.helpers import Cli, World
from tests.verifier.conftest import IMK_AC, IMK_SMC, IMK_SMI, PAN, PIN, Bench, Clock, StoreFactory, make_bench
from tests.verifier.helpers import PROFILES, policy_for

M = OperationMode
R = engine.MatchRequest
ORDER = (M.IDENTIFY, M.RESPOND, M.SIGN, M.TDS)

CHALLENGES = ("00000000", "00000001", "00001234", "12345678", "99999999")
AMOUNTS = (0, 1, 150000, MAX_AMOUNT)
CURRENCIES = ("978", "826", "392")
#: every currency a reader accepts (a CDOL1 that cuts 5F2A to one byte makes several alike)
ALL_CURRENCIES = tuple(sorted(c.numeric for c in ISO_CURRENCIES.values()))
FIELDS: tuple[tuple[str, ...], ...] = (("0",), ("1", "2"), ("150000", "0123456789"))


@cache
def cred_profile(name: str) -> CredentialProfile:
    return credential_profile_from_card(builtin_profile(name))


# ------------------------------------------------------------------------------------------------
# Brute force: what each mode's reader produces, compared byte for byte


def raw_input(profile: CredentialProfile, request: engine.MatchRequest) -> tuple[bytes, bytes | None]:
    """Independent of the module under test: CDOL1 data as the verifier rebuilds it, and the
    TDS message for TDS (what a TDS code is computed over besides the Identify AC)."""
    cdol = engine.cdol_data_for(profile, request)
    return cdol, tds_message(request.tds_fields) if request.mode is M.TDS else None


def requests(
    mode: OperationMode,
    challenges: Iterable[str] = CHALLENGES,
    amounts: Iterable[int] = AMOUNTS,
    currencies: Iterable[str] = CURRENCIES,
    fields: Iterable[tuple[str, ...]] = FIELDS,
) -> list[engine.MatchRequest]:
    """Every request of ``mode`` over the sampled inputs (a reader accepts each of them)."""
    if mode is M.IDENTIFY:
        return [R(mode=mode)]
    if mode is M.RESPOND:
        return [R(mode=mode, challenge=c) for c in challenges]
    if mode is M.SIGN:
        return [
            R(mode=mode, challenge=c, amount_minor=a, currency=cur)
            for c, a, cur in itertools.product(challenges, amounts, currencies)
        ]
    return [R(mode=mode, tds_fields=f) for f in fields]


def reachable(
    profile: CredentialProfile,
    challenges: Iterable[str] = CHALLENGES,
    amounts: Iterable[int] = AMOUNTS,
    fields: Iterable[tuple[str, ...]] = FIELDS,
) -> dict[OperationMode, set[tuple[bytes, bytes | None]]]:
    """Brute force: each mode's inputs over the sampled challenges, amounts and fields, and
    every ISO 4217 currency.

    The space holds a witness whenever one exists for a request drawn from the same samples:
    the other modes put zero amounts and currencies and a UN that is 0 or the request's own
    challenge, so a mode that reproduces a request needs challenge 0 or the request's own,
    amount 0 or the request's own, and some currency.
    """
    challenges, amounts, fields = tuple(challenges), tuple(amounts), tuple(fields)
    return {
        m: {raw_input(profile, r) for r in requests(m, challenges, amounts, ALL_CURRENCIES, fields)}
        for m in ORDER
    }


def assert_agrees(
    profile: CredentialProfile,
    request: engine.MatchRequest,
    space: dict[OperationMode, set[tuple[bytes, bytes | None]]],
) -> None:
    own = raw_input(profile, request)
    data = cryptogram_input(profile, request)
    assert (data.cdol1, data.tds_message) == own
    brute = tuple(m for m in ORDER if m is not request.mode and own in space[m])
    assert colliding_modes(profile, request) == brute, request
    for other in ORDER:
        found = witness(profile, other, data)
        assert producible(profile, other, data) is (found is not None)
        if other is not request.mode:
            assert (found is not None) is (other in brute), (request, other)
        if found is not None:
            assert found.mode is other
            assert raw_input(profile, found) == own  # the witness really produces it


@pytest.mark.parametrize("name", PROFILES)
def test_verdicts_equal_brute_force_on_every_template(name: str) -> None:
    """Every ordered pair of modes, every sampled request: the verdict is the brute-force one."""
    profile = cred_profile(name)
    space = reachable(profile)
    for mode in ORDER:
        for request in requests(mode):
            assert_agrees(profile, request, space)


_STD = (
    (0x9F02, 6),
    (0x9F03, 6),
    (0x9F1A, 2),
    (0x95, 5),
    (0x5F2A, 2),
    (0x9A, 3),
    (0x9C, 1),
    (0x9F37, 4),
    (0x9F35, 1),
    (0x9F34, 3),
)


@st.composite
def card_profiles(draw: st.DrawFn) -> CredentialProfile:
    """A template's profile with another IAF, reader profile and CDOL1 (tags dropped, resized,
    repeated): the verdict must follow the card's data, not its name."""
    base = cred_profile(draw(st.sampled_from(PROFILES)))
    lengths = {0x9F37: (1, 2, 4, 6), 0x9F02: (3, 6, 8), 0x5F2A: (1, 2, 3)}
    entries = [
        DolEntry(tag, draw(st.sampled_from(lengths.get(tag, (n,)))))
        for tag, n in _STD
        if draw(st.booleans()) or tag not in lengths
    ]
    if draw(st.booleans()):
        entries.append(DolEntry(draw(st.sampled_from(sorted(lengths))), draw(st.sampled_from((1, 2, 4)))))
    return dataclasses.replace(
        base,
        cdol1=encode_dol(entries),
        iaf=bytes([draw(st.sampled_from((0x00, 0x20, 0x80, 0xA0, 0xC0, 0xE0)))]),
        reader_profile=draw(st.sampled_from(("mc-cap", "visa-dpa", "be-payment"))),
    )


@given(
    profile=card_profiles(),
    mode=st.sampled_from(ORDER),
    challenge=st.one_of(st.sampled_from(CHALLENGES), st.integers(0, 10**8 - 1).map("{:08d}".format)),
    amount=st.one_of(st.sampled_from(AMOUNTS), st.integers(0, MAX_AMOUNT)),
    currency=st.sampled_from(("978", "826", "392", "840", "048")),
    fields=st.lists(st.text("0123456789", min_size=1, max_size=10), min_size=1, max_size=10).map(tuple),
)
def test_verdicts_equal_brute_force_on_generated_cards(
    profile: CredentialProfile,
    mode: OperationMode,
    challenge: str,
    amount: int,
    currency: str,
    fields: tuple[str, ...],
) -> None:
    request = {
        M.IDENTIFY: R(mode=mode),
        M.RESPOND: R(mode=mode, challenge=challenge),
        M.SIGN: R(mode=mode, challenge=challenge, amount_minor=amount, currency=currency),
        M.TDS: R(mode=mode, tds_fields=fields),
    }[mode]
    space = reachable(profile, ("00000000", challenge), (0, amount), (fields,))
    assert_agrees(profile, request, space)


def test_verdicts_follow_the_cdol_and_iaf() -> None:
    """Without 9F37 Respond is Identify; without an amount signed, Sign is Respond (refused)."""
    base = cred_profile("natwest")
    no_un = dataclasses.replace(base, cdol1=encode_dol([DolEntry(0x9F02, 6), DolEntry(0x5F2A, 2)]))
    respond = R(mode=M.RESPOND, challenge="12345678")
    assert colliding_modes(no_un, respond) == (M.IDENTIFY, M.SIGN)
    assert "an Identify code's" in str(separation_refusal(no_un, respond))
    no_amount = dataclasses.replace(base, iaf=b"\x00")
    sign = R(mode=M.SIGN, challenge="12345678", amount_minor=150000, currency="978")
    assert colliding_modes(no_amount, sign) == (M.RESPOND,)
    assert "a Respond code's" in str(separation_refusal(no_amount, sign))
    assert "use TDS" in str(separation_refusal(no_amount, sign))
    assert separation_refusal(no_amount, R(mode=M.TDS, tds_fields=("150000",))) is None


@pytest.mark.parametrize("name", PROFILES)
def test_refusal_policy_on_every_template(name: str) -> None:
    """Refused: Sign that Identify/Respond reproduce, Respond that Identify reproduces.
    Allowed: Identify, TDS, Respond with a non-zero challenge, Sign with a positive amount."""
    profile = cred_profile(name)
    signs_currency = profile.iaf[0] & 0x80 and not profile.iaf[0] & 0x20
    assert separation_refusal(profile, R(mode=M.IDENTIFY)) is None
    assert colliding_modes(profile, R(mode=M.IDENTIFY))[0] is M.RESPOND  # Respond "0" always
    assert separation_refusal(profile, R(mode=M.TDS, tds_fields=FIELDS[2])) is None
    assert "an Identify code's" in str(separation_refusal(profile, R(mode=M.RESPOND, challenge="00000000")))
    for challenge in CHALLENGES:
        if challenge != "00000000":
            assert separation_refusal(profile, R(mode=M.RESPOND, challenge=challenge)) is None
        for amount in AMOUNTS:
            sign = R(mode=M.SIGN, challenge=challenge, amount_minor=amount, currency="978")
            refused = separation_refusal(profile, sign)
            if amount > 0 or signs_currency:
                assert refused is None, sign
            else:
                lesser = "an Identify" if challenge == "00000000" else "a Respond"
                assert refused == (
                    f"operation: its cryptogram input equals {lesser} code's on this card "
                    "(___domain separation; sign a non-zero amount)"
                )


# ------------------------------------------------------------------------------------------------
# The collisions on the card emulator: two identically personalised cards, one run each


def twin_readers(name: str) -> tuple[CapReader, CapReader]:
    def one() -> CapReader:
        card = new_card(name, pan=PAN, pin=PIN, imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
        return CapReader(InProcessTransport(card))

    return one(), one()


def gac1_data(result: CapResult) -> bytes:
    (command,) = [c for c, _ in result.transcript if c[:2] == b"\x80\xae" and c[2] & 0xC0 == 0x80]
    return command[5 : 5 + command[4]]


SIGN_0_0 = R(mode=M.SIGN, challenge="00000000", amount_minor=0)


@pytest.mark.parametrize(
    ("name", "request_", "other", "run"),
    [
        # Sign reference 0, amount 0 on a card that does not sign the currency: Identify, Respond 0
        ("natwest", SIGN_0_0, M.IDENTIFY, lambda r: r.identify(PIN)),
        ("visa-dpa", SIGN_0_0, M.RESPOND, lambda r: r.respond(PIN, "0")),
        # Sign amount 0 = Respond with the same challenge
        (
            "barclays",
            R(mode=M.SIGN, challenge="40717011", amount_minor=0),
            M.RESPOND,
            lambda r: r.respond(PIN, "40717011"),
        ),
        # Respond 00000000 = Identify, on every card
        ("secur-acces", R(mode=M.RESPOND, challenge="00000000"), M.IDENTIFY, lambda r: r.identify(PIN)),
        ("rabobank", R(mode=M.RESPOND, challenge="00000000"), M.IDENTIFY, lambda r: r.identify(PIN)),
        # Respond = Sign(challenge, 0.00) and Identify = Respond 0: collisions the policy allows
        ("natwest", R(mode=M.RESPOND, challenge="12345678"), M.SIGN, lambda r: r.sign(PIN, "12345678", 0)),
        ("secur-acces", R(mode=M.IDENTIFY), M.RESPOND, lambda r: r.respond(PIN, "0")),
    ],
)
def test_collisions_give_the_same_cryptogram_on_the_card(
    name: str, request_: engine.MatchRequest, other: OperationMode, run: Callable[[CapReader], CapResult]
) -> None:
    """The operation's own run and the other mode's run send the same CDOL1 data and get the
    same AC and code from the card; the verdict names that mode."""
    profile = cred_profile(name)
    own_reader, other_reader = twin_readers(name)
    own = _run_request(own_reader, request_)
    theirs = run(other_reader)
    assert theirs.mode.value == other.value
    assert gac1_data(own) == gac1_data(theirs) == engine.cdol_data_for(profile, request_)
    assert (own.cryptogram, own.code, own.atc) == (theirs.cryptogram, theirs.code, theirs.atc)
    assert other in colliding_modes(profile, request_)


def _run_request(reader: CapReader, request: engine.MatchRequest) -> CapResult:
    if request.mode is M.IDENTIFY:
        return reader.identify(PIN)
    if request.mode is M.RESPOND:
        return reader.respond(PIN, request.challenge)
    return reader.sign(PIN, request.challenge, request.amount_minor, "EUR")


@pytest.mark.parametrize("name", ["secur-acces", "rabobank"])
def test_cards_that_sign_the_currency_keep_sign_zero_apart(name: str) -> None:
    profile = cred_profile(name)
    sign_reader, respond_reader = twin_readers(name)
    sign = sign_reader.sign(PIN, "12345678", 0, "EUR")
    respond = respond_reader.respond(PIN, "12345678")
    assert gac1_data(sign) != gac1_data(respond)
    assert sign.cryptogram != respond.cryptogram
    assert (
        colliding_modes(profile, R(mode=M.SIGN, challenge="12345678", amount_minor=0, currency="978")) == ()
    )


# ------------------------------------------------------------------------------------------------
# The verifier


def _state(b: Bench) -> tuple[object, ...]:
    with b.store.transaction() as tx:
        open_ops = tuple(tx.list_open_operations(b.cid, tx.now()))
    return open_ops, tuple(b.store.audit_records()), b.refresh()


def _matches(b: Bench, request: engine.MatchRequest, code: str) -> bool:
    """Whether the verifier's matcher accepts ``code`` for ``request`` (the bound data of an
    operation it would have issued)."""
    cred = b.refresh()
    card = engine.CardCandidate(
        credential_id=cred.credential_id,
        key_ref=cred.key_ref,
        psn=cred.psn,
        profile=cred.profile,
        last_atc=cred.last_atc,
    )
    found = engine.match(
        [card], engine.parse_code(code), request, b.provider, window=b.verifier.policy.atc_window
    )
    return found.match is not None


def test_login_code_cannot_approve_sign_reference_0_amount_0(
    store_factory: StoreFactory, clock: Clock
) -> None:
    """natwest (IAF A0): Sign with reference 0 and amount 0 has the Identify cryptogram input.
    Issuing it is refused, nothing is stored, and a login code still logs in."""
    b = make_bench(store_factory(clock), clock, profile="natwest")
    before = _state(b)
    with pytest.raises(ValidationError) as err:
        b.verifier.issue_operation(b.cid, mode="sign", reference="0", amount=0, payee="NL00 ATTACKER")
    assert str(err.value) == (
        "operation: its cryptogram input equals an Identify code's on this card "
        "(___domain separation; sign a non-zero amount)"
    )
    assert _state(b) == before
    login = b.identify()
    # the refusal is what stands between the two: the matcher takes the login code for it
    assert _matches(b, R(mode=M.SIGN, challenge="00000000", amount_minor=0), login.code)
    op = b.verifier.issue_operation(b.cid, mode="identify")
    assert b.verifier.verify(op.operation_id, login.code, request_id=b.rid()).atc == login.atc


@pytest.mark.parametrize("name", ["visa-dpa", "barclays", "natwest"])
def test_sign_amount_zero_refused_where_it_equals_respond(name: str) -> None:
    clock = Clock()
    b = make_bench(MemoryStore(clock=clock), clock, profile=name, policy=policy_for(name))
    before = _state(b)
    with pytest.raises(ValidationError, match=r"equals a Respond code's on this card \(___domain separation"):
        b.verifier.issue_operation(b.cid, mode="sign", amount=0, payee="NL00 ATTACKER")
    with pytest.raises(ValidationError, match="a Respond code's"):
        b.verifier.issue_operation(b.cid, mode="sign", reference="40717011", amount="0.00", currency="EUR")
    assert _state(b) == before
    code = b.reader.respond(PIN, "40717011").code
    assert _matches(b, R(mode=M.SIGN, challenge="40717011", amount_minor=0), code)


@pytest.mark.parametrize("name", PROFILES)
def test_every_mode_still_works_and_positive_amounts_sign_everywhere(name: str) -> None:
    clock = Clock()
    b = make_bench(MemoryStore(clock=clock), clock, profile=name, policy=policy_for(name))
    runs = [
        ({"mode": "identify"}, lambda op: b.reader.identify(PIN)),
        ({"mode": "respond"}, lambda op: b.reader.respond(PIN, op.challenge)),
        (
            {"mode": "sign", "amount": 1, "currency": "EUR"},
            lambda op: b.reader.sign(PIN, op.challenge, 1, "EUR"),
        ),
        (
            {"mode": "sign", "reference": "0", "amount": "1500.00", "currency": "EUR", "payee": "ACME"},
            lambda op: b.reader.sign(PIN, "0", 150000, "EUR"),
        ),
        ({"mode": "tds", "fields": ["150000", "0"]}, lambda op: b.reader.sign_data(PIN, ["150000", "0"])),
    ]
    for kwargs, run in runs:
        op = b.verifier.issue_operation(b.cid, **kwargs)  # type: ignore[arg-type]
        result = run(op)
        assert b.verifier.verify(op.operation_id, result.code, request_id=b.rid()).atc == result.atc


def test_collisions_the_policy_allows(memory_factory: StoreFactory, clock: Clock) -> None:
    """A Respond operation takes a Sign 0.00 code over its challenge (IAF A0), an Identify
    operation a Respond 0 code: a code made for more never authorises less than it states."""
    b = make_bench(memory_factory(clock), clock, profile="barclays")
    op = b.verifier.issue_operation(b.cid, mode="respond")
    code = b.reader.sign(PIN, op.challenge, 0).code
    assert b.verifier.verify(op.operation_id, code, request_id=b.rid()).operation_id == op.operation_id
    op = b.verifier.issue_operation(b.cid, mode="identify")
    code = b.reader.respond(PIN, "0").code
    assert b.verifier.verify(op.operation_id, code, request_id=b.rid()).operation_id == op.operation_id
    # and the refused direction stays refused for Respond over 00000000 (never drawn)
    assert "an Identify code's" in str(
        separation_refusal(b.refresh().profile, R(mode=M.RESPOND, challenge="00000000"))
    )


def test_sign_amount_zero_on_a_card_that_signs_the_currency(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(memory_factory(clock), clock, profile="secur-acces")
    op = b.verifier.issue_operation(b.cid, mode="sign", reference="0", amount=0, currency="EUR")
    with pytest.raises(InvalidCode):
        b.verifier.verify(op.operation_id, b.identify().code, request_id=b.rid())
    code = b.reader.sign(PIN, "0", 0, "EUR").code
    assert b.verifier.verify(op.operation_id, code, request_id=b.rid()).operation_id == op.operation_id


def test_cli_refuses_the_finding_command(tmp_path: Path) -> None:
    """``capsim verifier operation new CRED --mode sign --reference 0 --amount 0 --payee …``
    on a natwest card: a one-line error with the input exit code, no operation."""
    cli = Cli(tmp_path / "home")
    card = tmp_path / "card.json"
    cli.ok("card", "new", str(card), "--template", "natwest")
    world = World(
        cli=cli, tmp=tmp_path, card=card, keys=tmp_path / "card.issuer-keys.json", db=str(tmp_path / "v.db")
    )
    assert world.v("init", "--issuer-keys", str(world.keys)).exit_code == 0
    assert world.v("user", "add", world.user).exit_code == 0
    cid = world.enroll()
    run = world.v(
        "operation",
        "new",
        cid,
        "--mode",
        "sign",
        "--reference",
        "0",
        "--amount",
        "0",
        "--payee",
        "NL00 ATTACKER",
    )
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.stdout == ""
    assert "its cryptogram input equals an Identify code's on this card (___domain separation" in run.stderr
    assert "Traceback" not in run.stderr
    assert (
        world.operation(cid, "sign", "--reference", "0", "--amount", "0.01", "--payee", "NL00 PAYEE")[
            "amount_minor"
        ]
        == 1
    )


def test_cryptogram_input_of_tds_is_the_identify_data_and_the_message() -> None:
    profile = cred_profile("rabobank")
    data = cryptogram_input(profile, R(mode=M.TDS, tds_fields=("0530026806",)))
    assert data == CryptogramInput(
        cdol1=engine.cdol_data_for(profile, R(mode=M.IDENTIFY)), tds_message=bytes.fromhex("0530026806")
    )
    assert colliding_modes(profile, R(mode=M.TDS, tds_fields=("0530026806",))) == ()
