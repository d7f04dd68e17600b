"""Verifications per second with the issuer keys in a PKCS#11 token (SoftHSM2) vs in software.

One run measures, on the same machine and load:

1. **Cryptograms**: microseconds per application cryptogram through
   :class:`~capsim.verifier.provider.SoftwareProvider` and
   :class:`~capsim.verifier.pkcs11.Pkcs11Provider` with and without its card master-key cache,
   over a set of cards visited round robin (Mastercard CVN 16: MK + SKD session key; Visa
   CVN 10: the MK itself);
2. **Verifications**: Identify codes of emulated cards verified by a
   :class:`~capsim.verifier.service.Verifier` on the in-memory store (enrolment excluded),
   per provider.

It makes its own SoftHSM2 token in a temporary directory. Usage::

    python benchmarks/pkcs11.py [--cards 64] [--acs 2000] [--codes 200]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# this file's own directory must not shadow the python-pkcs11 package (also named pkcs11)
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks._machine import loadavg, machine_line  # noqa: E402
from capsim.cards import new_card  # noqa: E402
from capsim.crypto import odd_parity  # noqa: E402
from capsim.reader import CapReader  # noqa: E402
from capsim.transports.inprocess import InProcessTransport  # noqa: E402
from capsim.verifier.memory import MemoryStore  # noqa: E402
from capsim.verifier.policy import VerifierPolicy  # noqa: E402
from capsim.verifier.provider import SoftwareProvider  # noqa: E402
from capsim.verifier.service import Verifier  # noqa: E402

PIN = "1234"
KEYS = {name: odd_parity(secrets.token_bytes(16)) for name in ("imk_ac", "imk_smi", "imk_smc")}


def make_token(base: Path) -> tuple[str, str]:
    """A SoftHSM2 token in ``base``; (module, PIN). Sets SOFTHSM2_CONF for this process."""
    module = next(
        (
            m
            for m in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
            if Path(m).exists()
        ),
        None,
    )
    if module is None or shutil.which("softhsm2-util") is None:
        raise SystemExit("SoftHSM2 is not installed (apt-get install softhsm2)")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(6)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", pin, "--so-pin", pin],
        check=True,
        capture_output=True,
    )
    from capsim.verifier import pkcs11 as p11

    with p11.open_token(module, "bench").open(rw=True, user_pin=pin) as session:
        p11.ensure_verifier_secrets(session, "capsim", audit_seal=False)
    return module, pin


def providers(module: str, pin: str) -> dict[str, Callable[[], object]]:
    from capsim.verifier import pkcs11 as p11

    def software() -> object:
        p = SoftwareProvider()
        p.add_issuer_keys("bank", **KEYS)
        return p

    def token(cache: int) -> Callable[[], object]:
        def make() -> object:
            p = p11.Pkcs11Provider(p11.open_token(module, "bench"), pin=pin, cache_size=cache)
            p.add_issuer_keys("bank", **KEYS)
            return p

        return make

    return {"software": software, "token, MK cache": token(1024), "token, no cache": token(0)}


def bench_acs(makers: dict[str, Callable[[], object]], n_cards: int, n_acs: int) -> None:
    print(f"\n1. cryptograms: {n_acs} ACs over {n_cards} cards (round robin), microseconds per AC")
    print(f"{'provider':<18} {'CVN 16 (SKD)':>14} {'CVN 10 (MK)':>14}")
    for name, make in makers.items():
        p = make()
        refs = [
            p.register_card(issuer_key_id="bank", pan=f"54133390{i:08d}").key_ref  # type: ignore[attr-defined]
            for i in range(n_cards)
        ]
        cols = []
        for cvn in (0x10, 0x0A):
            args = (
                bytes(29),
                b"\x38\x00",
                b"\x00\x07",
                bytes.fromhex("06010A03A0000000000000000000000000"),
                bytes(4),
            )
            for ref in refs:  # warm the caches
                p.ac_function(ref, cvn=cvn)(*args)  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            for i in range(n_acs):
                fn = p.ac_function(refs[i % n_cards], cvn=cvn)  # type: ignore[attr-defined]
                fn(bytes(29), b"\x38\x00", (i & 0xFFFF).to_bytes(2, "big"), args[3], bytes(4))
            cols.append((time.perf_counter() - t0) / n_acs * 1e6)
        print(f"{name:<18} {cols[0]:>14.1f} {cols[1]:>14.1f}")
        close = getattr(p, "close", None)
        if close:
            close()


def bench_verify(makers: dict[str, Callable[[], object]], n_codes: int) -> None:
    print(f"\n2. verifications: {n_codes} Identify codes of one secur-acces card (memory store)")
    print(f"{'provider':<18} {'verifications/s':>16} {'ms each':>9}")
    for name, make in makers.items():
        provider = make()
        verifier = Verifier(MemoryStore(), provider, policy=VerifierPolicy(max_fail=5))  # type: ignore[arg-type]
        card = new_card("secur-acces", pan="5413339000001513", psn="00", pin=PIN, **KEYS)
        reader = CapReader(InProcessTransport(card))
        verifier.add_user("alice")
        act = verifier.issue_activation_code("alice")
        cred = verifier.enroll_card(
            act.code, card.profile, issuer_key_id="bank", first_code=reader.identify(PIN).code
        )
        codes = [reader.identify(PIN).code for _ in range(n_codes)]
        t0 = time.perf_counter()
        for i, code in enumerate(codes):
            verifier.verify(cred.credential_id, code, request_id=f"r{i}")
        dt = time.perf_counter() - t0
        print(f"{name:<18} {n_codes / dt:>16.0f} {dt / n_codes * 1e3:>9.2f}")
        close = getattr(provider, "close", None)
        if close:
            close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=64)
    parser.add_argument("--acs", type=int, default=2000)
    parser.add_argument("--codes", type=int, default=200)
    args = parser.parse_args(argv)
    print(machine_line())
    base = Path(tempfile.mkdtemp(prefix="capsim-bench-softhsm-"))
    try:
        module, pin = make_token(base)
        print(f"token: SoftHSM2 {module}")
        makers = providers(module, pin)
        bench_acs(makers, args.cards, args.acs)
        bench_verify(makers, args.codes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average after the run: {loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
