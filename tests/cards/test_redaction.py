"""No ``repr`` of a card object shows a full PAN, a PIN or key bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsim.cards import new_card
from capsim.cards.base import parse_command
from capsim.cards.profile import encode_pan
from capsim.storage import CardFile, IssuerKeys, read_card_file
from capsim.testing.findings import Finding
from capsim.transports.replay import RecordedSession
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, h, pin_block

PANS = {"secur-acces": "5412345678901234", "rabobank": "6733112233445566774", "barclays": "4658123456789009"}
PIN = "97531"


def _forms(secret: bytes, width: int) -> set[str]:
    """Every ``width``-byte window of ``secret`` as hex (both cases) and as a bytes repr."""
    out: set[str] = set()
    for i in range(len(secret) - width + 1):
        part = secret[i : i + width]
        out |= {part.hex(), part.hex().upper(), repr(part)[2:-1]}
    return out


def _assert_hidden(text: str, *, pan: str, keys: list[bytes]) -> None:
    """At most the last four PAN digits, no PIN, no 4 bytes of a key, in any usual form."""
    for i in range(len(pan) - 4):
        assert pan[i : i + 5] not in text, f"PAN digits {pan[i : i + 5]} in {text!r}"
    for form in _forms(encode_pan(pan), 3):
        assert form not in text, f"PAN bytes {form} in {text!r}"
    assert PIN not in text
    for form in _forms(pin_block(PIN)[:3], 3):
        assert form not in text, f"PIN block {form} in {text!r}"
    for key in keys:
        for form in _forms(key, 4):
            assert form not in text, f"key bytes {form} in {text!r}"


@pytest.mark.parametrize("profile", sorted(PANS))
def test_card_objects_show_no_pan_pin_or_key(tmp_path: Path, profile: str) -> None:
    pan = PANS[profile]
    path = tmp_path / "card.json"
    new_card(profile, pan=pan, pin=PIN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, path=path).close()
    card_profile, state = read_card_file(path)
    assert any(encode_pan(pan) in r.data for r in card_profile.records)  # so the records' repr matters
    keys = [IMK_A, IMK_B, IMK_C, card_profile.mk_ac, card_profile.mk_smi, card_profile.mk_smc]
    handle = CardFile(path)
    try:
        shown = [
            repr(card_profile),
            str(card_profile),
            *(repr(r) for r in card_profile.records),
            repr(state),
            repr(handle),
            repr(IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)),
            repr(parse_command(h("0020008008") + pin_block(PIN))),
        ]
    finally:
        handle.close()
    for text in shown:
        _assert_hidden(text, pan=pan, keys=keys)
    assert f"pan_last4='{pan[-4:]}'" in repr(card_profile)


def test_transcripts_and_findings_leave_exchanges_out_of_repr() -> None:
    pan = PANS["secur-acces"]
    exchanges = (
        (h("0020008008") + pin_block(PIN), h("9000")),
        (h("00B2010C00"), b"\x70\x0a\x5a\x08" + encode_pan(pan) + h("9000")),
    )
    for obj in (
        RecordedSession(exchanges=exchanges),
        Finding(fuzzer="card", target="t", seed=1, invariant="i", detail="d", exchanges=exchanges),
    ):
        _assert_hidden(repr(obj), pan=pan, keys=[])
