"""Pure EMV-CAP functions: inputs, CDOL data, the IPB mask, the decimal code, TDS, the Belgian code.

Everything here is a small function on ``bytes`` and ``str`` with no I/O (hazmat layer,
architecture.md §10 rule 4). :class:`capsim.reader.CapReader` chooses every parameter for the
user; call these directly only to reproduce or verify a code.

The code of a CAP run (cap-protocol.md §6):

1. ``D = [PSN] ‖ CID ‖ ATC ‖ AC ‖ IAD`` (:func:`data_string`);
2. the IPB selects bits of ``D``, left to right, b8 down to b1 (:func:`ipb_extract`);
3. the integer is written in decimal, zero-padded to the display width (:func:`decimal_code`).

Those steps, :func:`compute_code`, :func:`explain_ipb` and the disclosed ATC bits
(:func:`disclosed_atc_bits`, :func:`atc_bits_from_code`) are defined once, in
:mod:`capsim.codelayout`, which the verifier's matcher uses too; they are re-exported here
unchanged. The Belgian code function (§8 (c)) is here.

>>> compute_code(bytes.fromhex("00001F00000000000FFFFF00000000008000"), b"\\x80",
...              bytes.fromhex("0042"), bytes.fromhex("B7F9A572DA74CAFF"),
...              bytes.fromhex("06770A03A48000"))
'04822527'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from capsim.codelayout import (
    CodeBit,
    atc_bits_from_code,
    check_field,
    compute_code,
    data_string,
    decimal_code,
    disclosed_atc_bits,
    explain_ipb,
    ipb_bit_count,
    ipb_extract,
)
from capsim.errors import ValidationError
from capsim.tlv import DolEntry, fill_dol, parse_dol

if TYPE_CHECKING:
    from capsim.profiles import ReaderProfile

__all__ = [
    "CURRENCIES",
    "IAF_AMOUNT",
    "IAF_NO_CURRENCY",
    "IAF_PSN",
    "MAX_AMOUNT",
    "CapMode",
    "CodeBit",
    "Currency",
    "atc_bits_from_code",
    "belgian_code",
    "build_cdol2_data",
    "build_cdol_data",
    "canonical_challenge",
    "cdol_values",
    "challenge_to_un",
    "compute_code",
    "currency_exponent",
    "currency_numeric",
    "data_string",
    "decimal_code",
    "disclosed_atc_bits",
    "explain_belgian",
    "explain_ipb",
    "ipb_bit_count",
    "ipb_extract",
    "major_units",
    "parse_amount",
    "tds_mac",
    "tds_message",
    "validate_tds_fields",
]

_log = logging.getLogger(__name__)

#: IAF first-byte bits (cap-protocol.md §4).
IAF_AMOUNT: Final = 0x80
IAF_PSN: Final = 0x40
IAF_NO_CURRENCY: Final = 0x20

#: Largest amount that fits ``9F02`` (n12).
MAX_AMOUNT: Final = 999_999_999_999

_DIGITS = re.compile(r"[0-9]+")


class CapMode(StrEnum):
    """The four CAP functions (cap-protocol.md §5)."""

    IDENTIFY = "identify"
    """Mode 2: no input; freshness comes only from the ATC."""
    RESPOND = "respond"
    """Mode 3: a challenge of up to 8 digits goes into the UN."""
    SIGN = "sign"
    """Mode 1: challenge or payee reference in the UN, amount and currency per IAF."""
    TDS = "tds"
    """Mode 2 + transaction data signing: up to 10 fields MACed with the AC (§7)."""


# --------------------------------------------------------------------------------------------
# Strict inputs (cap-protocol.md §4)


def _is_digits(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, str) and lo <= len(value) <= hi and _DIGITS.fullmatch(value) is not None


def canonical_challenge(challenge: str) -> str:
    """Canonical 8-digit form of a challenge (cap-protocol.md §4, UN encoding).

    A challenge is 1–8 ASCII digits, right-justified with zeros: ``1234`` and ``00001234``
    are the same challenge. Longer input, whitespace, signs and non-ASCII digits are rejected.

    Raises
    ------
    ValidationError
        ``challenge`` is not 1–8 ASCII digits.

    >>> canonical_challenge("1234")
    '00001234'
    >>> canonical_challenge("123456789")
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: challenge: expected 1 to 8 ASCII digits, got 9 characters
    """
    if not isinstance(challenge, str):
        raise ValidationError(
            f"challenge: expected a str of 1 to 8 ASCII digits, got {type(challenge).__name__}"
        )
    if not _is_digits(challenge, 1, 8):
        if len(challenge) > 8:
            raise ValidationError(f"challenge: expected 1 to 8 ASCII digits, got {len(challenge)} characters")
        raise ValidationError("challenge: expected 1 to 8 ASCII digits (0-9 only, no spaces or signs)")
    return challenge.rjust(8, "0")


def challenge_to_un(challenge: str) -> bytes:
    """The 4-byte unpredictable number ``9F37`` for a challenge (8 BCD digits).

    >>> challenge_to_un("1234").hex()
    '00001234'
    """
    return bytes.fromhex(canonical_challenge(challenge))


@dataclass(frozen=True, kw_only=True)
class Currency:
    """One ISO 4217 currency: alphabetic code, numeric code (3 digits) and minor-unit exponent."""

    alpha: str
    numeric: str
    exponent: int


# ISO 4217 list one (current codes that have a minor unit), alpha -> (numeric, exponent).
_ISO4217: Final = (
    "AED784-2 AFN971-2 ALL008-2 AMD051-2 AOA973-2 ARS032-2 AUD036-2 AWG533-2 AZN944-2 BAM977-2 "
    "BBD052-2 BDT050-2 BGN975-2 BHD048-3 BIF108-0 BMD060-2 BND096-2 BOB068-2 BOV984-2 BRL986-2 "
    "BSD044-2 BTN064-2 BWP072-2 BYN933-2 BZD084-2 CAD124-2 CDF976-2 CHE947-2 CHF756-2 CHW948-2 "
    "CLF990-4 CLP152-0 CNY156-2 COP170-2 COU970-2 CRC188-2 CUP192-2 CVE132-2 CZK203-2 DJF262-0 "
    "DKK208-2 DOP214-2 DZD012-2 EGP818-2 ERN232-2 ETB230-2 EUR978-2 FJD242-2 FKP238-2 GBP826-2 "
    "GEL981-2 GHS936-2 GIP292-2 GMD270-2 GNF324-0 GTQ320-2 GYD328-2 HKD344-2 HNL340-2 HTG332-2 "
    "HUF348-2 IDR360-2 ILS376-2 INR356-2 IQD368-3 IRR364-2 ISK352-0 JMD388-2 JOD400-3 JPY392-0 "
    "KES404-2 KGS417-2 KHR116-2 KMF174-0 KPW408-2 KRW410-0 KWD414-3 KYD136-2 KZT398-2 LAK418-2 "
    "LBP422-2 LKR144-2 LRD430-2 LSL426-2 LYD434-3 MAD504-2 MDL498-2 MGA969-2 MKD807-2 MMK104-2 "
    "MNT496-2 MOP446-2 MRU929-2 MUR480-2 MVR462-2 MWK454-2 MXN484-2 MXV979-2 MYR458-2 MZN943-2 "
    "NAD516-2 NGN566-2 NIO558-2 NOK578-2 NPR524-2 NZD554-2 OMR512-3 PAB590-2 PEN604-2 PGK598-2 "
    "PHP608-2 PKR586-2 PLN985-2 PYG600-0 QAR634-2 RON946-2 RSD941-2 RUB643-2 RWF646-0 SAR682-2 "
    "SBD090-2 SCR690-2 SDG938-2 SEK752-2 SGD702-2 SHP654-2 SLE925-2 SOS706-2 SRD968-2 SSP728-2 "
    "STN930-2 SVC222-2 SYP760-2 SZL748-2 THB764-2 TJS972-2 TMT934-2 TND788-3 TOP776-2 TRY949-2 "
    "TTD780-2 TWD901-2 TZS834-2 UAH980-2 UGX800-0 USD840-2 USN997-2 UYI940-0 UYU858-2 UYW927-4 "
    "UZS860-2 VED926-2 VES928-2 VND704-0 VUV548-0 WST882-2 XAF950-0 XCD951-2 XCG532-2 XOF952-0 "
    "XPF953-0 YER886-2 ZAR710-2 ZMW967-2 ZWG924-2"
)

#: ISO 4217 currencies by alphabetic code (codes with a minor unit; funds codes included,
#: precious metals and testing codes excluded).
CURRENCIES: Final = MappingProxyType(
    {
        e[:3]: Currency(alpha=e[:3], numeric=e[3:6], exponent=int(e[7:]))
        for e in _ISO4217.split()
    }
)
_BY_NUMERIC: Final = MappingProxyType({c.numeric: c for c in CURRENCIES.values()})


def _currency(code: str) -> Currency:
    if isinstance(code, str) and len(code) == 3 and code.isascii():
        if code.isdigit():
            found = _BY_NUMERIC.get(code)
        elif code.isalpha():
            found = CURRENCIES.get(code.upper())
        else:
            found = None
        if found is not None:
            return found
        if code.isdigit() or code.isalpha():
            raise ValidationError(
                f"currency: {code!r} is not a known ISO 4217 currency (one with minor units, like EUR or 978)"
            )
    raise ValidationError(
        f"currency: expected an ISO 4217 code, 3 letters (EUR) or 3 digits (978), got {code!r}"
    )


def currency_numeric(code: str) -> str:
    """ISO 4217 alphabetic or numeric code → the 3-digit numeric code.

    Raises
    ------
    ValidationError
        Not a current ISO 4217 currency with a minor unit.

    >>> currency_numeric("EUR"), currency_numeric("826"), currency_numeric("jpy")
    ('978', '826', '392')
    """
    return _currency(code).numeric


def currency_exponent(code: str) -> int:
    """Number of minor-unit digits of an ISO 4217 currency.

    >>> currency_exponent("EUR"), currency_exponent("JPY"), currency_exponent("KWD")
    (2, 0, 3)
    """
    return _currency(code).exponent


def parse_amount(value: int | str, currency: str | None = None) -> int:
    """An amount in integer minor units (cap-protocol.md §4, Amount).

    ``value`` is either an ``int`` already in minor units, or a decimal string in major
    units with at most the currency's exponent of decimals (``"15.00"`` EUR → 1500). With no
    currency the exponent is 2 [choice]. Floats are never accepted; the result must lie in
    0..999 999 999 999 (n12).

    Raises
    ------
    ValidationError
        A float, a negative or too large amount, a malformed string, or too many decimals.

    >>> parse_amount(1500), parse_amount("15.00", "EUR"), parse_amount("15.5"), parse_amount("1500", "JPY")
    (1500, 1500, 1550, 1500)
    >>> parse_amount(15.0)
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: amount: expected int minor units or a decimal string, got float
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(
            f"amount: expected int minor units or a decimal string, got {type(value).__name__}"
        )
    exponent = 2 if currency is None else currency_exponent(currency)
    if isinstance(value, int):
        minor = value
    else:
        whole, dot, frac = value.partition(".")
        # digit counts are bounded only by sanity here: a too large amount is told in major units
        if not _is_digits(whole, 1, 1000) or (dot and not _is_digits(frac, 1, 1000)):
            raise ValidationError(
                f"amount: expected digits with an optional '.' and decimals (like 15.00), got {value!r}"
            )
        if len(frac) > exponent:
            raise ValidationError(f"amount: {_decimals_allowed(exponent, currency)}, got {value!r}")
        minor = int(whole) * 10**exponent + int(frac.ljust(exponent, "0") or "0")
        if minor > MAX_AMOUNT:  # said in the user's own terms: major units
            unit = "" if currency is None else f" {_currency(currency).alpha}"
            raise ValidationError(f"amount: at most {major_units(MAX_AMOUNT, exponent)}{unit}, got {value!r}")
    if not 0 <= minor <= MAX_AMOUNT:
        raise ValidationError(f"amount: expected 0..{MAX_AMOUNT} minor units, got {minor}")
    return minor


