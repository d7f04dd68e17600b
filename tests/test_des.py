"""capsim._des: NIST/FIPS known answers on both backends, backend agreement, selection, no warnings."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim import _des
from capsim.errors import ConfigError, ValidationError
from tests.utils import load_vectors, unhex

AVAILABLE = _des.available_backends()


@pytest.mark.parametrize("v", load_vectors("crypto/des.txt"))
def test_des_known_answers(backend: str, v: dict[str, str]) -> None:
    key, plain, cipher = unhex(v["KEY"]), unhex(v["PLAIN"]), unhex(v["CIPHER"])
    assert _des.current_backend() == backend
    if v["MODE"] == "ecb":
        assert _des.ecb_encrypt(key, plain) == cipher
        assert _des.ecb_decrypt(key, cipher) == plain
        # Single DES K equals TDES K‖K (EDE collapses): the equal-halves key pycryptodome's DES3 refuses.
        assert _des.ecb_encrypt(key + key, plain) == cipher
    else:
        iv = unhex(v["IV"])
        assert _des.cbc_encrypt(key, plain, iv) == cipher
        assert _des.cbc_decrypt(key, cipher, iv) == plain
        assert _des.cbc_encrypt(key + key, plain, iv) == cipher
        assert _des.cbc_decrypt(key + key, cipher, iv) == plain


def test_tdes_is_ede_of_single_des(backend: str) -> None:
    kl, kr = unhex("0123456789ABCDEF"), unhex("FEDCBA9876543210")
    x = unhex("4E6F772069732074")
    expected = _des.ecb_encrypt(kl, _des.ecb_decrypt(kr, _des.ecb_encrypt(kl, x)))
    assert _des.ecb_encrypt(kl + kr, x) == expected
    assert _des.ecb_decrypt(kl + kr, expected) == x
    # KCV of IMK-A (vectors.md CRY-KCV) through the raw TDES block.
    assert _des.ecb_encrypt(kl + kr, bytes(8))[:3] == unhex("08D7B4")


keys = st.one_of(st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16))
blocks = st.integers(min_value=1, max_value=6).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n))


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="needs both cryptography and pycryptodome installed")
@given(key=keys, data=blocks, iv=st.binary(min_size=8, max_size=8))
def test_backends_agree(key: bytes, data: bytes, iv: bytes) -> None:
    results = []
    for name in AVAILABLE:
        with _des.use_backend(name):
            r = (
                _des.ecb_encrypt(key, data),
                _des.ecb_decrypt(key, data),
                _des.cbc_encrypt(key, data, iv),
                _des.cbc_decrypt(key, data, iv),
                _des.cbc_mac(key[:8], data),
                _des.retail_mac(key + key if len(key) == 8 else key, data),
            )
        results.append(r)
    assert results[0] == results[1]


@given(key=st.binary(min_size=16, max_size=16), data=blocks, iv=st.binary(min_size=8, max_size=8))
def test_cbc_and_retail_mac_match_their_definitions(key: bytes, data: bytes, iv: bytes) -> None:
    """CBC and MAC algorithm 3 rebuilt block by block from single-DES ECB (emv-crypto.md §3)."""
    for name in AVAILABLE:
        with _des.use_backend(name):
            prev, out = iv, b""
            for i in range(0, len(data), 8):
                x = bytes(a ^ b for a, b in zip(prev, data[i : i + 8], strict=True))
                prev = _des.ecb_encrypt(key, x)
                out += prev
            assert _des.cbc_encrypt(key, data, iv) == out
            assert _des.cbc_decrypt(key, out, iv) == data
            kl, kr = key[:8], key[8:]
            h = bytes(8)
            for i in range(0, len(data), 8):
                h = _des.ecb_encrypt(kl, bytes(a ^ b for a, b in zip(h, data[i : i + 8], strict=True)))
            assert _des.cbc_mac(kl, data) == h
            assert _des.retail_mac(key, data) == _des.ecb_encrypt(kl, _des.ecb_decrypt(kr, h))


def test_cryptography_backend_emits_no_warning() -> None:
    """8- and 16-byte keys are widened to 24 bytes: cryptography's key-size warnings never fire."""
    if "cryptography" not in AVAILABLE:
        pytest.skip("the cryptography package is not installed")
    with _des.use_backend("cryptography"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for key in (os.urandom(8), os.urandom(16), bytes(16)):
            _des.ecb_encrypt(key, bytes(16))
            _des.ecb_decrypt(key, bytes(16))
            _des.cbc_encrypt(key, bytes(16))
            _des.cbc_decrypt(key, bytes(16))
        _des.retail_mac(os.urandom(16), bytes(24))
        _des.cbc_mac(os.urandom(8), bytes(24))
    assert caught == []


def test_use_backend_restores_after_error() -> None:
    before = _des.current_backend()
    seen: list[str] = []

    def fail_inside() -> None:
        with _des.use_backend("pycryptodome"):
            seen.append(_des.current_backend())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert seen == ["pycryptodome"]
    assert _des.current_backend() == before


def test_unknown_backend_is_a_config_error() -> None:
    before = _des.current_backend()
    with pytest.raises(ConfigError, match="unknown DES backend"):
        _des.set_backend("openssl3")
    assert _des.current_backend() == before


def _backend_in_subprocess(value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CAPSIM_DES_BACKEND=value)
    code = "from capsim import _des; print(_des.current_backend())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", _des.BACKENDS)
