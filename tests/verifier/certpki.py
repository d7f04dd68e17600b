"""A throwaway PKI and an emulated PIV token for the certificate-credential tests.

The CA, its certificates and CRLs are made with pyca/cryptography's builders; the token is
capsim's emulated PIV card, driven only through APDUs by capsim's PIV client
(:class:`capsim.reader.piv.PivClient`: VERIFY, GENERAL AUTHENTICATE with command chaining and
GET RESPONSE), as a host would drive a USB key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from capsim.cards.piv import PivAlgorithm, PivCard, generate_key, new_piv_card
from capsim.reader.piv import PivClient
from capsim.transports.inprocess import InProcessTransport

T0 = dt.datetime(2026, 3, 1, 9, 0, 0, tzinfo=dt.UTC)
PIV_PIN = "123456"
DAY = dt.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key_usage(*, signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Ca:
    """A certification authority: its key and self-signed certificate."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    serial: int = 100
    #: The time its certificates and CRLs are dated around (the tests' store clock by default).
    at: dt.datetime = T0

    #: The CA that certifies this one (``None``: a self-signed root).
    parent: Ca | None = None

    def __post_init__(self) -> None:
        public = self.key.public_key()
        signer = self if self.parent is None else self.parent
        if self.parent is not None:
            self.parent.serial += 1
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(signer.name))
            .public_key(public)
            .serial_number(1 if self.parent is None else self.parent.serial)
            .not_valid_before(self.at - 365 * DAY)
            .not_valid_after(self.at + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        if self.parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.parent.key.public_key()),
                critical=False,
            )
        self.cert = builder.sign(signer.key, hashes.SHA256())

    def issue(
        self,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        *,
        cn: str = "Alice Martin",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        signature: bool = True,
        with_key_usage: bool = True,
    ) -> x509.Certificate:
        """A token certificate (no subjectAltName, as tokens have); ``with_key_usage=False``
        leaves the keyUsage extension out altogether."""
        self.serial += 1
        not_before = self.at - 30 * DAY if not_before is None else not_before
        not_after = self.at + 365 * DAY if not_after is None else not_after
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(self.serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if with_key_usage:
            builder = builder.add_extension(key_usage(signature=signature), critical=True)
        return builder.sign(self.key, hashes.SHA256())

    def crl(
        self,
        revoked: Sequence[int] = (),
        *,
        signer: ec.EllipticCurvePrivateKey | None = None,
        next_update: dt.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked`` serials, valid around ``at`` (signed by ``signer`` if given)."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(self.at - 2 * DAY)
            .next_update(self.at + 30 * DAY if next_update is None else next_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(self.at - DAY).build()
            )
        return builder.sign(signer or self.key, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def write_pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    return path


# -- the token ---------------------------------------------------------------------------------


@dataclass
class Token:
    """An emulated PIV card holding one key in slot 9C (digital signature) and its certificate."""

    card: PivCard
    algorithm: PivAlgorithm
    cert: x509.Certificate
    slot: int = 0x9C

    @property
    def der(self) -> bytes:
        return der(self.cert)

    def sign(self, message: bytes, *, pin: str = PIV_PIN) -> bytes:
        """What a host does, through capsim's PIV client: VERIFY the PIN, then GENERAL
        AUTHENTICATE over the digest (or the PKCS#1 block for RSA), chained and with GET
        RESPONSE as the link needs."""
        with InProcessTransport(self.card) as link:
            piv = PivClient(link)
            piv.verify_pin(pin)
            return piv.sign_message(self.slot, message, certificate=self.der)


def new_token(ca: Ca, algorithm: PivAlgorithm = PivAlgorithm.ECC_P256, **issue: object) -> Token:
    """Personalise an emulated PIV card with a fresh key in 9C and a certificate from ``ca``."""
    key = generate_key(algorithm)
    card = new_piv_card(keys={0x9C: key})
    private = serialization.load_der_private_key(key.der, None)
    public = private.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    cert = ca.issue(public, **issue)  # type: ignore[arg-type]
    return Token(card=card, algorithm=algorithm, cert=cert)
