"""The IPB code function is defined once (capsim.codelayout): its fast path against the plain
bit-by-bit definition, its field runs, the disclosed ATC bits, and who uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import capsim
from capsim import cap, codelayout
from capsim.codelayout import (
    Field,
    candidate_atcs,
    code_layout,
    data_string,
    disclosed_atc_bits,
    ipb_bit_count,
    reference_value,
)
from capsim.errors import ValidationError
from capsim.verifier import engine

CAPSIM = Path(capsim.__file__).parent


def bit_string_value(ipb: bytes, data: bytes) -> int:
    """An independent statement of cap-protocol.md §6 step 2, through bit strings."""
    ipb_bits = "".join(f"{b:08b}" for b in ipb)
    data_bits = "".join(f"{b:08b}" for b in data).ljust(len(ipb_bits), "0")
    picked = "".join(d for m, d in zip(ipb_bits, data_bits, strict=False) if m == "1")
    return int(picked, 2) if picked else 0


ipbs = st.binary(min_size=1, max_size=64)
fields = st.tuples(
    st.binary(min_size=1, max_size=1),  # CID
    st.integers(0, 0xFFFF),  # ATC
    st.binary(min_size=8, max_size=8),  # AC
    st.binary(min_size=0, max_size=32),  # IAD
    st.one_of(st.none(), st.binary(min_size=1, max_size=1)),  # PSN, when in D
)


@given(ipbs, st.binary(min_size=0, max_size=70), st.booleans())
def test_fast_path_is_the_bit_by_bit_definition(ipb: bytes, data: bytes, psn_in_data: bool) -> None:
    want = bit_string_value(ipb, data)
    assert reference_value(ipb, data) == want
    assert code_layout(ipb, psn_in_data).value(data) == want
    explained = codelayout.explain_ipb(ipb, data, psn_in_data=psn_in_data)
    assert sum(b.value << b.position for b in explained) == want


@given(ipbs, fields)
def test_fields_own_contiguous_runs_of_the_code(
    ipb: bytes, parts: tuple[bytes, int, bytes, bytes, bytes | None]
) -> None:
    cid, atc, ac, iad, psn = parts
    atc_b = atc.to_bytes(2, "big")
    d = data_string(cid, atc_b, ac, iad, psn=psn)
    lay = code_layout(ipb, psn is not None)
    value = lay.value(d)
    own = {Field.PSN: psn or b"", Field.CID: cid, Field.ATC: atc_b, Field.AC: ac, Field.IAD: iad}
    rebuilt = 0
    for f in Field:
        width = lay.fields[f][1]
        rebuilt = rebuilt << width | lay.select(f, own[f])
        assert lay.bits_of(value, f) == lay.select(f, own[f])
    assert rebuilt == value
    assert lay.total_bits == ipb_bit_count(ipb)
    assert (lay.psn_bits, lay.cid_bits, lay.atc_bits, lay.ac_bits, lay.iad_bits) == tuple(
        lay.fields[f][1] for f in Field
    )
    assert (lay.psn_shift, lay.cid_shift, lay.atc_shift, lay.ac_shift, 0) == tuple(
        lay.fields[f][2] for f in Field
    )


@given(ipbs, fields)
def test_disclosed_atc_bits_read_back(
    ipb: bytes, parts: tuple[bytes, int, bytes, bytes, bytes | None]
) -> None:
    cid, atc, ac, iad, psn = parts
    d = data_string(cid, atc.to_bytes(2, "big"), ac, iad, psn=psn)
    lay = code_layout(ipb, psn is not None)
    value = lay.value(d)
    mask, position = disclosed_atc_bits(ipb, psn_in_data=psn is not None)
    assert (mask, position) == (lay.atc_mask, lay.atc_shift)
    assert lay.scatter_atc(lay.bits_of(value, Field.ATC)) == atc & mask
    assert cap.atc_bits_from_code(value, ipb, psn_in_data=psn is not None) == atc & mask


@given(ipbs, st.booleans(), st.integers(0, 2**40), st.integers(-1, 0xFFFF), st.integers(1, 300))
def test_candidate_atcs_are_the_window_atcs_with_the_disclosed_bits(
    ipb: bytes, psn_in_data: bool, value: int, last: int, window: int
) -> None:
    lay = code_layout(ipb, psn_in_data)
    want = lay.scatter_atc(lay.bits_of(value, Field.ATC))
    top = min(last + window, 0xFFFF)
    brute = [a for a in range(max(last + 1, 0), top + 1) if a & lay.atc_mask == want]
    assert candidate_atcs(last, window, lay, value) == brute


def test_layout_refuses_what_is_no_ipb() -> None:
    for bad in (b"", bytes(65), bytearray(b"\x01"), "00FF"):
        with pytest.raises(ValidationError, match="ipb"):
            code_layout(bad)  # type: ignore[arg-type]
    assert code_layout(b"\x01") is code_layout(b"\x01")  # cached, one object per IPB


def test_reader_verifier_and_fuzzers_use_the_one_definition() -> None:
    # the reader's public functions are the layout module's own
    for name in (
        "compute_code",
        "data_string",
        "decimal_code",
        "ipb_extract",
        "ipb_bit_count",
        "explain_ipb",
        "disclosed_atc_bits",
        "atc_bits_from_code",
        "CodeBit",
    ):
        assert getattr(cap, name) is getattr(codelayout, name), name
    # the verifier's matcher uses the same layout objects
    assert engine.code_layout is codelayout.code_layout
    assert engine.candidate_atcs is codelayout.candidate_atcs
    assert engine.CodeLayout is codelayout.CodeLayout
    # and no other module of capsim builds IPB gather tables or walks IPB bits itself
    offenders = []
    for path in sorted(CAPSIM.rglob("*.py")):
        if path.name == "codelayout.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in {
                "_gather_table",
                "_compress_table",
                "CodeLayout",
                "code_layout",
                "ipb_extract",
                "scatter_atc",
                "candidate_atcs",
                "atc_bits_from_code",
            }:
                offenders.append(f"{path.relative_to(CAPSIM)}:{node.name}")
    assert offenders == []


# -- boundaries the mutation run found untested ----------------------------------------------------


def test_decimal_code_bounds_of_digits() -> None:
    assert codelayout.decimal_code(7, 1) == "7"
    assert codelayout.decimal_code(7, 20) == "0" * 19 + "7"
    for bad in (0, 21):
        with pytest.raises(ValidationError):
            codelayout.decimal_code(7, bad)


def test_atc_bits_from_a_40_digit_code() -> None:
    ipb = bytes.fromhex("00001F00000000000FFFFF00000000008000")
    assert codelayout.atc_bits_from_code("0" * 32 + "04822527", ipb, psn_in_data=False) == 2
    with pytest.raises(ValidationError):
        codelayout.atc_bits_from_code("0" * 41, ipb, psn_in_data=False)


@pytest.mark.timeout(20)
def test_candidate_atcs_when_one_low_atc_bit_is_disclosed() -> None:
    """Only ATC bit 0 in the code: every other ATC in the window is a candidate, each once."""
    lay = codelayout.code_layout(bytes.fromhex("000001" + "FF" * 8 + "00" * 7), False)
    assert lay.atc_mask == 1
    odd = next(1 << k for k in range(80) if codelayout.candidate_atcs(0, 1, lay, 1 << k) == [1])
    assert codelayout.candidate_atcs(0, 10, lay, odd) == [1, 3, 5, 7, 9]
    assert codelayout.candidate_atcs(1, 10, lay, odd) == [3, 5, 7, 9, 11]


def test_a_layout_reads_as_its_fields_without_its_lookup_tables() -> None:
    """A layout's repr (what a log line or a debugger shows) is its widths and shifts, not the
    256-entry gather tables behind :meth:`CodeLayout.value`."""
    lay = codelayout.code_layout(b"\xf0\x01", False)
    assert repr(lay) == (
        "CodeLayout(ipb=b'\\xf0\\x01', psn_in_data=False, offset=0, psn_bits=0, cid_bits=4, atc_bits=1,"
        " ac_bits=0, iad_bits=0, total_bits=5, psn_shift=5, cid_shift=1, atc_shift=0, ac_shift=0,"
        " atc_mask=256)"
    )


def test_explain_names_the_field_of_every_data_byte_at_the_field_boundaries() -> None:
    """D = [PSN] ‖ CID ‖ ATC(2) ‖ AC(8) ‖ IAD(32): the last AC byte, the first IAD byte and the
    first byte beyond the IAD are named as such, with and without the PSN in front."""
    data = bytes(range(1, 46))
    ipb = bytes(10) + b"\x01\x80" + bytes(31) + b"\x01"
    assert [str(b) for b in codelayout.explain_ipb(ipb, data, psn_in_data=False)] == [
        "code bit  2 = 1 <- D[10] b1 (AC byte 8)",
        "code bit  1 = 0 <- D[11] b8 (IAD byte 1)",
        "code bit  0 = 0 <- D[43] b1 (beyond IAD byte 1)",
    ]
    ipb = b"\x80\x80" + bytes(9) + b"\x01\x80"
    assert [str(b) for b in codelayout.explain_ipb(ipb, data, psn_in_data=True, ac_name="ARQC")] == [
        "code bit  3 = 0 <- D[0] b8 (PSN byte 1)",
        "code bit  2 = 0 <- D[1] b8 (CID byte 1)",
        "code bit  1 = 0 <- D[11] b1 (ARQC byte 8)",
        "code bit  0 = 0 <- D[12] b8 (IAD byte 1)",
    ]
