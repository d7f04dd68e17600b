"""Opening a SQLite ``--db`` that is not a capsim verifier database.

A text file, a card file, a truncated capsim database and another program's (empty) SQLite
database are refused with :class:`NotADatabaseError` (exit 13, permanent), never
``TemporaryFailure`` (exit 11, "retry"), and the file is left exactly as it was: same bytes,
same mtime, same mode, no ``-wal``/``-shm`` companion left behind. A database locked by
another process stays a ``TemporaryFailure``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from capsim.errors import ConfigError, NotADatabaseError, TemporaryFailure
from capsim.verifier.dburl import open_store
from capsim.verifier.sqlite import SqliteStore
from capsim.verifier.sqlitefile import FileVerdict, inspect_header, is_permanent
from tests.cli.helpers import Cli


def _text_file(path: Path) -> None:
    path.write_text("hello\n")


def _card_file(path: Path) -> None:
    Cli(path.parent / "card-home").ok("card", "new", str(path))


def _truncated(path: Path) -> None:
    store = SqliteStore(path)
    with store.transaction() as tx:
        for i in range(50):
            tx.set_setting(f"s{i}", "x" * 2000)
    store.close()
    os.truncate(path, path.stat().st_size // 2)


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("CREATE INDEX moz_places_url ON moz_places (url)")
    conn.commit()
    conn.close()


def _foreign_wal(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


def _short_header(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(20))


BAD_FILES: dict[str, Callable[[Path], None]] = {
    "text": _text_file,
    "card-file": _card_file,
    "truncated-capsim-db": _truncated,
    "foreign-db": _foreign,
    "foreign-wal-db": _foreign_wal,
    "short-header": _short_header,
}


def _snapshot(path: Path) -> tuple[bytes, int, int, list[str]]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_mode, sorted(os.listdir(path.parent))


@pytest.fixture(params=sorted(BAD_FILES))
def bad_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "x.db"
    BAD_FILES[str(request.param)](path)
    path.chmod(0o644)  # a store would tighten a real database to 0600: this one must stay
    return path


def test_api_refuses_a_file_that_is_not_a_capsim_database(bad_file: Path) -> None:
    before = _snapshot(bad_file)
    for attempt in range(2):  # permanent: the same answer every time
        with pytest.raises(NotADatabaseError) as info:
            SqliteStore(bad_file, lock_timeout=0.5)
        assert isinstance(info.value, ConfigError)
        assert not isinstance(info.value, TemporaryFailure)
        message = str(info.value)
        assert str(bad_file) in message
        assert "not a capsim verifier database" in message
        assert "\n" not in message
        assert _snapshot(bad_file) == before, attempt
    with pytest.raises(NotADatabaseError):
        open_store(str(bad_file))
    with pytest.raises(NotADatabaseError):
        open_store(bad_file, migrate=False)
    assert _snapshot(bad_file) == before


@pytest.mark.parametrize("command", [("user", "list"), ("init",), ("audit", "--check")])
def test_cli_exit_13_one_line_file_untouched(
    bad_file: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    before = _snapshot(bad_file)
    run = Cli(tmp_path / "home")("verifier", *command, "--db", str(bad_file))
    assert run.exit_code == 13, run.output
    assert run.stdout == ""
    assert run.stderr.startswith("capsim: error: ")
    assert run.stderr.count("\n") == 1
    assert str(bad_file) in run.stderr
    assert "not a capsim verifier database" in run.stderr
    assert "Traceback" not in run.output
    assert _snapshot(bad_file) == before


def test_cli_subprocess_on_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_text("hello\n")
    before = _snapshot(path)
    root = str(Path(__file__).resolve().parents[2])  # this checkout's capsim, whatever is installed
    env = {**os.environ, "CAPSIM_HOME": str(tmp_path / "home"), "PYTHONPATH": root}
    env.pop("CAPSIM_DB", None)
    proc = subprocess.run(
        [sys.executable, "-m", "capsim", "verifier", "user", "list", "--db", "x.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 13, proc.stderr
    assert proc.stderr == (
        "capsim: error: x.db: not a capsim verifier database (not an SQLite database file);"
        " the file was left unchanged\n"
    )
    assert _snapshot(path) == before


# -- what still opens, and what stays temporary ---------------------------------------------------


def test_new_empty_and_capsim_databases_still_open(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "new.db").close()  # created
    (tmp_path / "empty.db").touch()
    SqliteStore(tmp_path / "empty.db").close()  # a 0-byte file is a new database
    conn = sqlite3.connect(tmp_path / "blank.db")
    conn.execute("VACUUM")  # a valid SQLite file without tables
    conn.close()
    SqliteStore(tmp_path / "blank.db").close()
    (tmp_path / "new.db").chmod(0o644)
    store = SqliteStore(tmp_path / "new.db")  # reopened, and tightened to 0600
    store.close()
    assert (tmp_path / "new.db").stat().st_mode & 0o777 == 0o600


def test_a_trailing_partial_page_is_checked_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    store = SqliteStore(path)
    with store.transaction() as tx:
        tx.set_setting("kept", "yes")
    store.close()
    with path.open("ab") as f:
        f.write(b"\x00" * 100)  # not a whole page: suspect, but SQLite's quick_check says ok
    store = SqliteStore(path)
    with store.transaction() as tx:
        assert tx.get_setting("kept") == "yes"
    store.close()


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "exclusive":
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
else:
    conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO cap_setting (name, value) VALUES ('held', '1') ON CONFLICT DO NOTHING")
print("locked", flush=True)
sys.stdin.readline()
"""


