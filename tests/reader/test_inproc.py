"""The reader against the emulated card: every built-in card profile × every mode, CAP-SYNTH end
to end, pyemv as an independent oracle for the cryptogram, the PIN lifecycle, file: cards."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from Crypto.Cipher import DES

from capsim.cap import CapMode
from capsim.cards import BUILTIN_PROFILES, EmvCapCard, Record, builtin_profile, load_card, new_card
from capsim.errors import (
    CardBlockedError,
    PinBlockedError,
    PinError,
    StatusWordError,
    UnknownIssuerProfile,
    ValidationError,
)
from capsim.profiles import FALLBACK_IPBS, NoIpbFallback, get_reader_profile
from capsim.reader import CapReader, CapResult
from capsim.tlv import decode, encode, parse_dol, walk
from capsim.transports import TracingTransport, open_transport
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, InProcessTransport
from tests.reader.helpers import naive_extract
from tests.utils import load_vectors, unhex

MODES: dict[CapMode, Callable[[CapReader], CapResult]] = {
    CapMode.IDENTIFY: lambda r: r.identify("1234"),
    CapMode.RESPOND: lambda r: r.respond("1234", "12345678"),
    CapMode.SIGN: lambda r: r.sign("1234", "78901234", "15.00", "EUR"),
    CapMode.TDS: lambda r: r.sign_data("1234", ["0530026806", "42"]),
}
EXPECTED_PROFILE = {
    "secur-acces": "mc-cap",
    "visa-dpa": "visa-dpa",
    "barclays": "visa-dpa",
    "natwest": "mc-cap",
    "rabobank": "mc-cap",
}


def _card_tags(result: CapResult) -> dict[int, bytes]:
    tags: dict[int, bytes] = {}
    for command, response in result.transcript:
        if command[1] == 0xB2:
            for _, obj in walk(decode(response[:-2])):
                tags.setdefault(obj.tag, obj.value)
    return tags


def _gac(result: CapResult, n: int) -> tuple[bytes, bytes]:
    return [(c, r) for c, r in result.transcript if c[1] == 0xAE][n]


def _independent_code(result: CapResult) -> str:
    """Recompute the code from the transcript without capsim.cap (bit-string reference)."""
    tags = _card_tags(result)
    body = _gac(result, 0)[1][:-2]
    objs = {t: o.value for _, o in walk(decode(body)) for t in [o.tag]}
    if body[0] == 0x80:
        v = objs[0x80]
        cid, atc, ac, iad = v[:1], v[1:3], v[3:11], v[11:]
    else:
        cid, atc, ac, iad = objs[0x9F27], objs[0x9F36], objs[0x9F26], objs.get(0x9F10, b"")
    if result.mode is CapMode.TDS:
        # single-DES CBC-MAC over "0530026806F42" + ISO 9797-1 method 2, keyed with the AC,
        # computed with pycryptodome directly (independent of capsim.crypto and capsim.cap)
        padded = bytes.fromhex("0530026806F42F") + b"\x80"
        ac = DES.new(ac, DES.MODE_CBC, iv=bytes(8)).encrypt(padded)[-8:]
        assert ac == result.tds_mac
    psn = tags[0x5F34] if tags.get(0x9F55, b"\x00")[0] & 0x40 else b""
    value = naive_extract(tags[0x9F56], psn + cid + atc + ac + iad)
    return f"{value:08d}"


@pytest.mark.parametrize("mode", list(CapMode), ids=lambda m: m.value)
@pytest.mark.parametrize("card", sorted(BUILTIN_PROFILES))
def test_every_card_every_mode(card: str, mode: CapMode) -> None:
    with open_transport(f"inproc:{card}") as transport:
        result = MODES[mode](CapReader(transport))
    assert result.mode is mode
    assert result.profile == EXPECTED_PROFILE[card]
    assert len(result.code) == 8
    assert result.code.isdigit()
    assert result.code == _independent_code(result)
    assert result.atc == BUILTIN_PROFILES[card].initial_atc + 1
    assert result.cid & 0xC0 == 0x80
    # VERIFY without Le and a redacted block; the two GENERATE ACs: ARQC then AAC
    verify = [c for c, _ in result.transcript if c[1] == 0x20]
    assert verify == [unhex("0020008008FFFFFFFFFFFFFFFF")]
    assert _gac(result, 0)[0][2] == 0x80
    assert _gac(result, 1)[0][2] == 0x00
    assert result.warnings == ()


@pytest.mark.parametrize("card", sorted(BUILTIN_PROFILES))
def test_cdol1_fields_per_mode(card: str) -> None:
    """UN, amount and currency land where §4 says, for this card's IAF; date/TVR per profile."""
    with open_transport(f"inproc:{card}") as transport:
        reader = CapReader(transport)
        results = {mode: call(reader) for mode, call in MODES.items()}
    tags = _card_tags(results[CapMode.SIGN])
    iaf = tags.get(0x9F55, b"\x00")[0]
    cdol1 = parse_dol(tags[0x8C])
    for mode, result in results.items():
        command = _gac(result, 0)[0]
        data, pos, fields = command[5 : 5 + command[4]], 0, {}
        for entry in cdol1:
            fields[entry.tag] = data[pos : pos + entry.length]
            pos += entry.length
        assert fields[0x9A] == (unhex("010101") if result.profile == "visa-dpa" else bytes(3))
        assert fields[0x95] == unhex("8000000000")
        un = {CapMode.RESPOND: "12345678", CapMode.SIGN: "78901234"}.get(mode, "00000000")
        assert fields[0x9F37].hex() == un
        amount = "000000001500" if mode is CapMode.SIGN and iaf & 0x80 else "000000000000"
        assert fields[0x9F02].hex() == amount
        currency = "0978" if mode is CapMode.SIGN and iaf & 0x80 and not iaf & 0x20 else "0000"
        assert fields[0x5F2A].hex() == currency
        if 0x9F35 in fields:
            assert fields[0x9F35] == b"\x34"
        if 0x9F34 in fields:
            assert fields[0x9F34] == unhex("010002")


