"""The bench of the certificate-credential tests: a certificate verifier on one store of each
backend, its CA and trust, and the uniform-reject assertion (reason read back from the audit)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from capsim.errors import InvalidCode
from capsim.verifier.certificates import CertificateVerifier, MasterCode
from capsim.verifier.certmodel import CertChallenge, CertCredential
from capsim.verifier.certtrust import CertTrust
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.store import Store
from tests.verifier.certpki import Ca, Token
from tests.verifier.conftest import Clock, StoreFactory

__all__ = ["POLICY", "Bank", "bank", "refused"]


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


def refused(bank: Bank, event: str, reason: str, call: Callable[[], object]) -> None:
    with pytest.raises(InvalidCode) as info:
        call()
    assert str(info.value) == "code rejected"  # the one uniform reject
    assert bank.last_reason(event) == ("reject", reason)
