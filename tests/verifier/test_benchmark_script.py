"""V44: the bundled store benchmark runs and reports what the requirement names.

The figures themselves are recorded in docs/performance.md (no timed assertions here, and no
regression gate yet); this test only keeps the benchmark working: every store and concurrency
level asked for gets a row with its throughput and p50/p95/p99 latencies, and every
verification it times was accepted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_V44_bundled_benchmark_reports_throughput_and_percentiles_per_store_and_level() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "verifier_stores.py"),
            "--per-thread",
            "4",
            "--levels",
            "1,3",
            "--stores",
            "memory,sqlite",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=True,
        cwd=ROOT,
    ).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:7] == ["store", "concurrency", "verifications", "verif/s", "p50 ms", "p95 ms", "p99 ms"]
    rows = {
        (cells[0], int(cells[1])): cells
        for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:])
    }
    assert set(rows) == {(s, n) for s in ("memory", "sqlite") for n in (1, 3)}
    for (_store, level), cells in rows.items():
        assert int(cells[2]) == 4 * level  # every timed verification was counted
        rate = float(cells[3].replace(",", ""))
        p50, p95, p99 = (float(c) for c in cells[4:7])
        assert rate > 0
        assert 0 < p50 <= p95 <= p99
