"""The CAP reader: a sans-IO session (:class:`CapSession`) and a driver over a transport (:class:`CapReader`).

Theory of operation
===================

A CAP run is one EMV transaction that the card ends declined (cap-protocol.md §2).
:class:`CapSession` is the terminal side of it without any I/O: ask
:meth:`CapSession.next_command` for the next :class:`~capsim.apdu.CommandApdu`, send it any way
you like, hand the answer to :meth:`CapSession.receive`, repeat until ``next_command()``
returns ``None``; then :attr:`CapSession.result` holds the :class:`CapResult`.
:class:`CapReader` is that loop over a :class:`~capsim.transports.Transport`.

Rules:

1. Every input (PIN, challenge, amount, currency, TDS fields) is validated in the constructor,
   before any command exists. A bad input raises :class:`~capsim.errors.ValidationError` and
   nothing reaches the card, so no PIN try and no ATC is spent.
2. The session is a table :data:`TRANSITIONS` of (:class:`Phase`, :class:`Answer`) →
   handler. The answer class comes from the status word alone. A pair missing from the table
   raises the status word's typed error (:func:`capsim.apdu.response.status_error`) and moves
   the session to the terminal :attr:`Phase.ERROR`.
3. Application selection (§1, §2 step 1): an explicit AID if given; else every AID of the
   named profile (or of every built-in profile, CAP and DPA first, then payment applications)
   is SELECTed directly, in preference order, as unconnected readers do; ``6A82`` moves on to
   the next one. When none answers, the PSE directory is read and the listed applications
   that extend a known AID are tried by profile preference, then priority (``87``). Nothing
   left: a ``6A82`` :class:`~capsim.errors.StatusWordError` "no CAP application", or
   :class:`~capsim.errors.CardBlockedError` when the only matches were blocked.
4. GPO fills the PDOL with the reader's values (§2 step 2), READ RECORD reads every record of
   every AFL entry (at most :data:`MAX_RECORDS`). The IAF may come from the FCI's ``BF0C``; a
   record value wins.
5. GET DATA ``9F17``: fewer tries than the profile's limit add a warning; zero tries raises
   :class:`~capsim.errors.PinBlockedError` without sending VERIFY. A card that cannot answer is
   not an error.
6. VERIFY carries an ISO 9564 format-2 block and no Le. ``63Cx`` →
   :class:`~capsim.errors.PinError` (``tries_left``), ``6983``/``6984`` →
   :class:`~capsim.errors.PinBlockedError`.
7. GENERATE AC #1 asks for an ARQC with the CDOL1 data of §4; the code follows §6 (IPB), §7
   (TDS) or §8 (fallbacks, Belgian function). GENERATE AC #2 asks for an AAC with the CDOL2
   data (ARC per profile) when the profile's ``send_aac`` is set; its answer is ignored apart
   from a warning.
8. Card data enters only in :meth:`CapSession.receive`. Any parsing failure there is re-typed
   to :class:`~capsim.errors.RemoteProtocolError`; after any error the session is in
   :attr:`Phase.ERROR` for good, and further calls raise
   :class:`~capsim.errors.LocalProtocolError`.
9. A session sends at most :data:`MAX_COMMANDS` commands and accepts responses of at most
   :data:`MAX_RESPONSE` bytes, so a hostile card cannot make it run forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache, partial
from typing import Final, cast

from capsim.apdu import builders
from capsim.apdu.command import CommandApdu
from capsim.apdu.response import ResponseApdu, status_error
from capsim.cap import (
    IAF_PSN,
    CapMode,
    CodeBit,
    belgian_code,
    build_cdol2_data,
    canonical_challenge,
    cdol_values,
    currency_numeric,
    data_string,
    decimal_code,
    explain_belgian,
    explain_ipb,
    ipb_bit_count,
    ipb_extract,
    parse_amount,
    tds_mac,
    validate_tds_fields,
)
from capsim.errors import (
    ApduFormatError,
    CapsimError,
    CardBlockedError,
    CodeOverflowError,
    LocalProtocolError,
    PinBlockedError,
    RemoteProtocolError,
    StatusWordError,
    UnknownIssuerProfile,
    ValidationError,
)
from capsim.profiles import (
    FALLBACK_IPBS,
    PSE_NAME,
    READER_PROFILES,
    CodeFunction,
    NoIpbFallback,
    ReaderProfile,
    get_reader_profile,
    profile_for_aid,
)
from capsim.sm import pin_block_iso2
from capsim.tlv import DolEntry, Tlv, decode, fill_dol, find, parse_dol, walk
from capsim.transports.base import T0Handling, Transport, redact_command

__all__ = [
    "MAX_COMMANDS",
    "MAX_RECORDS",
    "MAX_RESPONSE",
    "TRANSITIONS",
    "Answer",
    "CapReader",
    "CapResult",
    "CapSession",
    "Phase",
]

_log = logging.getLogger(__name__)

#: Most commands one session sends.
MAX_COMMANDS: Final = 128
#: Most records read over the AFL.
MAX_RECORDS: Final = 64
#: Largest response (data bytes) accepted from the card.
MAX_RESPONSE: Final = 4096
#: Largest IAD accepted in a GENERATE AC response (§6 step 1).
_MAX_IAD: Final = 32


class Phase(Enum):
    """Where a :class:`CapSession` is (the command it waits an answer to)."""

    SELECT = "select"
    SELECT_PSE = "select-pse"
    READ_PSE = "read-pse"
    GPO = "gpo"
    READ_RECORD = "read-record"
    GET_PTC = "get-ptc"
    VERIFY = "verify"
    FIRST_AC = "first-ac"
    SECOND_AC = "second-ac"
    DONE = "done"
    ERROR = "error"

    # Members are singletons compared by identity: hash them so too (in C, not through
    # Enum.__hash__), since every answer looks up TRANSITIONS.
    __hash__ = object.__hash__


class Answer(Enum):
    """A card answer, classified by its status word only."""

    OK = "ok"  # 9000
    NOT_FOUND = "not-found"  # 6A82
    RECORD_NOT_FOUND = "record-not-found"  # 6A83
    BLOCKED = "blocked"  # 6283 application blocked, 6A81 card blocked (on SELECT)
    DATA_UNAVAILABLE = "data-unavailable"  # 6A88, 6D00, 6E00, 6A81 (GET DATA not supported)
    PIN_RETRY = "pin-retry"  # 63Cx
    PIN_BLOCKED = "pin-blocked"  # 6983, 6984
    OTHER = "other"

    __hash__ = object.__hash__  # as Phase.__hash__

    @classmethod
    def of(cls, sw: int) -> Answer:
        """Classify a status word."""
        if sw == 0x9000:
            return cls.OK
        if sw == 0x6A82:
            return cls.NOT_FOUND
        if sw == 0x6A83:
            return cls.RECORD_NOT_FOUND
        if sw in (0x6283, 0x6A81):
            return cls.BLOCKED
        if sw in (0x6A88, 0x6D00, 0x6E00):
            return cls.DATA_UNAVAILABLE
        if sw & 0xFFF0 == 0x63C0:
            return cls.PIN_RETRY
        if sw in (0x6983, 0x6984):
            return cls.PIN_BLOCKED
        return cls.OTHER


#: The state × input table (theory of operation, rule 2): handler method names.
TRANSITIONS: Final[dict[tuple[Phase, Answer], str]] = {
    (Phase.SELECT, Answer.OK): "_on_selected",
    (Phase.SELECT, Answer.NOT_FOUND): "_on_select_refused",
    (Phase.SELECT, Answer.BLOCKED): "_on_select_blocked",
    (Phase.SELECT, Answer.DATA_UNAVAILABLE): "_on_select_refused",
    (Phase.SELECT_PSE, Answer.OK): "_on_pse_selected",
    (Phase.SELECT_PSE, Answer.NOT_FOUND): "_on_pse_end",
    (Phase.SELECT_PSE, Answer.BLOCKED): "_on_pse_end",
    (Phase.SELECT_PSE, Answer.DATA_UNAVAILABLE): "_on_pse_end",
    (Phase.SELECT_PSE, Answer.OTHER): "_on_pse_end",
    (Phase.READ_PSE, Answer.OK): "_on_pse_record",
    (Phase.READ_PSE, Answer.RECORD_NOT_FOUND): "_on_pse_end",
    (Phase.READ_PSE, Answer.NOT_FOUND): "_on_pse_end",
    (Phase.READ_PSE, Answer.OTHER): "_on_pse_end",
    (Phase.GPO, Answer.OK): "_on_gpo",
    (Phase.READ_RECORD, Answer.OK): "_on_record",
    (Phase.GET_PTC, Answer.OK): "_on_ptc",
    (Phase.GET_PTC, Answer.DATA_UNAVAILABLE): "_on_ptc_unavailable",
    (Phase.GET_PTC, Answer.NOT_FOUND): "_on_ptc_unavailable",
    (Phase.GET_PTC, Answer.RECORD_NOT_FOUND): "_on_ptc_unavailable",
    (Phase.GET_PTC, Answer.OTHER): "_on_ptc_unavailable",
    (Phase.VERIFY, Answer.OK): "_on_verified",
    (Phase.VERIFY, Answer.PIN_RETRY): "_on_wrong_pin",
    (Phase.VERIFY, Answer.PIN_BLOCKED): "_on_wrong_pin",
    (Phase.FIRST_AC, Answer.OK): "_on_first_ac",
    **{(Phase.SECOND_AC, a): "_on_second_ac" for a in Answer},
}


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
        Where each code bit came from, most significant first (§6 step 2). A reader computes
        it on first access (then keeps it); equality, hashing, :func:`dataclasses.replace`
        and pickling see the same tuple as if it had been computed eagerly.
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
    explanation: tuple[CodeBit, ...] = field(repr=False)
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


class _Deferred(partial[tuple[CodeBit, ...]]):
    """An explanation not computed yet: called once, on the first read of ``explanation``."""


class _Explanation:
    """Data descriptor behind :attr:`CapResult.explanation` (computes a :class:`_Deferred` once)."""

    def __get__(self, obj: object, owner: type | None = None) -> tuple[CodeBit, ...]:
        if obj is None:
            raise AttributeError("explanation")  # keeps the dataclass field without a default
        value = obj.__dict__["explanation"]
        if type(value) is _Deferred:
            value = value()
            obj.__dict__["explanation"] = value
        return cast("tuple[CodeBit, ...]", value)

    def __set__(self, obj: object, value: object) -> None:
        obj.__dict__["explanation"] = value


# The dataclass machinery above compiled ``__init__`` to store ``explanation`` with
# ``object.__setattr__``, which goes through this descriptor from now on.
setattr(CapResult, "explanation", _Explanation())  # noqa: B010 - installs a descriptor on the class


def _encoded(command: CommandApdu) -> tuple[CommandApdu, bytes]:
    return command, command.to_bytes()


# Commands are immutable values: the ones every run repeats are built and encoded once.
_GET_PTC: Final = _encoded(builders.get_data(0x9F17))


@lru_cache(maxsize=64)
def _select_command(aid: bytes) -> tuple[CommandApdu, bytes]:
    return _encoded(builders.select(aid))


@lru_cache(maxsize=64)
def _gpo_command(pdol_data: bytes) -> tuple[CommandApdu, bytes]:
    return _encoded(builders.gpo(pdol_data))


@lru_cache(maxsize=256)
def _read_record_command(record: int, sfi: int) -> tuple[CommandApdu, bytes]:
    return _encoded(builders.read_record(record, sfi))


class _InputError(ValidationError):
    """Caller input the card's data turned out to need (not card misbehaviour)."""


