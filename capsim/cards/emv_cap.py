"""The EMV-CAP card emulator: :class:`EmvCapCard` (cap-protocol.md §9).

Theory of operation
-------------------
1. Phases (:class:`Phase`): ``IDLE`` (powered, nothing selected), ``PSE`` (the payment system
   environment is selected), ``SELECTED``, ``INITIATED`` (after GET PROCESSING OPTIONS),
   ``ONLINE`` (after GENERATE AC #1) and ``COMPLETED`` (after GENERATE AC #2). Power-on and
   reset go to ``IDLE`` and clear only volatile data.
2. The command table (:data:`ROUTES`) maps ``(CLA, INS)`` to a handler and the phases in which
   it is allowed; anything else is ``6985`` (phase), ``6D00`` (INS) or ``6E00`` (CLA).
3. Every persistent change (ATC, PTC, PIN, lifecycle, history) goes through
   :meth:`EmvCapCard._commit`, which hands the new :class:`CardState` to ``on_state_change``
   *before* the R-APDU that reveals it. If the callback raises, the card answers ``6581`` and
   keeps its old state. GET PROCESSING OPTIONS therefore persists ATC + 1 before answering.
4. VERIFY is tear-safe: once the block is well formed and the PIN not blocked, the card
   commits PTC − 1 *before* it compares the PIN, and only a right PIN commits the try limit
   back (a second write). Power loss or a failed write at any moment therefore never leaves
   an unspent try behind a comparison whose result could be seen (the answer, or a write
   that only one outcome causes): a wrong PIN answers ``63Cx`` with the decrement already
   on file, and a blocked PIN (PTC 0) answers ``6983`` without any comparison.
5. Bad input never changes state: every check runs before the first commit of a command.
6. The CVR/IAD comes from :func:`capsim.iad.build_iad` with the history snapshot taken
   at GET PROCESSING OPTIONS. A GENERATE AC #1 that returns an ARQC marks the history "last
   online transaction not completed" at once (so power loss before GAC #2 counts as not
   completed); only GENERATE AC #2 after successful issuer authentication (ARPC from CDOL2
   ``91`` or EXTERNAL AUTHENTICATE) clears it (cap-protocol.md §9.6).
7. ``process`` never raises: unexpected exceptions answer ``6F00`` and are logged without
   command data.
8. Calling ``process`` on a card that is powered off powers it on first (a cold reset), as a
   reader does before its first command.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import replace
from enum import IntEnum

from capsim.apdu.builders import PSE_NAME
from capsim.apdu.ins import INS
from capsim.apdu.sw import SW
from capsim.cards.base import ClosableCard, Command, Dispatcher, Handler, StatusError
from capsim.cards.profile import CardProfile
from capsim.cards.scripts import (
    ScriptKeys,
    decipher_new_pin,
    script_keys,
    split_and_verify,
)
from capsim.cards.state import CardState, Lifecycle
from capsim.crypto import AcCalculator, cvn_spec, generate_arpc
from capsim.errors import ValidationError
from capsim.iad import AcType, CvrFlag, build_iad
from capsim.tlv import encode, parse_dol

__all__ = ["PSE_NAME", "EmvCapCard", "Phase", "StateCallback"]

_log = logging.getLogger(__name__)

_PSE_SFI = 1
#: ARCs that approve an online authorisation (EMV Book 4 Annex A6).
_APPROVED_ARC = frozenset({b"00", b"10", b"11"})
#: ARCs a terminal uses when it could not go online.
_UNABLE_ONLINE_ARC = frozenset({b"Y3", b"Z3"})

StateCallback = Callable[[CardState], None]


class Phase(IntEnum):
    """Volatile card phase (cap-protocol.md §9.3)."""

    IDLE = 0
    PSE = 1
    SELECTED = 2
    INITIATED = 3
    ONLINE = 4
    COMPLETED = 5


_ANY = frozenset(Phase)
_APP = frozenset({Phase.SELECTED, Phase.INITIATED, Phase.ONLINE, Phase.COMPLETED})
_RECORDS = _APP | {Phase.PSE}
_AFTER_GAC1 = frozenset({Phase.ONLINE, Phase.COMPLETED})
_GAC = frozenset({Phase.INITIATED, Phase.ONLINE, Phase.COMPLETED})


def _dol_offset(dol: bytes, tag: int) -> tuple[int, int] | None:
    pos = 0
    for entry in parse_dol(dol):
        if entry.tag == tag:
            return pos, entry.length
        pos += entry.length
    return None


def _dol_length(dol: bytes) -> int:
    return sum(e.length for e in parse_dol(dol))


class EmvCapCard(ClosableCard):
    """An emulated EMV card with one CAP application (cap-protocol.md §9).

    Parameters
    ----------
    profile:
        A personalised :class:`CardProfile` (PAN and ICC keys present).
    state:
        The persistent state to start from.
    rng:
        ``rng(n)`` returns ``n`` random bytes (GET CHALLENGE). The pure core never draws
        randomness itself; :func:`capsim.cards.new_card` passes ``os.urandom``.
    on_state_change:
        Called with every new :class:`CardState` before the R-APDU that reveals it. If it
        raises, the card answers ``6581`` and keeps the old state.
    on_close:
        Called once by :meth:`close` (a card file releases its lock there).
    """

    def __init__(
        self,
        profile: CardProfile,
        state: CardState,
        *,
        rng: Callable[[int], bytes],
        on_state_change: StateCallback | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if not profile.is_personalised:
            raise ValidationError(
                "profile: expected a personalised profile (PAN and ICC keys); see new_card()"
            )
        self._profile = profile
        self._state = state
        self._rng = rng
        self._on_state_change = on_state_change
        self._on_close = on_close
        self._closed = False
        # static data, computed once
        self._fci = profile.fci
        self._pse_fci = encode(0x6F, encode(0x84, PSE_NAME) + encode(0xA5, encode(0x88, bytes([_PSE_SFI]))))
        entry = encode(0x4F, profile.aid)
        if profile.label:
            entry += encode(0x50, profile.label.encode("ascii"))
        entry += encode(0x87, b"\x01")
        self._pse_records = {(_PSE_SFI, 1): encode(0x70, encode(0x61, entry))}
        self._records = {(r.sfi, r.number): r.data for r in profile.records}
        if profile.gpo_format == 1:
            self._gpo_answer = encode(0x80, profile.aip + profile.afl)
        else:
            self._gpo_answer = encode(0x77, encode(0x82, profile.aip) + encode(0x94, profile.afl))
        self._pdol_len = _dol_length(profile.pdol) if profile.pdol else 0
        self._cdol1_len = _dol_length(profile.cdol1)
        self._cdol2_len = _dol_length(profile.cdol2)
        self._un_pos = _dol_offset(profile.cdol1, 0x9F37)
        self._arc_pos = _dol_offset(profile.cdol2, 0x8A)
        self._iad91_pos = _dol_offset(profile.cdol2, 0x91)
        self._arpc_method = cvn_spec(profile.cvn).arpc_method
        self._ac_calc = AcCalculator(profile.cvn, profile.mk_ac)  # same result as generate_ac
        self._dispatcher = Dispatcher(self._routes(), phase=lambda: self._phase)
        self._powered = True
        self._clear_volatile()

    # ------------------------------------------------------------------ CardOS
    @property
    def atr(self) -> bytes:
        """The answer to reset."""
        return self._profile.atr

    @property
    def profile(self) -> CardProfile:
        """The static personalisation."""
        return self._profile

    @property
    def state(self) -> CardState:
        """The current persistent state."""
        return self._state

    @property
    def phase(self) -> Phase:
        """The current volatile phase."""
        return self._phase

    def power_on(self) -> bytes:
        """Cold reset: clear volatile state, return the ATR."""
        self._powered = True
        self._clear_volatile()
        return self._profile.atr

    def reset(self) -> bytes:
        """Warm reset: clear volatile state, return the ATR."""
        return self.power_on()

    def power_off(self) -> None:
        """Remove power; the volatile state is lost."""
        self._powered = False
        self._clear_volatile()

    def process(self, apdu: bytes) -> bytes:
        """Answer one C-APDU. Never raises; the answer always ends in a status word."""
        try:
            if not self._powered:
                self.power_on()
            return self._dispatcher.dispatch(bytes(apdu))
        except Exception as exc:  # the card must answer whatever happens
            ins = apdu[1] if isinstance(apdu, bytes | bytearray) and len(apdu) > 1 else 0
            _log.error("card: unexpected %s while processing INS %02X", type(exc).__name__, ins)
            return b"\x6f\x00"

    def __repr__(self) -> str:
        return f"EmvCapCard(profile={self._profile.name!r}, atc={self._state.atc}, phase={self._phase.name})"

    # ------------------------------------------------------------------ internals
    def _routes(self) -> dict[tuple[int, int], tuple[Handler, frozenset[Phase]]]:
        script_phases = _AFTER_GAC1
        return {
            (0x00, INS.SELECT): (self._select, _ANY),
            (0x80, INS.GPO): (self._gpo, frozenset({Phase.SELECTED})),
            (0x00, INS.READ_RECORD): (self._read_record, _RECORDS),
            (0x80, INS.GET_DATA): (self._get_data, _APP),
            (0x00, INS.VERIFY): (self._verify, frozenset({Phase.INITIATED})),
            (0x80, INS.GENERATE_AC): (self._generate_ac, _GAC),
            (0x00, INS.GET_CHALLENGE): (self._get_challenge, _ANY),
            (0x00, INS.EXTERNAL_AUTHENTICATE): (self._external_authenticate, frozenset({Phase.ONLINE})),
            (0x84, INS.PIN_CHANGE_UNBLOCK): (self._script, script_phases),
            (0x84, INS.APPLICATION_BLOCK): (self._script, script_phases),
            (0x84, INS.APPLICATION_UNBLOCK): (self._script, script_phases),
            (0x84, INS.CARD_BLOCK): (self._script, script_phases),
        }

    def _clear_volatile(self) -> None:
        self._phase = Phase.IDLE
        self._clear_transaction()

    def _clear_transaction(self) -> None:
        self._txn_history = self._state.history
        self._pin_flags: set[CvrFlag] = set()
        self._atc_bytes = b""
        self._gac1: AcType | None = None
        self._ac1 = b""
        self._un = bytes(4)
        self._issuer_auth: bool | None = None
        self._script_keys: ScriptKeys | None = None

    def _commit(self, new: CardState) -> None:
        """Persist first, then adopt (architecture.md §5)."""
        if new == self._state:
            return
        if self._on_state_change is not None:
            try:
                self._on_state_change(new)
            except Exception as exc:
                _log.error("card: persisting the state failed (%s); answering 6581", type(exc).__name__)
                raise StatusError(SW.MEMORY_FAILURE) from exc
        self._state = new

    # ------------------------------------------------------------------ handlers
    def _select(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x02):
            raise StatusError(SW.INCORRECT_P1_P2)
        name = cmd.data
        self._phase = Phase.IDLE
        self._clear_transaction()
        if self._state.lifecycle is Lifecycle.CARD_BLOCKED:
            raise StatusError(SW.FUNCTION_NOT_SUPPORTED)
        if not name or cmd.p2 == 0x02:
            raise StatusError(SW.FILE_NOT_FOUND)
        if name == PSE_NAME and self._profile.pse:
            self._phase = Phase.PSE
            return self._pse_fci
        aid = self._profile.aid
        if name == aid or (len(name) >= 5 and aid.startswith(name)):
            self._phase = Phase.SELECTED
            if self._state.lifecycle is Lifecycle.APP_BLOCKED:
                raise StatusError(SW.SELECTED_FILE_INVALIDATED, self._fci)
            return self._fci
        raise StatusError(SW.FILE_NOT_FOUND)

    def _gpo(self, cmd: Command) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW.INCORRECT_P1_P2)
        data = cmd.data
        if len(data) < 2 or data[0] != 0x83 or data[1] != self._pdol_len or len(data) != 2 + self._pdol_len:
            raise StatusError(SW.WRONG_LENGTH)
        state = self._state
        if state.atc >= 0xFFFF:
            raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
        history = state.history
        new_history = history
        if history.script_count or history.script_failed:
            new_history = replace(history, script_count=0, script_failed=False)
        self._commit(replace(state, atc=state.atc + 1, history=new_history))
        self._txn_history = history
        self._atc_bytes = self._state.atc.to_bytes(2, "big")
        self._phase = Phase.INITIATED
        return self._gpo_answer

    def _read_record(self, cmd: Command) -> bytes:
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0 or cmd.p2 >> 3 == 0:
            raise StatusError(SW.INCORRECT_P1_P2)
        table = self._pse_records if self._phase is Phase.PSE else self._records
        record = table.get((cmd.p2 >> 3, cmd.p1))
        if record is None:
            raise StatusError(SW.RECORD_NOT_FOUND)
        return record

    def _get_data(self, cmd: Command) -> bytes:
        tag = (cmd.p1 << 8) | cmd.p2
        state = self._state
        if tag == 0x9F17:
            return b"\x9f\x17\x01" + bytes((state.ptc,))
        if tag == 0x9F36:
            return b"\x9f\x36\x02" + state.atc.to_bytes(2, "big")
        if tag == 0x9F13:
            return b"\x9f\x13\x02" + state.last_online_atc.to_bytes(2, "big")
        raise StatusError(SW.REFERENCED_DATA_NOT_FOUND)

    def _verify(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise StatusError(SW.INCORRECT_P1_P2)
        block = cmd.data
        if len(block) != 8:
            raise StatusError(SW.WRONG_LENGTH)
        state = self._state
        if state.ptc == 0:
            raise StatusError(SW.PIN_BLOCKED)
        pin = _parse_iso2_block(block)
        # Rule 4: the try is spent durably *before* the comparison, so no outcome of the
        # comparison (answer, timing, a second write) can be observed while the old
        # counter is still on file. A right PIN gives the try back with a second commit.
        left = state.ptc - 1
        self._commit(replace(state, ptc=left))
        flags = self._pin_flags
        if hmac.compare_digest(pin.encode(), state.pin.encode()):
            self._commit(replace(self._state, ptc=self._profile.pin_try_limit))
            flags.discard(CvrFlag.OFFLINE_PIN_FAILED)
            flags.update((CvrFlag.OFFLINE_PIN_PERFORMED, CvrFlag.OFFLINE_PIN_SUCCESSFUL))
            return b""
        flags.discard(CvrFlag.OFFLINE_PIN_SUCCESSFUL)
        flags.update((CvrFlag.OFFLINE_PIN_PERFORMED, CvrFlag.OFFLINE_PIN_FAILED))
        raise StatusError(0x63C0 | left)

    def _txn_flags(self) -> set[CvrFlag]:
        flags = set(self._pin_flags)
        if self._state.ptc == 0:
            flags.add(CvrFlag.PIN_TRY_LIMIT_EXCEEDED)
        if self._issuer_auth is not None:
            flags.add(CvrFlag.ISSUER_AUTH_PERFORMED)
            if not self._issuer_auth:
                flags.add(CvrFlag.ISSUER_AUTH_FAILED)
        return flags

    def _generate_ac(self, cmd: Command) -> bytes:
        if self._phase is Phase.COMPLETED:
            raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
        if cmd.p2 != 0x00 or cmd.p1 & 0x3F or cmd.p1 & 0xC0 == 0xC0:
            raise StatusError(SW.INCORRECT_P1_P2)
        requested = AcType(cmd.p1 & 0xC0)
        if self._phase is Phase.INITIATED:
            return self._first_gac(cmd, requested)
        return self._second_gac(cmd, requested)

    def _cryptogram(self, data: bytes, iad: bytes) -> bytes:
        return self._ac_calc.generate(data, self._profile.aip, self._atc_bytes, iad, un=self._un)

    def _respond(self, ac_type: AcType, ac: bytes, iad: bytes) -> bytes:
        cid = int(ac_type)
        if self._state.ptc == 0:
            cid |= 0x0A  # advice required, reason "PIN try limit exceeded" (EMV Book 3 Table 14)
        atc = self._atc_bytes
        if self._profile.response_format == 1:
            return encode(0x80, bytes((cid,)) + atc + ac + iad)
        return encode(
            0x77,
            encode(0x9F27, bytes((cid,))) + encode(0x9F36, atc) + encode(0x9F26, ac) + encode(0x9F10, iad),
        )

    def _first_gac(self, cmd: Command, requested: AcType) -> bytes:
        if len(cmd.data) != self._cdol1_len:
            raise StatusError(SW.WRONG_LENGTH)
        if cmd.p1 & 0x10:
            raise StatusError(SW.INCORRECT_P1_P2)
        p = self._profile
        state = self._state
        blocked = state.lifecycle is not Lifecycle.ACTIVE
        ac_type = AcType.AAC if blocked or requested is AcType.AAC else AcType.ARQC
        if self._un_pos is not None:
            off, length = self._un_pos
            un = cmd.data[off : off + length]
            self._un = (bytes(4) + un)[-4:] if len(un) < 4 else un[:4]
        iad = build_iad(
            p.iad_template,
            p.iad_format,
            history=self._txn_history,
            flags=self._txn_flags(),
            gac1=ac_type,
            pin_tries=state.ptc,
        )
        ac = self._cryptogram(cmd.data, iad)
        if ac_type is AcType.ARQC and not state.history.last_online_not_completed:
            self._commit(replace(state, history=replace(state.history, last_online_not_completed=True)))
        self._gac1 = ac_type
        self._ac1 = ac
        self._phase = Phase.ONLINE
        return self._respond(ac_type, ac, iad)

    def _check_arpc(self, data: bytes) -> bool:
        """Issuer authentication (emv-crypto.md §6): True when the ARPC matches."""
        if self._gac1 is not AcType.ARQC:
            return False
        p = self._profile
        try:
            if self._arpc_method == 1:
                if len(data) < 10:
                    return False
                arpc, arc = data[:8], data[8:10]
                expected = generate_arpc(
                    p.cvn, p.mk_ac, arqc=self._ac1, atc=self._atc_bytes, un=self._un, arc=arc
                )
            else:
                if len(data) < 8:
                    return False
                arpc, csu, prop = data[:4], data[4:8], data[8:]
                expected = generate_arpc(
                    p.cvn,
                    p.mk_ac,
                    arqc=self._ac1,
                    atc=self._atc_bytes,
                    un=self._un,
                    csu=csu,
                    proprietary=prop,
                )
        except ValidationError:
            return False
        return hmac.compare_digest(arpc, expected)

    def _record_issuer_auth(self, ok: bool) -> None:
        self._issuer_auth = ok
        if not ok and not self._state.history.issuer_auth_failed:
            state = self._state
            self._commit(replace(state, history=replace(state.history, issuer_auth_failed=True)))

    def _external_authenticate(self, cmd: Command) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW.INCORRECT_P1_P2)
        if not 8 <= len(cmd.data) <= 16:
            raise StatusError(SW.WRONG_LENGTH)
        if self._issuer_auth is not None:
            raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
        ok = self._check_arpc(cmd.data)
        self._record_issuer_auth(ok)
        if not ok:
            raise StatusError(SW.AUTHENTICATION_FAILED)
        return b""

    def _second_gac(self, cmd: Command, requested: AcType) -> bytes:
        if requested is AcType.ARQC or cmd.p1 & 0x10:
            raise StatusError(SW.INCORRECT_P1_P2)
        if len(cmd.data) != self._cdol2_len:
            raise StatusError(SW.WRONG_LENGTH)
        arc = b""
        if self._arc_pos is not None:
            off, length = self._arc_pos
            arc = cmd.data[off : off + length]
        if self._iad91_pos is not None and self._issuer_auth is None:
            off, length = self._iad91_pos
            issuer_data = cmd.data[off : off + length]
            if any(issuer_data):
                self._record_issuer_auth(self._check_arpc(issuer_data))
        state = self._state
        approved = arc in _APPROVED_ARC
        ac_type = AcType.AAC
        if (
            requested is AcType.TC
            and approved
            and self._gac1 is AcType.ARQC
            and self._issuer_auth is not False
            and state.lifecycle is Lifecycle.ACTIVE
        ):
            ac_type = AcType.TC
        flags = self._txn_flags()
        if arc in _UNABLE_ONLINE_ARC:
            flags.add(CvrFlag.UNABLE_TO_GO_ONLINE)
        p = self._profile
        if self._gac1 is None:  # unreachable: phase ONLINE implies GAC #1 ran
            raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
        iad = build_iad(
            p.iad_template,
            p.iad_format,
            history=self._txn_history,
            flags=flags,
            gac1=self._gac1,
            gac2=ac_type,
            pin_tries=state.ptc,
        )
        ac = self._cryptogram(cmd.data, iad)
        history = state.history
        new_state = state
        if self._issuer_auth is True:
            new_state = replace(
                state,
                last_online_atc=state.atc,
                history=replace(
                    history,
                    last_online_not_completed=False,
                    new_card=False,
                    issuer_auth_failed=False,
                    issuer_auth_not_performed=False,
                ),
            )
        elif self._issuer_auth is None and approved and self._gac1 is AcType.ARQC:
            new_state = replace(state, history=replace(history, issuer_auth_not_performed=True))
        self._commit(new_state)
        self._phase = Phase.COMPLETED
        return self._respond(ac_type, ac, iad)

    def _get_challenge(self, cmd: Command) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW.INCORRECT_P1_P2)
        if cmd.data:
            raise StatusError(SW.WRONG_LENGTH)
        return bytes(self._rng(8))

    def _script(self, cmd: Command) -> bytes:
        p = self._profile
        if self._script_keys is None:
            self._script_keys = script_keys(p, atc=self._atc_bytes, arqc=self._ac1)
        keys = self._script_keys
        data = split_and_verify(p, keys, cmd, atc=self._atc_bytes, arqc=self._ac1)
        state = self._state
        history = state.history
        if data is None:
            if not history.script_failed:
                self._commit(replace(state, history=replace(history, script_failed=True)))
            raise StatusError(SW.SM_DATA_INCORRECT)
        processed = replace(history, script_count=min(history.script_count + 1, 15))
        try:
            new_state = self._apply_script(cmd, data, state)
        except StatusError:
            self._commit(replace(state, history=replace(processed, script_failed=True)))
            raise
        self._commit(replace(new_state, history=processed))
        if new_state.lifecycle is Lifecycle.CARD_BLOCKED:
            self._phase = Phase.IDLE
        return b""

    def _apply_script(self, cmd: Command, data: bytes, state: CardState) -> CardState:
        p = self._profile
        if cmd.ins == INS.PIN_CHANGE_UNBLOCK:
            if cmd.p1 != 0x00 or cmd.p2 not in (0x00, 0x01, 0x02):
                raise StatusError(SW.INCORRECT_P1_P2)
            if cmd.p2 == 0x00:
                if data:
                    raise StatusError(SW.WRONG_DATA)
                return replace(state, ptc=p.pin_try_limit)
            if self._script_keys is None:  # unreachable: set by _script
                raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
            pin = decipher_new_pin(p, self._script_keys, data, p2=cmd.p2, current_pin=state.pin)
            return replace(state, pin=pin, ptc=p.pin_try_limit)
        if cmd.p1 or cmd.p2:
            raise StatusError(SW.INCORRECT_P1_P2)
        if data:
            raise StatusError(SW.WRONG_DATA)
        if cmd.ins == INS.APPLICATION_BLOCK:
            if state.lifecycle is Lifecycle.ACTIVE:
                return replace(state, lifecycle=Lifecycle.APP_BLOCKED)
            return state
        if cmd.ins == INS.APPLICATION_UNBLOCK:
            if state.lifecycle is Lifecycle.APP_BLOCKED:
                return replace(state, lifecycle=Lifecycle.ACTIVE)
            return state
        return replace(state, lifecycle=Lifecycle.CARD_BLOCKED)


def _parse_iso2_block(block: bytes) -> str:
    """Plaintext ISO 9564 format 2 PIN block → digits; ``6A80`` when malformed (§9.5)."""
    nibbles = block.hex().upper()
    if nibbles[0] != "2":
        raise StatusError(SW.WRONG_DATA)
    n = int(nibbles[1], 16)
    if not 4 <= n <= 12:
        raise StatusError(SW.WRONG_DATA)
    digits, fill = nibbles[2 : 2 + n], nibbles[2 + n :]
    if not digits.isdigit() or fill != "F" * len(fill):
        raise StatusError(SW.WRONG_DATA)
    return digits
