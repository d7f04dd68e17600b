"""Issuer keys in a PKCS#11 token: :class:`Pkcs11Provider` computes cryptograms without a key.

A :class:`~capsim.verifier.provider.CryptogramProvider` over any PKCS#11 module (SoftHSM2 in
the tests, a bank's HSM in production; see ``docs/hsm.md``). Needs the ``pkcs11`` extra
(python-pkcs11).

Theory of operation
-------------------
1. **Objects.** An issuer master key is a ``CKK_DES2`` object that is ``SENSITIVE``, not
   ``EXTRACTABLE``, not ``MODIFIABLE``, not ``COPYABLE`` and may only ``DERIVE``
   (:func:`imk_template`). The verifier's own secrets are token objects too: the audit seal
   key (``CKK_GENERIC_SECRET``, ``CKM_SHA256_HMAC``), the PAN-token key (the same) and the
   reference key (AES-256, ``CKM_AES_GCM``), under the labels ``<prefix>/audit-seal``,
   ``<prefix>/pan-token`` and ``<prefix>/ref`` (:func:`ensure_verifier_secrets`).
2. **Derivation.** ``C_DeriveKey(CKM_DES3_ECB_ENCRYPT_DATA, D)`` encrypts 16 bytes of data
   under a key and makes the result a new ``CKK_DES2`` key (the token sets DES parity). The
   ICC master key (EMV Option A/B) is derived with ``D = Y ‖ ~Y``; a common session key with
   ``D = F1 ‖ F2`` (R = ATC ‖ 00×6, ATC ‖ 00 00 ‖ UN, or the ARQC for secure messaging).
3. **MAC algorithm 3 without a MAC mechanism.** With the same data ``F1 ‖ F1`` (or ``Y ‖ Y``)
   the token derives ``K_L ‖ K_L``, a two-key TDES key with equal halves, i.e. single DES
   under ``K_L``. ``CKM_DES3_CBC`` under it over blocks 1..n−1 (IV 0) gives the chaining
   value H(n−1); ``CKM_DES3_CBC`` of block n under the full key with IV H(n−1) is the retail
   MAC. H(n−1) is the one intermediate value that reaches host memory.
4. **References.** :meth:`Pkcs11Provider.register_card` seals ``PAN|PSN`` with AES-GCM under
   the reference key (the issuer key id and the derivation option are authenticated data):
   ``p11:<key id>:<option>:<nonce ‖ ciphertext ‖ tag>``. The PAN token is
   HMAC-SHA-256 under the PAN-token key. Neither key leaves the token.
5. **Sessions and cache.** One PKCS#11 session per thread (opened on first use; the first
   one logs in). Each thread keeps a bounded LRU of card master-key objects (``cache_size``),
   destroyed on eviction; every session key derived for one computation is destroyed before
   the call returns. python-pkcs11 initialises the module with ``C_Initialize(NULL)``, which
   promises it no concurrent calls: token calls hold one process-wide lock (Python work,
   the store and the database round trips still run in parallel).
6. **What SoftHSM cannot do** (no ``CKM_XOR_BASE_AND_DATA``): the Visa CVN 10/18
   secure-messaging keys, the EMV2000 tree session key and the VIS PIN block (it XORs MK-AC
   bytes into the block). They raise :class:`~capsim.errors.TokenUnsupported` naming what
   was needed. Every token failure becomes a :class:`~capsim.errors.TokenError` whose
   ``reason`` says which (:func:`token_error`); no message carries a PIN, key or PAN.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, NoReturn, ParamSpec, TypeVar, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11x
from pkcs11.constants import DEFAULT
from pkcs11.mechanisms import GCMParams

from capsim._validate import digits as _digits
from capsim.crypto import (
    CVN,
    KeyDerivation,
    SessionKeyMethod,
    TreeParams,
    _option_b_y,
    ac_data,
    cvn_spec,
)
from capsim.errors import CapsimError, ConfigError, TokenError, TokenUnsupported, ValidationError
from capsim.sm import SCRIPT_CLA, default_pin_block_format, pin_block_iso2
from capsim.verifier.provider import FINGERPRINT_DATA, AcFunction, CardKeys

__all__ = [
    "KEY_NAMES",
    "Pkcs11Provider",
    "TokenKey",
    "ensure_verifier_secrets",
    "imk_template",
    "open_token",
    "seal_key_template",
    "token_error",
    "token_fingerprint",
]

#: The issuer keys of one label, as ``<label>/<name>`` objects.
KEY_NAMES: Final = ("imk-ac", "imk-smi", "imk-smc")
_REF: Final = "p11"
_DUMMY_REF: Final = "p11:dummy"
_DUMMY_Y: Final = bytes.fromhex("0000000000000000")
_ZERO8: Final = bytes(8)
_FF8: Final = b"\xff" * 8


_P = ParamSpec("_P")
_R = TypeVar("_R")
#: python-pkcs11 initialises a module with ``C_Initialize(NULL)``, which tells it that no two
#: threads call it at once (PKCS#11 §5.4): every token call of this module holds this lock.
_TOKEN_LOCK: Final = threading.RLock()


def _serialised(func: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _TOKEN_LOCK:
            return func(*args, **kwargs)

    return wrapper


class _DerivationParam(ctypes.Structure):
    """``CK_KEY_DERIVATION_STRING_DATA {pData, ulLen}``, packed for the raw mechanism parameter."""

    _fields_ = (("pData", ctypes.c_void_p), ("ulLen", ctypes.c_ulong))


# ------------------------------------------------------------------------------------------------
# Errors and the token


def token_error(exc: BaseException, what: str) -> TokenError:
    """The :class:`~capsim.errors.TokenError` for a python-pkcs11 failure during ``what``.

    >>> token_error(p11x.PinLocked(), "log in").reason
    'locked'
    >>> str(token_error(p11x.PinIncorrect(), "log in"))
    'log in: the token refused the PIN'
    """
    if isinstance(exc, TokenError):
        return exc
    table: tuple[tuple[type[BaseException], str, str], ...] = (
        (p11x.PinLocked, "locked", "the token's user PIN is locked; the security officer must reset it"),
        ((p11x.PinIncorrect), "pin", "the token refused the PIN"),
        (p11x.PinInvalid, "pin", "the token refused the PIN"),
        (p11x.PinLenRange, "pin", "the token refused the PIN"),
        (p11x.PinExpired, "pin", "the token's PIN has expired"),
        (p11x.UserPinNotInitialized, "pin", "the token has no user PIN yet"),
        (p11x.UserNotLoggedIn, "pin", "not logged in to the token"),
        (p11x.NoSuchToken, "token", "no such token"),
        (p11x.TokenNotPresent, "token", "the token is not present"),
        (p11x.NoSuchKey, "key", "no such key in the token"),
        (p11x.MechanismInvalid, "mechanism", "the token lacks a mechanism this needs"),
        (p11x.MechanismParamInvalid, "mechanism", "the token refused a mechanism parameter"),
    )
    for kind, reason, text in table:
        if isinstance(exc, kind):
            return TokenError(f"{what}: {text}", reason)
    return TokenError(f"{what}: the token failed ({type(exc).__name__})", "failed")


@contextmanager
def _token_call(what: str) -> Iterator[None]:
    try:
        yield
    except CapsimError:
        raise
    except (p11x.PKCS11Error, RuntimeError, OSError) as exc:
        raise token_error(exc, what) from None


def open_token(module: str, token_label: str) -> pkcs11.Token:
    """The token labelled ``token_label`` of the PKCS#11 library ``module`` (a ``.so`` path).

    A missing or unloadable module is a :class:`~capsim.errors.TokenError` with reason
    ``"module"``; a missing token, reason ``"token"``.
    """
    try:
        lib = pkcs11.lib(module)
    except (p11x.PKCS11Error, RuntimeError, OSError) as exc:
        raise TokenError(
            f"--pkcs11: cannot load the PKCS#11 module {module} ({type(exc).__name__})", "module"
        ) from None
    try:
        return lib.get_token(token_label=token_label)
    except (p11x.NoSuchToken, p11x.MultipleTokensReturned):
        raise TokenError(f"--token: no single token labelled {token_label!r} in {module}", "token") from None
    except (p11x.PKCS11Error, RuntimeError) as exc:
        raise token_error(exc, "--token") from None


def imk_template(label: str, *, store: bool) -> dict[Attribute, Any]:
    """Attributes of an issuer master key object (rule 1): derive only, sensitive, never
    extractable, not modifiable, not copyable."""
    return {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.DES2,
        Attribute.LABEL: label,
        Attribute.TOKEN: store,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
        Attribute.DERIVE: True,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.SIGN: False,
        Attribute.VERIFY: False,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
    }


def seal_key_template(label: str, key: bytes, key_id: str, *, store: bool) -> dict[Attribute, Any]:
    """Attributes of an audit seal key imported from a keyring file (rule 1): HMAC only,
    sensitive, never extractable; its id in ``CKA_ID``."""
    return {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.LABEL: label,
        Attribute.ID: key_id.encode("ascii"),
        Attribute.VALUE: key,
        Attribute.TOKEN: store,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.SIGN: True,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.DERIVE: False,
    }


def _derive(key: pkcs11.SecretKey, data: bytes, *, can_derive: bool = False) -> pkcs11.SecretKey:
    """``C_DeriveKey(CKM_DES3_ECB_ENCRYPT_DATA, data)`` → a sensitive session ``CKK_DES2`` key."""
    buf = ctypes.create_string_buffer(data, len(data))
    param = bytes(_DerivationParam(ctypes.cast(buf, ctypes.c_void_p), len(data)))
    caps = MechanismFlag.ENCRYPT | (MechanismFlag.DERIVE if can_derive else 0)
    out = cast("Any", key).derive_key(
        KeyType.DES2,
        128,
        capabilities=MechanismFlag(caps),
        mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
        mechanism_param=param,
        template={
            Attribute.VALUE_LEN: DEFAULT,  # DES keys have a fixed length: SoftHSM refuses one
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.TOKEN: False,
        },
    )
    del buf  # the parameter pointed into it until C_DeriveKey returned
    assert isinstance(out, pkcs11.SecretKey)
    return out


def _encrypt(key: pkcs11.SecretKey, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
    """``C_Encrypt`` (python-pkcs11 adds ``encrypt`` to keys whose ``CKA_ENCRYPT`` is true)."""
    return bytes(cast("Any", key).encrypt(data, mechanism=mechanism, mechanism_param=param))


def _decrypt(key: pkcs11.SecretKey, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
    return bytes(cast("Any", key).decrypt(data, mechanism=mechanism, mechanism_param=param))


def _hmac(key: pkcs11.SecretKey, data: bytes) -> bytes:
    """HMAC-SHA-256 by the token (``CKM_SHA256_HMAC``)."""
    return bytes(cast("Any", key).sign(data, mechanism=Mechanism.SHA256_HMAC))


def _retail_mac(k_ll: pkcs11.SecretKey, k: pkcs11.SecretKey, padded: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 from two token keys (rule 3): ``k_ll`` = K_L ‖ K_L."""
    h = _ZERO8
    if len(padded) > 8:
        h = _encrypt(k_ll, padded[:-8], Mechanism.DES3_CBC, _ZERO8)[-8:]
    return _encrypt(k, padded[-8:], Mechanism.DES3_CBC, h)


