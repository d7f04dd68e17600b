"""What a verifier holds besides its database: the issuer-keys registry and the keyring file.

Theory of operation
-------------------
1. **Issuer keys stay in their files.** The issuer-keys files that ``capsim card new`` writes
   are registered in the database (setting :data:`REGISTRY_SETTING`) under the key id
   ``iss-<KCV of IMK-AC>``, with the file's absolute path, that KCV and a *fingerprint of every
   key* (IMK-AC, IMK-SMI, IMK-SMC): ``SHA-256(label ‖ key name ‖ 0x00 ‖ key)`` truncated to 128
   bits, in hex (:func:`key_fingerprint`). Never key bytes (architecture.md §5).
2. **The KCV only names a key.** A 24-bit check value is found for a different key in seconds,
   so it never proves that a file holds the registered keys. :func:`check_issuer_keys` compares
   all three fingerprints (constant time); a file whose keys differ from the registered ones
   (swapped, edited, or a key with a colliding KCV) is refused with
   :class:`~capsim.errors.KeyFileMismatch`.
3. **Upgrade.** A registration from before fingerprints gets them recorded on its first load
   (:func:`load_registered_keys`), in an audited transaction: this trusts the file present at
   that moment.
4. **The keyring file** (:class:`KeyringFile`) holds the audit seal key (32 random bytes,
   :mod:`capsim.verifier.audit` rule 4) and the audit seq from which sealing started. It lives
   *outside* the database: JSON, mode 0600, written atomically (:func:`write_keyring_file`);
   by default beside a SQLite database as ``<db>.keyring.json``, and for PostgreSQL in the data
   directory under a name derived from a hash of the redacted URL
   (:func:`default_keyring_path`). The database records only the seal key's *id* and the
   start (setting :data:`SEAL_SETTING`), so a missing keyring file, or one holding another
   key, is noticed (:func:`setup_sealing`) instead of silently replaced.
5. Decisions are pure functions over data (:func:`check_issuer_keys`,
   :func:`sealing_start`); file and database I/O stay in the ``load``/``register``/``setup``
   functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from capsim.errors import ConfigError, KeyFileMismatch, StateFileError, TemporaryFailure
from capsim.issuerkeys import IssuerKeys, load_issuer_keys
from capsim.jsonlimits import loads_limited
from capsim.verifier.audit import AuditEntry, AuditSealer
from capsim.verifier.dburl import redact_db_url
from capsim.verifier.provider import SecretKey
from capsim.verifier.store import Store

__all__ = [
    "KEYRING_FORMAT",
    "KEY_NAMES",
    "REGISTRY_SETTING",
    "SEAL_SETTING",
    "KeyHolder",
    "KeyringEntry",
    "KeyringFile",
    "check_issuer_keys",
    "default_keyring_path",
    "dump_registry",
    "issuer_key_fingerprints",
    "issuer_key_id",
    "key_fingerprint",
    "load_registered_keys",
    "parse_registry",
    "read_keyring_file",
    "register_issuer_keys",
    "sealing_start",
    "setup_sealing",
    "setup_token_sealing",
    "write_keyring_file",
]


class KeyHolder(Protocol):
    """What the registry and sealing functions need of a provider: :class:`SoftwareProvider`
    and :class:`capsim.verifier.pkcs11.Pkcs11Provider` (which puts the keys into its token)."""

    def add_issuer_keys(
        self, key_id: str, *, imk_ac: bytes, imk_smi: bytes | None = None, imk_smc: bytes | None = None
    ) -> None: ...

    def set_audit_seal_key(self, key_id: str, key: bytes) -> None: ...

    def audit_seal_key_id(self) -> str | None: ...

    def audit_seal(self, message: bytes) -> bytes: ...


#: Store setting holding the registered issuer-keys files (paths, KCVs, fingerprints; no keys).
REGISTRY_SETTING: Final = "cli.issuer-keys"
#: Store setting recording the audit seal key *id* and the seq sealing started from (no key).
SEAL_SETTING: Final = "audit.seal"
#: The keys of an issuer-keys file, by their file names.
KEY_NAMES: Final = ("imk-ac", "imk-smi", "imk-smc")
#: ``format`` of a keyring file.
KEYRING_FORMAT: Final = "capsim-verifier-keyring"
_FINGERPRINT_LABEL: Final = b"capsim key fingerprint v1\x00"


# ------------------------------------------------------------------------------------------------
# Issuer keys: ids, fingerprints, the registry


def issuer_key_id(keys: IssuerKeys) -> str:
    """The key id under which issuer keys are registered: ``iss-`` + KCV of IMK-AC.

    >>> issuer_key_id(IssuerKeys(imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    ...                          imk_smi=bytes(16), imk_smc=bytes(16)))
    'iss-08D7B4'
    """
    return "iss-" + keys.kcvs()["imk-ac"].hex().upper()


def key_fingerprint(name: str, key: bytes) -> str:
    """A full-strength fingerprint of ``key``: SHA-256 over a fixed label, the key's name and
    the key, truncated to 128 bits, in hex (not a KCV: no collision can be searched for).

    >>> key_fingerprint("imk-ac", bytes(16))
    '9df66528fd3803b220a2565353772599'
    """
    return hashlib.sha256(_FINGERPRINT_LABEL + name.encode("ascii") + b"\x00" + key).hexdigest()[:32]


def issuer_key_fingerprints(keys: IssuerKeys) -> dict[str, str]:
    """The fingerprint of each key of an issuer-keys file, by key name."""
    return {
        "imk-ac": key_fingerprint("imk-ac", keys.imk_ac),
        "imk-smi": key_fingerprint("imk-smi", keys.imk_smi),
        "imk-smc": key_fingerprint("imk-smc", keys.imk_smc),
    }


@dataclass(frozen=True, kw_only=True)
class KeyringEntry:
    """One registered issuer-keys file (no key material).

    Attributes
    ----------
    key_id:
        ``iss-`` followed by the KCV of the file's IMK-AC.
    path:
        Absolute path of the issuer-keys file.
    kcv:
        KCV of the IMK-AC, six upper-case hex digits.
    fingerprints:
        :func:`key_fingerprint` of each key, by name; empty for a registration made before
        fingerprints existed (filled in on its first load).
    """

    key_id: str
    path: str
    kcv: str
    fingerprints: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "key_id": self.key_id,
            "path": self.path,
            "kcv": self.kcv,
            "fingerprints": dict(self.fingerprints),
        }


def parse_registry(text: str) -> dict[str, KeyringEntry]:
    """Parse the registry setting; :class:`~capsim.errors.ConfigError` when unreadable."""
    try:
        doc = loads_limited(text, what="issuer-keys registry", error=ConfigError)
        out: dict[str, KeyringEntry] = {}
        for kid, v in dict(doc).items():
            fps = v.get("fingerprints") or {}
            out[str(kid)] = KeyringEntry(
                key_id=str(kid),
                path=str(v["path"]),
                kcv=str(v["kcv"]),
                fingerprints={str(k): str(x) for k, x in dict(fps).items()},
            )
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"the verifier database's issuer-keys registry is unreadable ({exc})") from None


def dump_registry(entries: Mapping[str, KeyringEntry]) -> str:
    """The registry setting for ``entries`` (sorted, stable)."""
    doc: dict[str, Any] = {}
    for kid, e in sorted(entries.items()):
        doc[kid] = {"path": e.path, "kcv": e.kcv}
        if e.fingerprints:
            doc[kid]["fingerprints"] = dict(sorted(e.fingerprints.items()))
    return json.dumps(doc, sort_keys=True)


def check_issuer_keys(entry: KeyringEntry, keys: IssuerKeys, *, where: str) -> None:
    """Refuse ``keys`` (read from ``where``) unless they are the keys registered as ``entry``.

    Raises :class:`~capsim.errors.KeyFileMismatch` naming the keys that differ (never their
    values). An entry without fingerprints is checked by its key id only (see rule 3).
    """
    if issuer_key_id(keys) != entry.key_id:
        raise KeyFileMismatch(
            f"{where}: this issuer-keys file no longer holds key {entry.key_id} "
            "(its IMK-AC check value changed)"
        )
    if not entry.fingerprints:
        return
    found = issuer_key_fingerprints(keys)
    differ = [
        name
        for name in KEY_NAMES
        if not hmac.compare_digest(found[name].encode(), str(entry.fingerprints.get(name, "")).encode())
    ]
    if differ:
        raise KeyFileMismatch(
            f"{where}: this issuer-keys file does not hold the keys registered as {entry.key_id} "
            f"({', '.join(k.upper() for k in differ)} differ from the registered fingerprints)"
        )


def load_registered_keys(
    store: Store,
    provider: KeyHolder,
    registry: Mapping[str, KeyringEntry],
    *,
    sealer: AuditSealer | None,
) -> dict[str, KeyringEntry]:
    """Read every registered issuer-keys file, check it (rule 2) and hand its keys to ``provider``.

    Registrations without fingerprints get them recorded (rule 3). Returns the registry as it
    now stands. Raises :class:`~capsim.errors.StateFileError` (a missing or unreadable file)
    or :class:`~capsim.errors.KeyFileMismatch`.
    """
    current = dict(registry)
    missing: dict[str, KeyringEntry] = {}
    for entry in registry.values():
        keys = load_issuer_keys(entry.path)
        check_issuer_keys(entry, keys, where=entry.path)
        provider.add_issuer_keys(entry.key_id, imk_ac=keys.imk_ac, imk_smi=keys.imk_smi, imk_smc=keys.imk_smc)
        if not entry.fingerprints:
            missing[entry.key_id] = KeyringEntry(
                key_id=entry.key_id,
                path=entry.path,
                kcv=entry.kcv,
                fingerprints=issuer_key_fingerprints(keys),
            )
    if missing:
        with store.transaction(sealer=sealer) as tx:
            stored = parse_registry(tx.get_setting(REGISTRY_SETTING) or "{}")
            for kid, entry in missing.items():
                if kid in stored and not stored[kid].fingerprints:
                    stored[kid] = entry
                    tx.append_audit(
                        AuditEntry(
                            event="issuer-keys",
                            outcome="ok",
                            reason="fingerprinted",
                            details={"key_id": kid, "kcv": entry.kcv},
                        )
                    )
            tx.set_setting(REGISTRY_SETTING, dump_registry(stored))
        current = stored
    return current


def register_issuer_keys(store: Store, path: Path, *, sealer: AuditSealer | None) -> KeyringEntry:
    """Record an issuer-keys file in the database (path, KCV, fingerprints) and audit it.

    Registering the same keys again is a no-op; the same keys from another path update the path.
    A file whose keys differ from those registered under its key id is refused
    (:class:`~capsim.errors.KeyFileMismatch`).
    """
    keys = load_issuer_keys(path)
    kid = issuer_key_id(keys)
    entry = KeyringEntry(
        key_id=kid,
        path=str(path.resolve()),
        kcv=kid.removeprefix("iss-"),
        fingerprints=issuer_key_fingerprints(keys),
    )
    with store.transaction(sealer=sealer) as tx:
        current = parse_registry(tx.get_setting(REGISTRY_SETTING) or "{}")
        old = current.get(kid)
        if old == entry:
            return entry  # already registered: nothing to write
        if old is not None:
            if old.fingerprints:
                check_issuer_keys(old, keys, where=str(path))
            else:
                with contextlib.suppress(StateFileError):  # the old file is gone: the new one replaces it
                    if not _same_keys(load_issuer_keys(old.path), keys):
                        raise KeyFileMismatch(
                            f"{path}: holds other keys than {old.path} under the same key id {kid} "
                            "(an IMK-AC with the same check value)"
                        )
        current[kid] = entry
        tx.set_setting(REGISTRY_SETTING, dump_registry(current))
        tx.append_audit(
            AuditEntry(
                event="issuer-keys",
                outcome="ok",
                reason="registered" if old is None else "updated",
                details={"key_id": kid, "kcv": entry.kcv},
            )
        )
    return entry


def _same_keys(a: IssuerKeys, b: IssuerKeys) -> bool:
    return hmac.compare_digest(a.imk_ac + a.imk_smi + a.imk_smc, b.imk_ac + b.imk_smi + b.imk_smc)


# ------------------------------------------------------------------------------------------------
# The keyring file


@dataclass(frozen=True, kw_only=True)
class KeyringFile:
    """The audit seal key and where sealing started (rule 4). ``repr`` shows no key.

    Attributes
    ----------
    path:
        Where it is kept (``None``: in memory only, for a ``memory:`` store).
    seal_key_id:
        ``aud-`` + 16 hex digits of the key's fingerprint.
    seal_key:
        The 32-byte HMAC-SHA-256 key.
    sealed_from:
        The first audit seq written sealed; records before it are checked by the chain alone.
    database:
        The (redacted) database URL it belongs to, for people reading the file.
    """

    path: Path | None
    seal_key_id: str
    seal_key: SecretKey = field(repr=False)
    sealed_from: int
    database: str = ""

    @classmethod
    def generate(cls, path: Path | None, *, sealed_from: int, database: str) -> KeyringFile:
        """A fresh seal key (from :mod:`secrets`)."""
        key = secrets.token_bytes(32)
        return cls(
            path=path,
            seal_key_id=_seal_key_id(key),
            seal_key=SecretKey(key),
            sealed_from=sealed_from,
            database=database,
        )


def _seal_key_id(key: bytes) -> str:
    return "aud-" + key_fingerprint("audit-seal", key)[:16]


def default_keyring_path(url: str, data_dir: Path, *, sqlite_path: Path | None) -> Path | None:
    """Where the keyring file of database ``url`` lives by default (rule 4).

    ``sqlite_path`` is the database file for a SQLite store (the keyring goes beside it), else
    ``None`` (PostgreSQL: ``data_dir/keyring-<hash>.json``). A ``memory:`` URL has none.
    """
    if url.strip() == "memory:":
        return None
    if sqlite_path is not None:
        return sqlite_path.with_name(sqlite_path.name + ".keyring.json")
    digest = hashlib.sha256(redact_db_url(url).encode("utf-8")).hexdigest()[:16]
    return data_dir / f"keyring-{digest}.json"


def read_keyring_file(path: Path) -> KeyringFile:
    """Read a keyring file; :class:`~capsim.errors.StateFileError` when missing, readable by
    other users, or malformed."""
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise StateFileError(f"{path}: the keyring file is readable by other users; chmod 600 it")
        doc = loads_limited(path.read_bytes(), what=f"keyring file {path}")
    except FileNotFoundError:
        raise StateFileError(f"{path}: no keyring file") from None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read the keyring file ({exc.strerror})") from None
    except ValueError:
        raise StateFileError(f"{path}: the keyring file is not JSON") from None
    try:
        if doc.get("format") != KEYRING_FORMAT or doc.get("version") != 1:
            raise ValueError("not a capsim verifier keyring (format/version)")
        seal = doc["audit_seal"]
        key = bytes.fromhex(seal["key"])
        start = seal["sealed_from"]
        if len(key) != 32 or isinstance(start, bool) or not isinstance(start, int) or start < 1:
            raise ValueError("bad audit seal key or start")
        if seal.get("key_id") != _seal_key_id(key):
            raise ValueError("the seal key does not match its key id")
        return KeyringFile(
            path=path,
            seal_key_id=_seal_key_id(key),
            seal_key=SecretKey(key),
            sealed_from=start,
            database=str(doc.get("database", "")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateFileError(f"{path}: invalid keyring file ({exc})") from None


def write_keyring_file(keyring: KeyringFile) -> None:
    """Write ``keyring`` to its path: JSON, mode 0600, atomically (temporary file + rename)."""
    path = keyring.path
    if path is None:
        return
    doc = {
        "format": KEYRING_FORMAT,
        "version": 1,
        "database": keyring.database,
        "audit_seal": {
            "key_id": keyring.seal_key_id,
            "key": keyring.seal_key.reveal().hex(),
            "sealed_from": keyring.sealed_from,
        },
    }
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateFileError(f"{path}: cannot write the keyring file ({exc.strerror})") from None


def sealing_start(file_start: int | None, next_seq: int) -> int:
    """The seq sealing starts from when a database records its keyring for the first time.

    A keyring file that already exists keeps its start, except that a database with fewer
    records (a new database beside an old keyring file) starts at its next record.

    >>> sealing_start(None, 18), sealing_start(40, 1), sealing_start(5, 18)
    (18, 1, 5)
    """
    return next_seq if file_start is None else min(file_start, next_seq)


def setup_sealing(
    store: Store,
    path: Path | None,
    provider: KeyHolder,
    *,
    create: bool,
    required: bool,
    database: str,
) -> KeyringFile | None:
    """Give ``provider`` the audit seal key of database ``store`` (rule 4).

    ``create`` (``verifier init``): a database that is not sealed yet gets a keyring file
    (a new key, or the key of an existing file at ``path``) and records its key id and start.
    Otherwise the keyring file must match what the database recorded: a missing file is a
    :class:`~capsim.errors.StateFileError`, another key a
    :class:`~capsim.errors.KeyFileMismatch`. A database that was never sealed returns ``None``
    when not ``required``, else :class:`~capsim.errors.ConfigError` (run ``init``).
    """
    with store.transaction() as tx:
        recorded = _parse_seal_setting(tx.get_setting(SEAL_SETTING))
    exists = path is not None and path.exists()
    if recorded is not None:
        if path is None:
            raise ConfigError("the database's audit is sealed; a memory store cannot hold its keyring")
        if not exists:
            raise StateFileError(
                f"{path}: no keyring file, but the database's audit is sealed with key {recorded[0]}; "
                "restore the keyring file (or name it with --keyring)"
            )
        keyring = read_keyring_file(path)
        if keyring.seal_key_id != recorded[0]:
            raise KeyFileMismatch(
                f"{path}: this keyring file holds seal key {keyring.seal_key_id}, "
                f"but the database's audit is sealed with key {recorded[0]}"
            )
    elif create:
        keyring = _start_sealing(store, path, provider, exists=exists, database=database)
    elif required:
        raise ConfigError("the verifier's audit is not sealed yet; run 'capsim verifier init' once")
    else:
        return None
    provider.set_audit_seal_key(keyring.seal_key_id, keyring.seal_key.reveal())
    return keyring


def _start_sealing(
    store: Store, path: Path | None, provider: KeyHolder, *, exists: bool, database: str
) -> KeyringFile:
    old = read_keyring_file(path) if exists and path is not None else None
    if old is None:
        keyring = KeyringFile.generate(path, sealed_from=1, database=database)
    else:
        keyring = dataclasses.replace(old, database=database)
    provider.set_audit_seal_key(keyring.seal_key_id, keyring.seal_key.reveal())
    with store.transaction(sealer=provider) as tx:
        if tx.get_setting(SEAL_SETTING) is not None:
            raise TemporaryFailure("audit sealing was set up concurrently; run the command again")
        # the first sealed record marks the start; its seq comes from the store
        first = tx.append_audit(
            AuditEntry(
                event="audit-seal", outcome="ok", reason="started", details={"key_id": keyring.seal_key_id}
            )
        )
        start = sealing_start(None if old is None else old.sealed_from, first.seq)
        keyring = dataclasses.replace(keyring, sealed_from=start)
        if old is None or old.sealed_from != start:
            write_keyring_file(keyring)  # before COMMIT: a failed write leaves the database unsealed
        tx.set_setting(SEAL_SETTING, json.dumps({"key_id": keyring.seal_key_id, "sealed_from": start}))
    return keyring


def _parse_seal_setting(raw: str | None) -> tuple[str, int] | None:
    if raw is None:
        return None
    try:
        doc = loads_limited(raw, what="audit seal setting", error=ConfigError)
        return str(doc["key_id"]), int(doc["sealed_from"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"the verifier database's audit seal setting is unreadable ({exc})") from None


def setup_token_sealing(store: Store, provider: KeyHolder, *, create: bool, required: bool) -> int | None:
    """Seal with the audit seal key held by the provider's token (no keyring file): the
    sealing start, or ``None`` when the audit stays unsealed.

    A database sealed with this key goes on from its recorded start; for one sealed with
    another key (a keyring file's) this returns ``None`` and :func:`setup_sealing` hands that
    key over; ``create`` starts sealing an unsealed database with the token's key.
    """
    kid = provider.audit_seal_key_id()
    with store.transaction() as tx:
        recorded = _parse_seal_setting(tx.get_setting(SEAL_SETTING))
    if recorded is not None:
        # sealed with another key (a keyring file's): setup_sealing hands that one over
        return recorded[1] if kid == recorded[0] else None
    if kid is None or not create:
        if required and kid is not None:
            raise ConfigError(
                "the verifier's audit is not sealed yet; run 'capsim verifier init --pkcs11' once"
            )
        return None
    with store.transaction(sealer=provider) as tx:
        if tx.get_setting(SEAL_SETTING) is not None:
            raise TemporaryFailure("audit sealing was set up concurrently; run the command again")
        first = tx.append_audit(
            AuditEntry(event="audit-seal", outcome="ok", reason="started", details={"key_id": kid})
        )
        tx.set_setting(SEAL_SETTING, json.dumps({"key_id": kid, "sealed_from": first.seq}))
    return first.seq
