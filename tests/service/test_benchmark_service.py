"""``benchmarks/service.py --quick``: it runs on the throwaway PostgreSQL cluster and reports
the library beside HTTP with the load generator's CPU, in the documented shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.verifier.pgcluster import pg_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
_REASON = pg_unavailable_reason()

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(_REASON is not None, reason=f"PostgreSQL unavailable: {_REASON}"),
]


def test_quick_run_reports_library_and_http_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "service.py"), "--quick", "--workers", "1",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Identify logins on PostgreSQL: library beside HTTP" in run.stdout
    assert run.stdout.startswith("capsim verifier service benchmark:")
    assert "start: load average" in run.stdout
    assert "end: load average" in run.stdout
    figures = json.loads(out.read_text())
    assert figures["cpus"] >= 1
    (level,) = figures["levels"]
    assert level["workers"] == 1
    for part in ("library", "http_peak", "http_80"):
        f = level[part]
        assert f["n"] == 4 * 6  # 4 tasks (or 4x the logins in one process) x 6 quick logins
        assert f["rate"] > 0
        assert 0 < f["p50_ms"] <= f["p99_ms"]
    assert level["http_peak"]["loadgen_cpu_s"] > 0
    assert 0 < level["http_peak"]["loadgen_core_share"] <= 1.5
    assert level["library"]["loadgen_cpu_s"] == 0
    (worker_cpu,) = level["http_peak"]["worker_cpu_s"]  # one uvicorn worker, its CPU measured
    assert worker_cpu > 0
    assert level["http_peak"]["worker_cpu_ms_per_request"] > 0
    assert level["http_pct_of_library"] == pytest.approx(
        100 * level["http_peak"]["rate"] / level["library"]["rate"], rel=0.02
    )
    assert level["http_80"]["rate"] <= level["http_peak"]["rate"] * 1.1  # paced, not flat out
