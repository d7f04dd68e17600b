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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from capsim._validate import digits as _digits
from capsim.errors import (
    ConfigError,
    InvalidCode,
    RequestConflict,
    TemporaryFailure,
    ValidationError,
    VerifierError,
)
from capsim.iad import IadProfile, arqc_iad_variants
from capsim.jsonlimits import loads_limited
from capsim.verifier import decision, engine
from capsim.verifier.audit import AuditEntry, AuditProblem, AuditTip, check_chain
from capsim.verifier.authority import Power, authorize
from capsim.verifier.model import (
    ACTIVE_STATES,
    Acceptance,
    Action,
    ActivationCode,
    ActivationRecord,
    BatchItem,
    Credential,
    CredentialProfile,
    CredentialState,
    CustomerAccount,
    Operation,
    OperationMode,
    Outcome,
    RequestRecord,
    User,
    UserRole,
    transition,
)
from capsim.verifier.policy import BoundReport, VerifierPolicy, false_accept_bound
from capsim.verifier.provider import CryptogramProvider
from capsim.verifier.store import Store, StoreTransaction

__all__ = [
    "MAX_ACTIVATION_ATTEMPTS",
    "Verifier",
    "VerifierMetrics",
    "credential_profile_from_card",
    "operation_digest",
]

_log = logging.getLogger(__name__)

#: Wrong first codes an activation code survives.
MAX_ACTIVATION_ATTEMPTS: Final = 5
_OP_PREFIX: Final = "op-"
_CRED_PREFIX: Final = "cr-"
_ACT_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_MAX_TEXT: Final = 128
_MAX_ATC: Final = 0xFFFF
#: Settings key prefix marking a credential whose card was just sent an issuer script.
#: The store setting where the audit sealing start is recorded (the keyring file keeps its own copy).
_SEAL_SETTING: Final = "audit.seal"
#: The audit event of each verification method.
_EVENTS: Final = {"verify": "verify", "activate": "verify", "resync": "resync"}


