"""Personalising an emulated PIV card: keys, certificates from a throwaway CA, CHUID and CCC.

Theory of operation
-------------------
1. **What a new card gets** (:func:`personalise`): a key in slot ``9A`` (PIV authentication,
   RSA-2048 unless told otherwise) and a P-256 key in slot ``9C`` (digital signature), each
   with an X.509 certificate issued by a *throwaway CA* made here with pyca/cryptography's
   builder (a P-256 self-signed CA certificate, valid :data:`CA_DAYS`); a CHUID (``5FC102``)
   whose GUID is random (OpenSC shows it as the token's serial number), a CCC (``5FC107``)
   with a random card identifier, and a random non-zero serial (GET SERIAL).
2. **Or an imported key** (:func:`import_key`): a PEM private key (RSA-2048, P-256 or P-384)
   and its PEM certificate go into one slot instead; the certificate must hold the key's
   public key. No CA is made then: the certificate's own issuer is the one a verifier trusts.
3. **Certificates** (:func:`issue_certificate`) are nominative (the holder's name is the
   subject CN), valid :data:`LEAF_DAYS` from now (backdated 5 minutes against clock skew),
   not CA certificates, with keyUsage ``digitalSignature`` (plus ``nonRepudiation`` in
   ``9C``), extendedKeyUsage ``clientAuth`` and key identifiers. PKCS#11 consumers derive a
   key's allowed uses from keyUsage, so it decides what OpenSC lets a key do.
4. **Secrets**: PIN, PUK and management key default to the well-known values of shipped PIV
   tokens; :meth:`PivState.defaults_in_place` names those a card still has. This module only
   builds values; writing files is the caller's (the CLI), with the CA key at mode 0600.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from capsim.cards.piv.card import certificate_object
from capsim.cards.piv.keys import PivAlgorithm, PivKey, generate_key, private_key
from capsim.cards.piv.state import CERT_OBJECT, DEFAULT_MGMT_KEY, DEFAULT_PIN, DEFAULT_PUK, SLOTS, PivState
from capsim.errors import ValidationError
from capsim.tlv import encode

__all__ = [
    "CA_DAYS",
    "CCC_TAG",
    "CHUID_TAG",
    "LEAF_DAYS",
    "Personalised",
    "ThrowawayCa",
    "ccc",
    "chuid",
    "chuid_guid",
    "import_key",
    "issue_certificate",
    "make_ca",
    "personalise",
    "slot_name",
]

CHUID_TAG: Final = 0x5FC102
CCC_TAG: Final = 0x5FC107
CA_DAYS: Final = 3650
LEAF_DAYS: Final = 365
_SKEW: Final = datetime.timedelta(minutes=5)
#: The FASC-N yubico-piv-tool writes into a CHUID (agency code 9999: "not a government card").
_FASCN: Final = bytes.fromhex("D4E739DA739CED39CE739D836858210842108421C84210C3EB")
_SLOT_NAMES: Final = {
    0x9A: "PIV authentication",
    0x9C: "digital signature",
    0x9D: "key management",
    0x9E: "card authentication",
}

Clock = Callable[[], datetime.datetime]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def chuid(guid: bytes, expiry: datetime.date) -> bytes:
    """The CHUID object's content (SP 800-73-4 §3.1.2): FASC-N, GUID, expiry, empty signature."""
    if len(guid) != 16:
        raise ValidationError("guid: expected 16 bytes")
    return (
        encode(0x30, _FASCN)
        + encode(0x34, guid)
        + encode(0x35, expiry.strftime("%Y%m%d").encode("ascii"))
        + encode(0x3E, b"")
        + encode(0xFE, b"")
    )


def ccc(card_id: bytes) -> bytes:
    """The Card Capability Container's content (SP 800-73-4 §3.1.1) with a 14-byte card ID."""
    if len(card_id) != 14:
        raise ValidationError("card_id: expected 14 bytes")
    identifier = bytes.fromhex("A000000116") + b"\xff\x02" + card_id  # GSC-RID, manufacturer, type
    fields = [
        (0xF0, identifier),
        (0xF1, b"\x21"),
        (0xF2, b"\x21"),
        (0xF3, b""),
        (0xF4, b"\x00"),
        (0xF5, b"\x10"),
        (0xF6, b""),
        (0xF7, b""),
        (0xFA, b""),
        (0xFB, b""),
        (0xFC, b""),
        (0xFD, b""),
        (0xFE, b""),
    ]
    return b"".join(encode(tag, value) for tag, value in fields)


def chuid_guid(content: bytes) -> bytes | None:
    """The GUID (tag ``34``) of a CHUID's content, or ``None`` when it has none or is malformed.

    The CHUID is a flat list of one-byte tags with BER lengths (its ``30`` FASC-N is *not* a
    constructed object, whatever the tag's bit 6 says), so it is walked here, not BER-decoded.
    """
    pos = 0
    while pos + 2 <= len(content):
        tag, length = content[pos], content[pos + 1]
        pos += 2
        if length & 0x80:
            size = length & 0x7F
            if not 1 <= size <= 2 or pos + size > len(content):
                return None
            length = int.from_bytes(content[pos : pos + size], "big")
            pos += size
        if pos + length > len(content):
            return None
        if tag == 0x34:
            return content[pos : pos + length]
        pos += length
    return None


