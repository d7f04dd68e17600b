"""PIV card files on the command line: ``card new --template piv``, ``card show``, and ``card
unblock`` / ``change-pin`` / ``change-puk`` with the PUK (docs/certificate.md).

Every command runs through the click entry point against a real card file; what the card
holds is checked from the host's side (certificates chained to the saved CA with
pyca/cryptography, signatures and the management key through the card's APDUs).
"""

from __future__ import annotations

import datetime
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from capsim.cards.piv import PivAlgorithm, certificate_of, load_piv_card, new_piv_card, read_piv_card_file
from capsim.cards.piv.keys import private_key
from capsim.cards.piv.personalise import chuid_guid, personalise
from capsim.cli._common import ExitCode
from tests.cards.test_piv import mgmt_auth, sign, verify
from tests.cli.helpers import Cli

ROOT = Path(__file__).resolve().parents[2]
MGMT_KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F00112233445566778"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


def _new(cli: Cli, path: Path, *args: str, stdin: str | None = None) -> str:
    run = cli.ok("card", "new", str(path), "--template", "piv", "--algorithm", "p256", *args, stdin=stdin)
    return run.stdout + run.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ card new --template piv


def test_new_piv_card_has_keys_and_certificates_issued_by_a_saved_throwaway_ca(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    run = cli.ok("card", "new", str(path), "--template", "piv", "--holder", "Jane Doe")
    ca_cert_path, ca_key_path = tmp_path / "token.ca.pem", tmp_path / "token.ca-key.pem"
    assert [_mode(p) for p in (path, ca_cert_path, ca_key_path)] == [0o600, 0o600, 0o600]
    assert "123456" not in run.stdout + run.stderr
    ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert ca_key.public_key() == ca.public_key()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    _, state = read_piv_card_file(path)
    assert {slot: key.algorithm for slot, key in state.keys.items()} == {
        0x9A: PivAlgorithm.RSA_2048,
        0x9C: PivAlgorithm.ECC_P256,
    }
    now = datetime.datetime.now(datetime.UTC)
    for slot in (0x9A, 0x9C):
        der = certificate_of(state, slot)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Jane Doe"
        assert cert.public_key() == private_key(state.keys[slot].der).public_key()
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature
        assert usage.content_commitment == (slot == 0x9C)
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert state.defaults_in_place() == ("PIN", "PUK", "management key")
    assert 0 < state.serial < 1 << 31
    guid = chuid_guid(state.objects[0x5FC102])
    assert guid is not None
    assert len(guid) == 16
    assert state.objects[0x5FC107][:5] == bytes.fromhex("F015A00000")
    # another card: another GUID and serial
    other = tmp_path / "other.json"
    _new(cli, other)
    _, state2 = read_piv_card_file(other)
    assert chuid_guid(state2.objects[0x5FC102]) != guid
    assert state2.serial != state.serial


def test_chosen_pin_puk_and_management_key_come_from_stdin_and_work_on_the_card(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    out = _new(
        cli,
        path,
        "--choose",
        "puk",
        "--choose",
        "mgmt-key",
        "--pin-stdin",
        stdin=f"24681357\n87654321\n{MGMT_KEY}\n",
    )
    for secret in ("24681357", "87654321", MGMT_KEY):
        assert secret not in out
    assert "default" not in out  # no default left, no warning
    _, state = read_piv_card_file(path)
    assert state.defaults_in_place() == ()
    with load_piv_card(path) as card:
        assert mgmt_auth(card) != 0x9000  # the well-known key no longer opens it
        assert mgmt_auth(card, bytes.fromhex(MGMT_KEY)) == 0x9000
        assert verify(card, "24681357") == 0x9000


def test_pin_stdin_alone_chooses_the_pin_and_the_others_stay_default_with_a_warning(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    run = cli.ok(
        "card", "new", str(path), "--template", "piv", "--algorithm", "p256", "--pin-stdin", stdin="975310\n"
    )
    assert "default PIN" not in run.stderr
    assert "the card still has the well-known default PUK" in run.stderr
    assert "the card still has the well-known default management key" in run.stderr
    assert read_piv_card_file(path)[1].defaults_in_place() == ("PUK", "management key")


def _self_signed(tmp_path: Path, stem: str = "") -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Imported Holder")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA384())
    )
    key_path, cert_path = tmp_path / f"{stem}key.pem", tmp_path / f"{stem}cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, key


def test_an_imported_key_and_certificate_sign_on_the_card(cli: Cli, tmp_path: Path) -> None:
    key_path, cert_path, key = _self_signed(tmp_path)
    path = tmp_path / "token.json"
    cli.ok(
        "card",
        "new",
        str(path),
        "--template",
        "piv",
        "--import-key",
        str(key_path),
        "--import-cert",
        str(cert_path),
        "--import-slot",
        "9c",
    )
    assert not (tmp_path / "token.ca.pem").exists()
    assert not (tmp_path / "token.ca-key.pem").exists()
    _, state = read_piv_card_file(path)
    assert set(state.keys) == {0x9C}
    assert certificate_of(state, 0x9C) == x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    digest = hashes.Hash(hashes.SHA384())
    digest.update(b"sign me")
    hashed = digest.finalize()
    with load_piv_card(path) as card:
        assert verify(card, "123456") == 0x9000
        signature = sign(card, 0x9C, PivAlgorithm.ECC_P384, hashed)
    key.public_key().verify(signature, hashed, ec.ECDSA(Prehashed(hashes.SHA384())))


def test_bad_personalisation_input_is_refused_before_anything_is_written(cli: Cli, tmp_path: Path) -> None:
    key_path, cert_path, _ = _self_signed(tmp_path)
    other_key, _, _ = _self_signed(tmp_path, "other-")
    path = tmp_path / "token.json"
    cases = [
        (["--template", "piv", "--import-key", str(key_path)], "--import-key and --import-cert go together"),
        (
            ["--template", "piv", "--import-key", str(other_key), "--import-cert", str(cert_path)],
            "not the one of",
        ),
        (
            ["--template", "piv", "--import-key", str(cert_path), "--import-cert", str(cert_path)],
            "not a PEM private",
        ),
        (["--template", "piv", "--pan", "5412345678901234"], "--pan: not for a PIV card"),
        (["--template", "natwest", "--holder", "Jane"], "--holder: only for --template piv"),
        (["--template", "piv", "--choose", "mgmt-key", "--pin-stdin"], "management key"),
    ]
    for args, message in cases:
        run = cli("card", "new", str(path), *args, stdin="123456\n0011\n")
        assert run.exit_code == ExitCode.INVALID_INPUT, (args, run.stderr)
        assert message in run.stderr
        assert not path.exists()
        assert not (tmp_path / "token.ca.pem").exists()
    (tmp_path / "token.ca.pem").write_text("someone else's CA\n")
    run = cli("card", "new", str(path), "--template", "piv")
    assert run.exit_code == ExitCode.STATE_FILE
    assert "refusing to overwrite" in run.stderr
    assert not path.exists()
    assert (tmp_path / "token.ca.pem").read_text() == "someone else's CA\n"


def test_templates_lists_piv(cli: Cli) -> None:
    lines = cli.ok("card", "templates").stdout.splitlines()
    assert [line for line in lines if line.startswith("piv ")] == [
        "piv          AID A000000308     PIV certificate token (NIST SP 800-73-4)"
    ]


# ------------------------------------------------------------------ card show


def test_show_prints_slots_certificates_and_tries_and_warns_about_defaults(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _new(cli, path, "--holder", "Jane Doe")
    run = cli.ok("card", "show", str(path))
    assert "9A (PIV authentication): ECC_P256" in run.stdout
    assert "9C (digital signature): ECC_P256" in run.stdout
    assert "certificate: CN=Jane Doe, issued by CN=capsim throwaway PIV CA" in run.stdout
    assert "expires: " in run.stdout
    assert "pin_tries_left: 3/3" in run.stdout
    assert "puk_tries_left: 3/3" in run.stdout
    assert "123456" not in run.stdout
    assert "12345678" not in run.stdout
    warnings = [line for line in run.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 3
    assert all("well-known default" in line for line in warnings)
    data = cli.ok("card", "show", str(path), "--json").json()
    assert data["slots"]["9C (digital signature)"]["certificate"]["subject"] == "CN=Jane Doe"
    assert "pin" not in data
    assert cli.ok("card", "show", str(path), "--json", "--show-sensitive").json()["pin"] == "123456"


# ------------------------------------------------------------------ unblock, change-pin, change-puk


def _tries(path: Path) -> tuple[int, int]:
    _, state = read_piv_card_file(path)
    return state.pin_tries, state.puk_tries


def test_wrong_pins_block_change_pin_before_any_prompt_and_the_puk_unblocks(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _new(cli, path)
    runs = [cli("card", "change-pin", str(path), "--pin-stdin", stdin="000000\n111111\n") for _ in range(3)]
    assert [r.exit_code for r in runs] == [ExitCode.WRONG_PIN, ExitCode.WRONG_PIN, ExitCode.BLOCKED]
    assert "wrong PIN, 2 tries left" in runs[0].stderr
    assert "wrong PIN, no tries left: the card's PIN is now blocked" in runs[2].stderr
    assert f"capsim card unblock {path}" in runs[2].stderr
    assert _tries(path) == (0, 3)
    # blocked: refused before anything is read (no stdin at all)
    blocked = cli("card", "change-pin", str(path), "--pin-stdin", stdin="")
    assert blocked.exit_code == ExitCode.BLOCKED
    assert "PIN blocked" in blocked.stderr
    assert "unblock" in blocked.stderr
    shown = cli.ok("card", "show", str(path))
    assert "the PIN is blocked" in shown.stderr
    wrong = cli("card", "unblock", str(path), "--pin-stdin", stdin="87654321\n654321\n")
    assert wrong.exit_code == ExitCode.WRONG_PIN
    assert "wrong PUK, 2 tries left" in wrong.stderr
    assert _tries(path) == (0, 2)
    done = cli.ok("card", "unblock", str(path), "--pin-stdin", stdin="12345678\n654321\n")
    assert "PIN unblocked" in done.stdout
    assert _tries(path) == (3, 3)
    cli.ok("card", "change-pin", str(path), "--pin-stdin", stdin="654321\n13579135\n")
    with load_piv_card(path) as card:
        assert verify(card, "13579135") == 0x9000


def test_change_puk_and_a_blocked_puk(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _new(cli, path)
    cli.ok("card", "change-puk", str(path), "--pin-stdin", stdin="12345678\n11223344\n")
    assert read_piv_card_file(path)[1].defaults_in_place() == ("PIN", "management key")
    runs = [
        cli("card", "change-puk", str(path), "--pin-stdin", stdin="12345678\n55667788\n") for _ in range(3)
    ]
    assert [r.exit_code for r in runs] == [ExitCode.WRONG_PIN, ExitCode.WRONG_PIN, ExitCode.BLOCKED]
    assert "wrong PUK, no tries left: the PUK is now blocked" in runs[2].stderr
    run = cli("card", "unblock", str(path), "--pin-stdin", stdin="11223344\n654321\n")
    assert run.exit_code == ExitCode.BLOCKED
    assert "PUK blocked: nothing can unblock this card's PIN any more" in run.stderr
    assert _tries(path) == (3, 0)


def test_pin_commands_refuse_what_does_not_fit_the_card(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _new(cli, path)
    run = cli("card", "unblock", str(path), "--issuer-keys", str(tmp_path / "k.json"))
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "a PIV card has no issuer keys" in run.stderr
    run = cli("card", "change-pin", str(path), "--pin-stdin", stdin="123456\n12\n")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "new PIN: expected 6 to 8 ASCII digits" in run.stderr
    assert _tries(path) == (3, 3)  # nothing reached the card's counters
    emv = tmp_path / "emv.json"
    cli.ok("card", "new", str(emv), "--template", "natwest")
    run = cli("card", "change-puk", str(emv), "--pin-stdin", stdin="12345678\n11223344\n")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "only PIV cards have a PUK" in run.stderr
    run = cli("card", "unblock", str(emv), "--pin-stdin")
    assert run.exit_code == ExitCode.INVALID_INPUT


# ------------------------------------------------------------------ hidden prompts


def _on_a_terminal(args: list[str], answers: list[str], cwd: Path, timeout: float = 30) -> tuple[int, str]:
    """Run ``capsim ARGS`` with a pseudo-terminal as its controlling terminal, answering each
    prompt (a line ending in ``: ``) in turn; its exit status and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.chdir(cwd)
        os.environ["PYTHONPATH"] = str(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "capsim", *args])
    shown, pending, answered_at = b"", list(answers), 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child exited and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if pending and shown[answered_at:].rstrip().endswith(b":"):  # a new prompt
            os.write(fd, pending.pop(0).encode() + b"\n")
            answered_at = len(shown)
    done, status = os.waitpid(pid, os.WNOHANG)
    grace = time.monotonic() + 5
    while done == 0 and time.monotonic() < grace:  # the terminal closes just before the exit
        time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:  # still waiting for something: end it, the assertions will say what it showed
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


@pytest.mark.timeout(120)
def test_unblock_and_change_puk_ask_with_hidden_prompts(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    _new(cli, path)
    code, shown = _on_a_terminal(
        ["card", "unblock", str(path)], ["12345678", "24681357", "24681357"], tmp_path
    )
    assert code == 0, shown
    assert "PUK:" in shown
    assert "New PIN:" in shown
    assert "Repeat the new PIN:" in shown
    assert "PIN unblocked" in shown
    for secret in ("12345678", "24681357"):
        assert secret not in shown  # never echoed
    code, shown = _on_a_terminal(
        ["card", "change-puk", str(path)], ["12345678", "11223344", "44332211"], tmp_path
    )
    assert code == ExitCode.INVALID_INPUT, shown
    assert "the two entries differ; nothing was changed" in shown
    assert read_piv_card_file(path)[1].puk == "12345678"
    with load_piv_card(path) as card:
        assert verify(card, "24681357") == 0x9000


def test_no_terminal_for_a_chosen_secret_fails_before_anything_is_written(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "capsim", "card", "new", "token.json", "--template", "piv", "--choose", "puk"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        start_new_session=True,  # no controlling terminal
        timeout=60,
    )
    assert done.returncode == ExitCode.INVALID_INPUT
    assert "there is no terminal to ask for it; give it on standard input with --pin-stdin" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_show_marks_an_expired_certificate(cli: Cli, tmp_path: Path) -> None:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=800)
    made = personalise(holder="Old Holder", algorithm=PivAlgorithm.ECC_P256, now=lambda: long_ago)
    path = tmp_path / "old.json"
    new_piv_card(made.state, path=path).close()
    run = cli.ok("card", "show", str(path))
    assert run.stdout.count("(EXPIRED)") == 2
    assert cli.ok("card", "show", str(path), "--json").json()["slots"]["9A (PIV authentication)"][
        "certificate"
    ]["expired"]
