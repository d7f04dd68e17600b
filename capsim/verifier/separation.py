"""Domain separation: the verifier never issues an operation that a lesser CAP mode can satisfy.

The card cannot tell the CAP modes apart; only the bytes a reader sends differ
(cap-protocol.md §5). With amount 0 the Sign cryptogram of a card that signs the amount but
not the currency equals the Respond one, and with reference ``0`` also the Identify one: a
login code would then approve a payment ("mode confusion", Drimer–Murdoch–Anderson,
"Optimised to Fail", FC 2009; Mastercard's CAP application note of 2010 added ___domain
separation against it). This module decides, as pure functions over the credential's
profile and the operation's bound data, whether that can happen, and which operations the
verifier refuses to issue because of it.

Theory of operation
-------------------
1. **Cryptogram input.** The card's AC is a MAC over the CDOL1 data (with AIP, ATC and
   IAD); the card reads the UN it may need for its session key out of that data too. Two
   runs with equal CDOL1 data at the same ATC therefore give the same AC and, through the
   same IPB, the same code. A TDS code is computed over the AC of an Identify run *and* the
   TDS message (cap-protocol.md §7): its input is the pair. :class:`CryptogramInput` is
   ``(CDOL1 data, TDS message or None)``; :func:`cryptogram_input` builds it with
   :func:`capsim.verifier.engine.cdol_data_for`, i.e. exactly what the verifier recomputes.
2. **What a reader can be made to produce** (:class:`capsim.reader.CapSession`'s input rules
   and :func:`capsim.cap.cdol_values`), for one card:

   - Identify: one input, UN 0 and zero amounts, no TDS message;
   - Respond: any challenge of 1–8 digits, ``0`` (UN ``00000000``) included;
   - Sign: any challenge, or none (UN 0); when the IAF sets b8, any amount
     0 … 999 999 999 999 (0 included: :func:`capsim.cap.parse_amount` and every reader
     profile allow it) and, unless b6 is set, any ISO 4217 currency; with b8 clear the
     reader ignores amount and currency;
   - TDS: the Identify CDOL1 data with any 1–10 fields of 1–10 digits.

3. **Deciding** (:func:`producible`). A mode's free inputs reach the card only through its
   free tags: ``9F37`` for Respond and Sign, ``9F02``/``5F2A`` for Sign as the IAF says. The
   card's CDOL1 says where and at what length they sit. The would-be inputs are read back
   out of the operation's own bytes at those places (the longest entry of each tag; ``b``
   values are left-justified, ``n`` values right-justified, cap-protocol.md §2), a tag the
   CDOL does not ask for takes any value, and the other mode's CDOL1 data is recomputed
   from that witness and compared. Bytes that no reader input can give (not BCD, no
   ISO 4217 currency, too large an amount) mean there is no witness. Because every other
   byte is fixed by the mode and the reader profile, a witness exists exactly when the
   recomputation matches: the verdict is exact for any CDOL1 and IAF, not a list of known
   card types. A TDS message is never part of a non-TDS input, so TDS collides with no
   other mode.
4. **Refusal** (:func:`separation_refusal`). The modes are ranked by what a code states:
   Identify (nothing) < Respond (a number was shown) < Sign and TDS (a transaction). An
   operation is refused when a mode of *lower* rank can produce its cryptogram input: a code
   the cardholder made for less (a login) would authorise more (a payment). Refused:

   - Sign whose input equals Identify's or a Respond's: amount 0 on a card whose IAF signs
     the amount but not the currency (any reference; reference 0 equals Identify); any Sign
     on a card whose IAF or CDOL1 signs no amount (Sign *is* Respond there: use TDS);
   - Respond whose input equals Identify's: challenge ``00000000`` (the verifier never
     draws it), or any Respond on a card whose CDOL1 has no ``9F37``.

   Allowed, though their inputs collide upward:

   - Identify: Respond ``0`` (and Sign with no reference and amount 0 where the currency
     is not signed) always reproduce it. An Identify operation binds nothing, so a code the
     cardholder made for more grants no more than the login it is taken for; refusing would
     end Identify on every card.
   - Respond with a challenge equal to a Sign(challenge, 0.00) input (every challenge, on
     a card that signs the amount but not the currency). The reader lets a cardholder sign
     0.00, so this cannot be excluded on the reader side, and refusing would end Respond on
     such cards. The verifier itself never asks for a Sign that a Respond code satisfies
     (first rule), so a cardholder asked to sign 0.00 is asked by someone else, who could
     as well ask for a Respond over that challenge: accepting the code grants nothing a
     Respond code would not. The Respond challenge is still fresh and single-use (V9).

5. A Sign with a positive amount is never refused on a card whose CDOL1 asks for ``9F02``
   and whose IAF sets b8: no other mode puts a non-zero amount there. Every built-in card
   template is such a card (IAF ``80``, ``A0`` or ``C0``).
6. Nothing here reads a store, a clock or a key.

>>> from capsim.cards import builtin_profile
>>> from capsim.verifier.engine import MatchRequest
>>> from capsim.verifier.service import credential_profile_from_card
>>> natwest = credential_profile_from_card(builtin_profile("natwest"))  # IAF A0
>>> sign0 = MatchRequest(mode=OperationMode.SIGN, challenge="00000000", amount_minor=0)
>>> [m.value for m in colliding_modes(natwest, sign0)]
['identify', 'respond']
>>> print(separation_refusal(natwest, sign0))  # doctest: +ELLIPSIS
operation: its cryptogram input equals an Identify code's on this card (___domain separation; ...)
>>> sign1 = MatchRequest(mode=OperationMode.SIGN, challenge="00000000", amount_minor=1)
>>> separation_refusal(natwest, sign1) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from capsim.cap import CURRENCIES, MAX_AMOUNT, tds_message, validate_tds_fields
from capsim.errors import ValidationError
from capsim.tlv import DolEntry, fill_dol, parse_dol
from capsim.verifier.engine import MatchRequest, cdol_data_for
from capsim.verifier.model import CredentialProfile, OperationMode

__all__ = [
    "MODE_RANK",
    "CryptogramInput",
    "check_operation",
    "colliding_modes",
    "cryptogram_input",
    "producible",
    "separation_refusal",
    "witness",
]

#: What a code of each mode states (module docstring, step 4); a higher rank binds more.
MODE_RANK: Final = MappingProxyType(
    {
        OperationMode.IDENTIFY: 0,
        OperationMode.RESPOND: 1,
        OperationMode.SIGN: 2,
        OperationMode.TDS: 2,
    }
)

_ORDER: Final = (OperationMode.IDENTIFY, OperationMode.RESPOND, OperationMode.SIGN, OperationMode.TDS)
_UN: Final = 0x9F37
_AMOUNT: Final = 0x9F02
_CURRENCY: Final = 0x5F2A
_IAF_AMOUNT: Final = 0x80
_IAF_NO_CURRENCY: Final = 0x20
_DIGITS: Final = frozenset("0123456789")
_ANY_CURRENCY: Final = "978"  # a currency the card never sees: any one will do
_BY_NUMERIC: Final = tuple(sorted(c.numeric for c in CURRENCIES.values()))


@dataclass(frozen=True, kw_only=True, slots=True)
class CryptogramInput:
    """What a code is computed over (module docstring, step 1).

    Attributes
    ----------
    cdol1:
        The CDOL1 data of the first GENERATE AC.
    tds_message:
        The TDS message MACed with the AC (TDS only), else ``None``.
    """

    cdol1: bytes
    tds_message: bytes | None = None


def cryptogram_input(profile: CredentialProfile, request: MatchRequest) -> CryptogramInput:
    """The :class:`CryptogramInput` of ``request`` on a card with ``profile``.

    Raises
    ------
    ValidationError
        The request does not fit its mode or the card (e.g. a Respond without challenge).
    """
    mode = OperationMode(request.mode)
    if mode is OperationMode.TDS:
        return CryptogramInput(
            cdol1=cdol_data_for(profile, MatchRequest(mode=mode)),
            tds_message=tds_message(request.tds_fields),
        )
    return CryptogramInput(cdol1=cdol_data_for(profile, request))


# ------------------------------------------------------------------------------------------------
# Witnesses: the other mode's inputs, read back out of the bytes (step 3)


def _longest(profile: CredentialProfile) -> dict[int, tuple[int, int]]:
    """Tag → (offset, length) of its longest entry in the card's CDOL1."""
    out: dict[int, tuple[int, int]] = {}
    offset = 0
    for entry in parse_dol(profile.cdol1):
        if entry.tag not in out or entry.length > out[entry.tag][1]:
            out[entry.tag] = (offset, entry.length)
        offset += entry.length
    return out


