"""A PKCS#11 signature made through OpenSC approves the operation it was made for in capsim's
certificate verifier, and no other.

The PIV card file is served by ``capsim card serve`` (its own process) into the private pcscd;
``capsim token sign --pkcs11 opensc-pkcs11.so`` signs as a subprocess and python-pkcs11 signs
in this process, both through OpenSC. The verifier is a :class:`CertificateVerifier` on a real
SQLite file, trusting the card's throwaway CA.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from capsim.cards.piv import read_piv_card_file
from capsim.cards.piv.personalise import Personalised
from capsim.errors import InvalidCode
from capsim.verifier.certificates import CertificateVerifier
from capsim.verifier.certmodel import CertChallenge, CertCredential
from capsim.verifier.certtrust import CertTrust
from capsim.verifier.dburl import open_store
from capsim.verifier.provider import SoftwareProvider
from tests.pcsc.piv_support import (
    HOLDER,
    PIN,
    PUK,
    certificate,
    opensc_module,
    piv_card_file,
    run,
    serve_process,
)
from tests.pcsc.stack import PcscdStack

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install 'capsim[pkcs11]')")

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(180)]

PAYEE = "FR7630006000011234567890189"


@dataclass
class Served:
    path: Path
    made: Personalised
    module: str
    reader: str


@dataclass
class Bank:
    cv: CertificateVerifier
    cred: CertCredential


@pytest.fixture(scope="module")
def served(pcscd_session: PcscdStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not pcscd_session.running:
        pcscd_session.start()
    path, made = piv_card_file(tmp_path_factory.mktemp("token"))
    with serve_process(path, pcscd_session):
        yield Served(path, made, opensc_module(), pcscd_session.readers[0])


def _sign_cli(
    served: Served, message: bytes, tmp: Path, *, pin: str = PIN, pcsc: bool = False
) -> subprocess.CompletedProcess[str]:
    """``capsim token sign`` as a subprocess: through OpenSC's PKCS#11 module, or with ``pcsc``
    through capsim's own PIV client over PC/SC."""
    msg = tmp / f"msg-{secrets.token_hex(4)}.txt"
    msg.write_bytes(message)
    if pcsc:
        args = ["token", "sign", "--reader", f"pcsc:{served.reader}"]
    else:
        args = ["token", "sign", "--pkcs11", served.module, "--token-label", HOLDER, "--key-id", "02"]
    return subprocess.run(
        [sys.executable, "-m", "capsim", *args, "--message", str(msg), "--pin-stdin"],
        input=pin + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _sign_python(served: Served, message: bytes) -> bytes:
    """python-pkcs11 in this process: ECDSA-SHA256 with the 9C key (PKCS#11 id 02), ``r || s``
    turned into DER as the verifier takes it."""
    token = pkcs11.lib(served.module).get_token(token_label=HOLDER)
    with token.open(user_pin=PIN) as session:
        key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, id=b"\x02")
        raw = key.sign(message, mechanism=pkcs11.Mechanism.ECDSA_SHA256)
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


def _bank(served: Served, tmp: Path) -> Bank:
    """A verifier on a SQLite file trusting the card's CA; the 9C certificate registered with an
    organisation (master code, identity number, proof of possession signed through OpenSC)."""
    assert served.made.ca is not None
    provider = SoftwareProvider()
    provider.set_audit_seal_key("aud-test", secrets.token_bytes(32))
    store = open_store(tmp / "verifier.db")
    trust = CertTrust(anchors=(served.made.ca.certificate,), require_crl=False)
    cv = CertificateVerifier(store, provider, trust=trust)
    mc = cv.create_organisation("ACME Fournitures")
    reg = cv.registration_challenge(mc.org_id)
    der = certificate(served.path, 0x9C).public_bytes(Encoding.DER)
    cred = cv.register_certificate(
        mc.org_id,
        master_code=mc.code,
        identity_number="1850775123456",
        certificate=der,
        challenge_id=reg.challenge_id,
        signature=_sign_python(served, reg.message),
        administrator=True,
    )
    return Bank(cv, cred)


def _pay(bank: Bank, amount: str) -> CertChallenge:
    return bank.cv.operation_challenge(
        bank.cred.cert_id, kind="payment", amount=amount, currency="EUR", payee=PAYEE
    )