@contextmanager
def _locked_by_another_process(path: Path, mode: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.communicate("\n", timeout=60)


@pytest.mark.parametrize("mode", ["immediate", "exclusive"])
def test_a_database_locked_by_another_process_is_a_temporary_failure(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "v.db"
    SqliteStore(path).close()
    with _locked_by_another_process(path, mode), pytest.raises(TemporaryFailure) as info:
        SqliteStore(path, lock_timeout=0.3)
    assert not isinstance(info.value, NotADatabaseError)
    store = SqliteStore(path, lock_timeout=5)  # and it opens once the lock is gone
    store.close()


def test_sqlite_error_classification(tmp_path: Path) -> None:
    text = tmp_path / "t.db"
    text.write_text("hello, this is not a database at all; " * 4)
    conn = sqlite3.connect(text)
    with pytest.raises(sqlite3.DatabaseError) as info:
        conn.execute("SELECT * FROM sqlite_master").fetchall()
    conn.close()
    assert is_permanent(info.value)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert not is_permanent(busy)


@pytest.mark.parametrize(
    ("head", "size", "verdict"),
    [
        (b"", 0, FileVerdict.EMPTY),
        (b"hello\n", 6, FileVerdict.NOT_SQLITE),
        (b"SQLite format 3\x00" + bytes(10), 26, FileVerdict.NOT_SQLITE),  # short header
        (b"SQLite format 3\x00\x03\x00" + bytes(82), 4096, FileVerdict.NOT_SQLITE),  # page size 768
        (b"SQLite format 3\x00\x01\x00" + bytes(82), 4096, FileVerdict.NOT_SQLITE),  # page size 256
        (b"SQLite format 3\x00\x02\x00" + bytes(82), 4096, FileVerdict.SQLITE),  # 512-byte pages
        (b"SQLite format 3\x00\x00\x01" + bytes(82), 65536, FileVerdict.SQLITE),  # 1 means 65536
        (b"SQLite format 3\x00\x00\x01" + bytes(82), 4096, FileVerdict.SUSPECT),  # a partial page
        (b"MySQL format 3\x00\x00\x10\x00" + bytes(82), 4096, FileVerdict.NOT_SQLITE),
    ],
)
def test_inspect_header(head: bytes, size: int, verdict: FileVerdict) -> None:
    assert inspect_header(head, size) is verdict


def _header(page_size: int, pages: int, *, valid: bool) -> bytes:
    head = bytearray(b"SQLite format 3\x00" + bytes(84))
    head[16:18] = (1 if page_size == 65536 else page_size).to_bytes(2, "big")
    head[24:28] = (7).to_bytes(4, "big")
    head[28:32] = pages.to_bytes(4, "big")
    head[92:96] = (7 if valid else 6).to_bytes(4, "big")
    return bytes(head)


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_inspect_header_sizes(page_size: int) -> None:
    assert inspect_header(_header(page_size, 10, valid=True), 10 * page_size) is FileVerdict.SQLITE
    assert inspect_header(_header(page_size, 10, valid=True), 12 * page_size) is FileVerdict.SQLITE
    assert inspect_header(_header(page_size, 10, valid=True), 5 * page_size) is FileVerdict.SUSPECT
    assert inspect_header(_header(page_size, 10, valid=False), 5 * page_size) is FileVerdict.SQLITE
    assert inspect_header(_header(page_size, 10, valid=True), 10 * page_size + 1) is FileVerdict.SUSPECT
