"""EMSA-PKCS1-v1_5 encoding (RFC 8017 §9.2): what a PIV token's raw RSA key is asked to sign.

Theory of operation
===================

1. A host that signs with an RSA key on a PIV card hashes the message, wraps the digest in its
   DER ``DigestInfo`` (:func:`digest_info`) and pads it to the modulus size as
   ``00 01 FF… 00 DigestInfo`` (:func:`pkcs1_v15_block`); the card raises that block to its
   private exponent. The verifier checks the signature against the same encoding. Both roles
   use these two functions, so the encoding exists once.
2. Only SHA-256, SHA-384 and SHA-512 are known; anything else, a digest of the wrong length or a
   modulus too short for the digest is a :class:`~capsim.errors.ValidationError`.

>>> block = pkcs1_v15_block("sha256", bytes(32), 256)
>>> len(block), block[:3].hex(), block[-51:-32].hex()
(256, '0001ff', '3031300d060960864801650304020105000420')
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from capsim.errors import ValidationError

__all__ = ["DIGEST_INFO", "digest_info", "pkcs1_v15_block"]

#: DigestInfo prefixes (RFC 8017 §9.2 note 1) and digest sizes, by hash name.
DIGEST_INFO: Final = MappingProxyType(
    {
        "sha256": (bytes.fromhex("3031300d060960864801650304020105000420"), 32),
        "sha384": (bytes.fromhex("3041300d060960864801650304020205000430"), 48),
        "sha512": (bytes.fromhex("3051300d060960864801650304020305000440"), 64),
    }
)


def digest_info(hash_name: str, digest: bytes) -> bytes:
    """The DER DigestInfo of a ``sha256``/``sha384``/``sha512`` digest (rule 1): what a PKCS#11
    ``CKM_RSA_PKCS`` signature is asked to sign."""
    if hash_name not in DIGEST_INFO:
        raise ValidationError(f"hash: expected one of {', '.join(DIGEST_INFO)}")
    prefix, length = DIGEST_INFO[hash_name]
    if not isinstance(digest, bytes) or len(digest) != length:
        raise ValidationError(f"digest: a {hash_name} digest is {length} bytes")
    return prefix + digest


def pkcs1_v15_block(hash_name: str, digest: bytes, size: int) -> bytes:
    """The EMSA-PKCS1-v1_5 encoding of ``digest`` for a modulus of ``size`` bytes (rule 1)."""
    info = digest_info(hash_name, digest)
    if size < len(info) + 11:
        raise ValidationError("key: the modulus is too short for this digest")
    return b"\x00\x01" + b"\xff" * (size - len(info) - 3) + b"\x00" + info
