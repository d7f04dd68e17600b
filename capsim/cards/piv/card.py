"""An emulated PIV card application (NIST SP 800-73-4) on capsim's card OS.

Theory of operation
-------------------
1. **Selection.** The PIV application is selected at power-on. SELECT (``00 A4 04 00``) with
   the AID or any prefix of it of at least 5 bytes (``A000000308``, the 9-byte AID, the full
   11-byte one) answers the application property template ``61{4F PIX, 79{4F RID}, AC{…}}``;
   any other AID answers ``6A82`` and leaves the selection and the security status as they
   were (OpenSC probes other applications' AIDs when it connects). Selecting PIV clears the
   security status, as a YubiKey does: yubico-piv-tool selects PIV to forget a PIN verified
   earlier and then reads the PIN tries left with VERIFY. OpenSC never re-selects while the
   discovery object answers: it checks with GET DATA ``7E`` that PIV is still selected.
2. **One dispatcher.** Commands go through :class:`capsim.cards.base.Dispatcher` (one phase:
   selected); every refusal is a ``StatusError`` turned into a status word at one point.
   Unexpected exceptions answer ``6F00`` and are logged by type only.
3. **Chaining.** Commands with CLA ``10`` are chained (ISO 7816-4 §5.1.1.1): their data are
   kept, answered ``9000``, and prefixed to the data of the next command of the same INS, P1 and
   P2 with CLA ``00``. Answers longer than Le (256 for Le ``00`` or absent) are cut: the first Le
   bytes go with ``61xx`` and GET RESPONSE (``00 C0``) returns the rest, ``xx`` at a time. Any
   other command drops an unread remainder. (OpenSC reads answers of at most 256 bytes and
   probes objects with Le ``08``.)
4. **Security status** (volatile; cleared at power-on, reset and SELECT): the PIN verified, the PIN
   verified right before this command (slot ``9C``, "PIN always", consumed by one use), and the
   card management key authenticated (GENERAL AUTHENTICATE with key ``9B``).
5. **Counters persist before the answer.** A wrong PIN or PUK lowers its counter in the state
   the card persists (the card file) *before* the answer ``63Cx`` leaves: a host that cuts the
   power as soon as it sees the answer, or a kill, can never get the try back. At 0 the
   reference is blocked (``6983``); only RESET RETRY COUNTER with the PUK unblocks the PIN,
   and nothing unblocks the PUK.
6. **Keys never leave.** Private keys are used for GENERAL AUTHENTICATE (raw RSA, ECDSA, ECDH)
   only; GENERATE ASYMMETRIC KEY PAIR returns the public key; no command returns key material.
   Generating keys and writing objects (PUT DATA) need the management key; writing an empty
   object (``53 00``) deletes it, as yubico-piv-tool's ``delete-certificate`` expects (GET DATA
   then answers ``6A82``).

See docs/certificate.md for the command set and the answers OpenSC and yubico-piv-tool expect.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from typing import Final

from capsim.apdu.ins import PivIns
from capsim.apdu.pinblock import parse_piv_reference_block
from capsim.apdu.sw import SW
from capsim.cards.base import ClosableCard, Command, Dispatcher, Handler, StatusError, parse_command
from capsim.cards.piv import keys as pivkeys
from capsim.cards.piv.keys import MGMT_BLOCK, PivAlgorithm
from capsim.cards.piv.state import (
    CERT_OBJECT,
    PIN_PROTECTED_OBJECTS,
    SLOT_PIN,
    PinRule,
    PivState,
    pad_reference,
)
from capsim.errors import ApduFormatError, ValidationError
from capsim.tlv import Tlv, decode, encode

__all__ = ["PIV_AID", "PIV_ATR", "PivCard", "PivIns"]

_log = logging.getLogger(__name__)


def _xor(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


#: The PIV AID: NIST RID ``A000000308``, PIX ``00001000 0100`` (application version 01.00).
PIV_AID: Final = bytes.fromhex("A000000308000010000100")
_RID: Final = PIV_AID[:5]
_PIX: Final = PIV_AID[5:]
#: ATR offering T=0 and T=1 (yubico-piv-tool connects with T=1 only; EMV hosts force T=0).
_ATR_BODY: Final = bytes.fromhex("3B8A8001") + b"capsim-PIV"  # TD1: T=0, TD2: T=1, 10 historical bytes
PIV_ATR: Final = _ATR_BODY + bytes([_xor(_ATR_BODY[1:])])  # TCK: XOR of T0 to the last byte
_VERSION: Final = bytes.fromhex("050403")  # GET VERSION, as yubico-piv-tool expects
_DISCOVERY_TAG: Final = 0x7E
_PIN_REF: Final = 0x80
_PUK_REF: Final = 0x81
_MGMT_REF: Final = 0x9B
_MAX_CHAIN: Final = 8192
#: Algorithm references of the 3DES management key: ``03``, and ``00`` ("3-key 3DES, ECB" in
#: SP 800-78-4 table 6-2), which OpenSC sends when it asks the card for random bytes.
_TDES_REFS: Final = frozenset({0x00, int(PivAlgorithm.TDES)})


_SELECTED: Final = frozenset({1})
_ALGORITHMS: Final = b"".join(encode(0x80, bytes([a])) for a in PivAlgorithm) + encode(0x06, b"\x00")
_APT: Final = encode(0x61, encode(0x4F, _PIX) + encode(0x79, encode(0x4F, _RID)) + encode(0xAC, _ALGORITHMS))
_DISCOVERY: Final = encode(_DISCOVERY_TAG, encode(0x4F, PIV_AID) + encode(0x5F2F, b"\x40\x00"))


def _tries_sw(tries: int) -> StatusError:
    """``63Cx``: wrong, ``x`` tries left (``63C0``: that was the last one)."""
    return StatusError(0x63C0 | tries)


def _template(data: bytes, tag: int) -> dict[int, bytes]:
    """The children of the one ``tag`` template that is the whole of ``data`` (6A80 otherwise)."""
    try:
        objs = decode(data)
    except (ApduFormatError, ValidationError):
        raise StatusError(SW.WRONG_DATA) from None
    if len(objs) != 1 or objs[0].tag != tag or not objs[0].constructed:
        raise StatusError(SW.WRONG_DATA)
    children: dict[int, bytes] = {}
    for child in objs[0].children:
        if child.tag in children:
            raise StatusError(SW.WRONG_DATA)
        children[child.tag] = child.value
    return children


def _object_tag(data: bytes) -> tuple[int, bytes]:
    """The ``5C`` tag list of GET/PUT DATA (one tag) and what follows it."""
    try:
        objs = decode(data)
    except (ApduFormatError, ValidationError):
        raise StatusError(SW.WRONG_DATA) from None
    if not objs or objs[0].tag != 0x5C or not 1 <= len(objs[0].value) <= 3:
        raise StatusError(SW.WRONG_DATA)
    rest = b"".join(obj.to_bytes() for obj in objs[1:]) if len(objs) > 1 else b""
    return int.from_bytes(objs[0].value, "big"), rest


def _reference_value(block: bytes) -> str:
    """A PIN/PUK block (:func:`capsim.apdu.pinblock.parse_piv_reference_block`); 6A80 otherwise."""
    try:
        return parse_piv_reference_block(block)
    except ValidationError:
        raise StatusError(SW.WRONG_DATA) from None


class PivCard(ClosableCard):
    """An emulated PIV card (module docstring).

    Parameters
    ----------
    state:
        The persistent state (PIN, PUK, keys, objects).
    atr:
        The answer to reset.
    rng:
        Randomness for the management-key witness and challenge.
    on_state_change:
        Called with every new state *before* the card answers (the card file writer); an
        exception there answers ``6581`` and keeps the old state.
    on_close:
        Called once by :meth:`close` (releases a card file's lock).
    """

    def __init__(
        self,
        state: PivState,
        *,
        atr: bytes = PIV_ATR,
        rng: Callable[[int], bytes] = os.urandom,
        on_state_change: Callable[[PivState], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if not isinstance(state, PivState):
            raise ValidationError("state: expected a PivState")
        self._state = state
        self._atr = bytes(atr)
        self._rng = rng
        self._on_state_change = on_state_change
        self._on_close = on_close
        self._closed = False
        self._chain: tuple[tuple[int, int, int], bytes] | None = None
        self._dispatcher = Dispatcher(
            {(0x00, int(ins)): (handler, _SELECTED) for ins, handler in self._handlers().items()},
            phase=lambda: 1,
        )
        self._clear_volatile()

    # ------------------------------------------------------------------ the CardOS contract
    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def state(self) -> PivState:
        """The persistent state (never a secret in its ``repr``)."""
        return self._state

    @property
    def pin_verified(self) -> bool:
        """Whether the PIN is verified in this session."""
        return self._pin_ok

    def power_on(self) -> bytes:
        self._clear_volatile()
        return self._atr

    def reset(self) -> bytes:
        self._clear_volatile()
        return self._atr

    def power_off(self) -> None:
        self._clear_volatile()

    def process(self, apdu: bytes) -> bytes:
        """Answer one C-APDU. Never raises; the answer always ends in a status word."""
        try:
            return self._process(bytes(apdu))
        except StatusError as exc:
            return exc.data + exc.sw.to_bytes(2, "big")
        except Exception as exc:  # the card must answer whatever happens
            ins = apdu[1] if isinstance(apdu, bytes | bytearray) and len(apdu) > 1 else 0
            _log.error("piv card: unexpected %s while processing INS %02X", type(exc).__name__, ins)
            self._chain = None
            self._remainder = b""
            return b"\x6f\x00"

    def __repr__(self) -> str:
        return f"PivCard({self._state!r})"

    # ------------------------------------------------------------------ the answer rules (rule 3)
    def _process(self, apdu: bytes) -> bytes:
        cmd = parse_command(apdu)
        if cmd.cla == 0x00 and cmd.ins == PivIns.GET_RESPONSE:
            return self._get_response(cmd)
        self._remainder = b""
        if cmd.cla == 0x10:
            return self._chained(cmd)
        if self._chain is not None:
            (ins, p1, p2), head = self._chain
            self._chain = None
            if (cmd.cla, cmd.ins, cmd.p1, cmd.p2) != (0x00, ins, p1, p2):
                raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
            cmd = Command(0x00, ins, p1, p2, head + cmd.data, cmd.le)
        data = self._dispatcher.route(cmd)
        return self._answer(data, cmd.le)

    def _chained(self, cmd: Command) -> bytes:
        key = (cmd.ins, cmd.p1, cmd.p2)
        head = b""
        if self._chain is not None:
            if self._chain[0] != key:
                self._chain = None
                raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
            head = self._chain[1]
        if len(head) + len(cmd.data) > _MAX_CHAIN:
            self._chain = None
            raise StatusError(SW.WRONG_LENGTH)
        self._chain = (key, head + cmd.data)
        return b"\x90\x00"

    def _answer(self, data: bytes, le: int | None) -> bytes:
        limit = 256 if le is None else le
        if len(data) <= limit:
            return data + b"\x90\x00"
        self._remainder = data[limit:]
        return data[:limit] + bytes([0x61, min(len(self._remainder), 256) & 0xFF])

    def _get_response(self, cmd: Command) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW.INCORRECT_P1_P2)
        if not self._remainder:
            raise StatusError(SW.CONDITIONS_NOT_SATISFIED)
        data, self._remainder = self._remainder, b""
        return self._answer(data, cmd.le)

    # ------------------------------------------------------------------ state
    def _handlers(self) -> dict[PivIns, Handler]:
        return {
            PivIns.SELECT: self._select,
            PivIns.GET_DATA: self._get_data,
            PivIns.PUT_DATA: self._put_data,
            PivIns.VERIFY: self._verify,
            PivIns.CHANGE_REFERENCE_DATA: self._change_reference,
            PivIns.RESET_RETRY_COUNTER: self._reset_retry_counter,
            PivIns.GENERAL_AUTHENTICATE: self._general_authenticate,
            PivIns.GENERATE_KEY_PAIR: self._generate_key_pair,
            PivIns.GET_VERSION: self._get_version,
            PivIns.GET_SERIAL: self._get_serial,
        }

    def _clear_volatile(self) -> None:
        self._pin_ok = False
        self._pin_just_verified = False
        self._mgmt_ok = False
        self._witness: bytes | None = None
        self._challenge: bytes | None = None
        self._chain = None
        self._remainder = b""

    def _commit(self, new: PivState) -> None:
        """Persist first, then adopt (rule 5)."""
        if new == self._state:
            return
        if self._on_state_change is not None:
            try:
                self._on_state_change(new)
            except Exception as exc:
                _log.error("piv card: persisting the state failed (%s); answering 6581", type(exc).__name__)
                raise StatusError(SW.MEMORY_FAILURE) from exc
        self._state = new

    # ------------------------------------------------------------------ selection and data objects
    def _select(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x04 or cmd.p2 != 0x00:
            raise StatusError(SW.INCORRECT_P1_P2)
        if not 5 <= len(cmd.data) <= len(PIV_AID) or not PIV_AID.startswith(cmd.data):
            raise StatusError(SW.FILE_NOT_FOUND)
        self._pin_ok = self._pin_just_verified = self._mgmt_ok = False  # rule 1
        self._witness = self._challenge = None
        return _APT

    def _get_data(self, cmd: Command) -> bytes:
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF):
            raise StatusError(SW.INCORRECT_P1_P2)
        tag, rest = _object_tag(cmd.data)
        if rest:
            raise StatusError(SW.WRONG_DATA)
        if tag == _DISCOVERY_TAG:
            return _DISCOVERY
        if tag in PIN_PROTECTED_OBJECTS and not self._pin_ok:
            raise StatusError(SW.SECURITY_STATUS_NOT_SATISFIED)
        value = self._state.objects.get(tag)
        if value is None:
            raise StatusError(SW.FILE_NOT_FOUND)
        return encode(0x53, value)

    def _put_data(self, cmd: Command) -> bytes:
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF):
            raise StatusError(SW.INCORRECT_P1_P2)
        if not self._mgmt_ok:
            raise StatusError(SW.SECURITY_STATUS_NOT_SATISFIED)
        tag, rest = _object_tag(cmd.data)
        if not 0x5FC101 <= tag <= 0x5FC123:
            raise StatusError(SW.FILE_NOT_FOUND)
        try:
            objs = decode(rest)
        except (ApduFormatError, ValidationError):
            raise StatusError(SW.WRONG_DATA) from None
        if len(objs) != 1 or objs[0].tag != 0x53:
            raise StatusError(SW.WRONG_DATA)
        try:
            value = objs[0].value
            new = self._state.with_object(tag, value) if value else self._state.without_object(tag)
        except ValidationError:
            raise StatusError(SW.NOT_ENOUGH_MEMORY) from None
        self._commit(new)
        return b""

    def _get_version(self, cmd: Command) -> bytes:
        return _VERSION

    def _get_serial(self, cmd: Command) -> bytes:
        return self._state.serial.to_bytes(4, "big")

    # ------------------------------------------------------------------ PIN and PUK (rule 5)
    def _verify(self, cmd: Command) -> bytes:
        if cmd.p2 != _PIN_REF:
            raise StatusError(SW.REFERENCED_DATA_NOT_FOUND)
        if cmd.p1 == 0xFF and not cmd.data:  # reset the security status
            self._pin_ok = self._pin_just_verified = False
            return b""
        if cmd.p1 != 0x00:
            raise StatusError(SW.INCORRECT_P1_P2)
        state = self._state
        if not cmd.data:  # status query
            if state.pin_tries == 0:
                raise StatusError(SW.PIN_BLOCKED)
            if self._pin_ok:
                return b""
            raise _tries_sw(state.pin_tries)
        if state.pin_tries == 0:
            raise StatusError(SW.PIN_BLOCKED)
        offered = _reference_value(cmd.data)
        if not hmac.compare_digest(pad_reference(offered), pad_reference(state.pin)):
            self._pin_ok = self._pin_just_verified = False
            self._commit(state.replace(pin_tries=state.pin_tries - 1))
            raise _tries_sw(self._state.pin_tries)
        self._commit(state.replace(pin_tries=state.pin_limit))
        self._pin_ok = self._pin_just_verified = True
        return b""

    def _check_reference(self, ref: int, offered: str) -> None:
        """Compare ``offered`` with the PIN or PUK; a miss lowers its counter first (rule 5)."""
        state = self._state
        actual, tries, field = (
            (state.pin, state.pin_tries, "pin_tries")
            if ref == _PIN_REF
            else (state.puk, state.puk_tries, "puk_tries")
        )
        if tries == 0:
            raise StatusError(SW.PIN_BLOCKED)
        if not hmac.compare_digest(pad_reference(offered), pad_reference(actual)):
            if ref == _PIN_REF:
                self._pin_ok = self._pin_just_verified = False
            self._commit(state.replace(**{field: tries - 1}))
            raise _tries_sw(tries - 1)

    def _change_reference(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise StatusError(SW.INCORRECT_P1_P2)
        if cmd.p2 not in (_PIN_REF, _PUK_REF):
            raise StatusError(SW.REFERENCED_DATA_NOT_FOUND)
        if len(cmd.data) != 16:
            raise StatusError(SW.WRONG_DATA)
        old, new = _reference_value(cmd.data[:8]), _reference_value(cmd.data[8:])
        self._check_reference(cmd.p2, old)
        state = self._state
        if cmd.p2 == _PIN_REF:
            self._commit(state.replace(pin=new, pin_tries=state.pin_limit))
        else:
            self._commit(state.replace(puk=new, puk_tries=state.puk_limit))
        return b""

    def _reset_retry_counter(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise StatusError(SW.INCORRECT_P1_P2)
        if cmd.p2 != _PIN_REF:
            raise StatusError(SW.REFERENCED_DATA_NOT_FOUND)
        if len(cmd.data) != 16:
            raise StatusError(SW.WRONG_DATA)
        puk, new_pin = _reference_value(cmd.data[:8]), _reference_value(cmd.data[8:])
        self._check_reference(_PUK_REF, puk)
        state = self._state
        self._commit(state.replace(pin=new_pin, pin_tries=state.pin_limit, puk_tries=state.puk_limit))
        return b""

    # ------------------------------------------------------------------ keys (rule 6)
    def _general_authenticate(self, cmd: Command) -> bytes:
        items = _template(cmd.data, 0x7C)
        if cmd.p2 == _MGMT_REF:
            return self._mgmt_authenticate(cmd.p1, items)
        key = self._state.keys.get(cmd.p2)
        if cmd.p2 not in SLOT_PIN:
            raise StatusError(SW.REFERENCED_DATA_NOT_FOUND)
        if key is None or cmd.p1 != key.algorithm:
            raise StatusError(SW.INCORRECT_P1_P2)
        if items.get(0x82) != b"" or len(items) != 2 or not (0x81 in items or 0x85 in items):
            raise StatusError(SW.WRONG_DATA)
        self._check_pin_rule(SLOT_PIN[cmd.p2])
        try:
            result = pivkeys.sign(key, items[0x81]) if 0x81 in items else pivkeys.ecdh(key, items[0x85])
        except ValidationError:
            raise StatusError(SW.WRONG_DATA) from None
        return encode(0x7C, encode(0x82, result))

    def _check_pin_rule(self, rule: PinRule) -> None:
        if rule is PinRule.ALWAYS:
            ok, self._pin_just_verified = self._pin_just_verified, False
        else:
            ok = rule is PinRule.NEVER or self._pin_ok
        if not ok:
            raise StatusError(SW.SECURITY_STATUS_NOT_SATISFIED)

    def _mgmt_authenticate(self, alg: int, items: dict[int, bytes]) -> bytes:
        if alg not in _TDES_REFS:
            raise StatusError(SW.INCORRECT_P1_P2)
        key = self._state.mgmt_key
        witness, self._witness = self._witness, None
        challenge, self._challenge = self._challenge, None
        if items == {0x80: b""}:  # mutual authentication, step 1: the encrypted witness
            self._mgmt_ok = False
            self._witness = self._rng(MGMT_BLOCK)
            return encode(0x7C, encode(0x80, pivkeys.mgmt_encrypt(key, self._witness)))
        if set(items) == {0x80, 0x81} and witness is not None:  # step 2: witness back, host's challenge
            if len(items[0x80]) != MGMT_BLOCK or len(items[0x81]) != MGMT_BLOCK:
                raise StatusError(SW.WRONG_DATA)
            if not hmac.compare_digest(items[0x80], witness):
                raise StatusError(SW.SECURITY_STATUS_NOT_SATISFIED)
            self._mgmt_ok = True
            return encode(0x7C, encode(0x82, pivkeys.mgmt_encrypt(key, items[0x81])))
        if items == {0x81: b""}:  # external authentication, step 1: the card's challenge
            self._mgmt_ok = False
            self._challenge = self._rng(MGMT_BLOCK)
            return encode(0x7C, encode(0x81, self._challenge))
        if set(items) == {0x82} and challenge is not None:  # step 2: the host's encrypted challenge
            if len(items[0x82]) != MGMT_BLOCK:
                raise StatusError(SW.WRONG_DATA)
            if not hmac.compare_digest(items[0x82], pivkeys.mgmt_encrypt(key, challenge)):
                raise StatusError(SW.SECURITY_STATUS_NOT_SATISFIED)
            self._mgmt_ok = True
            return b""
        self._mgmt_ok = False
        raise StatusError(SW.WRONG_DATA)

    def _generate_key_pair(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise StatusError(SW.INCORRECT_P1_P2)
        if cmd.p2 not in SLOT_PIN:
            raise StatusError(SW.INCORRECT_P1_P2)
        if not self._mgmt_ok:
            raise StatusError(SW.SECURITY_STATUS_NOT_SATISFIED)
        items = _template(cmd.data, 0xAC)
        alg = items.get(0x80, b"")
        if len(alg) != 1 or alg[0] not in {a.value for a in PivAlgorithm} or alg[0] == PivAlgorithm.TDES:
            raise StatusError(SW.WRONG_DATA)
        key = pivkeys.generate_key(PivAlgorithm(alg[0]))
        self._commit(self._state.with_key(cmd.p2, key))
        return pivkeys.public_template(key)


def certificate_object(der: bytes) -> bytes:
    """The content of a certificate object (``53`` value): ``70`` DER, ``71 00``, ``FE`` empty."""
    return encode(0x70, der) + encode(0x71, b"\x00") + encode(0xFE, b"")


def certificate_of(state: PivState, slot: int) -> bytes | None:
    """The DER certificate stored for ``slot``, if any."""
    value = state.objects.get(CERT_OBJECT[slot])
    if value is None:
        return None
    try:
        for obj in decode(value):
            if isinstance(obj, Tlv) and obj.tag == 0x70:
                return obj.value
    except (ApduFormatError, ValidationError):
        return None
    return None
