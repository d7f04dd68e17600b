"""``capsim fuzz card`` draws its sequences from the seed alone, fast, and needs no extra.

* one ``--seed`` gives one sequence (the same digest of every APDU sent), whatever other
  modules the process has loaded;
* the fuzzer keeps pace with the card it fuzzes (generation and checks cost less than the card);
* Hypothesis is a dependency; atheris is the only extra, and without it (or without the vectors
  directory) the command says so instead of printing a traceback;
* a finding names the example that found it, and the seed and example index draw it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from capsim.errors import ConfigError
from capsim.testing.fuzz_card import fuzz_card, open_card_target, run_card_sequence

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "py:tests.fuzz.planted:make_card"

#: Module-level constants of the kind Hypothesis collects from every loaded local module.
_CONSTANTS = """
A = [0x9F, 0x17, 0x36, 200, 250, 7, 13, 99, 1000, 65535, 0x80, 0xAE, 0x20]
B = [b"\\x00\\xa4", b"\\x80\\xca\\x9f\\x17", b"hello world", b"\\xff" * 8, b"\\x24\\x12\\x34"]
S = ["1234", "0000", "99999999"]
"""


def _capsim(*args: str, prelude: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``capsim ARGS`` in a fresh interpreter (run from the checkout), after ``prelude``."""
    script = f"import sys\n{prelude}\nfrom capsim.cli import main\nsys.argv = ['capsim', *{list(args)!r}]\n"
    script += "main()\n"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def test_one_seed_gives_one_sequence_whatever_is_imported(tmp_path: Path) -> None:
    (tmp_path / "extra_constants.py").write_text(_CONSTANTS, encoding="utf-8")
    args = ("fuzz", "card", "--target", "inproc:barclays", "--seed", "5", "--max-examples", "60",
            "--time-budget", "600", "--findings", str(tmp_path / "f"), "--json")  # fmt: skip
    plain = _capsim(*args)
    loaded = _capsim(
        *args,
        prelude=f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import extra_constants, hypothesis, capsim.testing.strategies",
    )
    assert plain.returncode == 0, plain.stderr
    assert loaded.returncode == 0, loaded.stderr
    first, second = json.loads(plain.stdout), json.loads(loaded.stdout)
    assert first["examples"] == second["examples"] == 60
    assert first["apdus"] == second["apdus"]
    assert len(first["digest"]) == 64
    assert first["digest"] == second["digest"]


def test_the_digest_follows_the_seed() -> None:
    target = open_card_target("inproc:secur-acces")
    runs = [fuzz_card(target, seed=s, max_examples=20, time_budget=None) for s in (3, 3, 4)]
    assert runs[0].digest == runs[1].digest
    assert runs[0].apdus == runs[1].apdus
    assert runs[2].digest != runs[0].digest


def test_the_fuzzer_keeps_pace_with_the_card() -> None:
    """Generation, the run and the model checks together cost less than the card itself: the
    fuzzer reaches at least 40 % of the rate of the bare card replaying the same sequences (it
    was under 2 % when each example was drawn by Hypothesis). CPU time of this process, best of
    three, so the machine's load matters little."""
    from capsim.testing.fuzz_card import SequenceGenerator, example_random

    target = open_card_target("inproc:secur-acces")
    generator = SequenceGenerator(target.info)
    sequences = [generator.draw(example_random(1, i)) for i in range(150)]
    factory = target.factory
    assert factory is not None

    def bare() -> float:
        start, count = time.process_time(), 0
        for steps in sequences:
            card = factory()
            card.power_on()
            for apdu in steps:
                if apdu:
                    card.process(apdu)
                    count += 1
        return count / max(time.process_time() - start, 1e-6)

    def fuzzer() -> float:
        start = time.process_time()
        report = fuzz_card(target, seed=1, max_examples=150, time_budget=None)
        return report.apdus / max(time.process_time() - start, 1e-6)

    card_rate = max(bare() for _ in range(3))
    fuzz_rate = max(fuzzer() for _ in range(3))
    assert fuzz_rate >= 0.4 * card_rate, (fuzz_rate, card_rate)


def test_a_finding_names_its_example_and_the_seed_draws_it_again(tmp_path: Path) -> None:
    from capsim.testing.fuzz_card import SequenceGenerator, example_random

    target = open_card_target(PLANTED)
    report = fuzz_card(target, seed=7, max_examples=500, time_budget=60, findings_dir=tmp_path)
    (finding,) = report.findings
    index = int(finding.meta["example"])
    assert index == report.examples - 1  # the run stopped at the failing example
    steps = SequenceGenerator(target.info).draw(example_random(7, index))
    violation, _ = run_card_sequence(open_card_target(PLANTED), steps)
    assert violation is not None
    assert violation.invariant == finding.invariant == "ptc"
    shrunk, _, drawn = finding.meta["shrunk"].removesuffix(" steps").partition(" of ")
    assert int(shrunk) <= 3 < int(drawn)


