"""Users, activation codes and enrolment: binding a card to a user of a customer account.

Theory of operation (verifier.md V5, V10, V32; docs/verifier.md "Users and enrolment")
--------------------------------------------------------------------------------------
1. **Users.** The bank's operator adds users to any customer account (the first user of a new
   account is its administrator); a customer administrator adds secondary users to its own
   account only (:mod:`capsim.verifier.authority`).
2. **Activation codes** are 16 characters from :mod:`secrets`, shown once, stored as a digest
   (:func:`capsim.verifier.checks.activation_digest`), single use, valid ``activation_ttl_s``;
   at most :data:`MAX_ACTIVATION_ATTEMPTS` wrong first codes use one up.
3. **Enrolment** checks the profile (display, IPB, the false-accept ceiling) and hands the PAN
   to the provider only, before the transaction. In the transaction it replays a recorded
   ``request_id``, checks the activation code, then locks the user row (the parent lock of its
   enrolments, so the per-user limit holds under concurrency), refuses a second live
   credential for the same card, and creates the credential with ``last_atc`` at the card's
   replay floor (never below an ATC the card already used here).
4. **The first code.** Without one the credential stays ``pending``. With one, the code is
   matched (Identify, ``atc_window``, at least two IAD variants: a card's first code differs);
   a wrong one creates nothing, uses up one attempt of the activation code and raises
   :class:`~capsim.errors.InvalidCode`; a right one creates the credential ``active`` with its
   ledger row (and request row) in the same transaction.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

from capsim._validate import digits as _digits
from capsim.errors import ConfigError, InvalidCode, RequestConflict, TemporaryFailure, ValidationError
from capsim.iad import IadProfile, arqc_iad_variants
from capsim.verifier import checks, decision, engine
from capsim.verifier.authority import Power
from capsim.verifier.core import CRED_PREFIX, ServiceCore, provider_failures
from capsim.verifier.model import (
    ACTIVE_STATES,
    Acceptance,
    Action,
    ActivationCode,
    ActivationRecord,
    Credential,
    CredentialProfile,
    CredentialState,
    CustomerAccount,
    OperationMode,
    Outcome,
    RequestRecord,
    User,
    UserRole,
    transition,
)
from capsim.verifier.policy import BoundReport
from capsim.verifier.store import StoreTransaction
from capsim.verifier.verification import request_fingerprint

__all__ = [
    "MAX_ACTIVATION_ATTEMPTS",
    "add_user",
    "check_profile",
    "credential_profile_from_card",
    "enroll",
    "enroll_card",
    "get_user",
    "insert_new",
    "issue_activation_code",
    "list_users",
    "refuse_duplicate",
]

#: Wrong first codes an activation code survives.
MAX_ACTIVATION_ATTEMPTS: Final = 5


def credential_profile_from_card(
    card_profile: Any, *, reader_profile: str | None = None
) -> CredentialProfile:
    """The :class:`CredentialProfile` of an emulated card's personalisation (no key is copied).

    ``card_profile`` is a :class:`capsim.cards.CardProfile` (a card file's profile, as a
    card-management system would hand it over). The reader profile defaults to the one the
    card template names (its ``reader_profile``), else to the one the card's AID selects
    (cap-protocol.md §3); the IAD variants are the card's predicted ARQC
    IADs for each history state, most likely first (:func:`capsim.iad.arqc_iad_variants`, V10).
    """
    from capsim.profiles import default_reader_profile, get_reader_profile

    # duck-typed: the verifier does not import the card emulator, only the pure IAD model
    needed = ("aid", "cdol1", "aip", "ipb", "iaf", "cvn", "key_derivation")
    if not isinstance(card_profile, IadProfile) or not all(hasattr(card_profile, n) for n in needed):
        raise ValidationError("card_profile: expected a capsim.cards.CardProfile")
    variants = arqc_iad_variants(card_profile)
    card: Any = card_profile
    if reader_profile is None:
        reader_profile = getattr(card, "reader_profile", None) or default_reader_profile(card.aid).name
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
# Users (rule 1)


def add_user(
    core: ServiceCore,
    user_id: str,
    *,
    customer_id: str | None,
    admin: bool | None,
    acting_user: str | None,
    name: str,
) -> User:
    """:meth:`Verifier.add_user <capsim.verifier.service.Verifier.add_user>`."""
    uid = checks.ident("user_id", user_id)
    if acting_user is not None:
        checks.ident("acting_user", acting_user)
    if customer_id is not None:
        checks.ident("customer_id", customer_id)
    if name:
        checks.text("name", name)
    with core.tx() as tx:
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
            core.authorize(tx, acting_user, cid, Power.ADD_USER)
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
            core.entry(event="user", outcome="ok", reason="created", details={"user": uid, "role": role})
        )
        return user


def list_users(core: ServiceCore, customer_id: str | None) -> list[User]:
    """Users (of one customer account when given)."""
    with core.tx() as tx:
        return tx.list_users(customer_id)


def get_user(core: ServiceCore, user_id: str) -> User | None:
    """One user, or ``None``."""
    with core.tx() as tx:
        return tx.get_user(checks.ident("user_id", user_id))


# ------------------------------------------------------------------------------------------------
# Activation codes and enrolment (rules 2-4)


def issue_activation_code(
    core: ServiceCore, user_id: str, *, acting_user: str | None, ttl_s: int | None
) -> ActivationCode:
    """:meth:`Verifier.issue_activation_code <capsim.verifier.service.Verifier.issue_activation_code>`."""
    uid = checks.ident("user_id", user_id)
    ttl = core.policy.activation_ttl_s if ttl_s is None else checks.seconds("ttl_s", ttl_s, 30 * 86_400)
    raw = "".join(secrets.choice(checks.ACT_ALPHABET) for _ in range(16))
    shown = "-".join(raw[i : i + 4] for i in range(0, 16, 4))
    with core.tx() as tx:
        user = tx.get_user(uid)
        if user is None or user.disabled:
            raise ValidationError(f"user_id: no active user {uid!r}")
        core.authorize(tx, acting_user, user.customer_id, Power.ISSUE_ACTIVATION)
        now = tx.now()
        record = ActivationRecord(
            code_digest=checks.activation_digest(raw),
            user_id=uid,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        if tx.insert_activation(record) != 1:
            raise TemporaryFailure("activation code collision; retry")
        tx.append_audit(core.entry(event="activation-code", outcome="ok", details={"user": uid}))
        return ActivationCode(code=shown, user_id=uid, expires_at=record.expires_at)


def enroll(
    core: ServiceCore,
    activation_code: str,
    *,
    pan: str,
    psn: str,
    profile: CredentialProfile,
    issuer_key_id: str,
    derivation: str,
    first_code: str | None,
    request_id: str | None,
    atc_floor: int,
    label: str,
) -> Credential:
    """:meth:`Verifier.enroll <capsim.verifier.service.Verifier.enroll>` (rules 3, 4)."""
    cleaned = checks.normalise_activation(activation_code)
    _digits("pan", pan, 12, 19)
    _digits("psn", psn, 2, 2)
    if not isinstance(profile, CredentialProfile):
        raise ValidationError("profile: expected a CredentialProfile")
    check_profile(core, profile)
    presented = None if first_code is None else core.parse(first_code)
    rid = None if request_id is None else checks.request_id(request_id)
    if isinstance(atc_floor, bool) or not isinstance(atc_floor, int) or not -1 <= atc_floor < checks.MAX_ATC:
        raise ValidationError("atc_floor: expected an int -1..65534")
    if label:
        checks.text("label", label)
    with provider_failures():
        keys = core.provider.register_card(
            issuer_key_id=issuer_key_id, pan=pan, psn=psn, derivation=derivation
        )
    report = core.check_bound(profile)
    t0 = core.monotonic()
    digest = checks.activation_digest(cleaned)
    fp = request_fingerprint(core, "enroll", digest.hex(), [] if presented is None else [presented])
    with core.tx() as tx:
        now = tx.now()
        if rid is not None:
            previous = tx.get_request(rid)
            if previous is not None:
                if not previous.binds(method="enroll", target=digest.hex(), fingerprint=fp):
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
            tx.append_audit(core.entry(event="enroll", outcome="reject", reason="activation-code"))
            result: Credential | None = None
        else:
            # the user row is the parent lock of its enrolments: the per-user limit holds
            # under concurrency (the one-live-credential-per-card rule is a unique index)
            user = tx.lock_user(rec.user_id)
            if user is None or user.disabled:
                raise ValidationError("activation_code: its user no longer exists")
            refuse_duplicate(tx, keys.pan_token, psn)
            active = tx.list_credentials(user_id=user.user_id, states=ACTIVE_STATES)
            if len(active) >= core.policy.max_active_credentials:
                raise ValidationError(
                    f"user has {len(active)} active credentials; the limit is "
                    f"{core.policy.max_active_credentials}"
                )
            cred = Credential(
                credential_id=CRED_PREFIX + secrets.token_hex(8),
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
                max_fail=core.policy.max_fail,
                label=label,
            )
            result = _enroll_tx(
                core, tx, cred, rec=rec, presented=presented, rid=rid, report=report, t0=t0, fingerprint=fp
            )
    if result is None:
        raise InvalidCode
    return result


def enroll_card(
    core: ServiceCore,
    activation_code: str,
    card_profile: Any,
    *,
    issuer_key_id: str,
    first_code: str | None,
    request_id: str | None,
    reader_profile: str | None,
    label: str,
) -> Credential:
    """:func:`enroll` from a personalised :class:`capsim.cards.CardProfile`."""
    profile = credential_profile_from_card(card_profile, reader_profile=reader_profile)
    return enroll(
        core,
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
    core: ServiceCore,
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
    """Create the credential, pending or (with a matching first code) active (rule 4)."""
    now = tx.now()
    details = {"false_accept_bound": f"{report.probability:.3g}"}
    if presented is None:
        insert_new(tx, cred)
        core.must(tx.update_activation(dataclasses.replace(rec, used_at=now), expected_attempts=rec.attempts))
        tx.append_audit(
            core.entry(
                event="enroll",
                outcome="ok",
                reason="pending",
                credential_id=cred.credential_id,
                details=details,
            )
        )
        return cred
    request = engine.MatchRequest(mode=OperationMode.IDENTIFY)
    result = _first_code_match(core, [cred], presented, request, window=core.policy.atc_window)
    if result.match is None:
        core.must(
            tx.update_activation(
                dataclasses.replace(rec, attempts=rec.attempts + 1), expected_attempts=rec.attempts
            )
        )
        tx.append_audit(
            core.entry(
                event="enroll",
                outcome="reject",
                reason="wrong-first-code",
                duration_us=core.us(t0),
                mode=OperationMode.IDENTIFY.value,
            )
        )
        return None
    atc = result.match.atc
    cred = dataclasses.replace(cred, state=transition(cred.state, Action.ACTIVATE), last_atc=atc)
    insert_new(tx, cred)
    core.must(tx.update_activation(dataclasses.replace(rec, used_at=now), expected_attempts=rec.attempts))
    acc = Acceptance(
        credential_id=cred.credential_id,
        atc=atc,
        mode=OperationMode.IDENTIFY,
        request_id=rid or f"enroll-{cred.credential_id}",
        accepted_at=now,
    )
    core.must(tx.insert_acceptance(acc))
    if rid is not None:
        core.must(
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
        core.entry(
            event="enroll",
            outcome="accept",
            reason="activated",
            request_id=acc.request_id,
            credential_id=cred.credential_id,
            atc=atc,
            mode=OperationMode.IDENTIFY.value,
            duration_us=core.us(t0),
            details=details,
        )
    )
    return cred


def _first_code_match(
    core: ServiceCore,
    creds: Sequence[Credential],
    presented: engine.PresentedCode,
    request: engine.MatchRequest,
    *,
    window: int,
) -> engine.MatchResult:
    """The matcher over a new credential's first code (the variant rule is the decision's)."""
    cards = [decision.candidate(c, core.policy, first_use=True) for c in creds]
    with provider_failures():
        result = engine.match(cards, presented, request, core.provider, window=window)
    core.count(calls=1, evals=result.evaluations)
    return result


# ------------------------------------------------------------------------------------------------
# Rules shared with card replacement (:mod:`capsim.verifier.lifecycle`)


def insert_new(tx: StoreTransaction, cred: Credential) -> None:
    """Insert a new credential; the store refuses a second live credential for one card
    (a unique index), which a concurrent enrolment of the same card runs into."""
    if tx.insert_credential(cred) != 1:
        raise ValidationError(
            "card: this PAN and PSN are already enrolled (revoke or replace that credential)"
        )


def refuse_duplicate(tx: StoreTransaction, pan_token: str, psn: str, *, ignore: str = "") -> None:
    """One card (PAN + PSN) is bound to at most one live credential: two would let the same
    code be accepted once per credential."""
    for other in tx.list_credentials(pan_token=pan_token, states=ACTIVE_STATES):
        if other.psn == psn and other.credential_id != ignore:
            raise ValidationError(
                "card: this PAN and PSN are already enrolled (revoke or replace that credential)"
            )


def check_profile(core: ServiceCore, profile: CredentialProfile) -> None:
    """A profile the policy's display can show and the matcher can use."""
    if not profile.iad_variants:
        raise ValidationError("profile.iad_variants: expected at least one IAD")
    if profile.display_digits != core.policy.display_digits:
        raise ConfigError("profile.display_digits: must equal the policy's display_digits")
    layout = engine.code_layout(profile.ipb, profile.psn_in_data)
    if (1 << layout.total_bits) - 1 >= 10**profile.display_digits:
        raise ConfigError("profile.ipb: selects more bits than the display can show")
    shortest = (1 if profile.psn_in_data else 0) + 11 + min(len(v) for v in profile.iad_variants)
    if len(profile.ipb) > shortest:
        raise ConfigError("profile.ipb: longer than the card's data string")
