"""The APDU sequences of ``capsim fuzz card``: one grammar, drawn from a seeded generator.

Theory of operation
-------------------
1. An example is one sequence of actions: APDUs to send, and ``b""`` for a power cycle. It is
   drawn by :class:`SequenceGenerator` from a :class:`random.Random` and from nothing else:
   :func:`example_random` seeds it with the run's seed and the example's index, so one seed
   gives one sequence on every run (same Python version), whatever modules are loaded.
2. A sequence is 1..``max_steps`` parts, uniformly. A part is a whole CAP transaction (2 in 3)
   or a single action (1 in 3): an EMV command, a random APDU or a power cycle, a third each.
3. A transaction is shaped as a reader runs one (cap-protocol.md §2): [SELECT] (3 in 4), GET
   PROCESSING OPTIONS, 0–4 VERIFY, [GET DATA ``9F17``] (1 in 2), 0–3 GENERATE AC, and 0–2 of
   issuer script, EXTERNAL AUTHENTICATE or GET DATA. Its commands are well-formed for the
   card's AID and DOL lengths 9 times in 10, single EMV commands 8 times in 10; otherwise a
   field is off (P1/P2, a length, the data).
4. EMV commands (:data:`COMMANDS`, drawn uniformly): SELECT, GET PROCESSING OPTIONS, READ
   RECORD, GET DATA (``9F17``, ``9F36``, ``9F13``), VERIFY (a third of the well-formed ones
   carry the card's PIN when it is known; otherwise a format-2 block of 4–12 random digits, or
   8 random bytes 1 time in 5), GENERATE AC (AAC/ARQC/TC, CDOL1 or CDOL2 length), GET
   CHALLENGE, EXTERNAL AUTHENTICATE, and issuer scripts (CLA ``84``: PIN CHANGE/UNBLOCK
   ``24``, APPLICATION BLOCK ``1E``/UNBLOCK ``18``, CARD BLOCK ``16``, with random MACs).
5. Random APDUs: 1 to 40 random bytes (1 in 2), or an APDU-like header (CLA ``00``, ``80``,
   ``84``, ``0C``, ``FF``, random INS/P1/P2) and up to 36 random bytes.
6. Mutations: any APDU drawn by rules 3–4 is then mutated 1 time in 20: a byte replaced, the
   APDU truncated or extended, Lc off by one, or another CLA or INS.

The same grammar is offered to Hypothesis as :func:`actions` and :func:`transactions`: a
Hypothesis-backed ``Random`` (:func:`hypothesis.strategies.randoms`) feeds the generator, so
tests that use them get Hypothesis's shrinking.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final

from capsim.apdu.builders import PSE_NAME
from capsim.apdu.ins import INS
from capsim.testing.fuzz_card_target import _GET_PTC, _POWER, Action, CardInfo

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "COMMANDS",
    "SequenceGenerator",
    "actions",
    "example_random",
    "mutate",
    "random_apdu",
    "transactions",
]

#: The EMV commands of rule 4, in the order :class:`SequenceGenerator` numbers them.
COMMANDS: Final = (
    "select",
    "gpo",
    "read_record",
    "get_data",
    "verify",
    "generate_ac",
    "get_challenge",
    "external_authenticate",
    "script",
)
_GOOD_TAGS: Final = ((0x9F, 0x17), (0x9F, 0x36), (0x9F, 0x13))
_RAW_CLAS: Final = (0x00, 0x80, 0x84, 0x0C, 0xFF)
#: The issuer-script instructions (EMV Book 3 §10.5), in the order the draws index them.
_SCRIPT_INS: Final = (INS.PIN_CHANGE_UNBLOCK, INS.APPLICATION_BLOCK, INS.APPLICATION_UNBLOCK, INS.CARD_BLOCK)
_AC_TYPES: Final = (0x00, 0x40, 0x80)
_MUTATE: Final = 0.05
_GET_CHALLENGE: Final = bytes.fromhex("0084000008")
_GET_DATA_PTC: Final = -1  # a transaction's optional GET DATA 9F17 (rule 3)
_TAIL: Final = (8, 7, 3)  # issuer script, EXTERNAL AUTHENTICATE, GET DATA


def example_random(seed: int, index: int) -> random.Random:
    """The generator of example ``index`` of the run seeded ``seed`` (rule 1).

    >>> example_random(7, 3).random() == example_random(7, 3).random()
    True
    """
    return random.Random(f"capsim-fuzz-card/{seed}/{index}")


def _apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", *, le: bool = True) -> bytes:
    """A short-form command APDU (``le``: with Le ``00``, i.e. up to 256 bytes)."""
    out = bytes((cla, ins, p1, p2))
    if data:
        out += bytes((len(data),)) + data
    return out + b"\x00" if le else out


class SequenceGenerator:
    """Draws sequences of the grammar (module docstring) for one card.

    Parameters
    ----------
    info:
        The card's AID, DOL lengths and PIN (:class:`~capsim.testing.fuzz_card_target.CardInfo`).
    max_steps:
        Most parts (transactions or single actions) in one sequence.
    """

    def __init__(self, info: CardInfo, *, max_steps: int = 30) -> None:
        self.info = info
        self.max_steps = max(1, max_steps)
        self.select = _apdu(0x00, 0xA4, 0x04, 0x00, info.aid)
        self.gpo = _apdu(0x80, 0xA8, 0x00, 0x00, bytes((0x83, info.pdol_length)) + bytes(info.pdol_length))
        self.pin_block = None if info.pin is None else _pin_block(info.pin)
        self._dol_lengths = (info.cdol1_length, info.cdol2_length)

    # ------------------------------------------------------------------ sequences (rules 2-3)
    def draw(self, rng: random.Random) -> list[Action]:
        """One example's sequence."""
        r = rng.random
        out: list[Action] = []
        for _ in range(1 + int(r() * self.max_steps)):
            if r() < 2 / 3:
                self.transaction(rng, out)
                continue
            kind = int(r() * 3)
            if kind == 0:
                apdu = self.command(rng, int(r() * len(COMMANDS)), 0.8)
                out.append(apdu if r() >= _MUTATE else mutate(rng, apdu))
            elif kind == 1:
                out.append(random_apdu(rng))
            else:
                out.append(_POWER)
        return out

    def transaction(self, rng: random.Random, out: list[Action]) -> list[Action]:
        """Append one transaction (rule 3) to ``out``; return ``out``."""
        r, command, append = rng.random, self.command, out.append
        if r() < 0.75:
            append(self.select)
        append(self.gpo)
        for which in (
            [4] * int(r() * 5)  # VERIFY
            + [_GET_DATA_PTC] * (r() < 0.5)
            + [5] * int(r() * 4)  # GENERATE AC
            + [_TAIL[int(r() * 3)] for _ in range(int(r() * 3))]
        ):
            if which == _GET_DATA_PTC:
                append(_GET_PTC)
                continue
            apdu = command(rng, which, 0.9)
            append(apdu if r() >= _MUTATE else mutate(rng, apdu))
        return out

    # ------------------------------------------------------------------ commands (rule 4)
    def command(self, rng: random.Random, which: int, valid: float) -> bytes:
        """EMV command number ``which`` of :data:`COMMANDS`, well-formed with probability ``valid``."""
        r, randbytes = rng.random, rng.randbytes
        good = r() < valid
        if which == 0:  # SELECT
            if good:
                return self.select
            name = PSE_NAME if r() < 0.5 else randbytes(int(r() * 17))
            return _apdu(0x00, 0xA4, 0x04, int(r() * 256), name)
        if which == 1:  # GET PROCESSING OPTIONS
            if good:
                return self.gpo
            return _apdu(0x80, 0xA8, int(r() * 256), int(r() * 256), randbytes(1 + int(r() * 40)))
        if which == 2:  # READ RECORD
            if good:
                return _apdu(0x00, 0xB2, 1 + int(r() * 4), ((1 + int(r() * 3)) << 3) | 4)
            return _apdu(0x00, 0xB2, int(r() * 256), int(r() * 256))
        if which == 3:  # GET DATA
            p1, p2 = _GOOD_TAGS[int(r() * 3)] if good else (int(r() * 256), int(r() * 256))
            return _apdu(0x80, 0xCA, p1, p2)
        if which == 4:  # VERIFY
            if not good:
                data = randbytes(1 + int(r() * 12))
                return _apdu(0x00, 0x20, int(r() * 256), int(r() * 256), data, le=False)
            if self.pin_block is not None and r() < 1 / 3:
                block = self.pin_block
            elif r() < 0.2:
                block = randbytes(8)
            else:
                block = _pin_block(str(int(r() * 10**12)).zfill(12)[: 4 + int(r() * 9)])
            return _apdu(0x00, 0x20, 0x00, 0x80, block, le=False)
        if which == 5:  # GENERATE AC
            if good:
                p1, p2, length = _AC_TYPES[int(r() * 3)], 0x00, self._dol_lengths[r() < 0.5]
            else:
                p1, p2, length = int(r() * 256), int(r() * 256), 1 + int(r() * 64)
            return _apdu(0x80, 0xAE, p1, p2, randbytes(length))
        if which == 6:  # GET CHALLENGE
            return _GET_CHALLENGE
        if which == 7:  # EXTERNAL AUTHENTICATE
            low = 8 if good else 1
            return _apdu(0x00, 0x82, 0, 0, randbytes(low + int(r() * (17 - low))), le=False)
        # issuer script (CLA 84): PIN CHANGE/UNBLOCK, APPLICATION BLOCK/UNBLOCK, CARD BLOCK
        data = randbytes(4 + int(r() * 21))
        return _apdu(0x84, _SCRIPT_INS[int(r() * 4)], 0, int(r() * 3), data, le=False)


