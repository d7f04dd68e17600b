"""``capsim fuzz card``: structured and random APDU sequences against any card.

Targets (``--target``)
----------------------
``inproc:TEMPLATE``
    A fresh emulated card of a built-in profile for every example (test keys, PIN ``1234``).
``file:CARD.json``
    The card in a card file; its state persists across examples (the model re-reads ATC and
    PTC at the start of each one).
``pcsc:READER``
    A card in a PC/SC reader (a real card, or a card served through pcscd + vpcd).
``py:MODULE:FACTORY``
    ``FACTORY()`` from an importable module returns a fresh :class:`~capsim.cards.CardOS`
    per example (third-party emulators, test fixtures).

Every example is a prologue (SELECT the application, GET DATA ``9F36`` and ``9F17``) and a
Hypothesis-drawn list of actions: EMV commands, mostly well-formed for the card's AID and DOL
lengths (:func:`capsim.testing.strategies.emv_commands`), random APDUs, and power cycles.
Each exchange goes through :class:`capsim.testing.model.CardModel`; the first broken invariant
fails the example and Hypothesis shrinks the action list to a minimal one, saved as a finding.

Safety (``pcsc:`` targets, and any target with ``guarded=True``)
----------------------------------------------------------------
:class:`StateChangeGuard` lets through only the allow-list of read-only commands (SELECT,
READ RECORD, READ BINARY, GET DATA, GET RESPONSE, GET CHALLENGE with CLA ``00``/``80``)
unless ``allow_state_changes`` is set; everything else (GET PROCESSING OPTIONS, VERIFY,
GENERATE AC, any CLA ``84``, PUT DATA, writes, unknown instructions) is refused without being
sent. Even with state changes allowed, VERIFY is sent only after a GET DATA ``9F17`` read just
before it shows a PIN try counter of at least 2, so the harness can never block a real card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from capsim.apdu import builders
from capsim.apdu.response import ResponseApdu
from capsim.cap import CapMode
from capsim.cards import EmvCapCard
from capsim.cards.base import CardOS
from capsim.errors import ApduFormatError, CapsimError, ValidationError
from capsim.reader import CapSession
from capsim.reader import Phase as ReaderPhase
from capsim.testing.findings import Finding, save_finding
from capsim.testing.model import CardModel, Violation, parse_pin_block
from capsim.testing.strategies import emv_commands, raw_apdus
from capsim.tlv import decode, find, parse_dol
from capsim.transports import open_transport
from capsim.transports.base import Transport
from capsim.transports.inprocess import TEST_PIN, InProcessTransport

__all__ = [
    "SAFE_INS",
    "Action",
    "CardInfo",
    "CardTarget",
    "FuzzReport",
    "StateChangeGuard",
    "actions",
    "discover_card_info",
    "fuzz_card",
    "is_state_changing",
    "open_card_target",
    "replay_card_finding",
    "run_card_sequence",
    "run_engine",
    "transactions",
]

_log = logging.getLogger(__name__)

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
    """What the fuzzer knows about the card: where the CAP application is and its DOL sizes."""

    aid: bytes = bytes.fromhex("A0000000048002")
    pdol_length: int = 0
    cdol1_length: int = 29
    cdol2_length: int = 31
    pin: str | None = None
    pin_try_limit: int | None = None


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


def open_card_target(spec: str, *, pin: str | None = None, guarded: bool | None = None) -> CardTarget:
    """Open a ``--target`` spec (module docstring).

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
        return _open_py_target(spec, rest, pin=pin, guarded=bool(guarded))
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


def _open_py_target(spec: str, rest: str, *, pin: str | None, guarded: bool) -> CardTarget:
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
    sample_profile = getattr(sample, "profile", None)
    if sample_profile is not None and hasattr(sample_profile, "cdol1"):
        info = _profile_info(sample_profile, pin)
    else:
        info = discover_card_info(lambda apdu: _power_then(sample, apdu), pin=pin)
    return CardTarget(spec, info, factory=factory, guarded=guarded)


def _power_then(card: CardOS, apdu: bytes) -> bytes:
    return card.process(apdu)


