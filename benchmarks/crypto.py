"""Cryptogram candidates per second: capsim (each DES backend) against pyemv, in one process.

A verifier searching an ATC window computes, for each candidate, a fresh AC session key and the
cryptogram under it. This script times exactly that for Visa CVN 18 (CSK + retail MAC over
CDOL1 ‖ AIP ‖ ATC ‖ IAD) and Mastercard CVN 16 (SKD with the UN + retail MAC), plus Visa CVN 10
(no session key) and the EMV2000 tree, on one core, and prints the rates side by side with
their ratio to pyemv doing the same work (pyemv's per-CVN classes, whose ``generate_ac``
derives the session key and MACs).

Everything runs in one thread (one core). Contenders are timed in short slices, round-robin, and
the best slice of each is kept, so that load from other processes hits all of them alike.

Run:  .venv/bin/python benchmarks/crypto.py [--seconds 0.1] [--repeat 20]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections.abc import Callable

from capsim import _des
from capsim.crypto import CVN, AcCalculator, SessionKeyMethod, derive_icc_mk, generate_ac

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN, PSN = "1234567890123456", "00"
CDOL1 = bytes.fromhex("0000000040000000000000000124800004800001241911050152BF4585")
AIP = bytes.fromhex("1800")
IAD = {
    CVN.VISA_10: bytes.fromhex("06010A03A06010"),
    CVN.VISA_18: bytes.fromhex("06011203A0B800"),
    CVN.MC_16: bytes.fromhex("0110A00003220000000000000000000322FF"),
}
ATCS = [i.to_bytes(2, "big") for i in range(1, 4097)]


def rate_once(fn: Callable[[bytes], object], seconds: float) -> float:
    """Calls per second of ``fn(atc)`` over about ``seconds``, cycling through the ATCs."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for atc in ATCS[count % len(ATCS) :][:256]:
            fn(atc)
        count += 256
    return count / (time.perf_counter() - start)


def best_rates(
    fns: list[tuple[str | None, Callable[[bytes], object]]], seconds: float, repeat: int
) -> list[float]:
    """Best-of-``repeat`` rate of each (backend, function), measured round-robin so that load
    changes on the machine hit every contender alike. ``None`` runs outside capsim's backends."""
    best = [0.0] * len(fns)
    for _ in range(repeat):
        for i, (backend, fn) in enumerate(fns):
            if backend is None:
                r = rate_once(fn, seconds)
            else:
                with _des.use_backend(backend):
                    fn(ATCS[0])  # warm the backend's per-key cipher cache
                    r = rate_once(fn, seconds)
            best[i] = max(best[i], r)
    return best


def pyemv_candidates(cvn: CVN) -> Callable[[bytes], object] | None:
    try:
        from pyemv import cvn as pe_cvn
    except ImportError:
        return None
    tags = {
        "tag_9f02": CDOL1[0:6], "tag_9f03": CDOL1[6:12], "tag_9f1a": CDOL1[12:14], "tag_95": CDOL1[14:19],
        "tag_5f2a": CDOL1[19:21], "tag_9a": CDOL1[21:24], "tag_9c": CDOL1[24:25], "tag_9f37": CDOL1[25:29],
        "tag_82": AIP,
    }  # fmt: skip
    iad = IAD[cvn]
    if cvn is CVN.VISA_18:
        o18 = pe_cvn.VisaCVN18(iss_mk_ac=IMK, iss_mk_smi=IMK, iss_mk_smc=IMK, pan=PAN, psn=PSN)
        return lambda atc: o18.generate_ac(**tags, tag_9f36=atc, tag_9f10=iad)
    if cvn is CVN.MC_16:
        o16 = pe_cvn.MasterCardCVN16(iss_mk_ac=IMK, iss_mk_smi=IMK, iss_mk_smc=IMK, pan=PAN, psn=PSN)
        return lambda atc: o16.generate_ac(**tags, tag_9f36=atc, cvr=iad[2:8])
    o10 = pe_cvn.VisaCVN10(iss_mk_ac=IMK, iss_mk_smi=IMK, iss_mk_smc=IMK, pan=PAN, psn=PSN)
    return lambda atc: o10.generate_ac(**tags, tag_9f36=atc, cvr=iad[3:7])


