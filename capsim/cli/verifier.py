"""``capsim verifier …`` and ``capsim verify``: the bank-side verifier from the command line.

Reference: ``docs/cli.md``; behaviour: verifier.md §1–§2 and architecture.md §5. The database,
keys and audit-seal plumbing is the library's (:mod:`capsim.verifier.session`,
:mod:`capsim.verifier.keyring`); this module parses options and prints results.

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

from capsim.cap import validate_tds_fields
from capsim.cards import CardProfile
from capsim.cli._common import JSON_ERROR_EXTRA, data_dir, handle_errors, write_tip
from capsim.crypto import CVN
from capsim.errors import AuditTampered, ConfigError, InvalidCode, StateFileError, ValidationError
from capsim.storage import load_issuer_keys, read_card_file
from capsim.verifier.audit import AuditProblem, AuditRecord, AuditTip
from capsim.verifier.dburl import DbKind, open_store, parse_db_url
from capsim.verifier.keyring import (
    REGISTRY_SETTING,
    KeyringEntry,
    default_keyring_path,
    issuer_key_id,
    parse_registry,
)
from capsim.verifier.model import Credential, Operation, User
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.session import (
    AuditReport,
    VerifierSession,
    check_audit,
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


def _operation_view(op: Operation) -> dict[str, Any]:
    return {
        "operation_id": op.operation_id,
        "credential_id": op.credential_id,
        "mode": str(op.mode.value),
        "challenge": op.challenge or None,
        "amount_minor": op.amount_minor,
        "currency": op.currency,
        "payee": op.payee,
        "fields": list(op.tds_fields),
        "expires_at": _iso(op.expires_at),
        "txn_digest": op.txn_digest.hex(),
    }


def _audit_view(rec: AuditRecord) -> dict[str, Any]:
    if rec.malformed:
        return {"seq": rec.seq, "malformed": rec.malformed}
    e = rec.entry
    return {
        "seq": rec.seq,
        "at": _iso(rec.at),
        "event": e.event,
        "outcome": e.outcome,
        "reason": e.reason,
        "request_id": e.request_id,
        "credential_id": e.credential_id,
        "operation_id": e.operation_id,
        "mode": e.mode,
        "atc": e.atc,
        "node": e.node,
        "duration_us": e.duration_us,
        "details": dict(e.details),
        "record_hash": rec.record_hash.hex(),
        "sealed": bool(rec.seal),
    }


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


# -- users -------------------------------------------------------------------------------------------
@verifier.group("user")
def user_group() -> None:
    """Users and customer accounts."""


@user_group.command("add")
@click.argument("user_id", metavar="USER")
@click.option("--customer", "customer_id", metavar="ACCOUNT", help="Customer account [cu-USER].")
@click.option("--admin", is_flag=True, help="Make the user an administrator of the account.")
@_AS_OPTION
@_db_options
@handle_errors
def user_add_command(
    *,
    user_id: str,
    customer_id: str | None,
    admin: bool,
    acting_user: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Create USER. The first user of a new customer account is its administrator; with
    --as ADMIN an administrator adds a secondary user to its own account."""
    with open_session(db) as session:
        user = session.verifier.add_user(
            user_id, customer_id=customer_id, admin=True if admin else None, acting_user=acting_user
        )
        _emit(
            as_json,
            _user_view(user),
            [f"user {user.user_id} created in customer account {user.customer_id} ({user.role.value})"],
        )


@user_group.command("list")
@click.option("--customer", "customer_id", metavar="ACCOUNT", help="Only this customer account.")
@_db_options
@handle_errors
def user_list_command(*, customer_id: str | None, db: str | None, as_json: bool) -> None:
    """List users."""
    with open_session(db) as session:
        users = session.verifier.list_users(customer_id)
        _emit(
            as_json,
            {"users": [_user_view(u) for u in users]},
            [f"{u.user_id}  account {u.customer_id}  {u.role.value}" for u in users] or ["no users"],
        )


