"""``capsim verifier cert …`` (docs/cli.md, docs/certificate.md): a certificate token
registered and signing operations through the command line, with the emulated PIV card signing
the messages the commands write, through its APDUs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from capsim.cli._common import ExitCode
from tests.cli.helpers import Run, World, make_world
from tests.verifier.certpki import Ca, Token, new_token, write_pem

REJECT_LINE = "capsim: error: code rejected\n"
IDENTITY = "1850775123456"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _rejected(run: Run) -> None:
    assert run.exit_code == ExitCode.REJECTED == 10
    assert run.stderr == REJECT_LINE
    assert run.stdout == ""


def _sign(world: World, token: Token, message: Path, name: str) -> Path:
    out = world.tmp / name
    out.write_bytes(token.sign(message.read_bytes()))
    return out


def test_register_and_approve_a_payment_once_through_the_cli(world: World, tmp_path: Path) -> None:
    # the CLI runs on the real clock: the CA dates its certificates and CRL around now
    ca = Ca("capsim CLI CA", at=dt.datetime.now(dt.UTC))
    token = new_token(ca)
    crl = ca.crl()
    anchor = write_pem(tmp_path / "ca.pem", ca.cert)
    crl_file = write_pem(tmp_path / "ca.crl", crl)
    cert_file = write_pem(tmp_path / "token.pem", token.cert)

    # before any trust is recorded, registration is a configuration error, not a reject
    assert world.v("cert", "trust", "--anchor", str(anchor), "--crl", str(crl_file), "--json").exit_code == 0
    org = world.v("cert", "org-new", "ACME Fournitures", "--json").json()
    code = org["master_code"]
    assert len(code) == 16

    ch = world.v(
        "cert", "challenge", "--org", org["org_id"], "--out", str(tmp_path / "reg.msg"), "--json"
    ).json()
    sig = _sign(world, token, tmp_path / "reg.msg", "reg.sig")
    args = (
        "cert",
        "register",
        "--org",
        org["org_id"],
        "--cert",
        str(cert_file),
        "--challenge",
        ch["challenge_id"],
    )
    # a wrong master code: the uniform reject, and nothing registered
    _rejected(
        world.v(*args, "--signature-file", str(sig), "--secrets-stdin", stdin=f"{'0' * 16}\n{IDENTITY}\n")
    )
    reg = world.v(*args, "--signature-file", str(sig), "--admin", "--secrets-stdin", "--json",
                  stdin=f"{code}\n{IDENTITY}\n")  # fmt: skip
    assert reg.exit_code == 0, reg.stderr
    cred = reg.json()
    assert cred["registered"] is True
    assert cred["state"] == "active"
    assert IDENTITY not in reg.output
    assert code not in reg.output
    users = world.v("cert", "users", "--org", org["org_id"], "--as", cred["user_id"], "--json").json()[
        "users"
    ]
    assert [u["role"] for u in users] == ["admin"]

    # a payment challenge, signed by the token, accepted once
    op = world.v(
        "cert", "operation", cred["cert_id"], "--payment", "150.00", "EUR", "FR7630006000011234567890189",
        "--out", str(tmp_path / "pay.msg"), "--json",
    ).json()  # fmt: skip
    assert op["details"]["amount_minor"] == "15000"
    pay_sig = _sign(world, token, tmp_path / "pay.msg", "pay.sig").read_bytes().hex()
    other = world.v(
        "cert", "operation", cred["cert_id"], "--beneficiary", "FR7630006000011234567890189", "Mallory",
        "--json",
    ).json()  # fmt: skip
    _rejected(world.v("cert", "authenticate", other["challenge_id"], "--signature", pay_sig))
    ok = world.v("cert", "authenticate", op["challenge_id"], "--signature", pay_sig, "--json")
    assert ok.exit_code == 0, ok.stderr
    assert ok.json()["accepted"] is True
    _rejected(world.v("cert", "authenticate", op["challenge_id"], "--signature", pay_sig))  # replay

    listed = world.v("cert", "list", "--org", org["org_id"], "--json").json()["certificates"]
    assert [c["fail_count"] for c in listed] == [0]  # the accept reset the one failure
    # the identity number and master code are not in the database in clear
    blob = Path(world.db).read_bytes() + b"".join(
        p.read_bytes() for p in Path(world.db).parent.glob("verifier.db-*") if p.is_file()
    )
    assert IDENTITY.encode() not in blob
    assert code.encode() not in blob
    # the audit records each step
    audit = world.v("audit", "--json")
    assert audit.exit_code == 0
    assert "cert-authenticate" in audit.stdout
    check = world.v("audit", "--check", "--json")
    assert check.exit_code == 0, check.stdout
    assert check.json()["intact"] is True  # sealed like every other record


def test_unblock_is_the_bank_s_and_secrets_are_never_options(world: World) -> None:
    run = world.v("cert", "register", "--help")
    assert "--master-code" not in run.stdout
    assert "--identity" not in run.stdout
    assert "--secrets-stdin" in run.stdout
    bad = world.v("cert", "operation", "crt-0000000000000000", "--json")
    assert bad.exit_code == ExitCode.INVALID_INPUT
    no_trust = world.v("cert", "org-new", "ACME")
    assert no_trust.exit_code == 0  # organisations need no trust anchors
