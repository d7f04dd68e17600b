"""The credential lifecycle: suspend, resume, revoke, lock, unlock, lost, replace, activate.

Theory of operation (verifier.md V31–V33; docs/verifier.md "Lifecycle")
-----------------------------------------------------------------------
1. **The table decides.** A state change is one :class:`~capsim.verifier.model.Action`
   applied through :func:`~capsim.verifier.model.transition`; a pair not in
   :data:`~capsim.verifier.model.TRANSITIONS` raises :class:`~capsim.errors.ValidationError`
   and changes nothing.
2. **Who may.** Each act names its :class:`~capsim.verifier.authority.Power` and is checked
   against ``acting_user`` (``None``: the bank's operator) after the credential row is locked.
3. **One row, one compare-and-swap.** :func:`change` locks the credential row, writes the new
   state with the version check and appends one ``lifecycle`` audit record (from, to, reason)
   in the same transaction. A temporary lock (``locked_until``) is not a state: :func:`lock`
   sets it; :func:`unlock` clears it with the failure counters and unblocks a ``blocked``
   credential (the administrator path of V31).
4. **Replacement in one transaction** (V33): :func:`report_lost` with a replacement PSN and
   :func:`replace` retire the old credential and create the new one (same user, new PSN,
   ``last_atc`` at the card's floor, ``pending``) together; the new card's keys are registered
   with the provider before the transaction, and one card is bound to at most one live
   credential (:func:`capsim.verifier.enrolment.refuse_duplicate`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from capsim._validate import digits as _digits
from capsim.errors import ValidationError
from capsim.verifier import checks
from capsim.verifier.authority import Power
from capsim.verifier.core import CRED_PREFIX, ServiceCore, provider_failures
from capsim.verifier.enrolment import check_profile, insert_new, refuse_duplicate
from capsim.verifier.model import Action, Credential, CredentialProfile, CredentialState, transition

__all__ = [
    "admin_activate",
    "change",
    "get_credential",
    "list_credentials",
    "lock",
    "replace",
    "report_lost",
    "resume",
    "revoke",
    "suspend",
    "unlock",
]


def get_credential(core: ServiceCore, credential_id: str) -> Credential | None:
    """One credential, or ``None``."""
    with core.tx() as tx:
        return tx.get_credential(checks.ident("credential_id", credential_id))


def list_credentials(core: ServiceCore, user_id: str, *, acting_user: str | None) -> list[Credential]:
    """A user's credentials (an administrator of the same account, or the bank)."""
    uid = checks.ident("user_id", user_id)
    with core.tx() as tx:
        user = tx.get_user(uid)
        # listed before the user is checked: the same statements for a user that does not exist
        # (a front such as the privacyIDEA shim must not tell which user names exist, V30)
        listed = tx.list_credentials(user_id=uid)
        if user is None:
            raise ValidationError(f"user_id: no user {uid!r}")
        core.authorize(tx, acting_user, user.customer_id, Power.LIST)
        return listed


def change(
    core: ServiceCore,
    credential_id: str,
    action: Action | None,
    *,
    power: Power,
    acting_user: str | None = None,
    reason: str = "",
    changes: Mapping[str, Any] | None = None,
) -> Credential:
    """Apply ``action`` (``None``: no state change) and ``changes`` to one credential (rule 3)."""
    cid = checks.ident("credential_id", credential_id)
    if reason:
        checks.text("reason", reason)
    with core.tx() as tx:
        cred = tx.lock_credential(cid)
        if cred is None:
            raise ValidationError(f"credential_id: no credential {cid!r}")
        core.authorize(tx, acting_user, cred.customer_id, power)
        new_state = cred.state if action is None else transition(cred.state, action)
        new = dataclasses.replace(cred, state=new_state, version=cred.version + 1, **dict(changes or {}))
        core.must(tx.update_credential(new, expected_version=cred.version))
        tx.append_audit(
            core.entry(
                event="lifecycle",
                outcome="ok",
                reason=(action.value if action else "update") + (f": {reason}" if reason else ""),
                credential_id=cid,
                details={"from": cred.state.value, "to": new_state.value},
            )
        )
        return new


def suspend(core: ServiceCore, credential_id: str, *, acting_user: str | None, reason: str) -> Credential:
    """``active → suspended``."""
    return change(
        core, credential_id, Action.SUSPEND, power=Power.SUSPEND, acting_user=acting_user, reason=reason
    )


def resume(core: ServiceCore, credential_id: str, *, acting_user: str | None, reason: str) -> Credential:
    """``suspended → active``."""
    return change(
        core, credential_id, Action.RESUME, power=Power.RESUME, acting_user=acting_user, reason=reason
    )


