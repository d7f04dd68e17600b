"""Certificate credentials at their edges, the decisions (:mod:`capsim.verifier.certdecision`):
the identity number's and master code's limits and messages, operation data and its digest,
the refusal reasons of rarely taken branches, what costs a challenge an attempt, and a lock
that has expired.

Reasons are read back from the audit through the verifier, as in
tests/verifier/test_certificates.py; a branch the verifier cannot reach is checked through
the public pure functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import pytest

from capsim.errors import ValidationError
from capsim.verifier import certdecision as cd
from capsim.verifier.certificates import CertificateVerifier
from capsim.verifier.certmodel import CertChallenge, CertState, ChallengePurpose
from capsim.verifier.model import UserRole
from tests.verifier.certbench import POLICY, Bank, bank, refused
from tests.verifier.certpki import Token, new_token

__all__ = ["bank"]  # the fixture

IDENTITY_MESSAGE = "identity_number: expected 4..32 letters or digits"


# -- the identity number: 4..32 ASCII letters or digits, at most 64 characters as typed -----------


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("ABCD", "ABCD"),  # the shortest
        ("a" * 32, "A" * 32),  # the longest
        ("1234" + " " * 60, "1234"),  # 64 characters as typed: the longest input
        ("12-34 56", "123456"),
    ],
    ids=["4", "32", "64-typed", "separators"],
)
def test_identity_numbers_inside_the_limits_are_normalised(typed: str, normalised: str) -> None:
    assert cd.normalise_identity(typed) == normalised


@pytest.mark.parametrize(
    "typed",
    [
        "ABC",  # 3 characters
        "A" * 33,  # 33 characters
        "1234" + " " * 61,  # 65 characters as typed, although only 4 remain
        "ééééé",  # letters, but not ASCII ones (str.isalnum accepts them)
        "١٢٣٤٥",  # Arabic-Indic digits: alphanumeric, not ASCII
        "12.34",  # ASCII, not alphanumeric
        1234,  # not a string
    ],
    ids=["3", "33", "65-typed", "accented", "arabic-digits", "dot", "int"],
)
def test_identity_numbers_outside_the_limits_are_refused(typed: object) -> None:
    with pytest.raises(ValidationError) as info:
        cd.normalise_identity(typed)
    assert str(info.value) == IDENTITY_MESSAGE


def test_registration_refuses_an_identity_number_outside_the_limits(bank: Bank) -> None:
    mc = bank.org()
    for typed in ("1234" + " " * 61, "ABC", "ÉÉÉÉÉ"):
        with pytest.raises(ValidationError) as info:
            bank.register(mc, new_token(bank.ca), identity=typed)
        assert str(info.value) == IDENTITY_MESSAGE
    assert bank.cv.list_users(mc.org_id) == []
    cred = bank.register(mc, new_token(bank.ca), identity="1234" + " " * 60)  # 64 typed: accepted
    # the identifier is the one for "1234": a supplementary certificate under it needs "1234"
    refused(
        bank,
        "cert-register",
        "identity-mismatch",
        lambda: bank.register(mc, new_token(bank.ca), identity="12345", user_id=cred.user_id),
    )
    again = bank.register(mc, new_token(bank.ca), identity="12-34", user_id=cred.user_id)
    assert again.user_id == cred.user_id


# -- registration: no administrator role through a supplementary certificate ----------------------


def test_a_supplementary_certificate_cannot_ask_for_the_administrator_role(bank: Bank) -> None:
    mc = bank.org()
    admin = bank.register(mc, new_token(bank.ca), identity="1111111111", administrator=True)
    user = bank.register(mc, new_token(bank.ca), identity="2222222222")
    for cred, identity in ((admin, "1111111111"), (user, "2222222222")):
        refused(
            bank,
            "cert-register",
            "administrator-not-first",
            lambda c=cred, i=identity: bank.register(  # type: ignore[misc]
                mc, new_token(bank.ca), identity=i, user_id=c.user_id, administrator=True
            ),
        )
    roles = {u.user_id: u.role for u in bank.cv.list_users(mc.org_id)}
    assert roles == {admin.user_id: UserRole.ADMIN, user.user_id: UserRole.USER}
    assert len(bank.cv.list_certificates(mc.org_id)) == 2


# -- authentication: a challenge whose certificate is not there -----------------------------------


def _operation_challenge(bank: Bank, org_id: str, cert_id: str) -> CertChallenge:
    details = cd.operation_details("payment", amount_minor=100, currency="978", payee="FR76", name=None)
    now = bank.clock.now
    return CertChallenge(
        challenge_id="cc-orphan",
        purpose=ChallengePurpose.OPERATION,
        org_id=org_id,
        cert_id=cert_id,
        nonce=bytes(32),
        txn_digest=cd.details_digest(details),
        details=details,
        created_at=now,
        expires_at=now + timedelta(seconds=300),
    )


def test_an_operation_challenge_naming_no_stored_certificate_is_refused_uniformly(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    bank.register(mc, token)
    orphan = _operation_challenge(bank, mc.org_id, "crt-missing")
    with bank.store.transaction() as tx:  # the schema does not tie a challenge to its certificate
        assert tx.insert_cert_challenge(orphan) == 1
    refused(
        bank,
        "cert-authenticate",
        "unknown-certificate",
        lambda: bank.cv.authenticate(orphan.challenge_id, token.sign(orphan.message)),
    )


def test_screen_authentication_refuses_a_missing_or_another_certificate(bank: Bank) -> None:
    mc = bank.org()
    cred = bank.register(mc, new_token(bank.ca))
    (user,) = bank.cv.list_users(mc.org_id)
    mine = _operation_challenge(bank, mc.org_id, cred.cert_id)
    now = bank.clock.now
    assert cd.screen_authentication(mine, cred, user, now) == ""
    assert cd.screen_authentication(mine, None, user, now) == "unknown-certificate"
    other = dataclasses.replace(cred, cert_id="crt-other")
    assert cd.screen_authentication(mine, other, user, now) == "unknown-certificate"
    assert cd.screen_authentication(None, cred, user, now) == "unknown-challenge"
    assert cd.screen_authentication(None, None, None, now) == "unknown-challenge"


# -- operation data: what a payment and a beneficiary addition bind -------------------------------

PAYEE = "FR7630006000011234567890189"


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("payment", {"amount_minor": 100, "currency": None, "name": None},
         "amount/currency: a payment binds an amount and a currency"),
        ("payment", {"amount_minor": None, "currency": "978", "name": None},
         "amount/currency: a payment binds an amount and a currency"),
        ("payment", {"amount_minor": 100, "currency": "978", "name": "Alice"},
         "name: only a beneficiary addition binds a holder name"),
        ("beneficiary", {"amount_minor": 100, "currency": None, "name": "Alice"},
         "amount/currency: a beneficiary addition binds no amount"),
        ("beneficiary", {"amount_minor": None, "currency": "978", "name": "Alice"},
         "amount/currency: a beneficiary addition binds no amount"),
        ("refund", {"amount_minor": 100, "currency": "978", "name": None},
         "kind: expected one of payment, beneficiary"),
    ],
    ids=["payment-no-currency", "payment-no-amount", "payment-name", "beneficiary-amount",
         "beneficiary-currency", "unknown-kind"],
)  # fmt: skip
def test_operation_data_binds_exactly_its_kind_s_fields(
    kind: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        cd.operation_details(kind, payee=PAYEE, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_an_operation_challenge_for_a_payment_needs_amount_and_currency(bank: Bank) -> None:
    mc = bank.org()
    cred = bank.register(mc, new_token(bank.ca))
    for kwargs in ({"amount": "1.00"}, {"currency": "EUR"}):
        with pytest.raises(ValidationError) as info:
            bank.cv.operation_challenge(cred.cert_id, kind="payment", payee=PAYEE, **kwargs)  # type: ignore[arg-type]
        assert str(info.value) == "amount/currency: a payment binds an amount and a currency"


def test_the_operation_digest_is_sha256_of_the_labelled_compact_json() -> None:
    """The digest a relying party recomputes from the operation's values (rule 2)."""
    pay = cd.operation_details("payment", amount_minor=15000, currency="978", payee=PAYEE, name=None)
    text = b'{"amount_minor":"15000","currency":"978","kind":"payment","payee":"' + PAYEE.encode() + b'"}'
    assert cd.details_digest(pay) == hashlib.sha256(b"capsim cert operation v1|" + text).digest()
    ben = cd.operation_details(
        "beneficiary", amount_minor=None, currency=None, payee=PAYEE, name="Zoé Müller"
    )
    text = b'{"kind":"beneficiary","name":"Zo\\u00e9 M\\u00fcller","payee":"' + PAYEE.encode() + b'"}'
    assert cd.details_digest(ben) == hashlib.sha256(b"capsim cert operation v1|" + text).digest()


