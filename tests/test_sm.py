"""capsim.sm: vectors.md §6 (script commands of every CVN) and §7 on both DES backends, properties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim import _des, sm
from capsim.apdu import pinblock
from capsim.crypto import CVN, cvn_spec, derive_icc_mk, derive_visa_sm_sk, mac_iso9797_alg3
from capsim.errors import ValidationError
from capsim.sm import (
    Encipherment,
    build_pin_change,
    build_script_command,
    decipher_pin_block,
    default_pin_block_format,
    encipher_pin_block,
    parse_pin_block_iso2,
    parse_pin_block_vis,
    pin_block_iso2,
    pin_block_vis,
    script_mac,
    sm_session_keys,
    verify_script_mac,
)
from tests.utils import kcv, load_vectors, unhex

# --------------------------------------------------------------------------------------------------
# vectors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", load_vectors("crypto/sm.txt"))
def test_sm_vectors(backend: str, v: dict[str, str]) -> None:
    op = v["OP"]
    if "KEY_KCV" in v:
        kcv(unhex(v["KEY"]), v["KEY_KCV"])
    if op == "mac":
        key, data = unhex(v["KEY"]), unhex(v["DATA"])
        mac = unhex(v["MAC"])
        assert mac_iso9797_alg3(key, data, 2) == mac
        header, rest = data[:5], data[5:]
        if len(rest) >= 10 and header[4] == 8:
            # header ‖ ATC ‖ ARQC: a CVN whose script MAC covers the transaction data.
            atc, arqc = rest[:2], rest[2:10]
            assert script_mac(CVN.MC_16, key, header, rest[10:], atc=atc, arqc=arqc) == mac
            assert verify_script_mac(CVN.MC_16, key, header, rest[10:], mac, atc=atc, arqc=arqc)
        else:
            # header ‖ data only: Interac CVN 133 leaves the transaction data out.
            assert script_mac(CVN.INTERAC_133, key, header, rest, atc=b"\x00\x01", arqc=bytes(8)) == mac
            assert verify_script_mac(CVN.INTERAC_133, key, header, rest, mac[:4], atc=bytes(2), arqc=bytes(8))
    elif op == "encipher":
        key, plain, cipher = unhex(v["KEY"]), unhex(v["PLAIN"]), unhex(v["CIPHER"])
        variant = Encipherment(v["VARIANT"])
        assert encipher_pin_block(variant, key, plain) == cipher
        assert decipher_pin_block(variant, key, cipher) == plain
    elif op == "iso2":
        block = unhex(v["BLOCK"])
        assert pin_block_iso2(v["PIN"]) == block
        assert parse_pin_block_iso2(block) == v["PIN"]
    elif op == "vis":
        mk_ac, block = unhex(v["MK_AC"]), unhex(v["BLOCK"])
        assert pin_block_vis(v["NEW_PIN"], mk_ac) == block
        assert parse_pin_block_vis(block, mk_ac) == v["NEW_PIN"]
    else:
        assert op == "visa-pin-change"
        _visa_pin_change(v)


def _visa_pin_change(v: dict[str, str]) -> None:
    mk_ac, atc = unhex(v["MK_AC"]), unhex(v["ATC"])
    kcv(mk_ac, v["MK_AC_KCV"])
    sk_smi = derive_visa_sm_sk(unhex(v["MK_SMI"]), atc)
    sk_smc = derive_visa_sm_sk(unhex(v["MK_SMC"]), atc)
    kcv(sk_smi, v["SK_SMI_KCV"])
    kcv(sk_smc, v["SK_SMC_KCV"])
    current = v.get("CURRENT_PIN")
    block = pin_block_vis(v["NEW_PIN"], mk_ac, current)
    assert block == unhex(v["VIS_BLOCK"])
    assert parse_pin_block_vis(block, mk_ac, current) == v["NEW_PIN"]
    cipher = encipher_pin_block(Encipherment.VISA_ECB, sk_smc, block)
    assert cipher == unhex(v["CIPHER"])
    assert decipher_pin_block(Encipherment.VISA_ECB, sk_smc, cipher) == block
    header = unhex(v["HEADER"])
    assert mac_iso9797_alg3(sk_smi, header + cipher) == unhex(v["MAC"])


def cvn_keys(v: dict[str, str]) -> tuple[bytes, bytes, bytes]:
    spec = cvn_spec(int(v["CVN"], 16))
    ac, smi, smc = (
        derive_icc_mk(unhex(v[f"IMK_{n}"]), v["PAN"], v["PSN"], option=spec.icc_mk_option)
        for n in ("AC", "SMI", "SMC")
    )
    for mk, n in ((ac, "AC"), (smi, "SMI"), (smc, "SMC")):
        if f"MK_{n}_KCV" in v:
            kcv(mk, v[f"MK_{n}_KCV"])
    return ac, smi, smc


@pytest.mark.parametrize("v", load_vectors("crypto/cvn.txt"))
def test_cvn_script_command_vectors(backend: str, v: dict[str, str]) -> None:
    cvn = CVN(int(v["CVN"], 16))
    mk_ac, mk_smi, mk_smc = cvn_keys(v)
    atc, arqc = unhex(v["ATC"]), unhex(v["ARQC"])
    sk_smi, sk_smc = sm_session_keys(cvn, mk_smi, mk_smc, atc=atc, arqc=arqc)
    if "SMI_KCV" in v:
        kcv(sk_smi, v["SMI_KCV"])
        kcv(sk_smc, v["SMC_KCV"])
    unblock = unhex(v["UNBLOCK"])
    header, mac = unblock[:5], unblock[5:]
    assert script_mac(cvn, sk_smi, header, b"", atc=atc, arqc=arqc) == mac
    assert verify_script_mac(cvn, sk_smi, header, b"", mac, atc=atc, arqc=arqc)
    command = build_script_command(
        cvn, ins=header[1], p1=header[2], p2=header[3], mk_smi=mk_smi, atc=atc, arqc=arqc
    )
    assert command == unblock
    if header[1] == sm.PIN_CHANGE_INS:
        assert (
            build_pin_change(cvn, new_pin=None, mk_ac=mk_ac, mk_smi=mk_smi, mk_smc=mk_smc, atc=atc, arqc=arqc)
            == unblock
        )
    keys = {"mk_ac": mk_ac, "mk_smi": mk_smi, "mk_smc": mk_smc, "atc": atc, "arqc": arqc}
    change = build_pin_change(cvn, new_pin=v["NEW_PIN"], **keys)
    assert change == unhex(v["PIN_CHANGE"])
    _check_pin_change_decodes(cvn, change, v["NEW_PIN"], None, sk_smi, sk_smc, mk_ac, atc, arqc)
    if "PIN_CHANGE_CURRENT" in v:
        change = build_pin_change(cvn, new_pin=v["NEW_PIN"], current_pin=v["CURRENT_PIN"], **keys)
        assert change == unhex(v["PIN_CHANGE_CURRENT"])
        _check_pin_change_decodes(
            cvn, change, v["NEW_PIN"], v["CURRENT_PIN"], sk_smi, sk_smc, mk_ac, atc, arqc
        )


def _check_pin_change_decodes(
    cvn: CVN,
    command: bytes,
    new_pin: str,
    current_pin: str | None,
    sk_smi: bytes,
    sk_smc: bytes,
    mk_ac: bytes,
    atc: bytes,
    arqc: bytes,
) -> None:
    """What a card does with the command: check the MAC, decipher, parse the block."""
    header, body = command[:5], command[5:]
    assert header[:4] == bytes([0x84, 0x24, 0x00, 0x01 if current_pin else 0x02])
    assert header[4] == len(body)
    data, mac = body[:-8], body[-8:]
    assert verify_script_mac(cvn, sk_smi, header, data, mac, atc=atc, arqc=arqc)
    block = decipher_pin_block(cvn_spec(cvn).pin_encipherment, sk_smc, data)
    if default_pin_block_format(cvn, with_current_pin=current_pin is not None) == "vis":
        assert parse_pin_block_vis(block, mk_ac, current_pin) == new_pin
    else:
        assert parse_pin_block_iso2(block) == new_pin


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------

pins = st.integers(min_value=4, max_value=12).flatmap(
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)
)
k16 = st.binary(min_size=16, max_size=16)


@given(pin=pins)
def test_iso2_round_trip(pin: str) -> None:
    block = pin_block_iso2(pin)
    assert len(block) == 8
    assert block.hex().upper().startswith(f"2{len(pin):X}{pin}")
    assert parse_pin_block_iso2(block) == pin


@given(pin=pins, current=st.one_of(st.none(), pins), mk_ac=k16)
def test_vis_round_trip(pin: str, current: str | None, mk_ac: bytes) -> None:
    block = pin_block_vis(pin, mk_ac, current)
    assert parse_pin_block_vis(block, mk_ac, current) == pin
    # Without the current PIN XORed in, B = block ⊕ A is the plain length-prefixed PIN field.
    if current is None:
        a = bytes(4) + mk_ac[4:8]
        b = bytes(x ^ y for x, y in zip(block, a, strict=True))
        assert b.hex().upper() == f"{len(pin):02X}{pin}".ljust(16, "F")


@given(block=st.binary(min_size=8, max_size=8))
def test_iso2_parse_is_strict(block: bytes) -> None:
    h = block.hex().upper()
    n = int(h[1], 16)
    valid = h[0] == "2" and 4 <= n <= 12 and h[2 : 2 + n].isdigit() and set(h[2 + n :]) <= {"F"}
    if valid:
        assert pin_block_iso2(parse_pin_block_iso2(block)) == block
    else:
        with pytest.raises(ValidationError, match=r"^block:"):
            parse_pin_block_iso2(block)


@pytest.mark.parametrize(
    "block_hex",
    [
        "341234FFFFFFFFFF",  # control nibble 3
        "231234FFFFFFFFFF",  # length 3
        "2D1234FFFFFFFFFF",  # length 13
        "24123AFFFFFFFFFF",  # non-digit in the PIN
        "241234FFFFFFFFFE",  # fill not F
        "2412340FFFFFFFFF",  # fill not F next to the PIN
    ],
)
def test_iso2_rejects_malformed_blocks(block_hex: str) -> None:
    with pytest.raises(ValidationError, match=r"^block:"):
        parse_pin_block_iso2(unhex(block_hex))


def test_the_format_2_block_is_the_apdu_layers() -> None:
    """One definition: the reader's VERIFY takes it from capsim.apdu.pinblock (no DES loaded),
    the issuer scripts through capsim.sm; a PIN change still names its own argument."""
    assert sm.pin_block_iso2 is pinblock.pin_block_iso2
    assert sm.parse_pin_block_iso2 is pinblock.parse_pin_block_iso2
    with pytest.raises(ValidationError, match=r"^new_pin:"):
        build_pin_change(CVN.MC_16, new_pin="12a4", **KW)


def test_vis_parse_rejects_wrong_key_and_wrong_current_pin() -> None:
    mk = unhex("0123456789ABCDEFFEDCBA9876543210")
    block = pin_block_vis("1234", mk, "5678")
    assert parse_pin_block_vis(block, mk, "5678") == "1234"
    with pytest.raises(ValidationError, match=r"^block:"):
        parse_pin_block_vis(block, mk)
    with pytest.raises(ValidationError, match=r"^block:"):
        parse_pin_block_vis(pin_block_vis("1234", mk), unhex("0123456711111111FEDCBA9876543210"))


@given(variant=st.sampled_from(Encipherment), key=k16, data=st.binary(min_size=1, max_size=40))
def test_encipherment_round_trip_and_lengths(variant: Encipherment, key: bytes, data: bytes) -> None:
    out = encipher_pin_block(variant, key, data)
    assert len(out) % 8 == 0
    back = decipher_pin_block(variant, key, out)
    if variant is Encipherment.VISA_ECB:
        assert len(out) == (len(data) + 1) // 8 * 8 + 8
        assert back == data
    elif variant is Encipherment.CCD_CBC:
        assert len(out) == len(data) // 8 * 8 + 8
        assert back == data
    else:
        assert len(out) == (len(data) + 7) // 8 * 8
        assert back == (data if len(data) % 8 == 0 else data + b"\x80" + bytes(-(len(data) + 1) % 8))


def test_decipher_rejects_bad_padding_and_length() -> None:
    key = unhex("0123456789ABCDEFFEDCBA9876543210")
    garbage = _des.ecb_encrypt(key, unhex("0512345678FFFF00"))  # no 80 marker
    with pytest.raises(ValidationError, match=r"^data:"):
        decipher_pin_block(Encipherment.VISA_ECB, key, garbage)
    wrong_len = _des.ecb_encrypt(key, unhex("0712345678800000"))  # length prefix 7, 4 bytes follow
    with pytest.raises(ValidationError, match=r"^data:"):
        decipher_pin_block(Encipherment.VISA_ECB, key, wrong_len)
    with pytest.raises(ValidationError, match=r"^data:"):
        decipher_pin_block(Encipherment.CCD_CBC, key, _des.cbc_encrypt(key, bytes(8)))
    for variant in Encipherment:
        with pytest.raises(ValidationError, match=r"^data:"):
            decipher_pin_block(variant, key, bytes(12))
        with pytest.raises(ValidationError, match=r"^data:"):
            decipher_pin_block(variant, key, b"")


@given(
    cvn=st.sampled_from(CVN),
    key=k16,
    header=st.binary(min_size=5, max_size=5),
    data=st.binary(max_size=24),
    atc=st.binary(min_size=2, max_size=2),
    arqc=st.binary(min_size=8, max_size=8),
    length=st.integers(min_value=4, max_value=8),
    flip=st.integers(min_value=0, max_value=63),
)
def test_script_mac_definition_and_verify(
    cvn: CVN, key: bytes, header: bytes, data: bytes, atc: bytes, arqc: bytes, length: int, flip: int
) -> None:
    mac = script_mac(cvn, key, header, data, atc=atc, arqc=arqc, length=length)
    txn = atc + arqc if cvn_spec(cvn).script_mac_covers_txn else b""
    assert mac == mac_iso9797_alg3(key, header + txn + data, 2)[:length]
    assert verify_script_mac(cvn, key, header, data, mac, atc=atc, arqc=arqc)
    bad = bytearray(mac)
    bad[flip % length] ^= 1 << (flip % 8)
    assert not verify_script_mac(cvn, key, header, data, bytes(bad), atc=atc, arqc=arqc)
    if txn:  # another transaction's ATC/ARQC gives another MAC
        other = bytes([arqc[0] ^ 1]) + arqc[1:]
        assert not verify_script_mac(cvn, key, header, data, mac, atc=atc, arqc=other)


@given(
    cvn=st.sampled_from(CVN),
    mk_smi=k16,
    mk_smc=k16,
    atc=st.binary(min_size=2, max_size=2),
    arqc=st.binary(min_size=8, max_size=8),
)
def test_sm_session_key_methods(cvn: CVN, mk_smi: bytes, mk_smc: bytes, atc: bytes, arqc: bytes) -> None:
    from capsim.crypto import derive_common_sk

    smi, smc = sm_session_keys(cvn, mk_smi, mk_smc, atc=atc, arqc=arqc)
    if cvn in (CVN.VISA_10, CVN.VISA_18):
        assert (smi, smc) == (derive_visa_sm_sk(mk_smi, atc), derive_visa_sm_sk(mk_smc, atc))
    else:
        assert (smi, smc) == (derive_common_sk(mk_smi, arqc), derive_common_sk(mk_smc, arqc))


def test_default_block_formats() -> None:
    for cvn in CVN:
        for current in (False, True):
            fmt = default_pin_block_format(cvn, with_current_pin=current)
            if cvn in (CVN.VISA_10, CVN.VISA_18) or (cvn is CVN.VISA_22 and current):
                assert fmt == "vis"
            else:
                assert fmt == "iso2"


def test_build_script_command_layout() -> None:
    mk = unhex("94F867167C64EF3EEAB0CB627A7A3480")
    atc, arqc = unhex("001C"), unhex("29CCA15AE665FA2E")
    cmd = build_script_command(
        CVN.MC_20, ins=0xDA, p1=0x9F, p2=0x58, data=b"\x05", mk_smi=mk, atc=atc, arqc=arqc, mac_length=4
    )
    assert cmd[:5] == unhex("84DA9F5805")
    assert cmd[5:6] == b"\x05"
    sk_smi, _ = sm_session_keys(CVN.MC_20, mk, mk, atc=atc, arqc=arqc)
    assert cmd[6:] == script_mac(CVN.MC_20, sk_smi, cmd[:5], b"\x05", atc=atc, arqc=arqc, length=4)


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------

K = unhex("0123456789ABCDEFFEDCBA9876543210")
KW: dict[str, bytes] = {"mk_ac": K, "mk_smi": K, "mk_smc": K, "atc": bytes(2), "arqc": bytes(8)}

BAD_CALLS: list[tuple[str, Callable[[], object]]] = [
    ("pin", lambda: pin_block_iso2("123")),
    ("pin", lambda: pin_block_iso2("1234567890123")),
    ("pin", lambda: pin_block_iso2("12a4")),
    ("new_pin", lambda: pin_block_vis("12 4", K)),
    ("current_pin", lambda: pin_block_vis("1234", K, "12")),
    ("mk_ac", lambda: pin_block_vis("1234", bytes(8))),
    ("block", lambda: parse_pin_block_iso2(bytes(7))),
    ("block", lambda: parse_pin_block_vis(bytes(9), K)),
    ("variant", lambda: encipher_pin_block("aes", K, bytes(8))),  # type: ignore[arg-type]
    ("sk_smc", lambda: encipher_pin_block(Encipherment.CCD_CBC, bytes(8), bytes(8))),
    ("block", lambda: encipher_pin_block(Encipherment.CCD_CBC, K, b"")),
    ("cvn", lambda: sm_session_keys(0x0B, K, K, atc=bytes(2), arqc=bytes(8))),
    ("mk_smc", lambda: sm_session_keys(CVN.MC_16, K, bytes(15), atc=bytes(2), arqc=bytes(8))),
    ("arqc", lambda: sm_session_keys(CVN.MC_16, K, K, atc=bytes(2), arqc=bytes(4))),
    ("header", lambda: script_mac(CVN.MC_16, K, bytes(4), b"", atc=bytes(2), arqc=bytes(8))),
    ("length", lambda: script_mac(CVN.MC_16, K, bytes(5), b"", atc=bytes(2), arqc=bytes(8), length=3)),
    ("length", lambda: verify_script_mac(CVN.MC_16, K, bytes(5), b"", bytes(9), atc=bytes(2), arqc=bytes(8))),
    ("atc", lambda: script_mac(CVN.VISA_18, K, bytes(5), b"", atc=bytes(3), arqc=bytes(8))),
    ("ins", lambda: build_script_command(CVN.MC_16, ins=256, mk_smi=K, atc=bytes(2), arqc=bytes(8))),
    (
        "data",
        lambda: build_script_command(
            CVN.MC_16, ins=0xDA, data=bytes(250), mk_smi=K, atc=bytes(2), arqc=bytes(8)
        ),
    ),
    ("new_pin", lambda: build_pin_change(CVN.MC_16, new_pin="12", **KW)),
    ("current_pin", lambda: build_pin_change(CVN.MC_16, new_pin="1234", current_pin="5678", **KW)),
    ("current_pin", lambda: build_pin_change(CVN.VISA_10, new_pin=None, current_pin="5678", **KW)),
    ("block_format", lambda: build_pin_change(CVN.MC_16, new_pin="1234", block_format="iso1", **KW)),  # type: ignore[arg-type]
    ("mk_ac", lambda: build_pin_change(CVN.MC_16, new_pin="1234", **{**KW, "mk_ac": bytes(3)})),
]


@pytest.mark.parametrize(("name", "call"), BAD_CALLS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_validation_error_naming_them(name: str, call: Callable[[], object]) -> None:
    with pytest.raises(ValidationError) as info:
        call()
    assert str(info.value).startswith(f"{name}:")


def test_public_names() -> None:
    for name in sm.__all__:
        assert hasattr(sm, name)
    assert sm.Encipherment is Encipherment
