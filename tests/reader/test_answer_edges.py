"""Edges of the card's answers the transcript tests never reach.

Each test pins one rule a planted bug changed without any other test noticing: records of
SFIs 11–30 are the issuer's own format (EMV Book 3 §5.3.2.2), a card that reports 0 PIN tries
stops the reader before VERIFY with the card's own status, a format-2 GENERATE AC answer
without ``9F10`` has an empty IAD, and a dump shows the space character as itself. A malformed
AFL entry is named by its own four bytes, an AFL of 64 records is read and one of 65 refused,
a Sign without a currency is refused exactly when the card's IAF signs one (bit 20 clear), each
broken GPO, record or GENERATE AC answer has its own full message, a refused VERIFY is a PIN
error naming INS 20, and a currency the card does not sign but that scaled the amount warns, as
do a CDOL1 tag unknown to the reader (zero-filled) and an IPB of more than 26 bits.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from capsim.errors import PinBlockedError, PinError, RemoteProtocolError, StatusWordError
from capsim.reader import MAX_RECORDS, CapReader
from capsim.reader.run import InputError
from capsim.reader.transaction import parse_ac
from capsim.tlv import decode, encode, format_tree
from tests.reader.helpers import ScriptedCard
from tests.reader.test_hostile import NATWEST_RECORD, OK, natwest_like
from tests.utils import unhex

NOT_A_RECORD = unhex("5A0412345678")  # an issuer-format record: no template 70


def _two_sfis(sfi: int) -> Callable[[bytes], bytes]:
    """NatWest-like, with an AFL naming record 1 of SFI 1 and record 1 of ``sfi``; the latter
    answers bytes that are not a record template."""
    afl = bytes([1 << 3, 1, 1, 0, sfi << 3, 1, 1, 0])
    base = natwest_like({0xA8: encode(0x80, b"\x10\x00" + afl) + OK})

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xB2:
            return (NATWEST_RECORD if apdu[3] >> 3 == 1 else NOT_A_RECORD) + OK
        return base(apdu)

    return answer


@pytest.mark.parametrize("sfi", [11, 12, 30])
def test_an_issuer_format_record_of_sfi_11_to_30_is_read_past(sfi: int) -> None:
    card = ScriptedCard(_two_sfis(sfi))
    assert CapReader(card, "mc-cap").respond("1234", "12345678").code == "04822527"
    assert [a[3] >> 3 for a in card.sent if a[1] == 0xB2] == [1, sfi]


@pytest.mark.parametrize("sfi", [2, 10])
def test_a_record_of_sfi_1_to_10_must_be_a_record_template(sfi: int) -> None:
    card = ScriptedCard(_two_sfis(sfi))
    with pytest.raises(RemoteProtocolError, match="record template 70"):
        CapReader(card, "mc-cap").respond("1234", "12345678")


def test_a_card_reporting_no_pin_tries_stops_before_verify_with_its_status() -> None:
    card = ScriptedCard(natwest_like({0xCA: unhex("9F170100") + OK}))
    with pytest.raises(PinBlockedError) as caught:
        CapReader(card, "mc-cap").respond("1234", "12345678")
    assert (caught.value.sw, caught.value.ins) == (0x6983, 0xCA)
    assert not [a for a in card.sent if a[1] in (0x20, 0xAE)]  # no VERIFY, no GENERATE AC


def test_format_2_answer_without_iad_has_an_empty_iad() -> None:
    body = encode(0x9F27, b"\x80") + encode(0x9F36, b"\x00\x42") + encode(0x9F26, bytes(range(8)))
    cid, atc, ac, iad = parse_ac(encode(0x77, body))
    assert (cid, atc, ac, iad) == (0x80, b"\x00\x42", bytes(range(8)), b"")
    with_iad = parse_ac(encode(0x77, body + encode(0x9F10, b"\x06\x01")))
    assert with_iad[3] == b"\x06\x01"


def test_a_dump_shows_printable_ascii_including_the_space() -> None:
    text = format_tree(decode(encode(0x50, b"a b~\x1f\x7f")))
    assert text.endswith('"a b~.."')


def _afl_card(afl: str) -> ScriptedCard:
    """NatWest-like, its GPO answer (format 1, AIP 1000) carrying ``afl``."""
    return ScriptedCard(natwest_like({0xA8: encode(0x80, b"\x10\x00" + unhex(afl)) + OK}))


@pytest.mark.parametrize(
    ("afl", "entry"),
    [
        ("00010100", "00010100"),  # the only entry: SFI 0
        ("0801010010020100", "10020100"),  # the second entry: its last record before its first
        ("0002010008010100", "00020100"),  # the first of two entries: SFI 0
    ],
)
def test_a_malformed_afl_entry_is_named_by_its_four_bytes(afl: str, entry: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        CapReader(_afl_card(afl), "mc-cap").respond("1234", "12345678")
    assert str(caught.value) == f"GPO answer: malformed AFL entry {entry}"


def test_an_afl_of_max_records_is_read_and_one_more_is_refused() -> None:
    card = _afl_card(f"0801{MAX_RECORDS:02X}00")  # SFI 1, records 1..64
    assert CapReader(card, "mc-cap").respond("1234", "12345678").code == "04822527"
    assert len([a for a in card.sent if a[1] == 0xB2]) == MAX_RECORDS
    over = _afl_card(f"080101000802{MAX_RECORDS + 1:02X}00")  # record 1, then records 2..65 of SFI 1
    with pytest.raises(RemoteProtocolError) as caught:
        CapReader(over, "mc-cap").respond("1234", "12345678")
    assert str(caught.value) == f"GPO answer: the AFL lists more than {MAX_RECORDS} records"
    assert not [a for a in over.sent if a[1] == 0xB2]


def _iaf_card(iaf: int) -> ScriptedCard:
    """NatWest-like, its record carrying the IAF ``iaf`` instead of A0."""
    assert NATWEST_RECORD.count(unhex("9F5501A0")) == 1
    record = NATWEST_RECORD.replace(unhex("9F5501A0"), bytes([0x9F, 0x55, 0x01, iaf]))
    return ScriptedCard(natwest_like({0xB2: record + OK}))


@pytest.mark.parametrize("iaf", [0x80, 0x81, 0x90, 0xC1])
def test_sign_without_a_currency_is_refused_when_the_iaf_signs_the_currency(iaf: int) -> None:
    """IAF bit 0x20 clear: the currency is signed, so a Sign without one stops before VERIFY
    (whatever the IAF's other low bits)."""
    card = _iaf_card(iaf)
    with pytest.raises(InputError) as caught:
        CapReader(card, "mc-cap").sign("1234", "12345678", 100)
    assert str(caught.value) == (
        f"amount/currency: this card's IAF ({iaf:02X}) asks for a currency in sign mode"
    )
    assert not [a for a in card.sent if a[1] in (0xCA, 0x20, 0xAE)]  # stopped after the records


@pytest.mark.parametrize("iaf", [0xA0, 0xA1])
def test_sign_without_a_currency_runs_when_the_iaf_does_not_sign_one(iaf: int) -> None:
    card = _iaf_card(iaf)
    result = CapReader(card, "mc-cap").sign("1234", "12345678", 100)
    assert len(result.code) == 8
    assert [a[1] for a in card.sent].count(0x20) == 1


def _record(*parts: bytes) -> bytes:
    return encode(0x70, b"".join(parts)) + OK


CDOL1 = encode(0x8C, unhex("9F3704"))
CDOL2 = encode(0x8D, unhex("8A02"))


@pytest.mark.parametrize(
    ("ins", "answer", "message"),
    [
        (0xA8, unhex("9F0100") + OK, "GPO answer is neither format 1 (80) nor format 2 (77)"),
        (0xA8, unhex("80011000") + OK, "GPO answer: the AIP must be 2 bytes"),
        (0xA8, unhex("77028200") + OK, "GPO answer: the AIP must be 2 bytes"),
        (
            0xA8,
            unhex("80051000080101") + OK,
            "GPO answer: the AFL must be a non-empty multiple of 4 bytes, got 3",
        ),
        (0xA8, unhex("80021000") + OK, "GPO answer: the AFL must be a non-empty multiple of 4 bytes, got 0"),
        (0xB2, unhex("5A021234") + OK, "READ RECORD answer is not a record template 70"),
        (0xB2, _record(encode(0x9F56, unhex("00FF"))), "the card has no CDOL1 (8C) in its records"),
        (0xB2, _record(CDOL1), "the card has no CDOL2 (8D) in its records"),
        (0xB2, _record(CDOL1, CDOL2, encode(0x5F34, b"\x01\x02")), "PSN (5F34) must be 1 byte, got 2"),
        (0xAE, encode(0x80, bytes(10)) + OK, "GENERATE AC format 1: 10 bytes, need at least 11"),
        (0xAE, encode(0x77, encode(0x9F36, b"\x00\x01")) + OK, "GENERATE AC format 2 lacks 9F27, 9F26"),
        (
            0xAE,
            encode(0x77, encode(0x9F27, b"\x80") + encode(0x9F36, b"\x01") + encode(0x9F26, bytes(8))) + OK,
            "GENERATE AC format 2: CID 1, ATC 2 and AC 8 bytes expected",
        ),
        (0xAE, unhex("9F0100") + OK, "GENERATE AC answer is neither format 1 (80) nor format 2 (77)"),
        (0xAE, encode(0x80, bytes(11 + 33)) + OK, "GENERATE AC: IAD of 33 bytes, at most 32"),
    ],
)
def test_each_broken_answer_is_refused_with_its_own_message(ins: int, answer: bytes, message: str) -> None:
    card = ScriptedCard(natwest_like({ins: answer}))
    with pytest.raises(RemoteProtocolError) as caught:
        CapReader(card, "mc-cap").respond("1234", "12345678")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("sw", "error"), [(0x63C2, PinError), (0x6983, PinBlockedError), (0x6984, PinBlockedError)]
)
def test_a_refused_verify_is_a_pin_error_naming_verify(sw: int, error: type[StatusWordError]) -> None:
    card = ScriptedCard(natwest_like({0x20: sw.to_bytes(2, "big")}))
    with pytest.raises(error) as caught:
        CapReader(card, "mc-cap").respond("1234", "12345678")
    assert (type(caught.value), caught.value.sw, caught.value.ins) == (error, sw, 0x20)
    assert not [a for a in card.sent if a[1] == 0xAE]


