"""Stateful test: the card (backed by a card file) against a small reference model.

The model tracks ATC, PIN try counter, lifecycle and the transaction phase. Rules drive
SELECT / GPO / VERIFY / GENERATE AC / issuer scripts, power cycles and reloads of the card
file. Invariants: the PTC only falls on a wrong PIN and only resets on a correct PIN or a valid
PIN UNBLOCK script; a blocked PIN stays blocked; the ATC strictly increases across
transactions, power cycles and reloads, and no ATC is ever handed out twice; GENERATE AC
sequencing follows cap-protocol.md §9.3.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from capsim.cards import EmvCapCard, Lifecycle, load_card, new_card
from capsim.sm import build_script_command
from tests.cards.helpers import IMK_A, PAN, gac1_command, gac2_command, h, parse_gac, pin_block, sw

LIMIT = 3
PIN = "1234"


class CardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="capsim-sm-"))
        self.path = self.dir / "card.json"
        self.card: EmvCapCard = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, path=self.path, rng=bytes)
        self.atc = 0
        self.ptc = LIMIT
        self.lifecycle = Lifecycle.ACTIVE
        self.phase = "idle"  # idle | selected | initiated | online | completed
        self.seen_atcs: set[int] = set()
        self.last_gac: tuple[bytes, bytes] | None = None  # (ATC, AC) of this selection's GAC #1

    def teardown(self) -> None:
        self.card.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ rules
    @rule()
    def select(self) -> None:
        aid = self.card.profile.aid
        resp = self.card.process(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00")
        expected = {Lifecycle.ACTIVE: 0x9000, Lifecycle.APP_BLOCKED: 0x6283}[self.lifecycle]
        assert sw(resp) == expected
        self.phase = "selected"
        self.last_gac = None

    @rule()
    def gpo(self) -> None:
        resp = self.card.process(h("80A8000002830000"))
        if self.phase == "selected":
            assert sw(resp) == 0x9000
            self.atc += 1
            self.phase = "initiated"
        else:
            assert resp == h("6985")

    @rule(correct=st.booleans())
    def verify(self, correct: bool) -> None:
        resp = self.card.process(h("0020008008") + pin_block(PIN if correct else "0000"))
        if self.phase != "initiated":
            assert resp == h("6985")
        elif self.ptc == 0:
            assert resp == h("6983")
        elif correct:
            assert resp == h("9000")
            self.ptc = LIMIT
        else:
            self.ptc -= 1
            assert sw(resp) == 0x63C0 | self.ptc

    @rule(p1=st.sampled_from([0x80, 0x40, 0x00]))
    def generate_ac_1(self, p1: int) -> None:
        if self.phase != "initiated":
            return
        resp = self.card.process(gac1_command(self.card, p1=p1))
        assert sw(resp) == 0x9000
        g = parse_gac(resp[:-2])
        atc = int.from_bytes(g.atc, "big")
        assert atc == self.atc
        assert atc not in self.seen_atcs  # no ATC handed out twice
        assert all(atc > s for s in self.seen_atcs)
        self.seen_atcs.add(atc)
        blocked = self.lifecycle is not Lifecycle.ACTIVE
        assert g.cid & 0xC0 == (0x00 if blocked or p1 == 0x00 else 0x80)
        self.phase = "online"
        self.last_gac = (g.atc, g.ac)

    @rule()
    def generate_ac_2(self) -> None:
        resp = self.card.process(gac2_command(self.card))
        if self.phase == "online":
            assert sw(resp) == 0x9000
            assert parse_gac(resp[:-2]).cid & 0xC0 == 0x00
            self.phase = "completed"
        elif self.phase == "initiated":
            assert resp == h("6700")  # taken as GAC #1, whose CDOL1 is 2 bytes shorter
        else:
            assert resp == h("6985")

    @rule(ins=st.sampled_from([0x24, 0x1E, 0x18]), good_mac=st.booleans())
    def script(self, ins: int, good_mac: bool) -> None:
        atc, ac = self.last_gac or (h("0000"), bytes(8))
        p = self.card.profile
        cmd = bytearray(build_script_command(p.cvn, ins=ins, mk_smi=p.mk_smi, atc=atc, arqc=ac))
        if not good_mac:
            cmd[-1] ^= 0x80
        resp = self.card.process(bytes(cmd))
        if self.phase not in ("online", "completed"):
            assert resp == h("6985")
            return
        if not good_mac:
            assert resp == h("6988")
            return
        assert resp == h("9000")
        if ins == 0x24:
            self.ptc = LIMIT
        elif ins == 0x1E:
            self.lifecycle = Lifecycle.APP_BLOCKED
        else:
            self.lifecycle = Lifecycle.ACTIVE

    @rule()
    def get_pin_try_counter(self) -> None:
        resp = self.card.process(h("80CA9F1700"))
        if self.phase in ("idle",):
            assert resp == h("6985")
        else:
            assert resp == h("9F1701") + bytes([self.ptc]) + h("9000")

    @rule()
    def power_cycle(self) -> None:
        self.card.power_off()
        assert self.card.power_on() == self.card.atr
        self.phase = "idle"
        self.last_gac = None

    @rule()
    def reload_card_file(self) -> None:
        self.card.close()
        self.card = load_card(self.path, timeout=1.0, rng=bytes)
        self.phase = "idle"
        self.last_gac = None

    # ------------------------------------------------------------------ invariants
    @invariant()
    def persistent_state_matches_model(self) -> None:
        state = self.card.state
        assert state.atc == self.atc
        assert state.ptc == self.ptc
        assert state.pin == PIN
        assert state.lifecycle is self.lifecycle


CardMachine.TestCase.settings = settings(CardMachine.TestCase.settings, stateful_step_count=30)
TestCardMachine = CardMachine.TestCase
