"""yubico-piv-tool 2.2 uses a served capsim PIV card: status, PIN, PUK, key generation.

yubico-piv-tool only looks at readers named "Yubikey" unless ``-r`` names another; it
connects with T=1 only (the PIV ATR offers T=0 and T=1) and resets the card when it
disconnects, so every command below starts from a fresh security status.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from capsim.cards.piv import PivCard, certificate_of, load_piv_card
from capsim.cards.piv.keys import private_key
from tests.pcsc.conftest import ServeFactory
from tests.pcsc.piv_support import HOLDER, PIN, PUK, piv_card_file, run
from tests.pcsc.stack import PcscdStack

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(120)]


@pytest.fixture
def served(serve: ServeFactory, tmp_path: Path) -> Iterator[PivCard]:
    path, _ = piv_card_file(tmp_path)
    card = load_piv_card(path)
    try:
        serve(card)
        yield card
    finally:
        card.close()


@pytest.fixture
def reader(stack: PcscdStack) -> str:
    return stack.readers[0]


def _ypt(reader: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """yubico-piv-tool on ``reader``; its messages go to stderr, so both are in ``stdout`` here."""
    result = run("yubico-piv-tool", "-r", reader, *args, ok=ok)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout + result.stderr, "")


def test_status_shows_the_version_serial_slots_and_pin_tries(served: PivCard, reader: str) -> None:
    status = _ypt(reader, "-a", "status").stdout
    assert "Version:\t5.4.3" in status
    assert f"Serial Number:\t{served.state.serial}" in status
    assert "Slot 9a:\t\n\tAlgorithm:\tRSA2048" in status
    assert "Slot 9c:\t\n\tAlgorithm:\tECCP256" in status
    assert status.count(f"Subject DN:\tCN={HOLDER}") == 2
    assert "PIN tries left:\t3" in status


def test_three_wrong_pins_block_the_pin_and_the_puk_unblocks_it(served: PivCard, reader: str) -> None:
    assert "Successfully verified PIN" in _ypt(reader, "-a", "verify-pin", "-P", PIN).stdout
    messages = [_ypt(reader, "-a", "verify-pin", "-P", "000000", ok=False) for _ in range(3)]
    assert [m.returncode for m in messages] == [1, 1, 1]
    assert "2 tries left" in messages[0].stdout
    assert "1 tries left" in messages[1].stdout
    assert "blocked" in messages[2].stdout
    blocked = _ypt(reader, "-a", "verify-pin", "-P", PIN, ok=False)
    assert "Pin code blocked" in blocked.stdout
    assert served.state.pin_tries == 0
    wrong_puk = _ypt(reader, "-a", "unblock-pin", "-P", "87654321", "-N", "654321", ok=False)
    assert wrong_puk.returncode == 1
    assert served.state.puk_tries == 2
    _ypt(reader, "-a", "unblock-pin", "-P", PUK, "-N", "654321")
    assert (served.state.pin_tries, served.state.puk_tries) == (3, 3)
    assert "Successfully verified PIN" in _ypt(reader, "-a", "verify-pin", "-P", "654321").stdout


def test_change_pin_and_change_puk(served: PivCard, reader: str) -> None:
    _ypt(reader, "-a", "change-pin", "-P", PIN, "-N", "24681357")
    _ypt(reader, "-a", "change-puk", "-P", PUK, "-N", "13572468")
    assert served.state.defaults_in_place() == ("management key",)
    assert _ypt(reader, "-a", "verify-pin", "-P", PIN, ok=False).returncode == 1
    _ypt(reader, "-a", "verify-pin", "-P", "24681357")
    _ypt(reader, "-a", "unblock-pin", "-P", "13572468", "-N", "11223344")
    assert "Successfully verified PIN" in _ypt(reader, "-a", "verify-pin", "-P", "11223344").stdout


def test_generate_a_key_and_import_its_certificate_with_the_default_management_key(
    served: PivCard, reader: str, tmp_path: Path
) -> None:
    public_pem = tmp_path / "9d.pem"
    _ypt(reader, "-a", "generate", "-s", "9d", "-A", "ECCP256", "-o", str(public_pem))
    generated = serialization.load_pem_public_key(public_pem.read_bytes())
    assert served.state.keys[0x9D].algorithm == 0x11
    # a certificate for it (any will do for the card: it stores what the host writes)
    existing = certificate_of(served.state, 0x9C)
    assert existing is not None
    cert_pem = tmp_path / "cert.pem"
    cert_pem.write_bytes(x509.load_der_x509_certificate(existing).public_bytes(serialization.Encoding.PEM))
    _ypt(reader, "-a", "import-certificate", "-s", "9d", "-i", str(cert_pem))
    assert certificate_of(served.state, 0x9D) == existing
    read_back = _ypt(reader, "-a", "read-certificate", "-s", "9d").stdout
    assert read_back.strip() == cert_pem.read_text().strip()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    on_card = private_key(served.state.keys[0x9D].der).public_key()
    assert generated.public_bytes(serialization.Encoding.DER, spki) == on_card.public_bytes(
        serialization.Encoding.DER, spki
    )
    wrong = _ypt(reader, f"--key={'00' * 24}", "-a", "generate", "-s", "9e", ok=False)
    assert wrong.returncode == 1
    assert 0x9E not in served.state.keys


def test_delete_certificate_removes_the_slot_from_status_and_pkcs11(served: PivCard, reader: str) -> None:
    _ypt(reader, "-a", "delete-certificate", "-s", "9c")
    assert 0x5FC10A not in served.state.objects
    status = _ypt(reader, "-a", "status").stdout
    assert "Slot 9c" not in status
    assert "Parse error" not in status
    assert "Slot 9a:\t\n\tAlgorithm:\tRSA2048" in status
    assert run("pkcs11-tool", "-O").stdout.count("Certificate Object") == 1


def test_status_after_an_opensc_session_reads_the_pin_tries(
    served: PivCard, reader: str, tmp_path: Path
) -> None:
    """pkcs11-tool leaves the card with the PIN verified; yubico-piv-tool selects PIV to forget
    it and then reads the tries (a SELECT that kept the status made it print "PIN tries left: -1")."""
    message, signature = tmp_path / "message.bin", tmp_path / "signature.bin"
    message.write_bytes(b"approve")
    run("pkcs11-tool", "--login", "--pin", PIN, "--sign", "--id", "01", "-m", "SHA256-RSA-PKCS",
        "-i", str(message), "-o", str(signature))  # fmt: skip
    assert "PIN tries left:\t3" in _ypt(reader, "-a", "status").stdout
