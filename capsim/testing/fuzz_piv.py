"""The PIV card in ``capsim fuzz card``: its targets and its grammar of APDU sequences.

The reference model the answers are checked against is in :mod:`capsim.testing.fuzz_piv_model`;
the run (prologue, minimising, findings, digest) is :mod:`capsim.testing.fuzz_card`'s.

Theory of operation
-------------------
1. **Targets.** ``inproc:piv`` is a fresh emulated PIV token per example with the state of
   :func:`inproc_state` (well-known PIN ``123456``, PUK ``12345678`` and management key; an
   RSA-2048 key in ``9A``, P-256 keys in ``9C`` and ``9E``, certificates, CHUID, CCC and a
   PIN-protected printed-information object). ``file:CARD.json`` naming a PIV card file
   fuzzes that card, persisting to it; ``py:MODULE:FACTORY`` returning a
   :class:`~capsim.cards.piv.PivCard` is a PIV target too. The fuzzer's cards draw the
   management-key witness and challenge from an all-zero generator (as the EMV targets draw
   their unpredictable numbers), so a sequence drawn in advance can answer them.
2. **The probe.** For ``inproc:`` and ``file:`` the harness gives the card the
   ``on_state_change`` hook and keeps the last state the card *persisted*; for ``py:`` cards
   it is the state the card holds. The model reads it after every answer: counters are
   checked where they live, and private keys are known to the leak check.
3. **Sequences** are drawn like the EMV grammar's (:mod:`capsim.testing.fuzz_card_gen`,
   rule 1): from :func:`~capsim.testing.fuzz_card_gen.example_random` alone, so one seed gives
   one sequence and one digest. A sequence is 1..``max_steps`` parts; a part is a *flow* (2 in
   3) or a single action (a PIV command, a random APDU or a power cycle, a third each).
4. **Flows**: *sign* — [SELECT] (1 in 4), 0–2 VERIFY (the right PIN about 2 in 5), 1–2
   GENERAL AUTHENTICATE signatures or ECDH with a slot's key; *manage* — a management-key
   authentication (mutual or external, the right cryptogram 3 times in 4), then 0–2 GENERATE
   KEY PAIR (an RSA key 1 time in 100: it costs a key generation) or PUT DATA (chained 1 in 3);
   *pin* — 0–3 VERIFYs, then (7 in 10) RESET RETRY COUNTER, after CHANGE REFERENCE DATA half
   the time, with the right or a wrong PUK/PIN, then a status VERIFY (1 in 2); *read* — GET
   DATA of a known, PIN-protected or unknown object with Le ``00`` or a small Le, then 0–3 GET
   RESPONSE.
5. **Commands** (:data:`COMMANDS`) are well-formed 8 times in 10 as single actions and 9 in
   10 inside flows; otherwise a field is off (P1/P2, a length, the data). Any APDU is then
   mutated 1 time in 20 (:func:`~capsim.testing.fuzz_card_gen.mutate`). A new PIN is the
   card's PIN 3 times in 4, else :data:`ALT_PIN`, which a later "right" VERIFY may use.
6. RSA signatures (a 256-byte block) travel in two chained commands (CLA ``10``); so does a
   chained PUT DATA. ECDH uses the curve's generator point as the peer's public key.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Callable
from typing import Final

from capsim.cards.base import CardOS
from capsim.cards.piv import (
    DEFAULT_MGMT_KEY,
    DEFAULT_PIN,
    DEFAULT_PUK,
    PIV_AID,
    PivAlgorithm,
    PivCard,
    PivState,
    generate_key,
    pad_reference,
)
from capsim.cards.piv.cardfile import PivCardFile, is_piv_card_file
from capsim.cards.piv.keys import mgmt_encrypt
from capsim.errors import ValidationError
from capsim.testing.fuzz_card_gen import mutate, random_apdu
from capsim.testing.fuzz_card_target import _POWER, Action, CardInfo, CardTarget
from capsim.tlv import encode

__all__ = [
    "ALT_PIN",
    "COMMANDS",
    "PRINTED_INFO",
    "PivSequenceGenerator",
    "inproc_state",
    "is_piv_spec",
    "open_piv_target",
    "piv_card_target",
    "piv_info",
    "py_piv_target",
]

#: The other PIN a sequence may set and use (rule 5).
ALT_PIN: Final = "654321"
#: A PIN-protected object :func:`inproc_state` holds (printed information, SP 800-73-4).
PRINTED_INFO: Final = 0x5FC109
#: The single PIV commands of rule 5, in the order :meth:`PivSequenceGenerator.command` numbers them.
COMMANDS: Final = (
    "select",
    "get_data",
    "verify",
    "change_reference",
    "reset_retry_counter",
    "sign",
    "ecdh",
    "mgmt_step1",
    "mgmt_step2",
    "generate_key_pair",
    "put_data",
    "get_response",
)
_MUTATE: Final = 0.05
_MGMT: Final = 0x9B
_KNOWN_OBJECTS: Final = (0x5FC102, 0x5FC105, 0x5FC10A, 0x5FC107, 0x7E)
_UNKNOWN_OBJECTS: Final = (0x5FC101, 0x5FC10B, 0x5FC103, 0x5FC1FF, 0x5FFF00)
_SLOTS: Final = (0x9A, 0x9C, 0x9D, 0x9E)
#: The generator points of P-256 and P-384 (SEC 2), uncompressed: a valid ECDH peer key.
_GENERATORS: Final = {
    PivAlgorithm.ECC_P256: bytes.fromhex(
        "046B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"
        "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"
    ),
    PivAlgorithm.ECC_P384: bytes.fromhex(
        "04AA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A38"
        "5502F25DBF55296C3A545E3872760AB73617DE4A96262C6F5D9E98BF9292DC29F8F4"
        "1DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F"
    ),
}


# ---------------------------------------------------------------------- targets (rules 1-2)
@functools.cache
def inproc_state() -> PivState:
    """The state of an ``inproc:piv`` card (rule 1); made once per process (RSA key generation)."""
    from capsim.cards.piv.personalise import personalise

    made = personalise(holder="capsim fuzz")
    state = made.state.with_key(0x9E, generate_key(PivAlgorithm.ECC_P256))
    return state.with_object(PRINTED_INFO, encode(0x01, b"capsim fuzz") + encode(0xFE, b""))


def piv_info(state: PivState) -> CardInfo:
    """What the grammar and the model know of a PIV card in ``state``."""
    return CardInfo(
        kind="piv",
        aid=PIV_AID,
        pin=state.pin,
        pin_try_limit=state.pin_limit,
        puk=state.puk,
        puk_try_limit=state.puk_limit,
        mgmt_key=state.mgmt_key,
        slots=tuple((slot, int(key.algorithm)) for slot, key in sorted(state.keys.items())),
    )


def _zero_rng(n: int) -> bytes:
    return bytes(n)


def is_piv_spec(spec: str) -> bool:
    """Whether ``spec`` names a PIV target (``inproc:piv``, or ``file:`` of a PIV card file)."""
    scheme, _, rest = spec.partition(":")
    return (scheme == "inproc" and rest == "piv") or (
        scheme == "file" and bool(rest) and is_piv_card_file(rest)
    )


def piv_card_target(
    spec: str,
    state: PivState,
    *,
    card_type: Callable[..., PivCard] = PivCard,
    guarded: bool = False,
) -> CardTarget:
    """A target of fresh ``card_type(state, …)`` cards, the probe fed by their
    ``on_state_change`` hook (rule 2). Tests fuzz planted-bug subclasses through it."""
    persisted: list[PivState] = [state]

    def record(new: PivState) -> None:
        persisted[0] = new

    def make() -> CardOS:
        persisted[0] = state
        return card_type(state, rng=_zero_rng, on_state_change=record)

    target = CardTarget(spec, piv_info(state), factory=make, guarded=guarded)
    target.probe = lambda: persisted[0]
    return target


def open_piv_target(spec: str, *, pin: str | None = None, guarded: bool | None = None) -> CardTarget:
    """Open ``inproc:piv`` or ``file:`` of a PIV card file (rule 1).

    ``pin`` gives an ``inproc:piv`` card that PIN (6 to 8 digits); for a card file it is
    ignored: the file's own PIN is known. Raises :class:`ValidationError` for a bad PIN, and
    :class:`~capsim.errors.StateFileError` for a card file that cannot be opened.
    """
    scheme, _, rest = spec.partition(":")
    if scheme == "inproc":
        state = inproc_state()
        if pin is not None:
            try:
                state = state.replace(pin=pin)
            except ValidationError:
                raise ValidationError("--pin-stdin: a PIV PIN is 6 to 8 digits") from None
        return piv_card_target(spec, state, guarded=bool(guarded))
    handle = PivCardFile(os.fspath(rest))
    persisted: list[PivState] = [handle.state]

    def save(new: PivState) -> None:
        handle.save_state(new)
        persisted[0] = new

    card = PivCard(handle.state, atr=handle.atr, rng=_zero_rng, on_state_change=save, on_close=handle.close)
    target = CardTarget(
        spec, piv_info(handle.state), factory=lambda: card, fresh=False, guarded=bool(guarded)
    )
    target.probe = lambda: persisted[0]
    return target


def py_piv_target(spec: str, factory: Callable[[], CardOS], sample: PivCard, *, guarded: bool) -> CardTarget:
    """A ``py:`` factory of PIV cards; the probe is the state the card holds (rule 2)."""
    with contextlib.suppress(Exception):
        sample.close()
    target = CardTarget(spec, piv_info(sample.state), factory=factory, guarded=guarded)

    def probe() -> PivState | None:
        card = target.card
        return card.state if isinstance(card, PivCard) else None

    target.probe = probe
    return target


# ---------------------------------------------------------------------- APDUs
def _apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", *, le: int | None = None) -> bytes:
    out = bytes((cla, ins, p1, p2))
    if data:
        out += bytes((len(data),)) + data
    return out if le is None else out + bytes((le & 0xFF,))


def _chained(ins: int, p1: int, p2: int, data: bytes, *, le: int | None = 0) -> list[Action]:
    """``data`` in CLA ``10`` commands of at most 255 bytes and a last CLA ``00`` one (rule 6)."""
    parts = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    out = [_apdu(0x10, ins, p1, p2, part) for part in parts[:-1]]
    return [*out, _apdu(0x00, ins, p1, p2, parts[-1], le=le)]


def _tag_list(tag: int) -> bytes:
    raw = tag.to_bytes(1 if tag <= 0xFF else 3, "big")
    return encode(0x5C, raw)


class PivSequenceGenerator:
    """Draws sequences of the PIV grammar (module docstring) for one card.

    Parameters
    ----------
    info:
        The card's PIN, PUK, management key and slots (:func:`piv_info`).
    max_steps:
        Most parts (flows or single actions) in one sequence.
    """

    def __init__(self, info: CardInfo, *, max_steps: int = 30) -> None:
        self.max_steps = max(1, max_steps)
        self.select = _apdu(0x00, 0xA4, 0x04, 0x00, PIV_AID, le=0)
        self.pin = info.pin if info.pin is not None else DEFAULT_PIN
        self.puk = info.puk if info.puk is not None else DEFAULT_PUK
        key = info.mgmt_key if info.mgmt_key is not None else DEFAULT_MGMT_KEY
        self.slots = dict(info.slots)
        zero = bytes(8)
        self.external_proof = mgmt_encrypt(key, zero)  # the card's challenge is all zeros (rule 1)

    # ------------------------------------------------------------------ sequences (rules 3-4)
    def draw(self, rng: random.Random) -> list[Action]:
        """One example's sequence."""
        r = rng.random
        out: list[Action] = []
        for _ in range(1 + int(r() * self.max_steps)):
            if r() < 2 / 3:
                self.flow(rng, out)
                continue
            kind = int(r() * 3)
            if kind == 0:
                self._add(rng, out, self.command(rng, int(r() * len(COMMANDS)), 0.8))
            elif kind == 1:
                out.append(random_apdu(rng))
            else:
                out.append(_POWER)
        return out

    def _add(self, rng: random.Random, out: list[Action], apdus: list[Action]) -> None:
        for apdu in apdus:
            out.append(apdu if rng.random() >= _MUTATE else mutate(rng, apdu))

    def flow(self, rng: random.Random, out: list[Action]) -> list[Action]:
        """Append one flow (rule 4) to ``out``; return ``out``."""
        r, add, command = rng.random, self._add, self.command
        kind = int(r() * 4)
        if kind == 0:  # sign
            if r() < 0.25:
                out.append(self.select)
            for _ in range(int(r() * 3)):
                add(rng, out, command(rng, 2, 0.9))
            for _ in range(1 + int(r() * 2)):
                add(rng, out, command(rng, 5 if r() < 0.7 else 6, 0.9))
        elif kind == 1:  # manage
            add(rng, out, command(rng, 7, 0.95))
            add(rng, out, command(rng, 8, 0.75))
            for _ in range(int(r() * 3)):
                add(rng, out, command(rng, 9 if r() < 0.4 else 10, 0.9))
        elif kind == 2:  # pin
            for which in [2] * int(r() * 4) + [3, 4][int(r() * 2) :] * (r() < 0.7):
                add(rng, out, command(rng, which, 0.9))
            if r() < 0.5:
                out.append(_apdu(0x00, 0x20, 0x00, 0x80))  # status
        else:  # read
            add(rng, out, command(rng, 1, 0.9))
            for _ in range(int(r() * 4)):
                out.append(_apdu(0x00, 0xC0, 0x00, 0x00, le=int(r() * 80)))
        return out

    # ------------------------------------------------------------------ commands (rule 5)
    def command(self, rng: random.Random, which: int, valid: float) -> list[Action]:
        """PIV command number ``which`` of :data:`COMMANDS` (one APDU, or a chain)."""
        r, randbytes = rng.random, rng.randbytes
        good = r() < valid
        if which == 0:  # SELECT by AID, prefix or unknown
            if good:
                name = PIV_AID[: (5, 9, 11)[int(r() * 3)]]
            else:
                name = randbytes(int(r() * 17)) if r() < 0.5 else PIV_AID[: int(r() * 5)]
            return [_apdu(0x00, 0xA4, 0x04, 0x00 if good else int(r() * 256), name, le=0)]
        if which == 1:  # GET DATA
            pool = (_KNOWN_OBJECTS, (PRINTED_INFO,), _UNKNOWN_OBJECTS)[int(r() * 3)]
            body = _tag_list(pool[int(r() * len(pool))]) if good else randbytes(int(r() * 8))
            le = 0 if r() < 0.5 else 1 + int(r() * 64)
            return [_apdu(0x00, 0xCB, 0x3F, 0xFF if good else int(r() * 256), body, le=le)]
        if which == 2:  # VERIFY
            return [self._verify(rng, good)]
        if which in (3, 4):  # CHANGE REFERENCE DATA, RESET RETRY COUNTER
            puk_ref = which == 4 or r() < 0.3
            current = self.puk if puk_ref else self.pin
            old = pad_reference(current if r() < 0.6 else self._wrong(rng, current))
            new = pad_reference(self._new_pin(rng) if which == 4 or not puk_ref else self.puk)
            body = old + new if good else randbytes(int(r() * 18))
            ins, p2 = (0x2C, 0x80) if which == 4 else (0x24, 0x81 if puk_ref else 0x80)
            return [_apdu(0x00, ins, 0x00, p2 if good else int(r() * 256), body)]
        if which in (5, 6):  # GENERAL AUTHENTICATE: a signature or ECDH
            return self._key_use(rng, which == 6, good)
        if which == 7:  # management key, step 1: mutual (witness) or external (challenge)
            item = 0x80 if r() < 0.5 else 0x81
            body = encode(0x7C, encode(item, b"")) if good else randbytes(int(r() * 6))
            return [_apdu(0x00, 0x87, 0x03 if good else int(r() * 256), _MGMT, body, le=0)]
        if which == 8:  # management key, step 2
            if r() < 0.5:
                witness = bytes(8) if good else randbytes(8)
                body = encode(0x7C, encode(0x80, witness) + encode(0x81, randbytes(8)))
            else:
                body = encode(0x7C, encode(0x82, self.external_proof if good else randbytes(8)))
            return [_apdu(0x00, 0x87, 0x03, _MGMT, body, le=0)]
        if which == 9:  # GENERATE KEY PAIR (RSA rarely: it costs a key generation)
            roll = r()
            alg = (
                PivAlgorithm.RSA_2048
                if roll < 0.01
                else PivAlgorithm.ECC_P384
                if roll < 0.3
                else PivAlgorithm.ECC_P256
            )
            value = bytes((int(alg),)) if good else randbytes(int(r() * 3))
            slot = _SLOTS[int(r() * 4)] if good else int(r() * 256)
            return [_apdu(0x00, 0x47, 0x00, slot, encode(0xAC, encode(0x80, value)), le=0)]
        if which == 10:  # PUT DATA, chained 1 time in 3
            tag = 0x5FC100 + int(r() * 0x28) if good else int(r() * 0x1000000)
            content = randbytes(int(r() * 300)) if r() < 0.9 else b""
            body = _tag_list(tag) + encode(0x53, content)
            if r() < 1 / 3 or len(body) > 255:
                return _chained(0xDB, 0x3F, 0xFF, body, le=None)
            return [_apdu(0x00, 0xDB, 0x3F, 0xFF, body)]
        return [_apdu(0x00, 0xC0, 0x00, 0x00 if good else int(r() * 256), le=int(r() * 256))]

    def _verify(self, rng: random.Random, good: bool) -> bytes:
        r = rng.random
        if not good:
            kind = int(r() * 4)
            if kind == 0:  # too few digits, or not digits
                return _apdu(0x00, 0x20, 0x00, 0x80, b"12345\xff\xff\xff" if r() < 0.5 else rng.randbytes(8))
            if kind == 1:
                return _apdu(0x00, 0x20, 0x00, 0x80, rng.randbytes(1 + int(r() * 12)))
            if kind == 2:  # reset the security status
                return _apdu(0x00, 0x20, 0xFF, 0x80)
            return _apdu(0x00, 0x20, int(r() * 256), int(r() * 256), pad_reference(self.pin))
        roll = r()
        if roll < 0.15:
            return _apdu(0x00, 0x20, 0x00, 0x80)  # status query
        right = self.pin if r() < 0.85 else ALT_PIN
        pin = right if roll < 0.55 else self._wrong(rng, self.pin)
        return _apdu(0x00, 0x20, 0x00, 0x80, pad_reference(pin))

    def _key_use(self, rng: random.Random, ecdh: bool, good: bool) -> list[Action]:
        r = rng.random
        slot = _SLOTS[int(r() * 4)]
        alg = self.slots.get(slot, int(PivAlgorithm.ECC_P256))
        if ecdh and alg in _GENERATORS:
            item = encode(0x85, _GENERATORS[PivAlgorithm(alg)])
        elif alg == PivAlgorithm.RSA_2048:
            item = encode(0x81, b"\x00\x01" + rng.randbytes(254))
        else:
            item = encode(0x81, rng.randbytes(48 if alg == PivAlgorithm.ECC_P384 else 32))
        body = encode(0x7C, encode(0x82, b"") + item)
        if not good:
            kind = int(r() * 3)
            if kind == 0:
                alg = int(r() * 256)
            elif kind == 1:
                body = encode(0x7C, item)
            else:
                body = body[: int(r() * len(body))]
        return _chained(0x87, alg, slot, body)

    @staticmethod
    def _wrong(rng: random.Random, right: str) -> str:
        while True:
            guess = str(int(rng.random() * 10**8)).zfill(8)[: 6 + int(rng.random() * 3)]
            if guess != right:
                return guess

    def _new_pin(self, rng: random.Random) -> str:
        return self.pin if rng.random() < 0.75 else ALT_PIN