def _decimals_allowed(exponent: int, currency: str | None) -> str:
    """``"at most 2 decimals for EUR"``, ``"no decimals for JPY"``, ``"at most 1 decimal …"``."""
    whose = f"for {_currency(currency).alpha}" if currency is not None else "without a currency"
    if exponent == 0:
        return f"no decimals {whose}"
    return f"at most {exponent} decimal{'s' if exponent != 1 else ''} {whose}"


def major_units(minor: int, exponent: int) -> str:
    """``minor`` minor units written in major units with ``exponent`` decimals.

    >>> major_units(MAX_AMOUNT, 2), major_units(1500, 0), major_units(5, 3)
    ('9999999999.99', '1500', '0.005')
    """
    if exponent == 0:
        return str(minor)
    whole, frac = divmod(minor, 10**exponent)
    return f"{whole}.{frac:0{exponent}d}"


def validate_tds_fields(fields: Iterable[str], *, option: str | None = None) -> tuple[str, ...]:
    """Check TDS data fields: 1–10 fields, each 1–10 ASCII digits (cap-protocol.md §7).

    ``option`` names the fields as a command line does: ``option="--field"`` reports the
    second field as ``--field #2`` (default: the Python names ``fields`` and ``fields[1]``).

    Raises
    ------
    ValidationError
        Wrong count, a field of the wrong form, or a single ``str`` instead of a sequence.

    >>> validate_tds_fields(["0530026806"])
    ('0530026806',)
    """
    if isinstance(fields, str | bytes):
        raise ValidationError("fields: expected a sequence of digit strings, not a single string")
    try:
        result = tuple(fields)
    except TypeError:
        raise ValidationError("fields: expected a sequence of digit strings") from None
    if not 1 <= len(result) <= 10:
        raise ValidationError(f"{option or 'fields'}: expected 1 to 10 TDS fields, got {len(result)}")
    for i, field in enumerate(result):
        if not _is_digits(field, 1, 10):
            where = f"fields[{i}]" if option is None else f"{option} #{i + 1}"
            raise ValidationError(f"{where}: expected 1 to 10 ASCII digits, got {field!r}")
    return result


