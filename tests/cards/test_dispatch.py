"""The command table and ISO 7816-4 answers (cap-protocol.md §9.3), plus fuzzing of process()."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cards import EmvCapCard, Phase, new_card
from capsim.cards.emv_cap import PSE_NAME
from capsim.tlv import decode, find
from tests.cards.helpers import (
    IMK_A,
    PAN,
    cap_transaction,
    gac1_command,
    gac2_command,
    h,
    parse_gac,
    pin_block,
    start,
    sw,
    verify,
)


def _card(profile: str = "secur-acces", **kw: object) -> EmvCapCard:
    return new_card(profile, pan=PAN, imk_ac=IMK_A, **kw)


def _select(card: EmvCapCard, name: bytes) -> bytes:
    return card.process(bytes([0, 0xA4, 4, 0, len(name)]) + name + b"\x00")


def test_unknown_ins_and_cla() -> None:
    card = _card()
    assert card.process(h("00FE000000")) == h("6D00")
    assert card.process(h("B0A4040000")) == h("6E00")  # SELECT with a proprietary class
    assert card.process(h("00A8000002830000")) == h("6E00")  # GPO needs CLA 80
    assert card.process(h("00CA9F1700")) == h("6E00")


@pytest.mark.parametrize("raw", ["", "00", "00A404", "00A4040005A000", "00A4040000000200", "00A40400FF00"])
def test_malformed_apdus_are_6700(raw: str) -> None:
    assert _card().process(h(raw)) == h("6700")


def test_phase_guard() -> None:
    card = _card()
    assert card.process(h("80A8000002830000")) == h("6985")  # GPO before SELECT
    assert card.process(h("00B2010C00")) == h("6985")
    assert card.process(h("80CA9F1700")) == h("6985")
    assert sw(_select(card, card.profile.aid)) == 0x9000
    assert card.process(h("0020008008") + pin_block("1234")) == h("6985")  # VERIFY before GPO
    assert card.process(gac1_command(card)) == h("6985")
    assert sw(card.process(h("80A8000002830000"))) == 0x9000
    assert card.process(h("80A8000002830000")) == h("6985")  # second GPO
    assert sw(card.process(gac1_command(card))) == 0x9000
    assert card.process(h("0020008008") + pin_block("1234")) == h("6985")  # VERIFY after GAC #1
    assert sw(card.process(gac2_command(card))) == 0x9000
    assert card.process(gac2_command(card)) == h("6985")  # third GENERATE AC
    assert card.phase is Phase.COMPLETED


def test_parameter_errors() -> None:
    card = _card()
    assert card.process(h("00A4000007A000000004800200")) == h("6A86")
    assert card.process(h("00A4040207A000000004800200")) == h("6A82")  # no next occurrence
    start(card)
    assert card.process(h("00B2010800")) == h("6A86")  # P2 without the 100 "record number" bits
    assert card.process(h("00B2000C00")) == h("6A86")
    assert card.process(h("00B2020C00")) == h("6A83")
    assert card.process(h("00B2011400")) == h("6A83")  # SFI 2
    assert card.process(h("80CA9F4F00")) == h("6A88")
    cmd = bytearray(gac1_command(card))
    cmd[2] = 0x90  # CDA requested
    assert card.process(bytes(cmd)) == h("6A86")
    cmd[2], cmd[3] = 0x80, 0x01
    assert card.process(bytes(cmd)) == h("6A86")
    assert card.process(gac1_command(card)[:-3] + b"\x00") == h("6700")  # Lc one short, Le present
    assert sw(card.process(gac1_command(card))) == 0x9000
    cmd2 = bytearray(gac2_command(card))
    cmd2[2] = 0x80  # ARQC at GAC #2
    assert card.process(bytes(cmd2)) == h("6A86")
    assert card.state.atc == 1


@pytest.mark.parametrize("body", ["8301", "830100", "8400", "", "83"])
def test_gpo_bad_template_is_6700_and_atc_unchanged(body: str) -> None:
    card = _card()
    assert sw(_select(card, card.profile.aid)) == 0x9000
    data = h(body)
    apdu = h("80A80000") + (bytes([len(data)]) + data if data else b"") + b"\x00"
    assert sw(card.process(apdu)) == 0x6700
    assert card.state.atc == 0


def test_le_handling() -> None:
    card = _card()
    start(card)
    assert card.process(h("80CA9F1702")) == h("6C04")
    assert card.process(h("80CA9F1704")) == h("9F1701039000")
    assert card.process(h("80CA9F17")) == h("9F1701039000")  # case 1: no Le at all


def test_pse_directory_and_partial_selection() -> None:
    card = _card()
    resp = _select(card, PSE_NAME)
    assert sw(resp) == 0x9000
    (fci,) = decode(resp[:-2])
    sfi = find(fci, 0x88)
    assert sfi is not None
    assert sfi.value == b"\x01"
    record = card.process(bytes([0, 0xB2, 1, (1 << 3) | 4, 0]))
    (tpl,) = decode(record[:-2])
    entry = find(tpl, 0x61)
    assert entry is not None
    aid, label = find(entry, 0x4F), find(entry, 0x50)
    assert aid is not None
    assert label is not None
    assert aid.value == card.profile.aid
    assert label.value == b"SecureCode Aut"
    priority = find(entry, 0x87)
    assert priority is not None
    assert priority.value == b"\x01"  # Application Priority Indicator: first choice
    assert card.process(bytes([0, 0xB2, 2, 0x0C, 0])) == h("6A83")
    assert card.process(h("80A8000002830000")) == h("6985")  # the PSE is no application
    assert _select(card, h("A0000000041010")) == h("6A82")
    assert card.phase is Phase.IDLE
    assert sw(_select(card, h("A000000004"))) == 0x9000  # partial AID
    assert card.phase is Phase.SELECTED
    assert _select(card, h("A0000000")) == h("6A82")  # too short to be a partial AID


@pytest.mark.parametrize("junk", [None, 3.5, object()])
def test_not_even_bytes_is_answered_6f00(junk: object) -> None:
    """``process`` never raises, whatever it is given: no bytes at all is ``6F00``."""
    card = _card()
    assert card.process(junk) == h("6F00")  # type: ignore[arg-type]
    start(card)  # and the card still works


def test_get_data_and_get_challenge() -> None:
    card = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, rng=lambda n: bytes(range(n)))
    start(card)
    assert card.process(h("80CA9F3600")) == h("9F360200019000")
    assert card.process(h("80CA9F1300")) == h("9F130200009000")
    assert card.process(h("0084000000")) == h("00010203040506079000")
    assert card.process(h("0084010000")) == h("6A86")


def test_atc_never_wraps() -> None:
    card = _card(initial_atc=0xFFFE)
    g, _ = cap_transaction(card)
    assert g.atc == h("FFFF")
    assert sw(_select(card, card.profile.aid)) == 0x9000
    assert card.process(h("80A8000002830000")) == h("6985")
    card.power_off()
    card.power_on()
    assert sw(_select(card, card.profile.aid)) == 0x9000
    assert card.process(h("80A8000002830000")) == h("6985")
    assert card.state.atc == 0xFFFF


def test_unexpected_exception_is_6f00_and_logged_without_data(caplog: pytest.LogCaptureFixture) -> None:
    def broken(n: int) -> bytes:
        raise RuntimeError("secret 5412345678901234")

    card = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, rng=broken)
    with caplog.at_level("DEBUG", logger="capsim.cards"):
        assert card.process(h("0084000008")) == h("6F00")
    assert "RuntimeError" in caplog.text
    assert "INS 84" in caplog.text
    assert "5412345678901234" not in caplog.text
    assert sw(_select(card, card.profile.aid)) == 0x9000


def test_process_while_powered_off_is_a_cold_start() -> None:
    card = _card()
    start(card)
    card.power_off()
    assert card.process(h("80A8000002830000")) == h("6985")  # volatile state gone
    assert card.phase is Phase.IDLE
    assert card.reset() == card.atr


# ---------------------------------------------------------------------------- phase x INS table
def _to_phase(card: EmvCapCard, phase: Phase) -> None:
    card.power_on()
    if phase is Phase.PSE:
        _select(card, PSE_NAME)
    elif phase is Phase.SELECTED:
        _select(card, card.profile.aid)
    elif phase is not Phase.IDLE:
        start(card)
        if phase in (Phase.ONLINE, Phase.COMPLETED):
            card.process(gac1_command(card))
        if phase is Phase.COMPLETED:
            card.process(gac2_command(card))
    assert card.phase is phase


_COMMANDS: dict[str, Callable[[EmvCapCard], bytes]] = {
    "select": lambda c: bytes([0, 0xA4, 4, 0, 7]) + c.profile.aid + b"\x00",
    "gpo": lambda c: h("80A8000002830000"),
    "read-record": lambda c: h("00B2010C00"),
    "get-data": lambda c: h("80CA9F3600"),
    "verify": lambda c: h("0020008008") + pin_block("1234"),
    "gac": lambda c: gac1_command(c) if c.phase is Phase.INITIATED else gac2_command(c),
    "get-challenge": lambda c: h("0084000000"),
    "external-authenticate": lambda c: h("008200000A") + bytes(10),
    "script": lambda c: h("841E000008") + bytes(8),
}
_ALLOWED = {
    "select": set(Phase),
    "gpo": {Phase.SELECTED},
    "read-record": {Phase.PSE, Phase.SELECTED, Phase.INITIATED, Phase.ONLINE, Phase.COMPLETED},
    "get-data": {Phase.SELECTED, Phase.INITIATED, Phase.ONLINE, Phase.COMPLETED},
    "verify": {Phase.INITIATED},
    "gac": {Phase.INITIATED, Phase.ONLINE},
    "get-challenge": set(Phase),
    "external-authenticate": {Phase.ONLINE},
    "script": {Phase.ONLINE, Phase.COMPLETED},
}


@given(phase=st.sampled_from(list(Phase)), name=st.sampled_from(sorted(_COMMANDS)))
def test_every_phase_ins_pair_follows_the_table(phase: Phase, name: str) -> None:
    card = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, rng=bytes)
    _to_phase(card, phase)
    resp = card.process(_COMMANDS[name](card))
    if phase in _ALLOWED[name]:
        assert sw(resp) != 0x6985
        assert sw(resp) in (0x9000, 0x6300, 0x6988)  # EXTERNAL AUTH / script with zero MACs fail
    else:
        assert resp == h("6985")
        assert card.phase is phase


# ---------------------------------------------------------------------------- fuzzing
_KNOWN_SW1 = {0x61, 0x62, 0x63, 0x65, 0x67, 0x69, 0x6A, 0x6C, 0x6D, 0x6E, 0x6F, 0x90}

_structured = st.builds(
    lambda cla, ins, p1, p2, data, le: bytes([cla, ins, p1, p2])
    + (bytes([len(data)]) + data if data else b"")
    + (bytes([le]) if le is not None else b""),
    st.sampled_from([0x00, 0x80, 0x84, 0x0C]),
    st.sampled_from([0xA4, 0xA8, 0xB2, 0xCA, 0x20, 0xAE, 0x84, 0x82, 0x24, 0x1E, 0x18, 0x16, 0xC0]),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=60),
    st.none() | st.integers(0, 255),
)


def _normal_transaction_still_works(card: EmvCapCard) -> None:
    card.power_on()
    start(card)
    ptc = card.state.ptc
    assert verify(card, "1234") == (0x9000 if ptc else 0x6983)
    resp = card.process(gac1_command(card))
    assert sw(resp) == 0x9000
    assert parse_gac(resp[:-2]).cid & 0xC0 == 0x80
    assert sw(card.process(gac2_command(card))) == 0x9000


@given(st.lists(st.binary(max_size=300) | _structured, max_size=20))
def test_fuzz_process_never_raises(apdus: list[bytes]) -> None:
    card = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, rng=os.urandom)
    for raw in apdus:
        before = card.state
        resp = card.process(raw)
        assert len(resp) >= 2
        assert resp[-2] in _KNOWN_SW1
        after = card.state
        assert after.atc >= before.atc
        if after.ptc > before.ptc:  # only a correct VERIFY restores tries here
            assert raw[1] == 0x20
            assert resp == h("9000")
        assert after.lifecycle is before.lifecycle  # no valid script MAC can be guessed
    _normal_transaction_still_works(card)
