"""The PKCS#11 token under :class:`~capsim.verifier.pkcs11.Pkcs11Provider`: module, errors,
sessions, object templates and the verifier's own secrets.

Needs the ``pkcs11`` extra (python-pkcs11). The provider facade is
:mod:`capsim.verifier.pkcs11`; key derivation and MAC construction are in
:mod:`capsim.verifier.pkcs11mac`, issuer scripts in :mod:`capsim.verifier.pkcs11scripts`.

Theory of operation
-------------------
1. **One lock.** python-pkcs11 initialises a module with ``C_Initialize(NULL)``, which tells it
   that no two threads call it at once (PKCS#11 §5.4): every token call of these modules holds
   :data:`TOKEN_LOCK` (:func:`serialised`). Python work, the store and the database round trips
   still run in parallel.
2. **Errors.** Every token failure becomes a :class:`~capsim.errors.TokenError` whose
   ``reason`` says which (:func:`token_error`: ``pin``, ``locked``, ``token``, ``key``,
   ``mechanism``, ``module``, ``failed``); no message carries a PIN, key or PAN.
3. **Objects.** An issuer master key is a ``CKK_DES2`` object that is ``SENSITIVE``, not
   ``EXTRACTABLE``, not ``MODIFIABLE``, not ``COPYABLE`` and may only ``DERIVE``
   (:func:`imk_template`). The verifier's own secrets are token objects too: the audit seal
   key (``CKK_GENERIC_SECRET``, ``CKM_SHA256_HMAC``), the PAN-token key (the same) and the
   reference key (AES-256, ``CKM_AES_GCM``), under the labels ``<prefix>/audit-seal``,
   ``<prefix>/pan-token`` and ``<prefix>/ref`` (:func:`ensure_verifier_secrets`).
4. **Sessions.** :class:`TokenSessions` keeps one PKCS#11 session per thread (opened on first
   use; the first one logs in), the objects it found by label, and the thread's bounded LRU of
   card master-key objects (:class:`CardObjects`), destroyed on eviction and on
   :meth:`TokenSessions.close`.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11x

from capsim.errors import CapsimError, ConfigError, TokenError, ValidationError

__all__ = [
    "KEY_NAMES",
    "TOKEN_LOCK",
    "CardObjects",
    "TokenKey",
    "TokenSessions",
    "check_key_id",
    "decrypt",
    "encrypt",
    "ensure_verifier_secrets",
    "hmac_sha256",
    "imk_template",
    "open_token",
    "seal_key_template",
    "serialised",
    "token_call",
    "token_error",
]

#: The issuer keys of one label, as ``<label>/<name>`` objects.
KEY_NAMES: Final = ("imk-ac", "imk-smi", "imk-smc")

_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Every token call of this process holds this lock (rule 1).
TOKEN_LOCK: Final = threading.RLock()


def serialised(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """``func`` run under :data:`TOKEN_LOCK` (rule 1)."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with TOKEN_LOCK:
            return func(*args, **kwargs)

    return wrapper


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
def token_call(what: str) -> Iterator[None]:
    """Turn a python-pkcs11 failure inside the block into :func:`token_error`'s error."""
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


def check_key_id(value: object) -> str:
    """``value`` if it is a key id (1..64 ASCII letters, digits, ``-``, ``_``, ``.``)."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not value.isascii()
        or not all(c.isalnum() or c in "-_." for c in value)
    ):
        raise ValidationError("key_id: expected 1..64 ASCII letters, digits, '-', '_' or '.'")
    return value


# ------------------------------------------------------------------------------------------------
# Object templates and single token operations


def imk_template(label: str, *, store: bool) -> dict[Attribute, Any]:
    """Attributes of an issuer master key object (rule 3): derive only, sensitive, never
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
    """Attributes of an audit seal key imported from a keyring file (rule 3): HMAC only,
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


def encrypt(key: pkcs11.SecretKey, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
    """``C_Encrypt`` (python-pkcs11 adds ``encrypt`` to keys whose ``CKA_ENCRYPT`` is true)."""
    return bytes(cast("Any", key).encrypt(data, mechanism=mechanism, mechanism_param=param))


def decrypt(key: pkcs11.SecretKey, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
    """``C_Decrypt``."""
    return bytes(cast("Any", key).decrypt(data, mechanism=mechanism, mechanism_param=param))


def hmac_sha256(key: pkcs11.SecretKey, data: bytes) -> bytes:
    """HMAC-SHA-256 by the token (``CKM_SHA256_HMAC``)."""
    return bytes(cast("Any", key).sign(data, mechanism=Mechanism.SHA256_HMAC))


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


@serialised
def ensure_verifier_secrets(session: pkcs11.Session, prefix: str, *, audit_seal: bool = True) -> list[str]:
    """Generate in the token the verifier secrets that are missing (rule 3); their labels.

    ``audit_seal=False`` leaves the audit seal key out (a verifier that keeps it in its
    keyring file, or whose records stay unsealed). The audit seal key's id (``aud-`` + 16 hex
    digits of an HMAC under the key itself) is recorded in its ``CKA_ID``.
    """
    made: list[str] = []
    common = {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.PRIVATE: True}
    with token_call("creating the verifier's secrets"):
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
                mac = hmac_sha256(key, b"capsim audit seal key id")
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
# Sessions, one per thread (rule 4)


class CardObjects:
    """A card's MK-AC object (ENCRYPT and DERIVE), and MK-AC_L ‖ MK-AC_L once needed."""

    __slots__ = ("imk", "ll", "mk", "y")

    def __init__(self, imk: pkcs11.SecretKey, y: bytes, mk: pkcs11.SecretKey) -> None:
        self.imk = imk
        self.y = y
        self.mk = mk
        self.ll: pkcs11.SecretKey | None = None


