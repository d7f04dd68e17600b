"""The whole PC/SC chain with a small test card: pyscard → pcscd → vpcd → VpcdCardServer → card.

Real pcscd, real vpcd driver, real pyscard and opensc-tool (pcsc.md §3–§5). Every PC/SC call
is bounded: the transport's own worker-thread timeout, ``call_with_timeout`` for direct
pyscard calls, and a pytest-timeout per test.
"""

from __future__ import annotations

import threading

import pytest

from capsim.errors import (
    CardRemovedError,
    NoCardError,
    PcscUnavailableError,
    ReaderAmbiguousError,
    ReaderNotFoundError,
    TransportTimeoutError,
)
from capsim.transports.pcsc import PcscTransport, list_readers
from tests.pcsc.conftest import ServeFactory, run_opensc_tool
from tests.pcsc.minicard import (
    ATR_T0,
    ATR_T1,
    CAP_AID,
    INS_BLOCK,
    INS_COUNTER,
    INS_ECHO,
    INS_SELECTED,
    MiniCard,
)
from tests.pcsc.stack import PcscdStack, call_with_timeout, card_present, wait_card

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(60)]

SELECT_CAP = bytes.fromhex("00A4040007") + CAP_AID + b"\x00"
SELECT_VISA = bytes.fromhex("00A4040007A000000003101000")
COUNTER = bytes([0x80, INS_COUNTER, 0, 0, 0])
SELECTED = bytes([0x80, INS_SELECTED, 0, 0, 0])


def test_pyscard_lists_the_two_virtual_readers(stack: PcscdStack) -> None:
    assert call_with_timeout(list_readers, 10) == stack.readers
    from smartcard.System import readers

    assert [str(r) for r in call_with_timeout(readers, 10)] == stack.readers


def test_apdus_round_trip_through_pcscd_and_vpcd(stack: PcscdStack, serve: ServeFactory) -> None:
    card = MiniCard()
    serve(card)
    with PcscTransport("CAPSIM Virtual 00 00", timeout=10) as transport:
        assert transport.atr == ATR_T1
        assert transport.protocol == "T=1"
        assert transport.reader_name == stack.readers[0]
        response = transport.transmit(SELECT_CAP)
        assert response == card.process(SELECT_CAP)
        assert response[-2:] == b"\x90\x00"
        assert transport.transmit(SELECT_VISA) == b"\x6a\x82"
        assert transport.transmit(bytes.fromhex("FFA4040000")) == b"\x6e\x00"
        assert transport.transmit(bytes.fromhex("0012000000")) == b"\x6d\x00"
        big = bytes(range(255))
        assert transport.transmit(bytes([0, INS_ECHO, 0, 0, 255]) + big + b"\x00") == big + b"\x90\x00"


def test_t0_card_get_response_and_wrong_le_are_resolved(serve: ServeFactory) -> None:
    serve(MiniCard(t0=True))
    with PcscTransport("00 00", timeout=10) as transport:
        assert transport.atr == ATR_T0
        assert transport.protocol == "T=0"
        # 61xx → GET RESPONSE inside the transport: the caller sees the FCI and 9000.
        fci = transport.transmit(SELECT_CAP)
        assert fci[-2:] == b"\x90\x00"
        assert CAP_AID in fci
        # 6Cxx → re-sent with the right Le.
        assert transport.transmit(bytes([0, INS_ECHO, 0, 0, 3, 7, 8, 9, 5])) == b"\x07\x08\x09\x90\x00"


def test_opensc_tool_gets_6a82_for_an_unknown_aid(stack: PcscdStack, serve: ServeFactory) -> None:
    serve(MiniCard())
    out = run_opensc_tool("00 A4 04 00 07 A0 00 00 00 03 10 10 00", SELECT_CAP.hex(" "))
    assert "SW1=0x6A, SW2=0x82" in out
    assert "SW1=0x90, SW2=0x00" in out


def test_two_cards_on_the_two_slots_chosen_by_name(stack: PcscdStack, serve: ServeFactory) -> None:
    serve(MiniCard(label=b"one"), slot=0)
    serve(MiniCard(label=b"two"), slot=1)
    with PcscTransport("Virtual 00 01", timeout=10) as transport:
        assert transport.transmit(COUNTER) == b"\x00\x01two\x90\x00"
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        assert transport.transmit(COUNTER) == b"\x00\x01one\x90\x00"
    with pytest.raises(ReaderAmbiguousError) as info:
        PcscTransport("capsim", timeout=10).connect()
    assert info.value.candidates == stack.readers
    with pytest.raises(ReaderNotFoundError, match="CAPSIM Virtual 00 00"):
        PcscTransport("Omnikey", timeout=10).connect()


