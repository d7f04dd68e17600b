"""Key basics, padding and the ISO/IEC 9797-1 MACs (emv-crypto.md §1, §3).

Theory of operation
-------------------
1. A DES key's parity is odd per byte (:func:`odd_parity`); capsim sets it on every key it
   derives and never checks it on keys it is given (DES ignores the parity bits).
2. A key check value is the leftmost bytes of the key's encryption of eight zero bytes.
3. Padding method 1 appends zeros up to a multiple of 8 (empty data becomes one zero block);
   method 2 appends ``80`` then zeros, so it always adds at least one byte.
4. MAC algorithm 1 is a single-DES CBC-MAC (IV 0); MAC algorithm 3 (the retail MAC) is the
   single-DES CBC-MAC under KL with a last ``DES(KL)[DES⁻¹(KR)[·]]`` step. Both go through
   :mod:`capsim._des`, the one module that imports a cipher.

>>> key_check_value(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")).hex().upper()
'08D7B4'
"""

from __future__ import annotations

from capsim import _des
from capsim._validate import as_bytes as _as_bytes
from capsim._validate import fixed_bytes as _fixed
from capsim.crypto._checks import PARITY_TABLE as _PARITY_TABLE
from capsim.crypto._checks import ZERO8 as _ZERO8
from capsim.crypto._checks import key16 as _key16
from capsim.crypto._checks import pad as _pad
from capsim.crypto._checks import padding_method as _padding
from capsim.errors import ValidationError

__all__ = [
    "key_check_value",
    "mac_iso9797_alg1",
    "mac_iso9797_alg3",
    "odd_parity",
    "pad_iso9797_1",
    "pad_iso9797_2",
]


def odd_parity(key: bytes) -> bytes:
    """Set odd parity on every byte of ``key`` (emv-crypto.md §1).

    Each byte whose popcount is even gets bit 0 flipped; other bytes are unchanged.

    >>> odd_parity(bytes.fromhex("00FE0102")).hex().upper()
    '01FE0102'
    """
    return _as_bytes("key", key).translate(_PARITY_TABLE)


def key_check_value(key: bytes, length: int = 3) -> bytes:
    """Key check value: the leftmost ``length`` bytes of ``DES3(K)[00×8]`` (emv-crypto.md §1, CRY-KCV).

    ``key`` may be 8 (single DES) or 16 bytes; ``length`` is 1 to 8.

    >>> key_check_value(bytes.fromhex("FEDCBA98765432100123456789ABCDEF")).hex().upper()
    '7B8358'
    """
    k = _as_bytes("key", key)
    if len(k) not in (8, 16):
        raise ValidationError(f"key: expected 8 or 16 bytes, got {len(k)}")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 8:
        raise ValidationError(f"length: expected an int from 1 to 8, got {length!r}")
    return _des.ecb_encrypt(k, _ZERO8)[:length]


def pad_iso9797_1(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zero bytes up to a multiple of 8 (emv-crypto.md §3).

    Empty data becomes one zero block.

    >>> pad_iso9797_1(b"").hex()
    '0000000000000000'
    >>> pad_iso9797_1(bytes(8)) == bytes(8)
    True
    """
    d = _as_bytes("data", data)
    if not d:
        return _ZERO8
    return d + bytes(-len(d) % 8)


def pad_iso9797_2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: ``80`` then zeros up to a multiple of 8 (emv-crypto.md §3).

    >>> pad_iso9797_2(bytes.fromhex("0102")).hex().upper()
    '0102800000000000'
    >>> len(pad_iso9797_2(bytes(8)))
    16
    """
    d = _as_bytes("data", data)
    return d + b"\x80" + bytes(-(len(d) + 1) % 8)


def mac_iso9797_alg1(key: bytes, data: bytes, padding: int = 2) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 1: single-DES CBC-MAC, IV 0, 8 bytes (emv-crypto.md §3).

    ``key`` is an 8-byte DES key (CAP TDS keys it with the Identify ARQC, §8).

    >>> mac_iso9797_alg1(bytes.fromhex("9CA5A4CA1651CE31"),
    ...                  bytes.fromhex("0530026806800000"), padding=1).hex().upper()
    'D2EC6598EC48C83B'
    """
    k = _fixed("key", key, 8)
    return _des.cbc_mac(k, _pad(_as_bytes("data", data), _padding(padding)))


def mac_iso9797_alg3(key: bytes, data: bytes, padding: int = 2) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (retail MAC, EMV Book 2 A1.2.1), 8 bytes (emv-crypto.md §3).

    Single-DES CBC under KL over all blocks, then ``DES(KL)[DES⁻¹(KR)[Hn]]``.

    >>> key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    >>> mac_iso9797_alg3(key, b"hello world", padding=1).hex().upper()
    '78DA3D3DEB48FD4D'
    >>> mac_iso9797_alg3(key, b"hello world").hex().upper()
    '2BC2D9EDE0CF31F6'
    """
    k = _key16("key", key)
    return _des._unchecked_retail_mac(k, _pad(_as_bytes("data", data), _padding(padding)))
