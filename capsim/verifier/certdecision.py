"""The decisions of the certificate credential: pure functions over the rows read.

Theory of operation
-------------------
1. **Secrets are keyed hashes.** An organisation's master code and a user's identity number
   are normalised (:func:`normalise_master_code`, :func:`normalise_identity`) and only their
   keyed hash is stored: HMAC-SHA-256 under the key provider's audit seal key over a
   ___domain-separated message naming the organisation (:func:`master_message`,
   :func:`identity_message`; the service applies the key). The same identity number in two
   organisations gives unrelated digests; digests are compared with
   :func:`hmac.compare_digest` only.
2. **Operation data** (PSD2 dynamic linking) is canonical (:func:`operation_details`): a
   payment binds amount (minor units), currency (ISO 4217 numeric) and payee; a beneficiary
   addition binds the payee account and its holder's name. Their SHA-256
   (:func:`details_digest`) and the values themselves are part of the challenge's signed
   message (:attr:`capsim.verifier.certmodel.CertChallenge.message`), so a signature for one
   operation verifies for no other.
3. **Registration** (:func:`screen_registration`) is refused, in this order, for an unknown
   organisation, a wrong master code, a challenge that is unknown, of another purpose or
   organisation, consumed, expired or closed, a certificate that fails validation, a
   signature that does not verify, an identity already registered (new identifier) or not the
   identifier's (supplementary certificate), a disabled user, an administrator role asked
   for by anyone but the organisation's first registrant, and a public key that a live
   certificate already holds (certificates are nominative). Every refusal from the
   challenge's checks on uses up one of its attempts (:func:`counts_against_challenge`).
4. **Authentication** (:func:`screen_authentication`, :func:`settle_authentication`): the
   challenge must be an open operation challenge of that certificate, the certificate live,
   active and not locked, its user enabled, the certificate still valid (chain, dates, CRL).
   Those refusals count nothing. Otherwise the signature decides: a right one consumes the
   challenge and resets the failure counter; a wrong one adds an attempt to the challenge and
   a failure to the certificate (:func:`count_failure`: ``max_fail`` failures lock it for
   ``lock_duration_s``, ``escalate_after`` locks within ``escalation_period_s`` block it).
5. Every refusal reaches the caller as the one uniform reject; the reason goes to the audit.

>>> normalise_identity("1 85 07 75 123 456")
'1850775123456'
>>> details = operation_details("beneficiary", amount_minor=None, currency=None,
...                             payee="FR7630006000011234567890189", name="Alice Martin")
>>> [k for k, _ in details]
['kind', 'name', 'payee']
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from capsim.errors import ValidationError
from capsim.verifier.certmodel import (
    CertChallenge,
    CertCredential,
    CertState,
    ChallengePurpose,
    Organisation,
    OrgUser,
)
from capsim.verifier.checks import ACT_ALPHABET
from capsim.verifier.model import Outcome
from capsim.verifier.policy import VerifierPolicy

__all__ = [
    "OPERATION_KINDS",
    "AuthDecision",
    "Registration",
    "count_failure",
    "counts_against_challenge",
    "details_digest",
    "identity_message",
    "master_message",
    "normalise_identity",
    "normalise_master_code",
    "operation_details",
    "screen_authentication",
    "screen_registration",
    "settle_authentication",
]

#: The operations a certificate signature approves.
OPERATION_KINDS: Final = ("payment", "beneficiary")


def normalise_master_code(code: object) -> str:
    """A master code as issued: 16 Crockford base32 characters (case, dashes, spaces ignored)."""
    if not isinstance(code, str) or len(code) > 64:
        raise ValidationError("master_code: expected 16 characters (dashes optional)")
    cleaned = code.replace("-", "").replace(" ", "").upper()
    if len(cleaned) != 16 or not all(c in ACT_ALPHABET for c in cleaned):
        raise ValidationError("master_code: expected 16 characters (dashes optional)")
    return cleaned


def normalise_identity(value: object) -> str:
    """An identity number: 4..32 ASCII letters or digits (spaces and dashes ignored, upper case)."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError("identity_number: expected 4..32 letters or digits")
    cleaned = value.replace(" ", "").replace("-", "").upper()
    if not 4 <= len(cleaned) <= 32 or not cleaned.isascii() or not cleaned.isalnum():
        raise ValidationError("identity_number: expected 4..32 letters or digits")
    return cleaned


