"""T=0 continuation against a scripted responder (61xx chains, 6Cxx, endless 61xx)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.apdu import T0Exchange, transmit_with_t0
from capsim.errors import LocalProtocolError, RemoteProtocolError, ValidationError

H = bytes.fromhex


class Scripted:
    """A card that answers from a fixed list and records every command it got."""

    def __init__(self, *answers: str) -> None:
        self.answers = [H(a) for a in answers]
        self.sent: list[bytes] = []

    def __call__(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        if not self.answers:
            raise AssertionError(f"unexpected command {apdu.hex()}")
        return self.answers.pop(0)


def test_plain_9000_passes_through() -> None:
    card = Scripted("9F1701039000")
    assert transmit_with_t0(card, H("80CA9F1700")) == H("9F1701039000")
    assert card.sent == [H("80CA9F1700")]


def test_error_sw_passes_through() -> None:
    card = Scripted("6A82")
    assert transmit_with_t0(card, H("00A4040007A000000004800200")) == H("6A82")


def test_61xx_fetched_with_get_response() -> None:
    fci = "6F108407A0000000048002A5055F2D02656E"
    card = Scripted("6112", fci + "9000")
    assert transmit_with_t0(card, H("00A4040007A0000000048002")) == H(fci + "9000")
    assert card.sent[1] == H("00C0000012")


def test_61xx_chain_is_concatenated() -> None:
    card = Scripted("6104", "AABBCCDD6102", "EEFF6101", "119000")
    assert transmit_with_t0(card, H("80AE80000100")) == H("AABBCCDDEEFF119000")
    assert card.sent[1:] == [H("00C0000004"), H("00C0000002"), H("00C0000001")]


def test_6100_asks_for_256_bytes() -> None:
    card = Scripted("6100", "00" * 256 + "9000")
    assert transmit_with_t0(card, H("80CA9F1700")) == bytes(256) + H("9000")
    assert card.sent[1] == H("00C0000000")


def test_6cxx_resends_with_le() -> None:
    card = Scripted("6C04", "9F1701039000")
    assert transmit_with_t0(card, H("80CA9F1700")) == H("9F1701039000")
    assert card.sent == [H("80CA9F1700"), H("80CA9F1704")]


def test_6cxx_on_case_1_and_case_3_adds_le() -> None:
    card = Scripted("6C08", "01020304050607089000")
    transmit_with_t0(card, H("00840000"))
    assert card.sent[1] == H("0084000008")
    card = Scripted("6C10", "9000")
    transmit_with_t0(card, H("80AE800002AABB"))
    assert card.sent[1] == H("80AE800002AABB10")


def test_6cxx_then_61xx() -> None:
    card = Scripted("6C00", "6102", "ABCD9000")
    assert transmit_with_t0(card, H("00B2010C10")) == H("ABCD9000")
    assert card.sent == [H("00B2010C10"), H("00B2010C00"), H("00C0000002")]


def test_second_6cxx_in_a_row_is_a_protocol_error() -> None:
    card = Scripted("6C04", "6C05")
    with pytest.raises(RemoteProtocolError, match="again"):
        transmit_with_t0(card, H("80CA9F1700"))
    assert len(card.sent) == 2


def test_6cxx_to_get_response_is_handled_once() -> None:
    card = Scripted("6104", "6C03", "AABBCC9000")
    assert transmit_with_t0(card, H("80CA9F1700")) == H("AABBCC9000")
    assert card.sent[1:] == [H("00C0000004"), H("00C0000003")]


def test_6cxx_for_unparseable_command() -> None:
    card = Scripted("6C04")
    with pytest.raises(RemoteProtocolError, match="cannot be re-sent"):
        transmit_with_t0(card, H("00A4"))


def test_endless_61xx_is_bounded() -> None:
    sent: list[bytes] = []

    def endless(apdu: bytes) -> bytes:
        sent.append(apdu)
        return H("AA6101")

    with pytest.raises(RemoteProtocolError, match="more than 32"):
        transmit_with_t0(endless, H("80CA9F1700"))
    assert len(sent) == 1 + 32


@pytest.mark.parametrize("bound", [0, 1, 5])
def test_custom_bound(bound: int) -> None:
    chain = ["6101"] * bound + ["9000"]
    assert transmit_with_t0(Scripted(*chain), H("00B2010C00"), max_get_response=bound) == H("9000")
    with pytest.raises(RemoteProtocolError):
        transmit_with_t0(Scripted(*(["6101"] * (bound + 1))), H("00B2010C00"), max_get_response=bound)


@pytest.mark.parametrize("answer", ["", "90"])
def test_response_without_sw(answer: str) -> None:
    with pytest.raises(RemoteProtocolError, match="no status word"):
        transmit_with_t0(Scripted(answer), H("00B2010C00"))


def test_transport_errors_propagate() -> None:
    class BoomError(Exception):
        pass

    def send(apdu: bytes) -> bytes:
        raise BoomError

    with pytest.raises(BoomError):
        transmit_with_t0(send, H("00B2010C00"))


def test_argument_validation() -> None:
    with pytest.raises(ValidationError, match="max_get_response"):
        transmit_with_t0(Scripted(), H("00B2010C00"), max_get_response=-1)
    with pytest.raises(ValidationError, match="apdu must be bytes"):
        transmit_with_t0(Scripted(), "00B2010C00")  # type: ignore[arg-type]


def test_sans_io_exchange() -> None:
    x = T0Exchange(H("80CA9F1700"))
    assert x.result is None
    assert x.next_command() == H("80CA9F1700")
    x.receive(H("6C04"))
    assert x.next_command() == H("80CA9F1704")
    x.receive(H("6102"))
    assert x.get_responses == 1
    assert x.next_command() == H("00C0000002")
    x.receive(H("01029000"))
    assert x.next_command() is None
    assert x.result == H("01029000")
    with pytest.raises(LocalProtocolError):
        x.receive(H("9000"))


@given(st.lists(st.binary(min_size=0, max_size=20), min_size=1, max_size=10), st.binary(max_size=10))
def test_chains_reassemble(chunks: list[bytes], first: bytes) -> None:
    # The card returns ``first`` + 61xx, then each chunk in turn, the last with 9000.
    answers = [(first + bytes((0x61, len(chunks[0])))).hex()]
    for i, chunk in enumerate(chunks):
        if i + 1 < len(chunks):
            answers.append((chunk + bytes((0x61, len(chunks[i + 1])))).hex())
        else:
            answers.append((chunk + H("9000")).hex())
    card = Scripted(*answers)
    out = transmit_with_t0(card, H("00B2010C00"))
    assert out == first + b"".join(chunks) + H("9000")
    assert len(card.sent) == 1 + len(chunks)
    assert not card.answers

