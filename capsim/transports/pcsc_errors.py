"""PC/SC errors: every pyscard exception and PC/SC result code mapped onto a capsim error.

Theory of operation
===================

1. pyscard raises from two unrelated hierarchies (``smartcard.Exceptions.SmartcardException``
   and ``smartcard.pcsc.PCSCExceptions.BaseSCardException``) and its ``smartcard.scard`` layer
   returns PC/SC result codes. :func:`map_pyscard_error` and :func:`hresult_error` turn either
   into a :class:`capsim.errors.TransportError` subclass by class name and result code
   (``pcsc.md`` §3, §5): service down → :class:`~capsim.errors.PcscUnavailableError`, no card →
   :class:`~capsim.errors.NoCardError` (:class:`~capsim.errors.CardRemovedError` once a session
   was open), unknown reader → :class:`~capsim.errors.ReaderNotFoundError`, time-out →
   :class:`~capsim.errors.TransportTimeoutError`, anything else a plain
   :class:`~capsim.errors.TransportError`.
2. A missing pyscard (or its missing libpcsclite) is
   :class:`~capsim.errors.PcscUnavailableError` with the install hint; pyscard is imported
   only through :func:`import_scard` and :func:`import_system`.

With :mod:`capsim.transports.pcsc` and :mod:`capsim.transports.pcsc_readers`, the only modules
that speak pyscard.
"""

from __future__ import annotations

from typing import Any, Final

from capsim.errors import (
    CardRemovedError,
    NoCardError,
    PcscUnavailableError,
    ReaderNotFoundError,
    TransportError,
    TransportTimeoutError,
)

__all__ = [
    "SCARD_E_NO_READERS_AVAILABLE",
    "SCARD_E_TIMEOUT",
    "hresult_error",
    "import_scard",
    "import_system",
    "is_pyscard_error",
    "map_pyscard_error",
]

# PC/SC result codes (pcsclite.h / winscard.h); the same values on every platform.
_SCARD_E_INVALID_HANDLE: Final = 0x80100003
_SCARD_E_UNKNOWN_READER: Final = 0x80100009
_SCARD_E_TIMEOUT: Final = 0x8010000A
_SCARD_E_SHARING_VIOLATION: Final = 0x8010000B
_SCARD_E_NO_SMARTCARD: Final = 0x8010000C
_SCARD_E_PROTO_MISMATCH: Final = 0x8010000F
_SCARD_F_COMM_ERROR: Final = 0x80100013
_SCARD_E_NOT_TRANSACTED: Final = 0x80100016
_SCARD_E_READER_UNAVAILABLE: Final = 0x80100017
_SCARD_E_NO_SERVICE: Final = 0x8010001D
_SCARD_E_SERVICE_STOPPED: Final = 0x8010001E
_SCARD_E_NO_READERS_AVAILABLE: Final = 0x8010002E
_SCARD_W_UNRESPONSIVE_CARD: Final = 0x80100066
_SCARD_W_UNPOWERED_CARD: Final = 0x80100067
_SCARD_W_RESET_CARD: Final = 0x80100068
_SCARD_W_REMOVED_CARD: Final = 0x80100069

_SERVICE_DOWN: Final = frozenset({_SCARD_E_NO_SERVICE, _SCARD_E_SERVICE_STOPPED, _SCARD_F_COMM_ERROR})
_NO_CARD: Final = frozenset({_SCARD_E_NO_SMARTCARD, _SCARD_W_UNRESPONSIVE_CARD, _SCARD_W_UNPOWERED_CARD})
_SERVICE_DOWN_EXCEPTIONS: Final = frozenset(
    {"EstablishContextException", "CardServiceStoppedException", "CardServiceNotFoundException"}
)
_CARD_GONE: Final = frozenset(
    {
        0,  # pyscard: "Card returned no valid response" (pcscd said success with 0 bytes)
        _SCARD_W_REMOVED_CARD,
        _SCARD_W_RESET_CARD,
        _SCARD_E_NOT_TRANSACTED,
        _SCARD_E_READER_UNAVAILABLE,
        _SCARD_E_INVALID_HANDLE,
    }
)

_INSTALL_HINT: Final = (
    "pyscard is not installed (pip install 'capsim[pcsc]'; it builds with gcc and libpcsclite-dev)"
)


def _hresult(exc: BaseException) -> int | None:
    value = getattr(exc, "hresult", None)
    if not isinstance(value, int) or value == -1:
        return None
    return value & 0xFFFFFFFF