def _pad2(data: bytes) -> bytes:
    return data + b"\x80" + bytes(-(len(data) + 1) % 8)


def _pad(data: bytes, padding: int) -> bytes:
    if padding == 2:
        return _pad2(data)
    return data + bytes(-len(data) % 8) if data else _ZERO8


def _f(r: bytes) -> tuple[bytes, bytes]:
    """F1, F2 of the common session key rule (R with byte 2 set to F0 / 0F)."""
    return r[:2] + b"\xf0" + r[3:], r[:2] + b"\x0f" + r[3:]


def _not(b: bytes) -> bytes:
    return bytes(x ^ 0xFF for x in b)


def _y(pan: str, psn: str, option: KeyDerivation) -> bytes:
    if option is not KeyDerivation.OPTION_A and len(pan) > 16:  # B equals A up to 16 digits
        return _option_b_y(pan, psn)
    return bytes.fromhex((pan + psn)[-16:].rjust(16, "0"))


@_serialised
def token_fingerprint(key: pkcs11.SecretKey) -> str:
    """The fingerprint of a derive-only DES2 key, computed in the token: the child derived
    with :data:`~capsim.verifier.provider.FINGERPRINT_DATA` encrypts 00×8 ‖ FF×8 (TDES-ECB),
    in hex; equals :func:`capsim.verifier.provider.derived_fingerprint` of the key bytes."""
    child = _derive(key, FINGERPRINT_DATA)
    try:
        return _encrypt(child, _ZERO8 + _FF8, Mechanism.DES3_ECB).hex()
    finally:
        child.destroy()


