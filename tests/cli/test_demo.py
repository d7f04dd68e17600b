"""``capsim demo`` (docs/cli.md): every step behaves, in-process and through the installed
executable; a store whose policy makes a step misbehave gives exit 14 naming that step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capsim.cli._common import ExitCode
from capsim.storage import load_issuer_keys, read_card_file
from tests.cli.helpers import Cli
from tests.verifier.pgcluster import PgCluster, migrated_template, pg_cluster

__all__ = ["pg_cluster"]

STEPS = [
    "personalise",
    "enrol",
    "identify",
    "respond",
    "sign",
    "tds",
    "replay",
    "other-amount",
    "wrong-pins",
    "pin-unblock",
    "pin-restored",
    "audit",
]


def _steps(stdout: str) -> list[dict[str, object]]:
    doc = json.loads(stdout)
    steps = doc["steps"]
    assert isinstance(steps, list)
    return steps


def test_demo_json_every_step_behaves(tmp_path: Path) -> None:
    run = Cli(tmp_path / "home")("demo", "--json")
    assert run.exit_code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] is True
    assert doc["failure"] is None
    steps = doc["steps"]
    assert [s["name"] for s in steps] == STEPS
    assert all(s["ok"] and s["expected"] == s["observed"] for s in steps)
    by_name = {s["name"]: s for s in steps}
    accepted = ("identify", "respond", "sign", "tds", "pin-restored")
    assert [by_name[n]["observed"] for n in accepted] == ["accept"] * len(accepted)
    assert by_name["replay"]["observed"] == by_name["other-amount"]["observed"] == "reject"
    assert by_name["replay"]["code"] == by_name["identify"]["code"]  # the very same code, replayed
    assert by_name["wrong-pins"]["detail"].startswith("tries left 2, 1, 0")
    assert "9000" in by_name["pin-unblock"]["detail"]
    for name in ("enrol", "identify", "respond", "sign", "tds", "other-amount", "pin-restored"):
        code = by_name[name]["code"]
        assert isinstance(code, str)
        assert len(code) == 8
        assert code.isascii()
        assert code.isdigit()
    assert run.stderr == ""


def test_demo_text_hides_keys_and_pan_and_leaves_the_card_unblocked(tmp_path: Path) -> None:
    run = Cli(tmp_path / "home")("demo", "--keep")
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("capsim demo in ")
    assert lines[0].endswith("(kept; verifier on a SQLite database beside the card)")
    workdir = Path(lines[0].removeprefix("capsim demo in ").split(" (kept", 1)[0])
    assert (workdir / "verifier.db").is_file()
    try:
        assert lines[-1] == f"all {len(STEPS)} steps behaved as expected"
        assert sum(line.startswith("[ok  ]") for line in lines) == len(STEPS)
        assert "FAIL" not in run.stdout
        profile, state = read_card_file(workdir / "card.json")
        keys = load_issuer_keys(workdir / "issuer-keys.json")
        text = run.stdout + run.stderr
        assert profile.pan not in text
        assert profile.pan[-4:] in text
        for key in (keys.imk_ac, keys.imk_smi, keys.imk_smc, profile.mk_ac, profile.mk_smi, profile.mk_smc):
            assert key.hex().upper() not in text
            assert key.hex() not in text
        # the PIN UNBLOCK script really restored the card: full try counter, PIN 1234
        assert state.ptc == profile.pin_try_limit
        assert state.pin == "1234"
        assert state.atc == 12
        # the kept database is an ordinary verifier database for the other commands
        cli = Cli(tmp_path / "home")
        db = str(workdir / "verifier.db")
        assert cli("verifier", "audit", "--check", "--db", db).exit_code == 0
        creds = cli("verifier", "credential", "list", "--db", db, "--json").json()["credentials"]
        summary = [(c["state"], c["last_atc"], c["pan_last4"]) for c in creds]
        assert summary == [("active", 12, profile.pan[-4:])]
    finally:
        shutil.rmtree(workdir)


def test_demo_through_the_installed_executable(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("capsim")
    env = {**os.environ, "CAPSIM_HOME": str(tmp_path / "home")}
    p = subprocess.run(
        [str(exe), "demo"], capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.rstrip().endswith(f"all {len(STEPS)} steps behaved as expected")
    assert p.stdout.startswith("capsim demo in a temporary directory (removed afterwards")
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the working directory


@pytest.mark.parametrize(
    ("init_args", "reason"),
    [
        # one failure locks the credential: the replay step locks it, so the restored PIN's code fails
        (("--max-fail", "1"), "locked"),
        # the wrong PINs and the issuer transaction use up ATCs: the last code is beyond a window of 4
        (("--atc-window", "4"), None),
    ],
)
def test_demo_against_a_store_where_a_step_must_fail(
    tmp_path: Path, init_args: tuple[str, ...], reason: str | None
) -> None:
    cli = Cli(tmp_path / "home")
    db = str(tmp_path / "strict.db")
    assert cli("verifier", "init", "--db", db, *init_args).exit_code == 0
    run = cli("demo", "--db", db, "--json")
    assert run.exit_code == ExitCode.INVARIANT_BROKEN == 14
    assert run.stderr == "capsim: error: demo step 'pin-restored' failed: expected accept, observed reject\n"
    doc = json.loads(run.stdout)
    assert doc["ok"] is False
    assert doc["failure"].startswith("step 'pin-restored' failed")
    steps = doc["steps"]
    assert [s["name"] for s in steps] == STEPS[: STEPS.index("pin-restored") + 1]
    assert [s["ok"] for s in steps] == [True] * (len(steps) - 1) + [False]
    # the verifier's audit (in the given store) says why
    records = cli("verifier", "audit", "--db", db, "--json").json()["records"]
    last_verify = [r for r in records if r["event"] == "verify"][-1]
    assert last_verify["outcome"] == "reject"
    if reason is not None:
        assert last_verify["reason"] == reason


def test_demo_text_names_the_failed_step(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    db = str(tmp_path / "strict.db")
    assert cli("verifier", "init", "--db", db, "--max-fail", "1").exit_code == 0
    run = cli("demo", "--db", db)
    assert run.exit_code == 14
    assert "[FAIL] the PIN works again and its code is accepted" in run.stdout
    assert "expected accept, observed reject" in run.stdout
    assert "all 12 steps" not in run.stdout


@pytest.mark.postgres
def test_demo_on_postgresql(tmp_path: Path, pg_cluster: PgCluster) -> None:
    name = pg_cluster.create_database(template=migrated_template(pg_cluster))
    try:
        run = Cli(tmp_path / "home")("demo", "--db", pg_cluster.url(name), "--json")
        assert run.exit_code == 0, run.stdout + run.stderr
        assert [s["name"] for s in _steps(run.stdout)] == STEPS
    finally:
        pg_cluster.drop_database(name)


def test_demo_store_errors_are_not_step_failures(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    run = cli("demo", "--db", "mysql://bank@db/capsim", "--json")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "unsupported scheme 'mysql'" in run.stderr
    assert json.loads(run.stdout)["error"]["type"] == "invalid_input"
    # an in-process store is fine for a one-process demo
    run = cli("demo", "--db", "memory:", "--json")
    assert run.exit_code == 0, run.stderr
    assert [s["name"] for s in _steps(run.stdout)] == STEPS


def test_demo_needs_only_the_base_dependencies(tmp_path: Path) -> None:
    """The README installs capsim without extras (its base dependencies: click, pycryptodome,
    cryptography, hypothesis): the demo must not need psycopg, pyscard, the HTTP stack or the
    test tools. Checked in a fresh interpreter with the pycryptodome DES backend forced."""
    script = (
        "import sys\n"
        "from capsim.cli import main\n"
        "try:\n"
        "    main(['demo', '--json'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "extras = ('psycopg', 'smartcard', 'fastapi', 'uvicorn', 'httpx', 'pyemv', 'pytest', 'pkcs11')\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(extras))\n"
        "print('RESULT', code, ','.join(loaded), file=sys.stderr)\n"
    )
    env = {**os.environ, "CAPSIM_HOME": str(tmp_path / "home"), "CAPSIM_DES_BACKEND": "pycryptodome"}
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert json.loads(p.stdout)["ok"] is True, p.stdout + p.stderr
    assert p.stderr.splitlines()[-1] == "RESULT 0 "  # exit 0, no extra module loaded
