"""Complete Respond codes per second: capsim's CapReader against the in-process card.

Baselines, run in the same process against identical emulated cards:

* ``python-emv`` 1.0.14 (PyPI ``emv``), when importable: its ``Card.generate_cap_value``
  drives the card through a small pyscard-like adapter (``pip install --no-deps emv==1.0.14
  pycountry``; its pinned pyscard 2.0.0 is not needed for this).
* ``straightforward``: a minimal reader written here with no validation, no state table and no
  tracing (SELECT, GPO, READ RECORD, VERIFY, GENERATE AC, IPB mask): the floor any reader pays.

Every reader first computes a code on a fresh card; the codes must agree (python-emv skips
GENERATE AC #2, which does not change the first code). Then each runs RUNS codes on its own card,
interleaved in ten chunks so that load changes on a shared machine affect all readers alike.
capsim's run is the complete reader: GET DATA 9F17 and the closing GENERATE AC #2 (a second
cryptogram on the card) included, which the baselines skip.

One more row is not a reader: ``card alone`` sends the seven APDUs of a capsim run straight to
the card, so it shows what the card's own work costs; capsim's time per code minus that time
is what the reader itself spends.

Usage: ``.venv/bin/python benchmarks/reader.py [RUNS]`` (default 2000). The script measures the
capsim of the tree it belongs to (not an installed one) and prints the load average before and
after, since the machine may be shared.

``.venv/bin/python benchmarks/reader.py --caches [ROUNDS]`` (default 40) measures instead what each
cache on the reader's path buys: capsim's reader alone, with every cache, then with each one
replaced by the plain function it wraps, interleaved in ROUNDS rounds of 100 codes. Times are
CPU time of this process (``time.process_time``), and the table gives the fastest round of
each configuration, which other processes on a shared machine disturb least.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure the tree this script belongs to, not an installed capsim

from benchmarks._machine import loadavg, machine_line  # noqa: E402
from capsim.cards import EmvCapCard, new_card  # noqa: E402
from capsim.reader import CapReader  # noqa: E402
from capsim.transports import TracingTransport  # noqa: E402
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, InProcessTransport  # noqa: E402

CARD = "barclays"  # a UK DPA card: every reader here (and python-emv) handles it
CHALLENGE = "12345678"


def fresh_card() -> EmvCapCard:
    card = new_card(CARD, pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    card.power_on()
    return card


# ------------------------------------------------------------------ capsim


def capsim_runner(card: EmvCapCard) -> Callable[[], str]:
    reader = CapReader(InProcessTransport(card), "visa-dpa")
    return lambda: reader.respond("1234", CHALLENGE).code


# ------------------------------------------------------------------ python-emv through an adapter


class _PyscardLikeConnection:
    """What python-emv's TransmissionProtocol expects of a pyscard connection."""

    T0_protocol = 1

    def __init__(self, card: EmvCapCard) -> None:
        self.card = card

    def connect(self, protocol: int) -> None:
        self.card.power_on()

    def getProtocol(self) -> int:  # noqa: N802 - pyscard's name
        return self.T0_protocol

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        answer = self.card.process(bytes(apdu))
        return list(answer[:-2]), answer[-2], answer[-1]


def python_emv_runner(card: EmvCapCard) -> Callable[[], str] | None:
    try:
        from emv.card import Card  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    emv_card = Card(_PyscardLikeConnection(card))
    # python-emv prints the bare integer; pad it here so the codes compare
    return lambda: f"{emv_card.generate_cap_value('1234', challenge=CHALLENGE):08d}"


# ------------------------------------------------------------------ straightforward baseline


def straightforward_runner(card: EmvCapCard) -> Callable[[], str]:
    from capsim.tlv import decode, fill_dol, find, parse_dol, walk

    def tx(hexcmd: str | bytes) -> bytes:
        raw = bytes.fromhex(hexcmd) if isinstance(hexcmd, str) else hexcmd
        return card.process(raw)[:-2]

    def run() -> str:
        tx("00A4040007A000000003800200")
        gpo = tx("80A8000002830000")
        afl = gpo[4:] if gpo[0] == 0x80 else find(decode(gpo), 0x94).value  # type: ignore[union-attr]
        tags: dict[int, bytes] = {}
        for i in range(0, len(afl), 4):
            for rec in range(afl[i + 1], afl[i + 2] + 1):
                body = tx(bytes([0, 0xB2, rec, afl[i] | 4, 0]))
                tags.update({o.tag: o.value for _, o in walk(decode(body))})
        tx("0020008008241234FFFFFFFFFF")
        values = {
            0x95: bytes.fromhex("8000000000"),
            0x9A: bytes.fromhex("010101"),
            0x9F37: bytes.fromhex(CHALLENGE),
        }
        data = fill_dol(parse_dol(tags[0x8C]), values)
        v = tx(bytes([0x80, 0xAE, 0x80, 0, len(data)]) + data + b"\x00")[2:]
        ipb = tags[0x9F56]
        bits = "".join(
            f"{d:08b}"[k] for m, d in zip(ipb, v, strict=False) for k in range(8) if f"{m:08b}"[k] == "1"
        )
        return f"{int(bits, 2):08d}"

    return run


# ------------------------------------------------------------------ the card's own cost


def card_alone_runner(card: EmvCapCard) -> Callable[[], str]:
    """Not a reader: the APDUs of one capsim run (recorded on another card) sent straight to ``card``."""
    tracer = TracingTransport(InProcessTransport(fresh_card()), redact=False)
    CapReader(tracer, "visa-dpa").respond("1234", CHALLENGE)
    commands = [command for command, _ in tracer.exchanges]

    def run() -> str:
        for command in commands:
            card.process(command)
        return ""

    return run