def test_environment_variable_forces_backend(name: str) -> None:
    if name not in AVAILABLE:
        pytest.skip(f"DES backend {name!r}: its package is not installed")
    result = _backend_in_subprocess(name.upper())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_environment_variable_with_unknown_backend_fails_loudly() -> None:
    result = _backend_in_subprocess("rot13")
    assert result.returncode != 0
    assert "ConfigError" in result.stderr
    assert "unknown DES backend" in result.stderr


def test_automatic_choice_prefers_cryptography() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAPSIM_DES_BACKEND"}
    code = "from capsim import _des; print(_des.current_backend())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == AVAILABLE[0]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: _des.ecb_encrypt(bytes(32), bytes(8)), "key"),
        (lambda: _des.cbc_encrypt(bytes(24), bytes(8)), "key"),
        (lambda: _des.ecb_encrypt(bytes(7), bytes(8)), "key"),
        (lambda: _des.ecb_decrypt(bytes(16), bytes(7)), "data"),
        (lambda: _des.cbc_encrypt(bytes(16), bytes(8), bytes(7)), "iv"),
        (lambda: _des.cbc_decrypt(bytes(16), bytes(9)), "data"),
        (lambda: _des.retail_mac(bytes(8), bytes(8)), "key"),
        (lambda: _des.retail_mac(bytes(16), b""), "padded"),
        (lambda: _des.cbc_mac(bytes(8), b""), "padded"),
        (lambda: _des.ecb(bytes(12)), "key"),
    ],
)
def test_bad_arguments_are_validation_errors(call: object, name: str) -> None:
    assert callable(call)
    with pytest.raises(ValidationError, match=f"^{name}:"):
        call()


def test_cipher_cache_is_bounded(backend: str) -> None:
    for i in range(3 * _des._CACHE_SIZE):
        _des.ecb_encrypt(i.to_bytes(16, "big"), bytes(8))
    assert len(_des._cache()) <= _des._CACHE_SIZE
    # A cached object still answers correctly after eviction of others.
    key = unhex("0123456789ABCDEFFEDCBA9876543210")
    assert _des.ecb(key).encrypt(bytes(8))[:3] == unhex("08D7B4")


@given(
    key=st.binary(min_size=16, max_size=16),
    prefix=st.integers(min_value=0, max_value=4).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)),
    data=blocks,
)
def test_cached_retail_mac_continues_a_cbc_chain(key: bytes, prefix: bytes, data: bytes) -> None:
    """The block-by-block MAC over cached ECB objects, from a CBC chaining value, equals the
    retail MAC of prefix ‖ data (the form AcCalculator uses for a fixed key, emv-crypto.md §3)."""
    for name in AVAILABLE:
        with _des.use_backend(name):
            chain = _des.cbc_encrypt(key[:8], prefix)[-8:] if prefix else bytes(8)
            expected = _des.retail_mac(key, prefix + data)
            assert _des._unchecked_retail_mac_cached(key, data, chain) == expected
            if not prefix:
                assert _des._unchecked_retail_mac_cached(key, data) == expected
            assert _des._unchecked_retail_mac(key, prefix + data) == expected


def _private_imports(tree: ast.Module) -> list[str]:
    """Imports of a non-capsim module path with a private part, or of a private name from one."""
    found = []
    for node in ast.walk(tree):
        modules: list[tuple[str, list[str]]]
        if isinstance(node, ast.Import):
            modules = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [(node.module, [alias.name for alias in node.names])]
        else:
            continue
        for module, names in modules:
            if module.split(".")[0] in {"capsim", "__future__"}:
                continue
            private = [p for p in module.split(".") + names if p.startswith("_") and not p.startswith("__")]
            if private:
                found.append(f"line {node.lineno}: {module} {names}")
    return found


