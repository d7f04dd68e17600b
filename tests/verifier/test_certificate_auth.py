"""Certificate credentials in the verifier: validation (chain, dates, keyUsage, CRL) and
operation-bound authentication (binding, replay, lockout), on every store backend, with the
emulated PIV card signing through its APDUs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from capsim.cards.piv import PivAlgorithm
from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.verifier.audit import check_chain
from capsim.verifier.certmodel import CertState, ChallengePurpose
from capsim.verifier.certtrust import CertTrust, check_certificate, trust_from_setting, trust_setting
from tests.verifier.certbench import POLICY, Bank, bank, refused
from tests.verifier.certpki import DAY, T0, Ca, Token, new_token, write_pem

__all__ = ["bank"]  # the fixture


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
    refused(bank, "cert-register", reason, lambda: bank.register(mc, token))


def test_crl_revocation_signature_and_presence(bank: Bank) -> None:
    mc = bank.org()
    revoked = new_token(bank.ca)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl([revoked.cert.serial_number]),))
    refused(bank, "cert-register", "certificate-revoked", lambda: bank.register(mc, revoked))
    # a CRL not signed by the issuer is ignored: the revocation status is unknown
    forged = bank.ca.crl([], signer=Ca("forger").key)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(forged,))
    fine = new_token(bank.ca)
    refused(bank, "cert-register", "certificate-revocation-unknown", lambda: bank.register(mc, fine))
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=())
    refused(bank, "cert-register", "certificate-revocation-unknown", lambda: bank.register(mc, fine))
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl(),))
    cred = bank.register(mc, fine)
    # revoked after registration: the next authentication is refused, nothing counted
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl([fine.cert.serial_number]),))
    ch = bank.pay(cred.cert_id)
    refused(
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
    refused(bank, "cert-register", "certificate-chain", lambda: bank.register(mc, token))
    # the intermediate revoked by the root's CRL: refused although the leaf is not listed
    revoked_sub = bank.ca.crl([sub.cert.serial_number])
    bank.trust = CertTrust(anchors=(bank.ca.cert,), intermediates=(sub.cert,), crls=(revoked_sub, sub_crl))
    refused(bank, "cert-register", "certificate-issuer-revoked", lambda: bank.register(mc, token))
    bank.trust = CertTrust(anchors=(bank.ca.cert,), intermediates=(sub.cert,), crls=(root_crl, sub_crl))
    assert bank.register(mc, token).state is CertState.ACTIVE


def test_a_stale_crl_says_nothing_and_only_accepted_key_types_register(bank: Bank) -> None:
    mc = bank.org()
    token = new_token(bank.ca)
    bank.trust = CertTrust(anchors=(bank.ca.cert,), crls=(bank.ca.crl(next_update=T0 - DAY),))
    refused(bank, "cert-register", "certificate-revocation-unknown", lambda: bank.register(mc, token))
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
    refused(
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
        refused(
            bank, "cert-authenticate", reason, lambda o=other: bank.cv.authenticate(o.challenge_id, signature)
        )
    bank.cv.unblock_certificate(cid)  # the three misses above count; start again
    acc = bank.cv.authenticate(pay.challenge_id, signature)
    assert acc.cert_id == cid
    assert acc.txn_digest == pay.txn_digest
    assert dict(acc.details) == {"amount_minor": "15000", "currency": "978", "kind": "payment",
                                 "payee": "FR7630006000011234567890189"}  # fmt: skip
    # replay: the same signature for the same challenge again is refused
    refused(
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
        refused(
            bank,
            "cert-authenticate",
            expected,
            lambda c=ch: bank.cv.authenticate(c.challenge_id, junk.sign(c.message)),
        )
    # locked: even the right signature is refused, and not counted
    ch = bank.pay(cid)
    refused(
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
    refused(
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
    refused(
        bank,
        "cert-authenticate",
        "unknown-challenge",
        lambda: bank.cv.authenticate("cc-0000000000000000", sig),
    )
    bank.clock.advance(POLICY.operation_ttl_s)
    refused(
        bank, "cert-authenticate", "challenge-expired", lambda: bank.cv.authenticate(ch.challenge_id, sig)
    )
    # a registration challenge approves no operation
    reg = bank.cv.registration_challenge(mc.org_id)
    refused(
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


def test_an_open_challenge_dies_with_its_certificate_or_user(bank: Bank) -> None:
    mc = bank.org()
    admin = bank.register(mc, new_token(bank.ca), identity="1111111111", administrator=True)
    token = new_token(bank.ca)
    cred = bank.register(mc, token, identity="2222222222")
    before_revoke = bank.pay(cred.cert_id)
    bank.cv.revoke_certificate(cred.cert_id, acting_user=admin.user_id, reason="key lost")
    refused(
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
    refused(
        bank,
        "cert-authenticate",
        "user-disabled",
        lambda: bank.cv.authenticate(pending.challenge_id, second.sign(pending.message)),
    )
    with pytest.raises(ValidationError, match="may not remove itself"):
        bank.cv.remove_user(admin.user_id, acting_user=admin.user_id)