@dataclass(frozen=True)
class ThrowawayCa:
    """A CA made for one card: its certificate and private key (rule 1)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    def __repr__(self) -> str:
        return f"ThrowawayCa({self.certificate.subject.rfc4514_string()!r}, <private key>)"


def _name(common_name: str) -> x509.Name:
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= 64 or not common_name.isprintable():
        raise ValidationError("name: expected 1 to 64 printable characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "capsim throwaway PIV CA", *, now: Clock = _now) -> ThrowawayCa:
    """A self-signed P-256 CA certificate and key, valid :data:`CA_DAYS` (rule 1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    start = now() - _SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ThrowawayCa(cert, key)


def issue_certificate(
    ca: ThrowawayCa, key: PivKey, holder: str, slot: int, *, now: Clock = _now
) -> x509.Certificate:
    """The certificate of ``key`` in ``slot`` for ``holder``, issued by ``ca`` (rule 3)."""
    public = private_key(key.der).public_key()
    start = now() - _SKEW
    end = min(start + datetime.timedelta(days=LEAF_DAYS), ca.certificate.not_valid_after_utc)
    signing = slot == 0x9C
    return (
        x509.CertificateBuilder()
        .subject_name(_name(holder))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=signing,
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


def import_key(key_pem: bytes, cert_pem: bytes) -> tuple[PivKey, x509.Certificate]:
    """A PEM private key and its PEM certificate as a slot's key (rule 2).

    Raises :class:`ValidationError` for an encrypted, unreadable or unsupported key, an
    unreadable certificate, or a certificate of another key (no key byte is ever quoted).
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ValidationError("--import-key: an encrypted private key; decrypt it first") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValidationError("--import-key: not a PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048:
        algorithm = PivAlgorithm.RSA_2048
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = PivAlgorithm.ECC_P256
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        algorithm = PivAlgorithm.ECC_P384
    else:
        raise ValidationError("--import-key: a PIV slot holds RSA-2048, P-256 or P-384 keys only")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValidationError("--import-cert: not a PEM X.509 certificate") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise ValidationError("--import-cert: the certificate is not the one of --import-key's key")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return PivKey(algorithm, der), cert


@dataclass(frozen=True)
class Personalised:
    """A personalised card's state, and the CA that issued its certificates (``None`` when
    the key and certificate were imported)."""

    state: PivState
    ca: ThrowawayCa | None
    certificates: dict[int, x509.Certificate]


def personalise(
    *,
    holder: str = "capsim PIV holder",
    pin: str = DEFAULT_PIN,
    puk: str = DEFAULT_PUK,
    mgmt_key: bytes = DEFAULT_MGMT_KEY,
    algorithm: PivAlgorithm = PivAlgorithm.RSA_2048,
    imported: tuple[int, PivKey, x509.Certificate] | None = None,
    now: Clock = _now,
    rng: Callable[[int], bytes] = secrets.token_bytes,
) -> Personalised:
    """A new card's state (rules 1–4): generated keys in 9A and 9C with certificates from a
    throwaway CA, or the ``imported`` (slot, key, certificate) alone; CHUID, CCC, serial."""
    if algorithm is PivAlgorithm.TDES:
        raise ValidationError("algorithm: slot 9A holds an RSA or ECC key")
    base = PivState(pin=pin, puk=puk, mgmt_key=mgmt_key)  # the secrets are checked first
    keys: dict[int, PivKey] = {}
    certificates: dict[int, x509.Certificate] = {}
    ca: ThrowawayCa | None = None
    if imported is not None:
        slot, key, cert = imported
        if slot not in SLOTS:
            raise ValidationError("--import-slot: expected 9A, 9C, 9D or 9E")
        keys[slot], certificates[slot] = key, cert
    else:
        ca = make_ca(now=now)
        for slot, alg in ((0x9A, algorithm), (0x9C, PivAlgorithm.ECC_P256)):
            keys[slot] = generate_key(alg)
            certificates[slot] = issue_certificate(ca, keys[slot], holder, slot, now=now)
    objects = {
        CERT_OBJECT[slot]: certificate_object(cert.public_bytes(serialization.Encoding.DER))
        for slot, cert in certificates.items()
    }
    expiry = (now() + datetime.timedelta(days=LEAF_DAYS)).date()
    objects[CHUID_TAG] = chuid(rng(16), expiry)
    objects[CCC_TAG] = ccc(rng(14))
    serial = int.from_bytes(rng(4), "big") & 0x7FFFFFFF or 1  # yubico-piv-tool prints it signed
    state = base.replace(keys=keys, objects=objects, serial=serial)
    return Personalised(state, ca, certificates)


def slot_name(slot: int) -> str:
    """``"9A (PIV authentication)"``."""
    return f"{slot:02X} ({_SLOT_NAMES.get(slot, 'unknown')})"
