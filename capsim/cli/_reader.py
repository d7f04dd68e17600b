"""The ``--reader`` / ``--wait`` options every card-naming command shares (``capsim readers``
lists the readers: :mod:`capsim.cli.readers`).

Theory of operation
===================

1. A card is named by a reader spec (:func:`capsim.transports.parse_spec`, the one parser):
   a reader index (``0`` or ``pcsc:0``, its position in ``capsim readers``' list), a name
   fragment (``pcsc:Gemalto``; several matches are refused with the candidates named; an
   all-digit fragment is an index), or a transport spec (``inproc:``, ``file:``, ``replay:``).
2. Commands that also take a card file (``card show``, ``card apdu``, ``card info``) accept a
   path or a spec in the same place: what :func:`capsim.transports.is_spec` recognises is a
   spec, anything else a card file path (write ``./0`` for a file called ``0``).
3. ``--wait [SECONDS]`` waits for a card to be inserted in the chosen PC/SC reader before the
   command starts (a bare ``--wait`` waits :data:`DEFAULT_WAIT` seconds); no card in time is
   :class:`~capsim.errors.CardWaitTimeoutError` (exit code 5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from capsim.errors import ValidationError
from capsim.transports import SPEC_FORMS, is_spec, open_transport, parse_spec

if TYPE_CHECKING:
    from capsim.transports import Transport

__all__ = [
    "DEFAULT_WAIT",
    "READER_HELP",
    "card_or_spec",
    "one_card",
    "open_reader",
    "parse_aid",
    "reader_options",
    "wait_option",
]

#: Seconds a bare ``--wait`` waits for a card.
DEFAULT_WAIT: Final = 60.0

#: Help text of every ``--reader`` option.
READER_HELP: Final = f"The card: {SPEC_FORMS} (see `capsim readers`)."

F = TypeVar("F", bound=Callable[..., Any])


def wait_option(func: F) -> F:
    """``--wait [SECONDS]`` (rule 3), passed to the command as ``wait: float | None``."""
    option = click.option(
        "--wait",
        type=click.FloatRange(min=0),
        is_flag=False,
        flag_value=DEFAULT_WAIT,
        default=None,
        metavar="[SECONDS]",
        help=f"Wait for a card to be inserted in the PC/SC reader (bare --wait: {DEFAULT_WAIT:g} s).",
    )
    return option(func)


def card_or_spec(text: str) -> tuple[Path | None, str]:
    """Rule 2: ``(card file path, spec)``; the path is ``None`` when ``text`` is a non-file spec.

    >>> card_or_spec("alice.json")
    (PosixPath('alice.json'), 'file:alice.json')
    >>> card_or_spec("file:alice.json")
    (PosixPath('alice.json'), 'file:alice.json')
    >>> card_or_spec("pcsc:0")
    (None, 'pcsc:0')
    """
    if is_spec(text):
        if text.startswith("file:"):
            return Path(text.removeprefix("file:")), text
        return None, text
    return Path(text), f"file:{text}"


def reader_options(func: F) -> F:
    """``--reader SPEC`` and ``--wait [SECONDS]`` for a command whose card may also be a
    positional CARD (passed as ``reader_spec`` and ``wait``)."""
    option = click.option("--reader", "reader_spec", metavar="SPEC", help=READER_HELP)
    return option(wait_option(func))


def one_card(card_arg: str | None, reader_spec: str | None) -> tuple[Path | None, str]:
    """:func:`card_or_spec` of the one card given, as CARD (a path or a spec) or as
    ``--reader SPEC`` (a spec only).

    Raises
    ------
    ValidationError
        Both or neither given, or ``--reader`` is not a spec.
    """
    if (card_arg is None) == (reader_spec is None):
        raise ValidationError(
            "give the card either as CARD (a card file or a reader spec) or as --reader SPEC"
        )
    if reader_spec is not None:
        parse_spec(reader_spec)  # --reader takes a spec only (a path is file:PATH)
        return card_or_spec(reader_spec)
    return card_or_spec(str(card_arg))


def open_reader(spec: str, *, wait: float | None = None) -> Transport:
    """The transport of ``spec`` (rule 1), waiting ``wait`` seconds for a PC/SC card (rule 3)."""
    return open_transport(spec, wait=wait)


def parse_aid(value: str | None) -> bytes | None:
    """``--aid HEX``: 5 to 16 bytes, in any of the hex forms (:func:`capsim.hexinput.parse_hex`)."""
    if value is None:
        return None
    from capsim.hexinput import parse_hex  # the APDU layer: loaded only when --aid is given

    return parse_hex("--aid", value, min_bytes=5, max_bytes=16)