def master_message(org_id: str, code: str) -> bytes:
    """What the keyed hash of a master code covers (rule 1)."""
    return b"\x00".join([b"capsim org master v1", org_id.encode(), code.encode("ascii")])


def identity_message(org_id: str, identity: str) -> bytes:
    """What the keyed hash of an identity number covers (rule 1)."""
    return b"\x00".join([b"capsim org identity v1", org_id.encode(), identity.encode("ascii")])


def operation_details(
    kind: str,
    *,
    amount_minor: int | None,
    currency: str | None,
    payee: str,
    name: str | None,
) -> tuple[tuple[str, str], ...]:
    """The canonical bound data of an operation (rule 2), sorted by name."""
    if kind == "payment":
        if amount_minor is None or currency is None:
            raise ValidationError("amount/currency: a payment binds an amount and a currency")
        if name is not None:
            raise ValidationError("name: only a beneficiary addition binds a holder name")
        pairs = {"kind": kind, "amount_minor": str(amount_minor), "currency": currency, "payee": payee}
    elif kind == "beneficiary":
        if amount_minor is not None or currency is not None:
            raise ValidationError("amount/currency: a beneficiary addition binds no amount")
        pairs = {"kind": kind, "payee": payee, "name": name or ""}
    else:
        raise ValidationError(f"kind: expected one of {', '.join(OPERATION_KINDS)}")
    return tuple(sorted(pairs.items()))


def details_digest(details: tuple[tuple[str, str], ...]) -> bytes:
    """SHA-256 of the sorted-key JSON of ``details`` (rule 2)."""
    text = json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(b"capsim cert operation v1|" + text.encode("ascii")).digest()


def _locked(cert: CertCredential, now: datetime) -> bool:
    return cert.locked_until is not None and now < cert.locked_until


def _challenge_refusal(ch: CertChallenge | None, purpose: ChallengePurpose, now: datetime) -> str:
    if ch is None:
        return "unknown-challenge"
    if ch.purpose is not purpose:
        return "challenge-purpose"
    if ch.consumed_at is not None:
        return "challenge-consumed"
    if now >= ch.expires_at:
        return "challenge-expired"
    if ch.attempts >= ch.max_attempts:
        return "challenge-closed"
    return ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Registration:
    """What :func:`screen_registration` decides on, read by the service in one transaction."""

    org: Organisation | None
    master_digest: bytes
    challenge: CertChallenge | None
    certificate_reason: str
    signature_ok: bool
    identity_user: OrgUser | None
    named_user: OrgUser | None
    supplementary: bool
    administrator: bool
    org_has_users: bool
    key_holder: CertCredential | None
    now: datetime


#: Registration refusals decided before the challenge is looked at: they cost it no attempt.
_BEFORE_CHALLENGE: Final = frozenset({"unknown-organisation", "master-code"})


def counts_against_challenge(reason: str) -> bool:
    """Whether a refused registration uses up one attempt of its (open) challenge: every refusal
    from the challenge's own checks on (rule 3), so a challenge cannot be tried forever."""
    return bool(reason) and reason not in _BEFORE_CHALLENGE


