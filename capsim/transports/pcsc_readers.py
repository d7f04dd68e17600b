"""PC/SC readers: their names, choosing one (index, name, fragment), their states, waiting for a card.

Theory of operation
===================

1. :func:`list_readers` and :func:`reader_states` list the readers in pcscd's order (the order
   of ``SCardListReaders``); a reader's index is its position there, as ``capsim readers``
   prints it.
2. :func:`resolve_reader` chooses one reader: an ``int`` by index; a string by exact name, else
   by the one name containing it (case-insensitive). Several matches are
   :class:`~capsim.errors.ReaderAmbiguousError` with the candidates; none, or an index past the
   end, is :class:`~capsim.errors.ReaderNotFoundError` listing the readers with their indexes.
   (The spec parser, :func:`capsim.transports.parse_spec`, turns an all-digit ``pcsc:N`` into
   an index before it gets here.)
3. :func:`reader_states` reads presence and ATR with one non-blocking ``SCardGetStatusChange``:
   no card is powered or connected to list them.
4. :func:`wait_for_card` blocks on ``SCardGetStatusChange`` in slices of at most one second
   until pcscd reports a responsive card, or raises
   :class:`~capsim.errors.CardWaitTimeoutError` when the time is up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capsim.errors import CardWaitTimeoutError, ReaderAmbiguousError, ReaderNotFoundError, ValidationError
from capsim.transports.pcsc_errors import (
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_TIMEOUT,
    hresult_error,
    import_scard,
    import_system,
    is_pyscard_error,
    map_pyscard_error,
)

__all__ = ["ReaderState", "list_readers", "reader_names", "reader_states", "resolve_reader", "wait_for_card"]


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows, in pcscd's order (``pcsc.md`` §3).

    Mirrors ``smartcard.System.readers()`` with strings instead of reader objects.

    Raises
    ------
    PcscUnavailableError
        pcscd is not running, or pyscard is not installed.
    """
    system = import_system()
    try:
        return [str(r) for r in system.readers()]
    except Exception as exc:
        if is_pyscard_error(exc):
            raise map_pyscard_error(exc) from None
        raise


def resolve_reader(name: str | int, readers: Sequence[str] | None = None) -> str:
    """The reader called ``name``, else the only reader whose name contains it; an ``int`` is
    the reader's index in the list (``capsim readers`` numbers them from 0).

    Parameters
    ----------
    name:
        An index, an exact reader name, or a case-insensitive substring of exactly one
        reader's name. (The spec parser, :func:`capsim.transports.open_transport`, turns an
        all-digit ``pcsc:N`` into an index before it gets here.)
    readers:
        The names to choose from; :func:`list_readers` when omitted.

    Raises
    ------
    ReaderAmbiguousError
        Several readers contain ``name``; ``candidates`` lists them.
    ReaderNotFoundError
        No reader matches, or the index is out of range (the message lists the readers
        there are, with their indexes).

    Examples
    --------
    >>> names = ["ACS ACR39U 00 00", "CAPSIM Virtual 00 00", "CAPSIM Virtual 00 01"]
    >>> resolve_reader("acr39", names)
    'ACS ACR39U 00 00'
    >>> resolve_reader("CAPSIM Virtual 00 01", names)
    'CAPSIM Virtual 00 01'
    >>> resolve_reader(1, names)
    'CAPSIM Virtual 00 00'
    >>> try:
    ...     resolve_reader("capsim", names)
    ... except ReaderAmbiguousError as exc:
    ...     print(exc.candidates)
    ['CAPSIM Virtual 00 00', 'CAPSIM Virtual 00 01']
    """
    index = name if isinstance(name, int) and not isinstance(name, bool) and name >= 0 else None
    if index is None and (not isinstance(name, str) or not name.strip()):
        raise ValidationError(f"reader: expected a reader name, a part of one or an index, got {name!r}")
    available = list_readers() if readers is None else list(readers)
    listing = ", ".join(f"{i}: {r!r}" for i, r in enumerate(available))
    if index is not None:
        if 0 <= index < len(available):
            return available[index]
        if not available:
            raise ReaderNotFoundError(f"no reader {index}: pcscd reports no readers")
        raise ReaderNotFoundError(f"no reader {index}; readers: {listing}")
    assert isinstance(name, str)
    if name in available:
        return name
    needle = name.casefold()
    matches = [r for r in available if needle in r.casefold()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        found = ", ".join(repr(r) for r in matches)
        raise ReaderAmbiguousError(
            f"{len(matches)} readers match {name!r}: {found} (give more of the name, or an index)", matches
        )
    if not available:
        raise ReaderNotFoundError(f"no reader matches {name!r}: pcscd reports no readers")
    raise ReaderNotFoundError(f"no reader matches {name!r}; readers: {listing}")


@dataclass(frozen=True)
class ReaderState:
    """One PC/SC reader as ``capsim readers`` shows it (:func:`reader_states`)."""

    index: int
    name: str
    card_present: bool
    atr: bytes


def reader_states() -> list[ReaderState]:
    """Every PC/SC reader, in pcscd's order, with card presence and ATR (no card is connected).

    One ``SCardListReaders`` and one non-blocking ``SCardGetStatusChange`` over all readers.

    Raises
    ------
    PcscUnavailableError
        pcscd is not running, or pyscard is not installed.
    """
    sc = import_scard()
    hresult, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
    if hresult != sc.SCARD_S_SUCCESS:
        raise hresult_error(sc, hresult, "establishing a PC/SC context")
    try:
        names = reader_names(sc, context)
        if not names:
            return []
        hresult, states = sc.SCardGetStatusChange(context, 0, [(n, sc.SCARD_STATE_UNAWARE) for n in names])
        if hresult not in (sc.SCARD_S_SUCCESS, SCARD_E_TIMEOUT):
            raise hresult_error(sc, hresult, "reading the readers' states")
    finally:
        sc.SCardReleaseContext(context)
    out = []
    for index, (name, event, atr) in enumerate(states):
        present = bool(event & sc.SCARD_STATE_PRESENT)
        out.append(ReaderState(index, str(name), present, bytes(atr) if present else b""))
    return out


def reader_names(sc: Any, context: Any) -> list[str]:
    """The reader names of an established ``smartcard.scard`` context (empty: no readers)."""
    hresult, names = sc.SCardListReaders(context, [])
    if hresult == SCARD_E_NO_READERS_AVAILABLE:
        return []
    if hresult != sc.SCARD_S_SUCCESS:
        raise hresult_error(sc, hresult, "listing the readers")
    return [str(n) for n in names]


def wait_for_card(sc: Any, context: Any, name: str, seconds: float) -> None:
    """Block until pcscd reports a card in ``name``, at most ``seconds`` (rule 4)."""
    deadline = time.monotonic() + seconds
    known = sc.SCARD_STATE_UNAWARE
    while True:
        remaining = deadline - time.monotonic()
        wait_ms = max(0, min(int(remaining * 1000), 1000))  # short slices: stop() is never stuck long
        hresult, states = sc.SCardGetStatusChange(context, wait_ms, [(name, known)])
        if hresult == sc.SCARD_S_SUCCESS:
            event = states[0][1]
            if event & sc.SCARD_STATE_PRESENT and not event & sc.SCARD_STATE_MUTE:
                return
            known = event & ~sc.SCARD_STATE_CHANGED
        elif hresult != SCARD_E_TIMEOUT:
            raise hresult_error(sc, hresult, "waiting for a card", reader=name)
        if remaining <= 0:
            raise CardWaitTimeoutError(f"no card was inserted in reader {name!r} within {seconds:g} s")
