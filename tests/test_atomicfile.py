"""Durable files at their edges (:mod:`capsim.atomicfile`): the size limit on both sides, the
message for a missing file, and which temporary files count as a killed writer's leftovers.

Each test pins a rule of the module's theory of operation that a planted bug changed while
every other test still passed.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import tempfile
from pathlib import Path

import pytest

from capsim.atomicfile import (
    MAX_FILE_BYTES,
    atomic_create,
    atomic_replace,
    check_header,
    read_json,
    remove_stale_temps,
)
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_writer_killed_before_its_rename_leaves_a_temp_file_the_cleanup_finds(tmp_path: Path) -> None:
    """A real writer process, SIGKILLed once its temporary file is written (at its fsync):
    the document is the old one, and the leftover is one :func:`remove_stale_temps` removes."""
    path = tmp_path / "card.json"
    atomic_replace(path, '{"old": 1}\n')
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # the kill point
            atomic_replace(path, '{"new": 1}\n')
        finally:
            os._exit(3)  # not reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1
    assert leftovers[0].read_text() == '{"new": 1}\n'
    assert read_json(path, "test file") == {"old": 1}

    remove_stale_temps(path)

    assert list(tmp_path.iterdir()) == [path]


def test_a_file_that_cannot_be_created_is_named_with_the_system_error(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300)  # longer than any file name the system allows
    with pytest.raises(StateFileError) as caught:
        atomic_create(path, "{}\n", "test file")
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENAMETOOLONG
    assert str(caught.value) == f"test file {path} cannot be written: {caught.value.__cause__}"
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "card.json"
    with pytest.raises(StateFileError) as caught:
        atomic_create(path, "{}\n", "test file")
    assert str(caught.value) == f"test file {path}: directory {path.parent} does not exist"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_short_write_is_finished_or_fails_and_is_never_published(tmp_path: Path) -> None:
    """A real writer process limited to 4096-byte files (RLIMIT_FSIZE): its first write is cut
    short, the next fails, and the old document stays; without the limit the whole is written."""
    path = tmp_path / "card.json"
    atomic_replace(path, '{"old": 1}\n')
    big = '{"pad": "' + "x" * 10000 + '"}\n'
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            atomic_replace(path, big)
        except OSError as exc:
            code = 10 if exc.errno == errno.EFBIG else 11
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 10  # the writer saw the failure
    assert path.read_text() == '{"old": 1}\n'
    assert list(tmp_path.iterdir()) == [path]  # its temporary file removed
    atomic_replace(path, big)
    assert path.read_text() == big


def test_an_existing_file_is_never_overwritten_nor_a_temp_file_left(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    atomic_create(path, '{"first": 1}\n', "test file")
    for target in (path, tmp_path):  # a file, and a directory, already there
        with pytest.raises(StateFileError) as caught:
            atomic_create(target, '{"second": 2}\n', "test file")
        assert str(caught.value) == f"test file {target} already exists; refusing to overwrite it"
    assert path.read_text() == '{"first": 1}\n'
    assert list(tmp_path.iterdir()) == [path]


def test_a_corrupt_file_is_named_corrupt_or_truncated(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text('{"a": ')
    with pytest.raises(StateFileError) as caught:
        read_json(path, "test file")
    assert str(caught.value) == f"test file {path} is corrupt or truncated: not valid JSON (Expecting value)"


@pytest.mark.parametrize(
    ("doc", "what", "message"),
    [
        (
            {"format": "other", "version": 1},
            "issuer keys file",
            "is not an issuer keys file (format is not 'fmt')",
        ),
        ({"version": 1}, "capsim card file", "is not a capsim card file (format is not 'fmt')"),
        (["fmt"], "test file", "is not a test file (format is not 'fmt')"),
        ({"format": "fmt"}, "test file", ": test file without an integer version"),
        ({"format": "fmt", "version": "1"}, "test file", ": test file without an integer version"),
        ({"format": "fmt", "version": True}, "test file", ": test file without an integer version"),
        (
            {"format": "fmt", "version": 3},
            "test file",
            ": test file version 3 is newer than this capsim supports (2)",
        ),
        ({"format": "fmt", "version": 0}, "test file", ": test file version 0 is not valid"),
    ],
)
def test_each_bad_header_has_its_own_message(tmp_path: Path, doc: object, what: str, message: str) -> None:
    path = tmp_path / "doc.json"
    with pytest.raises(StateFileError) as caught:
        check_header(doc, path, "fmt", 2, what)
    assert str(caught.value) == f"{path}{' ' if message.startswith('is') else ''}{message}"


@pytest.mark.parametrize("version", [1, 2])
def test_a_known_version_passes_the_header_check(tmp_path: Path, version: int) -> None:
    check_header({"format": "fmt", "version": version}, tmp_path / "doc.json", "fmt", 2, "test file")


def test_the_cleanup_logs_each_removal_by_the_files_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "card.json"
    atomic_replace(path, "{}\n")
    _stale_temp(path)
    with caplog.at_level(logging.INFO, logger="capsim.atomicfile"):
        remove_stale_temps(path)
    assert [r.getMessage() for r in caplog.records] == ["removed a stale temporary file of card.json"]
