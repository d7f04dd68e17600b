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
   the previous record's hash, or a ``record_hash`` that does not match the content. A row
   that a store cannot even decode (a column edited to a value no writer produces) reaches the
   checker as a record with ``malformed`` set and is reported as ``malformed``: reading the
   audit never fails on a tampered row.
4. **Keyed seal.** The chain alone is not an anchor: whoever can write the table can re-hash an
   edited record and every later one. So each record is also *sealed*: ``seal = MAC(K,
   seal_message(seq, record_hash))`` with a key ``K`` that only the key provider holds
   (:class:`AuditSealer`, by reference: the software provider keeps it in a keyring file
   outside the database, an HSM as a token key). Because ``record_hash`` chains every earlier
   record, the seal of record *n* covers the whole chain up to *n*. The store writes the seal
   in the same transaction as the record, into a separate insert-only table.
5. Records before the *sealing start* (the first seq written with a seal key, kept with the
   key) are checked by the chain alone, so a database from before sealing upgrades in place.
   From the start on, a record without a seal is ``unsealed`` and a wrong seal is ``bad-seal``.
6. **Anchor.** A cut tail leaves a valid, sealed chain. An :class:`AuditTip` (seq, record hash
   and seal of the newest record) exported and kept elsewhere lets :func:`check_chain` report a
   ``truncated`` chain (the anchored record is missing) or a ``rewritten`` one (its hash or seal
   differs); a tip whose own seal does not verify under the key is ``bad-tip``.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

from capsim.errors import ValidationError
from capsim.jsonlimits import loads_limited

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditProblem",
    "AuditRecord",
    "AuditSealer",
    "AuditTip",
    "KeyedSealer",
    "canonical_bytes",
    "check_chain",
    "malformed_record",
    "resolve_sealer",
    "seal",
    "seal_message",
]

#: ``prev_hash`` of the first record.
GENESIS_HASH: Final = bytes(32)
#: Domain-separation label of the keyed seal (:func:`seal_message`).
SEAL_LABEL: Final = b"capsim audit seal v1\x00"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TIP_FORMAT: Final = "capsim-audit-tip"


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
    """A chained audit record as stored: the entry, its sequence number, DB time and hashes.

    ``seal`` and ``seal_key_id`` are the keyed seal (empty when the record was written
    unsealed). ``malformed`` is non-empty when the store could not decode the stored row (it
    names the column); the other fields of such a record are placeholders.
    """

    seq: int
    at: datetime
    entry: AuditEntry
    prev_hash: bytes
    record_hash: bytes
    seal: bytes = b""
    seal_key_id: str = ""
    malformed: str = ""


@runtime_checkable
class AuditSealer(Protocol):
    """Who holds the audit seal key: a key provider (by reference, never the key bytes)."""

    def audit_seal_key_id(self) -> str | None:
        """The id of the seal key, or ``None`` when this provider seals nothing."""
        ...

    def audit_seal(self, message: bytes) -> bytes:
        """The keyed MAC (HMAC-SHA-256) of ``message`` under the seal key."""
        ...


class KeyedSealer:
    """A sealer resolved for one transaction: its key id and MAC function."""

    __slots__ = ("key_id", "mac")

    def __init__(self, key_id: str, mac: Callable[[bytes], bytes]) -> None:
        self.key_id = key_id
        self.mac = mac

    def __repr__(self) -> str:
        return f"KeyedSealer({self.key_id!r})"

    def seal(self, seq: int, record_hash: bytes) -> bytes:
        """The seal of the record ``seq`` whose chained hash is ``record_hash``."""
        return self.mac(seal_message(seq, record_hash))


def resolve_sealer(sealer: object) -> KeyedSealer | None:
    """``sealer``'s key id and MAC, or ``None`` when it seals nothing (``None``, no key, or an
    object without the :class:`AuditSealer` methods, such as an older provider)."""
    if sealer is None:
        return None
    key_id_of = getattr(sealer, "audit_seal_key_id", None)
    mac = getattr(sealer, "audit_seal", None)
    if key_id_of is None or mac is None:
        return None
    key_id = key_id_of()
    return None if key_id is None else KeyedSealer(str(key_id), mac)


