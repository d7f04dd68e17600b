"""Verifier benchmarks, in-memory part (verifier.md V43–V45; results in docs/performance.md).

Two measurements, each against a baseline run in the same process:

1. **throughput**: verifications/s on one core with the in-memory store, beside a
   straightforward pyemv-based verifier doing the same work on the same codes. The workload is
   a fixed, seeded sequence over several enrolled emulated cards (Visa CVN 10 ``barclays`` and
   M/Chip CVN 16 ``secur-acces``): valid Identify codes arriving 1–6 ATCs ahead of the last one
   verified (other CAP uses in between) mixed with about 20 % wrong codes. Both verifiers must
   reach the same decision on every code (checked). The baseline derives the card key with
   pyemv's CVN classes, scans the whole ATC window (W = 16) × the history variants and stops at
   the first match; it keeps ``last_atc`` and a ledger in dicts. capsim does the full service
   path: store transaction, row lock, candidate filter, constant-time compare, ledger, request
   record and hash-chained audit. Reported per round and as the median of the rounds: each
   verifier's verifications/s and microseconds per verification, and capsim's ratio to the
   baseline.
2. **scale** (V43): p50 latency of a verification with 10^3 and with 10^6 credentials in the
   store (``--quick``: 10^5); the ratio should stay within 10 %.

The capsim measured is the one of the tree this script belongs to; the header shows its path
and commit, the load average and nproc (the footer the load average at the end).

Usage::

    .venv/bin/python benchmarks/verifier.py [--quick] [--part throughput|scale|all] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hmac
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pyemv import cvn as pyemv_cvn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure the tree this script belongs to, not an installed capsim

from benchmarks._machine import machine_line  # noqa: E402
from capsim.cap import CapMode, cdol_values  # noqa: E402
from capsim.cards import new_card  # noqa: E402
from capsim.errors import InvalidCode  # noqa: E402
from capsim.profiles import get_reader_profile  # noqa: E402
from capsim.reader import CapReader  # noqa: E402
from capsim.transports.inprocess import InProcessTransport  # noqa: E402
from capsim.verifier.memory import MemoryStore  # noqa: E402
from capsim.verifier.model import CredentialProfile  # noqa: E402
from capsim.verifier.policy import VerifierPolicy  # noqa: E402
from capsim.verifier.provider import SoftwareProvider  # noqa: E402
from capsim.verifier.service import Verifier, credential_profile_from_card  # noqa: E402

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
WINDOW = 16
_ARQC_CID = b"\x80"
PIN = "1234"


def pin_one_core() -> str:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    except (AttributeError, OSError):
        return "not pinned"


# ------------------------------------------------------------------------------------------------
# The straightforward baseline


@dataclass
class _BaseCard:
    pan: str
    psn: str
    profile: CredentialProfile
    last_atc: int


class PyemvVerifier:
    """A straightforward verifier on pyemv: derive, scan the window, mask, compare, update."""

    CLASSES: ClassVar[dict[int, type]] = {0x0A: pyemv_cvn.VisaCVN10, 0x10: pyemv_cvn.MasterCardCVN16}

    def __init__(self, imk: bytes, window: int, variants: int) -> None:
        self.imk = imk
        self.window = window
        self.variants = variants
        self.cards: dict[str, _BaseCard] = {}
        self.ledger: dict[tuple[str, int], str] = {}

    def enroll(self, cid: str, pan: str, psn: str, profile: CredentialProfile, last_atc: int) -> None:
        self.cards[cid] = _BaseCard(pan, psn, profile, last_atc)

    @staticmethod
    def _mask(ipb: bytes, data: bytes) -> int:
        value = 0
        for i, mask in enumerate(ipb):
            for bit in range(7, -1, -1):
                if mask >> bit & 1:
                    value = (value << 1) | (data[i] >> bit & 1)
        return value

    def verify(self, cid: str, code: str) -> int | None:
        card = self.cards[cid]
        p = card.profile
        tags = cdol_values(get_reader_profile(p.reader_profile), CapMode.IDENTIFY, iaf=p.iaf)
        engine = self.CLASSES[p.cvn](self.imk, self.imk, self.imk, card.pan, card.psn)
        presented = code.encode("ascii")
        for atc in range(card.last_atc + 1, min(card.last_atc + self.window, 0xFFFF) + 1):
            atc_b = atc.to_bytes(2, "big")
            for iad in p.iad_variants[: self.variants]:
                cvr = iad[3:7] if p.cvn == 0x0A else iad[2:8]
                ac = engine.generate_ac(
                    tag_9f02=tags[0x9F02],
                    tag_9f03=tags[0x9F03],
                    tag_9f1a=tags[0x9F1A],
                    tag_95=tags[0x95],
                    tag_5f2a=tags[0x5F2A],
                    tag_9a=tags[0x9A],
                    tag_9c=tags[0x9C],
                    tag_9f37=tags[0x9F37],
                    tag_82=p.aip,
                    tag_9f36=atc_b,
                    cvr=cvr,
                )
                value = self._mask(p.ipb, _ARQC_CID + atc_b + ac + iad)
                expected = f"{value:08d}".encode("ascii")
                if hmac.compare_digest(expected, presented):
                    card.last_atc = atc
                    self.ledger[(cid, atc)] = code
                    return atc
        return None


# ------------------------------------------------------------------------------------------------
# Workload


@dataclass(frozen=True)
class Item:
    card: int
    code: str
    atc: int | None  # None: a wrong code


@dataclass
class Fleet:
    cards: list[tuple[str, str, CredentialProfile, int]]  # pan, psn, profile, first ATC
    first_codes: list[str]
    items: list[Item]


def build_fleet(n_cards: int, n_items: int, seed: int = 7) -> Fleet:
    rng = random.Random(seed)
    readers = []
    cards = []
    firsts = []
    for i in range(n_cards):
        name = "barclays" if i % 2 == 0 else "secur-acces"
        pan = f"54133390{i:08d}"
        card = new_card(name, pan=pan, imk_ac=IMK)
        reader = CapReader(InProcessTransport(card))
        first = reader.identify(PIN)
        readers.append(reader)
        cards.append((pan, "00", credential_profile_from_card(card.profile), first.atc))
        firsts.append(first.code)
    items = []
    wrong_run = 0
    while len(items) < n_items:
        c = rng.randrange(n_cards)
        if rng.random() < 0.2 and wrong_run < 2:
            items.append(Item(c, f"{rng.randrange(10**8):08d}", None))
            wrong_run += 1
            continue
        wrong_run = 0
        result = None
        for _ in range(rng.randint(1, 6)):
            result = readers[c].identify(PIN)
        assert result is not None
        items.append(Item(c, result.code, result.atc))
    return Fleet(cards, firsts, items)


def capsim_verifier(fleet: Fleet, *, cache_size: int = 1024) -> tuple[Verifier, list[str], MemoryStore]:
    store = MemoryStore()
    provider = SoftwareProvider(cache_size=cache_size)
    provider.add_issuer_keys("bank", imk_ac=IMK)
    verifier = Verifier(store, provider, policy=VerifierPolicy(atc_window=WINDOW, max_atc_gap=WINDOW))
    verifier.add_user("bench")
    ids = []
    for (pan, psn, profile, _atc), first in zip(fleet.cards, fleet.first_codes, strict=True):
        code = verifier.issue_activation_code("bench").code
        if len(verifier.list_credentials("bench")) >= 5:
            verifier.add_user(f"bench{len(ids)}")
            code = verifier.issue_activation_code(f"bench{len(ids)}").code
        cred = verifier.enroll(
            code, pan=pan, psn=psn, profile=profile, issuer_key_id="bank", first_code=first
        )
        ids.append(cred.credential_id)
    return verifier, ids, store


def run_capsim(verifier: Verifier, ids: list[str], items: list[Item], tag: str) -> list[int | None]:
    out: list[int | None] = []
    for n, item in enumerate(items):
        try:
            out.append(verifier.verify(ids[item.card], item.code, request_id=f"{tag}-{n}").atc)
        except InvalidCode:
            out.append(None)
    return out


def run_baseline(base: PyemvVerifier, items: list[Item]) -> list[int | None]:
    return [base.verify(f"c{item.card}", item.code) for item in items]


def baseline_verifier(fleet: Fleet) -> PyemvVerifier:
    base = PyemvVerifier(IMK, WINDOW, VerifierPolicy().history_variants)
    for i, (pan, psn, profile, atc) in enumerate(fleet.cards):
        base.enroll(f"c{i}", pan, psn, profile, atc)
    return base


def throughput(rounds: int, n_items: int) -> None:
    print(f"building workload: 10 cards, {n_items} verifications ...", flush=True)
    fleet = build_fleet(10, n_items)
    wrong = sum(i.atc is None for i in fleet.items)
    print(f"  {wrong} wrong codes, {n_items - wrong} valid codes")
    cap_rates, base_rates = [], []
    for r in range(rounds):
        verifier, ids, _ = capsim_verifier(fleet)
        t0 = time.perf_counter()
        got = run_capsim(verifier, ids, fleet.items, f"r{r}")
        t_cap = time.perf_counter() - t0
        base = baseline_verifier(fleet)
        t0 = time.perf_counter()
        want = run_baseline(base, fleet.items)
        t_base = time.perf_counter() - t0
        expected = [i.atc for i in fleet.items]
        assert got == want == expected, "the two verifiers disagree"
        cap_rates.append(n_items / t_cap)
        base_rates.append(n_items / t_base)
        m = verifier.metrics
        evals = (m.candidate_evaluations + m.dummy_evaluations) / n_items  # padded to a fixed count
        print(
            f"  round {r + 1}: capsim {cap_rates[-1]:8.0f}/s = {1e6 / cap_rates[-1]:6.1f} us/verify"
            f" ({evals:.2f} cryptograms/verify)   pyemv baseline {base_rates[-1]:7.0f}/s ="
            f" {1e6 / base_rates[-1]:7.1f} us/verify   ratio {cap_rates[-1] / base_rates[-1]:.1f}x"
        )
    cap, base = statistics.median(cap_rates), statistics.median(base_rates)
    print(
        f"throughput (median of {rounds}): capsim {cap:.0f} verifications/s ({1e6 / cap:.1f} us per"
        f" verification, in-memory store, full service path), pyemv baseline {base:.0f}/s"
        f" ({1e6 / base:.1f} us), ratio {cap / base:.1f}x (target >= 3x)"
    )


def _p50(fn: Callable[[int], None], n: int) -> float:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def scale(large: int, n_calls: int) -> None:
    print(f"scale: p50 with 10^3 vs {large:.0e} credentials ({n_calls} timed verifications each)", flush=True)
    fleet = build_fleet(4, n_calls)
    results = {}
    for count in (1_000, large):
        verifier, ids, store = capsim_verifier(fleet)
        template = store.credentials[ids[0]]
        t0 = time.perf_counter()
        with store.transaction() as tx:
            for i in range(count):
                tx.insert_credential(
                    dataclasses.replace(
                        template, credential_id=f"cr-bulk{i:09d}", user_id=f"u{i}", pan_token=f"t{i}"
                    )
                )
        fill = time.perf_counter() - t0
        rng = random.Random(3)
        bulk = [f"cr-bulk{rng.randrange(count):09d}" for _ in range(n_calls)]

        def one(i: int, verifier: Verifier = verifier, ids: list[str] = ids, bulk: list[str] = bulk) -> None:
            item = fleet.items[i]
            target = ids[item.card] if item.atc is not None else bulk[i]
            with contextlib.suppress(InvalidCode):
                verifier.verify(target, item.code, request_id=f"s-{i}")

        results[count] = _p50(one, n_calls)
        print(f"  {count:>9} credentials (filled in {fill:.1f} s): p50 {results[count] * 1e6:.0f} us")
        del verifier, store
    ratio = results[large] / results[1_000]
    print(f"p50 ratio {large:.0e} / 1e3 = {ratio:.2f} (V43: within 10 %)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["throughput", "scale", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="smaller runs (10^5 credentials, fewer codes)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module=r"pyemv\.")  # pyemv's own TripleDES deprecation notices
    print(f"capsim verifier benchmark: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"start: {machine_line()}")
    print(f"{pin_one_core()}; the ratio is measured within each round", flush=True)
    if args.part in ("throughput", "all"):
        throughput(args.rounds, 600 if args.quick else 2000)
    if args.part in ("scale", "all"):
        scale(10**5 if args.quick else 10**6, 600 if args.quick else 2000)
    print(f"end: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
