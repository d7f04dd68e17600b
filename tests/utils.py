"""One loader for every vector file under ``vectors/``.

Two formats, both plain text with a provenance header of ``#`` lines:

* **KV blocks** (``*.txt`` under ``vectors/crypto`` and ``vectors/cap``): blocks separated by blank
  lines; an optional ``[ID]`` line names the block; ``KEY = value`` lines hold the data. Values are
  kept as strings (hex is upper case). A value may continue on the next line when that line starts
  with whitespace.
* **Transcripts** (``vectors/transcripts/*.txt``): ``@ KEY = value`` metadata lines, an optional
  ``ATR <hex>`` line, then ``> <C-APDU hex>`` / ``< <R-APDU hex incl. SW>`` pairs. Spaces inside hex
  are ignored.

Use :func:`load_vectors` with ``pytest.mark.parametrize``::

    @pytest.mark.parametrize("v", load_vectors("crypto/kd.txt"))
    def test_kd(v: dict[str, str]) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from capsim.transports.replay import read_transcript

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

T = TypeVar("T")

__all__ = ["VECTORS", "Transcript", "kcv", "load_kv_blocks", "load_transcript", "load_vectors", "unhex"]


def unhex(value: str) -> bytes:
    """Hex with optional spaces to bytes."""
    return bytes.fromhex("".join(value.split()))


def kcv(key: bytes, expected_hex: str) -> None:
    """Assert a 2- or 3-byte key check value (vectors pin the length they give)."""
    from capsim.crypto import key_check_value

    assert key_check_value(key, len(expected_hex) // 2).hex().upper() == expected_hex


def _provenance(lines: list[str], path: Path) -> None:
    header = [ln for ln in lines if ln.startswith("#")]
    if not any(ln.lower().startswith("# source") for ln in header):
        raise AssertionError(f"{path}: vector file without a '# Source:' provenance header")


def load_kv_blocks(path: Path) -> list[dict[str, str]]:
    """Parse a KV-block file into a list of dicts (``ID`` holds the block name when given)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    _provenance(lines, path)
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key: str | None = None
    for raw in lines:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                blocks.append(current)
            current, last_key = {}, None
            continue
        if raw[0].isspace() and last_key is not None:
            current[last_key] += " " + raw.strip()
            continue
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current["ID"] = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise AssertionError(f"{path}: malformed line {raw!r}")
        last_key = key.strip()
        current[last_key] = value.strip()
    if current:
        blocks.append(current)
    for i, block in enumerate(blocks):
        block.setdefault("ID", f"{path.stem}-{i}")
    return blocks


def load_vectors(
    relpath: str, loader: Callable[[dict[str, str]], T] | None = None
) -> list[Any]:
    """KV-block vectors as ``pytest.param`` objects with the block ID as test id.

    ``loader`` may convert each dict (e.g. hex to bytes) before it reaches the test.
    """
    path = VECTORS / relpath
    params = []
    for block in load_kv_blocks(path):
        value: Any = loader(block) if loader is not None else block
        params.append(pytest.param(value, id=block["ID"]))
    return params


@dataclass(frozen=True)
class Transcript:
    """A recorded card session."""

    path: Path
    meta: dict[str, str] = field(default_factory=dict)
    atr: bytes | None = None
    exchanges: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def name(self) -> str:
        return self.path.stem


def load_transcript(relpath: str | Path) -> Transcript:
    """Parse a transcript file (relative to ``vectors/`` or absolute) with capsim's own reader.

    The provenance header is checked first; :func:`capsim.transports.replay.read_transcript`
    does the parsing (one parser for the format).
    """
    path = Path(relpath)
    if not path.is_absolute():
        path = VECTORS / path
    _provenance(path.read_text(encoding="utf-8").splitlines(), path)
    session = read_transcript(path)
    return Transcript(path=path, meta=dict(session.meta), atr=session.atr, exchanges=session.exchanges)
