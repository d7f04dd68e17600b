"""The reader's transaction without cardholder verification (``CapReader.issuer_request``): the
ARQC and ATC an issuer script is built from, on a card whose PIN is blocked, with no VERIFY."""

from __future__ import annotations

import pytest

from capsim.cap import CapMode
from capsim.errors import PinBlockedError, PinError
from capsim.reader import CapReader, CapSession, Phase
from capsim.transports import TracingTransport, open_transport

_VERIFY = 0x20
_GENERATE_AC = 0xAE


def _block_pin(link: TracingTransport) -> None:
    for _ in range(3):
        with pytest.raises((PinError, PinBlockedError)):
            CapReader(link).identify("0000")


def test_issuer_request_sends_no_verify_and_gives_the_arqc_of_a_pin_blocked_card() -> None:
    with open_transport("inproc:secur-acces") as card:
        link = TracingTransport(card)
        _block_pin(link)
        with pytest.raises(PinBlockedError):
            CapReader(link).identify("1234")  # a CAP run with a PIN still stops
        link.exchanges.clear()
        request = CapReader(link).issuer_request()
    sent = [cmd for cmd, _ in link.exchanges]
    assert not [cmd for cmd in sent if cmd[1] == _VERIFY]
    first_ac = next(rsp for cmd, rsp in link.exchanges if cmd[1] == _GENERATE_AC)
    assert first_ac[-2:] == b"\x90\x00"
    assert request.mode is CapMode.IDENTIFY
    assert request.cid & 0xC0 == 0x80  # an ARQC
    assert len(request.cryptogram) == 8
    assert request.cryptogram in first_ac  # the card's own cryptogram, as the card sent it
    assert request.atc.to_bytes(2, "big") in first_ac
    assert any("0 PIN tries" in w or "only 0" in w for w in request.warnings)


def test_a_session_without_a_pin_goes_from_the_try_counter_to_the_cryptogram() -> None:
    from capsim.apdu.response import ResponseApdu

    with open_transport("inproc:natwest") as card:
        session = CapSession(CapMode.IDENTIFY, pin=None)
        phases = []
        while (command := session.next_apdu()) is not None:
            phases.append(session.phase)
            session.receive(ResponseApdu.from_bytes(card.transmit(command)))
    assert Phase.VERIFY not in phases
    at = phases.index(Phase.GET_PTC)
    assert phases[at + 1] is Phase.FIRST_AC
    assert session.result.code.isdigit()
