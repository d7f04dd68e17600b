"""Moving a software-keyed verifier onto a PKCS#11 token: ``capsim verifier keys migrate``.

A verifier that ran on issuer-keys files (:class:`~capsim.verifier.provider.SoftwareProvider`)
holds credentials whose ``key_ref`` seals the card's PAN under a key derived from the file's
IMK-AC (``sw1:…``). Once the same issuer keys are in a token (``keys import``), each
credential is re-registered with :class:`~capsim.verifier.pkcs11.Pkcs11Provider` and bound to
the new reference (``p11:…``) and PAN token. See ``docs/hsm.md``.

Theory of operation
-------------------
1. **Which issuers.** The token's issuer keys carry the key id of the software keys they
   equal (``iss-<KCV of IMK-AC>``); the issuers migrated are those registered both as files
   and in the token. :func:`start_migration` records the token and its issuers (setting
   :data:`~capsim.verifier.hsmkeys.HSM_SETTING`) and the migration (setting
   :data:`MIGRATION_SETTING`: the key ids, ``running``), audited, in one transaction. It
   refuses to start while credentials of another issuer would stay on files' keys that a
   database on the token can no longer compute. While it runs, the token keys recorded for an
   issuer may be replaced (the custodian imported wrong ones, refused by rule 3) as long as
   no credential is on them.
2. **While it runs** every session opens both providers behind :class:`MigratingProvider`:
   ``sw1:`` references compute with the files' keys, ``p11:`` references in the token, so
   every credential verifies whichever keys it is on. Enrolment (``register_card``) is
   refused until the migration ends: a card registered on either side while its other
   credentials are on the other would get another PAN token, escaping the card's replay
   floor and its one-live-credential rule.
3. **One card at a time.** The credentials of one card (one old PAN token, every PSN and
   state) move together in one transaction, so the card's replay floor (the highest
   ``last_atc`` of every credential ever bound to it) is never split between two PAN tokens.
   For each, outside the transaction: the PAN is recovered from the old reference
   (:meth:`~capsim.verifier.provider.SoftwareProvider.card_identity`), the card registered
   with the token, and the keys compared (:func:`keys_differ`, constant time): an AC for a
   sample ATC of the credential's own CVN and session-key method, and a PIN CHANGE script
   (MK-SMI and MK-SMC). A card one of whose credentials differs, or that the token cannot
   serve, is refused and left as it was. Then the rows are locked, each is rebound
   (:meth:`~capsim.verifier.store.StoreTransaction.rebind_credential`, compare-and-swap on
   ``version``; everything else, ``last_atc`` included, unchanged) and audited.
4. **Resumable and idempotent.** A credential on a ``p11:`` reference is done; a crash leaves
   each card wholly on the old or wholly on the new keys, and the next run goes on. When no
   credential of a migrated issuer is left on the files' keys, :func:`finish_migration`
   removes those files from the issuer-keys registry and marks the migration ``done``: the
   database then opens on the token alone. A run with nothing to do writes nothing.
5. No PAN, key or code is ever logged, printed or audited (audit details name key ids).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from capsim.crypto import CVN, TreeParams
from capsim.errors import CapsimError, ConfigError, KeyFileMismatch, TemporaryFailure, ValidationError
from capsim.jsonlimits import loads_limited
from capsim.verifier.audit import AuditEntry, AuditSealer
from capsim.verifier.hsmkeys import (
    HSM_SETTING,
    TokenConfig,
    TokenIssuer,
    dump_token_setting,
    parse_token_setting,
)
from capsim.verifier.keyring import REGISTRY_SETTING, dump_registry, parse_registry
from capsim.verifier.model import Credential, CredentialProfile
from capsim.verifier.pkcs11 import REF_PREFIX, Pkcs11Provider
from capsim.verifier.provider import AcFunction, CardKeys, OneAcFromFunction, SoftwareProvider
from capsim.verifier.store import Store

__all__ = [
    "MIGRATION_SETTING",
    "MigratingProvider",
    "MigrationReport",
    "MigrationState",
    "count_on_token",
    "finish_migration",
    "keys_differ",
    "migrate_credentials",
    "parse_migration",
    "software_issuer",
    "start_migration",
]

#: Store setting of a key migration: the issuer key ids moved and whether it is done.
MIGRATION_SETTING: Final = "hsm.migration"
_SOFTWARE_REF: Final = "sw1"
#: The CVN whose PIN CHANGE script compares MK-SMI and MK-SMC (ISO-2 block, a token can do it).
_SCRIPT_CHECK_CVN: Final = CVN.MC_16


@dataclass(frozen=True)
class MigrationState:
    """What :data:`MIGRATION_SETTING` records (rule 1)."""

    issuers: tuple[str, ...]
    done: bool = False

    def dump(self) -> str:
        """The setting's JSON text."""
        return json.dumps({"issuers": sorted(self.issuers), "state": "done" if self.done else "running"})


