"""Card emulator throughput: APDUs/s through process() and CAP transactions/s.

Usage: .venv/bin/python benchmarks/card.py [--seconds S]

Every figure is also printed as a ratio against a baseline measured in the same process: a
trivial card that answers ``9000`` to every command through the same call (so the ratios are
comparable across machines). Results and the command go to docs/performance.md (## Card).
A card whose ATC nears ``FFFF`` is replaced by a fresh one (:func:`transactions`), so any
``--seconds`` works on any machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from capsim.cards import EmvCapCard, initial_state, load_card, new_card

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "1234567890123456"
SELECT = bytes.fromhex("00A4040007A000000004800200")
GPO = bytes.fromhex("80A8000002830000")
READ = bytes.fromhex("00B2010C00")
GET_PTC = bytes.fromhex("80CA9F1700")
VERIFY = bytes.fromhex("0020008008241234FFFFFFFFFF")
CDOL1 = bytes.fromhex("000000000000 000000000000 0000 8000000000 0000 000000 00 12345678".replace(" ", ""))
GAC1 = bytes([0x80, 0xAE, 0x80, 0x00, len(CDOL1)]) + CDOL1 + b"\x00"
CDOL2 = b"Z3" + CDOL1
GAC2 = bytes([0x80, 0xAE, 0x00, 0x00, len(CDOL2)]) + CDOL2 + b"\x00"


class EchoCard:
    """Baseline: answers 9000 to everything."""

    def process(self, apdu: bytes) -> bytes:
        return b"\x90\x00"


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Operations per second of ``fn`` (which returns how many operations it ran)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        done += fn()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def simple_apdus(card: EmvCapCard | EchoCard) -> Callable[[], int]:
    cmds = [SELECT, GET_PTC, READ, GET_PTC] * 25

    def run() -> int:
        process = card.process
        for c in cmds:
            process(c)
        return len(cmds)

    return run


#: A card whose ATC reached this is replaced before its next transaction: at ``FFFF`` a card
#: refuses GET PROCESSING OPTIONS for good (a fast machine gets there within seconds).
ATC_RENEW = 0xFFFE


def fresh_like(card: EmvCapCard) -> EmvCapCard:
    """A new in-memory card of ``card``'s profile and PIN, ATC 0."""
    state = replace(initial_state(card.profile, card.state.pin), atc=0)
    return EmvCapCard(card.profile, state, rng=os.urandom)


def transactions(
    card: EmvCapCard, renew: Callable[[EmvCapCard], EmvCapCard] = fresh_like
) -> Callable[[], int]:
    """One CAP transaction per call; the card is replaced by ``renew(card)`` (default: a fresh
    in-memory card of the same profile) when its ATC reaches :data:`ATC_RENEW`."""
    aid = card.profile.aid
    seq = (bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00", GPO, VERIFY, GAC1, GAC2)
    current = [card]

    def run() -> int:
        if current[0].state.atc >= ATC_RENEW:
            current[0] = renew(current[0])
        process = current[0].process
        for c in seq:
            if process(c)[-2:] != b"\x90\x00":
                raise RuntimeError(f"unexpected answer to {c.hex()}")
        return 1

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    s = args.seconds

    baseline = rate(simple_apdus(EchoCard()), s)
    print(f"baseline (echo card):            {baseline:12,.0f} APDUs/s")
    card = new_card("secur-acces", pan=PAN, imk_ac=IMK, initial_atc=0)
    simple = rate(simple_apdus(card), s)
    print(f"simple APDUs, in memory:         {simple:12,.0f} APDUs/s   (baseline/{baseline / simple:.1f})")
    for profile in ("secur-acces", "visa-dpa"):
        card = new_card(profile, pan=PAN, imk_ac=IMK)
        tx = rate(transactions(card), s)
        print(
            f"CAP transactions, in memory ({profile:11}): {tx:9,.0f} txn/s "
            f"({5 * tx:,.0f} APDUs/s; baseline/{baseline / (5 * tx):.1f})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "card.json"
        new_card("secur-acces", pan=PAN, imk_ac=IMK, path=path).close()
        with load_card(path) as filecard:
            simple_f = rate(simple_apdus(filecard), s)
            print(
                f"simple APDUs, card file:         {simple_f:12,.0f} APDUs/s   "
                f"(baseline/{baseline / simple_f:.1f})"
            )
            opened: list[EmvCapCard] = []

            def renew_file(old: EmvCapCard) -> EmvCapCard:  # a new card file, never an in-memory card
                new_path = Path(tmp) / f"card-{len(opened) + 1}.json"
                new_card("secur-acces", pan=PAN, imk_ac=IMK, path=new_path).close()
                opened.append(load_card(new_path))
                return opened[-1]

            try:
                tx_f = rate(transactions(filecard, renew_file), s)
            finally:
                for extra in opened:
                    extra.close()
            print(
                f"CAP transactions, card file (fsync per state change): {tx_f:9,.0f} txn/s "
                f"(baseline/{baseline / (5 * tx_f):.0f} per APDU)"
            )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
