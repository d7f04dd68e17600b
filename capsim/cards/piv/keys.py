"""The PIV card's key operations, on pyca/cryptography's public API.

Theory of operation
-------------------
1. Algorithms are PIV algorithm identifiers (SP 800-78-4 table 6-2): ``03`` 3-key 3DES (the
   card management key), ``07`` RSA-2048, ``11`` ECC P-256, ``14`` ECC P-384
   (:class:`PivAlgorithm`).
2. An asymmetric key is held as PKCS#8 DER (:class:`PivKey`); the private key object is built
   once per card and cached by :func:`private_key`.
3. RSA signing is the *raw* private operation (GENERAL AUTHENTICATE signs an already padded
   block of exactly the modulus size): ``m^d mod n`` by the Chinese remainder theorem from the
   key's private numbers; an input not below the modulus is refused. ECDSA signs the
   pre-hashed input (SP 800-73-4: the host sends the hash; a shorter one is left-padded with
   zeros, a longer one is truncated to the field size, as FIPS 186-4 §6.4 prescribes) and
   returns the DER signature. ECDH returns the shared x coordinate.
4. :func:`public_template` is the body of the ``7F49`` answer to GENERATE ASYMMETRIC KEY PAIR:
   ``81`` modulus and ``82`` exponent for RSA, ``86`` the uncompressed point for ECC.
5. The management key is 3-key 3DES, used one block at a time (ECB) for the witness and
   challenge of GENERAL AUTHENTICATE, through :mod:`capsim._des` (capsim's one block-cipher
   import site).

Every failure is a :class:`~capsim.errors.ValidationError`: the card turns it into a status
word at one point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from capsim import _des
from capsim.errors import ValidationError
from capsim.tlv import encode

__all__ = [
    "MGMT_BLOCK",
    "PivAlgorithm",
    "PivKey",
    "ecdh",
    "generate_key",
    "mgmt_decrypt",
    "mgmt_encrypt",
    "private_key",
    "public_template",
    "sign",
]

#: Block size of the 3DES management key (witness and challenge length).
MGMT_BLOCK: Final = 8


class PivAlgorithm(IntEnum):
    """PIV algorithm identifiers (SP 800-78-4 table 6-2) capsim's card supports."""

    TDES = 0x03
    RSA_2048 = 0x07
    ECC_P256 = 0x11
    ECC_P384 = 0x14


_CURVES: Final[dict[PivAlgorithm, tuple[ec.EllipticCurve, hashes.HashAlgorithm]]] = {
    PivAlgorithm.ECC_P256: (ec.SECP256R1(), hashes.SHA256()),
    PivAlgorithm.ECC_P384: (ec.SECP384R1(), hashes.SHA384()),
}
_RSA_BYTES: Final = 256

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class PivKey:
    """An asymmetric key in a PIV slot: its algorithm and its PKCS#8 DER private key."""

    algorithm: PivAlgorithm
    der: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", PivAlgorithm(self.algorithm))
        key = private_key(self.der)
        if self.algorithm is PivAlgorithm.RSA_2048:
            ok = isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        elif self.algorithm in _CURVES:
            ok = isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
                key.curve, type(_CURVES[self.algorithm][0])
            )
        else:
            ok = False
        if not ok:
            raise ValidationError(f"key: the private key does not match algorithm {self.algorithm.name}")

    def __repr__(self) -> str:
        return f"PivKey({self.algorithm.name}, <private key>)"


@functools.lru_cache(maxsize=64)
def private_key(der: bytes) -> PrivateKey:
    """The private key object of a PKCS#8 DER key (cached: keys are immutable)."""
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValidationError(f"key: not a PKCS#8 DER private key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValidationError("key: only RSA and ECC keys are supported")
    return key


def generate_key(algorithm: PivAlgorithm) -> PivKey:
    """A new key pair for a slot (GENERATE ASYMMETRIC KEY PAIR)."""
    key: PrivateKey
    if algorithm is PivAlgorithm.RSA_2048:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm in _CURVES:
        key = ec.generate_private_key(_CURVES[algorithm][0])
    else:
        raise ValidationError(f"algorithm: {algorithm!r} is not an asymmetric PIV algorithm")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return PivKey(algorithm, der)


def _raw_rsa(key: rsa.RSAPrivateKey, block: bytes) -> bytes:
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    m = int.from_bytes(block, "big")
    if len(block) != _RSA_BYTES or m >= n:
        raise ValidationError("data: a raw RSA block must be 256 bytes below the modulus")
    p, q = numbers.p, numbers.q
    m1 = pow(m, numbers.dmp1, p)
    m2 = pow(m, numbers.dmq1, q)
    h = (numbers.iqmp * (m1 - m2)) % p
    return (m2 + h * q).to_bytes(_RSA_BYTES, "big")


def sign(key: PivKey, data: bytes) -> bytes:
    """The answer to a GENERAL AUTHENTICATE signature: raw RSA, or a DER ECDSA signature."""
    obj = private_key(key.der)
    if isinstance(obj, rsa.RSAPrivateKey):
        return _raw_rsa(obj, data)
    _, digest = _CURVES[key.algorithm]
    size = digest.digest_size
    if not data:
        raise ValidationError("data: nothing to sign")
    prepared = data[:size] if len(data) >= size else bytes(size - len(data)) + data
    return obj.sign(prepared, ec.ECDSA(Prehashed(digest)))


def ecdh(key: PivKey, point: bytes) -> bytes:
    """The shared secret (x coordinate) of key agreement with the peer's uncompressed point."""
    obj = private_key(key.der)
    if not isinstance(obj, ec.EllipticCurvePrivateKey):
        raise ValidationError("key: key agreement needs an ECC key")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(obj.curve, point)
    except ValueError:
        raise ValidationError("data: not a point on the key's curve") from None
    return obj.exchange(ec.ECDH(), peer)


def public_template(key: PivKey) -> bytes:
    """The ``7F49`` public key template of GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 §3.3.2)."""
    public = private_key(key.der).public_key()
    if isinstance(public, rsa.RSAPublicKey):
        nums = public.public_numbers()
        e_len = (nums.e.bit_length() + 7) // 8
        body = encode(0x81, nums.n.to_bytes(_RSA_BYTES, "big")) + encode(0x82, nums.e.to_bytes(e_len, "big"))
    else:
        point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        body = encode(0x86, point)
    return encode(0x7F49, body)


def mgmt_encrypt(key: bytes, block: bytes) -> bytes:
    """One 3DES block encrypted under the 24-byte management key (:mod:`capsim._des`)."""
    if len(key) != 24:
        raise ValidationError("management key: expected 24 bytes (3-key 3DES)")
    if len(block) != MGMT_BLOCK:
        raise ValidationError("data: expected one 8-byte block")
    return _des.ecb_encrypt(key, block)


def mgmt_decrypt(key: bytes, block: bytes) -> bytes:
    """One 3DES block decrypted under the 24-byte management key (:mod:`capsim._des`)."""
    if len(key) != 24:
        raise ValidationError("management key: expected 24 bytes (3-key 3DES)")
    if len(block) != MGMT_BLOCK:
        raise ValidationError("data: expected one 8-byte block")
    return _des.ecb_decrypt(key, block)
