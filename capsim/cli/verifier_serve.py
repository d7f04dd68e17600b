"""``capsim verifier serve`` and ``capsim verifier client …``: the verifier as an HTTP service.

Reference: ``docs/cli.md`` and ``docs/http-api.md``.

Theory of operation
-------------------
1. ``serve`` checks the database first (it must be initialised, its keyring file present),
   then hands a :class:`~capsim.service.runtime.ServiceConfig` to its workers through the
   environment and runs uvicorn with the application factory
   (``capsim.service.app:app_from_env``): ``--workers N`` processes, each with its own
   verifier on the shared store. TLS options go to uvicorn unchanged. SIGTERM or Ctrl-C stops
   accepting connections, lets requests in flight finish (``--graceful-timeout``) and closes
   the store. Prometheus samples of every worker go to a fresh directory
   (``PROMETHEUS_MULTIPROC_DIR``), removed when the service stops.
2. uvicorn's own access log is off: it would print query strings, where privacyIDEA clients
   may send ``pass``. The service logs one line per request with the route template instead.
3. ``client add`` creates an API client and prints its key **once**; the database keeps only
   the key's digest. ``client rotate`` prints a new key and invalidates the old one at once;
   ``client revoke`` refuses the client from then on. Each change is audited. These commands
   work on the database only: a remote service cannot create its own keys.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import tempfile
from typing import Any

import click

from capsim.cli._common import handle_errors
from capsim.cli.verifier import _db_options, _emit, _iso, default_db, default_keyring, open_session, verifier
from capsim.errors import ConfigError, ValidationError
from capsim.verifier.audit import AuditEntry
from capsim.verifier.clients import ApiClient, ClientScope, new_api_key, new_client_id
from capsim.verifier.model import UserRole

__all__ = ["client_group", "serve_command"]


def _remote(db: str | None) -> None:
    if db and db.lower().startswith(("http://", "https://")):
        raise ConfigError(
            "--db: this command works on the verifier database itself; the HTTP API does not cover it"
        )


@verifier.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes.")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False), help="TLS certificate chain (PEM).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option(
    "--ssl-ca-certs", type=click.Path(dir_okay=False), help="CA bundle to verify client certificates."
)
@click.option(
    "--ssl-cert-reqs",
    type=click.IntRange(0, 2),
    default=0,
    show_default=True,
    help="Client certificates: 0 none, 1 optional, 2 required (mutual TLS).",
)
@click.option("--max-body", type=click.IntRange(1024, 16 << 20), default=64 * 1024, show_default=True,
              help="Largest request body in bytes.")  # fmt: skip
@click.option("--rate-client", type=click.IntRange(0), default=6000, show_default=True,
              help="Requests per window per client (0: no limit).")  # fmt: skip
@click.option("--rate-credential", type=click.IntRange(0), default=60, show_default=True,
              help="Requests per window per credential (0: no limit).")  # fmt: skip
@click.option("--rate-window", type=click.IntRange(1, 3600), default=60, show_default=True,
              help="Rate-limit window in seconds.")  # fmt: skip
@click.option("--graceful-timeout", type=click.IntRange(1, 3600), default=10, show_default=True,
              help="Seconds requests in flight may take to finish on shutdown.")  # fmt: skip
@click.option(
    "--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info"
)
@_db_options
@handle_errors
def serve_command(
    *,
    host: str,
    port: int,
    workers: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    ssl_ca_certs: str | None,
    ssl_cert_reqs: int,
    max_body: int,
    rate_client: int,
    rate_credential: int,
    rate_window: int,
    graceful_timeout: int,
    log_level: str,
    db: str | None,
    as_json: bool,
) -> None:
    """Serve the verifier over HTTP (docs/http-api.md)."""
    try:
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG
    except ImportError:
        raise ConfigError("the HTTP service needs its extra: pip install 'capsim[service]'") from None
    from capsim.service.runtime import CONFIG_ENV, ServiceConfig

    url = db or default_db()
    _remote(url)
    with open_session(url) as session:  # fail now, with the CLI's message and exit code
        keyring = session.keyring_file.path if session.keyring_file is not None else default_keyring(url)
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ValidationError("--ssl-certfile and --ssl-keyfile go together")
    config = ServiceConfig(
        db=url,
        keyring=None if keyring is None else str(keyring),
        max_body=max_body,
        rate_client=rate_client,
        rate_credential=rate_credential,
        rate_window_s=rate_window,
    )
    metrics_dir = tempfile.mkdtemp(prefix="capsim-metrics-")
    os.environ[CONFIG_ENV] = config.to_env()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    log_config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["capsim.service"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    scheme = "https" if ssl_certfile else "http"
    click.echo(f"capsim verifier: serving {scheme}://{host}:{port} with {workers} worker(s)", err=True)
    try:
        uvicorn.run(
            "capsim.service.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_ca_certs=ssl_ca_certs,
            ssl_cert_reqs=ssl_cert_reqs,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=graceful_timeout,
            log_level=log_level,
            log_config=log_config,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# capsim verifier client …


@verifier.group("client")
def client_group() -> None:
    """API clients of the HTTP service: keys shown once, stored hashed."""


def _client_view(c: ApiClient) -> dict[str, Any]:
    return {
        "client_id": c.client_id,
        "name": c.name,
        "scope": c.scope.value,
        "acting_user": c.acting_user,
        "created_at": _iso(c.created_at),
        "revoked_at": _iso(c.revoked_at),
    }


def _audit(tx: Any, reason: str, client: ApiClient) -> None:
    tx.append_audit(
        AuditEntry(
            event="client",
            outcome="ok",
            reason=reason,
            node="capsim-cli",
            details={"client": client.client_id, "scope": client.scope.value, "name": client.name},
        )
    )


@client_group.command("add")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice([s.value for s in ClientScope]),
    required=True,
    help="operator (everything), verification (operations and codes) or customer-admin.",
)
@click.option(
    "--as",
    "acting_user",
    metavar="ADMIN",
    help="customer-admin: the administrator it acts as (of a customer account or an organisation).",
)
@_db_options
@handle_errors
def client_add_command(
    *, name: str, scope: str, acting_user: str | None, db: str | None, as_json: bool
) -> None:
    """Create an API client and print its key (shown once)."""
    _remote(db)
    chosen = ClientScope(scope)
    if (chosen is ClientScope.CUSTOMER_ADMIN) != (acting_user is not None):
        raise ValidationError("--as ADMIN is required with --scope customer-admin, and only with it")
    if not 1 <= len(name) <= 128 or not name.isprintable():
        raise ValidationError("NAME: expected 1..128 printable characters")
    client_id = new_client_id()
    key, digest = new_api_key(client_id)
    with open_session(db) as session, session.transaction() as tx:
        if acting_user is not None:
            # a customer account's administrator, or an organisation's (certificate credentials)
            admin = tx.get_user(acting_user) or tx.get_org_user(acting_user)
            if admin is None or admin.role is not UserRole.ADMIN or admin.disabled:
                raise ValidationError(
                    f"--as: {acting_user!r} is not an administrator of a customer account or an organisation"
                )
        client = ApiClient(
            client_id=client_id,
            name=name,
            scope=chosen,
            acting_user=acting_user,
            key_digest=digest,
            created_at=tx.now(),
        )
        if tx.insert_client(client) != 1:  # pragma: no cover - 64 random bits collided
            raise ValidationError("client id collision; run the command again")
        _audit(tx, "add", client)
    _emit(
        as_json,
        {**_client_view(client), "key": key},
        [f"client {client_id} ({chosen.value}) created; its key, shown only now:", key],
    )


@client_group.command("list")
@_db_options
@handle_errors
def client_list_command(*, db: str | None, as_json: bool) -> None:
    """List API clients (never their keys)."""
    _remote(db)
    with open_session(db) as session, session.transaction() as tx:
        clients = tx.list_clients()
    _emit(
        as_json,
        {"clients": [_client_view(c) for c in clients]},
        lambda: [
            f"{c.client_id}  {c.scope.value:<14} {c.name}"
            + (f"  as {c.acting_user}" if c.acting_user else "")
            + ("  REVOKED" if c.revoked_at else "")
            for c in clients
        ],
    )


def _change(db: str | None, client_id: str, *, revoke: bool) -> tuple[ApiClient, str | None]:
    with open_session(db) as session, session.transaction() as tx:
        old = tx.get_client(client_id)
        if old is None:
            raise ValidationError(f"CLIENT: no client {client_id!r}")
        if old.revoked_at is not None:
            raise ValidationError(f"CLIENT: {client_id} is revoked")
        key: str | None = None
        if revoke:
            new = dataclasses.replace(old, revoked_at=tx.now(), version=old.version + 1)
        else:
            key, digest = new_api_key(client_id)
            new = dataclasses.replace(old, key_digest=digest, version=old.version + 1)
        if tx.update_client(new, expected_version=old.version) != 1:
            raise ValidationError(f"CLIENT: {client_id} changed meanwhile; run the command again")
        _audit(tx, "revoke" if revoke else "rotate", new)
    return new, key


@client_group.command("revoke")
@click.argument("client_id", metavar="CLIENT")
@_db_options
@handle_errors
def client_revoke_command(*, client_id: str, db: str | None, as_json: bool) -> None:
    """Refuse a client's key from now on."""
    _remote(db)
    client, _ = _change(db, client_id, revoke=True)
    _emit(as_json, _client_view(client), [f"client {client_id} revoked"])


@client_group.command("rotate")
@click.argument("client_id", metavar="CLIENT")
@_db_options
@handle_errors
def client_rotate_command(*, client_id: str, db: str | None, as_json: bool) -> None:
    """Give a client a new key (shown once); the old key stops working at once."""
    _remote(db)
    client, key = _change(db, client_id, revoke=False)
    _emit(
        as_json,
        {**_client_view(client), "key": key},
        [f"client {client_id}: new key, shown only now:", str(key)],
    )
