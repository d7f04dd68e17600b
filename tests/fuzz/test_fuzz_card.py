"""``capsim fuzz card``: the planted bug is caught and replays; honest cards pass; the guard
never lets a state-changing command through (capsim.testing.fuzz_card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cli import main
from capsim.errors import ValidationError
from capsim.testing.findings import finding_from_transcript
from capsim.testing.fuzz_card import (
    CardTarget,
    StateChangeGuard,
    fuzz_card,
    is_state_changing,
    open_card_target,
    replay_card_finding,
)
from capsim.transports.replay import ReplayTransport
from tests.fuzz.planted import make_card, make_good_card

PLANTED = "py:tests.fuzz.planted:make_card"


def test_planted_bug_is_caught_within_the_default_budget_with_a_replayable_reproducer(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    result = CliRunner().invoke(
        main, ["fuzz", "card", "--target", PLANTED, "--seed", "7", "--findings", str(findings), "--json"]
    )
    assert result.exit_code == 14, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["stopped"] == "finding"
    assert report["examples"] < 2000  # within the default --max-examples (and --time-budget)
    (found,) = report["findings"]
    assert found["invariant"] == "ptc"
    # shrunk: the prologue (3), GPO, one wrong PIN and the read or VERIFY that exposes it
    assert len(found["exchanges"]) <= 7
    path = Path(found["path"])
    assert path.parent == findings
    assert path.stat().st_mode & 0o777 == 0o600

    # it replays: through the replay: transport, against a fresh planted card, not a good one
    finding = finding_from_transcript(path)
    assert replay_card_finding(finding) is not None
    assert replay_card_finding(finding, target=open_card_target(PLANTED)).invariant == "ptc"  # type: ignore[union-attr]
    assert (
        replay_card_finding(finding, target=open_card_target("py:tests.fuzz.planted:make_good_card")) is None
    )
    with ReplayTransport(path) as replay:
        for command, response in finding.exchanges:
            assert replay.transmit(command) == response
    again = CliRunner().invoke(main, ["fuzz", "replay", str(path), "--target", PLANTED])
    assert again.exit_code == 14
    assert "reproduced: ptc" in again.output


@pytest.mark.parametrize("profile", ["secur-acces", "barclays", "natwest", "rabobank", "visa-dpa"])
def test_honest_builtin_cards_break_no_invariant(profile: str, tmp_path: Path) -> None:
    report = fuzz_card(
        open_card_target(f"inproc:{profile}"), seed=3, max_examples=30, time_budget=20, findings_dir=tmp_path
    )
    assert report.ok, [f.summary() for f in report.findings]
    assert report.examples > 0
    assert report.apdus >= 3 * report.examples
    assert not any(tmp_path.iterdir())


def test_guarded_run_sends_only_read_only_commands() -> None:
    cards = []

    def factory():  # type: ignore[no-untyped-def]
        card = make_good_card()
        cards.append(card)
        return card

    probe = make_good_card()
    target = CardTarget("guarded", open_card_target("inproc:secur-acces").info, factory=factory, guarded=True)
    report = fuzz_card(target, seed=5, max_examples=40, time_budget=20)
    assert report.ok
    assert report.refused > 0
    for card in cards:
        assert card.state == probe.state  # no ATC, PTC or history change at all


def test_guard_blocks_verify_below_two_tries_even_with_state_changes_allowed() -> None:
    card = make_good_card()
    sent: list[bytes] = []

    def send(apdu: bytes) -> bytes:
        sent.append(apdu)
        return card.process(apdu)

    guard = StateChangeGuard(send, allow_state_changes=True)
    send(bytes.fromhex("00A4040007A000000004800200"))
    send(bytes.fromhex("80A8000002830000"))
    wrong = bytes.fromhex("0020008008240000FFFFFFFFFF")
    assert guard(wrong) == b"\x63\xc2"  # PTC 3: read first, then sent
    assert guard(wrong) == b"\x63\xc1"  # PTC 2: still allowed
    assert guard(wrong) is None  # PTC 1: refused, the card keeps its last try
    assert card.state.ptc == 1
    assert guard.refused == 1
    verifies = [a for a in sent if a[1] == 0x20]
    assert len(verifies) == 2
    assert all(sent[sent.index(v) - 1] == bytes.fromhex("80CA9F1700") for v in verifies)


def test_guard_without_state_changes_sends_nothing_state_changing() -> None:
    sent: list[bytes] = []
    guard = StateChangeGuard(lambda a: sent.append(a) or b"\x90\x00")  # type: ignore[func-returns-value]
    for hex_apdu in (
        "80A8000002830000",
        "0020008008241234FFFFFFFFFF",
        "80AE8000021234",
        "8424000000",
        "00DA9F4F0100",
        "00DC010C0100",
        "04B2010C00",
        "0082000008" + "00" * 8,
        "01",
    ):
        assert guard(bytes.fromhex(hex_apdu)) is None
    assert sent == []
    assert guard.refused == 9
    assert guard(bytes.fromhex("00B2010C00")) == b"\x90\x00"
    assert not is_state_changing(bytes.fromhex("80CA9F3600"))


@pytest.mark.parametrize(
    "spec", ["usb:1", "inproc:nonesuch", "py:nomodule", "py:tests.fuzz.planted:absent", "file:"]
)
def test_bad_targets_are_validation_errors(spec: str) -> None:
    with pytest.raises(ValidationError, match="target"):
        open_card_target(spec)


def test_cli_rejects_bad_target_with_exit_13() -> None:
    result = CliRunner().invoke(main, ["fuzz", "card", "--target", "usb:1"])
    assert result.exit_code == 13
    assert "target" in result.output


def test_file_target_persists_state_and_is_checked(tmp_path: Path) -> None:
    from capsim.cards import load_card, new_card
    from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN

    path = tmp_path / "card.json"
    new_card("barclays", pan=TEST_PAN, imk_ac=TEST_IMK_AC, path=path).close()
    target = open_card_target(f"file:{path}", pin="1234")
    report = fuzz_card(target, seed=11, max_examples=30, time_budget=20)
    target.close()
    assert report.ok, [f.summary() for f in report.findings]
    with load_card(path) as card:
        assert card.state.atc > 0  # the fuzzer really ran transactions on the file card


def test_stateful_machine_catches_the_planted_card() -> None:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    from capsim.testing.machines import CardMachine

    class PlantedMachine(CardMachine):
        def make_card(self):  # type: ignore[no-untyped-def]
            return make_card()

    with pytest.raises(AssertionError, match=r"(?i)ptc"):
        run_state_machine_as_test(
            PlantedMachine,
            settings=settings(
                max_examples=300,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate],  # finding it is the point here; shrinking is tested above
            ),
        )


def test_a_real_pin_never_reaches_a_finding(tmp_path: Path) -> None:
    from capsim.testing.fuzz_card import _redact_pin

    right = bytes.fromhex("0020008008241234FFFFFFFFFF")
    wrong = bytes.fromhex("0020008008240000FFFFFFFFFF")
    out = _redact_pin([(right, b"\x90\x00"), (wrong, b"\x63\xc2")], "1234")
    assert out[0][0] == bytes.fromhex("0020008008") + b"\xff" * 8
    assert out[1][0] == wrong
    assert _redact_pin([(right, b"\x90\x00")], None)[0][0] == right


class _RaisingCard:
    """A third-party card that raises on one instruction instead of answering."""

    def __init__(self) -> None:
        self.inner = make_good_card()
        self.atr = self.inner.atr

    def power_on(self) -> bytes:
        return self.inner.power_on()

    def reset(self) -> bytes:
        return self.inner.reset()

    def power_off(self) -> None:
        self.inner.power_off()

    def process(self, apdu: bytes) -> bytes:
        if len(apdu) > 1 and apdu[1] == 0x82:  # EXTERNAL AUTHENTICATE
            raise ZeroDivisionError("oops")
        return self.inner.process(apdu)


def test_a_card_that_raises_is_a_finding_not_a_crash_of_the_fuzzer() -> None:
    target = CardTarget("py:raising", open_card_target("inproc:secur-acces").info, factory=_RaisingCard)
    report = fuzz_card(target, seed=2, max_examples=500, time_budget=60)
    (finding,) = report.findings
    assert finding.invariant == "exception"
    assert "ZeroDivisionError" in finding.detail
    assert finding.exchanges[-1][0][1] == 0x82
    assert finding.exchanges[-1][1] == b""


def test_a_factory_that_fails_is_a_validation_error() -> None:
    def broken() -> _RaisingCard:
        raise OSError("no such emulator")

    target = CardTarget("py:broken", open_card_target("inproc:secur-acces").info, factory=broken)
    with pytest.raises(ValidationError, match="factory raised OSError"):
        fuzz_card(target, seed=1, max_examples=5, time_budget=10)
