"""Card files and issuer-key files (architecture.md §5)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capsim.cards import EmvCapCard, load_card, new_card
from capsim.errors import StateFileError
from capsim.storage import IssuerKeys, load_issuer_keys, read_card_file, save_issuer_keys
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN, cap_transaction, h, start, sw, verify


def _new(path: Path, **kw: object) -> EmvCapCard:
    return new_card("secur-acces", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, path=path, **kw)


def test_card_file_format_mode_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    with _new(path) as card:
        memory = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
        assert card.profile == memory.profile
        cap_transaction(card)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == "capsim-card"
    assert doc["version"] == 1
    assert set(doc) == {"format", "version", "profile", "state"}
    assert doc["profile"]["mk_ac"] == doc["profile"]["mk_ac"].upper()
    assert doc["state"]["atc"] == 1
    with load_card(path) as again:
        assert again.state.atc == 1
        assert again.state.history.last_online_not_completed
        g, _ = cap_transaction(again)
        assert g.atc == h("0002")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_every_state_change_is_on_disk_before_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    with _new(path) as card:
        start(card)  # GPO answered: ATC 1 already on disk
        assert read_card_file(path)[1].atc == 1
        assert verify(card, "0000") == 0x63C2
        assert read_card_file(path)[1].ptc == 2
        assert verify(card, "1234") == 0x9000
        assert read_card_file(path)[1].ptc == 3


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("precious")
    with pytest.raises(StateFileError, match="already exists"):
        _new(path)
    assert path.read_text() == "precious"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t[: len(t) // 2], "corrupt or truncated"),
        (lambda t: "", "corrupt or truncated"),
        (lambda t: "\x00\x01garbage", "corrupt or truncated"),
        (lambda t: t.replace('"version": 1', '"version": 2'), "newer"),
        (lambda t: t.replace('"capsim-card"', '"something-else"'), "not a capsim card file"),
        (lambda t: t.replace('"ptc": 3', '"ptc": 9'), "exceeds the PIN try limit"),
        (lambda t: t.replace('"atc": 0', '"atc": -1'), "atc"),
        (lambda t: t.replace('"pin": "1234"', '"pin": "12"'), "pin"),
        (lambda t: t.replace('"lifecycle": "active"', '"lifecycle": "zombie"'), "lifecycle"),
        (lambda t: t.replace('"aip": "1000"', '"aip": "10G0"'), "invalid card file"),
    ],
)
def test_bad_files_raise_and_are_left_alone(tmp_path: Path, mutate: object, message: str) -> None:
    path = tmp_path / "card.json"
    _new(path).close()
    text = mutate(path.read_text())  # type: ignore[operator]
    path.write_text(text)
    with pytest.raises(StateFileError, match=message):
        load_card(path, timeout=0.1)
    assert path.read_text() == text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="does not exist"):
        load_card(tmp_path / "nope.json")


def test_second_opener_waits_then_fails_and_succeeds_after_close(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = _new(path)
    with pytest.raises(StateFileError, match="in use"):
        load_card(path, timeout=0.2)
    card.close()
    card.close()  # idempotent
    with load_card(path, timeout=0.2) as again:
        assert again.state.atc == 0


def test_persistence_failure_answers_6581_and_keeps_state() -> None:
    memory = new_card("natwest", pan=PAN, imk_ac=IMK_A)
    fail = {"on": False}

    def persist(_: object) -> None:
        if fail["on"]:
            raise OSError("disk full")

    card = EmvCapCard(memory.profile, memory.state, rng=os.urandom, on_state_change=persist)
    start(card)
    fail["on"] = True
    assert card.process(h("0020008008 241111FFFFFFFFFF")) == h("6581")
    assert card.state.ptc == 3
    assert sw(card.process(h("00A4040007A0000000048002"))) == 0x9000
    assert card.process(h("80A8000002830000")) == h("6581")
    assert card.state.atc == 1
    fail["on"] = False
    assert sw(card.process(h("80A8000002830000"))) == 0x9000
    assert card.state.atc == 2


def test_issuer_keys_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C)
    save_issuer_keys(path, keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == "capsim-issuer-keys"
    assert doc["keys"]["imk-ac"] == {"key": IMK_A.hex().upper(), "kcv": "08D7B4"}  # vectors.md CRY-KCV
    assert doc["keys"]["imk-smi"]["kcv"] == "7B8358"
    assert load_issuer_keys(path) == keys
    assert "0123" not in repr(keys)
    with pytest.raises(StateFileError, match="already exists"):
        save_issuer_keys(path, keys)


def test_issuer_keys_with_wrong_kcv_or_version(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_issuer_keys(path, IssuerKeys(imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C))
    text = path.read_text()
    path.write_text(text.replace("08D7B4", "08D7B5"))
    with pytest.raises(StateFileError, match="check value"):
        load_issuer_keys(path)
    path.write_text(text.replace('"version": 1', '"version": 7'))
    with pytest.raises(StateFileError, match="newer"):
        load_issuer_keys(path)


def test_unwritable_directory_gives_state_file_error(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="does not exist"):
        _new(tmp_path / "missing" / "card.json")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateFileError):
        _new(blocker / "card.json")


def test_write_failure_mid_session_answers_6581(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    with _new(path) as card:
        start(card)
        os.chmod(tmp_path, 0o500)
        try:
            if os.access(tmp_path, os.W_OK):  # root ignores directory permissions
                path.unlink()
                path.mkdir()  # os.replace onto a directory fails for everyone
            assert card.process(h("0020008008 240000FFFFFFFFFF")) == h("6581")
            assert card.state.ptc == 3
        finally:
            os.chmod(tmp_path, 0o700)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_lock_serialises_processes(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    _new(path).close()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: hold the card for a while, then exit
        try:
            card = load_card(path)
            start(card)  # ATC 1, written by the child
            os.write(wfd, b"x")
            time.sleep(0.6)
            card.close()
        finally:
            os._exit(0)
    os.close(wfd)
    assert os.read(rfd, 1) == b"x"
    os.close(rfd)
    began = time.monotonic()
    with pytest.raises(StateFileError, match="in use"):
        load_card(path, timeout=0.1)
    with load_card(path, timeout=5.0) as card:  # waits for the child to let go
        assert time.monotonic() - began > 0.3
        assert card.state.atc == 1
    os.waitpid(pid, 0)


# -- durability order: what reaches the OS, observed from outside the writer ----------------------

_WRITER = """
import json, os, sys
from pathlib import Path
events = []
if sys.argv[1] == "wrap":
    real_fsync = os.fsync
    def fsync(fd):
        events.append(["fsync", os.readlink(f"/proc/self/fd/{fd}")])
        real_fsync(fd)
    os.fsync = fsync
    def hook(event, args):
        if event in ("os.rename", "os.link"):
            events.append([event[3:], os.fspath(args[0]), os.fspath(args[1])])
    sys.addaudithook(hook)
