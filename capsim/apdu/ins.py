"""Instruction bytes capsim sends or answers (ISO/IEC 7816-4 §5.1; EMV 4.3 Book 3 §6.5).

Note: ISO/IEC 7816-3 forbids INS values ``6x`` and ``9x`` under T=0, because the card would
mistake them for procedure bytes. capsim's APDU layer does not enforce this (T=1, extended
APDUs and the emulated card do not care); none of the members below is in those ranges.

>>> INS.GENERATE_AC
<INS.GENERATE_AC: 174>
>>> f"{INS.SELECT:02X}"
'A4'
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["INS", "PivIns"]


class INS(IntEnum):
    """Instruction codes (EMV 4.3 Book 3 §6.5, Book 3 §10.5 for issuer scripts)."""

    APPLICATION_UNBLOCK = 0x18
    CARD_BLOCK = 0x16
    APPLICATION_BLOCK = 0x1E
    VERIFY = 0x20
    PIN_CHANGE_UNBLOCK = 0x24
    EXTERNAL_AUTHENTICATE = 0x82
    GET_CHALLENGE = 0x84
    INTERNAL_AUTHENTICATE = 0x88
    SELECT = 0xA4
    GPO = 0xA8
    GENERATE_AC = 0xAE
    READ_RECORD = 0xB2
    GET_RESPONSE = 0xC0
    GET_DATA = 0xCA
    PUT_DATA = 0xDA
    UPDATE_RECORD = 0xDC


class PivIns(IntEnum):
    """The PIV card application's instructions (NIST SP 800-73-4 part 2 §3) and the two
    yubico ones hosts send (GET VERSION, GET SERIAL): the emulated PIV card answers them and the
    PIV client sends them. ``CHANGE_REFERENCE_DATA`` is ISO 7816-4's ``24``, which EMV scripts
    call PIN CHANGE/UNBLOCK (:attr:`INS.PIN_CHANGE_UNBLOCK`)."""

    SELECT = 0xA4
    GET_DATA = 0xCB
    PUT_DATA = 0xDB
    VERIFY = 0x20
    CHANGE_REFERENCE_DATA = 0x24
    RESET_RETRY_COUNTER = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GENERATE_KEY_PAIR = 0x47
    GET_RESPONSE = 0xC0
    GET_VERSION = 0xFD
    GET_SERIAL = 0xF8
