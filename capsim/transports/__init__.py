"""Transports: how a reader reaches a card, chosen by a spec string (architecture.md §6).

=========================  ===============================================================
Spec                       Transport
=========================  ===============================================================
``inproc:TEMPLATE``         a fresh emulated card of a built-in card template, test keys
                           and PIN ``1234`` (:mod:`capsim.transports.inprocess`)
``file:CARD.json``         the emulated card stored in a card file; its state is persisted
``pcsc:NAME-OR-SUBSTRING`` a card in a PC/SC reader (needs pyscard: ``capsim[pcsc]``)
``replay:TRANSCRIPT``      a recorded session played back (:mod:`capsim.transports.replay`)
=========================  ===============================================================

Modules behind each scheme are imported only when the scheme is used, so pyscard is needed
only for ``pcsc:``.

>>> t = open_transport("replay:/nonexistent.txt")
Traceback (most recent call last):
...
capsim.errors.StateFileError: transcript /nonexistent.txt: cannot read it (FileNotFoundError)
>>> open_transport("usb:1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
capsim.errors.ValidationError: reader: expected inproc:TEMPLATE, ... got 'usb:1'
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType, ModuleType
from typing import Final

from capsim.errors import PcscUnavailableError, ValidationError
from capsim.transports.base import T0Handling, TracingTransport, Transport, TransportBase

__all__ = [
    "TRANSPORT_SCHEMES",
    "T0Handling",
    "TracingTransport",
    "Transport",
    "TransportBase",
    "list_pcsc_readers",
    "open_transport",
]


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


def _pcsc(rest: str) -> Transport:
    if not rest:
        raise ValidationError("reader: expected pcsc:NAME (a reader name or a unique part of it)")
    module = _pcsc_module()
    transport: Transport = module.PcscTransport(rest)  # resolves T=0 61xx/6Cxx itself
    return transport


def _replay(rest: str) -> Transport:
    from capsim.transports.replay import ReplayTransport

    if not rest:
        raise ValidationError("reader: expected replay:TRANSCRIPT (a transcript file path)")
    return ReplayTransport(rest)


#: Scheme → factory taking the part after the colon.
TRANSPORT_SCHEMES: Final[MappingProxyType[str, Callable[[str], Transport]]] = MappingProxyType(
    {"inproc": _inproc, "file": _file, "pcsc": _pcsc, "replay": _replay}
)


def open_transport(spec: str) -> Transport:
    """Open the transport named by ``spec`` (not yet connected; use it as a context manager).

    Raises
    ------
    ValidationError
        Unknown scheme or malformed spec.
    PcscUnavailableError
        ``pcsc:`` without pyscard or pcscd.
    """
    if not isinstance(spec, str):
        raise ValidationError(f"reader: expected a spec string, got {type(spec).__name__}")
    scheme, sep, rest = spec.partition(":")
    factory = TRANSPORT_SCHEMES.get(scheme) if sep else None
    if factory is None:
        raise ValidationError(
            "reader: expected inproc:TEMPLATE, file:CARD.json, pcsc:NAME or replay:TRANSCRIPT, "
            f"got {spec!r}"
        )
    return factory(rest)


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
