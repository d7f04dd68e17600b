"""``capsim demo --certificate`` (docs/certificate.md, "The demo"): every step behaves, the kept
token and database are ordinary ones for the other commands, secrets stay hidden, and a store
whose policy makes a step misbehave gives exit 14 naming that step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from capsim.cards.piv import read_piv_card_file
from capsim.cli._common import ExitCode
from capsim.cli.demo_certificate import DEMO_TOKEN_PIN
from tests.cli.helpers import Cli

STEPS = [
    "personalise",
    "organisation",
    "wrong-master-code",
    "register",
    "beneficiary",
    "other-operation",
    "replay",
    "wrong-pins",
    "puk-unblock",
    "signature-after-unblock",
    "audit",
]


def test_certificate_demo_json_every_step_behaves(tmp_path: Path) -> None:
    run = Cli(tmp_path / "home")("demo", "--certificate", "--json")
    assert run.exit_code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] is True
    steps = doc["steps"]
    assert [s["name"] for s in steps] == STEPS
    assert all(s["ok"] for s in steps)
    by_name = {s["name"]: s for s in steps}
    assert [by_name[n]["observed"] for n in ("register", "beneficiary", "signature-after-unblock")] == [
        "accept"
    ] * 3
    assert [by_name[n]["observed"] for n in ("wrong-master-code", "other-operation", "replay")] == [
        "reject"
    ] * 3
    assert by_name["wrong-pins"]["detail"].startswith("tries left 2, 1, 0; the right PIN is refused")
    assert "3 tries left" in by_name["puk-unblock"]["detail"]
    assert run.stderr == ""


def test_certificate_demo_keeps_a_usable_token_and_database_and_hides_secrets(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    run = cli("demo", "--certificate", "--keep")
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("capsim demo --certificate in ")
    assert lines[-1] == f"all {len(STEPS)} steps behaved as expected"
    workdir = Path(lines[0].removeprefix("capsim demo --certificate in ").split(" (kept", 1)[0])
    try:
        _, state = read_piv_card_file(workdir / "token.json")
        assert state.pin_tries == state.pin_limit  # the PUK restored the PIN
        assert state.pin != DEMO_TOKEN_PIN  # and set a new one
        text = run.stdout + run.stderr
        assert state.puk not in text
        assert "1850775123456" not in text  # the identity number
        db = str(workdir / "verifier.db")
        assert cli("verifier", "audit", "--check", "--db", db).exit_code == 0
        org = next(w.rstrip(";") for w in text.split() if w.startswith("org-"))
        certs = cli("verifier", "cert", "list", "--org", org, "--db", db, "--json").json()["certificates"]
        assert [(c["state"], c["subject"]) for c in certs] == [("active", "CN=Alice Martin")]
        # the token signs again through capsim token sign, for a new operation of the same database
        msg = workdir / "op.msg"
        cli.ok("verifier", "cert", "operation", certs[0]["cert_id"], "--beneficiary", "FR76", "Eve",
               "--out", str(msg), "--db", db)  # fmt: skip
        signed = cli.ok("token", "sign", "--reader", f"file:{workdir / 'token.json'}", "--message", str(msg),
                        "--pin-stdin", stdin=f"{state.pin}\n")  # fmt: skip
        ch = msg.read_text().split("challenge=", 1)[1].split("\n", 1)[0]
        ok = cli("verifier", "cert", "authenticate", ch, "--signature", signed.stdout.strip(), "--db", db)
        assert ok.exit_code == 0, ok.stderr
    finally:
        shutil.rmtree(workdir)


def test_certificate_demo_against_a_store_where_a_step_must_fail(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    db = str(tmp_path / "strict.db")
    # one failure locks a certificate: the refused payment locks it, so the last signature fails
    assert cli("verifier", "init", "--db", db, "--max-fail", "1").exit_code == 0
    run = cli("demo", "--certificate", "--db", db, "--json")
    assert run.exit_code == ExitCode.INVARIANT_BROKEN == 14
    failed = "step 'signature-after-unblock' failed: expected accept, observed reject"
    assert run.stderr == f"capsim: error: demo {failed}\n"
    steps = json.loads(run.stdout)["steps"]
    assert [s["name"] for s in steps] == STEPS[: STEPS.index("signature-after-unblock") + 1]


def test_certificate_demo_has_no_pkcs11_variant(tmp_path: Path) -> None:
    run = Cli(tmp_path / "home")("demo", "--certificate", "--pkcs11")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "--certificate and --pkcs11" in run.stderr
