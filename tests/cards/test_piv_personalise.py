"""Personalising a PIV card from Python (capsim.cards.piv.personalise): what the card gets, what
is refused, and the CHUID read back; checked with pyca/cryptography from the outside."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from capsim.cards.piv import DEFAULT_MGMT_KEY, PivAlgorithm, certificate_of
from capsim.cards.piv.personalise import (
    CA_DAYS,
    LEAF_DAYS,
    ccc,
    chuid,
    chuid_guid,
    import_key,
    make_ca,
    personalise,
)
from capsim.errors import ValidationError

FIXED = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def test_certificates_follow_the_clock_and_chain_to_the_ca() -> None:
    made = personalise(holder="Jane Doe", algorithm=PivAlgorithm.ECC_P384, now=lambda: FIXED)
    assert made.ca is not None
    ca = made.ca.certificate
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == datetime.timedelta(days=CA_DAYS)
    for slot, cert in made.certificates.items():
        cert.verify_directly_issued_by(ca)
        assert cert.not_valid_before_utc == FIXED - datetime.timedelta(minutes=5)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=LEAF_DAYS)
        assert certificate_of(made.state, slot) == cert.public_bytes(serialization.Encoding.DER)
    assert made.state.keys[0x9A].algorithm is PivAlgorithm.ECC_P384
    assert "private key" in repr(made.ca)
    assert "BEGIN PRIVATE KEY" in made.ca.key_pem()


def test_chuid_guid_reads_the_guid_and_survives_garbage() -> None:
    guid = bytes(range(16))
    content = chuid(guid, datetime.date(2031, 12, 31))
    assert chuid_guid(content) == guid
    assert b"20311231" in content
    assert chuid_guid(content[:30]) is None  # cut inside the GUID
    assert chuid_guid(b"\x30\x85\x00") is None  # a length of 5 bytes
    assert chuid_guid(b"") is None
    card_id = bytes(range(14))
    assert ccc(card_id).startswith(bytes.fromhex("F015 A000000116 FF 02") + card_id)
    assert ccc(card_id).endswith(bytes.fromhex("FE00"))
    with pytest.raises(ValidationError):
        chuid(bytes(15), datetime.date(2031, 1, 1))


def test_bad_secrets_and_inputs_are_refused_before_any_key_is_made() -> None:
    with pytest.raises(ValidationError, match="pin"):
        personalise(pin="12ab56")
    with pytest.raises(ValidationError, match="mgmt_key"):
        personalise(mgmt_key=DEFAULT_MGMT_KEY[:16])
    with pytest.raises(ValidationError, match="algorithm"):
        personalise(algorithm=PivAlgorithm.TDES)
    with pytest.raises(ValidationError, match="name"):
        personalise(holder="")


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def test_import_key_checks_the_key_and_its_certificate() -> None:
    ca = make_ca()
    cert_pem = ca.certificate.public_bytes(serialization.Encoding.PEM)
    key, cert = import_key(ca.key_pem().encode(), cert_pem)
    assert key.algorithm is PivAlgorithm.ECC_P256
    assert cert == ca.certificate
    with pytest.raises(ValidationError, match="encrypted"):
        import_key(_pem(ca.key, b"secret"), cert_pem)
    with pytest.raises(ValidationError, match="RSA-2048, P-256 or P-384"):
        import_key(_pem(ec.generate_private_key(ec.SECP521R1())), cert_pem)
    with pytest.raises(ValidationError, match="not the one"):
        import_key(_pem(ec.generate_private_key(ec.SECP256R1())), cert_pem)
    with pytest.raises(ValidationError, match=r"not a PEM X\.509"):
        import_key(ca.key_pem().encode(), b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    made = personalise(imported=(0x9E, key, cert))
    assert made.ca is None
    assert set(made.state.keys) == {0x9E}
    assert x509.load_der_x509_certificate(certificate_of(made.state, 0x9E) or b"") == cert
