"""Certificate credentials: organisations, registration and operation-bound signatures.

Theory of operation
-------------------
1. **Organisations.** The bank's operator creates an organisation (a supplier or a customer)
   and receives its master code once (16 characters from :mod:`secrets`); the store keeps
   only its keyed hash (:mod:`capsim.verifier.certdecision` rule 1). Keyed hashes use the key
   provider's audit seal key: without one, certificate credentials refuse to work
   (:class:`~capsim.errors.ConfigError`) rather than store an identity number under a plain,
   enumerable hash.
2. **Registration** (:meth:`CertificateVerifier.register_certificate`) needs the
   organisation's master code, the user's identity number and proof of possession: the token
   signs a registration challenge the verifier issued
   (:meth:`CertificateVerifier.registration_challenge`). The certificate must validate against
   the configured trust (:mod:`capsim.verifier.certtrust`: chain, dates, keyUsage
   digitalSignature, CRL). A new identity gets a generated identifier (``usr-…``); its first
   registrant may take the organisation's one administrator role. A second certificate under
   an existing identifier (``user_id=``, same identity number) is *supplementary*
   (delegation). A public key already held by a live certificate is refused: certificates are
   nominative, one owner each (the stores' unique index backs the check under concurrency).
3. **Authentication is operation-bound** (PSD2 dynamic linking):
   :meth:`CertificateVerifier.operation_challenge` stores an operation (a payment's amount,
   currency and payee, or a beneficiary addition) with a fresh nonce and the digest of its
   data; the token signs the challenge's :attr:`~capsim.verifier.certmodel.CertChallenge.message`;
   :meth:`CertificateVerifier.authenticate` checks it once. The certificate row is locked
   first, then the challenge read again; the decision is
   :func:`capsim.verifier.certdecision.settle_authentication`; the accept consumes the
   challenge (a replay finds it consumed), a wrong signature counts against the challenge and
   the certificate (the verifier policy's ``max_fail``/lock/escalation rules).
4. **One external reject.** Every refusal of a registration or a signature is
   :class:`~capsim.errors.InvalidCode`; the reason goes only to the audit, written in the same
   transaction as the state change (the shared audit chain, sealed by the provider). An
   unknown challenge or certificate still costs a signature check, on a dummy key.
5. **Who may do what.** The bank's operator (``acting_user=None``) does everything; an
   organisation's administrator lists its users and certificates, revokes certificates and
   removes users of its own organisation. Unblocking a blocked certificate is the bank's.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.verifier import certdecision as cd
from capsim.verifier import checks
from capsim.verifier.certmodel import (
    CertChallenge,
    CertCredential,
    CertState,
    ChallengePurpose,
    Organisation,
    OrgKind,
    OrgUser,
)
from capsim.verifier.certtrust import (
    TRUST_SETTING,
    CertTrust,
    check_certificate,
    parse_certificate,
    trust_from_setting,
    verify_signature,
)
from capsim.verifier.core import ServiceCore, provider_failures
from capsim.verifier.model import Outcome, UserRole
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import CryptogramProvider
from capsim.verifier.store import Store, StoreTransaction

__all__ = ["CertAcceptance", "CertificateVerifier", "MasterCode"]

_MAX_SIGNATURE: Final = 1024
_DUMMY_KEY: list[ec.EllipticCurvePublicKey] = []


def _dummy_key() -> ec.EllipticCurvePublicKey:
    """The key an unknown target's signature is checked against (rule 4)."""
    if not _DUMMY_KEY:
        _DUMMY_KEY.append(ec.generate_private_key(ec.SECP256R1()).public_key())
    return _DUMMY_KEY[0]


@dataclass(frozen=True, kw_only=True, slots=True)
class MasterCode:
    """An organisation's master code as handed to it (shown once, stored as a keyed hash)."""

    org_id: str
    code: str = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class CertAcceptance:
    """An accepted signature: which certificate approved which operation, when."""

    cert_id: str
    user_id: str
    org_id: str
    challenge_id: str
    txn_digest: bytes
    details: tuple[tuple[str, str], ...]
    accepted_at: datetime


def _signature(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray) or not 1 <= len(value) <= _MAX_SIGNATURE:
        raise ValidationError(f"signature: expected 1..{_MAX_SIGNATURE} bytes")
    return bytes(value)


def _new_code() -> str:
    return "".join(secrets.choice(checks.ACT_ALPHABET) for _ in range(16))


