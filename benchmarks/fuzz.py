"""APDUs per second of ``capsim fuzz card``: what a user gets, against a baseline in the same process.

Every row runs the same seeded sequences (``--seed``, ``--examples``) as ``capsim fuzz card
--seed S --max-examples N`` draws them, with the SELECT / GET DATA prologue:

* baseline: ``fuzz_card`` (the function the CLI calls: generation, the run, the reference-model
  checks, the digest) against a card that answers ``6D00`` to everything: the harness's own
  cost;
* the in-process ``inproc:secur-acces`` card alone, replaying the same sequences (drawn before
  the clock starts, no model checks): the ceiling any fuzzer of this card can reach;
* ``fuzz_card`` on ``inproc:secur-acces`` and ``inproc:visa-dpa``, everything included: the
  target is >= 20,000 APDUs/s; and on ``inproc:piv`` (the PIV grammar and model; its card signs,
  generates keys and runs 3DES, so it has no rate target);
* ``capsim fuzz card --target inproc:secur-acces --seed S --max-examples N --json`` as a
  command (a subprocess): the APDUs/s it reports, and the same count over the wall-clock time
  of the whole process (start-up and target opening included);
* with ``--pcsc``: the same card served through pcscd + vpcd, through the state-change guard
  (read-only commands), as ``--target pcsc:`` runs it (needs root or the stack).

Each in-process row is the best of ``--rounds``; the wall-clock and CPU (process) rates are
both shown, since on a shared machine the wall-clock rate follows the load.

Run:

    .venv/bin/python benchmarks/fuzz.py
    .venv/bin/python benchmarks/fuzz.py --quick
    scripts/pcsc-stack.sh .venv/bin/python benchmarks/fuzz.py --pcsc

With ``--pcsc`` it reads the vpcd address and reader from ``CAPSIM_VPCD`` / ``CAPSIM_READER``
(set by ``scripts/pcsc-stack.sh``), or starts a private pcscd itself (then no other pcscd may
run in this mount namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._machine import loadavg, machine_line  # noqa: E402
from capsim.testing.fuzz_card import (  # noqa: E402
    CardTarget,
    SequenceGenerator,
    _prologue,
    example_random,
    fuzz_card,
    open_card_target,
)


class RefusingCard:
    """The baseline: answers ``6D00`` (instruction not supported) to everything, which breaks
    no invariant, so every sequence runs to its end."""

    atr = bytes.fromhex("3B80800101")

    def power_on(self) -> bytes:
        return self.atr

    def reset(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        return None

    def process(self, apdu: bytes) -> bytes:
        return b"\x6d\x00"


def best(measure: Callable[[], tuple[int, float, float]], rounds: int) -> tuple[float, float]:
    """The best wall-clock and CPU rates of ``rounds`` runs of ``measure`` (count, wall s, CPU s)."""
    wall = cpu = 0.0
    for _ in range(rounds):
        count, w, c = measure()
        wall, cpu = max(wall, count / w), max(cpu, count / max(c, 1e-9))
    return wall, cpu


def timed(run: Callable[[], int]) -> tuple[int, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    count = run()
    return count, time.perf_counter() - w0, time.process_time() - c0


def engine(target: CardTarget, seed: int, examples: int) -> Callable[[], tuple[int, float, float]]:
    """``fuzz_card`` as the CLI calls it (no time budget: the count decides)."""
    return lambda: timed(lambda: fuzz_card(target, seed=seed, max_examples=examples, time_budget=None).apdus)


def card_alone(target: CardTarget, seed: int, examples: int) -> Callable[[], tuple[int, float, float]]:
    """The same sequences replayed on fresh cards, no checks (drawn before the clock starts)."""
    generator = SequenceGenerator(target.info)
    sequences = [[*_prologue(target.info), *generator.draw(example_random(seed, i))] for i in range(examples)]
    factory = target.factory
    assert factory is not None

    def run() -> int:
        count = 0
        for steps in sequences:
            card = factory()
            card.power_on()
            process = card.process
            for apdu in steps:
                if apdu:
                    process(apdu)
                    count += 1
                else:
                    card.power_off()
                    card.power_on()
        return count

    return lambda: timed(run)


def command(seed: int, examples: int) -> tuple[float, float]:
    """``capsim fuzz card`` in a subprocess: (its reported rate, APDUs over the process's wall time)."""
    args = [sys.executable, "-m", "capsim", "fuzz", "card", "--target", "inproc:secur-acces",
            "--seed", str(seed), "--max-examples", str(examples), "--time-budget", "600", "--json",
            "--findings", tempfile.mkdtemp(prefix="capsim-bench-fuzz-")]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPO).stdout
    wall = time.perf_counter() - t0
    report = json.loads(out)
    return report["apdus"] / report["elapsed"], report["apdus"] / wall


