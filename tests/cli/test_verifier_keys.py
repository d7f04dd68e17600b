"""``capsim verifier keys …``, ``verifier init --pkcs11`` and ``demo --pkcs11`` on SoftHSM2.

The token is the test session's (tests/verifier/test_pkcs11.py); commands run in-process
through the click entry point, ``demo --pkcs11`` as a real subprocess (it makes its own token).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from capsim.crypto import key_check_value, odd_parity
from capsim.storage import IssuerKeys, save_issuer_keys
from tests.cli.helpers import PIN, Cli
from tests.verifier.test_pkcs11 import SoftHsm, softhsm  # noqa: F401

pkcs11 = pytest.importorskip("pkcs11")
A = pkcs11.Attribute


def _keys() -> IssuerKeys:
    k = [odd_parity(secrets.token_bytes(16)) for _ in range(3)]
    return IssuerKeys(imk_ac=k[0], imk_smi=k[1], imk_smc=k[2])


@pytest.fixture
def cli(tmp_path: Path, softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> Cli:  # noqa: F811
    monkeypatch.setenv("CAPSIM_PKCS11_PIN", softhsm.pin)
    return Cli(home=tmp_path / "home")


def _login(softhsm: SoftHsm) -> Any:  # noqa: F811
    from capsim.verifier.hsmkeys import TokenConfig, login

    return login(TokenConfig(module=softhsm.module, token=softhsm.token), rw=True)


def _token(softhsm: SoftHsm) -> list[str]:  # noqa: F811
    return ["--pkcs11", softhsm.module, "--token", softhsm.token]


def test_import_file_then_verify_through_the_token(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:  # noqa: F811
    """The whole chain: import (the file is deleted), list (sensitive, not extractable),
    init --pkcs11, enrol, verify, a replay refused, the audit sealed by the token's key."""
    label = f"bank-{secrets.token_hex(3)}"
    card = tmp_path / "card.json"
    cli.ok("card", "new", str(card), "--pin-stdin", stdin=f"{PIN}\n")
    key_file = tmp_path / "card.issuer-keys.json"
    run = cli.ok(
        "verifier",
        "keys",
        "import",
        *_token(softhsm),
        "--label",
        label,
        "--issuer-keys",
        str(key_file),
        "--json",
    )
    kid = run.json()["key_id"]
    assert kid.startswith("iss-")
    assert not key_file.exists()
    listed = cli.ok("verifier", "keys", "list", *_token(softhsm), "--json").json()["keys"]
    mine = [k for k in listed if k["label"].startswith(f"{label}/")]
    assert len(mine) == 3
    for k in mine:
        assert k["sensitive"] is True
        assert k["extractable"] is False
        assert k["derive_only"] is True
        assert k["warning"] is None
    db = str(tmp_path / "v.db")
    cli.ok("verifier", "init", "--db", db, *_token(softhsm), "--issuer-label", label)
    assert not (tmp_path / "v.db.keyring.json").exists()  # the seal key is the token's
    cli.ok("verifier", "user", "add", "alice", "--db", db)
    code = cli.ok("verifier", "activation-code", "alice", "--db", db, "--json").json()["activation_code"]
    first = cli.ok(
        "code", "identify", "--reader", f"file:{card}", "--pin-stdin", "--json", stdin=f"{PIN}\n"
    ).json()
    cred = cli.ok(
        "verifier",
        "enroll",
        "--db",
        db,
        "--activation-code",
        code,
        "--card",
        str(card),
        "--code",
        first["code"],
        "--json",
    ).json()
    nxt = cli.ok(
        "code", "identify", "--reader", f"file:{card}", "--pin-stdin", "--json", stdin=f"{PIN}\n"
    ).json()
    cli.ok("verify", cred["credential_id"], nxt["code"], "--db", db)
    assert cli("verify", cred["credential_id"], nxt["code"], "--db", db).exit_code == 10
    audit = cli.ok("verifier", "audit", "--check", "--db", db, "--json").json()
    assert audit["intact"] is True
    assert audit["sealed_from"] == 1
    text = "".join(r.output for r in cli.runs)
    assert softhsm.pin not in text


def test_components_are_confirmed_by_their_kcv(cli: Cli, softhsm: SoftHsm) -> None:  # noqa: F811
    parts = [secrets.token_bytes(16) for _ in range(3)]
    combined = odd_parity(bytes(a ^ b ^ c for a, b, c in zip(*parts, strict=True)))
    label = f"comp-{secrets.token_hex(3)}"
    stdin = "".join(p.hex() + "\n" for p in parts) + "y\n"
    run = cli.ok(
        "verifier", "keys", "import", *_token(softhsm), "--label", label, "--components", "3", stdin=stdin
    )
    for p in parts:
        assert key_check_value(p).hex().upper() in run.stderr
        assert p.hex() not in run.output
    assert f"KCV {key_check_value(combined).hex().upper()}" in run.output
    # not confirmed: nothing imported
    label2 = f"comp-{secrets.token_hex(3)}"
    stdin = "".join(p.hex() + "\n" for p in parts[:2]) + "n\n"
    run = cli(
        "verifier", "keys", "import", *_token(softhsm), "--label", label2, "--components", "2", stdin=stdin
    )
    assert run.exit_code != 0
    listed = cli.ok("verifier", "keys", "list", *_token(softhsm), "--json").json()["keys"]
    assert any(k["label"] == f"{label}/imk-ac" for k in listed)
    assert not any(k["label"].startswith(label2) for k in listed)


