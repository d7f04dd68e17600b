"""Issuer keys in a PKCS#11 token: :class:`Pkcs11Provider` computes cryptograms without a key.

A :class:`~capsim.verifier.provider.CryptogramProvider` over any PKCS#11 module (SoftHSM2 in
the tests, a bank's HSM in production; see ``docs/hsm.md``). Needs the ``pkcs11`` extra
(python-pkcs11). This module is the provider's facade; the work is split by responsibility:

- :mod:`capsim.verifier.pkcs11token`: the module and token, typed errors, the one token lock,
  object templates, the verifier's own secrets and the per-thread sessions;
- :mod:`capsim.verifier.pkcs11mac`: key derivation and MAC algorithm 3 inside the token;
- :mod:`capsim.verifier.pkcs11scripts`: issuer scripts (PIN UNBLOCK / PIN CHANGE);
- :mod:`capsim.verifier.pkcs11migrate`: moving a software-keyed verifier's credentials onto
  the token's keys (``capsim verifier keys migrate``).

Theory of operation
-------------------
1. **Objects** (:mod:`~capsim.verifier.pkcs11token` rule 3): issuer master keys are
   derive-only, sensitive, non-extractable ``CKK_DES2`` objects ``<label>/imk-ac|imk-smi|imk-smc``;
   the verifier's secrets are ``<prefix>/audit-seal``, ``<prefix>/pan-token``, ``<prefix>/ref``.
2. **Cryptograms** by derivation (:mod:`~capsim.verifier.pkcs11mac` rules 1–2): the card
   master key, the session keys and ``K_L ‖ K_L`` are derived in the token; the MAC is
   ``CKM_DES3_CBC`` twice. The last CBC chaining value is the one intermediate value in host
   memory.
3. **References.** :meth:`Pkcs11Provider.register_card` seals ``PAN|PSN`` with AES-GCM under
   the reference key (the issuer key id and the derivation option are authenticated data):
   ``p11:<key id>:<option>:<nonce ‖ ciphertext ‖ tag>``. The PAN token is
   HMAC-SHA-256 under the PAN-token key. Neither key leaves the token.
4. **Sessions and cache.** One PKCS#11 session per thread; each thread keeps a bounded LRU
   of card master-key objects (``cache_size``), destroyed on eviction; every session key
   derived for one computation is destroyed before the call returns. Token calls hold one
   process-wide lock (:data:`~capsim.verifier.pkcs11token.TOKEN_LOCK`).
5. **What SoftHSM cannot do** (no ``CKM_XOR_BASE_AND_DATA``): the Visa CVN 10/18
   secure-messaging keys, the EMV2000 tree session key and the VIS PIN block. They raise
   :class:`~capsim.errors.TokenUnsupported` naming what was needed. Every token failure
   becomes a :class:`~capsim.errors.TokenError` whose ``reason`` says which
   (:func:`token_error`); no message carries a PIN, key or PAN.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, NoReturn

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11 import exceptions as p11x
from pkcs11.mechanisms import GCMParams

from capsim._validate import digits as _digits
from capsim.crypto import KeyDerivation, SessionKeyMethod, TreeParams, ac_data, ac_key_un, cvn_spec
from capsim.errors import ConfigError, TokenError, ValidationError
from capsim.verifier.pkcs11mac import (
    complement,
    derivation_y,
    derive,
    pad,
    pad2,
    retail_mac,
    session_keys,
    token_fingerprint,
)
from capsim.verifier.pkcs11scripts import (
    check_cvn,
    check_method,
    fixed_bytes,
    pin_change_script,
    script_plan,
)
from capsim.verifier.pkcs11token import (
    KEY_NAMES,
    CardObjects,
    ThreadState,
    TokenKey,
    TokenSessions,
    check_key_id,
    decrypt,
    destroy,
    encrypt,
    ensure_verifier_secrets,
    hmac_sha256,
    imk_template,
    open_token,
    seal_key_template,
    serialised,
    token_call,
    token_error,
)
from capsim.verifier.provider import AcFunction, CardKeys, OneAcFromFunction

__all__ = [
    "KEY_NAMES",
    "REF_PREFIX",
    "Pkcs11Provider",
    "TokenKey",
    "ensure_verifier_secrets",
    "imk_template",
    "open_token",
    "seal_key_template",
    "token_error",
    "token_fingerprint",
]

#: The first field of this provider's card references (``p11:<key id>:…``).
REF_PREFIX: Final = "p11"
_DUMMY_REF: Final = "p11:dummy"
_DUMMY_Y: Final = bytes.fromhex("0000000000000000")


@dataclass(frozen=True)
class _Issuer:
    ac: str
    smi: str | None
    smc: str | None


class Pkcs11Provider(OneAcFromFunction):
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

    @serialised
    def __init__(
        self, token: pkcs11.Token, *, pin: str, secrets_prefix: str = "capsim", cache_size: int = 256
    ) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValidationError("cache_size: expected a non-negative integer")
        self._cache_size = cache_size
        self._prefix = secrets_prefix
        self._issuers: dict[str, _Issuer] = {}
        self._lock = threading.Lock()
        self._sessions = TokenSessions(token, pin=pin)
        t = self._thread()
        self._seal_key_id: str | None = None
        self._seal_label = f"{secrets_prefix}/audit-seal"
        try:
            with token_call("the verifier's secrets"):
                seal = self._sessions.find(t, self._seal_label, required=False)
                if seal is not None:
                    self._seal_key_id = bytes(seal[Attribute.ID]).decode("ascii", "replace") or None
                self._key(t, f"{secrets_prefix}/pan-token")
                self._key(t, f"{secrets_prefix}/ref")
        except BaseException:
            self.close()  # the session logged in: log out again
            raise

    def __repr__(self) -> str:
        return f"<Pkcs11Provider token={self._sessions.token_label!r} issuers={sorted(self._issuers)}>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Pkcs11Provider objects cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("Pkcs11Provider objects cannot be pickled")

    # -- sessions ----------------------------------------------------------------------------------
    def _thread(self) -> ThreadState:
        return self._sessions.thread()

    def close(self) -> None:
        """Destroy every cached object and close every session (the token logs out)."""
        self._sessions.close()

    def _key(self, t: ThreadState, label: str) -> pkcs11.SecretKey:
        return self._sessions.key(t, label)

    # -- issuer keys -----------------------------------------------------------------------------
    @serialised
    def add_token_keys(self, key_id: str, *, label: str) -> None:
        """Use the issuer keys ``<label>/imk-ac`` (required), ``/imk-smi`` and ``/imk-smc``
        (for scripts) of the token under ``key_id``; refuses an extractable or non-sensitive
        object (:class:`~capsim.errors.TokenError`, reason ``"attributes"``)."""
        kid = check_key_id(key_id)
        t = self._thread()
        names: list[str | None] = []
        with token_call(f"issuer keys {label!r}"):
            for n, name in enumerate(KEY_NAMES):
                full = f"{label}/{name}"
                obj = self._sessions.find(t, full, required=n == 0)
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

    @serialised
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
        check_key_id(key_id)
        label = f"session-{secrets.token_hex(6)}"
        t = self._thread()
        for name, value in zip(KEY_NAMES, (imk_ac, imk_smi, imk_smc), strict=True):
            if value is None:
                continue
            if not isinstance(value, bytes | bytearray) or len(value) != 16:
                raise ValidationError(f"{name.replace('-', '_')}: expected 16 bytes (a TDES key)")
            template = imk_template(f"{label}/{name}", store=False)
            template[Attribute.VALUE] = bytes(value)
            with token_call("import a key"):
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
    @serialised
    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.register_card` (rule 3)."""
        kid = check_key_id(issuer_key_id)
        self._issuer(kid)
        p = _digits("pan", pan, 12, 19)
        s = _digits("psn", psn, 2, 2)
        try:
            option = KeyDerivation(derivation)
        except ValueError:
            raise ValidationError("derivation: expected 'auto', 'A' or 'B'") from None
        t = self._thread()
        nonce = secrets.token_bytes(12)
        with token_call("register a card"):
            sealed = encrypt(
                self._key(t, f"{self._prefix}/ref"),
                f"{p}|{s}".encode("ascii"),
                Mechanism.AES_GCM,
                GCMParams(nonce, f"{REF_PREFIX}:{kid}:{option.value}".encode("ascii"), 128),
            )
            token = hmac_sha256(self._key(t, f"{self._prefix}/pan-token"), p.encode("ascii"))
        blob = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        ref = f"{REF_PREFIX}:{kid}:{option.value}:{blob}"
        return CardKeys(key_ref=ref, pan_token=token.hex()[:32], pan_last4=p[-4:])

    def _open_ref(self, t: ThreadState, key_ref: str) -> tuple[_Issuer, bytes]:
        """The issuer keys and the derivation data Y of a reference."""
        if not isinstance(key_ref, str):
            raise ValidationError("key_ref: expected a string")
        parts = key_ref.split(":")
        if len(parts) != 4 or parts[0] != REF_PREFIX:
            raise ValidationError("key_ref: not a reference of this provider")
        _, kid, opt, blob = parts
        issuer = self._issuer(kid)
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            option = KeyDerivation(opt)
            plain = decrypt(
                self._key(t, f"{self._prefix}/ref"),
                raw[12:],
                Mechanism.AES_GCM,
                GCMParams(raw[:12], f"{REF_PREFIX}:{kid}:{opt}".encode("ascii"), 128),
            )
            pan, psn = plain.decode("ascii").split("|")
        except (ValueError, UnicodeDecodeError, p11x.PKCS11Error):
            raise ValidationError("key_ref: corrupt or foreign reference") from None
        return issuer, derivation_y(pan, psn, option)

    def _imk_and_y(self, t: ThreadState, key_ref: str) -> tuple[pkcs11.SecretKey, bytes]:
        if key_ref == _DUMMY_REF:
            if t.dummy is None:
                with token_call("the dummy key"):
                    t.dummy = t.session.generate_key(
                        KeyType.DES2,
                        capabilities=MechanismFlag.DERIVE,
                        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
                    )
            return t.dummy, _DUMMY_Y
        issuer, y = self._open_ref(t, key_ref)
        return self._key(t, issuer.ac), y

    @contextmanager
    def _card(self, key_ref: str, *, need_ll: bool) -> Iterator[CardObjects]:
        """The card's master-key objects, from the thread's cache or derived now (rule 4)."""
        t = self._thread()
        card = t.cards.get(key_ref)
        cached = card is not None
        if card is not None:
            t.cards.move_to_end(key_ref)
        else:
            imk, y = self._imk_and_y(t, key_ref)
            with token_call("derive the card master key"):
                card = CardObjects(imk, y, derive(imk, y + complement(y), can_derive=True))
        try:
            if need_ll and card.ll is None:
                with token_call("derive the card master key"):
                    card.ll = derive(card.imk, card.y + card.y)
            yield card
        finally:
            if not cached:
                if self._cache_size:
                    t.cards[key_ref] = card
                    while len(t.cards) > self._cache_size:
                        _, old = t.cards.popitem(last=False)
                        destroy(old.mk, old.ll)
                else:
                    destroy(card.mk, card.ll)

    def _check_ref(self, key_ref: str) -> None:
        if key_ref == _DUMMY_REF:
            return
        parts = key_ref.split(":") if isinstance(key_ref, str) else []
        if len(parts) != 4 or parts[0] != REF_PREFIX:
            raise ValidationError("key_ref: not a reference of this provider")
        self._issuer(parts[1])

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
        c = check_cvn(cvn)
        spec = cvn_spec(c)
        m = check_method(spec.session_key if method is None else method)
        self._check_ref(key_ref)
        padding = spec.padding

        @serialised
        def generate(cdol1_data: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes | None = None) -> bytes:
            data = pad(ac_data(c, cdol1_data=cdol1_data, aip=aip, atc=atc, iad=iad), padding)
            u = ac_key_un(m, bytes(cdol1_data), un)  # the software provider's rule
            with self._card(key_ref, need_ll=m is SessionKeyMethod.NONE) as card, token_call("a cryptogram"):
                if m is SessionKeyMethod.NONE:
                    assert card.ll is not None
                    return retail_mac(card.ll, card.mk, data)
                a = bytes(atc)
                r = a + bytes(6) if m is SessionKeyMethod.EMV_CSK else a + b"\x00\x00" + u
                sk, sk_ll = session_keys(card.mk, r)
                try:
                    return retail_mac(sk_ll, sk, data)
                finally:
                    destroy(sk, sk_ll)

        return generate

    @serialised
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
        c = check_cvn(cvn)
        spec = cvn_spec(c)
        arqc, atc = fixed_bytes("arqc", arqc, 8), fixed_bytes("atc", atc, 2)
        if spec.arpc_method == 1:
            arc = fixed_bytes("arc", arc, 2)
        else:
            csu = fixed_bytes("csu", csu, 4)
            if not isinstance(proprietary, bytes) or len(proprietary) > 8:
                raise ValidationError("proprietary: expected 0 to 8 bytes")
        if spec.arpc_key == "sk":
            m = check_method(spec.session_key)
            if un is None and m is SessionKeyMethod.MASTERCARD_SKD:
                raise ValidationError("un: required for the ARPC of this CVN (Mastercard SKD session key)")
        need_ll = spec.arpc_key == "mk" and spec.arpc_method == 2
        with self._card(key_ref, need_ll=need_ll) as card, token_call("an ARPC"):
            made: list[pkcs11.SecretKey] = []
            try:
                if spec.arpc_key == "mk":
                    key, key_ll = card.mk, card.ll
                else:
                    u = fixed_bytes("un", un, 4) if un is not None else bytes(4)
                    r = atc + bytes(6) if m is SessionKeyMethod.EMV_CSK else atc + b"\x00\x00" + u
                    key, key_ll = made[:] = session_keys(card.mk, r)
                if spec.arpc_method == 1:
                    x = bytes(a ^ b for a, b in zip(arqc, arc + bytes(6), strict=True))
                    return encrypt(key, x, Mechanism.DES3_ECB)
                assert key_ll is not None
                return retail_mac(key_ll, key, pad2(arqc + csu + proprietary))[:4]
            finally:
                destroy(*made)

    @serialised
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
        derives SK-SMI/SK-SMC, enciphers the PIN block and MACs the command
        (:mod:`capsim.verifier.pkcs11scripts`). Visa CVN 10/18 scripts and the VIS PIN block
        raise :class:`~capsim.errors.TokenUnsupported` (rule 5)."""
        check_cvn(cvn)
        a, r = fixed_bytes("atc", atc, 2), fixed_bytes("arqc", arqc, 8)
        plan = script_plan(cvn, new_pin=new_pin, current_pin=current_pin)
        t = self._thread()
        issuer, y = self._open_ref(t, key_ref)
        if issuer.smi is None or issuer.smc is None:
            raise ConfigError("key_ref: this card has no MK-SMI/MK-SMC registered (needed for scripts)")
        with token_call("an issuer script"):
            imk_smi, imk_smc = self._key(t, issuer.smi), self._key(t, issuer.smc)
        return pin_change_script(plan, imk_smi=imk_smi, imk_smc=imk_smc, y=y, atc=a, arqc=r)

    def dummy_key_ref(self) -> str:
        """A reference to a random issuer key of this process (the same token work as a card, V30)."""
        return _DUMMY_REF

    # -- fingerprints and the audit seal -----------------------------------------------------------
    @serialised
    def issuer_fingerprints(self, key_id: str) -> dict[str, str]:
        """:func:`token_fingerprint` of each issuer key registered as ``key_id``, by key name."""
        issuer = self._issuer(key_id)
        t = self._thread()
        out: dict[str, str] = {}
        with token_call("a key fingerprint"):
            for name, label in zip(KEY_NAMES, (issuer.ac, issuer.smi, issuer.smc), strict=True):
                if label is not None:
                    out[name] = token_fingerprint(self._key(t, label))
        return out

    def audit_seal_key_id(self) -> str | None:
        """See :meth:`~capsim.verifier.provider.CryptogramProvider.audit_seal_key_id` (the
        ``CKA_ID`` of ``<prefix>/audit-seal``)."""
        return self._seal_key_id

    @serialised
    def set_audit_seal_key(self, key_id: str, key: bytes) -> None:
        """Use a 32-byte audit seal key handed over in clear (a keyring file's), put into the
        token as a session object: the same call as
        :meth:`capsim.verifier.provider.SoftwareProvider.set_audit_seal_key`. The keyring file
        stays the key's home: every session hands it over again."""
        kid = check_key_id(key_id)
        if not isinstance(key, bytes | bytearray) or len(key) != 32:
            raise ValidationError("audit seal key: expected 32 bytes")
        label = f"session-{secrets.token_hex(6)}/audit-seal"
        t = self._thread()
        with token_call("import the audit seal key"):
            t.session.create_object(seal_key_template(label, bytes(key), kid, store=False))
        self._seal_label = label
        self._seal_key_id = kid

    @serialised
    def audit_seal(self, message: bytes) -> bytes:
        """HMAC-SHA-256 of ``message`` computed by the token under ``<prefix>/audit-seal``."""
        if self._seal_key_id is None:
            raise ConfigError("audit seal: the token holds no audit seal key")
        t = self._thread()
        with token_call("an audit seal"):
            return hmac_sha256(self._key(t, self._seal_label), bytes(message))
