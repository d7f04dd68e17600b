"""A deliberately broken card for the fuzzer's acceptance test: one planted bug.

:class:`PlantedBugCard` is capsim's emulator with one change on one code path: a wrong PIN of
eight digits or more answers ``63Cx`` as if the PIN try counter had been decremented, but the
counter is never written. A card like this gives an attacker unlimited PIN guesses.
``capsim fuzz card --target py:tests.fuzz.planted:make_card`` must catch it.
"""

from __future__ import annotations

import hmac
from typing import Any

from capsim.cards import EmvCapCard, new_card
from capsim.cards.base import StatusError
from capsim.transports.inprocess import TEST_IMK_AC, TEST_IMK_SMC, TEST_IMK_SMI, TEST_PAN, TEST_PIN


class PlantedBugCard(EmvCapCard):
    """EmvCapCard whose VERIFY forgets to decrement the PTC for long wrong PINs."""

    def _verify(self, cmd: Any) -> bytes:
        block = cmd.data
        if cmd.p1 == 0x00 and cmd.p2 == 0x80 and len(block) == 8 and self.state.ptc > 0:
            text = block.hex().upper()
            n = int(text[1], 16)
            pin = text[2 : 2 + n]
            if text[0] == "2" and n >= 8 and pin.isdigit() and not hmac.compare_digest(pin, self.state.pin):
                raise StatusError(0x63C0 | (self.state.ptc - 1))  # the planted bug: no commit
        return super()._verify(cmd)


def make_card() -> PlantedBugCard:
    """A fresh planted-bug card (secur-acces profile, test keys, PIN 1234)."""
    good = new_card(
        "secur-acces",
        pan=TEST_PAN,
        pin=TEST_PIN,
        imk_ac=TEST_IMK_AC,
        imk_smi=TEST_IMK_SMI,
        imk_smc=TEST_IMK_SMC,
        rng=bytes,
    )
    return PlantedBugCard(good.profile, good.state, rng=bytes)


def make_good_card() -> EmvCapCard:
    """The same card without the bug."""
    return new_card(
        "secur-acces",
        pan=TEST_PAN,
        pin=TEST_PIN,
        imk_ac=TEST_IMK_AC,
        imk_smi=TEST_IMK_SMI,
        imk_smc=TEST_IMK_SMC,
        rng=bytes,
    )