def map_pyscard_error(
    exc: BaseException, *, reader: str | None = None, connected: bool = False
) -> TransportError:
    """Translate a pyscard exception into the matching capsim transport error (``pcsc.md`` §3, §5).

    Parameters
    ----------
    exc:
        Anything pyscard raised: ``smartcard.Exceptions.SmartcardException`` subclasses
        (``NoCardException``, ``CardConnectionException``, ``CardRequestTimeoutException``,
        ``CardServiceStoppedException`` …) and ``smartcard.pcsc.PCSCExceptions``
        (``EstablishContextException``, ``ListReadersException`` …), which are not
        ``SmartcardException`` subclasses, or an ``ImportError`` for a missing pyscard.
    reader:
        The reader's name, for the message.
    connected:
        Whether a card session was open: a removed card is then
        :class:`~capsim.errors.CardRemovedError`, before it :class:`~capsim.errors.NoCardError`.

    Returns
    -------
    TransportError
        :class:`~capsim.errors.PcscUnavailableError` (pcscd down, pyscard missing),
        :class:`~capsim.errors.NoCardError`, :class:`~capsim.errors.CardRemovedError`,
        :class:`~capsim.errors.ReaderNotFoundError`,
        :class:`~capsim.errors.TransportTimeoutError`, else a plain
        :class:`~capsim.errors.TransportError`.

    Examples
    --------
    >>> class EstablishContextException(Exception):
    ...     hresult = 0x8010001D
    >>> type(map_pyscard_error(EstablishContextException())).__name__
    'PcscUnavailableError'
    """
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, ImportError | OSError) and not isinstance(exc, TimeoutError):
        return PcscUnavailableError(f"{_INSTALL_HINT}: {exc}")
    name = type(exc).__name__
    return _classify(name, _hresult(exc), f"{exc}".strip() or name, reader=reader, connected=connected)


def _classify(
    name: str, code: int | None, detail: str, *, reader: str | None, connected: bool
) -> TransportError:
    """The capsim error for a pyscard exception class name and/or a PC/SC result code."""
    where = f" in reader {reader!r}" if reader else ""
    if name in _SERVICE_DOWN_EXCEPTIONS or code in _SERVICE_DOWN:
        return PcscUnavailableError(f"PC/SC service unavailable (is pcscd running?): {detail}")
    if name == "CardRequestTimeoutException" or code == _SCARD_E_TIMEOUT:
        return TransportTimeoutError(f"timed out waiting for the card{where}")
    if code in {_SCARD_E_UNKNOWN_READER, _SCARD_E_NO_READERS_AVAILABLE} or name in {
        "InvalidReaderException",
        "NoReadersException",
    }:
        return ReaderNotFoundError(f"reader not found{where}: {detail}")
    if name == "NoCardException" or code in _NO_CARD:
        if connected:
            return CardRemovedError(f"the card was removed{where}")
        return NoCardError(f"no card{where}")
    if code in _CARD_GONE or (name == "CardConnectionException" and "Card not connected" in detail):
        if connected or code != _SCARD_W_REMOVED_CARD:
            return CardRemovedError(f"the card was removed or reset{where} ({detail})")
        return NoCardError(f"no card{where}")
    if code == _SCARD_E_SHARING_VIOLATION:
        return TransportError(f"the card{where} is in exclusive use by another program")
    if code == _SCARD_E_PROTO_MISMATCH:
        return TransportError(f"the card{where} offers no protocol the reader supports (check its ATR)")
    return TransportError(f"PC/SC error{where}: {detail}")


def is_pyscard_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith("smartcard") or hasattr(exc, "hresult")


def hresult_error(
    scard: Any, code: int, what: str, *, reader: str | None = None, connected: bool = False
) -> TransportError:
    """The capsim error for a failed ``smartcard.scard`` call that returned ``code``."""
    code &= 0xFFFFFFFF
    try:
        message = str(scard.SCardGetErrorMessage(code))
    except Exception:  # an unknown code: the number says enough
        message = "unknown error"
    return _classify("", code, f"{what}: {message} (0x{code:08X})", reader=reader, connected=connected)


def import_scard() -> Any:
    try:
        from smartcard import scard
    except (ImportError, OSError) as exc:
        raise map_pyscard_error(exc) from None
    return scard


def import_system() -> Any:
    try:
        from smartcard import System
    except (ImportError, OSError) as exc:
        raise map_pyscard_error(exc) from None
    return System


#: Public names of the two result codes the reader functions test for.
SCARD_E_TIMEOUT: Final = _SCARD_E_TIMEOUT
SCARD_E_NO_READERS_AVAILABLE: Final = _SCARD_E_NO_READERS_AVAILABLE
