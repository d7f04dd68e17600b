"""Key custody for the verifier: the :class:`CryptogramProvider` protocol and a software one.

(Slightly over 600 lines on purpose: the provider protocol and its reference implementation, the
software provider, are read side by side by whoever writes another provider.)

Keys cross this interface only *by reference* (emv-crypto.md §10): the service and the store
handle ``key_ref`` strings, never key bytes. An HSM adapter implements the same protocol.

Theory of operation (:class:`SoftwareProvider`)
-----------------------------------------------
1. Issuer master keys (MK-AC, and optionally MK-SMI / MK-SMC) are registered under a key id
   (:meth:`SoftwareProvider.add_issuer_keys`). Per-card ICC master keys, as some issuers and
   test labs hand out, are registered under their own key id
   (:meth:`SoftwareProvider.add_card_keys`).
2. :meth:`~CryptogramProvider.register_card` turns a card's PAN and PSN into a
   :class:`CardKeys`: a ``key_ref`` that embeds the PAN and PSN encrypted with AES-SIV under a
   key derived from the issuer MK-AC (so a store holding it holds no PAN in clear, and a new
   process with the same issuer keys resolves it), a keyed PAN token (HMAC-SHA-256) grouping
   cards that share a PAN (V11), and the last four PAN digits.
3. ICC master keys are derived on demand with the credential's derivation option
   (emv-crypto.md §4.1). Cryptograms go through :class:`capsim.crypto.AcCalculator`; the
   calculators of recently used cards are kept in a small LRU cache (``cache_size``).
4. Key bytes live only inside :class:`SecretKey` objects, whose ``repr``/``str`` show no key
   material and which refuse pickling and copying (V40). The provider itself refuses pickling
   too. Errors name key *ids*, never key bytes or PANs.
5. The audit seal key (:mod:`capsim.verifier.audit`, rule 4) is handed over by the provider's
   owner (:meth:`SoftwareProvider.set_audit_seal_key`; the CLI reads it from its keyring file)
   and used only through :meth:`~CryptogramProvider.audit_seal` (HMAC-SHA-256). Without one,
   :meth:`~CryptogramProvider.audit_seal_key_id` is ``None`` and records are written unsealed.
6. A key migration re-registers each card with another provider: the one way to get a card's
   PAN back out of a reference is :meth:`SoftwareProvider.card_identity` (issuer keys
   registered; the PAN it returns is never logged or stored).

>>> p = SoftwareProvider()
>>> p.add_issuer_keys("bank", imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
>>> card = p.register_card(issuer_key_id="bank", pan="1234567890123456", psn="00")
>>> card.pan_last4, card.key_ref.startswith("sw1:bank:auto:")
('3456', True)
>>> "0123456789" in repr(p)
False
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NoReturn, Protocol, runtime_checkable

from capsim import _des
from capsim._validate import digits as _digits
from capsim.crypto import (
    CVN,
    AcCalculator,
    KeyDerivation,
    SessionKeyMethod,
    TreeParams,
    derive_icc_mk,
    generate_arpc,
    key_check_value,
    odd_parity,
)
from capsim.errors import ConfigError, ValidationError

__all__ = [
    "FINGERPRINT_DATA",
    "AcFunction",
    "CardIdentity",
    "CardKeys",
    "CryptogramProvider",
    "OneAcFromFunction",
    "SecretKey",
    "SoftwareProvider",
    "derived_fingerprint",
]

#: ``(cdol1_data, aip, atc, iad, un) -> AC`` for one card, CVN and session-key method.
AcFunction = Callable[[bytes, bytes, bytes, bytes, bytes], bytes]

_REF_VERSION: Final = "sw1"
_CARD_REF: Final = "card"
_DUMMY_REF: Final = "dummy:0"
#: The data a key's fingerprint child is derived with (``CAPSIMFP`` ‖ its complement): a key
#: that may only derive (an IMK in a token) still gets a fingerprint (docs/hsm.md).
FINGERPRINT_DATA: Final = b"CAPSIMFP" + bytes(b ^ 0xFF for b in b"CAPSIMFP")


def derived_fingerprint(key: bytes) -> str:
    """The fingerprint of a double-length TDES key that never has to encrypt itself: the child
    ``odd_parity(TDES-ECB(key)[FINGERPRINT_DATA])`` encrypts ``00×8 ‖ FF×8`` (TDES-ECB), in hex
    (32 digits). A PKCS#11 token computes the same with one ``CKM_DES3_ECB_ENCRYPT_DATA``
    derivation (:func:`capsim.verifier.pkcs11.token_fingerprint`).

    >>> derived_fingerprint(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
    '9b90e29252c62c00f70c30618a80acd3'
    """
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise ValidationError("key: expected 16 bytes (a double-length TDES key)")
    child = odd_parity(_des.ecb_encrypt(bytes(key), FINGERPRINT_DATA))
    return _des.ecb_encrypt(child, bytes(8) + b"\xff" * 8).hex()


class SecretKey:
    """Key bytes that never show: no key material in ``repr``/``str``, no pickling or copying.

    >>> k = SecretKey(bytes(16))
    >>> repr(k)
    '<SecretKey 16 bytes>'
    >>> import pickle
    >>> pickle.dumps(k)
    Traceback (most recent call last):
    ...
    TypeError: SecretKey objects cannot be pickled or copied
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise ValidationError("key: expected bytes")
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The raw key bytes (for the crypto layer only)."""
        return self._value

    def __repr__(self) -> str:
        return f"<SecretKey {len(self._value)} bytes>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey objects cannot be pickled or copied")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("SecretKey objects cannot be pickled or copied")

    def __copy__(self) -> NoReturn:
        raise TypeError("SecretKey objects cannot be pickled or copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("SecretKey objects cannot be pickled or copied")

    def __eq__(self, other: object) -> bool:
        return NotImplemented

    __hash__ = object.__hash__


@dataclass(frozen=True, kw_only=True, slots=True)
class CardKeys:
    """What a credential stores about a card's keys: references only (no key, no full PAN)."""

    key_ref: str
    pan_token: str
    pan_last4: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CardIdentity:
    """What a card reference of :class:`SoftwareProvider` seals: the issuer key id, the card's
    PAN and PSN and its derivation option (:meth:`SoftwareProvider.card_identity`). The PAN
    is a secret of the cardholder: ``repr`` shows only its last four digits, and nothing may
    log or store it."""

    issuer_key_id: str
    pan: str = field(repr=False)
    psn: str
    derivation: str

    @property
    def pan_last4(self) -> str:
        """The last four digits of the PAN."""
        return self.pan[-4:]


@runtime_checkable
class CryptogramProvider(Protocol):
    """Key operations by reference (emv-crypto.md §10).

    Implementations raise :class:`~capsim.errors.ValidationError` for a malformed or unknown
    reference and may raise anything on an internal failure; the service treats every
    provider exception as a non-accept (V25).
    """

    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        """Reference a card whose keys derive from the issuer keys ``issuer_key_id``."""
        ...

    def ac_function(
        self,
        key_ref: str,
        *,
        cvn: int,
        method: str | None = None,
        tree: TreeParams | None = None,
    ) -> AcFunction:
        """A fast AC function for one card (the verifier's hot path)."""
        ...

    def generate_ac(
        self,
        key_ref: str,
        *,
        cvn: int,
        cdol1_data: bytes,
        aip: bytes,
        atc: bytes,
        iad: bytes,
        un: bytes,
        method: str | None = None,
        tree: TreeParams | None = None,
    ) -> bytes:
        """One application cryptogram (emv-crypto.md §5)."""
        ...

    def build_pin_change(
        self,
        key_ref: str,
        *,
        cvn: int,
        new_pin: str | None,
        current_pin: str | None = None,
        atc: bytes,
        arqc: bytes,
    ) -> bytes:
        """PIN UNBLOCK / PIN CHANGE issuer-script command for this card (emv-crypto.md §7)."""
        ...

    def dummy_key_ref(self) -> str:
        """A reference to a throw-away key, for the equal-cost dummy evaluation (V30)."""
        ...

    def audit_seal_key_id(self) -> str | None:
        """The id of the key that seals audit records, or ``None`` (records stay unsealed)."""
        ...

    def audit_seal(self, message: bytes) -> bytes:
        """HMAC-SHA-256 of ``message`` under the audit seal key (32 bytes); an HSM computes it
        with a token key. :class:`~capsim.errors.ConfigError` when there is no seal key."""
        ...


class _IssuerKeys:
    __slots__ = ("ac", "smc", "smi", "token")

    def __init__(self, ac: SecretKey, smi: SecretKey | None, smc: SecretKey | None) -> None:
        self.ac = ac
        self.smi = smi
        self.smc = smc
        self.token = SecretKey(hmac.new(ac.reveal(), b"capsim pan token v1", hashlib.sha256).digest())

    def __repr__(self) -> str:
        return "<issuer keys>"


class _CardMks:
    __slots__ = ("ac", "smc", "smi")

    def __init__(self, ac: SecretKey, smi: SecretKey | None, smc: SecretKey | None) -> None:
        self.ac = ac
        self.smi = smi
        self.smc = smc

    def __repr__(self) -> str:
        return "<card keys>"


def _key16(name: str, value: object) -> SecretKey:
    if not isinstance(value, bytes | bytearray) or len(value) != 16:
        raise ValidationError(f"{name}: expected 16 bytes (a double-length TDES key)")
    return SecretKey(bytes(value))


def _key_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not value.isascii()
        or not all(c.isalnum() or c in "-_." for c in value)
    ):
        raise ValidationError("key_id: expected 1..64 ASCII letters, digits, '-', '_' or '.'")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _AcSource(Protocol):
    def ac_function(
        self, key_ref: str, *, cvn: int, method: str | None = None, tree: TreeParams | None = None
    ) -> AcFunction: ...


