"""The one place capsim imports a block cipher (emv-crypto.md §2).

Everything DES in capsim goes through this private module, and so does the verifier's AES-SIV
sealing of PAN tokens (:func:`_siv_seal`, :func:`_siv_open`; pycryptodome's AES). Two
interchangeable backends implement DES:

``cryptography``
    OpenSSL's TripleDES from ``cryptography.hazmat.decrepit.ciphers.algorithms``, through the
    public ``Cipher``/``modes`` API only. Keys are always passed as 24 bytes (K1‖K2‖K1 for two-key
    TDES, K‖K‖K for single DES), so no deprecation warning fires. Chosen automatically when
    ``cryptography`` is importable.
``pycryptodome``
    Single-DES objects from ``Crypto.Cipher.DES``; two-key TDES EDE is composed from them by hand,
    because ``DES3.new`` refuses keys whose halves are equal (as many EMV test keys are).

The environment variable ``CAPSIM_DES_BACKEND=pycryptodome|cryptography`` forces a backend when
the module is first imported; :func:`use_backend` switches at run time (for tests).

Theory of operation
-------------------
1. Keys are 8 bytes (single DES) or 16 bytes (two-key TDES, K = KL‖KR); data is whole 8-byte
   blocks. The public functions check both and raise :class:`ValidationError`; the
   ``_unchecked_*`` helpers are for :mod:`capsim.crypto`, which has checked already.
2. Only public APIs of both packages are used. Cipher objects are expensive to build
   (emv-crypto.md §2, "Cost"), so ECB objects for keys used again (master keys) are kept in a
   per-thread LRU cache of 64 keys, emptied when the backend changes; an ECB object keeps no
   chaining state, so reusing it is exact.
3. A key used once (a session key) gets fresh objects and is not cached: CBC, the retail MAC
   and :func:`_unchecked_encrypt_once` build the fewest contexts the operation needs and feed
   all their blocks in one call.
4. MAC algorithm 3 (retail MAC) is computed as one single-DES CBC pass under KL over blocks
   1…n−1 and one TDES block over Hn−1 ⊕ Dn, which equals the textbook DES(KL)[DES⁻¹(KR)[Hn]].
   :func:`_unchecked_retail_mac_cached` computes the same MAC block by block through the cached
   ECB objects, optionally continuing a CBC chain (for a key that MACs many messages with a
   common prefix). tests/test_des.py checks every form against the block-by-block definition.

>>> ecb_encrypt(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), bytes(8)).hex().upper()[:6]
'08D7B4'
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from capsim.errors import ConfigError, ValidationError

__all__ = [
    "BACKENDS",
    "EcbCipher",
    "available_backends",
    "cbc_decrypt",
    "cbc_encrypt",
    "cbc_mac",
    "current_backend",
    "ecb",
    "ecb_decrypt",
    "ecb_encrypt",
    "retail_mac",
    "set_backend",
    "use_backend",
]

BACKENDS = ("cryptography", "pycryptodome")
"""Backend names, in order of automatic preference."""

_ZERO8 = bytes(8)
_CACHE_SIZE = 64


class EcbCipher(Protocol):
    """A keyed ECB cipher: whole 8-byte blocks in, the same number of bytes out."""

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt whole blocks in ECB mode."""

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt whole blocks in ECB mode."""


class _Backend(Protocol):
    name: str

    def ecb(self, key: bytes) -> EcbCipher: ...

    def encrypt_once(self, key: bytes, data: bytes) -> bytes: ...

    def cbc_encrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes: ...

    def cbc_decrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes: ...

    def retail_mac(self, key: bytes, padded: bytes) -> bytes: ...


def _xor8(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(8, "big")


# --------------------------------------------------------------------------------------------------
# cryptography (OpenSSL)
# --------------------------------------------------------------------------------------------------


class _OsslEcb:
    """ECB encryptor/decryptor contexts for one key, reused across calls (ECB keeps no state)."""

    __slots__ = ("decrypt", "encrypt")

    def __init__(self, key24: bytes, tdes: type, cipher: Callable[..., Any], ecb_mode: object) -> None:
        c = cipher(tdes(key24), ecb_mode)
        self.encrypt: Callable[[bytes], bytes] = c.encryptor().update
        self.decrypt: Callable[[bytes], bytes] = c.decryptor().update


class _CryptographyBackend:
    """OpenSSL through ``cryptography``'s public API: ``Cipher(TripleDES(key24), mode).encryptor()``.

    Building a context dominates the cost of a fresh-key operation (emv-crypto.md §2, "Cost"), so
    every operation builds as few as it can and feeds all its blocks in one ``update`` call; the
    mode objects (ECB, CBC with IV 0) are built once and shared, as they hold no state.
    """

    name = "cryptography"

    def __init__(self) -> None:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        from cryptography.hazmat.primitives.ciphers import Cipher, modes

        self._tdes = TripleDES
        self._cipher = Cipher
        # EMV defines its key derivations, KCVs and ARPC on single ECB blocks.
        self._ecb_mode = modes.ECB()  # noqa: S305 - EMV block operations are ECB by definition
        self._cbc = modes.CBC
        self._cbc_zero = modes.CBC(_ZERO8)

    @staticmethod
    def _key24(key: bytes) -> bytes:
        if len(key) == 8:
            return key * 3
        return key + key[:8]

    def ecb(self, key: bytes) -> EcbCipher:
        return _OsslEcb(self._key24(key), self._tdes, self._cipher, self._ecb_mode)

    def encrypt_once(self, key: bytes, data: bytes) -> bytes:
        return self._cipher(self._tdes(self._key24(key)), self._ecb_mode).encryptor().update(data)

    def cbc_encrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        mode = self._cbc_zero if iv == _ZERO8 else self._cbc(iv)
        return self._cipher(self._tdes(self._key24(key)), mode).encryptor().update(data)

    def cbc_decrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        dec = self._cipher(self._tdes(self._key24(key)), self._cbc(iv)).decryptor()
        return dec.update(data)

    def retail_mac(self, key: bytes, padded: bytes) -> bytes:
        # H(n-1) by one single-DES CBC pass under KL, then one TDES block over H(n-1) ⊕ Dn.
        kl = key[:8]
        last = padded[-8:]
        if len(padded) > 8:
            h = self._cipher(self._tdes(kl * 3), self._cbc_zero).encryptor().update(padded[:-8])[-8:]
            last = _xor8(h, last)
        return self._cipher(self._tdes(key + kl), self._ecb_mode).encryptor().update(last)


# --------------------------------------------------------------------------------------------------
# pycryptodome
# --------------------------------------------------------------------------------------------------


class _PcdSingle:
    __slots__ = ("decrypt", "encrypt")

    def __init__(self, key8: bytes, new: Callable[..., object], mode: int) -> None:
        c = new(key8, mode)
        self.encrypt: Callable[[bytes], bytes] = c.encrypt  # type: ignore[attr-defined]
        self.decrypt: Callable[[bytes], bytes] = c.decrypt  # type: ignore[attr-defined]


class _PcdEde2:
    """Two-key TDES EDE composed from two single-DES ECB objects."""

    __slots__ = ("_l", "_r")

    def __init__(self, key16: bytes, new: Callable[..., object], mode: int) -> None:
        self._l = new(key16[:8], mode)
        self._r = new(key16[8:], mode)

    def encrypt(self, data: bytes) -> bytes:
        left, right = self._l, self._r
        return left.encrypt(right.decrypt(left.encrypt(data)))  # type: ignore[attr-defined, no-any-return]

    def decrypt(self, data: bytes) -> bytes:
        left, right = self._l, self._r
        return left.decrypt(right.encrypt(left.decrypt(data)))  # type: ignore[attr-defined, no-any-return]


class _PycryptodomeBackend:
    name = "pycryptodome"

    def __init__(self) -> None:
        from Crypto.Cipher import DES

        self._new = DES.new
        self._ecb_mode = DES.MODE_ECB
        self._cbc_mode = DES.MODE_CBC

    def ecb(self, key: bytes) -> EcbCipher:
        if len(key) == 8:
            return _PcdSingle(key, self._new, self._ecb_mode)
        return _PcdEde2(key, self._new, self._ecb_mode)

    def encrypt_once(self, key: bytes, data: bytes) -> bytes:
        return self.ecb(key).encrypt(data)

    def cbc_encrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        if len(key) == 8:
            return self._new(key, self._cbc_mode, iv=iv).encrypt(data)
        e = _cached_ecb(key).encrypt
        out = bytearray()
        prev = iv
        for i in range(0, len(data), 8):
            prev = e(_xor8(prev, data[i : i + 8]))
            out += prev
        return bytes(out)

    def cbc_decrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        if len(key) == 8:
            return self._new(key, self._cbc_mode, iv=iv).decrypt(data)
        d = _cached_ecb(key).decrypt
        out = bytearray()
        prev = iv
        for i in range(0, len(data), 8):
            block = data[i : i + 8]
            out += _xor8(prev, d(block))
            prev = block
        return bytes(out)

    def retail_mac(self, key: bytes, padded: bytes) -> bytes:
        # CBC under KL over all blocks gives Hn; then DES(KL)[DES⁻¹(KR)[Hn]].
        kl = self._new(key[:8], self._cbc_mode, iv=_ZERO8)
        hn = kl.encrypt(padded)[-8:]
        y = self._new(key[8:], self._ecb_mode).decrypt(hn)
        # The CBC object now chains from Hn: feeding y ⊕ Hn yields DES(KL)[y].
        return kl.encrypt(_xor8(y, hn))


# --------------------------------------------------------------------------------------------------
# selection and dispatch
# --------------------------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[[], _Backend]] = {
    "cryptography": _CryptographyBackend,
    "pycryptodome": _PycryptodomeBackend,
}
_instances: dict[str, _Backend] = {}
_local = threading.local()


def _load(name: str) -> _Backend:
    if name not in _FACTORIES:
        raise ConfigError(f"unknown DES backend {name!r}; expected one of {', '.join(BACKENDS)}")
    inst = _instances.get(name)
    if inst is None:
        try:
            inst = _FACTORIES[name]()
        except ImportError as exc:
            raise ConfigError(f"DES backend {name!r} is not installed: {exc}") from exc
        _instances[name] = inst
    return inst


def available_backends() -> tuple[str, ...]:
    """Names of the backends that can be loaded here, in order of preference.

    >>> "pycryptodome" in available_backends()
    True
    """
    names = []
    for name in BACKENDS:
        try:
            _load(name)
        except ConfigError:
            continue
        names.append(name)
    return tuple(names)


def _initial_backend() -> _Backend:
    forced = os.environ.get("CAPSIM_DES_BACKEND", "").strip().lower()
    if forced:
        return _load(forced)
    for name in BACKENDS:
        try:
            return _load(name)
        except ConfigError:
            continue
    raise ConfigError("no DES backend: install pycryptodome or cryptography")  # pragma: no cover


_backend: _Backend = _initial_backend()
_generation = 0


def current_backend() -> str:
    """Name of the active backend (``"cryptography"`` or ``"pycryptodome"``)."""
    return _backend.name


def set_backend(name: str) -> None:
    """Make ``name`` the active backend for the whole process.

    Raises
    ------
    ConfigError
        Unknown backend name, or the backend's package is not installed.
    """
    global _backend, _generation
    _backend = _load(name)
    _generation += 1


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily switch the active backend (tests parametrize every vector over both).

    >>> with use_backend("pycryptodome"):
    ...     current_backend()
    'pycryptodome'
    """
    previous = _backend.name
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _cache() -> OrderedDict[bytes, EcbCipher]:
    state: tuple[int, OrderedDict[bytes, EcbCipher]] | None = getattr(_local, "state", None)
    if state is None or state[0] != _generation:
        state = (_generation, OrderedDict())
        _local.state = state
    return state[1]


