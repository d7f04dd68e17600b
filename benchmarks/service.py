"""Verifier service benchmark: Identify logins through HTTP beside the library, on PostgreSQL.

What it measures
----------------
1. **The library** at W worker processes: W spawned processes, each with its own
   :class:`~capsim.verifier.service.Verifier` on one fresh PostgreSQL schema and its own
   emulated card, verify Identify codes (``verify(credential, code)``, one verification per
   call, no operation) back to back. Reported: verifications/s over all processes and p50/p99.
2. **The service** at W uvicorn workers (``capsim verifier serve --workers W``, rate limits off,
   on another fresh schema): ``POST /v1/credentials/{id}/login`` with an ``Idempotency-Key``,
   the same verification. The **load generator** is this script's process: one asyncio loop
   with one ``httpx.AsyncClient`` and C = 4·W concurrent tasks, each owning one credential (so
   requests on one credential never overlap and its codes arrive in ATC order). First closed
   loop (each task sends its next code as soon as the answer arrives): the **peak**. Then an
   **open loop at 80 % of that peak**: requests arrive at fixed intervals whatever the answers
   do, each on an idle credential of the pool, and a latency runs from the request's scheduled
   arrival (a wait for the loop or for an idle credential counts: no coordinated omission):
   p50/p99 at that load. Every answer must be 200 (anything else fails the run). Reported:
   HTTP throughput as a % of the library's at the same W.
3. **The load generator's CPU**: ``time.process_time()`` of this process over each timed phase,
   as a share of one core and of the machine (it competes with uvicorn and PostgreSQL for the
   same cores, so the HTTP figures are a floor). Codes are made before the timed phases (the
   reader's cost is in docs/performance.md).

Usage::

    .venv/bin/python benchmarks/service.py [--quick] [--workers 1,2] [--per-task N] [--json FILE]

A throwaway PostgreSQL cluster is started from the Debian binaries as the tests do
(tests/verifier/pgcluster.py: unix socket, ``fsync=off``), one fresh schema per measurement.
``--json FILE`` also writes the figures as one JSON object (the shape the tests check).
Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure the tree this script belongs to

import httpx  # noqa: E402

from benchmarks._machine import loadavg, luhn_pan, machine_line  # noqa: E402
from benchmarks.verifier_stores import (  # noqa: E402
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    PIN,
    WAIT_S,
    enrol,
    new_verifier,
    open_store,
    pct,
)
from capsim.cards import new_card  # noqa: E402
from capsim.client import VerifierClient  # noqa: E402
from capsim.issuerkeys import IssuerKeys, save_issuer_keys  # noqa: E402
from capsim.reader import CapReader  # noqa: E402
from capsim.transports.inprocess import InProcessTransport  # noqa: E402
from capsim.verifier.enrolment import credential_profile_from_card  # noqa: E402

TASKS_PER_WORKER = 4


@dataclass
class Figures:
    """One measured configuration."""

    rate: float  # verifications per second
    p50_ms: float
    p99_ms: float
    n: int
    seconds: float
    cpu_s: float = 0.0  # load generator CPU time (HTTP only)
    worker_cpu: tuple[float, ...] = ()  # CPU seconds of each server process (HTTP only)

    def to_dict(self) -> dict[str, float]:
        return {
            "rate": round(self.rate, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "n": self.n,
            "seconds": round(self.seconds, 3),
            "loadgen_cpu_s": round(self.cpu_s, 3),
            "loadgen_core_share": round(self.cpu_s / self.seconds, 3) if self.seconds else 0.0,
            "worker_cpu_s": [round(c, 3) for c in self.worker_cpu],
            "worker_cpu_ms_per_request": round(1000 * sum(self.worker_cpu) / self.n, 3) if self.n else 0.0,
        }


# ------------------------------------------------------------------------------------------------
# The library: W processes


def library_worker(spec: tuple[str, int, int, int], barrier: Any, results: Any) -> None:
    dsn, index, logins, warmup = spec
    out: dict[str, Any] = {"error": "", "lat": [], "start": 0.0, "end": 0.0}
    store = None
    try:
        store = open_store("postgres", dsn)
        verifier = new_verifier(store)
        cid, reader = enrol(verifier, index)
        codes = [reader.identify(PIN).code for _ in range(warmup + logins)]
        for n, code in enumerate(codes[:warmup]):
            verifier.verify(cid, code, request_id=f"lib{index}-w{n}")
        barrier.wait(WAIT_S)
        clock = time.perf_counter
        out["start"] = clock()
        for n, code in enumerate(codes[warmup:]):
            t0 = clock()
            verifier.verify(cid, code, request_id=f"lib{index}-{n}")
            out["lat"].append(clock() - t0)
        out["end"] = clock()
    except BaseException as exc:  # reported to the parent, which fails the run
        out["error"] = f"{type(exc).__name__}: {exc}"
        barrier.abort()
    finally:
        if store is not None:
            store.close()
    results.put(out)


def run_library(dsn: str, workers: int, logins: int, warmup: int) -> Figures:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=library_worker, args=((dsn, i, logins, warmup), barrier, results), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=WAIT_S) for _ in procs]
    except queue.Empty:
        raise SystemExit(f"library x{workers}: a worker did not report") from None
    finally:
        for p in procs:
            p.join(timeout=60)
    errors = [g["error"] for g in got if g["error"]]
    if errors:
        raise SystemExit(f"library x{workers}: {errors[0]}")
    lat = [x for g in got for x in g["lat"]]
    seconds = max(g["end"] for g in got) - min(g["start"] for g in got)
    return Figures(len(lat) / seconds, pct(lat, 0.5), pct(lat, 0.99), len(lat), seconds)


# ------------------------------------------------------------------------------------------------
# The service: W uvicorn workers, driven by an asyncio/httpx load generator


def _workers(root: int) -> list[int]:
    """The uvicorn worker processes of ``serve`` (the spawned children; ``serve`` itself when
    it runs one worker), from Linux ``/proc`` (none elsewhere)."""
    spawned = []
    for pid in _process_tree(root):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                spawned.append(pid)
        except OSError:
            continue
    return spawned or ([root] if Path(f"/proc/{root}").exists() else [])


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU seconds of each process (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _capsim(env: dict[str, str], *args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "capsim", *args, "--json"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"capsim {args[0]} {args[1]}: {run.stderr.strip()}")
    value: dict[str, Any] = json.loads(run.stdout)
    return value


class Server:
    """``capsim verifier serve`` on a fresh schema, with an operator key and enrolled cards."""

    def __init__(self, tmp: Path, dsn: str, workers: int) -> None:
        self.env = {**os.environ, "CAPSIM_HOME": str(tmp), "PYTHONPATH": str(ROOT)}
        self.env.pop("CAPSIM_DB", None)
        keys = tmp / "bank.issuer-keys.json"
        save_issuer_keys(keys, IssuerKeys(imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC))
        _capsim(self.env, "verifier", "init", "--db", dsn, "--issuer-keys", str(keys))
        self.key = str(_capsim(self.env, "verifier", "client", "add", "bench", "--scope", "operator",
                               "--db", dsn)["key"])  # fmt: skip
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = (tmp / f"serve-{workers}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "capsim", "verifier", "serve", "--db", dsn, "--port", str(port),
             "--workers", str(workers), "--rate-client", "0", "--rate-credential", "0",
             "--log-level", "warning"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the service did not start (log: {self.log.name})")
            time.sleep(0.1)

    def enrol(self, count: int, codes_each: int) -> list[tuple[str, list[str]]]:
        """``count`` users with one card each, and ``codes_each`` Identify codes per card."""
        out = []
        with VerifierClient(self.base, self.key) as api:
            for i in range(count):
                card = new_card(
                    "secur-acces", pan=luhn_pan(f"541334{i:09d}"), pin=PIN,
                    imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC,
                )  # fmt: skip
                reader = CapReader(InProcessTransport(card))
                api.add_user(f"http{i}")
                act = api.issue_activation_code(f"http{i}").code
                cred = api.enroll(
                    act, pan=card.profile.pan, psn=card.profile.psn,
                    profile=credential_profile_from_card(card.profile).to_dict(),
                    issuer_key_id="iss-" + card.profile.kcv_imk_ac.hex().upper(),
                    first_code=reader.identify(PIN).code, request_id=f"enrol-{i}",
                )  # fmt: skip
                out.append((cred.credential_id, [reader.identify(PIN).code for _ in range(codes_each)]))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _drive(base: str, key: str, work: list[tuple[str, list[str]]], tag: str) -> Figures:
    """Closed loop: every task posts its credential's codes in order, the next as soon as the
    previous answer arrives (the peak; latency includes the queue the tasks make)."""
    lat: list[float] = []
    async with _client(base, key, len(work)) as http:

        async def task(i: int, cid: str, codes: list[str]) -> None:
            for n, code in enumerate(codes):
                t0 = time.perf_counter()
                await _login(http, tag, cid, code, f"{tag}-{i}-{n}")
                lat.append(time.perf_counter() - t0)

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(task(i, cid, codes) for i, (cid, codes) in enumerate(work)))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Figures(len(lat) / seconds, pct(lat, 0.5), pct(lat, 0.99), len(lat), seconds, cpu)


async def _drive_open(
    base: str, key: str, work: list[tuple[str, list[str]]], tag: str, *, rate: float, total: int
) -> Figures:
    """Open loop: ``total`` requests arrive at fixed intervals of ``1/rate`` s whatever the
    answers do; each takes an idle credential (a credential never has two requests in flight,
    so its codes arrive in ATC order). Latency runs from the **scheduled** arrival, so a
    request that waited for the loop, a connection or an idle credential counts that wait
    (no coordinated omission)."""
    lat: list[float] = []
    idle: asyncio.Queue[int] = asyncio.Queue()
    left = [list(codes) for _, codes in work]
    for i in range(len(work)):
        idle.put_nowait(i)
    async with _client(base, key, len(work)) as http:

        async def arrival(n: int, due: float) -> None:
            i = await idle.get()
            code = left[i].pop(0)
            await _login(http, tag, work[i][0], code, f"{tag}-{n}")
            lat.append(time.perf_counter() - due)
            if left[i]:
                idle.put_nowait(i)

        cpu0, t0 = time.process_time(), time.perf_counter()
        pending = []
        for n in range(total):
            due = t0 + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(arrival(n, due)))
        await asyncio.gather(*pending)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Figures(len(lat) / seconds, pct(lat, 0.5), pct(lat, 0.99), len(lat), seconds, cpu)


def _client(base: str, key: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    )


async def _login(http: httpx.AsyncClient, tag: str, cid: str, code: str, idem: str) -> None:
    headers = {"Idempotency-Key": idem}
    r = await http.post(f"/v1/credentials/{cid}/login", json={"code": code}, headers=headers)
    if r.status_code != 200:
        raise SystemExit(f"HTTP {tag}: login answered {r.status_code}: {r.text[:200]}")


def run_http(tmp: Path, dsn: str, workers: int, per_task: int, warmup: int) -> tuple[Figures, Figures]:
    """The peak (closed loop) and the latency at 80 % of it, through ``workers`` uvicorn workers."""
    server = Server(tmp, dsn, workers)
    try:
        tasks = TASKS_PER_WORKER * workers
        spare = per_task // 4 + 2  # the open loop uses credentials unevenly
        work = server.enrol(tasks, warmup + 2 * per_task + spare)
        warm = [(cid, codes[:warmup]) for cid, codes in work]
        peak_work = [(cid, codes[warmup : warmup + per_task]) for cid, codes in work]
        paced_work = [(cid, codes[warmup + per_task :]) for cid, codes in work]
        asyncio.run(_drive(server.base, server.key, warm, "warm"))
        procs = _workers(server.proc.pid)
        cpu0 = _cpu_seconds(procs)
        peak = asyncio.run(_drive(server.base, server.key, peak_work, "peak"))
        cpu1 = _cpu_seconds(procs)
        rate = 0.8 * peak.rate
        paced = asyncio.run(
            _drive_open(server.base, server.key, paced_work, "open", rate=rate, total=per_task * tasks)
        )
        cpu2 = _cpu_seconds(procs)
        peak.worker_cpu = _busy(cpu0, cpu1)
        paced.worker_cpu = _busy(cpu1, cpu2)
        return peak, paced
    finally:
        server.stop()


def _busy(before: list[float], after: list[float]) -> tuple[float, ...]:
    """CPU seconds of each worker process over a phase, busiest first."""
    return tuple(sorted((b - a for a, b in zip(before, after, strict=True)), reverse=True))


def _split(cpu: list[float]) -> str:
    total = sum(cpu)
    return "/".join(f"{100 * c / total:.0f}" for c in cpu) if total else "-"


# ------------------------------------------------------------------------------------------------


def _server_stack() -> str:
    """What uvicorn's ``auto`` settings pick in this environment: event loop and HTTP parser."""
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    uvicorn, uvloop, httptools = version("uvicorn"), version("uvloop"), version("httptools")
    loop = f"uvloop {uvloop}" if uvloop else "asyncio"
    parser = f"httptools {httptools}" if httptools else "h11"
    return f"uvicorn {uvicorn}, {loop}, {parser}"


