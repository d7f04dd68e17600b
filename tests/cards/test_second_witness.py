"""A second, independent witness for rules that one test alone used to guard.

Each rule here was caught by exactly one test when a bug was planted in it; these tests reach
the same rule from another side (a file on disk, the reader, the verifier, the command line),
so that one rewritten test can no longer hide a regression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cards import load_card
from capsim.cli import main
from capsim.errors import CardBlockedError, RemoteProtocolError
from capsim.reader import CapReader
from capsim.tlv import decode, find
from capsim.transports.inprocess import InProcessTransport
from capsim.verifier.memory import MemoryStore
from tests.cards.helpers import gac1_command, pin_block
from tests.reader.helpers import ScriptedCard
from tests.reader.test_hostile import OK, natwest_like
from tests.utils import unhex
from tests.verifier.conftest import PIN, Clock, make_bench


def _edit_state(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc["state"].update(changes)
    path.write_text(json.dumps(doc))


def test_a_blocked_application_answers_an_aac_on_the_wire(tmp_path: Path) -> None:
    """Raw APDUs to a card file whose application the issuer blocked: SELECT says 6283, and a
    GENERATE AC asking for an ARQC gets an AAC (CID 00)."""
    clock = Clock()
    path = tmp_path / "card.json"
    b = make_bench(MemoryStore(clock=clock), clock, path=path)
    aid = b.card.profile.aid
    gac = gac1_command(b.card)  # 80 AE 80 00: an ARQC asked for
    b.card.close()
    _edit_state(path, lifecycle="app-blocked")  # as after the issuer's APPLICATION BLOCK script
    select = bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00"
    apdus = [select, bytes.fromhex("80A8000002830000"), b"\x00\x20\x00\x80\x08" + pin_block(PIN), gac]
    result = CliRunner().invoke(main, ["card", "apdu", str(path), *(a.hex() for a in apdus)])
    assert result.exit_code == 0, result.output
    answers = [bytes.fromhex(line[2:]) for line in result.output.splitlines() if line.startswith("< ")]
    assert answers[0][-2:] == b"\x62\x83"  # SELECT: the application is blocked
    assert [a[-2:] for a in answers[1:3]] == [b"\x90\x00"] * 2  # GPO and VERIFY
    tlvs = decode(answers[3][:-2])
    cid = find(tlvs, 0x9F27) or find(tlvs, 0x80)
    assert cid is not None
    assert cid.value[0] & 0xC0 == 0x00, answers[3].hex()  # an AAC, not the ARQC asked for


def test_the_reader_stops_at_a_blocked_application_before_the_pin(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "card.json"
    make_bench(MemoryStore(clock=clock), clock, path=path).card.close()
    _edit_state(path, lifecycle="app-blocked")
    with load_card(path) as card:
        transport = InProcessTransport(card)
        with pytest.raises(CardBlockedError):
            CapReader(transport).identify(PIN)
        assert card.state.ptc == 3
        atc = card.state.atc
    assert json.loads(path.read_text())["state"]["atc"] == atc


def test_a_length_byte_80_in_a_card_answer_is_refused_by_the_reader() -> None:
    # GET PROCESSING OPTIONS answered with the indefinite-length form: never read as 128 bytes
    card = ScriptedCard(natwest_like({0xA8: unhex("8080") + bytes(130) + OK}))
    with pytest.raises(RemoteProtocolError, match="indefinite length"):
        CapReader(card, "mc-cap").respond("1234", "12345678")
    assert not [a for a in card.sent if a[1] in (0x20, 0xAE)]


def test_a_state_change_replaces_the_card_file_and_never_rewrites_it_in_place(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "card.json"
    b = make_bench(MemoryStore(clock=clock), clock, path=path)
    before = path.read_bytes()
    inode = path.stat().st_ino
    with open(path, "rb") as old:  # a reader that opened the file before the change
        b.identify()  # GET PROCESSING OPTIONS persists the next ATC
        assert path.stat().st_ino != inode
        assert old.read() == before  # the old file is whole and unchanged
    assert json.loads(path.read_text())["state"]["atc"] == json.loads(before)["state"]["atc"] + 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp left behind


@pytest.mark.parametrize(("ptc", "exit_code"), [(3, 0), (4, 12), (15, 12)])
def test_a_pin_try_counter_above_the_limit_is_a_corrupt_card_file(
    tmp_path: Path, ptc: int, exit_code: int
) -> None:
    clock = Clock()
    path = tmp_path / "card.json"
    make_bench(MemoryStore(clock=clock), clock, path=path).card.close()
    _edit_state(path, ptc=ptc)
    result = CliRunner().invoke(main, ["card", "show", str(path)])
    assert result.exit_code == exit_code, result.output
    if exit_code:
        assert "exceeds the PIN try limit" in result.output
