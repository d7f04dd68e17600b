"""Verifier store benchmark: SQLite and PostgreSQL at concurrency 1, 8 and 32.

Each level enrols one emulated card per worker thread (so that, as with real users, the
workers contend on the audit chain and the server, not on one credential row), pre-computes
each card's next Identify codes with the real reader, then times ``Verifier.verify`` (the full
accept path: credential row lock, ledger, request and audit rows, COMMIT). The in-memory store
runs the same workload in the same process as the baseline; ratios are against it.

Usage::

    .venv/bin/python benchmarks/verifier_stores.py [--per-thread N] [--levels 1,8,32]
        [--stores memory,sqlite,postgres] [--pg-dsn DSN]

Without ``--pg-dsn`` a throwaway PostgreSQL cluster is started from the Debian binaries
(as the tests do) and stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capsim.cards import new_card  # noqa: E402
from capsim.reader import CapReader  # noqa: E402
from capsim.transports.inprocess import InProcessTransport  # noqa: E402
from capsim.verifier.memory import MemoryStore  # noqa: E402
from capsim.verifier.policy import VerifierPolicy  # noqa: E402
from capsim.verifier.provider import SoftwareProvider  # noqa: E402
from capsim.verifier.service import Verifier  # noqa: E402
from capsim.verifier.sqlite import SqliteStore  # noqa: E402
from capsim.verifier.store import Store  # noqa: E402

IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IMK_SMI = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
IMK_SMC = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
PIN = "1234"


def luhn_pan(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


@dataclass
class Result:
    store: str
    concurrency: int
    verifications: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.verifications / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def run_level(store: Store, name: str, concurrency: int, per_thread: int) -> Result:
    provider = SoftwareProvider()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    verifier = Verifier(store, provider, policy=VerifierPolicy(lock_timeout_s=30.0))
    cids: list[str] = []
    codes: list[list[str]] = []
    for i in range(concurrency):
        card = new_card(
            "secur-acces", pan=luhn_pan(f"541333900{i:06d}"), pin=PIN,
            imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC,
        )  # fmt: skip
        reader = CapReader(InProcessTransport(card))
        user = f"user{i}"
        verifier.add_user(user)
        activation = verifier.issue_activation_code(user)
        cred = verifier.enroll_card(
            activation.code, card.profile, issuer_key_id="bank", first_code=reader.identify(PIN).code
        )
        cids.append(cred.credential_id)
        codes.append([reader.identify(PIN).code for _ in range(per_thread)])
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        mine: list[float] = []
        barrier.wait()
        try:
            for n, code in enumerate(codes[i]):
                t = time.perf_counter()
                verifier.verify(cids[i], code, request_id=f"b-{i}-{n}")
                mine.append(time.perf_counter() - t)
        except BaseException as exc:
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{name} c={concurrency}: {errors[0]!r}")
    assert len(latencies) == concurrency * per_thread
    return Result(name, concurrency, len(latencies), elapsed, latencies)


@contextmanager
def postgres_dsn(given: str | None) -> Iterator[Callable[[], str]]:
    if given:
        yield lambda: given
        return
    from tests.verifier.pgcluster import PgCluster

    with PgCluster.running() as cluster:
        yield lambda: cluster.create_schema(migrated=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--per-thread", type=int, default=0, help="verifications per thread (default: 400/concurrency, >= 12)"
    )
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--stores", default="memory,sqlite,postgres")
    ap.add_argument("--pg-dsn", default=None)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    stores = args.stores.split(",")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, postgres_dsn(args.pg_dsn) as new_pg:
        makers: dict[str, Callable[[int], Store]] = {
            "memory": lambda c: MemoryStore(lock_timeout=30),
            "sqlite": lambda c: SqliteStore(Path(tmp) / f"v{c}.db", lock_timeout=30),
        }
        if "postgres" in stores:
            from capsim.verifier.postgres import PostgresStore

            makers["postgres"] = lambda c: PostgresStore(new_pg(), pool_size=max(2, c), lock_timeout=30)
        for level in levels:
            per_thread = args.per_thread or max(12, 400 // level)
            for name in stores:
                store = makers[name](level)
                try:
                    results.append(run_level(store, name, level, per_thread))
                finally:
                    store.close()
    base = {r.concurrency: r for r in results if r.store == "memory"}
    print("| store | concurrency | verifications | verif/s | p50 ms | p95 ms | p99 ms | vs memory |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r.rate / base[r.concurrency].rate if r.concurrency in base else float("nan")
        print(
            f"| {r.store} | {r.concurrency} | {r.verifications} | {r.rate:,.0f} | {r.pct(0.50):.2f} |"
            f" {r.pct(0.95):.2f} | {r.pct(0.99):.2f} | {ratio:.2f} |"
        )
    print("\nratios compare with the in-memory store at the same concurrency, in the same run")


if __name__ == "__main__":
    main()
