"""The persistence interface of the verifier: :class:`Store` and :class:`StoreTransaction`.

This is the ONLY way the service touches state (architecture.md §5). Implementations:
:mod:`capsim.verifier.memory` (in-memory, thread-safe), :mod:`capsim.verifier.sqlite`
(embedded, single process) and :mod:`capsim.verifier.postgres` (the exactly-once design of
verifier.md §5). All of them pass one conformance suite (``tests/verifier``, V26).

Transaction semantics (every implementation must honour them)
-------------------------------------------------------------
1. **One transaction per request.** ``with store.transaction() as tx:`` opens a transaction;
   leaving the block normally commits, leaving it by an exception rolls back everything done
   through ``tx`` (credential, operation, ledger, request and audit rows alike). PostgreSQL:
   READ COMMITTED with ``SET LOCAL lock_timeout``; SQLite: ``BEGIN IMMEDIATE``; memory: an
   exclusive lock plus an undo log.
2. **Clock.** :meth:`StoreTransaction.now` is the database clock (``now()`` in PostgreSQL:
   UTC, timezone-aware, constant within one transaction). The service never reads the
   worker's clock for decisions. The memory store takes an injectable clock.
3. **Parent row first.** A verification locks the credential row with
   :meth:`StoreTransaction.lock_credential` (``SELECT … FOR UPDATE``) before touching any other
   row of that credential. Operation rows are never locked on their own. Several credentials
   (cards sharing a PAN, V11) are locked with :meth:`lock_credentials`, in ascending
   ``credential_id`` order, so two transactions never wait on each other in a cycle.
4. **Lock timeout.** If a row lock (or the store's exclusive lock) is not granted within the
   ``lock_timeout`` given to :meth:`Store.transaction`, the call raises
   :class:`~capsim.errors.TemporaryFailure` (PostgreSQL SQLSTATE 55P03) and the transaction
   is rolled back.
5. **Conditional writes touch exactly one row.** The ``update_*`` methods are
   compare-and-swap: they return the number of rows changed (0 or 1) and change nothing when
   their condition fails. ``insert_acceptance`` and ``insert_request`` return 0 instead of
   raising when the key already exists (``ON CONFLICT DO NOTHING``). The service rolls back
   and rejects whenever a write that must touch one row touches none. A credential's
   ``key_ref`` and ``pan_token`` are fixed for ``update_credential``; only
   :meth:`StoreTransaction.rebind_credential` (a key migration) changes them, under the same
   compare-and-swap on ``version`` and the same unique index on live (``pan_token``, ``psn``).
6. **The ledger.** ``cap_acceptance`` has primary key (``credential_id``, ``atc``) and unique
   ``operation_id`` (when not null) and ``request_id``: a double accept is impossible even if
   the service logic erred.
7. **Audit in the same transaction.** :meth:`StoreTransaction.append_audit` chains the entry
   (:func:`capsim.verifier.audit.seal`) after the newest record and inserts it; it commits or
   rolls back with the state change it describes (V37). Appenders are serialised (PostgreSQL:
   lock the chain head row ``FOR UPDATE`` as the *last* lock of the transaction). When the
   transaction was opened with a ``sealer`` (:class:`~capsim.verifier.audit.AuditSealer`,
   normally the key provider), each record is also sealed (:mod:`capsim.verifier.audit` rule
   4) and its seal stored in the same transaction, in an insert-only table; ``sealer=None``
   writes unsealed records. :meth:`Store.audit_records` returns records with their seals and
   never fails on a row it cannot decode (it yields it with ``malformed`` set).
8. **Commit outcome.** If the commit outcome is unknown (connection lost during COMMIT),
   :meth:`Store.transaction` raises :class:`~capsim.errors.TemporaryFailure`; a retry with the
   same ``request_id`` then finds the recorded outcome (V23). Any other storage error may
   propagate as any exception: the service treats it as a non-accept (fails closed, V25).
9. **Values.** Stores return the model values of :mod:`capsim.verifier.model` (frozen, with
   timezone-aware UTC datetimes). Binary fields are bytes; enums are stored by value.
10. **No cache is authoritative** for ``last_atc``, ``fail_count`` or consumption: every read
    in a transaction sees committed data (plus the transaction's own writes).

Compatibility: methods may be added with default behaviour in later versions; existing
methods keep these semantics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

from capsim.errors import ValidationError
from capsim.verifier.audit import AuditEntry, AuditRecord, AuditSealer
from capsim.verifier.certmodel import CertChallenge, CertCredential, Organisation, OrgUser
from capsim.verifier.clients import ApiClient
from capsim.verifier.model import (
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
from capsim.verifier.padding import PAD_CREDENTIAL_ID, PAD_OPERATION_CREDENTIAL_ID, PAD_OPERATION_ID

__all__ = ["Store", "StoreTransaction", "check_rebind", "read_snapshot", "write_changes"]


@runtime_checkable
class StoreTransaction(Protocol):
    """Operations available inside one store transaction (see the module docstring)."""

    def now(self) -> datetime:
        """The database clock: timezone-aware UTC, the same value for the whole transaction."""
        ...

    # -- customers and users ------------------------------------------------------------
    def insert_customer(self, customer: CustomerAccount) -> int:
        """Insert a customer account; 0 if the id exists (nothing changed), else 1."""
        ...

    def get_customer(self, customer_id: str) -> CustomerAccount | None:
        """The customer account, or ``None``."""
        ...

    def insert_user(self, user: User) -> int:
        """Insert a user; 0 if ``user_id`` exists (nothing changed), else 1."""
        ...

    def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        ...

    def list_users(self, customer_id: str | None = None) -> list[User]:
        """All users (of one customer account when given), ordered by ``user_id``."""
        ...

    def lock_user(self, user_id: str) -> User | None:
        """Lock the user row (``SELECT … FOR UPDATE``) and return it, or ``None``: the parent
        row that serialises a user's enrolments, so the per-user credential limit holds under
        concurrency. Same timeout rule as :meth:`lock_credential`."""
        ...

    # -- activation codes ----------------------------------------------------------------
    def insert_activation(self, record: ActivationRecord) -> int:
        """Insert an activation record keyed by ``code_digest``; 0 on conflict, else 1."""
        ...

    def get_activation(self, code_digest: bytes) -> ActivationRecord | None:
        """The activation record for a code digest, or ``None``."""
        ...

    def update_activation(self, record: ActivationRecord, *, expected_attempts: int) -> int:
        """Write ``used_at`` and ``attempts`` of ``record``.

        Condition: the stored record has ``used_at IS NULL`` and ``attempts =
        expected_attempts``. Returns the number of rows changed (0 or 1).
        """
        ...

    # -- credentials ---------------------------------------------------------------------
    def insert_credential(self, credential: Credential) -> int:
        """Insert a credential; 0 (nothing changed) if ``credential_id`` exists or, for a live
        credential (pending, active, suspended, blocked), another live credential is bound to
        the same card (``pan_token``, ``psn``): the schema's unique index. Else 1."""
        ...

    def card_floor(self, pan_token: str, psn: str) -> int:
        """The card's replay floor: the highest ``last_atc`` of every credential ever bound to
        the card (``pan_token``, ``psn``), whatever its state; −1 for a card never seen."""
        ...

    def get_credential(self, credential_id: str) -> Credential | None:
        """Read a credential without locking it."""
        ...

    def lock_credential(self, credential_id: str) -> Credential | None:
        """Lock the credential row (``SELECT … FOR UPDATE``) and return it, or ``None``.

        Raises :class:`~capsim.errors.TemporaryFailure` when the lock is not granted within
        the transaction's ``lock_timeout``. The lock is held until commit or rollback.
        """
        ...

    def lock_credentials(self, credential_ids: Sequence[str]) -> list[Credential]:
        """Lock several credential rows in ascending ``credential_id`` order; return those found
        (in that order). Same timeout rule as :meth:`lock_credential`."""
        ...

    def list_credentials(
        self,
        *,
        user_id: str | None = None,
        pan_token: str | None = None,
        states: frozenset[CredentialState] | None = None,
    ) -> list[Credential]:
        """Credentials matching every given filter, ordered by ``credential_id`` (no lock);
        never the padding credential (:mod:`capsim.verifier.padding`), unless asked for by its
        PAN token.

        Must use an index for each filter: the cost may not grow with the total number of
        credentials (V43).
        """
        ...

    def update_credential(self, credential: Credential, *, expected_version: int) -> int:
        """Replace the mutable columns of a credential (compare-and-swap).

        ``credential.version`` must be ``expected_version + 1``. Condition: the stored row has
        ``version = expected_version``; when ``credential.last_atc`` is above the stored
        value the implementation may additionally require ``last_atc < credential.last_atc``
        (verifier.md §5 step 4). Returns the number of rows changed (0 or 1). The immutable
        columns (``credential_id``, ``user_id``, ``customer_id``, ``key_ref``, ``pan_token``,
        ``pan_last4``, ``psn``, ``profile``, ``created_at``) are never changed (a key migration
        changes ``key_ref`` and ``pan_token`` with :meth:`rebind_credential`).
        """
        ...

    def rebind_credential(
        self, credential_id: str, *, key_ref: str, pan_token: str, expected_version: int
    ) -> int:
        """Bind a credential to other keys: set its ``key_ref`` and ``pan_token`` and increase
        its ``version`` by one (compare-and-swap, rule 5).

        Condition: the stored row has ``version = expected_version``. Every other column keeps
        its value (``last_atc``, the card's replay floor, state, counters). A live credential
        moved onto the ``pan_token`` of another live credential of the same ``psn`` breaks the
        schema's unique index: :class:`~capsim.errors.ValidationError`, as for
        :meth:`update_credential`. Returns the number of rows changed (0 or 1). Lock the row
        first (:meth:`lock_credential`) and audit the change in the same transaction; the
        caller proves the new reference computes the card's cryptograms (a key migration,
        :mod:`capsim.verifier.pkcs11migrate`).
        """
        ...

    # -- operations ----------------------------------------------------------------------
    def insert_operation(self, operation: Operation) -> int:
        """Insert an operation; 0 if ``operation_id`` exists (nothing changed), else 1."""
        ...

    def get_operation(self, operation_id: str) -> Operation | None:
        """Read an operation (never locked on its own; its credential row is the lock)."""
        ...

    def list_open_operations(self, credential_id: str, now: datetime) -> list[Operation]:
        """The credential's operations with ``consumed_at IS NULL``, ``expires_at > now`` and
        ``attempts < max_attempts``, ordered by ``operation_id`` (indexed by credential)."""
        ...

    def update_operation(self, operation: Operation, *, expected_attempts: int) -> int:
        """Write ``attempts`` and ``consumed_at`` of ``operation``.

        Condition: the stored row has ``consumed_at IS NULL`` and ``attempts =
        expected_attempts``. Returns the number of rows changed (0 or 1).
        """
        ...

    # -- ledger and requests ---------------------------------------------------------------
    def insert_acceptance(self, acceptance: Acceptance) -> int:
        """Insert a ledger row; 0 (nothing changed) if (credential_id, atc), the operation_id or
        the request_id is already in the ledger, else 1."""
        ...

    def list_acceptances(self, credential_id: str) -> list[Acceptance]:
        """The ledger rows of one credential, by ascending ATC."""
        ...

    def get_request(self, request_id: str) -> RequestRecord | None:
        """The recorded outcome of a request id, or ``None``."""
        ...

    def insert_request(self, record: RequestRecord) -> int:
        """Record a request's outcome; 0 if the request id exists (nothing changed), else 1."""
        ...

    # -- one verification ----------------------------------------------------------------
    def read_verification(
        self, *, operation_id: str | None, credential_id: str | None, request_id: str, siblings: bool
    ) -> Snapshot:
        """Read what a verification decides on (see :class:`Snapshot`), locking the target
        credential (found through the operation when ``operation_id`` is given) and, with
        ``siblings``, every credential of the same user and PAN token, in ascending id order,
        before reading the operation again. PostgreSQL does it in one round trip.

        A target that is not found reads the padding rows in its place: the padding
        credential (and, for an operation, the padding operation), with the same statements
        (:mod:`capsim.verifier.padding`)."""
        ...

    def write_verification(self, changes: Changes, audit: AuditEntry) -> tuple[bool, AuditRecord]:
        """Write a verification's decision and its audit record: every credential and
        operation write, the request record, the ledger row (on accept) and the audit. Returns
        whether every ``required`` write touched exactly one row (if not, the caller rolls the
        transaction back) and the audit record. PostgreSQL sends it as one pipelined batch."""
        ...

    # -- API clients and rate counters (the HTTP service) ---------------------------------
    def insert_client(self, client: ApiClient) -> int:
        """Insert an API client; 0 if ``client_id`` exists (nothing changed), else 1."""
        ...

    def get_client(self, client_id: str) -> ApiClient | None:
        """The API client, or ``None``."""
        ...

    def list_clients(self) -> list[ApiClient]:
        """Every API client (revoked ones too), ordered by ``client_id``."""
        ...

    def update_client(self, client: ApiClient, *, expected_version: int) -> int:
        """Write ``name``, ``key_digest``, ``revoked_at`` and ``version`` of ``client``
        (compare-and-swap: ``client.version`` must be ``expected_version + 1`` and the stored
        row at ``expected_version``). Returns the rows changed (0 or 1)."""
        ...

    def hit_rate(self, bucket: str, slot: int) -> int:
        """Count one hit in ``bucket`` for the fixed window ``slot`` and return the hits of
        that window so far, this one included (a newer ``slot`` starts again at 1; an older
        one counts into the newer window). One statement, so concurrent workers on the same
        database count every hit once."""
        ...

    def schema_version(self) -> int | None:
        """The database's schema version (``None`` for a store without migrations)."""
        ...

    # -- certificate credentials (capsim.verifier.certificates; migration 0007) ------------
    def insert_org(self, org: Organisation) -> int:
        """Insert an organisation; 0 if ``org_id`` exists (nothing changed), else 1."""
        ...

    def get_org(self, org_id: str) -> Organisation | None:
        """The organisation, or ``None``."""
        ...

    def lock_org(self, org_id: str) -> Organisation | None:
        """Lock the organisation row (``SELECT … FOR UPDATE``): the parent lock that serialises
        its registrations. Same timeout rule as :meth:`lock_credential`."""
        ...

    def insert_org_user(self, user: OrgUser) -> int:
        """Insert an organisation user; 0 (nothing changed) if ``user_id`` exists, the identity
        digest is already registered in the organisation, or the user is a second
        administrator of it (the schema's unique indexes). Else 1."""
        ...

    def get_org_user(self, user_id: str) -> OrgUser | None:
        """The organisation user, or ``None``."""
        ...

    def find_org_user(self, org_id: str, id_digest: bytes) -> OrgUser | None:
        """The organisation's user registered under an identity digest, or ``None`` (indexed)."""
        ...

    def list_org_users(self, org_id: str) -> list[OrgUser]:
        """The organisation's users, ordered by ``user_id``."""
        ...

    def update_org_user(self, user: OrgUser, *, expected_version: int) -> int:
        """Write ``disabled`` and ``version`` (compare-and-swap as :meth:`update_client`)."""
        ...

    def insert_cert(self, cert: CertCredential) -> int:
        """Insert a certificate; 0 (nothing changed) if ``cert_id`` exists or, for a live one
        (active, blocked), another live certificate has the same ``spki_digest`` (the
        schema's unique index: one live certificate per public key). Else 1."""
        ...

    def get_cert(self, cert_id: str) -> CertCredential | None:
        """Read a certificate without locking it."""
        ...

    def lock_cert(self, cert_id: str) -> CertCredential | None:
        """Lock the certificate row and return it, or ``None`` (as :meth:`lock_credential`)."""
        ...

    def find_live_cert(self, spki_digest: bytes) -> CertCredential | None:
        """The live certificate holding a public key, or ``None`` (indexed)."""
        ...

    def list_certs(self, *, org_id: str | None = None, user_id: str | None = None) -> list[CertCredential]:
        """Certificates matching every given filter, ordered by ``cert_id`` (indexed)."""
        ...

    def update_cert(self, cert: CertCredential, *, expected_version: int) -> int:
        """Write the mutable columns (``state``, ``label``, the failure counters, ``version``)
        under ``version = expected_version`` (``cert.version`` must be one more). A state
        change that would make two live certificates share a key is the schema's
        :class:`~capsim.errors.ValidationError`. Returns the rows changed (0 or 1)."""
        ...

    def insert_cert_challenge(self, challenge: CertChallenge) -> int:
        """Insert a challenge; 0 if ``challenge_id`` exists (nothing changed), else 1."""
        ...

    def get_cert_challenge(self, challenge_id: str) -> CertChallenge | None:
        """The challenge, or ``None`` (its certificate row, when it has one, is the lock)."""
        ...

    def update_cert_challenge(self, challenge: CertChallenge, *, expected_attempts: int) -> int:
        """Write ``attempts`` and ``consumed_at`` under ``consumed_at IS NULL`` and
        ``attempts = expected_attempts``. Returns the rows changed (0 or 1)."""
        ...

    # -- audit and settings ----------------------------------------------------------------
    def append_audit(self, entry: AuditEntry) -> AuditRecord:
        """Chain and insert an audit record (seq = last + 1, at = :meth:`now`) and return it."""
        ...

    def get_setting(self, name: str) -> str | None:
        """A verifier setting (e.g. the serialised policy), or ``None``."""
        ...

    def set_setting(self, name: str, value: str) -> None:
        """Insert or replace a verifier setting."""
        ...