def parse_migration(raw: str | None) -> MigrationState | None:
    """The migration a database records, or ``None``."""
    if raw is None:
        return None
    try:
        doc = loads_limited(raw, what="key migration setting", error=ConfigError)
        state = doc["state"]
        if state not in ("running", "done"):
            raise ValueError(f"unknown state {state!r}")
        return MigrationState(tuple(sorted(str(k) for k in doc["issuers"])), state == "done")
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"the verifier database's key migration setting is unreadable ({exc})") from None


def software_issuer(key_ref: str) -> str | None:
    """The issuer key id of a :class:`SoftwareProvider` card reference (``sw1:<id>:…``), else ``None``.

    >>> software_issuer("sw1:iss-08D7B4:auto:AAAA"), software_issuer("p11:iss-08D7B4:auto:AAAA")
    ('iss-08D7B4', None)
    """
    parts = key_ref.split(":")
    return parts[1] if len(parts) == 4 and parts[0] == _SOFTWARE_REF else None


# ------------------------------------------------------------------------------------------------
# The provider of a database being migrated (rule 2)


class MigratingProvider(OneAcFromFunction):
    """Routes each card reference to the provider that made it (rule 2): ``sw1:`` and
    ``card:`` references to ``software``, every other one (``p11:``, the dummy) to ``token``,
    which also seals the audit. ``register_card`` is refused while the migration runs."""

    def __init__(self, token: Pkcs11Provider, software: SoftwareProvider) -> None:
        self.token = token
        self.software = software

    def __repr__(self) -> str:
        return f"<MigratingProvider token={self.token!r} software={self.software!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("MigratingProvider objects cannot be pickled")

    def _for(self, key_ref: str) -> SoftwareProvider | Pkcs11Provider:
        head = key_ref.split(":", 1)[0] if isinstance(key_ref, str) else ""
        return self.software if head in (_SOFTWARE_REF, "card") else self.token

    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        """Refused while the migration runs (rule 2): :class:`~capsim.errors.ConfigError`."""
        raise ConfigError(
            "a key migration to the token is unfinished: enrolment is paused until "
            "'capsim verifier keys migrate' completes it"
        )

    def ac_function(
        self, key_ref: str, *, cvn: int, method: str | None = None, tree: TreeParams | None = None
    ) -> AcFunction:
        """The AC function of the provider that made ``key_ref``."""
        return self._for(key_ref).ac_function(key_ref, cvn=cvn, method=method, tree=tree)

    def generate_arpc(self, key_ref: str, **kwargs: Any) -> bytes:
        """The ARPC by the provider that made ``key_ref``."""
        return self._for(key_ref).generate_arpc(key_ref, **kwargs)

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
        """The issuer script by the provider that made ``key_ref``."""
        return self._for(key_ref).build_pin_change(
            key_ref, cvn=cvn, new_pin=new_pin, current_pin=current_pin, atc=atc, arqc=arqc
        )

    def dummy_key_ref(self) -> str:
        """The token's dummy reference (the cost of the keys most cards end on)."""
        return self.token.dummy_key_ref()

    def add_issuer_keys(
        self, key_id: str, *, imk_ac: bytes, imk_smi: bytes | None = None, imk_smc: bytes | None = None
    ) -> None:
        """Issuer keys read from a file go to the software side."""
        self.software.add_issuer_keys(key_id, imk_ac=imk_ac, imk_smi=imk_smi, imk_smc=imk_smc)

    def set_audit_seal_key(self, key_id: str, key: bytes) -> None:
        """The keyring file's seal key, handed to the token."""
        self.token.set_audit_seal_key(key_id, key)

    def audit_seal_key_id(self) -> str | None:
        """The token's seal key id."""
        return self.token.audit_seal_key_id()

    def audit_seal(self, message: bytes) -> bytes:
        """The token's seal."""
        return self.token.audit_seal(message)

    def close(self) -> None:
        """Close the token's sessions."""
        self.token.close()


# ------------------------------------------------------------------------------------------------
# Starting and finishing (rules 1, 4)