# --------------------------------------------------------------------------------------------
# TDS (cap-protocol.md §7)


def tds_message(fields: Sequence[str], *, separator: int = 0xF) -> bytes:
    """The TDS message before MAC padding: field digits joined by a nibble, ``F``-filled to a byte.

    Leading zeros of each field are kept. :func:`tds_mac` adds ISO 9797-1 padding method 2.

    >>> tds_message(["0530026806"]).hex()
    '0530026806'
    >>> tds_message(["12", "345"]).hex().upper()
    '12F345'
    >>> tds_message(["1", "2"]).hex().upper()
    '1F2F'
    """
    checked = validate_tds_fields(fields)
    if not 0 <= separator <= 0xF:
        raise ValidationError("separator: expected one nibble 0..15")
    nibbles = f"{separator:X}".join(checked)
    if len(nibbles) % 2:
        nibbles += "F"
    return bytes.fromhex(nibbles)


def tds_mac(fields: Sequence[str], key: bytes, *, separator: int = 0xF) -> bytes:
    """TDS MAC: ISO 9797-1 MAC algorithm 1 (single DES, padding 2) keyed with the AC (emv-crypto.md §8).

    Parameters
    ----------
    fields:
        1–10 digit strings.
    key:
        The 8-byte AC of the Identify run's first GENERATE AC.

    >>> tds_mac(["0530026806"], bytes.fromhex("9CA5A4CA1651CE31")).hex().upper()
    'D2EC6598EC48C83B'
    """
    if not isinstance(key, bytes) or len(key) != 8:
        raise ValidationError("key: expected the 8-byte application cryptogram")
    # The one function here that needs DES: a reader that computes no TDS code never loads it.
    from capsim.crypto import mac_iso9797_alg1

    return mac_iso9797_alg1(key, tds_message(fields, separator=separator), padding=2)


