"""CommandApdu: ISO 7816-4 cases 1-4, short and extended, exact bytes and strict decoding."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.apdu import CommandApdu
from capsim.errors import ApduFormatError, ValidationError
from tests.utils import VECTORS, load_kv_blocks, load_transcript, unhex

H = bytes.fromhex


# ---------------------------------------------------------------- encoding per case and form

ENCODINGS = [
    # (cla, ins, p1, p2, data, le, extended, expected hex, case)
    (0x00, 0xA4, 0x04, 0x00, b"", None, None, "00A40400", 1),
    (0x00, 0xB2, 0x01, 0x0C, b"", 256, None, "00B2010C00", 2),
    (0x00, 0xB2, 0x01, 0x0C, b"", 1, None, "00B2010C01", 2),
    (0x00, 0xB2, 0x01, 0x0C, b"", 255, None, "00B2010CFF", 2),
    (0x00, 0x20, 0x00, 0x80, H("241234FFFFFFFFFF"), None, None, "0020008008241234FFFFFFFFFF", 3),
    (0x00, 0xA4, 0x04, 0x00, H("A0000000048002"), 256, None, "00A4040007A000000004800200", 4),
    (0x80, 0xCA, 0x9F, 0x17, b"", 4, None, "80CA9F1704", 2),
    # extended case 2: 00 Le1 Le2 (65536 -> 0000)
    (0x00, 0xB0, 0x00, 0x00, b"", 257, None, "00B00000000101", 2),
    (0x00, 0xB0, 0x00, 0x00, b"", 65536, None, "00B00000000000", 2),
    (0x00, 0xB0, 0x00, 0x00, b"", 256, True, "00B00000000100", 2),
    # extended case 3: 00 Lc1 Lc2 data
    (0x00, 0xD6, 0x00, 0x00, b"\x01", None, True, "00D6000000000101", 3),
    # extended case 4: 00 Lc1 Lc2 data Le1 Le2
    (0x00, 0x88, 0x00, 0x00, b"\xaa\xbb", 65536, None, "00880000000002AABB0000", 4),
    (0x00, 0x88, 0x00, 0x00, b"\xaa\xbb", 256, True, "00880000000002AABB0100", 4),
    (0x00, 0x88, 0x00, 0x00, b"\xaa\xbb", 1000, None, "00880000000002AABB03E8", 4),
]


@pytest.mark.parametrize(
    ("cla", "ins", "p1", "p2", "data", "le", "extended", "expected", "case"), ENCODINGS
)
def test_encoding_per_case(
    cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None, extended: bool | None,
    expected: str, case: int,
) -> None:
    apdu = CommandApdu(cla, ins, p1, p2, data, le, extended=extended)
    raw = apdu.to_bytes()
    assert raw.hex().upper() == expected
    assert bytes(apdu) == raw
    assert len(apdu) == len(raw)
    assert apdu.case == case
    back = CommandApdu.from_bytes(raw)
    assert back == apdu
    assert back.to_bytes() == raw


def test_extended_chosen_automatically_for_long_data() -> None:
    data = bytes(range(256))
    apdu = CommandApdu(0x00, 0xD6, 0x00, 0x00, data)
    assert apdu.extended is True
    raw = apdu.to_bytes()
    assert raw[:7] == H("00D60000000100")
    assert raw[7:] == data
    apdu4 = CommandApdu(0x00, 0xD6, 0x00, 0x00, data, 256)
    assert apdu4.to_bytes()[-2:] == H("0100")
    assert CommandApdu.from_bytes(apdu4.to_bytes()) == apdu4


def test_short_boundaries_stay_short() -> None:
    apdu = CommandApdu(0x00, 0xD6, 0x00, 0x00, bytes(255), 256)
    assert apdu.extended is False
    assert apdu.to_bytes()[4] == 0xFF
    assert apdu.to_bytes()[-1] == 0x00
    assert len(apdu.to_bytes()) == 4 + 1 + 255 + 1


def test_maximum_extended_data() -> None:
    apdu = CommandApdu(0x00, 0xD6, 0x00, 0x00, bytes(65535), 65536)
    raw = apdu.to_bytes()
    assert raw[4:7] == H("00FFFF")
    assert raw[-2:] == H("0000")
    assert CommandApdu.from_bytes(raw) == apdu


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("field", ["cla", "ins", "p1", "p2"])
@pytest.mark.parametrize("bad", [-1, 256, True, "0", None])
def test_header_fields_validated(field: str, bad: object) -> None:
    kwargs: dict[str, object] = {"cla": 0, "ins": 0xA4, "p1": 0, "p2": 0}
    kwargs[field] = bad
    with pytest.raises(ValidationError, match=field):
        CommandApdu(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("le", [0, -1, 65537, True, 1.0])
def test_le_validated(le: object) -> None:
    with pytest.raises(ValidationError, match="le must be"):
        CommandApdu(0, 0xB0, 0, 0, le=le)  # type: ignore[arg-type]


def test_data_validated() -> None:
    with pytest.raises(ValidationError, match="data must be bytes"):
        CommandApdu(0, 0xD6, 0, 0, "00")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at most 65535"):
        CommandApdu(0, 0xD6, 0, 0, bytes(65536))
    assert CommandApdu(0, 0xD6, 0, 0, bytearray(b"\x01")).data == b"\x01"


def test_forced_short_form_that_cannot_fit() -> None:
    with pytest.raises(ValidationError, match="extended=False"):
        CommandApdu(0, 0xD6, 0, 0, bytes(256), extended=False)
    with pytest.raises(ValidationError, match="extended=False"):
        CommandApdu(0, 0xB0, 0, 0, le=257, extended=False)
    with pytest.raises(ValidationError, match="case 1"):
        CommandApdu(0, 0xB0, 0, 0, extended=True)
    with pytest.raises(ValidationError, match="extended must be"):
        CommandApdu(0, 0xB0, 0, 0, le=1, extended=1)  # type: ignore[arg-type]


def test_ins_6x_9x_accepted() -> None:
    # ISO 7816-3 forbids them under T=0 only; the APDU layer documents and accepts them.
    assert CommandApdu(0, 0x60, 0, 0).to_bytes() == H("00600000")
    assert CommandApdu(0, 0x9F, 0, 0).to_bytes() == H("009F0000")


def test_frozen() -> None:
    apdu = CommandApdu(0, 0xA4, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        apdu.ins = 1  # type: ignore[misc]
    assert not hasattr(apdu, "__dict__")


def test_repr_is_hex() -> None:
    apdu = CommandApdu(0x80, 0xAE, 0x80, 0x00, H("0102"), 256)
    assert repr(apdu) == "CommandApdu(cla=0x80, ins=0xAE, p1=0x80, p2=0x00, data=0102, le=256)"


def test_replace_le() -> None:
    apdu = CommandApdu(0x80, 0xCA, 0x9F, 0x17, le=256)
    assert apdu.replace_le(4).to_bytes() == H("80CA9F1704")
    assert apdu.replace_le(None).to_bytes() == H("80CA9F17")
    assert apdu.replace_le(300).to_bytes() == H("80CA9F1700012C")
    ext = CommandApdu(0x00, 0x88, 0, 0, b"\x01", 256, extended=True)
    assert ext.replace_le(4).to_bytes() == H("0088000000000101" "0004")
    assert CommandApdu(0, 0xB0, 0, 0, le=256, extended=True).replace_le(None).to_bytes() == H("00B00000")


# ---------------------------------------------------------------- strict decoding with offsets

MALFORMED = [
    ("", 0),
    ("00", 1),
    ("00A404", 3),
    ("00A4040005A0000000", 9),  # Lc 5, only 4 data bytes
    ("00A4040002AABBCCDD", 8),  # Lc 2, data, Le, then an extra byte
    ("00B0000000FF", 6),  # 00 + one byte: truncated extended length
    ("00D60000000000AA", 5),  # extended Lc 0 followed by bytes
    ("00D60000000003AABB", 9),  # extended Lc 3, two bytes
    ("00D60000000001AABB", 8),  # extended Lc 1, data, one lone byte
    ("00D60000000001AABBCCDD", 10),  # extended Lc 1, data, Le, extra byte
]


@pytest.mark.parametrize(("hexstr", "offset"), MALFORMED)
def test_malformed_rejected_with_offset(hexstr: str, offset: int) -> None:
    with pytest.raises(ApduFormatError) as info:
        CommandApdu.from_bytes(H(hexstr))
    assert info.value.offset == offset
    assert f"at offset {offset}" in str(info.value)


def test_from_bytes_type_checked() -> None:
    with pytest.raises(ValidationError, match="raw must be bytes"):
        CommandApdu.from_bytes("00A40400")  # type: ignore[arg-type]


# ---------------------------------------------------------------- recorded commands


@pytest.mark.parametrize("name", ["natwest-fc09", "rabobank-tds"])
def test_transcript_commands_round_trip(name: str) -> None:
    transcript = load_transcript(f"transcripts/{name}.txt")
    for command, _ in transcript.exchanges:
        apdu = CommandApdu.from_bytes(command)
        assert apdu.to_bytes() == command
        assert apdu.extended is False


def test_barclays_generate_ac_commands_decode() -> None:
    blocks = [b for b in load_kv_blocks(VECTORS / "cap" / "barclays.txt") if "COMMAND" in b]
    assert len(blocks) == 3
    for block in blocks:
        apdu = CommandApdu.from_bytes(unhex(block["COMMAND"]))
        assert (apdu.cla, apdu.ins, apdu.p1, apdu.p2) == (0x80, 0xAE, 0x80, 0x00)
        assert len(apdu.data) == 29
        assert apdu.le == 256
        assert apdu.case == 4


# ---------------------------------------------------------------- properties


@st.composite
def command_apdus(draw: st.DrawFn) -> CommandApdu:
    header = [draw(st.integers(0, 255)) for _ in range(4)]
    data = draw(st.one_of(st.binary(max_size=300), st.binary(min_size=250, max_size=600)))
    le = draw(st.one_of(st.none(), st.integers(1, 65536)))
    extended = draw(st.sampled_from([None, True]))
    if extended and not data and le is None:
        extended = None
    return CommandApdu(*header, data, le, extended=extended)


@given(command_apdus())
def test_round_trip_generated(apdu: CommandApdu) -> None:
    raw = apdu.to_bytes()
    assert len(raw) == len(apdu)
    back = CommandApdu.from_bytes(raw)
    assert back == apdu
    assert back.to_bytes() == raw


@given(st.binary(max_size=300))
def test_fuzz_from_bytes(raw: bytes) -> None:
    # Only ApduFormatError may escape; any other exception fails the test.
    try:
        apdu = CommandApdu.from_bytes(raw)
    except ApduFormatError as exc:
        offset = exc.offset
        assert 0 <= offset <= len(raw)
        return
    assert apdu.to_bytes() == raw
    assert CommandApdu.from_bytes(apdu.to_bytes()) == apdu