def transactions(info: CardInfo) -> st.SearchStrategy[list[Action]]:
    """One CAP transaction, well-formed in shape (cap-protocol.md §2): [SELECT] GPO, 0–4
    VERIFYs, [GET DATA 9F17], 0–3 GENERATE ACs, sometimes a script or EXTERNAL AUTHENTICATE."""
    select = bytes((0x00, 0xA4, 0x04, 0x00, len(info.aid))) + info.aid + b"\x00"
    gpo = bytes((0x80, 0xA8, 0x00, 0x00, info.pdol_length + 2, 0x83, info.pdol_length))
    gpo += bytes(info.pdol_length) + b"\x00"

    def cmd(*names: str) -> st.SearchStrategy[bytes]:
        return emv_commands(
            names=names,
            aid=info.aid,
            pdol_length=info.pdol_length,
            cdol1_length=info.cdol1_length,
            cdol2_length=info.cdol2_length,
            pin=info.pin,
            valid=0.9,
        ).map(lambda c: c.to_bytes())

    @st.composite
    def build(draw: st.DrawFn) -> list[Action]:
        out: list[Action] = []
        if draw(st.integers(0, 3)):
            out.append(select)
        out.append(gpo)
        out.extend(draw(st.lists(cmd("verify"), max_size=4)))
        if draw(st.booleans()):
            out.append(_GET_PTC)
        out.extend(draw(st.lists(cmd("generate_ac"), max_size=3)))
        out.extend(draw(st.lists(cmd("script", "external_authenticate", "get_data"), max_size=2)))
        return out

    return build()


def actions(info: CardInfo, *, max_size: int = 30) -> st.SearchStrategy[list[Action]]:
    """Action lists for :func:`run_card_sequence`: whole transactions (:func:`transactions`),
    single EMV commands, random APDUs and power cycles (``b""``)."""
    commands = emv_commands(
        aid=info.aid,
        pdol_length=info.pdol_length,
        cdol1_length=info.cdol1_length,
        cdol2_length=info.cdol2_length,
        pin=info.pin,
    ).map(lambda c: c.to_bytes())
    single = st.one_of(commands, raw_apdus(max_size=40), st.just(_POWER)).map(lambda a: [a])
    step = st.one_of(transactions(info), transactions(info), single)
    return st.lists(step, min_size=1, max_size=max_size).map(lambda parts: [a for p in parts for a in p])


@dataclass(kw_only=True)
class _Run:
    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)
    power_cycles: list[int] = field(default_factory=list)
    refused: int = 0


def _prologue(info: CardInfo) -> list[Action]:
    select = bytes((0x00, 0xA4, 0x04, 0x00, len(info.aid))) + info.aid + b"\x00"
    return [select, _GET_ATC, _GET_PTC]


def run_card_sequence(
    target: CardTarget,
    steps: Sequence[Action],
    *,
    allow_state_changes: bool = False,
    run: _Run | None = None,
) -> tuple[Violation | None, _Run]:
    """Run the prologue and ``steps`` on ``target``; return the first violation and the record."""
    run = run if run is not None else _Run()
    info = target.info
    model = CardModel(aid=info.aid, pin=info.pin, pin_try_limit=info.pin_try_limit)
    violation: list[Violation] = []

    def record(cmd: bytes, rsp: bytes) -> None:
        run.exchanges.append((cmd, rsp))
        found = model.observe(cmd, rsp)
        if found is not None and not violation:
            violation.append(found)

    guard = (
        StateChangeGuard(target.exchange, allow_state_changes=allow_state_changes, observe=record)
        if target.guarded
        else None
    )
    try:
        target.begin()
    except _CrashError as crash:
        return Violation(invariant="exception", detail=f"the card raised {crash} at power-on"), run
    for step in (*_prologue(info), *steps):
        if violation:
            break
        if step == _POWER:
            try:
                target.power_cycle()
            except _CrashError as crash:
                detail = f"the card raised {crash} in a power cycle"
                violation.append(Violation(invariant="exception", detail=detail, index=len(run.exchanges)))
                break
            model.power_cycle()
            run.power_cycles.append(len(run.exchanges))
            continue
        try:
            if guard is not None:
                answer = guard(step)
                if answer is None:
                    run.refused += 1
                    continue
            else:
                answer = target.exchange(step)
        except ValidationError:  # the transport refused to send it (e.g. under 4 bytes over PC/SC)
            run.refused += 1
            continue
        except _CrashError as crash:
            run.exchanges.append((step, b""))
            index = len(run.exchanges) - 1
            violation.append(Violation(invariant="exception", detail=f"the card raised {crash}", index=index))
            break
        record(step, answer)
    return (violation[0] if violation else None), run