def _digits(raw: bytes) -> str | None:
    text = raw.hex()
    return text if set(text) <= _DIGITS else None


def _challenge_at(data: bytes, where: tuple[int, int] | None) -> str | None:
    """The challenge whose UN (``b``, left-justified) gives these bytes."""
    if where is None:
        return "00000000"
    offset, length = where
    return _digits((data[offset : offset + min(length, 4)] + bytes(4))[:4])


def _amount_at(data: bytes, where: tuple[int, int] | None) -> int | None:
    """The amount whose ``9F02`` (``n``, right-justified) gives these bytes."""
    if where is None:
        return 0
    offset, length = where
    raw = data[offset : offset + length][-6:]
    text = _digits(raw)
    if text is None:
        return None
    value = int(text or "0")
    return value if value <= MAX_AMOUNT else None


@lru_cache(maxsize=16)
def _currency_fields(length: int) -> dict[bytes, str]:
    """``5F2A`` bytes at a DOL length → the first ISO 4217 numeric code that gives them."""
    entry = (DolEntry(_CURRENCY, length),)
    out: dict[bytes, str] = {}
    for numeric in _BY_NUMERIC:
        out.setdefault(fill_dol(entry, {_CURRENCY: bytes.fromhex("0" + numeric)}), numeric)
    return out


