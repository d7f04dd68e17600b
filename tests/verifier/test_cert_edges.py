"""Certificate credentials at their edges: the identity number's limits, the refusal reasons of
rarely taken branches, the chain depth limit, the stored subject's length and the messages of
the trust files and of a malformed certificate, each in full.

The decisions are checked through the verifier (reasons read back from the audit, as in
tests/verifier/test_certificates.py) and, where a branch cannot be reached through it, through
the public pure functions of :mod:`capsim.verifier.certdecision`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from capsim.cards.piv import PivAlgorithm, generate_key, new_piv_card
from capsim.errors import ConfigError, ValidationError
from capsim.verifier import certdecision as cd
from capsim.verifier.certmodel import CertChallenge, CertState, ChallengePurpose
from capsim.verifier.certtrust import (
    CertTrust,
    check_certificate,
    load_trust,
    parse_certificate,
    trust_from_setting,
    trust_setting,
)
from capsim.verifier.model import UserRole
from tests.verifier.certbench import POLICY, Bank, bank, refused
from tests.verifier.certpki import DAY, T0, Ca, Token, new_token, write_pem

__all__ = ["bank"]  # the fixture

IDENTITY_MESSAGE = "identity_number: expected 4..32 letters or digits"
CERT_SIZE_MESSAGE = "certificate: expected DER or PEM bytes (at most 16384)"


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


# -- the chain: at most four intermediates ---------------------------------------------------------


def _chain(root: Ca, intermediates: int) -> tuple[Token, CertTrust]:
    issuer = root
    middle = []
    for i in range(intermediates):
        issuer = Ca(f"capsim intermediate {i + 1}", parent=issuer)
        middle.append(issuer.cert)
    trust = CertTrust(anchors=(root.cert,), intermediates=tuple(middle), crls=(issuer.crl(),))
    return new_token(issuer), trust


def test_a_chain_of_four_intermediates_is_accepted_and_five_are_refused(bank: Bank) -> None:
    mc = bank.org()
    four, trust4 = _chain(bank.ca, 4)
    five, trust5 = _chain(bank.ca, 5)
    assert check_certificate(four.cert, trust4, T0)[1] == ""
    assert check_certificate(five.cert, trust5, T0) == (None, "chain")
    # the limit is the trust's: five intermediates pass when it allows five
    assert check_certificate(five.cert, dataclasses.replace(trust5, max_chain_depth=5), T0)[1] == ""
    bank.trust = trust5
    refused(bank, "cert-register", "certificate-chain", lambda: bank.register(mc, five))
    bank.trust = trust4
    assert bank.register(mc, four).subject == "CN=Alice Martin"
    assert CertTrust(anchors=(bank.ca.cert,)).max_chain_depth == 4  # the default


# -- the stored subject: at most 128 characters ----------------------------------------------------


def _long_subject_token(ca: Ca) -> tuple[Token, str]:
    key = generate_key(PivAlgorithm.ECC_P256)
    private = serialization.load_der_private_key(key.der, None)
    public = private.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Paris La Defense"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACME Fournitures de bureau et de papeterie"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Direction administrative et financiere"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Alice Martin-Dupont de la Fontaine"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(4242)
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + 365 * DAY)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )
    card = new_piv_card(keys={0x9C: key})
    return Token(card=card, algorithm=PivAlgorithm.ECC_P256, cert=cert), name.rfc4514_string()


def test_the_stored_subject_is_cut_at_128_characters(bank: Bank) -> None:
    mc = bank.org()
    token, full = _long_subject_token(bank.ca)
    assert len(full) > 130
    cred = bank.register(mc, token)
    assert cred.subject == full[:128]
    assert len(cred.subject) == 128
    stored = bank.cv.get_certificate(cred.cert_id)
    assert stored is not None
    assert stored.subject == full[:128]
    validated, reason = check_certificate(token.cert, bank.trust, T0)
    assert reason == ""
    assert validated is not None
    assert validated.subject == full[:128]


# -- messages: trust files and a malformed certificate, in full ------------------------------------


def test_unreadable_trust_files_are_named_in_full(tmp_path: Path) -> None:
    ca = Ca("capsim test CA")
    anchor = write_pem(tmp_path / "ca.pem", ca.cert)
    missing = tmp_path / "missing.pem"
    cases = [
        ({"anchors": [missing]}, f"trust anchor: cannot read {missing} (No such file or directory)"),
        (
            {"anchors": [anchor], "intermediates": [missing]},
            f"intermediate: cannot read {missing} (No such file or directory)",
        ),
        ({"anchors": [anchor], "crls": [missing]}, f"CRL: cannot read {missing} (No such file or directory)"),
        ({"anchors": [tmp_path]}, f"trust anchor: cannot read {tmp_path} (Is a directory)"),
    ]
    for kwargs, message in cases:
        for load in (load_trust, trust_setting):
            with pytest.raises(ConfigError) as info:
                load(**kwargs)  # type: ignore[arg-type]
            assert str(info.value) == message


def test_trust_files_that_are_not_certificates_or_crls_are_named_in_full(tmp_path: Path) -> None:
    ca = Ca("capsim test CA")
    anchor = write_pem(tmp_path / "ca.pem", ca.cert)
    crl = write_pem(tmp_path / "ca.crl", ca.crl())
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03\x02\x01\x01")
    pem_junk = tmp_path / "junk.pem"
    pem_junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cases = [
        ({"anchors": [junk]}, f"trust anchor {junk}: not a PEM or DER certificate"),
        (
            {"anchors": [anchor], "intermediates": [junk]},
            f"intermediate {junk}: not a PEM or DER certificate",
        ),
        (
            {"anchors": [anchor], "intermediates": [pem_junk]},
            f"intermediate {pem_junk}: not a PEM or DER certificate",
        ),
        ({"anchors": [anchor], "crls": [junk]}, f"CRL {junk}: not a PEM or DER CRL"),
        ({"anchors": [anchor], "crls": [anchor]}, f"CRL {anchor}: not a PEM or DER CRL"),
    ]
    for kwargs, message in cases:
        for load in (load_trust, trust_setting):
            with pytest.raises(ConfigError) as info:
                load(**kwargs)  # type: ignore[arg-type]
            assert str(info.value) == message
    loaded = load_trust([anchor], intermediates=[anchor], crls=[crl])
    assert loaded.intermediates == (ca.cert,)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30" * 16_385, "-----BEGIN CERTIFICATE-----", None],
    ids=["empty", "16385-bytes", "str", "none"],
)
def test_a_certificate_of_the_wrong_type_or_size_is_refused_in_full(data: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_certificate(data)
    assert str(info.value) == CERT_SIZE_MESSAGE


def test_a_certificate_at_the_size_limit_is_parsed() -> None:
    ca = Ca("capsim test CA")
    pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    padded = b" " * (16_384 - len(pem)) + pem  # leading blanks before a PEM are allowed
    assert len(padded) == 16_384
    assert parse_certificate(padded) == ca.cert
    assert parse_certificate(bytearray(pem)) == ca.cert
    with pytest.raises(ValidationError) as info:
        parse_certificate(b"\x30" * 16_384)
    assert str(info.value) == "certificate: not a DER or PEM X.509 certificate"
    with pytest.raises(ValidationError) as info:
        parse_certificate(b" " + padded)
    assert str(info.value) == CERT_SIZE_MESSAGE


def test_registration_names_a_certificate_of_the_wrong_size(bank: Bank) -> None:
    mc = bank.org()
    ch = bank.cv.registration_challenge(mc.org_id)
    for data in (b"", b"\x30" * 16_385):
        with pytest.raises(ValidationError, match=f"^{re.escape(CERT_SIZE_MESSAGE)}$"):
            bank.cv.register_certificate(
                mc.org_id,
                master_code=mc.code,
                identity_number="1850775123456",
                certificate=data,
                challenge_id=ch.challenge_id,
                signature=b"\x01",
            )


# -- CRLs: only the issuer's signature counts, whatever key signed a forged one ----------------


def test_a_crl_signed_by_another_key_type_neither_revokes_nor_vouches(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    serial = token.cert.serial_number
    forged_rsa = bank.ca.crl([serial], signer=rsa.generate_private_key(65537, 2048))  # type: ignore[arg-type]
    forged_p384 = bank.ca.crl([serial], signer=ec.generate_private_key(ec.SECP384R1()))
    forged_ed = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(bank.ca.cert.subject)
        .last_update(T0 - DAY)
        .next_update(T0 + 30 * DAY)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(T0).build()
        )
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
    )
    # the issuer's own CRL, its signature algorithm renamed to an unknown OID (same length)
    genuine = bank.ca.crl([serial]).public_bytes(serialization.Encoding.DER)
    ecdsa_sha256 = bytes.fromhex("06082a8648ce3d040302")  # 1.2.840.10045.4.3.2
    assert genuine.count(ecdsa_sha256) == 2  # in the signed part and outside it
    unknown = x509.load_der_x509_crl(genuine.replace(ecdsa_sha256, ecdsa_sha256[:-1] + b"\x09"))
    for forged in (forged_rsa, forged_p384, forged_ed, unknown):
        alone = CertTrust(anchors=(bank.ca.cert,), crls=(forged,))
        assert check_certificate(token.cert, alone, T0) == (None, "revocation-unknown")
        with_genuine = CertTrust(anchors=(bank.ca.cert,), crls=(forged, bank.ca.crl()))
        assert check_certificate(token.cert, with_genuine, T0)[1] == ""
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(forged_rsa, bank.ca.crl()))
    assert bank.register(mc, token).serial == format(serial, "X")


# -- a CA certificate is no end-entity certificate ----------------------------------------------


def _leaf_with_constraints(ca: Ca, *, is_ca: bool) -> Token:
    token = new_token(ca)
    public = token.cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    builder = x509.CertificateBuilder(
        issuer_name=token.cert.issuer,
        subject_name=token.cert.subject,
        public_key=public,
        serial_number=token.cert.serial_number + 10_000,
        not_valid_before=token.cert.not_valid_before_utc,
        not_valid_after=token.cert.not_valid_after_utc,
        extensions=list(token.cert.extensions),
    )
    cert = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True).sign(
        ca.key, hashes.SHA256()
    )
    return dataclasses.replace(token, cert=cert)


def test_a_leaf_with_ca_basic_constraints_is_refused(bank: Bank) -> None:
    mc = bank.org()
    ca_leaf = _leaf_with_constraints(bank.ca, is_ca=True)
    assert check_certificate(ca_leaf.cert, bank.trust, T0) == (None, "chain")
    refused(bank, "cert-register", "certificate-chain", lambda: bank.register(mc, ca_leaf))
    plain = _leaf_with_constraints(bank.ca, is_ca=False)  # basicConstraints without CA: a leaf
    assert check_certificate(plain.cert, bank.trust, T0)[1] == ""
    assert bank.register(mc, plain).serial == format(plain.cert.serial_number, "X")


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
    bank.clock.advance(61)  # the lock (60 s) has expired
    miss("wrong-signature")
    after = bank.cv.get_certificate(cid)
    assert after is not None
    assert (after.fail_count, after.locked_until, after.state) == (1, None, CertState.ACTIVE)
    miss("wrong-signature")
    miss("wrong-signature-blocked")  # the second lock within escalation_period_s blocks
    blocked = bank.cv.get_certificate(cid)
    assert blocked is not None
    assert blocked.state is CertState.BLOCKED


# -- the recorded trust: the database setting's name is part of its format -----------------------


def test_recorded_trust_is_the_cert_trust_setting_of_the_database(bank: Bank, tmp_path: Path) -> None:
    anchor = write_pem(tmp_path / "ca.pem", bank.ca.cert)
    crl = write_pem(tmp_path / "ca.crl", bank.ca.crl())
    setting = trust_setting([anchor], crls=[crl])
    bank.cv.record_trust(setting)
    with bank.store.transaction() as tx:
        assert tx.get_setting("cert.trust") == setting  # what the CLI and the HTTP service read
    assert bank.last_reason("cert-trust") == ("ok", "")


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


# -- trust: no anchor, the CRL default, the setting's text -----------------------------------------


def test_without_a_trust_anchor_every_certificate_is_refused(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    assert check_certificate(token.cert, CertTrust(anchors=()), T0) == (None, "no-trust-anchor")
    bank.trust = CertTrust(anchors=(), crls=(bank.ca.crl(),))
    refused(bank, "cert-register", "certificate-no-trust-anchor", lambda: bank.register(mc, token))


def test_trust_loaded_from_files_requires_a_crl_by_default(bank: Bank, tmp_path: Path) -> None:
    anchor = write_pem(tmp_path / "ca.pem", bank.ca.cert)
    token = new_token(bank.ca)
    assert check_certificate(token.cert, load_trust([anchor]), T0) == (None, "revocation-unknown")
    assert check_certificate(token.cert, load_trust([anchor], require_crl=False), T0)[1] == ""
    for setting in (trust_setting([anchor]), trust_setting([anchor], require_crl=True)):
        loaded = trust_from_setting(setting)
        assert check_certificate(token.cert, loaded, T0) == (None, "revocation-unknown")
    relaxed = trust_from_setting(trust_setting([anchor], require_crl=False))
    assert check_certificate(token.cert, relaxed, T0)[1] == ""


def test_the_trust_setting_is_sorted_json_of_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = Ca("capsim test CA")
    sub = Ca("capsim issuing CA", parent=ca)
    write_pem(tmp_path / "ca.pem", ca.cert)
    write_pem(tmp_path / "sub.pem", sub.cert)
    write_pem(tmp_path / "sub.crl", sub.crl())
    monkeypatch.chdir(tmp_path)
    setting = trust_setting(["ca.pem"], intermediates=["sub.pem"], crls=["sub.crl"], require_crl=False)
    root = tmp_path.resolve()
    assert setting == (
        f'{{"anchors": ["{root}/ca.pem"], "crls": ["{root}/sub.crl"], '
        f'"intermediates": ["{root}/sub.pem"], "require_crl": false}}'
    )


# -- CRL dates: current from lastUpdate (inclusive) to nextUpdate (exclusive) ----------------------


def _dated_crl(ca: Ca, revoked: int | None, last: datetime, nxt: datetime) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last)
        .next_update(nxt)
    )
    if revoked is not None:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(revoked).revocation_date(last).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def test_a_crl_counts_from_its_last_update_until_its_next_update(bank: Bank) -> None:
    token = new_token(bank.ca)
    serial = token.cert.serial_number
    second = timedelta(seconds=1)

    def reason(*crls: x509.CertificateRevocationList) -> str:
        return check_certificate(token.cert, CertTrust(anchors=(bank.ca.cert,), crls=crls), T0)[1]

    assert reason(_dated_crl(bank.ca, None, T0, T0 + DAY)) == ""  # issued this very second
    assert reason(_dated_crl(bank.ca, serial, T0, T0 + DAY)) == "revoked"
    assert reason(_dated_crl(bank.ca, None, T0 - DAY, T0 + second)) == ""  # its last second
    assert reason(_dated_crl(bank.ca, None, T0 + second, T0 + DAY)) == "revocation-unknown"  # not yet
    stale = _dated_crl(bank.ca, None, T0 - DAY, T0)  # nextUpdate now: stale
    assert reason(stale) == "revocation-unknown"
    # a stale or future CRL is skipped, not the end of the search: the current one after it counts
    future_revoking = _dated_crl(bank.ca, serial, T0 + second, T0 + DAY)
    assert reason(stale, future_revoking, bank.ca.crl()) == ""
    assert reason(stale, future_revoking, bank.ca.crl([serial])) == "revoked"