def test_unwrap_under_an_aes_transport_key(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:  # noqa: F811
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    kek = secrets.token_bytes(32)
    transport = f"kek-{secrets.token_hex(3)}"
    with _login(softhsm) as session:
        session.create_object({
            A.CLASS: pkcs11.ObjectClass.SECRET_KEY, pkcs11.Attribute.KEY_TYPE: pkcs11.KeyType.AES,
            A.VALUE: kek, pkcs11.Attribute.LABEL: transport, pkcs11.Attribute.TOKEN: True,
            A.UNWRAP: True, pkcs11.Attribute.SENSITIVE: True, pkcs11.Attribute.EXTRACTABLE: False,
            A.PRIVATE: True,
        })  # fmt: skip
    imk = odd_parity(secrets.token_bytes(16))
    wrapped = tmp_path / "imk.wrapped"
    wrapped.write_text(aes_key_wrap_with_padding(kek, imk).hex())
    label = f"wrap-{secrets.token_hex(3)}"
    run = cli.ok(
        "verifier", "keys", "import", *_token(softhsm), "--label", label,
        "--wrapped", str(wrapped), "--transport-label", transport, "--json",
    )  # fmt: skip
    assert run.json()["key_id"] == "iss-" + key_check_value(imk).hex().upper()
    listed = cli.ok("verifier", "keys", "list", *_token(softhsm), "--json").json()["keys"]
    (mine,) = [k for k in listed if k["label"] == f"{label}/imk-ac"]
    from capsim.verifier.provider import derived_fingerprint

    assert mine["fingerprint"] == derived_fingerprint(imk)
    assert mine["extractable"] is False


def test_list_warns_about_an_extractable_key(cli: Cli, softhsm: SoftHsm) -> None:  # noqa: F811
    label = f"weak-{secrets.token_hex(3)}"
    with _login(softhsm) as session:
        session.create_object({
            A.CLASS: pkcs11.ObjectClass.SECRET_KEY, pkcs11.Attribute.KEY_TYPE: pkcs11.KeyType.DES2,
            A.VALUE: bytes(range(16)), pkcs11.Attribute.LABEL: label, pkcs11.Attribute.TOKEN: True,
            A.SENSITIVE: False, pkcs11.Attribute.EXTRACTABLE: True, pkcs11.Attribute.PRIVATE: True,
        })  # fmt: skip
    run = cli.ok("verifier", "keys", "list", *_token(softhsm))
    assert f"warning: {label}: EXTRACTABLE" in run.stderr


def test_pin_is_never_an_option_and_a_missing_pin_is_an_error(
    cli: Cli,
    softhsm: SoftHsm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    run = cli("verifier", "keys", "list", *_token(softhsm), "--pin", softhsm.pin)
    assert run.exit_code == 2
    assert "No such option" in run.stderr
    monkeypatch.delenv("CAPSIM_PKCS11_PIN")
    run = cli("verifier", "keys", "list", *_token(softhsm))
    assert run.exit_code != 0
    assert "CAPSIM_PKCS11_PIN" in run.stderr
    assert "Traceback" not in run.output
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o644)
    run = cli("verifier", "keys", "list", *_token(softhsm), "--pin-file", str(pin_file))
    assert "readable by other users" in run.stderr
    pin_file.chmod(0o600)
    cli.ok("verifier", "keys", "list", *_token(softhsm), "--pin-file", str(pin_file))


def test_missing_module_is_a_clean_error(cli: Cli, tmp_path: Path) -> None:
    run = cli("verifier", "keys", "list", "--pkcs11", str(tmp_path / "none.so"), "--token", "x")
    assert run.exit_code != 0
    assert "cannot load the PKCS#11 module" in run.stderr
    assert "Traceback" not in run.output


def test_existing_label_is_never_overwritten(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:  # noqa: F811
    label = f"dup-{secrets.token_hex(3)}"
    for i in range(2):
        f = tmp_path / f"k{i}.json"
        save_issuer_keys(f, _keys())
        run = cli("verifier", "keys", "import", *_token(softhsm), "--label", label, "--issuer-keys", str(f))
        assert (run.exit_code == 0) == (i == 0)
    assert "already holds" in run.stderr
    assert (tmp_path / "k1.json").exists()  # a refused import keeps its file


def test_demo_pkcs11_runs_the_whole_chain(tmp_path: Path, softhsm: SoftHsm) -> None:  # noqa: F811
    env = {
        k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "CAPSIM_PKCS11_PIN", "CAPSIM_DB")
    }
    env["CAPSIM_HOME"] = str(tmp_path / "home")
    p = subprocess.run(
        [sys.executable, "-m", "capsim", "demo", "--pkcs11", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is True
    names = [s["name"] for s in doc["steps"]]
    assert names[-1] == "token-keys"
    assert "only in token" in doc["steps"][0]["detail"]
    assert any(s["name"] == "pin-unblock" or "UNBLOCK" in s["title"] for s in doc["steps"])


def _enrol(cli: Cli, db: str, card: Path) -> str:
    cli.ok("verifier", "user", "add", "alice", "--db", db)
    code = cli.ok("verifier", "activation-code", "alice", "--db", db, "--json").json()["activation_code"]
    first = _code(cli, card)
    return str(
        cli.ok(
            "verifier", "enroll", "--db", db, "--activation-code", code, "--card", str(card),
            "--code", first, "--json",
        ).json()["credential_id"]
    )  # fmt: skip


def _code(cli: Cli, card: Path) -> str:
    run = cli.ok("code", "identify", "--reader", f"file:{card}", "--pin-stdin", "--json", stdin=f"{PIN}\n")
    return str(run.json()["code"])


def test_migrate_moves_a_software_verifier_onto_the_token(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:  # noqa: F811
    """A verifier initialised on an issuer-keys file moves onto the token: wrong token keys are
    refused (the credential stays on the file and keeps verifying, enrolment waits), the right
    ones take it; the file can then go, a second run changes nothing, the audit is intact."""
    card = tmp_path / "card.json"
    cli.ok("card", "new", str(card), "--pin-stdin", stdin=f"{PIN}\n")
    key_file = tmp_path / "card.issuer-keys.json"
    db = str(tmp_path / "v.db")
    cli.ok("verifier", "init", "--db", db, "--issuer-keys", str(key_file))
    cid = _enrol(cli, db, card)
    cli.ok("verify", cid, _code(cli, card), "--db", db)
    token = [*_token(softhsm), "--prefix", f"mig-{secrets.token_hex(3)}"]
    # wrong keys: the same IMK-AC (so the same key id), another IMK-SMI
    from capsim.storage import load_issuer_keys

    keys = load_issuer_keys(key_file)
    wrong_file = tmp_path / "wrong.json"
    save_issuer_keys(
        wrong_file, IssuerKeys(imk_ac=keys.imk_ac, imk_smi=_keys().imk_smi, imk_smc=keys.imk_smc)
    )
    wrong, right = f"wrong-{secrets.token_hex(3)}", f"right-{secrets.token_hex(3)}"
    cli.ok("verifier", "keys", "import", *_token(softhsm), "--label", wrong, "--issuer-keys", str(wrong_file))
    run = cli("verifier", "keys", "migrate", *token, "--issuer-label", wrong, "--db", db, "--json")
    assert run.exit_code == 1
    assert run.json()["refused"] == {cid: "script-keys-differ"}
    assert run.json()["finished"] is False
    cli.ok("verify", cid, _code(cli, card), "--db", db)  # still on the file's keys
    cli.ok("verifier", "user", "add", "bob", "--db", db)
    code = cli.ok("verifier", "activation-code", "bob", "--db", db, "--json").json()["activation_code"]
    paused = cli(
        "verifier",
        "enroll",
        "--db",
        db,
        "--activation-code",
        code,
        "--card",
        str(card),
        "--code",
        _code(cli, card),
    )
    assert paused.exit_code != 0
    assert "enrolment is paused" in paused.stderr
    # the right keys
    cli.ok(
        "verifier",
        "keys",
        "import",
        *_token(softhsm),
        "--label",
        right,
        "--issuer-keys",
        str(key_file),
        "--keep-file",
    )
    done = cli.ok("verifier", "keys", "migrate", *token, "--issuer-label", right, "--db", db, "--json").json()
    assert (done["rebound"], done["refused"], done["finished"]) == (1, {}, True)
    key_file.unlink()  # the verifier no longer needs the file
    nxt = _code(cli, card)
    cli.ok("verify", cid, nxt, "--db", db)
    assert cli("verify", cid, nxt, "--db", db).exit_code == 10  # a replay
    again = cli.ok(
        "verifier", "keys", "migrate", *token, "--issuer-label", right, "--db", db, "--json"
    ).json()
    assert (again["rebound"], again["already_on_token"], again["finished"]) == (0, 1, True)
    audit = cli.ok("verifier", "audit", "--check", "--db", db, "--json").json()
    assert audit["intact"] is True
    text = "".join(r.output for r in cli.runs)
    assert softhsm.pin not in text