def row(label: str, wall: float, cpu: float | None, base: float) -> None:
    cpu_text = f"{cpu:10,.0f}" if cpu is not None else f"{'-':>10}"
    print(f"| {label:<66} | {wall:10,.0f} | {cpu_text} | 1/{base / wall:<4.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1, help="--seed of the runs (default 1)")
    parser.add_argument(
        "--examples", type=int, default=1000, help="--max-examples of the runs (default 1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per in-process row; the best is shown")
    parser.add_argument("--quick", action="store_true", help="100 examples, 1 round (a smoke test)")
    parser.add_argument("--pcsc", action="store_true", help="also measure through pcscd + vpcd")
    args = parser.parse_args()
    examples, rounds = (100, 1) if args.quick else (args.examples, args.rounds)

    secur = open_card_target("inproc:secur-acces")
    echo = CardTarget("py:echo", secur.info, factory=RefusingCard)
    print(f"capsim fuzz card benchmark; start: {machine_line()}")
    print(f"seed {args.seed}, {examples} examples per run, best of {rounds} round(s)")
    print()
    print(f"| {'path':<66} | {'APDUs/s':>10} | {'CPU APDUs/s':>10} | vs base |")
    print(f"|{'-' * 68}|{'-' * 12}|{'-' * 12}|---------|")
    base, base_cpu = best(engine(echo, args.seed, examples), rounds)
    row("baseline: fuzz_card on a card answering 6D00 to everything", base, base_cpu, base)
    wall, cpu = best(card_alone(secur, args.seed, examples), rounds)
    row("inproc:secur-acces card alone, same sequences, no checks", wall, cpu, base)
    verdict = ""
    for name in ("secur-acces", "visa-dpa"):
        wall, cpu = best(engine(open_card_target(f"inproc:{name}"), args.seed, examples), rounds)
        row(f"fuzz_card on inproc:{name} (generation, card, checks)", wall, cpu, base)
        if name == "secur-acces":
            verdict = "met" if wall >= 20_000 else "NOT met in wall-clock time"
            verdict += "; met in CPU time" if cpu >= 20_000 else "; NOT met in CPU time"
    wall, cpu = best(engine(open_card_target("inproc:piv"), args.seed, examples), rounds)
    row("fuzz_card on inproc:piv (PIV grammar and model, key operations)", wall, cpu, base)
    reported, whole = command(args.seed, examples)
    row("capsim fuzz card (subprocess): the rate it reports", reported, None, base)
    row("capsim fuzz card (subprocess): over the whole process's wall time", whole, None, base)
    if args.pcsc:
        measure_pcsc(args.seed, examples, base)
    print()
    print(f"target >= 20,000 APDUs/s for fuzz_card on inproc:secur-acces: {verdict}")
    print(f"end: load average {loadavg()}")
    return 0


def measure_pcsc(seed: int, examples: int, base: float) -> None:
    """``fuzz_card`` on a card served through pcscd + vpcd (guarded: read-only commands)."""
    from capsim.cards import new_card
    from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN
    from capsim.transports.vpcd import VpcdCardServer, parse_vpcd_address
    from tests.pcsc.stack import PcscdStack, wait_card

    stack = None
    if os.environ.get("CAPSIM_VPCD") and os.environ.get("CAPSIM_READER"):
        host, port = parse_vpcd_address(os.environ["CAPSIM_VPCD"])
        reader = os.environ["CAPSIM_READER"]
    else:
        stack = PcscdStack(Path(tempfile.mkdtemp(prefix="capsim-bench-fuzz-")), port=40000)
        stack.start()
        host, port, reader = "127.0.0.1", stack.port, stack.readers[0]
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC, rng=bytes)
    server = VpcdCardServer(card, host=host, port=port).start()
    try:
        wait_card(reader, present=True, timeout=20)
        target = open_card_target(f"pcsc:{reader}")
        try:
            wall, cpu = best(engine(target, seed, max(10, examples // 10)), 1)
        finally:
            target.close()
        row("fuzz_card on pcsc: (pcscd + vpcd, guarded: read-only commands)", wall, cpu, base)
        assert card.state.atc == 0
    finally:
        server.stop()
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
