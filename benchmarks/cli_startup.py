"""Start-up time of the ``capsim`` command line: lazy command families against eager loading.

Each measurement is one whole process, started the way a user starts ``capsim`` (a fresh
interpreter that imports :mod:`capsim.cli` and calls ``main``), timed from ``fork`` to exit:

- ``capsim --help``;
- ``capsim code identify --help``;
- ``capsim code identify --reader inproc:secur-acces --pin-stdin`` (PIN 1234 on stdin): a real
  Identify code from an in-process card, the reader's whole transaction included;
- ``capsim code identify --reader replay:TRANSCRIPT --pin-stdin``: the same transaction played
  back from a transcript this tree records before the run, which is what the reader loads in
  front of a real card (``pcsc:``: the card, not capsim, computes the cryptogram) without
  needing pcscd.

Against, in the same run and interleaved round by round (so that load from other processes
hits every contender alike):

- ``python -c pass``: the bare interpreter, the floor no command line can go below;
- **eager**: this tree's ``main`` with every entry of :data:`capsim.cli.COMMANDS` imported and
  registered before it runs, as ``capsim/cli/__init__.py`` did before families loaded lazily;
- **lazy**: this tree's ``main`` as it is (the figure users get);
- with ``--before TREE``: ``main`` of another checkout (for instance the tree before the change),
  started the same way from that tree;
- with ``--also TREE`` (repeatable): more checkouts timed the same way, for instance one per
  commit of a change, to show what each commit bought; each gets a column and its ratio to
  ``before`` (to ``eager`` without ``--before``).

Every contender runs twice per round, from its own copy of the tree's ``capsim`` package made
for the run: **no bytecode** (a copy without ``__pycache__`` and ``PYTHONDONTWRITEBYTECODE=1``:
capsim's modules are compiled from source on every start, as from a fresh checkout or an
install without ``.pyc`` files; the standard library and the installed packages keep theirs)
and **with bytecode** (a copy whose ``__pycache__`` a warm-up run of each command filled). The
figures are medians over the rounds, as wall-clock time (what a user waits) and as the child's
CPU time (user + system, from ``getrusage``: steadier on a shared machine). The ratios are the
point; the absolute times move with the machine's load.

Run:  .venv/bin/python benchmarks/cli_startup.py [--rounds 15] [--before /path/to/other/tree]
      [--also /path/to/a/third/tree ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this tree's capsim

from benchmarks._machine import ROOT, loadavg, machine_line

LAZY = "from capsim.cli import main; main(prog_name='capsim')"
EAGER = (
    "from capsim.cli import COMMANDS, main\n"
    "from capsim.cli._lazy import load_command\n"
    "for path in COMMANDS:\n"
    "    if ' ' not in path:\n"
    "        main.add_command(load_command(COMMANDS, path), path)\n"
    "main(prog_name='capsim')\n"
)
Command = tuple[str, tuple[str, ...], str]  # label, argv, stdin


def commands(transcript: Path) -> tuple[Command, ...]:
    """The commands timed; ``transcript`` is the recorded session the replay row plays back."""
    return (
        ("capsim --help", ("--help",), ""),
        ("capsim code identify --help", ("code", "identify", "--help"), ""),
        (
            "capsim code identify (inproc card)",
            ("code", "identify", "--reader", "inproc:secur-acces", "--pin-stdin"),
            "1234\n",
        ),
        (
            "capsim code identify (replayed card)",
            ("code", "identify", "--reader", f"replay:{transcript}", "--pin-stdin"),
            "1234\n",
        ),
    )


def record_transcript(path: Path) -> None:
    """An Identify run on an in-process card, recorded with this tree's reader (PIN 1234)."""
    from capsim.reader import CapReader
    from capsim.transports import TracingTransport, open_transport

    with TracingTransport(open_transport("inproc:secur-acces")) as tracer:
        CapReader(tracer).identify("1234")
        tracer.save(str(path), source="benchmarks/cli_startup.py")


def tree_name(tree: Path) -> str:
    """A checkout's short commit, or its directory name when it is not a git work tree."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, check=False
    ).stdout.strip()
    inside = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=tree, capture_output=True, text=True, check=False
    ).stdout.strip()
    return commit if commit and Path(inside).resolve() == tree.resolve() else tree.name


@dataclass(frozen=True)
class Contender:
    """One way of starting the command line: ``code`` run by ``python -c`` from a copy of
    ``tree``'s capsim package (``tree`` None: no capsim at all)."""

    name: str
    code: str
    tree: Path | None
    with_args: bool = True


