"""capsim's PIV host client (:mod:`capsim.reader.piv`) against the emulated PIV card: commands,
chaining both ways, status words as typed errors, and signatures checked with pyca/cryptography
from the host's side."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from capsim.apdu.t0 import transmit_with_t0
from capsim.cards import new_card
from capsim.cards.piv import PivAlgorithm, PivCard, certificate_object, new_piv_card
from capsim.cards.piv.personalise import personalise
from capsim.errors import PinBlockedError, PinError, StateFileError, StatusWordError, ValidationError
from capsim.reader.piv import (
    PIN_REF,
    PUK_REF,
    PivClient,
    digest_info,
    pad_reference,
    pkcs1_v15_block,
    reference_error,
    status_error,
)
from capsim.transports import open_transport
from capsim.verifier.certtrust import token_input, verify_signature


@dataclass
class Link:
    """A card link that records every command (and resolves T=0 itself when told to)."""

    card: PivCard
    resolves_t0: bool = False
    sent: list[bytes] = field(default_factory=list)

    def transmit(self, apdu: bytes) -> bytes:
        if self.resolves_t0:
            return transmit_with_t0(self._send, apdu)
        return self._send(apdu)

    def _send(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.card.process(apdu)


def _card(
    algorithm: PivAlgorithm = PivAlgorithm.RSA_2048, **fields: object
) -> tuple[PivCard, dict[int, bytes]]:
    made = personalise(holder="Jane Doe", algorithm=algorithm)
    state = made.state.replace(**fields) if fields else made.state
    card = new_piv_card(state)
    card.power_on()
    return card, {slot: c.public_bytes(Encoding.DER) for slot, c in made.certificates.items()}


@pytest.mark.parametrize("resolves_t0", [False, True], ids=["client-resolves-61xx", "link-resolves-61xx"])
@pytest.mark.parametrize("algorithm", [PivAlgorithm.RSA_2048, PivAlgorithm.ECC_P256, PivAlgorithm.ECC_P384])
def test_certificates_and_signatures_verify_on_the_host_side(
    algorithm: PivAlgorithm, resolves_t0: bool
) -> None:
    card, certs = _card(algorithm)
    link = Link(card, resolves_t0=resolves_t0)
    piv = PivClient(link)
    piv.select()
    assert piv.read_certificate(0x9A) == certs[0x9A]  # an RSA certificate is > 256 bytes: 61xx
    assert piv.read_certificate(0x9C) == certs[0x9C]
    message = b"capsim certificate challenge v1\npurpose=operation\n"
    for slot in (0x9A, 0x9C):
        piv.verify_pin("123456")  # 9C is "PIN always": verified right before each use
        signature = piv.sign_message(slot, message)
        key = x509.load_der_x509_certificate(certs[slot]).public_key()
        assert verify_signature(key, message, signature)
        assert not verify_signature(key, message + b"x", signature)
    if algorithm is PivAlgorithm.RSA_2048:  # the 256-byte block does not fit one short APDU
        chained = [c for c in link.sent if c[0] == 0x10]
        assert chained
        assert {c[1] for c in chained} == {0x87}
        assert all(len(c) == 5 + 255 for c in chained)


def test_the_rsa_block_is_the_one_the_verifier_expects() -> None:
    _, certs = _card(PivAlgorithm.RSA_2048)
    key = x509.load_der_x509_certificate(certs[0x9A]).public_key()
    digest = hashlib.sha256(b"hello").digest()
    assert pkcs1_v15_block("sha256", digest, 256) == token_input(key, b"hello")
    assert digest_info("sha256", digest) == pkcs1_v15_block("sha256", digest, 256)[-51:]
    with pytest.raises(ValidationError):
        pkcs1_v15_block("sha256", digest[:31], 256)
    with pytest.raises(ValidationError):
        digest_info("md5", bytes(16))


def test_signing_needs_the_pin_and_says_so() -> None:
    card, _ = _card()
    piv = PivClient(Link(card))
    piv.select()
    with pytest.raises(StatusWordError, match="verify the PIN first") as info:
        piv.sign_message(0x9C, b"x")
    assert info.value.sw == 0x6982
    piv.verify_pin("123456")
    piv.sign_message(0x9C, b"x")
    with pytest.raises(StatusWordError, match="verify the PIN first"):  # PIN always: used up
        piv.sign_message(0x9C, b"x")


def test_wrong_pins_count_down_then_block_and_the_puk_unblocks() -> None:
    card, _ = _card()
    link = Link(card)
    piv = PivClient(link)
    piv.select()
    assert piv.pin_tries() == 3
    for left in (2, 1):
        with pytest.raises(PinError, match=f"wrong PIN, {left} tr") as wrong:
            piv.verify_pin("000000")
        assert wrong.value.tries_left == left
    with pytest.raises(PinError, match="no tries left: the card's PIN is now blocked") as last:
        piv.verify_pin("000000")
    assert last.value.tries_left == 0
    sent = len(link.sent)
    with pytest.raises(PinBlockedError, match="PIN blocked"):
        piv.pin_tries()
    assert [c[:4].hex() for c in link.sent[sent:]] == ["00200080"]  # an empty VERIFY only
    with pytest.raises(PinBlockedError):
        piv.verify_pin("123456")  # the right PIN does not help any more
    with pytest.raises(PinError, match="wrong PUK, 2 tries left"):
        piv.reset_pin("00000000", "654321")
    piv.reset_pin("12345678", "654321")
    assert card.state.pin == "654321"
    assert card.state.pin_tries == 3
    assert piv.pin_tries() == 3
    piv.verify_pin("654321")
    assert piv.pin_tries() is None  # verified in this session


def test_a_blocked_puk_is_final() -> None:
    card, _ = _card(puk_tries=0, pin_tries=0)
    piv = PivClient(Link(card))
    with pytest.raises(PinBlockedError, match="PUK blocked: nothing can unblock"):
        piv.reset_pin("12345678", "654321")


def test_pin_and_puk_changes() -> None:
    card, _ = _card()
    piv = PivClient(Link(card))
    piv.change_pin("123456", "24682468")
    piv.change_puk("12345678", "87654321")
    assert (card.state.pin, card.state.puk) == ("24682468", "87654321")
    with pytest.raises(PinError, match="wrong PUK, 2 tries left"):
        piv.change_puk("12345678", "11112222")
    with pytest.raises(ValidationError, match="new PIN: expected 6 to 8 digits"):
        piv.change_pin("24682468", "12ab56")


@pytest.mark.parametrize(
    ("sw", "ref", "kind", "text"),
    [
        (0x63C2, PIN_REF, PinError, "wrong PIN, 2 tries left"),
        (0x63C1, PUK_REF, PinError, "wrong PUK, 1 try left"),
        (0x63C0, PUK_REF, PinError, "the PUK is now blocked"),
        (0x6983, PIN_REF, PinBlockedError, "PIN blocked"),
        (0x6983, PUK_REF, PinBlockedError, "PUK blocked"),
        (0x6A80, PIN_REF, StatusWordError, "refused the new PIN"),
        (0x6F00, PIN_REF, StatusWordError, "card answered 6F00 to INS 20"),
    ],
)
def test_status_words_are_typed_errors(sw: int, ref: int, kind: type[Exception], text: str) -> None:
    error = reference_error(sw, 0x20, ref)
    assert type(error) is kind
    assert text in str(error)
    assert error.sw == sw


def test_other_status_words_name_what_failed() -> None:
    assert "no certificate in slot 9D" in str(status_error(0x6A82, 0xCB, "certificate in slot 9D"))
    assert "wrong algorithm" in str(status_error(0x6A86, 0x87))


def test_an_absent_certificate_a_compressed_one_and_a_card_without_piv() -> None:
    card, certs = _card()
    piv = PivClient(Link(card))
    with pytest.raises(StatusWordError, match="no certificate in slot 9D") as info:
        piv.read_certificate(0x9D)
    assert info.value.sw == 0x6A82
    compressed = gzip.compress(certs[0x9A])
    body = certificate_object(compressed).replace(bytes.fromhex("710100"), bytes.fromhex("710101"))
    zipped, _ = _card(objects={0x5FC10B: body})
    assert PivClient(Link(zipped)).read_certificate(0x9D) == certs[0x9A]
    with pytest.raises(ValidationError, match="slot"):
        piv.read_certificate(0x42)
    with (
        open_transport("inproc:secur-acces") as emv,
        pytest.raises(StatusWordError, match="no PIV application on this card"),
    ):
        PivClient(emv).select()


def test_pins_are_checked_before_anything_is_sent() -> None:
    card, _ = _card()
    link = Link(card)
    piv = PivClient(link)
    for bad in ("12345", "123456789", "12 456", "١٢٣٤٥٦"):
        with pytest.raises(ValidationError, match="PIN: expected 6 to 8 digits"):
            piv.verify_pin(bad)
    assert link.sent == []
    assert pad_reference("12345678") == b"12345678"


def test_the_file_transport_opens_piv_card_files_and_still_emv_ones(tmp_path: Path) -> None:
    piv_path = tmp_path / "token.json"
    new_piv_card(personalise(holder="Jane Doe").state, path=piv_path).close()
    with open_transport(f"file:{piv_path}") as link:
        piv = PivClient(link)
        piv.select()
        assert piv.pin_tries() == 3
    emv_path = tmp_path / "card.json"
    new_card("secur-acces", pan="1234567890123456", psn="00", pin="1234", imk_ac=bytes(16),
             imk_smi=bytes(16), imk_smc=bytes(16), path=emv_path).close()  # fmt: skip
    with (
        open_transport(f"file:{emv_path}") as emv,
        pytest.raises(StatusWordError, match="no PIV application"),
    ):
        PivClient(emv).select()
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(StateFileError):
        open_transport(f"file:{tmp_path / 'junk.json'}")