def test_a_challenge_and_its_acceptance_carry_the_operation_digest(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    cred = bank.register(mc, token)
    ch = bank.pay(cred.cert_id, amount="150.00", payee=PAYEE)
    text = b'{"amount_minor":"15000","currency":"978","kind":"payment","payee":"' + PAYEE.encode() + b'"}'
    digest = hashlib.sha256(b"capsim cert operation v1|" + text).digest()
    assert ch.txn_digest == digest
    assert f"digest={digest.hex()}".encode() in ch.message
    assert bank.cv.authenticate(ch.challenge_id, token.sign(ch.message)).txn_digest == digest


# -- lockout: a lock that has expired starts the count again (V29) ---------------------------------


def test_a_wrong_signature_after_a_lock_expired_counts_from_zero_then_escalates(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    cid = bank.register(mc, token).cert_id
    wrong = token.sign(b"not the challenge")

    def miss(reason: str) -> None:
        ch = bank.pay(cid)
        refused(bank, "cert-authenticate", reason, lambda: bank.cv.authenticate(ch.challenge_id, wrong))

    for reason in ("wrong-signature", "wrong-signature", "wrong-signature-locked"):  # max_fail = 3
        miss(reason)
    locked = bank.cv.get_certificate(cid)
    assert locked is not None
    assert locked.locked_until == bank.clock.now + timedelta(seconds=60)
    bank.clock.advance(59)
    ch = bank.pay(cid)
    refused(bank, "cert-authenticate", "locked", lambda: bank.cv.authenticate(ch.challenge_id, wrong))
    bank.clock.advance(1)  # the lock (60 s) ends at locked_until itself
    miss("wrong-signature")
    after = bank.cv.get_certificate(cid)
    assert after is not None
    assert (after.fail_count, after.locked_until, after.state) == (1, None, CertState.ACTIVE)
    miss("wrong-signature")
    miss("wrong-signature-blocked")  # the second lock within escalation_period_s blocks
    blocked = bank.cv.get_certificate(cid)
    assert blocked is not None
    assert blocked.state is CertState.BLOCKED


# -- the master code: 16 characters of the code alphabet, at most 64 as typed ----------------------

MASTER_MESSAGE = "master_code: expected 16 characters (dashes optional)"


def test_master_codes_inside_the_limits_are_normalised() -> None:
    code = "ABCD" * 4
    assert cd.normalise_master_code(code.lower()) == code
    assert cd.normalise_master_code("ABCD-ABCD-ABCD-ABCD") == code
    assert cd.normalise_master_code(code + " " * 48) == code  # 64 characters as typed


@pytest.mark.parametrize(
    "typed",
    [
        "ABCD" * 4 + " " * 49,
        None,
        1234,
        "ABCD" * 4 + "A",
        "ABCD" * 3 + "ABC",
        "ABCD" * 3 + "ABCU",
        "ÀBCD" * 4,
    ],
    ids=["65-typed", "none", "int", "17", "15", "outside-alphabet", "accented"],
)
def test_master_codes_outside_the_limits_are_refused_in_full(typed: object) -> None:
    with pytest.raises(ValidationError) as info:
        cd.normalise_master_code(typed)
    assert str(info.value) == MASTER_MESSAGE


def test_registration_names_a_malformed_master_code(bank: Bank) -> None:
    mc = bank.org()
    for code in (mc.code + " " * 49, mc.code[:15]):
        with pytest.raises(ValidationError) as info:
            bank.register(mc, new_token(bank.ca), master_code=code)
        assert str(info.value) == MASTER_MESSAGE
    assert bank.register(mc, new_token(bank.ca), master_code=mc.code + " " * 48).org_id == mc.org_id


# -- a registration to an unknown organisation costs the named challenge nothing -----------------


def test_an_unknown_organisation_uses_up_no_attempt_of_the_challenge(bank: Bank) -> None:
    assert not cd.counts_against_challenge("unknown-organisation")
    assert not cd.counts_against_challenge("master-code")
    assert not cd.counts_against_challenge("")
    assert cd.counts_against_challenge("signature")
    mc = bank.org()
    token = new_token(bank.ca)
    ch = bank.cv.registration_challenge(mc.org_id)
    signature = token.sign(ch.message)

    def register(org_id: str) -> object:
        return bank.cv.register_certificate(
            org_id,
            master_code=mc.code,
            identity_number="1850775123456",
            certificate=token.der,
            challenge_id=ch.challenge_id,
            signature=signature,
        )

    for _ in range(POLICY.max_attempts_per_operation + 1):
        refused(bank, "cert-register", "unknown-organisation", lambda: register("org-nowhere"))
    assert register(mc.org_id).org_id == mc.org_id  # type: ignore[attr-defined]


def _lock_verifier(bank: Bank, **policy: int) -> CertificateVerifier:
    """Another verifier on the bank's store, with other lockout limits."""
    return CertificateVerifier(
        bank.store, bank.provider, trust=lambda: bank.trust, policy=dataclasses.replace(POLICY, **policy)
    )


def _lock_once(bank: Bank, cv: CertificateVerifier, token: Token, cid: str, last: str) -> None:
    """``max_fail`` wrong signatures; the last one's reason is ``last``."""
    wrong = token.sign(b"not the challenge")
    for i in range(POLICY.max_fail):
        ch = cv.operation_challenge(cid, kind="payment", amount="1.00", currency="EUR", payee=PAYEE)
        reason = last if i == POLICY.max_fail - 1 else "wrong-signature"
        refused(bank, "cert-authenticate", reason, lambda c=ch: cv.authenticate(c.challenge_id, wrong))  # type: ignore[misc]


def test_each_lock_within_the_escalation_period_counts_once(bank: Bank) -> None:
    cv = _lock_verifier(bank, escalate_after=3)
    mc = bank.org()
    token = new_token(bank.ca)
    cid = bank.register(mc, token).cert_id
    for count, last in (
        (1, "wrong-signature-locked"),
        (2, "wrong-signature-locked"),
        (3, "wrong-signature-blocked"),
    ):
        _lock_once(bank, cv, token, cid, last)
        cert = cv.get_certificate(cid)
        assert cert is not None
        assert cert.lock_escalations == count
        bank.clock.advance(POLICY.lock_duration_s)
    assert cv.get_certificate(cid).state is CertState.BLOCKED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("after", "last"),
    [(3600, "wrong-signature-blocked"), (3601, "wrong-signature-locked")],
    ids=["at-the-period-s-end", "after-it"],
)
def test_the_escalation_period_includes_its_last_second(bank: Bank, after: int, last: str) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    cid = bank.register(mc, token).cert_id
    _lock_once(bank, bank.cv, token, cid, "wrong-signature-locked")  # the period starts here
    bank.clock.advance(after)  # escalation_period_s = 3600
    _lock_once(bank, bank.cv, token, cid, last)
    cert = bank.cv.get_certificate(cid)
    assert cert is not None
    assert cert.lock_escalations == (2 if after == 3600 else 1)


def test_an_accepted_signature_after_a_lock_clears_it(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    cid = bank.register(mc, token).cert_id
    _lock_once(bank, bank.cv, token, cid, "wrong-signature-locked")
    bank.clock.advance(POLICY.lock_duration_s)
    ch = bank.pay(cid)
    bank.cv.authenticate(ch.challenge_id, token.sign(ch.message))
    cert = bank.cv.get_certificate(cid)
    assert cert is not None
    assert (cert.fail_count, cert.locked_until, cert.state) == (0, None, CertState.ACTIVE)
    assert cert.lock_escalations == 1  # the escalation count stays for its period


# -- a removed user: no supplementary certificate either -------------------------------------------


def test_a_removed_user_cannot_get_a_supplementary_certificate(bank: Bank) -> None:
    mc = bank.org()
    admin = bank.register(mc, new_token(bank.ca), identity="1111111111", administrator=True)
    user = bank.register(mc, new_token(bank.ca), identity="2222222222")
    bank.cv.remove_user(user.user_id, acting_user=admin.user_id)
    refused(
        bank,
        "cert-register",
        "user-disabled",
        lambda: bank.register(mc, new_token(bank.ca), identity="2222222222", user_id=user.user_id),
    )
    assert [c.state for c in bank.cv.list_certificates(mc.org_id, user_id=user.user_id)] == [
        CertState.REVOKED
    ]


def test_the_keyed_hashes_cover_a_fixed_message_format() -> None:
    """The stored keyed hashes of master codes and identity numbers are computed over these exact
    bytes: a different format would orphan every row already stored."""
    assert cd.master_message("org-1", "ABCD2345") == b"capsim org master v1\x00org-1\x00ABCD2345"
    assert cd.identity_message("org-1", "FR12345") == b"capsim org identity v1\x00org-1\x00FR12345"