def seal_message(seq: int, record_hash: bytes) -> bytes:
    """What the keyed seal covers: a fixed label, ``seq`` (8 bytes, big-endian) and the
    record's chained hash (which covers every earlier record)."""
    return SEAL_LABEL + seq.to_bytes(8, "big") + record_hash


def malformed_record(
    seq: int, reason: str, *, prev_hash: object = b"", record_hash: object = b""
) -> AuditRecord:
    """A placeholder for a stored row that cannot be decoded (``reason`` names the column)."""
    return AuditRecord(
        seq=seq,
        at=_EPOCH,
        entry=AuditEntry(event="", outcome=""),
        prev_hash=_hash_or_empty(prev_hash),
        record_hash=_hash_or_empty(record_hash),
        malformed=reason,
    )


def _hash_or_empty(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if len(raw) == 32:
            return raw
    return b""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditTip:
    """An anchor of the chain to keep outside the database: the newest record's seq, chained
    hash and seal (``seal`` empty when it was unsealed)."""

    seq: int
    record_hash: bytes
    seal: bytes = b""
    seal_key_id: str = ""

    @classmethod
    def of(cls, record: AuditRecord) -> AuditTip:
        """The tip for ``record``."""
        return cls(
            seq=record.seq, record_hash=record.record_hash, seal=record.seal, seal_key_id=record.seal_key_id
        )

    def to_json(self) -> str:
        """JSON form (hashes and seal as lower-case hex)."""
        doc = {
            "format": _TIP_FORMAT,
            "version": 1,
            "seq": self.seq,
            "record_hash": self.record_hash.hex(),
            "seal": self.seal.hex(),
            "seal_key_id": self.seal_key_id,
        }
        return json.dumps(doc, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> AuditTip:
        """Parse :meth:`to_json` output; :class:`~capsim.errors.ValidationError` if malformed."""
        try:
            doc: Any = loads_limited(text, what="audit tip", max_bytes=1 << 16, error=ValidationError)
            if not isinstance(doc, dict) or (doc.get("format"), doc.get("version")) != (_TIP_FORMAT, 1):
                raise ValueError("not a capsim audit tip (format/version)")
            seq = doc["seq"]
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
                raise ValueError("seq must be a positive integer")
            record_hash = bytes.fromhex(str(doc["record_hash"]))
            if len(record_hash) != 32:
                raise ValueError("record_hash must be 32 bytes")
            return cls(
                seq=seq,
                record_hash=record_hash,
                seal=bytes.fromhex(str(doc.get("seal", ""))),
                seal_key_id=str(doc.get("seal_key_id", "")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError(f"audit tip: {exc}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditProblem:
    """One defect found by :func:`check_chain`.

    ``kind`` is ``gap`` (a missing or deleted record), ``order`` (sequence not increasing),
    ``broken-link`` (``prev_hash`` differs from the previous record's hash), ``edited`` (the
    content does not match ``record_hash``), ``malformed`` (the stored row cannot be decoded;
    ``detail`` names the column), ``unsealed`` / ``bad-seal`` (a record from the sealing start
    on has no seal, or a wrong one), ``truncated`` / ``rewritten`` (the record of an exported
    tip is missing, or differs) or ``bad-tip`` (the tip's own seal does not verify).
    """

    seq: int
    kind: str
    detail: str = ""


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


def seal(
    entry: AuditEntry, *, seq: int, at: datetime, prev_hash: bytes, sealer: KeyedSealer | None = None
) -> AuditRecord:
    """Chain ``entry`` after a record whose hash is ``prev_hash`` (V39); with ``sealer``, also
    compute its keyed seal."""
    digest = hashlib.sha256(prev_hash + canonical_bytes(entry, seq=seq, at=at)).digest()
    if sealer is None:
        return AuditRecord(seq=seq, at=at, entry=entry, prev_hash=prev_hash, record_hash=digest)
    return AuditRecord(
        seq=seq,
        at=at,
        entry=entry,
        prev_hash=prev_hash,
        record_hash=digest,
        seal=sealer.seal(seq, digest),
        seal_key_id=sealer.key_id,
    )


def check_chain(
    records: Iterable[AuditRecord],
    *,
    start_seq: int = 1,
    sealer: AuditSealer | KeyedSealer | None = None,
    sealed_from: int | None = None,
    tip: AuditTip | None = None,
) -> tuple[AuditProblem, ...]:
    """Check a whole chain, in the order given; return every problem found (empty = intact).

    A deleted record shows as a ``gap``; moved records as ``order`` and ``broken-link``; an
    edited field as ``edited``; an undecodable row as ``malformed`` (V39). With ``sealer`` and
    ``sealed_from``, every record from ``sealed_from`` on must carry a valid seal (``unsealed``,
    ``bad-seal``); with ``tip``, the anchored record must be present and unchanged
    (``truncated``, ``rewritten``, ``bad-tip``). Never raises on record content.
    """
    keyed = sealer if isinstance(sealer, KeyedSealer) else resolve_sealer(sealer)
    problems: list[AuditProblem] = []
    expected_seq = start_seq
    prev_hash: bytes | None = GENESIS_HASH
    tip_seen = False
    for rec in records:
        if rec.seq < expected_seq:
            problems.append(AuditProblem(seq=rec.seq, kind="order"))
        elif rec.seq > expected_seq:
            problems.append(AuditProblem(seq=rec.seq, kind="gap"))
        # hashes are public integrity values, not secrets; compare_digest keeps the one rule simple
        link_known = prev_hash is not None and not (rec.malformed and not rec.prev_hash)
        if link_known and not hmac.compare_digest(rec.prev_hash, prev_hash or b""):
            problems.append(AuditProblem(seq=rec.seq, kind="broken-link"))
        if rec.malformed:
            problems.append(AuditProblem(seq=rec.seq, kind="malformed", detail=rec.malformed))
        else:
            recomputed = seal(rec.entry, seq=rec.seq, at=rec.at, prev_hash=rec.prev_hash).record_hash
            if not hmac.compare_digest(recomputed, rec.record_hash):
                problems.append(AuditProblem(seq=rec.seq, kind="edited"))
        if keyed is not None and sealed_from is not None and rec.seq >= sealed_from and not rec.malformed:
            problems += _seal_problems(rec, keyed)
        if tip is not None and rec.seq == tip.seq and not tip_seen:
            tip_seen = True
            same = hmac.compare_digest(rec.record_hash, tip.record_hash) and (
                not tip.seal or hmac.compare_digest(rec.seal, tip.seal)
            )
            if not same:
                problems.append(AuditProblem(seq=rec.seq, kind="rewritten"))
        prev_hash = rec.record_hash if len(rec.record_hash) == 32 else None
        expected_seq = rec.seq + 1
    if tip is not None:
        if not tip_seen:
            problems.append(AuditProblem(seq=tip.seq, kind="truncated"))
        if (
            keyed is not None
            and tip.seal
            and not (
                tip.seal_key_id == keyed.key_id
                and hmac.compare_digest(tip.seal, keyed.seal(tip.seq, tip.record_hash))
            )
        ):
            problems.append(AuditProblem(seq=tip.seq, kind="bad-tip"))
    return tuple(problems)


def _seal_problems(rec: AuditRecord, keyed: KeyedSealer) -> list[AuditProblem]:
    if not rec.seal:
        return [AuditProblem(seq=rec.seq, kind="unsealed")]
    if rec.seal_key_id != keyed.key_id or len(rec.record_hash) != 32:
        return [AuditProblem(seq=rec.seq, kind="bad-seal")]
    if not hmac.compare_digest(rec.seal, keyed.seal(rec.seq, rec.record_hash)):
        return [AuditProblem(seq=rec.seq, kind="bad-seal")]
    return []
