"""Reader profiles: every issuer-specific constant a CAP reader puts on the wire.

A :class:`ReaderProfile` holds the terminal data a bank's own reader sends (transaction
date, TVR, terminal type, CVM results, terminal capabilities, the ARC of the second
GENERATE AC) and the code function it applies (cap-protocol.md §3). The application
cryptogram covers these bytes, so the reader and the verifier must use the *same*
profile object: the verifier imports this module.

Built-in profiles (:data:`READER_PROFILES`): ``mc-cap``, ``visa-dpa`` and ``be-payment``.

>>> p = get_reader_profile("mc-cap")
>>> p.date.hex(), p.tvr.hex(), p.arc.hex()
('000000', '8000000000', '5a33')
>>> get_reader_profile("visa-dpa").date.hex()
'010101'
>>> ipb = fallback_ipb("gemalto-softcap-default")
>>> len(ipb), int.from_bytes(ipb, "big").bit_count()
(21, 24)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from capsim.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from capsim.apdu.builders import PSE_NAME

__all__ = [
    "AID_BANCONTACT",
    "AID_MAESTRO",
    "AID_MASTERCARD_CAP",
    "AID_POSTFINANCE_ID",
    "AID_VISA",
    "AID_VISA_DPA",
    "AID_VISA_ELECTRON",
    "DEFAULT_READER_PROFILE",
    "FALLBACK_IPBS",
    "PSE_NAME",
    "READER_PROFILES",
    "CodeFunction",
    "NoIpbFallback",
    "ReaderProfile",
    "default_reader_profile",
    "fallback_ipb",
    "get_reader_profile",
    "profile_for_aid",
]


def __getattr__(name: str) -> Any:
    """``PSE_NAME`` (the Payment System Environment name, cap-protocol.md §1, discovery) is the
    APDU builders' constant, re-exported here and imported on first use: the profiles' names
    (``--reader-profile`` and its help) do without the APDU layer."""
    if name != "PSE_NAME":
        raise AttributeError(f"module 'capsim.profiles' has no attribute {name!r}")
    from capsim.apdu.builders import PSE_NAME

    return PSE_NAME


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

AID_MASTERCARD_CAP: Final = bytes.fromhex("A0000000048002")
AID_VISA_DPA: Final = bytes.fromhex("A0000000038002")
AID_POSTFINANCE_ID: Final = bytes.fromhex("A0000001118002")
AID_BANCONTACT: Final = bytes.fromhex("D056000666111010")
AID_MAESTRO: Final = bytes.fromhex("A0000000043060")
AID_VISA: Final = bytes.fromhex("A0000000031010")
AID_VISA_ELECTRON: Final = bytes.fromhex("A0000000032010")


class CodeFunction(StrEnum):
    """How a GENERATE AC response becomes the displayed code (cap-protocol.md §6, §8)."""

    IPB = "ipb"
    """Mask the data string with the card's IPB (§6)."""
    BELGIAN = "belgian"
    """The Belgian function of §8 (c)."""


class NoIpbFallback(StrEnum):
    """What a reader does with a card that carries no ``9F56`` IPB (cap-protocol.md §8)."""

    ERROR = "error"
    """Raise :class:`~capsim.errors.UnknownIssuerProfile` (the default)."""
    EMVCAP_VISA_DEFAULT = "emvcap-visa-default"
    """The 33-bit IPB of §8 (a); suspect, it can give 9–10 digit codes."""
    GEMALTO_SOFTCAP_DEFAULT = "gemalto-softcap-default"
    """The 24-bit IPB of §8 (b)."""
    BELGIAN = "belgian"
    """The Belgian function of §8 (c)."""


#: Named fallback IPBs of cap-protocol.md §8 (a) and (b). The Belgian fallback is a function,
#: :func:`capsim.cap.belgian_code`, not a bitmap.
FALLBACK_IPBS: Final = MappingProxyType(
    {
        NoIpbFallback.EMVCAP_VISA_DEFAULT: bytes.fromhex("0000FFFFFF0000000000000000000020B938"),
        NoIpbFallback.GEMALTO_SOFTCAP_DEFAULT: bytes.fromhex("0000FFFFFF000000000000" + "00" * 10),
    }
)


def fallback_ipb(name: str) -> bytes:
    """Return the fallback IPB named ``name`` (cap-protocol.md §8 (a) or (b)).

    Raises
    ------
    ValidationError
        ``name`` is not ``emvcap-visa-default`` or ``gemalto-softcap-default``.

    >>> len(fallback_ipb("emvcap-visa-default"))
    18
    """
    try:
        return FALLBACK_IPBS[NoIpbFallback(name)]
    except (ValueError, KeyError):
        raise ValidationError(
            f"name: expected one of {', '.join(sorted(FALLBACK_IPBS))}, got {name!r}"
        ) from None