def revoke(core: ServiceCore, credential_id: str, *, acting_user: str | None, reason: str) -> Credential:
    """Terminal ``revoked``."""
    return change(
        core, credential_id, Action.REVOKE, power=Power.REVOKE, acting_user=acting_user, reason=reason
    )


def admin_activate(core: ServiceCore, credential_id: str, *, acting_user: str | None) -> Credential:
    """``pending → active`` without a first code."""
    return change(core, credential_id, Action.ACTIVATE, power=Power.ACTIVATE, acting_user=acting_user)


def lock(core: ServiceCore, credential_id: str, *, seconds: int | None, reason: str) -> Credential:
    """Set ``locked_until`` = now + ``seconds`` (default ``lock_duration_s``); the state stays."""
    secs = core.policy.lock_duration_s if seconds is None else checks.seconds("seconds", seconds, 10**8)
    cid = checks.ident("credential_id", credential_id)
    with core.tx() as tx:
        cred = tx.lock_credential(cid)
        if cred is None:
            raise ValidationError(f"credential_id: no credential {cid!r}")
        new = dataclasses.replace(
            cred, locked_until=tx.now() + timedelta(seconds=secs), version=cred.version + 1
        )
        core.must(tx.update_credential(new, expected_version=cred.version))
        tx.append_audit(core.entry(event="lifecycle", outcome="ok", reason="lock", credential_id=cid))
        return new


def unlock(core: ServiceCore, credential_id: str, *, acting_user: str | None, reason: str) -> Credential:
    """Clear the temporary lock and the failure counters; ``blocked`` becomes ``active``."""
    cid = checks.ident("credential_id", credential_id)
    with core.tx() as tx:
        cred = tx.get_credential(cid)
    if cred is None:
        raise ValidationError(f"credential_id: no credential {cid!r}")
    action = Action.UNBLOCK if cred.state is CredentialState.BLOCKED else None
    return change(
        core,
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
    core: ServiceCore,
    credential_id: str,
    *,
    replacement_pan: str | None,
    replacement_psn: str | None,
    issuer_key_id: str | None,
    derivation: str,
    profile: CredentialProfile | None,
    acting_user: str | None,
) -> Credential | None:
    """The card is lost: retire it, with its replacement when ``replacement_psn`` is given (rule 4)."""
    if replacement_psn is None:
        change(core, credential_id, Action.REPORT_LOST, power=Power.REPORT_LOST, acting_user=acting_user)
        return None
    return _replace(
        core,
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
    core: ServiceCore,
    credential_id: str,
    *,
    pan: str,
    psn: str,
    issuer_key_id: str,
    derivation: str,
    profile: CredentialProfile | None,
    acting_user: str | None,
) -> Credential:
    """Reissue: the old credential ``replaced``, the new one ``pending`` (rule 4)."""
    return _replace(
        core,
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
    core: ServiceCore,
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
    cid = checks.ident("credential_id", credential_id)
    if pan is None or issuer_key_id is None:
        raise ValidationError("pan, issuer_key_id: required to create a replacement credential")
    _digits("pan", pan, 12, 19)
    _digits("psn", psn, 2, 2)
    if profile is not None:
        check_profile(core, profile)
        core.check_bound(profile)
    with provider_failures():
        keys = core.provider.register_card(
            issuer_key_id=issuer_key_id, pan=pan, psn=psn, derivation=derivation
        )
    with core.tx() as tx:
        old = tx.lock_credential(cid)
        if old is None:
            raise ValidationError(f"credential_id: no credential {cid!r}")
        power = Power.REPORT_LOST if reason == "lost" else Power.REPLACE
        core.authorize(tx, acting_user, old.customer_id, power)
        refuse_duplicate(tx, keys.pan_token, psn, ignore=cid)
        new_id = CRED_PREFIX + secrets.token_hex(8)
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
            max_fail=core.policy.max_fail,
            replaces=cid,
            label=old.label,
        )
        retired = dataclasses.replace(
            old, state=transition(old.state, action), replaced_by=new_id, version=old.version + 1
        )
        core.must(tx.update_credential(retired, expected_version=old.version))
        insert_new(tx, replacement)
        tx.append_audit(
            core.entry(
                event="lifecycle",
                outcome="ok",
                reason=f"{action.value}: {reason}",
                credential_id=cid,
                details={"from": old.state.value, "to": retired.state.value, "replacement": new_id},
            )
        )
        return replacement
