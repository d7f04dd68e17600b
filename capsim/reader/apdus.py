"""What the reader sends and how it reads what comes back; the reader's only caches.

Theory of operation
===================

1. Commands come from :mod:`capsim.apdu.builders`. The ones every run repeats with the same
   arguments (SELECT, GPO, READ RECORD, GET DATA ``9F17``) are built once per distinct
   argument: :class:`~capsim.apdu.CommandApdu` is immutable and the builders are pure, so a
   cached command is the one the builder would give. VERIFY and GENERATE AC are never cached
   (no PIN material, and their data changes each run).
2. An answer's data is decoded with :func:`capsim.tlv.decode`; a malformed answer raises
   :class:`~capsim.errors.ApduFormatError` (the session re-types it to
   :class:`~capsim.errors.RemoteProtocolError`), and nothing is cached for it, so it raises
   every time.
3. :func:`tlv_map` flattens objects depth-first into tag → value, keeping the **first** value of
   each primitive tag (as :func:`capsim.tlv.walk` visits them): a card that repeats a tag
   deeper down does not override the outer one.
4. :func:`template` finds the first object with a tag (``6F`` FCI, ``70`` record, ``77``/``80``
   GPO, ``9F17`` try counter) and maps what is inside it. The FCI, the GPO answer, the records
   and the try counter come back identical run after run from one card, so the result is
   cached per distinct (answer, tag): decoding is pure and :class:`~capsim.tlv.Tlv` immutable,
   and the map is handed out read-only. The cache holds at most :data:`ANSWER_CACHE_SIZE`
   entries of at most :data:`~capsim.reader.phases.MAX_RESPONSE` bytes each (the session
   rejects longer answers before any handler runs), least recently used first out, so a
   hostile card cannot grow it.

docs/performance.md ("Reader") gives what each cache buys, measured.

>>> obj, values = template(bytes.fromhex("6F0E8407A0000000048002A5035F2D00"), 0x6F)
>>> values[0x84].hex().upper(), obj is not None and obj.constructed
('A0000000048002', True)
>>> select(bytes.fromhex("A0000000048002")) is select(bytes.fromhex("A0000000048002"))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from capsim.apdu import builders
from capsim.apdu.command import CommandApdu
from capsim.tlv import Tlv, decode, find

__all__ = ["ANSWER_CACHE_SIZE", "GET_PTC", "gpo", "read_record", "select", "template", "tlv_map"]

#: Distinct (answer, tag) pairs :func:`template` keeps (rule 4).
ANSWER_CACHE_SIZE: Final = 64

#: GET DATA for the PIN try counter: the same command every run (rule 1).
GET_PTC: Final = builders.get_data(0x9F17)


@lru_cache(maxsize=64)
def select(aid: bytes) -> CommandApdu:
    """SELECT by name (rule 1: built once per AID)."""
    return builders.select(aid)


@lru_cache(maxsize=64)
def gpo(pdol_data: bytes) -> CommandApdu:
    """GET PROCESSING OPTIONS with the filled PDOL (rule 1)."""
    return builders.gpo(pdol_data)


@lru_cache(maxsize=256)
def read_record(record: int, sfi: int) -> CommandApdu:
    """READ RECORD ``record`` of ``sfi`` (rule 1)."""
    return builders.read_record(record, sfi)


def tlv_map(objs: Sequence[Tlv]) -> dict[int, bytes]:
    """First value of every primitive tag anywhere in ``objs`` (rule 3)."""
    values: dict[int, bytes] = {}
    stack = list(objs)
    stack.reverse()
    while stack:
        obj = stack.pop()
        if obj.children:
            stack.extend(reversed(obj.children))
        # a template without children has an empty value, so a non-empty leaf is primitive
        elif (obj.value or not obj.constructed) and obj.tag not in values:
            values[obj.tag] = obj.value
    return values


@lru_cache(maxsize=ANSWER_CACHE_SIZE)
def template(data: bytes, tag: int) -> tuple[Tlv | None, Mapping[int, bytes]]:
    """The first object ``tag`` in the answer ``data`` and :func:`tlv_map` of its children
    (empty when there is no such object or it is primitive); rule 4."""
    obj = find(decode(data), tag)
    return obj, MappingProxyType(tlv_map(obj.children) if obj is not None else {})
