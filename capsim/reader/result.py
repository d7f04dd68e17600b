"""What a CAP run gives: :class:`CapResult`, and its :class:`Explanation` of the code's bits.

Theory of operation
===================

1. :class:`CapResult` is a frozen value: two runs of identical cards give equal results.
2. Where each code bit came from (cap-protocol.md §6 step 2) costs as much to compute as the
   rest of a run, and most callers want only the code. :class:`Explanation` is therefore a
   small, non-frozen sequence that computes the bits on first use and keeps them. It compares,
   hashes and pickles as the tuple of bits, so a result with an explanation not yet computed
   equals one whose explanation was read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import overload

from capsim.cap import CapMode, CodeBit
from capsim.profiles import CodeFunction

__all__ = ["CapResult", "Explanation"]


class Explanation(Sequence[CodeBit]):
    """The code's bits, most significant first, computed by ``compute`` on first use (rule 2).

    >>> bit = CodeBit(position=0, data_index=0, field="CID", field_byte=1, bit=1, value=1)
    >>> calls = []
    >>> def bits() -> tuple[CodeBit, ...]:
    ...     calls.append(1)
    ...     return (bit,)
    >>> lazy = Explanation(bits)
    >>> len(calls), len(lazy), list(lazy) == [bit], len(calls)
    (0, 1, True, 1)
    >>> lazy == Explanation(lambda: (bit,)) == (bit,), hash(lazy) == hash((bit,))
    (True, True)
    """

    def __init__(self, compute: Callable[[], tuple[CodeBit, ...]]) -> None:
        self._compute = compute

    @cached_property
    def bits(self) -> tuple[CodeBit, ...]:
        """The bits as a tuple (computed once)."""
        return tuple(self._compute())

    @overload
    def __getitem__(self, index: int) -> CodeBit: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[CodeBit, ...]: ...

    def __getitem__(self, index: int | slice) -> CodeBit | tuple[CodeBit, ...]:
        return self.bits[index]

    def __len__(self) -> int:
        return len(self.bits)

    def __iter__(self) -> Iterator[CodeBit]:
        return iter(self.bits)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Explanation):
            return self.bits == other.bits
        if isinstance(other, tuple):
            return self.bits == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.bits)

    def __reduce__(self) -> tuple[Callable[[tuple[CodeBit, ...]], Explanation], tuple[tuple[CodeBit, ...]]]:
        return _computed, (self.bits,)

    def __repr__(self) -> str:
        return f"Explanation({len(self.bits)} bits)"


def _computed(bits: tuple[CodeBit, ...]) -> Explanation:
    """An explanation already computed (what a pickled one loads as)."""
    return Explanation(lambda: bits)


@dataclass(frozen=True, kw_only=True)
class CapResult:
    """The outcome of one CAP run.

    Attributes
    ----------
    code:
        The code as displayed, leading zeros included.
    mode:
        The CAP function.
    atc:
        The application transaction counter of the run.
    cryptogram:
        The AC of the first GENERATE AC (the TDS MAC key in TDS mode).
    psn:
        The card's PSN as two hex digits (``"08"``), when it has one.
    profile:
        Name of the reader profile used.
    aid:
        The selected application.
    transcript:
        ``(command, response)`` pairs as exchanged, with the VERIFY PIN block overwritten by
        ``FF`` bytes (the PAN is kept: redact before showing it).
    explanation:
        Where each code bit came from, most significant first (§6 step 2): an
        :class:`Explanation`, computed on first use.
    warnings:
        Human-readable warnings (PIN tries, missing IAF, wide IPB, …).
    cid, iad:
        The rest of the GENERATE AC response.
    tds_mac:
        The TDS MAC that replaced the AC in the data string (TDS mode only).
    ipb:
        The bitmap used (the card's, or a named fallback); ``None`` for the Belgian function.
    code_function:
        ``ipb`` or ``belgian``.

    Examples
    --------
    Two identical cards give equal results, explanation included (computed on first read):

    >>> from capsim.reader import CapReader
    >>> from capsim.transports import open_transport
    >>> def run_once() -> CapResult:
    ...     with open_transport("inproc:secur-acces") as card:
    ...         return CapReader(card).respond("1234", "12345678")
    >>> first, again = run_once(), run_once()
    >>> first == again, hash(first) == hash(again)
    (True, True)
    >>> sum(bit.value << bit.position for bit in first.explanation) == int(first.code)
    True
    >>> import dataclasses, pickle
    >>> pickle.loads(pickle.dumps(again)) == first == dataclasses.replace(again)
    True
    """

    code: str
    mode: CapMode
    atc: int
    cryptogram: bytes
    psn: str | None
    profile: str
    aid: bytes
    transcript: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    explanation: Explanation = field(repr=False)
    warnings: tuple[str, ...] = ()
    cid: int = 0x80
    iad: bytes = b""
    tds_mac: bytes | None = None
    ipb: bytes | None = None
    code_function: CodeFunction = CodeFunction.IPB

    def explain(self) -> str:
        """A multi-line, human-readable account of how the code was built."""
        lines = [f"mode {self.mode.value}, profile {self.profile}, ATC {self.atc:04X}, code {self.code}"]
        if self.code_function is CodeFunction.BELGIAN:
            lines.append(
                "Belgian function (cap-protocol.md §8 c): v = ((AC6‖AC7) & 3FF)·2^16 + ATC2·2^8 + AC8,"
                " then the last decimal digit is copied to the front"
            )
        elif self.ipb is not None:
            lines.append(f"IPB {self.ipb.hex().upper()} selects {len(self.explanation)} bits of D:")
        lines.extend(f"  {bit}" for bit in self.explanation)
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)
