"""A blocked PIN on the command line: what the third wrong PIN says, a blocked card failing
before the PIN prompt, ``capsim card unblock`` / ``card change-pin`` (the issuer's scripts over
the reader), and the PIN prompt, ``--explain``, file permissions and the default card around
them (docs/cli.md).

Every code comes from a real card file through the real reader; every command runs through
the click entry point, or as a subprocess where a terminal (or its absence) matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capsim.cli._common import ExitCode
from capsim.reader import CapReader, CapSession
from capsim.storage import read_card_file
from capsim.transcript import write_transcript
from capsim.transports import open_transport
from tests.cli.helpers import PIN, Cli, World, make_world

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _block(cli: Cli, *reader: str) -> list[str]:
    """Three wrong PINs; the last line of each command's stderr."""
    lines = []
    for _ in range(3):
        run = cli("code", "identify", *reader, "--pin-stdin", stdin="0000\n")
        lines.append(run.stderr.strip().splitlines()[-1])
    return lines


def _ptc_atc(card: Path) -> tuple[int, int]:
    _, state = read_card_file(card)
    return state.ptc, state.atc


# ------------------------------------------------------------------ the blocked PIN's messages


def test_third_wrong_pin_says_the_pin_is_now_blocked_and_how_to_unblock(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("code", "identify", "--pin-stdin", stdin=PIN + "\n")  # creates the default card
    card = tmp_path / "home" / "card.json"
    runs = [cli("code", "identify", "--pin-stdin", stdin="0000\n") for _ in range(3)]
    assert [r.exit_code for r in runs] == [ExitCode.WRONG_PIN, ExitCode.WRONG_PIN, ExitCode.BLOCKED]
    last = runs[-1].stderr.strip().splitlines()
    assert len(last) == 1
    assert "0 tries left" not in last[0]
    assert "the card's PIN is now blocked" in last[0]
    assert last[0].endswith(f"to unblock it, run: capsim card unblock {card}")


def test_a_blocked_card_fails_before_the_pin_prompt(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    _block(cli)
    card = tmp_path / "home" / "card.json"
    run = cli("code", "respond", "--challenge", "1", stdin=PIN + "\n")  # the hidden prompt's way
    assert run.exit_code == ExitCode.BLOCKED
    assert "PIN:" not in run.stderr  # never asked
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("capsim: error: PIN blocked")
    assert line.endswith(f"capsim card unblock {card}")
    # and no VERIFY reached the card
    traced = cli("code", "identify", "--trace", "--pin-stdin", stdin=PIN + "\n")
    assert traced.exit_code == ExitCode.BLOCKED
    sent = [line for line in traced.stderr.splitlines() if line.startswith("> ")]
    assert sent[-1] == "> 80CA9F1700"  # GET DATA 9F17 was the last command: no VERIFY
    assert not any(line.startswith("> 0020") for line in sent)


def test_a_blocked_real_card_sends_the_cardholder_to_the_bank(tmp_path: Path) -> None:
    """A card that is not a capsim card file (here a recorded one): the bank, not a command."""
    cli = Cli(tmp_path / "home")
    _block(cli)
    exchanges: list[tuple[bytes, bytes]] = []
    with open_transport(f"file:{tmp_path / 'home' / 'card.json'}") as link:  # the issuer's view
        session = CapSession("identify", pin=None)
        CapReader(link).run(session, on_exchange=lambda c, r: exchanges.append((c, r)))
    assert (bytes.fromhex("80CA9F1700"), bytes.fromhex("9F1701009000")) in exchanges  # 0 tries left
    recorded = tmp_path / "blocked.txt"
    write_transcript(recorded, exchanges, source="a blocked card")
    run = cli("code", "identify", "--reader", f"replay:{recorded}", stdin=PIN + "\n")
    assert run.exit_code == ExitCode.BLOCKED
    assert "PIN:" not in run.stderr
    assert run.stderr.strip().endswith("only the card's issuer can unblock it: ask your bank")
    assert "capsim card unblock" not in run.stderr


# ------------------------------------------------------------------ card unblock / change-pin


def test_unblock_after_three_wrong_pins_then_a_code_is_accepted(world: World) -> None:
    cid = world.enroll()
    reader = ("--reader", f"file:{world.card}")
    _block(world.cli, *reader)
    blocked = world.cli("code", "identify", *reader, "--pin-stdin", stdin=PIN + "\n")
    assert blocked.exit_code == ExitCode.BLOCKED
    run = world.cli("card", "unblock", str(world.card))  # keys: card.issuer-keys.json beside it
    assert run.exit_code == 0, run.stderr
    assert run.stdout.startswith("PIN unblocked")
    assert _ptc_atc(world.card)[0] == 3
    code = world.code("identify")
    assert world.verify(cid, code).exit_code == 0


def test_unblock_without_an_argument_unblocks_the_default_card(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    _block(cli)
    assert cli("card", "unblock").exit_code == 0
    assert cli("code", "identify", "--pin-stdin", stdin=PIN + "\n").exit_code == 0


def test_change_pin_then_the_old_pin_is_refused_and_the_new_one_works(world: World) -> None:
    cid = world.enroll()
    run = world.cli("card", "change-pin", str(world.card), "--pin-stdin", stdin="97531\n")
    assert run.exit_code == 0, run.stderr
    assert run.stdout.startswith("PIN changed")
    assert "97531" not in run.output  # never printed
    old = world.cli("code", "identify", "--reader", f"file:{world.card}", "--pin-stdin", stdin=PIN + "\n")
    assert old.exit_code == ExitCode.WRONG_PIN
    code = world.code("identify", pin="97531")
    assert world.verify(cid, code).exit_code == 0


def test_change_pin_asks_twice_on_the_hidden_prompt(world: World) -> None:
    before = _ptc_atc(world.card)
    differ = world.cli("card", "change-pin", str(world.card), stdin="4321\n4322\n")
    assert differ.exit_code == ExitCode.INVALID_INPUT
    assert "the two entries differ" in differ.stderr
    assert _ptc_atc(world.card) == before  # nothing sent
    same = world.cli("card", "change-pin", str(world.card), stdin="4321\n4321\n")
    assert same.exit_code == 0, same.stderr
    assert same.stderr.count("PIN") >= 2
    assert "4321" not in same.output
    world.code("identify", pin="4321")


def test_change_pin_refuses_a_malformed_pin_before_touching_the_card(world: World) -> None:
    before = _ptc_atc(world.card)
    run = world.cli("card", "change-pin", str(world.card), "--pin-stdin", stdin="12\n")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "new PIN: expected 4 to 12 ASCII digits" in run.stderr
    assert _ptc_atc(world.card) == before


def test_wrong_issuer_keys_are_refused_and_the_card_is_left_unchanged(world: World, tmp_path: Path) -> None:
    world.cli.ok("card", "new", str(tmp_path / "other.json"))
    world.cli("code", "identify", "--reader", f"file:{world.card}", "--pin-stdin", stdin="0000\n")
    before = _ptc_atc(world.card)
    assert before[0] == 2
    for command in (("unblock",), ("change-pin", "--pin-stdin")):
        run = world.cli(
            "card",
            *command,
            str(world.card),
            "--issuer-keys",
            str(tmp_path / "other.issuer-keys.json"),
            stdin="4321\n",
        )
        assert run.exit_code == ExitCode.STATE_FILE
        (line,) = run.stderr.strip().splitlines()
        assert "does not hold the issuer keys of card" in line
        assert "nothing was sent to the card" in line
        assert _ptc_atc(world.card) == before  # try counter and ATC untouched
    missing = world.cli("card", "unblock", str(world.card), "--issuer-keys", str(tmp_path / "none.json"))
    assert missing.exit_code == ExitCode.STATE_FILE
    assert "does not exist" in missing.stderr
    assert _ptc_atc(world.card) == before


# ------------------------------------------------------------------ no terminal for the PIN prompt


def test_no_terminal_gives_one_clear_line_and_exit_13(tmp_path: Path) -> None:
    env = {**os.environ, "CAPSIM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "capsim", "code", "respond", "--challenge", "1"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
        timeout=60,
    )
    assert done.returncode == ExitCode.INVALID_INPUT == 13
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "capsim: error: PIN: there is no terminal to ask for it; give it on standard input with --pin-stdin"
    ]
    assert not (tmp_path / "home" / "card.json").exists()  # failed before touching any card


# ------------------------------------------------------------------ --explain keeps stdout for the code


def test_explain_goes_to_stderr_and_stdout_is_only_the_code(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    run = cli.ok("code", "respond", "--challenge", "12345678", "--explain", "--pin-stdin", stdin=PIN + "\n")
    (code,) = run.stdout.splitlines()
    assert run.stdout == code + "\n"
    assert code.isdigit()
    assert f"code {code}" in run.stderr
    assert "code bit  0 =" in run.stderr
    as_json = cli.ok("code", "identify", "--explain", "--json", "--pin-stdin", stdin=PIN + "\n")
    doc = json.loads(as_json.stdout)
    assert doc["explanation"]
    assert "code bit" not in as_json.stderr


# ------------------------------------------------------------------ permissions


def test_an_issuer_keys_file_readable_by_others_is_refused(world: World, tmp_path: Path) -> None:
    world.keys.chmod(0o644)
    new = world.cli("card", "new", str(tmp_path / "second.json"), "--issuer-keys", str(world.keys))
    assert new.exit_code == ExitCode.STATE_FILE == 12
    (line,) = new.stderr.strip().splitlines()
    assert "accessible to other users (mode 0644)" in line
    assert line.endswith(f"run chmod 600 {world.keys}")
    assert not (tmp_path / "second.json").exists()
    assert world.cli("card", "unblock", str(world.card)).exit_code == ExitCode.STATE_FILE
    assert world.v("init", "--issuer-keys", str(world.keys)).exit_code == ExitCode.STATE_FILE
    assert world.keys.stat().st_mode & 0o777 == 0o644  # refused, not changed
    world.keys.chmod(0o600)
    again = world.cli("card", "new", str(tmp_path / "second.json"), "--issuer-keys", str(world.keys))
    assert again.exit_code == 0


def test_keys_and_cards_capsim_writes_are_0600(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("card", "new", str(tmp_path / "c.json"))
    cli.ok("code", "identify", "--pin-stdin", stdin=PIN + "\n")
    for path in (
        tmp_path / "c.json",
        tmp_path / "c.issuer-keys.json",
        tmp_path / "home" / "card.json",
        tmp_path / "home" / "card.issuer-keys.json",
    ):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_card_file_readable_by_others_gets_a_warning_and_keeps_its_mode(world: World) -> None:
    world.card.chmod(0o644)
    atc = _ptc_atc(world.card)[1]
    run = world.cli("code", "identify", "--reader", f"file:{world.card}", "--pin-stdin", stdin=PIN + "\n")
    assert run.exit_code == 0, run.stderr
    assert run.stdout.strip().isdigit()
    assert f"card file {world.card} is accessible to other users (mode 0644)" in run.stderr
    assert f"chmod 600 {world.card}" in run.stderr
    assert _ptc_atc(world.card)[1] == atc + 1  # rewritten…
    assert world.card.stat().st_mode & 0o777 == 0o644  # …and left as it was


# ------------------------------------------------------------------ the default card made again


def test_a_deleted_default_card_is_made_again_and_says_its_codes_are_new(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    first = cli.ok("code", "identify", "--pin-stdin", stdin=PIN + "\n")
    assert "NEW card" not in first.stderr
    card = tmp_path / "home" / "card.json"
    old_pan = read_card_file(card)[0].pan
    card.unlink()
    again = cli.ok("code", "identify", "--pin-stdin", stdin=PIN + "\n")
    assert again.stdout.strip().isdigit()
    new_pan = read_card_file(card)[0].pan
    assert new_pan != old_pan
    warning = [line for line in again.stderr.splitlines() if line.startswith("capsim: warning:")]
    assert len(warning) == 1
    assert f"{card} was missing, so this is a NEW card with a new PAN ({new_pan[:6]}" in warning[0]
    assert "enrolled with the old card will not accept its codes" in warning[0]
    assert new_pan not in again.output  # masked
