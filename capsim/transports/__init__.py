"""Transports: how a reader reaches a card, chosen by a spec string (architecture.md §6).

=========================  ===============================================================
Spec                       Transport
=========================  ===============================================================
``inproc:TEMPLATE``         a fresh emulated card of a built-in card template, test keys
                           and PIN ``1234`` (:mod:`capsim.transports.inprocess`)
``file:CARD.json``         the emulated card stored in a card file; its state is persisted
``pcsc:NAME-OR-SUBSTRING`` a card in a PC/SC reader (needs pyscard: ``capsim[pcsc]``)
``pcsc:N`` or ``N``        the PC/SC reader at index N of ``capsim readers``' list
``replay:TRANSCRIPT``      a recorded session played back (:mod:`capsim.transports.replay`)
=========================  ===============================================================

Rules of the spec (this module is the one place that parses it):

1. A spec that is all ASCII digits (``0``, ``12``) is the index of a PC/SC reader, as is
   ``pcsc:`` followed by all digits: ``pcsc:0`` is the first reader, never a reader whose
   name contains "0". A name fragment that is all digits is therefore always an index;
   to match such a name, give more of it (``pcsc:Virtual 00 00``).
2. Otherwise the part before the first colon names the scheme; an unknown scheme, or no
   colon at all, is a :class:`~capsim.errors.ValidationError` listing the accepted forms.
3. ``wait`` (seconds) applies to PC/SC readers only: the transport waits that long for a card
   to be inserted when it connects. An emulated or replayed card is always there.

Modules behind each scheme are imported only when the scheme is used, so pyscard is needed
only for ``pcsc:``; the transport classes (:mod:`capsim.transports.base`, re-exported here) on
first use, so that naming a reader (``--reader`` and its help text) does not load the APDU layer.

>>> parse_spec("0"), parse_spec("pcsc:1"), parse_spec("pcsc:Gemalto"), parse_spec("file:c.json")
(('pcsc', 0), ('pcsc', 1), ('pcsc', 'Gemalto'), ('file', 'c.json'))

>>> t = open_transport("replay:/nonexistent.txt")
Traceback (most recent call last):
...
capsim.errors.StateFileError: transcript /nonexistent.txt: cannot read it (FileNotFoundError)
>>> open_transport("usb:1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
capsim.errors.ValidationError: reader: expected ... got 'usb:1'
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Final

from capsim.errors import PcscUnavailableError, ValidationError

if TYPE_CHECKING:
    from capsim.transports.base import T0Handling, TracingTransport, Transport, TransportBase
    from capsim.transports.pcsc import ReaderState

__all__ = [
    "SPEC_FORMS",
    "TRANSPORT_SCHEMES",
    "T0Handling",
    "TracingTransport",
    "Transport",
    "TransportBase",
    "is_spec",
    "list_pcsc_readers",
    "open_transport",
    "parse_spec",
    "pcsc_reader_states",
]

#: Re-exported from :mod:`capsim.transports.base`, imported on first use (:func:`__getattr__`).
_BASE_NAMES: Final = frozenset({"T0Handling", "TracingTransport", "Transport", "TransportBase"})


def __getattr__(name: str) -> Any:
    if name not in _BASE_NAMES:
        raise AttributeError(f"module 'capsim.transports' has no attribute {name!r}")
    from capsim.transports import base

    value = getattr(base, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


#: The accepted forms of a reader spec, for help texts and error messages.
SPEC_FORMS: Final = (
    "N (a reader index), pcsc:N, pcsc:NAME, inproc:TEMPLATE, file:CARD.json or replay:TRANSCRIPT"
)


def _inproc(rest: str) -> Transport:
    from capsim.transports.inprocess import open_inproc_card

    return open_inproc_card(rest)


def _file(rest: str) -> Transport:
    from capsim.transports.inprocess import open_file_card

    return open_file_card(rest)


def _pcsc_module() -> ModuleType:
    try:
        import capsim.transports.pcsc as module
    except ImportError as exc:
        raise PcscUnavailableError(
            f"PC/SC support is not available ({exc}); install it with: pip install 'capsim[pcsc]'"
        ) from None
    return module


def _pcsc(rest: str, *, wait: float | None = None) -> Transport:
    if not rest:
        raise ValidationError("reader: expected pcsc:NAME (a reader name or a unique part of it) or pcsc:N")
    module = _pcsc_module()
    reader: str | int = _index(rest) if _is_index(rest) else rest
    transport: Transport = module.PcscTransport(reader, wait=wait)  # resolves T=0 61xx/6Cxx itself
    return transport


def _is_index(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _index(text: str) -> int:
    if len(text) > 6:
        raise ValidationError(f"reader: index {text} is out of range")
    return int(text)


def _replay(rest: str) -> Transport:
    from capsim.transports.replay import ReplayTransport

    if not rest:
        raise ValidationError("reader: expected replay:TRANSCRIPT (a transcript file path)")
    return ReplayTransport(rest)


#: Scheme → factory taking the part after the colon.
TRANSPORT_SCHEMES: Final[MappingProxyType[str, Callable[[str], Transport]]] = MappingProxyType(
    {"inproc": _inproc, "file": _file, "pcsc": _pcsc, "replay": _replay}
)


def parse_spec(spec: str) -> tuple[str, str | int]:
    """``(scheme, rest)`` of a reader spec; the rest of a reader index is an ``int`` (rules 1, 2).

    Raises
    ------
    ValidationError
        Not a string, an unknown scheme or no scheme.
    """
    if not isinstance(spec, str):
        raise ValidationError(f"reader: expected a spec string, got {type(spec).__name__}")
    if _is_index(spec):
        return "pcsc", _index(spec)
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in TRANSPORT_SCHEMES:
        raise ValidationError(f"reader: expected {SPEC_FORMS}, got {spec!r}")
    if scheme == "pcsc" and _is_index(rest):
        return scheme, _index(rest)
    return scheme, rest


def is_spec(text: str) -> bool:
    """Whether ``text`` reads as a reader spec (rule 1 or a known scheme) rather than a file path."""
    try:
        parse_spec(text)
    except ValidationError:
        return False
    return True


def open_transport(spec: str, *, wait: float | None = None) -> Transport:
    """Open the transport named by ``spec`` (not yet connected; use it as a context manager).

    Parameters
    ----------
    spec:
        A reader spec (the module's table and rules).
    wait:
        Seconds a PC/SC transport waits for a card to be inserted when it connects (rule 3).

    Raises
    ------
    ValidationError
        Unknown scheme or malformed spec.
    PcscUnavailableError
        ``pcsc:`` without pyscard or pcscd.
    """
    scheme, rest = parse_spec(spec)
    if scheme == "pcsc":
        return _pcsc(str(rest), wait=wait)
    return TRANSPORT_SCHEMES[scheme](str(rest))


def list_pcsc_readers() -> list[str]:
    """Names of the PC/SC readers (``capsim readers``).

    Raises
    ------
    PcscUnavailableError
        pyscard is missing or pcscd is not running.
    """
    module = _pcsc_module()
    readers: list[str] = module.list_readers()
    return readers


def pcsc_reader_states() -> list[ReaderState]:
    """Every PC/SC reader with its index, card presence and ATR (``capsim readers``).

    Raises
    ------
    PcscUnavailableError
        pyscard is missing or pcscd is not running.
    """
    module = _pcsc_module()
    states: list[ReaderState] = module.reader_states()
    return states
