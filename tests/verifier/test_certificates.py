"""Certificate credentials in the verifier: organisations, registration and its rules.

The token is capsim's emulated PIV card, signing through its APDUs; the certificates come from
a throwaway CA (tests/verifier/certpki.py). Each rule is checked on memory, SQLite and the
throwaway PostgreSQL cluster (``store_factory``), and each refusal's reason is read back from
the audit chain, since callers only ever see the uniform reject.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable

import pytest

from capsim.errors import ConfigError, InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier.certificates import CertificateVerifier, MasterCode
from capsim.verifier.certmodel import CertCredential, CertState, OrgUser
from capsim.verifier.certtrust import CertTrust
from capsim.verifier.model import UserRole
from capsim.verifier.provider import SoftwareProvider
from tests.verifier.certbench import POLICY, Bank, bank, refused
from tests.verifier.certpki import T0, Ca, Token, new_token
from tests.verifier.conftest import StoreFactory

__all__ = ["bank"]  # the fixture


# -- organisations, master code, administrator ----------------------------------------------------


def test_registration_needs_the_organisation_master_code(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    wrong = "0" * 16 if mc.code != "0" * 16 else "1" * 16
    refused(bank, "cert-register", "master-code", lambda: bank.register(mc, token, master_code=wrong))
    other = bank.org("Other Ltd")  # another organisation's code does not open this one
    refused(bank, "cert-register", "master-code", lambda: bank.register(mc, token, master_code=other.code))
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
    refused(
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
    refused(
        bank,
        "cert-register",
        "identity-mismatch",
        lambda: bank.register(mc, new_token(bank.ca), identity="2222222222", user_id=uid),
    )
    # nor may another user's identity number (a registered one)
    bank.register(mc, new_token(bank.ca), identity="3333333333")
    refused(
        bank,
        "cert-register",
        "identity-mismatch",
        lambda: bank.register(mc, new_token(bank.ca), identity="3333333333", user_id=uid),
    )
    # the same identity without the identifier is not a second identifier
    refused(
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
    refused(bank, "cert-register", "key-registered", lambda: bank.register(mc, token, identity="2222222222"))
    other = bank.org("Other")  # not in another organisation either
    refused(
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

    refused(bank, "cert-register", "signature", steal)
    # a challenge issued for another organisation proves nothing here
    elsewhere = bank.org("Elsewhere")
    foreign = bank.cv.registration_challenge(elsewhere.org_id)
    refused(
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
    refused(
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


def test_a_registration_challenge_closes_after_its_attempts_but_not_on_a_wrong_master_code(
    bank: Bank,
) -> None:
    mc = bank.org()
    holder, thief = new_token(bank.ca), new_token(bank.ca)
    ch = bank.cv.registration_challenge(mc.org_id)

    def attempt(token: Token, code: str) -> CertCredential:
        return bank.cv.register_certificate(
            mc.org_id,
            master_code=code,
            identity_number="1850775123456",
            certificate=holder.der,
            challenge_id=ch.challenge_id,
            signature=token.sign(ch.message),
        )

    wrong = "0" * 16 if mc.code != "0" * 16 else "1" * 16
    for _ in range(POLICY.max_attempts_per_operation + 1):  # wrong codes cost the challenge nothing
        refused(bank, "cert-register", "master-code", lambda: attempt(holder, wrong))
    for _ in range(POLICY.max_attempts_per_operation):
        refused(bank, "cert-register", "signature", lambda: attempt(thief, mc.code))
    refused(bank, "cert-register", "challenge-closed", lambda: attempt(holder, mc.code))
