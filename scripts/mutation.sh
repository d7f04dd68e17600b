#!/usr/bin/env bash
# Mutation testing of capsim's security-critical modules (not part of CI: too slow).
#
# Plants one small bug at a time (mutmut's mutation operators: a number, a comparison, a
# boolean, a keyword, a string, an argument dropped ...) in a *copy* of the source tree, runs
# the module's targeted tests against it and counts the mutant killed when they fail (or time
# out). The checkout is never touched. Prints the kill rate per module and every survivor.
#
# Usage: scripts/mutation.sh [--sample N] [--seed S] [--module PATH]... [--at PATH:LINE]...
#                            [--rerun LOG] [--list]
#   --sample N   test N mutants drawn at random (seeded) from all modules' mutants; 0 = all
#   --seed S     the seed of that draw (the same N and S draw the same mutants)
#   --module P   only this module (repeatable), e.g. --module capsim/cards/cardfile.py
#   --at P:L     of the drawn mutants, test only those on line L of module P (repeatable)
#   --rerun LOG  of the drawn mutants, test only those on the lines a previous run's output LOG lists
#                as survivors: with the same --sample and --seed (and unchanged modules) this
#                re-tests exactly that run's survivors, e.g. after adding tests for them
#   --list       print the modules, their mutant counts and their tests, then exit
# Needs the "mutation" extra (mutmut) and the test tools: pip install -e ".[mutation,test]".
# PYTHON selects the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c "import mutmut, pytest" 2>/dev/null; then
  echo "mutation.sh: installing the mutation and test extras into $PY's environment" >&2
  "$PY" -m pip install -q -e ".[mutation,test]"
fi
exec "$PY" - "$@" <<'PYEOF'
from __future__ import annotations

import argparse
import difflib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutmut import Context, list_mutations, mutate

