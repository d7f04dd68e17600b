"""``capsim fuzz verifier``: V41 invariants on real stores; a broken verifier is caught."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from capsim.cli import main
from capsim.errors import InvalidCode
from capsim.testing.findings import finding_from_transcript
from capsim.testing.fuzz_verifier import (
    fuzz_verifier,
    make_verifier,
    new_bench,
    replay_verifier_finding,
    run_program,
)
from capsim.verifier.memory import MemoryStore
from capsim.verifier.sqlite import SqliteStore


def test_memory_store_keeps_v41_through_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["fuzz", "verifier", "--seed", "4", "--max-examples", "25", "--findings", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"]
    assert report["examples"] == 25
    assert report["target"] == "memory:"


def test_sqlite_store_keeps_v41(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "v.db")
    try:
        report = fuzz_verifier(store, store_name="sqlite", seed=8, max_examples=15, time_budget=60)
    finally:
        store.close()
    assert report.ok, [f.summary() for f in report.findings]
    assert report.examples == 15


def test_honest_program_accepts_each_code_once() -> None:
    bench = new_bench(make_verifier(MemoryStore()))
    program = [("op", "respond", "1234"), ("answer", 0), ("replay", 0), ("again", 0), ("op", "tds", ("42",)),
               ("burst", 0, 5), ("op", "identify"), ("answer", 0)]  # fmt: skip
    assert run_program(bench, program) is None
    assert len(bench.acceptances) == 3
    assert len({a.atc for a in bench.acceptances}) == 3


class ReplayingVerifier:
    """A broken verifier: it accepts a code it accepted before again (no replay check)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: dict[tuple[str, str], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def verify(self, target: str, code: str, *, request_id: str) -> Any:
        earlier = self.seen.get((target, code))
        if earlier is not None:
            return dataclasses.replace(earlier, request_id=request_id)
        acc = self.inner.verify(target, code, request_id=request_id)
        self.seen[(target, code)] = acc
        return acc


def test_a_verifier_that_accepts_replays_is_caught(tmp_path: Path) -> None:
    store = MemoryStore()
    broken = ReplayingVerifier(make_verifier(store))
    report = fuzz_verifier(
        store, seed=5, max_examples=200, time_budget=60, findings_dir=str(tmp_path), verifier=broken
    )
    assert not report.ok
    (finding,) = report.findings
    assert finding.invariant == "v41"
    assert "two ACCEPTs" in finding.detail
    saved = finding_from_transcript(finding.path or "")
    steps = json.loads(saved.meta["steps"])
    assert any(step[0] in ("replay", "burst") for step in steps)
    assert len(steps) <= 3  # shrunk: an operation, its answer and the replay (or one burst)
    # the program is honest on a correct verifier
    assert replay_verifier_finding(saved, MemoryStore()) is None


def test_adversarial_codes_raise_only_uniform_errors() -> None:
    bench = new_bench(make_verifier(MemoryStore()))
    op = bench.verifier.issue_operation(bench.credential_id, mode="identify")
    for code in ("", "1234 5678", "１２３４５６７８", "9" * 200, "abcdefgh", "12345678"):
        try:
            bench.verifier.verify(op.operation_id, code, request_id=bench.rid())
        except InvalidCode:
            continue
        except ValueError:
            continue
        raise AssertionError(f"{code!r} was accepted")
