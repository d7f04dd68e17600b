"""``capsim verifier …`` and ``capsim verify`` (docs/cli.md; verifier.md §1, V7, V14, V30, V32, V38, V39).

Every code here comes from a real card file (``capsim card new``) through the real reader
(``capsim code … --reader file:CARD --pin-stdin``); every command runs through the click entry
point, once through the installed ``capsim`` executable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cli._common import ExitCode
from capsim.crypto import key_check_value
from capsim.storage import IssuerKeys, load_issuer_keys, read_card_file, save_issuer_keys
from tests.cli.helpers import PIN, Cli, Run, World, make_world
from tests.verifier.pgcluster import PgCluster, migrated_template, pg_cluster

__all__ = ["pg_cluster"]

REJECT_LINE = "capsim: error: code rejected\n"

#: The JSON error object of the uniform reject under --json (docs/cli.md, "JSON errors").
JSON_REJECTED = {"type": "rejected", "message": "code rejected", "exit_code": 10}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _assert_uniform_reject(run: Run, *, code: str | None = None) -> None:
    assert run.exit_code == ExitCode.REJECTED == 10
    assert run.stderr == REJECT_LINE
    assert run.stdout == ""
    if code is not None:
        assert code not in run.output


# ------------------------------------------------------------------------------------------------
# The integrator flow


def test_flow_every_mode_accepts_and_replays_are_rejected(world: World) -> None:
    cid = world.enroll()
    cred = world.credential(cid)
    assert cred["state"] == "active"
    assert cred["last_atc"] == 1  # the first Identify code's ATC activated it

    # Identify
    op = world.operation(cid, "identify")
    assert op["challenge"] is None
    assert op["mode"] == "identify"
    code = world.code("identify")
    run = world.verify(op["operation_id"], code, "--json")
    assert run.exit_code == 0, run.stderr
    acc = run.json()
    assert acc["accepted"] is True
    assert acc["mode"] == "identify"
    assert acc["atc"] == 2
    assert acc["operation_id"] == op["operation_id"]
    assert acc["credential_id"] == cid
    assert code not in run.output  # never echoed

    # Respond: the challenge the bank shows, typed into the reader
    op = world.operation(cid, "respond")
    challenge = op["challenge"]
    assert len(challenge) == 8
    assert challenge.isascii()
    assert challenge.isdigit()
    code = world.code("respond", "--challenge", challenge)
    assert world.verify(op["operation_id"], code).exit_code == 0

    # Sign: challenge, amount and currency (the secur-acces IAF signs the amount)
    op = world.operation(cid, "sign", "--amount", "125.00", "--currency", "EUR", "--payee", "ACME SA")
    assert op["amount_minor"] == 12500
    assert op["currency"] == "978"
    assert op["payee"] == "ACME SA"
    code = world.code("sign", "--challenge", op["challenge"], "--amount", "125.00", "--currency", "EUR")
    assert world.verify(op["operation_id"], code).exit_code == 0

    # TDS over three fields
    op = world.operation(cid, "tds", "--field", "30006000", "--field", "12500", "--field", "7890189")
    assert op["fields"] == ["30006000", "12500", "7890189"]
    tds_code = world.code("tds", "--field", "30006000", "--field", "12500", "--field", "7890189")
    assert world.verify(op["operation_id"], tds_code).exit_code == 0

    # The same code again on its consumed operation, and on a fresh one: one uniform reject
    _assert_uniform_reject(world.verify(op["operation_id"], tds_code), code=tds_code)
    op2 = world.operation(cid, "tds", "--field", "30006000", "--field", "12500", "--field", "7890189")
    _assert_uniform_reject(world.verify(op2["operation_id"], tds_code), code=tds_code)
    assert world.credential(cid)["last_atc"] == 5


def test_code_from_stdin_and_identify_login_without_operation(world: World) -> None:
    cid = world.enroll()
    code = world.code("identify")
    run = world.verify(cid, "-", stdin=code + "\n")  # V18: a credential id for a bare Identify login
    assert run.exit_code == 0, run.stderr
    assert code not in run.output
    assert "accepted" in run.stdout
    _assert_uniform_reject(world.verify(cid, "-", stdin=code + "\n"), code=code)


def test_a_code_for_another_amount_or_mode_is_rejected(world: World) -> None:
    cid = world.enroll()
    op = world.operation(cid, "sign", "--amount", "125.00", "--currency", "EUR")
    wrong = world.code("sign", "--challenge", op["challenge"], "--amount", "125.01", "--currency", "EUR")
    _assert_uniform_reject(world.verify(op["operation_id"], wrong), code=wrong)
    # a Respond code over the same challenge is not a signature (V8)
    resp = world.code("respond", "--challenge", op["challenge"])
    _assert_uniform_reject(world.verify(op["operation_id"], resp), code=resp)
    assert world.credential(cid)["fail_count"] == 2
    right = world.code("sign", "--challenge", op["challenge"], "--amount", "125.00", "--currency", "EUR")
    assert world.verify(op["operation_id"], right).exit_code == 0
    assert world.credential(cid)["fail_count"] == 0


def test_json_reject_is_uniform_across_reasons(world: World) -> None:
    """V30: wrong code, replay, unknown operation, suspended and revoked credential look the same."""
    cid = world.enroll()
    outputs = []
    op = world.operation(cid, "identify")
    good = world.code("identify")
    outputs.append(world.verify(op["operation_id"], "00000000", "--json"))  # wrong
    assert world.verify(op["operation_id"], good).exit_code == 0
    outputs.append(world.verify(op["operation_id"], good, "--json"))  # consumed / replay
    outputs.append(world.verify("op-0000000000000000", good, "--json"))  # unknown operation
    outputs.append(world.verify("cr-0000000000000000", good, "--json"))  # unknown credential
    op = world.operation(cid, "identify")
    assert world.v("credential", "suspend", cid).exit_code == 0
    fresh = world.code("identify")
    outputs.append(world.verify(op["operation_id"], fresh, "--json"))  # suspended
    assert world.v("credential", "revoke", cid).exit_code == 0
    outputs.append(world.verify(cid, fresh, "--json"))  # revoked
    for run in outputs:
        assert run.exit_code == 10
        assert run.stderr == REJECT_LINE
        assert json.loads(run.stdout) == {"accepted": False, "error": JSON_REJECTED}
        assert good not in run.output
        assert fresh not in run.output
    assert len({(r.stdout, r.stderr) for r in outputs}) == 1


@pytest.mark.parametrize(
    "bad",
    ["1234567", "123456789", "1234567a", "１２３４５６７８", "12345 78", "+1234567", "", "٣٣٣٣٣٣٣٣"],
)
def test_malformed_code_is_an_input_error_and_counts_nothing(world: World, bad: str) -> None:
    """V7: format errors exit 13 before any crypto or database change; nothing is echoed."""
    cid = world.enroll()
    op = world.operation(cid, "identify")
    before = world.credential(cid)
    run = world.verify(op["operation_id"], bad)
    assert run.exit_code == ExitCode.INVALID_INPUT == 13
    assert run.stderr == "capsim: error: code: expected exactly 8 ASCII digits\n"
    assert run.stdout == ""
    assert world.credential(cid) == before
    # the operation is still open and a real code still works
    assert world.verify(op["operation_id"], world.code("identify")).exit_code == 0


def test_request_id_replays_the_recorded_outcome(world: World) -> None:
    """V24 through the CLI: the same --request-id returns the same acceptance, nothing changes."""
    cid = world.enroll()
    op = world.operation(cid, "identify")
    code = world.code("identify")
    first = world.verify(op["operation_id"], code, "--request-id", "bank-req-1", "--json")
    again = world.verify(op["operation_id"], code, "--request-id", "bank-req-1", "--json")
    assert first.exit_code == again.exit_code == 0
    assert first.json() == again.json()
    assert first.json()["request_id"] == "bank-req-1"
    _assert_uniform_reject(world.verify(op["operation_id"], code, "--request-id", "bank-req-2"))


# ------------------------------------------------------------------------------------------------
# Enrolment


def test_wrong_first_code_creates_nothing_then_the_right_one_activates(world: World) -> None:
    act = world.activation()
    run = world.v("enroll", "--activation-code", act, "--card", str(world.card), "--code", "12345678")
    _assert_uniform_reject(run)
    assert world.v("credential", "list", "--json").json() == {"credentials": []}
    first = world.code("identify")
    run = world.v("enroll", "--activation-code", act, "--card", str(world.card), "--code", first, "--json")
    assert run.exit_code == 0, run.stderr
    cred = run.json()
    assert cred["state"] == "active"
    profile, _ = read_card_file(world.card)
    assert cred["pan_last4"] == profile.pan[-4:]
    assert profile.pan not in run.output
    # the activation code is single use
    again = world.code("identify")
    run = world.v("enroll", "--activation-code", act, "--card", str(world.card), "--code", again)
    _assert_uniform_reject(run)


def test_enroll_without_code_is_pending_and_reads_codes_from_stdin(world: World) -> None:
    act = world.activation()
    run = world.v("enroll", "--activation-code", "-", "--card", str(world.card), "--json", stdin=act + "\n")
    assert run.exit_code == 0, run.stderr
    assert run.json()["state"] == "pending"
    assert act not in run.output
    cid = run.json()["credential_id"]
    run = world.v("operation", "new", cid, "--mode", "identify")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "no active credential" in run.stderr
    # pending -> active: a wrong code is the uniform reject, the card's code activates it
    run = world.v("credential", "activate", cid, "--code", "12345678", "--json")
    assert run.exit_code == ExitCode.REJECTED
    assert run.stderr == REJECT_LINE
    assert run.json() == {"activated": False, "error": JSON_REJECTED}
    assert world.credential(cid)["state"] == "pending"
    code = world.code("identify")
    run = world.v("credential", "activate", cid, "--code", "-", "--json", stdin=code + "\n")
    assert run.exit_code == 0, run.stderr
    assert run.json()["state"] == "active"
    assert code not in run.output
    assert world.verify(cid, world.code("identify")).exit_code == 0


def test_admin_activation_of_a_pending_credential(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    assert world.v("user", "add", "bob", "--as", "alice").exit_code == 0
    act = world.activation("bob")
    run = world.v("enroll", "--activation-code", act, "--card", str(world.card), "--json")
    cid = run.json()["credential_id"]
    run = world.v("credential", "activate", cid, "--as", "bob")  # bob is no administrator
    assert run.exit_code == ExitCode.INVALID_INPUT
    # a customer administrator may not activate a card without its first code: the bank may
    run = world.v("credential", "activate", cid, "--as", "alice")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "may not activate without a first code" in run.stderr
    assert world.v("credential", "activate", cid, "--json").json()["state"] == "active"
    assert world.verify(cid, world.code("identify")).exit_code == 0


def test_enroll_refuses_a_card_of_unregistered_issuer_keys(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    other = tmp_path / "other.json"
    world.cli.ok("card", "new", str(other))  # new random issuer keys, never registered
    act = world.activation()
    run = world.v("enroll", "--activation-code", act, "--card", str(other), "--code", "12345678")
    assert run.exit_code == ExitCode.INVALID_INPUT
    profile, _ = read_card_file(other)
    kid = "iss-" + profile.kcv_imk_ac.hex().upper()
    assert f"the card's issuer keys ({kid}) are not registered" in run.stderr
    assert world.v("credential", "list", "--json").json() == {"credentials": []}
    # registering its keys file makes it enrollable
    assert world.v("init", "--issuer-keys", str(tmp_path / "other.issuer-keys.json")).exit_code == 0
    first = world.cli.ok(
        "code", "identify", "--reader", f"file:{other}", "--pin-stdin", "--json", stdin=PIN + "\n"
    ).json()["code"]
    run = world.v("enroll", "--activation-code", act, "--card", str(other), "--code", first, "--json")
    assert run.exit_code == 0, run.stderr


def test_activation_code_json_and_ttl(world: World) -> None:
    run = world.v("activation-code", "alice", "--json", "--ttl", "60")
    assert run.exit_code == 0
    doc = run.json()
    assert set(doc) == {"activation_code", "expires_at", "user_id"}
    assert len(doc["activation_code"].replace("-", "")) == 16
    assert doc["expires_at"].endswith("+00:00")
    assert world.v("activation-code", "nobody").exit_code == ExitCode.INVALID_INPUT


# ------------------------------------------------------------------------------------------------
# Users, credentials, policy


def test_users_and_secondary_users(world: World) -> None:
    assert world.v("user", "add", "bob", "--as", "alice", "--json").json()["customer_id"] == "cu-alice"
    run = world.v("user", "add", "carol", "--as", "bob")  # bob is not an administrator
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "not an administrator" in run.stderr
    assert world.v("user", "add", "dave", "--customer", "acme", "--json").json()["role"] == "admin"
    assert world.v("user", "add", "alice").exit_code == ExitCode.INVALID_INPUT  # exists
    cid = world.enroll(user="bob")
    other = world.v("credential", "list", "--as", "dave", "--json").json()["credentials"]
    assert other == []  # dave administers another account
    mine = world.v("credential", "list", "--as", "alice", "--json").json()["credentials"]
    assert [c["credential_id"] for c in mine] == [cid]
    run = world.v("credential", "list", "--as", "nobody")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "no user 'nobody'" in run.stderr
    run = world.v("credential", "list", "--user", "bob", "--as", "dave")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "not an administrator of this customer account" in run.stderr
    users = world.v("user", "list", "--json").json()["users"]
    assert {(u["user_id"], u["customer_id"], u["role"]) for u in users} == {
        ("alice", "cu-alice", "admin"),
        ("bob", "cu-alice", "user"),
        ("dave", "acme", "admin"),
    }
    acme = world.v("user", "list", "--customer", "acme", "--json").json()["users"]
    assert [u["user_id"] for u in acme] == ["dave"]


def test_credential_lifecycle_commands(world: World) -> None:
    cid = world.enroll()
    run = world.v("credential", "suspend", cid, "--reason", "travel", "--json")
    assert run.json()["state"] == "suspended"
    op_code = world.code("identify")
    _assert_uniform_reject(world.verify(cid, op_code))
    assert world.v("credential", "resume", cid, "--json").json()["state"] == "active"
    assert world.verify(cid, world.code("identify")).exit_code == 0
    assert world.v("credential", "revoke", cid, "--json").json()["state"] == "revoked"
    _assert_uniform_reject(world.verify(cid, world.code("identify")))
    assert world.v("credential", "resume", cid).exit_code == ExitCode.INVALID_INPUT  # terminal
    text = world.v("credential", "list").stdout
    assert cid in text
    assert "revoked" in text
    profile, _ = read_card_file(world.card)
    assert profile.pan not in text
    assert f"****{profile.pan[-4:]}" in text
    mine = world.v("credential", "list", "--user", "alice", "--json").json()["credentials"]
    assert [c["state"] for c in mine] == ["revoked"]


def test_policy_from_init_locks_after_max_fail_and_unlock_reopens(tmp_path: Path) -> None:
    world = make_world(tmp_path, init_args=("--max-fail", "2"))
    cid = world.enroll()
    for _ in range(2):
        _assert_uniform_reject(world.verify(cid, "00000000"))
    cred = world.credential(cid)
    assert cred["fail_count"] == 2
    assert cred["locked_until"] is not None
    good = world.code("identify")
    _assert_uniform_reject(world.verify(cid, good), code=good)  # locked: even a right code fails
    assert world.v("credential", "unlock", cid).exit_code == 0
    assert world.verify(cid, world.code("identify")).exit_code == 0


def test_init_is_idempotent_and_stores_no_key_material(world: World) -> None:
    again = world.v("init", "--issuer-keys", str(world.keys), "--json")
    assert again.exit_code == 0
    doc = again.json()
    keys = load_issuer_keys(world.keys)
    kid = "iss-" + keys.kcvs()["imk-ac"].hex().upper()
    assert [e["key_id"] for e in doc["issuer_keys"]] == [kid]
    assert doc["issuer_keys"][0]["path"] == str(world.keys.resolve())
    assert doc["policy"]["max_fail"] == 5
    audit = world.v("audit", "--json").json()["records"]
    assert [r["event"] for r in audit].count("issuer-keys") == 1  # a repeated init writes nothing
    world.enroll()
    raw = b"".join(p.read_bytes() for p in world.tmp.glob("verifier.db*"))
    for key in (keys.imk_ac, keys.imk_smi, keys.imk_smc):
        assert key not in raw
        assert key.hex().encode() not in raw
        assert key.hex().upper().encode() not in raw
    profile, _ = read_card_file(world.card)
    assert profile.pan.encode() not in raw
    assert oct(os.stat(world.db).st_mode & 0o777) == "0o600"


def test_moved_or_changed_issuer_keys_file_is_a_state_error(world: World) -> None:
    cid = world.enroll()
    world.keys.rename(world.tmp / "moved.json")
    run = world.verify(cid, world.code("identify"))
    assert run.exit_code == ExitCode.STATE_FILE
    assert "issuer keys file" in run.stderr
    # registering the new place repairs it (same keys, same key id)
    assert world.v("init", "--issuer-keys", str(world.tmp / "moved.json")).exit_code == 0
    assert world.verify(cid, world.code("identify")).exit_code == 0


def _replace_keys_file(path: Path, keys: IssuerKeys) -> None:
    path.unlink()
    save_issuer_keys(path, keys)


def test_keys_file_with_another_imk_smi_is_refused(world: World) -> None:
    """The IMK-AC (and so the key id) is unchanged; only IMK-SMI differs: exit 12."""
    cid = world.enroll()
    keys = load_issuer_keys(world.keys)
    _replace_keys_file(world.keys, dataclasses.replace(keys, imk_smi=bytes(reversed(keys.imk_smi))))
    run = world.verify(cid, world.code("identify"))
    assert run.exit_code == ExitCode.STATE_FILE == 12
    assert "IMK-SMI" in run.stderr
    assert "does not hold the keys registered" in run.stderr
    assert keys.imk_smi.hex() not in run.output.lower()
    run = world.v("init", "--issuer-keys", str(world.keys))
    assert run.exit_code == ExitCode.STATE_FILE


def _kcv_collision(seed: int = 2026) -> tuple[bytes, bytes]:
    """Two different 16-byte keys with the same 24-bit KCV (a birthday search: ~2^12 keys)."""
    rng = random.Random(seed)
    seen: dict[bytes, bytes] = {}
    while True:
        key = rng.randbytes(16)
        kcv = key_check_value(key)
        if kcv in seen and seen[kcv] != key:
            return seen[kcv], key
        seen[kcv] = key


def test_keys_file_with_a_kcv_colliding_imk_ac_is_refused(tmp_path: Path) -> None:
    """A swapped file whose IMK-AC has the registered KCV (so the same key id) is refused."""
    started = time.monotonic()
    a, b = _kcv_collision()
    assert time.monotonic() - started < 2
    assert a != b
    assert key_check_value(a) == key_check_value(b)
    world = make_world(tmp_path)
    keys = load_issuer_keys(world.keys)
    mine = tmp_path / "collide.issuer-keys.json"
    save_issuer_keys(mine, dataclasses.replace(keys, imk_ac=a))
    init = world.v("init", "--issuer-keys", str(mine), "--json")
    assert init.exit_code == 0, init.stderr
    kid = "iss-" + key_check_value(a).hex().upper()
    assert kid in [e["key_id"] for e in init.json()["issuer_keys"]]
    _replace_keys_file(mine, dataclasses.replace(keys, imk_ac=b))
    run = world.verify("cr-nobody", "12345678")
    assert run.exit_code == ExitCode.STATE_FILE
    assert "IMK-AC" in run.stderr
    other = tmp_path / "other.issuer-keys.json"
    save_issuer_keys(other, dataclasses.replace(keys, imk_ac=b))
    run = world.v("init", "--issuer-keys", str(other))
    assert run.exit_code == ExitCode.STATE_FILE
    assert kid in run.stderr


def test_uninitialised_or_memory_databases_are_refused(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    missing = tmp_path / "nope.db"
    run = cli("verifier", "user", "list", "--db", str(missing))
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "no verifier database" in run.stderr
    assert not missing.exists()  # a mistyped --db never creates a file
    run = cli("verify", "op-1", "12345678", "--db", "memory:")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "memory: keeps nothing" in run.stderr
    # the default database lives in the data directory, created by init
    assert cli("verifier", "init").exit_code == 0
    assert (tmp_path / "home" / "verifier.db").exists()
    assert cli("verifier", "user", "add", "zoe").exit_code == 0
    # an existing SQLite file that init never prepared
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).close()
    run = cli("verifier", "user", "list", "--db", str(foreign))
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "not an initialised capsim verifier" in run.stderr


def test_operation_input_errors(world: World) -> None:
    cid = world.enroll()
    for args, fragment in [
        (("--mode", "identify", "--amount", "1.00"), "take no amount"),
        (("--mode", "tds"), "tds needs"),
        (("--mode", "tds", "--field", "12a"), "--field #1"),
        (("--mode", "sign", "--amount", "1.001", "--currency", "EUR"), "decimal"),
        (("--mode", "sign", "--amount", "1.00", "--currency", "XXX"), "currency"),
        (("--mode", "respond", "--reference", "1234"), "reference"),
    ]:
        run = world.v("operation", "new", cid, *args)
        assert run.exit_code == ExitCode.INVALID_INPUT, (args, run.stderr)
        assert fragment in run.stderr, (args, run.stderr)
    op = world.operation(cid, "sign", "--reference", "1234", "--amount", "5.00", "--currency", "EUR")
    assert op["challenge"] == "00001234"  # canonical form (V9)


# ------------------------------------------------------------------------------------------------
# Audit


def test_audit_lists_and_checks_and_detects_tampering(world: World) -> None:
    cid = world.enroll()
    code = world.code("identify")
    assert world.verify(cid, code).exit_code == 0
    records = world.v("audit", "--json").json()["records"]
    events = [r["event"] for r in records]
    assert events[:4] == ["audit-seal", "policy", "issuer-keys", "user"]
    assert all(r["sealed"] for r in records)
    assert "enroll" in events
    assert events[-1] == "verify"
    assert all(code not in json.dumps(r) for r in records)  # V38
    assert [r["seq"] for r in world.v("audit", "--last", "2", "--json").json()["records"]] == [
        records[-2]["seq"],
        records[-1]["seq"],
    ]
    only = world.v("audit", "--credential", cid, "--json").json()["records"]
    assert only
    assert all(r["credential_id"] == cid for r in only)
    run = world.v("audit", "--check", "--json")
    assert run.exit_code == 0
    assert run.json() == {
        "intact": True,
        "problems": [],
        "records": len(records),
        "sealed_from": 1,
        "tip": None,
    }
    assert "audit chain intact" in world.v("audit", "--check").stdout

    # the table refuses updates; someone with file access can still drop the trigger first
    with sqlite3.connect(world.db) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE cap_audit SET outcome = 'reject'")
        conn.execute("DROP TRIGGER cap_audit_no_update")
        conn.execute("UPDATE cap_audit SET outcome = 'reject' WHERE seq = ?", (records[-1]["seq"],))
    run = world.v("audit", "--check", "--json")
    assert run.exit_code == ExitCode.INVARIANT_BROKEN == 14
    assert run.json()["problems"] == [{"kind": "edited", "seq": records[-1]["seq"]}]
    assert "audit chain is broken" in run.stderr


def _sqlite(world: World, *statements: str) -> None:
    with sqlite3.connect(world.db) as conn:
        for sql in statements:
            conn.execute(sql)


@pytest.mark.parametrize(
    "edit",
    ["details = 'not json'", "at = 'garbage'", "event = X'00FF'"],
    ids=["details-not-json", "at-garbage", "event-blob"],
)
def test_audit_check_reports_an_undecodable_row_as_tampering(world: World, edit: str) -> None:
    """An edited row that no writer produces is exit 14 naming its seq, never a traceback or exit 11."""
    world.enroll()
    seq = world.v("audit", "--json").json()["records"][3]["seq"]
    _sqlite(world, "DROP TRIGGER cap_audit_no_update", f"UPDATE cap_audit SET {edit} WHERE seq = {seq}")
    run = world.v("audit", "--check", "--json")
    assert run.exit_code == ExitCode.INVARIANT_BROKEN
    assert [(p["seq"], p["kind"]) for p in run.json()["problems"]] == [(seq, "malformed")]
    assert f"records {seq}" in run.stderr
    assert "Traceback" not in run.output
    text = world.v("audit", "--check")
    assert text.exit_code == ExitCode.INVARIANT_BROKEN
    assert f"record {seq}: malformed" in text.stdout
    listed = world.v("audit", "--json")  # listing shows the row as malformed, without failing
    assert listed.exit_code == 0
    assert "malformed" in listed.json()["records"][3]


def test_audit_rehashed_edit_is_reported_by_its_seals(world: World) -> None:
    """Re-hashing an edited record and every later one keeps the chain valid, not the seals."""
    from capsim.verifier.audit import AuditEntry, seal
    from capsim.verifier.sqlite import SqliteStore

    cid = world.enroll()
    assert world.verify(cid, world.code("identify")).exit_code == 0
    store = SqliteStore(world.db)
    try:
        records = list(store.audit_records())
    finally:
        store.close()
    (accepted,) = [r for r in records if r.entry.outcome == "accept" and r.entry.event == "verify"]
    statements = ["DROP TRIGGER cap_audit_no_update"]
    prev = accepted.prev_hash
    for rec in records[accepted.seq - 1 :]:
        entry: AuditEntry = rec.entry
        if rec.seq == accepted.seq:
            entry = AuditEntry(**{**{f: getattr(entry, f) for f in entry.__slots__}, "outcome": "reject"})
        new = seal(entry, seq=rec.seq, at=rec.at, prev_hash=prev)
        statements.append(
            f"UPDATE cap_audit SET outcome = '{entry.outcome}', prev_hash = X'{new.prev_hash.hex()}',"
            f" record_hash = X'{new.record_hash.hex()}' WHERE seq = {rec.seq}"
        )
        prev = new.record_hash
    _sqlite(world, *statements)
    run = world.v("audit", "--check", "--json")
    assert run.exit_code == ExitCode.INVARIANT_BROKEN
    kinds = {(p["seq"], p["kind"]) for p in run.json()["problems"]}
    assert kinds == {(r.seq, "bad-seal") for r in records[accepted.seq - 1 :]}


def test_audit_export_tip_then_a_deleted_tail_is_reported(world: World) -> None:
    world.enroll()
    tip = world.tmp / "tip.json"
    run = world.v("audit", "--export-tip", str(tip), "--json")
    assert run.exit_code == 0, run.stderr
    doc = json.loads(tip.read_text())
    assert set(doc) >= {"seq", "record_hash", "seal"}
    assert run.json()["tip"]["seq"] == doc["seq"]
    printed = world.v("audit", "--export-tip")  # without FILE: the tip on stdout
    assert json.loads(printed.stdout)["seq"] == doc["seq"]
    assert world.v("user", "add", "bob").exit_code == 0  # the chain grows past the tip
    ok = world.v("audit", "--check", "--tip", str(tip))
    assert ok.exit_code == 0, ok.stderr
    assert f"tip (record {doc['seq']}) is present" in ok.stdout
    _sqlite(world, "DROP TRIGGER cap_audit_no_delete", f"DELETE FROM cap_audit WHERE seq >= {doc['seq']}")
    assert world.v("audit", "--check").exit_code == 0  # a shorter chain is still a valid one
    run = world.v("audit", "--check", "--tip", str(tip), "--json")
    assert run.exit_code == ExitCode.INVARIANT_BROKEN
    assert run.json()["problems"] == [{"seq": doc["seq"], "kind": "truncated"}]
    bad = world.tmp / "bad-tip.json"
    bad.write_text("{}")
    assert world.v("audit", "--check", "--tip", str(bad)).exit_code == ExitCode.INVALID_INPUT


def test_keyring_file_is_outside_the_database_and_guarded(world: World) -> None:
    keyring = Path(world.db + ".keyring.json")
    assert oct(keyring.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(keyring.read_text())
    key = bytes.fromhex(doc["audit_seal"]["key"])
    assert doc["audit_seal"]["sealed_from"] == 1
    raw = b"".join(p.read_bytes() for p in world.tmp.glob("verifier.db*") if p != keyring)
    assert key not in raw
    assert key.hex().encode() not in raw
    # a missing keyring file is a state-file error, never a silent new key
    moved = world.tmp / "elsewhere.json"
    keyring.rename(moved)
    run = world.v("user", "add", "bob")
    assert run.exit_code == ExitCode.STATE_FILE
    assert "no keyring file" in run.stderr
    run = world.v("init")
    assert run.exit_code == ExitCode.STATE_FILE
    assert not keyring.exists()
    # --keyring / CAPSIM_KEYRING name it
    assert world.v("user", "add", "bob", "--keyring", str(moved)).exit_code == 0
    # a keyring file holding another key is refused
    (world.tmp / "other").mkdir()
    other = make_world(world.tmp / "other")
    run = world.v("user", "list", "--keyring", other.db + ".keyring.json")
    assert run.exit_code == ExitCode.STATE_FILE
    assert "holds seal key" in run.stderr


def test_upgraded_database_checks_clean_and_is_sealed_after_init(world: World) -> None:
    """A database as the releases before sealing left it (no seal table, no seal setting, no
    keyring file, registrations without fingerprints) upgrades in place."""
    from capsim.verifier import migrate

    world.enroll()
    Path(world.db + ".keyring.json").unlink()
    _sqlite(
        world,
        "DROP TABLE cap_audit_seal",
        "DROP TABLE cap_client",
        "DROP TABLE cap_rate",
        "DROP TABLE cap_org",
        "DROP TABLE cap_org_user",
        "DROP TABLE cap_cert",
        "DROP TABLE cap_cert_challenge",
        "DELETE FROM cap_setting WHERE name = 'audit.seal'",
        "DROP INDEX cap_credential_live_card_idx",
        "ALTER TABLE cap_credential DROP COLUMN script_atc",
        "ALTER TABLE cap_request DROP COLUMN method",
        "ALTER TABLE cap_request DROP COLUMN target",
        "ALTER TABLE cap_request DROP COLUMN fingerprint",
        f"DELETE FROM {migrate.VERSION_TABLE} WHERE version > 3",
    )
    with sqlite3.connect(world.db) as conn:
        (raw,) = conn.execute("SELECT value FROM cap_setting WHERE name = 'cli.issuer-keys'").fetchone()
        registry = {k: {"path": v["path"], "kcv": v["kcv"]} for k, v in json.loads(raw).items()}
        conn.execute(
            "UPDATE cap_setting SET value = ? WHERE name = 'cli.issuer-keys'", (json.dumps(registry),)
        )
    before = world.v("audit", "--check", "--json")
    assert before.exit_code == 0, before.stderr  # migrated, checked by the chain alone
    assert before.json()["sealed_from"] is None
    n = before.json()["records"]
    run = world.v("user", "add", "bob")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "verifier init" in run.stderr
    init = world.v("init", "--json")
    assert init.exit_code == 0, init.stderr
    assert init.json()["audit_sealed_from"] == n + 1
    assert world.v("user", "add", "bob").exit_code == 0
    after = world.v("audit", "--check", "--json").json()
    assert after["intact"] is True
    assert after["sealed_from"] == n + 1
    records = world.v("audit", "--json").json()["records"]
    assert [r["sealed"] for r in records] == [False] * n + [True] * (len(records) - n)
    # the first load of the keys records their fingerprints (trusting the file present now)
    cid = world.v("credential", "list", "--json").json()["credentials"][0]["credential_id"]
    assert world.verify(cid, world.code("identify")).exit_code == 0
    with sqlite3.connect(world.db) as conn:
        (raw,) = conn.execute("SELECT value FROM cap_setting WHERE name = 'cli.issuer-keys'").fetchone()
    assert all(set(v["fingerprints"]) == {"imk-ac", "imk-smi", "imk-smc"} for v in json.loads(raw).values())
    assert "fingerprinted" in [r["reason"] for r in world.v("audit", "--json").json()["records"]]
    assert world.v("audit", "--check").exit_code == 0


# ------------------------------------------------------------------------------------------------
# The installed entry point


def test_flow_through_the_installed_executable(tmp_path: Path) -> None:
    """The integrator's loop through the ``capsim`` executable (setup in-process to keep it fast)."""
    exe = Path(sys.executable).with_name("capsim")
    assert exe.is_file(), "the capsim entry point is installed beside the interpreter"
    world = make_world(tmp_path)
    cid = world.enroll()
    env = {**os.environ, "CAPSIM_HOME": str(world.cli.home), "CAPSIM_DB": world.db}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
        )

    p = run("verifier", "operation", "new", cid, "--mode", "respond", "--json")
    assert p.returncode == 0, p.stderr
    op = json.loads(p.stdout)
    reader = ("--reader", f"file:{world.card}", "--pin-stdin", "--json")
    p = run("code", "respond", "--challenge", op["challenge"], *reader, stdin=PIN + "\n")
    assert p.returncode == 0, p.stderr
    good = json.loads(p.stdout)["code"]
    p = run("verify", op["operation_id"], "-", stdin=good + "\n")
    assert p.returncode == 0, p.stderr
    assert good not in p.stdout + p.stderr
    p = run("verify", op["operation_id"], good)
    assert p.returncode == 10
    assert p.stderr == REJECT_LINE
    assert p.stdout == ""