@dataclass(frozen=True)
class _Candidate:
    aid: bytes
    profile: ReaderProfile


def _tlv_map(objs: Sequence[Tlv]) -> dict[int, bytes]:
    """First value of every primitive tag anywhere in ``objs`` (depth-first, as :func:`walk`)."""
    values: dict[int, bytes] = {}
    stack = list(objs)
    stack.reverse()
    while stack:
        obj = stack.pop()
        if obj.children:
            stack.extend(reversed(obj.children))
        # a template without children has an empty value, so a non-empty leaf is primitive
        elif (obj.value or not obj.constructed) and obj.tag not in values:
            values[obj.tag] = obj.value
    return values


def _template_of(objs: tuple[Tlv, ...], tag: int) -> tuple[Tlv | None, dict[int, bytes]]:
    """The first object ``tag`` in ``objs``, and :func:`_tlv_map` of its children (else empty)."""
    obj = find(objs, tag)
    return obj, (_tlv_map(obj.children) if obj is not None else {})


#: Distinct answers one reader keeps decoded (bounded: a hostile card cannot grow it).
_ANSWER_CACHE_SIZE: Final = 32


class _AnswerCache:
    """Card answers decoded once per distinct byte string, for one :class:`CapReader`.

    The FCI, the GPO answer, the records and the PIN try counter come back identical run
    after run from the same card; the reader decodes and indexes each once. Decoding is pure
    and :class:`~capsim.tlv.Tlv` immutable, so a cached answer is the one decode() would give;
    malformed answers raise every time (nothing is cached for them). The maps handed out are
    shared: callers copy them before changing anything.
    """

    def __init__(self) -> None:
        self._decoded: dict[bytes, tuple[Tlv, ...]] = {}
        self._templates: dict[tuple[bytes, int], tuple[Tlv | None, dict[int, bytes]]] = {}

    def decode(self, data: bytes) -> tuple[Tlv, ...]:
        objs = self._decoded.get(data)
        if objs is None:
            objs = decode(data)
            if len(self._decoded) >= _ANSWER_CACHE_SIZE:
                self._decoded.clear()
                self._templates.clear()
            self._decoded[data] = objs
        return objs

    def template(self, data: bytes, tag: int) -> tuple[Tlv | None, dict[int, bytes]]:
        key = (data, tag)
        found = self._templates.get(key)
        if found is None:
            found = _template_of(self.decode(data), tag)
            if len(self._templates) >= 4 * _ANSWER_CACHE_SIZE:
                self._templates.clear()
            self._templates[key] = found
        return found