def test_the_card_fuzzer_needs_no_hypothesis(tmp_path: Path) -> None:
    result = _capsim(
        "fuzz", "card", "--target", "inproc:natwest", "--seed", "2", "--max-examples", "20",
        "--findings", str(tmp_path), "--json",
        prelude="sys.modules['hypothesis'] = None  # not importable",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize("command", [["reader", "--max-examples", "1"], ["verifier", "--max-examples", "1"]])
def test_without_hypothesis_the_other_fuzzers_say_so_without_a_traceback(command: list[str]) -> None:
    result = _capsim("fuzz", *command, prelude="sys.modules['hypothesis'] = None")
    assert result.returncode == 13, result.stderr
    assert "Traceback" not in result.stderr
    assert "needs Hypothesis" in result.stderr
    assert "pip install" in result.stderr


def test_without_atheris_the_coverage_guided_mode_says_so_without_a_traceback() -> None:
    result = _capsim(
        "fuzz", "atheris", "--target", "tlv", "--runs", "1", prelude="sys.modules['atheris'] = None"
    )
    assert result.returncode == 13, result.stderr
    assert "Traceback" not in result.stderr
    assert "needs atheris" in result.stderr
    assert "capsim[fuzz]" in result.stderr


def test_hypothesis_is_a_dependency_and_atheris_the_only_fuzz_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "hypothesis" in names
    fuzz = project["optional-dependencies"]["fuzz"]
    assert [d.split(">")[0] for d in fuzz] == ["atheris"]


def test_atheris_finds_the_vectors_from_any_directory(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (the optional fuzz extra) is not installed")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from capsim.cli import main; main()", "fuzz", "atheris",
         "--target", "tlv", "--runs", "20", "--seed", "1", "--corpus", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"from {ROOT / 'vectors'}" in result.stderr
    assert "Done " in result.stderr


def test_without_a_vectors_directory_the_error_says_what_to_pass(tmp_path: Path) -> None:
    from capsim.testing.atheris_targets import default_vectors

    package = tmp_path / "site-packages" / "capsim"
    package.mkdir(parents=True)
    with pytest.raises(ConfigError, match="pass --vectors DIR"):
        default_vectors(package)
    assert default_vectors() == ROOT / "vectors"


def test_the_hypothesis_strategy_draws_the_same_grammar_and_shrinks() -> None:
    from hypothesis import HealthCheck, find, settings

    from capsim.testing.fuzz_card import SequenceGenerator, transactions

    info = open_card_target("inproc:secur-acces").info
    generator = SequenceGenerator(info)
    found = find(
        transactions(info),
        lambda steps: any(step[1:2] == b"\x20" for step in steps),  # a VERIFY
        settings=settings(database=None, max_examples=300, suppress_health_check=list(HealthCheck)),
    )
    assert found[:2] == [generator.select, generator.gpo]  # the grammar's transaction shape
    assert len(found) <= 6  # shrunk: a transaction holds up to 12 commands


def test_card_benchmark_replaces_a_card_whose_atc_nears_the_limit() -> None:
    from benchmarks.card import IMK, PAN, transactions
    from capsim.cards import new_card

    card = new_card("secur-acces", pan=PAN, imk_ac=IMK, initial_atc=0xFFFB)
    run = transactions(card)
    assert sum(run() for _ in range(8)) == 8  # no "unexpected answer" when the ATC runs out
    assert card.state.atc == 0xFFFE  # the first card stopped short of FFFF; fresh ones went on

    renewed: list[int] = []

    def renew(old):  # type: ignore[no-untyped-def]
        renewed.append(old.state.atc)
        return new_card("secur-acces", pan=PAN, imk_ac=IMK)

    run = transactions(new_card("secur-acces", pan=PAN, imk_ac=IMK, initial_atc=0xFFFC), renew)
    for _ in range(5):
        run()
    assert renewed == [0xFFFE]


@pytest.mark.timeout(240)
def test_fuzz_benchmark_measures_the_cli_path() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--quick"],
        capture_output=True, text=True, timeout=230, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    assert "start: load average" in out
    assert "end: load average" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert any(label.startswith("baseline: fuzz_card") for label in rows)
    assert any(label.startswith("fuzz_card on inproc:secur-acces") for label in rows)
    assert any(label.startswith("capsim fuzz card (subprocess)") for label in rows)
    assert "target >= 20,000 APDUs/s" in out


def test_a_guarded_run_reports_the_first_violation_the_guards_own_read() -> None:
    from capsim.testing.fuzz_card import CardTarget
    from tests.fuzz.planted import make_card

    info = open_card_target(PLANTED).info
    target = CardTarget("py:planted-guarded", info, factory=make_card, guarded=True)
    gpo = bytes.fromhex("80A8000002830000")
    wrong_long = bytes.fromhex("00200080082800000000FFFFFF")  # the planted card keeps its PTC
    violation, run = run_card_sequence(target, [gpo, wrong_long, wrong_long], allow_state_changes=True)
    assert violation is not None
    # before the second VERIFY the guard reads the PTC (3, expected 2): that is the finding,
    # not the VERIFY's answer that follows it
    assert violation.detail == "GET DATA shows PTC 3, expected 2"
    assert run.exchanges[violation.index][0] == bytes.fromhex("80CA9F1700")
    report = fuzz_card(target, seed=7, max_examples=500, time_budget=60, allow_state_changes=True)
    (finding,) = report.findings
    assert finding.invariant == "ptc"