# ------------------------------------------------------------------------------------------------
# The verifier's own secrets


@dataclass(frozen=True, kw_only=True)
class TokenKey:
    """What ``keys list`` shows about one token object (no key material)."""

    label: str
    key_type: str
    key_id: str
    sensitive: bool
    extractable: bool
    derive_only: bool
    fingerprint: str | None

    @property
    def warning(self) -> str | None:
        """Why the object is unsafe for a key custodian, else ``None``."""
        if self.extractable:
            return "EXTRACTABLE: the key can leave the token"
        if not self.sensitive:
            return "not SENSITIVE: the key value can be read"
        return None


@_serialised
def ensure_verifier_secrets(session: pkcs11.Session, prefix: str, *, audit_seal: bool = True) -> list[str]:
    """Generate in the token the verifier secrets that are missing (rule 1); their labels.

    ``audit_seal=False`` leaves the audit seal key out (a verifier that keeps it in its
    keyring file, or whose records stay unsealed). The audit seal key's id (``aud-`` + 16 hex
    digits of an HMAC under the key itself) is
    recorded in its ``CKA_ID``.
    """
    made: list[str] = []
    common = {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.PRIVATE: True}
    with _token_call("creating the verifier's secrets"):
        for name in ("audit-seal", "pan-token") if audit_seal else ("pan-token",):
            label = f"{prefix}/{name}"
            if list(session.get_objects({Attribute.LABEL: label})):
                continue
            key = session.generate_key(
                KeyType.GENERIC_SECRET,
                256,
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN,
                mechanism=Mechanism.GENERIC_SECRET_KEY_GEN,
                template=common,
            )
            if name == "audit-seal":
                mac = _hmac(key, b"capsim audit seal key id")
                key[Attribute.ID] = ("aud-" + mac.hex()[:16]).encode("ascii")
            made.append(label)
        label = f"{prefix}/ref"
        if not list(session.get_objects({Attribute.LABEL: label})):
            session.generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template=common,
            )
            made.append(label)
    return made