# --------------------------------------------------------------------------------------------
# The Belgian code function (cap-protocol.md §8 (c)); the IPB function is in capsim.codelayout


def explain_belgian(atc: bytes, ac: bytes, *, ac_name: str = "AC") -> tuple[CodeBit, ...]:
    """Where the 26 bits of the Belgian function's ``v`` come from, before the digit mix (§8 c).

    Indexes refer to ``D = CID ‖ ATC ‖ AC``: AC6 b2–b1, AC7, the ATC low byte, then AC8.

    >>> bits = explain_belgian(bytes.fromhex("0042"), bytes.fromhex("B7F9A572DA74CAFF"))
    >>> sum(b.value << b.position for b in bits) == (0x74CA & 0x3FF) << 16 | 0x42 << 8 | 0xFF
    True
    """
    check_field("atc", atc, 2)
    check_field("ac", ac, 8)
    # (D index, field, field byte, value byte, bits b8..b1 taken)
    sources = [
        (8, ac_name, 6, ac[5], (2, 1)),
        (9, ac_name, 7, ac[6], tuple(range(8, 0, -1))),
        (2, "ATC", 2, atc[1], tuple(range(8, 0, -1))),
        (10, ac_name, 8, ac[7], tuple(range(8, 0, -1))),
    ]
    flat = [(i, f, fb, byte >> (b - 1) & 1, b) for i, f, fb, byte, bits in sources for b in bits]
    return tuple(
        CodeBit(position=len(flat) - 1 - n, data_index=i, field=f, field_byte=fb, bit=b, value=v)
        for n, (i, f, fb, v, b) in enumerate(flat)
    )


