"""A hostile card: a real emulated card whose answers are mutated by a plan.

:class:`HostileCard` is a :class:`~capsim.cards.CardOS`: it forwards each command to an inner
card and applies the :class:`Mutation` planned for that exchange (by index) to the answer. The
mutations are what a broken or malicious card does to a terminal (issue 7):

=================  ===========================================================================
``honest``         the honest answer
``flip``           one data byte replaced
``truncate``       the data cut short (the status word kept)
``extend``         junk appended to the data
``sw``             the status word replaced
``empty``          ``9000`` without data
``garbage``        the whole answer replaced by arbitrary bytes (maybe no status word)
``more-data``      ``61xx`` now, and ``61xx`` again for every GET RESPONSE: an endless chain
``wrong-le``       ``6Cxx`` for this and every later command: an endless re-send loop
``huge-record``    a READ RECORD answer of several kilobytes (with a CDOL of huge lengths)
``bad-cdol``       a record's CDOL1/CDOL2 replaced by arbitrary DOL bytes
=================  ===========================================================================

The card itself never raises and never loops; only the terminal on the other side can.

>>> from capsim.cards import new_card
>>> inner = new_card("barclays", pan="1234567890123456", imk_ac=bytes(16), rng=bytes)
>>> card = HostileCard(inner, [Mutation(kind=MutationKind.SW, value=0x6F00)])
>>> card.process(bytes.fromhex("00A4040007A000000003800200")).hex().upper()[-4:]
'6F00'
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from hypothesis import strategies as st

from capsim.cards.base import CardOS
from capsim.errors import ApduFormatError
from capsim.tlv import Tlv, decode, encode

__all__ = ["HostileCard", "Mutation", "MutationKind", "mutations", "random_mutation"]


class MutationKind(StrEnum):
    """What a :class:`Mutation` does (module docstring)."""

    HONEST = "honest"
    FLIP = "flip"
    TRUNCATE = "truncate"
    EXTEND = "extend"
    SW = "sw"
    EMPTY = "empty"
    GARBAGE = "garbage"
    MORE_DATA = "more-data"
    WRONG_LE = "wrong-le"
    HUGE_RECORD = "huge-record"
    BAD_CDOL = "bad-cdol"


@dataclass(frozen=True, kw_only=True)
class Mutation:
    """One planned change to one answer.

    Attributes
    ----------
    kind:
        The :class:`MutationKind`.
    position:
        Byte position (``flip``; taken modulo the data length) or bytes to cut (``truncate``).
    value:
        The new byte (``flip``), status word (``sw``) or ``xx`` of ``61xx``/``6Cxx``.
    data:
        Junk (``extend``), the whole answer (``garbage``) or DOL bytes (``bad-cdol``).
    """

    kind: MutationKind = MutationKind.HONEST
    position: int = 0
    value: int = 0
    data: bytes = b""


_PASS = Mutation()
_HUGE = 4000


def _huge_record() -> bytes:
    cdol = b"".join(bytes((0x9F, 0x02, 0xFF)) for _ in range(40))
    filler = encode(0x9F4A, bytes(_HUGE))
    return encode(0x70, encode(0x8C, cdol) + filler)


def _replace_cdols(data: bytes, dol: bytes) -> bytes | None:
    try:
        objs = decode(data)
    except (ApduFormatError, ValueError):
        return None
    if len(objs) != 1 or objs[0].tag != 0x70:
        return None
    kids = objs[0].children
    if not any(k.tag in (0x8C, 0x8D) for k in kids):
        return None
    new = tuple(Tlv(k.tag, dol) if k.tag in (0x8C, 0x8D) else k for k in kids)
    return Tlv(0x70, children=new).to_bytes()


class HostileCard:
    """Mutates the answers of ``inner`` (module docstring).

    Parameters
    ----------
    inner:
        The honest card.
    plan:
        Mutation per exchange, by index; exchanges past the plan are honest.
    """

    def __init__(self, inner: CardOS, plan: Sequence[Mutation]) -> None:
        self.inner = inner
        self.plan: Sequence[Mutation] = plan
        self.exchanges: list[tuple[bytes, bytes]] = []
        self._count = 0
        self._loop: MutationKind | None = None
        self._loop_value = 0

    # CardOS -------------------------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        """The inner card's ATR."""
        return self.inner.atr

    def power_on(self) -> bytes:
        """Power on (loops end)."""
        self._loop = None
        return self.inner.power_on()

    def reset(self) -> bytes:
        """Warm reset (loops end)."""
        self._loop = None
        return self.inner.reset()

    def power_off(self) -> None:
        """Power off."""
        self._loop = None
        self.inner.power_off()

    def process(self, apdu: bytes) -> bytes:
        """Answer ``apdu`` with the planned mutation applied; never raises."""
        answer = self._answer(bytes(apdu))
        self.exchanges.append((bytes(apdu), answer))
        return answer

    # internals ----------------------------------------------------------------------------
    def _answer(self, apdu: bytes) -> bytes:
        if self._loop is MutationKind.WRONG_LE:
            self._loop_value = (self._loop_value + 1) & 0xFF
            return bytes((0x6C, self._loop_value))
        if self._loop is MutationKind.MORE_DATA and len(apdu) >= 2 and apdu[1] == 0xC0:
            return bytes(min(self._loop_value or 1, 16)) + bytes((0x61, self._loop_value))
        self._loop = None
        index = self._count
        self._count += 1
        mutation = self.plan[index] if index < len(self.plan) else _PASS
        honest = self.inner.process(apdu)
        return self._mutate(apdu, honest, mutation)

    def _mutate(self, apdu: bytes, honest: bytes, m: Mutation) -> bytes:
        data, sw = honest[:-2], honest[-2:]
        kind = m.kind
        if kind is MutationKind.FLIP and data:
            pos = m.position % len(data)
            return data[:pos] + bytes((m.value & 0xFF,)) + data[pos + 1 :] + sw
        if kind is MutationKind.TRUNCATE and data:
            return data[: max(0, len(data) - max(1, m.position))] + sw
        if kind is MutationKind.EXTEND:
            return data + m.data + sw
        if kind is MutationKind.SW:
            return data + (m.value & 0xFFFF).to_bytes(2, "big")
        if kind is MutationKind.EMPTY:
            return b"\x90\x00"
        if kind is MutationKind.GARBAGE:
            return m.data
        if kind is MutationKind.MORE_DATA:
            self._loop = MutationKind.MORE_DATA
            self._loop_value = m.value & 0xFF
            return bytes((0x61, self._loop_value))
        if kind is MutationKind.WRONG_LE:
            self._loop = MutationKind.WRONG_LE
            self._loop_value = m.value & 0xFF
            return bytes((0x6C, self._loop_value))
        if kind is MutationKind.HUGE_RECORD and len(apdu) >= 2 and apdu[1] == 0xB2:
            return _huge_record() + b"\x90\x00"
        if kind is MutationKind.BAD_CDOL and sw == b"\x90\x00":
            replaced = _replace_cdols(data, m.data)
            if replaced is not None:
                return replaced + sw
        return honest


