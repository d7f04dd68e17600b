"""Certificate credentials in the verifier: every published rule, on every store backend.

The token is capsim's emulated PIV card, signing through its APDUs; the certificates come from
a throwaway CA (tests/verifier/certpki.py). Each rule is checked on memory, SQLite and the
throwaway PostgreSQL cluster (``store_factory``), and each refusal's reason is read back from
the audit chain, since callers only ever see the uniform reject.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from capsim.cards.piv import PivAlgorithm
from capsim.errors import ConfigError, InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier.audit import check_chain
from capsim.verifier.certificates import CertificateVerifier, MasterCode
from capsim.verifier.certmodel import CertChallenge, CertCredential, CertState, ChallengePurpose, OrgUser
from capsim.verifier.certtrust import CertTrust, check_certificate, trust_from_setting, trust_setting
from capsim.verifier.model import UserRole
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.store import Store
from tests.verifier.certpki import DAY, T0, Ca, Token, new_token, write_pem
from tests.verifier.conftest import Clock, StoreFactory

POLICY = VerifierPolicy(
    max_fail=3, max_attempts_per_operation=3, lock_duration_s=60, escalate_after=2, escalation_period_s=3600
)


@dataclass
class Bank:
    """A certificate verifier on one store, with its CA and trust configuration."""

    store: Store
    clock: Clock
    ca: Ca
    trust: CertTrust
    cv: CertificateVerifier = field(init=False)

    def __post_init__(self) -> None:
        provider = SoftwareProvider()
        provider.set_audit_seal_key("aud-test", secrets.token_bytes(32))
        self.provider = provider
        self.cv = CertificateVerifier(self.store, provider, trust=lambda: self.trust, policy=POLICY)

    def org(self, name: str = "ACME Fournitures") -> MasterCode:
        return self.cv.create_organisation(name, kind="supplier")

    def register(
        self, mc: MasterCode, token: Token, identity: str = "1850775123456", **kw: object
    ) -> CertCredential:
        ch = self.cv.registration_challenge(mc.org_id)
        code = str(kw.pop("master_code", mc.code))
        return self.cv.register_certificate(
            mc.org_id,
            master_code=code,
            identity_number=identity,
            certificate=token.der,
            challenge_id=ch.challenge_id,
            signature=token.sign(ch.message),
            **kw,  # type: ignore[arg-type]
        )

    def last_reason(self, event: str) -> tuple[str, str]:
        records = [r for r in self.store.audit_records() if r.entry.event == event]
        return records[-1].entry.outcome, records[-1].entry.reason

    def pay(
        self, cert_id: str, amount: str = "150.00", payee: str = "FR7630006000011234567890189"
    ) -> CertChallenge:
        return self.cv.operation_challenge(
            cert_id, kind="payment", amount=amount, currency="EUR", payee=payee
        )


@pytest.fixture
def bank(store_factory: StoreFactory, clock: Clock) -> Bank:
    ca = Ca("capsim test CA")
    return Bank(store_factory(clock), clock, ca, CertTrust(anchors=(ca.cert,), crls=(ca.crl(),)))


def _refused(bank: Bank, event: str, reason: str, call: Callable[[], object]) -> None:
    with pytest.raises(InvalidCode) as info:
        call()
    assert str(info.value) == "code rejected"  # the one uniform reject
    assert bank.last_reason(event) == ("reject", reason)


# -- organisations, master code, administrator ----------------------------------------------------


def test_registration_needs_the_organisation_master_code(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    wrong = "0" * 16 if mc.code != "0" * 16 else "1" * 16
    _refused(bank, "cert-register", "master-code", lambda: bank.register(mc, token, master_code=wrong))
    other = bank.org("Other Ltd")  # another organisation's code does not open this one
    _refused(bank, "cert-register", "master-code", lambda: bank.register(mc, token, master_code=other.code))
    assert bank.cv.list_certificates(mc.org_id) == []
    cred = bank.register(mc, token)
    assert cred.state is CertState.ACTIVE
    assert mc.code not in repr(mc)


def test_master_code_and_identity_number_are_stored_only_as_keyed_hashes(bank: Bank) -> None:
    mc = bank.org()
    bank.register(mc, new_token(bank.ca), identity="1850775123456")
    org = bank.cv.get_organisation(mc.org_id)
    assert org is not None
    assert len(org.master_digest) == 32
    (user,) = bank.cv.list_users(mc.org_id)
    plain = [hashlib.sha256(v.encode()).digest() for v in ("1850775123456", mc.code)]
    assert user.id_digest not in plain
    assert org.master_digest not in plain
    assert mc.code not in repr(org)
    assert "1850775123456" not in repr(user)


def test_without_a_seal_key_certificate_credentials_refuse_to_work(store_factory: StoreFactory) -> None:
    ca = Ca("CA")
    cv = CertificateVerifier(store_factory(), SoftwareProvider(), trust=CertTrust(anchors=(ca.cert,)))
    with pytest.raises(ConfigError, match="keyed hashes"):
        cv.create_organisation("ACME")


def test_first_registrant_may_take_the_administrator_role_and_manages_the_users(bank: Bank) -> None:
    mc = bank.org()
    admin = bank.register(mc, new_token(bank.ca), identity="1111111111", administrator=True)
    user = bank.register(mc, new_token(bank.ca, cn="Bob"), identity="2222222222")
    # a later registrant cannot become administrator: one per organisation
    _refused(
        bank,
        "cert-register",
        "administrator-not-first",
        lambda: bank.register(mc, new_token(bank.ca), identity="3333333333", administrator=True),
    )
    users = {u.user_id: u for u in bank.cv.list_users(mc.org_id, acting_user=admin.user_id)}
    assert users[admin.user_id].role is UserRole.ADMIN
    assert users[user.user_id].role is UserRole.USER
    assert all(uid.startswith("usr-") for uid in users)  # generated identifiers
    # the administrator revokes a user's certificate; a plain user may not manage anything
    with pytest.raises(ValidationError, match="not an administrator"):
        bank.cv.revoke_certificate(admin.cert_id, acting_user=user.user_id)
    with pytest.raises(ValidationError, match="not an administrator"):
        bank.cv.list_users(mc.org_id, acting_user=user.user_id)
    revoked = bank.cv.revoke_certificate(user.cert_id, acting_user=admin.user_id)
    assert revoked.state is CertState.REVOKED
    # another organisation's administrator has no power here
    other = bank.org("Other")
    stranger = bank.register(other, new_token(bank.ca), identity="9999999999", administrator=True)
    with pytest.raises(ValidationError, match="not an administrator"):
        bank.cv.list_certificates(mc.org_id, acting_user=stranger.user_id)
    # removing a user revokes its live certificates
    bob2 = bank.register(mc, new_token(bank.ca), identity="4444444444")
    bank.cv.remove_user(bob2.user_id, acting_user=admin.user_id)
    assert bank.cv.get_certificate(bob2.cert_id).state is CertState.REVOKED


def test_one_administrator_per_organisation_is_the_schema_s(bank: Bank) -> None:
    mc = bank.org()
    with bank.store.transaction() as tx:
        rows = [
            OrgUser(
                user_id=f"u{i}",
                org_id=mc.org_id,
                role=UserRole.ADMIN,
                id_digest=bytes([i]) * 32,
                created_at=T0,
            )
            for i in (1, 2)
        ]
        assert [tx.insert_org_user(u) for u in rows] == [1, 0]
        same_identity = OrgUser(
            user_id="u3", org_id=mc.org_id, role=UserRole.USER, id_digest=bytes([1]) * 32, created_at=T0
        )
        assert tx.insert_org_user(same_identity) == 0  # one identifier per identity


# -- supplementary certificate and nominative certificates ----------------------------------------


def test_a_supplementary_certificate_is_registered_under_the_existing_identifier(bank: Bank) -> None:
    mc = bank.org()
    first = bank.register(mc, new_token(bank.ca), identity="1850775123456")
    uid = first.user_id
    second = bank.register(mc, new_token(bank.ca), identity="1 850775 123456", user_id=uid)
    assert second.user_id == uid
    assert second.supplementary
    assert not first.supplementary
    assert len(bank.cv.list_certificates(mc.org_id, user_id=uid)) == 2
    # another identity number may not add a certificate under this identifier
    _refused(
        bank,
        "cert-register",
        "identity-mismatch",
        lambda: bank.register(mc, new_token(bank.ca), identity="2222222222", user_id=uid),
    )
    # nor may another user's identity number (a registered one)
    bank.register(mc, new_token(bank.ca), identity="3333333333")
    _refused(
        bank,
        "cert-register",
        "identity-mismatch",
        lambda: bank.register(mc, new_token(bank.ca), identity="3333333333", user_id=uid),
    )
    # the same identity without the identifier is not a second identifier
    _refused(
        bank,
        "cert-register",
        "identity-registered",
        lambda: bank.register(mc, new_token(bank.ca), identity="1850775123456"),
    )
    assert len(bank.cv.list_users(mc.org_id)) == 2


def test_a_certificate_is_nominative_one_live_certificate_per_key(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    first = bank.register(mc, token, identity="1111111111")
    _refused(bank, "cert-register", "key-registered", lambda: bank.register(mc, token, identity="2222222222"))
    other = bank.org("Other")  # not in another organisation either
    _refused(
        bank, "cert-register", "key-registered", lambda: bank.register(other, token, identity="2222222222")
    )
    bank.cv.revoke_certificate(first.cert_id)
    again = bank.register(mc, token, identity="2222222222")  # a revoked one holds no key
    assert again.user_id != first.user_id


def test_the_store_refuses_a_second_live_certificate_for_one_key(bank: Bank) -> None:
    mc = bank.org()
    cred = bank.register(mc, new_token(bank.ca))
    twin = dataclasses.replace(cred, cert_id="crt-twin", user_id="usr-other")
    with bank.store.transaction() as tx:
        assert tx.insert_cert(twin) == 0
        revoked = dataclasses.replace(twin, state=CertState.REVOKED)
        assert tx.insert_cert(revoked) == 1  # a revoked row holds no key
    back = dataclasses.replace(revoked, state=CertState.ACTIVE, version=2)
    with pytest.raises(ValidationError), bank.store.transaction() as tx:
        tx.update_cert(back, expected_version=1)


def test_proof_of_possession_another_key_signing_the_challenge_is_refused(bank: Bank) -> None:
    mc = bank.org()
    holder, thief = new_token(bank.ca), new_token(bank.ca)
    ch = bank.cv.registration_challenge(mc.org_id)

    def steal() -> object:
        return bank.cv.register_certificate(
            mc.org_id,
            master_code=mc.code,
            identity_number="1850775123456",
            certificate=holder.der,
            challenge_id=ch.challenge_id,
            signature=thief.sign(ch.message),
        )

    _refused(bank, "cert-register", "signature", steal)
    # a challenge issued for another organisation proves nothing here
    elsewhere = bank.org("Elsewhere")
    foreign = bank.cv.registration_challenge(elsewhere.org_id)
    _refused(
        bank,
        "cert-register",
        "challenge-organisation",
        lambda: bank.cv.register_certificate(
            mc.org_id,
            master_code=mc.code,
            identity_number="1850775123456",
            certificate=holder.der,
            challenge_id=foreign.challenge_id,
            signature=holder.sign(foreign.message),
        ),
    )
    # and a registration challenge is single use
    bank.register(mc, holder)
    ch2 = bank.cv.registration_challenge(mc.org_id)
    token2 = new_token(bank.ca)
    sig2 = token2.sign(ch2.message)
    bank.cv.register_certificate(
        mc.org_id, master_code=mc.code, identity_number="2222222222", certificate=token2.der,
        challenge_id=ch2.challenge_id, signature=sig2,
    )  # fmt: skip
    _refused(
        bank,
        "cert-register",
        "challenge-consumed",
        lambda: bank.cv.register_certificate(
            mc.org_id,
            master_code=mc.code,
            identity_number="3333333333",
            certificate=token2.der,
            challenge_id=ch2.challenge_id,
            signature=sig2,
        ),
    )


# -- validation: chain, dates, keyUsage, CRL ----------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda ca: new_token(Ca("rogue CA")), "certificate-chain"),
        (lambda ca: new_token(ca, not_after=T0 - DAY), "certificate-expired"),
        (lambda ca: new_token(ca, not_before=T0 + DAY), "certificate-expired"),
        (lambda ca: new_token(ca, signature=False), "certificate-key-usage"),
    ],
    ids=["unknown-ca", "expired", "not-yet-valid", "no-digital-signature"],
)
def test_certificates_outside_the_trust_are_refused(
    bank: Bank, make: Callable[[Ca], Token], reason: str
) -> None:
    mc = bank.org()
    token = make(bank.ca)
    _refused(bank, "cert-register", reason, lambda: bank.register(mc, token))


def test_crl_revocation_signature_and_presence(bank: Bank) -> None:
    mc = bank.org()
    revoked = new_token(bank.ca)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl([revoked.cert.serial_number]),))
    _refused(bank, "cert-register", "certificate-revoked", lambda: bank.register(mc, revoked))
    # a CRL not signed by the issuer is ignored: the revocation status is unknown
    forged = bank.ca.crl([], signer=Ca("forger").key)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(forged,))
    fine = new_token(bank.ca)
    _refused(bank, "cert-register", "certificate-revocation-unknown", lambda: bank.register(mc, fine))
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=())
    _refused(bank, "cert-register", "certificate-revocation-unknown", lambda: bank.register(mc, fine))
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl(),))
    cred = bank.register(mc, fine)
    # revoked after registration: the next authentication is refused, nothing counted
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl([fine.cert.serial_number]),))
    ch = bank.pay(cred.cert_id)
    _refused(
        bank,
        "cert-authenticate",
        "certificate-revoked",
        lambda: bank.cv.authenticate(ch.challenge_id, fine.sign(ch.message)),
    )
    assert bank.cv.get_certificate(cred.cert_id).fail_count == 0


def test_a_chain_through_an_intermediate_and_its_revocation(bank: Bank) -> None:
    mc = bank.org()
    sub = Ca("capsim issuing CA", parent=bank.ca)
    token = new_token(sub)
    root_crl, sub_crl = bank.ca.crl(), sub.crl()
    # without the intermediate no path reaches the anchor
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(root_crl, sub_crl))
    _refused(bank, "cert-register", "certificate-chain", lambda: bank.register(mc, token))
    # the intermediate revoked by the root's CRL: refused although the leaf is not listed
    revoked_sub = bank.ca.crl([sub.cert.serial_number])
    bank.trust = CertTrust(anchors=(bank.ca.cert,), intermediates=(sub.cert,), crls=(revoked_sub, sub_crl))
    _refused(bank, "cert-register", "certificate-issuer-revoked", lambda: bank.register(mc, token))
    bank.trust = CertTrust(anchors=(bank.ca.cert,), intermediates=(sub.cert,), crls=(root_crl, sub_crl))
    assert bank.register(mc, token).state is CertState.ACTIVE


def test_a_stale_crl_says_nothing_and_only_accepted_key_types_register(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl(next_update=T0 - DAY),))
    _refused(bank, "cert-register", "certificate-revocation-unknown", lambda: bank.register(mc, token))
    trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl(),))
    for key in (ec.generate_private_key(ec.SECP521R1()), rsa.generate_private_key(65537, 1024)):
        cert = bank.ca.issue(key.public_key())
        assert check_certificate(cert, trust, T0) == (None, "key-type")
    assert check_certificate(token.cert, trust, T0)[1] == ""


def test_expiry_after_registration_refuses_authentication(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca, not_after=T0 + DAY)
    cred = bank.register(mc, token)
    bank.clock.advance(2 * 86400)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl(),))
    ch = bank.pay(cred.cert_id)
    _refused(
        bank,
        "cert-authenticate",
        "certificate-expired",
        lambda: bank.cv.authenticate(ch.challenge_id, token.sign(ch.message)),
    )


# -- operation-bound authentication ---------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm",
    [PivAlgorithm.ECC_P256, PivAlgorithm.ECC_P384, PivAlgorithm.RSA_2048],
    ids=["p256", "p384", "rsa2048"],
)
def test_a_signature_approves_its_operation_once_and_no_other(bank: Bank, algorithm: PivAlgorithm) -> None:
    mc = bank.org()
    token = new_token(bank.ca, algorithm)
    cred = bank.register(mc, token)
    cid = cred.cert_id
    pay = bank.pay(cid, amount="150.00")
    same_data = bank.pay(cid, amount="150.00")  # same operation data, another challenge
    more = bank.pay(cid, amount="1500.00")
    beneficiary = bank.cv.operation_challenge(
        cid, kind="beneficiary", payee="FR7630006000011234567890189", name="Alice Martin"
    )
    signature = token.sign(pay.message)
    reasons = ("wrong-signature", "wrong-signature", "wrong-signature-locked")  # max_fail = 3
    for other, reason in zip((same_data, more, beneficiary), reasons, strict=True):
        _refused(
            bank, "cert-authenticate", reason, lambda o=other: bank.cv.authenticate(o.challenge_id, signature)
        )
    bank.cv.unblock_certificate(cid)  # the three misses above count; start again
    acc = bank.cv.authenticate(pay.challenge_id, signature)
    assert acc.cert_id == cid
    assert acc.txn_digest == pay.txn_digest
    assert dict(acc.details) == {"amount_minor": "15000", "currency": "978", "kind": "payment",
                                 "payee": "FR7630006000011234567890189"}  # fmt: skip
    # replay: the same signature for the same challenge again is refused
    _refused(
        bank,
        "cert-authenticate",
        "challenge-consumed",
        lambda: bank.cv.authenticate(pay.challenge_id, signature),
    )
    ok = bank.cv.authenticate(beneficiary.challenge_id, token.sign(beneficiary.message))
    assert dict(ok.details)["name"] == "Alice Martin"
    assert check_chain(list(bank.store.audit_records())) == ()


def test_the_signed_message_shows_the_operation(bank: Bank) -> None:
    mc = bank.org()
    cred = bank.register(mc, new_token(bank.ca))
    ch = bank.pay(cred.cert_id, amount="12.34")
    text = ch.message.decode()
    assert "purpose=operation" in text
    assert 'amount_minor="1234"' in text
    assert 'currency="978"' in text
    assert ch.purpose is ChallengePurpose.OPERATION


def test_wrong_signatures_lock_then_block_the_certificate(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    admin = bank.register(mc, token, administrator=True)
    cid = admin.cert_id
    junk = new_token(bank.ca)  # a signature by some other key
    for i in range(POLICY.max_fail):
        ch = bank.pay(cid)
        expected = "wrong-signature-locked" if i == POLICY.max_fail - 1 else "wrong-signature"
        _refused(
            bank,
            "cert-authenticate",
            expected,
            lambda c=ch: bank.cv.authenticate(c.challenge_id, junk.sign(c.message)),
        )
    # locked: even the right signature is refused, and not counted
    ch = bank.pay(cid)
    _refused(
        bank,
        "cert-authenticate",
        "locked",
        lambda: bank.cv.authenticate(ch.challenge_id, token.sign(ch.message)),
    )
    bank.clock.advance(POLICY.lock_duration_s)
    ch = bank.pay(cid)
    bank.cv.authenticate(ch.challenge_id, token.sign(ch.message))
    # escalate_after locks within the period block it (the first lock above counts)
    for _ in range(POLICY.escalate_after - 1):
        for _ in range(POLICY.max_fail):
            c = bank.pay(cid)
            with pytest.raises(InvalidCode):
                bank.cv.authenticate(c.challenge_id, junk.sign(c.message))
        bank.clock.advance(POLICY.lock_duration_s)
    assert bank.last_reason("cert-authenticate") == ("reject", "wrong-signature-blocked")
    assert bank.cv.get_certificate(cid).state is CertState.BLOCKED
    with pytest.raises(ValidationError):
        bank.cv.operation_challenge(cid, kind="beneficiary", payee="X", name="Y")
    with pytest.raises(ValidationError, match="the bank may"):
        bank.cv.unblock_certificate(cid, acting_user=admin.user_id)
    assert bank.cv.unblock_certificate(cid).state is CertState.ACTIVE
    ch = bank.pay(cid)
    bank.cv.authenticate(ch.challenge_id, token.sign(ch.message))


def test_an_operation_challenge_closes_after_its_attempts(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    cred = bank.register(mc, token)
    ch = bank.pay(cred.cert_id)
    for _ in range(POLICY.max_attempts_per_operation):
        with pytest.raises(InvalidCode):
            bank.cv.authenticate(ch.challenge_id, b"\x30\x00")
    bank.cv.unblock_certificate(cred.cert_id)
    _refused(
        bank,
        "cert-authenticate",
        "challenge-closed",
        lambda: bank.cv.authenticate(ch.challenge_id, token.sign(ch.message)),
    )


def test_expired_and_unknown_challenges_are_the_uniform_reject(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    cred = bank.register(mc, token)
    ch = bank.pay(cred.cert_id)
    sig = token.sign(ch.message)
    _refused(
        bank,
        "cert-authenticate",
        "unknown-challenge",
        lambda: bank.cv.authenticate("cc-0000000000000000", sig),
    )
    bank.clock.advance(POLICY.operation_ttl_s)
    _refused(
        bank, "cert-authenticate", "challenge-expired", lambda: bank.cv.authenticate(ch.challenge_id, sig)
    )
    # a registration challenge approves no operation
    reg = bank.cv.registration_challenge(mc.org_id)
    _refused(
        bank,
        "cert-authenticate",
        "challenge-purpose",
        lambda: bank.cv.authenticate(reg.challenge_id, token.sign(reg.message)),
    )


# -- trust files ---------------------------------------------------------------------------------


def test_trust_files_are_recorded_by_path_and_read_again(tmp_path: Path) -> None:
    ca = Ca("file CA")
    anchor = write_pem(tmp_path / "ca.pem", ca.cert)
    crl_file = write_pem(tmp_path / "ca.crl", ca.crl())
    setting = trust_setting([anchor], crls=[crl_file])
    assert str(anchor.resolve()) in setting
    assert trust_from_setting(setting).crls[0].get_revoked_certificate_by_serial_number(7) is None
    write_pem(crl_file, ca.crl([7]))  # a new CRL in the same file takes effect on the next read
    assert trust_from_setting(setting).crls[0].get_revoked_certificate_by_serial_number(7) is not None
    with pytest.raises(ConfigError, match="no trust anchors configured"):
        trust_from_setting(None)
    with pytest.raises(ConfigError, match="at least one trust anchor"):
        trust_setting([])
    (tmp_path / "junk.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ConfigError, match="not a PEM or DER certificate"):
        trust_setting([tmp_path / "junk.pem"])
    with pytest.raises(ConfigError, match="cannot read"):
        trust_setting([tmp_path / "missing.pem"])
    with pytest.raises(ConfigError, match="malformed"):
        trust_from_setting('{"anchors": 1}')


# -- concurrency ---------------------------------------------------------------------------------


def _race(calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` at once (after a barrier); each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _prepared(bank: Bank, mc: MasterCode, token: Token, identity: str, **kw: object) -> Callable[[], object]:
    ch = bank.cv.registration_challenge(mc.org_id)
    signature = token.sign(ch.message)  # the card is not shared between threads
    return lambda: bank.cv.register_certificate(
        mc.org_id,
        master_code=mc.code,
        identity_number=identity,
        certificate=token.der,
        challenge_id=ch.challenge_id,
        signature=signature,
        **kw,  # type: ignore[arg-type]
    )


def test_concurrent_registrations_keep_one_administrator_and_one_owner_per_key(bank: Bank) -> None:
    mc, other = bank.org(), bank.org("Other")
    admins = _race(
        [
            _prepared(bank, mc, new_token(bank.ca), "1111111111", administrator=True),
            _prepared(bank, mc, new_token(bank.ca), "2222222222", administrator=True),
        ]
    )
    assert sum(isinstance(r, CertCredential) for r in admins) == 1
    assert all(isinstance(r, CertCredential | InvalidCode | TemporaryFailure) for r in admins)
    assert [u.role for u in bank.cv.list_users(mc.org_id)] == [UserRole.ADMIN]
    token = new_token(bank.ca)  # one key, registered in two organisations at once
    owners = _race([_prepared(bank, mc, token, "3333333333"), _prepared(bank, other, token, "3333333333")])
    assert sum(isinstance(r, CertCredential) for r in owners) == 1
    assert all(isinstance(r, CertCredential | InvalidCode | TemporaryFailure) for r in owners)
    live = [c for o in (mc, other) for c in bank.cv.list_certificates(o.org_id) if c.cert_der == token.der]
    assert len(live) == 1


def test_an_open_challenge_dies_with_its_certificate_or_user(bank: Bank) -> None:
    mc = bank.org()
    admin = bank.register(mc, new_token(bank.ca), identity="1111111111", administrator=True)
    token = new_token(bank.ca)
    cred = bank.register(mc, token, identity="2222222222")
    before_revoke = bank.pay(cred.cert_id)
    bank.cv.revoke_certificate(cred.cert_id, acting_user=admin.user_id, reason="key lost")
    _refused(
        bank,
        "cert-authenticate",
        "state-revoked",
        lambda: bank.cv.authenticate(before_revoke.challenge_id, token.sign(before_revoke.message)),
    )
    second = new_token(bank.ca)
    cred2 = bank.register(mc, second, identity="2222222222", user_id=cred.user_id)
    pending = bank.pay(cred2.cert_id)
    with bank.store.transaction() as tx:  # the user disabled while its certificate stays live
        user = tx.get_org_user(cred.user_id)
        assert user is not None
        disabled = dataclasses.replace(user, disabled=True, version=user.version + 1)
        assert tx.update_org_user(disabled, expected_version=user.version) == 1
    _refused(
        bank,
        "cert-authenticate",
        "user-disabled",
        lambda: bank.cv.authenticate(pending.challenge_id, second.sign(pending.message)),
    )
    with pytest.raises(ValidationError, match="may not remove itself"):
        bank.cv.remove_user(admin.user_id, acting_user=admin.user_id)
