"""Command builders: exact bytes (cap-protocol.md §2) and agreement with recorded sessions."""

from __future__ import annotations

import pytest

from capsim.apdu import INS, CommandApdu, builders
from capsim.errors import ValidationError
from tests.utils import VECTORS, load_kv_blocks, load_transcript, unhex

H = bytes.fromhex


def test_select() -> None:
    apdu = builders.select(H("A0000000048002"))
    assert apdu.to_bytes() == H("00A4040007A000000004800200")
    assert apdu.ins == INS.SELECT
    assert builders.select(H("A0000000038002"), first=False).to_bytes() == H("00A4040207A000000003800200")


def test_select_pse() -> None:
    assert builders.PSE_NAME == b"1PAY.SYS.DDF01"
    assert builders.select_pse().to_bytes() == H("00A404000E") + b"1PAY.SYS.DDF01" + b"\x00"


@pytest.mark.parametrize("aid", [b"", bytes(4), bytes(17)])
def test_select_aid_length(aid: bytes) -> None:
    with pytest.raises(ValidationError, match=r"aid must be 5\.\.16 bytes"):
        builders.select(aid)


def test_gpo() -> None:
    assert builders.gpo(b"").to_bytes() == H("80A800000283" "0000")
    assert builders.gpo(H("34208000")).to_bytes() == H("80A8000006830434208000" "00")
    with pytest.raises(ValidationError, match="pdol_data"):
        builders.gpo(bytes(253))
    with pytest.raises(ValidationError, match="pdol_data must be bytes"):
        builders.gpo("00")  # type: ignore[arg-type]


def test_gpo_long_pdol_uses_long_length() -> None:
    apdu = builders.gpo(bytes(200))
    assert apdu.data[:3] == H("8381C8")
    assert apdu.to_bytes()[4] == 203


def test_read_record() -> None:
    assert builders.read_record(1, 1).to_bytes() == H("00B2010C00")
    assert builders.read_record(2, 3).to_bytes() == H("00B2021C00")
    assert builders.read_record(254, 30).to_bytes() == H("00B2FEF400")


@pytest.mark.parametrize(("record", "sfi"), [(0, 1), (255, 1), (1, 0), (1, 31)])
def test_read_record_ranges(record: int, sfi: int) -> None:
    with pytest.raises(ValidationError):
        builders.read_record(record, sfi)


def test_get_data() -> None:
    assert builders.get_data(0x9F17).to_bytes() == H("80CA9F1700")
    assert builders.get_data(0x9F36).to_bytes() == H("80CA9F3600")
    assert builders.get_data(0x82).to_bytes() == H("80CA008200")
    with pytest.raises(ValidationError, match="tag"):
        builders.get_data(0x10000)


def test_verify_has_no_le() -> None:
    apdu = builders.verify_plaintext_pin(H("241234FFFFFFFFFF"))
    assert apdu.to_bytes() == H("0020008008241234FFFFFFFFFF")
    assert apdu.le is None
    assert apdu.case == 3
    with pytest.raises(ValidationError, match="pin_block must be 8 bytes"):
        builders.verify_plaintext_pin(bytes(7))


def test_generate_ac() -> None:
    apdu = builders.generate_ac(0x80, bytes(29))
    assert apdu.to_bytes() == H("80AE80001D") + bytes(29) + b"\x00"
    with pytest.raises(ValidationError, match=r"data must be 1\.\.255 bytes"):
        builders.generate_ac(0x80, b"")
    with pytest.raises(ValidationError, match="p1"):
        builders.generate_ac(0x100, b"\x00")


def test_get_response_and_challenge() -> None:
    assert builders.get_response(0x1A).to_bytes() == H("00C000001A")
    assert builders.get_response(256).to_bytes() == H("00C0000000")
    with pytest.raises(ValidationError):
        builders.get_response(0)
    assert builders.get_challenge().to_bytes() == H("0084000000")


def test_natwest_commands_are_what_the_builders_send() -> None:
    commands = [c for c, _ in load_transcript("transcripts/natwest-fc09.txt").exchanges]
    assert commands[0] == builders.select(H("A0000000048002")).to_bytes()[:-1]  # Le not recorded
    assert commands[1] == builders.gpo(b"").to_bytes()[:-1]
    assert commands[2] == builders.read_record(1, 1).to_bytes()
    gac1 = CommandApdu.from_bytes(commands[3])
    assert builders.generate_ac(0x80, gac1.data).to_bytes()[:-1] == commands[3]
    gac2 = CommandApdu.from_bytes(commands[4])
    assert builders.generate_ac(0x00, gac2.data).to_bytes()[:-1] == commands[4]


def test_barclays_generate_ac_commands() -> None:
    for block in load_kv_blocks(VECTORS / "cap" / "barclays.txt"):
        if "COMMAND" not in block:
            continue
        raw = unhex(block["COMMAND"])
        assert builders.generate_ac(0x80, raw[5:-1]).to_bytes() == raw
