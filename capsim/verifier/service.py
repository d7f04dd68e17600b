"""The bank-side verifier service: users, enrolment, operations, verification, lifecycle.

Theory of operation (verifier.md §1, §5)
-----------------------------------------
1. **Inputs first.** Every public method validates its arguments before touching the store or
   the provider (V7, V42) and raises :class:`~capsim.errors.ValidationError` naming the
   argument. Mode, challenge, amount, currency, payee and TDS fields of a verification come
   only from the stored :class:`~capsim.verifier.model.Operation` (V8).
2. **One transaction per request.** :meth:`Verifier.verify` runs in one store transaction:
   resolve the operation, lock the credential row(s) first (ascending id), replay a recorded
   ``request_id`` (V24), check state, temporary lock and operation, run the pure matcher
   (:func:`capsim.verifier.engine.match`), then write the accept (credential CAS, operation
   consumed, ledger row, request row) or the failure (counters, lock, escalation), plus exactly
   one audit record (V37), and commit. Every write that must touch one row is checked; if one
   does not, the transaction rolls back and the call is the uniform reject.
3. **One external reject.** Every refusal of a code is :class:`~capsim.errors.InvalidCode`
   with the same message and attributes (V30); the internal reason goes only to the audit.
   Unknown credentials and refusals that need no evaluation cost a dummy evaluation of the
   same size. Storage and provider failures become :class:`~capsim.errors.TemporaryFailure`:
   nothing is accepted and nothing is counted (V22, V25).
4. **Time** comes from the store's clock (the database's ``now()``), randomness from
   :mod:`secrets` (challenges, identifiers, activation codes), and durations from an
   injectable monotonic clock.
5. **Lockout** (V28–V31): ``max_fail`` consecutive failures set ``locked_until``; the first
   failure after the lock expired starts again at 1; ``escalate_after`` locks inside
   ``escalation_period_s`` block the credential permanently, after the
   ``on_before_permanent_block`` hook ran inside the transaction.
6. **Where each part lives.** :class:`Verifier` is the facade: it keeps the public methods
   and their documentation and delegates each to a module function that takes the shared
   :class:`~capsim.verifier.core.ServiceCore` (store, provider, policy, node, hook, clock,
   metrics). Those modules never import this one:

   ======================================  ==================================================
   :mod:`capsim.verifier.checks`           argument checks, activation code normalisation
   :mod:`capsim.verifier.core`             transactions, audit entries, metrics, padding
   :mod:`capsim.verifier.enrolment`        users, activation codes, enrolment, first code
   :mod:`capsim.verifier.lifecycle`        suspend … replace, lock, unlock, admin_activate
   :mod:`capsim.verifier.operations`       operations, payment rules, challenges, digests
   :mod:`capsim.verifier.verification`     verify, activate, resync (read → decide → write)
   :mod:`capsim.verifier.floor`            advance_floor
   :mod:`capsim.verifier.issuerscript`     build_pin_script
   ======================================  ==================================================

   The decision itself is :mod:`capsim.verifier.decision`, the permission table
   :mod:`capsim.verifier.authority`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from capsim.verifier import enrolment, floor, issuerscript, lifecycle, operations, verification
from capsim.verifier.audit import AuditProblem, AuditTip
from capsim.verifier.core import ServiceCore, VerifierMetrics
from capsim.verifier.enrolment import MAX_ACTIVATION_ATTEMPTS, credential_profile_from_card
from capsim.verifier.model import (
    Acceptance,
    ActivationCode,
    BatchItem,
    Credential,
    CredentialProfile,
    Operation,
    OperationMode,
    User,
)
from capsim.verifier.operations import operation_digest
from capsim.verifier.policy import BoundReport, VerifierPolicy, false_accept_bound
from capsim.verifier.provider import CryptogramProvider
from capsim.verifier.store import Store

__all__ = [
    "MAX_ACTIVATION_ATTEMPTS",
    "Verifier",
    "VerifierMetrics",
    "credential_profile_from_card",
    "operation_digest",
]


class Verifier:
    """The verifier API (verifier.md §1): see the module docstring.

    Parameters
    ----------
    store:
        Where all state lives (:class:`~capsim.verifier.store.Store`).
    provider:
        Key custody (:class:`~capsim.verifier.provider.CryptogramProvider`).
    policy:
        Limits; ``None`` loads the policy stored by an earlier run, else the defaults. A policy
        that differs from the stored one is recorded, with its false-accept bound, in the audit.
    node:
        Name of this node in audit records.
    profiles:
        Credential profiles to check against the false-accept ceiling at construction (V5).
    on_before_permanent_block:
        Called with the credential (inside the transaction) before a permanent block commits
        (V31; payer alert). Exceptions from it are logged; the block still happens. It runs
        while the credential row is locked, so it must not call back into the verifier (queue
        the alert instead).
    monotonic:
        Clock for durations only (``time.perf_counter``).
    """

    def __init__(
        self,
        store: Store,
        provider: CryptogramProvider,
        *,
        policy: VerifierPolicy | None = None,
        node: str = "capsim",
        profiles: Sequence[CredentialProfile] = (),
        on_before_permanent_block: Callable[[Credential], None] | None = None,
        monotonic: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._core = ServiceCore(
            store,
            provider,
            policy=policy,
            node=node,
            profiles=profiles,
            on_before_permanent_block=on_before_permanent_block,
            monotonic=monotonic,
        )

    def __repr__(self) -> str:
        return f"<Verifier node={self._core.node!r}>"

    @property
    def policy(self) -> VerifierPolicy:
        """The policy in force (given, stored by an earlier run, or the defaults)."""
        return self._core.policy

    @policy.setter
    def policy(self, value: VerifierPolicy) -> None:
        self._core.policy = value

    @property
    def metrics(self) -> VerifierMetrics:
        """The instrumentation counters since construction (V4, V20)."""
        return self._core.metrics()

    def false_accept_bound(self, profile: CredentialProfile) -> BoundReport:
        """V5's bound for ``profile`` under this verifier's policy (no ceiling check)."""
        return false_accept_bound(profile, self._core.policy)

    # -- customers and users (capsim.verifier.enrolment) ---------------------------------------
    def add_user(
        self,
        user_id: str,
        *,
        customer_id: str | None = None,
        admin: bool | None = None,
        acting_user: str | None = None,
        name: str = "",
    ) -> User:
        """Create a user.

        By the bank (``acting_user=None``): in ``customer_id`` (created when new; default
        ``"cu-" + user_id``); the first user of a new account is its administrator. By a
        customer administrator (``acting_user``): a secondary user of the *same* account.
        """
        return enrolment.add_user(
            self._core, user_id, customer_id=customer_id, admin=admin, acting_user=acting_user, name=name
        )

    def list_users(self, customer_id: str | None = None) -> list[User]:
        """Users (of one customer account when given)."""
        return enrolment.list_users(self._core, customer_id)

    def get_user(self, user_id: str) -> User | None:
        """One user, or ``None``."""
        return enrolment.get_user(self._core, user_id)

    # -- activation and enrolment (capsim.verifier.enrolment) ----------------------------------
    def issue_activation_code(
        self, user_id: str, *, acting_user: str | None = None, ttl_s: int | None = None
    ) -> ActivationCode:
        """A single-use activation code for ``user_id`` (valid 24 h by default); stored hashed."""
        return enrolment.issue_activation_code(self._core, user_id, acting_user=acting_user, ttl_s=ttl_s)

    def enroll(
        self,
        activation_code: str,
        *,
        pan: str,
        psn: str = "00",
        profile: CredentialProfile,
        issuer_key_id: str,
        derivation: str = "auto",
        first_code: str | None = None,
        request_id: str | None = None,
        atc_floor: int = -1,
        label: str = "",
    ) -> Credential:
        """Bind a card to the activation code's user (verifier.md V32; issue §2).

        The PAN is handed to the provider only (the credential keeps a key reference, a PAN
        token and the last four digits). With ``first_code`` (an Identify code from the card)
        the credential is created ``active`` with ``last_atc`` at that code's ATC; a wrong
        first code raises :class:`InvalidCode`, creates nothing and uses up one of the
        activation code's :data:`MAX_ACTIVATION_ATTEMPTS`. Without it the credential stays
        ``pending`` until :meth:`activate` or :meth:`admin_activate`.
        """
        return enrolment.enroll(
            self._core,
            activation_code,
            pan=pan,
            psn=psn,
            profile=profile,
            issuer_key_id=issuer_key_id,
            derivation=derivation,
            first_code=first_code,
            request_id=request_id,
            atc_floor=atc_floor,
            label=label,
        )

    def enroll_card(
        self,
        activation_code: str,
        card_profile: Any,
        *,
        issuer_key_id: str,
        first_code: str | None = None,
        request_id: str | None = None,
        reader_profile: str | None = None,
        label: str = "",
    ) -> Credential:
        """:meth:`enroll` from a personalised :class:`capsim.cards.CardProfile` (PAN, PSN,
        derivation option and profile read from it; its keys are ignored)."""
        return enrolment.enroll_card(
            self._core,
            activation_code,
            card_profile,
            issuer_key_id=issuer_key_id,
            first_code=first_code,
            request_id=request_id,
            reader_profile=reader_profile,
            label=label,
        )

    # -- lifecycle (capsim.verifier.lifecycle) -------------------------------------------------
    def admin_activate(self, credential_id: str, *, acting_user: str | None = None) -> Credential:
        """``pending → active`` by an administrator act (V32)."""
        return lifecycle.admin_activate(self._core, credential_id, acting_user=acting_user)

    def get_credential(self, credential_id: str) -> Credential | None:
        """One credential, or ``None``."""
        return lifecycle.get_credential(self._core, credential_id)

    def list_credentials(self, user_id: str, *, acting_user: str | None = None) -> list[Credential]:
        """A user's credentials (an administrator of the same account, or the bank)."""
        return lifecycle.list_credentials(self._core, user_id, acting_user=acting_user)

    def suspend(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """``active → suspended`` (administrator)."""
        return lifecycle.suspend(self._core, credential_id, acting_user=acting_user, reason=reason)

    def resume(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """``suspended → active`` (administrator)."""
        return lifecycle.resume(self._core, credential_id, acting_user=acting_user, reason=reason)

    def revoke(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """Terminal ``revoked`` (RTS Art. 27)."""
        return lifecycle.revoke(self._core, credential_id, acting_user=acting_user, reason=reason)

    def lock(self, credential_id: str, *, seconds: int | None = None, reason: str = "") -> Credential:
        """Temporarily lock a credential (``locked_until`` = now + ``seconds``; default
        ``lock_duration_s``). The state stays ``active``."""
        return lifecycle.lock(self._core, credential_id, seconds=seconds, reason=reason)

    def unlock(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """Clear a temporary lock and the failure counters; a ``blocked`` credential becomes
        ``active`` again (the administrator path of V31)."""
        return lifecycle.unlock(self._core, credential_id, acting_user=acting_user, reason=reason)

    def report_lost(
        self,
        credential_id: str,
        *,
        replacement_pan: str | None = None,
        replacement_psn: str | None = None,
        issuer_key_id: str | None = None,
        derivation: str = "auto",
        profile: CredentialProfile | None = None,
        acting_user: str | None = None,
    ) -> Credential | None:
        """Report a card lost (V33): the old credential leaves service and, when
        ``replacement_psn`` is given, its replacement (same user, new PSN, fresh ``last_atc``,
        state ``pending`` until its first code) is created in the same transaction.
        Returns the replacement, or ``None``."""
        return lifecycle.report_lost(
            self._core,
            credential_id,
            replacement_pan=replacement_pan,
            replacement_psn=replacement_psn,
            issuer_key_id=issuer_key_id,
            derivation=derivation,
            profile=profile,
            acting_user=acting_user,
        )

    def replace(
        self,
        credential_id: str,
        *,
        pan: str,
        psn: str,
        issuer_key_id: str,
        derivation: str = "auto",
        profile: CredentialProfile | None = None,
        acting_user: str | None = None,
    ) -> Credential:
        """Replace a card (reissue): old credential ``replaced``, new one ``pending``, one transaction."""
        return lifecycle.replace(
            self._core,
            credential_id,
            pan=pan,
            psn=psn,
            issuer_key_id=issuer_key_id,
            derivation=derivation,
            profile=profile,
            acting_user=acting_user,
        )

    # -- operations (capsim.verifier.operations) -----------------------------------------------
    def issue_operation(
        self,
        credential_id: str,
        *,
        mode: OperationMode | str,
        reference: str | None = None,
        amount: int | str | None = None,
        currency: str | None = None,
        payee: str | None = None,
        fields: Sequence[str] | None = None,
        batch: Sequence[BatchItem] | None = None,
        payment: bool = False,
        ttl_s: int | None = None,
    ) -> Operation:
        """Create a single-use operation bound to its data (V8–V17).

        Parameters
        ----------
        mode:
            ``identify``, ``respond``, ``sign`` or ``tds``.
        reference:
            Sign only: a caller-supplied payee reference (≤ 8 digits, canonicalised, V9, V16);
            otherwise the challenge is drawn with :mod:`secrets`.
        amount, currency:
            Sign/TDS: integer minor units (or a decimal string) and ISO 4217 alpha or numeric.
        payee:
            Free text ≤ 128 bytes, bound into the digest.
        fields:
            TDS data fields (1–10 of 1–10 digits).
        batch:
            Batch payment items; the digest covers each payee and the total (V16).
        payment:
            A payment approval: under the PSD2 profile only SIGN with IAF b8 or TDS over amount
            and payee digits are allowed (V17).
        ttl_s:
            Lifetime (default ``operation_ttl_s``; never above it in the PSD2 profile).
        """
        return operations.issue_operation(
            self._core,
            credential_id,
            mode=mode,
            reference=reference,
            amount=amount,
            currency=currency,
            payee=payee,
            fields=fields,
            batch=batch,
            payment=payment,
            ttl_s=ttl_s,
        )

    def get_operation(self, operation_id: str) -> Operation | None:
        """One operation, or ``None``."""
        return operations.get_operation(self._core, operation_id)

    # -- verification (capsim.verifier.verification) -------------------------------------------
    def verify(self, target: str, code: str, *, request_id: str) -> Acceptance:
        """Verify a code against an operation (``op-…``) or, for an Identify login, a
        credential (``cr-…``) (verifier.md §1).

        Returns
        -------
        Acceptance
            The ledger row of the accept.

        Raises
        ------
        ValidationError
            The code or an id is malformed (nothing counted, V7).
        InvalidCode
            Every refusal, whatever the reason (V30).
        TemporaryFailure
            Lock timeout, store or provider failure: nothing accepted, nothing counted.
        """
        return verification.verify(self._core, target, code, request_id=request_id)

    def activate(self, credential_id: str, code: str, *, request_id: str) -> Acceptance:
        """``pending → active`` with a first valid Identify code (V32)."""
        return verification.activate(self._core, credential_id, code, request_id=request_id)

    def resync(self, credential_id: str, codes: Sequence[str], *, request_id: str) -> int:
        """Resynchronise after the ATC ran beyond the window (V34).

        ``codes`` are ``resync_count`` (2, or 3) Identify codes with consecutive ATCs
        a, a+1[, a+2], all above ``last_atc`` and within ``sync_window``; presenting them in
        one call keeps them within ``resync_max_interval_s`` of each other. On success
        ``last_atc`` becomes the highest ATC used and is returned; a failure is counted and
        raises :class:`InvalidCode`. ``last_atc`` never decreases.
        """
        return verification.resync(self._core, credential_id, codes, request_id=request_id)

    # -- floor and issuer scripts (capsim.verifier.floor, capsim.verifier.issuerscript) --------
    def advance_floor(self, credential_id: str, atc: int | bytes, *, request_id: str | None = None) -> int:
        """Raise ``last_atc`` to ``atc`` if it is lower (V36): monotone, idempotent, never a
        failure, safe against a concurrent :meth:`verify` (it takes the same row lock).
        Returns the resulting ``last_atc``."""
        return floor.advance_floor(self._core, credential_id, atc, request_id=request_id)

    def build_pin_script(
        self,
        credential_id: str,
        *,
        arqc: bytes,
        atc: int | bytes,
        new_pin: str | None = None,
        current_pin: str | None = None,
        acting_user: str | None = None,
    ) -> bytes:
        """The PIN UNBLOCK (``new_pin=None``) or PIN CHANGE issuer-script command for this card,
        keyed for the transaction whose ARQC and ATC are given (emv-crypto.md §7; cap-protocol.md
        §9.7). The PINs are never logged or audited."""
        return issuerscript.build_pin_script(
            self._core,
            credential_id,
            arqc=arqc,
            atc=atc,
            new_pin=new_pin,
            current_pin=current_pin,
            acting_user=acting_user,
        )

    # -- audit ---------------------------------------------------------------------------------
    def check_audit(
        self, *, sealed_from: int | None = None, tip: AuditTip | None = None
    ) -> tuple[AuditProblem, ...]:
        """Run the chain checker over the whole audit (V39); empty = intact.

        When the provider holds an audit seal key, every record from ``sealed_from`` on must
        carry a valid seal. Pass the sealing start kept outside the database (the CLI's keyring
        file keeps it); without it the start recorded in the database is used, which an
        attacker who can rewrite the database could also move. ``tip`` is an anchor exported
        earlier (:class:`~capsim.verifier.audit.AuditTip`): a chain cut or rewritten before it
        is reported too.
        """
        return self._core.check_audit(sealed_from=sealed_from, tip=tip)
