"""``capsim verifier …`` and ``capsim verify``: the bank-side verifier from the command line.

Reference: ``docs/cli.md``; behaviour: verifier.md §1–§2 and architecture.md §5. The database,
keys and audit-seal plumbing is the library's (:mod:`capsim.verifier.session`,
:mod:`capsim.verifier.keyring`); the command line parses options and prints results.

This module holds what every verifier command shares (``--db``/``--keyring``/``--json``, the
session, the output helpers), the ``verifier`` group itself, ``verifier init`` and ``capsim
verify``. The other subcommands live beside it, one module per seam, and are attached to the
group by the command table in :mod:`capsim.cli`:

- :mod:`capsim.cli.verifier_enrolment`: ``user add|list``, ``activation-code``, ``enroll``;
- :mod:`capsim.cli.verifier_operations`: ``operation new``;
- :mod:`capsim.cli.verifier_credentials`: ``credential …`` (the credential lifecycle);
- :mod:`capsim.cli.verifier_audit`: ``audit`` (listing, ``--check``, ``--export-tip``);
- :mod:`capsim.cli.verifier_keys` and :mod:`capsim.cli.verifier_serve`: ``keys …``,
  ``init --pkcs11``, ``serve``, ``client …``.

Theory of operation
-------------------
1. Every command takes ``--db URL``, ``--keyring FILE`` and ``--json``. ``URL`` is a SQLite
   path (or ``sqlite:///PATH``) or a ``postgresql://`` URL (:mod:`capsim.verifier.dburl`); the
   default is ``verifier.db`` in the data directory (:func:`capsim.cli._common.data_dir`), and
   the ``CAPSIM_DB`` environment variable overrides the default. The keyring file (the audit
   seal key, never in the database) defaults to ``<db>.keyring.json`` beside a SQLite file and
   to a file in the data directory for PostgreSQL; ``CAPSIM_KEYRING`` overrides it. ``--json``
   prints one JSON object on stdout instead of text.
2. ``verifier init`` creates (or migrates) the database, records the policy, starts sealing
   the audit (writing the keyring file) and registers issuer-keys files (the files ``capsim
   card new`` writes). The database never holds key bytes: per issuer key id ``iss-<KCV of
   IMK-AC>`` it keeps the file's absolute path, that KCV and a fingerprint of every key.
   Commands that need keys read the files again and check every key against its fingerprint
   (exit 12 on a mismatch).
3. Every other command refuses a database that ``init`` has not prepared, and never creates a
   SQLite file by accident (a mistyped ``--db`` is an error, not a new empty verifier).
4. ``verify`` never prints the code. Every refusal is the same line on stderr ("code
   rejected") and exit code 10 (verifier.md V30); a malformed code is an input error (exit
   13, nothing counted, V7); a storage problem is a temporary failure (exit 11).
5. Enrolment reads PAN, PSN and profile from the card file (as a bank's card-management system
   would hand them over) and picks the issuer keys whose KCV matches the card's. No PAN is
   printed: credentials show only the last four digits.
6. ``audit --check`` reports every deleted, moved, edited, malformed, unsealed or wrongly
   sealed record, and with ``--tip FILE`` a truncated or rewritten chain; any problem is exit 14.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar, cast

import click

from capsim.cards import CardProfile
from capsim.cli._common import JSON_ERROR_EXTRA, data_dir, handle_errors
from capsim.crypto import CVN
from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.storage import load_issuer_keys, read_card_file
from capsim.verifier.dburl import DbKind, open_store, parse_db_url
from capsim.verifier.keyring import (
    REGISTRY_SETTING,
    KeyringEntry,
    default_keyring_path,
    issuer_key_id,
    parse_registry,
)
from capsim.verifier.model import Credential, User
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.session import (
    VerifierSession,
    mark_initialised,
    register_issuer_keys,
    sqlite_file,
)
from capsim.verifier.session import open_session as _open_session

__all__ = [
    "DEFAULT_DB_NAME",
    "KEYRING_SETTING",
    "KeyringEntry",
    "VerifierSession",
    "card_issuer_key",
    "default_db",
    "default_keyring",
    "issuer_key_id",
    "mark_initialised",
    "open_session",
    "register_issuer_keys",
    "verifier",
    "verify",
]

#: File name of the default SQLite database inside the data directory.
DEFAULT_DB_NAME: Final = "verifier.db"
#: Store setting holding the registered issuer-keys files (kept here for one release; the
#: library's name is :data:`capsim.verifier.keyring.REGISTRY_SETTING`).
KEYRING_SETTING: Final = REGISTRY_SETTING
#: The ``--keyring`` / ``CAPSIM_KEYRING`` value of the running command.
_KEYRING_OPTION: ContextVar[str | None] = ContextVar("capsim_keyring_option", default=None)
# Moved to capsim.verifier.keyring; importable from here for one release.
_parse_keyring = parse_registry

P = ParamSpec("P")
R = TypeVar("R")


def card_issuer_key(session: VerifierSession, card_path: Path) -> tuple[CardProfile, str]:
    """A card file's profile and the registered issuer key id that matches its IMK-AC check value.

    The card file is read here, on the command line: the verifier itself never reads card files.
    """
    profile, _state = read_card_file(card_path)
    kid = "iss-" + profile.kcv_imk_ac.hex().upper()
    if kid not in session.keyring:
        raise ConfigError(
            f"--card: the card's issuer keys ({kid}) are not registered; "
            "run 'capsim verifier init --issuer-keys FILE' with its issuer-keys file"
        )
    return profile, kid


def default_db() -> str:
    """The default ``--db``: ``$CAPSIM_DB``, else ``verifier.db`` in the data directory."""
    return str(data_dir() / DEFAULT_DB_NAME)


def default_keyring(url: str) -> Path | None:
    """The default keyring file of database ``url`` (``None`` for ``memory:``)."""
    return default_keyring_path(url, data_dir(), sqlite_path=sqlite_file(url))


@contextmanager
def open_session(
    db: str | None,
    *,
    create: bool = False,
    keys: bool = False,
    policy: VerifierPolicy | None = None,
    allow_memory: bool = False,
    keyring: str | None = None,
    sealing: str = "required",
) -> Iterator[VerifierSession]:
    """Open the verifier database ``db`` (default :func:`default_db`) for one command.

    The keyring file is ``keyring``, else the command's ``--keyring``/``CAPSIM_KEYRING``, else
    :func:`default_keyring`. See :func:`capsim.verifier.session.open_session` for the rest.
    """
    url = db or default_db()
    if create and url == default_db():
        Path(url).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    chosen = keyring or _KEYRING_OPTION.get()
    path = Path(chosen) if chosen else default_keyring(url)
    with _open_session(
        url,
        keyring_path=path,
        create=create,
        keys=keys,
        policy=policy,
        allow_memory=allow_memory,
        sealing=sealing,
    ) as session:
        yield session


# ------------------------------------------------------------------------------------------------
# Output helpers


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _emit(as_json: bool, obj: Mapping[str, Any], lines: list[str] | Callable[[], list[str]]) -> None:
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
        return
    for line in lines() if callable(lines) else lines:
        click.echo(line)


def _user_view(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "customer_id": user.customer_id,
        "role": str(user.role.value),
        "created_at": _iso(user.created_at),
        "created_by": user.created_by,
        "disabled": user.disabled,
    }


def _credential_view(c: Credential) -> dict[str, Any]:
    return {
        "credential_id": c.credential_id,
        "user_id": c.user_id,
        "customer_id": c.customer_id,
        "state": str(c.state.value),
        "pan_last4": c.pan_last4,
        "psn": c.psn,
        "reader_profile": c.profile.reader_profile,
        "cvn": _cvn_name(c.profile.cvn),
        "last_atc": c.last_atc,
        "fail_count": c.fail_count,
        "max_fail": c.max_fail,
        "locked_until": _iso(c.locked_until),
        "label": c.label,
        "created_at": _iso(c.created_at),
        "replaces": c.replaces,
        "replaced_by": c.replaced_by,
    }


def _cvn_name(cvn: int) -> str:
    try:
        return CVN(cvn).name
    except ValueError:
        return f"{cvn:02X}"


def _credential_line(c: Credential) -> str:
    lock = f" locked until {c.locked_until.isoformat()}" if c.locked_until else ""
    return (
        f"{c.credential_id}  {c.state.value:9} user {c.user_id}  card ****{c.pan_last4} PSN {c.psn}  "
        f"{c.profile.reader_profile}  last ATC {c.last_atc}  failures {c.fail_count}/{c.max_fail}{lock}"
    )


def _read_line_from_stdin(what: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise ValidationError(f"{what}: expected one line on standard input ('-'), got nothing")
    return line.rstrip("\r\n")


def _request_id(value: str | None) -> str:
    return value if value is not None else "cli-" + secrets.token_hex(12)


@contextmanager
def _json_rejection(as_json: bool, key: str) -> Iterator[None]:
    """On a rejected code, add ``{key: false}`` to the JSON error object (``--json``) and re-raise."""
    try:
        yield
    except InvalidCode:
        if as_json:  # handle_errors prints the JSON error object with this key
            click.get_current_context().meta[JSON_ERROR_EXTRA] = {key: False}
        raise


def _emit_credential_state(as_json: bool, cred: Credential) -> None:
    _emit(as_json, _credential_view(cred), [f"credential {cred.credential_id}: {cred.state.value}"])


def _db_options(func: Callable[P, R]) -> Callable[P, R]:
    """``--db URL``, ``--keyring FILE`` and ``--json`` on every command."""

    @functools.wraps(func)
    def wrapper(*args: Any, keyring: str | None = None, **kwargs: Any) -> Any:
        from capsim.cli import remote

        if remote.is_remote(kwargs.get("db")):  # a verifier service, not a database
            return remote.run_remote(kwargs)
        token = _KEYRING_OPTION.set(keyring)
        try:
            return func(*args, **kwargs)
        finally:
            _KEYRING_OPTION.reset(token)

    command = click.option(
        "--keyring",
        "keyring",
        metavar="FILE",
        envvar="CAPSIM_KEYRING",
        help="Keyring file holding the audit seal key (never in the database) [default: "
        "DB.keyring.json beside a SQLite file; in the data directory for PostgreSQL; env CAPSIM_KEYRING].",
    )(wrapper)
    command = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(
        command
    )
    command = click.option(
        "--db",
        "db",
        metavar="URL",
        envvar="CAPSIM_DB",
        help="Verifier database: a SQLite path, sqlite:///PATH or postgresql://…, or a verifier "
        "service's http(s):// URL (API key in env CAPSIM_API_KEY) "
        "[default: verifier.db in the capsim data directory; env CAPSIM_DB].",
    )(command)
    return cast("Callable[P, R]", command)


_AS_OPTION = click.option(
    "--as",
    "acting_user",
    metavar="ADMIN",
    help="Act as this customer administrator (default: the bank's own operator).",
)
_READER_PROFILE_OPTION = click.option(
    "--reader-profile", help="Reader profile of the issuer [chosen by the card's AID]."
)
_REQUEST_ID_OPTION = click.option("--request-id", help="Idempotency key [random].")


# ------------------------------------------------------------------------------------------------
# capsim verifier …


@click.group("verifier")
def verifier() -> None:
    """The bank-side verifier: users, enrolment, operations, credentials and audit."""


@verifier.command("init")
@click.option(
    "--issuer-keys",
    "issuer_keys",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Issuer-keys file written by 'capsim card new' (repeatable). Only its path and KCV are stored.",
)
@click.option("--max-fail", type=click.IntRange(1, 100), help="Consecutive failures before a lock [5].")
@click.option("--atc-window", type=click.IntRange(1, 1024), help="ATC look-ahead window W [16].")
@click.option("--operation-ttl", type=click.IntRange(1, 86_400), help="Operation lifetime in seconds [120].")
@click.option("--psd2/--no-psd2", default=None, help="Apply the PSD2 profile (max-fail <= 5, TTL <= 300 s).")
@_db_options
@handle_errors
def init_command(
    *,
    issuer_keys: tuple[Path, ...],
    max_fail: int | None,
    atc_window: int | None,
    operation_ttl: int | None,
    psd2: bool | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Create or upgrade a verifier database and register issuer keys (repeatable, idempotent)."""
    for path in issuer_keys:  # refuse a bad file before anything is created
        load_issuer_keys(path)
    url = db or default_db()
    changes: dict[str, Any] = {}
    if max_fail is not None:
        changes["max_fail"] = max_fail
        changes["max_attempts_per_operation"] = min(3, max_fail)
    if atc_window is not None:
        changes["atc_window"] = atc_window
        changes["max_atc_gap"] = atc_window
    if operation_ttl is not None:
        changes["operation_ttl_s"] = operation_ttl
    if psd2 is not None:
        changes["psd2"] = psd2
    policy = None
    if changes:
        policy = dataclasses.replace(_stored_policy(url), **changes)
    with open_session(url, create=True, policy=policy) as session:
        entries = [register_issuer_keys(session, p) for p in issuer_keys]
        with session.store.transaction() as tx:
            keyring = parse_registry(tx.get_setting(REGISTRY_SETTING) or "{}")
        pol = json.loads(session.verifier.policy.to_json())
        kf = session.keyring_file
        obj = {
            "db": session.shown_url,
            "kind": str(parse_db_url(url).kind.value),
            "registered": [e.to_dict() for e in entries],
            "issuer_keys": [e.to_dict() for e in keyring.values()],
            "policy": pol,
            "keyring": None if kf is None or kf.path is None else str(kf.path),
            "audit_seal_key_id": None if kf is None else kf.seal_key_id,
            "audit_sealed_from": None if kf is None else kf.sealed_from,
        }
        lines = [f"verifier database ready: {session.shown_url}"]
        if kf is not None:
            lines.append(
                f"audit sealed from record {kf.sealed_from} with key {kf.seal_key_id} "
                f"(keyring file {kf.path or 'in memory'}; keep a backup of it)"
            )
        lines += [f"issuer keys {e.key_id} registered from {e.path}" for e in entries]
        if not keyring:
            lines.append("no issuer keys registered yet: add them with --issuer-keys FILE")
        else:
            lines.append("issuer keys: " + ", ".join(sorted(keyring)))
        lines.append(
            f"policy: max-fail {pol['max_fail']}, ATC window {pol['atc_window']}, "
            f"operation TTL {pol['operation_ttl_s']} s{', PSD2' if pol['psd2'] else ''}"
        )
        _emit(as_json, obj, lines)


