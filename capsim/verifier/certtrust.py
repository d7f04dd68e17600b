"""Certificate validation and signature checks, through pyca/cryptography only.

Theory of operation
-------------------
1. **Trust is configured, not discovered.** :class:`CertTrust` holds the trust anchors, the
   intermediate certificates offered for chain building and the CRLs, loaded from files by
   :func:`load_trust` (PEM or DER). The verifier keeps only the file paths
   (:mod:`capsim.verifier.certificates`) and reads them again for each transaction, so a new
   CRL takes effect without a restart.
2. **Chain, dates and key usage** are :mod:`cryptography.x509.verification`'s: a
   :class:`~cryptography.x509.verification.PolicyBuilder` over the anchors at the store's
   clock builds a client verifier whose end-entity :class:`ExtensionPolicy` starts from
   ``permit_all`` (token certificates have no subjectAltName), *requires* keyUsage with
   digitalSignature and refuses a CA basicConstraints; CA certificates get the library's
   WebPKI CA defaults. A path has at most ``max_chain_depth`` (4) intermediate CAs between
   the leaf and its anchor. Nothing here parses X.509 by hand.
3. **Revocation** uses cryptography's CRL objects: for every certificate of the validated
   chain below its anchor, each configured CRL whose issuer name is the certificate's issuer
   and whose signature verifies with the issuing certificate's key
   (:meth:`~cryptography.x509.CertificateRevocationList.is_signature_valid`) is consulted,
   and a listed serial refuses the certificate. A CRL past its nextUpdate or not yet valid is
   ignored. With ``require_crl`` (the default) the end-entity's issuer must have a current,
   correctly signed CRL, or the certificate is refused (revocation status unknown).
4. **Keys and signatures.** Accepted keys are ECDSA P-256 and P-384 and RSA of at least 2048
   bits. A signature is ECDSA over SHA-256 (P-256) or SHA-384 (P-384), or RSA PKCS#1 v1.5
   over SHA-256 (:func:`verify_signature`). :func:`token_input` is the host's side: the
   bytes a PIV token's GENERAL AUTHENTICATE signs (the digest, or for RSA the EMSA-PKCS1-v1_5
   block that the card raises to its private exponent).
5. **Pure.** :func:`check_certificate` and :func:`verify_signature` take every input as an
   argument (the time too) and return a reason string rather than raising, so the service
   records the reason in the audit and shows callers only the uniform reject.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from capsim.crypto.pkcs1 import pkcs1_v15_block
from capsim.errors import ConfigError, ValidationError
from capsim.jsonlimits import loads_limited

__all__ = [
    "TRUST_SETTING",
    "CertTrust",
    "ValidatedCert",
    "check_certificate",
    "load_trust",
    "parse_certificate",
    "spki_digest",
    "token_input",
    "trust_from_setting",
    "trust_setting",
    "verify_signature",
]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: The store setting where the trust files are recorded (paths only, rule 1).
TRUST_SETTING: Final = "cert.trust"

_MAX_CERT: Final = 16_384
_MAX_FILE: Final = 4 * 1024 * 1024
_KU_MISSING: Final = "keyUsage without digitalSignature"
_CA_LEAF: Final = "end-entity certificate with CA basicConstraints"


@dataclass(frozen=True, kw_only=True)
class CertTrust:
    """Trust anchors, intermediates and CRLs (module docstring, rule 1)."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    require_crl: bool = True
    max_chain_depth: int = 4


@dataclass(frozen=True, kw_only=True)
class ValidatedCert:
    """What the verifier keeps of a certificate that passed :func:`check_certificate`."""

    certificate: x509.Certificate
    spki_digest: bytes
    serial: str
    subject: str
    not_after: _dt.datetime


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path} ({exc.strerror})") from None
    if len(data) > _MAX_FILE:
        raise ConfigError(f"{what}: {path} is larger than {_MAX_FILE} bytes")
    return data


def _certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ConfigError(f"{what}: not a PEM or DER certificate") from None


def _crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise ConfigError(f"{what}: not a PEM or DER CRL") from None


def load_trust(
    anchors: Iterable[str | Path],
    *,
    intermediates: Iterable[str | Path] = (),
    crls: Iterable[str | Path] = (),
    require_crl: bool = True,
) -> CertTrust:
    """Read trust anchors, intermediates and CRLs from files (PEM bundles or DER)."""
    roots = [c for p in anchors for c in _certificates(_read(Path(p), "trust anchor"), f"trust anchor {p}")]
    middle = [
        c for p in intermediates for c in _certificates(_read(Path(p), "intermediate"), f"intermediate {p}")
    ]
    lists = [_crl(_read(Path(p), "CRL"), f"CRL {p}") for p in crls]
    return CertTrust(
        anchors=tuple(roots), intermediates=tuple(middle), crls=tuple(lists), require_crl=require_crl
    )


def trust_setting(
    anchors: Sequence[str | Path],
    *,
    intermediates: Sequence[str | Path] = (),
    crls: Sequence[str | Path] = (),
    require_crl: bool = True,
) -> str:
    """The :data:`TRUST_SETTING` value for these files (absolute paths; each file is read once
    here, so a wrong path is refused when it is recorded, not at the first registration)."""
    if not anchors:
        raise ConfigError("trust anchor: at least one trust anchor file is needed")
    load_trust(anchors, intermediates=intermediates, crls=crls, require_crl=require_crl)
    doc = {
        "anchors": [str(Path(p).resolve()) for p in anchors],
        "intermediates": [str(Path(p).resolve()) for p in intermediates],
        "crls": [str(Path(p).resolve()) for p in crls],
        "require_crl": bool(require_crl),
    }
    return json.dumps(doc, sort_keys=True)


