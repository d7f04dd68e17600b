"""The command line over real PC/SC: ``capsim code … --reader pcsc:NAME`` and ``capsim card serve``.

Real-reader facts (issue 5 §3, §4): codes equal the in-process ones for the same card state;
several readers are chosen by name or substring and listed on ambiguity; no card, a card
removed between commands or mid-transaction, and pcscd not running each give one line and
their documented exit code, never a traceback; ``capsim card serve`` survives a pcscd restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cards import EmvCapCard, load_card, new_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from tests.pcsc.conftest import ServeFactory
from tests.pcsc.stack import PcscdStack, wait_card

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(90)]

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"
SLOT0 = "pcsc:CAPSIM Virtual 00 00"
SLOT1 = "pcsc:CAPSIM Virtual 00 01"


def _card_file(directory: Path, name: str = "card", profile: str = "natwest") -> Path:
    path = directory / f"{name}.json"
    new_card(profile, pan=PAN, imk_ac=IMK, path=path).close()
    return path


def _capsim(*args: str, pin: str = "1234") -> Result:
    return CliRunner().invoke(main, list(args), input=f"{pin}\n", catch_exceptions=False)


def _respond(reader: str, challenge: str = "12345678", *extra: str) -> Result:
    return _capsim("code", "respond", "--reader", reader, "--challenge", challenge, "--pin-stdin", *extra)


def _assert_one_line_error(result: Result, code: ExitCode) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("capsim: error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def card_files(tmp_path: Path) -> Iterator[tuple[EmvCapCard, Path]]:
    """A served card file (opened here) and an untouched copy taken before serving."""
    path = _card_file(tmp_path)
    copy = tmp_path / "copy.json"
    shutil.copyfile(path, copy)
    card = load_card(path)
    try:
        yield card, copy
    finally:
        card.close()


def test_readers_lists_the_virtual_pcsc_readers(stack: PcscdStack) -> None:
    result = _capsim("readers", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pcsc"] == [SLOT0, SLOT1]


def test_code_respond_over_pcsc_equals_the_in_process_code(
    serve: ServeFactory, card_files: tuple[EmvCapCard, Path]
) -> None:
    card, copy = card_files
    serve(card)
    remote = _respond(SLOT0, "12345678", "--json")
    assert remote.exit_code == 0, remote.output
    local = _respond(f"file:{copy}", "12345678", "--json")
    assert local.exit_code == 0, local.output
    remote_result = json.loads(remote.output[remote.output.index("{") :])
    local_result = json.loads(local.output[local.output.index("{") :])
    assert len(remote_result["code"]) == 8
    assert remote_result["code"].isdigit()
    assert remote_result == local_result
    assert card.state.atc == remote_result["atc"]


def test_readers_are_chosen_by_substring_and_ambiguity_lists_them(
    serve: ServeFactory, tmp_path: Path, stack: PcscdStack
) -> None:
    one = load_card(_card_file(tmp_path, "one"))
    two = load_card(_card_file(tmp_path, "two", profile="rabobank"))
    try:
        serve(one, slot=0)
        serve(two, slot=1)
        assert _respond("pcsc:Virtual 00 01").exit_code == 0
        assert two.state.atc > one.state.atc
        line = _assert_one_line_error(_respond("pcsc:capsim"), ExitCode.READER_NOT_FOUND)
        assert stack.readers[0] in line
        assert stack.readers[1] in line
        line = _assert_one_line_error(_respond("pcsc:Omnikey"), ExitCode.READER_NOT_FOUND)
        assert "Omnikey" in line
    finally:
        one.close()
        two.close()


def test_a_reader_without_a_card(stack: PcscdStack) -> None:
    _assert_one_line_error(_respond(SLOT1), ExitCode.NO_CARD)


def test_a_card_removed_between_commands(serve: ServeFactory, card_files: tuple[EmvCapCard, Path]) -> None:
    card, _ = card_files
    server = serve(card)
    assert _respond(SLOT0).exit_code == 0
    server.stop()
    wait_card(SLOT0.removeprefix("pcsc:"), present=False, timeout=5)
    _assert_one_line_error(_respond(SLOT0), ExitCode.NO_CARD)
    serve(card)
    assert _respond(SLOT0).exit_code == 0


class _PulledDuringGenerateAc:
    """Delegates to a card; the first GENERATE AC unplugs it from vpcd before it answers."""

    def __init__(self, card: EmvCapCard) -> None:
        self.card = card
        self.server: object = None
        self.pulled = False

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def power_on(self) -> bytes:
        return self.card.power_on()

    def reset(self) -> bytes:
        return self.card.reset()

    def power_off(self) -> None:
        self.card.power_off()

    def process(self, apdu: bytes) -> bytes:
        if apdu[1] == 0xAE and not self.pulled and self.server is not None:
            self.pulled = True
            self.server.stop(timeout=0)  # type: ignore[attr-defined]
        return self.card.process(apdu)


def test_stopping_the_server_mid_transaction_then_the_next_transaction_works(
    serve: ServeFactory, card_files: tuple[EmvCapCard, Path]
) -> None:
    card, _ = card_files
    wrapper = _PulledDuringGenerateAc(card)
    wrapper.server = serve(wrapper)
    _assert_one_line_error(_respond(SLOT0), ExitCode.NO_CARD)
    assert wrapper.pulled
    serve(card)
    result = _respond(SLOT0, "1")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].isdigit()


def test_pcscd_not_running(stack: PcscdStack) -> None:
    stack.stop()
    line = _assert_one_line_error(_respond(SLOT0), ExitCode.PCSC_UNAVAILABLE)
    assert "pcscd" in line
    listing = _capsim("readers", "--json")
    assert listing.exit_code == 0
    assert json.loads(listing.output[listing.output.index("{") :])["pcsc"] == []


def test_serve_process_survives_a_pcscd_restart(tmp_path: Path, stack: PcscdStack) -> None:
    path = _card_file(tmp_path)
    stack.settle_slot(0)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsim", "card", "serve", str(path), "--vpcd", f"127.0.0.1:{stack.port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_card(stack.readers[0], present=True, timeout=20)
        first = _respond(SLOT0, "11111111", "--json")
        assert first.exit_code == 0, first.output
        stack.restart()
        wait_card(stack.readers[0], present=True, timeout=20)
        second = _respond(SLOT0, "11111111", "--json")
        assert second.exit_code == 0, second.output
        atc1 = json.loads(first.output[first.output.index("{") :])["atc"]
        atc2 = json.loads(second.output[second.output.index("{") :])["atc"]
        assert atc2 == atc1 + 1  # the same card, its ATC carried on
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        stack.note_unplugged(0)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    with load_card(path, timeout=2) as reopened:
        assert reopened.state.atc == atc2