# ------------------------------------------------------------------ measurement


def measure(runners: dict[str, Callable[[], str]], runs: int, rounds: int = 10) -> dict[str, float]:
    """Codes per second for each runner, interleaved in ``rounds`` chunks so load drift hits all alike."""
    spent = dict.fromkeys(runners, 0.0)
    chunk = max(1, runs // rounds)
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(chunk):
                run()
            spent[name] += time.perf_counter() - start
    return {name: chunk * rounds / seconds for name, seconds in spent.items()}


# ------------------------------------------------------------------ what each cache buys


def _cache_switches() -> dict[str, list[tuple[ModuleType, str, object]]]:
    """Configuration name -> (module, attribute, plain function) replacements that turn a cache off."""
    import capsim.reader.selection as selection
    import capsim.reader.transaction as transaction
    import capsim.tlv.dol as dol
    from capsim.apdu import builders
    from capsim.reader import apdus

    answers = [(m, "template", apdus.template.__wrapped__) for m in (selection, transaction)]
    commands = [
        (selection, "select", builders.select),
        (selection, "gpo", builders.gpo),
        (selection, "read_record", builders.read_record),
        (transaction, "read_record", builders.read_record),
    ]
    dols = [(dol, "_cached_parse_dol", dol._parse_dol)]
    plans = [(dol, "_cached_fill_plan_of", dol._fill_plan_of)]
    return {
        "every cache": [],
        "no answer cache (reader.apdus.template)": answers,
        "no command cache (reader.apdus.select, gpo, read_record)": commands,
        "no parsed-DOL cache (tlv.parse_dol)": dols,
        "no DOL fill-plan cache (tlv.fill_dol)": plans,
        "no cache at all": answers + commands + dols + plans,
    }


def measure_caches(rounds: int, per_round: int = 100) -> None:
    """Print CPU time per code with each cache off in turn (see the module docstring)."""
    switches = _cache_switches()
    saved = {(id(m), name): (m, name, getattr(m, name)) for c in switches.values() for m, name, _ in c}
    reader = capsim_runner(fresh_card())
    card = card_alone_runner(fresh_card())
    samples: dict[str, list[float]] = {name: [] for name in [*switches, "card alone (capsim's APDUs)"]}
    for _ in range(per_round):
        reader()
    for _ in range(rounds):
        for name, replaced in [*switches.items(), ("card alone (capsim's APDUs)", [])]:
            for module, attr, value in saved.values():
                setattr(module, attr, value)
            for module, attr, plain in replaced:
                setattr(module, attr, plain)
            run = card if name.startswith("card alone") else reader
            for _ in range(10):
                run()
            start = time.process_time()
            for _ in range(per_round):
                run()
            samples[name].append((time.process_time() - start) / per_round * 1e6)
    for module, attr, value in saved.values():
        setattr(module, attr, value)
    best = {name: min(xs) for name, xs in samples.items()}
    base, card_us = best["every cache"], best["card alone (capsim's APDUs)"]
    print(f"CPU us per Respond code, fastest of {rounds} rounds of {per_round} (median in brackets):")
    print("| configuration | us per code | the reader's own us | vs every cache |")
    print("|---|---|---|---|")
    for name, xs in samples.items():
        own = "—" if name.startswith("card alone") else f"{best[name] - card_us:.0f}"
        change = "" if name.startswith("card alone") else f"{(best[name] / base - 1) * 100:+.0f} %"
        print(f"| {name} | {best[name]:.0f} ({statistics.median(xs):.0f}) | {own} | {change} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--caches":
        print(f"capsim reader cache benchmark: {machine_line()}")
        measure_caches(int(sys.argv[2]) if len(sys.argv) > 2 else 40)
        print(f"end: load average {loadavg()}")
        return
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"capsim reader benchmark: {machine_line()}")
    makers: dict[str, Callable[[EmvCapCard], Callable[[], str] | None]] = {
        "capsim CapReader": capsim_runner,
        "python-emv 1.0.14 (adapter)": python_emv_runner,
        "straightforward baseline": straightforward_runner,
        "card alone (capsim's APDUs)": card_alone_runner,
    }
    not_readers = {"card alone (capsim's APDUs)"}
    first: dict[str, str] = {}
    runners: dict[str, Callable[[], str]] = {}
    for name, make in makers.items():
        runner = make(fresh_card())
        if runner is None:
            print(f"{name}: not installed, skipped")
            continue
        if name not in not_readers:
            first[name] = runner()
        runner = make(fresh_card())
        assert runner is not None
        for _ in range(max(1, runs // 20)):  # warm-up
            runner()
        runners[name] = runner
    rates = measure(runners, runs)
    codes = set(first.values())
    print(f"first code on a fresh {CARD} card: {', '.join(f'{n}={c}' for n, c in first.items())}")
    if len(codes) != 1:
        raise SystemExit("the readers disagree on the first code")
    base = rates["capsim CapReader"]
    python = sys.version.split()[0]
    print(f"Respond codes per second over {runs} runs (in-process {CARD} card, Python {python}):")
    for name, value in rates.items():
        print(f"  {name:32s} {value:9.0f} codes/s   capsim rate / this rate = {base / value:5.2f}")
    card_us = 1e6 / rates["card alone (capsim's APDUs)"]
    print(
        f"time per code: capsim {1e6 / base:.0f} us, of which the card {card_us:.0f} us"
        f" and the reader {1e6 / base - card_us:.0f} us"
    )
    print(f"end: load average {loadavg()}")


if __name__ == "__main__":
    main()
