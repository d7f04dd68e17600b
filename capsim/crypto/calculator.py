"""The verifier's fast path: :class:`AcCalculator` (emv-crypto.md §5).

:func:`capsim.crypto.generate_ac` is the definition; this module only evaluates it faster for
one MK-AC and CVN, through the same rule helpers (see the class docstring for what it adds).
"""

from __future__ import annotations

from capsim import _des
from capsim._validate import fixed_bytes as _fixed
from capsim.crypto._checks import ZERO8 as _ZERO8
from capsim.crypto._checks import key16 as _key16
from capsim.crypto._checks import pad as _pad
from capsim.crypto.cryptogram import (
    _CVN_TABLE,
    _IAD_PART,
    _M_NONE,
    CVN,
    _ac_key,
    _ac_message,
    _cvn,
    _method,
    _tree_params,
    ac_data,
    ac_key_un,
)
from capsim.crypto.keys import SessionKeyMethod, TreeParams, _TreeCache

__all__ = ["AcCalculator"]


class AcCalculator:
    """Cryptograms for one MK-AC and CVN, fast: the verifier's "session key + AC" hot path.

    :func:`generate_ac` is the definition; this class is a faster evaluation of it, built from the
    same rule helpers (MAC input, padding, UN, AC key, tree path, MAC algorithm 3 in
    :mod:`capsim._des`), so no rule exists twice. What it adds is only bookkeeping, each part
    checked against :func:`generate_ac` and a block-by-block definition in tests/test_crypto.py
    for every CVN and session-key method:

    1. arguments are validated once here; :meth:`generate` re-validates only inputs that are
       not plain ``bytes`` of the right lengths (those go through :func:`ac_data`'s checks);
    2. the MK ECB object stays in the per-thread cache of :mod:`capsim._des`;
    3. without a session key (Visa CVN 10) the MAC key is fixed, so the CBC chaining value over
       the blocks before the ATC (CDOL1 data and AIP, constant across an ATC window) is cached
       and the MAC continues from it through cached ECB objects;
    4. with the tree method the tree levels are cached, so windows of nearby ATCs share work.

    One calculator may be shared between threads: cipher objects live in per-thread caches and
    the calculator's own caches hold only immutable values.

    >>> mk = bytes.fromhex("154F349D8585CB7F6B0798E9839B10C1")
    >>> calc = AcCalculator(CVN.VISA_18, mk)
    >>> tv = bytes.fromhex("000000004000 000000000000 0124 8000048000 0124 191105 01 52BF4585")
    >>> calc.generate(tv, bytes.fromhex("1800"), bytes.fromhex("001C"),
    ...               bytes.fromhex("06011203A0B800")).hex().upper()
    '7A788EA6B8A3E733'
    """

    __slots__ = (
        "_cvn",
        "_iad_min",
        "_kl",
        "_method",
        "_mk",
        "_padding",
        "_prefix_cache",
        "_tree",
        "_tree_cache",
    )

    def __init__(
        self,
        cvn: CVN | int,
        mk_ac: bytes,
        *,
        method: SessionKeyMethod | None = None,
        tree: TreeParams | None = None,
    ) -> None:
        self._cvn = _cvn(cvn)
        self._mk = _key16("mk_ac", mk_ac)
        self._method = _method(self._cvn, method)
        self._tree = _tree_params(tree)
        self._padding = _CVN_TABLE[self._cvn].padding
        self._iad_min = _IAD_PART[self._cvn][1]
        self._tree_cache: _TreeCache = {}
        self._kl = self._mk[:8]
        self._prefix_cache: dict[bytes, bytes] = {}

    @property
    def cvn(self) -> CVN:
        """The CVN this calculator computes."""
        return self._cvn

    @property
    def method(self) -> SessionKeyMethod:
        """The session-key method in use."""
        return self._method

    def session_key(self, atc: bytes, un: bytes = bytes(4)) -> bytes:
        """The AC key for ``atc`` (and ``un`` for the SKD method); equals :func:`ac_session_key`."""
        return self._key(_fixed("atc", atc, 2), _fixed("un", un, 4))

    def _key(self, atc: bytes, un: bytes) -> bytes:
        return _ac_key(self._method, self._mk, atc, un, self._tree, cache=self._tree_cache)

    def generate(
        self, cdol1_data: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes | None = None
    ) -> bytes:
        """The 8-byte AC; same result (and same errors) as :func:`generate_ac` with this CVN and key."""
        if (
            type(cdol1_data) is not bytes
            or type(aip) is not bytes
            or type(atc) is not bytes
            or type(iad) is not bytes
            or len(atc) != 2
            or len(aip) != 2
            or len(iad) < self._iad_min
        ):
            # Slow path: validate (raises on bad input) and normalise bytes-like arguments.
            ac_data(self._cvn, cdol1_data=cdol1_data, aip=aip, atc=atc, iad=iad)
            cdol1_data, aip, atc, iad = bytes(cdol1_data), bytes(aip), bytes(atc), bytes(iad)
        u = ac_key_un(self._method, cdol1_data, un)
        data = _pad(_ac_message(self._cvn, cdol1_data, aip, atc, iad), self._padding)
        if self._method is _M_NONE:
            return self._mac_fixed_key(data, len(cdol1_data) + 2)
        return _des._unchecked_retail_mac(self._key(atc, u), data)

    def _mac_fixed_key(self, padded: bytes, fixed: int) -> bytes:
        """MAC algorithm 3 under MK-AC itself, continuing from the cached CBC chaining value over
        the whole blocks within the first ``fixed`` bytes. That is never the last block: the ATC
        and the IAD part (at least 3 bytes) follow the fixed bytes, so ``fixed < len(padded)``."""
        n = fixed // 8 * 8
        prefix = padded[:n]
        cache = self._prefix_cache
        chain = cache.get(prefix)
        if chain is None:
            chain = _des.cbc_encrypt(self._kl, prefix)[-8:] if n else _ZERO8
            if len(cache) >= 16:
                cache.clear()
            cache[prefix] = chain
        return _des._unchecked_retail_mac_cached(self._mk, padded[n:], chain)