def test_no_private_api_of_a_dependency_is_imported() -> None:
    """capsim uses public APIs of its dependencies only: no ``from x._y import``, ``import x._y`` or
    ``from x import _y`` outside capsim itself, anywhere in a module (functions included)."""
    from pathlib import Path

    import capsim

    root = Path(capsim.__file__).parent
    offenders = {
        str(path.relative_to(root)): found
        for path in sorted(root.rglob("*.py"))
        if (found := _private_imports(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert offenders == {}
    # The scan itself finds each form.
    sample = "from a._b import c\nimport a._b\ndef f():\n    from a import _b\nfrom capsim._des import ecb\n"
    assert len(_private_imports(ast.parse(sample))) == 3


def test_cryptography_backend_uses_the_public_cipher_api() -> None:
    """The OpenSSL backend builds every context through ``Cipher(...).encryptor()``: with that
    method replaced, every operation goes through the replacement."""
    if "cryptography" not in AVAILABLE:
        pytest.skip("the cryptography package is not installed")
    from cryptography.hazmat.primitives.ciphers import Cipher

    calls = []
    original = Cipher.encryptor

    def counting(self: Cipher[Any]) -> Any:
        calls.append(type(self.mode).__name__)
        return original(self)

    backend = _des._CryptographyBackend()
    key = unhex("0123456789ABCDEFFEDCBA9876543210")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Cipher, "encryptor", counting)
        assert backend.encrypt_once(key, bytes(8))[:3] == unhex("08D7B4")
        mac = backend.retail_mac(key, bytes(24))
        cbc = backend.cbc_encrypt(key, bytes(16), bytes(8))
        backend.ecb(key).encrypt(bytes(8))
    assert calls == ["ECB", "CBC", "ECB", "CBC", "ECB"]
    assert mac == _des.retail_mac(key, bytes(24))
    assert cbc == _des.cbc_encrypt(key, bytes(16))


def test_des_is_imported_only_by_the_des_module() -> None:
    """emv-crypto.md §2 "One import site": no other capsim module reaches for a block cipher (DES or AES)."""
    import re
    from pathlib import Path

    import capsim

    pattern = re.compile(
        r"^\s*(from\s+(Crypto|Cryptodome)\.Cipher\s+import\s+.*\b(DES3?|AES)\b"
        r"|import\s+(Crypto|Cryptodome)\.Cipher\.(DES3?|AES)\b"
        r"|from\s+cryptography\.hazmat\.(decrepit|primitives)\.ciphers\.algorithms\s+import\s+.*\b(TripleDES|AES)\b"
        r"|from\s+cryptography\.hazmat\.primitives\.ciphers\.aead\s+import\s+.*\bAES"
        r"|.*\bdecrepit\b)",
        re.MULTILINE,
    )
    root = Path(capsim.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*.py"))
        if path.name != "_des.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    des_source = (root / "_des.py").read_text(encoding="utf-8")
    assert pattern.search(des_source)
    assert re.search(r"^\s*from\s+Crypto\.Cipher\s+import\s+AES\b", des_source, re.MULTILINE)


def test_siv_seal_known_answer_and_open() -> None:
    """AES-SIV sealing of PAN references: RFC 5297 appendix A.1, cross-checked with ``cryptography``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    key = unhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    header = unhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    plain = unhex("112233445566778899aabbccddee")
    sealed = _des._siv_seal(key, header, plain)
    assert sealed == unhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
    assert sealed == AESSIV(key).encrypt(plain, [header])
    assert _des._siv_open(key, header, sealed) == plain
    with pytest.raises(ValueError, match="MAC check failed"):
        _des._siv_open(key, header + b"x", sealed)
    with pytest.raises(ValueError, match="MAC check failed"):
        _des._siv_open(key, header, sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(ValueError, match="16-byte"):
        _des._siv_open(key, header, sealed[:15])


def test_three_key_tdes_is_the_sp_800_67_example_on_every_backend() -> None:
    """NIST SP 800-67 Rev. 1, appendix B: keys K1 ‖ K2 ‖ K3 and "The qufck brown fox jump"
    (sic); the PIV card management key is 3-key TDES in ECB, one block at a time."""
    key = bytes.fromhex("0123456789ABCDEF" "23456789ABCDEF01" "456789ABCDEF0123")
    plain = b"The qufck brown fox jump"
    cipher = bytes.fromhex("A826FD8CE53B855F" "CCE21C8112256FE6" "68D5C05DD9B6B900")
    for backend in _des.available_backends():
        with _des.use_backend(backend):
            assert _des.ecb_encrypt(key, plain) == cipher
            assert _des.ecb_decrypt(key, cipher) == plain
    with pytest.raises(ValidationError, match="8, 16 or 24 bytes"):
        _des.ecb_encrypt(bytes(23), bytes(8))