def test_a_capsim_token_sign_through_opensc_approves_its_operation_only(
    served: Served, tmp_path: Path
) -> None:
    bank = _bank(served, tmp_path)
    pay = _pay(bank, "150.00")
    other = _pay(bank, "1500.00")
    beneficiary = bank.cv.operation_challenge(
        bank.cred.cert_id, kind="beneficiary", payee=PAYEE, name="Alice Martin"
    )
    run = _sign_cli(served, pay.message, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    signature = bytes.fromhex(run.stdout.strip())
    for wrong in (other, beneficiary):  # any other operation: refused
        with pytest.raises(InvalidCode):
            bank.cv.authenticate(wrong.challenge_id, signature)
    accepted = bank.cv.authenticate(pay.challenge_id, signature)
    assert dict(accepted.details) == {
        "amount_minor": "15000", "currency": "978", "kind": "payment", "payee": PAYEE,
    }  # fmt: skip
    with pytest.raises(InvalidCode):  # replay
        bank.cv.authenticate(pay.challenge_id, signature)
    # the operations refused above are still open: each accepts its own signature
    own = _sign_cli(served, beneficiary.message, tmp_path)
    assert own.returncode == 0, own.stderr
    assert (
        dict(bank.cv.authenticate(beneficiary.challenge_id, bytes.fromhex(own.stdout.strip())).details)[
            "name"
        ]
        == "Alice Martin"
    )


def test_a_python_pkcs11_signature_is_bound_the_same_way(served: Served, tmp_path: Path) -> None:
    bank = _bank(served, tmp_path)
    pay, other = _pay(bank, "42.00"), _pay(bank, "42.01")
    signature = _sign_python(served, pay.message)
    with pytest.raises(InvalidCode):
        bank.cv.authenticate(other.challenge_id, signature)
    assert bank.cv.authenticate(pay.challenge_id, signature).challenge_id == pay.challenge_id
    with pytest.raises(InvalidCode):
        bank.cv.authenticate(pay.challenge_id, signature)


def test_token_sign_with_a_wrong_pin_says_so_and_the_card_counts_it(served: Served, tmp_path: Path) -> None:
    run = _sign_cli(served, b"capsim certificate challenge v1\n", tmp_path, pin="000000")
    assert run.returncode == 3, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("capsim: error: wrong PIN")
    assert "Traceback" not in run.stderr
    assert read_piv_card_file(served.path)[1].pin_tries == 2
    ok = _sign_cli(served, b"capsim certificate challenge v1\n", tmp_path)  # a right PIN resets it
    assert ok.returncode == 0, ok.stderr
    assert read_piv_card_file(served.path)[1].pin_tries == 3


def test_capsim_s_piv_client_over_pcsc_signs_the_same_way(served: Served, tmp_path: Path) -> None:
    bank = _bank(served, tmp_path)
    pay, other = _pay(bank, "7.00"), _pay(bank, "7.01")
    run = _sign_cli(served, pay.message, tmp_path, pcsc=True)
    assert run.returncode == 0, run.stderr
    signature = bytes.fromhex(run.stdout.strip())
    with pytest.raises(InvalidCode):
        bank.cv.authenticate(other.challenge_id, signature)
    assert bank.cv.authenticate(pay.challenge_id, signature).challenge_id == pay.challenge_id


def test_a_blocked_pin_is_refused_before_the_prompt_and_the_puk_unblocks_it(
    served: Served, tmp_path: Path
) -> None:
    message = b"capsim certificate challenge v1\n"
    codes = [_sign_cli(served, message, tmp_path, pin="000000").returncode for _ in range(3)]
    assert codes == [3, 3, 4]
    assert read_piv_card_file(served.path)[1].pin_tries == 0
    for pcsc in (False, True):  # the right PIN: refused all the same, before it is read
        blocked = _sign_cli(served, message, tmp_path, pcsc=pcsc)
        assert blocked.returncode == 4, blocked.stderr
        last = blocked.stderr.strip().splitlines()[-1]
        assert last.startswith("capsim: error: PIN blocked"), last
        assert "PUK" in last
        assert "Traceback" not in blocked.stderr
    assert read_piv_card_file(served.path)[1].pin_tries == 0
    run("pkcs15-tool", "--unblock-pin", "--puk", PUK, "--new-pin", PIN)
    assert _sign_cli(served, message, tmp_path, pcsc=True).returncode == 0
