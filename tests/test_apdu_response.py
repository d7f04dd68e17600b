"""ResponseApdu, status words and their typed errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.apdu import (
    INS,
    SW,
    ResponseApdu,
    bytes_available,
    correct_le,
    describe_sw,
    is_more_data,
    is_pin_retry,
    is_wrong_le,
    pin_tries_left,
    status_error,
)
from capsim.errors import (
    ApduFormatError,
    ConditionsNotSatisfiedError,
    PinBlockedError,
    PinError,
    StatusWordError,
    ValidationError,
)
from tests.utils import load_transcript

H = bytes.fromhex


def test_from_bytes_splits_sw() -> None:
    r = ResponseApdu.from_bytes(H("9F1701039000"))
    assert r.data == H("9F170103")
    assert r.sw == 0x9000
    assert (r.sw1, r.sw2) == (0x90, 0x00)
    assert r.ok
    assert r.to_bytes() == H("9F1701039000")
    assert bytes(r) == H("9F1701039000")


def test_only_9000_is_ok() -> None:
    assert not ResponseApdu(b"", 0x6100).ok
    assert not ResponseApdu(b"", 0x9001).ok
    assert ResponseApdu(b"", SW.OK).ok


@pytest.mark.parametrize("raw", ["", "90"])
def test_too_short(raw: str) -> None:
    with pytest.raises(ApduFormatError) as info:
        ResponseApdu.from_bytes(H(raw))
    assert info.value.offset == len(raw) // 2


@pytest.mark.parametrize("sw", [-1, 0x10000, True, "9000"])
def test_sw_validated(sw: object) -> None:
    with pytest.raises(ValidationError, match="sw must be"):
        ResponseApdu(b"", sw)  # type: ignore[arg-type]


def test_data_validated_and_frozen() -> None:
    with pytest.raises(ValidationError, match="data must be bytes"):
        ResponseApdu("", 0x9000)  # type: ignore[arg-type]
    r = ResponseApdu(bytearray(b"\x01"), 0x9000)
    assert r.data == b"\x01"
    assert isinstance(r.data, bytes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.sw = 0x6A82  # type: ignore[misc]


def test_repr() -> None:
    assert repr(ResponseApdu(H("0102"), 0x9000)) == (
        "ResponseApdu(data=0102, sw=9000 normal processing: command completed)"
    )


# ---------------------------------------------------------------- raise_for_status


def test_raise_for_status_ok_returns_none() -> None:
    assert ResponseApdu(b"", 0x9000).raise_for_status(INS.VERIFY) is None


@pytest.mark.parametrize("x", range(16))
def test_63cx_is_pin_error(x: int) -> None:
    with pytest.raises(PinError) as info:
        ResponseApdu(b"", 0x63C0 | x).raise_for_status(INS.VERIFY)
    assert info.value.tries_left == x
    assert info.value.sw == 0x63C0 | x
    assert info.value.ins == 0x20


@pytest.mark.parametrize("sw", [0x6983, 0x6984])
def test_blocked(sw: int) -> None:
    with pytest.raises(PinBlockedError) as info:
        ResponseApdu(b"", sw).raise_for_status(0x20)
    assert info.value.sw == sw
    assert info.value.ins == 0x20


def test_conditions_not_satisfied() -> None:
    with pytest.raises(ConditionsNotSatisfiedError) as info:
        ResponseApdu(b"", 0x6985).raise_for_status(0xAE)
    assert (info.value.sw, info.value.ins) == (0x6985, 0xAE)
    assert "6985" in str(info.value)


@pytest.mark.parametrize("sw", [0x6A82, 0x6D00, 0x6300, 0x6283, 0x6100, 0x6C04, 0x9001, 0x0000])
def test_other_status_words(sw: int) -> None:
    with pytest.raises(StatusWordError) as info:
        ResponseApdu(b"", sw).raise_for_status()
    assert type(info.value) is StatusWordError
    assert info.value.sw == sw
    assert info.value.ins is None


def test_status_error_message_names_sw_and_ins() -> None:
    err = status_error(0x6A82, INS.SELECT)
    assert str(err) == "card answered 6A82 (file or application not found) to INS A4"


# ---------------------------------------------------------------- SW table and families

REQUIRED = [
    0x9000, 0x6283, 0x6581, 0x6700, 0x6982, 0x6983, 0x6984, 0x6985, 0x6986, 0x6988,
    0x6A80, 0x6A81, 0x6A82, 0x6A83, 0x6A86, 0x6A88, 0x6B00, 0x6D00, 0x6E00, 0x6F00,
]


@pytest.mark.parametrize("sw", REQUIRED)
def test_required_members_described(sw: int) -> None:
    member = SW(sw)
    assert member.describe() == describe_sw(sw)
    assert describe_sw(sw) not in ("unknown status word",)


def test_every_member_has_its_own_description() -> None:
    descriptions = [m.describe() for m in SW]
    assert len(set(descriptions)) == len(descriptions)


def test_named_members() -> None:
    assert SW.OK == 0x9000
    assert SW.WRONG_LENGTH == 0x6700
    assert SW.PIN_BLOCKED == 0x6983
    assert SW.CONDITIONS_NOT_SATISFIED == 0x6985
    assert SW.FILE_NOT_FOUND == 0x6A82
    assert SW.INS_NOT_SUPPORTED == 0x6D00
    assert SW.CLA_NOT_SUPPORTED == 0x6E00


def test_families() -> None:
    assert is_more_data(0x6100)
    assert is_more_data(0x61FF)
    assert not is_more_data(0x6200)
    assert bytes_available(0x6100) == 256
    assert bytes_available(0x6120) == 0x20
    assert is_wrong_le(0x6C00)
    assert not is_wrong_le(0x6D00)
    assert correct_le(0x6C00) == 256
    assert correct_le(0x6C04) == 4
    assert is_pin_retry(0x63CF)
    assert not is_pin_retry(0x63D0)
    assert not is_pin_retry(0x6300)
    assert pin_tries_left(0x63C3) == 3
    assert describe_sw(0x6110) == "normal processing: 16 response bytes available (GET RESPONSE)"
    assert describe_sw(0x63C1) == "verification failed: 1 try left"
    assert describe_sw(0x63C0) == "verification failed: 0 tries left"
    assert describe_sw(0x6C00) == "wrong Le: the card expects Le = 256"


@pytest.mark.parametrize(
    ("func", "sw"),
    [(pin_tries_left, 0x9000), (bytes_available, 0x6C04), (correct_le, 0x6104)],
)
def test_family_helpers_reject_other_families(func: object, sw: int) -> None:
    with pytest.raises(ValidationError, match="family"):
        func(sw)  # type: ignore[operator]


@pytest.mark.parametrize("sw", [-1, 0x10000])
def test_describe_rejects_out_of_range(sw: int) -> None:
    with pytest.raises(ValidationError):
        describe_sw(sw)


@given(st.integers(0, 0xFFFF))
def test_describe_any_sw(sw: int) -> None:
    text = describe_sw(sw)
    assert text
    if sw in {int(m) for m in SW}:
        assert text == SW(sw).describe()


@given(st.integers(0, 0xFFFF))
def test_status_error_types(sw: int) -> None:
    err = status_error(sw, 0x20)
    assert err.sw == sw
    assert err.ins == 0x20
    if sw & 0xFFF0 == 0x63C0:
        assert isinstance(err, PinError)
    elif sw in (0x6983, 0x6984):
        assert isinstance(err, PinBlockedError)
    elif sw == 0x6985:
        assert isinstance(err, ConditionsNotSatisfiedError)
    else:
        assert type(err) is StatusWordError


# ---------------------------------------------------------------- fuzz and vectors


@given(st.binary(max_size=300))
def test_fuzz_from_bytes(raw: bytes) -> None:
    try:
        r = ResponseApdu.from_bytes(raw)
    except ApduFormatError:
        assert len(raw) < 2
        return
    assert r.to_bytes() == raw
    assert ResponseApdu.from_bytes(r.to_bytes()) == r


@pytest.mark.parametrize("name", ["natwest-fc09", "rabobank-tds"])
def test_transcript_responses_are_9000(name: str) -> None:
    for _, response in load_transcript(f"transcripts/{name}.txt").exchanges:
        r = ResponseApdu.from_bytes(response)
        assert r.ok
        r.raise_for_status()
        assert r.to_bytes() == response