def belgian_code(atc: bytes, ac: bytes) -> str:
    """The Belgian code function (cap-protocol.md §8 (c)), always 8 digits.

    ``v = ((AC6‖AC7) & 0x3FF)·2^16 + ATC2·2^8 + AC8``, then the last decimal digit is also
    made the first: ``v = (v + (v mod 10)·10^7) mod 10^8``.

    >>> belgian_code(bytes.fromhex("0042"), bytes.fromhex("B7F9A572DA74CAFF"))
    '43255423'
    """
    check_field("atc", atc, 2)
    check_field("ac", ac, 8)
    v = (((ac[5] << 8) | ac[6]) & 0x3FF) << 16 | atc[1] << 8 | ac[7]
    v = (v + (v % 10) * 10**7) % 10**8
    return f"{v:08d}"


# --------------------------------------------------------------------------------------------
# CDOL data (cap-protocol.md §4)


def _bcd(value: int, nbytes: int) -> bytes:
    return bytes.fromhex(str(value).rjust(2 * nbytes, "0"))


def cdol_values(
    profile: ReaderProfile,
    mode: CapMode,
    *,
    challenge: str | None = None,
    amount: int | None = None,
    currency: str | None = None,
    iaf: bytes = b"",
) -> dict[int, bytes]:
    """The value of every tag a CAP reader knows, for one run (the table of cap-protocol.md §4).

    Also used for the PDOL. ``iaf`` is the card's ``9F55`` (its first byte counts); empty
    means the profile's ``iaf_default``.

    Raises
    ------
    ValidationError
        Inputs that do not fit the mode: a challenge for Identify/TDS, none for Respond, a
        Sign whose IAF asks for an amount (or currency) that is missing.

    >>> from capsim.profiles import get_reader_profile
    >>> v = cdol_values(get_reader_profile("visa-dpa"), CapMode.SIGN, challenge="78901234",
    ...                 amount=123456, iaf=b"\\xa0")
    >>> v[0x9F02].hex(), v[0x5F2A].hex(), v[0x9F37].hex(), v[0x9A].hex()
    ('000000123456', '0000', '78901234', '010101')
    """
    mode = CapMode(mode)
    if not isinstance(iaf, bytes):
        raise ValidationError("iaf: expected bytes")
    iaf0 = (iaf or profile.iaf_default)[0]
    un = bytes(4)
    amount_bytes = bytes(6)
    currency_bytes = bytes(2)
    if mode in (CapMode.IDENTIFY, CapMode.TDS):
        if challenge is not None or amount is not None or currency is not None:
            raise ValidationError(f"challenge/amount/currency: {mode.value} takes no input")
    elif mode is CapMode.RESPOND:
        if challenge is None:
            raise ValidationError("challenge: respond needs a challenge of 1 to 8 digits")
        if amount is not None or currency is not None:
            raise ValidationError("amount/currency: respond takes only a challenge")
        un = challenge_to_un(challenge)
    else:  # SIGN
        if challenge is not None:
            un = challenge_to_un(challenge)
        if currency is not None:
            currency = currency_numeric(currency)
        if amount is not None:
            amount = parse_amount(amount, currency)
        if iaf0 & IAF_AMOUNT:
            if amount is None:
                raise ValidationError("amount: this card's IAF asks for an amount in sign mode")
            amount_bytes = _bcd(amount, 6)
            if not iaf0 & IAF_NO_CURRENCY:
                if currency is None:
                    raise ValidationError("currency: this card's IAF asks for a currency in sign mode")
                currency_bytes = _bcd(int(currency), 2)
    return {
        0x9F02: amount_bytes,
        0x9F03: bytes(6),
        0x9F1A: profile.terminal_country,
        0x95: profile.tvr,
        0x5F2A: currency_bytes,
        0x9A: profile.date,
        0x9C: profile.transaction_type,
        0x9F37: un,
        0x9F35: profile.terminal_type,
        0x9F34: profile.cvm_results,
        0x9F33: profile.terminal_capabilities,
        0x9F45: bytes(2),
        0x9F4C: bytes(8),
        0x91: bytes(10),
    }