def start_migration(
    store: Store, config: TokenConfig, issuers: Mapping[str, TokenIssuer], *, sealer: AuditSealer | None
) -> tuple[str, ...]:
    """Record the token, its ``issuers`` and the migration of those also registered as
    issuer-keys files (rule 1); the key ids being migrated (empty: nothing to do).

    A database already on another token, or recording other keys under one of these key ids,
    is refused (:class:`~capsim.errors.ConfigError`, :class:`~capsim.errors.KeyFileMismatch`).
    Nothing is written when everything is recorded already.
    """
    with store.transaction(sealer=sealer) as tx:
        registry = parse_registry(tx.get_setting(REGISTRY_SETTING) or "{}")
        raw_token = tx.get_setting(HSM_SETTING)
        recorded = parse_token_setting(raw_token)
        merged: dict[str, TokenIssuer] = {}
        if recorded is not None:
            old, merged = recorded[0], dict(recorded[1])
            if (old.module, old.token, old.prefix) != (config.module, config.token, config.prefix):
                raise ConfigError(
                    f"--token: this verifier runs on token {old.token!r} (prefix {old.prefix!r}); "
                    "migrate onto that one"
                )
            config = old  # keep where the recorded PIN comes from
        state = parse_migration(tx.get_setting(MIGRATION_SETTING))
        running = set(state.issuers) if state is not None and not state.done else set()
        creds = tx.list_credentials()
        for kid, issuer in issuers.items():
            known = merged.get(kid)
            if known is not None and dict(known.fingerprints) != dict(issuer.fingerprints):
                # other token keys may replace refused ones while no credential is on them
                on_them = any(c.key_ref.startswith(f"{REF_PREFIX}:{kid}:") for c in creds)
                if kid not in running or on_them:
                    raise KeyFileMismatch(
                        f"--issuer-label {issuer.label}: other keys than those recorded as {kid}"
                    )
            merged[kid] = issuer
        new = {kid for kid in issuers if kid in registry} - running
        on_files = {software_issuer(c.key_ref) for c in creds} - {None}
        stranded = sorted(str(k) for k in on_files - running - new)
        if stranded:
            raise ConfigError(
                f"credentials of issuer keys {', '.join(stranded)} would be stranded on the files' keys: "
                "import those keys into the token too and name them with --issuer-label"
            )
        setting = dump_token_setting(config, merged)
        if setting != raw_token:
            tx.set_setting(HSM_SETTING, setting)
        if new:
            running |= new
            tx.set_setting(MIGRATION_SETTING, MigrationState(tuple(sorted(running))).dump())
            tx.append_audit(
                AuditEntry(
                    event="key-migration",
                    outcome="ok",
                    reason="started",
                    details={"issuer_key_ids": ",".join(sorted(new)), "token": config.token},
                )
            )
    return tuple(sorted(running))


def finish_migration(store: Store, *, sealer: AuditSealer | None) -> bool:
    """End a running migration when no credential of its issuers is left on the files' keys
    (rule 4): their files leave the registry, the migration is ``done``; ``True`` when the
    database now runs on the token alone (also when there was nothing to finish)."""
    with store.transaction(sealer=sealer) as tx:
        state = parse_migration(tx.get_setting(MIGRATION_SETTING))
        if state is None or state.done:
            return True
        kids = set(state.issuers)
        if any(software_issuer(c.key_ref) in kids for c in tx.list_credentials()):
            return False
        registry = parse_registry(tx.get_setting(REGISTRY_SETTING) or "{}")
        tx.set_setting(REGISTRY_SETTING, dump_registry({k: v for k, v in registry.items() if k not in kids}))
        tx.set_setting(MIGRATION_SETTING, MigrationState(state.issuers, done=True).dump())
        tx.append_audit(
            AuditEntry(
                event="key-migration",
                outcome="ok",
                reason="finished",
                details={"issuer_key_ids": ",".join(state.issuers)},
            )
        )
    return True


# ------------------------------------------------------------------------------------------------
# Moving the credentials (rule 3)


def _tree(profile: CredentialProfile) -> TreeParams | None:
    if profile.session_key_method != "emv2000-tree":
        return None
    return TreeParams(
        branch_factor=profile.tree_branch_factor, height=profile.tree_height, iv=profile.tree_iv
    )


