"""V44, V30: the bundled verifier benchmarks run and report what they promise.

The figures themselves are recorded in docs/performance.md (no timed assertions here, and no
regression gate yet); these tests only keep the benchmarks working, each in its ``--quick``
mode, in a real subprocess:

* ``benchmarks/verifier_stores.py``: every store and number of worker processes asked for gets
  a row with its throughput and verify/login percentiles, every timed verification was counted,
  and, for PostgreSQL, every verify path gets its statement and round-trip counts;
* ``benchmarks/verifier_timing.py``: every reject class (and the accept) gets its median, p10
  and p90 and its median relative to the wrong-code median;
* every report names the machine load (``os.getloadavg()``) and ``nproc``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.verifier.pgcluster import pg_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=540,
        check=True,
        cwd=ROOT,
    ).stdout


def _table(out: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The markdown table of ``out`` whose first header cell is ``first_header``."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return cells, rows
    raise AssertionError(f"no table starting with {first_header!r} in:\n{out}")


def _machine_described(out: str) -> None:
    assert "start: load average " in out
    assert "nproc " in out
    assert "end: load average " in out


@pytest.mark.timeout(600)
def test_V44_store_benchmark_reports_rate_and_percentiles_per_store_and_process_count() -> None:
    out = _run("verifier_stores.py", "--quick", "--processes", "1,2", "--stores", "memory,sqlite")
    _machine_described(out)
    header, rows = _table(out, "store")
    assert header[:9] == [
        "store",
        "processes",
        "verifications",
        "verif/s",
        "verify p50 ms",
        "verify p95 ms",
        "verify p99 ms",
        "login p50 ms",
        "login p99 ms",
    ]
    assert "vs memory" in header
    by_key = {(cells[0], int(cells[1])): cells for cells in rows}
    assert set(by_key) == {(s, n) for s in ("memory", "sqlite") for n in (1, 2)}
    for (store, processes), cells in by_key.items():
        assert int(cells[2]) == 8 * processes  # every timed verification of every worker was counted
        assert float(cells[3].replace(",", "")) > 0
        p50, p95, p99, login50, login99 = (float(c) for c in cells[4:9])
        assert 0 < p50 <= p95 <= p99
        assert 0 < login50 <= login99
        assert p50 <= login50  # a login is issue_operation + verify
        ratio = cells[header.index("vs memory")]
        assert ratio == "1.00" if store == "memory" else float(ratio) > 0
    assert "made ahead" in out  # says that the codes are made before the timed section
    assert "PostgreSQL statements" not in out  # not asked for


@pytest.mark.timeout(600)
def test_V44_store_benchmark_counts_postgres_statements_and_round_trips_per_verify_path() -> None:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    out = _run("verifier_stores.py", "--quick", "--stores", "postgres", "--part", "statements")
    _machine_described(out)
    header, rows = _table(out, "path")
    assert header == [
        "path",
        "statements",
        "round trips",
        "execute calls",
        "max statements",
        "max round trips",
    ]
    by_path = {cells[0]: [int(c) for c in cells[1:]] for cells in rows}
    assert set(by_path) == {
        "issue_operation (identify)",
        "verify operation: accept",
        "verify operation: wrong code",
        "verify operation: unknown operation id",
        "verify credential (Identify login): accept",
        "verify credential: wrong code",
        "verify credential: unknown credential id",
    }
    for statements, round_trips, calls, max_statements, max_round_trips in by_path.values():
        # BEGIN and COMMIT at least; every round trip carries at least one statement once the
        # statements are prepared, and each execute call is at least one round trip
        assert 2 <= round_trips <= statements
        assert 2 <= calls <= round_trips
        assert max_statements >= statements
        assert max_round_trips >= round_trips
    # an accept writes more than the reject of an unknown target
    assert (
        by_path["verify credential (Identify login): accept"][0]
        > by_path["verify credential: unknown credential id"][0]
    )
    assert "store |" not in out  # the throughput part was not asked for


@pytest.mark.timeout(600)
def test_V30_timing_benchmark_reports_each_reject_class_against_the_wrong_code_median() -> None:
    out = _run("verifier_timing.py", "--quick", "--samples", "12")
    _machine_described(out)
    header, rows = _table(out, "store")
    assert header == [
        "store",
        "class",
        "samples",
        "median us",
        "p10 us",
        "p90 us",
        "median / wrong-code-candidate median",
        "within 10 %",
    ]
    # the two tables (memory, sqlite) share the header: collect both
    all_rows = [
        [c.strip() for c in ln.strip().strip("|").split("|")]
        for ln in out.splitlines()
        if ln.startswith(("| memory |", "| sqlite |"))
    ]
    assert len(rows) == 7
    classes = {
        "accept",
        "unknown-credential",
        "locked",
        "suspended",
        "revoked",
        "wrong-code-candidate",
        "wrong-code-no-candidate",
    }
    by_key = {(cells[0], cells[1]): cells for cells in all_rows}
    assert set(by_key) == {(s, c) for s in ("memory", "sqlite") for c in classes}
    for (_store, cls), cells in by_key.items():
        assert int(cells[2]) == 12
        median, p10, p90 = (float(c) for c in cells[3:6])
        assert 0 < p10 <= median <= p90
        ratio = float(cells[6])
        assert ratio > 0
        assert cells[7] == ("yes" if abs(ratio - 1) <= 0.10 else "no")
        if cls == "wrong-code-candidate":
            assert ratio == 1.0
    assert out.count("largest deviation of a reject class") == 2
