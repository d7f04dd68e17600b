"""``capsim fuzz reader``: the hostile card and capsim's reader (capsim.testing.fuzz_reader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cli import main
from capsim.errors import RemoteProtocolError
from capsim.reader import CapReader
from capsim.testing.findings import Finding, save_finding
from capsim.testing.fuzz_reader import (
    MAX_APDUS,
    ReaderCase,
    _outcome,
    fuzz_reader,
    replay_reader_finding,
    run_reader_case,
)
from capsim.testing.hostile import HostileCard, Mutation, MutationKind
from capsim.testing.strategies import cards
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, TEST_PIN, InProcessTransport


def fresh():  # type: ignore[no-untyped-def]
    from capsim.cards import new_card

    return new_card("secur-acces", pan=TEST_PAN, pin=TEST_PIN, imk_ac=TEST_IMK_AC, rng=bytes)


def test_short_reader_fuzz_finds_nothing_and_saves_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["fuzz", "reader", "--seed", "2", "--max-examples", "60", "--findings", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"]
    assert report["examples"] > 0
    assert not any(tmp_path.iterdir())


def test_honest_plan_gives_a_code() -> None:
    violation, run = run_reader_case(fresh(), ReaderCase(mode="respond", challenge="1234"))
    assert violation is None
    assert run.exchanges[0][0][1] == 0xA4
    verify = next(c for c, _ in run.exchanges if c[1] == 0x20)
    assert verify[5:] == b"\xff" * 8  # the PIN block is redacted in the record


@pytest.mark.parametrize(
    "mutation",
    [
        Mutation(kind=MutationKind.MORE_DATA, value=0x10),
        Mutation(kind=MutationKind.WRONG_LE, value=0x05),
        Mutation(kind=MutationKind.GARBAGE, data=b"\x90"),
        Mutation(kind=MutationKind.SW, value=0x6F00),
        Mutation(kind=MutationKind.TRUNCATE, position=3),
    ],
)
def test_hostile_first_answers_end_in_a_capsim_error(mutation: Mutation) -> None:
    hostile = HostileCard(fresh(), [mutation])
    with pytest.raises(Exception) as info:
        CapReader(InProcessTransport(hostile)).identify(TEST_PIN)
    from capsim.errors import CapsimError

    assert isinstance(info.value, CapsimError)
    assert len(hostile.exchanges) <= MAX_APDUS


def test_endless_61xx_is_bounded_by_the_reader() -> None:
    hostile = HostileCard(fresh(), [Mutation(kind=MutationKind.MORE_DATA, value=0x01)])
    with pytest.raises(RemoteProtocolError):
        CapReader(InProcessTransport(hostile)).identify(TEST_PIN)
    assert 2 <= len(hostile.exchanges) <= 40


def test_huge_record_and_bad_cdol_are_survived() -> None:
    for kind in (MutationKind.HUGE_RECORD, MutationKind.BAD_CDOL):
        plan = [Mutation(kind=kind, data=bytes.fromhex("9F02FF9F3700"))] * 8
        violation, _ = run_reader_case(fresh(), ReaderCase(mode="identify", plan=tuple(plan)))
        assert violation is None


def test_outcome_flags_foreign_exceptions_hangs_and_bad_codes() -> None:
    def boom() -> None:
        raise KeyError("9F55")

    found = _outcome(boom, honest=False)
    assert found is not None
    assert found.invariant == "exception"
    assert "KeyError" in found.detail

    class Result:
        code = "12 34"

    found = _outcome(Result, honest=False)
    assert found is not None
    assert found.invariant == "code"

    def refuse() -> None:
        raise RemoteProtocolError("no")

    assert _outcome(refuse, honest=False) is None
    honest = _outcome(refuse, honest=True)
    assert honest is not None
    assert honest.invariant == "honest"


def test_a_reader_that_loops_is_reported_as_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    import capsim.testing.fuzz_reader as fr

    def looping(transport, case):  # type: ignore[no-untyped-def]
        while True:
            transport.transmit(bytes.fromhex("80CA9F1700"))

    monkeypatch.setattr(fr, "_run_reader", looping)
    violation, run = run_reader_case(fresh(), ReaderCase(mode="identify"))
    assert violation is not None
    assert violation.invariant == "hang"
    assert len(run.exchanges) == MAX_APDUS


def test_reader_finding_replays_through_the_replay_transport(tmp_path: Path) -> None:
    case = ReaderCase(mode="respond", challenge="42", plan=(Mutation(kind=MutationKind.SW, value=0x6F00),))
    violation, run = run_reader_case(fresh(), case)
    assert violation is None  # capsim's reader copes: the transcript must make it cope again
    finding = save_finding(
        tmp_path,
        Finding(fuzzer="reader", target="hostile:secur-acces", seed=1, invariant="demo", detail="demo",
                exchanges=tuple(run.exchanges), meta=case.meta()),
    )  # fmt: skip
    from capsim.testing.findings import finding_from_transcript

    again = finding_from_transcript(finding.path or "")
    assert again.meta["mode"] == "respond"
    assert replay_reader_finding(again) is None


def test_fuzz_reader_reports_a_broken_reader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import capsim.testing.fuzz_reader as fr

    real = fr._run_reader

    def fragile(transport, case):  # type: ignore[no-untyped-def]
        """A reader that trips over a truncated answer (as python-emv does on a short IAD)."""
        hostile = transport.inner.card
        result = real(transport, case)
        if any(m.kind is MutationKind.TRUNCATE for m in hostile.plan[: len(hostile.exchanges)]):
            raise IndexError("fragile reader")
        return result

    monkeypatch.setattr(fr, "_run_reader", fragile)
    report = fuzz_reader(seed=1, max_examples=400, time_budget=60, findings_dir=str(tmp_path))
    assert not report.ok
    (finding,) = report.findings
    assert finding.invariant == "exception"
    assert "IndexError" in finding.detail
    assert finding.path is not None
    assert Path(finding.path).exists()


@pytest.mark.parametrize("profile", ["barclays", "rabobank"])
def test_hostile_cards_strategy_cards_work(profile: str) -> None:
    from hypothesis import given

    @given(cards(profile=profile, pin=TEST_PIN))
    def check(card) -> None:  # type: ignore[no-untyped-def]
        assert run_reader_case(card, ReaderCase(mode="identify"))[0] is None

    check()