def keys_differ(
    source: SoftwareProvider, target: Pkcs11Provider, old_ref: str, new_ref: str, credential: Credential
) -> str | None:
    """Why ``new_ref`` cannot replace ``old_ref`` for ``credential`` (rule 3), or ``None``.

    Compares, in constant time, the AC of a sample transaction (the next ATC, random CDOL1
    data and UN) under the credential's CVN and session-key method, then a PIN CHANGE script
    of a fixed CVN (MK-SMI and MK-SMC). Reasons: ``"keys-differ"``, ``"script-keys-differ"``
    or ``"unsupported"`` (the token cannot compute this card's cryptograms).
    """
    p = credential.profile
    atc = ((credential.last_atc + 1) % 0x10000).to_bytes(2, "big")
    cdol, un = secrets.token_bytes(29), secrets.token_bytes(4)
    iad = p.iad_variants[0] if p.iad_variants else bytes(32)
    kw: dict[str, Any] = {"cvn": p.cvn, "method": p.session_key_method, "tree": _tree(p)}
    try:
        new = target.ac_function(new_ref, **kw)(cdol, p.aip, atc, iad, un)
    except CapsimError:
        return "unsupported"
    old = source.ac_function(old_ref, **kw)(cdol, p.aip, atc, iad, un)
    if not hmac.compare_digest(old, new):
        return "keys-differ"
    arqc = secrets.token_bytes(8)
    scripts: list[bytes | None] = []
    for provider, ref in ((source, old_ref), (target, new_ref)):
        try:
            scripts.append(
                provider.build_pin_change(ref, cvn=_SCRIPT_CHECK_CVN, new_pin="0000", atc=atc, arqc=arqc)
            )
        except ConfigError:  # no MK-SMI/MK-SMC for this card
            scripts.append(None)
    a, b = scripts
    if (a is None) != (b is None) or (a is not None and b is not None and not hmac.compare_digest(a, b)):
        return "script-keys-differ"
    return None


@dataclass
class MigrationReport:
    """What :func:`migrate_credentials` did (credential ids and reasons only)."""

    rebound: list[str] = field(default_factory=list)
    already: int = 0
    refused: dict[str, str] = field(default_factory=dict)


def migrate_credentials(
    store: Store,
    source: SoftwareProvider,
    target: Pkcs11Provider,
    *,
    issuers: Collection[str],
    sealer: AuditSealer | None,
    progress: Callable[[str], None] | None = None,
) -> MigrationReport:
    """Rebind every credential of the issuers ``issuers`` from ``source``'s keys to
    ``target``'s, one card per transaction (rule 3); ``progress`` is called with each
    credential id once its card committed (an exception from it stops the run there: what
    committed stays, the next run goes on, rule 4)."""
    kids = set(issuers)
    report = MigrationReport()
    with store.transaction() as tx:
        creds = tx.list_credentials()
    cards: dict[str, list[Credential]] = {}
    for c in creds:
        if c.key_ref.startswith(f"{REF_PREFIX}:"):
            report.already += 1
        elif software_issuer(c.key_ref) in kids:
            cards.setdefault(c.pan_token, []).append(c)
    for group in cards.values():
        plans: dict[str, tuple[str, CardKeys]] = {}
        refused: dict[str, str] = {}
        for c in group:
            ident = source.card_identity(c.key_ref)
            new = target.register_card(
                issuer_key_id=ident.issuer_key_id, pan=ident.pan, psn=ident.psn, derivation=ident.derivation
            )
            del ident
            reason = keys_differ(source, target, c.key_ref, new.key_ref, c)
            if reason is not None:
                refused[c.credential_id] = reason
            plans[c.credential_id] = (c.key_ref, new)
        if refused:
            for c in group:
                report.refused[c.credential_id] = refused.get(c.credential_id, "card-refused")
            continue
        try:
            done = _rebind_card(store, plans, sealer=sealer)
        except ValidationError:  # another live credential of the card is on the token already
            for cid in plans:
                report.refused[cid] = "live-duplicate"
            continue
        for cid in done:
            report.rebound.append(cid)
            if progress is not None:
                progress(cid)
    return report


def count_on_token(store: Store) -> int:
    """How many credentials are on references of the token (``p11:…``)."""
    with store.transaction() as tx:
        return sum(c.key_ref.startswith(f"{REF_PREFIX}:") for c in tx.list_credentials())


def _rebind_card(
    store: Store, plans: Mapping[str, tuple[str, CardKeys]], *, sealer: AuditSealer | None
) -> list[str]:
    """Lock one card's credentials and rebind those still on their old reference (rule 3)."""
    done: list[str] = []
    with store.transaction(sealer=sealer) as tx:
        for cred in tx.lock_credentials(list(plans)):
            old_ref, new = plans[cred.credential_id]
            if cred.key_ref != old_ref:
                continue  # moved by a concurrent run
            kid = software_issuer(old_ref)
            if (
                tx.rebind_credential(
                    cred.credential_id,
                    key_ref=new.key_ref,
                    pan_token=new.pan_token,
                    expected_version=cred.version,
                )
                != 1
            ):
                raise TemporaryFailure("a credential changed during the key migration; run it again")
            tx.append_audit(
                AuditEntry(
                    event="key-migration",
                    outcome="ok",
                    reason="rebound",
                    credential_id=cred.credential_id,
                    details={"issuer_key_id": str(kid), "to": "pkcs11"},
                )
            )
            done.append(cred.credential_id)
    return done