class CapSession:
    """One CAP run, sans I/O (see the module's theory of operation).

    Parameters
    ----------
    mode:
        The CAP function.
    pin:
        4–12 ASCII digits.
    challenge:
        Respond: required; Sign: optional (UN zero without); Identify/TDS: not allowed.
    amount, currency:
        Sign only: int minor units or a decimal string; ISO 4217 alpha or numeric.
    fields:
        TDS only: 1–10 fields of 1–10 digits.
    profile:
        A reader profile or its name; ``None`` chooses it automatically from the selected AID.
    aid:
        Select only this application.

    Raises
    ------
    ValidationError
        Any bad input (nothing has been sent).
    """

    def __init__(
        self,
        mode: CapMode | str,
        *,
        pin: str,
        challenge: str | None = None,
        amount: int | str | None = None,
        currency: str | None = None,
        fields: Sequence[str] | None = None,
        profile: ReaderProfile | str | None = None,
        aid: bytes | None = None,
    ) -> None:
        try:
            self.mode = CapMode(mode)
        except ValueError:
            raise ValidationError(
                f"mode: expected one of {', '.join(m.value for m in CapMode)}, got {mode!r}"
            ) from None
        self._pin_block = pin_block_iso2(pin)
        self._challenge = None if challenge is None else canonical_challenge(challenge)
        self._currency = currency
        self._amount: int | None = None
        self._fields: tuple[str, ...] = ()
        if self.mode is CapMode.RESPOND and self._challenge is None:
            raise ValidationError("challenge: respond needs a challenge of 1 to 8 digits")
        if self.mode is not CapMode.SIGN and (amount is not None or currency is not None):
            raise ValidationError(f"amount/currency: only sign takes them, not {self.mode.value}")
        if self.mode in (CapMode.IDENTIFY, CapMode.TDS) and challenge is not None:
            raise ValidationError(f"challenge: {self.mode.value} takes no challenge")
        if self.mode is CapMode.SIGN:
            if currency is not None:
                currency_numeric(currency)
            if amount is not None:
                self._amount = parse_amount(amount, currency)
        if self.mode is CapMode.TDS:
            if fields is None:
                raise ValidationError("fields: tds needs 1 to 10 data fields")
            self._fields = validate_tds_fields(fields)
        elif fields is not None:
            raise ValidationError(f"fields: only tds takes data fields, not {self.mode.value}")
        if isinstance(profile, str):
            profile = get_reader_profile(profile)
        elif profile is not None and not isinstance(profile, ReaderProfile):
            raise ValidationError("profile: expected a ReaderProfile, a profile name or None")
        if aid is not None and (not isinstance(aid, bytes) or not 5 <= len(aid) <= 16):
            raise ValidationError("aid: expected 5 to 16 bytes")
        self._fixed_profile = profile
        self._explicit_aid = aid

        self._phase = Phase.SELECT
        self._pending: CommandApdu | None = None
        self._pending_raw = b""
        self._answers: _AnswerCache | None = None  # set by CapReader.run
        self._transcript: list[tuple[bytes, bytes]] = []
        self._warnings: list[str] = []
        self._result: CapResult | None = None
        self._sent = 0

        if aid is not None:
            chosen = profile or profile_for_aid(aid)
            if chosen is None:
                chosen = READER_PROFILES["mc-cap"]
                self._warn(f"AID {aid.hex().upper()} is unknown to the built-in profiles: using mc-cap")
            self._candidates = [_Candidate(aid, chosen)]
        else:
            pool = [profile] if profile is not None else list(READER_PROFILES.values())
            self._candidates = [_Candidate(a, p) for p in pool for a in p.aids]
        self._current = self._candidates[0]
        self._current_sfi = 0
        self._tried: set[bytes] = set()
        self._blocked: list[bytes] = []
        self._pse_done = aid is not None
        self._pse_sfi = 0
        self._pse_record = 0
        self._pse_entries: list[tuple[bytes, int, str]] = []

        # Filled while the run proceeds.
        self._selected: _Candidate | None = None
        self._fci: dict[int, bytes] = {}
        self._records: list[tuple[int, int]] = []
        self._card: dict[int, bytes] = {}
        self._values: dict[int, bytes] = {}
        self._cdol1: tuple[DolEntry, ...] = ()
        self._cdol2: tuple[DolEntry, ...] = ()
        self._gac1: tuple[int, bytes, bytes, bytes] | None = None
        self._code: tuple[str, _Deferred, bytes | None, bytes | None, CodeFunction] | None = None

        self._select_next_candidate()

    # ---------------------------------------------------------------- public API

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phase

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings so far."""
        return tuple(self._warnings)

    @property
    def transcript(self) -> tuple[tuple[bytes, bytes], ...]:
        """Exchanges so far (VERIFY PIN block redacted)."""
        return tuple(self._transcript)

    def next_command(self) -> CommandApdu | None:
        """The command to send next, or ``None`` once the run is complete.

        Raises
        ------
        LocalProtocolError
            The session is in :attr:`Phase.ERROR`.
        """
        if self._phase is Phase.ERROR:
            raise LocalProtocolError("CAP session: a previous error ended this session")
        return self._pending

    def receive(self, response: ResponseApdu) -> None:
        """Consume the card's answer to the last command from :meth:`next_command`.

        Raises
        ------
        LocalProtocolError
            No command is outstanding, or the session already ended.
        RemoteProtocolError
            The card's answer breaks the protocol (also for malformed card data).
        StatusWordError
            A status word the current phase does not allow (typed: PinError, …).
        """
        if self._phase in (Phase.ERROR, Phase.DONE) or self._pending is None:
            raise LocalProtocolError(
                f"CAP session: no command is waiting for an answer ({self._phase.value})"
            )
        if not isinstance(response, ResponseApdu):
            raise LocalProtocolError("CAP session: receive() expects a ResponseApdu")
        command = self._pending
        self._pending = None
        self._transcript.append((redact_command(self._pending_raw), response.to_bytes()))
        try:
            if len(response.data) > MAX_RESPONSE:
                raise RemoteProtocolError(
                    f"card sent {len(response.data)} bytes; at most {MAX_RESPONSE} are accepted"
                )
            handler = TRANSITIONS.get((self._phase, Answer.of(response.sw)))
            if handler is None:
                raise status_error(response.sw, command.ins)
            getattr(self, handler)(response)
            if self._pending is not None:
                self._sent += 1
                if self._sent > MAX_COMMANDS:
                    raise RemoteProtocolError(f"CAP session: more than {MAX_COMMANDS} commands; giving up")
        except (RemoteProtocolError, StatusWordError, _InputError):
            self._fail()
            raise
        except (ApduFormatError, ValidationError, ValueError, IndexError, KeyError) as exc:
            self._fail()
            raise RemoteProtocolError(f"card data rejected in {command.ins:02X} answer: {exc}") from exc
        except CapsimError:
            self._fail()
            raise

    def abort(self) -> None:
        """Move to :attr:`Phase.ERROR` (the driver lost the card)."""
        self._fail()

    @property
    def result(self) -> CapResult:
        """The result once :meth:`next_command` returned ``None``.

        Raises
        ------
        LocalProtocolError
            The run is not complete.
        """
        if self._result is None:
            raise LocalProtocolError(f"CAP session: no result yet (phase {self._phase.value})")
        return self._result

    # ---------------------------------------------------------------- helpers

    def _fail(self) -> None:
        self._phase = Phase.ERROR
        self._pending = None

    def _warn(self, message: str) -> None:
        _log.info("CAP: %s", message)
        self._warnings.append(message)

    def _send(self, phase: Phase, command: CommandApdu, raw: bytes | None = None) -> None:
        """Make ``command`` (encoded as ``raw``, when already known) the next one to send."""
        self._phase = phase
        self._pending = command
        # encoded once: sent, then kept (redacted) in the transcript
        self._pending_raw = command.to_bytes() if raw is None else raw

    @property
    def _profile(self) -> ReaderProfile:
        assert self._selected is not None
        return self._selected.profile

    def _decode(self, data: bytes) -> tuple[Tlv, ...]:
        """``decode(data)`` for answers that repeat from run to run (see :class:`_AnswerCache`)."""
        answers = self._answers
        return decode(data) if answers is None else answers.decode(data)

    def _template(
        self, data: bytes, tag: int, objs: tuple[Tlv, ...] | None = None
    ) -> tuple[Tlv | None, dict[int, bytes]]:
        """The first object ``tag`` of the answer ``data`` (decoded as ``objs``, if already done)
        and the values inside it (shared: read only)."""
        answers = self._answers
        if answers is None:
            return _template_of(decode(data) if objs is None else objs, tag)
        return answers.template(data, tag)

    def _iaf0(self) -> int:
        iaf = self._card.get(0x9F55)
        if iaf is None:
            iaf = self._fci.get(0x9F55)
        if not iaf:
            return self._profile.iaf_default[0]
        return iaf[0]

    # ---------------------------------------------------------------- selection

    def _select_next_candidate(self) -> None:
        while self._candidates:
            candidate = self._candidates.pop(0)
            if candidate.aid in self._tried:
                continue
            self._tried.add(candidate.aid)
            self._current = candidate
            self._send(Phase.SELECT, *_select_command(candidate.aid))
            return
        if not self._pse_done:
            self._pse_done = True
            self._send(Phase.SELECT_PSE, *_select_command(PSE_NAME))
            return
        self._no_application()

    def _no_application(self) -> None:
        tried = ", ".join(a.hex().upper() for a in sorted(self._tried))
        listed = ", ".join(f"{aid.hex().upper()} ({label})" for aid, _, label in self._pse_entries)
        if self._blocked:
            raise CardBlockedError(
                0x6283,
                0xA4,
                "card blocked: the application "
                + ", ".join(a.hex().upper() for a in self._blocked)
                + " is blocked by the issuer",
            )
        raise StatusWordError(
            0x6A82,
            0xA4,
            f"no CAP application on the card (tried {tried}"
            + (f"; the card lists {listed}" if listed else "")
            + ")",
        )

    def _on_select_refused(self, response: ResponseApdu) -> None:
        self._select_next_candidate()

    def _on_select_blocked(self, response: ResponseApdu) -> None:
        self._blocked.append(self._current.aid)
        self._warn(f"application {self._current.aid.hex().upper()} is blocked ({response.sw:04X})")
        self._select_next_candidate()

    def _on_selected(self, response: ResponseApdu) -> None:
        fci, fci_values = self._template(response.data, 0x6F)
        if fci is None:
            raise RemoteProtocolError("SELECT answer has no FCI template 6F")
        self._fci = dict(fci_values)
        df_name = self._fci.get(0x84, self._current.aid)
        profile = self._fixed_profile or self._current.profile
        self._selected = _Candidate(df_name if 5 <= len(df_name) <= 16 else self._current.aid, profile)
        if (
            self._fixed_profile is None
            and profile.belgian_aids
            and not any(self._selected.aid.startswith(a) for a in profile.belgian_aids)
            and not self._belgian_markers()
        ):
            self._warn(
                f"payment application {self._selected.aid.hex().upper()} without Belgian markers "
                f"(5F2C 0056, DF07 BKS056): reader profile {profile.name} may not be the issuer's"
            )
        pdol = self._fci.get(0x9F38, b"")
        pdol_data = b""
        if pdol:
            # PDOL tags are filled as for the CDOLs (§2 step 2); the amount is not known yet
            # because the IAF may sit in a record, so only the UN carries input here.
            un_mode = CapMode.RESPOND if self._challenge is not None else CapMode.IDENTIFY
            base = cdol_values(profile, un_mode, challenge=self._challenge)
            entries = parse_dol(pdol)
            for entry in entries:
                if entry.tag not in base:
                    self._warn(f"PDOL asks for tag {entry.tag:X}, unknown to the reader: zero-filled")
            pdol_data = fill_dol(pdol, base)  # the bytes: their fill plan is cached
        self._send(Phase.GPO, *_gpo_command(pdol_data))

    def _belgian_markers(self) -> bool:
        """EMV-CAP's test for a Belgian card: ``5F2C`` = ``0056`` and ``DF07`` starting ``BKS056``."""
        return self._fci.get(0x5F2C) == b"\x00\x56" and self._fci.get(0xDF07, b"").startswith(b"BKS056")

    def _on_pse_selected(self, response: ResponseApdu) -> None:
        fci = find(decode(response.data), 0x6F)
        sfi_value = _tlv_map(fci.children).get(0x88) if fci is not None else None
        if not sfi_value or len(sfi_value) != 1 or not 1 <= sfi_value[0] <= 30:
            self._on_pse_end(response)
            return
        self._pse_sfi = sfi_value[0]
        self._pse_record = 1
        self._send(Phase.READ_PSE, *_read_record_command(1, self._pse_sfi))

    def _on_pse_record(self, response: ResponseApdu) -> None:
        for _, obj in walk(decode(response.data)):
            if obj.tag == 0x61:
                entry = _tlv_map(obj.children)
                aid = entry.get(0x4F, b"")
                if 5 <= len(aid) <= 16:
                    priority = entry.get(0x87, b"\x00")[:1] or b"\x00"
                    label = entry.get(0x50, b"").decode("ascii", "replace")
                    self._pse_entries.append((aid, priority[0] & 0x0F or 16, label))
        self._pse_record += 1
        if self._pse_record > 16:
            self._on_pse_end(response)
            return
        self._send(Phase.READ_PSE, *_read_record_command(self._pse_record, self._pse_sfi))

    def _on_pse_end(self, response: ResponseApdu) -> None:
        pool = [self._fixed_profile] if self._fixed_profile is not None else list(READER_PROFILES.values())
        ranked: list[tuple[int, int, _Candidate]] = []
        rank = 0
        for profile in pool:
            for known in profile.aids:
                rank += 1
                for aid, priority, _label in self._pse_entries:
                    if aid.startswith(known) and aid not in self._tried:
                        ranked.append((rank, priority, _Candidate(aid, profile)))
        ranked.sort(key=lambda item: (item[0], item[1]))
        self._candidates = [c for _, _, c in ranked]
        self._select_next_candidate()

    # ---------------------------------------------------------------- GPO and records

    def _on_gpo(self, response: ResponseApdu) -> None:
        objs = self._decode(response.data)
        fmt1 = find(objs, 0x80)
        fmt2, inner = self._template(response.data, 0x77, objs)
        if fmt1 is not None and not fmt1.constructed:
            aip, afl = fmt1.value[:2], fmt1.value[2:]
        elif fmt2 is not None:
            aip, afl = inner.get(0x82, b""), inner.get(0x94, b"")
        else:
            raise RemoteProtocolError("GPO answer is neither format 1 (80) nor format 2 (77)")
        if len(aip) != 2:
            raise RemoteProtocolError("GPO answer: the AIP must be 2 bytes")
        if not afl or len(afl) % 4:
            raise RemoteProtocolError(
                f"GPO answer: the AFL must be a non-empty multiple of 4 bytes, got {len(afl)}"
            )
        records: list[tuple[int, int]] = []
        for i in range(0, len(afl), 4):
            sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
            if not 1 <= sfi <= 30 or first == 0 or last < first or last == 0xFF:
                raise RemoteProtocolError(f"GPO answer: malformed AFL entry {afl[i:i + 4].hex().upper()}")
            records.extend((sfi, rec) for rec in range(first, last + 1))
            if len(records) > MAX_RECORDS:
                raise RemoteProtocolError(f"GPO answer: the AFL lists more than {MAX_RECORDS} records")
        self._records = records
        self._next_record()

    def _next_record(self) -> None:
        if self._records:
            sfi, rec = self._records.pop(0)
            self._current_sfi = sfi
            self._send(Phase.READ_RECORD, *_read_record_command(rec, sfi))
            return
        self._records_done()

    def _on_record(self, response: ResponseApdu) -> None:
        template, values = self._template(response.data, 0x70)
        if template is None or not template.constructed:
            if self._current_sfi <= 10:
                raise RemoteProtocolError("READ RECORD answer is not a record template 70")
        else:
            for tag, value in values.items():
                old = self._card.get(tag)
                if old is None:
                    self._card[tag] = value
                elif old != value:
                    self._warn(f"tag {tag:X} appears twice with different values: the first one is used")
        self._next_record()

    def _records_done(self) -> None:
        card = self._card
        if 0x8C not in card:
            raise RemoteProtocolError("the card has no CDOL1 (8C) in its records")
        if self._profile.send_aac and 0x8D not in card:
            raise RemoteProtocolError("the card has no CDOL2 (8D) in its records")
        # parsed once; malformed DOLs fail here, before the PIN is tried
        self._cdol1 = parse_dol(card[0x8C])
        self._cdol2 = parse_dol(card.get(0x8D, b""))
        if 0x9F55 not in card and 0x9F55 not in self._fci:
            self._warn(
                f"the card has no IAF (9F55): assuming {self._profile.iaf_default.hex().upper()}"
            )
        psn = card.get(0x5F34)
        if psn is not None and len(psn) != 1:
            raise RemoteProtocolError(f"PSN (5F34) must be 1 byte, got {len(psn)}")
        self._values = self._terminal_values()
        self._send(Phase.GET_PTC, *_GET_PTC)

    def _terminal_values(self) -> dict[int, bytes]:
        """The CDOL values of this run, now that the IAF is known (before the PIN is tried)."""
        iaf0 = self._iaf0()
        sign = self.mode is CapMode.SIGN
        uses_amount = sign and bool(iaf0 & 0x80)
        if sign and self._amount is not None and not uses_amount:
            self._warn("the card's IAF does not use an amount in sign mode: the amount is ignored")
        if uses_amount and (self._amount is None or (not iaf0 & 0x20 and self._currency is None)):
            what = "an amount" if self._amount is None else "a currency"
            raise _InputError(f"amount/currency: this card's IAF ({iaf0:02X}) asks for {what} in sign mode")
        return cdol_values(
            self._profile,
            CapMode.IDENTIFY if self.mode is CapMode.TDS else self.mode,
            challenge=self._challenge,
            amount=self._amount if uses_amount else None,
            currency=self._currency if uses_amount and not iaf0 & 0x20 else None,
            iaf=bytes([iaf0]),
        )

    # ---------------------------------------------------------------- PIN

    def _on_ptc(self, response: ResponseApdu) -> None:
        try:
            ptc = find(self._decode(response.data), 0x9F17)
        except ApduFormatError:
            ptc = None
        if ptc is None or len(ptc.value) != 1:
            self._warn("the PIN try counter (9F17) is unreadable")
        else:
            tries = ptc.value[0]
            if tries == 0:
                raise PinBlockedError(0x6983, 0xCA, "PIN blocked: the card reports 0 PIN tries left")
            if tries < self._profile.pin_try_limit:
                self._warn(f"only {tries} PIN tr{'y' if tries == 1 else 'ies'} left")
        self._send(Phase.VERIFY, builders.verify_plaintext_pin(self._pin_block))

    def _on_ptc_unavailable(self, response: ResponseApdu) -> None:
        _log.debug("GET DATA 9F17 answered %04X: try counter not available", response.sw)
        self._send(Phase.VERIFY, builders.verify_plaintext_pin(self._pin_block))

    def _on_wrong_pin(self, response: ResponseApdu) -> None:
        raise status_error(response.sw, 0x20)

    def _on_verified(self, response: ResponseApdu) -> None:
        for entry in self._cdol1:
            if entry.tag not in self._values:
                self._warn(f"CDOL1 asks for tag {entry.tag:X}, unknown to the reader: zero-filled")
        data = fill_dol(self._card[0x8C], self._values)  # same DOL as _cdol1; its fill plan is cached
        self._send(Phase.FIRST_AC, builders.generate_ac(0x80, data))

    # ---------------------------------------------------------------- GENERATE AC

    def _parse_ac(self, data: bytes) -> tuple[int, bytes, bytes, bytes]:
        objs = decode(data)
        fmt1 = find(objs, 0x80)
        fmt2 = find(objs, 0x77)
        if fmt1 is not None and not fmt1.constructed:
            v = fmt1.value
            if len(v) < 11:
                raise RemoteProtocolError(f"GENERATE AC format 1: {len(v)} bytes, need at least 11")
            cid, atc, ac, iad = v[0], v[1:3], v[3:11], v[11:]
        elif fmt2 is not None:
            inner = _tlv_map(fmt2.children)
            missing = [f"{t:X}" for t in (0x9F27, 0x9F36, 0x9F26) if t not in inner]
            if missing:
                raise RemoteProtocolError(f"GENERATE AC format 2 lacks {', '.join(missing)}")
            cid_b, atc, ac, iad = inner[0x9F27], inner[0x9F36], inner[0x9F26], inner.get(0x9F10, b"")
            if len(cid_b) != 1 or len(atc) != 2 or len(ac) != 8:
                raise RemoteProtocolError("GENERATE AC format 2: CID 1, ATC 2 and AC 8 bytes expected")
            cid = cid_b[0]
        else:
            raise RemoteProtocolError("GENERATE AC answer is neither format 1 (80) nor format 2 (77)")
        if len(iad) > _MAX_IAD:
            raise RemoteProtocolError(f"GENERATE AC: IAD of {len(iad)} bytes, at most {_MAX_IAD}")
        return cid, atc, ac, iad

    def _on_first_ac(self, response: ResponseApdu) -> None:
        cid, atc, ac, iad = self._parse_ac(response.data)
        if cid & 0xC0 != 0x80:
            kind = "an AAC" if cid & 0xC0 == 0 else "a TC" if cid & 0xC0 == 0x40 else "an RFU AC type"
            self._warn(
                f"the card returned {kind} (CID {cid:02X}) instead of an ARQC: the bank will refuse the code"
            )
        self._gac1 = (cid, atc, ac, iad)
        self._code = self._make_code(cid, atc, ac, iad)
        profile = self._profile
        if profile.send_aac:
            data = build_cdol2_data(self._card.get(0x8D, b""), self._values, profile)
            self._send(Phase.SECOND_AC, builders.generate_ac(0x00, data))
        else:
            self._finish()

    def _on_second_ac(self, response: ResponseApdu) -> None:
        if response.sw != 0x9000:
            self._warn(f"the closing GENERATE AC (AAC) was answered {response.sw:04X}")
        self._finish()

    def _make_code(
        self, cid: int, atc: bytes, ac: bytes, iad: bytes
    ) -> tuple[str, _Deferred, bytes | None, bytes | None, CodeFunction]:
        profile = self._profile
        assert self._selected is not None
        mac: bytes | None = None
        body = ac
        if self.mode is CapMode.TDS:
            mac = tds_mac(self._fields, ac, separator=profile.tds_separator)
            body = mac
        psn = self._card.get(0x5F34)
        psn_in_data = bool(self._iaf0() & IAF_PSN)
        if psn_in_data and psn is None:
            raise RemoteProtocolError("the IAF puts the PSN in the code but the card has no PSN (5F34)")
        ipb = self._card.get(0x9F56)
        if ipb is not None and not 1 <= len(ipb) <= 64:
            raise RemoteProtocolError(f"IPB (9F56) of {len(ipb)} bytes")
        function = profile.code_function_for(self._selected.aid, has_ipb=ipb is not None)
        if function is CodeFunction.BELGIAN:
            code = belgian_code(atc, body)
            bits = _Deferred(explain_belgian, atc, body, ac_name="MAC" if mac else "AC")
            used_ipb = None
        else:
            if ipb is None:
                if profile.no_ipb is NoIpbFallback.ERROR:
                    raise UnknownIssuerProfile(
                        f"the card has no IPB (9F56) and reader profile {profile.name} names no fallback"
                    )
                ipb = FALLBACK_IPBS[profile.no_ipb]
                self._warn(f"the card has no IPB: using the {profile.no_ipb.value} fallback")
            data = data_string(bytes([cid]), atc, body, iad, psn=psn if psn_in_data else None)
            if len(data) < len(ipb):
                if not profile.allow_short_data:
                    raise RemoteProtocolError(
                        f"the data string has {len(data)} bytes but the IPB covers {len(ipb)}"
                    )
                self._warn("the data string is shorter than the IPB: missing bits taken as 0")
            width = ipb_bit_count(ipb)
            if width > 26:
                self._warn(f"the IPB selects {width} bits (more than the usual 26)")
            value = ipb_extract(ipb, data, allow_short=profile.allow_short_data)
            code = decimal_code(value, profile.display_digits)
            # computed on first access (CapResult.explanation): most callers want only the code
            bits = _Deferred(explain_ipb, ipb, data, psn_in_data=psn_in_data, ac_name="MAC" if mac else "AC")
            used_ipb = ipb
        if profile.psn_prefix_digits:
            if psn is None:
                raise RemoteProtocolError(
                    "the reader profile prefixes the PSN but the card has no PSN (5F34)"
                )
            prefix = str(psn[0]).rjust(profile.psn_prefix_digits, "0")
            if len(prefix) > profile.psn_prefix_digits:
                raise CodeOverflowError(
                    f"PSN {psn[0]} does not fit {profile.psn_prefix_digits} prefix digit(s)",
                    psn[0],
                    profile.psn_prefix_digits,
                )
            code = prefix + code
        return code, bits, mac, used_ipb, function

    def _finish(self) -> None:
        assert self._gac1 is not None  # internal invariant
        assert self._code is not None  # internal invariant
        assert self._selected is not None  # internal invariant
        cid, atc, ac, iad = self._gac1
        code, bits, mac, ipb, function = self._code
        psn = self._card.get(0x5F34)
        self._phase = Phase.DONE
        self._pending = None
        self._result = CapResult(
            code=code,
            mode=self.mode,
            atc=int.from_bytes(atc, "big"),
            cryptogram=ac,
            psn=psn.hex().upper() if psn is not None else None,
            profile=self._profile.name,
            aid=self._selected.aid,
            transcript=tuple(self._transcript),
            explanation=cast("tuple[CodeBit, ...]", bits),  # resolved by CapResult on first read
            warnings=tuple(self._warnings),
            cid=cid,
            iad=iad,
            tds_mac=mac,
            ipb=ipb,
            code_function=function,
        )


