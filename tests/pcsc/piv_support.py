"""Helpers for the PIV interop tests: a personalised PIV card file, the host tools, and checks
of the signatures they return against the card's certificates (with pyca/cryptography).

The tools are the real ones (OpenSC 0.23's ``opensc-tool``, ``pkcs11-tool``, ``pkcs15-tool``
and ``opensc-pkcs11.so``; yubico-piv-tool 2.2), run as subprocesses against the private pcscd
of :mod:`tests.pcsc.stack`. ``scripts/test.sh`` installs them; a test whose tool is missing is
skipped with the package to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from capsim.cards.piv import PivAlgorithm, certificate_of, new_piv_card, read_piv_card_file
from capsim.cards.piv.personalise import Personalised, personalise
from tests.pcsc.stack import PcscdStack, wait_card

HOLDER: Final = "Jane Doe"
PIN: Final = "123456"
PUK: Final = "12345678"
#: Where Debian (and most distributions) put OpenSC's PKCS#11 module.
OPENSC_PKCS11_CANDIDATES: Final = (
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib64/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
)
_PACKAGE: Final = {
    "opensc-tool": "opensc",
    "pkcs11-tool": "opensc",
    "pkcs15-tool": "opensc",
    "yubico-piv-tool": "yubico-piv-tool",
    "openssl": "openssl",
}


def tool(name: str) -> str:
    """The path of a host tool, or skip the test naming the package that has it."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install {_PACKAGE.get(name, name)})")
    return found


def opensc_module() -> str:
    """The path of ``opensc-pkcs11.so``, or skip."""
    for candidate in OPENSC_PKCS11_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    pytest.skip("opensc-pkcs11.so is not installed (apt-get install opensc-pkcs11)")


def run(name: str, *args: str, ok: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a host tool; with ``ok`` it must exit 0 (its output is the assertion message)."""
    result = subprocess.run([tool(name), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if ok:
        assert result.returncode == 0, f"{name} {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def piv_card_file(
    directory: Path, name: str = "token", *, algorithm: PivAlgorithm = PivAlgorithm.RSA_2048
) -> tuple[Path, Personalised]:
    """A new PIV card file: keys in 9A (``algorithm``) and 9C (P-256), certificates for
    :data:`HOLDER` from a throwaway CA, the default PIN, PUK and management key."""
    made = personalise(holder=HOLDER, algorithm=algorithm)
    path = directory / f"{name}.json"
    new_piv_card(made.state, path=path).close()
    return path, made


def certificate(path: Path, slot: int) -> x509.Certificate:
    """The certificate in ``slot`` of a (closed) PIV card file."""
    _, state = read_piv_card_file(path)
    der = certificate_of(state, slot)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def verify_signature(cert: x509.Certificate, signature: bytes, message: bytes, *, raw_ecdsa: bool) -> None:
    """Check a PKCS#11 signature of ``message`` (SHA-256) with the certificate's public key:
    RSA PKCS#1 v1.5, or ECDSA as PKCS#11 returns it (``r || s``) when ``raw_ecdsa``."""
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        return
    assert isinstance(public, ec.EllipticCurvePublicKey)
    if raw_ecdsa:
        half = len(signature) // 2
        signature = encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


@contextmanager
def serve_process(path: Path, stack: PcscdStack, slot: int = 0) -> Iterator[subprocess.Popen[str]]:
    """``capsim card serve PATH`` as a process, until the card is in the reader; SIGTERM at the
    end (it must exit 0 without a traceback)."""
    stack.settle_slot(slot)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = ["card", "serve", str(path), "--vpcd", f"127.0.0.1:{stack.port}", "--slot", str(slot)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_card(stack.readers[slot], present=True, timeout=20)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        stack.note_unplugged(slot)
        wait_card(stack.readers[slot], present=False, timeout=5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
