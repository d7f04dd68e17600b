"""The IPB code function, defined once: from a card's data string to its code, and back.

The reader (through :mod:`capsim.cap`), the verifier's matcher (:mod:`capsim.verifier.engine`)
and the fuzzers all compute and read codes with this module (cap-protocol.md §6, §10).

Theory of operation
-------------------
1. The data string is ``D = [PSN] ‖ CID ‖ ATC(2) ‖ AC(8) ‖ IAD(0..32)`` (:func:`data_string`);
   the PSN byte is there only when the IAF sets b7 (``psn_in_data``). In TDS mode the AC's
   place holds the TDS MAC.
2. The IPB (``9F56``) is aligned with ``D`` from its first byte. Its 1-bits select bits of
   ``D``, byte by byte, b8 down to b1; the selected bits, in that order, are the code value,
   most significant first. An IPB bit beyond the end of ``D`` selects 0 (whether a short ``D``
   is an error is the caller's choice: :func:`ipb_extract`'s ``allow_short``).
3. The *definition* is the bit-by-bit walk :func:`explain_ipb` (and :func:`reference_value`,
   its sum). :meth:`CodeLayout.value` is the fast path: for each non-zero IPB byte, a
   256-entry table of the selected bits of every data byte, packed (built once per mask
   value). Tests check the two agree on random IPBs and data strings, with and without PSN.
4. Selection keeps order, so each field of ``D`` owns one contiguous run of the code value
   (:class:`Field`): PSN, CID, ATC, AC and IAD from the most significant end. A field's run
   is read back from a code value with :meth:`CodeLayout.bits_of` and computed from the
   field's own bytes with :meth:`CodeLayout.select`, through the same tables.
5. The ATC's run is the disclosed ATC bits: :meth:`CodeLayout.scatter_atc` places them on
   the 16-bit ATC (under :attr:`CodeLayout.atc_mask`); :func:`candidate_atcs` lists the ATCs
   of a window whose bits under the mask equal them (verifier.md V4).
6. The code is the value in decimal, zero-padded to the display width; a value wider than
   the display is :class:`~capsim.errors.CodeOverflowError` (:func:`decimal_code`).
7. Everything is pure. :func:`code_layout` is cached per ``(ipb, psn_in_data)`` (least
   recently used, 256 entries) and the per-mask tables per mask value (256 at most).

>>> compute_code(bytes.fromhex("00001F00000000000FFFFF00000000008000"), b"\\x80",
...              bytes.fromhex("0042"), bytes.fromhex("B7F9A572DA74CAFF"),
...              bytes.fromhex("06770A03A48000"))
'04822527'
>>> lay = code_layout(bytes.fromhex("00001F00000000000FFFFF00000000008000"), False)
>>> lay.atc_bits, lay.ac_bits, lay.iad_bits, lay.scatter_atc(lay.bits_of(4822527, Field.ATC))
(5, 20, 1, 2)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache, lru_cache
from itertools import pairwise
from typing import Final

from capsim.errors import CodeOverflowError, RemoteProtocolError, ValidationError

__all__ = [
    "CodeBit",
    "CodeLayout",
    "Field",
    "atc_bits_from_code",
    "candidate_atcs",
    "check_field",
    "code_layout",
    "compute_code",
    "data_string",
    "decimal_code",
    "disclosed_atc_bits",
    "explain_ipb",
    "ipb_bit_count",
    "ipb_extract",
    "reference_value",
]

_MAX_ATC: Final = 0xFFFF
#: Longest IPB accepted (a data string is at most 44 bytes; 64 leaves room for odd cards).
_MAX_IPB: Final = 64


class Field(IntEnum):
    """The fields of ``D``, in their order in ``D`` and in the code value."""

    PSN = 0
    CID = 1
    ATC = 2
    AC = 3
    IAD = 4


#: Where the CID, ATC, AC and IAD start in ``D`` after the optional PSN byte (the IAD runs to
#: the end of ``D``, and for the layout to the end of the IPB).
_STARTS: Final = (0, 1, 3, 11)


def check_field(name: str, value: object, lo: int, hi: int | None = None) -> bytes:
    """``value`` when it is ``bytes`` of ``lo``..``hi`` bytes (``hi`` defaults to ``lo``).

    Raises
    ------
    ValidationError
        Anything else; the message names ``name``.

    >>> check_field("atc", b"\\x00", 2)
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: atc: expected 2 bytes, got b'\\x00'
    """
    hi = lo if hi is None else hi
    if not isinstance(value, bytes) or not lo <= len(value) <= hi:
        span = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise ValidationError(f"{name}: expected {span} bytes, got {value!r}")
    return value


def data_string(cid: bytes, atc: bytes, ac: bytes, iad: bytes, *, psn: bytes | None = None) -> bytes:
    """``D = [PSN] ‖ CID ‖ ATC ‖ AC ‖ IAD`` (step 1; cap-protocol.md §6 step 1).

    >>> data_string(b"\\x80", b"\\x00\\x7c", bytes(8), b"", psn=b"\\x08").hex()
    '0880007c0000000000000000'
    """
    check_field("cid", cid, 1)
    check_field("atc", atc, 2)
    check_field("ac", ac, 8)
    check_field("iad", iad, 0, 32)
    if psn is not None:
        check_field("psn", psn, 1)
    return (psn or b"") + cid + atc + ac + iad


def ipb_bit_count(ipb: bytes) -> int:
    """Number of bits the IPB selects (the code's width in bits).

    >>> ipb_bit_count(bytes.fromhex("8000FF000000000001FFFF00000000000000"))
    26
    """
    check_field("ipb", ipb, 1, _MAX_IPB)
    return int.from_bytes(ipb, "big").bit_count()


# --------------------------------------------------------------------------------------------
# The definition, bit by bit (step 3)


def _selected(ipb: bytes, data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(index in D, bit 7..0, bit value)`` of every IPB-selected bit, most significant first."""
    size = len(data)
    for index, mask in enumerate(ipb):
        for bit in range(7, -1, -1):
            if mask >> bit & 1:
                yield index, bit, (data[index] >> bit & 1) if index < size else 0


def reference_value(ipb: bytes, data: bytes) -> int:
    """The code value by definition (step 2), one bit at a time; missing bits count as 0.

    :meth:`CodeLayout.value` computes the same integer from tables.

    >>> reference_value(b"\\xf0\\x01", b"\\xab\\xcd\\xef")
    21
    """
    check_field("ipb", ipb, 1, _MAX_IPB)
    if not isinstance(data, bytes):
        raise ValidationError("data: expected bytes")
    value = 0
    for _, _, bit in _selected(ipb, data):
        value = value << 1 | bit
    return value


@dataclass(frozen=True, kw_only=True)
class CodeBit:
    """Where one bit of the code came from (for ``--explain``).

    Attributes
    ----------
    position:
        Bit position in the code value (0 = least significant).
    data_index:
        Byte index in the data string D (0-based).
    field:
        ``PSN``, ``CID``, ``ATC``, ``AC``/``MAC`` or ``IAD``.
    field_byte:
        1-based byte number inside that field.
    bit:
        EMV bit number inside the byte (8 = most significant … 1).
    value:
        The bit's value (0 or 1).
    """

    position: int
    data_index: int
    field: str
    field_byte: int
    bit: int
    value: int

    def __str__(self) -> str:
        return (
            f"code bit {self.position:2d} = {self.value} "
            f"<- D[{self.data_index}] b{self.bit} ({self.field} byte {self.field_byte})"
        )


def _field_names(psn_in_data: bool, ac_name: str, size: int) -> list[tuple[str, int]]:
    """(field, 1-based byte number) for every index of D up to ``size``."""
    layout = ([("PSN", 1)] if psn_in_data else []) + [("CID", 1), ("ATC", 2), (ac_name, 8), ("IAD", 32)]
    names = [(name, n + 1) for name, length in layout for n in range(length)]
    names += [("beyond IAD", n + 1) for n in range(max(0, size - len(names)))]
    return names


def explain_ipb(
    ipb: bytes, data: bytes, *, psn_in_data: bool, ac_name: str = "AC"
) -> tuple[CodeBit, ...]:
    """Bit-by-bit account of the code value: which IPB bit took which bit of D, MSB first.

    >>> bits = explain_ipb(b"\\x00\\x00\\x03", b"\\x80\\x00\\x42", psn_in_data=False)
    >>> [str(b) for b in bits]
    ['code bit  1 = 1 <- D[2] b2 (ATC byte 2)', 'code bit  0 = 0 <- D[2] b1 (ATC byte 2)']
    """
    check_field("ipb", ipb, 1, _MAX_IPB)
    names = _field_names(psn_in_data, ac_name, len(ipb))
    selected = list(_selected(ipb, data))
    total = len(selected)
    return tuple(
        CodeBit(
            position=total - 1 - n,
            data_index=index,
            field=names[index][0],
            field_byte=names[index][1],
            bit=bit + 1,
            value=value,
        )
        for n, (index, bit, value) in enumerate(selected)
    )


# --------------------------------------------------------------------------------------------
# The fast path and the fields' runs (steps 3–5)


@cache  # keyed by one byte: 255 tables at most
def _gather_table(mask: int) -> tuple[int, ...]:
    """For one IPB byte: every data byte value -> its selected bits, packed MSB first."""
    bits = [bit for bit in range(7, -1, -1) if mask >> bit & 1]
    packed = []
    for byte in range(256):
        v = 0
        for bit in bits:
            v = v << 1 | (byte >> bit & 1)
        packed.append(v)
    return tuple(packed)


#: (index in D, bit count, gather table) of each non-zero IPB byte.
_Plan = tuple[tuple[int, int, tuple[int, ...]], ...]


def _plan(ipb: bytes, lo: int = 0, hi: int | None = None) -> _Plan:
    hi = len(ipb) if hi is None else min(hi, len(ipb))
    return tuple(
        (i, mask.bit_count(), _gather_table(mask)) for i in range(max(lo, 0), hi) if (mask := ipb[i])
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class CodeLayout:
    """Where the IPB's bits fall in ``D`` and in the code value (steps 2–5).

    Widths are bit counts; ``*_shift`` is the position of a field's least significant bit in
    the code value (the IAD's is 0). ``offset`` is 1 when the PSN leads ``D``, else 0.
    """

    ipb: bytes
    psn_in_data: bool
    offset: int
    psn_bits: int
    cid_bits: int
    atc_bits: int
    ac_bits: int
    iad_bits: int
    total_bits: int
    psn_shift: int
    cid_shift: int
    atc_shift: int
    ac_shift: int
    atc_mask: int
    plan: _Plan = field(repr=False)
    """(index in D, bit count, gather table) of each non-zero IPB byte."""
    fields: tuple[tuple[int, int, int, _Plan], ...] = field(repr=False)
    """Per :class:`Field`: (first index in D, width, shift, the plan of its IPB bytes)."""

    def value(self, data: bytes) -> int:
        """The code value of the data string ``data`` (IPB bits beyond ``data`` select 0).

        >>> code_layout(b"\\xf0\\x01", False).value(b"\\xab\\xcd\\xef")
        21
        """
        value = 0
        size = len(data)
        for i, width, table in self.plan:
            value = value << width | (table[data[i]] if i < size else 0)
        return value

    def code(self, data: bytes, digits: int = 8) -> str:
        """The displayed code of ``data``: :func:`decimal_code` of :meth:`value`.

        Raises
        ------
        CodeOverflowError
            The value needs more than ``digits`` digits (no reader shows such a code).
        """
        return decimal_code(self.value(data), digits)

    def bits_of(self, value: int, which: Field) -> int:
        """The run of ``which``'s selected bits inside the code value ``value``."""
        _, width, shift, _ = self.fields[which]
        return (value >> shift) & ((1 << width) - 1)

    def select(self, which: Field, data: bytes) -> int:
        """``which``'s selected bits computed from the field's own bytes (missing bytes = 0).

        >>> lay = code_layout(bytes.fromhex("00001F00000000000FFFFF00000000008000"), False)
        >>> lay.select(Field.ATC, bytes.fromhex("0042"))
        2
        >>> lay.select(Field.IAD, bytes.fromhex("06770A03A48000"))
        1
        """
        start, _, _, plan = self.fields[which]
        value = 0
        size = len(data) + start
        for i, width, table in plan:
            value = value << width | (table[data[i - start]] if i < size else 0)
        return value

    def scatter_atc(self, run: int) -> int:
        """Place the disclosed ATC bits (a packed run, MSB first) on their bits of the 16-bit ATC."""
        out = 0
        width = self.atc_bits
        n = 0
        for bit in range(15, -1, -1):
            if self.atc_mask >> bit & 1:
                if run >> (width - 1 - n) & 1:
                    out |= 1 << bit
                n += 1
        return out


def code_layout(ipb: bytes, psn_in_data: bool = False) -> CodeLayout:
    """The :class:`CodeLayout` of an IPB (pure, cached). ``psn_in_data`` only moves the fields;
    :meth:`CodeLayout.value` does not depend on it.

    Raises
    ------
    ValidationError
        ``ipb`` is not 1 to 64 bytes.
    """
    return _layout(check_field("ipb", ipb, 1, _MAX_IPB), bool(psn_in_data))


@lru_cache(maxsize=256)
def _layout(ipb: bytes, psn_in_data: bool) -> CodeLayout:
    off = 1 if psn_in_data else 0
    bounds = (0, *(off + start for start in _STARTS), max(len(ipb), off + _STARTS[-1]))
    spans = list(pairwise(bounds))  # (first, end) in D, per Field
    widths = [sum(b.bit_count() for b in ipb[lo:hi]) for lo, hi in spans]
    shifts = [sum(widths[f + 1 :]) for f in Field]
    padded = ipb + bytes(max(0, off + 3 - len(ipb)))
    return CodeLayout(
        ipb=ipb,
        psn_in_data=psn_in_data,
        offset=off,
        psn_bits=widths[Field.PSN],
        cid_bits=widths[Field.CID],
        atc_bits=widths[Field.ATC],
        ac_bits=widths[Field.AC],
        iad_bits=widths[Field.IAD],
        total_bits=sum(widths),
        psn_shift=shifts[Field.PSN],
        cid_shift=shifts[Field.CID],
        atc_shift=shifts[Field.ATC],
        ac_shift=shifts[Field.AC],
        atc_mask=int.from_bytes(padded[off + 1 : off + 3], "big"),
        plan=_plan(ipb),
        fields=tuple(
            (lo, widths[f], shifts[f], _plan(ipb, lo, hi)) for f, (lo, hi) in zip(Field, spans, strict=True)
        ),
    )


# --------------------------------------------------------------------------------------------
# The reader's side: a code from a GENERATE AC response (steps 1–3, 6)


def ipb_extract(ipb: bytes, data: bytes, *, allow_short: bool = False) -> int:
    """The code value of ``data`` (:meth:`CodeLayout.value`) with the reader's short-data rule.

    Bytes of ``data`` beyond the IPB are ignored. When ``data`` is shorter than the IPB a
    :class:`RemoteProtocolError` is raised, unless ``allow_short`` (then the missing bits
    count as 0).

    >>> ipb_extract(b"\\xf0\\x01", b"\\xab\\xcd\\xef")
    21
    """
    layout = code_layout(ipb)
    if not isinstance(data, bytes):
        raise ValidationError("data: expected bytes")
    if len(data) < len(ipb) and not allow_short:
        raise RemoteProtocolError(
            f"the data string has {len(data)} bytes but the IPB covers {len(ipb)}: "
            "refusing to invent the missing bits"
        )
    return layout.value(data)


def decimal_code(value: int, digits: int = 8) -> str:
    """``value`` in decimal, left-padded with zeros to ``digits`` (step 6).

    Raises
    ------
    CodeOverflowError
        ``value`` needs more than ``digits`` digits.

    >>> decimal_code(4822527)
    '04822527'
    """
    if not isinstance(digits, int) or not 1 <= digits <= 20:
        raise ValidationError("digits: expected an int 1..20")
    if value < 0:
        raise ValidationError("value: expected a non-negative integer")
    text = str(value)
    if len(text) > digits:
        raise CodeOverflowError(
            f"the code {len(text)} digits wide does not fit a {digits}-digit display", value, digits
        )
    return text.rjust(digits, "0")


def compute_code(
    ipb: bytes,
    cid: bytes,
    atc: bytes,
    ac: bytes,
    iad: bytes,
    *,
    psn: bytes | None = None,
    digits: int = 8,
    allow_short: bool = False,
) -> str:
    """The CAP code of one GENERATE AC response (cap-protocol.md §6).

    Parameters
    ----------
    ipb:
        The card's issuer proprietary bitmap ``9F56``.
    cid, atc, ac, iad:
        CID (1 byte), ATC (2), AC (8; the TDS MAC in TDS mode) and IAD (0–32 bytes).
    psn:
        The PSN byte when the IAF sets b7 (it is prepended to the data string), else ``None``.
    digits:
        Display width; the code is zero-padded to it.
    allow_short:
        Treat IPB bits beyond the data string as 0 instead of raising.

    Raises
    ------
    RemoteProtocolError
        The data string is shorter than the IPB (and ``allow_short`` is false).
    CodeOverflowError
        The value needs more than ``digits`` digits.

    >>> compute_code(bytes.fromhex("0700007FFFFF000000000000"), b"\\x80", bytes.fromhex("007C"),
    ...              bytes.fromhex("D2EC6598EC48C83B"),
    ...              bytes.fromhex("0C10A50003040000000000000000000000FF"), psn=b"\\x08")
    '08180460'
    """
    data = data_string(cid, atc, ac, iad, psn=psn)
    return decimal_code(ipb_extract(ipb, data, allow_short=allow_short), digits)


# --------------------------------------------------------------------------------------------
# The verifier's side: the disclosed ATC bits (step 5)


def disclosed_atc_bits(ipb: bytes, *, psn_in_data: bool) -> tuple[int, int]:
    """Which ATC bits a code discloses, and where (cap-protocol.md §6 step 4, §10 step 2).

    Returns
    -------
    (mask, position):
        ``mask`` is the set of selected bits over the 16-bit ATC; in the code value those bits
        form one contiguous run (in the same order) whose least significant bit is at
        ``position``. :func:`atc_bits_from_code` reads them back.

    >>> m, p = disclosed_atc_bits(bytes.fromhex("00001F00000000000FFFFF00000000008000"), psn_in_data=False)
    >>> hex(m), p
    ('0x1f', 21)
    """
    layout = code_layout(ipb, psn_in_data)
    return layout.atc_mask, layout.atc_shift


def atc_bits_from_code(
    code: str | int, ipb: bytes, *, psn_in_data: bool, psn_prefix_digits: int = 0
) -> int:
    """The ATC bits disclosed in ``code``, placed at their positions in the 16-bit ATC.

    A candidate ATC ``a`` is consistent with the code exactly when
    ``a & mask == atc_bits_from_code(...)`` with ``mask`` from :func:`disclosed_atc_bits`.

    >>> atc_bits_from_code("04822527", bytes.fromhex("00001F00000000000FFFFF00000000008000"),
    ...                    psn_in_data=False)
    2
    >>> atc_bits_from_code("46076570", bytes.fromhex("8000FF000000000001FFFF00000000000000"),
    ...                    psn_in_data=False) == 0x5F
    True
    """
    if isinstance(code, str):
        if not (1 <= len(code) <= 40 and code.isascii() and code.isdigit()):
            raise ValidationError(f"code: expected ASCII digits, got {code!r}")
        value = int(code[psn_prefix_digits:] or "0")
    elif isinstance(code, int) and not isinstance(code, bool) and code >= 0:
        value = code
    else:
        raise ValidationError("code: expected a digit string or a non-negative int")
    layout = code_layout(ipb, psn_in_data)
    return layout.scatter_atc(layout.bits_of(value, Field.ATC))


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
    want = layout.scatter_atc(layout.bits_of(code_value, Field.ATC))
    if mask == 0:
        return list(range(lo, hi + 1))
    # step over the ATCs whose masked bits equal ``want``
    out = []
    a = lo
    while a <= hi:
        if a & mask == want:
            out.append(a)
            # a low-order run (mask = 2^k - 1, k >= 1: 0 returned above): jump a whole period
            if (mask & (mask + 1)) == 0:
                a += mask + 1
                continue
        a += 1
    return out
