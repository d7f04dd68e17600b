"""``capsim verifier … --db http://…`` and ``capsim verify --db http://…``: the command line
against a real ``capsim verifier serve`` (uvicorn subprocess on SQLite) through
:mod:`capsim.client`, with the API key in ``CAPSIM_API_KEY`` only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from capsim.cli import main
from tests.cli.helpers import Run
from tests.service.conftest import Service, start_service

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_service(tmp_path_factory.mktemp("remote"))
    yield service
    service.stop()


def remote(svc: Service, *args: str, key: str | None = "operator", stdin: str | None = None) -> Run:
    """``capsim ARGS --db http://127.0.0.1:PORT`` with ``CAPSIM_API_KEY`` set to client ``key``."""
    env = {
        "CAPSIM_HOME": str(svc.world.tmp / "remote-home"),  # no local database to fall back on
        "CAPSIM_DB": None,
        "CAPSIM_API_KEY": None if key is None else svc.keys.get(key, key),
    }
    result = CliRunner(env=env).invoke(main, [*args, "--db", svc.base], input=stdin, catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def ok(svc: Service, *args: str, key: str = "operator") -> dict[str, Any]:
    run = remote(svc, *args, "--json", key=key)
    assert run.exit_code == 0, (args, run.stdout, run.stderr)
    obj: dict[str, Any] = run.json()
    return obj


@pytest.fixture(scope="module")
def cid(svc: Service) -> str:
    """User bob and the card, enrolled through the remote command line with its first code."""
    assert ok(svc, "verifier", "user", "add", "bob")["customer_id"] == "cu-bob"
    assert "bob" in [u["user_id"] for u in ok(svc, "verifier", "user", "list")["users"]]
    act = ok(svc, "verifier", "activation-code", "bob")["activation_code"]
    first = svc.world.code("identify")
    cred = ok(
        svc, "verifier", "enroll", "--activation-code", act, "--card", str(svc.world.card), "--code", first
    )
    assert cred["state"] == "active"
    assert cred["user_id"] == "bob"
    value: str = cred["credential_id"]
    return value


def test_a_card_enrolled_and_verified_end_to_end_through_the_cli(svc: Service, cid: str) -> None:
    world = svc.world
    # a Sign operation: its challenge into the reader, the code back through `capsim verify`
    op = ok(svc, "verifier", "operation", "new", cid, "--mode", "sign", "--amount", "125.00",
            "--currency", "EUR", "--payee", "NL91ABNA0417164300")  # fmt: skip
    code = world.code("sign", "--challenge", op["challenge"], "--amount", "125.00", "--currency", "EUR")
    acc = ok(svc, "verify", op["operation_id"], code, "--request-id", "rq-sign-1")
    assert (acc["accepted"], acc["mode"], acc["credential_id"]) == (True, "sign", cid)
    # the same request again: the recorded answer; the code again under a new id: replay, exit 10
    assert ok(svc, "verify", op["operation_id"], code, "--request-id", "rq-sign-1")["atc"] == acc["atc"]
    replay = remote(svc, "verify", op["operation_id"], code, "--request-id", "rq-sign-2")
    assert replay.exit_code == 10
    assert replay.stderr.strip() == "capsim: error: code rejected"
    assert code not in replay.output
    # an Identify login against the credential, the verification client's key
    login = world.code("identify")
    assert ok(svc, "verify", cid, login, key="verification")["mode"] == "identify"
    # lifecycle and floor through the CLI
    assert ok(svc, "verifier", "credential", "suspend", cid, "--reason", "test")["state"] == "suspended"
    suspended = remote(svc, "verify", cid, world.code("identify"))
    assert suspended.exit_code == 10
    assert ok(svc, "verifier", "credential", "resume", cid)["state"] == "active"
    listed = ok(svc, "verifier", "credential", "list", "--user", "bob")["credentials"]
    assert [c["credential_id"] for c in listed] == [cid]
    floor = listed[0]["last_atc"] + 2  # the card's next code: one ATC went to the suspended attempt
    assert ok(svc, "verifier", "credential", "advance-floor", cid, str(floor))["last_atc"] == floor
    assert remote(svc, "verify", cid, world.code("identify")).exit_code == 10  # its ATC is the floor
    text = remote(svc, "verifier", "credential", "list")
    assert text.exit_code == 0
    assert f"{cid}  active" in text.stdout
    # the audit over HTTP: check and export its tip, then check against it
    assert ok(svc, "verifier", "audit", "--check")["intact"] is True
    tip = Path(svc.world.tmp / "tip.json")
    assert remote(svc, "verifier", "audit", "--export-tip", str(tip)).exit_code == 0
    checked = ok(svc, "verifier", "audit", "--check", "--tip", str(tip))
    assert checked["intact"] is True
    assert checked["tip"] == json.loads(tip.read_text())["seq"]


def test_a_request_id_reused_for_another_request_is_exit_15(svc: Service, cid: str) -> None:
    first = svc.world.code("identify")
    assert remote(svc, "verify", cid, first, "--request-id", "rq-reused").exit_code == 0
    other = svc.world.code("identify")
    run = remote(svc, "verify", cid, other, "--request-id", "rq-reused")
    assert run.exit_code == 15, run.output
    assert other not in run.output


def test_commands_the_api_does_not_cover_are_refused(svc: Service) -> None:
    for args in (
        ("verifier", "init"),
        ("verifier", "client", "add", "x", "--scope", "operator"),
        ("verifier", "serve"),
        ("verifier", "audit"),
    ):
        run = remote(svc, *args)
        assert run.exit_code == 13, (args, run.output)
        assert "capsim: error:" in run.stderr
        assert "Traceback" not in run.output
    assert "not available against a verifier service" in remote(svc, "verifier", "init").stderr
    run = remote(svc, "verifier", "user", "add", "carol", "--as", "alice")
    assert run.exit_code == 13
    assert "--as" in run.stderr


def test_no_key_or_a_wrong_key_is_a_clear_error(svc: Service) -> None:
    run = remote(svc, "verifier", "user", "list", key=None)
    assert run.exit_code == 13
    assert "CAPSIM_API_KEY" in run.stderr
    bad = "capsim_cl-0000000000000000_" + "A" * 43
    run = remote(svc, "verifier", "user", "list", key=bad)
    assert run.exit_code == 13
    assert "401" in run.stderr
    assert bad not in run.output
    # the verification client may verify but not administer
    assert remote(svc, "verifier", "user", "list", key="verification").exit_code == 13


def test_an_unreachable_service_is_a_temporary_failure(svc: Service, tmp_path: Path) -> None:
    from tests.service.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    env = {"CAPSIM_HOME": str(tmp_path), "CAPSIM_DB": url, "CAPSIM_API_KEY": "k"}
    result = CliRunner(env=env).invoke(main, ["verifier", "user", "list"], catch_exceptions=False)
    assert result.exit_code == 11, result.output
    assert "unreachable" in result.stderr
