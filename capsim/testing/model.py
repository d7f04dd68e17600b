"""A black-box reference model of an EMV-CAP card, checking the invariants of cap-protocol.md §9.

:class:`CardModel` watches (command, response) pairs of *any* card (capsim's emulator, a
third-party emulator, a real card in a reader) and reports the first broken invariant as a
:class:`Violation`. It never sends anything itself; it only needs what it can observe.

Invariants (numbered as in ``docs/fuzzing.md``)
-----------------------------------------------
1. ``sw``: every answer ends in a status word of ISO 7816-4 (``61``–``6E`` or ``9000``); data
   comes only with ``9000`` and the warnings ``62xx``/``63xx``.
2. ``crash``: ``6F00`` (no precise diagnosis) never appears: capsim's card answers it only
   when a handler failed unexpectedly.
3. ``atc``: the ATC never decreases; every accepted GET PROCESSING OPTIONS raises it by
   exactly one (and never past ``FFFF``); nothing else changes it; a GENERATE AC answer shows
   the ATC of its transaction.
4. ``ptc``: a wrong PIN answers ``63Cx`` with ``x`` = the previous PTC − 1; a correct PIN
   answers ``9000`` and restores the limit; at PTC 0 every VERIFY answers ``6983``/``6984``
   and changes nothing; nothing else changes the PTC (issuer scripts excepted).
5. ``sequence``: GET PROCESSING OPTIONS only right after SELECT; VERIFY only between GPO and
   GENERATE AC #1; GENERATE AC #1 only after GPO, #2 only after #1, never a third; the AC
   type returned is never above the one requested (AAC < ARQC < TC), #2 never returns an
   ARQC, and a TC at #2 needs an ARQC at #1 (cap-protocol.md §9.3–§9.4).

>>> m = CardModel(aid=bytes.fromhex("A0000000048002"), pin="1234", pin_try_limit=3)
>>> m.observe(bytes.fromhex("00A4040007A000000004800200"), bytes.fromhex("6F009000"))
>>> m.observe(bytes.fromhex("80CA9F1700"), bytes.fromhex("9F1701039000"))
>>> m.observe(bytes.fromhex("0020008008241234FFFFFFFFFF"), bytes.fromhex("63C2")).invariant
'sequence'
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from capsim.errors import ApduFormatError

__all__ = [
    "BrokenError",
    "CardModel",
    "Txn",
    "Violation",
    "checked_answer",
    "is_valid_sw",
    "parse_pin_block",
]

_VALID_SW1 = frozenset({0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E})
_AC_RANK = {0x00: 0, 0x80: 1, 0x40: 2}  # AAC < ARQC < TC (EMV Book 3 §6.5.5.4)
_AC_NAME = {0x00: "AAC", 0x80: "ARQC", 0x40: "TC", 0xC0: "RFU"}


class Txn(Enum):
    """Where the model believes the card's transaction is."""

    UNKNOWN = "unknown"  # after an answer the model cannot interpret
    IDLE = "idle"  # nothing selected (power-up)
    SELECTED = "selected"
    INITIATED = "initiated"  # after GPO
    GAC1 = "gac1"
    GAC2 = "gac2"


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One broken invariant.

    Attributes
    ----------
    invariant:
        ``sw``, ``crash``, ``atc``, ``ptc`` or ``sequence`` (module docstring), or ``exception``
        and ``hang`` for the harness's own checks.
    detail:
        One line saying what was expected and what was seen (no PIN, key or PAN).
    index:
        Index of the exchange that showed it (``-1`` when not tied to one).
    """

    invariant: str
    detail: str
    index: int = -1


def is_valid_sw(sw: int) -> bool:
    """Whether ``sw`` is a status word ISO 7816-4 defines for an answer (``6F00`` excluded).

    >>> is_valid_sw(0x9000), is_valid_sw(0x63C2), is_valid_sw(0x6F00), is_valid_sw(0x9001)
    (True, True, False, False)
    """
    return sw == 0x9000 or (sw >> 8) in _VALID_SW1


def checked_answer(rsp: bytes, *, data_with: tuple[int, ...]) -> tuple[int, bytes]:
    """The status word and data of an answer that any ISO 7816-4 card may give: at least a
    status word, not ``6F00`` (the card failed internally), a valid status word, and data only
    with a status word whose first byte is in ``data_with`` (:class:`BrokenError` otherwise).

    >>> checked_answer(bytes.fromhex("019000"), data_with=(0x90,))
    (36864, b'\\x01')
    """
    if len(rsp) < 2:
        raise BrokenError("sw", f"answer of {len(rsp)} byte(s): no status word")
    sw = int.from_bytes(rsp[-2:], "big")
    data = rsp[:-2]
    if sw == 0x6F00:
        raise BrokenError("crash", "6F00: the card failed internally")
    if not is_valid_sw(sw):
        raise BrokenError("sw", f"status word {sw:04X} is not an ISO 7816-4 answer")
    if data and (sw >> 8) not in data_with:
        raise BrokenError("sw", f"{len(data)} data byte(s) with the error status word {sw:04X}")
    return sw, data


def parse_pin_block(block: bytes) -> str | None:
    """The PIN in an ISO 9564 format-2 block, or ``None`` when the block is malformed.

    >>> parse_pin_block(bytes.fromhex("241234FFFFFFFFFF"))
    '1234'
    >>> parse_pin_block(bytes(8)) is None
    True
    """
    if len(block) != 8:
        return None
    text = block.hex().upper()
    if text[0] != "2":
        return None
    n = int(text[1], 16)
    if not 4 <= n <= 12:
        return None
    digits, pad = text[2 : 2 + n], text[2 + n :]
    if not digits.isdigit() or set(pad) - {"F"}:
        return None
    return digits


def _header(cmd: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(CLA, INS, P1, P2, data) of a command (ISO 7816-4 cases), or ``None`` when malformed."""
    n = len(cmd)
    if n < 4:
        return None
    if n in {4, 5}:
        return cmd[0], cmd[1], cmd[2], cmd[3], b""
    lc = cmd[4]
    if lc and n in (5 + lc, 6 + lc):  # short case 3 or 4 (the fast path)
        return cmd[0], cmd[1], cmd[2], cmd[3], cmd[5 : 5 + lc]
    from capsim.apdu import CommandApdu

    try:
        apdu = CommandApdu.from_bytes(cmd)
    except (ApduFormatError, ValueError):
        return None
    return apdu.cla, apdu.ins, apdu.p1, apdu.p2, apdu.data