class CertificateVerifier:
    """The certificate credential's API (module docstring).

    Parameters
    ----------
    store, provider:
        As for :class:`~capsim.verifier.service.Verifier` (the same database and keys); the
        provider must hold an audit seal key (rule 1).
    trust:
        The trust configuration, or a function returning it (called for each registration
        and authentication, so files read by it are re-read: a new CRL takes effect at once).
    policy:
        Lockout limits, challenge lifetime and attempts (``None``: the stored policy).
    """

    def __init__(
        self,
        store: Store,
        provider: CryptogramProvider,
        *,
        trust: CertTrust | Callable[[], CertTrust],
        policy: VerifierPolicy | None = None,
        node: str = "capsim",
        monotonic: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._core = ServiceCore(
            store,
            provider,
            policy=policy,
            node=node,
            profiles=(),
            on_before_permanent_block=None,
            monotonic=monotonic,
        )
        self._trust = trust

    def __repr__(self) -> str:
        return f"<CertificateVerifier node={self._core.node!r}>"

    @property
    def policy(self) -> VerifierPolicy:
        """The policy in force."""
        return self._core.policy

    # -- helpers ---------------------------------------------------------------------------------
    def _keyed(self, message: bytes) -> bytes:
        provider = self._core.provider
        with provider_failures():
            if provider.audit_seal_key_id() is None:
                raise ConfigError(
                    "certificate credentials need the key provider's audit seal key: master codes "
                    "and identity numbers are kept only as keyed hashes"
                )
            return provider.audit_seal(message)

    def _trust_now(self) -> CertTrust:
        return self._trust() if callable(self._trust) else self._trust

    def _audit(
        self, tx: StoreTransaction, event: str, outcome: str, *, reason: str = "", t0: float | None = None,
        cert_id: str | None = None, challenge: CertChallenge | None = None, **details: str,
    ) -> None:  # fmt: skip
        tx.append_audit(
            self._core.entry(
                event=event,
                outcome=outcome,
                reason=reason,
                credential_id=cert_id,
                operation_id=None if challenge is None else challenge.challenge_id,
                txn_digest=b"" if challenge is None else challenge.txn_digest,
                duration_us=0 if t0 is None else self._core.us(t0),
                details={k: v for k, v in details.items() if v},
            )
        )

    def _authorize(self, tx: StoreTransaction, acting_user: str | None, org_id: str) -> None:
        """Rule 5: the bank, or an enabled administrator of ``org_id``."""
        if acting_user is None:
            return
        actor = tx.get_org_user(checks.ident("acting_user", acting_user))
        if actor is None or actor.disabled or actor.role is not UserRole.ADMIN or actor.org_id != org_id:
            raise ValidationError("acting_user: not an administrator of this organisation")

    def _challenge(
        self, tx: StoreTransaction, purpose: ChallengePurpose, org_id: str, *, cert_id: str | None = None,
        details: tuple[tuple[str, str], ...] = (), ttl_s: int | None = None,
    ) -> CertChallenge:  # fmt: skip
        now = tx.now()
        ch = CertChallenge(
            challenge_id="cc-" + secrets.token_hex(8),
            purpose=purpose,
            org_id=org_id,
            cert_id=cert_id,
            nonce=secrets.token_bytes(32),
            txn_digest=cd.details_digest(details),
            details=details,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s or self._core.policy.operation_ttl_s),
            max_attempts=self._core.policy.max_attempts_per_operation,
        )
        self._core.must(tx.insert_cert_challenge(ch))
        self._audit(tx, "cert-challenge", "ok", cert_id=cert_id, challenge=ch, purpose=purpose.value)
        return ch

    def record_trust(self, setting: str) -> None:
        """Record the trust files (a :func:`capsim.verifier.certtrust.trust_setting` value) in the
        store, audited; readers of the setting load the files again each time."""
        trust_from_setting(setting)  # refuse what would not load
        with self._core.tx() as tx:
            tx.set_setting(TRUST_SETTING, setting)
            self._audit(tx, "cert-trust", "ok", trust=setting)

    # -- organisations (rule 1) ------------------------------------------------------------------
    def create_organisation(self, name: str, *, kind: OrgKind | str = OrgKind.SUPPLIER) -> MasterCode:
        """A new organisation (the bank's act) and its master code, shown once."""
        checks.text("name", name)
        try:
            org_kind = OrgKind(kind)
        except ValueError:
            raise ValidationError("kind: expected supplier or customer") from None
        org_id = "org-" + secrets.token_hex(8)
        code = _new_code()
        digest = self._keyed(cd.master_message(org_id, code))
        with self._core.tx() as tx:
            org = Organisation(
                org_id=org_id, name=name, kind=org_kind, master_digest=digest, created_at=tx.now()
            )
            self._core.must(tx.insert_org(org))
            self._audit(tx, "cert-org", "ok", org_id=org_id, kind=org_kind.value)
        return MasterCode(org_id=org_id, code=code)

    def get_organisation(self, org_id: str) -> Organisation | None:
        """One organisation, or ``None``."""
        oid = checks.ident("org_id", org_id)
        with self._core.tx() as tx:
            return tx.get_org(oid)

    # -- registration (rule 2) -------------------------------------------------------------------
    def registration_challenge(self, org_id: str) -> CertChallenge:
        """A single-use challenge the registrant's token signs (proof of possession)."""
        oid = checks.ident("org_id", org_id)
        with self._core.tx() as tx:
            if tx.get_org(oid) is None:
                raise ValidationError(f"org_id: no organisation {oid!r}")
            return self._challenge(tx, ChallengePurpose.REGISTER, oid)

    def register_certificate(
        self,
        org_id: str,
        *,
        master_code: str,
        identity_number: str,
        certificate: bytes,
        challenge_id: str,
        signature: bytes,
        administrator: bool = False,
        user_id: str | None = None,
        label: str = "",
    ) -> CertCredential:
        """Register a certificate (rule 2); :class:`InvalidCode` for every refusal.

        ``user_id`` registers a supplementary certificate under that existing identifier
        (the same identity number); without it the identity gets a new identifier.
        ``administrator`` asks for the organisation's administrator role (its first
        registrant only).
        """
        t0 = self._core.monotonic()
        oid = checks.ident("org_id", org_id)
        code = cd.normalise_master_code(master_code)
        identity = cd.normalise_identity(identity_number)
        cert = parse_certificate(certificate)
        chid = checks.ident("challenge_id", challenge_id)
        sig = _signature(signature)
        uid = None if user_id is None else checks.ident("user_id", user_id)
        if label:
            checks.text("label", label)
        if not isinstance(administrator, bool):
            raise ValidationError("administrator: expected a bool")
        master = self._keyed(cd.master_message(oid, code))
        id_digest = self._keyed(cd.identity_message(oid, identity))
        trust = self._trust_now()
        with self._core.tx() as tx:
            now = tx.now()
            org = tx.lock_org(oid)
            ch = tx.get_cert_challenge(chid)
            validated, cert_reason = check_certificate(cert, trust, now)
            key = cert.public_key() if ch is not None else _dummy_key()
            signed = verify_signature(key, ch.message if ch is not None else b"", sig)
            named = tx.get_org_user(uid) if uid is not None else None
            reg = cd.Registration(
                org=org,
                master_digest=master,
                challenge=ch,
                certificate_reason=cert_reason,
                signature_ok=signed,
                identity_user=tx.find_org_user(oid, id_digest),
                named_user=named,
                supplementary=uid is not None,
                administrator=administrator,
                org_has_users=bool(tx.list_org_users(oid)) if org is not None else False,
                key_holder=None if validated is None else tx.find_live_cert(validated.spki_digest),
                now=now,
            )
            reason = cd.screen_registration(reg)
            if reason or validated is None or ch is None:
                if ch is not None and ch.is_open(now) and cd.counts_against_challenge(reason):
                    tx.update_cert_challenge(
                        dataclasses.replace(ch, attempts=ch.attempts + 1), expected_attempts=ch.attempts
                    )
                self._audit(
                    tx, "cert-register", "reject", reason=reason or "refused", t0=t0, challenge=ch, org_id=oid
                )
                stored = None
            else:
                self._core.must(
                    tx.update_cert_challenge(
                        dataclasses.replace(ch, consumed_at=now), expected_attempts=ch.attempts
                    )
                )
                if named is None:
                    named = OrgUser(
                        user_id="usr-" + secrets.token_hex(6),
                        org_id=oid,
                        role=UserRole.ADMIN if administrator else UserRole.USER,
                        id_digest=id_digest,
                        created_at=now,
                    )
                    self._core.must(tx.insert_org_user(named))
                stored = CertCredential(
                    cert_id="crt-" + secrets.token_hex(8),
                    user_id=named.user_id,
                    org_id=oid,
                    state=CertState.ACTIVE,
                    spki_digest=validated.spki_digest,
                    cert_der=cert.public_bytes(Encoding.DER),
                    serial=validated.serial,
                    subject=validated.subject,
                    not_after=validated.not_after,
                    created_at=now,
                    supplementary=uid is not None,
                    label=label,
                )
                self._core.must(tx.insert_cert(stored))
                self._audit(
                    tx, "cert-register", "accept", reason="registered", t0=t0, cert_id=stored.cert_id,
                    challenge=ch, org_id=oid, user_id=named.user_id, role=named.role.value,
                    supplementary="yes" if stored.supplementary else "",
                )  # fmt: skip
        if stored is None:
            raise InvalidCode
        return stored

    # -- operations and authentication (rules 3, 4) ----------------------------------------------
    def operation_challenge(
        self,
        cert_id: str,
        *,
        kind: str,
        payee: str,
        amount: int | str | None = None,
        currency: str | None = None,
        name: str | None = None,
        ttl_s: int | None = None,
    ) -> CertChallenge:
        """A challenge bound to one operation: ``kind="payment"`` (amount, currency, payee) or
        ``kind="beneficiary"`` (the payee account and its holder's ``name``)."""
        from capsim.cap import currency_numeric, parse_amount

        cid = checks.ident("cert_id", cert_id)
        checks.text("payee", payee)
        if name is not None:
            checks.text("name", name)
        cur = None if currency is None else currency_numeric(currency)
        amt = None if amount is None else parse_amount(amount, currency)
        ttl = None if ttl_s is None else checks.seconds("ttl_s", ttl_s, 10**7)
        if self._core.policy.psd2 and ttl is not None and ttl > 300:
            raise ConfigError("ttl_s: the PSD2 profile allows at most 300 s")
        details = cd.operation_details(kind, amount_minor=amt, currency=cur, payee=payee, name=name)
        with self._core.tx() as tx:
            cert = tx.lock_cert(cid)
            if cert is None or cert.state is not CertState.ACTIVE:
                raise ValidationError(f"cert_id: no active certificate {cid!r}")
            return self._challenge(
                tx, ChallengePurpose.OPERATION, cert.org_id, cert_id=cid, details=details, ttl_s=ttl
            )

    def authenticate(self, challenge_id: str, signature: bytes) -> CertAcceptance:
        """Check the token's signature of an operation challenge, once (rules 3, 4).

        Returns the acceptance, or raises :class:`InvalidCode` whatever failed.
        """
        t0 = self._core.monotonic()
        chid = checks.ident("challenge_id", challenge_id)
        sig = _signature(signature)
        trust = self._trust_now()
        with self._core.tx() as tx:
            now = tx.now()
            first = tx.get_cert_challenge(chid)
            cert = tx.lock_cert(first.cert_id) if first is not None and first.cert_id else None
            ch = tx.get_cert_challenge(chid)  # again, under the certificate's lock
            user = tx.get_org_user(cert.user_id) if cert is not None else None
            refusal = cd.screen_authentication(ch, cert, user, now)
            parsed = parse_certificate(cert.cert_der) if cert is not None else None
            if not refusal and parsed is not None:
                _, why = check_certificate(parsed, trust, now)
                refusal = f"certificate-{why}" if why else ""
            key = parsed.public_key() if parsed is not None else _dummy_key()
            signed = verify_signature(key, ch.message if ch is not None else b"", sig)
            decision = cd.settle_authentication(
                ch, cert, refusal=refusal, signature_ok=signed, now=now, policy=self._core.policy
            )
            accepted: CertAcceptance | None = None
            if decision.cert is not None and cert is not None:
                self._core.must(tx.update_cert(decision.cert, expected_version=cert.version))
            if decision.challenge is not None and ch is not None:
                self._core.must(tx.update_cert_challenge(decision.challenge, expected_attempts=ch.attempts))
            if decision.outcome is Outcome.ACCEPT and ch is not None and cert is not None:
                accepted = CertAcceptance(
                    cert_id=cert.cert_id,
                    user_id=cert.user_id,
                    org_id=cert.org_id,
                    challenge_id=ch.challenge_id,
                    txn_digest=ch.txn_digest,
                    details=ch.details,
                    accepted_at=now,
                )
            self._audit(
                tx, "cert-authenticate", decision.outcome.value, reason=decision.reason, t0=t0,
                cert_id=None if cert is None else cert.cert_id, challenge=ch,
            )  # fmt: skip
        if accepted is None:
            raise InvalidCode
        return accepted

    # -- administration (rule 5) -----------------------------------------------------------------
    def list_users(self, org_id: str, *, acting_user: str | None = None) -> list[OrgUser]:
        """The organisation's users (the bank, or its administrator)."""
        oid = checks.ident("org_id", org_id)
        with self._core.tx() as tx:
            self._authorize(tx, acting_user, oid)
            return tx.list_org_users(oid)

    def list_certificates(
        self, org_id: str, *, user_id: str | None = None, acting_user: str | None = None
    ) -> list[CertCredential]:
        """The organisation's certificates (of one user when given)."""
        oid = checks.ident("org_id", org_id)
        uid = None if user_id is None else checks.ident("user_id", user_id)
        with self._core.tx() as tx:
            self._authorize(tx, acting_user, oid)
            return tx.list_certs(org_id=oid, user_id=uid)

    def get_certificate(self, cert_id: str) -> CertCredential | None:
        """One certificate, or ``None``."""
        cid = checks.ident("cert_id", cert_id)
        with self._core.tx() as tx:
            return tx.get_cert(cid)

    def _change(
        self, cert_id: str, acting_user: str | None, action: str, reason: str, bank_only: bool
    ) -> CertCredential:
        cid = checks.ident("cert_id", cert_id)
        if reason:
            checks.text("reason", reason)
        if bank_only and acting_user is not None:
            raise ValidationError(
                f"acting_user: an organisation administrator may not {action}; the bank may"
            )
        with self._core.tx() as tx:
            cert = tx.lock_cert(cid)
            if cert is None:
                raise ValidationError(f"cert_id: no certificate {cid!r}")
            self._authorize(tx, acting_user, cert.org_id)
            if action == "revoke":
                if cert.state is CertState.REVOKED:
                    raise ValidationError("cert_id: the certificate is already revoked")
                new = dataclasses.replace(cert, state=CertState.REVOKED, version=cert.version + 1)
            else:
                if cert.state is CertState.REVOKED:
                    raise ValidationError("cert_id: a revoked certificate stays revoked")
                new = dataclasses.replace(
                    cert, state=CertState.ACTIVE, fail_count=0, locked_until=None, lock_escalations=0,
                    escalation_started_at=None, version=cert.version + 1,
                )  # fmt: skip
            self._core.must(tx.update_cert(new, expected_version=cert.version))
            self._audit(
                tx, "cert-lifecycle", "ok", reason=action, cert_id=cid, by=acting_user or "bank", note=reason
            )
            return new

    def revoke_certificate(
        self, cert_id: str, *, acting_user: str | None = None, reason: str = ""
    ) -> CertCredential:
        """Revoke a certificate for good (the bank, or its organisation's administrator)."""
        return self._change(cert_id, acting_user, "revoke", reason, bank_only=False)

    def unblock_certificate(
        self, cert_id: str, *, acting_user: str | None = None, reason: str = ""
    ) -> CertCredential:
        """Clear a certificate's lock and failure counters; ``blocked`` becomes ``active`` (the bank)."""
        return self._change(cert_id, acting_user, "unblock", reason, bank_only=True)

    def remove_user(self, user_id: str, *, acting_user: str | None = None) -> OrgUser:
        """Disable a user and revoke its live certificates (the bank, or its administrator)."""
        uid = checks.ident("user_id", user_id)
        with self._core.tx() as tx:
            user = tx.get_org_user(uid)
            if user is None:
                raise ValidationError(f"user_id: no user {uid!r}")
            self._authorize(tx, acting_user, user.org_id)
            if acting_user == uid:
                raise ValidationError("acting_user: an administrator may not remove itself")
            for cert in tx.list_certs(user_id=uid):
                locked = tx.lock_cert(cert.cert_id)
                if locked is not None and locked.state is not CertState.REVOKED:
                    new = dataclasses.replace(locked, state=CertState.REVOKED, version=locked.version + 1)
                    self._core.must(tx.update_cert(new, expected_version=locked.version))
            gone = dataclasses.replace(user, disabled=True, version=user.version + 1)
            self._core.must(tx.update_org_user(gone, expected_version=user.version))
            self._audit(
                tx, "cert-lifecycle", "ok", reason="remove-user", user_id=uid, by=acting_user or "bank"
            )
            return gone
