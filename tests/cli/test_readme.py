"""README.md's verifier block, run as it is written: on a fresh machine (an empty HOME, no data
directory), in an empty directory, by bash, with ``capsim`` on the PATH. A README that drifts
from the commands fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """The first fenced block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"^```[a-z]*\n(.*?)^```$", re.M | re.S).search(text, start)
    assert match is not None, f"no fenced block after {heading!r}"
    return match.group(1)


def test_the_readme_verifier_block_runs_literally(tmp_path: Path) -> None:
    block = readme_block("### The verifier")
    assert "capsim code identify" in block  # the codes come from capsim's own commands
    assert "capsim code sign" in block
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "capsim"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m capsim "$@"\n')
    wrapper.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CAPSIM_") and key not in ("XDG_DATA_HOME", "PYTHONPATH")
    }
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    script = tmp_path / "block.sh"
    script.write_text(block)
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", str(script)],
        check=False,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "capsim: error" not in done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("accepted: sign for credential cr-")
    assert (home / ".local" / "share" / "capsim" / "verifier.db").exists()  # the default data dir
