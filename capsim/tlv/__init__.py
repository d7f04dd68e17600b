"""BER-TLV as EMV uses it, and Data Object Lists (EMV 4.3 Book 3 Annex B and §5.4).

Import everything from here (``from capsim.tlv import decode, fill_dol``); the package is split
by subject into two modules, each with its numbered rules:

* :mod:`capsim.tlv.ber` — tags, lengths, the :class:`Tlv` type, :func:`decode` /
  :func:`encode`, searching (:func:`find`, :func:`walk`) and :func:`format_tree`;
* :mod:`capsim.tlv.dol` — DOLs: :func:`parse_dol`, :func:`encode_dol` and :func:`fill_dol`,
  which fills a DOL according to the format of each tag (:mod:`capsim.tags`).

>>> fci = decode(bytes.fromhex("6F108407A0000000048002A5055F2D02656E"))
>>> find(fci, 0x84).value.hex().upper()
'A0000000048002'
>>> parse_dol(bytes.fromhex("9F02069F3704"))
(DolEntry(0x9F02, 6), DolEntry(0x9F37, 4))
"""

from __future__ import annotations

from capsim.tlv.ber import (
    MAX_DEPTH,
    Tlv,
    decode,
    encode,
    encode_constructed,
    encode_length,
    encode_tag,
    find,
    find_all,
    format_tree,
    walk,
)
from capsim.tlv.dol import DolEntry, encode_dol, fill_dol, parse_dol

# The DOL caches (bounded lru_caches, capsim.tlv.dol rule 3), under their old import path for
# the tests that check their bounds; not public API.
from capsim.tlv.dol import _cached_fill_plan_of as _cached_fill_plan_of
from capsim.tlv.dol import _cached_parse_dol as _cached_parse_dol

__all__ = [
    "MAX_DEPTH",
    "DolEntry",
    "Tlv",
    "decode",
    "encode",
    "encode_constructed",
    "encode_dol",
    "encode_length",
    "encode_tag",
    "fill_dol",
    "find",
    "find_all",
    "format_tree",
    "parse_dol",
    "walk",
]