def test_a_reader_without_a_card_is_no_card(stack: PcscdStack) -> None:
    assert not call_with_timeout(lambda: card_present(stack.readers[1]), 10)
    with pytest.raises(NoCardError):
        PcscTransport(stack.readers[1], timeout=10).connect()


def test_a_card_removed_between_commands(stack: PcscdStack, serve: ServeFactory) -> None:
    card = MiniCard()
    server = serve(card)
    transport = PcscTransport(stack.readers[0], timeout=10)
    transport.connect()
    try:
        assert transport.transmit(COUNTER)[:2] == b"\x00\x01"
        server.stop()
        wait_card(stack.readers[0], present=False, timeout=5)
        with pytest.raises(CardRemovedError):
            transport.transmit(COUNTER)
        with pytest.raises(CardRemovedError):  # the session stays closed, still no traceback
            transport.transmit(COUNTER)
    finally:
        transport.disconnect()
    serve(card)  # put it back: a new session works and durable state went on counting
    with PcscTransport(stack.readers[0], timeout=10) as again:
        assert again.transmit(COUNTER)[:2] == b"\x00\x02"


def test_server_stopped_mid_transaction_then_the_next_transaction_works(
    stack: PcscdStack, serve: ServeFactory
) -> None:
    card = MiniCard()
    server = serve(card)
    card.block_release.set()  # the blocking command returns at once …
    card.on_block = lambda: server.stop(timeout=0)  # … after the link was cut under it
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        assert transport.transmit(SELECT_CAP)[-2:] == b"\x90\x00"
        with pytest.raises(CardRemovedError):
            transport.transmit(bytes([0x80, INS_BLOCK, 0, 0, 0]))
    card.on_block = None
    wait_card(stack.readers[0], present=False, timeout=5)
    serve(card)
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        assert transport.transmit(SELECT_CAP)[-2:] == b"\x90\x00"


def test_a_card_that_never_answers_times_out(stack: PcscdStack, serve: ServeFactory) -> None:
    card = MiniCard()
    serve(card)
    entered = threading.Event()
    card.on_block = entered.set
    transport = PcscTransport(stack.readers[0], timeout=0.5)
    transport.connect()
    try:
        with pytest.raises(TransportTimeoutError, match="did not answer"):
            transport.transmit(bytes([0x80, INS_BLOCK, 0, 0, 0]))
        assert entered.is_set()
        with pytest.raises(CardRemovedError):  # the abandoned session is not reused
            transport.transmit(SELECT_CAP)
    finally:
        card.block_release.set()  # let the stuck exchange finish so pcscd frees the reader
        transport.disconnect()
    with PcscTransport(stack.readers[0], timeout=10) as again:
        assert again.transmit(SELECT_CAP)[-2:] == b"\x90\x00"


def test_pcscd_not_running_is_pcsc_unavailable(stack: PcscdStack) -> None:
    stack.stop()
    with pytest.raises(PcscUnavailableError, match="pcscd"):
        call_with_timeout(list_readers, 10)
    with pytest.raises(PcscUnavailableError):
        PcscTransport("CAPSIM", timeout=10).connect()
    stack.start()
    assert call_with_timeout(list_readers, 10) == stack.readers


def test_the_server_survives_a_pcscd_restart(stack: PcscdStack, serve: ServeFactory) -> None:
    card = MiniCard()
    server = serve(card)
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        assert transport.transmit(COUNTER)[:2] == b"\x00\x01"
    stack.restart()
    wait_card(stack.readers[0], present=True, timeout=10)
    assert server.connections == 2
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        assert transport.transmit(COUNTER)[:2] == b"\x00\x02"


def test_power_cycles_keep_durable_state_and_clear_volatile_state(
    stack: PcscdStack, serve: ServeFactory
) -> None:
    card = MiniCard()
    serve(card)
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        transport.transmit(SELECT_CAP)
        assert transport.transmit(SELECTED) == b"\x01\x90\x00"
        assert transport.transmit(COUNTER)[:2] == b"\x00\x01"
    # disconnect() unpowers the card; connect() powers it on again
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        assert transport.transmit(SELECTED) == b"\x00\x90\x00"
        assert transport.transmit(COUNTER)[:2] == b"\x00\x02"
    assert "off" in card.events
    assert card.events.count("on") >= 2
