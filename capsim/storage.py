"""Durable files, by their historical import path: card files and issuer-keys files.

The pieces live where their layer puts them (docs/design.md, "Layers"); this module only
re-exports them so that ``from capsim.storage import …`` keeps working:

==============================  ===============================================================
:mod:`capsim.atomicfile`        atomic 0600 writes, size-limited JSON reads, format headers
:mod:`capsim.issuerkeys`        issuer-keys files (:class:`IssuerKeys`), used by card and bank
:mod:`capsim.cards.cardfile`    card files (:class:`CardFile`, :class:`CardFileLock`)
==============================  ===============================================================

It imports the card package, so it sits in the cards' layer: the verifier imports
:mod:`capsim.issuerkeys` instead.
"""

from __future__ import annotations

from capsim.atomicfile import MAX_FILE_BYTES
from capsim.cards.cardfile import (
    CARD_FILE_FORMAT,
    CARD_FILE_VERSION,
    CardFile,
    CardFileLock,
    create_card_file,
    read_card_file,
)
from capsim.issuerkeys import (
    ISSUER_KEYS_FORMAT,
    ISSUER_KEYS_VERSION,
    IssuerKeys,
    load_issuer_keys,
    save_issuer_keys,
)

__all__ = [
    "CARD_FILE_FORMAT",
    "CARD_FILE_VERSION",
    "ISSUER_KEYS_FORMAT",
    "ISSUER_KEYS_VERSION",
    "MAX_FILE_BYTES",
    "CardFile",
    "CardFileLock",
    "IssuerKeys",
    "create_card_file",
    "load_issuer_keys",
    "read_card_file",
    "save_issuer_keys",
]
