"""Crash safety: SIGKILL a process driving a card file, 200 times (architecture.md §5).

A forked child opens the card file and runs random SELECT / GPO / VERIFY / GENERATE AC
sequences, writing every command to a pipe before sending it and every answer after getting
it (the "wire" the parent sees). The parent kills it with SIGKILL at a random moment, then
checks that the file still loads, that no PIN try was regained (the stored PTC is never above
what the wire last showed, unless the command in flight was a correct VERIFY), that no try was
lost beyond the command in flight, and that no ATC is ever handed out twice.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from capsim.cards import load_card, new_card
from capsim.storage import read_card_file
from tests.cards.helpers import IMK_A, PAN, gac1_command, gac2_command, h, parse_gac, pin_block

ROUNDS = 200
LIMIT = 3
GOOD, BAD = pin_block("1234"), pin_block("0000")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def _child(path: Path, wfd: int, seed: int) -> None:  # pragma: no cover - runs in the child
    try:
        rnd = random.Random(seed)
        card = load_card(path, timeout=10.0, rng=bytes)
        os.write(wfd, b"S\x00\x00")  # started: the parent's kill clock starts now
        aid = card.profile.aid
        gac1, gac2 = gac1_command(card), gac2_command(card)

        def send(cmd: bytes) -> bytes:
            os.write(wfd, b"C" + len(cmd).to_bytes(2, "big") + cmd)
            resp = card.process(cmd)
            os.write(wfd, b"R" + len(resp).to_bytes(2, "big") + resp)
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


def _read_wire(rfd: int, head: bytes) -> list[tuple[str, bytes]]:
    chunks = [head]
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 3 <= len(data):
        kind, n = chr(data[pos]), int.from_bytes(data[pos + 1 : pos + 3], "big")
        if pos + 3 + n > len(data):
            break  # cut mid-record by the kill: not seen on the wire
        records.append((kind, data[pos + 3 : pos + 3 + n]))
        pos += 3 + n
    return records


@pytest.mark.timeout(120)
def test_sigkill_200_times_never_loses_a_pin_try_or_reuses_an_atc(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("secur-acces", pan=PAN, imk_ac=IMK_A, path=path).close()
    rnd = random.Random(20261122)
    wire_ptc = LIMIT
    seen_atcs: list[int] = []
    gpos_sent = 0
    for round_no in range(ROUNDS):
        rfd, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(rfd)
            _child(path, wfd, round_no)
        os.close(wfd)
        head = b""
        if rnd.random() < 0.9:  # otherwise kill at once, possibly while the file is being opened
            head = os.read(rfd, 3)  # wait until the child runs, whatever the machine load
            time.sleep(rnd.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        records = _read_wire(rfd, head)
        os.close(rfd)
        in_flight: bytes | None = None
        for kind, payload in records:
            if kind == "S":
                continue
            if kind == "C":
                in_flight = payload
                if payload[:2] == h("80A8"):
                    gpos_sent += 1
                continue
            cmd, in_flight = in_flight, None
            assert cmd is not None
            if cmd[1] == 0x20:
                if payload == h("9000"):
                    wire_ptc = LIMIT
                elif payload[0] == 0x63:
                    assert payload[1] & 0x0F == wire_ptc - 1
                    wire_ptc = payload[1] & 0x0F
                else:
                    assert payload == h("6983")
                    assert wire_ptc == 0
            elif cmd[1] == 0xAE and payload[-2:] == h("9000"):
                atc = int.from_bytes(parse_gac(payload[:-2]).atc, "big")
                if cmd[2] == 0x80:  # GAC #1: a fresh ATC on the wire
                    assert not seen_atcs or atc > seen_atcs[-1], "ATC handed out twice"
                    seen_atcs.append(atc)
                else:
                    assert atc == seen_atcs[-1]
        # the card file always loads (and the dead child's lock is gone)
        with load_card(path, timeout=2.0) as card:
            state = card.state
        assert read_card_file(path)[1] == state
        if in_flight is not None and in_flight[1] == 0x20:
            if in_flight[5:] == GOOD and wire_ptc > 0:
                assert state.ptc in (wire_ptc, LIMIT)
                wire_ptc = state.ptc
            else:
                assert state.ptc in (wire_ptc, max(wire_ptc - 1, 0))
                wire_ptc = state.ptc
        assert state.ptc == wire_ptc, "a PIN try was regained or lost outside the command in flight"
        if seen_atcs:
            assert state.atc >= seen_atcs[-1]
        assert state.atc <= gpos_sent
    assert len(seen_atcs) > ROUNDS // 4  # the children really ran transactions
    assert len(set(seen_atcs)) == len(seen_atcs)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # stale temp files of killed writers are removed on open