def copy_package(tree: Path, target: Path) -> Path:
    """A copy of ``tree/capsim`` (sources only, no ``__pycache__``) under ``target``."""
    shutil.copytree(tree / "capsim", target / "capsim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def run_once(
    contender: Contender, cwd: Path, argv: tuple[str, ...], stdin: str, env: dict[str, str]
) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one process; the command must succeed."""
    args = [sys.executable, "-c", contender.code, *(argv if contender.with_args else ())]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    p = subprocess.run(args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{contender.name} {' '.join(argv)}: exit {p.returncode}\n{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def environment(home: Path, *, bytecode: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSIM_", "PYTHON"))}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CAPSIM_HOME"] = str(home)
    return env


MODES = ("no bytecode", "with bytecode")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="Rounds (each runs every contender once).")
    parser.add_argument("--before", type=Path, help="Another capsim checkout to time the same way.")
    parser.add_argument(
        "--also", type=Path, action="append", default=[], help="More checkouts to time (repeatable)."
    )
    args = parser.parse_args()

    contenders = [
        Contender("python -c pass", "pass", None, with_args=False),
        Contender("eager", EAGER, ROOT),
        Contender("lazy", LAZY, ROOT),
    ]
    if args.before is not None:
        contenders.append(Contender("before", LAZY, args.before.resolve()))
    also = [Contender(tree_name(tree), LAZY, tree.resolve()) for tree in args.also]
    contenders.extend(also)
    reference = "before" if args.before is not None else "eager"

    print(machine_line())
    if args.before is not None:
        print(f"before: {args.before.resolve()} ({tree_name(args.before)})")
    for contender in also:
        print(f"{contender.name}: {contender.tree}")
    times: dict[tuple[str, str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="capsim-startup-") as tmp:
        home = Path(tmp, "home")
        home.mkdir()
        record_transcript(home / "identify.txt")
        timed = commands(home / "identify.txt")
        envs = {mode: environment(home, bytecode=mode == "with bytecode") for mode in MODES}
        cwds: dict[tuple[str, str], Path] = {}
        for contender in contenders:
            for mode in MODES:
                target = Path(tmp, contender.name.replace(" ", "_"), mode.replace(" ", "_"))
                target.mkdir(parents=True)
                cwds[(contender.name, mode)] = (
                    target if contender.tree is None else copy_package(contender.tree, target)
                )
                for _, argv, stdin in timed:  # warm-up: checks every command, fills the bytecode copy
                    run_once(contender, cwds[(contender.name, mode)], argv, stdin, envs[mode])
        for _ in range(args.rounds):
            for mode in MODES:
                for label, argv, stdin in timed:
                    for contender in contenders:
                        if not contender.with_args and label != timed[0][0]:
                            continue  # the bare interpreter once per mode and round
                        cwd = cwds[(contender.name, mode)]
                        wall, cpu = run_once(contender, cwd, argv, stdin, envs[mode])
                        times.setdefault(("wall", mode, label, contender.name), []).append(wall)
                        times.setdefault(("cpu", mode, label, contender.name), []).append(cpu)
        cold = [cwds[(c.name, "no bytecode")] for c in contenders]
        if any(any(d.rglob("__pycache__")) for d in cold):
            raise SystemExit("bytecode was written in a no-bytecode copy")

    names = [c.name for c in contenders]
    for clock, title in (("wall", "wall-clock time"), ("cpu", "CPU time (user + system)")):

        def ms(mode: str, label: str, name: str, clock: str = clock) -> float:
            if name == "python -c pass":
                label = timed[0][0]
            return 1000 * statistics.median(times[(clock, mode, label, name)])

        print(f"\nmedian {title} per process over {args.rounds} rounds, ms; ratios of lazy to eager, before")
        widths = [max(10, len(n)) for n in names]
        ratios = ["lazy/eager"] + (["lazy/before"] if args.before is not None else [])
        ratios += [f"{c.name}/{reference}" for c in also]
        columns = list(zip(names, widths, strict=True))
        header = f"{'':13} {'command':37} " + " ".join(f"{n:>{w}}" for n, w in columns)
        print(header + "".join(f"  {r:>11}" for r in ratios))
        for mode in MODES:
            for label, _, _ in timed:
                line = f"{mode:13} {label:37} " + " ".join(f"{ms(mode, label, n):{w}.1f}" for n, w in columns)
                lazy = ms(mode, label, "lazy")
                values = [lazy / ms(mode, label, "eager")]
                if args.before is not None:
                    values.append(lazy / ms(mode, label, "before"))
                values += [ms(mode, label, c.name) / ms(mode, label, reference) for c in also]
                print(line + "".join(f"  {v:11.2f}" for v in values))
    print(f"\nload average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
