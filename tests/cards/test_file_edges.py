"""Card files and issuer-key files at their edges: missing parts, defaults, the lock's wait.

Each test pins a rule of the file formats (docs/card.md) a planted bug changed while every
other test still passed.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from capsim.cards import load_card, new_card
from capsim.errors import StateFileError
from capsim.storage import IssuerKeys, load_issuer_keys, save_issuer_keys
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN


def _card(path: Path) -> None:
    new_card("secur-acces", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, path=path).close()


@pytest.mark.parametrize("part", ["profile", "state"])
def test_a_card_file_without_a_part_names_it(tmp_path: Path, part: str) -> None:
    path = tmp_path / "card.json"
    _card(path)
    doc = json.loads(path.read_text())
    del doc[part]
    text = json.dumps(doc)
    path.write_text(text)
    with pytest.raises(StateFileError, match=f"card file without '{part}'"):
        load_card(path, timeout=0.1)
    assert path.read_text() == text


def test_a_second_opener_waits_five_seconds_by_default(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card(path)
    holder = load_card(path)
    released = threading.Event()

    def release_late() -> None:
        released.wait(20)
        holder.close()

    t = threading.Thread(target=release_late)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(StateFileError, match=r"lock not obtained within 5 s"):
            load_card(path)
        assert time.monotonic() - t0 >= 4.9
    finally:
        released.set()
        t.join()


@pytest.mark.parametrize("derivation", ["A", "B"])
def test_an_issuer_keys_file_keeps_its_derivation_and_without_one_is_auto(
    tmp_path: Path, derivation: str
) -> None:
    path = tmp_path / "keys.json"
    save_issuer_keys(path, IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, derivation=derivation))
    doc = json.loads(path.read_text())
    assert doc["derivation"] == derivation
    assert sorted(doc["keys"]) == ["imk-ac", "imk-smc", "imk-smi"]
    assert doc["keys"]["imk-smc"]["key"] == IMK_C.hex().upper()
    assert load_issuer_keys(path).derivation == derivation
    del doc["derivation"]
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    assert load_issuer_keys(path) == IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, derivation="auto")
