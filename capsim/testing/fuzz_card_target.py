"""Card targets of ``capsim fuzz card``: opening a ``--target``, learning the card, the guard.

Targets (``--target``)
----------------------
``inproc:TEMPLATE``
    A fresh emulated card of a built-in profile for every example (test keys, PIN ``1234``).
``file:CARD.json``
    The card in a card file; its state persists across examples (the model re-reads ATC and
    PTC at the start of each one).
``inproc:piv``, ``file:PIV-CARD.json``
    A PIV card (a fresh emulated token per example; a PIV card file), fuzzed with the PIV
    grammar and model (:mod:`capsim.testing.fuzz_piv`). A ``py:`` factory of PIV cards too.
``pcsc:READER``
    A card in a PC/SC reader (a real card, or a card served through pcscd + vpcd).
``py:MODULE:FACTORY``
    ``FACTORY()`` from an importable module returns a fresh :class:`~capsim.cards.CardOS`
    per example (third-party emulators, test fixtures).

Theory of operation
-------------------
1. A target is opened once (:func:`open_card_target`); what the fuzzer needs to draw
   well-formed commands (AID, PDOL/CDOL lengths, PIN, PTC limit) is a :class:`CardInfo`,
   taken from the card's profile when there is one, else learnt with read-only commands
   (:func:`discover_card_info`).
2. :class:`CardTarget` gives each example a card: a fresh one (``inproc:``, ``py:``) or the
   same one (``file:``, ``pcsc:``). An in-process card that raises is reported as
   ``_CrashError``, which the fuzzer turns into an ``exception`` finding.
3. Safety (``pcsc:`` targets, and any target with ``guarded=True``): :class:`StateChangeGuard`
   lets through only the allow-list of read-only commands (SELECT, READ RECORD, READ BINARY,
   GET DATA, GET RESPONSE, GET CHALLENGE with CLA ``00``/``80``) unless
   ``allow_state_changes`` is set; everything else (GET PROCESSING OPTIONS, VERIFY, GENERATE
   AC, any CLA ``84``, PUT DATA, writes, unknown instructions) is refused without being sent.
   Even with state changes allowed, VERIFY is sent only after a GET DATA ``9F17`` read just
   before it shows a PIN try counter of at least 2, so the harness can never block a real card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from capsim.apdu import builders
from capsim.apdu.response import ResponseApdu
from capsim.cap import CapMode
from capsim.cards import EmvCapCard
from capsim.cards.base import CardOS
from capsim.errors import ApduFormatError, CapsimError, ValidationError
from capsim.reader import CapSession
from capsim.reader import Phase as ReaderPhase
from capsim.tlv import decode, find, parse_dol
from capsim.transports import open_transport
from capsim.transports.base import Transport
from capsim.transports.inprocess import TEST_PIN, InProcessTransport

__all__ = [
    "SAFE_INS",
    "Action",
    "CardInfo",
    "CardTarget",
    "StateChangeGuard",
    "discover_card_info",
    "is_state_changing",
    "open_emv_target",
]

#: Instructions the guard lets through without ``allow_state_changes`` (CLA 00/80 only).
SAFE_INS = frozenset({0xA4, 0xB2, 0xB0, 0xCA, 0xCB, 0xC0, 0x84})
_GET_PTC = bytes.fromhex("80CA9F1700")
_GET_ATC = bytes.fromhex("80CA9F3600")
_POWER = b""
#: The transport schemes the fuzzer drives (``replay:`` answers only what it recorded).
_FUZZ_SCHEMES: Final = frozenset({"inproc", "file", "pcsc"})

#: One step of a sequence: an APDU to send, or ``b""`` for a power cycle.
Action = bytes


def is_state_changing(apdu: bytes) -> bool:
    """Whether the guard treats ``apdu`` as possibly changing the card (not in the allow-list).

    >>> is_state_changing(bytes.fromhex("00A4040007A000000004800200"))
    False
    >>> [is_state_changing(bytes.fromhex(h)) for h in ("80A8000002830000", "0020008008241234FFFFFFFFFF",
    ...                                                 "84240000", "00DA9F4F00", "80CA9F1700")]
    [True, True, True, True, False]
    """
    if len(apdu) < 4:
        return True
    return apdu[0] not in (0x00, 0x80) or apdu[1] not in SAFE_INS


@dataclass(frozen=True, kw_only=True)
class CardInfo:
    """What the fuzzer knows about the card: where the CAP application is and its DOL sizes;
    for a PIV card (``kind="piv"``, :mod:`capsim.testing.fuzz_piv`) its PUK, management key
    and ``(slot, algorithm)`` pairs."""

    aid: bytes = bytes.fromhex("A0000000048002")
    pdol_length: int = 0
    cdol1_length: int = 29
    cdol2_length: int = 31
    pin: str | None = None
    pin_try_limit: int | None = None
    kind: str = "emv"
    puk: str | None = None
    puk_try_limit: int | None = None
    mgmt_key: bytes | None = field(default=None, repr=False)
    slots: tuple[tuple[int, int], ...] = ()


class _CrashError(Exception):
    """The card raised instead of answering (an in-process target)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(type(exc).__name__)
        self.exc = exc


