"""Discovery: what a CAP reader learns about a card before it asks for the PIN, for bug reports.

Theory of operation
===================

1. :func:`discover` runs the reader's own session (:class:`~capsim.reader.CapSession`, the same
   selection and the same graph as a CAP run) without cardholder verification and stops it
   when it waits to send the first GENERATE AC: the card sees SELECT (and the PSE directory
   when direct selection finds nothing), GET PROCESSING OPTIONS, READ RECORD and GET DATA
   ``9F17``, never VERIFY and never GENERATE AC. GET PROCESSING OPTIONS starts a transaction,
   so the card's ATC goes up by one, as with any reader.
2. The applications are those the session met: every SELECTed AID with its status word
   (selected, not found, blocked), then the PSE directory's entries with their labels.
3. The reader profile and why it was chosen (:class:`ProfileSource`) is a pure function of
   the selected AID and the caller's choice (:func:`profile_source`): given by the caller,
   the card template's choice, by the AID (:func:`capsim.profiles.profile_for_aid`), else a
   fallback (an explicit AID no built-in profile knows is read with ``mc-cap``).
4. The PIN try counter is the card's answer to GET DATA ``9F17`` (``None`` when it gives none).
5. The summary holds the card's data as read (PAN included): whoever shows it redacts it.

>>> from capsim.transports import open_transport
>>> with open_transport("inproc:natwest") as card:
...     summary = discover(card)
>>> summary.aid.hex().upper(), summary.profile, summary.profile_source.value, summary.pin_tries
('A0000000048002', 'mc-cap', 'aid', 3)
>>> 0x8C in summary.data, [c for c, _ in summary.transcript if c[1] in (0x20, 0xAE)]
(True, [])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from capsim.cap import CapMode
from capsim.errors import ApduFormatError, LocalProtocolError
from capsim.profiles import ReaderProfile, get_reader_profile, profile_for_aid
from capsim.reader.apdus import GET_PTC, template
from capsim.reader.driver import CapReader, CardLink
from capsim.reader.phases import Phase
from capsim.reader.session import CapSession

__all__ = ["Application", "CardSummary", "ProfileSource", "discover", "profile_source"]

_INS_SELECT = 0xA4
_GET_PTC = GET_PTC.to_bytes()[:4]


class ProfileSource(Enum):
    """Why a reader profile was chosen (rule 3)."""

    GIVEN = "given"  # the caller named it (--reader-profile)
    TEMPLATE = "template"  # the card template names it
    AID = "aid"  # the built-in profile that knows the selected AID
    FALLBACK = "fallback"  # no built-in profile knows the AID


@dataclass(frozen=True)
class Application:
    """An application the session met (rule 2): its AID, label and what became of it."""

    aid: bytes
    status: str  # "selected", "not found", "blocked", "refused <SW>", "listed"
    label: str = ""
    priority: int | None = None


@dataclass(frozen=True)
class CardSummary:
    """What :func:`discover` learnt (rule 5: unredacted)."""

    aid: bytes
    profile: str
    profile_source: ProfileSource
    applications: tuple[Application, ...]
    data: Mapping[int, bytes]
    pin_tries: int | None
    pin_try_limit: int
    warnings: tuple[str, ...]
    transcript: tuple[tuple[bytes, bytes], ...]

    @property
    def label(self) -> str:
        """The selected application's label (``50``), else its preferred name (``9F12``)."""
        raw = self.data.get(0x50) or self.data.get(0x9F12) or b""
        return raw.decode("ascii", "replace")


def profile_source(aid: bytes, chosen: str, *, given: bool, template: bool = False) -> ProfileSource:
    """Rule 3: why ``chosen`` reads the application ``aid``.

    >>> profile_source(bytes.fromhex("A0000000038002"), "visa-dpa", given=False).value
    'aid'
    >>> profile_source(bytes.fromhex("A0000000999999"), "mc-cap", given=False).value
    'fallback'
    >>> profile_source(bytes.fromhex("A0000000048002"), "mc-cap", given=True, template=True).value
    'template'
    """
    if given:
        return ProfileSource.TEMPLATE if template else ProfileSource.GIVEN
    known = profile_for_aid(aid)
    return ProfileSource.AID if known is not None and known.name == chosen else ProfileSource.FALLBACK


def _applications(session: CapSession) -> tuple[Application, ...]:
    """Rule 2: the SELECTed AIDs with their outcome, then the directory's other entries."""
    seen: dict[bytes, Application] = {}
    selected = session.application
    for command, response in session.transcript:
        if command[1] != _INS_SELECT or len(command) < 6:
            continue
        aid = command[5 : 5 + command[4]]
        sw = int.from_bytes(response[-2:], "big")
        if aid == selected and sw == 0x9000:
            status = "selected"
        elif sw == 0x6A82:
            status = "not found"
        elif sw in (0x6283, 0x6A81):
            status = "blocked"
        elif sw == 0x9000:
            continue  # the PSE itself
        else:
            status = f"refused {sw:04X}"
        seen.setdefault(aid, Application(aid, status))
    for aid, priority, label in session.directory:
        old = seen.get(aid)
        status = old.status if old is not None else "listed"
        seen[aid] = Application(aid, status, label, priority)
    return tuple(seen.values())


def _pin_tries(session: CapSession) -> int | None:
    """Rule 4: the card's answer to GET DATA ``9F17``."""
    for command, response in session.transcript:
        if command[:4] == _GET_PTC and response[-2:] == b"\x90\x00":
            try:
                obj, _ = template(response[:-2], 0x9F17)
            except ApduFormatError:
                return None
            if obj is not None and len(obj.value) == 1:
                return obj.value[0]
    return None


def discover(
    link: CardLink,
    profile: ReaderProfile | str | None = None,
    *,
    aid: bytes | None = None,
    from_template: bool = False,
) -> CardSummary:
    """Read what a CAP reader reads before the PIN, and stop there (rule 1).

    Parameters
    ----------
    link:
        A connected transport (T=0 continuation is handled as in a CAP run).
    profile:
        A reader profile or its name; ``None`` chooses it from the selected application.
    aid:
        Select only this application.
    from_template:
        ``profile`` is the card template's choice, not the caller's (for the reason, rule 3).

    Raises
    ------
    CapsimError
        What a CAP run raises up to GET DATA ``9F17``: no CAP application, a blocked card, a
        broken answer, the transport's errors.
    """
    if isinstance(profile, str):
        profile = get_reader_profile(profile)
    session = CapSession(CapMode.IDENTIFY, pin=None, profile=profile, aid=aid)
    CapReader(link, profile, aid=aid).drive(session, until=Phase.FIRST_AC)
    selected, chosen = session.application, session.reader_profile
    if selected is None or chosen is None or session.phase is not Phase.FIRST_AC:
        raise LocalProtocolError("discovery: the session stopped before the first GENERATE AC")
    return CardSummary(
        aid=selected,
        profile=chosen.name,
        profile_source=profile_source(
            selected, chosen.name, given=profile is not None, template=from_template
        ),
        applications=_applications(session),
        data=dict(session.card_data),
        pin_tries=_pin_tries(session),
        pin_try_limit=chosen.pin_try_limit,
        warnings=session.warnings,
        transcript=session.transcript,
    )
