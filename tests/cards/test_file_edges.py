"""Card files and issuer-key files at their edges: missing parts, defaults, the lock's wait,
the messages naming a missing or busy card file, a killed writer's temporary file removed on
opening, the modes an issuer-keys file may have and the derivations it may name, every broken
card or issuer-keys file by its full message, and an open card file's saved and closed states.

Each test pins a rule of the file formats (docs/card.md) a planted bug changed while every
other test still passed.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capsim.cards import load_card, new_card
from capsim.errors import StateFileError, UnsafeFileModeError, ValidationError
from capsim.storage import CardFile, IssuerKeys, load_issuer_keys, read_card_file, save_issuer_keys
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


def test_a_missing_card_file_read_without_its_lock_is_named_a_card_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(StateFileError) as caught:
        read_card_file(path)
    assert str(caught.value) == f"card file {path} does not exist"


def test_a_card_file_in_use_names_the_card_file_and_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card(path)
    with load_card(path), pytest.raises(StateFileError) as caught:
        load_card(path, timeout=0.2)
    assert str(caught.value) == (
        f"card file {path} is in use by another process (lock not obtained within 0.2 s)"
    )


def test_opening_a_card_file_removes_a_killed_writers_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card(path)
    fd, stale = tempfile.mkstemp(prefix=".card.json.", suffix=".tmp", dir=tmp_path)
    os.write(fd, b'{"format": "capsim-card", "ver')  # a writer killed mid-write
    os.close(fd)
    other = tmp_path / ".other.json.abc.tmp"
    other.write_text("not this card's")
    with load_card(path) as card:
        assert card.state.atc == 0
    assert not Path(stale).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.json.abc.tmp",
        "card.json",
        "card.json.lock",
    ]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o644, 0o666])
def test_an_issuer_keys_file_any_other_user_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.json"
    save_issuer_keys(path, IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C))
    path.chmod(mode)
    with pytest.raises(UnsafeFileModeError) as caught:
        load_issuer_keys(path)
    assert str(caught.value) == (
        f"issuer keys file {path} is accessible to other users (mode {mode:04o}); "
        f"it holds secret keys and is refused: run chmod 600 {path}"
    )
    assert stat.S_IMODE(path.stat().st_mode) == mode  # refused, not changed


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_an_issuer_keys_file_only_its_owner_can_access_is_read(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.json"
    keys = IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
    save_issuer_keys(path, keys)
    path.chmod(mode)
    assert load_issuer_keys(path) == keys


def test_an_unknown_derivation_is_refused_by_name(tmp_path: Path) -> None:
    expected = "derivation: expected 'auto', 'A' or 'B'"
    with pytest.raises(ValidationError) as caught:
        IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, derivation="C")
    assert str(caught.value) == expected
    path = tmp_path / "keys.json"
    save_issuer_keys(path, IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C))
    doc = json.loads(path.read_text())
    doc["derivation"] = "a"
    path.write_text(json.dumps(doc))
    with pytest.raises(StateFileError) as file_caught:
        load_issuer_keys(path)
    assert str(file_caught.value) == f"{path}: invalid issuer keys file ({expected})"


def test_a_card_file_path_through_a_regular_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "card.json"
    with pytest.raises(StateFileError) as caught:
        load_card(path)
    assert str(caught.value) == f"card file {path} cannot be read: {os.strerror(errno.ENOTDIR)}"
    assert caught.value.__cause__ is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("name", ["imk_ac", "imk_smi", "imk_smc"])
@pytest.mark.parametrize("value", [bytes(15), bytes(17), b"", "00" * 16, "0" * 16, bytearray(16), None])
def test_issuer_keys_are_16_bytes_each(name: str, value: object) -> None:
    keys: dict[str, object] = {"imk_ac": IMK_A, "imk_smi": IMK_B, "imk_smc": IMK_C, name: value}
    with pytest.raises(ValidationError) as caught:
        IssuerKeys(**keys)  # type: ignore[arg-type]
    assert str(caught.value) == f"{name}: expected 16 bytes (a double-length TDES key)"


def test_issuer_keys_never_appear_in_their_repr() -> None:
    keys = IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, derivation="B")
    text = repr(keys)
    assert text == "IssuerKeys(derivation='B')"
    for key in (IMK_A, IMK_B, IMK_C):
        assert key.hex() not in text.lower()
        assert repr(key) not in text


def test_issuer_keys_are_frozen_keyword_only_values() -> None:
    keys = IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
    with pytest.raises(AttributeError):
        keys.imk_ac = IMK_B  # type: ignore[misc]
    assert keys.imk_ac == IMK_A
    assert hash(keys) == hash(IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C))
    with pytest.raises(TypeError):
        IssuerKeys(IMK_A, IMK_B, IMK_C)  # type: ignore[misc]


def test_a_missing_or_foreign_issuer_keys_file_is_named_as_one(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(StateFileError) as caught:
        load_issuer_keys(path)
    assert str(caught.value) == f"issuer keys file {path} does not exist"
    path.write_text('{"format": "capsim-card", "version": 1}')
    path.chmod(0o600)
    with pytest.raises(StateFileError) as caught:
        load_issuer_keys(path)
    assert str(caught.value) == f"{path} is not an issuer keys file (format is not 'capsim-issuer-keys')"


def _edited_keys_file(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    save_issuer_keys(path, IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C))
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.update(keys=[]), ": invalid issuer keys file (keys is not an object)"),
        (
            lambda d: d["keys"]["imk-smc"].update(key="00" * 8),
            ": invalid issuer keys file (imk-smc is not 16 bytes)",
        ),
        (
            lambda d: d["keys"]["imk-smi"].update(kcv="000000"),
            ": the check value of imk-smi does not match its key",
        ),
        (lambda d: d["keys"]["imk-ac"].update(kcv=""), ": the check value of imk-ac does not match its key"),
        (lambda d: d["keys"].pop("imk-smi"), ": invalid issuer keys file ('imk-smi')"),
    ],
)
def test_each_broken_issuer_keys_file_has_its_own_message(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], problem: str
) -> None:
    path = tmp_path / "keys.json"
    _edited_keys_file(path, edit)
    with pytest.raises(StateFileError) as caught:
        load_issuer_keys(path)
    assert str(caught.value) == f"{path}{problem}"


def _edited_card_file(path: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    _card(path)
    doc = json.loads(path.read_text())
    edit(doc)
    text = json.dumps(doc)
    path.write_text(text)
    return text


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.update(extra=1, more=2), ": unknown top-level keys ['extra', 'more']"),
        (
            lambda d: d["state"].pop("pin"),
            ": invalid card file: state: expected keys ['atc', 'history', 'last_online_atc', 'lifecycle', "
            "'pin', 'ptc'], got ['atc', 'history', 'last_online_atc', 'lifecycle', 'ptc']",
        ),
        (lambda d: d["profile"].update(mk_smc=""), ": the profile has no PAN or keys"),
        (lambda d: d["state"].update(ptc=4), ": state.ptc 4 exceeds the PIN try limit"),
    ],
)
def test_each_broken_card_file_has_its_own_message(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], problem: str
) -> None:
    path = tmp_path / "card.json"
    text = _edited_card_file(path, edit)
    with pytest.raises(StateFileError) as caught:
        read_card_file(path)
    assert str(caught.value) == f"{path}{problem}"
    with pytest.raises(StateFileError) as on_load:
        load_card(path, timeout=0.1)
    assert str(on_load.value) == f"{path}{problem}"
    assert path.read_text() == text  # refused, left alone


def test_a_card_file_is_never_created_over_another(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card(path)
    before = path.read_text()
    with pytest.raises(StateFileError) as caught:
        _card(path)
    assert str(caught.value) == f"card file {path} already exists; refusing to overwrite it"
    assert path.read_text() == before


def test_a_lock_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card(path)
    lock = tmp_path / "card.json.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    with pytest.raises(StateFileError) as caught:
        load_card(path, timeout=0.1)
    cause = caught.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.EISDIR
    assert str(caught.value) == f"cannot open lock file {lock}: {cause}"


def test_a_missing_path_or_a_directory_is_refused_as_a_card_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(StateFileError) as caught:
        load_card(missing)
    assert str(caught.value) == f"card file {missing} does not exist"
    with pytest.raises(StateFileError) as caught:
        load_card(tmp_path)
    assert str(caught.value) == f"card file {tmp_path} is not a regular file"
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_an_open_card_file_keeps_the_state_it_saved_and_refuses_saves_once_closed(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _card(path)
    handle = CardFile(path)
    newer = dataclasses.replace(handle.state, atc=handle.state.atc + 5)
    handle.save_state(newer)
    assert handle.state == newer
    assert read_card_file(path)[1] == newer
    handle.close()
    with pytest.raises(StateFileError) as caught:
        handle.save_state(dataclasses.replace(newer, atc=newer.atc + 1))
    assert str(caught.value) == f"card file {path} is closed"
    assert read_card_file(path)[1] == newer
