"""In-memory verifier store: thread-safe, with the transaction semantics of :mod:`.store`.

Theory of operation
-------------------
1. One exclusive (non-re-entrant) lock guards the whole store; a transaction holds it from
   start to commit or rollback, so transactions are serialisable. Waiting longer than
   ``lock_timeout`` raises :class:`~capsim.errors.TemporaryFailure` (:mod:`.store` rule 4).
2. Writes go straight into the tables and push the previous value onto an undo log; a
   rollback replays the log backwards, so an exception leaves no trace (rule 1).
3. The clock is injectable (``clock=``), so tests control time without patching; it must
   return timezone-aware UTC datetimes. ``now()`` is read once per transaction (rule 2).
4. Every lookup is a dict access or an index dict (by user, by PAN token, by credential for
   operations): no cost grows with the number of credentials (V43).

>>> from datetime import datetime, timezone
>>> store = MemoryStore(clock=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
>>> with store.transaction() as tx:
...     tx.now().year
2026
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from capsim.errors import TemporaryFailure, ValidationError
from capsim.verifier.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    AuditSealer,
    KeyedSealer,
    resolve_sealer,
    seal,
)
from capsim.verifier.certmemory import CertTables, MemoryCertTables
from capsim.verifier.clients import ApiClient
from capsim.verifier.model import (
    ACTIVE_STATES,
    Acceptance,
    ActivationRecord,
    Changes,
    Credential,
    CredentialState,
    CustomerAccount,
    Operation,
    RequestRecord,
    Snapshot,
    User,
)
from capsim.verifier.padding import (
    PAD_OPERATION_CREDENTIAL_ID,
    is_padding,
    padding_credential,
    padding_operation,
)
from capsim.verifier.store import check_rebind, read_snapshot, write_changes

__all__ = ["MemoryStore"]

_MISSING: Final = object()
_IMMUTABLE: Final = (
    "credential_id",
    "user_id",
    "customer_id",
    "key_ref",
    "pan_token",
    "pan_last4",
    "psn",
    "profile",
    "created_at",
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryStore:
    """A thread-safe in-memory :class:`~capsim.verifier.store.Store`.

    Parameters
    ----------
    clock:
        Returns the current time (timezone-aware UTC); defaults to the system clock.
    lock_timeout:
        Default seconds to wait for the store lock (2.0).
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None, lock_timeout: float = 2.0) -> None:
        self._clock = clock or _utcnow
        self._lock = threading.Lock()
        self._default_timeout = lock_timeout
        self.customers: dict[str, CustomerAccount] = {}
        self.users: dict[str, User] = {}
        self.activations: dict[bytes, ActivationRecord] = {}
        self.credentials: dict[str, Credential] = {}
        self.by_user: dict[str, dict[str, None]] = {}
        self.by_pan: dict[str, dict[str, None]] = {}
        self.operations: dict[str, Operation] = {}
        self.ops_by_credential: dict[str, dict[str, None]] = {}
        self.ledger: dict[tuple[str, int], Acceptance] = {}
        self.ledger_ops: dict[str, tuple[str, int]] = {}
        self.ledger_reqs: dict[str, tuple[str, int]] = {}
        self.ledger_by_credential: dict[str, dict[int, None]] = {}
        self.requests: dict[str, RequestRecord] = {}
        self.audit: list[AuditRecord] = []
        self.settings: dict[str, str] = {}
        self.clients: dict[str, ApiClient] = {}
        self.rates: dict[str, tuple[int, int]] = {}
        self.cert_tables = CertTables()
        self._closed = False
        # the padding rows (padding module): what a migrated SQL database holds from version 8
        for pad in (padding_credential(), padding_credential(PAD_OPERATION_CREDENTIAL_ID)):
            self.credentials[pad.credential_id] = pad
            self.by_pan[pad.pan_token] = {pad.credential_id: None}
        pad_op = padding_operation()
        self.operations[pad_op.operation_id] = pad_op

    def __repr__(self) -> str:
        return f"<MemoryStore credentials={len(self.credentials) - 2} audit={len(self.audit)}>"

    @contextmanager
    def transaction(
        self, *, lock_timeout: float | None = None, sealer: AuditSealer | None = None
    ) -> Iterator[_MemoryTransaction]:
        """Open one transaction (module docstring, rules 1–3); ``sealer`` seals its audit records."""
        if self._closed:
            raise TemporaryFailure("store is closed")
        keyed = resolve_sealer(sealer)
        timeout = self._default_timeout if lock_timeout is None else lock_timeout
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            raise TemporaryFailure("store lock not granted within lock_timeout")
        tx = _MemoryTransaction(self, self._clock())
        tx.sealer = keyed
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
        finally:
            tx.active = False
            self._lock.release()

    def audit_records(self, *, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Committed audit records after ``after_seq``, in order (a snapshot, seals included)."""
        with self._lock:
            records = [r for r in self.audit if r.seq > after_seq]
        yield from records

    def close(self) -> None:
        """Mark the store closed; later transactions raise :class:`TemporaryFailure`."""
        self._closed = True


class _MemoryTransaction(MemoryCertTables):
    """One transaction of :class:`MemoryStore`; see :class:`~capsim.verifier.store.StoreTransaction`."""

    def __init__(self, store: MemoryStore, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValidationError("clock: expected a timezone-aware datetime")
        self._s = store
        self._now = now
        self._undo: list[tuple[Any, Any, Any]] = []
        self.active = True
        self.sealer: KeyedSealer | None = None

    # -- helpers -------------------------------------------------------------------------
    def _check(self) -> None:
        if not self.active:
            raise TemporaryFailure("transaction already finished")

    def _set(self, table: Any, key: Any, value: Any) -> None:
        self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def _index_add(self, index: dict[Any, dict[Any, None]], key: Any, member: Any) -> None:
        bucket = index.get(key)
        if bucket is None:
            bucket = {}
            self._set(index, key, bucket)
        if member not in bucket:
            self._undo.append((bucket, member, _MISSING))
            bucket[member] = None

    @property
    def _cert_tables(self) -> CertTables:
        return self._s.cert_tables

    def rollback(self) -> None:
        for table, key, old in reversed(self._undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()

    def now(self) -> datetime:
        return self._now

    # -- customers and users ---------------------------------------------------------------
    def insert_customer(self, customer: CustomerAccount) -> int:
        self._check()
        if customer.customer_id in self._s.customers:
            return 0
        self._set(self._s.customers, customer.customer_id, customer)
        return 1

    def get_customer(self, customer_id: str) -> CustomerAccount | None:
        self._check()
        return self._s.customers.get(customer_id)

    def insert_user(self, user: User) -> int:
        self._check()
        if user.user_id in self._s.users:
            return 0
        self._set(self._s.users, user.user_id, user)
        return 1

    def get_user(self, user_id: str) -> User | None:
        self._check()
        return self._s.users.get(user_id)

    def list_users(self, customer_id: str | None = None) -> list[User]:
        self._check()
        users = [u for u in self._s.users.values() if customer_id is None or u.customer_id == customer_id]
        return sorted(users, key=lambda u: u.user_id)

    def lock_user(self, user_id: str) -> User | None:
        # the whole store is locked by this transaction already
        return self.get_user(user_id)

    # -- activation codes -------------------------------------------------------------------
    def insert_activation(self, record: ActivationRecord) -> int:
        self._check()
        if record.code_digest in self._s.activations:
            return 0
        self._set(self._s.activations, record.code_digest, record)
        return 1

    def get_activation(self, code_digest: bytes) -> ActivationRecord | None:
        self._check()
        return self._s.activations.get(code_digest)

    def update_activation(self, record: ActivationRecord, *, expected_attempts: int) -> int:
        self._check()
        old = self._s.activations.get(record.code_digest)
        if old is None or old.used_at is not None or old.attempts != expected_attempts:
            return 0
        new = dataclasses.replace(old, used_at=record.used_at, attempts=record.attempts)
        self._set(self._s.activations, record.code_digest, new)
        return 1

    # -- credentials ------------------------------------------------------------------------
    def insert_credential(self, credential: Credential) -> int:
        self._check()
        cid = credential.credential_id
        if cid in self._s.credentials:
            return 0
        if credential.state in ACTIVE_STATES:  # the unique index on live (pan_token, psn)
            for other in self.list_credentials(pan_token=credential.pan_token, states=ACTIVE_STATES):
                if other.psn == credential.psn:
                    return 0
        self._set(self._s.credentials, cid, credential)
        self._index_add(self._s.by_user, credential.user_id, cid)
        self._index_add(self._s.by_pan, credential.pan_token, cid)
        return 1

    def get_credential(self, credential_id: str) -> Credential | None:
        self._check()
        return self._s.credentials.get(credential_id)

    def card_floor(self, pan_token: str, psn: str) -> int:
        same = [c.last_atc for c in self.list_credentials(pan_token=pan_token) if c.psn == psn]
        return max(same, default=-1)

    def read_verification(
        self, *, operation_id: str | None, credential_id: str | None, request_id: str, siblings: bool
    ) -> Snapshot:
        self._check()
        return read_snapshot(
            self,
            operation_id=operation_id,
            credential_id=credential_id,
            request_id=request_id,
            siblings=siblings,
        )

    def write_verification(self, changes: Changes, audit: AuditEntry) -> tuple[bool, AuditRecord]:
        self._check()
        return write_changes(self, changes, audit)

    def lock_credential(self, credential_id: str) -> Credential | None:
        # the whole store is locked by this transaction already
        return self.get_credential(credential_id)

    def lock_credentials(self, credential_ids: Sequence[str]) -> list[Credential]:
        self._check()
        found = (self._s.credentials.get(cid) for cid in sorted(set(credential_ids)))
        return [c for c in found if c is not None]

    def list_credentials(
        self,
        *,
        user_id: str | None = None,
        pan_token: str | None = None,
        states: frozenset[CredentialState] | None = None,
    ) -> list[Credential]:
        self._check()
        if user_id is not None:
            ids: Any = self._s.by_user.get(user_id, {})
        elif pan_token is not None:
            ids = self._s.by_pan.get(pan_token, {})
        else:
            ids = self._s.credentials
        out = []
        for cid in ids:
            if pan_token is None and is_padding(cid):
                continue  # the padding rows are no one's credentials
            c = self._s.credentials[cid]
            if user_id is not None and c.user_id != user_id:
                continue
            if pan_token is not None and c.pan_token != pan_token:
                continue
            if states is not None and c.state not in states:
                continue
            out.append(c)
        return sorted(out, key=lambda c: c.credential_id)

    def update_credential(self, credential: Credential, *, expected_version: int) -> int:
        self._check()
        if credential.version != expected_version + 1:
            raise ValidationError("credential.version: expected expected_version + 1")
        old = self._s.credentials.get(credential.credential_id)
        if old is None or old.version != expected_version:
            return 0
        if credential.last_atc < old.last_atc:
            return 0  # last_atc never decreases (V34)
        if credential.state in ACTIVE_STATES and old.state not in ACTIVE_STATES:
            for other in self.list_credentials(pan_token=old.pan_token, states=ACTIVE_STATES):
                if other.psn == old.psn:  # the unique index on live (pan_token, psn)
                    raise ValidationError(
                        "value outside the schema's constraints (one live credential per card)"
                    )
        for name in _IMMUTABLE:  # immutable columns keep their stored values
            mine, stored = getattr(credential, name), getattr(old, name)
            if mine is not stored and mine != stored:
                credential = dataclasses.replace(credential, **{n: getattr(old, n) for n in _IMMUTABLE})
                break
        self._set(self._s.credentials, credential.credential_id, credential)
        return 1

    def rebind_credential(
        self, credential_id: str, *, key_ref: str, pan_token: str, expected_version: int
    ) -> int:
        self._check()
        check_rebind(key_ref, pan_token)
        old = self._s.credentials.get(credential_id)
        if old is None or old.version != expected_version:
            return 0
        if old.state in ACTIVE_STATES and pan_token != old.pan_token:
            for other in self.list_credentials(pan_token=pan_token, states=ACTIVE_STATES):
                if other.psn == old.psn:  # the unique index on live (pan_token, psn)
                    raise ValidationError(
                        "value outside the schema's constraints (one live credential per card)"
                    )
        new = dataclasses.replace(old, key_ref=key_ref, pan_token=pan_token, version=old.version + 1)
        self._set(self._s.credentials, credential_id, new)
        if pan_token != old.pan_token:
            bucket = self._s.by_pan.get(old.pan_token, {})
            if credential_id in bucket:
                self._undo.append((bucket, credential_id, None))
                del bucket[credential_id]
            self._index_add(self._s.by_pan, pan_token, credential_id)
        return 1

    # -- operations -------------------------------------------------------------------------
    def insert_operation(self, operation: Operation) -> int:
        self._check()
        if operation.operation_id in self._s.operations:
            return 0
        self._set(self._s.operations, operation.operation_id, operation)
        self._index_add(self._s.ops_by_credential, operation.credential_id, operation.operation_id)
        return 1

    def get_operation(self, operation_id: str) -> Operation | None:
        self._check()
        return self._s.operations.get(operation_id)

    def list_open_operations(self, credential_id: str, now: datetime) -> list[Operation]:
        self._check()
        ids = self._s.ops_by_credential.get(credential_id, {})
        ops = [self._s.operations[i] for i in ids]
        return sorted((o for o in ops if o.is_open(now)), key=lambda o: o.operation_id)

    def update_operation(self, operation: Operation, *, expected_attempts: int) -> int:
        self._check()
        old = self._s.operations.get(operation.operation_id)
        if old is None or old.consumed_at is not None or old.attempts != expected_attempts:
            return 0
        new = dataclasses.replace(old, attempts=operation.attempts, consumed_at=operation.consumed_at)
        self._set(self._s.operations, operation.operation_id, new)
        return 1

    # -- ledger and requests -----------------------------------------------------------------
    def insert_acceptance(self, acceptance: Acceptance) -> int:
        self._check()
        key = (acceptance.credential_id, acceptance.atc)
        if key in self._s.ledger or acceptance.request_id in self._s.ledger_reqs:
            return 0
        if acceptance.operation_id is not None and acceptance.operation_id in self._s.ledger_ops:
            return 0
        self._set(self._s.ledger, key, acceptance)
        self._set(self._s.ledger_reqs, acceptance.request_id, key)
        if acceptance.operation_id is not None:
            self._set(self._s.ledger_ops, acceptance.operation_id, key)
        self._index_add(self._s.ledger_by_credential, acceptance.credential_id, acceptance.atc)
        return 1

    def list_acceptances(self, credential_id: str) -> list[Acceptance]:
        self._check()
        atcs = sorted(self._s.ledger_by_credential.get(credential_id, {}))
        return [self._s.ledger[(credential_id, a)] for a in atcs]

    def get_request(self, request_id: str) -> RequestRecord | None:
        self._check()
        return self._s.requests.get(request_id)

    def insert_request(self, record: RequestRecord) -> int:
        self._check()
        if record.request_id in self._s.requests:
            return 0
        self._set(self._s.requests, record.request_id, record)
        return 1

    # -- audit and settings --------------------------------------------------------------------
    def append_audit(self, entry: AuditEntry) -> AuditRecord:
        self._check()
        audit = self._s.audit
        prev = audit[-1].record_hash if audit else GENESIS_HASH
        seq = audit[-1].seq + 1 if audit else 1
        record = seal(entry, seq=seq, at=self._now, prev_hash=prev, sealer=self.sealer)
        audit.append(record)
        self._undo.append((_ListTail(audit), None, _MISSING))
        return record

    # -- API clients and rate counters ------------------------------------------------------
    def insert_client(self, client: ApiClient) -> int:
        self._check()
        if client.created_at.tzinfo is None:
            raise ValidationError("client.created_at: expected a timezone-aware datetime")
        if client.client_id in self._s.clients:
            return 0
        self._set(self._s.clients, client.client_id, client)
        return 1

    def get_client(self, client_id: str) -> ApiClient | None:
        self._check()
        return self._s.clients.get(client_id)

    def list_clients(self) -> list[ApiClient]:
        self._check()
        return [self._s.clients[k] for k in sorted(self._s.clients)]

    def update_client(self, client: ApiClient, *, expected_version: int) -> int:
        self._check()
        if client.version != expected_version + 1:
            raise ValidationError("client.version: expected expected_version + 1")
        old = self._s.clients.get(client.client_id)
        if old is None or old.version != expected_version:
            return 0
        new = dataclasses.replace(
            old,
            name=client.name,
            key_digest=client.key_digest,
            revoked_at=client.revoked_at,
            version=client.version,
        )
        self._set(self._s.clients, client.client_id, new)
        return 1

    def hit_rate(self, bucket: str, slot: int) -> int:
        self._check()
        old_slot, hits = self._s.rates.get(bucket, (slot, 0))
        new = (old_slot, hits + 1) if old_slot >= slot else (slot, 1)
        self._set(self._s.rates, bucket, new)
        return new[1]

    def schema_version(self) -> int | None:
        self._check()
        return None

    def get_setting(self, name: str) -> str | None:
        self._check()
        return self._s.settings.get(name)

    def set_setting(self, name: str, value: str) -> None:
        self._check()
        self._set(self._s.settings, name, value)


class _ListTail:
    """Undo adapter: rolling back an append pops the list's last element."""

    def __init__(self, target: list[AuditRecord]) -> None:
        self._target = target

    def pop(self, _key: object, _default: object = None) -> None:
        self._target.pop()

    def __setitem__(self, _key: object, _value: object) -> None:  # pragma: no cover - never used
        raise TypeError("audit rollback never restores a value")
