"""``capsim token sign`` (docs/cli.md, docs/certificate.md) with a PIV card file through
capsim's PIV client (``--reader file:…``): the signature registers and approves operations in
``capsim verifier cert``, wrong PINs count on the card and a blocked PIN is refused before it
is asked for. (Through PKCS#11 and OpenSC: tests/pcsc/test_token_sign.py.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509

from capsim.cards.piv import read_piv_card_file
from capsim.cli._common import ExitCode
from capsim.verifier.certtrust import verify_signature
from tests.cli.helpers import Cli, World, make_world

PAYEE = "FR7630006000011234567890189"
IDENTITY = "1850775123456"


@pytest.fixture
def token(tmp_path: Path) -> tuple[Cli, Path]:
    cli = Cli(tmp_path / "home")
    path = tmp_path / "token.json"
    cli.ok("card", "new", str(path), "--template", "piv", "--holder", "Jane Doe")
    return cli, path


def _sign(cli: Cli, card: Path, message: Path, *extra: str, pin: str = "123456") -> tuple[int, str, str]:
    run = cli(
        "token", "sign", "--reader", f"file:{card}", "--message", str(message), "--pin-stdin", *extra,
        stdin=pin + "\n",
    )  # fmt: skip
    return run.exit_code, run.stdout, run.stderr


def test_signatures_verify_in_every_encoding_and_slot(token: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, card = token
    message = tmp_path / "m.txt"
    message.write_bytes(b"capsim certificate challenge v1\npurpose=operation\n")
    code, out, err = _sign(
        cli, card, message, "--cert-out", str(tmp_path / "c.pem"), "--out", str(tmp_path / "s")
    )
    assert code == 0, err
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    signature = bytes.fromhex(out.strip())
    assert (tmp_path / "s").read_bytes() == signature
    assert verify_signature(cert.public_key(), message.read_bytes(), signature)
    code, out, err = _sign(cli, card, message, "--key-id", "9a", "--encoding", "base64", "--json")
    assert code == 0, err
    doc = json.loads(out)
    rsa_cert = x509.load_pem_x509_certificate(doc["certificate"].encode())
    assert doc["subject"] == "CN=Jane Doe"
    assert verify_signature(rsa_cert.public_key(), message.read_bytes(), base64.b64decode(doc["signature"]))
    assert "123456" not in out + err


def test_wrong_pins_then_blocked_before_the_prompt_then_the_puk(
    token: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, card = token
    message = tmp_path / "m.txt"
    message.write_bytes(b"x")
    results = [_sign(cli, card, message, pin="000000") for _ in range(3)]
    assert [r[0] for r in results] == [ExitCode.WRONG_PIN, ExitCode.WRONG_PIN, ExitCode.BLOCKED]
    assert "wrong PIN, 2 tries left" in results[0][2]
    assert "the card's PIN is now blocked" in results[2][2]
    assert f"capsim card unblock {card}" in results[2][2]
    code, _, err = _sign(cli, card, message, pin="")  # refused before the PIN is read
    assert code == ExitCode.BLOCKED
    assert "PIN blocked" in err
    assert "(it asks for the PUK)" in err
    assert "Traceback" not in err
    assert read_piv_card_file(card)[1].pin_tries == 0
    cli.ok("card", "unblock", str(card), "--pin-stdin", stdin="12345678\n24682468\n")
    assert _sign(cli, card, message, pin="24682468")[0] == 0


def test_the_options_are_checked(token: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, card = token
    message = tmp_path / "m.txt"
    message.write_bytes(b"x")
    cases = [
        ((), "exactly one"),
        (("--reader", f"file:{card}", "--pkcs11", "/nonexistent.so"), "exactly one"),
        (("--reader", f"file:{card}", "--token-label", "x"), "only with --pkcs11"),
        (("--reader", f"file:{card}", "--key-id", "01"), "a PIV key slot"),
        (("--pkcs11", str(tmp_path / "missing.so")), "cannot load the PKCS#11 module"),
    ]
    for args, text in cases:
        run = cli("token", "sign", "--message", str(message), "--pin-stdin", *args, stdin="123456\n")
        assert run.exit_code == ExitCode.INVALID_INPUT, (args, run.stderr)
        assert text in run.stderr, (args, run.stderr)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    run = cli(
        "token", "sign", "--message", str(empty), "--reader", f"file:{card}", "--pin-stdin", stdin="123456\n"
    )
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "empty" in run.stderr
    assert read_piv_card_file(card)[1].pin_tries == 3  # nothing reached the card


def test_register_and_approve_an_operation_with_the_command_line_only(tmp_path: Path) -> None:
    world: World = make_world(tmp_path)
    card = tmp_path / "token.json"
    world.cli.ok("card", "new", str(card), "--template", "piv", "--holder", "Jane Doe")
    ca = tmp_path / "token.ca.pem"
    assert world.v("cert", "trust", "--anchor", str(ca), "--no-require-crl").exit_code == 0
    org = world.v("cert", "org-new", "ACME Fournitures", "--json").json()
    reg_msg, reg_cert = tmp_path / "reg.msg", tmp_path / "token.pem"
    ch = world.v("cert", "challenge", "--org", org["org_id"], "--out", str(reg_msg), "--json").json()
    code, out, err = _sign(world.cli, card, reg_msg, "--cert-out", str(reg_cert))
    assert code == 0, err
    reg = world.v(
        "cert", "register", "--org", org["org_id"], "--cert", str(reg_cert),
        "--challenge", ch["challenge_id"], "--signature", out.strip(), "--admin", "--secrets-stdin", "--json",
        stdin=f"{org['master_code']}\n{IDENTITY}\n",
    )  # fmt: skip
    assert reg.exit_code == 0, reg.stderr
    cert_id = reg.json()["cert_id"]
    pay_msg = tmp_path / "pay.msg"
    pay = world.v(
        "cert", "operation", cert_id, "--payment", "150.00", "EUR", PAYEE, "--out", str(pay_msg), "--json"
    ).json()
    other = world.v("cert", "operation", cert_id, "--beneficiary", PAYEE, "Mallory", "--json").json()
    code, out, err = _sign(world.cli, card, pay_msg)
    assert code == 0, err
    signature = out.strip()
    refused = world.v("cert", "authenticate", other["challenge_id"], "--signature", signature)
    assert refused.exit_code == ExitCode.REJECTED
    accepted = world.v("cert", "authenticate", pay["challenge_id"], "--signature", signature, "--json")
    assert accepted.exit_code == 0, accepted.stderr
    assert accepted.json()["details"]["amount_minor"] == "15000"
    replay = world.v("cert", "authenticate", pay["challenge_id"], "--signature", signature)
    assert replay.exit_code == ExitCode.REJECTED