def _stored_policy(url: str) -> VerifierPolicy:
    parsed = parse_db_url(url)
    if parsed.kind is DbKind.SQLITE and not Path(parsed.target).exists():
        return VerifierPolicy()
    store = open_store(url)
    try:
        with store.transaction() as tx:
            stored = tx.get_setting("policy")
    finally:
        store.close()
    return VerifierPolicy.from_json(stored) if stored else VerifierPolicy()


# ------------------------------------------------------------------------------------------------
# capsim verify


@click.command("verify")
@click.argument("target", metavar="OPERATION")
@click.argument("code", metavar="CODE")
@click.option("--request-id", help="Idempotency key: a retry with the same key returns the recorded outcome.")
@_db_options
@handle_errors
def verify(*, target: str, code: str, request_id: str | None, db: str | None, as_json: bool) -> None:
    """Verify CODE ('-': one line of stdin) for OPERATION (or, for an Identify login, a
    credential id). Exit 0 on accept; every reject is "code rejected" with exit 10."""
    presented = _read_line_from_stdin("CODE") if code == "-" else code
    rid = _request_id(request_id)
    with open_session(db, keys=True) as session:
        with _json_rejection(as_json, "accepted"):
            acc = session.verifier.verify(target, presented, request_id=rid)
        obj = {
            "accepted": True,
            "credential_id": acc.credential_id,
            "operation_id": acc.operation_id,
            "mode": str(acc.mode.value),
            "atc": acc.atc,
            "request_id": acc.request_id,
            "accepted_at": _iso(acc.accepted_at),
        }
        _emit(
            as_json,
            obj,
            [f"accepted: {acc.mode.value} for credential {acc.credential_id} (ATC {acc.atc})"],
        )
