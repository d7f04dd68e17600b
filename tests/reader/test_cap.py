"""capsim.cap: codes from published vectors, strict inputs, TDS, IPB properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.cap import (
    CURRENCIES,
    CapMode,
    atc_bits_from_code,
    belgian_code,
    build_cdol2_data,
    build_cdol_data,
    canonical_challenge,
    cdol_values,
    challenge_to_un,
    compute_code,
    currency_exponent,
    currency_numeric,
    data_string,
    decimal_code,
    disclosed_atc_bits,
    explain_ipb,
    ipb_bit_count,
    ipb_extract,
    parse_amount,
    tds_mac,
    tds_message,
    validate_tds_fields,
)
from capsim.errors import CodeOverflowError, RemoteProtocolError, ValidationError
from capsim.profiles import get_reader_profile
from tests.reader.helpers import naive_extract
from tests.utils import VECTORS, load_kv_blocks, load_transcript, load_vectors, unhex

BARCLAYS = {b["ID"]: b for b in load_kv_blocks(VECTORS / "cap/barclays.txt")}
BARCLAYS_IPB = unhex(BARCLAYS["CAP-BARCLAYS-RECORD"]["IPB"])


def _split_d(d: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    return d[:1], d[1:3], d[3:11], d[11:]


# ------------------------------------------------------------------ published codes


@pytest.mark.parametrize("block", ["CAP-BARCLAYS-1", "CAP-BARCLAYS-2"])
def test_barclays_codes_from_d(block: str) -> None:
    v = BARCLAYS[block]
    cid, atc, ac, iad = _split_d(unhex(v["D"]))
    assert compute_code(BARCLAYS_IPB, cid, atc, ac, iad) == v["CODE"]
    # (code >> 17) & 0xFF is the ATC low byte (vectors.md check)
    assert (int(v["CODE"]) >> 17) & 0xFF == atc[1]
    assert atc_bits_from_code(v["CODE"], BARCLAYS_IPB, psn_in_data=False) == atc[1]


def test_natwest_worked_example() -> None:
    t = load_transcript("transcripts/natwest-fc09.txt")
    ipb = unhex(t.meta["IPB"])
    d = unhex("80 0042 B7F9A572DA74CAFF 06770A03A48000")
    assert compute_code(ipb, *_split_d(d)) == "04822527" == t.meta["CODE"]
    bits = explain_ipb(ipb, d, psn_in_data=False)
    assert len(bits) == 26
    assert [b.field for b in bits[:5]] == ["ATC"] * 5
    assert "".join(str(b.value) for b in bits[:5]) == "00010"
    assert (bits[-1].field, bits[-1].field_byte, bits[-1].bit) == ("IAD", 6, 8)


def test_rabobank_tds_vector() -> None:
    t = load_transcript("transcripts/rabobank-tds.txt")
    fields = t.meta["FIELDS"].split(",")
    assert tds_message(fields) + bytes.fromhex("800000") == unhex("0530026806800000")
    mac = tds_mac(fields, unhex("9CA5A4CA1651CE31"))
    assert mac == unhex(t.meta["TDS_MAC"])
    iad = unhex("0C10A50003040000000000000000000000FF")
    code = compute_code(unhex(t.meta["IPB"]), b"\x80", unhex("007C"), mac, iad, psn=unhex(t.meta["PSN"]))
    assert code == t.meta["CODE"] == "08180460"


@pytest.mark.parametrize("v", load_vectors("cap/synthetic-dpa.txt"))
def test_synthetic_codes_and_cdol(v: dict[str, str]) -> None:
    d = data_string(b"\x80", unhex(v["ATC"]), unhex(v["AC"]), unhex(v["IAD"]))
    assert compute_code(unhex(v["IPB"]), *_split_d(d)) == v["CODE"]
    mode = CapMode(v["ID"].rsplit("-", 1)[1].lower())
    cdol = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
    data = build_cdol_data(
        cdol,
        get_reader_profile("visa-dpa"),
        mode,
        challenge=v.get("CHALLENGE"),
        amount=int(v["AMOUNT"]) if "AMOUNT" in v else None,
        iaf=b"\xa0",
    )
    assert data == unhex(v["CDOL1_DATA"])


@pytest.mark.parametrize(
    ("block", "mode", "kwargs"),
    [
        ("CAP-BARCLAYS-GAC-IDENTIFY", CapMode.IDENTIFY, {}),
        ("CAP-BARCLAYS-GAC-SIGN", CapMode.SIGN, {"challenge": "78901234", "amount": 123456}),
        ("CAP-BARCLAYS-GAC-SIGN15", CapMode.SIGN, {"challenge": "78901234", "amount": "15.00"}),
    ],
)
def test_barclays_gac_commands(block: str, mode: CapMode, kwargs: dict[str, object]) -> None:
    record = unhex(BARCLAYS["CAP-BARCLAYS-RECORD"]["RECORD"])
    cdol1 = record[4 : 4 + 0x15]
    assert record[2:4] == b"\x8c\x15"
    expected = unhex(BARCLAYS[block]["COMMAND"])
    data = build_cdol_data(cdol1, get_reader_profile("visa-dpa"), mode, iaf=b"\xa0", **kwargs)  # type: ignore[arg-type]
    assert expected[5:-1] == data
    assert expected[4] == len(data)


def test_cdol2_natwest() -> None:
    t = load_transcript("transcripts/natwest-fc09.txt")
    profile = get_reader_profile("mc-cap")
    values = cdol_values(profile, CapMode.RESPOND, challenge="12345678")
    cdol2 = bytes.fromhex("8A029F02069F03069F1A0295055F2A029A039C019F3704")
    assert build_cdol2_data(cdol2, values, profile) == t.exchanges[4][0][5:]


def test_cdol_unknown_tag_zero_and_reported() -> None:
    seen: list[int] = []
    data = build_cdol_data(
        bytes.fromhex("9F3704DF0102"),
        get_reader_profile("mc-cap"),
        CapMode.RESPOND,
        challenge="1",
        on_unknown=seen.append,
    )
    assert data == bytes.fromhex("00000001") + bytes(2)
    assert seen == [0xDF01]


# ------------------------------------------------------------------ IAF logic in Sign


@pytest.mark.parametrize(
    ("iaf", "amount_field", "currency_field"),
    [
        (b"\x00", "000000000000", "0000"),  # b8 clear: Sign == Respond
        (b"\x80", "000000001500", "0978"),  # amount and currency
        (b"\xa0", "000000001500", "0000"),  # amount only (b6)
        (b"\xc0\x12\x34", "000000001500", "0978"),  # longer IAF: first byte counts
    ],
)
def test_sign_iaf_bits(iaf: bytes, amount_field: str, currency_field: str) -> None:
    v = cdol_values(
        get_reader_profile("mc-cap"), CapMode.SIGN, challenge="42", amount=1500, currency="EUR", iaf=iaf
    )
    assert v[0x9F02].hex() == amount_field
    assert v[0x5F2A].hex() == currency_field
    assert v[0x9F37].hex() == "00000042"


def test_sign_without_iaf_b8_equals_respond() -> None:
    p = get_reader_profile("mc-cap")
    cdol = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
    sign = build_cdol_data(
        cdol, p, CapMode.SIGN, challenge="12345678", amount=99, currency="EUR", iaf=b"\x00"
    )
    respond = build_cdol_data(cdol, p, CapMode.RESPOND, challenge="12345678", iaf=b"\x00")
    assert sign == respond


def test_sign_missing_amount_or_currency() -> None:
    p = get_reader_profile("mc-cap")
    with pytest.raises(ValidationError, match="amount"):
        cdol_values(p, CapMode.SIGN, challenge="1", iaf=b"\x80")
    with pytest.raises(ValidationError, match="currency"):
        cdol_values(p, CapMode.SIGN, challenge="1", amount=5, iaf=b"\x80")


def test_mode_inputs_rejected() -> None:
    p = get_reader_profile("mc-cap")
    with pytest.raises(ValidationError, match="respond needs a challenge"):
        cdol_values(p, CapMode.RESPOND)
    with pytest.raises(ValidationError, match="identify takes no input"):
        cdol_values(p, CapMode.IDENTIFY, challenge="1")


# ------------------------------------------------------------------ strict inputs


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("1", "00000001"), ("1234", "00001234"), ("00001234", "00001234"), ("99999999", "99999999")],
)
def test_challenge_canonical(text: str, canonical: str) -> None:
    assert canonical_challenge(text) == canonical
    assert challenge_to_un(text) == bytes.fromhex(canonical)


@pytest.mark.parametrize(
    "bad",
    ["", "123456789", " 1234", "1234 ", "12 34", "+123", "-1", "１２３", "١٢٣", "12a4", "0x12", "1_000"],
)
def test_challenge_rejected(bad: str) -> None:
    with pytest.raises(ValidationError, match="challenge"):
        canonical_challenge(bad)


@pytest.mark.parametrize("bad", [1234, None, b"1234", 12.5])
def test_challenge_type(bad: object) -> None:
    with pytest.raises(ValidationError, match="challenge"):
        canonical_challenge(bad)  # type: ignore[arg-type]


@given(st.text(max_size=12))
def test_challenge_property(text: str) -> None:
    ok = 1 <= len(text) <= 8 and all(c in "0123456789" for c in text)
    if ok:
        assert canonical_challenge(text) == text.rjust(8, "0")
        assert int(challenge_to_un(text).hex()) == int(text)
    else:
        with pytest.raises(ValidationError):
            canonical_challenge(text)


@given(st.integers(min_value=0, max_value=99_999_999))
def test_challenge_leading_zero_equivalence(n: int) -> None:
    assert canonical_challenge(str(n)) == canonical_challenge(f"{n:08d}")


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        (0, None, 0),
        (1500, "EUR", 1500),
        ("15", "EUR", 1500),
        ("15.5", "EUR", 1550),
        ("15.05", "978", 1505),
        ("1500", "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("9999999999.99", "EUR", 999_999_999_999),
        (999_999_999_999, None, 999_999_999_999),
    ],
)
def test_amount_ok(value: int | str, currency: str | None, minor: int) -> None:
    assert parse_amount(value, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency"),
    [
        (15.0, "EUR"),
        (True, None),
        (-1, None),
        (1_000_000_000_000, None),
        ("10000000000.00", "EUR"),
        ("15.001", "EUR"),
        ("15.0", "JPY"),
        ("1,5", "EUR"),
        ("", None),
        (".5", None),
        ("5.", None),
        ("-5", None),
        (" 5", None),
        ("1e3", None),
        ("１５", None),
        ("15", "XYZ"),
    ],
)
def test_amount_rejected(value: object, currency: str | None) -> None:
    with pytest.raises(ValidationError):
        parse_amount(value, currency)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=999_999_999_999))
def test_amount_decimal_round_trip(minor: int) -> None:
    text = f"{minor // 100}.{minor % 100:02d}"
    assert parse_amount(text, "EUR") == minor == parse_amount(minor, "EUR")


@given(st.floats(allow_nan=True))
def test_amount_never_float(value: float) -> None:
    with pytest.raises(ValidationError, match="float"):
        parse_amount(value)  # type: ignore[arg-type]


def test_currency_table() -> None:
    assert currency_numeric("EUR") == "978"
    assert currency_numeric("gbp") == "826"
    assert currency_numeric("840") == "840"
    assert currency_exponent("JPY") == 0
    assert currency_exponent("BHD") == 3
    assert currency_exponent("CLF") == 4
    assert len({c.numeric for c in CURRENCIES.values()}) == len(CURRENCIES)
    for c in CURRENCIES.values():
        assert len(c.numeric) == 3
        assert c.numeric.isdigit()
        assert currency_numeric(c.alpha) == currency_numeric(c.numeric) == c.numeric
    for bad in ("EU", "EURO", "XXX", "XAU", "000", "E1R", "ＥＵＲ", "", " EU"):
        with pytest.raises(ValidationError, match="currency"):
            currency_numeric(bad)


def test_currency_in_cdol() -> None:
    v = cdol_values(
        get_reader_profile("mc-cap"), CapMode.SIGN, challenge="1", amount=100, currency="GBP", iaf=b"\x80"
    )
    assert v[0x5F2A] == bytes.fromhex("0826")


# ------------------------------------------------------------------ TDS


@pytest.mark.parametrize(
    ("fields", "nibbles"),
    [
        (["0530026806"], "0530026806"),
        (["1"], "1F"),
        (["12", "345"], "12F345"),
        (["007", "00"], "007F00"),
        (["1"] * 10, "1F" * 9 + "1F"),
    ],
)
def test_tds_message(fields: list[str], nibbles: str) -> None:
    assert tds_message(fields).hex().upper() == nibbles


@pytest.mark.parametrize(
    "bad",
    [[], ["1"] * 11, ["12345678901"], [""], ["12a"], [" 12"], ["１"], [12], "12345"],
)
def test_tds_limits(bad: object) -> None:
    with pytest.raises(ValidationError, match="field"):
        validate_tds_fields(bad)  # type: ignore[arg-type]


@given(st.lists(st.text("0123456789", min_size=1, max_size=10), min_size=1, max_size=10))
def test_tds_message_property(fields: list[str]) -> None:
    msg = tds_message(fields).hex().upper()
    assert msg.startswith("F".join(fields))
    assert len(msg) == len("F".join(fields)) + (len("F".join(fields)) % 2)
    assert len(tds_mac(fields, bytes(8))) == 8


def test_tds_key_length() -> None:
    with pytest.raises(ValidationError, match="key"):
        tds_mac(["1"], bytes(16))


# ------------------------------------------------------------------ IPB, overflow, short data


@given(st.binary(min_size=1, max_size=24), st.binary(min_size=0, max_size=40))
def test_ipb_extract_matches_reference(ipb: bytes, data: bytes) -> None:
    if len(data) < len(ipb):
        with pytest.raises(RemoteProtocolError):
            ipb_extract(ipb, data)
        assert ipb_extract(ipb, data, allow_short=True) == naive_extract(ipb, data)
    else:
        assert ipb_extract(ipb, data) == naive_extract(ipb, data)
    assert ipb_extract(ipb, data, allow_short=True) < 2 ** ipb_bit_count(ipb)


@given(st.binary(min_size=1, max_size=20), st.binary(min_size=20, max_size=30), st.booleans())
def test_explain_agrees_with_extract(ipb: bytes, data: bytes, psn: bool) -> None:
    bits = explain_ipb(ipb, data, psn_in_data=psn)
    value = sum(b.value << b.position for b in bits)
    assert value == ipb_extract(ipb, data)
    assert [b.position for b in bits] == list(range(len(bits) - 1, -1, -1))


@given(
    st.binary(min_size=12, max_size=20),
    st.binary(min_size=1, max_size=1),
    st.integers(0, 0xFFFF),
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=0, max_size=32),
    st.one_of(st.none(), st.binary(min_size=1, max_size=1)),
)
def test_atc_bits_read_back(
    ipb: bytes, cid: bytes, atc: int, ac: bytes, iad: bytes, psn: bytes | None
) -> None:
    d = data_string(cid, atc.to_bytes(2, "big"), ac, iad, psn=psn)
    value = ipb_extract(ipb, d, allow_short=True)
    mask, _ = disclosed_atc_bits(ipb, psn_in_data=psn is not None)
    assert atc_bits_from_code(value, ipb, psn_in_data=psn is not None) == atc & mask


def test_overflow_and_width() -> None:
    ipb = bytes.fromhex("0000FFFFFF0000000000000000000020B938")  # emvcap-visa-default, 33 bits
    assert ipb_bit_count(ipb) == 33
    d = bytes.fromhex("80FFFF") + b"\xff" * 8 + b"\xff" * 7
    with pytest.raises(CodeOverflowError) as info:
        compute_code(ipb, d[:1], d[1:3], d[3:11], d[11:])
    assert info.value.digits == 8
    assert decimal_code(0) == "00000000"
    assert decimal_code(99_999_999) == "99999999"
    with pytest.raises(CodeOverflowError):
        decimal_code(100_000_000)
    assert decimal_code(123, 3) == "123"


def test_short_data_rejected_by_default() -> None:
    ipb = bytes.fromhex("8000FF000000000001FFFF0000000000000001")  # 19 bytes
    with pytest.raises(RemoteProtocolError, match="refusing"):
        compute_code(ipb, b"\x80", b"\x00\x01", bytes(8), bytes(7))
    assert compute_code(ipb, b"\x80", b"\x00\x01", bytes(8), bytes(7), allow_short=True)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"cid": b""}, "cid"),
        ({"atc": b"\x01"}, "atc"),
        ({"ac": bytes(7)}, "ac"),
        ({"iad": bytes(33)}, "iad"),
        ({"psn": b"\x00\x01"}, "psn"),
        ({"ipb": b""}, "ipb"),
    ],
)
def test_compute_code_lengths(kwargs: dict[str, bytes], name: str) -> None:
    args = {"ipb": BARCLAYS_IPB, "cid": b"\x80", "atc": b"\x00\x01", "ac": bytes(8), "iad": bytes(7)}
    args.update(kwargs)
    psn = args.pop("psn", None)
    with pytest.raises(ValidationError, match=name):
        compute_code(args["ipb"], args["cid"], args["atc"], args["ac"], args["iad"], psn=psn)


# ------------------------------------------------------------------ Belgian function


def test_belgian_code_formula() -> None:
    atc, ac = bytes.fromhex("0042"), bytes.fromhex("B7F9A572DA74CAFF")
    v = (0x74CA & 0x3FF) * 2**16 + 0x42 * 2**8 + 0xFF
    expected = (v + (v % 10) * 10**7) % 10**8
    assert belgian_code(atc, ac) == f"{expected:08d}" == "43255423"


@given(st.binary(min_size=2, max_size=2), st.binary(min_size=8, max_size=8))
def test_belgian_code_properties(atc: bytes, ac: bytes) -> None:
    code = belgian_code(atc, ac)
    assert len(code) == 8
    assert code.isdigit()
    # the last digit is also the first, and v comes back out: the ATC low byte is disclosed
    v = (int(code) - int(code[-1]) * 10**7) % 10**8
    assert v < 2**26
    assert (v >> 8) & 0xFF == atc[1]
    assert code[0] == str((v % 10 + v // 10**7) % 10)


def test_belgian_explanation_points_at_the_bytes_of_d_it_read() -> None:
    """Each explained bit is the bit of ``D = CID ‖ ATC ‖ AC`` its ``data_index`` and ``bit`` name."""
    from capsim.cap import explain_belgian

    atc, ac = bytes.fromhex("A55A"), bytes.fromhex("0123456789ABCDEF")
    d = b"\x80" + atc + ac
    bits = explain_belgian(atc, ac)
    assert len(bits) == 26
    for b in bits:
        assert d[b.data_index] >> (b.bit - 1) & 1 == b.value, b
        field = atc if b.field == "ATC" else ac
        assert field[b.field_byte - 1] == d[b.data_index], b


@pytest.mark.parametrize("key", [bytes(7), bytes(9), bytes(16), bytearray(8), "9CA5A4CA"])
def test_tds_key_must_be_the_8_byte_cryptogram(key: object) -> None:
    with pytest.raises(ValidationError) as info:
        tds_mac(["1"], key)  # type: ignore[arg-type]
    assert str(info.value) == "key: expected the 8-byte application cryptogram"


@pytest.mark.parametrize("mode", list(CapMode))
def test_cdol_values_have_their_emv_lengths(mode: CapMode) -> None:
    """The §4 table, value by value at its EMV length: 9F45 (data authentication code) 2 bytes,
    9F4C (ICC dynamic number) 8, 91 (issuer authentication data) 10, all zeros."""
    challenge = None if mode in (CapMode.IDENTIFY, CapMode.TDS) else "1234"
    values = cdol_values(get_reader_profile("mc-cap"), mode, challenge=challenge)
    lengths = {tag: len(v) for tag, v in values.items()}
    assert lengths == {
        0x9F02: 6, 0x9F03: 6, 0x9F1A: 2, 0x95: 5, 0x5F2A: 2, 0x9A: 3, 0x9C: 1, 0x9F37: 4,
        0x9F35: 1, 0x9F34: 3, 0x9F33: 3, 0x9F45: 2, 0x9F4C: 8, 0x91: 10,
    }
    assert (values[0x9F45], values[0x9F4C], values[0x91]) == (bytes(2), bytes(8), bytes(10))


@pytest.mark.parametrize("part", ["whole", "frac"])
def test_amount_digit_counts_are_bounded_at_1000(part: str) -> None:
    """1000 digits are still read as a number (and told too large, or too many decimals);
    1001 are refused as no amount at all."""
    for n, ok in ((1000, True), (1001, False)):
        value = "1" * n if part == "whole" else "1." + "0" * n
        with pytest.raises(ValidationError) as info:
            parse_amount(value)
        if not ok:
            expected = "amount: expected digits with an optional '.' and decimals (like 15.00)"
            expected += f", got {value!r}"
        elif part == "whole":
            expected = f"amount: at most 9999999999.99, got {value!r}"
        else:
            expected = f"amount: at most 2 decimals without a currency, got {value!r}"
        assert str(info.value) == expected


def test_the_belgian_explanation_names_the_cryptogram_ac_unless_told() -> None:
    from capsim.cap import explain_belgian

    atc, ac = bytes.fromhex("A55A"), bytes.fromhex("0123456789ABCDEF")
    assert {b.field for b in explain_belgian(atc, ac)} == {"AC", "ATC"}
    assert {b.field for b in explain_belgian(atc, ac, ac_name="MAC")} == {"MAC", "ATC"}


@pytest.mark.parametrize("minor", [-1, 10**12])
def test_an_amount_in_minor_units_out_of_range_is_refused_in_full(minor: int) -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount(minor)
    assert str(info.value) == f"amount: expected 0..999999999999 minor units, got {minor}"
    assert (parse_amount(0), parse_amount(10**12 - 1)) == (0, 10**12 - 1)  # the two ends are taken


@pytest.mark.parametrize("count", [0, 11])
def test_a_tds_field_count_outside_1_to_10_is_refused_by_the_fields_name(count: int) -> None:
    fields = [str(i) for i in range(count)]
    with pytest.raises(ValidationError) as info:
        validate_tds_fields(fields)
    assert str(info.value) == f"fields: expected 1 to 10 TDS fields, got {count}"
    with pytest.raises(ValidationError) as info:
        validate_tds_fields(fields, option="--field")
    assert str(info.value) == f"--field: expected 1 to 10 TDS fields, got {count}"