def _cached_ecb(key: bytes) -> EcbCipher:
    cache = _cache()
    c = cache.get(key)
    if c is None:
        c = _backend.ecb(key)
        cache[key] = c
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return c


def _check(key: bytes, data: bytes, iv: bytes | None = None, *, three_key: bool = False) -> None:
    if len(key) not in ((8, 16, 24) if three_key else (8, 16)):
        wanted = "8, 16 or 24" if three_key else "8 or 16"
        raise ValidationError(f"key: expected {wanted} bytes, got {len(key)}")
    if len(data) % 8:
        raise ValidationError(f"data: expected a multiple of 8 bytes, got {len(data)}")
    if iv is not None and len(iv) != 8:
        raise ValidationError(f"iv: expected 8 bytes, got {len(iv)}")


def ecb(key: bytes) -> EcbCipher:
    """A (cached, per-thread) ECB cipher object for an 8- or 16-byte key.

    The object belongs to the backend active when it was made; callers that hold it across a
    backend switch keep using the old backend.
    """
    _check(key, b"")
    return _cached_ecb(bytes(key))


def ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """ECB-encrypt whole blocks under single DES (8-byte key), two-key TDES (16-byte key) or
    three-key TDES (24-byte key: E(K3)[D(K2)[E(K1)[x]]], the PIV card management key)."""
    _check(key, data, three_key=True)
    key, data = bytes(key), bytes(data)
    if len(key) == 24:
        middle = _cached_ecb(key[8:16]).decrypt(_cached_ecb(key[:8]).encrypt(data))
        return _cached_ecb(key[16:]).encrypt(middle)
    return _cached_ecb(key).encrypt(data)


def ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """ECB-decrypt whole blocks under single DES, two-key or three-key TDES (8, 16, 24 bytes)."""
    _check(key, data, three_key=True)
    key, data = bytes(key), bytes(data)
    if len(key) == 24:
        middle = _cached_ecb(key[8:16]).encrypt(_cached_ecb(key[16:]).decrypt(data))
        return _cached_ecb(key[:8]).decrypt(middle)
    return _cached_ecb(key).decrypt(data)


def cbc_encrypt(key: bytes, data: bytes, iv: bytes = _ZERO8) -> bytes:
    """CBC-encrypt whole blocks (no padding) under an 8- or 16-byte key."""
    _check(key, data, iv)
    return _backend.cbc_encrypt(bytes(key), bytes(data), bytes(iv))


def cbc_decrypt(key: bytes, data: bytes, iv: bytes = _ZERO8) -> bytes:
    """CBC-decrypt whole blocks (no padding) under an 8- or 16-byte key."""
    _check(key, data, iv)
    return _backend.cbc_decrypt(bytes(key), bytes(data), bytes(iv))


def cbc_mac(key: bytes, padded: bytes) -> bytes:
    """Last block of a CBC encryption with IV 0 (ISO/IEC 9797-1 MAC algorithm 1, no padding step)."""
    _check(key, padded)
    if not padded:
        raise ValidationError("padded: expected at least one block")
    return _backend.cbc_encrypt(bytes(key), bytes(padded), _ZERO8)[-8:]


