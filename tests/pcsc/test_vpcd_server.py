"""The vpcd card server against a Python stand-in for the vpcd driver (no pcscd needed).

Framing, control bytes, APDU pass-through, partial and coalesced frames, reconnection with
backoff, idle timeout, clean stop and redacted logging (pcsc.md §4).
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from capsim.errors import LocalProtocolError, ValidationError
from capsim.transports.vpcd import (
    DEFAULT_PORT,
    VpcdCardServer,
    VpcdControl,
    decode_frames,
    encode_frame,
    parse_vpcd_address,
)
from tests.pcsc.fakevpcd import FakeVpcd
from tests.pcsc.minicard import ATR_T0, ATR_T1, CAP_AID, INS_COUNTER, INS_ECHO, MiniCard

pytestmark = pytest.mark.timeout(60)

SELECT_CAP = bytes.fromhex("00A4040007") + CAP_AID + b"\x00"
SELECT_OTHER = bytes.fromhex("00A4040007A000000003101000")


@pytest.fixture
def link() -> Iterator[tuple[FakeVpcd, VpcdCardServer, MiniCard]]:
    fake = FakeVpcd()
    card = MiniCard()
    server = VpcdCardServer(card, port=fake.port, backoff_initial=0.01, backoff_max=0.05).start()
    fake.accept()
    assert server.wait_connected(5)
    yield fake, server, card
    server.stop()
    fake.close()


def test_get_atr_is_answered_with_the_framed_atr(link: tuple[FakeVpcd, VpcdCardServer, MiniCard]) -> None:
    fake, _, _ = link
    fake.send(b"\x04")
    assert fake.recv_exact(2) == struct.pack(">H", len(ATR_T1))
    assert fake.recv_exact(len(ATR_T1)) == ATR_T1


def test_power_control_bytes_get_no_reply_and_reach_the_card(
    link: tuple[FakeVpcd, VpcdCardServer, MiniCard],
) -> None:
    fake, _, card = link
    fake.send(bytes([VpcdControl.POWER_ON]))
    fake.send(bytes([VpcdControl.RESET]))
    fake.send(bytes([VpcdControl.POWER_OFF]))
    fake.send(bytes([VpcdControl.POWER_ON]))
    # No reply to the four control messages: the next frame read is the ATR asked for now.
    assert fake.get_atr() == ATR_T1
    assert card.events == ["on", "reset", "off", "on"]


def test_apdus_pass_through_unchanged(link: tuple[FakeVpcd, VpcdCardServer, MiniCard]) -> None:
    fake, server, _ = link
    oracle = MiniCard()
    commands = [
        SELECT_CAP,
        SELECT_OTHER,
        bytes.fromhex("FFA4040000"),  # foreign class
        bytes.fromhex("0012000000"),  # unknown instruction
        bytes([0x00, INS_ECHO, 0, 0, 3, 1, 2, 3]),
        bytes([0x80, INS_COUNTER, 0, 0, 0]),
        bytes([0x80, INS_COUNTER, 0, 0, 0]),
    ]
    for command in commands:
        assert fake.exchange(command) == oracle.process(command)
    assert fake.exchange(SELECT_OTHER)[-2:] == b"\x6a\x82"
    assert server.apdu_count == len(commands) + 1


def test_a_frame_split_across_segments_is_reassembled(
    link: tuple[FakeVpcd, VpcdCardServer, MiniCard],
) -> None:
    fake, _, _ = link
    frame = encode_frame(SELECT_CAP)
    for i in range(len(frame)):
        fake.send_raw(frame[i : i + 1])
        time.sleep(0.002)  # let each byte travel as its own segment
    assert fake.recv_frame() == MiniCard().process(SELECT_CAP)


def test_coalesced_frames_get_one_reply_each_in_order(
    link: tuple[FakeVpcd, VpcdCardServer, MiniCard],
) -> None:
    fake, _, card = link
    stream = b"".join(encode_frame(m) for m in (b"\x01", SELECT_OTHER, b"\x04", SELECT_CAP))
    fake.send_raw(stream)
    assert fake.recv_frame() == b"\x6a\x82"
    assert fake.recv_frame() == ATR_T1
    assert fake.recv_frame()[-2:] == b"\x90\x00"
    assert card.events == ["on"]
    assert card.selected == CAP_AID


_message = st.one_of(
    st.sampled_from([b"\x00", b"\x01", b"\x02", b"\x04"]),
    st.binary(min_size=4, max_size=300),
    st.binary(max_size=255).map(lambda d: bytes([0x00, INS_ECHO, 0, 0, len(d)]) + d),
    st.just(SELECT_CAP),
)


@given(
    messages=st.lists(_message, min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=6),
)
def test_any_message_stream_any_segmentation_matches_the_card(messages: list[bytes], cuts: list[int]) -> None:
    """Property: whatever the segmentation, every reply equals what the card itself answers."""
    fake = FakeVpcd()
    card = MiniCard()
    oracle = MiniCard()
    server = VpcdCardServer(card, port=fake.port, idle_timeout=10).start()
    try:
        fake.accept()
        stream = b"".join(encode_frame(m) for m in messages)
        points = sorted({c % len(stream) for c in cuts} | {0, len(stream)})
        for a, b in itertools.pairwise(points):
            fake.send_raw(stream[a:b])
        for message in messages:
            if len(message) == 1:
                code = message[0]
                if code == VpcdControl.GET_ATR:
                    assert fake.recv_frame() == oracle.atr
                elif code == VpcdControl.POWER_ON:
                    oracle.power_on()
                elif code == VpcdControl.RESET:
                    oracle.reset()
                else:
                    oracle.power_off()
            else:
                assert fake.recv_frame() == oracle.process(message)
        assert fake.get_atr() == oracle.atr  # a barrier: every control byte before it was handled
        assert card.counter == oracle.counter
        assert card.selected == oracle.selected
    finally:
        server.stop()
        fake.close()


def test_reconnects_after_vpcd_drops_the_link_and_powers_the_card_off(
    link: tuple[FakeVpcd, VpcdCardServer, MiniCard],
) -> None:
    fake, server, card = link
    fake.send(b"\x01")
    assert fake.exchange(SELECT_CAP)[-2:] == b"\x90\x00"
    fake.drop()  # pcscd stopped: the card sees EOF
    fake.accept()  # pcscd back: the card plugs itself in again
    assert fake.get_atr() == ATR_T1
    assert server.connections == 2
    assert card.events == ["on", "off"]
    assert card.selected is None  # volatile state is gone …
    fake.send(b"\x01")
    assert fake.exchange(bytes([0x80, INS_COUNTER, 0, 0, 0]))[:2] == b"\x00\x01"


def test_keeps_retrying_with_backoff_until_vpcd_listens() -> None:
    probe = FakeVpcd()
    port = probe.port
    probe.close()  # nothing listens there now: connections are refused
    card = MiniCard()
    server = VpcdCardServer(card, port=port, backoff_initial=0.01, backoff_max=0.1).start()
    try:
        time.sleep(0.3)  # several refused attempts
        assert not server.connected
        fake = FakeVpcd(port)
        try:
            fake.accept(timeout=5)
            assert fake.get_atr() == ATR_T1
            assert server.connections == 1
        finally:
            fake.close()
    finally:
        server.stop()


def test_stop_unplugs_the_card_and_ends_the_thread(link: tuple[FakeVpcd, VpcdCardServer, MiniCard]) -> None:
    fake, server, _ = link
    assert fake.get_atr() == ATR_T1
    server.stop(timeout=5)
    assert fake.at_eof()
    assert not server.connected
    assert server._thread is not None
    assert not server._thread.is_alive()


def test_stop_while_waiting_to_reconnect_returns_promptly() -> None:
    probe = FakeVpcd()
    port = probe.port
    probe.close()
    server = VpcdCardServer(MiniCard(), port=port, backoff_initial=5.0, backoff_max=5.0).start()
    time.sleep(0.05)
    started = time.monotonic()
    server.stop(timeout=3)
    assert server._thread is not None
    assert not server._thread.is_alive()
    assert time.monotonic() - started < 3


class _RaisingCard(MiniCard):
    def process(self, apdu: bytes) -> bytes:
        if apdu[1] == 0x99:
            raise RuntimeError("bug in a card OS")
        return super().process(apdu)


def test_a_card_that_raises_answers_6f00_and_the_link_survives() -> None:
    fake = FakeVpcd()
    server = VpcdCardServer(_RaisingCard(), port=fake.port).start()
    try:
        fake.accept()
        assert fake.exchange(bytes.fromhex("0099000000")) == b"\x6f\x00"
        assert fake.exchange(SELECT_CAP)[-2:] == b"\x90\x00"
    finally:
        server.stop()
        fake.close()


def test_a_silent_vpcd_is_treated_as_dead_after_the_idle_timeout() -> None:
    fake = FakeVpcd()
    server = VpcdCardServer(MiniCard(), port=fake.port, idle_timeout=0.2, backoff_initial=0.01).start()
    try:
        fake.accept()
        first = fake.conn
        assert first is not None
        try:
            fake.accept()  # the server gave up on the silent link and connected again
            assert fake.get_atr() == ATR_T1
            assert server.connections == 2
        finally:
            first.close()
    finally:
        server.stop()
        fake.close()


def test_t0_atr_is_served_as_the_card_gives_it() -> None:
    fake = FakeVpcd()
    server = VpcdCardServer(MiniCard(t0=True), port=fake.port).start()
    try:
        fake.accept()
        assert fake.get_atr() == ATR_T0
        assert fake.exchange(SELECT_CAP) == b"\x61\x0b"
    finally:
        server.stop()
        fake.close()


def test_logs_are_redacted_unless_sensitive_output_is_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    verify = bytes.fromhex("0020008008241234FFFFFFFFFF")
    for show in (False, True):
        caplog.clear()
        fake = FakeVpcd()
        server = VpcdCardServer(MiniCard(), port=fake.port, show_sensitive=show).start()
        try:
            with caplog.at_level(logging.DEBUG, logger="capsim.transports.vpcd"):
                fake.accept()
                fake.exchange(verify)
                fake.exchange(bytes([0x00, INS_ECHO, 0, 0, 4]) + bytes.fromhex("5413330089"))
        finally:
            server.stop()
            fake.close()
        text = caplog.text
        assert "00200080" in text  # the header is always there
        assert ("241234" in text) is show
        assert ("54133300" in text) is show


def test_server_socket_has_nodelay_set(link: tuple[FakeVpcd, VpcdCardServer, MiniCard]) -> None:
    _, server, _ = link
    sock = server._sock
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@given(st.lists(st.binary(max_size=600), max_size=8), st.integers(min_value=0, max_value=5000))
def test_decode_frames_inverts_encode_frame_at_any_cut(payloads: list[bytes], cut: int) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cut = min(cut, len(stream))
    first, rest = decode_frames(stream[:cut])
    second, tail = decode_frames(rest + stream[cut:])
    assert first + second == payloads
    assert tail == b""


def test_encode_frame_rejects_oversized_payloads() -> None:
    with pytest.raises(ValidationError, match="payload"):
        encode_frame(bytes(0x10000))


@pytest.mark.parametrize(
    ("spec", "slot", "expected"),
    [
        ("127.0.0.1:35963", 0, ("127.0.0.1", 35963)),
        ("localhost:40000", 1, ("localhost", 40001)),
        ("[::1]:35963", 0, ("::1", 35963)),
    ],
)
def test_parse_vpcd_address(spec: str, slot: int, expected: tuple[str, int]) -> None:
    assert parse_vpcd_address(spec, slot=slot) == expected


@pytest.mark.parametrize(
    ("spec", "slot", "word"),
    [
        ("35963", 0, "vpcd"),
        (":35963", 0, "vpcd"),
        ("host:port", 0, "vpcd"),
        ("host:\u0663\u0665\u0669\u0666\u0663", 0, "vpcd"),  # Arabic-Indic digits: int() would take them
        ("host:0", 0, "vpcd"),
        ("host:65535", 1, "vpcd"),
        ("host:35963", 2, "slot"),
        ("host:35963", -1, "slot"),
    ],
)
def test_parse_vpcd_address_rejects_bad_input(spec: str, slot: int, word: str) -> None:
    with pytest.raises(ValidationError, match=word):
        parse_vpcd_address(spec, slot=slot)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"slot": 2}, "slot"),
        ({"port": 65535, "slot": 1}, "port"),
        ({"backoff_initial": 0}, "backoff"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "backoff"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"reinsert_gap": -0.1}, "reinsert_gap"),
        ({"connect_timeout": -1}, "connect_timeout"),
    ],
)
def test_server_rejects_bad_parameters(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ValidationError, match=word):
        VpcdCardServer(MiniCard(), **kwargs)  # type: ignore[arg-type]


def test_default_address_is_the_debian_vpcd_entry() -> None:
    server = VpcdCardServer(MiniCard())
    assert server.address == ("127.0.0.1", DEFAULT_PORT)
    assert VpcdCardServer(MiniCard(), slot=1).address == ("127.0.0.1", DEFAULT_PORT + 1)


class VpcdLinkMachine(RuleBasedStateMachine):
    """Stateful: any sequence of power control, APDUs and link drops keeps the served card
    equal to a model card driven directly (durable counter kept, volatile state cleared)."""

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeVpcd()
        self.card = MiniCard()
        self.model = MiniCard()
        self.server = VpcdCardServer(
            self.card, port=self.fake.port, backoff_initial=0.01, backoff_max=0.05, reinsert_gap=0.0
        ).start()
        self.fake.accept()

    def teardown(self) -> None:
        self.server.stop()
        self.fake.close()

    @rule(code=st.sampled_from([VpcdControl.POWER_OFF, VpcdControl.POWER_ON, VpcdControl.RESET]))
    def control(self, code: VpcdControl) -> None:
        self.fake.send(bytes([code]))
        {
            VpcdControl.POWER_OFF: self.model.power_off,
            VpcdControl.POWER_ON: self.model.power_on,
            VpcdControl.RESET: self.model.reset,
        }[code]()

    @rule(
        command=st.sampled_from(
            [SELECT_CAP, SELECT_OTHER, bytes([0x80, INS_COUNTER, 0, 0, 0]), bytes.fromhex("805E000000")]
        )
    )
    def apdu(self, command: bytes) -> None:
        assert self.fake.exchange(command) == self.model.process(command)

    @rule()
    def link_drops(self) -> None:
        self.fake.drop()  # pcscd went away: the card is unplugged and powered off …
        self.model.power_off()
        self.fake.accept()  # … and plugs itself in again

    @invariant()
    def same_state_after_a_barrier(self) -> None:
        assert self.fake.get_atr() == self.model.atr
        assert self.card.counter == self.model.counter
        assert self.card.selected == self.model.selected


TestVpcdLink = VpcdLinkMachine.TestCase
TestVpcdLink.settings = settings(stateful_step_count=25)  # examples from the active profile


def test_starting_a_running_server_again_is_refused(link: tuple[FakeVpcd, VpcdCardServer, MiniCard]) -> None:
    _, server, _ = link
    with pytest.raises(LocalProtocolError, match="already running"):
        server.start()


class _PowerFailingCard(MiniCard):
    def power_on(self) -> bytes:
        raise RuntimeError("bug in a card OS")

    def power_off(self) -> None:
        raise RuntimeError("bug in a card OS")


def test_a_card_failing_power_control_keeps_the_link_and_the_server_alive() -> None:
    fake = FakeVpcd()
    server = VpcdCardServer(_PowerFailingCard(), port=fake.port, backoff_initial=0.01, reinsert_gap=0).start()
    try:
        fake.accept()
        fake.send(b"\x01")
        fake.send(b"\x00")
        assert fake.exchange(SELECT_CAP)[-2:] == b"\x90\x00"
        fake.drop()  # power_off raises again on unplugging: the server still reconnects
        fake.accept()
        assert fake.get_atr() == ATR_T1
    finally:
        server.stop()
        fake.close()
