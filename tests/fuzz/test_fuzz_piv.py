"""``capsim fuzz card`` on a PIV card: its targets, its seeded grammar, its model, planted bugs.

* ``inproc:piv``, a PIV card file and a ``py:`` factory of PIV cards are PIV targets;
* one seed gives one sequence (one digest), in process and through the CLI;
* a correct card passes; each planted bug (tests/fuzz/planted_piv.py) is found, shrunk, saved,
  and replays from its transcript (a key leak excepted: the transcript holds no key) and
  against a card, and not against the correct card;
* the model judges a chained command as a whole, sees a key split over GET RESPONSE pieces,
  and finds an uncounted wrong PIN from the answers alone when there is no probe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capsim.cards.piv import PivCard, new_piv_card, pad_reference, read_piv_card_file
from capsim.testing.findings import finding_from_transcript
from capsim.testing.fuzz_card import fuzz_card, open_card_target, replay_card_finding
from capsim.testing.fuzz_piv import inproc_state, piv_card_target, piv_info
from capsim.testing.fuzz_piv_model import PivModel, secret_windows
from tests.fuzz import planted_piv

ROOT = Path(__file__).resolve().parents[2]
PLANTED = [(invariant, cls) for invariant, classes in planted_piv.PLANTED.items() for cls in classes]


def test_inproc_piv_is_a_fresh_piv_token_with_keys_in_9a_9c_9e() -> None:
    target = open_card_target("inproc:piv")
    assert target.info.kind == "piv"
    assert {slot for slot, _ in target.info.slots} == {0x9A, 0x9C, 0x9E}
    target.begin()
    assert target.exchange(bytes.fromhex("00200080")) == bytes.fromhex("63C3")
    assert isinstance(target.card, PivCard)


def test_a_correct_piv_card_passes() -> None:
    report = fuzz_card(open_card_target("inproc:piv"), seed=11, max_examples=400, time_budget=None)
    assert report.ok, [f.summary() for f in report.findings]
    assert report.examples == 400
    assert report.apdus > 10_000


def test_one_seed_gives_one_piv_sequence_in_process_and_through_the_cli(tmp_path: Path) -> None:
    target = open_card_target("inproc:piv")
    runs = [fuzz_card(target, seed=s, max_examples=30, time_budget=None) for s in (3, 3, 4)]
    assert runs[0].digest == runs[1].digest
    assert runs[2].digest != runs[0].digest
    args = ["fuzz", "card", "--target", "inproc:piv", "--seed", "3", "--max-examples", "30",
            "--time-budget", "600", "--findings", str(tmp_path), "--json"]  # fmt: skip
    cli = subprocess.run(
        [sys.executable, "-c", "from capsim.cli import main; main()", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["ok"] is True
    assert (report["digest"], report["apdus"]) == (runs[0].digest, runs[0].apdus)


@pytest.mark.parametrize(("invariant", "card_type"), PLANTED, ids=[c.__name__ for _, c in PLANTED])
def test_each_planted_bug_is_found_shrunk_and_replayed(
    invariant: str, card_type: type[PivCard], tmp_path: Path
) -> None:
    target = piv_card_target("py:planted", inproc_state(), card_type=card_type)
    report = fuzz_card(target, seed=5, max_examples=2000, time_budget=30, findings_dir=tmp_path)
    (finding,) = report.findings
    assert finding.invariant == invariant
    assert finding.meta["card"] == "piv"
    shrunk, _, _ = finding.meta["shrunk"].partition(" of ")
    assert int(shrunk) <= 4
    assert finding.path is not None
    saved = finding_from_transcript(finding.path)
    again = replay_card_finding(saved)  # from the transcript alone: it holds no key, so no leak
    assert (again.invariant if again is not None else "leak") == invariant
    fresh = replay_card_finding(
        saved, target=piv_card_target("py:planted", inproc_state(), card_type=card_type)
    )
    assert fresh is not None
    assert fresh.invariant == invariant
    assert replay_card_finding(saved, target=open_card_target("inproc:piv")) is None


def test_a_py_factory_of_piv_cards_is_a_piv_target() -> None:
    target = open_card_target("py:tests.fuzz.planted_piv:make_card")
    assert target.info.kind == "piv"
    (finding,) = fuzz_card(target, seed=1, max_examples=200, time_budget=30).findings
    assert finding.invariant == "counter"
    good = open_card_target("py:tests.fuzz.planted_piv:make_good_card")
    assert fuzz_card(good, seed=1, max_examples=100, time_budget=None).ok


def test_without_a_probe_the_answers_alone_show_an_uncounted_wrong_pin() -> None:
    target = piv_card_target("py:planted", inproc_state(), card_type=planted_piv.WrongPinNotCounted)
    target.probe = None
    (finding,) = fuzz_card(target, seed=5, max_examples=500, time_budget=30).findings
    assert finding.invariant == "counter"
    assert "63C" in finding.detail  # an answer that shows the try was never taken


def test_a_piv_card_file_is_fuzzed_in_place(tmp_path: Path) -> None:
    path = tmp_path / "piv.json"
    new_piv_card(inproc_state(), path=path).close()
    target = open_card_target(f"file:{path}")
    assert target.info.kind == "piv"
    try:
        report = fuzz_card(target, seed=2, max_examples=25, time_budget=None)
    finally:
        target.close()
    assert report.ok, [f.summary() for f in report.findings]
    _, state = read_piv_card_file(path)
    assert state.pin_tries <= state.pin_limit


def test_a_piv_card_file_finding_carries_no_pin_or_puk(tmp_path: Path) -> None:
    state = inproc_state()
    target = piv_card_target("file:card.json", state, card_type=planted_piv.SignatureKeyUsedTwice)
    (finding,) = fuzz_card(target, seed=5, max_examples=500, time_budget=30).findings
    commands = b"".join(cmd for cmd, _ in finding.exchanges)
    assert any(cmd[1:2] == b"\x20" and cmd[5:] == b"\xff" * 8 for cmd, _ in finding.exchanges)
    assert pad_reference(state.pin) not in commands
    assert pad_reference(state.puk) not in commands


def _model() -> PivModel:
    model = PivModel(piv_info(inproc_state()))
    model.observe(bytes.fromhex("00A4040005A000000308"), bytes.fromhex("9000"))
    return model


def test_the_model_judges_a_chained_verify_as_a_whole() -> None:
    pin = pad_reference(inproc_state().pin)
    right = _model()
    assert right.observe(bytes.fromhex("1020008003") + pin[:3], b"\x90\x00") is None
    assert right.observe(bytes.fromhex("0020008005") + pin[3:], b"\x90\x00") is None
    wrong = _model()
    assert wrong.observe(bytes.fromhex("1020008003") + b"999", b"\x90\x00") is None
    violation = wrong.observe(bytes.fromhex("0020008005") + pin[3:], b"\x90\x00")
    assert violation is not None
    assert violation.detail == "VERIFY accepted a wrong PIN"


def test_the_model_sees_a_key_split_over_get_response_pieces() -> None:
    state = inproc_state()
    secret = min(secret_windows((state.keys[0x9C].der,)))  # 8 bytes of the 9C private value
    model = PivModel(piv_info(state), probe=lambda: state)
    model.start()
    assert (
        model.observe(bytes.fromhex("00CB3FFF055C035FC10204"), b"\x53\x10" + secret[:2] + b"\x61\x20") is None
    )
    violation = model.observe(bytes.fromhex("00C0000020"), secret[2:] + bytes(26) + b"\x90\x00")
    assert violation is not None
    assert violation.invariant == "leak"


def test_the_model_refuses_a_management_key_step_two_without_a_challenge() -> None:
    model = _model()
    violation = model.observe(bytes.fromhex("008703" + "9B0C7C0A8208") + bytes(8) + b"\x00", b"\x90\x00")
    assert violation is not None
    assert violation.invariant == "mgmt"
