"""The pure CAP matcher: candidates, recomputation and the one constant-time comparison.

Theory of operation (cap-protocol.md §6, §10; verifier.md V1–V12)
------------------------------------------------------------------
1. :func:`parse_code` checks the presented code's form before anything else (V7): exactly
   ``display_digits`` ASCII digits (or fewer when the profile sets ``accept_unpadded``),
   read without ``int()`` or ``str.isdigit()``; at most 16 characters are examined (V42).
2. The code value is the IPB-selected bits of the data string
   ``D = [PSN] ‖ CID ‖ ATC(2) ‖ AC(8) ‖ IAD``, most significant first
   (:mod:`capsim.codelayout`, the one definition the reader uses too). Its bits therefore
   split into runs (:class:`~capsim.codelayout.CodeLayout`): PSN, CID, ATC, AC (or TDS MAC)
   and IAD bits. The PSN, CID, ATC and IAD runs are read back from the presented code and used
   only as *filters*: only cards whose PSN bits match (V11), only ATCs in
   ``(last_atc, last_atc + W]`` whose disclosed bits match (V4), and only IAD variants whose
   visible bits match (V10) are evaluated. The evaluations per call are therefore at most
   (matching ATCs) × V.
3. For each remaining candidate (card, ATC, IAD variant), in a fixed order (cards by
   credential id, ATCs ascending, variants most likely first), the AC is recomputed through
   the :class:`~capsim.verifier.provider.CryptogramProvider` (CID fixed at ``80``, the CDOL1
   data rebuilt from the stored operation, cap-protocol.md §10); for TDS the MAC over the
   stored fields is keyed with that AC (§7). The expected code is the reader's code of the
   candidate's own data string ``[PSN] ‖ 80 ‖ ATC ‖ AC ‖ IAD`` (:meth:`CodeLayout.code`):
   nothing of the presented code goes into it. The whole displayed text is compared with
   :func:`_codes_equal`, the only comparison of codes in :mod:`capsim.verifier` (V6).
4. Every candidate is evaluated even after a match, so the time taken does not reveal which
   candidate matched (verifier.md §4, "Timing"). The first match in the fixed order wins.
5. Nothing here reads a clock, draws randomness or touches a store; the instrumentation
   counter is the ``evaluations`` field of :class:`MatchResult`.

>>> parse_code("04822527").value
4822527
>>> parse_code("0482252٣")
Traceback (most recent call last):
...
capsim.errors.ValidationError: code: expected exactly 8 ASCII digits
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from capsim.codelayout import CodeLayout, Field, candidate_atcs, code_layout
from capsim.crypto import TreeParams, mac_iso9797_alg1
from capsim.errors import CodeOverflowError, ValidationError
from capsim.verifier.model import CredentialProfile, OperationMode
from capsim.verifier.provider import CryptogramProvider

__all__ = [
    "MAX_CODE_CHARS",
    "CardCandidate",
    "CodeLayout",
    "Match",
    "MatchRequest",
    "MatchResult",
    "PresentedCode",
    "candidate_atcs",
    "cdol_data_for",
    "code_layout",
    "expected_code",
    "match",
    "pad_evaluate",
    "parse_code",
]

#: Longest input examined by :func:`parse_code` (V42).
MAX_CODE_CHARS: Final = 16
_MAX_ATC: Final = 0xFFFF
_CID_ARQC: Final = b"\x80"


# ------------------------------------------------------------------------------------------------
# The one comparison (V6)


def _codes_equal(expected: bytes, presented: bytes) -> bool:
    """THE comparison of an expected and a presented code: constant time, equal-length ASCII."""
    return hmac.compare_digest(expected, presented)


# ------------------------------------------------------------------------------------------------
# Presented codes (V7)


@dataclass(frozen=True, kw_only=True, slots=True)
class PresentedCode:
    """A presented code after its format check: zero-padded ASCII bytes and integer value."""

    text: bytes
    value: int

    def __repr__(self) -> str:  # the code itself never shows in a repr (V38)
        return "PresentedCode(<redacted>)"


def parse_code(code: object, *, digits: int = 8, accept_unpadded: bool = False) -> PresentedCode:
    """Check a presented code's form (verifier.md V7, V42).

    Parameters
    ----------
    code:
        What the user typed: a ``str`` of exactly ``digits`` ASCII digits ``0``–``9``.
    digits:
        The profile's ``display_digits`` (8).
    accept_unpadded:
        Also accept 1..``digits`` digits (leading zeros dropped); off by default.

    Raises
    ------
    ValidationError
        Anything else: Unicode digits, whitespace, signs, wrong length, non-``str``.
    """
    if not isinstance(code, str):
        raise ValidationError("code: expected a str of ASCII digits")
    if len(code) > MAX_CODE_CHARS:
        raise ValidationError(f"code: expected exactly {digits} ASCII digits")
    lo = 1 if accept_unpadded else digits
    if not lo <= len(code) <= digits:
        raise ValidationError(f"code: expected exactly {digits} ASCII digits")
    value = 0
    for ch in code:
        o = ord(ch)
        if not 0x30 <= o <= 0x39:
            raise ValidationError(f"code: expected exactly {digits} ASCII digits")
        value = value * 10 + (o - 0x30)
    text = code.rjust(digits, "0").encode("ascii")
    return PresentedCode(text=text, value=value)


# ------------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True, kw_only=True, slots=True)
class CardCandidate:
    """One card to try: its credential id, key reference, PSN, profile and ``last_atc``.

    ``variants`` limits the IAD variants tried to the most likely ones (``None``: all).
    """

    credential_id: str
    key_ref: str
    psn: str
    profile: CredentialProfile
    last_atc: int
    variants: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MatchRequest:
    """The bound data of the operation a code is checked against (from the store, V8)."""

    mode: OperationMode
    challenge: str = ""
    amount_minor: int | None = None
    currency: str | None = None
    tds_fields: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Match:
    """The matched candidate."""

    credential_id: str
    atc: int
    variant: int


@dataclass(frozen=True, kw_only=True, slots=True)
class MatchResult:
    """Decision of :func:`match`: the first match in the fixed order (or ``None``), every match
    (resync needs them all) and the evaluations spent (V4's instrumentation counter)."""

    match: Match | None
    evaluations: int
    matches: tuple[Match, ...] = ()


@lru_cache(maxsize=4096)
def _cdol_cached(
    *,
    cdol1: bytes,
    reader_profile: str,
    iaf: bytes,
    mode: OperationMode,
    challenge: str,
    amount: int | None,
    currency: str | None,
) -> bytes:
    from capsim.cap import build_cdol_data
    from capsim.profiles import get_reader_profile

    kwargs: dict[str, object] = {}
    if mode in (OperationMode.RESPOND, OperationMode.SIGN) and challenge:
        kwargs["challenge"] = challenge
    if mode is OperationMode.SIGN:
        iaf0 = iaf[0] if iaf else 0
        if iaf0 & 0x80:
            kwargs["amount"] = amount if amount is not None else 0
            if not iaf0 & 0x20:
                kwargs["currency"] = currency
    return build_cdol_data(
        cdol1,
        get_reader_profile(reader_profile),
        mode,
        iaf=iaf,
        **kwargs,  # type: ignore[arg-type]
    )


def cdol_data_for(profile: CredentialProfile, request: MatchRequest) -> bytes:
    """CDOL1 data the issuer's reader sends for this operation (cap-protocol.md §4, §10 step 1)."""
    return _cdol_cached(
        cdol1=profile.cdol1,
        reader_profile=profile.reader_profile,
        iaf=profile.iaf,
        mode=OperationMode(request.mode),
        challenge=request.challenge,
        amount=request.amount_minor,
        currency=request.currency,
    )


@lru_cache(maxsize=1024)
def _visible_iad_bits(
    ipb: bytes, psn_in_data: bool, iad_variants: tuple[bytes, ...]
) -> tuple[tuple[int, bytes, int], ...]:
    """``(index, iad, IPB-selected IAD bits)`` of each variant (cached per profile)."""
    layout = code_layout(ipb, psn_in_data)
    return tuple((i, iad, layout.select(Field.IAD, iad)) for i, iad in enumerate(iad_variants))


def _tree(profile: CredentialProfile) -> TreeParams | None:
    if profile.session_key_method != "emv2000-tree":
        return None
    return TreeParams(
        branch_factor=profile.tree_branch_factor, height=profile.tree_height, iv=profile.tree_iv
    )


def _psn_byte(psn: str) -> bytes:
    """The PSN as the card holds it (``5F34``, one byte) from its two decimal digits."""
    return bytes(((ord(psn[0]) - 0x30) * 10 + (ord(psn[1]) - 0x30),))


def _head(card: CardCandidate) -> bytes:
    """``[PSN] ‖ CID`` of the card's data string: the part before the ATC (cap-protocol.md §6)."""
    return (_psn_byte(card.psn) if card.profile.psn_in_data else b"") + _CID_ARQC


def _expected_text(layout: CodeLayout, data: bytes, digits: int) -> bytes:
    """The code the card shows for the data string ``data``, as ASCII: computed by
    :meth:`CodeLayout.code`, the reader's own code function. A value wider than the display
    is no code at all (the reader refuses it), so it is the empty text, which matches nothing."""
    try:
        return layout.code(data, digits).encode("ascii")
    except CodeOverflowError:
        return b""


def _tds_block(fields: tuple[str, ...]) -> bytes:
    from capsim.cap import tds_message

    return tds_message(fields)


def expected_code(
    card: CardCandidate, request: MatchRequest, atc: int, variant: int, provider: CryptogramProvider
) -> str:
    """The code the card produces at ``atc`` with IAD variant ``variant`` (for tests and tools):
    the text :func:`match` compares for that candidate (empty when wider than the display)."""
    profile = card.profile
    layout = code_layout(profile.ipb, profile.psn_in_data)
    fn = provider.ac_function(
        card.key_ref, cvn=profile.cvn, method=profile.session_key_method, tree=_tree(profile)
    )
    cdol = cdol_data_for(profile, request)
    un = bytes.fromhex(request.challenge) if request.challenge else bytes(4)
    atc_b = atc.to_bytes(2, "big")
    iad = profile.iad_variants[variant]
    ac = fn(cdol, profile.aip, atc_b, iad, un)
    if request.mode is OperationMode.TDS:
        ac = mac_iso9797_alg1(ac, _tds_block(request.tds_fields), padding=2)
    return _expected_text(layout, _head(card) + atc_b + ac + iad, profile.display_digits).decode("ascii")


def _filter_variants(
    card: CardCandidate, layout: CodeLayout, value: int
) -> list[tuple[int, bytes]]:
    """The card's IAD variants (most likely first, at most ``card.variants``) whose selected
    bits equal the code's IAD run (V10); none when the code's PSN or CID run is not this
    card's (V11) or the code has more bits than this IPB can produce."""
    if value >> layout.total_bits:
        return []
    if layout.psn_bits and layout.bits_of(value, Field.PSN) != layout.select(Field.PSN, _psn_byte(card.psn)):
        return []
    cid_run = layout.select(Field.CID, _CID_ARQC)
    if layout.cid_bits and layout.bits_of(value, Field.CID) != cid_run:
        return []
    profile = card.profile
    visible = _visible_iad_bits(profile.ipb, profile.psn_in_data, profile.iad_variants)[: card.variants]
    want = layout.bits_of(value, Field.IAD)
    return [(i, iad) for i, iad, bits in visible if bits == want]


def match(
    cards: Sequence[CardCandidate],
    code: PresentedCode,
    request: MatchRequest,
    provider: CryptogramProvider,
    *,
    window: int,
) -> MatchResult:
    """Find the candidate that produces ``code`` (module docstring, steps 2–4).

    Parameters
    ----------
    cards:
        The card(s) to try, in a fixed order (one card, or the active cards sharing a PAN).
    code:
        The presented code (:func:`parse_code`).
    request:
        Mode and bound data, taken from the stored operation only (V8).
    provider:
        Key custody; cryptograms are computed through it.
    window:
        W: ATCs ``last_atc + 1 … last_atc + window`` are candidates.
    """
    tds_block = _tds_block(request.tds_fields) if request.mode is OperationMode.TDS else b""
    un = bytes.fromhex(request.challenge) if request.challenge else bytes(4)
    found: list[Match] = []
    evaluations = 0
    for card in cards:
        profile = card.profile
        layout = code_layout(profile.ipb, profile.psn_in_data)
        # fetched for every card, before any filter: the provider calls do not tell whether
        # the code's public bits found candidates (V30)
        fn = provider.ac_function(
            card.key_ref, cvn=profile.cvn, method=profile.session_key_method, tree=_tree(profile)
        )
        variants = _filter_variants(card, layout, code.value)
        if not variants:
            continue
        atcs = candidate_atcs(card.last_atc, window, layout, code.value)
        if not atcs:
            continue
        cdol = cdol_data_for(profile, request)
        head = _head(card)
        digits = profile.display_digits
        for atc in atcs:
            atc_b = atc.to_bytes(2, "big")
            for index, iad in variants:
                evaluations += 1
                ac = fn(cdol, profile.aip, atc_b, iad, un)
                if tds_block:
                    ac = mac_iso9797_alg1(ac, tds_block, padding=2)
                # the whole code from this candidate's own D, as the reader computes it
                if _codes_equal(_expected_text(layout, head + atc_b + ac + iad, digits), code.text):
                    found.append(Match(credential_id=card.credential_id, atc=atc, variant=index))
    return MatchResult(match=found[0] if found else None, evaluations=evaluations, matches=tuple(found))


def pad_evaluate(card: CardCandidate, provider: CryptogramProvider, *, evaluations: int) -> int:
    """Spend ``evaluations`` recomputations through ``card``'s own AC function, which never
    match (V30): padding costs what a real candidate costs (same key path, same CVN and
    session-key method), so the time does not tell how many real candidates there were.

    Returns the evaluations spent.
    """
    profile = card.profile
    fn = provider.ac_function(
        card.key_ref, cvn=profile.cvn, method=profile.session_key_method, tree=_tree(profile)
    )
    layout = code_layout(profile.ipb, profile.psn_in_data)
    cdol = cdol_data_for(profile, MatchRequest(mode=OperationMode.IDENTIFY))
    iad = profile.iad_variants[0] if profile.iad_variants else bytes(7)
    head = _head(card)
    digits = profile.display_digits
    never = b"x" * digits  # not digits: nothing the layout produces equals it
    for n in range(max(evaluations, 0)):
        atc_b = (n & _MAX_ATC).to_bytes(2, "big")
        ac = fn(cdol, profile.aip, atc_b, iad, bytes(4))
        # the same steps as a real candidate: its D, the layout, the one comparison
        _codes_equal(_expected_text(layout, head + atc_b + ac + iad, digits), never)
    return max(evaluations, 0)
