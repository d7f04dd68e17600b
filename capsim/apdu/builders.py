"""Builders for the commands a CAP reader sends (EMV 4.3 Book 3 §6.5; cap-protocol.md §2).

Each function validates its arguments and returns a :class:`~capsim.apdu.command.CommandApdu`.

>>> select(bytes.fromhex("A0000000048002")).to_bytes().hex().upper()
'00A4040007A000000004800200'
>>> gpo(b"").to_bytes().hex().upper()
'80A8000002830000'
>>> verify_plaintext_pin(bytes.fromhex("241234FFFFFFFFFF")).to_bytes().hex().upper()
'0020008008241234FFFFFFFFFF'
"""

from __future__ import annotations

from capsim.apdu.command import CommandApdu
from capsim.apdu.ins import INS
from capsim.errors import ValidationError
from capsim.tlv import encode

__all__ = [
    "PSE_NAME",
    "generate_ac",
    "get_challenge",
    "get_data",
    "get_response",
    "gpo",
    "read_record",
    "select",
    "select_pse",
    "verify_plaintext_pin",
]

PSE_NAME = b"1PAY.SYS.DDF01"
"""The contact Payment System Environment directory name (EMV 4.3 Book 1 §12.2.2)."""


def _bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValidationError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    return value


def select(aid: bytes, *, first: bool = True) -> CommandApdu:
    """SELECT by DF name: ``00 A4 04 P2 Lc AID 00`` (EMV 4.3 Book 1 §11.3).

    Parameters
    ----------
    aid:
        The application identifier or DF name, 5..16 bytes.
    first:
        ``True`` selects the first occurrence (P2 ``00``), ``False`` the next one (P2 ``02``).

    >>> select(bytes.fromhex("A0000000038002"), first=False).to_bytes().hex().upper()
    '00A4040207A000000003800200'
    """
    aid = _bytes("aid", aid)
    if not 5 <= len(aid) <= 16:
        raise ValidationError(f"aid must be 5..16 bytes, got {len(aid)}")
    return CommandApdu(0x00, INS.SELECT, 0x04, 0x00 if first else 0x02, aid, 256)


def select_pse() -> CommandApdu:
    """SELECT the contact PSE ``1PAY.SYS.DDF01`` (EMV 4.3 Book 1 §12.2.2).

    >>> select_pse().to_bytes().hex().upper()
    '00A404000E315041592E5359532E444446303100'
    """
    return select(PSE_NAME)


def gpo(pdol_data: bytes) -> CommandApdu:
    """GET PROCESSING OPTIONS: ``80 A8 00 00 Lc 83 L data 00`` (EMV 4.3 Book 3 §6.5.8).

    Parameters
    ----------
    pdol_data:
        The filled PDOL (empty when the card has no PDOL, giving the body ``83 00``).

    >>> gpo(bytes.fromhex("34")).to_bytes().hex().upper()
    '80A800000383013400'
    """
    pdol_data = _bytes("pdol_data", pdol_data)
    if len(pdol_data) > 252:
        raise ValidationError(f"pdol_data must be at most 252 bytes, got {len(pdol_data)}")
    return CommandApdu(0x80, INS.GPO, 0x00, 0x00, encode(0x83, pdol_data), 256)


def read_record(record: int, sfi: int) -> CommandApdu:
    """READ RECORD: ``00 B2 rec (SFI<<3)|4 00`` (EMV 4.3 Book 3 §6.5.11).

    Parameters
    ----------
    record:
        Record number, 1..254.
    sfi:
        Short file identifier, 1..30.

    >>> read_record(1, 1).to_bytes().hex().upper()
    '00B2010C00'
    """
    _int("record", record, 1, 254)
    _int("sfi", sfi, 1, 30)
    return CommandApdu(0x00, INS.READ_RECORD, record, (sfi << 3) | 0x04, le=256)


def get_data(tag: int) -> CommandApdu:
    """GET DATA: ``80 CA tagHi tagLo 00`` (EMV 4.3 Book 3 §6.5.7).

    Parameters
    ----------
    tag:
        A one- or two-byte tag, 0x01..0xFFFF (``0x9F17`` PIN try counter, ``0x9F36`` ATC).

    >>> get_data(0x9F17).to_bytes().hex().upper()
    '80CA9F1700'
    """
    _int("tag", tag, 1, 0xFFFF)
    return CommandApdu(0x80, INS.GET_DATA, tag >> 8, tag & 0xFF, le=256)


def verify_plaintext_pin(pin_block: bytes) -> CommandApdu:
    """VERIFY with a plaintext offline PIN: ``00 20 00 80 08 block``, no Le (EMV Book 3 §6.5.12).

    Parameters
    ----------
    pin_block:
        The 8-byte ISO 9564 format 2 block (``capsim.apdu.pinblock.pin_block_iso2``).

    >>> verify_plaintext_pin(bytes(8)).case
    3
    """
    pin_block = _bytes("pin_block", pin_block)
    if len(pin_block) != 8:
        raise ValidationError(f"pin_block must be 8 bytes, got {len(pin_block)}")
    return CommandApdu(0x00, INS.VERIFY, 0x00, 0x80, pin_block)


def generate_ac(p1: int, data: bytes) -> CommandApdu:
    """GENERATE AC: ``80 AE P1 00 Lc data 00`` (EMV 4.3 Book 3 §6.5.5).

    Parameters
    ----------
    p1:
        Reference control parameter: ``0x80`` ARQC, ``0x40`` TC, ``0x00`` AAC (plus ``0x10`` CDA).
    data:
        The filled CDOL1 or CDOL2, 1..255 bytes.

    >>> generate_ac(0x80, bytes(29)).to_bytes()[:5].hex().upper()
    '80AE80001D'
    """
    _int("p1", p1, 0, 0xFF)
    data = _bytes("data", data)
    if not 1 <= len(data) <= 255:
        raise ValidationError(f"data must be 1..255 bytes, got {len(data)}")
    return CommandApdu(0x80, INS.GENERATE_AC, p1, 0x00, data, 256)


def get_response(le: int) -> CommandApdu:
    """GET RESPONSE: ``00 C0 00 00 Le`` (ISO/IEC 7816-4 §7.6.1; T=0 continuation).

    Parameters
    ----------
    le:
        Number of bytes to fetch, 1..256 (256 encodes as ``00``).

    >>> get_response(0x1A).to_bytes().hex().upper()
    '00C000001A'
    """
    _int("le", le, 1, 256)
    return CommandApdu(0x00, INS.GET_RESPONSE, 0x00, 0x00, le=le)


def get_challenge() -> CommandApdu:
    """GET CHALLENGE: ``00 84 00 00 00`` (EMV 4.3 Book 3 §6.5.6; the card returns 8 bytes).

    >>> get_challenge().to_bytes().hex().upper()
    '0084000000'
    """
    return CommandApdu(0x00, INS.GET_CHALLENGE, 0x00, 0x00, le=256)