def pyemv_tree() -> Callable[[bytes], object] | None:
    try:
        from pyemv import ac as pe_ac
        from pyemv import kd as pe_kd
    except ImportError:
        return None
    mk = derive_icc_mk(IMK, PAN, PSN)
    iad = IAD[CVN.VISA_10]

    def one(atc: bytes) -> bytes:
        sk = pe_kd.derive_emv2000_tree_sk(icc_mk=mk, atc=atc, height=16, branch_factor=2)
        return pe_ac.generate_ac(sk, CDOL1 + AIP + atc + iad[3:7], pe_ac.PaddingType.VISA)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timed slice (default 0.1)")
    parser.add_argument("--repeat", type=int, default=20, help="slices per contender, best kept (default 20)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pyemv imports TripleDES from its deprecated location

    mk = derive_icc_mk(IMK, PAN, PSN)
    backends = _des.available_backends()
    print(f"capsim crypto benchmark: Python {platform.python_version()}, {platform.machine()}, one thread")
    print(f"candidates/s (session key + AC each), best of {args.repeat} slices of {args.seconds:.2f} s\n")
    header = f"{'work':<30}" + "".join(f"{b:>16}" for b in backends) + f"{'pyemv':>16}"
    header += "".join(f"{b[:6] + '/pyemv':>16}" for b in backends)
    print(header)
    print("-" * len(header))

    # Groups of capsim paths that share one pyemv reference, measured together round-robin.
    groups: list[
        tuple[
            str, list[tuple[str, Callable[[], Callable[[bytes], object]]]], Callable[[bytes], object] | None
        ]
    ]
    groups = []
    for cvn in (CVN.VISA_18, CVN.MC_16, CVN.VISA_10):
        iad = IAD[cvn]

        def fast(cvn: CVN = cvn, iad: bytes = iad) -> Callable[[bytes], object]:
            calc = AcCalculator(cvn, mk)
            return lambda atc: calc.generate(CDOL1, AIP, atc, iad)

        def plain(cvn: CVN = cvn, iad: bytes = iad) -> Callable[[bytes], object]:
            return lambda atc: generate_ac(cvn, mk, cdol1_data=CDOL1, aip=AIP, atc=atc, iad=iad)

        paths = [(f"{cvn.name} AcCalculator", fast), (f"{cvn.name} generate_ac", plain)]
        groups.append((cvn.name, paths, pyemv_candidates(cvn)))

    def tree_fast() -> Callable[[bytes], object]:
        calc = AcCalculator(CVN.VISA_10, mk, method=SessionKeyMethod.EMV2000_TREE)
        return lambda atc: calc.generate(CDOL1, AIP, atc, IAD[CVN.VISA_10])

    groups.append(("tree", [("tree b2/H16 AcCalculator", tree_fast)], pyemv_tree()))

    for _, paths, theirs in groups:
        contenders: list[tuple[str | None, Callable[[bytes], object]]] = [
            (b, make()) for _, make in paths for b in backends
        ]
        if theirs is not None:
            contenders.append((None, theirs))
        rates = best_rates(contenders, args.seconds, args.repeat)
        ref = rates[-1] if theirs is not None else None
        for i, (label, _) in enumerate(paths):
            ours = rates[i * len(backends) : (i + 1) * len(backends)]
            row = f"{label:<30}" + "".join(f"{r:>16,.0f}" for r in ours)
            row += f"{ref:>16,.0f}" if ref else f"{'n/a':>16}"
            row += "".join(f"{r / ref:>15.2f}x" if ref else f"{'n/a':>16}" for r in ours)
            print(row, flush=True)


if __name__ == "__main__":
    main()
