"""SQLite with several processes on one machine: BEGIN IMMEDIATE serialises the writers.

Two spawned processes, each with its own :class:`SqliteStore` and :class:`Verifier` on the
same file, verify the same valid code (from the real emulated card and reader) at the same
moment, round after round: exactly one accepts each time.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
from collections import Counter
from pathlib import Path

from capsim.errors import InvalidCode, TemporaryFailure
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.service import Verifier
from capsim.verifier.sqlite import SqliteStore
from tests.verifier.conftest import Clock, make_bench, make_provider

POLICY = VerifierPolicy(lock_timeout_s=30.0)
ROUNDS = 15


def _verifier_process(
    path: str,
    index: int,
    barrier: multiprocessing.synchronize.Barrier,
    conn: multiprocessing.connection.Connection,
) -> None:
    store = SqliteStore(path, lock_timeout=30)
    verifier = Verifier(store, make_provider(), policy=POLICY, node=f"proc-{index}")
    conn.send("ready")
    try:
        while (msg := conn.recv()) is not None:
            target, code, rid = msg
            barrier.wait(60)
            try:
                verifier.verify(target, code, request_id=f"{rid}-{index}")
                conn.send("accept")
            except InvalidCode:
                conn.send("reject")
            except TemporaryFailure:
                conn.send("temporary")
    finally:
        store.close()


def test_two_processes_verifying_the_same_code_accept_once(tmp_path: Path) -> None:
    path = tmp_path / "verifier.db"
    store = SqliteStore(path, lock_timeout=30)
    bench = make_bench(store, Clock(), policy=POLICY)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    pipes = []
    procs = []
    for i in range(2):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_verifier_process, args=(str(path), i, barrier, child), daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    try:
        for c in pipes:
            assert c.poll(120)
            assert c.recv() == "ready"
        atcs = []
        for rnd in range(ROUNDS):
            # alternate between an operation-bound Respond code and a bare Identify login
            if rnd % 2:
                op = bench.verifier.issue_operation(bench.cid, mode="respond")
                result = bench.reader.respond("1234", op.challenge)
                target = op.operation_id
            else:
                result = bench.identify()
                target = bench.cid
            for c in pipes:
                c.send((target, result.code, f"r{rnd}"))
            outcomes = Counter()
            for c in pipes:
                assert c.poll(120)
                outcomes[c.recv()] += 1
            assert outcomes == Counter({"accept": 1, "reject": 1}), f"round {rnd}: {outcomes}"
            atcs.append(result.atc)
    finally:
        for c in pipes:
            c.send(None)
        for p in procs:
            p.join(30)
    with store.transaction() as tx:
        ledger = [a.atc for a in tx.list_acceptances(bench.cid)]
    assert ledger == [bench.first.atc, *atcs]
    assert bench.refresh().last_atc == atcs[-1]
    assert bench.verifier.check_audit() == ()
    store.close()