# ------------------------------------------------------------------------------------------------
# The provider


class _Card:
    """A card's MK-AC object (ENCRYPT and DERIVE), and MK-AC_L ‖ MK-AC_L once needed."""

    __slots__ = ("imk", "ll", "mk", "y")

    def __init__(self, imk: pkcs11.SecretKey, y: bytes, mk: pkcs11.SecretKey) -> None:
        self.imk = imk
        self.y = y
        self.mk = mk
        self.ll: pkcs11.SecretKey | None = None


class _Thread:
    """One thread's session, its objects by label and its card master-key cache."""

    __slots__ = ("cards", "dummy", "objects", "session")

    def __init__(self, session: pkcs11.Session) -> None:
        self.session = session
        self.objects: dict[str, pkcs11.SecretKey] = {}
        self.cards: OrderedDict[str, _Card] = OrderedDict()
        self.dummy: pkcs11.SecretKey | None = None


@dataclass(frozen=True)
class _Issuer:
    ac: str
    smi: str | None
    smc: str | None


def _key_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not value.isascii()
        or not all(c.isalnum() or c in "-_." for c in value)
    ):
        raise ValidationError("key_id: expected 1..64 ASCII letters, digits, '-', '_' or '.'")
    return value


class Pkcs11Provider:
    """A :class:`~capsim.verifier.provider.CryptogramProvider` whose keys stay in a token.

    Parameters
    ----------
    token:
        The token (:func:`open_token`).
    pin:
        The user PIN (the command line reads it from an environment variable or a file).
    secrets_prefix:
        Label prefix of the verifier's own secrets (rule 1); they must exist
        (:func:`ensure_verifier_secrets`), except the audit seal key, which is optional.
    cache_size:
        Card master-key objects kept per thread (0: derive them for every computation).
    """

    @_serialised
    def __init__(
        self, token: pkcs11.Token, *, pin: str, secrets_prefix: str = "capsim", cache_size: int = 256
    ) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValidationError("cache_size: expected a non-negative integer")
        self._token = token
        self._cache_size = cache_size
        self._prefix = secrets_prefix
        self._issuers: dict[str, _Issuer] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._threads: list[_Thread] = []
        self._closed = False
        with _token_call("log in"):
            try:
                session = token.open(rw=True, user_pin=pin)
            except p11x.UserAlreadyLoggedIn:  # another provider of this process logged in
                session = token.open(rw=True)
        self._adopt(session)
        t = self._thread()
        self._seal_key_id: str | None = None
        self._seal_label = f"{secrets_prefix}/audit-seal"
        try:
            with _token_call("the verifier's secrets"):
                seal = self._find(t, self._seal_label, required=False)
                if seal is not None:
                    self._seal_key_id = bytes(seal[Attribute.ID]).decode("ascii", "replace") or None
                self._find(t, f"{secrets_prefix}/pan-token")
                self._find(t, f"{secrets_prefix}/ref")
        except BaseException:
            self.close()  # the session logged in: log out again
            raise

    def __repr__(self) -> str:
        return f"<Pkcs11Provider token={self._token.label!r} issuers={sorted(self._issuers)}>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Pkcs11Provider objects cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("Pkcs11Provider objects cannot be pickled")

    # -- sessions ----------------------------------------------------------------------------------
    def _adopt(self, session: pkcs11.Session) -> _Thread:
        t = _Thread(session)
        self._local.state = t
        with self._lock:
            self._threads.append(t)
        return t

    def _thread(self) -> _Thread:
        t: _Thread | None = getattr(self._local, "state", None)
        if t is None:
            if self._closed:
                raise ConfigError("the PKCS#11 provider is closed")
            with _TOKEN_LOCK, _token_call("open a session"):
                t = self._adopt(self._token.open(rw=True))
        return t

    @_serialised
    def close(self) -> None:
        """Destroy every cached object and close every session (the token logs out)."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._closed = True
        for t in reversed(threads):
            for card in t.cards.values():
                self._destroy(card.mk, card.ll)
            self._destroy(t.dummy)
            t.cards.clear()
            with suppress(p11x.PKCS11Error):
                t.session.close()

    @staticmethod
    def _destroy(*objs: pkcs11.SecretKey | None) -> None:
        for o in objs:
            if o is not None:
                with suppress(p11x.PKCS11Error):
                    o.destroy()

    def _find(self, t: _Thread, label: str, *, required: bool = True) -> pkcs11.SecretKey | None:
        obj = t.objects.get(label)
        if obj is None:
            found = list(
                t.session.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.SECRET_KEY})
            )
            if len(found) != 1:
                if not required and not found:
                    return None
                raise TokenError(
                    f"no single secret key labelled {label!r} in token {self._token.label!r}"
                    + (" (run 'capsim verifier init --pkcs11 …' or 'keys import')" if not found else ""),
                    "key",
                )
            one = found[0]
            assert isinstance(one, pkcs11.SecretKey)
            obj = t.objects[label] = one
        return obj

    def _key(self, t: _Thread, label: str) -> pkcs11.SecretKey:
        obj = self._find(t, label)
        assert obj is not None
        return obj

    # -- issuer keys -----------------------------------------------------------------------------
    @_serialised
    def add_token_keys(self, key_id: str, *, label: str) -> None:
        """Use the issuer keys ``<label>/imk-ac`` (required), ``/imk-smi`` and ``/imk-smc``
        (for scripts) of the token under ``key_id``; refuses an extractable or non-sensitive
        object (:class:`~capsim.errors.TokenError`, reason ``"attributes"``)."""
        kid = _key_id(key_id)
        t = self._thread()
        names: list[str | None] = []
        with _token_call(f"issuer keys {label!r}"):
            for n, name in enumerate(KEY_NAMES):
                full = f"{label}/{name}"
                obj = self._find(t, full, required=n == 0)
                if obj is None:
                    names.append(None)
                    continue
                attrs = obj.get_attributes([Attribute.KEY_TYPE, Attribute.SENSITIVE, Attribute.EXTRACTABLE])
                if attrs[Attribute.KEY_TYPE] != KeyType.DES2:
                    raise TokenError(f"{full}: not a double-length TDES key", "attributes")
                if attrs[Attribute.EXTRACTABLE] or not attrs[Attribute.SENSITIVE]:
                    raise TokenError(
                        f"{full}: an issuer key must be sensitive and not extractable", "attributes"
                    )
                names.append(full)
        assert names[0] is not None
        with self._lock:
            if kid in self._issuers:
                raise ConfigError(f"key_id: issuer keys {kid!r} are already registered")
            self._issuers[kid] = _Issuer(names[0], names[1], names[2])

    @_serialised
    def add_issuer_keys(
        self,
        key_id: str,
        *,
        imk_ac: bytes,
        imk_smi: bytes | None = None,
        imk_smc: bytes | None = None,
    ) -> None:
        """Put issuer keys into the token as *session* objects (gone when the provider closes)
        and use them under ``key_id``: the same call as
        :meth:`capsim.verifier.provider.SoftwareProvider.add_issuer_keys`, for tests and the
        demo. Keys that must outlive the process are imported with ``capsim verifier keys``."""
        _key_id(key_id)
        label = f"session-{secrets.token_hex(6)}"
        t = self._thread()
        for name, value in zip(KEY_NAMES, (imk_ac, imk_smi, imk_smc), strict=True):
            if value is None:
                continue
            if not isinstance(value, bytes | bytearray) or len(value) != 16:
                raise ValidationError(f"{name.replace('-', '_')}: expected 16 bytes (a TDES key)")
            template = imk_template(f"{label}/{name}", store=False)
            template[Attribute.VALUE] = bytes(value)
            with _token_call("import a key"):
                t.session.create_object(template)
        self.add_token_keys(key_id, label=label)

    @property
    def issuer_key_ids(self) -> tuple[str, ...]:
        """Registered issuer key ids."""
        return tuple(sorted(self._issuers))

    def _issuer(self, key_id: str) -> _Issuer:
        keys = self._issuers.get(key_id)
        if keys is None:
            raise ValidationError(f"issuer_key_id: no issuer keys registered as {key_id!r}")
        return keys

    # -- references ------------------------------------------------------------------------------
    @_serialised
    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.register_card` (rule 4)."""
        kid = _key_id(issuer_key_id)
        self._issuer(kid)
        p = _digits("pan", pan, 12, 19)
        s = _digits("psn", psn, 2, 2)
        try:
            option = KeyDerivation(derivation)
        except ValueError:
            raise ValidationError("derivation: expected 'auto', 'A' or 'B'") from None
        t = self._thread()
        nonce = secrets.token_bytes(12)
        with _token_call("register a card"):
            sealed = _encrypt(
                self._key(t, f"{self._prefix}/ref"),
                f"{p}|{s}".encode("ascii"),
                Mechanism.AES_GCM,
                GCMParams(nonce, f"{_REF}:{kid}:{option.value}".encode("ascii"), 128),
            )
            token = _hmac(self._key(t, f"{self._prefix}/pan-token"), p.encode("ascii"))
        blob = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        ref = f"{_REF}:{kid}:{option.value}:{blob}"
        return CardKeys(key_ref=ref, pan_token=token.hex()[:32], pan_last4=p[-4:])

    def _open_ref(self, t: _Thread, key_ref: str) -> tuple[_Issuer, bytes]:
        """The issuer keys and the derivation data Y of a reference."""
        if not isinstance(key_ref, str):
            raise ValidationError("key_ref: expected a string")
        parts = key_ref.split(":")
        if len(parts) != 4 or parts[0] != _REF:
            raise ValidationError("key_ref: not a reference of this provider")
        _, kid, opt, blob = parts
        issuer = self._issuer(kid)
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            option = KeyDerivation(opt)
            plain = _decrypt(
                self._key(t, f"{self._prefix}/ref"),
                raw[12:],
                Mechanism.AES_GCM,
                GCMParams(raw[:12], f"{_REF}:{kid}:{opt}".encode("ascii"), 128),
            )
            pan, psn = plain.decode("ascii").split("|")
        except (ValueError, UnicodeDecodeError, p11x.PKCS11Error):
            raise ValidationError("key_ref: corrupt or foreign reference") from None
        return issuer, _y(pan, psn, option)

    def _imk_and_y(self, t: _Thread, key_ref: str) -> tuple[pkcs11.SecretKey, bytes]:
        if key_ref == _DUMMY_REF:
            if t.dummy is None:
                with _token_call("the dummy key"):
                    t.dummy = t.session.generate_key(
                        KeyType.DES2,
                        capabilities=MechanismFlag.DERIVE,
                        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
                    )
            return t.dummy, _DUMMY_Y
        issuer, y = self._open_ref(t, key_ref)
        return self._key(t, issuer.ac), y

    @contextmanager
    def _card(self, key_ref: str, *, need_ll: bool) -> Iterator[_Card]:
        """The card's master-key objects, from the thread's cache or derived now (rule 5)."""
        t = self._thread()
        card = t.cards.get(key_ref)
        cached = card is not None
        if card is not None:
            t.cards.move_to_end(key_ref)
        else:
            imk, y = self._imk_and_y(t, key_ref)
            with _token_call("derive the card master key"):
                card = _Card(imk, y, _derive(imk, y + _not(y), can_derive=True))
        try:
            if need_ll and card.ll is None:
                with _token_call("derive the card master key"):
                    card.ll = _derive(card.imk, card.y + card.y)
            yield card
        finally:
            if not cached:
                if self._cache_size:
                    t.cards[key_ref] = card
                    while len(t.cards) > self._cache_size:
                        _, old = t.cards.popitem(last=False)
                        self._destroy(old.mk, old.ll)
                else:
                    self._destroy(card.mk, card.ll)

    def _check_ref(self, key_ref: str) -> None:
        if key_ref == _DUMMY_REF:
            return
        parts = key_ref.split(":") if isinstance(key_ref, str) else []
        if len(parts) != 4 or parts[0] != _REF:
            raise ValidationError("key_ref: not a reference of this provider")
        self._issuer(parts[1])

    @staticmethod
    def _session_key(mk: pkcs11.SecretKey, r: bytes) -> tuple[pkcs11.SecretKey, pkcs11.SecretKey]:
        """(SK, SK_L ‖ SK_L) of the common session key rule with ``r`` (rules 2, 3)."""
        f1, f2 = _f(r)
        sk = _derive(mk, f1 + f2)
        try:
            return sk, _derive(mk, f1 + f1)
        except BaseException:
            Pkcs11Provider._destroy(sk)
            raise

    # -- cryptograms -----------------------------------------------------------------------------
    def ac_function(
        self,
        key_ref: str,
        *,
        cvn: int,
        method: str | None = None,
        tree: TreeParams | None = None,
    ) -> AcFunction:
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.ac_function`: every AC is
        computed by the token (a cached card costs two derivations and two encryptions)."""
        c = _cvn(cvn)
        spec = cvn_spec(c)
        m = _method(spec.session_key if method is None else method)
        self._check_ref(key_ref)
        padding = spec.padding

        @_serialised
        def generate(cdol1_data: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes | None = None) -> bytes:
            data = _pad(ac_data(c, cdol1_data=cdol1_data, aip=aip, atc=atc, iad=iad), padding)
            if un is None:
                un = bytes(cdol1_data[-4:]) if len(cdol1_data) >= 4 else bytes(4)
            elif len(un) != 4:
                raise ValidationError("un: expected 4 bytes")
            with self._card(key_ref, need_ll=m is SessionKeyMethod.NONE) as card, _token_call("a cryptogram"):
                if m is SessionKeyMethod.NONE:
                    assert card.ll is not None
                    return _retail_mac(card.ll, card.mk, data)
                a = bytes(atc)
                r = a + bytes(6) if m is SessionKeyMethod.EMV_CSK else a + b"\x00\x00" + bytes(un)
                sk, sk_ll = self._session_key(card.mk, r)
                try:
                    return _retail_mac(sk_ll, sk, data)
                finally:
                    self._destroy(sk, sk_ll)

        return generate

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
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.generate_ac`."""
        return self.ac_function(key_ref, cvn=cvn, method=method, tree=tree)(cdol1_data, aip, atc, iad, un)

    @_serialised
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
        """The ARPC of a CVN computed by the token; same result as :func:`capsim.crypto.generate_arpc`."""
        c = _cvn(cvn)
        spec = cvn_spec(c)
        arqc, atc = _fixed("arqc", arqc, 8), _fixed("atc", atc, 2)
        if spec.arpc_method == 1:
            arc = _fixed("arc", arc, 2)
        else:
            csu = _fixed("csu", csu, 4)
            if not isinstance(proprietary, bytes) or len(proprietary) > 8:
                raise ValidationError("proprietary: expected 0 to 8 bytes")
        if spec.arpc_key == "sk":
            m = _method(spec.session_key)
            if un is None and m is SessionKeyMethod.MASTERCARD_SKD:
                raise ValidationError("un: required for the ARPC of this CVN (Mastercard SKD session key)")
        need_ll = spec.arpc_key == "mk" and spec.arpc_method == 2
        with self._card(key_ref, need_ll=need_ll) as card, _token_call("an ARPC"):
            made: list[pkcs11.SecretKey] = []
            try:
                if spec.arpc_key == "mk":
                    key, key_ll = card.mk, card.ll
                else:
                    u = _fixed("un", un, 4) if un is not None else bytes(4)
                    r = atc + bytes(6) if m is SessionKeyMethod.EMV_CSK else atc + b"\x00\x00" + u
                    key, key_ll = made[:] = self._session_key(card.mk, r)
                if spec.arpc_method == 1:
                    x = bytes(a ^ b for a, b in zip(arqc, arc + bytes(6), strict=True))
                    return _encrypt(key, x, Mechanism.DES3_ECB)
                assert key_ll is not None
                return _retail_mac(key_ll, key, _pad2(arqc + csu + proprietary))[:4]
            finally:
                self._destroy(*made)

    @_serialised
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
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.build_pin_change`: the token
        derives SK-SMI/SK-SMC, enciphers the PIN block and MACs the command. Visa CVN 10/18
        scripts and the VIS PIN block raise :class:`~capsim.errors.TokenUnsupported` (rule 6)."""
        c = _cvn(cvn)
        spec = cvn_spec(c)
        a, r = _fixed("atc", atc, 2), _fixed("arqc", arqc, 8)
        if spec.sm_keys == "visa":
            raise TokenUnsupported(
                f"Visa CVN {c.value} issuer scripts need key XOR (the Visa secure-messaging session keys), "
                "which this token cannot do",
                "key XOR",
            )
        block = b""
        p2 = 0x00
        if new_pin is None:
            if current_pin is not None:
                raise ValidationError("current_pin: only meaningful with new_pin (PIN change)")
        else:
            if default_pin_block_format(c, with_current_pin=current_pin is not None) == "vis":
                raise TokenUnsupported(
                    f"the VIS PIN block of CVN {c.value} needs MK-AC bytes XORed in clear, "
                    "which this token cannot do",
                    "key XOR",
                )
            if current_pin is not None:
                raise ValidationError("current_pin: the ISO-2 block format cannot carry the current PIN")
            block = pin_block_iso2(new_pin)
            p2 = 0x02
        t = self._thread()
        issuer, y = self._open_ref(t, key_ref)
        if issuer.smi is None or issuer.smc is None:
            raise ConfigError("key_ref: this card has no MK-SMI/MK-SMC registered (needed for scripts)")
        f1, f2 = _f(r)
        made: list[pkcs11.SecretKey] = []
        with _token_call("an issuer script"):
            try:
                mk_smi = _derive(self._key(t, issuer.smi), y + _not(y), can_derive=True)
                made.append(mk_smi)
                sk_smi = _derive(mk_smi, f1 + f2)
                made.append(sk_smi)
                sk_smi_ll = _derive(mk_smi, f1 + f1)
                made.append(sk_smi_ll)
                data = b""
                if block:
                    mk_smc = _derive(self._key(t, issuer.smc), y + _not(y), can_derive=True)
                    made.append(mk_smc)
                    sk_smc = _derive(mk_smc, f1 + f2)
                    made.append(sk_smc)
                    data = _encipher(spec.pin_encipherment.value, sk_smc, block)
                header = bytes([SCRIPT_CLA, 0x24, 0x00, p2, len(data) + 8])
                m = header + (a + r if spec.script_mac_covers_txn else b"") + data
                return header + data + _retail_mac(sk_smi_ll, sk_smi, _pad2(m))
            finally:
                self._destroy(*made)

    def dummy_key_ref(self) -> str:
        """A reference to a random issuer key of this process (the same token work as a card, V30)."""
        return _DUMMY_REF

    # -- fingerprints and the audit seal -----------------------------------------------------------
    @_serialised
    def issuer_fingerprints(self, key_id: str) -> dict[str, str]:
        """:func:`token_fingerprint` of each issuer key registered as ``key_id``, by key name."""
        issuer = self._issuer(key_id)
        t = self._thread()
        out: dict[str, str] = {}
        with _token_call("a key fingerprint"):
            for name, label in zip(KEY_NAMES, (issuer.ac, issuer.smi, issuer.smc), strict=True):
                if label is not None:
                    out[name] = token_fingerprint(self._key(t, label))
        return out

    def audit_seal_key_id(self) -> str | None:
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.audit_seal_key_id` (the
        ``CKA_ID`` of ``<prefix>/audit-seal``)."""
        return self._seal_key_id

    @_serialised
    def set_audit_seal_key(self, key_id: str, key: bytes) -> None:
        """Use a 32-byte audit seal key handed over in clear (a keyring file's), put into the
        token as a session object: the same call as
        :meth:`capsim.verifier.provider.SoftwareProvider.set_audit_seal_key`. ``capsim verifier
        keys migrate`` stores it in the token for good."""
        kid = _key_id(key_id)
        if not isinstance(key, bytes | bytearray) or len(key) != 32:
            raise ValidationError("audit seal key: expected 32 bytes")
        label = f"session-{secrets.token_hex(6)}/audit-seal"
        t = self._thread()
        with _token_call("import the audit seal key"):
            t.session.create_object(seal_key_template(label, bytes(key), kid, store=False))
        self._seal_label = label
        self._seal_key_id = kid

    @_serialised
    def audit_seal(self, message: bytes) -> bytes:
        """HMAC-SHA-256 of ``message`` computed by the token under ``<prefix>/audit-seal``."""
        if self._seal_key_id is None:
            raise ConfigError("audit seal: the token holds no audit seal key")
        t = self._thread()
        with _token_call("an audit seal"):
            return _hmac(self._key(t, self._seal_label), bytes(message))


def _cvn(cvn: object) -> CVN:
    if isinstance(cvn, bool):
        raise ValidationError(f"cvn: expected a CVN, got {cvn!r}")
    try:
        return CVN(cvn)  # type: ignore[arg-type]
    except ValueError:
        raise ValidationError(f"cvn: unsupported cryptogram version {cvn!r}") from None


def _method(method: object) -> SessionKeyMethod:
    try:
        m = SessionKeyMethod(str(method))
    except ValueError:
        raise ValidationError(f"method: unknown session-key method {method!r}") from None
    if m is SessionKeyMethod.EMV2000_TREE:
        raise TokenUnsupported(
            "the EMV2000 tree session key needs key XOR, which this token cannot do", "key XOR"
        )
    return m


def _fixed(name: str, value: object, n: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != n:
        raise ValidationError(f"{name}: expected {n} bytes")
    return bytes(value)


def _encipher(variant: str, sk_smc: pkcs11.SecretKey, block: bytes) -> bytes:
    """The PIN block enciphered under SK-SMC, as :func:`capsim.sm.encipher_pin_block`."""
    if variant == "visa-ecb":
        return _encrypt(sk_smc, _pad2(bytes([len(block)]) + block), Mechanism.DES3_ECB)
    if variant == "mastercard-cbc" and len(block) % 8 == 0:
        return _encrypt(sk_smc, block, Mechanism.DES3_CBC, _ZERO8)
    return _encrypt(sk_smc, _pad2(block), Mechanism.DES3_CBC, _ZERO8)
