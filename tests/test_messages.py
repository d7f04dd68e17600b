"""The messages people read are part of the interface: their exact text, pinned.

An error message names the rule that was broken and the value's name as the caller wrote it; a
reader warning says what the card did and what the reader does about it. These are shown on the
command line, logged, and quoted in bug reports, so a change to one is a deliberate change: each
is pinned here in full (not by a fragment that survives any rewording).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from capsim import codelayout, crypto, iad, tlv
from capsim.cards import EmvCapCard, new_card
from capsim.errors import CapsimError, RemoteProtocolError, StateFileError
from capsim.reader import CapReader
from capsim.storage import IssuerKeys, read_card_file, save_issuer_keys
from capsim.verifier.engine import parse_code
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN, h
from tests.reader.helpers import ScriptedCard
from tests.reader.test_hostile import NATWEST_RECORD, OK, natwest_like
from tests.utils import unhex

VALIDATION_MESSAGES: dict[str, tuple[Callable[[], object], str]] = {
    "history that is not an object": (
        lambda: iad.CardHistory.from_dict([]),  # type: ignore[arg-type]
        "history: expected a JSON object",
    ),
    "history with unknown keys": (
        lambda: iad.CardHistory.from_dict({"bogus": 1, "also": 2}),
        "history: unknown keys ['also', 'bogus']",
    ),
    "a short M/Chip IAD template": (
        lambda: iad.check_iad_template(0x10, bytes(10)),
        "iad_template: an M/Chip IAD has at least 18 bytes",
    ),
    "an empty IPB": (lambda: codelayout.code_layout(b""), "ipb: expected 1..64 bytes, got b''"),
    "a negative code value": (lambda: codelayout.decimal_code(-1), "value: expected a non-negative integer"),
    "a key that is not bytes": (lambda: crypto.key_check_value("k"), "key: expected bytes, got str"),  # type: ignore[arg-type]
    "padding method 1 of text": (lambda: crypto.pad_iso9797_1("d"), "data: expected bytes, got str"),  # type: ignore[arg-type]
    "padding method 2 of text": (lambda: crypto.pad_iso9797_2("d"), "data: expected bytes, got str"),  # type: ignore[arg-type]
    "a Visa CVN 10 IAD too short": (
        lambda: crypto.ac_data(crypto.CVN.VISA_10, cdol1_data=b"", aip=bytes(2), atc=bytes(2), iad=b"\x06"),
        "iad: expected Visa format-0 IAD (CVR with its length byte at bytes 4-7), got 1 bytes",
    ),
    "an empty IAD for Visa CVN 18": (
        lambda: crypto.ac_data(crypto.CVN.VISA_18, cdol1_data=b"", aip=bytes(2), atc=bytes(2), iad=b""),
        "iad: expected a non-empty IAD, got 0 bytes",
    ),
    "decoding text": (lambda: tlv.decode("5A"), "data must be bytes, got str"),  # type: ignore[arg-type]
    "a DOL value that is not bytes (DOL as bytes)": (
        lambda: tlv.fill_dol(unhex("9F0206"), {0x9F02: "1"}),  # type: ignore[dict-item]
        "values[0x9F02] must be bytes, got str",
    ),
    "a DOL value that is not bytes (DOL as entries)": (
        lambda: tlv.fill_dol([tlv.DolEntry(0x9F02, 6)], {0x9F02: "1"}),  # type: ignore[dict-item]
        "values[0x9F02] must be bytes, got str",
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_MESSAGES))
def test_validation_messages(case: str) -> None:
    call, message = VALIDATION_MESSAGES[case]
    with pytest.raises(CapsimError) as caught:
        call()
    assert str(caught.value) == message


def test_a_presented_code_never_shows_itself() -> None:
    code = parse_code("04822527")
    assert repr(code) == str(code) == "PresentedCode(<redacted>)"


def test_file_messages(tmp_path: Path) -> None:
    keys = IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
    path = tmp_path / "keys.json"
    save_issuer_keys(path, keys)
    with pytest.raises(StateFileError) as caught:
        save_issuer_keys(path, keys)
    assert str(caught.value) == f"issuer keys file {path} already exists; refusing to overwrite it"
    with pytest.raises(StateFileError) as caught:
        read_card_file(tmp_path)  # a directory
    assert re.fullmatch(
        rf"card file {re.escape(str(tmp_path))} cannot be read: \[Errno 21\] .+", str(caught.value)
    )


def test_the_card_logs_a_failed_persist_without_details(caplog: pytest.LogCaptureFixture) -> None:
    memory = new_card("natwest", pan=PAN, imk_ac=IMK_A)

    def persist(_: object) -> None:
        raise OSError("disk full at /secret/path")

    card = EmvCapCard(memory.profile, memory.state, rng=os.urandom, on_state_change=persist)
    with caplog.at_level(logging.ERROR):
        assert card.process(h("00A4040007A0000000048002"))[-2:] == OK
        assert card.process(h("80A8000002830000")) == h("6581")
    assert [r.getMessage() for r in caplog.records] == [
        "card: persisting the state failed (OSError); answering 6581"
    ]


# -- reader warnings and refusals ------------------------------------------------------------


def _reader_run(overrides: dict[int, bytes], records: list[bytes] | None = None) -> list[str]:
    answer = natwest_like(overrides)
    if records is not None:

        def with_records(apdu: bytes) -> bytes:
            if apdu[1] == 0xB2:
                return records[apdu[2] - 1] + OK
            return answer(apdu)

        card = ScriptedCard(with_records)
    else:
        card = ScriptedCard(answer)
    return list(CapReader(card, "mc-cap").respond("1234", "12345678").warnings)


def test_a_tag_twice_with_different_values_is_named() -> None:
    second = tlv.encode(0x70, tlv.encode(0x5F34, b"\x01"))
    first = tlv.encode(0x70, tlv.decode(NATWEST_RECORD)[0].value + tlv.encode(0x5F34, b"\x00"))
    gpo = tlv.encode(0x80, b"\x10\x00" + bytes([0x08, 1, 2, 0]))
    warnings = _reader_run({0xA8: gpo + OK}, [first, second])
    assert "tag 5F34 appears twice with different values: the first one is used" in warnings


def test_an_unreadable_pin_try_counter_is_a_warning() -> None:
    warnings = _reader_run({0xCA: unhex("9F17020003") + OK})
    assert "the PIN try counter (9F17) is unreadable" in warnings


def test_the_psn_in_the_code_without_a_psn_is_refused() -> None:
    record = NATWEST_RECORD.replace(unhex("9F5501A0"), unhex("9F5501E0"))
    assert record != NATWEST_RECORD
    with pytest.raises(RemoteProtocolError) as caught:
        _reader_run({}, [record])
    assert str(caught.value) == "the IAF puts the PSN in the code but the card has no PSN (5F34)"


def test_an_empty_ipb_is_refused() -> None:
    body = tlv.decode(NATWEST_RECORD)[0].value.replace(
        unhex("9F561200001F00000000000FFFFF000000000080008C"), unhex("9F5600") + unhex("8C")
    )
    assert len(body) < len(tlv.decode(NATWEST_RECORD)[0].value)
    with pytest.raises(RemoteProtocolError) as caught:
        _reader_run({}, [tlv.encode(0x70, body)])
    assert str(caught.value) == "IPB (9F56) of 0 bytes"
