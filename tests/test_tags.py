"""The tag dictionary: coverage of every tag capsim meets, formats, sensitivity, names."""

from __future__ import annotations

import pytest

from capsim.errors import ValidationError
from capsim.tags import TAGS, Tag, TagFormat, TagInfo, tag_info, tag_name
from capsim.tlv import decode as tlv_decode
from capsim.tlv import encode_tag, walk
from tests.utils import load_transcript

_REQUIRED_TEXT = """
4F 50 57 5A 5F20 5F24 5F25 5F28 5F2A 5F2C 5F2D 5F30 5F34 61 6F 70 77 80 82 84 87 88 8A 8C 8D 8E 8F
90 91 92 93 94 95 9A 9C 9F02 9F03 9F07 9F08 9F0D 9F0E 9F0F 9F10 9F12 9F13 9F17 9F1A 9F1F 9F26 9F27
9F33 9F34 9F35 9F36 9F37 9F38 9F42 9F44 9F45 9F46 9F47 9F48 9F49 9F4A 9F4B 9F4C 9F4D 9F4F 9F55 9F56
A5 BF0C DF07
"""
REQUIRED = _REQUIRED_TEXT.split()


@pytest.mark.parametrize("tag", REQUIRED)
def test_required_tag_known(tag: str) -> None:
    info = tag_info(int(tag, 16))
    assert info is not None
    assert info.tag == int(tag, 16)
    assert info.name
    assert not info.name.startswith("unknown")


def test_table_consistent_with_enum() -> None:
    assert set(TAGS) == {int(t) for t in Tag}
    for tag, info in TAGS.items():
        assert info.tag == tag
        encode_tag(tag)  # every entry is a well-formed tag


def test_names_unique() -> None:
    names = [i.name for i in TAGS.values()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("tag", "constructed"),
    [(0x6F, True), (0x70, True), (0x77, True), (0xA5, True), (0xBF0C, True), (0x61, True),
     (0x80, False), (0x5A, False), (0x9F02, False), (0xDF07, False)],
)
def test_constructed_from_tag_bits(tag: int, constructed: bool) -> None:
    info = tag_info(tag)
    assert info is not None
    assert info.constructed is constructed


@pytest.mark.parametrize(
    ("tag", "fmt"),
    [
        (0x9F02, TagFormat.N), (0x9F03, TagFormat.N), (0x9F1A, TagFormat.N), (0x5F2A, TagFormat.N),
        (0x9A, TagFormat.N), (0x9C, TagFormat.N), (0x9F35, TagFormat.N), (0x5F34, TagFormat.N),
        (0x5A, TagFormat.CN), (0x95, TagFormat.B), (0x9F37, TagFormat.B), (0x9F34, TagFormat.B),
        (0x9F33, TagFormat.B), (0x9F45, TagFormat.B), (0x9F4C, TagFormat.B), (0x8A, TagFormat.AN),
        (0x50, TagFormat.ANS), (0x5F2D, TagFormat.AN), (0x91, TagFormat.B),
    ],
)
def test_formats_of_cdol_tags(tag: int, fmt: TagFormat) -> None:
    # These decide the padding of CDOL1/CDOL2 data (cap-protocol.md §4): a wrong format is a wrong AC.
    info = tag_info(tag)
    assert info is not None
    assert info.fmt is fmt


SENSITIVE = {0x56, 0x57, 0x5A, 0x5F20, 0x5F24, 0x99, 0x9F0B, 0x9F1F, 0x9F20, 0x9F6B}


def test_sensitive_set() -> None:
    assert {t for t, i in TAGS.items() if i.sensitive} == SENSITIVE


def test_tag_name() -> None:
    assert tag_name(0x9F02) == "Amount, Authorised (Numeric)"
    assert tag_name(0xDF7F) == "unknown tag DF7F"
    assert tag_name(0x01) == "unknown tag 01"
    assert tag_name(0xDF8101) == "unknown tag DF8101"
    with pytest.raises(ValidationError):
        tag_name(-1)


def test_tag_info_frozen_keyword_only() -> None:
    info = TagInfo(tag=0xDF01, name="x", fmt=TagFormat.B)
    assert info.sensitive is False
    with pytest.raises(TypeError):
        TagInfo(0xDF01, "x", TagFormat.B)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        info.name = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TAGS[0xDF01] = info  # type: ignore[index]


@pytest.mark.parametrize("name", ["natwest-fc09", "rabobank-tds"])
def test_every_recorded_tag_is_known(name: str) -> None:
    for _, response in load_transcript(f"transcripts/{name}.txt").exchanges:
        for _, obj in walk(tlv_decode(response[:-2])):
            assert tag_info(obj.tag) is not None, f"{obj.tag:X}"
