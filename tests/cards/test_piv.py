"""The emulated PIV card, APDU by APDU, checked against SP 800-73-4 and an independent verifier.

Signatures, public keys and shared secrets the card returns are checked with pyca/cryptography
from the host's side (verifying, not re-computing the card's code path); the management-key
exchange is computed host-side from the published default key.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim.cards.piv import (
    DEFAULT_MGMT_KEY,
    PIV_AID,
    PivAlgorithm,
    PivCard,
    PivState,
    certificate_object,
    generate_key,
    load_piv_card,
    new_piv_card,
    pad_reference,
)
from capsim.errors import StateFileError, ValidationError
from capsim.tlv import decode, encode, find

OK = b"\x90\x00"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def sw(resp: bytes) -> int:
    return int.from_bytes(resp[-2:], "big")


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    out = bytes([cla, ins, p1, p2])
    if data:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le & 0xFF])
    return out


def verify(card: PivCard, pin: str) -> int:
    return sw(card.process(apdu(0, 0x20, 0, 0x80, pad_reference(pin))))


def get_data(card: PivCard, tag: int, le: int = 0) -> bytes:
    return card.process(
        apdu(0, 0xCB, 0x3F, 0xFF, encode(0x5C, tag.to_bytes(3 if tag > 0xFFFF else 1, "big")), le)
    )


def read_all(card: PivCard, first: bytes) -> bytes:
    """Follow 61xx with GET RESPONSE, as a T=0 host does."""
    data, resp = b"", first
    while resp[-2] == 0x61:
        data += resp[:-2]
        resp = card.process(bytes([0, 0xC0, 0, 0, resp[-1]]))
    assert sw(resp) == 0x9000, resp.hex()
    return data + resp[:-2]


def _tdes(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def mgmt_auth(card: PivCard, key: bytes = DEFAULT_MGMT_KEY) -> int:
    """Mutual authentication with the management key (SP 800-73-4 part 2 appendix A.1)."""
    resp = card.process(apdu(0, 0x87, 0x03, 0x9B, h("7C028000"), 0))
    assert sw(resp) == 0x9000
    witness = _tdes(key, find(decode(resp[:-2]), 0x80).value, decrypt=True)  # type: ignore[union-attr]
    challenge = os.urandom(8)
    resp = card.process(
        apdu(0, 0x87, 0x03, 0x9B, encode(0x7C, encode(0x80, witness) + encode(0x81, challenge)), 0)
    )
    if sw(resp) != 0x9000:
        return sw(resp)
    assert find(decode(resp[:-2]), 0x82).value == _tdes(key, challenge)  # type: ignore[union-attr]
    return 0x9000


def generate(card: PivCard, slot: int, alg: PivAlgorithm) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    resp = read_all(card, card.process(apdu(0, 0x47, 0, slot, encode(0xAC, encode(0x80, bytes([alg]))), 0)))
    template = find(decode(resp), 0x7F49)
    assert template is not None
    point = find(template, 0x86)
    if point is not None:
        curve = ec.SECP256R1() if alg is PivAlgorithm.ECC_P256 else ec.SECP384R1()
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point.value)
    n, e = find(template, 0x81), find(template, 0x82)
    assert n is not None
    assert e is not None
    return rsa.RSAPublicNumbers(int.from_bytes(e.value, "big"), int.from_bytes(n.value, "big")).public_key()


def sign(card: PivCard, slot: int, alg: PivAlgorithm, data: bytes) -> bytes:
    body = encode(0x7C, encode(0x82, b"") + encode(0x81, data))
    first = (
        card.process(bytes([0x00, 0x87, alg, slot, len(body)]) + body + b"\x00") if len(body) < 256 else None
    )
    if first is None:  # a 256-byte RSA block: chained in two commands, as OpenSC sends it
        card.process(bytes([0x10, 0x87, alg, slot, 200]) + body[:200])
        rest = body[200:]
        first = card.process(bytes([0x00, 0x87, alg, slot, len(rest)]) + rest + b"\x00")
    if sw(first) not in (0x9000,) and first[-2] != 0x61:
        raise AssertionError(f"sign answered {sw(first):04X}")
    result = find(decode(read_all(card, first)), 0x82)
    assert result is not None
    return result.value


# -- selection and data objects ------------------------------------------------------------


@pytest.mark.parametrize("aid", [PIV_AID[:5], PIV_AID[:9], PIV_AID])
def test_select_by_aid_or_prefix_answers_the_application_property_template(aid: bytes) -> None:
    resp = new_piv_card().process(apdu(0, 0xA4, 4, 0, aid, 0))
    assert resp == h("6122 4F06000010000100 7907 4F05A000000308 AC0F 800103 800107 800111 800114 060100 9000")


def test_an_unknown_aid_is_6a82_and_keeps_the_selection_and_the_pin() -> None:
    card = new_piv_card()
    assert verify(card, "123456") == 0x9000
    assert card.process(apdu(0, 0xA4, 4, 0, h("A0000000048002"), 0)) == h("6A82")
    assert card.process(apdu(0, 0x20, 0, 0x80)) == OK  # still verified



def test_selecting_piv_clears_the_pin_and_the_management_key_status() -> None:
    """A YubiKey forgets both on SELECT; yubico-piv-tool's status re-selects, then reads the
    PIN tries with VERIFY and printed "PIN tries left: -1" after an OpenSC session had left the
    PIN verified (the next program inherited it)."""
    card = new_piv_card()
    assert verify(card, "123456") == 0x9000
    assert mgmt_auth(card) == 0x9000
    assert card.process(apdu(0, 0xA4, 4, 0, PIV_AID[:5], 0))[-2:] == OK
    assert card.process(apdu(0, 0x20, 0, 0x80)) == h("63C3")
    put = encode(0x5C, h("5FC102")) + encode(0x53, b"x")
    assert card.process(apdu(0, 0xDB, 0x3F, 0xFF, put)) == h("6982")
    assert card.state.pin_tries == 3  # a status, not a try


def test_piv_is_selected_at_power_on_and_the_discovery_object_is_exact() -> None:
    card = new_piv_card()
    card.power_on()
    assert get_data(card, 0x7E) == h("7E12 4F0BA000000308000010000100 5F2F024000 9000")


def test_absent_and_pin_protected_objects() -> None:
    card = new_piv_card(objects={0x5FC109: b"printed", 0x5FC102: b"chuid"})
    assert sw(get_data(card, 0x5FC105)) == 0x6A82
    assert sw(get_data(card, 0x5FC109)) == 0x6982
    assert get_data(card, 0x5FC102) == encode(0x53, b"chuid") + OK
    assert verify(card, "123456") == 0x9000
    assert get_data(card, 0x5FC109) == encode(0x53, b"printed") + OK


def test_an_le_08_probe_gets_exactly_8_bytes_and_the_rest_by_get_response() -> None:
    cert = certificate_object(os.urandom(900))
    card = new_piv_card(objects={0x5FC105: cert})
    first = get_data(card, 0x5FC105, le=8)
    assert len(first) == 10
    assert first[-2] == 0x61
    assert first[-1] == 0x00  # 256 or more wait
    assert read_all(card, first) == encode(0x53, cert)
    # answers over 256 bytes always come in pieces of at most 256
    resp = get_data(card, 0x5FC105, le=0)
    assert len(resp) == 258
    assert resp[-2] == 0x61


def test_get_response_without_a_remainder_and_a_remainder_dropped_by_another_command() -> None:
    card = new_piv_card(objects={0x5FC105: bytes(600)})
    assert card.process(h("00C0000000")) == h("6985")
    assert get_data(card, 0x5FC105)[-2] == 0x61
    assert sw(card.process(apdu(0, 0x20, 0, 0x80))) == 0x63C3
    assert card.process(h("00C0000000")) == h("6985")


# -- PIN and PUK --------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["00200080", "0020008000"])
def test_verify_status_in_both_empty_forms(query: str) -> None:
    card = new_piv_card()
    assert card.process(h(query)) == h("63C3")
    assert verify(card, "123456") == 0x9000
    assert card.process(h(query)) == OK


def test_three_wrong_pins_block_and_the_puk_unblocks() -> None:
    card = new_piv_card()
    assert [verify(card, "999999") for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
    assert verify(card, "123456") == 0x6983
    assert card.process(h("00200080")) == h("6983")
    assert card.state.pin_tries == 0
    wrong_puk = apdu(0, 0x2C, 0, 0x80, pad_reference("87654321") + pad_reference("654321"))
    assert card.process(wrong_puk) == h("63C2")
    assert card.state.puk_tries == 2
    good = apdu(0, 0x2C, 0, 0x80, pad_reference("12345678") + pad_reference("654321"))
    assert card.process(good) == OK
    assert (card.state.pin_tries, card.state.puk_tries) == (3, 3)
    assert verify(card, "123456") == 0x63C2
    assert verify(card, "654321") == 0x9000


def test_a_blocked_puk_stays_blocked() -> None:
    card = new_piv_card()
    bad = apdu(0, 0x2C, 0, 0x80, pad_reference("00000000") + pad_reference("654321"))
    assert [sw(card.process(bad)) for _ in range(4)] == [0x63C2, 0x63C1, 0x63C0, 0x6983]
    good = apdu(0, 0x2C, 0, 0x80, pad_reference("12345678") + pad_reference("654321"))
    assert card.process(good) == h("6983")
    assert card.state.pin == "123456"


def test_change_pin_and_puk() -> None:
    card = new_piv_card()
    assert card.process(apdu(0, 0x24, 0, 0x80, pad_reference("000000") + pad_reference("24681357"))) == h(
        "63C2"
    )
    assert card.process(apdu(0, 0x24, 0, 0x80, pad_reference("123456") + pad_reference("24681357"))) == OK
    assert card.state.pin_tries == 3
    assert verify(card, "24681357") == 0x9000
    assert card.process(apdu(0, 0x24, 0, 0x81, pad_reference("12345678") + pad_reference("11223344"))) == OK
    assert card.state.puk == "11223344"
    assert card.state.defaults_in_place() == ("management key",)


@pytest.mark.parametrize(
    "block",
    ["3132333435FFFFFF", "313233343536FF37", "31323334353637383900", "", "3132333435363738"[:14]],
)
def test_a_malformed_pin_block_is_6a80_and_costs_no_try(block: str) -> None:
    card = new_piv_card()
    resp = card.process(apdu(0, 0x20, 0, 0x80, h(block))) if block else card.process(h("002000800100"))
    assert sw(resp) in (0x6A80, 0x6700)
    assert card.state.pin_tries == 3


def test_a_wrong_pin_is_persisted_before_the_answer_and_a_failed_write_changes_nothing() -> None:
    seen: list[int] = []
    fail = {"on": False}

    def persist(state: PivState) -> None:
        if fail["on"]:
            raise OSError("disk full")
        seen.append(state.pin_tries)

    card = PivCard(PivState(), on_state_change=persist)
    assert verify(card, "999999") == 0x63C2
    assert seen == [2]
    fail["on"] = True
    assert verify(card, "999999") == 0x6581
    assert card.state.pin_tries == 2
    assert verify(card, "123456") == 0x6581  # the reset of the counter cannot be written either
    assert card.process(h("00200080")) == h("63C2")


# -- the management key, key generation and signatures ------------------------------------------


def test_management_key_mutual_and_external_authentication() -> None:
    card = new_piv_card()
    assert mgmt_auth(card, bytes(24)) == 0x6982  # wrong key: the witness does not come back
    assert sw(card.process(apdu(0, 0x47, 0, 0x9A, h("AC03800111"), 0))) == 0x6982
    assert mgmt_auth(card) == 0x9000
    resp = card.process(apdu(0, 0x87, 0x03, 0x9B, h("7C028100"), 0))
    challenge = find(decode(resp[:-2]), 0x81)
    assert challenge is not None
    assert card.process(apdu(0, 0x87, 0x03, 0x9B, encode(0x7C, encode(0x82, bytes(8))))) == h("6982")
    resp = card.process(apdu(0, 0x87, 0x03, 0x9B, h("7C028100"), 0))
    challenge = find(decode(resp[:-2]), 0x81)
    assert challenge is not None
    answer = encode(0x7C, encode(0x82, _tdes(DEFAULT_MGMT_KEY, challenge.value)))
    assert card.process(apdu(0, 0x87, 0x03, 0x9B, answer)) == OK


def test_random_bytes_for_opensc_with_the_default_algorithm_reference_of_the_management_key() -> None:
    """OpenSC's C_GenerateRandom asks the 9B key for a challenge with algorithm reference 00
    (3-key 3DES in SP 800-78-4) and gave CKR_FUNCTION_NOT_SUPPORTED on a 6A86."""
    card = new_piv_card()
    first = card.process(h("0087009B047C02810000"))
    assert sw(first) == 0x9000
    assert first[:4] == h("7C0A8108")
    second = card.process(h("0087009B047C02810000"))
    assert second[4:-2] != first[4:-2]
    assert sw(card.process(h("0087079B047C02810000"))) == 0x6A86  # not a 3DES reference
    # 00 authenticates with the 3DES key like 03
    resp = card.process(h("0087009B047C028000"))
    witness = _tdes(DEFAULT_MGMT_KEY, resp[4:12], decrypt=True)
    body = encode(0x7C, encode(0x80, witness) + encode(0x81, bytes(8)))
    assert sw(card.process(apdu(0, 0x87, 0x00, 0x9B, body, 0))) == 0x9000


def test_p256_key_generated_on_card_signs_after_the_pin_and_the_signature_verifies() -> None:
    card = new_piv_card()
    assert mgmt_auth(card) == 0x9000
    public = generate(card, 0x9A, PivAlgorithm.ECC_P256)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"approve beneficiary FR76...")
    hashed = digest.finalize()
    body = encode(0x7C, encode(0x82, b"") + encode(0x81, hashed))
    assert card.process(apdu(0, 0x87, 0x11, 0x9A, body, 0)) == h("6982")  # PIN first
    assert verify(card, "123456") == 0x9000
    signature = sign(card, 0x9A, PivAlgorithm.ECC_P256, hashed)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, hashed, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert card.process(apdu(0, 0x87, 0x14, 0x9A, body, 0)) == h("6A86")  # not the slot's algorithm


def test_rsa_2048_raw_signature_is_a_valid_pkcs1_signature() -> None:
    key = generate_key(PivAlgorithm.RSA_2048)
    card = new_piv_card(keys={0x9A: key})
    assert verify(card, "123456") == 0x9000
    message = b"new beneficiary"
    digest = hashes.Hash(hashes.SHA256())
    digest.update(message)
    # EMSA-PKCS1-v1_5 block for SHA-256, built here as a host does (RFC 8017 §9.2)
    info = h("3031300d060960864801650304020105000420") + digest.finalize()
    block = b"\x00\x01" + b"\xff" * (256 - len(info) - 3) + b"\x00" + info
    signature = sign(card, 0x9A, PivAlgorithm.RSA_2048, block)
    public = serialization.load_der_private_key(key.der, None).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_slot_9c_needs_the_pin_right_before_each_signature() -> None:
    card = new_piv_card(keys={0x9C: generate_key(PivAlgorithm.ECC_P256)})
    body = encode(0x7C, encode(0x82, b"") + encode(0x81, bytes(32)))
    assert verify(card, "123456") == 0x9000
    assert card.process(apdu(0, 0x87, 0x11, 0x9C, body, 0))[-2:] == OK
    assert card.process(apdu(0, 0x87, 0x11, 0x9C, body, 0)) == h("6982")
    assert verify(card, "123456") == 0x9000
    assert card.process(apdu(0, 0x87, 0x11, 0x9C, body, 0))[-2:] == OK


def test_slot_9e_signs_without_a_pin_and_ecdh_agrees_with_the_host() -> None:
    key = generate_key(PivAlgorithm.ECC_P384)
    card = new_piv_card(keys={0x9E: key, 0x9D: generate_key(PivAlgorithm.ECC_P256)})
    assert (
        card.process(apdu(0, 0x87, 0x14, 0x9E, encode(0x7C, encode(0x82, b"") + encode(0x81, bytes(48))), 0))[
            -2:
        ]
        == OK
    )
    host = ec.generate_private_key(ec.SECP256R1())
    point = host.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    body = encode(0x7C, encode(0x82, b"") + encode(0x85, point))
    assert card.process(apdu(0, 0x87, 0x11, 0x9D, body, 0)) == h("6982")
    assert verify(card, "123456") == 0x9000
    resp = card.process(apdu(0, 0x87, 0x11, 0x9D, body, 0))
    shared = find(decode(resp[:-2]), 0x82)
    assert shared is not None
    card_public = serialization.load_der_private_key(card.state.keys[0x9D].der, None).public_key()
    assert isinstance(card_public, ec.EllipticCurvePublicKey)
    assert shared.value == host.exchange(ec.ECDH(), card_public)


def _certificate(public: ec.EllipticCurvePublicKey) -> bytes:
    ca = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alice Martin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capsim test CA")]))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_put_data_with_command_chaining_stores_a_certificate_behind_the_management_key() -> None:
    card = new_piv_card()
    assert mgmt_auth(card) == 0x9000
    public = generate(card, 0x9A, PivAlgorithm.ECC_P256)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = _certificate(public)
    body = encode(0x5C, h("5FC105")) + encode(0x53, certificate_object(der))
    pieces = [body[i : i + 255] for i in range(0, len(body), 255)]
    for piece in pieces[:-1]:
        assert card.process(bytes([0x10, 0xDB, 0x3F, 0xFF, len(piece)]) + piece) == OK
    assert card.process(bytes([0x00, 0xDB, 0x3F, 0xFF, len(pieces[-1])]) + pieces[-1]) == OK
    stored = read_all(card, get_data(card, 0x5FC105))
    (container,) = decode(stored)  # 53 is a primitive tag holding TLV data (SP 800-73-4)
    assert container.tag == 0x53
    cert_tlv = find(decode(container.value), 0x70)
    assert cert_tlv is not None
    assert x509.load_der_x509_certificate(cert_tlv.value).public_key() == public
    fresh = new_piv_card()
    assert sw(fresh.process(apdu(0, 0xDB, 0x3F, 0xFF, body[:200]))) == 0x6982  # no management key


def test_put_data_of_an_empty_object_deletes_it() -> None:
    """yubico-piv-tool's delete-certificate writes ``53 00``; an empty certificate object left
    behind made its status print "Slot 9c: Parse error." instead of leaving the slot out."""
    card = new_piv_card(objects={0x5FC10A: certificate_object(b"\x30\x00"), 0x5FC105: b"\x70\x00"})
    assert mgmt_auth(card) == 0x9000
    assert card.process(h("00DB3FFF07 5C035FC10A 5300")) == OK
    assert get_data(card, 0x5FC10A) == h("6A82")
    assert 0x5FC10A not in card.state.objects
    assert get_data(card, 0x5FC105) == h("53027000 9000")  # the others stay
    assert card.process(h("00DB3FFF07 5C035FC10B 5300")) == OK  # deleting an absent object: fine


def test_chaining_interrupted_by_another_command_is_refused() -> None:
    card = new_piv_card()
    assert card.process(h("10DB3FFF03") + h("5C0100")) == OK
    assert card.process(h("0020008000")) == h("6985")
    assert card.process(h("0020008000")) == h("63C3")


def test_get_version_and_serial() -> None:
    card = new_piv_card(serial=0x01020304)
    assert card.process(h("00FD000000")) == h("050403 9000")
    assert card.process(h("00F8000000")) == h("01020304 9000")


# -- card files -------------------------------------------------------------------------------


def test_a_piv_card_file_is_private_and_keeps_counters_keys_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    key = generate_key(PivAlgorithm.ECC_P256)
    card = new_piv_card(path=path, keys={0x9A: key}, objects={0x5FC102: b"chuid"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify(card, "000000") == 0x63C2
    with pytest.raises(StateFileError, match="in use"):
        load_piv_card(path, timeout=0.1)
    card.close()
    with load_piv_card(path) as again:
        assert again.state.pin_tries == 2
        assert again.state.keys[0x9A] == key
        assert get_data(again, 0x5FC102) == encode(0x53, b"chuid") + OK
    with pytest.raises(StateFileError, match="already exists"):
        new_piv_card(path=path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t[: len(t) // 2], "corrupt or truncated"),
        (lambda t: t.replace('"pin_tries": 3', '"pin_tries": 4'), "pin_tries"),
        (lambda t: t.replace('"capsim-piv-card"', '"capsim-card"'), "not a capsim PIV card file"),
        (lambda t: t.replace('"serial": 0', '"serial": -1'), "serial"),
    ],
)
def test_a_bad_piv_card_file_is_refused_and_left_alone(tmp_path: Path, edit: object, message: str) -> None:
    path = tmp_path / "token.json"
    new_piv_card(path=path).close()
    text = edit(path.read_text())  # type: ignore[operator]
    path.write_text(text)
    with pytest.raises(StateFileError, match=message):
        load_piv_card(path, timeout=0.1)
    assert path.read_text() == text


def test_state_validation_and_repr_never_show_secrets() -> None:
    with pytest.raises(ValidationError, match="pin"):
        PivState(pin="12")
    with pytest.raises(ValidationError, match="mgmt_key"):
        PivState(mgmt_key=bytes(16))
    state = PivState(pin="24681357", keys={0x9A: generate_key(PivAlgorithm.ECC_P256)})
    assert "24681357" not in repr(state)
    assert "24681357" not in repr(PivCard(state))
    assert PivState.from_dict(state.to_dict()) == state


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_any_bytes_get_a_status_word_and_never_a_key_or_an_object(commands: list[bytes]) -> None:
    card = new_piv_card()
    for raw in commands:
        resp = card.process(raw)
        assert len(resp) >= 2
    # keys and objects need the management key: no byte sequence gets past it by chance
    assert card.state.keys == {}
    assert card.state.objects == {}
