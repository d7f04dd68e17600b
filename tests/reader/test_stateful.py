"""Stateful test: a reader and an emulated card through many CAP runs with right and wrong PINs.

Invariants: the ATC strictly increases with every run that reached GPO and never otherwise; the
PIN try counter falls by one per wrong PIN, resets only on a correct one, and once at zero every
run fails with PinBlockedError without a VERIFY; PinError.tries_left always equals the card's
counter; every code is 8 digits; bad input never touches the card.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from capsim.cards import new_card
from capsim.errors import PinBlockedError, PinError, ValidationError
from capsim.reader import CapReader
from capsim.transports import TracingTransport
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, InProcessTransport

PIN = "2580"
CHALLENGES = st.text("0123456789", min_size=1, max_size=8)
WRONG_PINS = st.text("0123456789", min_size=4, max_size=12).filter(lambda p: p != PIN)


class ReaderAndCard(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.card = new_card("rabobank", pan=TEST_PAN, imk_ac=TEST_IMK_AC, pin=PIN)
        self.transport = TracingTransport(InProcessTransport(self.card))
        self.transport.connect()
        self.reader = CapReader(self.transport)
        self.atc = self.card.state.atc
        self.ptc = 3
        self.codes: list[str] = []

    def _ran(self, result_atc: int | None = None) -> None:
        new_atc = self.card.state.atc
        assert new_atc == self.atc + 1
        if result_atc is not None:
            assert result_atc == new_atc
        self.atc = new_atc

    @precondition(lambda self: self.ptc > 0)
    @rule(challenge=CHALLENGES)
    def respond_right_pin(self, challenge: str) -> None:
        result = self.reader.respond(PIN, challenge)
        assert len(result.code) == 8
        assert result.code.isdigit()
        self._ran(result.atc)
        self.ptc = 3
        self.codes.append(result.code)

    @precondition(lambda self: self.ptc > 0)
    @rule(fields=st.lists(st.text("0123456789", min_size=1, max_size=10), min_size=1, max_size=3))
    def tds_right_pin(self, fields: list[str]) -> None:
        result = self.reader.sign_data(PIN, fields)
        assert result.tds_mac is not None
        self._ran(result.atc)
        self.ptc = 3

    @precondition(lambda self: self.ptc > 0)
    @rule(pin=WRONG_PINS)
    def wrong_pin(self, pin: str) -> None:
        with pytest.raises(PinError) as info:
            self.reader.identify(pin)
        self.ptc -= 1
        assert info.value.tries_left == self.ptc
        self._ran()

    @precondition(lambda self: self.ptc == 0)
    @rule(pin=st.sampled_from([PIN, "0000"]))
    def blocked(self, pin: str) -> None:
        before = len(self.transport.exchanges)
        with pytest.raises(PinBlockedError):
            self.reader.identify(pin)
        assert all(c[1] != 0x20 for c, _ in self.transport.exchanges[before:])
        self._ran()

    @rule(challenge=st.text(min_size=9, max_size=12))
    def bad_challenge(self, challenge: str) -> None:
        before = len(self.transport.exchanges)
        with pytest.raises(ValidationError):
            self.reader.respond(PIN, challenge)
        assert len(self.transport.exchanges) == before
        assert self.card.state.atc == self.atc

    @invariant()
    def card_counter_matches(self) -> None:
        assert self.card.state.ptc == self.ptc
        assert self.card.state.atc == self.atc


TestReaderAndCard = ReaderAndCard.TestCase
# Short runs (the PIN counter cycles within a few steps); the example count follows the profile.
TestReaderAndCard.settings = settings(stateful_step_count=12)
