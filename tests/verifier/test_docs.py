"""The quick-start example of docs/verifier.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

from capsim.verifier.model import Acceptance, OperationMode

DOC = Path(__file__).resolve().parents[2] / "docs" / "verifier.md"


def test_quick_start_example_runs() -> None:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match is not None
    namespace: dict[str, object] = {}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    acceptance = namespace["acceptance"]
    assert isinstance(acceptance, Acceptance)
    assert acceptance.mode is OperationMode.SIGN
    assert acceptance.atc == 2
