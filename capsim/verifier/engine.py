"""The pure CAP matcher: candidates, recomputation and the one constant-time comparison.

Theory of operation (cap-protocol.md §6, §10; verifier.md V1–V12)
------------------------------------------------------------------
1. :func:`parse_code` checks the presented code's form before anything else (V7): exactly
   ``display_digits`` ASCII digits (or fewer when the profile sets ``accept_unpadded``),
   read without ``int()`` or ``str.isdigit()``; at most 16 characters are examined (V42).
2. The code value is the IPB-selected bits of the data string
   ``D = [PSN] ‖ CID ‖ ATC(2) ‖ AC(8) ‖ IAD``, most significant first. Its bits therefore split
   into regions (:class:`CodeLayout`): PSN, CID, ATC, AC (or TDS MAC) and IAD bits. The PSN,
   CID, ATC and IAD regions are read back from the presented code and used as *filters*:
   only cards whose PSN bits match (V11), only ATCs in ``(last_atc, last_atc + W]`` whose
   disclosed bits match (V4), and only IAD variants whose visible bits match (V10) are
   evaluated. The evaluations per call are therefore at most (matching ATCs) × V.
3. For each remaining candidate (card, ATC, IAD variant), in a fixed order (cards by
   credential id, ATCs ascending, variants most likely first), the AC is recomputed through
   the :class:`~capsim.verifier.provider.CryptogramProvider` (CID fixed at ``80``, the CDOL1
   data rebuilt from the stored operation, cap-protocol.md §10); for TDS the MAC over the
   stored fields is keyed with that AC (§7). The expected code is built and compared with
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

from capsim.crypto import TreeParams, mac_iso9797_alg1
from capsim.errors import ValidationError
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
_CID_ARQC: Final = 0x80


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
# Code layout


def _compress_table(mask: int) -> tuple[int, ...]:
    """For one IPB byte: byte value -> its selected bits packed MSB first."""
    bits = [b for b in range(7, -1, -1) if mask >> b & 1]
    table = []
    for v in range(256):
        out = 0
        for b in bits:
            out = (out << 1) | (v >> b & 1)
        table.append(out)
    return tuple(table)


@dataclass(frozen=True, kw_only=True, slots=True)
class CodeLayout:
    """Where the IPB's bits fall in ``D`` and in the code value (cap-protocol.md §6).

    Region widths are bit counts; ``*_shift`` is the position of a region's least significant
    bit inside the code value.
    """

    ipb: bytes
    offset: int
    psn_bits: int
    cid_bits: int
    atc_bits: int
    ac_bits: int
    iad_bits: int
    total_bits: int
    ac_shift: int
    atc_shift: int
    cid_shift: int
    psn_shift: int
    atc_mask: int
    tables: tuple[tuple[int, ...], ...]

    def extract(self, start: int, data: bytes) -> int:
        """Selected bits of ``data`` aligned at ``D`` byte ``start`` (MSB first)."""
        value = 0
        ipb = self.ipb
        tables = self.tables
        for i, byte in enumerate(data, start):
            if i >= len(ipb):
                break
            m = ipb[i]
            if m:
                value = (value << m.bit_count()) | tables[i][byte]
        return value

    def region(self, value: int, shift: int, width: int) -> int:
        """The ``width`` bits of a code value starting at ``shift``."""
        return (value >> shift) & ((1 << width) - 1)

    def scatter_atc(self, run: int) -> int:
        """Place the disclosed ATC bits (a packed run) onto their positions in the 16-bit ATC."""
        out = 0
        width = self.atc_bits
        n = 0
        for bit in range(15, -1, -1):
            if self.atc_mask >> bit & 1:
                if run >> (width - 1 - n) & 1:
                    out |= 1 << bit
                n += 1
        return out


@lru_cache(maxsize=256)
def code_layout(ipb: bytes, psn_in_data: bool) -> CodeLayout:
    """The :class:`CodeLayout` of an IPB (cached; pure)."""
    off = 1 if psn_in_data else 0

    def bits(lo: int, hi: int) -> int:
        return sum(b.bit_count() for b in ipb[lo:hi])

    psn_bits = bits(0, off)
    cid_bits = bits(off, off + 1)
    atc_bits = bits(off + 1, off + 3)
    ac_bits = bits(off + 3, off + 11)
    iad_bits = bits(off + 11, len(ipb))
    padded = ipb + bytes(max(0, off + 3 - len(ipb)))
    atc_mask = int.from_bytes(padded[off + 1 : off + 3], "big")
    tables = tuple(_compress_table(m) for m in ipb)
    return CodeLayout(
        ipb=ipb,
        offset=off,
        psn_bits=psn_bits,
        cid_bits=cid_bits,
        atc_bits=atc_bits,
        ac_bits=ac_bits,
        iad_bits=iad_bits,
        total_bits=psn_bits + cid_bits + atc_bits + ac_bits + iad_bits,
        ac_shift=iad_bits,
        atc_shift=iad_bits + ac_bits,
        cid_shift=iad_bits + ac_bits + atc_bits,
        psn_shift=iad_bits + ac_bits + atc_bits + cid_bits,
        atc_mask=atc_mask,
        tables=tables,
    )


def candidate_atcs(last_atc: int, window: int, layout: CodeLayout, code_value: int) -> list[int]:
    """ATCs in ``(last_atc, last_atc + window]`` (never above 65535) whose disclosed bits match
    the code (verifier.md V3, V4; cap-protocol.md §10 step 2).

    >>> lay = code_layout(bytes.fromhex("00001F00000000000FFFFF00000000008000"), False)
    >>> candidate_atcs(0x40, 40, lay, 4822527)
    [66, 98]
    >>> candidate_atcs(0x42, 40, lay, 4822527)
    [98]
    """
    lo = max(last_atc + 1, 0)
    hi = min(last_atc + window, _MAX_ATC)
    if hi < lo:
        return []
    mask = layout.atc_mask
    want = layout.scatter_atc(layout.region(code_value, layout.atc_shift, layout.atc_bits))
    if mask == 0:
        return list(range(lo, hi + 1))
    # step over the ATCs whose masked bits equal ``want``
    out = []
    a = lo
    while a <= hi:
        if a & mask == want:
            out.append(a)
            if mask & 1 and (mask & (mask + 1)) == 0:  # low-order run: jump a whole period
                a += mask + 1
                continue
        a += 1
    return out


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
    from capsim.cap import CapMode, build_cdol_data
    from capsim.profiles import get_reader_profile

    cap_mode = CapMode(mode.value)
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
        cap_mode,
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
    start = layout.offset + 11
    return tuple((i, iad, layout.extract(start, iad)) for i, iad in enumerate(iad_variants))


def _tree(profile: CredentialProfile) -> TreeParams | None:
    if profile.session_key_method != "emv2000-tree":
        return None
    return TreeParams(
        branch_factor=profile.tree_branch_factor, height=profile.tree_height, iv=profile.tree_iv
    )


def _psn_byte(psn: str) -> int:
    return (ord(psn[0]) - 0x30) * 10 + (ord(psn[1]) - 0x30)


def _tds_block(fields: tuple[str, ...]) -> bytes:
    from capsim.cap import tds_message

    return tds_message(fields)


def expected_code(
    card: CardCandidate, request: MatchRequest, atc: int, variant: int, provider: CryptogramProvider
) -> str:
    """The code the card produces at ``atc`` with IAD variant ``variant`` (for tests and tools)."""
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
    d = (bytes([_psn_byte(card.psn)]) if profile.psn_in_data else b"") + bytes([_CID_ARQC]) + atc_b + ac + iad
    value = layout.extract(0, d)
    return f"{value:0{profile.display_digits}d}"


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
    un_cache: dict[str, bytes] = {}
    tds_block = _tds_block(request.tds_fields) if request.mode is OperationMode.TDS else b""
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
        value = code.value
        if value >> layout.total_bits:
            continue  # more bits than this IPB can produce
        if layout.psn_bits:
            psn_d = layout.extract(0, bytes([_psn_byte(card.psn)]))
            if layout.region(value, layout.psn_shift, layout.psn_bits) != psn_d:
                continue  # V11: the PSN bits tell this card apart
        if layout.cid_bits:
            cid_d = layout.extract(layout.offset, bytes([_CID_ARQC]))
            if layout.region(value, layout.cid_shift, layout.cid_bits) != cid_d:
                continue
        iad_want = layout.region(value, 0, layout.iad_bits)
        variants = [
            (i, iad)
            for i, iad, visible in _visible_iad_bits(profile.ipb, profile.psn_in_data, profile.iad_variants)[
                : card.variants
            ]
            if visible == iad_want
        ]
        if not variants:
            continue
        atcs = candidate_atcs(card.last_atc, window, layout, value)
        if not atcs:
            continue
        cdol = cdol_data_for(profile, request)
        un = un_cache.get(request.challenge)
        if un is None:
            un = bytes.fromhex(request.challenge) if request.challenge else bytes(4)
            un_cache[request.challenge] = un
        digits = profile.display_digits
        high_mask = value >> layout.ac_shift >> layout.ac_bits  # PSN, CID and ATC bits as presented
        ac_start = layout.offset + 3
        for atc in atcs:
            atc_b = atc.to_bytes(2, "big")
            for index, iad in variants:
                evaluations += 1
                ac = fn(cdol, profile.aip, atc_b, iad, un)
                if tds_block:
                    ac = mac_iso9797_alg1(ac, tds_block, padding=2)
                ac_part = layout.extract(ac_start, ac)
                expected = ((high_mask << layout.ac_bits | ac_part) << layout.iad_bits) | iad_want
                text = f"{expected:0{digits}d}".encode("ascii")
                if _codes_equal(text, code.text):
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
    cdol = cdol_data_for(profile, MatchRequest(mode=OperationMode.IDENTIFY))
    iad = profile.iad_variants[0] if profile.iad_variants else bytes(7)
    digits = profile.display_digits
    for n in range(max(evaluations, 0)):
        ac = fn(cdol, profile.aip, (n & _MAX_ATC).to_bytes(2, "big"), iad, bytes(4))
        text = f"{int.from_bytes(ac[-4:], 'big') % 10**digits:0{digits}d}".encode("ascii")
        _codes_equal(text, b"x" * len(text))  # different by construction: never a match
    return max(evaluations, 0)
