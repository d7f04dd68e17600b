"""``capsim demo --certificate``: a certificate token and the verifier, end to end.

Reference: ``docs/certificate.md`` ("The demo"); the steps print like the CAP demo's
(:mod:`capsim.cli.demo`; both use :class:`~capsim.cli.demo_steps.DemoStep`).

Theory of operation
-------------------
1. A PIV token is personalised in process (:func:`capsim.cards.piv.personalise.personalise`: a
   P-256 key in slot ``9C`` with a certificate from a throwaway CA, PIN :data:`DEMO_TOKEN_PIN`,
   a random PUK)
   into a card file in the demo's directory; the CA certificate and an empty CRL it signed are
   written beside it and recorded as the verifier's trust. The verifier's database is the one
   the CAP demo would use (a SQLite file in the directory, or ``--db``).
2. The token is used only through capsim's PIV client (:class:`capsim.reader.piv.PivClient`)
   over the ``file:`` transport, as a host uses a USB key: the demo builds no APDU itself.
3. The story: the bank creates an organisation; a wrong master code is refused; its first
   registrant registers the token's certificate as the organisation's administrator (master
   code, identity number, proof of possession); a beneficiary addition is signed and accepted,
   the same signature is refused for a payment and on replay; three wrong PINs block the
   token's PIN, the PUK unblocks it (RESET RETRY COUNTER) and sets a new PIN, and a new
   signature is accepted; the audit chain is intact.
4. Each step states what must happen; the first that does otherwise stops the demo (exit 14),
   as in the CAP demo. The master code, the identity number and the PUK are never shown.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from capsim.cards.piv import PivAlgorithm, new_piv_card
from capsim.cards.piv.personalise import ThrowawayCa, personalise
from capsim.cli.demo_steps import DemoStep
from capsim.cli.verifier import default_keyring
from capsim.errors import CapsimError, InvalidCode, PinBlockedError, PinError
from capsim.reader.piv import PivClient
from capsim.transports import open_transport
from capsim.verifier.certificates import CertificateVerifier
from capsim.verifier.certmodel import CertChallenge
from capsim.verifier.certtrust import trust_from_setting, trust_setting
from capsim.verifier.provider import CryptogramProvider
from capsim.verifier.session import open_session
from capsim.verifier.store import Store

__all__ = ["DEMO_TOKEN_PIN", "run_certificate_demo"]

#: The throwaway token's PIN (a demo value, shown like the CAP demo's card PIN).
DEMO_TOKEN_PIN: Final = "246810"  # noqa: S105 (a documented demo value)
_NEW_PIN: Final = "135791"
_WRONG_PIN: Final = "000000"
_SLOT: Final = 0x9C
_HOLDER: Final = "Alice Martin"
_PAYEE: Final = "FR7630006000011234567890189"
_BENEFICIARY: Final = "Bob Durand"


def _crl(ca: ThrowawayCa) -> bytes:
    """An empty CRL signed by the throwaway CA, current for a week (PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=7))
        .sign(ca.key, hashes.SHA256())
    )
    return crl.public_bytes(Encoding.PEM)


class _Story:
    """The running demo: the token's card file, the certificate verifier, the steps so far."""

    def __init__(self, workdir: Path, on_step: Callable[[DemoStep], None]) -> None:
        self.card = workdir / "token.json"
        self.on_step = on_step
        self.steps: list[DemoStep] = []
        self.current = "personalise"
        self.puk = ""

    def record(self, name: str, title: str, expected: str, observed: str, detail: str) -> bool:
        step = DemoStep(name=name, title=title, expected=expected, observed=observed, detail=detail)
        self.steps.append(step)
        self.on_step(step)
        return step.ok

    def token(self, action: Callable[[PivClient], str]) -> str:
        """One session with the token (power on, SELECT, ``action``, power off)."""
        with open_transport(f"file:{self.card}") as link:
            piv = PivClient(link)
            piv.select()
            return action(piv)

    def sign(self, message: bytes, pin: str) -> bytes:
        """What a host does: VERIFY the PIN, then sign with slot 9C ("PIN always")."""

        def act(piv: PivClient) -> str:
            piv.verify_pin(pin)
            return piv.sign_message(_SLOT, message).hex()

        return bytes.fromhex(self.token(act))