def _find_tag(data: bytes, tag: bytes) -> bytes | None:
    n = len(tag)
    if data[:n] == tag and len(data) > n and data[n] < 0x80 and len(data) == n + 1 + data[n]:
        return data[n + 1 :]  # the fast path: ``data`` is exactly this one primitive object
    from capsim.tlv import decode, find

    try:
        found = find(decode(data), int.from_bytes(tag, "big"))
    except (ApduFormatError, ValueError):
        return None
    return None if found is None else found.value


class CardModel:
    """The reference model (module docstring). Feed it every exchange with :meth:`observe`.

    Parameters
    ----------
    aid:
        The CAP application's AID, when known (a SELECT of another name is not the app).
    pin:
        The correct PIN, when known (then a wrong PIN accepted is also a violation).
    pin_try_limit:
        The PTC limit, when known (a correct PIN must restore it).
    atc, ptc:
        Start values, when known (otherwise learnt from GET DATA ``9F36`` / ``9F17``).
    """

    def __init__(
        self,
        *,
        aid: bytes | None = None,
        pin: str | None = None,
        pin_try_limit: int | None = None,
        atc: int | None = None,
        ptc: int | None = None,
    ) -> None:
        self.aid = aid
        self.pin = pin
        self.pin_try_limit = pin_try_limit
        self.atc = atc
        self.ptc = ptc
        self.max_atc_seen = atc if atc is not None else -1
        self.last_txn_atc = -1
        self.txn = Txn.IDLE
        self.gac1_type: int | None = None
        self.index = -1

    # ------------------------------------------------------------------ events
    def power_cycle(self) -> None:
        """The card was powered off and on (or reset): volatile state is gone."""
        self.txn = Txn.IDLE
        self.gac1_type = None

    def observe(self, cmd: bytes, rsp: bytes) -> Violation | None:
        """Check one exchange and update the model; return the first broken invariant."""
        self.index += 1
        try:
            self._observe(cmd, rsp)
        except BrokenError as broken:
            return Violation(invariant=broken.invariant, detail=broken.detail, index=self.index)
        return None

    # ------------------------------------------------------------------ internals
    def _observe(self, cmd: bytes, rsp: bytes) -> None:
        sw, data = checked_answer(rsp, data_with=(0x90, 0x62, 0x63))
        parsed = _header(cmd)
        if parsed is None:
            if sw == 0x9000 and len(cmd) < 4:
                raise BrokenError("sw", f"a {len(cmd)}-byte command was accepted with 9000")
            self.txn = Txn.UNKNOWN if sw == 0x9000 else self.txn
            return
        cla, ins, p1, p2, body = parsed
        ok = sw == 0x9000
        if cla == 0x84:
            if ok:  # an issuer script ran: PIN, PTC and lifecycle may change (cap-protocol.md §9.7)
                self.ptc = None
                self.pin = None
            return
        if cla not in (0x00, 0x80):
            return
        if ins == 0xA4:
            self._select(p1, body, sw)
        elif ins == 0xA8:
            self._gpo(ok)
        elif ins == 0xCA:
            self._get_data(p1, p2, data, ok)
        elif ins == 0x20:
            self._verify(p1, p2, body, sw)
        elif ins == 0xAE:
            self._generate_ac(p1, data, ok)

    def _select(self, p1: int, body: bytes, sw: int) -> None:
        if sw in (0x9000, 0x6283) and p1 == 0x04:
            is_app = self.aid is None or body == self.aid or (len(body) >= 5 and self.aid.startswith(body))
            self.txn = Txn.SELECTED if is_app else Txn.IDLE
            self.gac1_type = None
        elif sw != 0x6A86:
            # a refused SELECT may or may not have left the previous selection
            self.txn = Txn.UNKNOWN

    def _gpo(self, ok: bool) -> None:
        if not ok:
            return
        if self.txn not in (Txn.SELECTED, Txn.UNKNOWN):
            raise BrokenError("sequence", f"GET PROCESSING OPTIONS accepted in phase {self.txn.value}")
        if self.atc is not None:
            if self.atc >= 0xFFFF:
                raise BrokenError("atc", "GET PROCESSING OPTIONS accepted with ATC FFFF (the ATC wrapped)")
            self._set_atc(self.atc + 1, "after GET PROCESSING OPTIONS")
        self.txn = Txn.INITIATED
        self.gac1_type = None

    def _set_atc(self, value: int, where: str) -> None:
        if value < self.max_atc_seen:
            seen = self.max_atc_seen
            raise BrokenError("atc", f"ATC {value:04X} {where} is below the ATC {seen:04X} seen before")
        self.atc = value
        self.max_atc_seen = max(self.max_atc_seen, value)

    def _get_data(self, p1: int, p2: int, data: bytes, ok: bool) -> None:
        tag = (p1 << 8) | p2
        if not ok or tag not in (0x9F36, 0x9F17):
            return
        value = _find_tag(data, bytes((p1, p2)))
        if tag == 0x9F36 and value is not None and len(value) == 2:
            atc = int.from_bytes(value, "big")
            if self.atc is not None and atc != self.atc:
                raise BrokenError("atc", f"GET DATA shows ATC {atc:04X}, expected {self.atc:04X}")
            self._set_atc(atc, "in GET DATA")
        elif tag == 0x9F17 and value is not None and len(value) == 1:
            ptc = value[0]
            if self.ptc is not None and ptc != self.ptc:
                raise BrokenError("ptc", f"GET DATA shows PTC {ptc}, expected {self.ptc}")
            self.ptc = ptc

    def _verify(self, p1: int, p2: int, body: bytes, sw: int) -> None:
        if p1 != 0x00 or p2 != 0x80 or len(body) != 8:
            if sw == 0x9000 or sw >> 4 == 0x63C:
                raise BrokenError("sequence", f"malformed VERIFY answered {sw:04X}")
            return
        processed = sw == 0x9000 or sw >> 4 == 0x63C
        if processed and self.txn not in (Txn.INITIATED, Txn.UNKNOWN):
            raise BrokenError("sequence", f"VERIFY answered {sw:04X} in phase {self.txn.value}")
        pin = parse_pin_block(body)
        if sw == 0x9000:
            if self.ptc == 0:
                raise BrokenError("ptc", "VERIFY accepted while the PTC is 0")
            if self.pin is not None and pin != self.pin:
                raise BrokenError("ptc", "VERIFY accepted a wrong PIN")
            self.ptc = self.pin_try_limit
        elif sw >> 4 == 0x63C:
            left = sw & 0x0F
            if self.pin is not None and pin == self.pin:
                raise BrokenError("ptc", f"the correct PIN was refused ({sw:04X})")
            if self.ptc is not None and left != self.ptc - 1:
                expected = f"63C{max(self.ptc - 1, 0):X}"
                raise BrokenError("ptc", f"wrong PIN: {sw:04X} at PTC {self.ptc}, expected {expected}")
            self.ptc = left
        elif sw in (0x6983, 0x6984):
            if self.ptc is not None and self.ptc != 0:
                raise BrokenError("ptc", f"VERIFY answered {sw:04X} (blocked) with PTC {self.ptc}")
            self.ptc = 0

    def _generate_ac(self, p1: int, data: bytes, ok: bool) -> None:
        if not ok:
            return
        requested = p1 & 0xC0
        txn = self.txn
        if txn in (Txn.IDLE, Txn.SELECTED):
            raise BrokenError(
                "sequence", f"GENERATE AC accepted in phase {txn.value} (no GET PROCESSING OPTIONS)"
            )
        if txn is Txn.GAC2:
            raise BrokenError("sequence", "a third GENERATE AC was accepted")
        cid, atc = _parse_gac(data)
        if cid is None or atc is None:
            raise BrokenError("sequence", "GENERATE AC answered 9000 without CID and ATC")
        returned = cid & 0xC0
        if returned not in _AC_RANK:
            raise BrokenError("sequence", f"GENERATE AC returned the reserved AC type {cid:02X}")
        if requested in _AC_RANK and _AC_RANK[returned] > _AC_RANK[requested]:
            raise BrokenError(
                "sequence", f"GENERATE AC returned {_AC_NAME[returned]} for a {_AC_NAME[requested]} request"
            )
        if self.atc is not None and atc != self.atc:
            raise BrokenError("atc", f"GENERATE AC shows ATC {atc:04X}, expected {self.atc:04X}")
        self._set_atc(atc, "in GENERATE AC")
        if txn is Txn.GAC1:
            if returned == 0x80:
                raise BrokenError("sequence", "GENERATE AC #2 returned an ARQC")
            if returned == 0x40 and self.gac1_type not in (0x80, None):
                raise BrokenError("sequence", "GENERATE AC #2 returned a TC after an AAC at #1")
            self.txn = Txn.GAC2
            return
        if txn is Txn.INITIATED and atc <= self.last_txn_atc:
            previous = self.last_txn_atc
            raise BrokenError("atc", f"transaction ATC {atc:04X} is not above the last one {previous:04X}")
        self.last_txn_atc = max(self.last_txn_atc, atc)
        self.gac1_type = returned if txn is Txn.INITIATED else None
        self.txn = Txn.GAC1 if txn is Txn.INITIATED else Txn.UNKNOWN


def _parse_gac(data: bytes) -> tuple[int | None, int | None]:
    """(CID, ATC) of a format-1 (``80``) or format-2 (``77``) GENERATE AC answer."""
    if len(data) >= 2 and data[0] == 0x80:
        value = _find_tag(data, b"\x80")
        if value is None or len(value) < 11:
            return None, None
        return value[0], int.from_bytes(value[1:3], "big")
    if len(data) >= 2 and data[0] == 0x77:
        from capsim.tlv import decode, find

        try:
            objs = decode(data)  # once for both tags
            cid, atc = find(objs, 0x9F27), find(objs, 0x9F36)
        except (ApduFormatError, ValueError):
            return None, None
        if cid is None or atc is None or len(cid.value) != 1 or len(atc.value) != 2:
            return None, None
        return cid.value[0], int.from_bytes(atc.value, "big")
    return None, None


class BrokenError(Exception):
    """An invariant the card broke (``invariant`` names it, ``detail`` says how); each model
    turns it into a :class:`Violation` at the exchange it saw."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(detail)
        self.invariant = invariant
        self.detail = detail
