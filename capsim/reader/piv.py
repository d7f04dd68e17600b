"""A PIV host (NIST SP 800-73-4): what a middleware sends a PIV token, over any card link.

:class:`PivClient` drives a PIV card application (a USB key, a smart card, capsim's emulated
token) through a :class:`~capsim.reader.driver.CardLink`, as OpenSC's PIV driver or
yubico-piv-tool would: SELECT, VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER, GET DATA of
a slot's certificate, GENERAL AUTHENTICATE to sign.

Theory of operation
===================

1. **Any link.** Commands go through the link's ``transmit``; ``61xx``/``6Cxx`` answers are
   resolved with :func:`capsim.apdu.t0.transmit_with_t0` unless the link resolves them itself
   (its ``resolves_t0``), so answers longer than 256 bytes (certificates) arrive whole. A
   command whose data do not fit one short APDU is chained (CLA ``10``, 255 bytes a piece).
2. **Status words become typed errors at one point** (:func:`reference_error`,
   :func:`status_error`): ``63Cx`` is :class:`~capsim.errors.PinError` with the tries left
   (``63C0``: that try blocked the PIN, or the PUK), ``6983`` is
   :class:`~capsim.errors.PinBlockedError` (for the PUK: nothing can unblock the PIN any more),
   ``6982`` "verify the PIN first", ``6A82`` "no such object/key", ``6A80`` "the card refused
   the data"; anything else a :class:`~capsim.errors.StatusWordError` naming the status word.
3. **PIN and PUK** are 6 to 8 digits, sent as ASCII padded with ``FF`` to 8 bytes
   (:func:`pad_reference`); they are checked before anything is sent and never logged.
   :meth:`PivClient.pin_tries` reads the PIN's tries left with an empty VERIFY, which costs
   no try, so a caller can refuse a blocked PIN before asking for it.
4. **Signing is the host's half of the work, as a PKCS#11 driver does it.** The host hashes;
   for ECDSA the card signs the digest and returns a DER signature; for RSA the host builds the
   EMSA-PKCS1-v1_5 block (``00 01 FF… 00 DigestInfo``, RFC 8017 §9.2) the size of the modulus
   and the card raises it to its private exponent (:func:`pkcs1_v15_block`). The algorithm
   reference (P1) comes from the slot's public key (:func:`algorithm_of`): ``07`` RSA-2048,
   ``11`` P-256, ``14`` P-384.
5. **Which hash.** :meth:`PivClient.sign_message` signs a message as capsim's certificate
   verifier checks it (docs/certificate.md): ECDSA over SHA-256 for P-256 and SHA-384 for
   P-384, RSA PKCS#1 v1.5 over SHA-256 (:func:`message_hash`).

>>> pad_reference("123456").hex().upper()
'313233343536FFFF'
>>> len(pkcs1_v15_block("sha256", bytes(32), 256)), pkcs1_v15_block("sha256", bytes(32), 256)[:3].hex()
(256, '0001ff')
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from functools import partial
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from capsim.apdu.ins import PivIns
from capsim.apdu.pinblock import piv_reference_block
from capsim.apdu.t0 import transmit_with_t0
from capsim.crypto.pkcs1 import DIGEST_INFO, digest_info, pkcs1_v15_block
from capsim.errors import (
    ApduFormatError,
    PinBlockedError,
    PinError,
    RemoteProtocolError,
    StatusWordError,
    ValidationError,
)
from capsim.reader.driver import CardLink
from capsim.tlv import decode, encode, find

__all__ = [
    "CERT_OBJECTS",
    "PIN_REF",
    "PIV_AID",
    "PUK_REF",
    "PivClient",
    "algorithm_of",
    "digest_info",
    "message_hash",
    "pad_reference",
    "pkcs1_v15_block",
    "reference_error",
    "status_error",
]

#: The PIV AID (NIST RID ``A000000308``, PIX ``00001000 0100``).
PIV_AID: Final = bytes.fromhex("A000000308000010000100")
PIN_REF: Final = 0x80
PUK_REF: Final = 0x81
#: Certificate object of each key slot (SP 800-73-4 part 1, table 3).
CERT_OBJECTS: Final = {0x9A: 0x5FC105, 0x9C: 0x5FC10A, 0x9D: 0x5FC10B, 0x9E: 0x5FC101}
_OK: Final = 0x9000
_CHUNK: Final = 255
_MAX_CERT: Final = 16_384
_ALG_RSA2048: Final = 0x07
_ALG_P256: Final = 0x11
_ALG_P384: Final = 0x14

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


# ------------------------------------------------------------------ pure helpers (rules 2-5)
def pad_reference(value: str, name: str = "PIN") -> bytes:
    """A PIN or PUK as the card receives it (:func:`capsim.apdu.pinblock.piv_reference_block`)."""
    return piv_reference_block(value, name)


def reference_error(sw: int, ins: int, ref: int) -> StatusWordError:
    """The typed error, with the user's message, for a PIN or PUK command's status word (rule 2)."""
    what = "PIN" if ref == PIN_REF else "PUK"
    if sw & 0xFFF0 == 0x63C0:
        left = sw & 0x0F
        if left:
            return PinError(sw, ins, f"wrong {what}, {left} tr{'y' if left == 1 else 'ies'} left")
        if ref == PIN_REF:
            return PinError(sw, ins, "wrong PIN, no tries left: the card's PIN is now blocked")
        return PinError(
            sw,
            ins,
            "wrong PUK, no tries left: the PUK is now blocked, and with it "
            "every way to unblock the PIN; personalise a new card",
        )
    if sw in (0x6983, 0x6984):
        if ref == PIN_REF:
            return PinBlockedError(sw, ins, "PIN blocked: the card's PIN try limit is exceeded")
        return PinBlockedError(
            sw, ins, "PUK blocked: nothing can unblock this card's PIN any more; personalise a new card"
        )
    if sw == 0x6A80:
        return StatusWordError(sw, ins, f"the card refused the new {what} (6A80: expected 6 to 8 digits)")
    return status_error(sw, ins)


def status_error(sw: int, ins: int, what: str = "") -> StatusWordError:
    """The typed error for a status word other than ``9000`` of any PIV command (rule 2)."""
    about = f" {what}" if what else ""
    if sw == 0x6982:
        return StatusWordError(sw, ins, f"the card refused{about}: verify the PIN first (6982)")
    if sw in (0x6A82, 0x6A88):
        return StatusWordError(sw, ins, f"the card has no{about or ' such object'} ({sw:04X})")
    if sw == 0x6A80:
        return StatusWordError(sw, ins, f"the card refused the data{about} (6A80)")
    if sw == 0x6A86:
        return StatusWordError(sw, ins, f"the card refused{about}: wrong algorithm or key reference (6A86)")
    return StatusWordError(sw, ins, f"card answered {sw:04X} to INS {ins:02X}{about}")


def algorithm_of(key: object) -> int:
    """The PIV algorithm reference (P1 of GENERAL AUTHENTICATE) of a slot's public key (rule 4)."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048:
        return _ALG_RSA2048
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return _ALG_P256
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return _ALG_P384
    raise ValidationError("key: expected an RSA-2048, P-256 or P-384 public key")