def _check_len(name: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ConfigError(f"ReaderProfile.{name}: expected {length} bytes, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ReaderProfile:
    """Every constant of one reader family (cap-protocol.md §3).

    Attributes
    ----------
    name:
        Registry name (``mc-cap``).
    aids:
        Application identifiers in preference order.
    date:
        ``9A`` transaction date sent in every GENERATE AC (n6, 3 bytes).
    tvr:
        ``95`` terminal verification results (5 bytes).
    terminal_type:
        ``9F35`` (1 byte).
    cvm_results:
        ``9F34`` (3 bytes).
    terminal_capabilities:
        ``9F33`` (3 bytes).
    arc:
        ``8A`` authorisation response code put into CDOL2 (2 bytes).
    terminal_country:
        ``9F1A`` (n3, 2 bytes; ``0000`` for every known reader).
    transaction_type:
        ``9C`` (n2, 1 byte).
    code_function:
        The code function for cards that carry an IPB.
    belgian_aids:
        Applications for which the Belgian function is always used, IPB or not.
    send_aac:
        Send GENERATE AC #2 (AAC) to close the transaction, as real readers do.
    display_digits:
        Width of the displayed code; shorter codes are left-padded with zeros.
    psn_prefix_digits:
        0 (off), or 1–3: prefix the code with the PSN in decimal (§6 step 5 (b)).
    no_ipb:
        What to do when the card has no IPB (:class:`NoIpbFallback`).
    iaf_default:
        The IAF assumed when the card has no ``9F55`` (a warning is recorded).
    allow_short_data:
        Treat IPB bits beyond the end of the data string as 0 (with a warning) instead of raising.
    tds_separator:
        Nibble between TDS fields (``0xF``).
    un_transform:
        Name of a challenge-to-UN transform; only ``identity`` is implemented.
    pin_try_limit:
        The card's usual try limit: fewer tries left than this gives a warning.
    """

    name: str
    aids: tuple[bytes, ...]
    date: bytes = b"\x00\x00\x00"
    tvr: bytes = bytes.fromhex("8000000000")
    terminal_type: bytes = b"\x34"
    cvm_results: bytes = bytes.fromhex("010002")
    terminal_capabilities: bytes = bytes.fromhex("208000")
    arc: bytes = b"Z3"
    terminal_country: bytes = b"\x00\x00"
    transaction_type: bytes = b"\x00"
    code_function: CodeFunction = CodeFunction.IPB
    belgian_aids: tuple[bytes, ...] = ()
    send_aac: bool = True
    display_digits: int = 8
    psn_prefix_digits: int = 0
    no_ipb: NoIpbFallback = NoIpbFallback.ERROR
    iaf_default: bytes = b"\x00"
    allow_short_data: bool = False
    tds_separator: int = 0xF
    un_transform: str = "identity"
    pin_try_limit: int = 3

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("ReaderProfile.name: expected a non-empty name")
        if not self.aids:
            raise ConfigError("ReaderProfile.aids: expected at least one AID")
        for aid in (*self.aids, *self.belgian_aids):
            if not isinstance(aid, bytes) or not 5 <= len(aid) <= 16:
                raise ConfigError(f"ReaderProfile.aids: expected AIDs of 5..16 bytes, got {aid!r}")
        _check_len("date", self.date, 3)
        _check_len("tvr", self.tvr, 5)
        _check_len("terminal_type", self.terminal_type, 1)
        _check_len("cvm_results", self.cvm_results, 3)
        _check_len("terminal_capabilities", self.terminal_capabilities, 3)
        _check_len("arc", self.arc, 2)
        _check_len("terminal_country", self.terminal_country, 2)
        _check_len("transaction_type", self.transaction_type, 1)
        if not isinstance(self.iaf_default, bytes) or not self.iaf_default:
            raise ConfigError("ReaderProfile.iaf_default: expected at least one byte")
        if not 1 <= self.display_digits <= 20:
            raise ConfigError("ReaderProfile.display_digits: expected 1..20")
        if not 0 <= self.psn_prefix_digits <= 3:
            raise ConfigError("ReaderProfile.psn_prefix_digits: expected 0..3")
        if not 0 <= self.tds_separator <= 0xF:
            raise ConfigError("ReaderProfile.tds_separator: expected one nibble 0..15")
        if self.un_transform != "identity":
            raise ConfigError(
                f"ReaderProfile.un_transform: only 'identity' is implemented, got {self.un_transform!r}"
            )
        if not 1 <= self.pin_try_limit <= 15:
            raise ConfigError("ReaderProfile.pin_try_limit: expected 1..15")
        # Normalise enum fields given as plain strings.
        object.__setattr__(self, "code_function", CodeFunction(self.code_function))
        object.__setattr__(self, "no_ipb", NoIpbFallback(self.no_ipb))

    def code_function_for(self, aid: bytes, *, has_ipb: bool) -> CodeFunction:
        """The code function this reader applies to application ``aid``.

        The Belgian function is used for :attr:`belgian_aids`, for cards without an IPB when
        :attr:`no_ipb` names it, and when :attr:`code_function` says so (cap-protocol.md §3).

        >>> be = get_reader_profile("be-payment")
        >>> be.code_function_for(AID_BANCONTACT, has_ipb=True).value
        'belgian'
        >>> be.code_function_for(AID_MAESTRO, has_ipb=True).value
        'ipb'
        >>> be.code_function_for(AID_MAESTRO, has_ipb=False).value
        'belgian'
        """
        if any(aid.startswith(b) for b in self.belgian_aids):
            return CodeFunction.BELGIAN
        if not has_ipb and self.no_ipb is NoIpbFallback.BELGIAN:
            return CodeFunction.BELGIAN
        return self.code_function

    def replace(self, **changes: object) -> ReaderProfile:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_MC_CAP = ReaderProfile(name="mc-cap", aids=(AID_MASTERCARD_CAP,))
_VISA_DPA = ReaderProfile(name="visa-dpa", aids=(AID_VISA_DPA,), date=bytes.fromhex("010101"))
_BE_PAYMENT = ReaderProfile(
    name="be-payment",
    aids=(AID_BANCONTACT, AID_MAESTRO, AID_VISA, AID_VISA_ELECTRON),
    tvr=bytes.fromhex("8000000800"),
    terminal_type=b"\x37",
    cvm_results=b"\x00\x00\x00",
    arc=b"Z1",
    belgian_aids=(AID_BANCONTACT,),
    no_ipb=NoIpbFallback.BELGIAN,
)

#: Built-in profiles by name, in automatic-selection order: CAP and DPA applications first,
#: then the payment applications, as Belgian readers do (cap-protocol.md §3).
READER_PROFILES: Final = MappingProxyType(
    {p.name: p for p in (_MC_CAP, _VISA_DPA, _BE_PAYMENT)}
)


def get_reader_profile(name: str) -> ReaderProfile:
    """Return the built-in reader profile called ``name``.

    Raises
    ------
    ValidationError
        Unknown name; the message lists the known ones.

    >>> get_reader_profile("be-payment").terminal_type.hex()
    '37'
    """
    try:
        return READER_PROFILES[name]
    except (KeyError, TypeError):
        raise ValidationError(
            f"profile: expected one of {', '.join(READER_PROFILES)}, got {name!r}"
        ) from None


#: The reader profile used for an application no built-in profile lists (cap-protocol.md §3).
DEFAULT_READER_PROFILE: Final = "mc-cap"


def profile_for_aid(aid: bytes) -> ReaderProfile | None:
    """The first built-in profile whose AID list matches ``aid`` (exactly or as a prefix).

    >>> profile_for_aid(bytes.fromhex("A0000000038002")).name
    'visa-dpa'
    >>> profile_for_aid(bytes.fromhex("A0000000041010")) is None
    True
    """
    for profile in READER_PROFILES.values():
        if any(aid.startswith(a) for a in profile.aids):
            return profile
    return None


def default_reader_profile(aid: bytes) -> ReaderProfile:
    """The reader profile a reader uses for application ``aid`` when none is named.

    The first profile in :data:`READER_PROFILES` whose AID list matches (:func:`profile_for_aid`),
    else :data:`DEFAULT_READER_PROFILE`. A card template names its reader profile
    (:attr:`capsim.cards.CardProfile.reader_profile`); a card file without that field gets this
    one, and tests/cards/test_profile.py checks that every built-in template names exactly it.

    >>> default_reader_profile(bytes.fromhex("A0000000048002")).name
    'mc-cap'
    >>> default_reader_profile(bytes.fromhex("A0000000999999")).name
    'mc-cap'
    """
    return profile_for_aid(aid) or READER_PROFILES[DEFAULT_READER_PROFILE]