def mutate(rng: random.Random, apdu: bytes) -> bytes:
    """``apdu`` with one mutation (rule 6); never empty (``b""`` is a power cycle)."""
    r = rng.random
    kind = int(r() * 5)
    if kind == 0:
        pos = int(r() * len(apdu))
        return apdu[:pos] + bytes((int(r() * 256),)) + apdu[pos + 1 :]
    if kind == 1 and len(apdu) > 1:
        return apdu[: 1 + int(r() * (len(apdu) - 1))]
    if kind == 2:
        return apdu + rng.randbytes(1 + int(r() * 8))
    if kind == 3 and len(apdu) > 5:
        return apdu[:4] + bytes(((apdu[4] + (1 if r() < 0.5 else -1)) & 0xFF,)) + apdu[5:]
    if r() < 0.5:
        return bytes((_RAW_CLAS[int(r() * 5)],)) + apdu[1:]
    return apdu[:1] + bytes((int(r() * 256),)) + apdu[2:]


def random_apdu(rng: random.Random) -> bytes:
    """A random APDU (rule 5); never empty (``b""`` is a power cycle)."""
    r = rng.random
    if r() < 0.5:
        return rng.randbytes(1 + int(r() * 40))
    header = bytes((_RAW_CLAS[int(r() * 5)], int(r() * 256), int(r() * 256), int(r() * 256)))
    return header + rng.randbytes(int(r() * 37))


def _pin_block(pin: str) -> bytes:
    """The ISO 9564 format-2 block of ``pin`` (4-12 digits)."""
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


# ---------------------------------------------------------------------- Hypothesis strategies
def actions(info: CardInfo, *, max_size: int = 30) -> SearchStrategy[list[Action]]:
    """Hypothesis strategy of whole sequences of the grammar (module docstring), shrinkable."""
    from hypothesis import strategies as st

    generator = SequenceGenerator(info, max_steps=max_size)
    return st.randoms(use_true_random=False).map(generator.draw)


def transactions(info: CardInfo) -> SearchStrategy[list[Action]]:
    """Hypothesis strategy of one CAP transaction of the grammar (rule 3), shrinkable."""
    from hypothesis import strategies as st

    generator = SequenceGenerator(info)
    return st.randoms(use_true_random=False).map(lambda rng: generator.transaction(rng, []))