def message_hash(key: object) -> str:
    """The hash a message is signed with for capsim's verifier (rule 5): ``sha384`` for a P-384
    key, ``sha256`` otherwise."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return "sha384"
    return "sha256"


def _flat(data: bytes, what: str) -> dict[int, bytes]:
    """The objects of one level of a PIV data object (one-byte tags, BER lengths). Not
    :func:`capsim.tlv.decode`: a certificate object's ``70`` holds the certificate as bytes
    (maybe compressed), not nested TLV."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise RemoteProtocolError(f"{what}: truncated at byte {pos}")
        tag, first = data[pos], data[pos + 1]
        pos += 2
        size = first
        if first > 0x80:
            n = first & 0x7F
            if n > 3 or pos + n > len(data):
                raise RemoteProtocolError(f"{what}: bad length at byte {pos - 1}")
            size = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        elif first == 0x80:
            raise RemoteProtocolError(f"{what}: indefinite length at byte {pos - 1}")
        if pos + size > len(data):
            raise RemoteProtocolError(f"{what}: value of tag {tag:02X} is truncated")
        out.setdefault(tag, data[pos : pos + size])
        pos += size
    return out


def _certificate_from_object(value: bytes) -> bytes:
    """The DER certificate in a GET DATA answer ``53{70 certificate, 71 info, FE}``; info bit 0
    says the certificate is gzip-compressed (as some tokens store it)."""
    outer = _flat(value, "certificate object")
    inner = _flat(outer[0x53], "certificate object") if 0x53 in outer else outer
    if 0x70 not in inner:
        raise RemoteProtocolError("the certificate object holds no certificate (tag 70)")
    der = inner[0x70]
    info = inner.get(0x71, b"")
    if info and info[0] & 0x01:
        unzip = zlib.decompressobj(wbits=31)
        try:
            der = unzip.decompress(der, _MAX_CERT)
        except zlib.error:
            raise RemoteProtocolError("the compressed certificate is not gzip data") from None
        if unzip.unconsumed_tail:
            raise RemoteProtocolError(f"the compressed certificate is over {_MAX_CERT} bytes")
    return der