def screen_registration(r: Registration) -> str:
    """Rule 3: the reason a registration is refused, or ``""``."""
    if r.org is None:
        return "unknown-organisation"
    if not hmac.compare_digest(r.org.master_digest, r.master_digest):
        return "master-code"
    refusal = _challenge_refusal(r.challenge, ChallengePurpose.REGISTER, r.now)
    if refusal:
        return refusal
    if r.challenge is not None and r.challenge.org_id != r.org.org_id:
        return "challenge-organisation"
    if r.certificate_reason:
        return f"certificate-{r.certificate_reason}"
    if not r.signature_ok:
        return "signature"
    if r.supplementary:
        user = r.named_user
        if user is None or user.org_id != r.org.org_id or r.identity_user is None:
            return "identity-mismatch"
        if user.user_id != r.identity_user.user_id:
            return "identity-mismatch"
        if user.disabled:
            return "user-disabled"
        if r.administrator:
            return "administrator-not-first"
    else:
        if r.identity_user is not None:
            return "identity-registered"
        if r.administrator and r.org_has_users:
            return "administrator-not-first"
    if r.key_holder is not None:
        return "key-registered"  # nominative: one live certificate per public key
    return ""


def screen_authentication(
    ch: CertChallenge | None, cert: CertCredential | None, user: OrgUser | None, now: datetime
) -> str:
    """Rule 4, the refusals that count nothing: a reason, or ``""``."""
    refusal = _challenge_refusal(ch, ChallengePurpose.OPERATION, now)
    if refusal:
        return refusal
    if cert is None or ch is None or ch.cert_id != cert.cert_id:
        return "unknown-certificate"
    if cert.state is not CertState.ACTIVE:
        return f"state-{cert.state.value}"
    if _locked(cert, now):
        return "locked"
    if user is None or user.disabled:
        return "user-disabled"
    return ""


def count_failure(cert: CertCredential, now: datetime, policy: VerifierPolicy) -> CertCredential:
    """The certificate after one wrong signature (rule 4; V28, V29, V31); ``version`` unchanged."""
    if cert.locked_until is not None and now >= cert.locked_until:
        cert = dataclasses.replace(cert, locked_until=None, fail_count=0)  # the lock expired (V29)
    fails = min(cert.fail_count + 1, policy.max_fail)
    if fails < policy.max_fail:
        return dataclasses.replace(cert, fail_count=fails)
    started = cert.escalation_started_at
    if started is None or now - started > timedelta(seconds=policy.escalation_period_s):
        started, escalations = now, 1
    else:
        escalations = cert.lock_escalations + 1
    state = CertState.BLOCKED if escalations >= policy.escalate_after else cert.state
    return dataclasses.replace(
        cert,
        fail_count=fails,
        locked_until=now + timedelta(seconds=policy.lock_duration_s),
        lock_escalations=escalations,
        escalation_started_at=started,
        state=state,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthDecision:
    """The outcome of one authentication and the rows to write (compare-and-swap on the
    certificate's ``version`` and the challenge's ``attempts``)."""

    outcome: Outcome
    reason: str
    cert: CertCredential | None = None
    challenge: CertChallenge | None = None


def settle_authentication(
    ch: CertChallenge | None,
    cert: CertCredential | None,
    *,
    refusal: str,
    signature_ok: bool,
    now: datetime,
    policy: VerifierPolicy,
) -> AuthDecision:
    """Rule 4: the outcome from the screen's refusal and the signature check."""
    if refusal or ch is None or cert is None:
        return AuthDecision(outcome=Outcome.REJECT, reason=refusal or "unknown-certificate")
    if signature_ok:
        fresh = dataclasses.replace(cert, fail_count=0, locked_until=None, version=cert.version + 1)
        return AuthDecision(
            outcome=Outcome.ACCEPT,
            reason="signature",
            cert=fresh,
            challenge=dataclasses.replace(ch, consumed_at=now),
        )
    failed = count_failure(cert, now, policy)
    reason = "wrong-signature"
    if failed.state is CertState.BLOCKED:
        reason = "wrong-signature-blocked"
    elif failed.locked_until is not None and failed.locked_until != cert.locked_until:
        reason = "wrong-signature-locked"
    return AuthDecision(
        outcome=Outcome.REJECT,
        reason=reason,
        cert=dataclasses.replace(failed, version=cert.version + 1),
        challenge=dataclasses.replace(ch, attempts=ch.attempts + 1),
    )