def retail_mac(key: bytes, padded: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 over already padded data with a 16-byte key (8 bytes out)."""
    if len(key) != 16:
        raise ValidationError(f"key: expected 16 bytes, got {len(key)}")
    _check(key, padded)
    if not padded:
        raise ValidationError("padded: expected at least one block")
    return _backend.retail_mac(bytes(key), bytes(padded))


def _unchecked_encrypt_once(key: bytes, data: bytes) -> bytes:
    """ECB-encrypt under a key used only this once (no cache, no decryptor), without checks."""
    return _backend.encrypt_once(key, data)


def _unchecked_retail_mac(key: bytes, padded: bytes) -> bytes:
    """:func:`retail_mac` without argument checks, for callers that validated already."""
    return _backend.retail_mac(key, padded)


def _unchecked_retail_mac_cached(key: bytes, padded: bytes, chain: bytes = _ZERO8) -> bytes:
    """MAC algorithm 3 under a 16-byte key used many times, block by block through cached ECB objects.

    ``chain`` is the CBC chaining value under KL before ``padded`` (zero: the MAC of ``padded``
    alone; the last block of ``cbc_encrypt(KL, prefix)``: the MAC of ``prefix ‖ padded``).
    No argument checks.
    """
    enc_l = _cached_ecb(key[:8]).encrypt
    h = int.from_bytes(chain, "big")
    for i in range(0, len(padded) - 8, 8):
        h = int.from_bytes(enc_l((h ^ int.from_bytes(padded[i : i + 8], "big")).to_bytes(8, "big")), "big")
    return _cached_ecb(key).encrypt((h ^ int.from_bytes(padded[-8:], "big")).to_bytes(8, "big"))


def _siv_seal(key: bytes, header: bytes, plaintext: bytes) -> bytes:
    """AES-SIV (RFC 5297) seal ``plaintext`` with associated data ``header``; returns tag ‖ ciphertext.

    Used by :class:`capsim.verifier.provider.SoftwareProvider` for its PAN-bearing key references.
    ``key`` is 32, 48 or 64 bytes. Deterministic: the same inputs give the same output.
    """
    from Crypto.Cipher import AES

    siv = AES.new(key, AES.MODE_SIV)
    siv.update(header)
    ct, tag = siv.encrypt_and_digest(plaintext)
    return bytes(tag) + bytes(ct)


def _siv_open(key: bytes, header: bytes, sealed: bytes) -> bytes:
    """Open what :func:`_siv_seal` sealed under ``key`` and ``header``.

    Raises
    ------
    ValueError
        ``sealed`` is shorter than the 16-byte tag, or it does not authenticate.
    """
    from Crypto.Cipher import AES

    if len(sealed) < 16:
        raise ValueError("sealed: shorter than the 16-byte SIV tag")
    siv = AES.new(key, AES.MODE_SIV)
    siv.update(header)
    return bytes(siv.decrypt_and_verify(sealed[16:], sealed[:16]))
