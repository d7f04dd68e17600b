"""An emulated PIV certificate token (NIST SP 800-73-4) on capsim's card OS.

Create one in memory or in a card file with :func:`new_piv_card`, reopen a card file with
:func:`load_piv_card`; it answers raw APDUs through :meth:`PivCard.process` like the EMV card.

>>> card = new_piv_card()
>>> card.process(bytes.fromhex("00A4040005A000000308")).hex().upper()[:6]
'61224F'
>>> card.process(bytes.fromhex("0020008000")).hex().upper()
'63C3'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from capsim.cards.cardfile import LOCK_TIMEOUT_S
from capsim.cards.piv.card import PIV_AID, PIV_ATR, PivCard, PivIns, certificate_object, certificate_of
from capsim.cards.piv.cardfile import PivCardFile, create_piv_card_file, is_piv_card_file, read_piv_card_file
from capsim.cards.piv.keys import PivAlgorithm, PivKey, generate_key
from capsim.cards.piv.state import (
    CERT_OBJECT,
    DEFAULT_MGMT_KEY,
    DEFAULT_PIN,
    DEFAULT_PUK,
    SLOT_PIN,
    SLOTS,
    PinRule,
    PivState,
    pad_reference,
)

__all__ = [
    "CERT_OBJECT",
    "DEFAULT_MGMT_KEY",
    "DEFAULT_PIN",
    "DEFAULT_PUK",
    "PIV_AID",
    "PIV_ATR",
    "SLOTS",
    "SLOT_PIN",
    "PinRule",
    "PivAlgorithm",
    "PivCard",
    "PivIns",
    "PivKey",
    "PivState",
    "certificate_object",
    "certificate_of",
    "generate_key",
    "is_piv_card_file",
    "load_piv_card",
    "new_piv_card",
    "pad_reference",
    "read_piv_card_file",
]


def new_piv_card(
    state: PivState | None = None,
    *,
    atr: bytes = PIV_ATR,
    path: str | os.PathLike[str] | None = None,
    rng: Callable[[int], bytes] | None = None,
    **fields: Any,
) -> PivCard:
    """A new PIV card: ``state`` or a :class:`PivState` built from ``fields`` (defaults: the
    well-known PIN, PUK and management key, no keys, no objects).

    With ``path`` a new PIV card file is created there (never overwriting one) and the card
    persists every state change to it before answering.
    """
    if state is None:
        state = PivState(**fields)
    elif fields:
        state = state.replace(**fields)
    if path is None:
        return PivCard(state, atr=atr, rng=rng or os.urandom)
    create_piv_card_file(path, atr, state)
    return load_piv_card(path, rng=rng)


def load_piv_card(
    path: str | os.PathLike[str],
    *,
    timeout: float = LOCK_TIMEOUT_S,
    rng: Callable[[int], bytes] | None = None,
) -> PivCard:
    """Open a PIV card file, holding its lock until ``card.close()``."""
    handle = PivCardFile(path, timeout=timeout)
    try:
        return PivCard(
            handle.state,
            atr=handle.atr,
            rng=rng or os.urandom,
            on_state_change=handle.save_state,
            on_close=handle.close,
        )
    except BaseException:
        handle.close()
        raise