class _ConflictError(Exception):
    """A write that had to touch exactly one row did not (roll back and reject)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifierMetrics:
    """Instrumentation counters (V4, V20): verify calls that ran the matcher, candidate
    recomputations, and dummy recomputations (unknown credentials and bare refusals)."""

    evaluation_calls: int
    candidate_evaluations: int
    dummy_evaluations: int


# ------------------------------------------------------------------------------------------------
# Argument checks


def _text(name: str, value: object, *, lo: int = 1, hi: int = _MAX_TEXT) -> str:
    if not isinstance(value, str) or not lo <= len(value.encode("utf-8")) <= hi:
        raise ValidationError(f"{name}: expected a str of {lo}..{hi} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValidationError(f"{name}: control characters are not allowed")
    return value


def _ident(name: str, value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not value.isascii()
        or not all(c.isalnum() or c in "-_.@" for c in value)
    ):
        raise ValidationError(f"{name}: expected 1..64 ASCII letters, digits, '-', '_', '.' or '@'")
    return value


def _request_id(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_TEXT or not value.isascii():
        raise ValidationError("request_id: expected 1..128 printable ASCII characters")
    if not value.isprintable():
        raise ValidationError("request_id: expected 1..128 printable ASCII characters")
    return value


@contextmanager
def _provider_failures() -> Iterator[None]:
    """Around a provider call: capsim input/config errors pass; any other failure is temporary."""
    try:
        yield
    except (ValidationError, ConfigError):
        raise
    except Exception:
        raise TemporaryFailure("cryptogram provider unavailable") from None


def _atc(name: str, value: object) -> int:
    if isinstance(value, bytes):
        if len(value) != 2:
            raise ValidationError(f"{name}: expected 2 bytes or an int 0..65535")
        return int.from_bytes(value, "big")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ATC:
        raise ValidationError(f"{name}: expected an int 0..65535")
    return value


def _seconds(name: str, value: object, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValidationError(f"{name}: expected whole seconds 1..{hi}")
    return value


def _normalise_activation(code: object) -> str:
    if not isinstance(code, str) or len(code) > 64:
        raise ValidationError("activation_code: expected 16 characters (dashes optional)")
    cleaned = code.replace("-", "").replace(" ", "").upper()
    if len(cleaned) != 16 or not all(c in _ACT_ALPHABET for c in cleaned):
        raise ValidationError("activation_code: expected 16 characters (dashes optional)")
    return cleaned


def _activation_digest(cleaned: str) -> bytes:
    return hashlib.sha256(b"capsim activation v1|" + cleaned.encode("ascii")).digest()


def operation_digest(
    *,
    mode: OperationMode,
    challenge: str,
    amount_minor: int | None,
    currency: str | None,
    payee: str | None,
    tds_fields: Sequence[str],
    batch: Sequence[BatchItem] = (),
) -> bytes:
    """Canonical SHA-256 of an operation's bound data (verifier.md §1 ``txn_digest``, V13, V16).

    Sorted-key JSON of every field; a batch contributes each payee and amount in order.

    >>> a = operation_digest(mode=OperationMode.SIGN, challenge="00001234", amount_minor=1500,
    ...                      currency="978", payee="NL01", tds_fields=())
    >>> b = operation_digest(mode=OperationMode.SIGN, challenge="00001234", amount_minor=1501,
    ...                      currency="978", payee="NL01", tds_fields=())
    >>> a != b, len(a)
    (True, 32)
    """
    body = {
        "v": 1,
        "mode": OperationMode(mode).value,
        "challenge": challenge,
        "amount_minor": amount_minor,
        "currency": currency,
        "payee": payee,
        "tds_fields": list(tds_fields),
        "batch": [[b.payee, b.amount_minor] for b in batch],
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hashlib.sha256(raw).digest()


def credential_profile_from_card(
    card_profile: Any, *, reader_profile: str | None = None
) -> CredentialProfile:
    """The :class:`CredentialProfile` of an emulated card's personalisation (no key is copied).

    ``card_profile`` is a :class:`capsim.cards.CardProfile` (a card file's profile, as a
    card-management system would hand it over). The reader profile defaults to the one the
    card's AID selects (cap-protocol.md §3); the IAD variants are the card's predicted ARQC
    IADs for each history state, most likely first (:func:`capsim.iad.arqc_iad_variants`, V10).
    """
    from capsim.profiles import get_reader_profile, profile_for_aid

    # duck-typed: the verifier does not import the card emulator, only the pure IAD model
    needed = ("aid", "cdol1", "aip", "ipb", "iaf", "cvn", "key_derivation")
    if not isinstance(card_profile, IadProfile) or not all(hasattr(card_profile, n) for n in needed):
        raise ValidationError("card_profile: expected a capsim.cards.CardProfile")
    variants = arqc_iad_variants(card_profile)
    card: Any = card_profile
    if reader_profile is None:
        chosen = profile_for_aid(card.aid)
        name = "mc-cap" if chosen is None else chosen.name
    else:
        name = get_reader_profile(reader_profile).name
    return CredentialProfile(
        reader_profile=name,
        cdol1=card.cdol1,
        aip=card.aip,
        ipb=card.ipb,
        iaf=card.iaf,
        cvn=int(card.cvn),
        iad_variants=variants,
        key_derivation=str(card.key_derivation.value),
    )


# ------------------------------------------------------------------------------------------------
# The service


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
        self._store = store
        self._provider = provider
        self._node = _ident("node", node)
        self._hook = on_before_permanent_block
        self._monotonic = monotonic
        self._metrics_lock = threading.Lock()
        self._calls = 0
        self._evals = 0
        self._dummies = 0
        self._dummy_size = 1
        with self._tx() as tx:
            stored = tx.get_setting("policy")
            if policy is None:
                policy = VerifierPolicy.from_json(stored) if stored else VerifierPolicy()
            self.policy = policy
            reports = [self._check_bound(p) for p in profiles]
            self._dummy_size = max([policy.history_variants, *(r.candidates * r.variants for r in reports)])
            current = policy.to_json()
            if stored != current:
                worst = max((r.probability for r in reports), default=0.0)
                tx.set_setting("policy", current)
                tx.append_audit(
                    self._entry(
                        event="policy",
                        outcome="ok",
                        details={"policy": current, "false_accept_bound": f"{worst:.3g}"},
                    )
                )

    def __repr__(self) -> str:
        return f"<Verifier node={self._node!r}>"

    # -- plumbing ----------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, *, keep_conflict: bool = False) -> Iterator[StoreTransaction]:
        """A store transaction whose unexpected errors become :class:`TemporaryFailure` (V25).

        A write that had to touch one row and did not (a concurrent change) is a temporary
        failure too, except for ``verify``/``resync``, which turn it into the uniform reject.
        """
        try:
            # the provider seals the audit records when it holds a seal key (audit.py rule 4);
            # the keyword is passed only then, so stores that predate it keep working unsealed
            seal_key = getattr(self._provider, "audit_seal_key_id", None)
            if seal_key is not None and seal_key() is not None:
                opened = self._store.transaction(lock_timeout=self._lock_timeout(), sealer=self._provider)
            else:
                opened = self._store.transaction(lock_timeout=self._lock_timeout())
            with opened as tx:
                yield tx
        except _ConflictError:
            if keep_conflict:
                raise
            raise TemporaryFailure("concurrent update; retry") from None
        except (VerifierError, ValidationError, ConfigError):
            raise
        except Exception as exc:
            _log.warning("store failure (%s): treated as a temporary failure", type(exc).__name__)
            raise TemporaryFailure("verifier store unavailable") from None

    def _lock_timeout(self) -> float:
        policy = getattr(self, "policy", None)
        return 2.0 if policy is None else float(policy.lock_timeout_s)

    def _entry(self, **fields: object) -> AuditEntry:
        return AuditEntry(node=self._node, **fields)  # type: ignore[arg-type]

    def _count(self, calls: int = 0, evals: int = 0, dummies: int = 0) -> None:
        with self._metrics_lock:
            self._calls += calls
            self._evals += evals
            self._dummies += dummies

    @property
    def metrics(self) -> VerifierMetrics:
        """The instrumentation counters since construction (V4, V20)."""
        with self._metrics_lock:
            return VerifierMetrics(
                evaluation_calls=self._calls,
                candidate_evaluations=self._evals,
                dummy_evaluations=self._dummies,
            )

    def _check_bound(self, profile: CredentialProfile) -> BoundReport:
        report = false_accept_bound(profile, self.policy)
        if report.probability > self.policy.false_accept_ceiling:
            raise ConfigError(
                f"false-accept bound {report.probability:.3g} exceeds the ceiling "
                f"{self.policy.false_accept_ceiling:.3g} (max_fail={report.max_fail}, "
                f"candidates={report.candidates}, variants={report.variants}, ac_bits={report.ac_bits})"
            )
        return report

    def false_accept_bound(self, profile: CredentialProfile) -> BoundReport:
        """V5's bound for ``profile`` under this verifier's policy (no ceiling check)."""
        return false_accept_bound(profile, self.policy)

    def _dummy(self, code: engine.PresentedCode, count: int | None = None) -> None:
        """Spend ``count`` (default: a typical call's) recomputations that never match (V30)."""
        count = self._dummy_size if count is None else max(count, 0)
        try:  # called even for 0 evaluations: the provider calls stay the same (V30)
            n = engine.dummy_evaluate(code, self._provider, evaluations=count, profile=decision.DUMMY_PROFILE)
        except Exception:  # the dummy must never change the outcome
            n = 0
        self._count(dummies=n)

    def _authorize(
        self, tx: StoreTransaction, acting_user: str | None, customer_id: str, power: Power
    ) -> None:
        """The one permission check (:mod:`capsim.verifier.authority`)."""
        if acting_user is None:
            return  # the bank's own operator
        authorize(tx.get_user(acting_user), power, customer_id)

    # -- customers and users -----------------------------------------------------------------------
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
        uid = _ident("user_id", user_id)
        if acting_user is not None:
            _ident("acting_user", acting_user)
        if customer_id is not None:
            _ident("customer_id", customer_id)
        if name:
            _text("name", name)
        with self._tx() as tx:
            now = tx.now()
            if tx.get_user(uid) is not None:
                raise ValidationError(f"user_id: user {uid!r} already exists")
            if acting_user is not None:
                actor = tx.get_user(acting_user)
                if actor is None:
                    raise ValidationError("acting_user: not an administrator of this customer account")
                if customer_id is not None and customer_id != actor.customer_id:
                    raise ValidationError("customer_id: an administrator adds users to its own account only")
                cid = actor.customer_id
                self._authorize(tx, acting_user, cid, Power.ADD_USER)
                role = UserRole.ADMIN if admin else UserRole.USER
            else:
                cid = customer_id or f"cu-{uid}"
                new_account = tx.get_customer(cid) is None
                if new_account:
                    tx.insert_customer(CustomerAccount(customer_id=cid, created_at=now, name=name))
                role = UserRole.ADMIN if (admin if admin is not None else new_account) else UserRole.USER
            user = User(user_id=uid, customer_id=cid, role=role, created_at=now, created_by=acting_user)
            if tx.insert_user(user) != 1:
                raise ValidationError(f"user_id: user {uid!r} already exists")
            tx.append_audit(
                self._entry(event="user", outcome="ok", reason="created", details={"user": uid, "role": role})
            )
            return user

    def list_users(self, customer_id: str | None = None) -> list[User]:
        """Users (of one customer account when given)."""
        with self._tx() as tx:
            return tx.list_users(customer_id)

    def get_user(self, user_id: str) -> User | None:
        """One user, or ``None``."""
        with self._tx() as tx:
            return tx.get_user(_ident("user_id", user_id))

    # -- activation and enrolment ------------------------------------------------------------------
    def issue_activation_code(
        self, user_id: str, *, acting_user: str | None = None, ttl_s: int | None = None
    ) -> ActivationCode:
        """A single-use activation code for ``user_id`` (valid 24 h by default); stored hashed."""
        uid = _ident("user_id", user_id)
        ttl = self.policy.activation_ttl_s if ttl_s is None else _seconds("ttl_s", ttl_s, 30 * 86_400)
        raw = "".join(secrets.choice(_ACT_ALPHABET) for _ in range(16))
        shown = "-".join(raw[i : i + 4] for i in range(0, 16, 4))
        with self._tx() as tx:
            user = tx.get_user(uid)
            if user is None or user.disabled:
                raise ValidationError(f"user_id: no active user {uid!r}")
            self._authorize(tx, acting_user, user.customer_id, Power.ISSUE_ACTIVATION)
            now = tx.now()
            record = ActivationRecord(
                code_digest=_activation_digest(raw),
                user_id=uid,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
            if tx.insert_activation(record) != 1:
                raise TemporaryFailure("activation code collision; retry")
            tx.append_audit(self._entry(event="activation-code", outcome="ok", details={"user": uid}))
            return ActivationCode(code=shown, user_id=uid, expires_at=record.expires_at)

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
        cleaned = _normalise_activation(activation_code)
        _digits("pan", pan, 12, 19)
        _digits("psn", psn, 2, 2)
        if not isinstance(profile, CredentialProfile):
            raise ValidationError("profile: expected a CredentialProfile")
        self._check_profile(profile)
        presented = None if first_code is None else self._parse(first_code)
        rid = None if request_id is None else _request_id(request_id)
        if isinstance(atc_floor, bool) or not isinstance(atc_floor, int) or not -1 <= atc_floor < _MAX_ATC:
            raise ValidationError("atc_floor: expected an int -1..65534")
        if label:
            _text("label", label)
        with _provider_failures():
            keys = self._provider.register_card(
                issuer_key_id=issuer_key_id, pan=pan, psn=psn, derivation=derivation
            )
        report = self._check_bound(profile)
        t0 = self._monotonic()
        digest = _activation_digest(cleaned)
        fingerprint = self._fingerprint("enroll", digest.hex(), [] if presented is None else [presented])
        with self._tx() as tx:
            now = tx.now()
            if rid is not None:
                previous = tx.get_request(rid)
                if previous is not None:
                    if not previous.binds(method="enroll", target=digest.hex(), fingerprint=fingerprint):
                        raise RequestConflict(rid)
                    done = previous.acceptance
                    again = None if done is None else tx.get_credential(done.credential_id)
                    if again is None:
                        raise InvalidCode
                    return again
            rec = tx.get_activation(digest)
            if (
                rec is None
                or rec.used_at is not None
                or now >= rec.expires_at
                or rec.attempts >= MAX_ACTIVATION_ATTEMPTS
            ):
                tx.append_audit(self._entry(event="enroll", outcome="reject", reason="activation-code"))
                result: Credential | None = None
            else:
                # the user row is the parent lock of its enrolments: the per-user limit holds
                # under concurrency (the one-live-credential-per-card rule is a unique index)
                user = tx.lock_user(rec.user_id)
                if user is None or user.disabled:
                    raise ValidationError("activation_code: its user no longer exists")
                self._refuse_duplicate(tx, keys.pan_token, psn)
                active = tx.list_credentials(user_id=user.user_id, states=ACTIVE_STATES)
                if len(active) >= self.policy.max_active_credentials:
                    raise ValidationError(
                        f"user has {len(active)} active credentials; the limit is "
                        f"{self.policy.max_active_credentials}"
                    )
                cred = Credential(
                    credential_id=_CRED_PREFIX + secrets.token_hex(8),
                    user_id=user.user_id,
                    customer_id=user.customer_id,
                    state=CredentialState.PENDING,
                    key_ref=keys.key_ref,
                    pan_token=keys.pan_token,
                    pan_last4=keys.pan_last4,
                    psn=psn,
                    profile=profile,
                    created_at=now,
                    # the replay floor belongs to the card: never below an ATC it already used here
                    last_atc=max(atc_floor, tx.card_floor(keys.pan_token, psn)),
                    max_fail=self.policy.max_fail,
                    label=label,
                )
                result = self._enroll_tx(
                    tx,
                    cred,
                    rec=rec,
                    presented=presented,
                    rid=rid,
                    report=report,
                    t0=t0,
                    fingerprint=fingerprint,
                )
        if result is None:
            raise InvalidCode
        return result

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
        profile = credential_profile_from_card(card_profile, reader_profile=reader_profile)
        return self.enroll(
            activation_code,
            pan=card_profile.pan,
            psn=card_profile.psn,
            profile=profile,
            issuer_key_id=issuer_key_id,
            derivation=profile.key_derivation,
            first_code=first_code,
            request_id=request_id,
            atc_floor=max(-1, int(card_profile.initial_atc) - 1),
            label=label,
        )

    def _enroll_tx(
        self,
        tx: StoreTransaction,
        cred: Credential,
        *,
        rec: ActivationRecord,
        presented: engine.PresentedCode | None,
        rid: str | None,
        report: BoundReport,
        t0: float,
        fingerprint: bytes,
    ) -> Credential | None:
        now = tx.now()
        details = {"false_accept_bound": f"{report.probability:.3g}"}
        if presented is None:
            self._insert_new(tx, cred)
            self._must(
                tx.update_activation(dataclasses.replace(rec, used_at=now), expected_attempts=rec.attempts)
            )
            tx.append_audit(
                self._entry(
                    event="enroll",
                    outcome="ok",
                    reason="pending",
                    credential_id=cred.credential_id,
                    details=details,
                )
            )
            return cred
        request = engine.MatchRequest(mode=OperationMode.IDENTIFY)
        result = self._match([cred], presented, request, window=self.policy.atc_window, first_use=True)
        if result.match is None:
            self._must(
                tx.update_activation(
                    dataclasses.replace(rec, attempts=rec.attempts + 1), expected_attempts=rec.attempts
                )
            )
            tx.append_audit(
                self._entry(
                    event="enroll",
                    outcome="reject",
                    reason="wrong-first-code",
                    duration_us=self._us(t0),
                    mode=OperationMode.IDENTIFY.value,
                )
            )
            return None
        atc = result.match.atc
        cred = dataclasses.replace(cred, state=transition(cred.state, Action.ACTIVATE), last_atc=atc)
        self._insert_new(tx, cred)
        self._must(
            tx.update_activation(dataclasses.replace(rec, used_at=now), expected_attempts=rec.attempts)
        )
        acc = Acceptance(
            credential_id=cred.credential_id,
            atc=atc,
            mode=OperationMode.IDENTIFY,
            request_id=rid or f"enroll-{cred.credential_id}",
            accepted_at=now,
        )
        self._must(tx.insert_acceptance(acc))
        if rid is not None:
            self._must(
                tx.insert_request(
                    RequestRecord(
                        request_id=rid,
                        outcome=Outcome.ACCEPT,
                        recorded_at=now,
                        acceptance=acc,
                        method="enroll",
                        target=rec.code_digest.hex(),
                        fingerprint=fingerprint,
                    )
                )
            )
        tx.append_audit(
            self._entry(
                event="enroll",
                outcome="accept",
                reason="activated",
                request_id=acc.request_id,
                credential_id=cred.credential_id,
                atc=atc,
                mode=OperationMode.IDENTIFY.value,
                duration_us=self._us(t0),
                details=details,
            )
        )
        return cred

    def _insert_new(self, tx: StoreTransaction, cred: Credential) -> None:
        """Insert a new credential; the store refuses a second live credential for one card
        (a unique index), which a concurrent enrolment of the same card runs into."""
        if tx.insert_credential(cred) != 1:
            raise ValidationError(
                "card: this PAN and PSN are already enrolled (revoke or replace that credential)"
            )

    def _refuse_duplicate(self, tx: StoreTransaction, pan_token: str, psn: str, *, ignore: str = "") -> None:
        """One card (PAN + PSN) is bound to at most one live credential: two would let the same
        code be accepted once per credential."""
        for other in tx.list_credentials(pan_token=pan_token, states=ACTIVE_STATES):
            if other.psn == psn and other.credential_id != ignore:
                raise ValidationError(
                    "card: this PAN and PSN are already enrolled (revoke or replace that credential)"
                )

    def _check_profile(self, profile: CredentialProfile) -> None:
        if not profile.iad_variants:
            raise ValidationError("profile.iad_variants: expected at least one IAD")
        if profile.display_digits != self.policy.display_digits:
            raise ConfigError("profile.display_digits: must equal the policy's display_digits")
        layout = engine.code_layout(profile.ipb, profile.psn_in_data)
        if (1 << layout.total_bits) - 1 >= 10**profile.display_digits:
            raise ConfigError("profile.ipb: selects more bits than the display can show")
        shortest = (1 if profile.psn_in_data else 0) + 11 + min(len(v) for v in profile.iad_variants)
        if len(profile.ipb) > shortest:
            raise ConfigError("profile.ipb: longer than the card's data string")

    def activate(self, credential_id: str, code: str, *, request_id: str) -> Acceptance:
        """``pending → active`` with a first valid Identify code (V32)."""
        return self._verify(
            _ident("credential_id", credential_id),
            self._parse(code),
            _request_id(request_id),
            activating=True,
        )

    def admin_activate(self, credential_id: str, *, acting_user: str | None = None) -> Credential:
        """``pending → active`` by an administrator act (V32)."""
        return self._lifecycle(credential_id, Action.ACTIVATE, power=Power.ACTIVATE, acting_user=acting_user)

    # -- credentials -------------------------------------------------------------------------------
    def get_credential(self, credential_id: str) -> Credential | None:
        """One credential, or ``None``."""
        with self._tx() as tx:
            return tx.get_credential(_ident("credential_id", credential_id))

    def list_credentials(self, user_id: str, *, acting_user: str | None = None) -> list[Credential]:
        """A user's credentials (an administrator of the same account, or the bank)."""
        uid = _ident("user_id", user_id)
        with self._tx() as tx:
            user = tx.get_user(uid)
            if user is None:
                raise ValidationError(f"user_id: no user {uid!r}")
            self._authorize(tx, acting_user, user.customer_id, Power.LIST)
            return tx.list_credentials(user_id=uid)

    def _lifecycle(
        self,
        credential_id: str,
        action: Action | None,
        *,
        power: Power,
        acting_user: str | None = None,
        reason: str = "",
        changes: Mapping[str, Any] | None = None,
    ) -> Credential:
        cid = _ident("credential_id", credential_id)
        if reason:
            _text("reason", reason)
        with self._tx() as tx:
            cred = tx.lock_credential(cid)
            if cred is None:
                raise ValidationError(f"credential_id: no credential {cid!r}")
            self._authorize(tx, acting_user, cred.customer_id, power)
            new_state = cred.state if action is None else transition(cred.state, action)
            new = dataclasses.replace(cred, state=new_state, version=cred.version + 1, **dict(changes or {}))
            self._must(tx.update_credential(new, expected_version=cred.version))
            tx.append_audit(
                self._entry(
                    event="lifecycle",
                    outcome="ok",
                    reason=(action.value if action else "update") + (f": {reason}" if reason else ""),
                    credential_id=cid,
                    details={"from": cred.state.value, "to": new_state.value},
                )
            )
            return new

    def suspend(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """``active → suspended`` (administrator)."""
        return self._lifecycle(
            credential_id, Action.SUSPEND, power=Power.SUSPEND, acting_user=acting_user, reason=reason
        )

    def resume(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """``suspended → active`` (administrator)."""
        return self._lifecycle(
            credential_id, Action.RESUME, power=Power.RESUME, acting_user=acting_user, reason=reason
        )

    def revoke(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """Terminal ``revoked`` (RTS Art. 27)."""
        return self._lifecycle(
            credential_id, Action.REVOKE, power=Power.REVOKE, acting_user=acting_user, reason=reason
        )

    def lock(self, credential_id: str, *, seconds: int | None = None, reason: str = "") -> Credential:
        """Temporarily lock a credential (``locked_until`` = now + ``seconds``; default
        ``lock_duration_s``). The state stays ``active``."""
        secs = self.policy.lock_duration_s if seconds is None else _seconds("seconds", seconds, 10**8)
        cid = _ident("credential_id", credential_id)
        with self._tx() as tx:
            cred = tx.lock_credential(cid)
            if cred is None:
                raise ValidationError(f"credential_id: no credential {cid!r}")
            new = dataclasses.replace(
                cred, locked_until=tx.now() + timedelta(seconds=secs), version=cred.version + 1
            )
            self._must(tx.update_credential(new, expected_version=cred.version))
            tx.append_audit(self._entry(event="lifecycle", outcome="ok", reason="lock", credential_id=cid))
            return new

    def unlock(self, credential_id: str, *, acting_user: str | None = None, reason: str = "") -> Credential:
        """Clear a temporary lock and the failure counters; a ``blocked`` credential becomes
        ``active`` again (the administrator path of V31)."""
        cid = _ident("credential_id", credential_id)
        with self._tx() as tx:
            cred = tx.get_credential(cid)
        if cred is None:
            raise ValidationError(f"credential_id: no credential {cid!r}")
        action = Action.UNBLOCK if cred.state is CredentialState.BLOCKED else None
        return self._lifecycle(
            cid,
            action,
            power=Power.UNLOCK,
            acting_user=acting_user,
            reason=reason or "unlock",
            changes={
                "locked_until": None,
                "fail_count": 0,
                "lock_escalations": 0,
                "escalation_started_at": None,
            },
        )

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
        if replacement_psn is None:
            self._lifecycle(
                credential_id, Action.REPORT_LOST, power=Power.REPORT_LOST, acting_user=acting_user
            )
            return None
        return self._replace(
            credential_id,
            action=Action.REPLACE,
            pan=replacement_pan,
            psn=replacement_psn,
            issuer_key_id=issuer_key_id,
            derivation=derivation,
            profile=profile,
            acting_user=acting_user,
            reason="lost",
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
        return self._replace(
            credential_id,
            action=Action.REPLACE,
            pan=pan,
            psn=psn,
            issuer_key_id=issuer_key_id,
            derivation=derivation,
            profile=profile,
            acting_user=acting_user,
            reason="reissue",
        )

    def _replace(
        self,
        credential_id: str,
        *,
        action: Action,
        pan: str | None,
        psn: str,
        issuer_key_id: str | None,
        derivation: str,
        profile: CredentialProfile | None,
        acting_user: str | None,
        reason: str,
    ) -> Credential:
        cid = _ident("credential_id", credential_id)
        if pan is None or issuer_key_id is None:
            raise ValidationError("pan, issuer_key_id: required to create a replacement credential")
        _digits("pan", pan, 12, 19)
        _digits("psn", psn, 2, 2)
        if profile is not None:
            self._check_profile(profile)
            self._check_bound(profile)
        with _provider_failures():
            keys = self._provider.register_card(
                issuer_key_id=issuer_key_id, pan=pan, psn=psn, derivation=derivation
            )
        with self._tx() as tx:
            old = tx.lock_credential(cid)
            if old is None:
                raise ValidationError(f"credential_id: no credential {cid!r}")
            power = Power.REPORT_LOST if reason == "lost" else Power.REPLACE
            self._authorize(tx, acting_user, old.customer_id, power)
            self._refuse_duplicate(tx, keys.pan_token, psn, ignore=cid)
            new_id = _CRED_PREFIX + secrets.token_hex(8)
            now = tx.now()
            replacement = Credential(
                credential_id=new_id,
                user_id=old.user_id,
                customer_id=old.customer_id,
                state=CredentialState.PENDING,
                key_ref=keys.key_ref,
                pan_token=keys.pan_token,
                pan_last4=keys.pan_last4,
                psn=psn,
                profile=profile or old.profile,
                created_at=now,
                last_atc=tx.card_floor(keys.pan_token, psn),
                max_fail=self.policy.max_fail,
                replaces=cid,
                label=old.label,
            )
            retired = dataclasses.replace(
                old, state=transition(old.state, action), replaced_by=new_id, version=old.version + 1
            )
            self._must(tx.update_credential(retired, expected_version=old.version))
            self._insert_new(tx, replacement)
            tx.append_audit(
                self._entry(
                    event="lifecycle",
                    outcome="ok",
                    reason=f"{action.value}: {reason}",
                    credential_id=cid,
                    details={"from": old.state.value, "to": retired.state.value, "replacement": new_id},
                )
            )
            return replacement

    # -- operations --------------------------------------------------------------------------------
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
        from capsim.cap import canonical_challenge, currency_numeric, parse_amount, validate_tds_fields
        from capsim.verifier.separation import check_operation

        cid = _ident("credential_id", credential_id)
        try:
            op_mode = OperationMode(mode)
        except ValueError:
            raise ValidationError("mode: expected identify, respond, sign or tds") from None
        ttl = self.policy.operation_ttl_s if ttl_s is None else _seconds("ttl_s", ttl_s, 10**7)
        if self.policy.psd2 and ttl > 300:
            raise ConfigError("ttl_s: the PSD2 profile allows at most 300 s")
        cur = None if currency is None else currency_numeric(currency)
        amt = None if amount is None else parse_amount(amount, currency)
        if payee is not None:
            _text("payee", payee)
        items = tuple(batch or ())
        for item in items:
            if not isinstance(item, BatchItem):
                raise ValidationError("batch: expected BatchItem values")
            _text("batch.payee", item.payee)
            parse_amount(item.amount_minor)
        if items:
            total = sum(i.amount_minor for i in items)
            if amt is None:
                amt = parse_amount(total)
            elif amt != total:
                raise ValidationError("amount: must equal the batch total")
        tds: tuple[str, ...] = ()
        if op_mode is OperationMode.TDS:
            if fields is None:
                raise ValidationError("fields: tds needs 1 to 10 fields")
            tds = validate_tds_fields(fields)
        elif fields is not None:
            raise ValidationError("fields: only tds operations take fields")
        if op_mode in (OperationMode.IDENTIFY, OperationMode.RESPOND) and (
            amt is not None or cur is not None or items
        ):
            raise ValidationError(f"amount/currency: {op_mode.value} operations take no amount")
        if reference is not None and op_mode is not OperationMode.SIGN:
            raise ValidationError("reference: only sign operations take a caller-supplied reference")
        ref = None if reference is None else canonical_challenge(reference)
        if not isinstance(payment, bool):
            raise ValidationError("payment: expected a bool")
        with self._tx() as tx:
            cred = tx.lock_credential(cid)
            if cred is None or cred.state is not CredentialState.ACTIVE:
                raise ValidationError(f"credential_id: no active credential {cid!r}")
            self._check_payment(
                cred.profile, mode=op_mode, payment=payment, amount=amt, currency=cur, payee=payee, fields=tds
            )
            iaf0 = cred.profile.iaf[0] if cred.profile.iaf else 0
            if op_mode is OperationMode.SIGN and iaf0 & 0x80:
                if amt is None:
                    raise ValidationError("amount: this card signs an amount; give one")
                if not iaf0 & 0x20 and cur is None:
                    raise ValidationError("currency: this card signs a currency; give one")
            now = tx.now()
            open_ops = tx.list_open_operations(cid, now)
            taken = {o.challenge for o in open_ops if o.challenge}
            if op_mode in (OperationMode.IDENTIFY, OperationMode.TDS):
                challenge = ""
                # the same cryptogram input as an open operation: the newer one supersedes it,
                # so one code can never satisfy two open operations (V8, V16)
                for o in open_ops:
                    if o.mode is op_mode and o.tds_fields == tds:
                        closed = dataclasses.replace(o, attempts=o.max_attempts)
                        self._must(tx.update_operation(closed, expected_attempts=o.attempts))
                        tx.append_audit(
                            self._entry(
                                event="operation",
                                outcome="ok",
                                reason="superseded",
                                credential_id=cid,
                                operation_id=o.operation_id,
                                mode=o.mode.value,
                            )
                        )
            elif ref is not None:
                challenge = ref
                mine = engine.cdol_data_for(
                    cred.profile,
                    engine.MatchRequest(mode=op_mode, challenge=ref, amount_minor=amt, currency=cur),
                )
                for o in open_ops:
                    if o.challenge == ref and (
                        o.mode is not OperationMode.SIGN
                        or engine.cdol_data_for(cred.profile, decision.match_request(o)) == mine
                    ):
                        raise ValidationError(
                            "reference: another open operation has the same cryptogram input (V16)"
                        )
            else:
                challenge = _fresh_challenge(taken)
            # ___domain separation: no operation that a code of a lesser mode satisfies
            # (capsim.verifier.separation); raised before the transaction commits anything
            check_operation(
                cred.profile,
                engine.MatchRequest(
                    mode=op_mode, challenge=challenge, amount_minor=amt, currency=cur, tds_fields=tds
                ),
            )
            digest = operation_digest(
                mode=op_mode,
                challenge=challenge,
                amount_minor=amt,
                currency=cur,
                payee=payee,
                tds_fields=tds,
                batch=items,
            )
            op = Operation(
                operation_id=_OP_PREFIX + secrets.token_hex(8),
                credential_id=cid,
                mode=op_mode,
                challenge=challenge,
                txn_digest=digest,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
                amount_minor=amt,
                currency=cur,
                payee=payee,
                tds_fields=tds,
                batch=items,
                reference_supplied=ref is not None,
                payment=payment,
                max_attempts=self.policy.max_attempts_per_operation,
            )
            if tx.insert_operation(op) != 1:
                raise _ConflictError
            tx.append_audit(
                self._entry(
                    event="operation",
                    outcome="ok",
                    credential_id=cid,
                    operation_id=op.operation_id,
                    mode=op_mode.value,
                    txn_digest=digest,
                )
            )
            return op

    def _check_payment(
        self,
        profile: CredentialProfile,
        *,
        mode: OperationMode,
        payment: bool,
        amount: int | None,
        currency: str | None,
        payee: str | None,
        fields: tuple[str, ...],
    ) -> None:
        """V17: the PSD2 profile's payment rules."""
        if not (self.policy.psd2 and payment):
            return
        iaf0 = profile.iaf[0] if profile.iaf else 0
        if mode is OperationMode.SIGN and iaf0 & 0x80:
            return
        if mode is OperationMode.TDS and amount is not None and payee:
            payee_digits = "".join(c for c in payee if "0" <= c <= "9")[-10:]
            if str(amount) in fields and payee_digits and payee_digits in fields:
                return
        raise ConfigError(
            "payment: the PSD2 profile accepts only SIGN on cards whose IAF signs the amount, "
            "or TDS over the amount and payee digits (RTS Art. 5)"
        )

    def get_operation(self, operation_id: str) -> Operation | None:
        """One operation, or ``None``."""
        with self._tx() as tx:
            return tx.get_operation(_ident("operation_id", operation_id))

    # -- verification ------------------------------------------------------------------------------
    def _parse(self, code: object) -> engine.PresentedCode:
        return engine.parse_code(
            code, digits=self.policy.display_digits, accept_unpadded=self.policy.accept_unpadded
        )

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
        presented = self._parse(code)
        rid = _request_id(request_id)
        if not isinstance(target, str) or len(target) > 64:
            raise ValidationError("target: expected an operation id or a credential id")
        return self._verify(target, presented, rid)

    def _verify(
        self, target: str, presented: engine.PresentedCode, rid: str, *, activating: bool = False
    ) -> Acceptance:
        method = "activate" if activating else "verify"
        acc = self._decide(method, target, [presented], rid)
        if acc is None:
            raise InvalidCode
        return acc

    def _fingerprint(self, method: str, target: str, codes: Sequence[engine.PresentedCode]) -> bytes:
        """A digest of the call that binds a request id to it (never the code itself).

        Keyed with the provider's audit seal key when it has one (an 8-digit code's plain hash
        is reversible by enumeration); ___domain-separated from audit seals by its label."""
        message = b"\x00".join(
            [b"capsim request v1", method.encode(), target.encode(), *(c.text for c in codes)]
        )
        with _provider_failures():
            if self._provider.audit_seal_key_id() is not None:
                return self._provider.audit_seal(message)
        return hashlib.sha256(message).digest()

    def _decide(
        self, method: str, target: str, presented: Sequence[engine.PresentedCode], rid: str
    ) -> Acceptance | None:
        """Read, decide (:mod:`capsim.verifier.decision`), write: one transaction (module
        docstring, step 2). Returns the acceptance, ``None`` for the uniform reject."""
        t0 = self._monotonic()
        event = _EVENTS[method]
        call = decision.Call(
            method=method,
            target=target,
            request_id=rid,
            fingerprint=self._fingerprint(method, target, presented),
            codes=len(presented),
        )
        # Dummy recomputations (V30) are owed by the transaction but spent after it ends, so the
        # credential row lock is never held for work whose only purpose is uniform timing.
        owed = [0]
        try:
            with self._tx(keep_conflict=True) as tx:
                acc = self._decide_tx(tx, call, presented, t0, owed)
        except _ConflictError:
            self._best_effort_audit(rid, target, "conflict", Outcome.REJECT, t0, event=event)
            raise InvalidCode from None
        except RequestConflict:
            raise  # nothing written: the id belongs to another call
        except TemporaryFailure:
            self._best_effort_audit(rid, target, "temporary-failure", Outcome.TEMPORARY, t0, event=event)
            raise
        except (ValidationError, ConfigError):
            # a corrupt stored profile or key reference: fail closed
            self._best_effort_audit(rid, target, "internal-error", Outcome.TEMPORARY, t0, event=event)
            raise TemporaryFailure("verifier could not evaluate the code") from None
        finally:
            self._dummy(presented[0], owed[0])
        return acc

    def _decide_tx(
        self,
        tx: StoreTransaction,
        call: decision.Call,
        presented: Sequence[engine.PresentedCode],
        t0: float,
        owed: list[int],
    ) -> Acceptance | None:
        is_op = call.target.startswith(_OP_PREFIX) and call.method == "verify"
        snap = tx.read_verification(
            operation_id=call.target if is_op else None,
            credential_id=None if is_op else call.target,
            request_id=call.request_id,
            siblings=call.method == "verify" and self.policy.try_sibling_cards,
        )
        scr = decision.screen(call, snap, self.policy, dummy_key_ref=self._provider.dummy_key_ref())
        if scr.conflict:
            raise RequestConflict(call.request_id)
        op = snap.operation if is_op else None
        event = _EVENTS[call.method]

        def entry(
            outcome: Outcome, reason: str, *, atc: int | None = None, cid: str | None = None
        ) -> AuditEntry:
            return self._entry(
                event=event,
                outcome=outcome.value,
                reason=reason,
                request_id=call.request_id,
                credential_id=cid,
                operation_id=op.operation_id if op is not None else (call.target if is_op else None),
                mode=(op.mode.value if op else OperationMode.IDENTIFY.value),
                atc=atc,
                txn_digest=op.txn_digest if op else b"",
                duration_us=self._us(t0),
            )

        if scr.replay is not None:  # V24: the recorded outcome, no counter touched
            prev = scr.replay
            tx.append_audit(
                entry(
                    prev.outcome,
                    "repeated-request",
                    atc=prev.acceptance.atc if prev.acceptance else None,
                    cid=prev.acceptance.credential_id if prev.acceptance else None,
                )
            )
            owed[0] = self._dummy_size
            return prev.acceptance
        evaluations = 0
        results = []
        for probe in scr.probes:
            result = self._run_probe(probe, presented[probe.code_index], decisive=not scr.refusal)
            evaluations += result.evaluations
            results.append(result)
        # pad to a fixed evaluation count: whether the code's public bits found candidates, or
        # the credential exists or may be used at all, does not show in the time taken (V30)
        owed[0] = self._dummy_size - evaluations
        d = decision.settle(call, snap, scr, results, self.policy)
        for cred in d.newly_blocked:
            self._before_block(cred)
        ok, _record = tx.write_verification(
            d.changes, entry(d.outcome, d.reason, atc=d.atc, cid=d.credential_id)
        )
        if not ok:
            raise _ConflictError
        return d.acceptance

    def _run_probe(
        self, probe: decision.Probe, code: engine.PresentedCode, *, decisive: bool
    ) -> engine.MatchResult:
        """Run one probe. A refused call runs the same probes (the same provider calls as a
        wrong code, V30) but its results decide nothing: they count as dummy evaluations."""
        with _provider_failures():
            result = engine.match(probe.cards, code, probe.request, self._provider, window=probe.window)
        if decisive:
            self._count(calls=1, evals=result.evaluations)
        else:
            self._count(dummies=result.evaluations)
        return result

    def _before_block(self, cred: Credential) -> None:
        if self._hook is None:
            return
        try:
            self._hook(cred)
        except Exception as exc:
            _log.warning("on_before_permanent_block hook failed (%s)", type(exc).__name__)

    def _best_effort_audit(
        self, rid: str, target: str, reason: str, outcome: Outcome, t0: float, *, event: str = "verify"
    ) -> None:
        """V22: the audit of a failed transaction, written in a separate one, best effort."""
        try:
            timeout = self.policy.lock_timeout_s
            seal_key = getattr(self._provider, "audit_seal_key_id", None)
            if seal_key is not None and seal_key() is not None:
                opened = self._store.transaction(lock_timeout=timeout, sealer=self._provider)
            else:
                opened = self._store.transaction(lock_timeout=timeout)
            with opened as tx:
                tx.append_audit(
                    self._entry(
                        event=event,
                        outcome=outcome.value,
                        reason=reason,
                        request_id=rid,
                        credential_id=target if target.startswith(_CRED_PREFIX) else None,
                        operation_id=target if target.startswith(_OP_PREFIX) else None,
                        duration_us=self._us(t0),
                    )
                )
        except Exception as exc:
            _log.warning("audit of a failed verification not written (%s)", type(exc).__name__)

    def _us(self, t0: float) -> int:
        return max(0, int((self._monotonic() - t0) * 1_000_000))

    def _must(self, rows: int) -> None:
        if rows != 1:
            raise _ConflictError

    def _match(
        self,
        creds: Sequence[Credential],
        presented: engine.PresentedCode,
        request: engine.MatchRequest,
        *,
        window: int,
        first_use: bool = False,
    ) -> engine.MatchResult:
        steady = self.policy.history_variants
        cards = [
            engine.CardCandidate(
                credential_id=c.credential_id,
                key_ref=c.key_ref,
                psn=c.psn,
                profile=c.profile,
                last_atc=c.last_atc,
                variants=max(steady, 2) if first_use or c.last_atc < 0 else steady,
            )
            for c in creds
        ]
        with _provider_failures():
            result = engine.match(cards, presented, request, self._provider, window=window)
        self._count(calls=1, evals=result.evaluations)
        return result

    # -- resync and floor --------------------------------------------------------------------------
    def resync(self, credential_id: str, codes: Sequence[str], *, request_id: str) -> int:
        """Resynchronise after the ATC ran beyond the window (V34).

        ``codes`` are ``resync_count`` (2, or 3) Identify codes with consecutive ATCs
        a, a+1[, a+2], all above ``last_atc`` and within ``sync_window``; presenting them in
        one call keeps them within ``resync_max_interval_s`` of each other. On success
        ``last_atc`` becomes the highest ATC used and is returned; a failure is counted and
        raises :class:`InvalidCode`. ``last_atc`` never decreases.
        """
        cid = _ident("credential_id", credential_id)
        rid = _request_id(request_id)
        if isinstance(codes, str) or len(codes) != self.policy.resync_count:
            raise ValidationError(f"codes: expected {self.policy.resync_count} consecutive Identify codes")
        presented = [self._parse(c) for c in codes]
        acc = self._decide("resync", cid, presented, rid)
        if acc is None:
            raise InvalidCode
        return acc.atc

    def advance_floor(self, credential_id: str, atc: int | bytes, *, request_id: str | None = None) -> int:
        """Raise ``last_atc`` to ``atc`` if it is lower (V36): monotone, idempotent, never a
        failure, safe against a concurrent :meth:`verify` (it takes the same row lock).
        Returns the resulting ``last_atc``."""
        cid = _ident("credential_id", credential_id)
        value = _atc("atc", atc)
        rid = None if request_id is None else _request_id(request_id)
        with self._tx() as tx:
            cred = tx.lock_credential(cid)
            if cred is None:
                raise ValidationError(f"credential_id: no credential {cid!r}")
            if value > cred.last_atc:
                new = dataclasses.replace(cred, last_atc=value, version=cred.version + 1)
                self._must(tx.update_credential(new, expected_version=cred.version))
                result = value
            else:
                result = cred.last_atc
            tx.append_audit(
                self._entry(
                    event="advance_floor",
                    outcome="ok",
                    reason="raised" if result == value and value > cred.last_atc else "unchanged",
                    request_id=rid,
                    credential_id=cid,
                    atc=value,
                )
            )
            return result

    # -- issuer scripts ----------------------------------------------------------------------------
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
        cid = _ident("credential_id", credential_id)
        if not isinstance(arqc, bytes) or len(arqc) != 8:
            raise ValidationError("arqc: expected the 8-byte ARQC of the card's transaction")
        atc_b = _atc("atc", atc).to_bytes(2, "big")
        for name, pin in (("new_pin", new_pin), ("current_pin", current_pin)):
            if pin is not None:
                _digits(name, pin, 4, 12)
        with self._tx() as tx:
            cred = tx.lock_credential(cid)
            if cred is None or cred.state in (
                CredentialState.REVOKED,
                CredentialState.REPLACED,
                CredentialState.LOST,
            ):
                raise ValidationError(f"credential_id: no usable credential {cid!r}")
            self._authorize(tx, acting_user, cred.customer_id, Power.PIN_SCRIPT)
            with _provider_failures():
                script = self._provider.build_pin_change(
                    cred.key_ref,
                    cvn=cred.profile.cvn,
                    new_pin=new_pin,
                    current_pin=current_pin,
                    atc=atc_b,
                    arqc=arqc,
                )
            script_atc = int.from_bytes(atc_b, "big")
            marked = dataclasses.replace(cred, script_atc=script_atc, version=cred.version + 1)
            self._must(tx.update_credential(marked, expected_version=cred.version))
            tx.append_audit(
                self._entry(
                    event="issuer-script",
                    outcome="ok",
                    reason="pin-unblock" if new_pin is None else "pin-change",
                    credential_id=cid,
                    atc=int.from_bytes(atc_b, "big"),
                )
            )
            return script

    # -- audit -------------------------------------------------------------------------------------
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
        sealer = self._provider if self._provider.audit_seal_key_id() is not None else None
        try:
            if sealer is not None and sealed_from is None:
                with self._store.transaction(lock_timeout=self.policy.lock_timeout_s) as tx:
                    raw = tx.get_setting(_SEAL_SETTING)
                recorded = (
                    None if raw is None else loads_limited(raw, what="audit seal setting", error=ConfigError)
                )
                sealed_from = int(recorded["sealed_from"]) if isinstance(recorded, dict) else None
            return check_chain(self._store.audit_records(), sealer=sealer, sealed_from=sealed_from, tip=tip)
        except (ValidationError, ConfigError):
            raise
        except Exception:
            raise TemporaryFailure("verifier store unavailable") from None


def _fresh_challenge(taken: set[str]) -> str:
    """8 random digits from :mod:`secrets`, never all zeros, unique among open operations (V9, V16)."""
    while True:
        challenge = f"{secrets.randbelow(10**8):08d}"
        if challenge != "00000000" and challenge not in taken:
            return challenge