def _currency_at(data: bytes, where: tuple[int, int] | None) -> str | None:
    """An ISO 4217 numeric code whose ``5F2A`` gives these bytes (``None``: none does)."""
    if where is None:
        return _ANY_CURRENCY
    offset, length = where
    return _currency_fields(length).get(data[offset : offset + length])


def _fields_of(message: bytes) -> tuple[str, ...] | None:
    """The TDS fields whose message is ``message`` (separator ``F``), if any.

    Fields never contain ``F``, so a trailing ``F`` nibble is the fill of an odd count.
    """
    text = message.hex().upper()
    if text.endswith("F"):
        text = text[:-1]
    try:
        fields = validate_tds_fields(text.split("F"))
    except ValidationError:
        return None
    return fields if tds_message(fields) == message else None


def witness(profile: CredentialProfile, mode: OperationMode, data: CryptogramInput) -> MatchRequest | None:
    """A ``mode`` request a reader accepts whose cryptogram input is ``data``, or ``None``.

    The inputs are read back out of ``data`` where the card's CDOL1 puts the mode's free
    tags, then the input is recomputed and compared (module docstring, step 3).
    """
    mode = OperationMode(mode)
    if (data.tds_message is not None) != (mode is OperationMode.TDS):
        return None
    where = _longest(profile)
    candidate: MatchRequest | None
    if mode is OperationMode.IDENTIFY:
        candidate = MatchRequest(mode=mode)
    elif mode is OperationMode.TDS:
        assert data.tds_message is not None
        fields = _fields_of(data.tds_message)
        candidate = None if fields is None else MatchRequest(mode=mode, tds_fields=fields)
    else:
        candidate = _un_witness(profile, mode, data.cdol1, where)
    if candidate is None:
        return None
    # public reader input (CDOL1 data, TDS digits), not a code or a MAC: plain equality
    recomputed = cryptogram_input(profile, candidate)
    return candidate if recomputed == data else None


def _un_witness(
    profile: CredentialProfile, mode: OperationMode, cdol1: bytes, where: dict[int, tuple[int, int]]
) -> MatchRequest | None:
    """The Respond or Sign request read back out of CDOL1 data (not yet checked)."""
    challenge = _challenge_at(cdol1, where.get(_UN))
    if challenge is None:
        return None
    if mode is OperationMode.RESPOND:
        return MatchRequest(mode=mode, challenge=challenge)
    iaf0 = profile.iaf[0] if profile.iaf else 0
    if not iaf0 & _IAF_AMOUNT:
        return MatchRequest(mode=mode, challenge=challenge)
    amount = _amount_at(cdol1, where.get(_AMOUNT))
    currency = None if iaf0 & _IAF_NO_CURRENCY else _currency_at(cdol1, where.get(_CURRENCY))
    if amount is None or (currency is None and not iaf0 & _IAF_NO_CURRENCY):
        return None
    return MatchRequest(mode=mode, challenge=challenge, amount_minor=amount, currency=currency)


def producible(profile: CredentialProfile, mode: OperationMode, data: CryptogramInput) -> bool:
    """Can a reader in ``mode`` be made to produce the cryptogram input ``data`` on this card?"""
    return witness(profile, mode, data) is not None


def colliding_modes(profile: CredentialProfile, request: MatchRequest) -> tuple[OperationMode, ...]:
    """The *other* modes whose codes can equal a code for ``request``, lowest rank first."""
    own = OperationMode(request.mode)
    data = cryptogram_input(profile, request)
    return tuple(m for m in _ORDER if m is not own and producible(profile, m, data))


# ------------------------------------------------------------------------------------------------
# The refusal (step 4)


def _hint(profile: CredentialProfile, request: MatchRequest) -> str:
    if request.mode is not OperationMode.SIGN:
        if _UN not in _longest(profile):
            return "; this card does not sign the challenge"
        return "" if request.challenge.strip("0") else "; use a non-zero challenge"
    iaf0 = profile.iaf[0] if profile.iaf else 0
    if not iaf0 & _IAF_AMOUNT or _AMOUNT not in _longest(profile):
        return "; this card signs no amount: use TDS"
    if not request.amount_minor:
        return "; sign a non-zero amount"
    return ""


def separation_refusal(profile: CredentialProfile, request: MatchRequest) -> str | None:
    """Why issuing ``request`` would break ___domain separation, or ``None`` when it does not.

    An operation is refused when a mode of lower :data:`MODE_RANK` can produce its
    cryptogram input (module docstring, step 4). The message names the lowest such mode.
    """
    rank = MODE_RANK[OperationMode(request.mode)]
    lower = [m for m in colliding_modes(profile, request) if MODE_RANK[m] < rank]
    if not lower:
        return None
    name = lower[0].value.capitalize()
    article = "an" if name[0] in "AEIOU" else "a"
    return (
        f"operation: its cryptogram input equals {article} {name} code's on this card "
        f"(___domain separation{_hint(profile, request)})"
    )


def check_operation(profile: CredentialProfile, request: MatchRequest) -> None:
    """Raise :class:`ValidationError` when :func:`separation_refusal` refuses ``request``."""
    reason = separation_refusal(profile, request)
    if reason is not None:
        raise ValidationError(reason)
