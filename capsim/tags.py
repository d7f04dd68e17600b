"""The EMV tag dictionary: names, formats and sensitivity (EMV 4.3 Book 3 Annex A).

The table drives three things: names in :func:`capsim.tlv.format_tree`, the padding and
truncation rule of :func:`capsim.tlv.fill_dol` (by :class:`TagFormat`), and redaction in
traces and trees (``sensitive``).

**Sensitive tags** (redacted unless the user asks otherwise): data that identifies the
cardholder or lets someone clone a magnetic-stripe transaction: the PAN ``5A``, track data
``56``, ``57``, ``9F1F``, ``9F20``, ``9F6B``, the cardholder name ``5F20`` and ``9F0B``, the
expiry date ``5F24``, and the PIN data ``99``. Cryptograms, ATCs and the PSN are not
sensitive: they are needed to debug a session and are useless without the issuer keys.

>>> tag_name(0x9F02)
'Amount, Authorised (Numeric)'
>>> tag_info(0x5A).sensitive, tag_info(0x5A).fmt
(True, <TagFormat.CN: 'cn'>)
>>> tag_name(0xDF7F)
'unknown tag DF7F'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import MappingProxyType

from capsim.errors import ValidationError

__all__ = ["TAGS", "Tag", "TagFormat", "TagInfo", "tag_info", "tag_name"]


class TagFormat(StrEnum):
    """Data element formats of EMV 4.3 Book 3 §4.3."""

    N = "n"
    """Numeric: BCD digits, right-justified, left-padded with zero nibbles."""
    CN = "cn"
    """Compressed numeric: BCD digits, left-justified, right-padded with ``F`` nibbles."""
    AN = "an"
    """Alphanumeric ASCII."""
    ANS = "ans"
    """Alphanumeric special ASCII."""
    B = "b"
    """Binary."""


class Tag(IntEnum):
    """Named EMV tags (EMV 4.3 Book 3 Annex A; CAP tags from cap-protocol.md §2)."""

    AID = 0x4F
    APPLICATION_LABEL = 0x50
    TRACK1_DATA = 0x56
    TRACK2_EQUIVALENT_DATA = 0x57
    PAN = 0x5A
    CARDHOLDER_NAME = 0x5F20
    EXPIRATION_DATE = 0x5F24
    EFFECTIVE_DATE = 0x5F25
    ISSUER_COUNTRY_CODE = 0x5F28
    TRANSACTION_CURRENCY_CODE = 0x5F2A
    CARDHOLDER_NATIONALITY = 0x5F2C
    LANGUAGE_PREFERENCE = 0x5F2D
    SERVICE_CODE = 0x5F30
    PAN_SEQUENCE_NUMBER = 0x5F34
    TRANSACTION_CURRENCY_EXPONENT = 0x5F36
    ISSUER_URL = 0x5F50
    APPLICATION_TEMPLATE = 0x61
    FCI_TEMPLATE = 0x6F
    RECORD_TEMPLATE = 0x70
    ISSUER_SCRIPT_TEMPLATE_1 = 0x71
    ISSUER_SCRIPT_TEMPLATE_2 = 0x72
    DIRECTORY_DISCRETIONARY_TEMPLATE = 0x73
    RESPONSE_TEMPLATE_FORMAT_2 = 0x77
    RESPONSE_TEMPLATE_FORMAT_1 = 0x80
    AMOUNT_AUTHORISED_BINARY = 0x81
    AIP = 0x82
    COMMAND_TEMPLATE = 0x83
    DF_NAME = 0x84
    ISSUER_SCRIPT_COMMAND = 0x86
    APPLICATION_PRIORITY_INDICATOR = 0x87
    SFI = 0x88
    AUTHORISATION_CODE = 0x89
    AUTHORISATION_RESPONSE_CODE = 0x8A
    CDOL1 = 0x8C
    CDOL2 = 0x8D
    CVM_LIST = 0x8E
    CA_PUBLIC_KEY_INDEX = 0x8F
    ISSUER_PUBLIC_KEY_CERTIFICATE = 0x90
    ISSUER_AUTHENTICATION_DATA = 0x91
    ISSUER_PUBLIC_KEY_REMAINDER = 0x92
    SIGNED_STATIC_APPLICATION_DATA = 0x93
    AFL = 0x94
    TVR = 0x95
    TDOL = 0x97
    TC_HASH_VALUE = 0x98
    TRANSACTION_PIN_DATA = 0x99
    TRANSACTION_DATE = 0x9A
    TSI = 0x9B
    TRANSACTION_TYPE = 0x9C
    DDF_NAME = 0x9D
    AMOUNT_AUTHORISED = 0x9F02
    AMOUNT_OTHER = 0x9F03
    APPLICATION_DISCRETIONARY_DATA = 0x9F05
    TERMINAL_AID = 0x9F06
    APPLICATION_USAGE_CONTROL = 0x9F07
    APPLICATION_VERSION_NUMBER = 0x9F08
    TERMINAL_APPLICATION_VERSION_NUMBER = 0x9F09
    CARDHOLDER_NAME_EXTENDED = 0x9F0B
    IAC_DEFAULT = 0x9F0D
    IAC_DENIAL = 0x9F0E
    IAC_ONLINE = 0x9F0F
    ISSUER_APPLICATION_DATA = 0x9F10
    ISSUER_CODE_TABLE_INDEX = 0x9F11
    APPLICATION_PREFERRED_NAME = 0x9F12
    LAST_ONLINE_ATC = 0x9F13
    LOWER_CONSECUTIVE_OFFLINE_LIMIT = 0x9F14
    MERCHANT_CATEGORY_CODE = 0x9F15
    MERCHANT_IDENTIFIER = 0x9F16
    PIN_TRY_COUNTER = 0x9F17
    ISSUER_SCRIPT_IDENTIFIER = 0x9F18
    TERMINAL_COUNTRY_CODE = 0x9F1A
    TERMINAL_FLOOR_LIMIT = 0x9F1B
    TERMINAL_IDENTIFICATION = 0x9F1C
    TERMINAL_RISK_MANAGEMENT_DATA = 0x9F1D
    IFD_SERIAL_NUMBER = 0x9F1E
    TRACK1_DISCRETIONARY_DATA = 0x9F1F
    TRACK2_DISCRETIONARY_DATA = 0x9F20
    TRANSACTION_TIME = 0x9F21
    TERMINAL_CA_PUBLIC_KEY_INDEX = 0x9F22
    UPPER_CONSECUTIVE_OFFLINE_LIMIT = 0x9F23
    APPLICATION_CRYPTOGRAM = 0x9F26
    CRYPTOGRAM_INFORMATION_DATA = 0x9F27
    ICC_PIN_ENCIPHERMENT_PK_CERTIFICATE = 0x9F2D
    ICC_PIN_ENCIPHERMENT_PK_EXPONENT = 0x9F2E
    ICC_PIN_ENCIPHERMENT_PK_REMAINDER = 0x9F2F
    ISSUER_PUBLIC_KEY_EXPONENT = 0x9F32
    TERMINAL_CAPABILITIES = 0x9F33
    CVM_RESULTS = 0x9F34
    TERMINAL_TYPE = 0x9F35
    ATC = 0x9F36
    UNPREDICTABLE_NUMBER = 0x9F37
    PDOL = 0x9F38
    POS_ENTRY_MODE = 0x9F39
    AMOUNT_REFERENCE_CURRENCY = 0x9F3A
    APPLICATION_REFERENCE_CURRENCY = 0x9F3B
    TRANSACTION_REFERENCE_CURRENCY_CODE = 0x9F3C
    TRANSACTION_REFERENCE_CURRENCY_EXPONENT = 0x9F3D
    ADDITIONAL_TERMINAL_CAPABILITIES = 0x9F40
    TRANSACTION_SEQUENCE_COUNTER = 0x9F41
    APPLICATION_CURRENCY_CODE = 0x9F42
    APPLICATION_REFERENCE_CURRENCY_EXPONENT = 0x9F43
    APPLICATION_CURRENCY_EXPONENT = 0x9F44
    DATA_AUTHENTICATION_CODE = 0x9F45
    ICC_PUBLIC_KEY_CERTIFICATE = 0x9F46
    ICC_PUBLIC_KEY_EXPONENT = 0x9F47
    ICC_PUBLIC_KEY_REMAINDER = 0x9F48
    DDOL = 0x9F49
    SDA_TAG_LIST = 0x9F4A
    SIGNED_DYNAMIC_APPLICATION_DATA = 0x9F4B
    ICC_DYNAMIC_NUMBER = 0x9F4C
    LOG_ENTRY = 0x9F4D
    MERCHANT_NAME_AND_LOCATION = 0x9F4E
    LOG_FORMAT = 0x9F4F
    ISSUER_AUTHENTICATION_FLAGS = 0x9F55
    ISSUER_PROPRIETARY_BITMAP = 0x9F56
    TRACK2_DATA = 0x9F6B
    FCI_PROPRIETARY_TEMPLATE = 0xA5
    FCI_ISSUER_DISCRETIONARY_DATA = 0xBF0C
    PROPRIETARY_DF07 = 0xDF07


def _constructed(tag: int) -> bool:
    """Whether ``tag`` (as an int) is constructed: bit 6 of its first byte (shared with :mod:`capsim.tlv`)."""
    first = tag
    while first > 0xFF:
        first >>= 8
    return bool(first & 0x20)


@dataclass(frozen=True, slots=True, kw_only=True)
class TagInfo:
    """What capsim knows about one tag.

    Attributes
    ----------
    tag:
        The tag as an int (``0x9F02``).
    name:
        The EMV name.
    fmt:
        The EMV format (drives DOL padding and the ASCII column of the tree printer).
    sensitive:
        Redact the value in traces and trees unless the user opts in.
    """

    tag: int
    name: str
    fmt: TagFormat
    sensitive: bool = False

    @property
    def constructed(self) -> bool:
        """True for templates (bit 6 of the first tag byte set, ISO/IEC 8825-1 §8.1.2)."""
        return _constructed(self.tag)


_N, _CN, _AN, _ANS, _B = TagFormat.N, TagFormat.CN, TagFormat.AN, TagFormat.ANS, TagFormat.B

# (tag, name, format, sensitive)
_TABLE: tuple[tuple[Tag, str, TagFormat, bool], ...] = (
    (Tag.AID, "Application Identifier (AID) - card", _B, False),
    (Tag.APPLICATION_LABEL, "Application Label", _ANS, False),
    (Tag.TRACK1_DATA, "Track 1 Data", _ANS, True),
    (Tag.TRACK2_EQUIVALENT_DATA, "Track 2 Equivalent Data", _B, True),
    (Tag.PAN, "Application Primary Account Number (PAN)", _CN, True),
    (Tag.CARDHOLDER_NAME, "Cardholder Name", _ANS, True),
    (Tag.EXPIRATION_DATE, "Application Expiration Date", _N, True),
    (Tag.EFFECTIVE_DATE, "Application Effective Date", _N, False),
    (Tag.ISSUER_COUNTRY_CODE, "Issuer Country Code", _N, False),
    (Tag.TRANSACTION_CURRENCY_CODE, "Transaction Currency Code", _N, False),
    (Tag.CARDHOLDER_NATIONALITY, "Cardholder Nationality", _N, False),
    (Tag.LANGUAGE_PREFERENCE, "Language Preference", _AN, False),
    (Tag.SERVICE_CODE, "Service Code", _N, False),
    (Tag.PAN_SEQUENCE_NUMBER, "Application PAN Sequence Number (PSN)", _N, False),
    (Tag.TRANSACTION_CURRENCY_EXPONENT, "Transaction Currency Exponent", _N, False),
    (Tag.ISSUER_URL, "Issuer URL", _ANS, False),
    (Tag.APPLICATION_TEMPLATE, "Application Template", _B, False),
    (Tag.FCI_TEMPLATE, "File Control Information (FCI) Template", _B, False),
    (Tag.RECORD_TEMPLATE, "READ RECORD Response Message Template", _B, False),
    (Tag.ISSUER_SCRIPT_TEMPLATE_1, "Issuer Script Template 1", _B, False),
    (Tag.ISSUER_SCRIPT_TEMPLATE_2, "Issuer Script Template 2", _B, False),
    (Tag.DIRECTORY_DISCRETIONARY_TEMPLATE, "Directory Discretionary Template", _B, False),
    (Tag.RESPONSE_TEMPLATE_FORMAT_2, "Response Message Template Format 2", _B, False),
    (Tag.RESPONSE_TEMPLATE_FORMAT_1, "Response Message Template Format 1", _B, False),
    (Tag.AMOUNT_AUTHORISED_BINARY, "Amount, Authorised (Binary)", _B, False),
    (Tag.AIP, "Application Interchange Profile (AIP)", _B, False),
    (Tag.COMMAND_TEMPLATE, "Command Template", _B, False),
    (Tag.DF_NAME, "Dedicated File (DF) Name", _B, False),
    (Tag.ISSUER_SCRIPT_COMMAND, "Issuer Script Command", _B, False),
    (Tag.APPLICATION_PRIORITY_INDICATOR, "Application Priority Indicator", _B, False),
    (Tag.SFI, "Short File Identifier (SFI)", _B, False),
    (Tag.AUTHORISATION_CODE, "Authorisation Code", _AN, False),
    (Tag.AUTHORISATION_RESPONSE_CODE, "Authorisation Response Code (ARC)", _AN, False),
    (Tag.CDOL1, "Card Risk Management Data Object List 1 (CDOL1)", _B, False),
    (Tag.CDOL2, "Card Risk Management Data Object List 2 (CDOL2)", _B, False),
    (Tag.CVM_LIST, "Cardholder Verification Method (CVM) List", _B, False),
    (Tag.CA_PUBLIC_KEY_INDEX, "Certification Authority Public Key Index", _B, False),
    (Tag.ISSUER_PUBLIC_KEY_CERTIFICATE, "Issuer Public Key Certificate", _B, False),
    (Tag.ISSUER_AUTHENTICATION_DATA, "Issuer Authentication Data", _B, False),
    (Tag.ISSUER_PUBLIC_KEY_REMAINDER, "Issuer Public Key Remainder", _B, False),
    (Tag.SIGNED_STATIC_APPLICATION_DATA, "Signed Static Application Data", _B, False),
    (Tag.AFL, "Application File Locator (AFL)", _B, False),
    (Tag.TVR, "Terminal Verification Results (TVR)", _B, False),
    (Tag.TDOL, "Transaction Certificate Data Object List (TDOL)", _B, False),
    (Tag.TC_HASH_VALUE, "Transaction Certificate (TC) Hash Value", _B, False),
    (Tag.TRANSACTION_PIN_DATA, "Transaction Personal Identification Number (PIN) Data", _B, True),
    (Tag.TRANSACTION_DATE, "Transaction Date", _N, False),
    (Tag.TSI, "Transaction Status Information (TSI)", _B, False),
    (Tag.TRANSACTION_TYPE, "Transaction Type", _N, False),
    (Tag.DDF_NAME, "Directory Definition File (DDF) Name", _B, False),
    (Tag.AMOUNT_AUTHORISED, "Amount, Authorised (Numeric)", _N, False),
    (Tag.AMOUNT_OTHER, "Amount, Other (Numeric)", _N, False),
    (Tag.APPLICATION_DISCRETIONARY_DATA, "Application Discretionary Data", _B, False),
    (Tag.TERMINAL_AID, "Application Identifier (AID) - terminal", _B, False),
    (Tag.APPLICATION_USAGE_CONTROL, "Application Usage Control", _B, False),
    (Tag.APPLICATION_VERSION_NUMBER, "Application Version Number (card)", _B, False),
    (Tag.TERMINAL_APPLICATION_VERSION_NUMBER, "Application Version Number (terminal)", _B, False),
    (Tag.CARDHOLDER_NAME_EXTENDED, "Cardholder Name Extended", _ANS, True),
    (Tag.IAC_DEFAULT, "Issuer Action Code - Default", _B, False),
    (Tag.IAC_DENIAL, "Issuer Action Code - Denial", _B, False),
    (Tag.IAC_ONLINE, "Issuer Action Code - Online", _B, False),
    (Tag.ISSUER_APPLICATION_DATA, "Issuer Application Data (IAD)", _B, False),
    (Tag.ISSUER_CODE_TABLE_INDEX, "Issuer Code Table Index", _N, False),
    (Tag.APPLICATION_PREFERRED_NAME, "Application Preferred Name", _ANS, False),
    (Tag.LAST_ONLINE_ATC, "Last Online Application Transaction Counter (ATC) Register", _B, False),
    (Tag.LOWER_CONSECUTIVE_OFFLINE_LIMIT, "Lower Consecutive Offline Limit", _B, False),
    (Tag.MERCHANT_CATEGORY_CODE, "Merchant Category Code", _N, False),
    (Tag.MERCHANT_IDENTIFIER, "Merchant Identifier", _ANS, False),
    (Tag.PIN_TRY_COUNTER, "Personal Identification Number (PIN) Try Counter", _B, False),
    (Tag.ISSUER_SCRIPT_IDENTIFIER, "Issuer Script Identifier", _B, False),
    (Tag.TERMINAL_COUNTRY_CODE, "Terminal Country Code", _N, False),
    (Tag.TERMINAL_FLOOR_LIMIT, "Terminal Floor Limit", _B, False),
    (Tag.TERMINAL_IDENTIFICATION, "Terminal Identification", _AN, False),
    (Tag.TERMINAL_RISK_MANAGEMENT_DATA, "Terminal Risk Management Data", _B, False),
    (Tag.IFD_SERIAL_NUMBER, "Interface Device (IFD) Serial Number", _AN, False),
    (Tag.TRACK1_DISCRETIONARY_DATA, "Track 1 Discretionary Data", _ANS, True),
    (Tag.TRACK2_DISCRETIONARY_DATA, "Track 2 Discretionary Data", _CN, True),
    (Tag.TRANSACTION_TIME, "Transaction Time", _N, False),
    (Tag.TERMINAL_CA_PUBLIC_KEY_INDEX, "Certification Authority Public Key Index - terminal", _B, False),
    (Tag.UPPER_CONSECUTIVE_OFFLINE_LIMIT, "Upper Consecutive Offline Limit", _B, False),
    (Tag.APPLICATION_CRYPTOGRAM, "Application Cryptogram (AC)", _B, False),
    (Tag.CRYPTOGRAM_INFORMATION_DATA, "Cryptogram Information Data (CID)", _B, False),
    (Tag.ICC_PIN_ENCIPHERMENT_PK_CERTIFICATE, "ICC PIN Encipherment Public Key Certificate", _B, False),
    (Tag.ICC_PIN_ENCIPHERMENT_PK_EXPONENT, "ICC PIN Encipherment Public Key Exponent", _B, False),
    (Tag.ICC_PIN_ENCIPHERMENT_PK_REMAINDER, "ICC PIN Encipherment Public Key Remainder", _B, False),
    (Tag.ISSUER_PUBLIC_KEY_EXPONENT, "Issuer Public Key Exponent", _B, False),
    (Tag.TERMINAL_CAPABILITIES, "Terminal Capabilities", _B, False),
    (Tag.CVM_RESULTS, "Cardholder Verification Method (CVM) Results", _B, False),
    (Tag.TERMINAL_TYPE, "Terminal Type", _N, False),
    (Tag.ATC, "Application Transaction Counter (ATC)", _B, False),
    (Tag.UNPREDICTABLE_NUMBER, "Unpredictable Number", _B, False),
    (Tag.PDOL, "Processing Options Data Object List (PDOL)", _B, False),
    (Tag.POS_ENTRY_MODE, "Point-of-Service (POS) Entry Mode", _N, False),
    (Tag.AMOUNT_REFERENCE_CURRENCY, "Amount, Reference Currency", _B, False),
    (Tag.APPLICATION_REFERENCE_CURRENCY, "Application Reference Currency", _N, False),
    (Tag.TRANSACTION_REFERENCE_CURRENCY_CODE, "Transaction Reference Currency Code", _N, False),
    (Tag.TRANSACTION_REFERENCE_CURRENCY_EXPONENT, "Transaction Reference Currency Exponent", _N, False),
    (Tag.ADDITIONAL_TERMINAL_CAPABILITIES, "Additional Terminal Capabilities", _B, False),
    (Tag.TRANSACTION_SEQUENCE_COUNTER, "Transaction Sequence Counter", _N, False),
    (Tag.APPLICATION_CURRENCY_CODE, "Application Currency Code", _N, False),
    (Tag.APPLICATION_REFERENCE_CURRENCY_EXPONENT, "Application Reference Currency Exponent", _N, False),
    (Tag.APPLICATION_CURRENCY_EXPONENT, "Application Currency Exponent", _N, False),
    (Tag.DATA_AUTHENTICATION_CODE, "Data Authentication Code (DAC)", _B, False),
    (Tag.ICC_PUBLIC_KEY_CERTIFICATE, "ICC Public Key Certificate", _B, False),
    (Tag.ICC_PUBLIC_KEY_EXPONENT, "ICC Public Key Exponent", _B, False),
    (Tag.ICC_PUBLIC_KEY_REMAINDER, "ICC Public Key Remainder", _B, False),
    (Tag.DDOL, "Dynamic Data Authentication Data Object List (DDOL)", _B, False),
    (Tag.SDA_TAG_LIST, "Static Data Authentication Tag List", _B, False),
    (Tag.SIGNED_DYNAMIC_APPLICATION_DATA, "Signed Dynamic Application Data", _B, False),
    (Tag.ICC_DYNAMIC_NUMBER, "ICC Dynamic Number", _B, False),
    (Tag.LOG_ENTRY, "Log Entry", _B, False),
    (Tag.MERCHANT_NAME_AND_LOCATION, "Merchant Name and Location", _ANS, False),
    (Tag.LOG_FORMAT, "Log Format", _B, False),
    (Tag.ISSUER_AUTHENTICATION_FLAGS, "Issuer Authentication Flags (CAP IAF)", _B, False),
    (Tag.ISSUER_PROPRIETARY_BITMAP, "Issuer Proprietary Bitmap (CAP IPB)", _B, False),
    (Tag.TRACK2_DATA, "Track 2 Data", _B, True),
    (Tag.FCI_PROPRIETARY_TEMPLATE, "FCI Proprietary Template", _B, False),
    (Tag.FCI_ISSUER_DISCRETIONARY_DATA, "FCI Issuer Discretionary Data", _B, False),
    (Tag.PROPRIETARY_DF07, "Proprietary data (Belgian issuer marker)", _B, False),
)

TAGS: Mapping[int, TagInfo] = MappingProxyType(
    {
        int(tag): TagInfo(tag=int(tag), name=name, fmt=fmt, sensitive=sensitive)
        for tag, name, fmt, sensitive in _TABLE
    }
)
"""Every tag capsim knows, keyed by tag number (read-only)."""


def tag_info(tag: int) -> TagInfo | None:
    """The :class:`TagInfo` of ``tag``, or ``None`` when capsim does not know it.

    >>> tag_info(0x9F37).name
    'Unpredictable Number'
    >>> tag_info(0xDF7F) is None
    True
    """
    return TAGS.get(tag)


def tag_name(tag: int) -> str:
    """The EMV name of ``tag``, or ``"unknown tag "`` followed by the tag in hex.

    >>> tag_name(0x8C)
    'Card Risk Management Data Object List 1 (CDOL1)'
    >>> tag_name(0xDF7F)
    'unknown tag DF7F'
    """
    info = TAGS.get(tag)
    if info is not None:
        return info.name
    if isinstance(tag, bool) or not isinstance(tag, int) or tag < 0:
        raise ValidationError(f"tag must be a non-negative int, got {tag!r}")
    width = 2
    while tag >> (4 * width):
        width += 2
    return f"unknown tag {tag:0{width}X}"
