"""DOL parsing and filling by EMV 4.3 Book 3 §5.4 rules (cap-protocol.md §2, §4)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import ApduFormatError, ValidationError
from capsim.tags import TAGS, TagFormat
from capsim.tlv import DolEntry, encode_dol, fill_dol, find, parse_dol
from capsim.tlv import decode as tlv_decode
from tests.utils import load_transcript

H = bytes.fromhex

NATWEST_CDOL1 = H("9F02069F03069F1A0295055F2A029A039C019F3704")
RABOBANK_CDOL1 = H("9F02069F03069F1A0295055F2A029A039C019F37049F35019F45029F4C089F3403")


def test_parse_dol() -> None:
    entries = parse_dol(NATWEST_CDOL1)
    assert entries == (
        DolEntry(0x9F02, 6), DolEntry(0x9F03, 6), DolEntry(0x9F1A, 2), DolEntry(0x95, 5),
        DolEntry(0x5F2A, 2), DolEntry(0x9A, 3), DolEntry(0x9C, 1), DolEntry(0x9F37, 4),
    )
    assert sum(e.length for e in entries) == 29
    assert encode_dol(entries) == NATWEST_CDOL1
    assert parse_dol(b"") == ()


@pytest.mark.parametrize(
    ("raw", "offset"),
    [("9F", 1), ("9F02", 2), ("9F0206 9F", 4), ("00 04", 0), ("9F0206 FF02", 3), ("1F8182838401", 0)],
)
def test_parse_dol_malformed(raw: str, offset: int) -> None:
    with pytest.raises(ApduFormatError) as info:
        parse_dol(H(raw))
    assert info.value.offset == offset


def test_dol_entry_validation() -> None:
    with pytest.raises(ValidationError, match="length"):
        DolEntry(0x9F02, 256)
    with pytest.raises(ValidationError, match="tag"):
        DolEntry(0x1F, 1)
    assert repr(DolEntry(0x9F02, 6)) == "DolEntry(0x9F02, 6)"
    assert DolEntry(0x95, 5).to_bytes() == H("9505")


# ---------------------------------------------------------------- format rules


def _one(tag: int, length: int, value: bytes) -> bytes:
    return fill_dol(encode_dol([DolEntry(tag, length)]), {tag: value})


def test_n_right_justified_left_zero_padded() -> None:
    assert TAGS[0x9F02].fmt is TagFormat.N
    assert _one(0x9F02, 6, H("1234")) == H("000000001234")
    assert _one(0x9F02, 6, H("000000123456")) == H("000000123456")


def test_n_too_long_keeps_rightmost() -> None:
    assert _one(0x9F02, 2, H("00001234")) == H("1234")
    assert _one(0x9A, 3, H("20260101")) == H("260101")


def test_cn_left_justified_ff_padded_cut_right() -> None:
    assert TAGS[0x5A].fmt is TagFormat.CN
    assert _one(0x5A, 10, H("4658123456789009")) == H("4658123456789009FFFF")
    assert _one(0x5A, 4, H("4658123456789009")) == H("46581234")


@pytest.mark.parametrize(("tag", "fmt"), [(0x95, TagFormat.B), (0x8A, TagFormat.AN), (0x50, TagFormat.ANS)])
def test_other_formats_left_justified_zero_padded_cut_right(tag: int, fmt: TagFormat) -> None:
    assert TAGS[tag].fmt is fmt
    assert _one(tag, 5, H("AABB")) == H("AABB000000")
    assert _one(tag, 2, H("AABBCCDD")) == H("AABB")
    assert _one(tag, 2, H("AABB")) == H("AABB")


def test_zero_length_entry() -> None:
    assert _one(0x9F02, 0, H("1234")) == b""


def test_missing_tags_are_zero_filled() -> None:
    assert fill_dol(NATWEST_CDOL1, {}) == bytes(29)


def test_unknown_tag_callback() -> None:
    seen: list[int] = []
    dol = H("9F0206DF7F039F3704DF7E01")
    out = fill_dol(dol, {0xDF7E: H("AABB")}, unknown=seen.append)
    assert out == bytes(6) + bytes(3) + bytes(4) + H("AA")  # unknown tags: binary rule
    assert seen == [0xDF7F]  # known-but-missing 9F02/9F37 are not reported; supplied DF7E neither


def test_unknown_tag_without_callback() -> None:
    assert fill_dol(H("DF7F02"), {}) == H("0000")


def test_constructed_tag_is_zero_filled() -> None:
    assert fill_dol(H("7003"), {0x70: H("AABBCC")}) == H("000000")


def test_entries_accepted_instead_of_bytes() -> None:
    entries = [DolEntry(0x9F37, 4), DolEntry(0x9C, 1)]
    assert fill_dol(entries, {0x9F37: H("12345678"), 0x9C: H("00")}) == H("1234567800")
    with pytest.raises(ValidationError, match="DolEntry"):
        fill_dol([(0x9F37, 4)], {})  # type: ignore[list-item]
    with pytest.raises(ValidationError, match=r"values\[0x9F37\]"):
        fill_dol(entries, {0x9F37: "12345678"})  # type: ignore[dict-item]


def test_natwest_cdol1_fill_matches_the_recorded_generate_ac() -> None:
    ex = load_transcript("transcripts/natwest-fc09.txt").exchanges
    record = tlv_decode(ex[2][1][:-2])
    cdol1 = find(record, 0x8C)
    cdol2 = find(record, 0x8D)
    assert cdol1 is not None
    assert cdol2 is not None
    values = {
        0x95: H("8000000000"),
        0x9A: H("000000"),
        0x9F37: H("12345678"),  # challenge 12345678
    }
    gac1 = fill_dol(cdol1.value, values)
    assert gac1 == ex[3][0][5:]
    gac2 = fill_dol(cdol2.value, {**values, 0x8A: b"Z3"})
    assert gac2 == ex[4][0][5:]


def test_rabobank_cdol1_fill_matches_the_recorded_generate_ac() -> None:
    ex = load_transcript("transcripts/rabobank-tds.txt").exchanges
    record = tlv_decode(ex[2][1][:-2])
    cdol1 = find(record, 0x8C)
    assert cdol1 is not None
    assert cdol1.value == RABOBANK_CDOL1
    values = {
        0x95: H("8000000000"),
        0x9A: H("000000"),
        0x9F35: H("34"),
        0x9F34: H("010002"),
        0x9F37: H("00000000"),
    }
    assert fill_dol(cdol1.value, values) == ex[3][0][5:]


# ---------------------------------------------------------------- properties


@given(st.binary(max_size=300))
def test_fuzz_parse_dol(raw: bytes) -> None:
    try:
        entries = parse_dol(raw)
    except ApduFormatError as exc:
        offset = exc.offset
        assert 0 <= offset <= len(raw)
        return
    assert encode_dol(entries) == raw
    assert parse_dol(encode_dol(entries)) == entries


known_tags = st.sampled_from(sorted(t for t, i in TAGS.items() if not i.constructed))


@given(
    st.lists(st.tuples(known_tags, st.integers(0, 16)), max_size=8, unique_by=lambda e: e[0]),
    st.data(),
)
def test_fill_length_and_rules(spec: list[tuple[int, int]], data: st.DataObject) -> None:
    entries = [DolEntry(t, n) for t, n in spec]
    values = {t: data.draw(st.binary(max_size=20)) for t, _ in spec if data.draw(st.booleans())}
    out = fill_dol(encode_dol(entries), values)
    assert len(out) == sum(n for _, n in spec)
    pos = 0
    for tag, n in spec:
        field = out[pos : pos + n]
        pos += n
        v = values.get(tag)
        if v is None:
            assert field == bytes(n)
            continue
        fmt = TAGS[tag].fmt
        if fmt is TagFormat.N:
            expected = (bytes(n) + v)[-n:] if n else b""
            assert field == expected
        elif fmt is TagFormat.CN:
            assert field == (v + b"\xff" * n)[:n]
        else:
            assert field == (v + bytes(n))[:n]


def test_bad_arguments_have_no_side_effects() -> None:
    seen: list[int] = []
    with pytest.raises(ValidationError, match=r"values\[0x9F37\]"):
        fill_dol(H("DF7F019F3704"), {0x9F37: "1234"}, unknown=seen.append)  # type: ignore[dict-item]
    assert seen == []  # the unknown DF7F before the bad value was not reported
    with pytest.raises(ValidationError, match="values must be a mapping"):
        fill_dol(H("9F3704"), [(0x9F37, b"1234")])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="dol must be"):
        fill_dol("9F3704", {})  # type: ignore[arg-type]


def test_dol_entries_are_values() -> None:
    """A parsed DOL entry can't be changed behind the profile's back, and it hashes."""
    import dataclasses

    entry = DolEntry(0x9F37, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.length = 8  # type: ignore[misc]
    assert {entry, DolEntry(0x9F37, 4)} == {entry}


@pytest.mark.parametrize("length", [True, False, 6.0, "6", None, -1, 256])
def test_a_dol_entry_length_must_be_an_int_from_0_to_255(length: object) -> None:
    """A bool is no length (``True`` would otherwise ask for one byte), nor is a float or a str."""
    with pytest.raises(ValidationError) as info:
        DolEntry(0x9F02, length)  # type: ignore[arg-type]
    assert str(info.value) == f"length must be an int in 0..255, got {length!r}"


@pytest.mark.parametrize("length", [0, 1, 255])
def test_a_dol_entry_length_from_0_to_255_is_taken(length: int) -> None:
    assert DolEntry(0x9F02, length).to_bytes() == bytes((0x9F, 0x02, length))


def test_a_tag_unknown_to_the_tag_table_is_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="capsim.tlv"):
        assert fill_dol(H("DF7F029F3704"), {0x9F37: b"\x01\x02\x03\x04"}) == H("000001020304")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("capsim.tlv", logging.DEBUG, "DOL asks for tag DF7F, unknown to the tag table: zero-filled")
    ]