# -- activation and enrolment ------------------------------------------------------------------------
@verifier.command("activation-code")
@click.argument("user_id", metavar="USER")
@click.option("--ttl", "ttl_s", type=click.IntRange(30, 30 * 86_400), help="Validity in seconds [86400].")
@_AS_OPTION
@_db_options
@handle_errors
def activation_code_command(
    *, user_id: str, ttl_s: int | None, acting_user: str | None, db: str | None, as_json: bool
) -> None:
    """Issue a single-use activation code for USER (hand it to the user out of band)."""
    with open_session(db) as session:
        act = session.verifier.issue_activation_code(user_id, acting_user=acting_user, ttl_s=ttl_s)
        _emit(
            as_json,
            {"activation_code": act.code, "user_id": act.user_id, "expires_at": _iso(act.expires_at)},
            [f"activation code for {act.user_id}: {act.code} (single use, expires {_iso(act.expires_at)})"],
        )


@verifier.command("enroll")
@click.option(
    "--activation-code",
    "activation",
    required=True,
    metavar="CODE",
    help="The user's activation code, or '-' for stdin.",
)
@click.option(
    "--card",
    "card_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The card file (PAN, PSN and profile are read from it; its keys are not used).",
)
@click.option(
    "--code",
    "first_code",
    metavar="CODE",
    help="The card's first Identify code, or '-' for stdin; it activates the credential. "
    "Without it the credential stays pending.",
)
@_READER_PROFILE_OPTION
@click.option("--label", default="", help="A free-text label for the credential.")
@_REQUEST_ID_OPTION
@_db_options
@handle_errors
def enroll_command(
    *,
    activation: str,
    card_path: Path,
    first_code: str | None,
    reader_profile: str | None,
    label: str,
    request_id: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Bind a card to the user of an activation code (its first Identify code activates it)."""
    if activation == "-":
        activation = _read_line_from_stdin("--activation-code")
    if first_code == "-":
        first_code = _read_line_from_stdin("--code")
    with open_session(db, keys=True) as session:
        profile, kid = card_issuer_key(session, card_path)
        with _json_rejection(as_json, "enrolled"):
            cred = session.verifier.enroll_card(
                activation,
                profile,
                issuer_key_id=kid,
                first_code=first_code,
                request_id=None if first_code is None else _request_id(request_id),
                reader_profile=reader_profile,
                label=label,
            )
        view = _credential_view(cred)
        _emit(
            as_json,
            view,
            [
                f"credential {cred.credential_id} for user {cred.user_id}: card ****{cred.pan_last4} "
                f"PSN {cred.psn}, {cred.state.value}"
                + (f" (ATC {cred.last_atc})" if first_code is not None else " (needs its first code)")
            ],
        )


# -- operations --------------------------------------------------------------------------------------
@verifier.group("operation")
def operation_group() -> None:
    """Operations: single-use, bound challenges for one credential."""


@operation_group.command("new")
@click.argument("credential_id", metavar="CREDENTIAL")
@click.option(
    "--mode",
    required=True,
    type=click.Choice(["identify", "respond", "sign", "tds"]),
    help="CAP function the user runs on the reader.",
)
@click.option("--amount", help="Sign/TDS: amount in major units (15.00) or minor units without a dot.")
@click.option("--currency", help="Sign/TDS: ISO 4217 code (EUR or 978).")
@click.option("--payee", help="Payee (free text, bound into the operation).")
@click.option("--field", "fields", multiple=True, help="TDS: a field of 1-10 digits (repeat 1-10 times).")
@click.option("--reference", help="Sign: a caller-supplied payee reference (<= 8 digits) as the challenge.")
@click.option("--payment", is_flag=True, help="A payment approval (PSD2 dynamic-linking rules apply).")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 86_400), help="Lifetime in seconds [policy].")
@_db_options
@handle_errors
def operation_new_command(
    *,
    credential_id: str,
    mode: str,
    amount: str | None,
    currency: str | None,
    payee: str | None,
    fields: tuple[str, ...],
    reference: str | None,
    payment: bool,
    ttl_s: int | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Create an operation for CREDENTIAL; show the challenge the user types into the reader."""
    if fields:
        validate_tds_fields(fields, option="--field")  # named as typed: "--field #2"
    with open_session(db) as session:
        op = session.verifier.issue_operation(
            credential_id,
            mode=mode,
            reference=reference,
            amount=amount,
            currency=currency,
            payee=payee,
            fields=list(fields) if fields else None,
            payment=payment,
            ttl_s=ttl_s,
        )
        lines = [f"operation {op.operation_id} ({op.mode.value}), expires {_iso(op.expires_at)}"]
        if op.challenge:
            lines.append(f"challenge: {op.challenge}")
        if op.amount_minor is not None:
            lines.append(f"amount: {op.amount_minor} minor units, currency {op.currency or '-'}")
        if op.tds_fields:
            lines.append("fields: " + " ".join(op.tds_fields))
        _emit(as_json, _operation_view(op), lines)


# -- credentials -------------------------------------------------------------------------------------
@verifier.group("credential")
def credential_group() -> None:
    """Credentials (enrolled cards): list, activate, suspend, resume, unlock, revoke, lost,
    replace, resync, advance-floor."""


@credential_group.command("list")
@click.option("--user", "user_id", metavar="USER", help="Only this user's credentials.")
@_AS_OPTION
@_db_options
@handle_errors
def credential_list_command(
    *, user_id: str | None, acting_user: str | None, db: str | None, as_json: bool
) -> None:
    """List credentials (of one user, or of every user)."""
    with open_session(db) as session:
        v = session.verifier
        if user_id is not None:
            creds = v.list_credentials(user_id, acting_user=acting_user)
        else:
            users = v.list_users()
            if acting_user is not None:
                admin = v.get_user(acting_user)
                if admin is None:
                    raise ValidationError(f"--as: no user {acting_user!r}")
                users = [u for u in users if u.customer_id == admin.customer_id]
            creds = [c for u in users for c in v.list_credentials(u.user_id, acting_user=acting_user)]
        creds.sort(key=lambda c: (c.user_id, c.created_at, c.credential_id))
        _emit(
            as_json,
            {"credentials": [_credential_view(c) for c in creds]},
            [_credential_line(c) for c in creds] or ["no credentials"],
        )


def _lifecycle_command(name: str, doc: str) -> None:
    @credential_group.command(name, help=doc)
    @click.argument("credential_id", metavar="CREDENTIAL")
    @click.option("--reason", default="", help="Reason recorded in the audit.")
    @_AS_OPTION
    @_db_options
    @handle_errors
    def command(
        *, credential_id: str, reason: str, acting_user: str | None, db: str | None, as_json: bool
    ) -> None:
        with open_session(db) as session:
            v = session.verifier
            if name == "unlock":
                cred = v.unlock(credential_id, acting_user=acting_user, reason=reason)
            else:
                action = {"suspend": v.suspend, "resume": v.resume, "revoke": v.revoke}[name]
                cred = action(credential_id, acting_user=acting_user, reason=reason)
            _emit_credential_state(as_json, cred)


@credential_group.command("activate")
@click.argument("credential_id", metavar="CREDENTIAL")
@click.option(
    "--code",
    "code",
    metavar="CODE",
    help="A valid Identify code of the card ('-' for stdin); without it, an administrator act.",
)
@_REQUEST_ID_OPTION
@_AS_OPTION
@_db_options
@handle_errors
def credential_activate_command(
    *,
    credential_id: str,
    code: str | None,
    request_id: str | None,
    acting_user: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Activate a pending CREDENTIAL (pending -> active) with its first code or by an admin act."""
    if code == "-":
        code = _read_line_from_stdin("--code")
    with open_session(db, keys=code is not None) as session:
        v = session.verifier
        if code is None:
            cred = v.admin_activate(credential_id, acting_user=acting_user)
        else:
            with _json_rejection(as_json, "activated"):
                v.activate(credential_id, code, request_id=_request_id(request_id))
            found = v.get_credential(credential_id)
            if found is None:  # pragma: no cover - activate accepted it
                raise ValidationError(f"credential_id: no credential {credential_id!r}")
            cred = found
        _emit_credential_state(as_json, cred)


def _replacement(
    session: VerifierSession, card_path: Path, reader_profile: str | None
) -> dict[str, Any]:
    from capsim.verifier.service import credential_profile_from_card

    profile, kid = card_issuer_key(session, card_path)
    return {
        "pan": profile.pan,
        "psn": profile.psn,
        "issuer_key_id": kid,
        "derivation": str(profile.key_derivation.value),
        "profile": credential_profile_from_card(profile, reader_profile=reader_profile),
    }


@credential_group.command("replace")
@click.argument("credential_id", metavar="CREDENTIAL")
@click.option(
    "--card",
    "card_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The new card's file (PAN, PSN and profile are read from it).",
)
@_READER_PROFILE_OPTION
@_AS_OPTION
@_db_options
@handle_errors
def credential_replace_command(
    *,
    credential_id: str,
    card_path: Path,
    reader_profile: str | None,
    acting_user: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Reissue: CREDENTIAL becomes 'replaced' and the new card's credential is created 'pending'
    (activate it with its first code), in one transaction."""
    with open_session(db, keys=True) as session:
        new = session.verifier.replace(
            credential_id, acting_user=acting_user, **_replacement(session, card_path, reader_profile)
        )
        _emit(
            as_json,
            _credential_view(new),
            [f"credential {credential_id}: replaced by {new.credential_id} (card ****{new.pan_last4} "
             f"PSN {new.psn}, {new.state.value})"],
        )


@credential_group.command("lost")
@click.argument("credential_id", metavar="CREDENTIAL")
@click.option(
    "--replacement-card",
    "card_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Also create the replacement card's credential ('pending'), in the same transaction.",
)
@_READER_PROFILE_OPTION
@_AS_OPTION
@_db_options
@handle_errors
def credential_lost_command(
    *,
    credential_id: str,
    card_path: Path | None,
    reader_profile: str | None,
    acting_user: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Report CREDENTIAL's card lost: its codes are refused from now on (verifier.md V33)."""
    with open_session(db, keys=card_path is not None) as session:
        v = session.verifier
        if card_path is None:
            v.report_lost(credential_id, acting_user=acting_user)
            old = v.get_credential(credential_id)
            state = "lost" if old is None else str(old.state.value)
            _emit(
                as_json,
                {"credential_id": credential_id, "state": state, "replacement": None},
                [f"credential {credential_id}: {state}"],
            )
            return
        r = _replacement(session, card_path, reader_profile)
        new = v.report_lost(
            credential_id,
            replacement_pan=r["pan"],
            replacement_psn=r["psn"],
            issuer_key_id=r["issuer_key_id"],
            derivation=r["derivation"],
            profile=r["profile"],
            acting_user=acting_user,
        )
        if new is None:  # pragma: no cover - a replacement was requested
            raise ValidationError("--replacement-card: no replacement was created")
        _emit(
            as_json,
            {"credential_id": credential_id, "state": "replaced", "replacement": _credential_view(new)},
            [f"credential {credential_id}: lost, replaced by {new.credential_id} ({new.state.value})"],
        )


@credential_group.command("resync")
@click.argument("credential_id", metavar="CREDENTIAL")
@click.argument("codes", metavar="CODE...", nargs=-1, required=True)
@_REQUEST_ID_OPTION
@_db_options
@handle_errors
def credential_resync_command(
    *, credential_id: str, codes: tuple[str, ...], request_id: str | None, db: str | None, as_json: bool
) -> None:
    """Resynchronise CREDENTIAL whose card ran beyond the ATC window, with consecutive Identify
    codes (2 by policy; '-' reads them from stdin, one per line). Failures count (V34)."""
    presented = [_read_line_from_stdin("CODE") if c == "-" else c for c in codes]
    with open_session(db, keys=True) as session:
        with _json_rejection(as_json, "resynchronised"):
            atc = session.verifier.resync(credential_id, presented, request_id=_request_id(request_id))
        _emit(
            as_json,
            {"resynchronised": True, "credential_id": credential_id, "last_atc": atc},
            [f"credential {credential_id}: resynchronised, last ATC {atc}"],
        )


@credential_group.command("advance-floor")
@click.argument("credential_id", metavar="CREDENTIAL")
@click.argument("atc", metavar="ATC", type=click.IntRange(0, 0xFFFF))
@_db_options
@handle_errors
def credential_advance_floor_command(*, credential_id: str, atc: int, db: str | None, as_json: bool) -> None:
    """Raise CREDENTIAL's ATC floor to ATC (from a payment authorisation that used the same
    counter); never lowers it, never counts a failure (V36)."""
    with open_session(db) as session:
        last = session.verifier.advance_floor(credential_id, atc)
        _emit(
            as_json,
            {"credential_id": credential_id, "last_atc": last},
            [f"credential {credential_id}: last ATC {last}"],
        )


_lifecycle_command("suspend", "Suspend CREDENTIAL (active -> suspended; codes are refused).")
_lifecycle_command("resume", "Resume a suspended CREDENTIAL (suspended -> active).")
_lifecycle_command("unlock", "Clear CREDENTIAL's temporary lock and failure counters; unblock it.")
_lifecycle_command("revoke", "Revoke CREDENTIAL for good (terminal).")


# -- audit -------------------------------------------------------------------------------------------
@verifier.command("audit")
@click.option(
    "--check", is_flag=True, help="Check the chain and its seals instead of listing (exit 14 if broken)."
)
@click.option(
    "--tip",
    "tip_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --check: an anchor written by --export-tip; also detect a truncated or rewritten chain.",
)
@click.option(
    "--export-tip",
    "export_tip",
    metavar="FILE",
    is_flag=False,
    flag_value="-",
    default=None,
    help="Check the audit, then write its tip (seq, record hash, seal) to FILE (stdout without FILE); "
    "keep it outside the database.",
)
@click.option("--last", "last", type=click.IntRange(1), help="Only the last N records.")
@click.option("--credential", "credential_id", metavar="CREDENTIAL", help="Only records of this credential.")
@_db_options
@handle_errors
def audit_command(
    *,
    check: bool,
    tip_file: Path | None,
    export_tip: str | None,
    last: int | None,
    credential_id: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """List the audit records, or check their chain and seals (verifier.md V37-V39)."""
    if tip_file is not None:
        check = True
    if check and export_tip == "-":
        raise click.UsageError("--export-tip without FILE prints the tip: it cannot be combined with --check")
    with open_session(db, sealing="optional") as session:
        if check or export_tip is not None:
            tip = None
            if tip_file is not None:
                try:
                    tip = AuditTip.from_json(tip_file.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError) as exc:
                    raise StateFileError(f"--tip: cannot read {tip_file} ({exc})") from None
            report = check_audit(session, tip=tip)
            if check:
                _emit_check(as_json, report, tip)
            if report.problems:
                seqs = ", ".join(str(s) for s in sorted({p.seq for p in report.problems}))
                n = len(report.problems)
                raise AuditTampered(
                    f"the audit chain is broken ({n} problem{'s' if n > 1 else ''}; records {seqs})",
                    report.problems,
                )
            if export_tip is not None:
                _export_tip(report, export_tip, as_json=as_json and not check)
            return
        recs = [
            r
            for r in session.store.audit_records()
            if credential_id is None or r.entry.credential_id == credential_id
        ]
        if last is not None:
            recs = recs[-last:]
        views = [_audit_view(r) for r in recs]

        def lines() -> list[str]:
            out = []
            for r in recs:
                if r.malformed:
                    out.append(f"{r.seq:6}  malformed record ({r.malformed})")
                    continue
                e = r.entry
                parts = [f"{r.seq:6}", r.at.isoformat(timespec="seconds"), e.event, e.outcome]
                parts += [x for x in (e.reason, e.credential_id, e.operation_id, e.mode) if x]
                if e.atc is not None:
                    parts.append(f"ATC {e.atc}")
                out.append("  ".join(parts))
            return out or ["no audit records"]

        _emit(as_json, {"records": views}, lines)


def _problem_view(p: AuditProblem) -> dict[str, Any]:
    view: dict[str, Any] = {"seq": p.seq, "kind": p.kind}
    if p.detail:
        view["detail"] = p.detail
    return view


def _emit_check(as_json: bool, report: AuditReport, tip: AuditTip | None) -> None:
    obj = {
        "records": report.records,
        "intact": report.intact,
        "problems": [_problem_view(p) for p in report.problems],
        "sealed_from": report.sealed_from,
        "tip": None if tip is None else tip.seq,
    }

    def lines() -> list[str]:
        if report.problems:
            return [
                f"record {p.seq}: {p.kind}" + (f" ({p.detail})" if p.detail else "") for p in report.problems
            ]
        out = [f"audit chain intact: {report.records} records"]
        if report.sealed_from is None:
            out.append("the audit is not sealed: run 'capsim verifier init' to start sealing it")
        else:
            out.append(f"sealed from record {report.sealed_from}")
        if tip is not None:
            out.append(f"the exported tip (record {tip.seq}) is present and unchanged")
        return out

    if as_json and report.problems:  # one object: handle_errors adds the error to the report
        click.get_current_context().meta[JSON_ERROR_EXTRA] = obj
        return
    _emit(as_json, obj, lines)


def _export_tip(report: AuditReport, target: str, *, as_json: bool) -> None:
    if report.last is None:
        raise ValidationError("--export-tip: the audit is empty; there is nothing to anchor")
    tip = AuditTip.of(report.last)
    text = tip.to_json()
    path = write_tip(text, target)
    if path is None:
        return
    _emit(
        as_json,
        {"tip": json.loads(text), "file": str(path)},
        [f"audit tip exported: record {tip.seq} to {path}"],
    )


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