@pytest.mark.postgres
def test_postgresql_url_selects_postgresql(tmp_path: Path, pg_cluster: PgCluster) -> None:
    name = pg_cluster.create_database(template=migrated_template(pg_cluster))
    try:
        world = make_world(tmp_path, db=pg_cluster.url(name))
        assert world.v("init", "--json").json()["kind"] == "postgres"
        cid = world.enroll()
        op = world.operation(cid, "sign", "--amount", "9.99", "--currency", "EUR", "--payee", "ACME")
        code = world.code("sign", "--challenge", op["challenge"], "--amount", "9.99", "--currency", "EUR")
        assert world.verify(op["operation_id"], code).exit_code == 0
        _assert_uniform_reject(world.verify(op["operation_id"], code), code=code)
        assert world.v("audit", "--check", "--json").json()["intact"] is True
        assert not list(tmp_path.glob("*.db"))  # nothing went to SQLite
        import psycopg

        with psycopg.connect(pg_cluster.dsn(name)) as conn:
            n = conn.execute("SELECT count(*) FROM cap_credential WHERE credential_id LIKE 'cr-%'").fetchone()
        assert n == (1,)
    finally:
        pg_cluster.drop_database(name)


# ------------------------------------------------------------------------------------------------
# Property: whatever is typed as a code, the CLI answers with one of two fixed lines


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, str, str]:
    world = make_world(tmp_path_factory.mktemp("prop"))
    cid = world.enroll()
    op = world.operation(cid, "identify", "--ttl", "86400")
    return world, cid, op["operation_id"]


