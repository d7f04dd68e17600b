"""The CAP reader over a link to a card: :class:`CapReader` drives a :class:`CapSession`.

Theory of operation
===================

1. The reader sends what the session asks for and hands back what the card answers, through
   the session's public methods only; it decides nothing about the protocol.
2. T=0 ``61xx``/``6Cxx`` answers are resolved before the session sees them
   (cap-protocol.md §2 step 8) with :func:`capsim.apdu.t0.transmit_with_t0`, unless the link
   already resolves them itself (its ``resolves_t0`` is true: ``T0Handling``, the PC/SC
   transport), so no link resolves T=0 twice.
3. A link error (:class:`~capsim.errors.CapsimError` from ``transmit``) or an answer that is
   not a response APDU aborts the session (it ends in ``ERROR``) and is raised.
4. A session that waits for the PIN (``Phase.PIN``) gets it from the caller's ``ask_pin``,
   called only then: after the card's PIN try counter has shown the PIN is not blocked.

The reader needs only :class:`CardLink` of a link, a part of
:class:`capsim.transports.Transport`: every capsim transport is one, and this package imports
nothing from :mod:`capsim.transports`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from capsim.apdu.response import ResponseApdu
from capsim.apdu.t0 import transmit_with_t0
from capsim.cap import CapMode
from capsim.errors import CapsimError, LocalProtocolError, RemoteProtocolError
from capsim.profiles import ReaderProfile, get_reader_profile
from capsim.reader.phases import Phase
from capsim.reader.result import CapResult
from capsim.reader.session import CapSession

__all__ = ["CapReader", "CardLink"]


class CardLink(Protocol):
    """What :class:`CapReader` uses of a :class:`capsim.transports.Transport`."""

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU and return the response, status word included."""
        ...

    @property
    def resolves_t0(self) -> bool:
        """True when :meth:`transmit` never returns ``61xx``/``6Cxx``."""
        ...


class CapReader:
    """A CAP reader over a transport: the safe recipe (architecture.md §10 rule 4).

    Parameters
    ----------
    transport:
        Any :class:`~capsim.transports.Transport` (connected). T=0 ``61xx``/``6Cxx`` answers
        are resolved here unless the transport resolves them itself (rule 2).
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
        self, transport: CardLink, profile: ReaderProfile | str | None = None, *, aid: bytes | None = None
    ) -> None:
        if isinstance(profile, str):
            profile = get_reader_profile(profile)
        self.transport = transport
        self.profile = profile
        self.aid = aid
        self._transmit: Callable[[bytes], bytes] = (
            transport.transmit if transport.resolves_t0 else partial(transmit_with_t0, transport.transmit)
        )

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

    def issuer_request(self) -> CapResult:
        """An Identify transaction without cardholder verification, for the issuer.

        No VERIFY is sent, so it runs on a card whose PIN is blocked. The result's
        ``cryptogram`` (the ARQC) and ``atc`` are what the issuer builds a script for this card
        from (:meth:`capsim.verifier.Verifier.build_pin_script`); send the script over the same
        link right after, before the card is powered off. Its ``code`` is no login code.

        Examples
        --------
        >>> from capsim.transports import open_transport
        >>> with open_transport("inproc:secur-acces") as card:
        ...     request = CapReader(card).issuer_request()
        >>> len(request.cryptogram), request.atc > 0, request.cid >> 6  # an ARQC
        (8, True, 2)
        >>> [cmd[1] for cmd, _ in request.transcript if cmd[1] == 0x20]  # no VERIFY
        []
        """
        return self.run(CapSession(CapMode.IDENTIFY, pin=None, profile=self.profile, aid=self.aid))

    def run(
        self,
        session: CapSession,
        *,
        on_exchange: Callable[[bytes, bytes], None] | None = None,
        ask_pin: Callable[[], str] | None = None,
    ) -> CapResult:
        """Drive ``session`` to its end over the transport and return its result (rules 1–4).

        Parameters
        ----------
        session:
            A fresh :class:`CapSession` (its inputs are already validated).
        on_exchange:
            Called with ``(command, response)`` raw bytes after every exchange (unredacted:
            do not log them as they are).
        ask_pin:
            For a session made with ``pin=ASK_PIN``: returns the PIN, called once the card
            is ready for it (never for a card whose PIN is blocked).

        Raises
        ------
        CapsimError
            Whatever the session, the transport or ``ask_pin`` raises; the session is then in
            ERROR.

        Examples
        --------
        >>> from capsim.reader import ASK_PIN
        >>> from capsim.transports import open_transport
        >>> asked = []
        >>> def ask() -> str:
        ...     asked.append(True)
        ...     return "1234"
        >>> with open_transport("inproc:secur-acces") as card:
        ...     result = CapReader(card).run(CapSession("identify", pin=ASK_PIN), ask_pin=ask)
        >>> asked, len(result.code)
        ([True], 8)
        """
        self.drive(session, on_exchange=on_exchange, ask_pin=ask_pin)
        return session.result

    def drive(
        self,
        session: CapSession,
        *,
        until: Phase | None = None,
        on_exchange: Callable[[bytes, bytes], None] | None = None,
        ask_pin: Callable[[], str] | None = None,
    ) -> None:
        """Drive ``session`` until it is complete or, with ``until``, until it waits in that
        phase (its command for ``until`` is then not sent). Raises as :meth:`run` does."""
        transmit = self._transmit
        command_raw = self._next(session, ask_pin)
        while command_raw is not None and session.phase is not until:
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
            command_raw = self._next(session, ask_pin)

    @staticmethod
    def _next(session: CapSession, ask_pin: Callable[[], str] | None) -> bytes | None:
        """The session's next command, after asking for the PIN when it waits for one (rule 4)."""
        if session.wants_pin:
            if ask_pin is None:
                session.abort()
                raise LocalProtocolError("CAP session: it waits for a PIN and run() was given no ask_pin")
            try:
                session.enter_pin(ask_pin())
            except BaseException:
                session.abort()
                raise
        return session.next_apdu()
