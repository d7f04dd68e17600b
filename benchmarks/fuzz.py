"""APDUs per second of ``capsim fuzz card``: in process, and through pcscd + vpcd.

Measures, in one process, the same fuzz sequences (drawn once by the card fuzzer's Hypothesis
strategy, prologue included, every answer checked by the reference model) against:

* a baseline echo card that answers ``9000`` to everything (the harness's own cost);
* the in-process emulated card (``inproc:secur-acces``): the issue-7 target is >= 20,000 APDUs/s;
* the same card served through pcscd + vpcd, read-only sequences through the state-change
  guard, as ``capsim fuzz card --target pcsc:`` runs them (``--pcsc``, needs root or the stack);

and the whole ``fuzz_card`` engine in process (Hypothesis generation and shrinking included).

Run:

    .venv/bin/python benchmarks/fuzz.py
    scripts/pcsc-stack.sh .venv/bin/python benchmarks/fuzz.py --pcsc

With ``--pcsc`` it reads the vpcd address and reader from ``CAPSIM_VPCD`` / ``CAPSIM_READER``
(set by ``scripts/pcsc-stack.sh``), or starts a private pcscd itself (then no other pcscd may
run in this mount namespace).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from capsim.testing.fuzz_card import (  # noqa: E402
    CardTarget,
    _prologue,
    actions,
    fuzz_card,
    open_card_target,
)
from capsim.testing.model import CardModel  # noqa: E402


class EchoCard:
    """The baseline: answers 9000 to everything."""

    atr = bytes.fromhex("3B80800101")

    def power_on(self) -> bytes:
        return self.atr

    def reset(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        return None

    def process(self, apdu: bytes) -> bytes:
        return b"\x90\x00"


def draw_sequences(target: CardTarget, n: int, seed_value: int) -> list[list[bytes]]:
    """``n`` action lists from the card fuzzer's strategy (power cycles dropped)."""
    out: list[list[bytes]] = []

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(actions(target.info))
    def collect(steps: list[bytes]) -> None:
        out.append([s for s in steps if s])

    collect()
    return out


def replay_rate(
    send: Callable[[bytes], bytes],
    info: Any,
    sequences: list[list[bytes]],
    rounds: int,
    fresh: Callable[[], None] | None = None,
    *,
    check: bool = True,
) -> float:
    """APDUs/s sending the prologue and each sequence (``fresh()`` first: a new card), every
    answer checked by the model."""
    best = 0.0
    for _ in range(rounds):
        count = 0
        t0 = time.perf_counter()
        for steps in sequences:
            if fresh is not None:
                fresh()
            model = CardModel(aid=info.aid, pin=info.pin, pin_try_limit=info.pin_try_limit)
            for apdu in (*_prologue(info), *steps):
                answer = send(apdu)
                if check:
                    model.observe(apdu, answer)
                count += 1
        best = max(best, count / (time.perf_counter() - t0))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequences", type=int, default=400, help="fuzz sequences drawn (default 400)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path; the fastest is shown")
    parser.add_argument("--examples", type=int, default=300, help="examples for the whole-engine run")
    parser.add_argument("--pcsc", action="store_true", help="also measure through pcscd + vpcd")
    args = parser.parse_args()

    target = open_card_target("inproc:secur-acces")
    sequences = draw_sequences(target, args.sequences, 1)
    total = sum(len(s) + 3 for s in sequences)
    print(f"capsim fuzz benchmark: Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {len(sequences)} sequences, "
          f"{total} APDUs per round, best of {args.rounds}")  # fmt: skip

    echo = EchoCard()
    base = replay_rate(echo.process, target.info, sequences, args.rounds)
    print(f"  {'baseline: echo card, same sequences and model checks':<62} {base:10.0f} APDUs/s   1")

    holder: dict[str, Any] = {}

    def fresh() -> None:  # a new card per sequence, as fuzz_card does per example
        holder["card"] = target.factory()  # type: ignore[misc]

    def send(apdu: bytes) -> bytes:
        return holder["card"].process(apdu)  # type: ignore[no-any-return]

    raw = replay_rate(send, target.info, sequences, args.rounds, fresh, check=False)
    print(f"  {'in process, card alone (no model checks)':<62} {raw:10.0f} APDUs/s   1/{base / raw:.1f}")
    inproc = replay_rate(send, target.info, sequences, args.rounds, fresh)
    print(f"  {'in process: inproc:secur-acces card':<62} {inproc:10.0f} APDUs/s   1/{base / inproc:.1f}"
          f"   (target >= 20,000: {'met' if inproc >= 20_000 else 'NOT met'})")  # fmt: skip

    t0 = time.perf_counter()
    report = fuzz_card(target, seed=1, max_examples=args.examples, time_budget=None)
    elapsed = time.perf_counter() - t0
    engine = report.apdus / elapsed
    print(f"  {'whole fuzz_card engine (Hypothesis generation included)':<62} {engine:10.0f} APDUs/s   "
          f"1/{base / engine:.0f}  ({report.examples / elapsed:.0f} examples/s)")  # fmt: skip

    if args.pcsc:
        measure_pcsc(sequences, args.rounds, base)
    return 0


def measure_pcsc(sequences: list[list[bytes]], rounds: int, base: float) -> None:
    """Read-only sequences (what the guard lets through) through pcscd + vpcd."""
    from capsim.cards import new_card
    from capsim.testing.fuzz_card import is_state_changing
    from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN
    from capsim.transports.pcsc import PcscTransport
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
        safe = [[a for a in s if len(a) >= 4 and not is_state_changing(a)] for s in sequences]
        target = open_card_target("inproc:secur-acces")
        with PcscTransport(reader, timeout=10) as transport:
            rate = replay_rate(transport.transmit, target.info, safe, rounds)
        print(f"  {'through pcscd + vpcd (guarded: read-only commands)':<62} {rate:10.0f} APDUs/s   "
              f"1/{base / rate:.0f}")  # fmt: skip
        assert card.state.atc == 0
    finally:
        server.stop()
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