# The security-critical modules, each with the tests that target it.
MODULES: dict[str, list[str]] = {
    "capsim/cards/emv_cap.py": [  # the EMV card: phases, PIN, GENERATE AC, issuer auth, scripts
        "tests/cards/test_state_machine.py", "tests/cards/test_dispatch.py",
        "tests/cards/test_cryptograms.py", "tests/cards/test_history.py",
        "tests/cards/test_issuer_auth.py", "tests/cards/test_pin_and_scripts.py",
        "tests/cards/test_pin_tear.py", "tests/cards/test_vectors.py", "tests/cards/test_transcripts.py",
        "tests/cards/test_second_witness.py", "tests/test_messages.py",
        "tests/cards/test_cdol1_un_and_script_p1p2.py",
    ],
    "capsim/cards/base.py": [  # the card OS: APDU parsing and dispatch, status words
        "tests/cards/test_dispatch.py", "tests/cards/test_state_machine.py",
        "tests/cards/test_transcripts.py",
    ],
    "capsim/iad.py": [  # CVR / IAD: built by the card, predicted by the verifier
        "tests/test_iad.py", "tests/cards/test_history.py", "tests/cards/test_vectors.py",
        "tests/cards/test_issuer_auth.py", "tests/test_messages.py",
    ],
    "capsim/codelayout.py": [  # which bits of ATC/AC/IAD make the displayed code
        "tests/test_codelayout.py", "tests/verifier/test_matcher_layout.py", "tests/reader/test_vectors.py",
        "tests/test_messages.py",
    ],
    "capsim/cap.py": [  # CDOL fill, challenge/amount parsing, TDS
        "tests/reader/test_cap.py", "tests/reader/test_vectors.py", "tests/reader/test_transcripts.py",
        "tests/test_messages.py",
    ],
    "capsim/crypto/mac.py": [  # parity, KCV, padding, MACs
        "tests/test_crypto.py", "tests/test_crypto_pyemv.py", "tests/cards/test_vectors.py",
        "tests/test_crypto_iad_bounds.py", "tests/test_messages.py",
    ],
    "capsim/crypto/keys.py": [  # ICC master keys, session keys, the tree
        "tests/test_crypto.py", "tests/test_crypto_pyemv.py", "tests/cards/test_vectors.py",
        "tests/test_crypto_iad_bounds.py", "tests/test_messages.py",
    ],
    "capsim/crypto/cryptogram.py": [  # the CVN table, AC, ARPC, CVC3
        "tests/test_crypto.py", "tests/test_crypto_pyemv.py", "tests/cards/test_vectors.py",
        "tests/test_crypto_iad_bounds.py", "tests/test_messages.py",
    ],
    "capsim/crypto/calculator.py": [  # the verifier's fast path
        "tests/test_crypto.py", "tests/test_crypto_pyemv.py", "tests/cards/test_vectors.py",
        "tests/test_crypto_iad_bounds.py", "tests/test_messages.py",
    ],
    "capsim/tlv/ber.py": ["tests/test_tlv.py", "tests/test_tlv_dol.py", "tests/test_messages.py"],
    "capsim/tlv/dol.py": ["tests/test_tlv.py", "tests/test_tlv_dol.py", "tests/test_messages.py"],
    "capsim/reader/session.py": [  # the reader session over a transport
        "tests/reader/test_inproc.py", "tests/reader/test_graph.py", "tests/reader/test_hostile.py",
        "tests/reader/test_transcripts.py", "tests/reader/test_vectors.py",
        "tests/reader/test_answer_edges.py", "tests/test_messages.py", "tests/reader/test_session_edges.py",
    ],
    "capsim/reader/transaction.py": [
        "tests/reader/test_inproc.py", "tests/reader/test_graph.py", "tests/reader/test_hostile.py",
        "tests/reader/test_transcripts.py", "tests/reader/test_vectors.py",
        "tests/reader/test_answer_edges.py", "tests/test_messages.py",
    ],
    "capsim/verifier/decision.py": [  # accept/reject rule, history variants, failure counting
        "tests/verifier/test_codes.py", "tests/verifier/test_seams.py", "tests/verifier/test_lifecycle.py",
        "tests/verifier/test_decision_edges.py", "tests/verifier/test_decision_contracts.py",
        "tests/verifier/test_decision_boundaries.py",
    ],
    "capsim/verifier/engine.py": [  # the matcher and the padding
        "tests/verifier/test_codes.py", "tests/verifier/test_seams.py",
        "tests/verifier/test_matcher_layout.py", "tests/verifier/test_lifecycle.py",
        "tests/verifier/test_decision_edges.py", "tests/test_messages.py",
        "tests/verifier/test_decision_contracts.py",
    ],
    "capsim/verifier/verification.py": [  # read -> decide -> write
        "tests/verifier/test_codes.py", "tests/verifier/test_seams.py", "tests/verifier/test_lifecycle.py",
        "tests/verifier/test_decision_edges.py", "tests/verifier/test_decision_contracts.py",
        "tests/verifier/test_store_writes.py",
    ],
    "capsim/verifier/certdecision.py": [  # certificate credentials: the pure decisions
        "tests/verifier/test_certificates.py", "tests/verifier/test_certificate_auth.py",
        "tests/verifier/test_cert_decision_edges.py", "tests/verifier/test_cert_trust_edges.py",
    ],
    "capsim/verifier/certtrust.py": [  # X.509 chain, keyUsage, CRL checks through pyca/cryptography
        "tests/verifier/test_certificates.py", "tests/verifier/test_certificate_auth.py",
        "tests/verifier/test_cert_decision_edges.py", "tests/verifier/test_cert_trust_edges.py",
    ],
    "capsim/cards/cardfile.py": [  # card files: parsing, the lock, persisting states
        "tests/cards/test_storage.py", "tests/cards/test_crash.py", "tests/cards/test_file_edges.py",
        "tests/cards/test_second_witness.py",
    ],
    "capsim/atomicfile.py": [  # atomic create/replace, fsync order, size limits
        "tests/cards/test_storage.py", "tests/cards/test_file_edges.py", "tests/test_messages.py",
        "tests/test_atomicfile.py",
    ],
    "capsim/issuerkeys.py": [  # issuer-key files: KCVs, derivation, permissions
        "tests/cards/test_storage.py", "tests/cards/test_file_edges.py",
    ],
}
# The verifier tests run on every store; the in-memory store is enough to judge the decision code.
SELECT = ["-k", "not sqlite and not postgres"]
COPY = ["capsim", "tests", "vectors", "docs", "benchmarks", "scripts", "pyproject.toml", "README.md"]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/mutation.sh")
    ap.add_argument("--sample", type=int, default=50, help="mutants to test in all (0: every mutant)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--module", action="append", default=[], help="only this module (repeatable)")
    ap.add_argument("--at", action="append", default=[], metavar="PATH:LINE",
                    help="only the drawn mutants on this line (repeatable)")
    ap.add_argument("--rerun", type=Path, metavar="LOG",
                    help="only the drawn mutants on the lines LOG (an earlier run's output) lists as survivors")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    places = list(args.at)
    if args.rerun is not None:
        try:
            places += re.findall(r"^(\S+\.py:\d+) \[survived\]", args.rerun.read_text(), re.M)
        except OSError as exc:
            ap.error(f"--rerun: cannot read {args.rerun} ({exc.strerror})")
    args.places = set()
    for place in places:
        path, _, line = place.rpartition(":")
        if path not in MODULES or not line.isdigit():
            ap.error(f"--at {place!r}: expected PATH:LINE with PATH one of the modules")
        args.places.add((path, int(line)))
    for m in args.module:
        if m not in MODULES:
            ap.error(f"unknown module {m!r}; known: {', '.join(MODULES)}")
    return args


def pytest_cmd(module: str) -> list[str]:
    # -x: the first failing test kills the mutant; the module itself runs its doctests too.
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *SELECT,
            "--timeout=120", module, *MODULES[module]]


