"""Cryptogram candidates per second: capsim (each DES backend) against pyemv, in one process.

A verifier searching an ATC window computes, for each candidate, a fresh AC session key and the
cryptogram under it. This script times exactly that for Visa CVN 18 (CSK + retail MAC over
CDOL1 ‖ AIP ‖ ATC ‖ IAD) and Mastercard CVN 16 (SKD with the UN + retail MAC), plus Visa CVN 10
(no session key) and the EMV2000 tree, on one core, and prints the rates side by side with
their ratio to pyemv doing the same work (pyemv's per-CVN classes, whose ``generate_ac``
derives the session key and MACs).

Everything runs in one thread (one core). Contenders are timed in short slices, round-robin, and
the best slice of each is kept, so that load from other processes hits all of them alike.

A second table (the "ladder", cryptography backend only) shows what each optimisation of the
Visa CVN 18 candidate buys: the same candidate written straight on cryptography's public API,
from the textbook form (one ``update`` call per block, fresh contexts and mode objects, MAC
algorithm 3 as CBC then DES⁻¹(KR) then DES(KL)) up to what capsim does, adding one optimisation
per row; every rung is checked against ``generate_ac`` before it is timed.

Run:  .venv/bin/python benchmarks/crypto.py [--seconds 0.1] [--repeat 20] [--no-ladder]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this tree's capsim

from benchmarks._machine import loadavg, machine_line
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


def ladder(mk: bytes) -> list[tuple[str, Callable[[bytes], bytes]]]:
    """The Visa CVN 18 candidate on cryptography's public API, one optimisation added per rung."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    iad = IAD[CVN.VISA_18]
    parity = bytes(b if bin(b).count("1") % 2 else b ^ 1 for b in range(256))
    mk24 = mk + mk[:8]
    ecb, cbc0 = modes.ECB(), modes.CBC(bytes(8))
    mk_enc = Cipher(TripleDES(mk24), ecb).encryptor().update

    def xor8(a: bytes, b: bytes) -> bytes:
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(8, "big")

    def message(atc: bytes) -> bytes:
        m = CDOL1 + AIP + atc + iad
        return m + b"\x80" + bytes(-(len(m) + 1) % 8)

    def textbook(atc: bytes) -> bytes:
        # F1 and F2 one block each; CBC block by block under KL, then DES⁻¹(KR), then DES(KL).
        enc = Cipher(TripleDES(mk24), modes.ECB()).encryptor().update
        sk = (enc(atc + b"\xf0" + bytes(5)) + enc(atc + b"\x0f" + bytes(5))).translate(parity)
        kl = Cipher(TripleDES(sk[:8] * 3), modes.ECB()).encryptor().update
        h, data = bytes(8), message(atc)
        for i in range(0, len(data), 8):
            h = kl(xor8(h, data[i : i + 8]))
        return kl(Cipher(TripleDES(sk[8:] * 3), modes.ECB()).decryptor().update(h))

    def f1_f2_batched(atc: bytes) -> bytes:
        f = atc + b"\xf0" + bytes(5) + atc + b"\x0f" + bytes(5)
        sk = Cipher(TripleDES(mk24), modes.ECB()).encryptor().update(f).translate(parity)
        kl = Cipher(TripleDES(sk[:8] * 3), modes.ECB()).encryptor().update
        h, data = bytes(8), message(atc)
        for i in range(0, len(data), 8):
            h = kl(xor8(h, data[i : i + 8]))
        return kl(Cipher(TripleDES(sk[8:] * 3), modes.ECB()).decryptor().update(h))

    def cbc_pass(atc: bytes) -> bytes:
        # CBC under KL over blocks 1…n−1 in one call, then one TDES block over Hn−1 ⊕ Dn.
        f = atc + b"\xf0" + bytes(5) + atc + b"\x0f" + bytes(5)
        sk = Cipher(TripleDES(mk24), modes.ECB()).encryptor().update(f).translate(parity)
        data, kl = message(atc), sk[:8]
        h = Cipher(TripleDES(kl * 3), modes.CBC(bytes(8))).encryptor().update(data[:-8])[-8:]
        return Cipher(TripleDES(sk + kl), modes.ECB()).encryptor().update(xor8(h, data[-8:]))

    def shared_modes(atc: bytes) -> bytes:
        f = atc + b"\xf0" + bytes(5) + atc + b"\x0f" + bytes(5)
        sk = Cipher(TripleDES(mk24), ecb).encryptor().update(f).translate(parity)
        data, kl = message(atc), sk[:8]
        h = Cipher(TripleDES(kl * 3), cbc0).encryptor().update(data[:-8])[-8:]
        return Cipher(TripleDES(sk + kl), ecb).encryptor().update(xor8(h, data[-8:]))

    def mk_context_kept(atc: bytes) -> bytes:
        sk = mk_enc(atc + b"\xf0" + bytes(5) + atc + b"\x0f" + bytes(5)).translate(parity)
        data, kl = message(atc), sk[:8]
        h = Cipher(TripleDES(kl * 3), cbc0).encryptor().update(data[:-8])[-8:]
        return Cipher(TripleDES(sk + kl), ecb).encryptor().update(xor8(h, data[-8:]))

    calc = AcCalculator(CVN.VISA_18, mk)
    return [
        ("textbook: one update per block", textbook),
        ("+ F1 ‖ F2 in one update", f1_f2_batched),
        ("+ MAC: one CBC pass + one TDES block", cbc_pass),
        ("+ mode objects shared", shared_modes),
        ("+ MK context kept", mk_context_kept),
        ("capsim AcCalculator.generate", lambda atc: calc.generate(CDOL1, AIP, atc, iad)),
        (
            "capsim generate_ac",
            lambda atc: generate_ac(CVN.VISA_18, mk, cdol1_data=CDOL1, aip=AIP, atc=atc, iad=iad),
        ),
    ]