@given(
    text=st.one_of(
        st.text(max_size=24),
        st.text(alphabet="0123456789", min_size=0, max_size=12),
        st.text(alphabet=st.characters(categories=["Nd"]), min_size=8, max_size=8),
    )
)
def test_any_typed_code_gets_one_of_two_fixed_answers_and_is_never_echoed(
    shared_world: tuple[World, str, str], text: str
) -> None:
    """V7/V30/V38 at the command line: not 8 ASCII digits -> exit 13 with the fixed message and
    no state change; 8 ASCII digits -> accepted (vanishingly unlikely) or the uniform reject."""
    world, cid, op_id = shared_world
    before = world.credential(cid)
    run = world.cli("verify", "--db", world.db, op_id, "--", text, stdin="")
    eight_digits = len(text) == 8 and all("0" <= c <= "9" for c in text)
    if eight_digits:
        assert run.exit_code in (0, ExitCode.REJECTED)
        if run.exit_code == ExitCode.REJECTED:
            assert run.stderr == REJECT_LINE
            assert run.stdout == ""
        else:
            assert text not in run.output
        if before["fail_count"] >= 2:  # keep the shared credential far from its lock
            assert world.v("credential", "unlock", cid).exit_code == 0
    else:
        assert run.exit_code == ExitCode.INVALID_INPUT, (text, run.stderr)
        assert run.stderr in (
            "capsim: error: code: expected exactly 8 ASCII digits\n",
            "capsim: error: CODE: expected one line on standard input ('-'), got nothing\n",
        )
        assert world.credential(cid) == before
        assert run.stdout == ""