class CardTarget:
    """A card the fuzzer talks to: fresh per example for ``inproc:``/``py:``, shared otherwise.

    Parameters
    ----------
    spec:
        The target spec (shown in reports).
    info:
        :class:`CardInfo` for the card.
    factory:
        Makes a :class:`~capsim.cards.CardOS` (in-process targets).
    transport:
        A :class:`~capsim.transports.base.Transport` (``pcsc:`` targets).
    fresh:
        Call ``factory`` again for every example.
    guarded:
        Put a :class:`StateChangeGuard` in front of the card.

    ``probe`` (PIV targets): returns the state the card last persisted, read by the model after
    every answer (:mod:`capsim.testing.fuzz_piv`, rule 2).
    """

    def __init__(
        self,
        spec: str,
        info: CardInfo,
        *,
        factory: Callable[[], CardOS] | None = None,
        transport: Transport | None = None,
        fresh: bool = True,
        guarded: bool = False,
    ) -> None:
        if (factory is None) == (transport is None):
            raise ValidationError("target: expected exactly one of factory and transport")
        self.spec = spec
        self.info = info
        self.factory = factory
        self.transport = transport
        self.fresh = fresh
        self.guarded = guarded
        self.card: CardOS | None = None
        self.probe: Callable[[], Any] | None = None
        self._connected = False

    def begin(self) -> None:
        """Start an example: a fresh card (or the same one), powered on."""
        if self.factory is not None:
            if self.card is None or self.fresh:
                self.close_card()
                try:
                    self.card = self.factory()
                except CapsimError:
                    raise
                except Exception as exc:
                    raise ValidationError(f"target: the card factory raised {type(exc).__name__}") from exc
            try:
                self.card.power_on()
            except Exception as exc:
                raise _CrashError(exc) from exc
        elif self.transport is not None and not self._connected:
            self.transport.connect()
            self._connected = True

    def exchange(self, apdu: bytes) -> bytes:
        """Send one APDU, return the answer (``_CrashError`` when an in-process card raises)."""
        if self.card is not None:
            try:
                return self.card.process(apdu)
            except Exception as exc:
                raise _CrashError(exc) from exc
        if self.transport is None:  # pragma: no cover - construction forbids it
            raise ValidationError("target: not open")
        return self.transport.transmit(apdu)

    def power_cycle(self) -> None:
        """Power the card off and on (a reconnect for a PC/SC card)."""
        if self.card is not None:
            try:
                self.card.power_off()
                self.card.power_on()
            except Exception as exc:
                raise _CrashError(exc) from exc
        elif self.transport is not None:
            self.transport.disconnect()
            self.transport.connect()

    def close_card(self) -> None:
        if self.card is not None:
            with contextlib.suppress(Exception):
                self.card.power_off()
            close = getattr(self.card, "close", None)
            if callable(close):
                close()
            self.card = None

    def close(self) -> None:
        """Release the card or the reader."""
        self.close_card()
        if self.transport is not None and self._connected:
            self.transport.disconnect()
            self._connected = False