def run_ladder(mk: bytes, seconds: float, repeat: int) -> None:
    if "cryptography" not in _des.available_backends():
        print("\nladder: skipped (cryptography is not installed)")
        return
    rungs = ladder(mk)
    for atc in ATCS[:64]:
        expected = generate_ac(CVN.VISA_18, mk, cdol1_data=CDOL1, aip=AIP, atc=atc, iad=IAD[CVN.VISA_18])
        assert all(fn(atc) == expected for _, fn in rungs), "a ladder rung disagrees with generate_ac"
    theirs = pyemv_candidates(CVN.VISA_18)
    contenders: list[tuple[str | None, Callable[[bytes], object]]] = [("cryptography", fn) for _, fn in rungs]
    if theirs is not None:
        contenders.append((None, theirs))
    rates = best_rates(contenders, seconds, repeat)
    ref = rates[-1] if theirs is not None else None
    print("\nwhat each optimisation buys: Visa CVN 18 candidates/s, cryptography's public API")
    head = f"{'rung':<38}{'candidates/s':>14}{'vs previous':>14}{'vs pyemv':>12}"
    print(head)
    print("-" * len(head))
    for i, (label, _) in enumerate(rungs):
        prev = f"{rates[i] / rates[i - 1]:>13.2f}x" if i else f"{'':>14}"
        vs = f"{rates[i] / ref:>11.2f}x" if ref else f"{'n/a':>12}"
        print(f"{label:<38}{rates[i]:>14,.0f}{prev}{vs}", flush=True)
    if ref:
        print(f"{'pyemv VisaCVN18.generate_ac':<38}{ref:>14,.0f}{'':>14}{1:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.1, help="length of one timed slice (default 0.1)")
    parser.add_argument("--repeat", type=int, default=20, help="slices per contender, best kept (default 20)")
    parser.add_argument("--no-ladder", action="store_true", help="skip the optimisation table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pyemv imports TripleDES from its deprecated location

    mk = derive_icc_mk(IMK, PAN, PSN)
    backends = _des.available_backends()
    print(f"capsim crypto benchmark: Python {platform.python_version()}, {platform.machine()}, one thread")
    print(machine_line())
    versions = {n: _version(n) for n in ("cryptography", "pycryptodome", "pyemv")}
    print("; ".join(f"{n} {v}" for n, v in versions.items()))
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

    if not args.no_ladder:
        run_ladder(mk, args.seconds, args.repeat)
    print(f"\nload average at the end: {loadavg()}")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