class ThreadState:
    """One thread's session, its objects by label and its card master-key cache."""

    __slots__ = ("cards", "dummy", "objects", "session")

    def __init__(self, session: pkcs11.Session) -> None:
        self.session = session
        self.objects: dict[str, pkcs11.SecretKey] = {}
        self.cards: OrderedDict[str, CardObjects] = OrderedDict()
        self.dummy: pkcs11.SecretKey | None = None


def destroy(*objs: pkcs11.SecretKey | None) -> None:
    """Destroy session objects, ignoring those already gone."""
    for o in objs:
        if o is not None:
            with suppress(p11x.PKCS11Error):
                o.destroy()


class TokenSessions:
    """The sessions of one logged-in user on one token, one per thread (rule 4).

    The constructor logs in (a second provider of the process reuses the login); ``close``
    destroys every cached object and closes every session (the token logs out).
    """

    @serialised
    def __init__(self, token: pkcs11.Token, *, pin: str) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._local = threading.local()
        self._threads: list[ThreadState] = []
        self._closed = False
        with token_call("log in"):
            try:
                session = token.open(rw=True, user_pin=pin)
            except p11x.UserAlreadyLoggedIn:  # another provider of this process logged in
                session = token.open(rw=True)
        self._adopt(session)

    @property
    def token_label(self) -> str:
        """The token's label."""
        return str(self._token.label)

    def _adopt(self, session: pkcs11.Session) -> ThreadState:
        t = ThreadState(session)
        self._local.state = t
        with self._lock:
            self._threads.append(t)
        return t

    def thread(self) -> ThreadState:
        """This thread's state, its session opened on first use."""
        t: ThreadState | None = getattr(self._local, "state", None)
        if t is None:
            if self._closed:
                raise ConfigError("the PKCS#11 provider is closed")
            with TOKEN_LOCK, token_call("open a session"):
                t = self._adopt(self._token.open(rw=True))
        return t

    @serialised
    def close(self) -> None:
        """Destroy every cached object and close every session (the token logs out)."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._closed = True
        for t in reversed(threads):
            for card in t.cards.values():
                destroy(card.mk, card.ll)
            destroy(t.dummy)
            t.cards.clear()
            with suppress(p11x.PKCS11Error):
                t.session.close()

    def find(self, t: ThreadState, label: str, *, required: bool = True) -> pkcs11.SecretKey | None:
        """The one secret key labelled ``label`` (cached per thread); ``None`` when absent and
        not ``required``, else :class:`~capsim.errors.TokenError` (reason ``"key"``)."""
        obj = t.objects.get(label)
        if obj is None:
            found = list(
                t.session.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.SECRET_KEY})
            )
            if len(found) != 1:
                if not required and not found:
                    return None
                raise TokenError(
                    f"no single secret key labelled {label!r} in token {self.token_label!r}"
                    + (" (run 'capsim verifier init --pkcs11 …' or 'keys import')" if not found else ""),
                    "key",
                )
            one = found[0]
            assert isinstance(one, pkcs11.SecretKey)
            obj = t.objects[label] = one
        return obj

    def key(self, t: ThreadState, label: str) -> pkcs11.SecretKey:
        """:meth:`find` of a required key."""
        obj = self.find(t, label)
        assert obj is not None
        return obj