# ------------------------------------------------------------------ the host (rules 1-5)
class PivClient:
    """The commands of a PIV host over a card link (module docstring).

    Parameters
    ----------
    link:
        Any connected :class:`~capsim.reader.driver.CardLink` (every capsim transport is one).

    Examples
    --------
    >>> from capsim.cards.piv.personalise import personalise
    >>> from capsim.cards.piv import new_piv_card
    >>> from capsim.transports.inprocess import InProcessTransport
    >>> with InProcessTransport(new_piv_card(personalise(holder="Jane Doe").state)) as link:
    ...     piv = PivClient(link)
    ...     piv.select()
    ...     tries = piv.pin_tries()
    ...     piv.verify_pin("123456")
    ...     signature = piv.sign_message(0x9A, b"hello")
    >>> tries, len(signature)
    (3, 256)
    """

    def __init__(self, link: CardLink) -> None:
        self._send: Callable[[bytes], bytes] = (
            link.transmit if link.resolves_t0 else partial(transmit_with_t0, link.transmit)
        )

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """One command (T=0 continuation resolved): its data and status word."""
        answer = self._send(apdu)
        if len(answer) < 2:
            raise RemoteProtocolError("the card's answer has no status word")
        return answer[:-2], int.from_bytes(answer[-2:], "big")

    def _command(self, ins: int, p1: int, p2: int, data: bytes = b"", le: bool = False) -> tuple[bytes, int]:
        """Send one command, chained (CLA ``10``) when its data exceed a short APDU (rule 1)."""
        while len(data) > _CHUNK:
            _, sw = self.transmit(bytes([0x10, ins, p1, p2, _CHUNK]) + data[:_CHUNK])
            if sw != _OK:
                return b"", sw
            data = data[_CHUNK:]
        apdu = bytes([0x00, ins, p1, p2]) + (bytes([len(data)]) + data if data else b"")
        return self.transmit(apdu + (b"\x00" if le else b""))

    # -- selection and status -------------------------------------------------------------------
    def select(self) -> None:
        """SELECT the PIV application; a card without one is a :class:`StatusWordError`."""
        _, sw = self._command(PivIns.SELECT, 0x04, 0x00, PIV_AID, le=True)
        if sw != _OK:
            raise StatusWordError(
                sw, PivIns.SELECT, f"no PIV application on this card (SELECT answered {sw:04X})"
            )

    def pin_tries(self) -> int | None:
        """The PIN's tries left (an empty VERIFY, which costs none); ``None`` when the PIN is
        verified in this session. A blocked PIN is :class:`PinBlockedError` (rule 3)."""
        _, sw = self._command(PivIns.VERIFY, 0x00, PIN_REF)
        if sw == _OK:
            return None
        if sw & 0xFFF0 == 0x63C0 and sw & 0x0F:
            return sw & 0x0F
        if sw == 0x63C0:
            raise reference_error(0x6983, PivIns.VERIFY, PIN_REF)
        raise reference_error(sw, PivIns.VERIFY, PIN_REF)

    # -- PIN and PUK ----------------------------------------------------------------------------
    def verify_pin(self, pin: str) -> None:
        """VERIFY the PIN (:class:`PinError` with the tries left, or :class:`PinBlockedError`)."""
        self._reference(PivIns.VERIFY, 0x00, PIN_REF, pad_reference(pin, "PIN"))

    def change_pin(self, old: str, new: str) -> None:
        """CHANGE REFERENCE DATA of the PIN."""
        self._reference(
            PivIns.CHANGE_REFERENCE_DATA,
            0x00,
            PIN_REF,
            pad_reference(old, "PIN") + pad_reference(new, "new PIN"),
        )

    def change_puk(self, old: str, new: str) -> None:
        """CHANGE REFERENCE DATA of the PUK."""
        self._reference(
            PivIns.CHANGE_REFERENCE_DATA,
            0x00,
            PUK_REF,
            pad_reference(old, "PUK") + pad_reference(new, "new PUK"),
        )

    def reset_pin(self, puk: str, new_pin: str) -> None:
        """RESET RETRY COUNTER: the PUK unblocks the PIN and sets ``new_pin`` (a wrong PUK is a
        :class:`PinError` about the PUK; a blocked one :class:`PinBlockedError`)."""
        data = pad_reference(puk, "PUK") + pad_reference(new_pin, "new PIN")
        _, sw = self._command(PivIns.RESET_RETRY_COUNTER, 0x00, PIN_REF, data)
        if sw != _OK:
            raise reference_error(sw, PivIns.RESET_RETRY_COUNTER, PUK_REF)

    def _reference(self, ins: int, p1: int, ref: int, data: bytes) -> None:
        _, sw = self._command(ins, p1, ref, data)
        if sw != _OK:
            raise reference_error(sw, ins, ref)

    # -- certificates and signatures ------------------------------------------------------------
    def read_certificate(self, slot: int) -> bytes:
        """The DER certificate of key slot ``slot`` (``0x9A``, ``0x9C``, ``0x9D``, ``0x9E``)."""
        if slot not in CERT_OBJECTS:
            raise ValidationError("slot: expected 9A, 9C, 9D or 9E")
        tag = CERT_OBJECTS[slot].to_bytes(3, "big")
        data, sw = self._command(PivIns.GET_DATA, 0x3F, 0xFF, encode(0x5C, tag), le=True)
        if sw != _OK:
            raise status_error(sw, PivIns.GET_DATA, f"certificate in slot {slot:02X}")
        return _certificate_from_object(data)

    def sign_digest(self, slot: int, key: object, hash_name: str, digest: bytes) -> bytes:
        """GENERAL AUTHENTICATE with the key of ``slot`` (whose public key is ``key``) over a
        ``hash_name`` digest: a DER ECDSA signature, or an RSA PKCS#1 v1.5 signature (rule 4).
        The PIN must be verified (right before, for slot ``9C``)."""
        algorithm = algorithm_of(key)
        if slot not in CERT_OBJECTS:
            raise ValidationError("slot: expected 9A, 9C, 9D or 9E")
        if isinstance(key, rsa.RSAPublicKey):
            data = pkcs1_v15_block(hash_name, digest, key.key_size // 8)
        else:
            if hash_name not in DIGEST_INFO or len(digest) != DIGEST_INFO[hash_name][1]:
                raise ValidationError(f"digest: expected a sha256, sha384 or sha512 digest, got {hash_name}")
            data = digest
        body = encode(0x7C, encode(0x82, b"") + encode(0x81, data))
        answer, sw = self._command(PivIns.GENERAL_AUTHENTICATE, algorithm, slot, body, le=True)
        if sw != _OK:
            raise status_error(
                sw, PivIns.GENERAL_AUTHENTICATE, f"a signature with the key in slot {slot:02X}"
            )
        try:
            template = decode(answer)
        except (ApduFormatError, ValidationError) as exc:
            raise RemoteProtocolError(f"GENERAL AUTHENTICATE answer is not BER-TLV: {exc}") from None
        found = find(template, 0x82)
        if found is None or not found.value:
            raise RemoteProtocolError("GENERAL AUTHENTICATE answer holds no signature (7C{82})")
        return found.value

    def sign_message(self, slot: int, message: bytes, *, certificate: bytes | None = None) -> bytes:
        """Sign ``message`` with the key of ``slot`` as capsim's verifier checks it (rule 5);
        ``certificate`` (DER) spares reading it from the card."""
        der = self.read_certificate(slot) if certificate is None else certificate
        try:
            key = x509.load_der_x509_certificate(der).public_key()
        except ValueError:
            raise RemoteProtocolError(f"the certificate in slot {slot:02X} is not X.509 DER") from None
        name = message_hash(key)
        return self.sign_digest(slot, key, name, hashlib.new(name, message).digest())
