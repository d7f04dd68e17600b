"""Deliberately broken PIV cards for the fuzzer's acceptance tests: one planted bug each.

Each class is capsim's emulated PIV card with one change on one code path. ``capsim fuzz card``
must catch every one of them (tests/fuzz/test_fuzz_piv.py), through
:func:`capsim.testing.fuzz_piv.piv_card_target` or ``--target py:tests.fuzz.planted_piv:FACTORY``.
"""

from __future__ import annotations

from typing import Any

from capsim.cards.base import StatusError
from capsim.cards.piv import PivCard, PivState, pad_reference
from capsim.cards.piv.keys import private_key
from capsim.cards.piv.state import PinRule
from capsim.testing.fuzz_piv import inproc_state
from capsim.tlv import encode


class WrongPinNotCounted(PivCard):
    """A wrong PIN answers ``63Cx`` as if counted, but the counter is never written."""

    def _verify(self, cmd: Any) -> bytes:
        state = self.state
        if cmd.p1 == 0x00 and cmd.p2 == 0x80 and len(cmd.data) == 8 and state.pin_tries > 0:
            digits = cmd.data.rstrip(b"\xff")
            if 6 <= len(digits) <= 8 and digits.isdigit() and cmd.data != pad_reference(state.pin):
                raise StatusError(0x63C0 | (state.pin_tries - 1))  # the planted bug: no commit
        return super()._verify(cmd)


class WrongPinPersistedLate(PivCard):
    """A wrong PIN's lower counter is adopted, but written only with the next other change."""

    def _commit(self, new: PivState) -> None:
        if new.replace(pin_tries=self.state.pin_tries) == self.state and new.pin_tries < self.state.pin_tries:
            self._state = new  # the planted bug: answered before it is persisted
            return
        super()._commit(new)


class SignatureKeyUsedTwice(PivCard):
    """Slot 9C ("PIN always") stays usable after its one use."""

    def _check_pin_rule(self, rule: PinRule) -> None:
        if rule is PinRule.ALWAYS and self._pin_just_verified:
            return  # the planted bug: not consumed
        super()._check_pin_rule(rule)


class PutDataWithoutManagementKey(PivCard):
    """PUT DATA writes objects without the management key."""

    def _put_data(self, cmd: Any) -> bytes:
        saved, self._mgmt_ok = self._mgmt_ok, True  # the planted bug
        try:
            return super()._put_data(cmd)
        finally:
            self._mgmt_ok = saved


class GeneratedKeyLeaked(PivCard):
    """GENERATE KEY PAIR answers the new private value with the public key (a debug leftover)."""

    def _generate_key_pair(self, cmd: Any) -> bytes:
        answer = super()._generate_key_pair(cmd)
        key = private_key(self.state.keys[cmd.p2].der)
        numbers = key.private_numbers()
        secret = getattr(numbers, "private_value", None) or getattr(numbers, "d", 0)
        return answer + encode(0x87, secret.to_bytes((secret.bit_length() + 7) // 8, "big"))


PLANTED = {
    "counter": (WrongPinNotCounted, WrongPinPersistedLate),
    "pin": (SignatureKeyUsedTwice,),
    "mgmt": (PutDataWithoutManagementKey,),
    "leak": (GeneratedKeyLeaked,),
}


def make_card() -> PivCard:
    """A fresh card with the uncounted wrong PIN (for ``py:`` targets)."""
    return WrongPinNotCounted(inproc_state(), rng=bytes)


def make_good_card() -> PivCard:
    """The same card without the bug."""
    return PivCard(inproc_state(), rng=bytes)