def test_a_busy_database_is_a_temporary_failure_that_counts_nothing(world: World) -> None:
    """Exit 11 when the store cannot decide (V22, V25); the same code verifies afterwards."""
    cid = world.enroll()
    op = world.operation(cid, "identify")
    code = world.code("identify")
    before = world.credential(cid)
    holder = sqlite3.connect(world.db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        run = world.verify(op["operation_id"], code)
        assert run.exit_code == ExitCode.TEMPORARY_FAILURE == 11
        assert run.stderr.startswith("capsim: error: ")
        assert code not in run.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert world.credential(cid) == before
    assert world.verify(op["operation_id"], code).exit_code == 0


def test_replace_and_lost_cards(world: World) -> None:
    """V33 at the command line: the old card's codes are refused, the new card activates."""
    cid = world.enroll()
    profile, _ = read_card_file(world.card)
    new_card = world.tmp / "card2.json"
    world.cli.ok(
        "card", "new", str(new_card), "--pan", profile.pan, "--psn", "01", "--issuer-keys", str(world.keys)
    )
    old_code = world.code("identify")
    run = world.v("credential", "replace", cid, "--card", str(new_card), "--json")
    assert run.exit_code == 0, run.stderr
    new = run.json()
    assert (new["state"], new["psn"], new["replaces"]) == ("pending", "01", cid)
    assert world.credential(cid)["state"] == "replaced"
    _assert_uniform_reject(world.verify(cid, old_code), code=old_code)
    first = world.cli.ok(
        "code", "identify", "--reader", f"file:{new_card}", "--pin-stdin", "--json", stdin=PIN + "\n"
    ).json()["code"]
    run = world.v("credential", "activate", new["credential_id"], "--code", first, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["state"] == "active"

    # lost, with a replacement created in the same step
    third = world.tmp / "card3.json"
    world.cli.ok(
        "card", "new", str(third), "--pan", profile.pan, "--psn", "02", "--issuer-keys", str(world.keys)
    )
    run = world.v("credential", "lost", new["credential_id"], "--replacement-card", str(third), "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["replacement"]["state"] == "pending"
    assert doc["replacement"]["psn"] == "02"
    # lost without a replacement: its codes are refused from then on
    third_id = doc["replacement"]["credential_id"]
    assert world.v("credential", "activate", third_id).exit_code == 0  # the bank activates it
    run = world.v("credential", "lost", third_id, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json() == {"credential_id": third_id, "replacement": None, "state": "lost"}
    code3 = world.cli.ok(
        "code", "identify", "--reader", f"file:{third}", "--pin-stdin", "--json", stdin=PIN + "\n"
    ).json()["code"]
    _assert_uniform_reject(world.verify(third_id, code3), code=code3)
    assert all(profile.pan not in r.output for r in world.cli.runs)  # V38: never a full PAN


def test_resync_and_advance_floor(tmp_path: Path) -> None:
    """V34/V36 at the command line: a card pressed beyond the window is resynchronised with two
    consecutive codes; the floor only ever rises."""
    world = make_world(tmp_path, init_args=("--atc-window", "4"))
    cid = world.enroll()  # ATC 1
    for _ in range(5):
        world.code("identify")  # ATCs 2..6 used up without the bank seeing them
    late = world.code("identify")  # ATC 7 > 1 + W
    _assert_uniform_reject(world.verify(cid, late), code=late)
    first, second = world.code("identify"), world.code("identify")  # ATCs 8 and 9
    run = world.v("credential", "resync", cid, first)
    assert run.exit_code == ExitCode.INVALID_INPUT  # the policy needs 2 codes
    assert "expected 2 consecutive Identify codes" in run.stderr
    run = world.v("credential", "resync", cid, first, "-", "--json", stdin=second + "\n")
    assert run.exit_code == 0, run.stderr
    assert run.json() == {"credential_id": cid, "last_atc": 9, "resynchronised": True}
    assert first not in run.output
    assert second not in run.output
    assert world.verify(cid, world.code("identify")).exit_code == 0  # ATC 10
    # a wrong pair is the uniform reject and counts
    run = world.v("credential", "resync", cid, "12345678", "23456789", "--json")
    assert run.exit_code == ExitCode.REJECTED
    assert run.json() == {"resynchronised": False, "error": JSON_REJECTED}
    assert world.credential(cid)["fail_count"] == 1

    # a payment authorisation used ATC 11: the floor rises, and never goes back down
    assert world.v("credential", "advance-floor", cid, "11", "--json").json()["last_atc"] == 11
    assert world.v("credential", "advance-floor", cid, "5", "--json").json()["last_atc"] == 11
    spent = world.code("identify")  # ATC 11: already used as far as the bank knows
    _assert_uniform_reject(world.verify(cid, spent), code=spent)
    assert world.verify(cid, world.code("identify")).exit_code == 0  # ATC 12
    assert world.credential(cid)["last_atc"] == 12


def test_init_policy_options_are_validated_and_recorded(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    db = str(tmp_path / "p.db")
    run = cli("verifier", "init", "--db", db, "--psd2", "--max-fail", "6")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "max_fail" in run.stderr
    assert not Path(db).exists()  # nothing created for an impossible policy
    doc = cli("verifier", "init", "--db", db, "--psd2", "--operation-ttl", "300", "--json").json()
    pol = doc["policy"]
    assert (pol["psd2"], pol["operation_ttl_s"], pol["max_fail"]) == (True, 300, 5)
    assert cli("verifier", "init", "--db", db, "--operation-ttl", "301").exit_code == ExitCode.INVALID_INPUT
    # a later init without options keeps the stored policy; the policy change is audited
    assert cli("verifier", "init", "--db", db, "--json").json()["policy"]["operation_ttl_s"] == 300
    events = [r["event"] for r in cli("verifier", "audit", "--db", db, "--json").json()["records"]]
    assert events.count("policy") == 1


def test_a_request_id_reused_for_another_operation_exits_15_and_changes_nothing(world: World) -> None:
    """The verifier-seams finding at the command line: a repeated ``--request-id`` used to
    approve any other operation with any code (exit 0, ``"accepted": true``)."""
    cid = world.enroll()
    op1 = world.operation(cid, "sign", "--amount", "15.00", "--currency", "EUR", "--payee", "NL01")
    op2 = world.operation(cid, "sign", "--amount", "9999.99", "--currency", "EUR", "--payee", "NL00 ATTACKER")
    code1 = world.code("sign", "--challenge", op1["challenge"], "--amount", "15.00", "--currency", "EUR")
    assert world.verify(op1["operation_id"], code1, "--request-id", "req-1").exit_code == 0
    run = world.verify(op2["operation_id"], "00000000", "--request-id", "req-1", "--json")
    assert run.exit_code == ExitCode.REQUEST_CONFLICT
    assert "Traceback" not in run.stderr
    assert "request_id already used" in run.stderr
    # the same call again returns its recorded outcome
    assert world.verify(op1["operation_id"], code1, "--request-id", "req-1").exit_code == 0
    # resync with that id is refused too, and changes nothing
    before = world.credential(cid)["last_atc"]
    run = world.v(
        "credential", "resync", cid, world.code("identify"), "-", "--request-id", "req-1", stdin="12345678\n"
    )
    assert run.exit_code == ExitCode.REQUEST_CONFLICT, run.stderr
    assert world.credential(cid)["last_atc"] == before