@pytest.mark.parametrize("v", load_vectors("cap/synthetic-dpa.txt"))
def test_cap_synth_end_to_end(v: dict[str, str]) -> None:
    """CAP-SYNTH through the emulator: ATC 0016 on the second run (new card, last online not done)."""
    card = new_card("visa-dpa", pan=v["PAN"], imk_ac=unhex(v["IMK"]), initial_atc=0x14)
    with InProcessTransport(card) as transport:
        reader = CapReader(transport)
        reader.identify("1234")
        mode = v["ID"].rsplit("-", 1)[1]
        if mode == "IDENTIFY":
            result = reader.identify("1234")
        elif mode == "RESPOND":
            result = reader.respond("1234", v["CHALLENGE"])
        else:
            result = reader.sign("1234", v["CHALLENGE"], int(v["AMOUNT"]))
    assert result.atc == 0x16
    assert result.cryptogram == unhex(v["AC"])
    assert result.code == v["CODE"]
    assert _gac(result, 0)[0][5:-1] == unhex(v["CDOL1_DATA"])


@pytest.mark.parametrize("mode", [CapMode.IDENTIFY, CapMode.RESPOND, CapMode.SIGN], ids=lambda m: m.value)
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_cryptogram_against_pyemv(mode: CapMode) -> None:
    """pyemv (test-only oracle) computes the same Visa CVN 10 AC over the CDOL1 data the reader sent."""
    from pyemv import cvn

    with open_transport("inproc:barclays") as transport:
        result = MODES[mode](CapReader(transport))
    data = _gac(result, 0)[0][5:-1]
    pyemv_card = cvn.VisaCVN10(TEST_IMK_AC, bytes(16), bytes(16), TEST_PAN, "00")
    ac = pyemv_card.generate_ac(
        tag_9f02=data[0:6],
        tag_9f03=data[6:12],
        tag_9f1a=data[12:14],
        tag_95=data[14:19],
        tag_5f2a=data[19:21],
        tag_9a=data[21:24],
        tag_9c=data[24:25],
        tag_9f37=data[25:29],
        tag_82=unhex("1000"),
        tag_9f36=result.atc.to_bytes(2, "big"),
        cvr=result.iad[3:7],
    )
    assert ac == result.cryptogram


# ------------------------------------------------------------------ PIN lifecycle


