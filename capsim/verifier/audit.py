"""Hash-chained audit records and their checker (verifier.md V37–V39).

Theory of operation
-------------------
1. The service describes each event as an :class:`AuditEntry` (no PAN, key, PIN or presented
   code ever goes in: V38). The store appends it in the *same* transaction as the state
   change it describes, giving it the next sequence number, the database time and the hash of
   the previous record (:meth:`~capsim.verifier.store.StoreTransaction.append_audit`).
2. ``record_hash = SHA-256(prev_hash ‖ canonical(entry, seq, at))`` where ``canonical`` is a
   fixed, sorted, length-unambiguous JSON encoding (:func:`canonical_bytes`). The first record
   chains to :data:`GENESIS_HASH` (32 zero bytes).
3. :func:`check_chain` walks the records in sequence order and reports every deleted,
   reordered or edited record (V39): a gap or repeat in ``seq``, a ``prev_hash`` that is not
   the previous record's hash, or a ``record_hash`` that does not match the content.

>>> from datetime import datetime, timezone
>>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> r1 = seal(AuditEntry(event="verify", outcome="accept"), seq=1, at=at, prev_hash=GENESIS_HASH)
>>> r2 = seal(AuditEntry(event="verify", outcome="reject"), seq=2, at=at, prev_hash=r1.record_hash)
>>> check_chain([r1, r2])
()
>>> [p.kind for p in check_chain([r2])]
['gap', 'broken-link']
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditProblem",
    "AuditRecord",
    "canonical_bytes",
    "check_chain",
    "seal",
]

#: ``prev_hash`` of the first record.
GENESIS_HASH: Final = bytes(32)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """The content of one audit record, before the store chains it (V37).

    Attributes
    ----------
    event:
        ``verify``, ``resync``, ``advance_floor``, ``lifecycle``, ``enroll``, ``policy`` …
    outcome:
        ``accept``, ``reject``, ``temporary``, ``ok`` …
    reason:
        Internal reason (``wrong-code``, ``locked``, ``expired`` …); never shown to callers.
    request_id, credential_id, operation_id, mode, atc, txn_digest:
        What the event concerned (no PAN; the code is never recorded).
    node:
        The verifier node that wrote it.
    duration_us:
        Processing time in microseconds (measured by the caller's monotonic clock).
    details:
        Extra non-secret string values (e.g. the false-accept bound of a policy change).
    """

    event: str
    outcome: str
    reason: str = ""
    request_id: str | None = None
    credential_id: str | None = None
    operation_id: str | None = None
    mode: str | None = None
    atc: int | None = None
    txn_digest: bytes = b""
    node: str = ""
    duration_us: int = 0
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """A chained audit record as stored: the entry, its sequence number, DB time and hashes."""

    seq: int
    at: datetime
    entry: AuditEntry
    prev_hash: bytes
    record_hash: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditProblem:
    """One defect found by :func:`check_chain`.

    ``kind`` is ``gap`` (a missing or deleted record), ``order`` (sequence not increasing),
    ``broken-link`` (``prev_hash`` differs from the previous record's hash) or ``edited``
    (the content does not match ``record_hash``).
    """

    seq: int
    kind: str


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(AuditEntry))
_ENCODE: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def canonical_bytes(entry: AuditEntry, *, seq: int, at: datetime) -> bytes:
    """The fixed encoding hashed into the chain: compact sorted-key JSON of every entry field
    (bytes as lower-case hex, ``details`` as a sorted string map) plus ``seq`` and ``at``
    (ISO 8601 with its UTC offset)."""
    body: dict[str, object] = {name: getattr(entry, name) for name in _FIELDS}
    body["txn_digest"] = entry.txn_digest.hex()
    details = entry.details
    body["details"] = {str(k): str(details[k]) for k in details} if details else {}
    body["seq"] = seq
    body["at"] = at.isoformat()
    return _ENCODE(body).encode("ascii")


def seal(entry: AuditEntry, *, seq: int, at: datetime, prev_hash: bytes) -> AuditRecord:
    """Chain ``entry`` after a record whose hash is ``prev_hash`` (V39)."""
    digest = hashlib.sha256(prev_hash + canonical_bytes(entry, seq=seq, at=at)).digest()
    return AuditRecord(seq=seq, at=at, entry=entry, prev_hash=prev_hash, record_hash=digest)


def check_chain(records: Iterable[AuditRecord], *, start_seq: int = 1) -> tuple[AuditProblem, ...]:
    """Check a whole chain, in the order given; return every problem found (empty = intact).

    A deleted record shows as a ``gap``; moved records as ``order`` and ``broken-link``; an
    edited field as ``edited`` (V39).
    """
    problems: list[AuditProblem] = []
    expected_seq = start_seq
    prev_hash = GENESIS_HASH
    for rec in records:
        if rec.seq < expected_seq:
            problems.append(AuditProblem(seq=rec.seq, kind="order"))
        elif rec.seq > expected_seq:
            problems.append(AuditProblem(seq=rec.seq, kind="gap"))
        # hashes are public integrity values, not secrets; compare_digest keeps the one rule simple
        if not hmac.compare_digest(rec.prev_hash, prev_hash):
            problems.append(AuditProblem(seq=rec.seq, kind="broken-link"))
        recomputed = seal(rec.entry, seq=rec.seq, at=rec.at, prev_hash=rec.prev_hash).record_hash
        if not hmac.compare_digest(recomputed, rec.record_hash):
            problems.append(AuditProblem(seq=rec.seq, kind="edited"))
        prev_hash = rec.record_hash
        expected_seq = rec.seq + 1
    return tuple(problems)