class CapReader:
    """A CAP reader over a transport: the safe recipe (architecture.md §10 rule 4).

    Parameters
    ----------
    transport:
        Any :class:`~capsim.transports.Transport`. T=0 ``61xx``/``6Cxx`` answers are resolved
        here (:class:`~capsim.transports.T0Handling`), so the session never sees them.
    profile:
        A :class:`~capsim.profiles.ReaderProfile`, a profile name, or ``None`` for automatic
        choice by the selected application.
    aid:
        Select only this application.

    Examples
    --------
    >>> from capsim.transports import open_transport
    >>> with open_transport("inproc:secur-acces") as card:
    ...     result = CapReader(card).respond("1234", "12345678")
    >>> len(result.code), result.mode.value
    (8, 'respond')
    """

    def __init__(
        self, transport: Transport, profile: ReaderProfile | str | None = None, *, aid: bytes | None = None
    ) -> None:
        if isinstance(profile, str):
            profile = get_reader_profile(profile)
        self.transport = transport
        self.profile = profile
        self.aid = aid
        # One T=0 resolver on the link: none added when the transport already resolves 61xx/6Cxx.
        resolved = isinstance(transport, T0Handling) or getattr(transport, "resolves_t0", False) is True
        self._link: Transport = transport if resolved else T0Handling(transport)
        self._answers = _AnswerCache()

    def identify(self, pin: str) -> CapResult:
        """Mode 2 (Identify): a code from the PIN alone."""
        return self.run(CapSession(CapMode.IDENTIFY, pin=pin, profile=self.profile, aid=self.aid))

    def respond(self, pin: str, challenge: str) -> CapResult:
        """Mode 3 (Respond): a code over a challenge of 1–8 digits."""
        return self.run(
            CapSession(CapMode.RESPOND, pin=pin, challenge=challenge, profile=self.profile, aid=self.aid)
        )

    def sign(
        self, pin: str, challenge: str | None, amount: int | str | None = None, currency: str | None = None
    ) -> CapResult:
        """Mode 1 (Sign): challenge or payee reference, amount and currency as the card's IAF asks."""
        return self.run(
            CapSession(
                CapMode.SIGN,
                pin=pin,
                challenge=challenge,
                amount=amount,
                currency=currency,
                profile=self.profile,
                aid=self.aid,
            )
        )

    def sign_data(self, pin: str, fields: Sequence[str]) -> CapResult:
        """Mode 2 + TDS: a code over 1–10 data fields (cap-protocol.md §7)."""
        return self.run(CapSession(CapMode.TDS, pin=pin, fields=fields, profile=self.profile, aid=self.aid))

    def run(
        self, session: CapSession, *, on_exchange: Callable[[bytes, bytes], None] | None = None
    ) -> CapResult:
        """Drive ``session`` to its end over the transport and return its result.

        Parameters
        ----------
        session:
            A fresh :class:`CapSession` (its inputs are already validated).
        on_exchange:
            Called with ``(command, response)`` raw bytes after every exchange (unredacted:
            do not log them as they are).

        Raises
        ------
        CapsimError
            Whatever the session or the transport raises; the session is then in ERROR.
        """
        transmit = self._link.transmit
        if session._answers is None:
            session._answers = self._answers
        command = session.next_command()
        while command is not None:
            # the session encoded its pending command once
            command_raw = session._pending_raw if command is session._pending else command.to_bytes()
            try:
                raw = transmit(command_raw)
            except CapsimError:
                session.abort()
                raise
            try:
                response = ResponseApdu.from_bytes(raw)
            except CapsimError as exc:
                session.abort()
                raise RemoteProtocolError(f"the card's answer is not a response APDU: {exc}") from exc
            if on_exchange is not None:
                on_exchange(command_raw, raw)
            session.receive(response)
            command = session.next_command()
        return session.result