def trust_from_setting(text: str | None) -> CertTrust:
    """Read the files a :data:`TRUST_SETTING` value names (again, each time: rule 1)."""
    if text is None:
        raise ConfigError("no trust anchors configured: run 'capsim verifier cert trust --anchor FILE'")
    doc = loads_limited(text, what="certificate trust setting", error=ConfigError)
    try:
        return load_trust(
            [str(p) for p in doc["anchors"]],
            intermediates=[str(p) for p in doc["intermediates"]],
            crls=[str(p) for p in doc["crls"]],
            require_crl=bool(doc["require_crl"]),
        )
    except (KeyError, TypeError):
        raise ConfigError("certificate trust setting: malformed") from None


def parse_certificate(data: object) -> x509.Certificate:
    """A certificate given as DER or PEM bytes (:class:`ValidationError` otherwise)."""
    if not isinstance(data, bytes | bytearray) or not 1 <= len(data) <= _MAX_CERT:
        raise ValidationError(f"certificate: expected DER or PEM bytes (at most {_MAX_CERT})")
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(bytes(data))
        return x509.load_der_x509_certificate(bytes(data))
    except ValueError:
        raise ValidationError("certificate: not a DER or PEM X.509 certificate") from None


def spki_digest(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo: the key's identity."""
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _key_usage(_policy: Policy, _cert: x509.Certificate, ext: Any) -> None:
    if not isinstance(ext, x509.KeyUsage) or not ext.digital_signature:
        raise ValueError(_KU_MISSING)


def _not_a_ca(_policy: Policy, _cert: x509.Certificate, ext: Any) -> None:
    if isinstance(ext, x509.BasicConstraints) and ext.ca:
        raise ValueError(_CA_LEAF)


def _ee_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _key_usage)
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _not_a_ca)
    )


def _key_ok(key: object) -> bool:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1)
    return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048


def _revocation(chain: Sequence[x509.Certificate], trust: CertTrust, now: _dt.datetime) -> str:
    """Rule 3 over a validated chain (leaf first, anchor last): a reason or ``""``."""
    for i, cert in enumerate(chain[:-1]):
        issuer_key = chain[i + 1].public_key()
        consulted = False
        for crl in trust.crls:
            if crl.issuer != cert.issuer:
                continue
            if not isinstance(issuer_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                continue
            # False for any signature this key did not make, whatever algorithm the CRL names
            # (another key type, another curve, an unknown OID); it raises only for a key of a
            # type it cannot verify with, which the check above excludes.
            if not crl.is_signature_valid(issuer_key):
                continue  # a CRL the issuer did not sign says nothing
            nxt = crl.next_update_utc
            if crl.last_update_utc > now or (nxt is not None and now >= nxt):
                continue
            consulted = True
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return "revoked" if i == 0 else "issuer-revoked"
        if i == 0 and not consulted and trust.require_crl:
            return "revocation-unknown"
    return ""


def check_certificate(
    cert: x509.Certificate, trust: CertTrust, now: _dt.datetime
) -> tuple[ValidatedCert | None, str]:
    """Validate ``cert`` at ``now`` (rules 2–4): ``(validated, "")`` or ``(None, reason)``.

    Reasons: ``no-trust-anchor``, ``key-type``, ``expired`` (outside its validity or a chain
    certificate's), ``key-usage``, ``chain`` (no path to an anchor, a bad signature, a policy
    failure), ``revoked``, ``issuer-revoked``, ``revocation-unknown``.
    """
    if not trust.anchors:
        return None, "no-trust-anchor"
    if not _key_ok(cert.public_key()):
        return None, "key-type"
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(list(trust.anchors)))
            .time(now)
            .max_chain_depth(trust.max_chain_depth)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_ee_policy())
            .build_client_verifier()
        )
        verified = verifier.verify(cert, list(trust.intermediates))
    except VerificationError as exc:
        text = str(exc)
        if "not valid at validation time" in text:
            return None, "expired"
        if _KU_MISSING in text or "keyUsage" in text:
            return None, "key-usage"
        return None, "chain"
    reason = _revocation(verified.chain, trust, now)
    if reason:
        return None, reason
    return (
        ValidatedCert(
            certificate=cert,
            spki_digest=spki_digest(cert),
            serial=format(cert.serial_number, "X"),
            subject=cert.subject.rfc4514_string()[:128],
            not_after=cert.not_valid_after_utc,
        ),
        "",
    )


def _hash_for(key: PublicKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def verify_signature(key: object, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the key's signature of ``message`` (rule 4); never raises."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(_hash_for(key)))
            return True
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
    except (InvalidSignature, ValueError, TypeError):
        return False
    return False


def token_input(key: object, message: bytes) -> bytes:
    """What a PIV token signs for ``message`` (rule 4): the digest for ECDSA, the
    EMSA-PKCS1-v1_5 block (modulus-sized) for RSA.

    >>> k = ec.generate_private_key(ec.SECP256R1()).public_key()
    >>> len(token_input(k, b"hello"))
    32
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        h = hashes.Hash(_hash_for(key))
        h.update(message)
        return h.finalize()
    if isinstance(key, rsa.RSAPublicKey):
        return pkcs1_v15_block("sha256", hashlib.sha256(message).digest(), key.key_size // 8)
    raise ValidationError("key: expected an ECDSA P-256/P-384 or RSA public key")
