"""The reusable state machines run green on capsim's own components (capsim.testing.machines)."""

from __future__ import annotations

from hypothesis import settings

from capsim.testing.machines import CardMachine, CardReaderVerifierMachine, ReaderCardMachine


class BarclaysCardMachine(CardMachine):
    card_profile = "barclays"


TestSecurAccesCard = CardMachine.TestCase
TestSecurAccesCard.settings = settings(TestSecurAccesCard.settings, stateful_step_count=15)
TestBarclaysCard = BarclaysCardMachine.TestCase
TestBarclaysCard.settings = settings(TestBarclaysCard.settings, stateful_step_count=15)
TestReaderCard = ReaderCardMachine.TestCase
TestReaderCard.settings = settings(TestReaderCard.settings, stateful_step_count=8)
TestCardReaderVerifier = CardReaderVerifierMachine.TestCase
TestCardReaderVerifier.settings = settings(TestCardReaderVerifier.settings, stateful_step_count=4)
