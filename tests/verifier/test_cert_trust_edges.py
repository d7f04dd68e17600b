"""Certificate credentials at their edges, the X.509 checks (:mod:`capsim.verifier.certtrust`):
the chain depth limit, the stored subject's length, a CA leaf, CRLs (who signed them, their
dates), the trust files and setting, and the messages of unreadable trust files and of a
malformed certificate, each in full.
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
from capsim.verifier.certtrust import (
    CertTrust,
    check_certificate,
    load_trust,
    parse_certificate,
    token_input,
    trust_from_setting,
    trust_setting,
    verify_signature,
)
from tests.verifier.certbench import Bank, bank, refused
from tests.verifier.certpki import DAY, T0, Ca, Token, key_usage, new_token, write_pem

__all__ = ["bank"]  # the fixture

CERT_SIZE_MESSAGE = "certificate: expected DER or PEM bytes (at most 16384)"


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
        .serial_number(0xC0FFEE)
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + 365 * DAY)
        .add_extension(key_usage(signature=True), critical=True)
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
    assert cred.serial == "C0FFEE"  # upper-case hexadecimal
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


# -- the recorded trust: the database setting's name is part of its format -----------------------


def test_recorded_trust_is_the_cert_trust_setting_of_the_database(bank: Bank, tmp_path: Path) -> None:
    anchor = write_pem(tmp_path / "ca.pem", bank.ca.cert)
    crl = write_pem(tmp_path / "ca.crl", bank.ca.crl())
    setting = trust_setting([anchor], crls=[crl])
    bank.cv.record_trust(setting)
    with bank.store.transaction() as tx:
        assert tx.get_setting("cert.trust") == setting  # what the CLI and the HTTP service read
    assert bank.last_reason("cert-trust") == ("ok", "")


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


# -- trust configuration messages, in full -----------------------------------------------------------


def test_trust_configuration_errors_are_named_in_full(tmp_path: Path) -> None:
    ca = Ca("capsim test CA")
    anchor = write_pem(tmp_path / "ca.pem", ca.cert)
    big = tmp_path / "big.pem"
    with big.open("wb") as f:
        f.truncate(4 * 1024 * 1024 + 1)
    with pytest.raises(ConfigError) as info:
        load_trust([big])
    assert str(info.value) == f"trust anchor: {big} is larger than 4194304 bytes"
    with pytest.raises(ConfigError) as info:
        load_trust([anchor], crls=[big])
    assert str(info.value) == f"CRL: {big} is larger than 4194304 bytes"
    with big.open("r+b") as f:
        f.truncate(4 * 1024 * 1024)  # the limit itself is read, then judged on its content
    with pytest.raises(ConfigError) as info:
        load_trust([big])
    assert str(info.value) == f"trust anchor {big}: not a PEM or DER certificate"
    with pytest.raises(ConfigError) as info:
        trust_setting([])
    assert str(info.value) == "trust anchor: at least one trust anchor file is needed"
    with pytest.raises(ConfigError) as info:
        trust_from_setting(None)
    assert str(info.value) == "no trust anchors configured: run 'capsim verifier cert trust --anchor FILE'"
    for text in (
        f'{{"anchors": ["{anchor}"]}}',
        '{"anchors": 1, "intermediates": [], "crls": [], "require_crl": true}',
    ):
        with pytest.raises(ConfigError) as info:
            trust_from_setting(text)
        assert str(info.value) == "certificate trust setting: malformed"


# -- signatures: what a token signs, and a check that never raises -----------------------------------


def test_token_input_is_what_the_token_signs_for_each_key_type() -> None:
    message = b"capsim certificate challenge v1\nnonce"
    p256, p384 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    assert token_input(p256.public_key(), message) == hashlib.sha256(message).digest()
    assert token_input(p384.public_key(), message) == hashlib.sha384(message).digest()
    key = rsa.generate_private_key(65537, 2048)
    block = token_input(key.public_key(), message)
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(message).digest()
    assert block == b"\x00\x01" + b"\xff" * (256 - 3 - len(digest_info)) + b"\x00" + digest_info
    # the card raises the block to its private exponent: that is the PKCS#1 v1.5 signature
    numbers = key.private_numbers()
    raw = pow(int.from_bytes(block, "big"), numbers.d, numbers.public_numbers.n).to_bytes(256, "big")
    assert verify_signature(key.public_key(), message, raw)
    assert not verify_signature(key.public_key(), message + b"!", raw)
    with pytest.raises(ValidationError) as info:
        token_input(ed25519.Ed25519PrivateKey.generate().public_key(), message)
    assert str(info.value) == "key: expected an ECDSA P-256/P-384 or RSA public key"


def test_verify_signature_answers_false_rather_than_raise() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(65537, 2048)
    good = ec_key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert verify_signature(ec_key.public_key(), b"m", good)
    for key in (ec_key.public_key(), rsa_key.public_key()):
        assert not verify_signature(key, b"m", "not bytes")  # type: ignore[arg-type]
        assert not verify_signature(key, "m", good)  # type: ignore[arg-type]
        assert not verify_signature(key, b"m", b"")
    assert not verify_signature(ed25519.Ed25519PrivateKey.generate().public_key(), b"m", good)
    assert not verify_signature(None, b"m", good)


def test_a_one_byte_certificate_is_malformed_not_of_the_wrong_size() -> None:
    """Any non-empty value up to the limit goes to the parser: one byte is a malformed certificate."""
    with pytest.raises(ValidationError) as info:
        parse_certificate(b"\x30")
    assert str(info.value) == "certificate: not a DER or PEM X.509 certificate"


def test_a_leaf_without_a_key_usage_extension_is_refused_for_its_key_usage() -> None:
    """keyUsage must be present (with digitalSignature): a leaf that has none fails for that
    reason, as one whose keyUsage lacks digitalSignature does, not as a broken chain."""
    ca = Ca("capsim test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    bare = ca.issue(key.public_key(), with_key_usage=False)
    assert not [e for e in bare.extensions if isinstance(e.value, x509.KeyUsage)]
    trust = CertTrust(anchors=(ca.cert,), crls=(ca.crl(),))
    assert check_certificate(bare, trust, ca.at) == (None, "key-usage")
    no_signature = ca.issue(key.public_key(), signature=False)
    assert check_certificate(no_signature, trust, ca.at) == (None, "key-usage")
    assert check_certificate(ca.issue(key.public_key()), trust, ca.at)[1] == ""
