"""VERIFY spends the PIN try durably before it compares the PIN (cap-protocol.md §9.5).

The card must commit PTC − 1 before the comparison and give the try back with a second commit
only for a right PIN. Observed from outside through the persistence callback and the card file
on disk: what was written, in which order, and what the card answers when a write fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from capsim.cards import CardState, EmvCapCard, new_card
from capsim.storage import CardFile, read_card_file
from tests.cards.helpers import IMK_A, PAN, h, start, sw, verify

LIMIT = 3
RIGHT, WRONG = "1234", "0000"


def _memory_card(ptc: int, persist: Callable[[CardState], None]) -> EmvCapCard:
    base = new_card("secur-acces", pan=PAN, imk_ac=IMK_A)
    state = CardState(atc=base.state.atc, ptc=ptc, pin=RIGHT)
    return EmvCapCard(base.profile, state, rng=os.urandom, on_state_change=persist)


def _ptc_on_card(card: EmvCapCard) -> int:
    resp = card.process(h("80CA9F1700"))
    assert resp[:3] == h("9F1701")
    assert sw(resp) == 0x9000
    return resp[3]


@pytest.mark.parametrize("ptc", [LIMIT, 2, 1])
@pytest.mark.parametrize("pin", [RIGHT, WRONG])
def test_unpersistable_decrement_reveals_nothing_about_the_pin(ptc: int, pin: str) -> None:
    """When PTC − 1 cannot be written, right and wrong PINs get the same 6581, PTC unchanged."""
    refused: list[int] = []

    def persist(new: CardState) -> None:
        if new.ptc < ptc:  # the try would be spent: the store refuses it
            refused.append(new.ptc)
            raise OSError("disk full")

    card = _memory_card(ptc, persist)
    start(card)
    assert verify(card, pin) == 0x6581
    assert refused == [ptc - 1]  # the first (and only) write a VERIFY attempts is PTC − 1
    assert card.state.ptc == ptc
    assert _ptc_on_card(card) == ptc


@pytest.mark.parametrize("ptc", [LIMIT, 1])
def test_unpersistable_restore_keeps_the_try_spent(ptc: int) -> None:
    """A right PIN whose restore cannot be written answers 6581 and the try stays spent."""
    written: list[int] = []

    def persist(new: CardState) -> None:
        if new.ptc == LIMIT and written:  # the second commit (give the try back) fails
            raise OSError("disk full")
        written.append(new.ptc)

    card = _memory_card(ptc, persist)
    start(card)
    written.clear()  # forget the GPO's ATC write
    assert verify(card, RIGHT) == 0x6581
    assert written == [ptc - 1]
    assert card.state.ptc == ptc - 1
    assert _ptc_on_card(card) == ptc - 1


def _file_card(path: Path, on_disk: list[int]) -> EmvCapCard:
    """The card file's card, recording the PTC on disk after each of its writes."""
    new_card("secur-acces", pan=PAN, imk_ac=IMK_A, path=path).close()
    handle = CardFile(path)

    def persist(new: CardState) -> None:
        handle.save_state(new)
        on_disk.append(read_card_file(path)[1].ptc)

    return EmvCapCard(
        handle.profile, handle.state, rng=os.urandom, on_state_change=persist, on_close=handle.close
    )


@pytest.mark.parametrize(
    ("pins", "expected_disk", "expected_sws"),
    [
        ([RIGHT], [LIMIT - 1, LIMIT], [0x9000]),
        ([WRONG], [LIMIT - 1], [0x63C2]),
        ([WRONG, RIGHT], [LIMIT - 1, LIMIT - 2, LIMIT], [0x63C2, 0x9000]),
        ([WRONG, WRONG, WRONG, RIGHT], [2, 1, 0], [0x63C2, 0x63C1, 0x63C0, 0x6983]),
    ],
)
def test_card_file_shows_ptc_minus_one_before_every_verify_answer(
    tmp_path: Path, pins: list[str], expected_disk: list[int], expected_sws: list[int]
) -> None:
    on_disk: list[int] = []
    with _file_card(tmp_path / "card.json", on_disk) as card:
        start(card)
        on_disk.clear()  # the GPO's ATC write
        answers = [verify(card, pin) for pin in pins]
    assert answers == expected_sws
    assert on_disk == expected_disk
    assert read_card_file(tmp_path / "card.json")[1].ptc == expected_disk[-1]


def test_blocked_or_malformed_verify_writes_nothing(tmp_path: Path) -> None:
    on_disk: list[int] = []
    with _file_card(tmp_path / "card.json", on_disk) as card:
        start(card)
        assert card.process(h("0020008008 2F1234FFFFFFFFFF")) == h("6A80")  # malformed block
        assert card.process(h("0020008007 241234FFFFFFFF")) == h("6700")
        on_disk.clear()
        for _ in range(LIMIT):
            verify(card, WRONG)
        on_disk.clear()
        assert verify(card, RIGHT) == 0x6983
        assert verify(card, WRONG) == 0x6983
        assert on_disk == []