def run_certificate_demo(
    workdir: Path, *, db: str | None, on_step: Callable[[DemoStep], None]
) -> list[DemoStep]:
    """Run every step in ``workdir`` (rule 3); stop at the first that misbehaves. A capsim error
    inside a step ends the demo with that step recorded as failed."""
    url = db if db is not None else str(workdir / "verifier.db")
    s = _Story(workdir, on_step)
    with open_session(url, keyring_path=default_keyring(url), create=True, allow_memory=True) as session:
        try:
            _steps(s, workdir, session.store, session.provider, session.verifier.check_audit)
        except CapsimError as exc:
            s.record(
                s.current,
                f"{s.current}: the step could not complete",
                "completed",
                "error",
                f"{type(exc).__name__}: {exc}",
            )
    return s.steps


def _steps(
    s: _Story, workdir: Path, store: Store, provider: CryptogramProvider, check_audit: Callable[[], object]
) -> None:
    # 1. personalise the token, write the CA and its CRL, record them as the verifier's trust
    puk = "".join(secrets.choice("0123456789") for _ in range(8))  # the issuer's, never shown
    made = personalise(holder=_HOLDER, algorithm=PivAlgorithm.ECC_P256, pin=DEMO_TOKEN_PIN, puk=puk)
    assert made.ca is not None  # generated keys: a throwaway CA issued the certificates
    s.puk = made.state.puk
    new_piv_card(made.state, path=s.card).close()
    (workdir / "token-ca.pem").write_text(made.ca.certificate_pem())
    (workdir / "token-ca.crl").write_bytes(_crl(made.ca))
    cert = made.certificates[_SLOT]
    s.record(
        "personalise",
        "personalise a PIV token (slot 9C: P-256 key and certificate)",
        "ok",
        "ok",
        f"{cert.subject.rfc4514_string()}, issued by {made.ca.certificate.subject.rfc4514_string()}; "
        f"PIN {DEMO_TOKEN_PIN}, a random PUK (not shown)",
    )
    setting = trust_setting([workdir / "token-ca.pem"], crls=[workdir / "token-ca.crl"])
    cv = CertificateVerifier(store, provider, trust=lambda: trust_from_setting(setting))
    cv.record_trust(setting)

    # 2. the organisation
    s.current = "organisation"
    mc = cv.create_organisation("ACME Fournitures", kind="supplier")
    s.record(
        "organisation",
        "the bank creates an organisation (supplier) and its master code",
        "ok",
        "ok",
        f"organisation {mc.org_id}; master code handed over out of band (not shown)",
    )
    der = s.token(lambda piv: piv.read_certificate(_SLOT).hex())
    identity = "1850775123456"

    def register(code: str, title: str, name: str, expected: str) -> str | None:
        s.current = name
        ch = cv.registration_challenge(mc.org_id)
        signature = s.sign(ch.message, DEMO_TOKEN_PIN)
        try:
            cred = cv.register_certificate(
                mc.org_id,
                master_code=code,
                identity_number=identity,
                certificate=bytes.fromhex(der),
                challenge_id=ch.challenge_id,
                signature=signature,
                administrator=True,
            )
        except InvalidCode:
            s.record(name, title, expected, "reject", f"challenge {ch.challenge_id}: registration refused")
            return None
        s.record(
            name,
            title,
            expected,
            "accept",
            f"certificate {cred.cert_id} for identifier {cred.user_id}, the organisation's "
            "administrator; proof of possession signed by slot 9C",
        )
        return cred.cert_id

    # 3. a wrong master code, then the real registration as the organisation's administrator
    wrong = "".join(secrets.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(16))
    if register(wrong, "register with a wrong master code", "wrong-master-code", "reject") is not None:
        return
    cert_id = register(
        mc.code,
        "register the token's certificate as the organisation's administrator "
        "(master code, identity number, proof of possession)",
        "register",
        "accept",
    )
    if cert_id is None:
        return

    def judge(
        name: str, title: str, ch: CertChallenge, signature: bytes, *, expected: str, note: str
    ) -> bool:
        s.current = name
        try:
            acc = cv.authenticate(ch.challenge_id, signature)
            observed, detail = "accept", f"{dict(acc.details)['kind']} approved by {acc.cert_id}"
        except InvalidCode:
            observed, detail = "reject", "signature rejected"
        return s.record(name, title, expected, observed, f"{note}; {detail}")

    # 4. a beneficiary addition, operation-bound: accepted once, for that operation only
    s.current = "beneficiary"
    add = cv.operation_challenge(cert_id, kind="beneficiary", payee=_PAYEE, name=_BENEFICIARY)
    signature = s.sign(add.message, DEMO_TOKEN_PIN)
    if not judge(
        "beneficiary",
        f"sign the addition of beneficiary {_BENEFICIARY} ({_PAYEE})",
        add,
        signature,
        expected="accept",
        note=f"challenge {add.challenge_id}, {len(signature)}-byte ECDSA signature",
    ):
        return
    s.current = "other-operation"
    pay = cv.operation_challenge(cert_id, kind="payment", amount="950.00", currency="EUR", payee=_PAYEE)
    if not judge(
        "other-operation",
        "the same signature presented for a payment of 950.00 EUR",
        pay,
        signature,
        expected="reject",
        note=f"challenge {pay.challenge_id}",
    ):
        return
    if not judge(
        "replay",
        "the beneficiary signature replayed",
        add,
        signature,
        expected="reject",
        note=f"challenge {add.challenge_id} again",
    ):
        return

    # 5. three wrong PINs block the token's PIN
    s.current = "wrong-pins"
    tries: list[str] = []
    for _ in range(3):
        try:
            s.sign(b"x", _WRONG_PIN)
            tries.append("accepted")
        except PinError as exc:
            tries.append(str(exc.tries_left))
        except PinBlockedError:
            tries.append("blocked")
    try:
        s.sign(b"x", DEMO_TOKEN_PIN)
        observed, after = "pin-usable", "right PIN accepted"
    except PinBlockedError:
        observed = "pin-blocked" if tries == ["2", "1", "0"] else "unexpected-tries"
        after = "the right PIN is refused: PIN blocked"
    if not s.record(
        "wrong-pins",
        "three wrong PINs block the token's PIN",
        "pin-blocked",
        observed,
        f"tries left {', '.join(tries)}; {after}",
    ):
        return

    # 6. the PUK unblocks it and sets a new PIN
    s.current = "puk-unblock"

    def unblock(piv: PivClient) -> str:
        piv.reset_pin(s.puk, _NEW_PIN)
        return str(piv.pin_tries())

    left = s.token(unblock)
    s.record(
        "puk-unblock",
        "the PUK unblocks the PIN and sets a new one (RESET RETRY COUNTER)",
        "ok",
        "ok" if left == "3" else "unexpected-tries",
        f"new PIN {_NEW_PIN}, {left} tries left",
    )
    if not s.steps[-1].ok:
        return

    # 7. a new signature with the new PIN is accepted
    s.current = "signature-after-unblock"
    again = cv.operation_challenge(cert_id, kind="beneficiary", payee=_PAYEE, name=_BENEFICIARY)
    if not judge(
        "signature-after-unblock",
        "sign the beneficiary addition again with the new PIN",
        again,
        s.sign(again.message, _NEW_PIN),
        expected="accept",
        note=f"challenge {again.challenge_id}",
    ):
        return

    # 8. the audit chain
    s.current = "audit"
    problems = check_audit()
    s.record(
        "audit",
        "the verifier's hash-chained audit is intact",
        "intact",
        "intact" if not problems else "broken",
        f"{sum(1 for _ in store.audit_records())} records: organisation, registrations, signatures",
    )
