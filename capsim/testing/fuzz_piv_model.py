"""The reference model of a PIV card for ``capsim fuzz card``: what every answer must respect.

:class:`PivModel` is fed every exchange (and every power cycle) in order, like the EMV
:class:`~capsim.testing.model.CardModel`, and returns the first broken invariant. It mirrors
the rules of the emulated card (:mod:`capsim.cards.piv.card`) and is *permissive where it
cannot know*: a refusal is always allowed, and a security status the card may or may not have
kept counts as kept, so only answers that no card following the rules could give are findings.

Invariants (``Violation.invariant``)
-----------------------------------
1. ``sw``: every answer ends in an ISO 7816-4 status word; data comes only with ``9000``,
   ``61xx`` and the warnings ``62xx``/``63xx``. ``crash``: ``6F00`` never appears.
2. ``counter``: a wrong PIN (VERIFY, CHANGE REFERENCE DATA) or PUK (CHANGE REFERENCE DATA,
   RESET RETRY COUNTER) answers ``63Cx`` with ``x`` = the tries left before, minus one; a
   status VERIFY answers the tries left unchanged; the right value answers ``9000`` and
   restores the limit; at 0 the reference answers ``6983``/``6984`` and is never accepted;
   only RESET RETRY COUNTER with the right PUK restores a PIN. A malformed block is never
   counted or accepted. When the target has a probe (:mod:`capsim.testing.fuzz_piv`, rule 2),
   the *persisted* counters and references must equal the model's after every answer: a try
   is persisted before the answer leaves, and nothing else moves a counter.
3. ``pin``: GENERAL AUTHENTICATE with a key of ``9A``/``9D`` succeeds only after a right PIN
   in this session, with ``9C`` only with a right PIN since its last use ("PIN always"); a
   PIN-protected object is read only after a right PIN. Power cycles, SELECT of PIV, a wrong
   PIN and VERIFY ``P1 FF`` end the session.
4. ``mgmt``: GENERATE KEY PAIR and PUT DATA succeed only after a management-key
   authentication in this session; that authentication succeeds only with the witness or
   challenge the card offered last (each good for one answer) and, when the key is known, the
   right cryptogram.
5. ``leak``: no answer (nor two consecutive pieces of a ``61xx`` / GET RESPONSE chain)
   carries 8 consecutive bytes of a private key's secret numbers or of the management key.
6. Chaining (CLA ``10``) is followed as the card does it (rule 3 of the card): the data of a
   chain are judged with the command that ends it; a chain the model cannot follow makes that
   command's data unknown, and then only the answer is judged.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Sequence
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa

from capsim.cards.base import Command, StatusError, parse_command
from capsim.cards.piv import PIV_AID, SLOT_PIN, PinRule, PivState, pad_reference
from capsim.cards.piv.keys import mgmt_decrypt, mgmt_encrypt, private_key
from capsim.cards.piv.state import PIN_PROTECTED_OBJECTS
from capsim.errors import ApduFormatError, ValidationError
from capsim.testing.fuzz_card_target import CardInfo
from capsim.testing.model import BrokenError, Violation, checked_answer
from capsim.tlv import decode

__all__ = ["PivModel", "secret_windows"]

_ANY: Final = b"?"  # a witness or challenge was offered, its value unknown to the model
_BLOCKED: Final = frozenset({0x6983, 0x6984})
_WINDOW: Final = 8


@functools.lru_cache(maxsize=16)
def secret_windows(ders: tuple[bytes, ...], mgmt_key: bytes = b"") -> frozenset[bytes]:
    """Every 8-byte window of the secret numbers of the keys ``ders`` (PKCS#8 DER: RSA ``d``,
    ``p``, ``q``, ``dP``, ``dQ``, ``qInv``; the EC private value) and of ``mgmt_key``."""
    parts = [mgmt_key] if mgmt_key else []
    for der in ders:
        key = private_key(der)
        if isinstance(key, rsa.RSAPrivateKey):
            n = key.private_numbers()
            values: tuple[int, ...] = (n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp)
        else:
            values = (key.private_numbers().private_value,)
        parts += [v.to_bytes((v.bit_length() + 7) // 8, "big") for v in values]
    return frozenset(p[i : i + _WINDOW] for p in parts for i in range(len(p) - _WINDOW + 1))


def _reference(block: bytes) -> bytes | None:
    """A well-formed PIN/PUK block (6 to 8 ASCII digits padded with FF), else ``None``."""
    digits = block.rstrip(b"\xff")
    if len(block) != 8 or not 6 <= len(digits) <= 8 or not digits.isdigit():
        return None
    return block


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _items(data: bytes) -> dict[int, bytes] | None:
    """The children of a ``7C`` template that is the whole of ``data``, or ``None``."""
    try:
        objs = decode(data)
    except (ApduFormatError, ValidationError, ValueError):
        return None
    if len(objs) != 1 or objs[0].tag != 0x7C or not objs[0].constructed:
        return None
    return {child.tag: child.value for child in objs[0].children}


class PivModel:
    """The PIV reference model (module docstring). Feed it every exchange with :meth:`observe`.

    Parameters
    ----------
    info:
        What is known of the card (:func:`capsim.testing.fuzz_piv.piv_info`): PIN, PUK,
        management key and try limits; ``None`` fields are unknown.
    probe:
        Returns the state the card last persisted (or ``None``); read after every answer.
    log:
        Gets the persisted ``(PIN tries, PUK tries)`` after every answer, when there is a probe.
    recorded:
        Without a probe: the persisted counters after each answer, as ``log`` recorded them (a
        finding's replay checks them against its answers).
    """

    def __init__(
        self,
        info: CardInfo,
        *,
        probe: Callable[[], object] | None = None,
        log: list[tuple[int, int]] | None = None,
        recorded: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.log = log
        self.recorded = recorded
        self.pin = None if info.pin is None else pad_reference(info.pin)
        self.puk = None if info.puk is None else pad_reference(info.puk)
        self.pin_limit = info.pin_try_limit
        self.puk_limit = info.puk_try_limit
        self.mgmt_key = info.mgmt_key
        self.pin_tries = info.pin_try_limit if probe is None else None
        self.puk_tries = info.puk_try_limit if probe is None else None
        self.probe = probe
        self.index = -1
        self.chain: tuple[tuple[int, int, int], bytes | None] | None = None
        self.carry = b""
        self.foreign = False
        self._secrets = secret_windows((), info.mgmt_key or b"")
        self.power_cycle()

    # ------------------------------------------------------------------ events
    def start(self) -> None:
        """The example's card is powered on: learn counters and references from the probe."""
        state = self._probed()
        if state is not None:
            self._learn(state, force=True)

    def power_cycle(self) -> None:
        """The card was powered off and on: the session is gone, PIV is selected."""
        self._end_session()
        self.chain = None
        self.carry = b""
        self.foreign = False

    def _end_session(self) -> None:
        self.pin_ok = self.pin_always = self.mgmt = False
        self.witness: bytes | None = None
        self.challenge: bytes | None = None

    def observe(self, cmd: bytes, rsp: bytes) -> Violation | None:
        """Check one exchange and update the model; return the first broken invariant."""
        self.index += 1
        try:
            self._observe(cmd, rsp)
        except BrokenError as broken:
            return Violation(invariant=broken.invariant, detail=broken.detail, index=self.index)
        return None

    # ------------------------------------------------------------------ the answer (rules 1, 5)
    def _probed(self) -> PivState | None:
        state = self.probe() if self.probe is not None else None
        return state if isinstance(state, PivState) else None

    def _observe(self, cmd: bytes, rsp: bytes) -> None:
        sw, data = checked_answer(rsp, data_with=(0x90, 0x61, 0x62, 0x63))  # 61xx: more to GET RESPONSE
        state = self._probed()
        if state is not None:
            self._secrets = secret_windows(tuple(k.der for k in state.keys.values()), state.mgmt_key)
        self._check_leak(cmd, data)
        self.carry = data[1 - _WINDOW :] if sw >> 8 == 0x61 and data else b""
        try:
            parsed = parse_command(cmd)
        except StatusError:  # the card refuses it before anything else: nothing changes
            if sw == 0x9000 and len(cmd) < 4:
                raise BrokenError("sw", f"a {len(cmd)}-byte command was accepted with 9000") from None
        else:
            self._command(parsed, sw, data)
        if state is not None:
            self._check_persisted(state)
        elif self.recorded is not None and self.index < len(self.recorded):
            self._check_counters(*self.recorded[self.index])

    def _check_leak(self, cmd: bytes, data: bytes) -> None:
        buf = self.carry + data
        secrets = self._secrets
        if len(buf) < _WINDOW or not secrets:
            return
        for i in range(len(buf) - _WINDOW + 1):
            if buf[i : i + _WINDOW] in secrets:
                ins = cmd[1] if len(cmd) > 1 else 0
                raise BrokenError(
                    "leak",
                    f"the answer to INS {ins:02X} carries bytes of a private key or the management key",
                )

    def _check_counters(self, pin_tries: int, puk_tries: int) -> None:
        """Rule 2: the persisted counters are the model's."""
        for name, model, stored in (("PIN", self.pin_tries, pin_tries), ("PUK", self.puk_tries, puk_tries)):
            if model is not None and stored != model:
                raise BrokenError(
                    "counter", f"the card persisted {stored} {name} tries; its answers say {model}"
                )

    def _check_persisted(self, state: PivState) -> None:
        """Rule 2: the persisted counters and references are the model's."""
        if self.log is not None:
            self.log.append((state.pin_tries, state.puk_tries))
        self._check_counters(state.pin_tries, state.puk_tries)
        for name, ref, value in (("PIN", self.pin, state.pin), ("PUK", self.puk, state.puk)):
            if ref is not None and not _same(ref, pad_reference(value)):
                raise BrokenError("counter", f"the {name} the card persisted is not the one its answers set")
        self._learn(state, force=False)

    def _learn(self, state: PivState, *, force: bool) -> None:
        if force or self.pin_tries is None:
            self.pin_tries = state.pin_tries
        if force or self.puk_tries is None:
            self.puk_tries = state.puk_tries
        if force or self.pin is None:
            self.pin = pad_reference(state.pin)
        if force or self.puk is None:
            self.puk = pad_reference(state.puk)
        self.pin_limit, self.puk_limit = state.pin_limit, state.puk_limit
        if force:
            self.mgmt_key = state.mgmt_key

    # ------------------------------------------------------------------ commands (rule 6)
    def _command(self, cmd: Command, sw: int, data: bytes) -> None:
        cla, ins, p1, p2, body = cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data
        if cla == 0x00 and ins == 0xC0:  # GET RESPONSE: nothing else changes
            return
        key = (ins, p1, p2)
        if cla == 0x10:
            if sw != 0x9000:
                self.chain = None
            elif self.chain is None:
                self.chain = (key, body)
            else:
                head = self.chain[1] if self.chain[0] == key else None
                self.chain = (key, None if head is None else head + body)
            return
        effective: bytes | None = body
        if self.chain is not None:
            (chained, head), self.chain = self.chain, None
            if cla == 0x00 and chained == key:
                effective = None if head is None else head + body
            elif sw == 0x6985:  # the card dropped the chain and refused the command
                return
        if cla != 0x00:
            return
        ok = sw == 0x9000
        success = ok or sw >> 8 == 0x61
        if ins == 0xA4:
            if success and p1 == 0x04:
                self._end_session()
                self.foreign = effective is None or not (
                    len(effective) >= 5 and PIV_AID.startswith(effective)
                )
            return
        if self.foreign:
            return
        if ins == 0x20 and p2 == 0x80:
            self._verify(p1, effective, sw)
        elif ins == 0x24 and p1 == 0x00 and p2 in (0x80, 0x81):
            self._change_reference(p2 == 0x81, effective, sw)
        elif ins == 0x2C and p1 == 0x00 and p2 == 0x80:
            self._reset_retry_counter(effective, sw)
        elif ins == 0xCB and success and effective is not None:
            self._get_data(effective)
        elif ins == 0x87 and success:
            self._general_authenticate(p2, effective, data)
        elif ins == 0x47 and success and not self.mgmt:
            raise BrokenError(
                "mgmt", f"GENERATE KEY PAIR for slot {p2:02X} answered without the management key"
            )
        elif ins == 0xDB and ok and not self.mgmt:
            raise BrokenError("mgmt", "PUT DATA accepted without the management key")

    # ------------------------------------------------------------------ PIN and PUK (rule 2)
    def _counted(self, name: str, tries: int | None, sw: int) -> int:
        """A ``63Cx`` answer to a wrong ``name``: exactly one try less than before."""
        left = sw & 0x0F
        if tries is not None:
            if tries == 0:
                raise BrokenError("counter", f"a {name} try was counted ({sw:04X}) while it is blocked")
            if left != tries - 1:
                raise BrokenError(
                    "counter", f"wrong {name}: {sw:04X} with {tries} tries left, expected 63C{tries - 1:X}"
                )
        return left

    @staticmethod
    def _blocked(name: str, tries: int | None, sw: int) -> int:
        if tries is not None and tries != 0:
            raise BrokenError("counter", f"{name} answered {sw:04X} (blocked) with {tries} tries left")
        return 0

    def _verify(self, p1: int, body: bytes | None, sw: int) -> None:
        ok, counted = sw == 0x9000, sw >> 4 == 0x63C
        if p1 == 0xFF and body == b"":
            if ok:
                self.pin_ok = self.pin_always = False
            return
        if p1 != 0x00:
            if ok or counted:
                raise BrokenError("counter", f"VERIFY with P1 {p1:02X} answered {sw:04X}")
            return
        if body == b"":  # status query
            if counted and self.pin_tries is not None and sw & 0x0F != self.pin_tries:
                raise BrokenError(
                    "counter", f"status VERIFY answered {sw:04X} with {self.pin_tries} tries left"
                )
            if ok and not self.pin_ok:
                raise BrokenError("pin", "status VERIFY says the PIN is verified; no right PIN was sent")
            if sw in _BLOCKED:
                self.pin_tries = self._blocked("status VERIFY", self.pin_tries, sw)
            elif counted:
                self.pin_tries = sw & 0x0F
            return
        block = None if body is None else _reference(body)
        if body is not None and block is None:
            if ok or counted:
                raise BrokenError("counter", f"VERIFY of a malformed PIN block answered {sw:04X}")
            return
        if sw in _BLOCKED:
            self.pin_tries = self._blocked("VERIFY", self.pin_tries, sw)
        elif counted:
            if block is not None and self.pin is not None and _same(block, self.pin):
                raise BrokenError("counter", f"the right PIN was refused ({sw:04X})")
            self.pin_tries = self._counted("PIN", self.pin_tries, sw)
            self.pin_ok = self.pin_always = False
        elif ok:
            if self.pin_tries == 0:
                raise BrokenError("counter", "VERIFY accepted a PIN while the PIN is blocked")
            if block is not None and self.pin is not None and not _same(block, self.pin):
                raise BrokenError("pin", "VERIFY accepted a wrong PIN")
            self.pin_tries = self.pin_limit
            self.pin_ok = self.pin_always = True

    def _change_reference(self, puk: bool, body: bytes | None, sw: int) -> None:
        name = "PUK" if puk else "PIN"
        tries, current = (self.puk_tries, self.puk) if puk else (self.pin_tries, self.pin)
        ok, counted = sw == 0x9000, sw >> 4 == 0x63C
        old = new = None
        if body is not None:
            old, new = _reference(body[:8]), _reference(body[8:])
            if len(body) != 16 or old is None or new is None:
                if ok or counted:
                    raise BrokenError(
                        "counter", f"CHANGE REFERENCE DATA of a malformed {name} answered {sw:04X}"
                    )
                return
        if sw in _BLOCKED:
            tries = self._blocked(f"CHANGE REFERENCE DATA ({name})", tries, sw)
        elif counted:
            if old is not None and current is not None and _same(old, current):
                raise BrokenError("counter", f"CHANGE REFERENCE DATA refused the right {name} ({sw:04X})")
            tries = self._counted(name, tries, sw)
            if not puk:
                self.pin_ok = self.pin_always = False
        elif ok:
            if tries == 0:
                raise BrokenError("counter", f"CHANGE REFERENCE DATA accepted while the {name} is blocked")
            if old is not None and current is not None and not _same(old, current):
                raise BrokenError("pin", f"CHANGE REFERENCE DATA accepted a wrong {name}")
            tries, current = (self.puk_limit if puk else self.pin_limit), new
        else:
            return
        if puk:
            self.puk_tries, self.puk = tries, current
        else:
            self.pin_tries, self.pin = tries, current

    def _reset_retry_counter(self, body: bytes | None, sw: int) -> None:
        ok, counted = sw == 0x9000, sw >> 4 == 0x63C
        puk = new = None
        if body is not None:
            puk, new = _reference(body[:8]), _reference(body[8:])
            if len(body) != 16 or puk is None or new is None:
                if ok or counted:
                    raise BrokenError(
                        "counter", f"RESET RETRY COUNTER with a malformed block answered {sw:04X}"
                    )
                return
        if sw in _BLOCKED:
            self.puk_tries = self._blocked("RESET RETRY COUNTER", self.puk_tries, sw)
        elif counted:
            if puk is not None and self.puk is not None and _same(puk, self.puk):
                raise BrokenError("counter", f"RESET RETRY COUNTER refused the right PUK ({sw:04X})")
            self.puk_tries = self._counted("PUK", self.puk_tries, sw)
        elif ok:
            if self.puk_tries == 0:
                raise BrokenError("counter", "RESET RETRY COUNTER accepted while the PUK is blocked")
            if puk is not None and self.puk is not None and not _same(puk, self.puk):
                raise BrokenError("pin", "RESET RETRY COUNTER accepted a wrong PUK")
            self.pin, self.pin_tries, self.puk_tries = new, self.pin_limit, self.puk_limit

    # ------------------------------------------------------------------ keys and objects (rules 3-4)
    def _get_data(self, body: bytes) -> None:
        if len(body) >= 3 and body[0] == 0x5C and body[1] == len(body) - 2:
            tag = int.from_bytes(body[2:], "big")
            if tag in PIN_PROTECTED_OBJECTS and not self.pin_ok:
                raise BrokenError(
                    "pin", f"GET DATA of the PIN-protected object {tag:X} answered without the PIN"
                )

    def _general_authenticate(self, slot: int, body: bytes | None, data: bytes) -> None:
        rule = SLOT_PIN.get(slot)
        if rule is PinRule.ALWAYS:
            if not self.pin_always:
                raise BrokenError("pin", f"slot {slot:02X} used without a right PIN since its last use")
            self.pin_always = False
        elif rule is PinRule.ONCE and not self.pin_ok:
            raise BrokenError("pin", f"slot {slot:02X} used without a right PIN in this session")
        if slot == 0x9B:
            self._mgmt_step(body, data)

    def _mgmt_step(self, body: bytes | None, data: bytes) -> None:
        items = None if body is None else _items(body)
        answer = _items(data) or {}
        key = self.mgmt_key
        witness, challenge = self.witness, self.challenge
        self.witness = self.challenge = None
        if items is None:  # not a step the model knows (or unknown chained data)
            self.mgmt = True
        elif items == {0x80: b""}:  # mutual, step 1: the encrypted witness
            self.mgmt = False
            offered = answer.get(0x80, b"")
            self.witness = mgmt_decrypt(key, offered) if key is not None and len(offered) == 8 else _ANY
        elif items == {0x81: b""}:  # external, step 1: the challenge
            self.mgmt = False
            offered = answer.get(0x81, b"")
            self.challenge = offered if len(offered) == 8 else _ANY
        elif set(items) == {0x80, 0x81}:  # mutual, step 2
            if witness is None:
                raise BrokenError(
                    "mgmt", "management-key authentication accepted without a witness outstanding"
                )
            if witness != _ANY and not _same(items[0x80], witness):
                raise BrokenError("mgmt", "management-key authentication accepted a wrong witness")
            proof = answer.get(0x82, b"")
            if key is not None and len(items[0x81]) == 8 and not _same(proof, mgmt_encrypt(key, items[0x81])):
                raise BrokenError(
                    "mgmt", "the card's answer to the host's challenge is not the encrypted challenge"
                )
            self.mgmt = True
        elif set(items) == {0x82}:  # external, step 2
            if challenge is None:
                raise BrokenError(
                    "mgmt", "management-key authentication accepted without a challenge outstanding"
                )
            if challenge != _ANY and key is not None and not _same(items[0x82], mgmt_encrypt(key, challenge)):
                raise BrokenError("mgmt", "management-key authentication accepted a wrong cryptogram")
            self.mgmt = True
        else:
            self.mgmt = True
