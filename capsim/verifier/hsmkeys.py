"""The key ceremony for a PKCS#11 token, and what a verifier database records about the token.

Used by ``capsim verifier keys …`` and ``capsim verifier init --pkcs11`` (docs/hsm.md).

Theory of operation
-------------------
1. **The token configuration** (:class:`TokenConfig`): module path, token label, the label
   prefix of the verifier's own secrets and where the PIN comes from (an environment variable
   or a file, never a command-line value). A verifier database run on a token records it,
   with its issuer keys (key id, label, KCV, fingerprints; never a key), in the setting
   :data:`HSM_SETTING`.
2. **Import.** An issuer-keys file, XOR components or a key wrapped under an AES transport key
   become token objects ``<label>/imk-ac|imk-smi|imk-smc`` with
   :func:`capsim.verifier.pkcs11.imk_template` (derive only, sensitive, never extractable).
   The IMK-AC object's ``CKA_ID`` holds its key id ``iss-<KCV>``, computed before import (or,
   for an unwrapped key, by a short-lived encrypt-only copy unwrapped first and destroyed).
   An existing label is never overwritten.
3. **Components** (:func:`combine_components`): two or three 16-byte components, each shown by
   its KCV, XORed together with odd parity; the combined key's KCV is confirmed before import.
4. **Fingerprints.** A derive-only key cannot encrypt zeros for a KCV: its fingerprint is
   :func:`capsim.verifier.provider.derived_fingerprint`, computed by the token
   (:func:`capsim.verifier.pkcs11.token_fingerprint`) and recorded at ``init``; every later
   session compares them (constant time) and refuses a token whose keys changed
   (:class:`~capsim.errors.KeyFileMismatch`).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from capsim.crypto import key_check_value, odd_parity
from capsim.errors import ConfigError, KeyFileMismatch, TokenError, ValidationError
from capsim.issuerkeys import IssuerKeys
from capsim.jsonlimits import loads_limited
from capsim.verifier import pkcs11 as p11
from capsim.verifier.provider import derived_fingerprint

__all__ = [
    "DEFAULT_PIN_ENV",
    "HSM_SETTING",
    "TokenConfig",
    "TokenIssuer",
    "combine_components",
    "dump_token_setting",
    "import_issuer_keys",
    "import_key",
    "issuer_from_token",
    "list_token_keys",
    "login",
    "open_provider",
    "parse_token_setting",
    "read_pin",
    "throwaway_softhsm_token",
    "unwrap_key",
]

#: Store setting of a verifier run on a token: the token configuration and its issuer keys.
HSM_SETTING: Final = "hsm.pkcs11"
#: The environment variable the PIN is read from by default.
DEFAULT_PIN_ENV: Final = "CAPSIM_PKCS11_PIN"


@dataclass(frozen=True, kw_only=True)
class TokenConfig:
    """Where the token is and where its PIN comes from (rule 1; no PIN here)."""

    module: str
    token: str
    prefix: str = "capsim"
    pin_env: str = DEFAULT_PIN_ENV
    pin_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "module": self.module,
            "token": self.token,
            "prefix": self.prefix,
            "pin_env": self.pin_env,
            "pin_file": self.pin_file,
        }

    def open(self) -> pkcs11.Token:
        """The token (:func:`capsim.verifier.pkcs11.open_token`)."""
        return p11.open_token(self.module, self.token)


@dataclass(frozen=True, kw_only=True)
class TokenIssuer:
    """Issuer keys in the token, as a verifier database records them (no key material)."""

    key_id: str
    label: str
    kcv: str
    fingerprints: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "key_id": self.key_id,
            "label": self.label,
            "kcv": self.kcv,
            "fingerprints": dict(self.fingerprints),
        }


def read_pin(config: TokenConfig, environ: Mapping[str, str] | None = None) -> str:
    """The user PIN: the first line of ``pin_file`` (not readable by other users) when set,
    else the environment variable ``pin_env``; :class:`~capsim.errors.TokenError` (reason
    ``"pin"``) when there is none."""
    env = os.environ if environ is None else environ
    if config.pin_file:
        path = Path(config.pin_file)
        try:
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                raise TokenError(f"{path}: the PIN file is readable by other users; chmod 600 it", "pin")
            text = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TokenError(f"{path}: cannot read the PIN file ({exc.strerror})", "pin") from None
        if not text or not text[0]:
            raise TokenError(f"{path}: the PIN file is empty", "pin")
        return text[0]
    pin = env.get(config.pin_env, "")
    if not pin:
        raise TokenError(
            f"no token PIN: set the environment variable {config.pin_env} (or use --pin-file)", "pin"
        )
    return pin


def login(config: TokenConfig, *, rw: bool = False) -> pkcs11.Session:
    """A session on the token, logged in with the PIN of :func:`read_pin` (close it after use);
    token failures are :class:`~capsim.errors.TokenError`."""
    pin = read_pin(config)
    token = config.open()
    try:
        return token.open(rw=rw, user_pin=pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=rw)
    except (pkcs11.PKCS11Error, RuntimeError) as exc:
        raise p11.token_error(exc, f"log in to token {config.token!r}") from None


# ------------------------------------------------------------------------------------------------
# The database setting


def parse_token_setting(raw: str | None) -> tuple[TokenConfig, dict[str, TokenIssuer]] | None:
    """The token configuration and issuers a database records, or ``None`` (a software verifier)."""
    if raw is None:
        return None
    try:
        doc = loads_limited(raw, what="token setting", error=ConfigError)
        c = doc["config"]
        config = TokenConfig(
            module=str(c["module"]),
            token=str(c["token"]),
            prefix=str(c.get("prefix", "capsim")),
            pin_env=str(c.get("pin_env", DEFAULT_PIN_ENV)),
            pin_file=None if c.get("pin_file") is None else str(c["pin_file"]),
        )
        issuers = {
            str(kid): TokenIssuer(
                key_id=str(kid),
                label=str(v["label"]),
                kcv=str(v["kcv"]),
                fingerprints={str(k): str(x) for k, x in dict(v.get("fingerprints") or {}).items()},
            )
            for kid, v in dict(doc.get("issuers") or {}).items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"the verifier database's token setting is unreadable ({exc})") from None
    return config, issuers


def dump_token_setting(config: TokenConfig, issuers: Mapping[str, TokenIssuer]) -> str:
    """The setting for ``config`` and ``issuers`` (sorted, stable)."""
    doc = {
        "config": config.to_dict(),
        "issuers": {
            kid: {k: v for k, v in i.to_dict().items() if k != "key_id"} for kid, i in sorted(issuers.items())
        },
    }
    return json.dumps(doc, sort_keys=True)


# ------------------------------------------------------------------------------------------------
# Import


def combine_components(components: Sequence[bytes]) -> bytes:
    """XOR two or three 16-byte key components and set odd parity (rule 3).

    >>> a, b = bytes.fromhex("0123456789ABCDEF" * 2), bytes.fromhex("1111111111111111" * 2)
    >>> key_check_value(combine_components([a, b])).hex().upper() == key_check_value(
    ...     odd_parity(bytes(x ^ y for x, y in zip(a, b)))).hex().upper()
    True
    """
    if not 2 <= len(components) <= 3:
        raise ValidationError("components: expected two or three key components")
    out = bytes(16)
    for c in components:
        if not isinstance(c, bytes | bytearray) or len(c) != 16:
            raise ValidationError("component: expected 16 bytes (32 hex digits)")
        out = bytes(x ^ y for x, y in zip(out, c, strict=True))
    return odd_parity(out)


def _exists(session: pkcs11.Session, label: str) -> bool:
    return bool(list(session.get_objects({Attribute.LABEL: label})))


def import_key(session: pkcs11.Session, label: str, name: str, key: bytes) -> str:
    """Create the token object ``<label>/<name>`` from ``key`` (rule 2); its KCV (hex).

    ``name`` ``imk-ac`` gets the key id ``iss-<KCV>`` in ``CKA_ID``. An existing object is
    never replaced (:class:`~capsim.errors.ConfigError`).
    """
    if name not in p11.KEY_NAMES:
        raise ValidationError(f"--key: expected one of {', '.join(p11.KEY_NAMES)}")
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise ValidationError(f"{name}: expected a 16-byte double-length TDES key")
    full = f"{label}/{name}"
    kcv = key_check_value(bytes(key)).hex().upper()
    try:
        if _exists(session, full):
            raise ConfigError(f"--label: the token already holds {full!r}; choose another label")
        template = p11.imk_template(full, store=True)
        template[Attribute.VALUE] = bytes(key)
        if name == "imk-ac":
            template[Attribute.ID] = f"iss-{kcv}".encode("ascii")
        session.create_object(template)
    except pkcs11.PKCS11Error as exc:
        raise p11.token_error(exc, f"import {full}") from None
    return kcv


def import_issuer_keys(session: pkcs11.Session, label: str, keys: IssuerKeys) -> TokenIssuer:
    """Import the three keys of an issuer-keys file under ``label`` (rule 2)."""
    for name in p11.KEY_NAMES:
        if _exists(session, f"{label}/{name}"):
            raise ConfigError(f"--label: the token already holds {label}/{name!r}; choose another label")
    values = dict(zip(p11.KEY_NAMES, (keys.imk_ac, keys.imk_smi, keys.imk_smc), strict=True))
    kcv = ""
    for name, value in values.items():
        k = import_key(session, label, name, value)
        kcv = kcv or k
    return TokenIssuer(
        key_id=f"iss-{kcv}",
        label=label,
        kcv=kcv,
        fingerprints={name: derived_fingerprint(v) for name, v in values.items()},
    )


def unwrap_key(session: pkcs11.Session, label: str, name: str, wrapped: bytes, transport_label: str) -> str:
    """Unwrap a key wrapped with ``CKM_AES_KEY_WRAP_PAD`` under the token's AES key
    ``transport_label`` into ``<label>/<name>`` (rule 2); its KCV (hex). The key never reaches
    host memory: the KCV comes from an encrypt-only session copy unwrapped first."""
    full = f"{label}/{name}"
    if name not in p11.KEY_NAMES:
        raise ValidationError(f"--key: expected one of {', '.join(p11.KEY_NAMES)}")
    try:
        if _exists(session, full):
            raise ConfigError(f"--label: the token already holds {full!r}; choose another label")
        found = list(session.get_objects({Attribute.LABEL: transport_label, Attribute.KEY_TYPE: KeyType.AES}))
        if len(found) != 1:
            raise TokenError(f"--transport-label: no single AES key labelled {transport_label!r}", "key")
        transport: Any = found[0]
        probe = transport.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.DES2,
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP_PAD,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TOKEN: False},
            capabilities=pkcs11.MechanismFlag.ENCRYPT,
        )
        try:
            kcv = bytes(probe.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB))[:3].hex().upper()
        finally:
            probe.destroy()
        template = p11.imk_template(full, store=True)
        if name == "imk-ac":
            template[Attribute.ID] = f"iss-{kcv}".encode("ascii")
        # SoftHSM 2.6 refuses CKA_MODIFIABLE=false in C_UnwrapKey (CKR_ATTRIBUTE_READ_ONLY): an
        # unwrapped key stays modifiable (SENSITIVE cannot be cleared nor EXTRACTABLE set)
        for attr in (Attribute.CLASS, Attribute.KEY_TYPE, Attribute.MODIFIABLE):
            del template[attr]
        transport.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.DES2,
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP_PAD,
            template=template,
        )
    except pkcs11.PKCS11Error as exc:
        raise p11.token_error(exc, f"unwrap {full}") from None
    return kcv


# ------------------------------------------------------------------------------------------------
# Listing and opening


def list_token_keys(session: pkcs11.Session) -> list[p11.TokenKey]:
    """Every secret key object of the token: label, type, id, attributes, and for DES2 keys
    the derived fingerprint (no key material)."""
    out: list[p11.TokenKey] = []
    try:
        for obj in list(
            session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True})
        ):
            assert isinstance(obj, pkcs11.SecretKey)
            attrs = obj.get_attributes(
                [
                    Attribute.LABEL,
                    Attribute.KEY_TYPE,
                    Attribute.ID,
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.DERIVE,
                    Attribute.ENCRYPT,
                    Attribute.SIGN,
                ]
            )
            key_type = attrs[Attribute.KEY_TYPE]
            fp = p11.token_fingerprint(obj) if key_type == KeyType.DES2 and attrs[Attribute.DERIVE] else None
            out.append(
                p11.TokenKey(
                    label=str(attrs[Attribute.LABEL]),
                    key_type=getattr(key_type, "name", str(key_type)),
                    key_id=bytes(attrs[Attribute.ID]).decode("ascii", "replace"),
                    sensitive=bool(attrs[Attribute.SENSITIVE]),
                    extractable=bool(attrs[Attribute.EXTRACTABLE]),
                    derive_only=bool(attrs[Attribute.DERIVE])
                    and not attrs[Attribute.ENCRYPT]
                    and not attrs[Attribute.SIGN],
                    fingerprint=fp,
                )
            )
    except pkcs11.PKCS11Error as exc:
        raise p11.token_error(exc, "list the token's keys") from None
    return sorted(out, key=lambda k: k.label)


def issuer_from_token(session: pkcs11.Session, label: str) -> TokenIssuer:
    """The issuer keys under ``label`` as a database records them: key id from the IMK-AC's
    ``CKA_ID``, fingerprints computed by the token (rule 4)."""
    fps: dict[str, str] = {}
    key_id = ""
    try:
        for name in p11.KEY_NAMES:
            found = list(
                session.get_objects(
                    {Attribute.LABEL: f"{label}/{name}", Attribute.CLASS: ObjectClass.SECRET_KEY}
                )
            )
            if not found:
                if name == "imk-ac":
                    raise TokenError(f"--issuer-label: the token holds no {label}/imk-ac", "key")
                continue
            obj = found[0]
            assert isinstance(obj, pkcs11.SecretKey)
            if name == "imk-ac":
                key_id = bytes(obj[Attribute.ID]).decode("ascii", "replace")
            fps[name] = p11.token_fingerprint(obj)
    except pkcs11.PKCS11Error as exc:
        raise p11.token_error(exc, f"issuer keys {label}") from None
    if not key_id.startswith("iss-"):
        raise TokenError(
            f"{label}/imk-ac: no key id in CKA_ID (import it with 'capsim verifier keys import')", "key"
        )
    return TokenIssuer(key_id=key_id, label=label, kcv=key_id.removeprefix("iss-"), fingerprints=fps)


def open_provider(
    config: TokenConfig, issuers: Mapping[str, TokenIssuer], *, pin: str, cache_size: int = 256
) -> p11.Pkcs11Provider:
    """A :class:`~capsim.verifier.pkcs11.Pkcs11Provider` with every recorded issuer, each
    checked against its recorded fingerprints (rule 4)."""
    provider = p11.Pkcs11Provider(config.open(), pin=pin, secrets_prefix=config.prefix, cache_size=cache_size)
    try:
        for kid, issuer in issuers.items():
            provider.add_token_keys(kid, label=issuer.label)
            found = provider.issuer_fingerprints(kid)
            differ = [
                n
                for n in p11.KEY_NAMES
                if not hmac.compare_digest(found.get(n, "").encode(), issuer.fingerprints.get(n, "").encode())
            ]
            if differ:
                raise KeyFileMismatch(
                    f"token {config.token!r}: the keys labelled {issuer.label!r} are not those "
                    f"registered as {kid} "
                    f"({', '.join(d.upper() for d in differ)} differ from the registered fingerprints)"
                )
    except BaseException:
        provider.close()
        raise
    return provider


#: Where Debian and Ubuntu install the SoftHSM2 module.
SOFTHSM_MODULES: Final = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


def throwaway_softhsm_token(workdir: Path, *, label: str = "capsim-demo") -> TokenConfig:
    """A new SoftHSM2 token in ``workdir`` (``capsim demo --pkcs11``): its own
    ``SOFTHSM2_CONF`` (set in this process's environment, before the module is first loaded)
    and a random user PIN in ``CAPSIM_PKCS11_PIN``; :class:`~capsim.errors.TokenError` when
    SoftHSM2 is not installed."""
    module = next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)
    tool = shutil.which("softhsm2-util")
    if module is None or tool is None:
        raise TokenError("--pkcs11: SoftHSM2 is not installed (apt-get install softhsm2)", "module")
    tokens = workdir / "softhsm-tokens"
    tokens.mkdir(mode=0o700)
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    os.environ[DEFAULT_PIN_ENV] = pin
    done = subprocess.run(
        [tool, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        capture_output=True,
        check=False,
    )
    if done.returncode:
        raise TokenError(f"softhsm2-util could not create the token (exit {done.returncode})", "token")
    return TokenConfig(module=module, token=label)
