"""The sans-IO CAP session: one run of the graph, one command and one answer at a time.

Theory of operation
===================

A CAP run is one EMV transaction that the card ends declined (cap-protocol.md §2).
:class:`CapSession` is the terminal side of it without any I/O: ask :meth:`~CapSession.next_command`
for the next :class:`~capsim.apdu.CommandApdu`, send it any way you like, hand the answer to
:meth:`~CapSession.receive`, repeat until ``next_command()`` returns ``None``; then
:attr:`~CapSession.result` holds the :class:`~capsim.reader.result.CapResult`.
:meth:`~CapSession.next_apdu` gives the same command as bytes.

1. Every input is checked in the constructor (:func:`capsim.reader.run.check_inputs`), before
   any command exists: a bad input raises :class:`~capsim.errors.ValidationError` and nothing
   reaches the card.
2. What the session does with an answer is the graph's (:mod:`capsim.reader.graph`): the
   (phase, answer class) pair picks an edge, its handler returns the next step, and the
   session accepts the step only when the edge allows its phase.
3. Card data enters only in :meth:`~CapSession.receive`. Any parsing failure there is re-typed
   to :class:`~capsim.errors.RemoteProtocolError`; after any error the session is in
   ``ERROR`` for good, and further calls raise :class:`~capsim.errors.LocalProtocolError`.
4. A session sends at most :data:`~capsim.reader.phases.MAX_COMMANDS` commands after its first
   and accepts answers of at most :data:`~capsim.reader.phases.MAX_RESPONSE` data bytes, so a
   hostile card cannot make it run forever.
5. A session whose PIN is asked for later (``pin=ASK_PIN``) stops in :attr:`Phase.PIN` once
   the card's PIN try counter allows a try: :meth:`~CapSession.next_command` is then ``None``
   and :attr:`~CapSession.wants_pin` true until :meth:`~CapSession.enter_pin`; a card whose PIN
   is blocked ends the session before (:class:`~capsim.errors.PinBlockedError`).
6. The transcript keeps every exchange as sent and received, with the VERIFY PIN block
   overwritten (:func:`capsim.apdu.redact.redact_command`); the PAN stays (redact before
   showing it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from capsim.apdu.command import CommandApdu
from capsim.apdu.pinblock import pin_block_iso2
from capsim.apdu.redact import redact_command
from capsim.apdu.response import ResponseApdu, status_error
from capsim.cap import CapMode
from capsim.errors import (
    ApduFormatError,
    LocalProtocolError,
    RemoteProtocolError,
    StatusWordError,
    ValidationError,
)
from capsim.profiles import ReaderProfile
from capsim.reader.graph import ENTER_PIN, START, TRANSITIONS
from capsim.reader.phases import MAX_COMMANDS, MAX_RESPONSE, Answer, Phase, Step
from capsim.reader.result import CapResult
from capsim.reader.run import InputError, PinEntry, Run, check_inputs

__all__ = ["CapSession"]


class CapSession:
    """One CAP run, sans I/O (see the module's theory of operation).

    Parameters
    ----------
    mode:
        The CAP function.
    pin:
        4–12 ASCII digits; :data:`~capsim.reader.ASK_PIN` to be asked for it only once the
        card's PIN try counter shows it is not blocked (rule 5); ``None`` for a run without
        cardholder verification: no VERIFY is sent, the first GENERATE AC follows the PIN try
        counter's reading, and a blocked PIN does not stop the run
        (:meth:`capsim.reader.CapReader.issuer_request`).
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

    Examples
    --------
    >>> from capsim.cards import new_card
    >>> from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN
    >>> card = new_card("natwest", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    >>> _ = card.power_on()
    >>> session = CapSession("identify", pin="1234")
    >>> while (command := session.next_command()) is not None:
    ...     session.receive(ResponseApdu.from_bytes(card.process(command.to_bytes())))
    >>> session.phase.name, session.result.code.isdigit()
    ('DONE', True)
    """

    def __init__(
        self,
        mode: CapMode | str,
        *,
        pin: str | PinEntry | None,
        challenge: str | None = None,
        amount: int | str | None = None,
        currency: str | None = None,
        fields: Sequence[str] | None = None,
        profile: ReaderProfile | str | None = None,
        aid: bytes | None = None,
    ) -> None:
        inputs = check_inputs(
            mode,
            pin=pin,
            challenge=challenge,
            amount=amount,
            currency=currency,
            fields=fields,
            profile=profile,
            aid=aid,
        )
        self.mode: CapMode = inputs.mode
        self._run = Run.start(inputs)
        # the phase, the command waiting for its answer and that command's bytes: all set by
        # ``_enter`` below, before any public method can read them (``_pending_raw`` is read only
        # while ``_pending`` is set)
        self._phase: Phase
        self._pending: CommandApdu | None
        self._pending_raw: bytes
        self._transcript: list[tuple[bytes, bytes]] = []
        self._result: CapResult | None = None
        self._sent = 0
        self._enter(START.handler(self._run), START.to, "start")

    # ---------------------------------------------------------------- public API

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phase

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings so far."""
        return tuple(self._run.warnings)

    @property
    def transcript(self) -> tuple[tuple[bytes, bytes], ...]:
        """Exchanges so far (VERIFY PIN block redacted)."""
        return tuple(self._transcript)

    @property
    def application(self) -> bytes | None:
        """The selected application's AID, once a SELECT succeeded (``None`` before)."""
        selected = self._run.selected
        return None if selected is None else selected.aid

    @property
    def card_data(self) -> Mapping[int, bytes]:
        """What the card has said so far, by tag: the selected application's FCI values, then
        its records' values (a record's value wins). A read-only copy."""
        return MappingProxyType({**self._run.fci, **self._run.card})

    @property
    def wants_pin(self) -> bool:
        """True while the session waits for the PIN (:attr:`Phase.PIN`, rule 5)."""
        return self._phase is Phase.PIN

    def enter_pin(self, pin: str) -> None:
        """Give the PIN the session waits for (rule 5); VERIFY is the next command.

        Raises
        ------
        LocalProtocolError
            The session does not wait for a PIN.
        ValidationError
            Not 4–12 ASCII digits (the session still waits for a PIN).
        """
        if self._phase is not Phase.PIN:
            raise LocalProtocolError(f"CAP session: no PIN is wanted now ({self._phase.value})")
        block = pin_block_iso2(pin)
        self._enter(ENTER_PIN.handler(self._run, block), ENTER_PIN.to, ENTER_PIN.handler.__name__)

    @property
    def reader_profile(self) -> ReaderProfile | None:
        """The reader profile of the selected application (``None`` before a SELECT succeeded)."""
        selected = self._run.selected
        return None if selected is None else selected.profile

    @property
    def directory(self) -> tuple[tuple[bytes, int, str], ...]:
        """The applications the card's PSE directory listed, as ``(AID, priority, label)``
        (empty when the session did not need to read it)."""
        return tuple(self._run.pse_entries)

    def next_command(self) -> CommandApdu | None:
        """The command to send next, or ``None`` once the run is complete or while it waits for
        the PIN (:attr:`wants_pin`).

        Raises
        ------
        LocalProtocolError
            The session is in :attr:`Phase.ERROR`.
        """
        if self._phase is Phase.ERROR:
            raise LocalProtocolError("CAP session: a previous error ended this session")
        return self._pending

    def next_apdu(self) -> bytes | None:
        """:meth:`next_command` as the bytes to send (encoded once, when the step was taken).

        Raises
        ------
        LocalProtocolError
            The session is in :attr:`Phase.ERROR`.
        """
        if self.next_command() is None:
            return None
        return self._pending_raw

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
        command = self._pending
        if self._phase in (Phase.ERROR, Phase.DONE) or command is None:
            raise LocalProtocolError(
                f"CAP session: no command is waiting for an answer ({self._phase.value})"
            )
        if not isinstance(response, ResponseApdu):
            raise LocalProtocolError("CAP session: receive() expects a ResponseApdu")
        self._transcript.append((redact_command(self._pending_raw), response.to_bytes()))
        try:
            if len(response.data) > MAX_RESPONSE:
                raise RemoteProtocolError(
                    f"card sent {len(response.data)} bytes; at most {MAX_RESPONSE} are accepted"
                )
            edge = TRANSITIONS.get((self._phase, Answer.of(response.sw)))
            if edge is None:
                raise status_error(response.sw, command.ins)
            self._enter(edge.handler(self._run, response), edge.to, edge.handler.__name__)
        except (RemoteProtocolError, StatusWordError, InputError):
            self._fail()
            raise
        except (ApduFormatError, ValidationError, ValueError, IndexError, KeyError) as exc:
            self._fail()
            raise RemoteProtocolError(f"card data rejected in {command.ins:02X} answer: {exc}") from exc
        except BaseException:  # any other error too, even a capsim bug's (rule 3)
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

    # ---------------------------------------------------------------- the graph's steps

    def _enter(self, step: Step, allowed: tuple[Phase, ...], by: str) -> None:
        """Take ``step`` if the graph allows it (rule 2), counting commands (rule 4)."""
        if step.phase not in allowed:
            raise LocalProtocolError(
                f"CAP session: {by} moved to {step.phase.name}, which the reader's graph does not allow"
            )
        if step.phase is Phase.DONE:
            self._finish()
            return
        if step.phase is Phase.PIN:  # nothing to send: the caller enters the PIN (rule 5)
            self._phase = Phase.PIN
            self._pending = None
            return
        if step.command is None:
            raise LocalProtocolError(f"CAP session: {by} gave no command for {step.phase.name}")
        if self._transcript:  # every command after the first counts
            self._sent += 1
            if self._sent > MAX_COMMANDS:
                raise RemoteProtocolError(f"CAP session: more than {MAX_COMMANDS} commands; giving up")
        self._phase = step.phase
        self._pending_raw = step.command.to_bytes()  # encoded once: sent, then kept (redacted)
        self._pending = step.command

    def _fail(self) -> None:
        self._phase = Phase.ERROR  # for good: every public method checks it before ``_pending``

    def _finish(self) -> None:
        run = self._run
        first = run.first_ac
        if first is None:
            raise LocalProtocolError("CAP session: done without a first GENERATE AC")
        psn = run.card.get(0x5F34)
        self._phase = Phase.DONE
        self._pending = None
        self._result = CapResult(
            code=first.code,
            mode=self.mode,
            atc=int.from_bytes(first.atc, "big"),
            cryptogram=first.ac,
            psn=psn.hex().upper() if psn is not None else None,
            profile=run.profile.name,
            aid=run.application.aid,
            transcript=tuple(self._transcript),
            explanation=first.explanation,
            warnings=tuple(run.warnings),
            cid=first.cid,
            iad=first.iad,
            tds_mac=first.tds_mac,
            ipb=first.ipb,
            code_function=first.code_function,
        )