def drop_bytecode(source: Path) -> None:
    """Remove the cached bytecode of ``source``: a mutant and the original written within the same
    second with the same size would otherwise share a stale .pyc (CPython checks mtime and size)."""
    for pyc in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
        pyc.unlink()


def run(cmd: list[str], cwd: Path, timeout: float) -> tuple[str, float]:
    env = {**os.environ, "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "default")}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    code = proc.returncode
    # 0: all passed; 5: nothing collected (a selection error, reported as an error, not a kill)
    return ("survived" if code == 0 else "error" if code == 5 else "killed"), time.monotonic() - t0


def main() -> int:
    args = parse()
    modules = args.module or list(MODULES)
    mutants: list[tuple[str, object]] = []
    sources: dict[str, str] = {}
    for m in modules:
        src = Path(m).read_text()
        sources[m] = src
        ids = list_mutations(Context(source=src, filename=m, dict_synonyms=[]))
        mutants += [(m, i) for i in ids]
        if args.list:
            print(f"{m}: {len(ids)} mutants; tests: {' '.join(MODULES[m])}")
    if args.list:
        print(f"total: {len(mutants)} mutants")
        return 0
    rng = random.Random(args.seed)
    chosen = mutants if args.sample <= 0 or args.sample >= len(mutants) else rng.sample(mutants, args.sample)
    drawn = len(chosen)
    if args.places:
        chosen = [(m, i) for m, i in chosen if (m, i.line_number + 1) in args.places]  # type: ignore[attr-defined]
    chosen.sort(key=lambda mi: (modules.index(mi[0]), mi[1].line_number, mi[1].index))  # type: ignore[attr-defined]
    print(f"mutation.sh: {drawn} of {len(mutants)} mutants (seed {args.seed}) in {len(modules)} modules"
          + (f"; testing the {len(chosen)} on the {len(args.places)} lines asked for" if args.places else ""),
          flush=True)

    work = Path(tempfile.mkdtemp(prefix="capsim-mutation-"))
    try:
        for name in COPY:
            if Path(name).is_dir():
                shutil.copytree(name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif Path(name).exists():
                shutil.copy2(name, work / name)
        where = subprocess.run([sys.executable, "-c", "import capsim; print(capsim.__file__)"], cwd=work,
                               capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
        if not Path(where.strip()).resolve().is_relative_to(work.resolve()):
            print(f"mutation.sh: the copy's capsim is not the one imported ({where.strip()})")
            return 2
        baseline: dict[str, float] = {}
        for m in sorted({m for m, _ in chosen}, key=modules.index):
            outcome, secs = run(pytest_cmd(m), work, 1800)
            if outcome != "survived":
                print(f"baseline: the tests of {m} do not pass unmutated ({outcome}); fix that first")
                return 2
            baseline[m] = secs
            print(f"baseline {m}: {secs:.1f}s", flush=True)
        results: dict[str, list[tuple[str, object, str]]] = {}
        t_all = time.monotonic()
        for n, (m, mid) in enumerate(chosen, 1):
            src = sources[m]
            mutated, applied = mutate(Context(source=src, filename=m, mutation_id=mid, dict_synonyms=[]))
            target = work / m
            if applied != 1 or mutated == src:
                outcome, secs = "equal-source", 0.0
            else:
                target.write_text(mutated)
                drop_bytecode(target)
                try:
                    outcome, secs = run(pytest_cmd(m), work, max(60.0, 5 * baseline[m]))
                finally:
                    target.write_text(src)
                    drop_bytecode(target)
            diff = "".join(
                line for line in difflib.unified_diff(src.splitlines(True), mutated.splitlines(True), n=0)
                if line[:1] in "+-" and line[:3] not in ("+++", "---")
            ).rstrip("\n")
            results.setdefault(m, []).append((outcome, mid, diff))
            print(f"[{n}/{len(chosen)}] {m}:{mid.line_number + 1} {outcome} ({secs:.1f}s)",  # type: ignore[attr-defined]
                  flush=True)
        elapsed = time.monotonic() - t_all
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n== kill rate per module")
    killed_all = tested_all = 0
    for m in modules:
        rows = [r for r in results.get(m, []) if r[0] != "equal-source"]
        if not rows:
            continue
        killed = sum(r[0] in ("killed", "timeout") for r in rows)
        killed_all += killed
        tested_all += len(rows)
        print(f"{m:34} {killed:4}/{len(rows):<4} {100 * killed / len(rows):5.1f} %")
    if tested_all:
        print(f"{'all':34} {killed_all:4}/{tested_all:<4} {100 * killed_all / tested_all:5.1f} %"
              f"   ({elapsed:.0f}s, {elapsed / max(len(chosen), 1):.1f}s per mutant)")
    print("\n== survivors")
    for m in modules:
        for outcome, mid, diff in results.get(m, []):
            if outcome in ("survived", "error"):
                print(f"{m}:{mid.line_number + 1} [{outcome}]")  # type: ignore[attr-defined]
                print("    " + diff.replace("\n", "\n    "))
    return 0


sys.exit(main())
PYEOF