@runtime_checkable
class Store(Protocol):
    """A transactional verifier store (see the module docstring for the rules)."""

    def transaction(
        self, *, lock_timeout: float | None = None, sealer: AuditSealer | None = None
    ) -> AbstractContextManager[StoreTransaction]:
        """Open one transaction: commit on normal exit, roll back on exception.

        ``lock_timeout`` is in seconds (``None``: the store's default, 2 s for PostgreSQL).
        ``sealer`` seals the audit records appended in it (module docstring, rule 7; ``None``:
        unsealed). Raises :class:`~capsim.errors.TemporaryFailure` on a lock timeout or an
        unknown commit outcome.
        """
        ...

    def audit_records(self, *, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Committed audit records with ``seq > after_seq``, in sequence order, with their seals
        (for the checker). A row that cannot be decoded comes back with ``malformed`` set."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def check_rebind(key_ref: object, pan_token: object) -> None:
    """Refuse what :meth:`StoreTransaction.rebind_credential` may not store: an empty or
    non-text ``key_ref`` or ``pan_token`` (:class:`~capsim.errors.ValidationError`)."""
    for name, value in (("key_ref", key_ref), ("pan_token", pan_token)):
        if not isinstance(value, str) or not value or not value.isprintable():
            raise ValidationError(f"{name}: expected a non-empty printable string")


# ------------------------------------------------------------------------------------------------
# The verification pair in terms of the single-row methods (memory and SQL stores)


def read_snapshot(
    tx: StoreTransaction,
    *,
    operation_id: str | None,
    credential_id: str | None,
    request_id: str,
    siblings: bool,
) -> Snapshot:
    """:meth:`StoreTransaction.read_verification` built from the single-row methods.

    A target that is not found reads the padding rows in its place
    (:mod:`capsim.verifier.padding`), when the store has them."""
    # the target and its padding row are both looked up, so every class makes the same calls
    target = credential_id
    op: Operation | None = None
    if operation_id is not None:
        found, pad = tx.get_operation(operation_id), tx.get_operation(PAD_OPERATION_ID)
        op = found or pad
        target = None if op is None else op.credential_id
    creds: list[Credential] = []
    if target is not None:
        padding = PAD_CREDENTIAL_ID if operation_id is None else PAD_OPERATION_CREDENTIAL_ID
        head, pad_row = tx.get_credential(target), tx.get_credential(padding)
        head = head or pad_row
        if head is not None:
            ids = [head.credential_id]
            if siblings:
                group = tx.list_credentials(pan_token=head.pan_token)
                ids += [c.credential_id for c in group if c.user_id == head.user_id]
            creds = tx.lock_credentials(ids)
    if op is not None:  # read again after the lock (store rule 3)
        op = tx.get_operation(op.operation_id)
    return Snapshot(now=tx.now(), operation=op, credentials=tuple(creds), request=tx.get_request(request_id))


def write_changes(tx: StoreTransaction, changes: Changes, audit: AuditEntry) -> tuple[bool, AuditRecord]:
    """:meth:`StoreTransaction.write_verification` built from the single-row methods."""
    ok = True
    for w in changes.credentials:
        if w.new is None:  # an unknown target: look it up as an update would, touch nothing
            tx.get_credential(w.credential_id)
            continue
        touched = tx.update_credential(w.new, expected_version=w.expected_version)
        ok = ok and (touched == 1 or not w.required)
    o = changes.operation
    touched = 0  # no operation id: no row to touch, which only a write not required may do
    if o.operation_id:
        current = tx.get_operation(o.operation_id)
        if current is not None:
            new = dataclasses.replace(current, attempts=o.attempts, consumed_at=o.consumed_at)
            touched = tx.update_operation(new, expected_attempts=o.expected_attempts)
    ok = ok and (touched == 1 or not o.required)
    ok = ok and tx.insert_request(changes.request) == 1
    if changes.acceptance is not None:
        ok = ok and tx.insert_acceptance(changes.acceptance) == 1
    return ok, tx.append_audit(audit)