def mutations(*, honest: float = 0.6) -> st.SearchStrategy[Mutation]:
    """Hypothesis strategy of :class:`Mutation` values, honest about ``honest`` of the time."""
    dol_entry = st.tuples(
        st.sampled_from((0x9F02, 0x9F37, 0x95, 0x9A, 0x5F2A, 0x9F7F, 0x70, 0xDF01)), st.integers(0, 255)
    )
    dol = st.lists(dol_entry, max_size=12).map(
        lambda es: b"".join((t.to_bytes(2 if t > 0xFF else 1, "big") + bytes((n,))) for t, n in es)
    )
    other = st.one_of(
        st.builds(
            Mutation, kind=st.just(MutationKind.FLIP), position=st.integers(0, 300), value=st.integers(0, 255)
        ),
        st.builds(Mutation, kind=st.just(MutationKind.TRUNCATE), position=st.integers(1, 300)),
        st.builds(Mutation, kind=st.just(MutationKind.EXTEND), data=st.binary(min_size=1, max_size=300)),
        st.builds(
            Mutation,
            kind=st.just(MutationKind.SW),
            value=st.one_of(
                st.sampled_from((0x6283, 0x63C0, 0x6983, 0x6985, 0x6A82, 0x6D00, 0x6F00, 0x9001, 0x0000)),
                st.integers(0, 0xFFFF),
            ),
        ),
        st.just(Mutation(kind=MutationKind.EMPTY)),
        st.builds(Mutation, kind=st.just(MutationKind.GARBAGE), data=st.binary(max_size=300)),
        st.builds(Mutation, kind=st.just(MutationKind.MORE_DATA), value=st.integers(0, 255)),
        st.builds(Mutation, kind=st.just(MutationKind.WRONG_LE), value=st.integers(0, 255)),
        st.just(Mutation(kind=MutationKind.HUGE_RECORD)),
        st.builds(Mutation, kind=st.just(MutationKind.BAD_CDOL), data=dol),
    )
    weight = max(1, min(99, int(honest * 100)))
    return st.integers(0, 99).flatmap(lambda r: st.just(_PASS) if r < weight else other)


def random_mutation(rng: random.Random, *, rate: float = 0.3) -> Mutation:
    """One mutation drawn from ``rng`` (``capsim fuzz serve``, where no Hypothesis drives)."""
    if rng.random() >= rate:
        return _PASS
    kind = rng.choice([k for k in MutationKind if k is not MutationKind.HONEST])
    return Mutation(
        kind=kind,
        position=rng.randrange(0, 300),
        value=rng.choice((rng.randrange(0, 256), rng.randrange(0, 0x10000)))
        if kind is not MutationKind.SW
        else rng.choice((0x6283, 0x63C1, 0x6983, 0x6985, 0x6A82, 0x6D00, rng.randrange(0, 0x10000))),
        data=rng.randbytes(rng.randrange(0, 64)),
    )
