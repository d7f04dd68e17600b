"""Crash safety: SIGKILL a process driving a card file, 200 times (architecture.md §5).

A forked child opens the card file and runs random SELECT / GPO / VERIFY / GENERATE AC
sequences on the real card and card file. It reports on a pipe (the "wire" the parent sees)
every command before sending it, every answer after getting it, and every state the card
persists: ``W`` before the write starts and ``D`` once it is durable. The parent kills it with
SIGKILL at a random moment, or, like an attacker timing the card, right after it sees a
VERIFY, its first write start, or its first write complete. Then it checks:

* the file still loads, no ATC is ever handed out twice, no try is lost outside a VERIFY;
* every VERIFY, whatever the PIN, first makes PTC − 1 durable and only then answers (``63Cx``)
  or, for a right PIN, gives the try back with a second write (``9000``); a blocked PIN
  answers ``6983`` without writing;
* a VERIFY killed in flight leaves the PTC it had unless its write of PTC − 1 had started,
  and once that write was durable (the comparison may have run) the PTC is at most the old
  one minus 1, unless the PIN was right (then the restore may have completed);
* over the whole run, every wrong PIN whose comparison could have run is paid for by a
  durable try: wrong PINs since the last right one + the PTC on file never exceed the limit.

When a round leaves the card blocked the parent unblocks it in the file (as an issuer script
would), so the VERIFY path stays exercised all run long.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from capsim.cards import CardState, EmvCapCard, load_card, new_card
from capsim.storage import CardFile, read_card_file
from tests.cards.helpers import IMK_A, PAN, gac1_command, gac2_command, h, parse_gac, pin_block

ROUNDS = 200
LIMIT = 3
GOOD, BAD = pin_block("1234"), pin_block("0000")
#: How a round chooses its kill moment: a random delay, or right after a VERIFY event.
TRIGGERS = ("delay", "verify-sent", "verify-write-started", "verify-write-durable")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def _record(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(2, "big") + payload


def _child(path: Path, wfd: int, seed: int, ack_fd: int | None) -> None:  # pragma: no cover - child
    try:
        rnd = random.Random(seed)
        handle = CardFile(path, timeout=10.0)

        def event(kind: bytes, ptc: int) -> None:
            os.write(wfd, _record(kind, bytes([ptc])))
            if ack_fd is not None:  # hold still until the parent has seen it (and maybe kills)
                os.read(ack_fd, 1)

        def persist(state: CardState) -> None:
            event(b"W", state.ptc)
            handle.save_state(state)
            event(b"D", state.ptc)

        card = EmvCapCard(
            handle.profile, handle.state, rng=bytes, on_state_change=persist, on_close=handle.close
        )
        os.write(wfd, _record(b"S", b""))  # started: the parent's kill clock starts now
        aid = card.profile.aid
        gac1, gac2 = gac1_command(card), gac2_command(card)

        def send(cmd: bytes) -> bytes:
            os.write(wfd, _record(b"C", cmd))
            resp = card.process(cmd)
            os.write(wfd, _record(b"R", resp))
            return resp

        while True:
            send(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00")
            send(h("80A8000002830000"))
            if rnd.random() < 0.8:
                send(h("0020008008") + (GOOD if rnd.random() < 0.4 else BAD))
            if rnd.random() < 0.8:
                send(gac1)
                if rnd.random() < 0.7:
                    send(gac2)
    finally:
        os._exit(0)


def _parse(data: bytes) -> list[tuple[str, bytes]]:
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 3 <= len(data):
        kind, n = chr(data[pos]), int.from_bytes(data[pos + 1 : pos + 3], "big")
        if pos + 3 + n > len(data):
            break  # cut mid-record by the kill: not seen on the wire
        records.append((kind, data[pos + 3 : pos + 3 + n]))
        pos += 3 + n
    return records


def _triggered(records: list[tuple[str, bytes]], trigger: str) -> bool:
    """Whether the last command on the wire is a VERIFY that reached ``trigger``."""
    last_c = max((i for i, (kind, _) in enumerate(records) if kind == "C"), default=None)
    if last_c is None or records[last_c][1][1] != 0x20:
        return False
    after = [kind for kind, _ in records[last_c + 1 :]]
    if trigger == "verify-sent":
        return True
    return ("W" if trigger == "verify-write-started" else "D") in after


def _run_round(path: Path, round_no: int, rnd: random.Random) -> list[tuple[str, bytes]]:
    """Fork a child on the card file, SIGKILL it, return what it put on the wire.

    For the two write triggers the child stops after each ``W``/``D`` event until the parent
    acknowledges it, so the kill lands exactly at that point of the VERIFY whatever the load
    of the machine (without the handshake a loaded machine lets the child run past it)."""
    rfd, wfd = os.pipe()
    trigger = rnd.choice(TRIGGERS)
    handshake = trigger in ("verify-write-started", "verify-write-durable")
    ack_r, ack_w = os.pipe() if handshake else (None, None)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(rfd)
        if ack_w is not None:
            os.close(ack_w)
        _child(path, wfd, round_no, ack_r)
    os.close(wfd)
    if ack_r is not None:
        os.close(ack_r)
    data = b""
    if rnd.random() < 0.1:
        pass  # kill at once, possibly while the file is being opened
    elif trigger == "delay":
        data = os.read(rfd, 3)  # wait until the child runs, whatever the machine load
        time.sleep(rnd.uniform(0.0, 0.03))
    else:
        acked = 0
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([rfd], [], [], 0.1)
            if not ready:
                continue
            data += os.read(rfd, 65536)
            records = _parse(data)
            if _triggered(records, trigger):
                break
            if ack_w is not None:
                events = sum(1 for kind, _ in records if kind in "WD")
                os.write(ack_w, b"\x01" * (events - acked))
                acked = events
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if ack_w is not None:
        os.close(ack_w)
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.close(rfd)
    return _parse(data)


class Model:
    """What the parent knows of the card, checked against the wire and the file."""

    def __init__(self) -> None:
        self.ptc = LIMIT  # the PTC on file at the start of the current command
        self.wrong = 0  # wrong PINs whose comparison could have run since the last right one
        self.seen_atcs: list[int] = []
        self.gpos_sent = 0
        self.verify_outcomes: set[str] = set()

    def answered(self, cmd: bytes, resp: bytes, events: list[tuple[str, int]]) -> None:
        if cmd[1] == 0x20:
            self._verify_answered(cmd, resp, events)
        else:
            assert all(ptc == self.ptc for _, ptc in events), "a PIN try changed outside VERIFY"
        if cmd[1] == 0xAE and resp[-2:] == h("9000"):
            atc = int.from_bytes(parse_gac(resp[:-2]).atc, "big")
            if cmd[2] == 0x80:  # GAC #1: a fresh ATC on the wire
                assert not self.seen_atcs or atc > self.seen_atcs[-1], "ATC handed out twice"
                self.seen_atcs.append(atc)
            else:
                assert atc == self.seen_atcs[-1]

    def _verify_answered(self, cmd: bytes, resp: bytes, events: list[tuple[str, int]]) -> None:
        p, good = self.ptc, cmd[5:] == GOOD
        spend = [("W", p - 1), ("D", p - 1)]
        if resp == h("6983"):
            assert p == 0, "6983 while tries were left"
            assert events == [], "a blocked PIN was compared or written"
            self.verify_outcomes.add("blocked")
        elif resp[0] == 0x63:
            assert not good
            assert resp[1] == 0xC0 | (p - 1)
            assert events == spend, f"63Cx without PTC - 1 durable first: {events}"
            self.ptc, self.wrong = p - 1, self.wrong + 1
            self.verify_outcomes.add("wrong")
        else:
            assert resp == h("9000")
            assert good
            assert events == [*spend, ("W", LIMIT), ("D", LIMIT)], (
                f"9000 without PTC - 1 durable first: {events}"
            )
            self.ptc, self.wrong = LIMIT, 0
            self.verify_outcomes.add("right")

    def killed_in(self, cmd: bytes, events: list[tuple[str, int]], on_file: int) -> None:
        """The child died while ``cmd`` was in flight; ``on_file`` is the PTC it left."""
        p = self.ptc
        if cmd[1] != 0x20:
            assert on_file == p, "a PIN try was regained or lost outside a VERIFY"
            return
        good = cmd[5:] == GOOD
        if p == 0:
            assert events == []
            assert on_file == 0
            return
        expected = [("W", p - 1), ("D", p - 1)] + ([("W", LIMIT), ("D", LIMIT)] if good else [])
        assert events == expected[: len(events)], f"VERIFY wrote {events}, expected a prefix of {expected}"
        if not events:
            assert on_file == p, "a VERIFY changed the PTC before announcing a write"
        elif len(events) == 1:  # the write of PTC - 1 was under way: no comparison yet
            assert on_file in (p, p - 1)
        else:  # PTC - 1 was durable: the comparison may have run
            if good:
                assert on_file == p - 1 or (on_file == LIMIT and len(events) >= 3)
                self.wrong = 0
                self.verify_outcomes.add("right-in-flight")
            else:
                assert on_file == p - 1, "a wrong PIN was compared with its try not spent"
                self.wrong += 1
                self.verify_outcomes.add("wrong-in-flight")
        self.ptc = on_file


def _check_round(model: Model, records: list[tuple[str, bytes]], on_file: CardState) -> None:
    in_flight: bytes | None = None
    events: list[tuple[str, int]] = []
    for kind, payload in records:
        if kind == "S":
            continue
        if kind == "C":
            in_flight, events = payload, []
            if payload[:2] == h("80A8"):
                model.gpos_sent += 1
        elif kind in "WD":
            events.append((kind, payload[0]))
        else:
            assert in_flight is not None
            model.answered(in_flight, payload, events)
            in_flight, events = None, []
    if in_flight is not None:
        model.killed_in(in_flight, events, on_file.ptc)
    assert on_file.ptc == model.ptc, "a PIN try was regained or lost outside the command in flight"
    assert model.wrong + on_file.ptc <= LIMIT, "a wrong PIN was compared without a durable try"
    if model.seen_atcs:
        assert on_file.atc >= model.seen_atcs[-1]
    assert on_file.atc <= model.gpos_sent


@pytest.mark.timeout(180)
def test_sigkill_200_times_never_loses_a_pin_try_or_reuses_an_atc(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("secur-acces", pan=PAN, imk_ac=IMK_A, path=path).close()
    rnd = random.Random(20261122)
    model = Model()
    for round_no in range(ROUNDS):
        records = _run_round(path, round_no, rnd)
        # the card file always loads (and the dead child's lock is gone)
        with load_card(path, timeout=2.0) as card:
            state = card.state
        assert read_card_file(path)[1] == state
        _check_round(model, records, state)
        if state.ptc == 0:  # blocked: unblock in the file, as an issuer script would
            handle = CardFile(path, timeout=2.0)
            try:
                handle.save_state(replace(state, ptc=LIMIT))
            finally:
                handle.close()
            model.ptc, model.wrong = LIMIT, 0
    # the children really ran transactions (a loaded machine lets the random-delay rounds die
    # early: the write-triggered rounds reach a VERIFY whatever the load, GENERATE AC less often)
    assert len(model.seen_atcs) > ROUNDS // 10
    assert len(set(model.seen_atcs)) == len(model.seen_atcs)
    # the kills really landed inside VERIFYs of both kinds, after the try was spent
    assert {"right", "wrong", "blocked", "right-in-flight", "wrong-in-flight"} <= model.verify_outcomes
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # stale temp files of killed writers are removed on open
