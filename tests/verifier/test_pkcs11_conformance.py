"""The store-independent verifier conformance suite, run with Pkcs11Provider on SoftHSM2.

:func:`test_conformance_suite_on_the_token` runs the verifier's code, audit, lifecycle and
binding tests (on the in-memory store) in a pytest subprocess that loads this module as a
plugin: the plugin replaces ``make_provider`` of the suite by one that puts the suite's issuer
keys into the session's SoftHSM2 token, so every enrolment, verification and PIN script of
those tests goes through the token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from capsim.cards.builtin import BUILTIN_PROFILES
from capsim.crypto import CVN
from capsim.errors import InvalidCode, TokenUnsupported
from capsim.verifier.memory import MemoryStore
from capsim.verifier.policy import VerifierPolicy
from tests.verifier.conftest import IMK_AC, IMK_SMC, IMK_SMI, Clock, make_bench
from tests.verifier.test_lifecycle import unblock_pin_with_script
from tests.verifier.test_pkcs11 import SoftHsm, softhsm  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SUITE = (
    "tests/verifier/test_codes.py",
    "tests/verifier/test_audit.py",
    "tests/verifier/test_lifecycle.py",
    "tests/verifier/test_binding.py",
)
#: What the token cannot do, so left out of the run (each has its own test here and in
#: test_pkcs11.py): issuer scripts of Visa CVN 10 cards (their secure-messaging session keys
#: need key XOR) and the EMV2000 tree session key (key XOR).
TOKEN_CANNOT = (
    "test_v10_code_after_an_issuer_script_verifies",
    "(test_pin_unblock_script_restores_the_pin and (barclays or natwest or visa))",
    "emv2000",
)


def test_conformance_suite_on_the_token(softhsm: SoftHsm) -> None:  # noqa: F811
    env = {**softhsm.env(), "CAPSIM_TEST_PKCS11": f"{softhsm.module}|{softhsm.token}"}
    deselect = "".join(f" and not {name}" for name in TOKEN_CANNOT)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", __name__,
         "-k", f"not sqlite and not postgres{deselect}", *SUITE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "passed" in tail
    made = re.search(r"pkcs11 providers made: (\d+)", proc.stdout)
    assert made is not None
    assert int(made.group(1)) >= 100  # the suite's providers were the token's


@pytest.mark.parametrize("profile", sorted(BUILTIN_PROFILES))
def test_every_builtin_profile_verifies_through_the_token(softhsm: SoftHsm, profile: str) -> None:  # noqa: F811
    """Codes of every built-in profile verify with the issuer keys only in the token; the PIN
    unblock script is built by the token for Mastercard CVN 16 and refused with the typed
    error for Visa CVN 10 (its secure-messaging keys need key XOR)."""
    provider = softhsm.provider()
    try:
        provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
        clock = Clock()
        b = make_bench(
            MemoryStore(clock=clock),
            clock,
            profile=profile,
            provider=provider,
            policy=VerifierPolicy(max_fail=3),
        )  # type: ignore[arg-type]
        for _ in range(3):
            r = b.identify()
            assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == r.atc
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, r.code, request_id=b.rid())  # a replay
        if b.card.profile.cvn in (CVN.VISA_10, CVN.VISA_18):
            with pytest.raises(TokenUnsupported, match="need key XOR") as info:
                unblock_pin_with_script(b)
            assert info.value.needed == "key XOR"
        else:
            unblock_pin_with_script(b)
            r = b.identify()
            assert b.verifier.verify(b.cid, r.code, request_id=b.rid()).atc == r.atc
    finally:
        provider.close()


# ------------------------------------------------------------------------------------------------
# The plugin side (loaded with -p in the subprocess)


def pytest_configure(config: pytest.Config) -> None:
    spec = os.environ.get("CAPSIM_TEST_PKCS11")
    if not spec:
        return
    module, token_label = spec.split("|")
    from capsim.verifier import pkcs11 as p11
    from tests.verifier import conftest

    original = conftest.make_provider

    def make_provider() -> Any:
        provider = p11.Pkcs11Provider(
            p11.open_token(module, token_label),
            pin=os.environ["CAPSIM_PKCS11_PIN"],
            cache_size=64,
            secrets_prefix="unsealed",
        )
        _MADE[0] += 1
        provider.add_issuer_keys(
            "bank", imk_ac=conftest.IMK_AC, imk_smi=conftest.IMK_SMI, imk_smc=conftest.IMK_SMC
        )
        return provider

    config.stash[_ORIGINAL] = original
    config.stash[_REPLACEMENT] = make_provider
    conftest.make_provider = make_provider  # type: ignore[assignment]


_MADE = [0]
_ORIGINAL = pytest.StashKey[Any]()
_REPLACEMENT = pytest.StashKey[Any]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _REPLACEMENT not in config.stash:
        return
    original, replacement = config.stash[_ORIGINAL], config.stash[_REPLACEMENT]
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "make_provider", None) is original:
            module.make_provider = replacement


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _REPLACEMENT in config.stash:
        terminalreporter.write_line(f"pkcs11 providers made: {_MADE[0]}")