def test_wrong_pin_then_blocked_then_no_verify() -> None:
    card = new_card("natwest", pan=TEST_PAN, imk_ac=TEST_IMK_AC, pin="2468")
    with TracingTransport(InProcessTransport(card)) as transport:
        reader = CapReader(transport)
        with pytest.raises(PinError) as first:
            reader.identify("1234")
        assert first.value.tries_left == 2
        assert str(first.value) == "wrong PIN, 2 tries left"
        result = reader.identify("2468")  # a correct PIN resets the counter
        assert result.warnings == ("only 2 PIN tries left",)
        for left in (2, 1, 0):
            with pytest.raises(PinError) as info:
                reader.respond("0000", "1")
            assert info.value.tries_left == left
        sent_before = len(transport.exchanges)
        with pytest.raises(PinBlockedError, match="0 PIN tries left"):
            reader.identify("2468")
        # the blocked card was not sent a VERIFY: the counter said 0
        assert all(c[1] != 0x20 for c, _ in transport.exchanges[sent_before:])
    assert card.state.ptc == 0


def test_blocked_pin_from_verify() -> None:
    """A card that hides its try counter but answers 6983 to VERIFY."""

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xCA:
            return unhex("6A88")
        if apdu[1] == 0x20:
            return unhex("6983")
        return card.process(apdu)

    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    from tests.reader.helpers import ScriptedCard

    with pytest.raises(PinBlockedError):
        CapReader(ScriptedCard(answer)).identify("1234")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda r: r.identify("123"), "pin"),
        (lambda r: r.identify("1234567890123"), "pin"),
        (lambda r: r.identify("12a4"), "pin"),
        (lambda r: r.respond("1234", "123456789"), "challenge"),
        (lambda r: r.respond("1234", "１２３"), "challenge"),
        (lambda r: r.sign("1234", "1", 1.5, "EUR"), "amount"),
        (lambda r: r.sign("1234", "1", "1.5", "EURO"), "currency"),
        (lambda r: r.sign_data("1234", ["1"] * 11), "fields"),
        (lambda r: r.sign_data("1234", ["12345678901"]), "fields"),
    ],
)
def test_bad_input_sends_nothing(call: Callable[[CapReader], CapResult], name: str) -> None:
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    with TracingTransport(InProcessTransport(card)) as transport:
        with pytest.raises(ValidationError, match=name):
            call(CapReader(transport))
        assert transport.exchanges == []
    assert card.state.atc == card.profile.initial_atc
    assert card.state.ptc == 3


def test_sign_needs_amount_when_iaf_asks() -> None:
    """secur-acces has IAF 80 (amount and currency): a Sign without them stops before VERIFY."""
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    with TracingTransport(InProcessTransport(card)) as transport:
        with pytest.raises(ValidationError, match="asks for an amount"):
            CapReader(transport).sign("1234", "1")
        with pytest.raises(ValidationError, match="asks for a currency"):
            CapReader(transport).sign("1234", "1", 100)
        assert all(c[1] != 0x20 for c, _ in transport.exchanges)
    assert card.state.ptc == 3


def _custom_card(
    *, aid: bytes = b"", iaf: bytes | None = b"\x80", ipb: bytes | None = None, fci_extra: bytes = b""
) -> EmvCapCard:
    """secur-acces with its record rebuilt: a chosen IAF and IPB (None: tag absent)."""
    template = builtin_profile("secur-acces")
    parts = [
        encode(0x8C, template.cdol1),
        encode(0x8D, template.cdol2),
        encode(0x5F34, b"\x00"),
        encode(0x8E, bytes.fromhex("00000000000000000100")),
    ]
    if iaf is not None:
        parts.append(encode(0x9F55, iaf))
    if ipb is not None:
        parts.append(encode(0x9F56, ipb))
    profile = dataclasses.replace(
        template,
        aid=aid or template.aid,
        fci_proprietary=template.fci_proprietary + fci_extra,
        records=(Record(sfi=1, number=1, data=encode(0x70, b"".join(parts))),),
    )
    return new_card(profile, pan=TEST_PAN, imk_ac=TEST_IMK_AC)


def test_amount_ignored_warning() -> None:
    with open_transport("inproc:natwest") as transport:  # IAF A0: amount, no currency
        result = CapReader(transport).sign("1234", "1", "12.34", "EUR")
    assert result.warnings == ()
    card = _custom_card(iaf=b"\x00", ipb=builtin_profile("secur-acces").ipb)
    with InProcessTransport(card) as transport:
        result = CapReader(transport).sign("1234", "1", "12.34", "EUR")
    assert result.warnings == ("the card's IAF does not use an amount in sign mode: the amount is ignored",)


