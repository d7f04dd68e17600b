"""How the card fuzzer learns a card it has no profile of: the reader's application selection,
read-only commands only, and the card's own DF name."""

from __future__ import annotations

import pytest

from capsim.cards import BUILTIN_PROFILES, new_card
from capsim.testing.fuzz_card import CardInfo, discover_card_info, is_state_changing, open_card_target
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN


@pytest.mark.parametrize("profile", sorted(BUILTIN_PROFILES))
def test_discovery_finds_what_the_profile_says_with_read_only_commands(profile: str) -> None:
    card = new_card(profile, pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    card.power_on()
    sent: list[bytes] = []

    def send(apdu: bytes) -> bytes:
        sent.append(apdu)
        return card.process(apdu)

    found = discover_card_info(send, pin="1234")
    known = open_card_target(f"inproc:{profile}").info
    assert (found.aid, found.pdol_length, found.cdol1_length, found.cdol2_length) == (
        known.aid,
        known.pdol_length,
        known.cdol1_length,
        known.cdol2_length,
    )
    assert found.pin == "1234"
    assert sent
    assert not [apdu.hex() for apdu in sent if is_state_changing(apdu)]
    assert card.state.atc == card.profile.initial_atc  # no GPO: no ATC spent


def test_discovery_keeps_the_df_name_of_a_card_selected_by_a_partial_name() -> None:
    """The card answers the known AID A0000000048002 with a longer DF name; the fuzzer then
    selects the card's own name, as the reader does."""
    full = bytes.fromhex("A00000000480020101")
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC, aid=full)
    card.power_on()
    assert discover_card_info(card.process).aid == full


def test_a_card_without_a_cap_application_gets_the_defaults() -> None:
    assert discover_card_info(lambda apdu: b"\x6a\x82") == CardInfo()
