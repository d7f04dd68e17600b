"""Findings on disk, the engine's budgets, and replaying a reader finding from the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

from click.testing import CliRunner
from hypothesis import strategies as st

from capsim.cli import main
from capsim.testing.findings import Finding, finding_from_transcript, save_finding
from capsim.testing.fuzz_engine import _FailedError, _Run, run_engine
from capsim.testing.model import Violation
from capsim.transports.replay import ReplayTransport

EXCHANGES = ((bytes.fromhex("80CA9F1700"), bytes.fromhex("9F1701039000")),)


def test_findings_round_trip_and_are_never_overwritten(tmp_path: Path) -> None:
    finding = Finding(
        fuzzer="card", target="inproc:barclays", seed=3, invariant="ptc", detail="line one\nline two",
        exchanges=EXCHANGES, power_cycles=(0,), meta={"allow_state_changes": "no"},
    )  # fmt: skip
    first = save_finding(tmp_path / "new", finding)
    second = save_finding(tmp_path / "new", finding)
    assert first.path != second.path
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    back = finding_from_transcript(first.path or "")
    assert (back.fuzzer, back.target, back.seed, back.invariant) == ("card", "inproc:barclays", 3, "ptc")
    assert back.detail == "line one line two"
    assert back.exchanges == EXCHANGES
    assert back.power_cycles == (0,)
    assert back.meta == {"allow_state_changes": "no"}
    with ReplayTransport(first.path or "") as replay:
        assert replay.transmit(EXCHANGES[0][0]) == EXCHANGES[0][1]


def test_engine_stops_at_the_time_budget() -> None:
    ticks = itertools.count(0.0, 0.5)
    seen: list[int] = []

    def body(value: int) -> int:
        seen.append(value)
        return 1

    examples, apdus, stopped, failures, _ = run_engine(
        body, st.integers(), seed=1, max_examples=10_000, time_budget=10.0, clock=lambda: next(ticks)
    )
    assert stopped == "time-budget"
    assert 0 < examples < 10_000
    assert apdus == examples == len(seen)
    assert failures == []


def test_engine_stops_at_max_examples_and_is_reproducible_by_seed() -> None:
    def collect(seed: int) -> list[int]:
        values: list[int] = []

        def body(value: int) -> int:
            values.append(value)
            return 0

        run_engine(body, st.integers(0, 10**6), seed=seed, max_examples=150, time_budget=None)
        return values

    first = collect(42)
    assert len(first) == 150
    assert collect(42) == first
    assert collect(43) != first


def test_engine_shrinks_a_failure_to_the_minimal_example() -> None:
    def body(value: int) -> int:
        if value >= 1000:
            raise _FailedError(Violation(invariant="demo", detail=str(value)), _Run())
        return 0

    _, _, stopped, failures, seeds = run_engine(
        body, st.integers(0, 10**6), seed=5, max_examples=1000, time_budget=None
    )
    assert stopped == "finding"
    (failed,) = failures
    assert failed.violation.detail == "1000"
    assert seeds == [5]


def test_cli_replays_a_reader_finding(tmp_path: Path) -> None:
    from capsim.testing.fuzz_reader import ReaderCase, run_reader_case
    from capsim.testing.hostile import Mutation, MutationKind
    from tests.fuzz.planted import make_good_card

    case = ReaderCase(mode="identify", plan=(Mutation(kind=MutationKind.SW, value=0x6A82),))
    _, run = run_reader_case(make_good_card(), case)
    saved = save_finding(
        tmp_path,
        Finding(fuzzer="reader", target="hostile:secur-acces", seed=0, invariant="demo", detail="demo",
                exchanges=tuple(run.exchanges), meta=case.meta()),
    )  # fmt: skip
    result = CliRunner().invoke(main, ["fuzz", "replay", saved.path or "", "--json"])
    assert result.exit_code == 0, result.output
    assert '"reproduced": false' in result.output


def test_engine_goes_on_after_a_finding_until_max_findings() -> None:
    progress: list[tuple[int, int, int]] = []

    def body(value: int) -> int:
        if value % 7 == 3:
            raise _FailedError(Violation(invariant="demo", detail="mod 7"), _Run())
        return 1

    examples, _, stopped, failures, seeds = run_engine(
        body,
        st.integers(0, 10**6),
        seed=9,
        max_examples=5000,
        time_budget=None,
        max_findings=3,
        on_example=lambda e, a, f: progress.append((e, a, f)),
    )
    assert stopped == "finding"
    assert len(failures) == 3
    assert seeds == sorted(set(seeds))  # one finding per chunk, chunks in seed order
    assert {f for _, _, f in progress} >= {0, 1, 2}
    assert examples == progress[-1][0]


class _BrokenCard:
    """Answers ``6F00`` to every command after SELECT: every example fails at once."""

    atr = bytes.fromhex("3B80800101")

    def power_on(self) -> bytes:
        return self.atr

    def reset(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        return None

    def process(self, apdu: bytes) -> bytes:
        return b"\x90\x00" if apdu[1:2] == b"\xa4" else b"\x6f\x00"


def test_fuzz_card_max_findings_reports_duplicates_once() -> None:
    from capsim.testing.fuzz_card import CardInfo, CardTarget, fuzz_card

    target = CardTarget("py:broken", CardInfo(), factory=_BrokenCard)
    report = fuzz_card(target, seed=1, max_examples=1000, time_budget=60, max_findings=3)
    assert report.stopped == "finding"
    (finding,) = report.findings  # three failures, all the same: reported once
    assert finding.invariant == "crash"
    assert len(finding.exchanges) == 2  # SELECT, then the first GET DATA answered 6F00