def test_missing_iaf_warns_and_uses_default() -> None:
    card = _custom_card(iaf=None, ipb=builtin_profile("secur-acces").ipb)
    with InProcessTransport(card) as transport:
        result = CapReader(transport).sign("1234", "1")
    assert result.warnings == ("the card has no IAF (9F55): assuming 00",)


def test_missing_ipb_is_an_error_unless_a_fallback_is_named() -> None:
    with (
        InProcessTransport(_custom_card(ipb=None)) as transport,
        pytest.raises(UnknownIssuerProfile, match="no IPB"),
    ):
        CapReader(transport).identify("1234")
    profile = get_reader_profile("mc-cap").replace(no_ipb=NoIpbFallback.GEMALTO_SOFTCAP_DEFAULT)
    with InProcessTransport(_custom_card(ipb=None)) as transport:
        result = CapReader(transport, profile).identify("1234")
    assert result.ipb == FALLBACK_IPBS[NoIpbFallback.GEMALTO_SOFTCAP_DEFAULT]
    assert result.warnings == ("the card has no IPB: using the gemalto-softcap-default fallback",)
    # 24 bits: the ATC low byte then the first two AC bytes
    assert int(result.code) == (result.atc & 0xFF) << 16 | int.from_bytes(result.cryptogram[:2], "big")


# ------------------------------------------------------------------ selection


def test_explicit_aid_and_profile() -> None:
    with open_transport("inproc:natwest") as transport:
        reader = CapReader(transport, "mc-cap", aid=unhex("A0000000048002"))
        assert reader.respond("1234", "1").aid == unhex("A0000000048002")
    with open_transport("inproc:natwest") as transport:
        with pytest.raises(StatusWordError, match="no CAP application") as info:
            CapReader(transport, "visa-dpa").identify("1234")
        assert (info.value.sw, info.value.ins) == (0x6A82, 0xA4)


def test_be_payment_profile_on_maestro_without_ipb() -> None:
    """A Maestro payment app without IPB: be-payment's Belgian fallback gives 8 digits."""
    from capsim.cap import belgian_code

    card = _custom_card(aid=unhex("A0000000043060"), ipb=None)
    with InProcessTransport(card) as transport:
        result = CapReader(transport).respond("1234", "5")
    assert result.profile == "be-payment"
    assert result.warnings == (
        "payment application A0000000043060 without Belgian markers (5F2C 0056, DF07 BKS056): "
        "reader profile be-payment may not be the issuer's",
    )
    assert result.code_function.value == "belgian"
    assert result.code == belgian_code(result.atc.to_bytes(2, "big"), result.cryptogram)
    gac = _gac(result, 0)[0]
    assert gac[5 + 14 : 5 + 19] == unhex("8000000800")  # be-payment TVR
    assert _gac(result, 1)[0][5:7] == b"Z1"


def test_belgian_markers_silence_the_warning() -> None:
    markers = encode(0xBF0C, encode(0x5F2C, b"\x00\x56") + encode(0xDF07, b"BKS056 test"))
    card = _custom_card(aid=unhex("A0000000031010"), ipb=None, fci_extra=markers)
    with InProcessTransport(card) as transport:
        result = CapReader(transport).identify("1234")
    assert (result.profile, result.code_function.value, result.warnings) == ("be-payment", "belgian", ())


def test_blocked_application() -> None:
    def answer(apdu: bytes) -> bytes:
        return unhex("6283") if apdu[1] == 0xA4 and apdu[5] == 0xA0 else unhex("6A82")

    from tests.reader.helpers import ScriptedCard

    with pytest.raises(CardBlockedError, match="blocked"):
        CapReader(ScriptedCard(answer)).identify("1234")


# ------------------------------------------------------------------ file: cards


def test_file_card_persists_atc(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("rabobank", pan=TEST_PAN, imk_ac=TEST_IMK_AC, path=path).close()
    atcs = []
    for _ in range(3):
        with open_transport(f"file:{path}") as transport:
            atcs.append(CapReader(transport).identify("1234").atc)
    assert atcs == sorted(set(atcs))
    assert atcs[-1] - atcs[0] == 2
    card = load_card(path)
    try:
        assert card.state.atc == atcs[-1]
    finally:
        card.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_inproc_spec_errors() -> None:
    with pytest.raises(ValidationError, match="card profile"):
        open_transport("inproc:nosuchcard")
    with pytest.raises(ValidationError, match="file:"):
        open_transport("file:")
    with pytest.raises(ValidationError, match="reader"):
        open_transport("no-colon")