def report(results: dict[str, Any]) -> None:
    ncpu = results["cpus"]
    print("\nIdentify logins on PostgreSQL: library beside HTTP (same store, same run)")
    print(f"{'workers':>7}  {'library/s':>9}  {'lib p50':>7}  {'lib p99':>7}  {'HTTP/s':>7}  "
          f"{'% of lib':>8}  {'HTTP p50':>8}  {'HTTP p99':>8}  {'@80% rate':>9}  {'p50':>6}  {'p99':>6}  "
          f"{'loadgen CPU':>11}  {'worker ms/req':>13}  {'worker split %':>14}")  # fmt: skip
    for level in results["levels"]:
        lib, peak, paced = level["library"], level["http_peak"], level["http_80"]
        share = peak["loadgen_core_share"]
        print(
            f"{level['workers']:>7}  {lib['rate']:>9.0f}  {lib['p50_ms']:>7.2f}  {lib['p99_ms']:>7.2f}  "
            f"{peak['rate']:>7.0f}  {level['http_pct_of_library']:>7.0f}%  {peak['p50_ms']:>8.2f}  "
            f"{peak['p99_ms']:>8.2f}  {paced['rate']:>9.0f}  {paced['p50_ms']:>6.2f}  "
            f"{paced['p99_ms']:>6.2f}  {share:>5.2f} core ({100 * share / ncpu:.0f} %)"
            f"  {peak['worker_cpu_ms_per_request']:>13.2f}"
            f"  {_split(peak['worker_cpu_s']):>6} / {_split(paced['worker_cpu_s'])}"
        )
    print(
        "latencies in ms; HTTP p50/p99 at peak are closed loop with 4 tasks per worker; '@80%' is an"
        " open loop (fixed arrivals at 80 % of the peak, latency from the scheduled arrival), its rate"
        " the one achieved; loadgen CPU: this script's process"
        f" time at peak, per core and as a share of the machine's {ncpu} CPUs; worker ms/req: CPU of"
        " the uvicorn processes per request at peak; worker split: each worker's share of that CPU"
        " at peak / in the open loop (uneven when the kernel hands most connections to one worker)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4" if (os.cpu_count() or 1) >= 4 else "1,2")
    ap.add_argument(
        "--per-task", type=int, default=0, help="timed logins per HTTP task (default 300; quick 6)"
    )
    ap.add_argument("--quick", action="store_true", help="few logins (for the tests)")
    ap.add_argument("--json", dest="json_file", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    from tests.verifier.pgcluster import PgCluster, pg_unavailable_reason

    reason = pg_unavailable_reason()
    if reason is not None:
        print(f"PostgreSQL unavailable: {reason}", file=sys.stderr)
        return 2
    per_task = args.per_task or (6 if args.quick else 300)
    warmup = 2 if args.quick else 10
    levels = [int(x) for x in args.workers.split(",")]
    print(f"capsim verifier service benchmark: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    start = machine_line()
    print(f"start: {start}", flush=True)
    stack = _server_stack()
    print(f"server: {stack}", flush=True)
    results: dict[str, Any] = {"command": " ".join(sys.argv), "start": start, "server": stack,
                               "cpus": os.cpu_count() or 1, "levels": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, PgCluster.running() as cluster:
        for w in levels:
            lib = run_library(cluster.create_schema(migrated=True), w, per_task * TASKS_PER_WORKER, warmup)
            home = Path(tmp) / f"w{w}"
            home.mkdir(mode=0o700)
            peak, paced = run_http(home, cluster.create_schema(migrated=True), w, per_task, warmup)
            results["levels"].append({
                "workers": w,
                "library": lib.to_dict(),
                "http_peak": peak.to_dict(),
                "http_80": paced.to_dict(),
                "http_pct_of_library": round(100 * peak.rate / lib.rate, 1),
            })  # fmt: skip
            print(f"  x{w} done (load {loadavg()})", flush=True)
    results["end_load"] = loadavg()
    report(results)
    print(f"\nend: load average {results['end_load']}")
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
