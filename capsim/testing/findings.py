"""Findings of the fuzzers: what broke, the shrunk exchanges, and how to replay them.

A finding is saved as a transcript in the format of :mod:`capsim.transports.replay` (so the
``replay:`` transport plays it back), with the fuzzer, target, seed, invariant and detail as
``@ KEY = value`` metadata. Power cycles inside a card sequence are listed in
``@ power_cycles`` (indices of the exchanges they came before).

>>> f = Finding(fuzzer="card", target="inproc:barclays", seed=7, invariant="ptc",
...             detail="GET DATA shows PTC 3, expected 2",
...             exchanges=((bytes.fromhex("80CA9F1700"), bytes.fromhex("9F1701039000")),))
>>> f.summary()
'card inproc:barclays seed 7: ptc: GET DATA shows PTC 3, expected 2 (1 exchange(s))'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsim.transports.replay import RecordedSession, read_transcript, write_transcript

__all__ = ["Finding", "finding_from_transcript", "save_finding"]


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One broken invariant, shrunk to a minimal sequence.

    Attributes
    ----------
    fuzzer:
        ``card``, ``reader`` or ``verifier``.
    target:
        What was fuzzed (a target spec, a reader mode, a store URL with the password hidden).
    seed:
        The Hypothesis seed that found it (``--seed`` reproduces the run).
    invariant, detail:
        Which invariant broke, and how (one line, nothing secret).
    exchanges:
        (command, response) pairs of the minimal failing sequence (not in ``repr``: they may
        hold a PAN or PIN block).
    power_cycles:
        Exchange indices before which the card was powered off and on.
    meta:
        Further replay parameters (reader mode and inputs, ...).
    path:
        Where the transcript was written, once saved.
    """

    fuzzer: str
    target: str
    seed: int
    invariant: str
    detail: str
    exchanges: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    power_cycles: tuple[int, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None

    def summary(self) -> str:
        """One line for the end-of-run summary."""
        return (
            f"{self.fuzzer} {self.target} seed {self.seed}: {self.invariant}: {self.detail} "
            f"({len(self.exchanges)} exchange(s))"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``); exchanges as upper-case hex."""
        return {
            "fuzzer": self.fuzzer,
            "target": self.target,
            "seed": self.seed,
            "invariant": self.invariant,
            "detail": self.detail,
            "exchanges": [[c.hex().upper(), r.hex().upper()] for c, r in self.exchanges],
            "power_cycles": list(self.power_cycles),
            "meta": dict(self.meta),
            "path": self.path,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "finding"


def save_finding(directory: str | os.PathLike[str], finding: Finding) -> Finding:
    """Write ``finding`` as a replayable transcript in ``directory`` (created, mode 0700).

    Returns the finding with :attr:`Finding.path` set. An existing file is never overwritten
    (a counter is appended to the name).
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = f"{finding.fuzzer}-{_slug(finding.target)}-{finding.invariant}-seed{finding.seed}"
    path = folder / f"{stem}.txt"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.txt"
    meta = {
        "fuzzer": finding.fuzzer,
        "target": finding.target,
        "seed": str(finding.seed),
        "invariant": finding.invariant,
        "detail": finding.detail.replace("\n", " "),
        "power_cycles": ",".join(str(i) for i in finding.power_cycles),
        **{k: v.replace("\n", " ") for k, v in finding.meta.items()},
    }
    write_transcript(
        path,
        finding.exchanges,
        source=(
            f"capsim fuzz {finding.fuzzer} --target {finding.target} --seed {finding.seed} (shrunk finding)"
        ),
        meta=meta,
    )
    os.chmod(path, 0o600)
    return Finding(**{**finding.__dict__, "path": str(path)})


def finding_from_transcript(source: str | os.PathLike[str] | RecordedSession) -> Finding:
    """Read a finding back from its transcript."""
    session = source if isinstance(source, RecordedSession) else read_transcript(source)
    meta = dict(session.meta)
    known = {"fuzzer", "target", "seed", "invariant", "detail", "power_cycles"}
    cycles = tuple(int(x) for x in meta.get("power_cycles", "").split(",") if x.strip().isdigit())
    seed_text = meta.get("seed", "0")
    return Finding(
        fuzzer=meta.get("fuzzer", "card"),
        target=meta.get("target", ""),
        seed=int(seed_text) if seed_text.lstrip("-").isdigit() else 0,
        invariant=meta.get("invariant", ""),
        detail=meta.get("detail", ""),
        exchanges=session.exchanges,
        power_cycles=cycles,
        meta={k: v for k, v in meta.items() if k not in known},
        path=None if isinstance(source, RecordedSession) else os.fspath(source),
    )
