"""Replay the synthetic card transcripts (vectors/cards/) and recompute their cryptograms with pyemv."""

from __future__ import annotations

import pytest
from pyemv import cvn as pyemv_cvn

from capsim.cards import new_card
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, parse_gac
from tests.utils import load_transcript

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

_ORACLES = {"secur-acces": pyemv_cvn.MasterCardCVN16, "visa-dpa": pyemv_cvn.VisaCVN10}


@pytest.mark.parametrize("name", sorted(_ORACLES))
def test_replay_and_recompute(name: str) -> None:
    t = load_transcript(f"cards/{name}-synthetic.txt")
    card = new_card(
        t.meta["PROFILE"], pan=t.meta["PAN"], psn=t.meta["PSN"], imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C
    )
    assert card.profile.mk_ac == bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")  # MK(BAB0)
    assert card.power_on() == t.atr
    oracle = _ORACLES[name](IMK_A, IMK_B, IMK_C, t.meta["PAN"], t.meta["PSN"])
    arqcs = 0
    for command, expected in t.exchanges:
        assert card.process(command) == expected, command.hex().upper()
        if command[:3] == bytes.fromhex("80AE80"):
            g = parse_gac(expected[:-2])
            d = command[5:34]
            fields = (d[0:6], d[6:12], d[12:14], d[14:19], d[19:21], d[21:24], d[24:25], d[25:29],
                      card.profile.aip, g.atc)  # fmt: skip
            cvr = g.iad[3:7] if name == "visa-dpa" else g.iad[2:8]
            assert oracle.generate_ac(*fields, cvr) == g.ac
            arqcs += 1
    assert arqcs == 2