class OneAcFromFunction:
    """``generate_ac`` for a provider that has ``ac_function``: one AC is the card's AC function
    applied once (the same for every provider, so written once)."""

    def generate_ac(
        self: _AcSource,
        key_ref: str,
        *,
        cvn: int,
        cdol1_data: bytes,
        aip: bytes,
        atc: bytes,
        iad: bytes,
        un: bytes,
        method: str | None = None,
        tree: TreeParams | None = None,
    ) -> bytes:
        """See :meth:`CryptogramProvider.generate_ac`."""
        return self.ac_function(key_ref, cvn=cvn, method=method, tree=tree)(cdol1_data, aip, atc, iad, un)


class SoftwareProvider(OneAcFromFunction):
    """A :class:`CryptogramProvider` holding keys in process memory (see the module docstring).

    Parameters
    ----------
    cache_size:
        Number of cards whose derived-key calculators are cached (0 disables the cache).
    """

    def __init__(self, *, cache_size: int = 1024) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValidationError("cache_size: expected a non-negative integer")
        self._issuers: dict[str, _IssuerKeys] = {}
        self._cards: dict[str, _CardMks] = {}
        self._cache: OrderedDict[tuple[str, int, str | None, TreeParams | None], AcFunction] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._dummy = SecretKey(secrets.token_bytes(16))
        self._seal_key: SecretKey | None = None
        self._seal_key_id: str | None = None
        self._seal_inner = hashlib.sha256()
        self._seal_outer = hashlib.sha256()

    def __repr__(self) -> str:
        return f"<SoftwareProvider issuers={sorted(self._issuers)} cards={len(self._cards)}>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("SoftwareProvider objects cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("SoftwareProvider objects cannot be pickled")

    # -- key registration ----------------------------------------------------------------------
    def add_issuer_keys(
        self,
        key_id: str,
        *,
        imk_ac: bytes,
        imk_smi: bytes | None = None,
        imk_smc: bytes | None = None,
    ) -> None:
        """Register issuer master keys under ``key_id`` (16-byte TDES keys)."""
        kid = _key_id(key_id)
        keys = _IssuerKeys(
            _key16("imk_ac", imk_ac),
            None if imk_smi is None else _key16("imk_smi", imk_smi),
            None if imk_smc is None else _key16("imk_smc", imk_smc),
        )
        with self._lock:
            if kid in self._issuers:
                raise ConfigError(f"key_id: issuer keys {kid!r} are already registered")
            self._issuers[kid] = keys

    def add_card_keys(
        self,
        key_id: str,
        *,
        mk_ac: bytes,
        mk_smi: bytes | None = None,
        mk_smc: bytes | None = None,
        pan: str,
    ) -> CardKeys:
        """Register one card's ICC master keys (no issuer key) and return its references."""
        kid = _key_id(key_id)
        p = _digits("pan", pan, 12, 19)
        mks = _CardMks(
            _key16("mk_ac", mk_ac),
            None if mk_smi is None else _key16("mk_smi", mk_smi),
            None if mk_smc is None else _key16("mk_smc", mk_smc),
        )
        token_key = hmac.new(mks.ac.reveal(), b"capsim pan token v1", hashlib.sha256).digest()
        with self._lock:
            if kid in self._cards:
                raise ConfigError(f"key_id: card keys {kid!r} are already registered")
            self._cards[kid] = mks
        token = hmac.new(token_key, p.encode("ascii"), hashlib.sha256).hexdigest()[:32]
        return CardKeys(key_ref=f"{_CARD_REF}:{kid}", pan_token=token, pan_last4=p[-4:])

    @property
    def issuer_key_ids(self) -> tuple[str, ...]:
        """Registered issuer key ids."""
        return tuple(sorted(self._issuers))

    def issuer_kcv(self, key_id: str) -> str:
        """The KCV (3 bytes, hex) of an issuer MK-AC: safe to display."""
        return key_check_value(self._issuer(key_id).ac.reveal()).hex().upper()

    def _issuer(self, key_id: str) -> _IssuerKeys:
        keys = self._issuers.get(key_id)
        if keys is None:
            raise ValidationError(f"issuer_key_id: no issuer keys registered as {key_id!r}")
        return keys

    # -- references ------------------------------------------------------------------------------
    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        """See :meth:`CryptogramProvider.register_card`; the PAN goes only into an AES-SIV token."""
        keys = self._issuer(_key_id(issuer_key_id))
        p = _digits("pan", pan, 12, 19)
        s = _digits("psn", psn, 2, 2)
        try:
            option = KeyDerivation(derivation)
        except ValueError:
            raise ValidationError("derivation: expected 'auto', 'A' or 'B'") from None
        sealed = _des._siv_seal(
            keys.token.reveal(), f"{issuer_key_id}:{option.value}".encode("ascii"), f"{p}|{s}".encode("ascii")
        )
        token = hmac.new(keys.token.reveal(), p.encode("ascii"), hashlib.sha256).hexdigest()[:32]
        ref = f"{_REF_VERSION}:{issuer_key_id}:{option.value}:{_b64(sealed)}"
        return CardKeys(key_ref=ref, pan_token=token, pan_last4=p[-4:])

    def _resolve(self, key_ref: str) -> tuple[SecretKey, SecretKey | None, SecretKey | None]:
        """ICC MK-AC, MK-SMI, MK-SMC for a reference."""
        if not isinstance(key_ref, str):
            raise ValidationError("key_ref: expected a string")
        if key_ref == _DUMMY_REF:
            return self._dummy, self._dummy, self._dummy
        parts = key_ref.split(":")
        if len(parts) == 2 and parts[0] == _CARD_REF:
            mks = self._cards.get(parts[1])
            if mks is None:
                raise ValidationError(f"key_ref: no card keys registered as {parts[1]!r}")
            return mks.ac, mks.smi, mks.smc
        if len(parts) != 4 or parts[0] != _REF_VERSION:
            raise ValidationError("key_ref: not a reference of this provider")
        _, kid, opt, blob = parts
        keys = self._issuer(kid)
        try:
            raw = _unb64(blob)
            plain = _des._siv_open(keys.token.reveal(), f"{kid}:{opt}".encode("ascii"), raw).decode("ascii")
            pan, psn = plain.split("|")
            option = KeyDerivation(opt)
        except (ValueError, KeyError, UnicodeDecodeError):
            raise ValidationError("key_ref: corrupt or foreign reference") from None

        def derive(imk: SecretKey | None) -> SecretKey | None:
            if imk is None:
                return None
            return SecretKey(derive_icc_mk(imk.reveal(), pan, psn, option=option))

        ac = derive(keys.ac)
        assert ac is not None
        return ac, derive(keys.smi), derive(keys.smc)

    def card_identity(self, key_ref: str) -> CardIdentity:
        """The issuer key id, PAN, PSN and derivation option sealed in a card reference made by
        :meth:`register_card`, to register the same card with another provider (a key
        migration: ``capsim verifier keys migrate``, :mod:`capsim.verifier.pkcs11migrate`).

        The issuer keys must be registered (the reference is opened with a key derived from
        their MK-AC). References of :meth:`add_card_keys` and the dummy reference seal no PAN:
        :class:`~capsim.errors.ValidationError`, as for a corrupt or foreign reference. The
        PAN returned must never be logged, printed or stored.

        >>> p = SoftwareProvider()
        >>> p.add_issuer_keys("bank", imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
        >>> ref = p.register_card(issuer_key_id="bank", pan="5413339000001513", psn="01").key_ref
        >>> p.card_identity(ref)
        CardIdentity(issuer_key_id='bank', psn='01', derivation='auto')
        >>> p.card_identity(ref).pan_last4
        '1513'
        """
        parts = key_ref.split(":") if isinstance(key_ref, str) else []
        if len(parts) != 4 or parts[0] != _REF_VERSION:
            raise ValidationError("key_ref: not a card reference of this provider's issuer keys")
        _, kid, opt, blob = parts
        keys = self._issuer(kid)
        try:
            plain = _des._siv_open(keys.token.reveal(), f"{kid}:{opt}".encode("ascii"), _unb64(blob))
            pan, psn = plain.decode("ascii").split("|")
            option = KeyDerivation(opt)
        except (ValueError, KeyError, UnicodeDecodeError):
            raise ValidationError("key_ref: corrupt or foreign reference") from None
        return CardIdentity(issuer_key_id=kid, pan=pan, psn=psn, derivation=option.value)

    # -- cryptograms -----------------------------------------------------------------------------
    def ac_function(
        self,
        key_ref: str,
        *,
        cvn: int,
        method: str | None = None,
        tree: TreeParams | None = None,
    ) -> AcFunction:
        """See :meth:`CryptogramProvider.ac_function`."""
        cache_key = (key_ref, int(cvn), method, tree)
        if self._cache_size:
            with self._lock:
                fn = self._cache.get(cache_key)
                if fn is not None:
                    self._cache.move_to_end(cache_key)
                    return fn
        mk_ac, _, _ = self._resolve(key_ref)
        try:
            skm = None if method is None else SessionKeyMethod(method)
            calc = AcCalculator(CVN(cvn), mk_ac.reveal(), method=skm, tree=tree)
        except ValueError as exc:
            raise ValidationError(f"cvn/method: {exc}") from None
        fn = calc.generate
        if self._cache_size:
            with self._lock:
                self._cache[cache_key] = fn
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return fn

    def generate_arpc(
        self,
        key_ref: str,
        *,
        cvn: int,
        arqc: bytes,
        atc: bytes,
        un: bytes | None = None,
        arc: bytes = b"\x00\x00",
        csu: bytes = bytes(4),
        proprietary: bytes = b"",
    ) -> bytes:
        """The ARPC of a CVN for this card (:func:`capsim.crypto.generate_arpc`)."""
        mk_ac, _, _ = self._resolve(key_ref)
        return generate_arpc(
            cvn, mk_ac.reveal(), arqc=arqc, atc=atc, un=un, arc=arc, csu=csu, proprietary=proprietary
        )

    def build_pin_change(
        self,
        key_ref: str,
        *,
        cvn: int,
        new_pin: str | None,
        current_pin: str | None = None,
        atc: bytes,
        arqc: bytes,
    ) -> bytes:
        """See :meth:`CryptogramProvider.build_pin_change` (uses :func:`capsim.sm.build_pin_change`)."""
        from capsim.sm import build_pin_change

        mk_ac, mk_smi, mk_smc = self._resolve(key_ref)
        if mk_smi is None or mk_smc is None:
            raise ConfigError("key_ref: this card has no MK-SMI/MK-SMC registered (needed for scripts)")
        return build_pin_change(
            cvn,
            new_pin=new_pin,
            current_pin=current_pin,
            mk_ac=mk_ac.reveal(),
            mk_smi=mk_smi.reveal(),
            mk_smc=mk_smc.reveal(),
            atc=atc,
            arqc=arqc,
        )

    def dummy_key_ref(self) -> str:
        """See :meth:`CryptogramProvider.dummy_key_ref`."""
        return _DUMMY_REF

    # -- audit seal ------------------------------------------------------------------------------
    def set_audit_seal_key(self, key_id: str, key: bytes) -> None:
        """Hand over the audit seal key (32 random bytes, e.g. from the CLI keyring file).

        >>> p = SoftwareProvider()
        >>> p.audit_seal_key_id() is None
        True
        >>> p.set_audit_seal_key("aud-1", bytes(32))
        >>> p.audit_seal_key_id(), p.audit_seal(b"record") == hmac.digest(bytes(32), b"record", "sha256")
        ('aud-1', True)
        """
        kid = _key_id(key_id)
        if not isinstance(key, bytes | bytearray) or len(key) != 32:
            raise ValidationError("audit seal key: expected 32 bytes")
        self._seal_key = SecretKey(bytes(key))
        self._seal_key_id = kid
        # HMAC's keyed inner and outer SHA-256 states, computed once (RFC 2104): each seal then
        # costs two state copies and two short hashes
        block = bytes(key).ljust(64, b"\x00")
        self._seal_inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._seal_outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def audit_seal_key_id(self) -> str | None:
        """See :meth:`CryptogramProvider.audit_seal_key_id`."""
        return self._seal_key_id

    def audit_seal(self, message: bytes) -> bytes:
        """See :meth:`CryptogramProvider.audit_seal`."""
        if self._seal_key is None:
            raise ConfigError("audit seal: this provider holds no audit seal key")
        inner = self._seal_inner.copy()
        inner.update(message)
        outer = self._seal_outer.copy()
        outer.update(inner.digest())
        return outer.digest()