def test_an_unsigned_currency_that_scaled_the_amount_is_a_warning() -> None:
    """IAF A0 signs no currency: a currency with 3 decimals still scaled the amount typed."""
    result = CapReader(_iaf_card(0xA0), "mc-cap").sign("1234", "12345678", "1.500", "KWD")
    assert (
        "the card's IAF (A0) does not sign a currency: KWD is not sent, but it scaled the amount: "
        "1.500 at 3 decimals is 1500 minor units (2 decimals without a currency)"
    ) in result.warnings
    two_decimals = CapReader(_iaf_card(0xA0), "mc-cap").sign("1234", "12345678", "1.50", "EUR")
    assert not [w for w in two_decimals.warnings if "does not sign a currency" in w]


def _record_card(old: str, new: str) -> ScriptedCard:
    """NatWest-like, ``old`` replaced by ``new`` in its record (the template's length fixed)."""
    assert NATWEST_RECORD.count(unhex(old)) == 1
    body = NATWEST_RECORD[2:].replace(unhex(old), unhex(new))
    return ScriptedCard(natwest_like({0xB2: encode(0x70, body) + OK}))


def test_a_cdol1_tag_unknown_to_the_reader_is_zero_filled_with_a_warning() -> None:
    card = _record_card("8C159F0206", "8C18DF01029F0206")
    result = CapReader(card, "mc-cap").respond("1234", "12345678")
    assert result.warnings == ("CDOL1 asks for tag DF01, unknown to the reader: zero-filled",)
    first_ac = next(a for a in card.sent if a[1] == 0xAE)
    assert first_ac[4] == 2 + 0x1D  # NatWest's 29 bytes of CDOL1 data and the two of DF01
    assert first_ac[5:7] == b"\x00\x00"  # which lead, zero-filled