@dataclass(frozen=True, kw_only=True)
class FuzzReport:
    """The result of a fuzzing run."""

    fuzzer: str
    target: str
    seed: int
    examples: int
    apdus: int
    elapsed: float
    findings: tuple[Finding, ...] = ()
    refused: int = 0
    stopped: str = "max-examples"

    @property
    def ok(self) -> bool:
        """No invariant broke."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "fuzzer": self.fuzzer,
            "target": self.target,
            "seed": self.seed,
            "examples": self.examples,
            "apdus": self.apdus,
            "elapsed": round(self.elapsed, 3),
            "refused": self.refused,
            "stopped": self.stopped,
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
        }


class _FailedError(Exception):
    def __init__(self, violation: Violation, run: _Run) -> None:
        super().__init__(f"{violation.invariant}: {violation.detail}")
        self.violation = violation
        self.run = run


def _hypothesis_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        phases=(Phase.generate, Phase.shrink),
    )


def _redact_pin(exchanges: list[tuple[bytes, bytes]], pin: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """VERIFY blocks carrying the card's real PIN become ``FF`` (the replay transport accepts them)."""
    out = []
    for cmd, rsp in exchanges:
        if pin is not None and len(cmd) == 13 and cmd[1] == 0x20 and parse_pin_block(cmd[5:]) == pin:
            out.append((cmd[:5] + b"\xff" * 8, rsp))
        else:
            out.append((cmd, rsp))
    return tuple(out)


def run_engine(
    body: Callable[[Any], int],
    strategy: st.SearchStrategy[Any],
    *,
    seed: int,
    max_examples: int,
    time_budget: float | None,
    on_example: Callable[[int, int, int], None] | None = None,
    chunk: int = 100,
    clock: Callable[[], float] = time.monotonic,
    max_findings: int = 1,
) -> tuple[int, int, str, list[_FailedError], list[int]]:
    """Run ``body`` on Hypothesis examples of ``strategy`` in chunks of ``chunk`` examples,
    one chunk seed after the other (``seed``, ``seed + 1``, ...), until ``max_examples`` or
    ``time_budget`` is reached or ``max_findings`` examples failed (each shrunk by Hypothesis;
    the chunk that found one ends there and the next chunk goes on).

    ``body`` returns the number of APDUs it exchanged and raises ``_FailedError`` on a violation.
    ``on_example(examples, apdus, findings)`` is called after every passing example.
    Returns (examples, apdus, stop reason, failures, seeds of the failures).
    """
    start = clock()
    counts = {"examples": 0, "apdus": 0}
    failing = {"seen": False}
    failures: list[_FailedError] = []
    seeds: list[int] = []

    def over_budget() -> bool:
        return time_budget is not None and clock() - start >= time_budget

    def wrapped(value: Any) -> None:
        if not failing["seen"] and over_budget():
            return
        try:
            n = body(value)
        except _FailedError:
            failing["seen"] = True
            raise
        counts["examples"] += 1
        counts["apdus"] += n
        if on_example is not None:
            on_example(counts["examples"], counts["apdus"], len(failures))

    index = 0
    stopped = "max-examples"
    while counts["examples"] < max_examples:
        if over_budget():
            stopped = "time-budget"
            break
        n = min(chunk, max_examples - counts["examples"])
        chunk_seed = seed + index
        index += 1
        test = hypothesis_seed(chunk_seed)(_hypothesis_settings(n)(given(strategy)(wrapped)))
        before = counts["examples"]
        try:
            test()
        except Exception as exc:  # a failure, possibly wrapped by Hypothesis (flaky, groups)
            failed = _find_failure(exc)
            if failed is None:
                raise
            failures.append(failed)
            seeds.append(chunk_seed)
            failing["seen"] = False
            if len(failures) >= max_findings:
                stopped = "finding"
                break
            continue
        if counts["examples"] == before:  # nothing ran (budget reached inside the chunk)
            stopped = "time-budget"
            break
    return counts["examples"], counts["apdus"], stopped, failures, seeds