class StateChangeGuard:
    """Refuses state-changing commands and unsafe VERIFYs (module docstring).

    Parameters
    ----------
    send:
        Sends one APDU and returns the answer.
    allow_state_changes:
        Let GPO, VERIFY, GENERATE AC, CLA ``84`` and the rest through.
    observe:
        Called with every exchange the guard makes itself (the ``9F17`` reads).
    min_ptc:
        VERIFY needs a PTC of at least this (default 2).
    """

    def __init__(
        self,
        send: Callable[[bytes], bytes],
        *,
        allow_state_changes: bool = False,
        observe: Callable[[bytes, bytes], None] | None = None,
        min_ptc: int = 2,
    ) -> None:
        self.send = send
        self.allow_state_changes = allow_state_changes
        self.observe = observe
        self.min_ptc = min_ptc
        self.refused = 0

    def __call__(self, apdu: bytes) -> bytes | None:
        """Send ``apdu`` and return the answer, or ``None`` when it was refused (not sent)."""
        if is_state_changing(apdu):
            if not self.allow_state_changes:
                self.refused += 1
                return None
            if len(apdu) >= 4 and apdu[1] == 0x20 and not self._ptc_allows_verify():
                self.refused += 1
                return None
        return self.send(apdu)

    def _ptc_allows_verify(self) -> bool:
        answer = self.send(_GET_PTC)
        if self.observe is not None:
            self.observe(_GET_PTC, answer)
        if len(answer) != 6 or answer[-2:] != b"\x90\x00" or answer[:3] != b"\x9f\x17\x01":
            return False
        return answer[3] >= self.min_ptc


def discover_card_info(send: Callable[[bytes], bytes], *, pin: str | None = None) -> CardInfo:
    """Find the CAP application and its DOL lengths with read-only commands only.

    The application is the reader's choice (:class:`capsim.reader.CapSession`: a direct
    SELECT of each built-in reader profile's AIDs, then the PSE directory), stopped before GET
    PROCESSING OPTIONS, which would spend an ATC; its FCI gives the PDOL. The AFL comes only
    with GPO, so records of SFI 1–3 are then read directly, looking for CDOL1 (``8C``) and
    CDOL2 (``8D``). A card the reader cannot select gets the default :class:`CardInfo`.
    """
    session = CapSession(CapMode.IDENTIFY, pin=None)
    try:
        while session.phase is not ReaderPhase.GPO:
            command = session.next_apdu()
            if command is None or is_state_changing(command):  # pragma: no cover - selection only
                return CardInfo(pin=pin)
            session.receive(ResponseApdu.from_bytes(send(command)))
    except CapsimError:
        return CardInfo(pin=pin)
    aid = session.application
    if aid is None:  # pragma: no cover - the GPO phase follows a successful SELECT
        return CardInfo(pin=pin)
    cdol1, cdol2 = 29, 31
    for sfi in (1, 2, 3):
        for record in range(1, 5):
            rec = send(builders.read_record(record, sfi).to_bytes())
            if rec[-2:] != b"\x90\x00":
                break
            with contextlib.suppress(ApduFormatError, ValueError):
                objs = decode(rec[:-2])
                c1, c2 = find(objs, 0x8C), find(objs, 0x8D)
                cdol1 = _dol_length(c1.value) if c1 is not None else cdol1
                cdol2 = _dol_length(c2.value) if c2 is not None else cdol2
    pdol = session.card_data.get(0x9F38, b"")
    return CardInfo(aid=aid, pdol_length=_dol_length(pdol), cdol1_length=cdol1, cdol2_length=cdol2, pin=pin)


def _dol_length(dol: bytes) -> int:
    """Bytes of data a DOL asks for (0 for a malformed one)."""
    try:
        return sum(e.length for e in parse_dol(dol))
    except (ApduFormatError, ValueError):
        return 0


def _profile_info(profile: Any, pin: str | None) -> CardInfo:
    def length(dol: bytes) -> int:
        return sum(e.length for e in parse_dol(dol)) if dol else 0

    return CardInfo(
        aid=profile.aid,
        pdol_length=length(profile.pdol),
        cdol1_length=length(profile.cdol1),
        cdol2_length=length(profile.cdol2),
        pin=pin,
        pin_try_limit=profile.pin_try_limit,
    )


def _zero_rng(n: int) -> bytes:
    return bytes(n)


#: Builds the target of a ``py:`` factory whose cards are not EMV cards (``None``: not one of
#: its kind). :func:`capsim.testing.fuzz_card.open_card_target` passes the PIV one.
OtherCard = Callable[[str, Callable[[], CardOS], CardOS, bool], "CardTarget | None"]