def _fill(
    dol: bytes | Sequence[DolEntry], values: Mapping[int, bytes], on_unknown: Callable[[int], None] | None
) -> bytes:
    raw: bytes | tuple[DolEntry, ...]
    if isinstance(dol, bytes | bytearray):
        raw = bytes(dol)
        entries = parse_dol(raw)
    else:
        raw = entries = tuple(dol)
    for entry in entries:
        if entry.tag not in values:
            _log.info("DOL asks for tag %X, unknown to the reader: zero-filled", entry.tag)
            if on_unknown is not None:
                on_unknown(entry.tag)
    return fill_dol(raw, values)  # DOL bytes: fill_dol reuses its cached plan for them


def build_cdol_data(
    cdol: bytes,
    profile: ReaderProfile,
    mode: CapMode,
    *,
    challenge: str | None = None,
    amount: int | str | None = None,
    currency: str | None = None,
    iaf: bytes = b"",
    on_unknown: Callable[[int], None] | None = None,
) -> bytes:
    """CDOL1 data of a CAP run's first GENERATE AC (cap-protocol.md §4).

    Values follow the §4 table; the DOL rules of §2 pad or cut them (n on the left, others
    on the right); tags the reader does not know are zero-filled, logged and passed to
    ``on_unknown``.

    >>> from capsim.profiles import get_reader_profile
    >>> cdol = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
    >>> build_cdol_data(cdol, get_reader_profile("mc-cap"), CapMode.RESPOND, challenge="12345678").hex()
    '0000000000000000000000000000800000000000000000000012345678'
    """
    amount_int = None if amount is None else parse_amount(amount, currency)
    values = cdol_values(
        profile, mode, challenge=challenge, amount=amount_int, currency=currency, iaf=iaf
    )
    return _fill(cdol, values, on_unknown)


def build_cdol2_data(
    cdol2: bytes | Sequence[DolEntry],
    cdol1_values: Mapping[int, bytes],
    profile: ReaderProfile,
    *,
    on_unknown: Callable[[int], None] | None = None,
) -> bytes:
    """CDOL2 data: ``8A`` = the profile's ARC, ``91`` = zeros, the rest as in CDOL1 (§2 step 7).

    ``cdol2`` is the DOL as bytes or already parsed (:func:`capsim.tlv.parse_dol`).

    >>> from capsim.profiles import get_reader_profile
    >>> p = get_reader_profile("mc-cap")
    >>> v = cdol_values(p, CapMode.RESPOND, challenge="12345678")
    >>> build_cdol2_data(bytes.fromhex("8A029F3704"), v, p).hex()
    '5a3312345678'
    """
    values = dict(cdol1_values)
    values[0x8A] = profile.arc
    values[0x91] = bytes(10)
    return _fill(cdol2, values, on_unknown)
