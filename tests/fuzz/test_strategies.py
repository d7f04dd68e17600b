"""The public strategies draw what they promise (capsim.testing.strategies)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.apdu import CommandApdu
from capsim.cap import canonical_challenge, parse_amount, validate_tds_fields
from capsim.errors import ApduFormatError, ValidationError
from capsim.testing import strategies as s
from capsim.testing.model import parse_pin_block
from capsim.tlv import decode, encode_dol, parse_dol


@pytest.mark.parametrize("case", [1, 2, 3, 4])
@given(data=st.data())
def test_command_apdus_have_the_case_and_round_trip(case: int, data: st.DataObject) -> None:
    apdu = data.draw(s.command_apdus(case=case, extended=None))
    assert apdu.case == case
    assert CommandApdu.from_bytes(apdu.to_bytes()) == apdu


@given(st.data())
def test_command_apdus_rejects_unknown_case(data: st.DataObject) -> None:
    with pytest.raises(ValueError, match="case"):
        data.draw(s.command_apdus(case=5))


@given(s.emv_commands(valid=1.0, pin="1234"))
def test_well_formed_emv_commands_parse(apdu: CommandApdu) -> None:
    assert apdu.cla in (0x00, 0x80, 0x84)
    if apdu.ins == 0x20:
        assert (apdu.p1, apdu.p2, len(apdu.data), apdu.le) == (0x00, 0x80, 8, None)
    if apdu.ins == 0xA8:
        assert apdu.data == bytes.fromhex("8300")


@given(st.data())
def test_emv_commands_rejects_unknown_names(data: st.DataObject) -> None:
    with pytest.raises(ValueError, match="names"):
        data.draw(s.emv_commands(names=("select", "erase")))


@given(s.tlv_bytes())
def test_tlv_bytes_decode_and_reencode(data: bytes) -> None:
    objs = decode(data)
    assert b"".join(o.to_bytes() for o in objs) == data


@given(s.malformed_tlv_bytes())
def test_malformed_tlv_is_refused_or_survived_with_capsim_errors_only(data: bytes) -> None:
    try:
        objs = decode(data)
    except ApduFormatError as exc:
        offset = exc.offset
    else:
        offset = None
        assert decode(b"".join(o.to_bytes() for o in objs)) == objs
    assert offset is None or 0 <= offset <= len(data)


@given(s.dols())
def test_dols_round_trip(entries: tuple) -> None:
    assert parse_dol(encode_dol(entries)) == entries


@given(s.challenges())
def test_challenges_are_accepted_by_cap(challenge: str) -> None:
    assert len(canonical_challenge(challenge)) == 8


@given(s.adversarial_challenges())
def test_adversarial_challenges_raise_only_validation_errors(challenge: str) -> None:
    try:
        canonical_challenge(challenge)
    except ValidationError:
        return
    assert challenge.isascii()
    assert challenge.isdigit()
    assert 1 <= len(challenge) <= 8


@given(s.amounts(), s.currencies())
def test_amounts_and_currencies_are_accepted_by_cap(amount: int, currency: str) -> None:
    assert parse_amount(amount, currency) == amount


@given(s.tds_fields())
def test_tds_fields_are_accepted_by_cap(fields: tuple[str, ...]) -> None:
    assert validate_tds_fields(fields) == fields


@given(s.pins(), st.data())
def test_pin_blocks_encode_the_pin(pin: str, data: st.DataObject) -> None:
    block = data.draw(s.pin_blocks(pin=pin, malformed=0.0))
    assert parse_pin_block(block) == pin


@given(s.codes())
def test_codes_are_eight_digits(code: str) -> None:
    assert len(code) == 8
    assert code.isdigit()


@given(s.cards(profile="barclays"))
def test_cards_answer_select(card) -> None:  # type: ignore[no-untyped-def]
    aid = card.profile.aid
    answer = card.process(bytes((0x00, 0xA4, 0x04, 0x00, len(aid))) + aid + b"\x00")
    assert answer[-2:] == b"\x90\x00"


@given(st.data())
def test_cdol_data_fits_the_card_and_gives_an_arqc(data: st.DataObject) -> None:
    card = data.draw(s.cards(profile="barclays", pin="1234"))
    cdol1 = card.profile.cdol1
    filled = data.draw(s.cdol_data(cdol1))
    assert len(filled) == sum(e.length for e in parse_dol(cdol1))
    aid = card.profile.aid
    card.process(bytes((0x00, 0xA4, 0x04, 0x00, len(aid))) + aid + b"\x00")
    card.process(bytes.fromhex("80A8000002830000"))
    answer = card.process(CommandApdu(0x80, 0xAE, 0x80, 0x00, filled, 256).to_bytes())
    assert answer[-2:] == b"\x90\x00"