from capsim.cards import new_card
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN, start
card = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, path=Path(sys.argv[2]))
start(card)  # GET PROCESSING OPTIONS persists ATC 1: a replace of the existing file
card.close()
if sys.argv[1] == "wrap":
    print(json.dumps(events))
"""

_STRACE_LINE = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+= 0$")


def _strace_events(log: str) -> list[list[str]]:
    events: list[list[str]] = []
    for line in log.splitlines():
        m = _STRACE_LINE.match(line)
        if not m:
            continue
        call, args = m.groups()
        if call in ("fsync", "fdatasync"):
            events.append(["fsync", re.findall(r"<(.*?)>", args)[0]])
        elif call.startswith(("rename", "link")):
            src, dst = re.findall(r'"((?:[^"\\]|\\.)*)"', args)[:2]
            events.append(["rename" if call.startswith("rename") else "link", src, dst])
    return events


def _observe_writes(tmp_path: Path, observer: str) -> tuple[list[list[str]], Path]:
    root = Path(__file__).resolve().parents[2]
    path = tmp_path / "card.json"
    cmd = [sys.executable, "-c", _WRITER, observer, str(path)]
    if observer == "strace":
        strace = shutil.which("strace")
        if strace is None:
            pytest.skip("strace is not installed")
        log = tmp_path / "strace.log"
        cmd = [strace, "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat",
               "-o", str(log), *cmd]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    if observer == "strace" and proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip("ptrace is not permitted here")
    assert proc.returncode == 0, proc.stderr
    events = _strace_events(log.read_text()) if observer == "strace" else json.loads(proc.stdout)
    return events, path


@pytest.mark.parametrize("observer", ["strace", "wrap"])
def test_temp_file_synced_before_publish_and_directory_synced_after(tmp_path: Path, observer: str) -> None:
    """Both card-file writes (the new file, then a state change) publish a temp file only after
    its data was fsynced, and fsync the directory after the new name is in place.

    ``strace`` sees the real system calls (skipped where strace is missing); ``wrap`` runs
    everywhere and sees the same order through a recording ``os.fsync`` (that calls the real
    one) and the interpreter's audit events for rename/link. This proves the order and that
    each fsync returned success; that the disk honours an fsync (a power cut between rename and
    directory sync) cannot be tested without cutting the power."""
    events, path = _observe_writes(tmp_path, observer)
    directory = str(path.parent)
    mine = [e for e in events if any(str(tmp_path) in part for part in e[1:])]
    publishes = [i for i, e in enumerate(mine) if e[0] in ("rename", "link") and e[2] == str(path)]
    assert [mine[i][0] for i in publishes] == ["link", "rename"], mine  # create, then one replace
    for n, i in enumerate(publishes):
        tmp = mine[i][1]
        assert tmp != str(path)
        assert ["fsync", tmp] in mine[:i], (tmp, mine)  # the data is durable before the name points at it
        end = publishes[n + 1] if n + 1 < len(publishes) else len(mine)
        assert ["fsync", directory] in mine[i + 1 : end], mine  # the new name is durable before returning
    assert read_card_file(path)[1].atc == 1


_CREATOR = """
import sys
from capsim.cards import new_card
from capsim.errors import StateFileError
from capsim.storage import create_card_file
from tests.cards.helpers import IMK_A
card = new_card("secur-acces", pan=sys.argv[1], imk_ac=IMK_A)
print("ready", flush=True)
for line in sys.stdin:
    try:
        create_card_file(line.strip(), card.profile, card.state)
    except StateFileError as exc:
        print("exists" if "already exists" in str(exc) else f"error {exc}", flush=True)
    else:
        print("ok", flush=True)
"""


def test_two_processes_creating_one_card_file_exactly_one_wins(tmp_path: Path) -> None:
    """Two processes create the same new card file at the same moment, many times over: each
    time exactly one succeeds, the other gets "already exists", and the file is the winner's,
    whole. (A check-then-replace publish lets both "succeed", the later one overwriting.)"""
    root = Path(__file__).resolve().parents[2]
    pans = ("5555000011112222", "4444999988887777")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATOR, pan],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for pan in pans
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for n in range(60):
            path = tmp_path / f"card-{n}.json"
            for p in procs:  # both start at once: neither sees the other's file before it publishes
                assert p.stdin is not None
                p.stdin.write(f"{path}\n")
            for p in procs:
                assert p.stdin is not None
                p.stdin.flush()
            answers = [p.stdout.readline().strip() for p in procs if p.stdout is not None]
            assert sorted(answers) == ["exists", "ok"], (n, answers)
            winner = pans[answers.index("ok")]
            profile, state = read_card_file(path)
            assert profile.pan == winner
            assert state.atc == 0
            assert [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")] == []
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=30)
            if p.stdout is not None:
                p.stdout.close()
