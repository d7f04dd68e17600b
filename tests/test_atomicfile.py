"""Durable files at their edges (:mod:`capsim.atomicfile`): the size limit on both sides, the
message for a missing file, and which temporary files count as a killed writer's leftovers.

Each test pins a rule of the module's theory of operation that a planted bug changed while
every other test still passed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from capsim.atomicfile import MAX_FILE_BYTES, atomic_replace, read_json, remove_stale_temps
from capsim.errors import StateFileError


def _json_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes whose last byte is its closing brace."""
    head, tail = b'{"pad": "', b'"}'
    raw = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(raw) == size
    return raw


def test_a_file_of_exactly_max_file_bytes_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(_json_of_size(MAX_FILE_BYTES))
    doc = read_json(path, "test file")
    assert doc == {"pad": "x" * (MAX_FILE_BYTES - 11)}


def test_a_file_one_byte_over_max_file_bytes_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(_json_of_size(MAX_FILE_BYTES + 1))
    with pytest.raises(StateFileError) as caught:
        read_json(path, "test file")
    assert (
        str(caught.value) == f"test file {path} is larger than {MAX_FILE_BYTES} bytes; refusing to parse it"
    )


def test_a_missing_file_is_named_with_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(StateFileError) as caught:
        read_json(path, "test file")
    assert str(caught.value) == f"test file {path} does not exist"
    assert caught.value.__cause__ is None


def _stale_temp(path: Path) -> Path:
    """A temporary file named as a writer of ``path`` names its own (then killed before its rename)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.write(fd, b'{"half": ')
    os.close(fd)
    return Path(name)


def test_a_killed_writers_temporary_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    atomic_replace(path, '{"a": 1}\n')
    stale = [_stale_temp(path), _stale_temp(path)]
    others = [
        tmp_path / "card.json.lock",
        tmp_path / ".card.json.tmp",  # no writer's random part
        tmp_path / "card.json.abc.tmp",  # no leading dot
        tmp_path / ".card.json.abc.tmp.keep",
        tmp_path / ".other.json.abc.tmp",  # another file's writer
    ]
    for other in others:
        other.write_text("keep")
    assert all(p.exists() for p in stale)

    remove_stale_temps(path)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["card.json", *(p.name for p in others)])
    assert read_json(path, "test file") == {"a": 1}
