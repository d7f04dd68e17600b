"""An open verifier database for one command: store, keys, seal key and service together.

The command line (``capsim verifier …``, ``capsim verify``, ``capsim demo``) and programs that
run the verifier the same way open a :class:`VerifierSession` with :func:`open_session`.

Theory of operation
-------------------
1. :func:`open_session` never creates a SQLite file by accident: only ``create=True`` (``init``)
   may; otherwise the file must exist and ``init`` must have prepared the database (the
   issuer-keys registry setting is present). ``memory:`` is refused unless ``allow_memory``.
2. Before the service is built (it may write a policy record), the audit seal key is set up
   from the keyring file (:func:`capsim.verifier.keyring.setup_sealing`), so every record the
   session writes is sealed. ``create`` starts sealing on a database that was not sealed yet.
3. ``keys=True`` loads every registered issuer-keys file and checks all of its keys against
   the registered fingerprints (:func:`capsim.verifier.keyring.load_registered_keys`).
4. **A verifier on a PKCS#11 token** (setting :data:`capsim.verifier.hsmkeys.HSM_SETTING`,
   written by ``init`` with ``token=``): the provider is a
   :class:`~capsim.verifier.pkcs11.Pkcs11Provider` whose issuer keys are checked against their
   recorded fingerprints; the PIN comes from the recorded environment variable or file. When
   the token holds the audit seal key, no keyring file is used
   (:func:`capsim.verifier.keyring.setup_token_sealing`).
5. :func:`check_audit` reads the audit once and runs :func:`capsim.verifier.audit.check_chain`
   with the session's seal key and sealing start (and an exported tip when given). It never
   fails on record content: tampering is reported as problems, never as an exception.
6. **A key migration** to the token (``capsim verifier keys migrate``,
   :mod:`capsim.verifier.pkcs11migrate`): while it is unfinished the provider is a
   :class:`~capsim.verifier.pkcs11migrate.MigratingProvider` that computes each credential
   with the keys its reference names (the migrated issuers' files in software, the token's
   keys for the rest) and refuses enrolment; once done, the migrated files have left the
   registry and the database opens on the token alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capsim.errors import ConfigError, KeyFileMismatch, ValidationError
from capsim.verifier.audit import AuditProblem, AuditRecord, AuditTip, check_chain
from capsim.verifier.dburl import DbKind, open_store, parse_db_url, redact_db_url
from capsim.verifier.keyring import (
    REGISTRY_SETTING,
    KeyringEntry,
    KeyringFile,
    dump_registry,
    load_registered_keys,
    parse_registry,
    setup_sealing,
    setup_token_sealing,
)
from capsim.verifier.keyring import (
    register_issuer_keys as _register,
)
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.service import Verifier
from capsim.verifier.store import Store, StoreTransaction

if TYPE_CHECKING:
    from capsim.verifier.hsmkeys import TokenConfig
    from capsim.verifier.pkcs11 import Pkcs11Provider
    from capsim.verifier.pkcs11migrate import MigratingProvider

__all__ = [
    "AuditReport",
    "VerifierSession",
    "check_audit",
    "check_db_url",
    "mark_initialised",
    "open_session",
    "register_issuer_keys",
    "sqlite_file",
]


@dataclass(frozen=True, kw_only=True)
class VerifierSession:
    """An open verifier database for one command: the store, the service and its keys."""

    url: str
    store: Store
    verifier: Verifier
    provider: SoftwareProvider | Pkcs11Provider | MigratingProvider
    keyring: Mapping[str, KeyringEntry]
    keyring_file: KeyringFile | None = None
    #: The sealing start when the token holds the audit seal key (no keyring file).
    token_sealed_from: int | None = None
    #: The token the verifier runs on, or ``None`` (software keys).
    token: TokenConfig | None = None

    @property
    def shown_url(self) -> str:
        """The URL with any password replaced by ``***``."""
        return redact_db_url(self.url)

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        """A store transaction whose audit records are sealed like the service's."""
        if self.provider.audit_seal_key_id() is None:
            return self.store.transaction()
        return self.store.transaction(sealer=self.provider)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite ``url``, else ``None``."""
    parsed = parse_db_url(url)
    return Path(parsed.target) if parsed.kind is DbKind.SQLITE else None


def check_db_url(url: str, *, create: bool, allow_memory: bool) -> None:
    """Refuse ``memory:`` (unless allowed) and a missing SQLite file (unless ``create``)."""
    parsed = parse_db_url(url)
    if parsed.kind is DbKind.MEMORY and not allow_memory:
        raise ValidationError(
            "--db: memory: keeps nothing between commands; use a file path or postgresql://"
        )
    if parsed.kind is DbKind.SQLITE and not create and not Path(parsed.target).exists():
        raise ConfigError(
            f"--db: no verifier database at {parsed.target}; create it with 'capsim verifier init --db {url}'"
        )


@contextmanager
def open_session(
    url: str,
    *,
    keyring_path: Path | None,
    create: bool = False,
    keys: bool = False,
    policy: VerifierPolicy | None = None,
    allow_memory: bool = False,
    sealing: str = "required",
    token: TokenConfig | None = None,
    token_issuers: tuple[str, ...] = (),
) -> Iterator[VerifierSession]:
    """Open the verifier database ``url`` for one command (module docstring).

    Parameters
    ----------
    keyring_path:
        The keyring file (:func:`capsim.verifier.keyring.default_keyring_path`); ``None`` only
        for ``memory:``, whose seal key then lives in memory.
    create:
        ``init``: create and migrate the database if needed and start sealing its audit;
        otherwise it must have been initialised already (:class:`~capsim.errors.ConfigError`).
    keys:
        Load every registered issuer-keys file into the provider (enrolment, verification).
    policy:
        A policy to record (``init``); ``None`` keeps the stored one.
    allow_memory:
        Accept ``memory:`` (only useful inside one process, e.g. ``capsim demo``).
    sealing:
        ``"required"`` (the default): a database whose audit was never sealed is refused until
        ``init`` has run; ``"optional"``: it is opened unsealed (for reading the audit).
    token:
        ``init --pkcs11``: run this verifier on the token (record its configuration, create
        the verifier's secrets in it if missing). Later sessions find it in the database.
    token_issuers:
        ``init --pkcs11``: labels of issuer keys in the token to register.
    """
    check_db_url(url, create=create, allow_memory=allow_memory)
    store = open_store(url)
    closers: list[Callable[[], None]] = []
    try:
        with store.transaction() as tx:
            raw = tx.get_setting(REGISTRY_SETTING)
        if raw is None and not create:
            raise ConfigError(
                f"--db: {redact_db_url(url)} is not an initialised capsim verifier; "
                "run 'capsim verifier init' first"
            )
        registry = parse_registry(raw or "{}")
        on_token = _token_setting(store, token, token_issuers, create=create)
        provider: SoftwareProvider | Pkcs11Provider | MigratingProvider
        token_start: int | None = None
        keyring_file: KeyringFile | None = None
        if on_token is None:
            provider = SoftwareProvider()
        else:
            from capsim.verifier import hsmkeys

            provider = hsmkeys.open_provider(on_token[0], on_token[1], pin=hsmkeys.read_pin(on_token[0]))
            closers.append(provider.close)
            token_start = setup_token_sealing(store, provider, create=create, required=False)
        if token_start is None:
            keyring_file = setup_sealing(
                store,
                keyring_path,
                provider,
                create=create,
                required=sealing == "required",
                database=redact_db_url(url),
            )
        sealer = provider if keyring_file is not None or token_start is not None else None
        migrating = _migrating_issuers(store) if on_token is not None else ()
        if migrating:
            # a key migration runs: its issuers' files stay in software (rule 6)
            from capsim.verifier.pkcs11migrate import MigratingProvider

            assert not isinstance(provider, SoftwareProvider | MigratingProvider)
            routed = MigratingProvider(provider, SoftwareProvider())
            provider = routed
            if keys:
                moving = {k: v for k, v in registry.items() if k in migrating}
                moving = load_registered_keys(store, routed.software, moving, sealer=sealer)
                rest = {k: v for k, v in registry.items() if k not in migrating}
                registry = {**moving, **load_registered_keys(store, routed.token, rest, sealer=sealer)}
        elif keys:
            registry = load_registered_keys(store, provider, registry, sealer=sealer)
        if on_token is not None:
            registry = {**registry, **_token_entries(on_token[0], on_token[1])}
        service = Verifier(store, provider, policy=policy)
        if raw is None:
            mark_initialised(store)
        yield VerifierSession(
            url=url,
            store=store,
            verifier=service,
            provider=provider,
            keyring=registry,
            keyring_file=keyring_file,
            token_sealed_from=token_start,
            token=None if on_token is None else on_token[0],
        )
    finally:
        for close in closers:
            close()
        store.close()


def _token_setting(
    store: Store, token: TokenConfig | None, labels: tuple[str, ...], *, create: bool
) -> tuple[TokenConfig, dict[str, Any]] | None:
    """The token configuration and issuers of the database; ``init`` with ``token`` records
    them first (creating the verifier's secrets in the token when missing)."""
    with store.transaction() as tx:
        raw = tx.get_setting("hsm.pkcs11")
    if raw is None and token is None:
        return None
    from capsim.verifier import hsmkeys
    from capsim.verifier import pkcs11 as p11

    recorded = hsmkeys.parse_token_setting(raw)
    if token is None:
        assert recorded is not None
        return recorded
    if not create:
        raise ConfigError("--pkcs11: only 'capsim verifier init' records the token of a verifier")
    issuers = dict(recorded[1]) if recorded is not None else {}
    with hsmkeys.login(token, rw=True) as session:
        p11.ensure_verifier_secrets(session, token.prefix)
        for label in labels:
            issuer = hsmkeys.issuer_from_token(session, label)
            old = issuers.get(issuer.key_id)
            if old is not None and old.fingerprints != issuer.fingerprints:
                raise KeyFileMismatch(
                    f"--issuer-label {label}: other keys than those registered as {issuer.key_id}"
                )
            issuers[issuer.key_id] = issuer
    with store.transaction() as tx:
        tx.set_setting(hsmkeys.HSM_SETTING, hsmkeys.dump_token_setting(token, issuers))
    return token, issuers


def _migrating_issuers(store: Store) -> tuple[str, ...]:
    """The issuer key ids of an unfinished key migration (rule 6), else ``()``."""
    from capsim.verifier.pkcs11migrate import MIGRATION_SETTING, parse_migration

    with store.transaction() as tx:
        state = parse_migration(tx.get_setting(MIGRATION_SETTING))
    return () if state is None or state.done else state.issuers


def _token_entries(token: TokenConfig, issuers: Mapping[str, Any]) -> dict[str, KeyringEntry]:
    return {
        kid: KeyringEntry(
            key_id=kid, path=f"pkcs11:{token.token}/{i.label}", kcv=i.kcv, fingerprints=i.fingerprints
        )
        for kid, i in issuers.items()
    }


def mark_initialised(store: Store) -> None:
    """Make ``store`` usable by the verifier commands (an empty issuer-keys registry) unless
    ``init`` already prepared it."""
    with store.transaction() as tx:
        if tx.get_setting(REGISTRY_SETTING) is None:
            tx.set_setting(REGISTRY_SETTING, dump_registry({}))


def register_issuer_keys(session: VerifierSession, path: Path) -> KeyringEntry:
    """Record an issuer-keys file in the session's database (path, KCV and key fingerprints;
    never keys) and audit it (:func:`capsim.verifier.keyring.register_issuer_keys`)."""
    sealer = session.provider if session.provider.audit_seal_key_id() is not None else None
    return _register(session.store, path, sealer=sealer)


@dataclass(frozen=True, kw_only=True)
class AuditReport:
    """What :func:`check_audit` found.

    Attributes
    ----------
    records:
        Number of records read.
    problems:
        Every problem (:class:`~capsim.verifier.audit.AuditProblem`); empty = intact.
    sealed_from:
        The sealing start of the keyring file, or ``None`` when the audit is not sealed.
    last:
        The newest record (``None`` for an empty audit), for exporting a tip.
    """

    records: int
    problems: tuple[AuditProblem, ...]
    sealed_from: int | None
    last: AuditRecord | None

    @property
    def intact(self) -> bool:
        """No problem found."""
        return not self.problems


def check_audit(session: VerifierSession, *, tip: AuditTip | None = None) -> AuditReport:
    """Check the session's whole audit: chain, seals from the sealing start on, and ``tip``."""
    count = 0
    last: list[AuditRecord] = []

    def walk() -> Iterator[AuditRecord]:
        nonlocal count
        for rec in session.store.audit_records():
            count += 1
            last[:] = [rec]
            yield rec

    kf = session.keyring_file
    start = kf.sealed_from if kf is not None else session.token_sealed_from
    problems = check_chain(
        walk(),
        sealer=session.provider if start is not None else None,
        sealed_from=start,
        tip=tip,
    )
    return AuditReport(
        records=count,
        problems=problems,
        sealed_from=start,
        last=next(iter(last), None),
    )
