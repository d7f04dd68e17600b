"""An emulated card in the same process: ``inproc:TEMPLATE`` and ``file:CARD.json``.

:class:`InProcessTransport` hands APDUs straight to a :class:`capsim.cards.base.CardOS`
(``power_on`` on connect, ``process`` per APDU, ``power_off`` on disconnect). It connects
by itself on the first :meth:`~InProcessTransport.transmit` if nobody called
:meth:`~InProcessTransport.connect`.

``inproc:TEMPLATE`` builds a fresh card of a built-in card template with the documented test
personalisation below (nothing persisted). ``file:CARD.json`` loads a card file, an EMV card's
or a PIV token's; the card persists its ATC and PIN state to that file before every answer that
reveals them (architecture.md §5).

Test personalisation of ``inproc:`` cards (the common test keys of vectors.md):

=============  ==================================
PAN / PSN      ``1234567890123456`` / ``00``
PIN            ``1234``
IMK-AC         ``0123456789ABCDEFFEDCBA9876543210`` (IMK-A, KCV 08D7B4)
IMK-SMI        ``FEDCBA98765432100123456789ABCDEF`` (IMK-B, KCV 7B8358)
IMK-SMC        ``11111111111111112222222222222222`` (IMK-S, KCV D2B91C)
=============  ==================================
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Final

from capsim.errors import CardRemovedError, StateFileError, ValidationError
from capsim.transports.base import TransportBase

if TYPE_CHECKING:
    from capsim.cards.base import CardOS

__all__ = [
    "TEST_IMK_AC",
    "TEST_IMK_SMC",
    "TEST_IMK_SMI",
    "TEST_PAN",
    "TEST_PIN",
    "TEST_PSN",
    "InProcessTransport",
    "open_file_card",
    "open_inproc_card",
]

_log = logging.getLogger(__name__)

TEST_PAN: Final = "1234567890123456"
TEST_PSN: Final = "00"
TEST_PIN: Final = "1234"
TEST_IMK_AC: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TEST_IMK_SMI: Final = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
TEST_IMK_SMC: Final = bytes.fromhex("11111111111111112222222222222222")


class InProcessTransport(TransportBase):
    """A transport to an emulated card object.

    Parameters
    ----------
    card:
        Any :class:`~capsim.cards.base.CardOS` (``power_on``, ``process``, ``power_off``).
    close_on_disconnect:
        Also call the card's ``close()`` (if it has one) on :meth:`disconnect`, releasing a
        card file's lock; the transport is then used up.
    """

    def __init__(self, card: CardOS, *, close_on_disconnect: bool = False) -> None:
        self.card = card
        self.close_on_disconnect = close_on_disconnect
        self._connected = False

    def connect(self) -> bytes:
        atr = self.card.power_on()
        self._connected = True
        return atr

    def transmit(self, apdu: bytes) -> bytes:
        if type(apdu) is not bytes:
            if not isinstance(apdu, bytes | bytearray):
                raise ValidationError(f"apdu: expected bytes, got {type(apdu).__name__}")
            apdu = bytes(apdu)
        if not self._connected:
            self.connect()
        return self.card.process(apdu)

    def disconnect(self) -> None:
        if self._connected:
            self.card.power_off()
            self._connected = False
        if self.close_on_disconnect:
            close = getattr(self.card, "close", None)
            if callable(close):
                close()

    def reset(self) -> bytes:
        """Warm reset (volatile state cleared, ATC and PIN state kept)."""
        if not self._connected:
            raise CardRemovedError("in-process card: reset while not connected")
        return self.card.reset()


def open_inproc_card(profile: str) -> InProcessTransport:
    """``inproc:TEMPLATE``: a fresh card of built-in card profile ``profile`` with the test keys."""
    from capsim.cards import BUILTIN_PROFILES, new_card

    name = profile or "secur-acces"
    if name not in BUILTIN_PROFILES:
        raise ValidationError(
            f"inproc: expected a card profile ({', '.join(sorted(BUILTIN_PROFILES))}), got {name!r}"
        )
    card = new_card(
        name,
        pan=TEST_PAN,
        psn=TEST_PSN,
        pin=TEST_PIN,
        imk_ac=TEST_IMK_AC,
        imk_smi=TEST_IMK_SMI,
        imk_smc=TEST_IMK_SMC,
    )
    return InProcessTransport(card)


def open_file_card(path: str) -> InProcessTransport:
    """``file:CARD.json``: the EMV card or PIV token stored in ``path`` (state persisted to the
    same file)."""
    from capsim.cards import load_card

    if not path:
        raise ValidationError("file: expected a card file path, as in file:card.json")
    try:
        card: CardOS = load_card(os.fspath(path))
    except StateFileError:
        from capsim.cards.piv import is_piv_card_file, load_piv_card  # only then: it loads X.509

        if not is_piv_card_file(path):
            raise
        card = load_piv_card(os.fspath(path))
    return InProcessTransport(card, close_on_disconnect=True)
