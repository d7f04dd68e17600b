"""Readers through the real pcscd and vpcd: ``capsim readers`` (index, presence, ATR), reader
indexes in ``--reader``, ``--wait`` for a card, and ``card info`` / ``card show`` / ``card apdu``
against a served card.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cards import EmvCapCard, load_card, new_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from tests.pcsc.conftest import ServeFactory
from tests.pcsc.stack import PcscdStack

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(90)]

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"
SELECT_CAP = "00A4040007A000000004800200"


def _capsim(*args: str, pin: str = "1234") -> Result:
    return CliRunner().invoke(main, list(args), input=f"{pin}\n", catch_exceptions=False)


def _one_error(result: Result, code: ExitCode) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("capsim: error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def card(tmp_path: Path) -> Iterator[EmvCapCard]:
    path = tmp_path / "card.json"
    new_card("rabobank", pan=PAN, psn="08", imk_ac=IMK, path=path).close()
    opened = load_card(path)
    try:
        yield opened
    finally:
        opened.close()


def test_readers_lists_index_name_card_presence_and_atr(
    serve: ServeFactory, stack: PcscdStack, card: EmvCapCard
) -> None:
    serve(card, slot=0)
    doc = json.loads(_capsim("readers", "--json").output)
    assert doc["readers"] == [
        {
            "index": 0,
            "name": stack.readers[0],
            "spec": "pcsc:0",
            "card_present": True,
            "atr": card.atr.hex().upper(),
        },
        {"index": 1, "name": stack.readers[1], "spec": "pcsc:1", "card_present": False, "atr": None},
    ]
    text = _capsim("readers").output.splitlines()
    assert text[0] == f"0  {stack.readers[0]}  card  ATR {card.atr.hex().upper()}"
    assert text[1] == f"1  {stack.readers[1]}  no card"


def test_a_reader_index_is_a_position_not_a_name_fragment(
    serve: ServeFactory, stack: PcscdStack, card: EmvCapCard
) -> None:
    serve(card, slot=0)
    # Both reader names contain "0": as a name fragment, pcsc:0 would be ambiguous (or, with
    # one reader "… 00 00", silently match it). As an index it is the first reader.
    for spec in ("pcsc:0", "0"):
        atc = card.state.atc
        result = _capsim("code", "identify", "--reader", spec, "--pin-stdin")
        assert result.exit_code == 0, result.output
        assert card.state.atc == atc + 1
    for spec in ("pcsc:1", "1"):  # the empty slot-1 reader
        _one_error(_capsim("code", "identify", "--reader", spec, "--pin-stdin"), ExitCode.NO_CARD)
    line = _one_error(_capsim("code", "identify", "--reader", "2", "--pin-stdin"), ExitCode.READER_NOT_FOUND)
    assert f"0: '{stack.readers[0]}'" in line
    assert f"1: '{stack.readers[1]}'" in line
    line = _one_error(_capsim("card", "info", "--reader", "pcsc:Virtual"), ExitCode.READER_NOT_FOUND)
    assert stack.readers[0] in line  # a name fragment: ambiguity still refused, candidates named
    assert stack.readers[1] in line


def test_wait_for_a_card_to_be_inserted(serve: ServeFactory, stack: PcscdStack, card: EmvCapCard) -> None:
    line = _one_error(_capsim("card", "info", "--reader", "pcsc:1", "--wait", "0.5"), ExitCode.NO_CARD)
    assert f"no card was inserted in reader '{stack.readers[1]}' within 0.5 s" in line
    code = _capsim("code", "identify", "--reader", "1", "--wait", "0.2", "--pin-stdin")
    assert "within 0.2 s" in _one_error(code, ExitCode.NO_CARD)
    inserted = threading.Timer(1.0, lambda: serve(card, slot=1, wait=False))
    inserted.start()
    try:
        result = _capsim("card", "info", "--reader", "pcsc:1", "--wait", "20", "--json")
    finally:
        inserted.join()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["reader"] == f"pcsc:{stack.readers[1]}"


def test_card_info_through_pcscd_matches_the_card(
    serve: ServeFactory, stack: PcscdStack, card: EmvCapCard
) -> None:
    serve(card, slot=0)
    atc, ptc = card.state.atc, card.state.ptc
    result = _capsim("card", "info", "--reader", "pcsc:0", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    profile = card.profile
    assert info["reader"] == f"pcsc:{stack.readers[0]}"
    assert info["atr"] == card.atr.hex().upper()
    assert info["application"]["aid"] == "A0000000048002"
    assert info["reader_profile"]["name"] == "mc-cap"
    assert info["reader_profile"]["chosen"] == "aid"
    assert info["ipb"] == profile.ipb.hex().upper()
    assert info["iaf"] == profile.iaf.hex().upper()
    assert info["cdol1"] == profile.cdol1.hex().upper()
    assert info["cdol2"] == profile.cdol2.hex().upper()
    assert info["psn_present"] is True
    assert "psn" not in info
    assert info["pan"] == "541234******1234"
    assert PAN not in result.output
    assert info["pin_tries"] == 3
    assert card.state.ptc == ptc  # no VERIFY
    assert card.state.atc == atc + 1  # GET PROCESSING OPTIONS; no GENERATE AC
    shown = _capsim("card", "show", "pcsc:0")
    text = _capsim("card", "info", "pcsc:0")
    assert shown.exit_code == text.exit_code == 0, shown.output + text.output
    assert shown.output == text.output
    assert f"reader:          pcsc:{stack.readers[0]}" in text.output


def test_card_apdu_to_a_pcsc_reader_leaves_no_lock_file(
    serve: ServeFactory, card: EmvCapCard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(card, slot=0)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    for args in (["pcsc:CAPSIM Virtual 00 00", SELECT_CAP], ["--reader", "0", SELECT_CAP]):
        result = _capsim("card", "apdu", *args)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"ATR {card.atr.hex().upper()}\n")
        assert "    9000: normal processing" in result.output
    assert list(work.iterdir()) == []