def _find_failure(exc: BaseException) -> _FailedError | None:
    """The :class:`_FailedError` in ``exc``, its exception groups or its causes."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _FailedError):
            return item
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        for linked in (item.__cause__, item.__context__):
            if linked is not None:
                todo.append(linked)
    return None


def fuzz_card(
    target: CardTarget,
    *,
    seed: int = 0,
    max_examples: int = 2000,
    time_budget: float | None = 60.0,
    allow_state_changes: bool = False,
    findings_dir: str | os.PathLike[str] | None = None,
    max_steps: int = 30,
    on_progress: Callable[[int, int, int], None] | None = None,
    max_findings: int = 1,
) -> FuzzReport:
    """Fuzz ``target`` (module docstring) and return a :class:`FuzzReport`.

    Parameters
    ----------
    seed:
        Hypothesis seed of the first chunk of examples; the same seed repeats the run on a
        card that behaves the same.
    max_examples, time_budget:
        Stop after this many examples or seconds, whichever comes first.
    allow_state_changes:
        Guarded targets only: let state-changing commands through (VERIFY still needs PTC ≥ 2).
    findings_dir:
        Where findings are saved as transcripts (not saved when ``None``). For ``pcsc:`` and
        ``file:`` targets a VERIFY carrying the card's known PIN is saved with an all-``FF``
        block (the ``replay:`` transport accepts any block in its place).
    on_progress:
        Called as ``on_progress(examples, apdus, findings)`` after each example.
    max_findings:
        Stop after this many findings (duplicates, same invariant and detail, are reported once).
    """
    if max_examples < 1:
        raise ValidationError("max_examples: expected a positive number of examples")
    if time_budget is not None and time_budget <= 0:
        raise ValidationError("time_budget: expected a positive number of seconds")
    refused = {"n": 0}

    def body(steps: list[Action]) -> int:
        violation, run = run_card_sequence(target, steps, allow_state_changes=allow_state_changes)
        refused["n"] += run.refused
        if violation is not None:
            raise _FailedError(violation, run)
        return len(run.exchanges)

    started = time.monotonic()
    examples, apdus, stopped, failures, seeds = run_engine(
        body,
        actions(target.info, max_size=max_steps),
        seed=seed,
        max_examples=max_examples,
        time_budget=time_budget,
        on_example=on_progress,
        max_findings=max_findings,
    )
    findings = []
    distinct: dict[tuple[str, str], tuple[_FailedError, int]] = {}
    for failed, chunk_seed in zip(failures, seeds, strict=True):
        distinct.setdefault((failed.violation.invariant, failed.violation.detail), (failed, chunk_seed))
    for failed, chunk_seed in distinct.values():
        # a real PIN (pcsc:, file:) never reaches a finding; inproc:/py: test PINs stay replayable
        real_pin = target.transport is not None or target.spec.startswith("file:")
        redact = target.info.pin if real_pin else None
        finding = Finding(
            fuzzer="card",
            target=target.spec,
            seed=chunk_seed,
            invariant=failed.violation.invariant,
            detail=failed.violation.detail,
            exchanges=_redact_pin(failed.run.exchanges, redact),
            power_cycles=tuple(failed.run.power_cycles),
            meta={"allow_state_changes": "yes" if allow_state_changes else "no"},
        )
        if findings_dir is not None:
            finding = save_finding(findings_dir, finding)
        _log.info("finding: %s", finding.summary())
        findings.append(finding)
    if on_progress is not None:
        on_progress(examples, apdus, len(findings))
    return FuzzReport(
        fuzzer="card",
        target=target.spec,
        seed=seed,
        examples=examples,
        apdus=apdus,
        elapsed=time.monotonic() - started,
        findings=tuple(findings),
        refused=refused["n"],
        stopped=stopped,
    )


def replay_card_finding(
    finding: Finding, *, target: CardTarget | None = None, info: CardInfo | None = None
) -> Violation | None:
    """Check a saved card finding again.

    Without ``target`` the recorded answers are played back through
    :class:`~capsim.transports.replay.ReplayTransport` and checked by the model; with
    ``target`` the recorded commands are sent to it (a fresh card) and its answers checked.
    Returns the violation seen, or ``None`` when the sequence now passes.
    """
    from capsim.transports.replay import RecordedSession, ReplayTransport

    cycles = set(finding.power_cycles)
    if target is not None:
        try:
            target.begin()
        except _CrashError as crash:
            return Violation(invariant="exception", detail=f"the card raised {crash} at power-on")
        send: Callable[[bytes], bytes] = target.exchange
        power: Callable[[], None] = target.power_cycle
        known = info or target.info
    else:
        replay = ReplayTransport(RecordedSession(exchanges=finding.exchanges), synthesize_pin=False)
        replay.connect()
        send = replay.transmit
        power = _nothing
        known = info or CardInfo(aid=finding.exchanges[0][0][5:-1] if finding.exchanges else b"")
    model = CardModel(aid=known.aid or None, pin=known.pin, pin_try_limit=known.pin_try_limit)
    for i, (cmd, _) in enumerate(finding.exchanges):
        if i in cycles:
            try:
                power()
            except _CrashError as crash:
                return Violation(
                    invariant="exception", detail=f"the card raised {crash} in a power cycle", index=i
                )
            model.power_cycle()
        try:
            answer = send(cmd)
        except _CrashError as crash:
            return Violation(invariant="exception", detail=f"the card raised {crash}", index=i)
        except CapsimError:
            raise
        violation = model.observe(cmd, answer)
        if violation is not None:
            return violation
    return None


def _nothing() -> None:
    return None
