"""capsim's own verifier passes every check of ``capsim probe``: on the memory, SQLite and
PostgreSQL stores through the library, through ``capsim probe --db`` on an initialised
database, and over HTTP (``capsim verifier serve`` as a real subprocess on a real socket),
through the native ``/v1`` API and the privacyIDEA-compatible ``/validate`` routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cli import main
from capsim.probe import CHECKS, ProbeOptions, Status, run_probe
from capsim.verifier.service import Verifier
from tests.cli.helpers import make_world
from tests.probe.conftest import STORES, lab_for, provider
from tests.service.conftest import start_service

OPTIONS = ProbeOptions(timing_samples=30, seed=11)


def _no_failure(report_dict: dict[str, object]) -> list[str]:
    checks = report_dict["checks"]
    assert isinstance(checks, list)
    return [f"{c['name']}: {c['status']}: {c['summary']} {c['evidence']}" for c in checks
            if c["status"] in ("fail", "error")]  # fmt: skip


@pytest.mark.parametrize("backend", list(STORES))
def test_capsim_passes_every_check_on_each_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = STORES[backend](request, tmp_path)
    try:
        report = run_probe(lab_for(Verifier(store, provider())), CHECKS, OPTIONS)
    finally:
        store.close()
    assert _no_failure(report.to_dict()) == []
    statuses = {r.check.name: r.outcome.status for r in report.results}
    assert set(statuses) == {c.name for c in CHECKS}
    # everything but the timing measurement is a plain pass (timing may warn on a busy machine)
    assert all(s is Status.PASS for name, s in statuses.items() if name != "uniform-reject-timing")


def _probe(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    result = CliRunner(env={"CAPSIM_DB": None, **(env or {})}).invoke(
        main, ["probe", *args], catch_exceptions=False
    )
    return result.exit_code, result.stdout


def test_cli_probes_an_initialised_sqlite_database(tmp_path: Path) -> None:
    world = make_world(tmp_path)  # capsim verifier init --issuer-keys …: the probe finds the keys
    runner = CliRunner(env={"CAPSIM_HOME": str(world.cli.home), "CAPSIM_DB": None})
    result = runner.invoke(
        main, ["probe", "--db", world.db, "--json", "--timing-samples", "20"], catch_exceptions=False
    )
    doc = json.loads(result.stdout)
    assert _no_failure(doc) == [], doc
    assert result.exit_code == 0
    assert doc["exit_code"] == 0
    assert doc["failed"] is False
    assert doc["target"] == f"capsim verifier (library, {world.db})"
    assert "999909" not in result.stdout  # no PAN of the probe's cards is shown


def test_cli_exits_14_when_a_check_fails() -> None:
    # the in-memory verifier locks after 5 wrong codes; claiming 4 makes the lockout check fail
    code, out = _probe("--check", "lockout-count", "--max-fail", "4")
    assert code == 14
    assert "FAIL   lockout-count: the lock does not come after exactly 4 wrong codes" in out
    code, out = _probe("--check", "lockout-count", "--max-fail", "4", "--json")
    doc = json.loads(out)
    assert code == 14
    assert doc["exit_code"] == 14
    assert doc["counts"]["fail"] == 1


def test_cli_refuses_an_unknown_check() -> None:
    code, _ = _probe("--check", "no-such-check")
    assert code == 13


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    svc = start_service(tmp_path_factory.mktemp("probe-svc"), extra=("--rate-credential", "1000"))
    yield svc
    svc.stop()


@pytest.mark.parametrize("privacyidea", [False, True], ids=["v1", "privacyidea"])
def test_capsim_service_passes_over_http(service, privacyidea: bool) -> None:  # type: ignore[no-untyped-def]
    args = [
        "--db",
        service.base,
        "--issuer-keys",
        str(service.world.keys),
        "--json",
        "--timing-samples",
        "20",
    ]
    if privacyidea:
        args.append("--privacyidea")
    code, out = _probe(*args, env={"CAPSIM_API_KEY": service.keys["operator"]})
    doc = json.loads(out)
    assert _no_failure(doc) == [], doc
    assert code == 0
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    if privacyidea:
        # privacyIDEA issues Respond challenges only and knows no request ids
        skipped = {"separation", "wrong-amount", "wrong-payee", "request-id-reuse"}
        assert {n for n, s in statuses.items() if s == "skip"} == skipped
        assert doc["target"] == f"privacyIDEA endpoint {service.base}/validate"
    else:
        assert "skip" not in statuses.values()
    assert service.keys["operator"] not in out