def open_emv_target(
    spec: str, *, pin: str | None = None, guarded: bool | None = None, other_card: OtherCard | None = None
) -> CardTarget:
    """Open a ``--target`` spec of an EMV card (module docstring); a ``py:`` factory of other
    cards goes to ``other_card``. :func:`capsim.testing.fuzz_card.open_card_target` is the entry
    point that also opens PIV targets.

    ``inproc:``, ``file:`` and ``pcsc:`` are opened by the transport registry
    (:func:`capsim.transports.open_transport`); an in-process card becomes a card factory (a
    fresh copy per example for ``inproc:``, the one card for ``file:``). ``py:`` is the
    fuzzer's own.

    Parameters
    ----------
    pin:
        The card's correct PIN, when known (default: ``1234`` for ``inproc:``, unknown
        otherwise). Only used to draw some correct VERIFYs and to check them; an ``inproc:``
        card is given this PIN.
    guarded:
        Force the :class:`StateChangeGuard` on or off (default: on for ``pcsc:`` only).

    Raises
    ------
    ValidationError
        Unknown scheme or malformed spec.
    """
    if not isinstance(spec, str):
        raise ValidationError(f"target: expected a spec string, got {type(spec).__name__}")
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "py":
        return _open_py_target(spec, rest, pin=pin, guarded=bool(guarded), other_card=other_card)
    if not sep or scheme not in _FUZZ_SCHEMES:
        raise ValidationError(
            "target: expected inproc:TEMPLATE, file:CARD.json, pcsc:READER or py:MODULE:FACTORY, "
            f"got {spec!r}"
        )
    try:
        transport = open_transport(spec)
    except ValidationError as exc:
        raise ValidationError(f"target: {exc}") from None
    if isinstance(transport, InProcessTransport):
        return _in_process_target(spec, transport.card, fresh=scheme == "inproc", pin=pin, guarded=guarded)
    transport.connect()
    try:
        info = discover_card_info(transport.transmit, pin=pin)
    finally:
        transport.disconnect()
    guard = True if guarded is None else guarded
    return CardTarget(spec, info, transport=transport, fresh=False, guarded=guard)


def _in_process_target(
    spec: str, card: CardOS, *, fresh: bool, pin: str | None, guarded: bool | None
) -> CardTarget:
    """A target over the registry's in-process card: copies of it (``fresh``), or the card itself."""
    if not isinstance(card, EmvCapCard):  # pragma: no cover - the registry makes capsim cards
        raise ValidationError(f"target: {spec!r} is not a capsim card")
    if not fresh:
        info = _profile_info(card.profile, pin)
        return CardTarget(spec, info, factory=lambda: card, fresh=False, guarded=bool(guarded))
    card_pin = pin or TEST_PIN
    profile, state = card.profile, dataclasses.replace(card.state, pin=card_pin)

    def make() -> CardOS:
        return EmvCapCard(profile, state, rng=_zero_rng)

    return CardTarget(spec, _profile_info(profile, card_pin), factory=make, guarded=bool(guarded))


def _open_py_target(
    spec: str, rest: str, *, pin: str | None, guarded: bool, other_card: OtherCard | None
) -> CardTarget:
    """``py:MODULE:FACTORY``: a third-party card factory."""
    module_name, _, attr = rest.partition(":")
    if not module_name or not attr:
        raise ValidationError(f"target: expected py:MODULE:FACTORY, got {spec!r}")
    if os.getcwd() not in sys.path:  # like ``python -m``: modules of the current directory
        sys.path.append(os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"target: cannot load {rest!r} ({type(exc).__name__})") from None
    if not callable(factory):
        raise ValidationError(f"target: {rest!r} is not callable")
    sample = factory()
    if not isinstance(sample, EmvCapCard) and other_card is not None:
        other = other_card(spec, factory, sample, guarded)
        if other is not None:
            return other
    sample_profile = getattr(sample, "profile", None)
    if sample_profile is not None and hasattr(sample_profile, "cdol1"):
        info = _profile_info(sample_profile, pin)
    else:
        info = discover_card_info(lambda apdu: _power_then(sample, apdu), pin=pin)
    return CardTarget(spec, info, factory=factory, guarded=guarded)


def _power_then(card: CardOS, apdu: bytes) -> bytes:
    return card.process(apdu)
