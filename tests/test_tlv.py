"""BER-TLV decoding/encoding (EMV 4.3 Book 3 Annex B): unit cases, recorded data, properties, pyemv."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyemv import tlv as pyemv_tlv

from capsim import tlv
from capsim.errors import ApduFormatError, ValidationError
from capsim.tlv import MAX_DEPTH, Tlv, decode, encode, encode_constructed, find, find_all, format_tree, walk
from tests.utils import VECTORS, load_kv_blocks, load_transcript, unhex

H = bytes.fromhex


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("hexstr", "tag"),
    [
        ("5A00", 0x5A),
        ("9F0200", 0x9F02),
        ("BF0C00", 0xBF0C),
        ("DF810100", 0xDF8101),
        ("5F2D00", 0x5F2D),
        ("1F81820300", 0x1F818203),
    ],
)
def test_multi_byte_tags(hexstr: str, tag: int) -> None:
    (obj,) = decode(H(hexstr))
    assert obj.tag == tag
    assert obj.value == b""
    assert obj.to_bytes() == H(hexstr)
    assert obj.tag_bytes == H(hexstr)[:-1]


def test_tag_longer_than_four_bytes_rejected() -> None:
    with pytest.raises(ApduFormatError, match="longer than 4") as info:
        decode(H("1F8182838400"))
    assert info.value.offset == 0


@pytest.mark.parametrize(("hexstr", "offset"), [("9F", 1), ("DF81", 2), ("5A", 1)])
def test_truncated_tag_or_missing_length(hexstr: str, offset: int) -> None:
    with pytest.raises(ApduFormatError) as info:
        decode(H(hexstr))
    assert info.value.offset == offset


@pytest.mark.parametrize("tag", [0, 0x1F, 0x9F82, 0xFF01, 0x0101, -1, 0x1_0000_0000, True, "5A"])
def test_encode_tag_rejects_malformed(tag: Any) -> None:
    with pytest.raises(ValidationError, match="tag must be"):
        tlv.encode_tag(tag)


# ---------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    ("length_hex", "n"),
    [("00", 0), ("7F", 127), ("8180", 128), ("81FF", 255), ("820100", 256), ("83010000", 65536)],
)
def test_length_forms(length_hex: str, n: int) -> None:
    raw = H("C1") + H(length_hex) + bytes(n)
    (obj,) = decode(raw)
    assert len(obj.value) == n
    assert obj.to_bytes() == raw
    assert encode(0xC1, bytes(n)) == raw
    assert tlv.encode_length(n) == H(length_hex)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("C18105" + "00" * 5, "C105" + "00" * 5), ("C1820001AA", "C101AA"), ("C183000000", "C100")],
)
def test_non_minimal_lengths_accepted_and_reencoded_minimally(raw: str, canonical: str) -> None:
    objs = decode(H(raw))
    assert b"".join(o.to_bytes() for o in objs) == H(canonical)
    assert decode(H(canonical)) == objs


@pytest.mark.parametrize(
    ("raw", "offset", "message"),
    [
        ("C180", 1, "indefinite"),
        ("C18401000000", 1, "longer than 83"),
        ("C1FF", 1, "longer than 83"),
        ("C182FF", 3, "truncated length"),
        ("C103AABB", 4, "needs 3 bytes"),
        ("C1", 1, "missing length"),
    ],
)
def test_bad_lengths(raw: str, offset: int, message: str) -> None:
    with pytest.raises(ApduFormatError, match=message) as info:
        decode(H(raw))
    assert info.value.offset == offset


def test_encode_length_range() -> None:
    assert tlv.encode_length(0xFFFFFF) == H("83FFFFFF")
    with pytest.raises(ValidationError, match="length must be"):
        tlv.encode_length(0x1000000)
    with pytest.raises(ValidationError, match="length must be"):
        tlv.encode_length(-1)


# ---------------------------------------------------------------- padding and templates


def test_padding_skipped_everywhere() -> None:
    raw = H("00FF 70 08 00 5F3401 08 FF 00 00 00 FF 9F3602007C 00")
    objs = decode(raw)
    assert [o.tag for o in objs] == [0x70, 0x9F36]
    (record, atc) = objs
    assert record.children == (Tlv(0x5F34, b"\x08"),)
    assert record.value == H("5F340108")  # canonical: padding dropped
    assert atc.value == H("007C")


def test_only_padding_decodes_to_nothing() -> None:
    assert decode(H("0000FFFF00")) == ()
    assert decode(b"") == ()


def test_constructed_decoded_recursively() -> None:
    (fci,) = decode(H("6F108407A0000000048002A5055F2D02656E"))
    assert fci.constructed
    assert [c.tag for c in fci.children] == [0x84, 0xA5]
    a5 = fci.children[1]
    assert a5.constructed
    assert a5.children == (Tlv(0x5F2D, b"en"),)
    assert fci.to_bytes() == H("6F108407A0000000048002A5055F2D02656E")


def test_primitive_value_is_not_parsed() -> None:
    (obj,) = decode(H("8003A5FFFF"))  # 80 is primitive: content kept raw, FF is data here
    assert obj.value == H("A5FFFF")
    assert obj.children == ()


def test_child_overrunning_parent_is_rejected() -> None:
    with pytest.raises(ApduFormatError, match="needs 4 bytes") as info:
        decode(H("7003 5A04 AABB CCDD"))
    assert info.value.offset == 5  # the end of the parent's value


def test_depth_bound() -> None:
    inner = b""
    for _ in range(MAX_DEPTH):
        inner = encode(0xE1, inner)
    assert len(list(walk(decode(inner)))) == MAX_DEPTH
    too_deep = encode(0xE1, inner)
    with pytest.raises(ApduFormatError, match="nested deeper"):
        decode(too_deep)


def test_deep_nesting_in_few_bytes_is_an_error_not_a_crash() -> None:
    raw = b""
    for _ in range(100):  # 100 well-formed levels in under 300 bytes
        raw = encode(0x61, raw)
    assert len(raw) < 300
    with pytest.raises(ApduFormatError, match="nested deeper") as info:
        decode(raw)
    assert 0 < info.value.offset < len(raw)


# ---------------------------------------------------------------- the Tlv type


def test_tlv_from_children_and_from_value_agree() -> None:
    child = Tlv(0x9F27, b"\x80")
    a = Tlv(0x77, children=(child,))
    b = Tlv(0x77, H("9F270180"))
    c = Tlv(0x77, H("00 9F270180 FF"))
    assert a == b == c
    assert a.value == H("9F270180")
    assert Tlv(0x77, children=[child]).children == (child,)  # type: ignore[arg-type]


def test_tlv_validation() -> None:
    with pytest.raises(ValidationError, match="primitive"):
        Tlv(0x5A, b"", (Tlv(0x5A),))
    with pytest.raises(ValidationError, match="does not match"):
        Tlv(0x70, H("5A00"), (Tlv(0x5F34, b"\x01"),))
    with pytest.raises(ValidationError, match="must be BER-TLV"):
        Tlv(0x70, H("5A05"))
    with pytest.raises(ValidationError, match="value must be bytes"):
        Tlv(0x5A, "00")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="children must be"):
        Tlv(0x70, children=(b"\x01",))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="tag must be"):
        Tlv(0x1F)


def test_tlv_frozen_and_repr() -> None:
    obj = Tlv(0x9F36, H("007C"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.value = b""  # type: ignore[misc]
    assert repr(obj) == "Tlv(0x9F36, 007C)"
    assert repr(Tlv(0x57, H("1234"))) == "Tlv(0x57, <redacted 2 bytes>)"
    assert repr(Tlv(0x70, children=(Tlv(0x88, b"\x01"),))) == "Tlv(0x70, children=(Tlv(0x88, 01),))"
    assert obj.name == "Application Transaction Counter (ATC)"
    assert bytes(obj) == H("9F3602007C")


def test_encode_and_encode_constructed() -> None:
    assert encode(0x83, b"") == H("8300")
    assert encode(0x9F02, H("000000001234")) == H("9F0206000000001234")
    parts = [encode(0x5F34, b"\x01"), Tlv(0x88, b"\x02")]
    assert encode_constructed(0x70, parts) == H("70075F3401018801" "02")
    assert encode_constructed(0xBF0C, []) == H("BF0C00")
    with pytest.raises(ValidationError, match="constructed"):
        encode_constructed(0x5A, [])
    with pytest.raises(ValidationError, match=r"parts\[0\]"):
        encode_constructed(0x70, ["5A00"])  # type: ignore[list-item]


# ---------------------------------------------------------------- find / walk


def test_find_walk() -> None:
    objs = decode(H("6F198407A0000000048002A50B500341424387010188010BBF0C00"))
    assert [(d, o.tag) for d, o in walk(objs)] == [
        (0, 0x6F), (1, 0x84), (1, 0xA5), (2, 0x50), (2, 0x87), (2, 0x88), (1, 0xBF0C),
    ]
    label = find(objs, 0x50)
    assert label is not None
    assert label.value == b"ABC"
    assert find(objs, 0x9F38) is None
    assert find(objs[0], 0x6F) is objs[0]
    assert objs[0].find(0x88) == Tlv(0x88, b"\x0b")
    assert objs[0].find_all(0x6F) == []


def test_find_all_in_document_order() -> None:
    objs = decode(H("70 0C 61 04 4F02AABB 61 04 4F02CCDD"))
    assert [o.value for o in find_all(objs, 0x4F)] == [H("AABB"), H("CCDD")]
    assert len(find_all(objs, 0x61)) == 2


# ---------------------------------------------------------------- recorded responses


def _payload(response: bytes) -> bytes:
    assert response[-2:] == H("9000")
    return response[:-2]


def test_natwest_responses() -> None:
    ex = load_transcript("transcripts/natwest-fc09.txt").exchanges
    fci = decode(_payload(ex[0][1]))
    df = find(fci, 0x84)
    assert df is not None
    assert df.value == H("A0000000048002")
    lang = find(fci, 0x5F2D)
    assert lang is not None
    assert lang.value == b"en"
    (gpo,) = decode(_payload(ex[1][1]))
    assert gpo.tag == 0x80
    assert gpo.value == H("100008010100")  # AIP 1000, AFL 08010100
    record = decode(_payload(ex[2][1]))
    assert [o.tag for _, o in walk(record)] == [0x70, 0x8E, 0x9F55, 0x9F56, 0x8C, 0x8D]
    ipb = find(record, 0x9F56)
    assert ipb is not None
    assert ipb.value == H("00001F00000000000FFFFF00000000008000")
    (gac,) = decode(_payload(ex[3][1]))
    assert gac.tag == 0x80
    assert gac.value[:3] == H("800042")  # CID 80, ATC 0042
    for _, response in ex:
        payload = _payload(response)
        assert b"".join(o.to_bytes() for o in decode(payload)) == payload


def test_rabobank_responses() -> None:
    ex = load_transcript("transcripts/rabobank-tds.txt").exchanges
    fci = decode(_payload(ex[0][1]))
    label = find(fci, 0x50)
    assert label is not None
    assert label.value == b"SecureCode Aut"
    gpo = decode(_payload(ex[1][1]))
    assert gpo[0].tag == 0x77
    aip, afl = find(gpo, 0x82), find(gpo, 0x94)
    assert aip is not None
    assert afl is not None
    assert (aip.value, afl.value) == (H("1000"), H("08010100"))
    record = decode(_payload(ex[2][1]))
    psn, iaf = find(record, 0x5F34), find(record, 0x9F55)
    assert psn is not None
    assert iaf is not None
    assert (psn.value, iaf.value) == (H("08"), H("C0"))
    gac = decode(_payload(ex[3][1]))
    values = {o.tag: o.value for _, o in walk(gac) if not o.constructed}
    assert values[0x9F27] == H("80")
    assert values[0x9F36] == H("007C")
    assert values[0x9F26] == H("9CA5A4CA1651CE31")
    assert values[0x9F10] == H("0C10A50003040000000000000000000000FF")


def test_barclays_record_and_format_2() -> None:
    blocks = {b["ID"]: b for b in load_kv_blocks(VECTORS / "cap" / "barclays.txt")}
    record = decode(unhex(blocks["CAP-BARCLAYS-RECORD"]["RECORD"]))
    tags = [o.tag for _, o in walk(record)]
    assert tags == [0x70, 0x8C, 0x8D, 0x8E, 0x9F56, 0x9F55, 0x5A, 0x5F34, 0x9F08]
    pan = find(record, 0x5A)
    assert pan is not None
    assert pan.value.hex() == blocks["CAP-BARCLAYS-RECORD"]["PAN"]
    ipb = find(record, 0x9F56)
    assert ipb is not None
    assert ipb.value.hex().upper() == blocks["CAP-BARCLAYS-RECORD"]["IPB"]
    resp = unhex(blocks["CAP-BARCLAYS-2"]["RESPONSE"])
    gac = decode(resp[:-2])
    atc = find(gac, 0x9F36)
    assert atc is not None
    assert atc.value == H("0016")


# ---------------------------------------------------------------- properties


def _tag_bytes(constructed: bool) -> st.SearchStrategy[int]:
    flag = 0x20 if constructed else 0x00
    single = st.integers(0, 0xFF).filter(
        lambda b: b & 0x1F != 0x1F and b & 0x20 == flag and b not in (0x00, 0xFF)
    )
    first_multi = st.sampled_from([c | 0x1F | flag for c in (0x00, 0x40, 0x80, 0xC0)]).filter(
        lambda b: b != 0xFF
    )

    @st.composite
    def multi(draw: st.DrawFn) -> int:
        raw = [draw(first_multi)]
        raw += [draw(st.integers(0x80, 0xFF)) for _ in range(draw(st.integers(0, 2)))]
        raw.append(draw(st.integers(0, 0x7F)))
        return int.from_bytes(bytes(raw), "big")

    return st.one_of(single, multi())


primitive_tags = _tag_bytes(False)
constructed_tags = _tag_bytes(True)
leaves = st.builds(Tlv, primitive_tags, st.binary(max_size=140))
trees = st.recursive(
    leaves,
    lambda kids: st.builds(
        lambda tag, children: Tlv(tag, children=tuple(children)),
        constructed_tags,
        st.lists(kids, max_size=4),
    ),
    max_leaves=12,
)


@given(st.lists(trees, max_size=4))
def test_round_trip_trees(objs: list[Tlv]) -> None:
    raw = b"".join(o.to_bytes() for o in objs)
    assert decode(raw) == tuple(objs)


@given(st.lists(trees, min_size=1, max_size=3), st.data())
def test_padding_between_objects_is_ignored(objs: list[Tlv], data: st.DataObject) -> None:
    padding = st.binary(max_size=3).map(lambda b: bytes(0xFF if x & 1 else 0x00 for x in b))
    pads = data.draw(st.lists(padding, min_size=len(objs) + 1, max_size=len(objs) + 1))
    raw = pads[0] + b"".join(o.to_bytes() + p for o, p in zip(objs, pads[1:], strict=True))
    assert decode(raw) == tuple(objs)


@given(st.binary(max_size=300))
def test_fuzz_decode(raw: bytes) -> None:
    # Either ApduFormatError, or success whose canonical re-encoding decodes to the same tree.
    try:
        objs = decode(raw)
    except ApduFormatError as exc:
        offset = exc.offset
        assert 0 <= offset <= len(raw)
        return
    again = b"".join(o.to_bytes() for o in objs)
    assert decode(again) == objs
    assert len(again) <= len(raw)  # canonical form never grows


@given(st.binary(max_size=300))
def test_fuzz_tlv_constructor(raw: bytes) -> None:
    # Building a template from arbitrary bytes raises ValidationError or yields a consistent object.
    try:
        obj = Tlv(0x70, raw)
    except ValidationError:
        return
    assert decode(obj.to_bytes()) == (obj,)


def _as_pyemv(objs: tuple[Tlv, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in objs:
        key = o.tag_bytes.hex().upper()
        out[key] = _as_pyemv(o.children) if o.constructed else o.value
    return out


def _unique_tags(objs: tuple[Tlv, ...]) -> bool:
    tags = [o.tag for o in objs]
    return len(set(tags)) == len(tags) and all(_unique_tags(o.children) for o in objs)


@given(st.lists(trees, max_size=4).map(tuple).filter(_unique_tags))
def test_cross_check_against_pyemv(objs: tuple[Tlv, ...]) -> None:
    raw = b"".join(o.to_bytes() for o in objs)
    assert pyemv_tlv.decode(raw) == _as_pyemv(decode(raw))
    assert pyemv_tlv.encode(_as_pyemv(objs)) == raw


@pytest.mark.parametrize("bad", [b"\x5a\x00", "5A00", 5, [b"\x5a\x00"]])
def test_search_functions_reject_non_tlv(bad: Any) -> None:
    with pytest.raises(ValidationError, match="objs must be"):
        find(bad, 0x5A)
    with pytest.raises(ValidationError, match="objs must be"):
        list(walk(bad))
    with pytest.raises(ValidationError, match="objs must be"):
        tlv.format_tree(bad)


def test_three_byte_tag_needs_the_more_bit_in_its_middle_byte() -> None:
    """``5F 01 01`` is no 3-byte tag (``01`` ends the tag after two bytes): refused."""
    from capsim.tlv import encode_tag

    assert encode_tag(0x5F8101) == bytes.fromhex("5F8101")
    with pytest.raises(ValidationError):
        encode_tag(0x5F0101)


def test_tlv_children_that_are_not_tlv_objects_are_refused_with_the_full_message() -> None:
    for children in ((b"\x5a\x01\x01",), [Tlv(0x5A, b"\x01"), 3]):
        with pytest.raises(ValidationError) as info:
            Tlv(0x70, b"", children=children)  # type: ignore[arg-type]
        assert str(info.value) == "children must be a tuple of Tlv"


@pytest.mark.parametrize(("value", "kind"), [("8300", "str"), (None, "NoneType"), (0x83, "int")])
def test_encode_names_a_value_that_is_not_bytes(value: object, kind: str) -> None:
    with pytest.raises(ValidationError) as info:
        encode(0x83, value)  # type: ignore[arg-type]
    assert str(info.value) == f"value must be bytes, got {kind}"


def test_padding_inside_a_template_is_dropped_from_its_value() -> None:
    """``00``/``FF`` padding between the objects of a template is no part of the template: its
    value and its encoding are those of the objects alone."""
    for raw in ("7004005A0101", "7005FF5A010100", "70045A010100"):
        (obj,) = decode(H(raw))
        assert obj.value == H("5A0101")
        assert obj.to_bytes() == H("70035A0101")
        assert obj.children == (Tlv(0x5A, b"\x01"),)


_MAX = 0xFFFFFF  # the longest value BER-TLV lengths of this project encode (3 length bytes)


def test_a_value_over_the_longest_length_is_refused_in_full() -> None:
    with pytest.raises(ValidationError) as info:
        Tlv(0x5A, bytes(_MAX + 1))
    assert str(info.value) == f"value must be at most {_MAX} bytes, got {_MAX + 1}"


def test_children_of_exactly_the_longest_length_are_taken_and_one_byte_more_refused() -> None:
    inner = _MAX - 5  # tag 5A, then 83 + 3 length bytes
    t = Tlv(0x70, children=(Tlv(0x5A, bytes(inner)),))
    assert len(t.value) == _MAX
    with pytest.raises(ValidationError) as info:
        Tlv(0x70, children=(Tlv(0x5A, bytes(inner + 1)),))
    assert str(info.value) == f"value must be at most {_MAX} bytes, got {_MAX + 1}"


def test_a_constructed_value_that_disagrees_with_its_children_is_refused_in_full() -> None:
    with pytest.raises(ValidationError) as info:
        Tlv(0x70, b"\x5a\x01\x02", children=(Tlv(0x5A, b"\x01"),))
    assert str(info.value) == "value of constructed tag 70 does not match its children"
    assert Tlv(0x70, b"\x5a\x01\x01", children=(Tlv(0x5A, b"\x01"),)).value == b"\x5a\x01\x01"


def test_a_dump_shows_printable_ascii_and_dots_for_the_rest() -> None:
    """Text tags are shown as ASCII from 20 (space) to 7E (~); 7F (DEL) and control bytes are dots."""
    dump = format_tree(Tlv(0x50, b" ~\x7f\x1f\x80A"))
    assert dump == '50 Application Label (6 bytes) 207E7F1F8041 " ~...A"'
