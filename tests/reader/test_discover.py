"""``capsim.reader.discover``: the reader's own session, stopped before the first GENERATE AC."""

from __future__ import annotations

import pytest

from capsim.cards import BUILTIN_PROFILES, new_card
from capsim.errors import PinBlockedError, PinError, StatusWordError
from capsim.profiles import AID_MASTERCARD_CAP
from capsim.reader import CapReader, ProfileSource, discover
from capsim.reader.discover import profile_source
from capsim.transports import TracingTransport
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, InProcessTransport

_VERIFY, _GENERATE_AC = 0x20, 0xAE


@pytest.mark.parametrize("template", sorted(BUILTIN_PROFILES))
def test_discovery_never_sends_verify_or_generate_ac(template: str) -> None:
    card = new_card(template, pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    link = TracingTransport(InProcessTransport(card), redact=False)
    with link:
        summary = discover(link)
    sent = [command[1] for command, _ in link.exchanges]
    assert _VERIFY not in sent
    assert _GENERATE_AC not in sent
    assert sent[-1] == 0xCA  # GET DATA 9F17 is the last command
    assert summary.aid == card.profile.aid
    assert summary.data[0x8C] == card.profile.cdol1
    assert summary.data.get(0x9F56) == (card.profile.ipb or None)
    assert summary.pin_tries == card.state.ptc == card.profile.pin_try_limit  # tries left
    assert summary.profile_source is ProfileSource.AID
    assert card.state.atc == 1  # GET PROCESSING OPTIONS counts, nothing else does


def test_discovery_reads_a_blocked_pin_card_and_reports_zero_tries() -> None:
    card = new_card("natwest", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    with InProcessTransport(card) as link:
        for _ in range(3):
            with pytest.raises((PinError, PinBlockedError)):
                CapReader(link).identify("9999")
        summary = discover(link)
    assert summary.pin_tries == 0


def test_a_given_profile_and_an_explicit_aid() -> None:
    card = new_card("barclays", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    with InProcessTransport(card) as link:
        summary = discover(link, "visa-dpa")
        assert (summary.profile, summary.profile_source) == ("visa-dpa", ProfileSource.GIVEN)
        templated = discover(link, "visa-dpa", from_template=True)
        assert templated.profile_source is ProfileSource.TEMPLATE
        with pytest.raises(StatusWordError) as info:  # the card has no such application
            discover(link, aid=AID_MASTERCARD_CAP)
    assert info.value.sw == 0x6A82


def test_profile_source_is_a_function_of_the_aid_and_the_choice() -> None:
    mc = AID_MASTERCARD_CAP
    assert profile_source(mc, "mc-cap", given=False) is ProfileSource.AID
    assert profile_source(mc, "visa-dpa", given=False) is ProfileSource.FALLBACK
    assert profile_source(bytes.fromhex("A0000009999999"), "mc-cap", given=False) is ProfileSource.FALLBACK
    assert profile_source(mc, "visa-dpa", given=True) is ProfileSource.GIVEN
    assert profile_source(mc, "mc-cap", given=True, template=True) is ProfileSource.TEMPLATE