@pytest.mark.parametrize(
    ("ipb_byte", "warnings"), [("1F", ()), ("3F", ("the IPB selects 27 bits (more than the usual 26)",))]
)
def test_an_ipb_over_26_bits_is_a_warning(ipb_byte: str, warnings: tuple[str, ...]) -> None:
    card = _record_card("9F561200001F", "9F56120000" + ipb_byte)
    assert CapReader(card, "mc-cap").respond("1234", "12345678").warnings == warnings


@pytest.mark.parametrize(
    ("cid", "kind"), [(0x00, "an AAC"), (0x40, "a TC"), (0xC0, "an RFU AC type"), (0x41, "a TC")]
)
def test_a_first_cryptogram_that_is_not_an_arqc_is_named_in_the_warning(cid: int, kind: str) -> None:
    """The AC type is CID bits 8–7: 00 AAC, 40 TC, C0 RFU; the low bits do not change it."""
    answer = unhex("8012") + bytes([cid]) + unhex("0042B7F9A572DA74CAFF06770A03A48000") + OK
    result = CapReader(ScriptedCard(natwest_like({0xAE: answer})), "mc-cap").respond("1234", "12345678")
    assert result.warnings[0] == (
        f"the card returned {kind} (CID {cid:02X}) instead of an ARQC: the bank will refuse the code"
    )
    arqc = unhex("8012800042B7F9A572DA74CAFF06770A03A48000") + OK
    reader = CapReader(ScriptedCard(natwest_like({0xAE: arqc})), "mc-cap")
    assert not reader.respond("1234", "12345678").warnings
