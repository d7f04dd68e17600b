"""OpenSC 0.23 uses a served capsim PIV card: ``opensc-tool``, ``pkcs11-tool``, ``pkcs15-tool``.

The card is made by ``capsim card new --template piv`` (or the same personalisation from
Python) and served through vpcd (``capsim card serve`` as a process, or the server in a
thread); every signature OpenSC returns is verified against the card's certificate with
openssl or pyca/cryptography, never re-computed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from capsim.cards.piv import PivCard, load_piv_card
from capsim.cli import main
from tests.pcsc.conftest import ServeFactory
from tests.pcsc.piv_support import (
    HOLDER,
    PIN,
    PUK,
    certificate,
    piv_card_file,
    run,
    serve_process,
    verify_signature,
)
from tests.pcsc.stack import PcscdStack

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(120)]

MESSAGE = b"add beneficiary FR7630006000011234567890189, limit 1000 EUR"


@pytest.fixture
def served(serve: ServeFactory, tmp_path: Path) -> Iterator[tuple[PivCard, Path]]:
    """A personalised PIV card file, served in slot 0 (the card object is the served one)."""
    path, _ = piv_card_file(tmp_path)
    card = load_piv_card(path)
    try:
        serve(card)
        yield card, path
    finally:
        card.close()


def _sign(tmp_path: Path, key_id: str, mechanism: str, pin: str = PIN, ok: bool = True) -> bytes:
    message, signature = tmp_path / "message.bin", tmp_path / f"signature-{key_id}-{mechanism}.bin"
    message.write_bytes(MESSAGE)
    result = run(
        "pkcs11-tool",
        "--login",
        "--pin",
        pin,
        "--sign",
        "--id",
        key_id,
        "-m",
        mechanism,
        "-i",
        str(message),
        "-o",
        str(signature),
        ok=ok,
    )
    return signature.read_bytes() if result.returncode == 0 else b""


def test_capsim_card_serve_exposes_a_new_piv_card_file_to_opensc(tmp_path: Path, stack: PcscdStack) -> None:
    path = tmp_path / "token.json"
    created = CliRunner().invoke(main, ["card", "new", str(path), "--template", "piv", "--holder", HOLDER])
    assert created.exit_code == 0, created.output
    shown = CliRunner().invoke(main, ["card", "show", str(path), "--json"])
    guid = json.loads(shown.stdout)["guid"]
    with serve_process(path, stack):
        assert run("opensc-tool", "-n").stdout.strip() == "Personal Identity Verification Card"
        listing = run("pkcs11-tool", "-L").stdout
    assert f"token label        : {HOLDER}" in listing
    serial = listing.split("serial num         : ")[1].split()[0]
    assert guid.lower().endswith(serial)  # OpenSC's token serial comes from the CHUID's GUID


def test_pkcs11_tool_lists_the_keys_and_certificates_of_both_slots(served: tuple[PivCard, Path]) -> None:
    objects = run("pkcs11-tool", "-O").stdout
    for label in ("Certificate for PIV Authentication", "Certificate for Digital Signature"):
        assert f"label:      {label}" in objects
    assert objects.count(f"subject:    DN: CN={HOLDER}") == 2
    assert "Public Key Object; RSA 2048 bits" in objects
    assert "Public Key Object; EC" in objects
    private = run("pkcs11-tool", "--login", "--pin", PIN, "-O", "--type", "privkey").stdout
    assert "label:      PIV AUTH key" in private
    assert "label:      SIGN key" in private


def test_rsa_signature_of_the_9a_key_verifies_with_openssl(
    served: tuple[PivCard, Path], tmp_path: Path
) -> None:
    card, path = served
    signature = _sign(tmp_path, "01", "SHA256-RSA-PKCS")
    cert = certificate(path, 0x9A)
    public = tmp_path / "public.pem"
    public.write_bytes(
        cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "signature.bin").write_bytes(signature)
    checked = run(
        "openssl",
        "dgst",
        "-sha256",
        "-verify",
        str(public),
        "-signature",
        str(tmp_path / "signature.bin"),
        str(tmp_path / "message.bin"),
    )
    assert checked.stdout.strip() == "Verified OK"
    # RSA-PKCS: the card's raw RSA over OpenSC's PKCS#1 v1.5 block of the message itself
    raw = _sign(tmp_path, "01", "RSA-PKCS")
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.recover_data_from_signature(raw, padding.PKCS1v15(), None) == MESSAGE
    assert card.state.pin_tries == 3


def test_ecdsa_signature_of_the_pin_always_9c_key_verifies(
    served: tuple[PivCard, Path], tmp_path: Path
) -> None:
    _, path = served
    for mechanism in ("ECDSA-SHA256", "ECDSA-SHA256"):  # the context-specific login, each time
        signature = _sign(tmp_path, "02", mechanism)
        assert len(signature) == 64  # PKCS#11's r || s
        verify_signature(certificate(path, 0x9C), signature, MESSAGE, raw_ecdsa=True)


def test_wrong_pins_count_on_the_card_and_pkcs15_tool_unblocks_with_the_puk(
    served: tuple[PivCard, Path], tmp_path: Path
) -> None:
    card, path = served
    for left in (2, 1, 0):
        assert _sign(tmp_path, "01", "SHA256-RSA-PKCS", pin="000000", ok=False) == b""
        assert card.state.pin_tries == left
    refused = run("pkcs11-tool", "--login", "--pin", PIN, "-O", ok=False)
    assert refused.returncode != 0
    assert "CKR_PIN_LOCKED" in refused.stdout + refused.stderr
    run("pkcs15-tool", "--unblock-pin", "--puk", PUK, "--new-pin", "654321")
    assert card.state.pin_tries == 3
    signature = _sign(tmp_path, "01", "SHA256-RSA-PKCS", pin="654321")
    verify_signature(certificate(path, 0x9A), signature, MESSAGE, raw_ecdsa=False)


def test_pkcs11_random_bytes_come_from_the_card(served: tuple[PivCard, Path], tmp_path: Path) -> None:
    out = tmp_path / "random.bin"
    run("pkcs11-tool", "--generate-random", "16", "-o", str(out))
    first = out.read_bytes()
    run("pkcs11-tool", "--generate-random", "16", "-o", str(out))
    assert len(first) == 16
    assert out.read_bytes() != first
