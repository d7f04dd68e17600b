"""Reusable Hypothesis state machines (architecture.md §8 (3)).

Subclass one in a test module and expose its ``TestCase``::

    from capsim.testing.machines import CardMachine

    class MyCardMachine(CardMachine):
        def make_card(self):
            return my_emulator()        # any capsim.cards.CardOS
        card_pin = "0000"

    TestMyCard = MyCardMachine.TestCase

:class:`CardMachine`
    Any card against :class:`capsim.testing.model.CardModel`: SELECT, GPO, VERIFY (right and
    wrong PINs), GET DATA, GENERATE AC, scripts, random APDUs and power cycles; for a capsim
    :class:`~capsim.cards.EmvCapCard` also the model against the card's stored state.
:class:`ReaderCardMachine`
    capsim's reader against a card: every CAP mode with random inputs and wrong PINs. The ATC
    strictly increases with every code, codes are digits, the PTC follows cap-protocol.md §9.5.
:class:`CardReaderVerifierMachine`
    card → reader → verifier: the step programs of :mod:`capsim.testing.fuzz_verifier` one
    step per rule, with the V41 invariants after each. Override :meth:`make_store` to run it
    on another store.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from capsim.cards import EmvCapCard, new_card
from capsim.cards.base import CardOS
from capsim.errors import CapsimError, PinBlockedError, PinError
from capsim.testing.fuzz_card_target import CardInfo, _profile_info
from capsim.testing.model import CardModel
from capsim.testing.strategies import (
    amounts,
    challenges,
    currencies,
    emv_commands,
    pin_blocks,
    pins,
    raw_apdus,
    tds_fields,
)
from capsim.transports.inprocess import (
    TEST_IMK_AC,
    TEST_IMK_SMC,
    TEST_IMK_SMI,
    TEST_PAN,
    TEST_PIN,
    InProcessTransport,
)

__all__ = ["CardMachine", "CardReaderVerifierMachine", "ReaderCardMachine"]


def _test_card(profile: str, pin: str = TEST_PIN) -> EmvCapCard:
    return new_card(
        profile, pan=TEST_PAN, pin=pin, imk_ac=TEST_IMK_AC, imk_smi=TEST_IMK_SMI, imk_smc=TEST_IMK_SMC,
        rng=bytes,
    )  # fmt: skip


class CardMachine(RuleBasedStateMachine):
    """A card against the reference model (module docstring).

    Class attributes to override: :attr:`card_profile` (built-in profile of the default
    card), :attr:`card_pin` (the correct PIN, or ``None`` when unknown); method
    :meth:`make_card` (any :class:`~capsim.cards.CardOS`) and :meth:`card_info`.
    """

    card_profile = "secur-acces"
    card_pin: str | None = TEST_PIN

    def __init__(self) -> None:
        super().__init__()
        self.card = self.make_card()
        self.info = self.card_info(self.card)
        self.card.power_on()
        self.model = CardModel(aid=self.info.aid, pin=self.card_pin, pin_try_limit=self.info.pin_try_limit)
        aid = self.info.aid
        self.select_apdu = bytes((0x00, 0xA4, 0x04, 0x00, len(aid))) + aid + b"\x00"
        n = self.info.pdol_length
        self.gpo_apdu = bytes((0x80, 0xA8, 0, 0, n + 2, 0x83, n)) + bytes(n) + b"\x00"
        for apdu in (self.select_apdu, bytes.fromhex("80CA9F3600"), bytes.fromhex("80CA9F1700")):
            self.send(apdu)

    # hooks --------------------------------------------------------------------------------
    def make_card(self) -> CardOS:
        """The card under test (default: a fresh :attr:`card_profile` card with test keys)."""
        return _test_card(self.card_profile, self.card_pin or TEST_PIN)

    def card_info(self, card: CardOS) -> CardInfo:
        """AID and DOL lengths of ``card`` (default: from its ``profile``)."""
        profile = getattr(card, "profile", None)
        if profile is None:
            return CardInfo(pin=self.card_pin)
        return _profile_info(profile, self.card_pin)

    # utilities ------------------------------------------------------------------------------
    def send(self, apdu: bytes) -> bytes:
        """Send one APDU and check the answer against the model."""
        answer = self.card.process(apdu)
        violation = self.model.observe(apdu, answer)
        if violation is not None:
            seen = f"{apdu.hex()} -> {answer.hex()}"
            raise AssertionError(f"{violation.invariant}: {violation.detail} ({seen})")
        return answer

    def _cmd(self, data: st.DataObject, *names: str) -> bytes:
        info = self.info
        command = data.draw(
            emv_commands(
                names=names,
                aid=info.aid,
                pdol_length=info.pdol_length,
                cdol1_length=info.cdol1_length,
                cdol2_length=info.cdol2_length,
                pin=self.card_pin,
            )
        )
        return command.to_bytes()

    # rules --------------------------------------------------------------------------------
    @rule()
    def select(self) -> None:
        self.send(self.select_apdu)

    @rule()
    def gpo(self) -> None:
        self.send(self.gpo_apdu)

    @rule(block=pin_blocks())
    def verify(self, block: bytes) -> None:
        self.send(bytes.fromhex("0020008008") + block)

    @rule()
    def verify_correct(self) -> None:
        if self.card_pin is not None:
            block = bytes.fromhex(f"2{len(self.card_pin):X}{self.card_pin}".ljust(16, "F"))
            self.send(bytes.fromhex("0020008008") + block)

    @rule(tag=st.sampled_from((0x9F17, 0x9F36, 0x9F13)))
    def get_data(self, tag: int) -> None:
        self.send(bytes((0x80, 0xCA, tag >> 8, tag & 0xFF, 0x00)))

    @rule(data=st.data())
    def generate_ac(self, data: st.DataObject) -> None:
        self.send(self._cmd(data, "generate_ac"))

    @rule(data=st.data())
    def other_command(self, data: st.DataObject) -> None:
        names = ("read_record", "get_challenge", "external_authenticate", "script", "select")
        self.send(self._cmd(data, *names))

    @rule(apdu=raw_apdus(max_size=40))
    def random_apdu(self, apdu: bytes) -> None:
        self.send(apdu)

    @rule()
    def power_cycle(self) -> None:
        self.card.power_off()
        self.card.power_on()
        self.model.power_cycle()

    @invariant()
    def stored_state_matches_model(self) -> None:
        state = getattr(self.card, "state", None)
        if state is None:
            return
        if self.model.atc is not None and self.model.atc != state.atc:
            raise AssertionError(f"model ATC {self.model.atc} but the card stored {state.atc}")
        if self.model.ptc is not None and self.model.ptc != state.ptc:
            raise AssertionError(f"model PTC {self.model.ptc} but the card stored {state.ptc}")


class ReaderCardMachine(RuleBasedStateMachine):
    """capsim's reader against a card (module docstring). Override :meth:`make_card` and
    :attr:`card_pin` to test another card; :meth:`make_reader` for another reader setup."""

    card_profile = "secur-acces"
    card_pin = TEST_PIN

    def __init__(self) -> None:
        super().__init__()
        self.card = self.make_card()
        self.reader = self.make_reader(self.card)
        self.last_atc = self.card.state.atc
        self.limit = self.card.profile.pin_try_limit

    def make_card(self) -> EmvCapCard:
        """The card (default: a fresh :attr:`card_profile` card with test keys)."""
        return _test_card(self.card_profile, self.card_pin)

    def make_reader(self, card: EmvCapCard) -> Any:
        """The reader (default: :class:`capsim.reader.CapReader` in process)."""
        from capsim.reader import CapReader

        return CapReader(InProcessTransport(card))

    def _code(self, run: Any) -> None:
        ptc = self.card.state.ptc
        try:
            result = run()
        except PinBlockedError:
            if ptc != 0:
                raise AssertionError(f"PinBlockedError with PTC {ptc}") from None
            return
        if ptc == 0:
            raise AssertionError("a code from a card whose PIN is blocked")
        if not (result.code.isdigit() and result.atc > self.last_atc):
            raise AssertionError(f"code {result.code!r} at ATC {result.atc} after ATC {self.last_atc}")
        if result.atc != self.card.state.atc or self.card.state.ptc != self.limit:
            raise AssertionError("the result does not match the card's ATC, or the PTC was not reset")
        self.last_atc = result.atc

    @rule()
    def identify(self) -> None:
        self._code(lambda: self.reader.identify(self.card_pin))

    @rule(challenge=challenges())
    def respond(self, challenge: str) -> None:
        self._code(lambda: self.reader.respond(self.card_pin, challenge))

    @rule(challenge=challenges(), amount=amounts(max_value=10**9), currency=currencies())
    def sign(self, challenge: str, amount: int, currency: str) -> None:
        self._code(lambda: self.reader.sign(self.card_pin, challenge, amount, currency))

    @rule(fields=tds_fields())
    def tds(self, fields: tuple[str, ...]) -> None:
        self._code(lambda: self.reader.sign_data(self.card_pin, list(fields)))

    @rule(pin=pins())
    def wrong_pin(self, pin: str) -> None:
        if pin == self.card_pin:
            return
        before = self.card.state.ptc
        try:
            self.reader.identify(pin)
        except PinError as exc:
            if before == 0 or exc.tries_left != before - 1 or self.card.state.ptc != before - 1:
                raise AssertionError(f"wrong PIN at PTC {before}: tries left {exc.tries_left}") from None
        except PinBlockedError:
            if before not in (0, 1):
                raise AssertionError(f"PinBlockedError at PTC {before}") from None
        except CapsimError as exc:
            raise AssertionError(f"wrong PIN gave {type(exc).__name__}") from None
        else:
            raise AssertionError("a wrong PIN gave a code")
        self.last_atc = max(self.last_atc, self.card.state.atc)

    @invariant()
    def atc_follows_card(self) -> None:
        if self.card.state.atc < self.last_atc:
            raise AssertionError("the card's ATC went down")


class CardReaderVerifierMachine(RuleBasedStateMachine):
    """card → reader → verifier (module docstring)."""

    card_profile = "secur-acces"

    def __init__(self) -> None:
        super().__init__()
        from capsim.testing.fuzz_verifier import Checker, make_verifier, new_bench

        self.store = self.make_store()
        self.bench = new_bench(make_verifier(self.store), profile=self.card_profile)
        self.checker = Checker(self.bench)

    def make_store(self) -> Any:
        """The verifier store (default: a fresh :class:`~capsim.verifier.memory.MemoryStore`)."""
        from capsim.verifier.memory import MemoryStore

        return MemoryStore()

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        from capsim.testing.fuzz_verifier import one_step, run_step

        violation = run_step(self.bench, self.checker, data.draw(one_step()))
        if violation is not None:
            raise AssertionError(f"{violation.invariant}: {violation.detail}")

    @precondition(lambda self: bool(self.bench.ops))
    @rule()
    def answer_latest(self) -> None:
        from capsim.testing.fuzz_verifier import run_step

        violation = run_step(self.bench, self.checker, ("answer", len(self.bench.ops) - 1))
        if violation is not None:
            raise AssertionError(f"{violation.invariant}: {violation.detail}")

    def teardown(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()
