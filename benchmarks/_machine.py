"""What every verifier benchmark prints about the machine, and small shared helpers.

A figure is only worth its conditions: each report starts with :func:`machine_line` (load
average, CPUs, Python, which capsim tree and commit was measured) and ends with the load.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import capsim

ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line() -> str:
    """Load average, CPUs, Python and the capsim tree measured."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        nproc = os.cpu_count() or 0
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    return (
        f"load average {loadavg()}; nproc {nproc} (os.cpu_count() {os.cpu_count()}); "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"capsim {Path(capsim.__file__).parent} at {commit or '?'}"
    )


def luhn_pan(body: str) -> str:
    """``body`` with its Luhn check digit appended (test PANs)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)
