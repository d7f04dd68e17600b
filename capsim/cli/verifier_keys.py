"""``capsim verifier keys …`` and ``capsim verifier init --pkcs11``: issuer keys in a PKCS#11 token.

Reference: ``docs/cli.md`` and ``docs/hsm.md``; the ceremony itself is the library's
(:mod:`capsim.verifier.hsmkeys`).

Theory of operation
-------------------
1. Every command names the token with ``--pkcs11 MODULE --token LABEL``. The user PIN is read
   from the environment variable ``--pin-env`` (default ``CAPSIM_PKCS11_PIN``) or from the
   file ``--pin-file``: never from a command-line value, so it shows in no process list or
   shell history.
2. ``keys import`` creates the issuer keys ``LABEL/imk-ac|imk-smi|imk-smc`` in the token from
   an issuer-keys file (deleted after the import unless ``--keep-file``), from two or three
   XOR components typed on hidden prompts (each component's KCV shown, the combined KCV
   confirmed), or from a key wrapped under an AES transport key of the token. Nothing is
   written to disk and no key is printed.
3. ``keys list`` shows every secret key of the token with its attributes and a warning for an
   extractable or non-sensitive key.
4. ``verifier init --pkcs11 …`` records the token in the verifier database (with
   ``--issuer-label`` the issuer keys to use), creates the verifier's own secrets in the token
   and seals the audit with the token's key; the rest of ``init`` runs as usual.
5. ``keys migrate`` moves the credentials of a software-keyed verifier onto the token's keys
   (:mod:`capsim.verifier.pkcs11migrate`): one card per transaction, each credential checked
   to compute the same cryptograms on the token first; it can be run again after a crash and
   changes nothing when everything is on the token. It exits 1 while a credential is refused
   (its keys differ): the migration then stays open and enrolment paused.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from capsim.cli._common import ExitCode, handle_errors
from capsim.cli.verifier import _db_options, default_db, default_keyring, verifier
from capsim.cli.verifier import open_session as _open_db
from capsim.crypto import key_check_value
from capsim.errors import TokenError, ValidationError
from capsim.hexinput import parse_hex
from capsim.storage import IssuerKeys, load_issuer_keys

__all__ = ["demo_token", "keys_group", "token_key_check"]

F = TypeVar("F", bound=Callable[..., Any])


def _token_options(func: F) -> F:
    func = click.option(
        "--prefix", default="capsim", show_default=True, help="Label prefix of the verifier's secrets."
    )(func)
    func = click.option(
        "--pin-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File whose first line is the user PIN (mode 0600).",
    )(func)
    func = click.option(
        "--pin-env",
        default="CAPSIM_PKCS11_PIN",
        show_default=True,
        metavar="NAME",
        help="Environment variable holding the user PIN.",
    )(func)
    func = click.option("--token", "token_label", metavar="LABEL", help="Token label.")(func)
    return click.option("--pkcs11", "module", metavar="MODULE", help="PKCS#11 module (.so path).")(func)


def _config(
    module: str | None, token_label: str | None, pin_env: str, pin_file: Path | None, prefix: str
) -> Any:
    from capsim.verifier.hsmkeys import TokenConfig

    if not module or not token_label:
        raise ValidationError("--pkcs11 MODULE and --token LABEL are both required")
    return TokenConfig(
        module=module,
        token=token_label,
        prefix=prefix,
        pin_env=pin_env,
        pin_file=None if pin_file is None else str(pin_file.resolve()),
    )


def _import_pkcs11() -> Any:
    try:
        from capsim.verifier import hsmkeys
    except ImportError:
        raise TokenError("python-pkcs11 is not installed: pip install 'capsim[pkcs11]'", "module") from None
    return hsmkeys


@verifier.group("keys")
def keys_group() -> None:
    """Issuer keys in a PKCS#11 token: import them, list them, migrate a verifier onto them."""


@keys_group.command("import")
@_token_options
@click.option("--label", required=True, help="Label of the issuer keys in the token (LABEL/imk-ac …).")
@click.option(
    "--issuer-keys",
    "issuer_keys",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Issuer-keys file written by 'capsim card new' (deleted after the import).",
)
@click.option("--keep-file", is_flag=True, help="Do not delete the issuer-keys file after the import.")
@click.option("--components", type=click.IntRange(2, 3), help="Enter the key as 2 or 3 XOR components.")
@click.option(
    "--wrapped",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File with the key wrapped (CKM_AES_KEY_WRAP_PAD, hex) under --transport-label.",
)
@click.option("--transport-label", help="Label of the token's AES transport key (with --wrapped).")
@click.option(
    "--key",
    "key_name",
    type=click.Choice(["imk-ac", "imk-smi", "imk-smc"]),
    default="imk-ac",
    show_default=True,
    help="Which issuer key --components or --wrapped holds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@handle_errors
def keys_import_command(
    *,
    module: str | None,
    token_label: str | None,
    pin_env: str,
    pin_file: Path | None,
    prefix: str,
    label: str,
    issuer_keys: Path | None,
    keep_file: bool,
    components: int | None,
    wrapped: Path | None,
    transport_label: str | None,
    key_name: str,
    as_json: bool,
) -> None:
    """Import issuer keys into a token: from a file, from components or unwrapped."""
    hsmkeys = _import_pkcs11()
    config = _config(module, token_label, pin_env, pin_file, prefix)
    if sum(x is not None for x in (issuer_keys, components, wrapped)) != 1:
        raise ValidationError("give exactly one of --issuer-keys FILE, --components N or --wrapped FILE")
    if wrapped is not None and not transport_label:
        raise ValidationError("--wrapped needs --transport-label")
    imported: dict[str, str] = {}
    with hsmkeys.login(config, rw=True) as session:
        if issuer_keys is not None:
            keys = load_issuer_keys(issuer_keys)
            issuer = hsmkeys.import_issuer_keys(session, label, keys)
            imported = {
                n: key_check_value(v).hex().upper()
                for n, v in zip(
                    ("imk-ac", "imk-smi", "imk-smc"), (keys.imk_ac, keys.imk_smi, keys.imk_smc), strict=True
                )
            }
            del keys
            if not keep_file:
                issuer_keys.unlink()
            key_id = issuer.key_id
        elif components is not None:
            parts = []
            for i in range(components):
                text = click.prompt(
                    f"component {i + 1} of {components} (32 hex digits)", hide_input=True, err=True
                )
                part = parse_hex(f"component {i + 1}", text, min_bytes=16, max_bytes=16, secret=True)
                click.echo(f"component {i + 1} KCV: {key_check_value(part).hex().upper()}", err=True)
                parts.append(part)
            key = hsmkeys.combine_components(parts)
            kcv = key_check_value(key).hex().upper()
            if not click.confirm(f"combined key KCV {kcv}: import it as {label}/{key_name}?", err=True):
                raise ValidationError("import cancelled: the combined KCV was not confirmed")
            imported[key_name] = hsmkeys.import_key(session, label, key_name, key)
            del key, parts
            key_id = f"iss-{kcv}" if key_name == "imk-ac" else None
        else:
            assert wrapped is not None
            try:
                text = wrapped.read_text(encoding="ascii")
            except UnicodeDecodeError:
                raise ValidationError("--wrapped: expected the wrapped key in hex") from None
            blob = parse_hex("--wrapped", text, secret=True)
            imported[key_name] = hsmkeys.unwrap_key(session, label, key_name, blob, transport_label)
            key_id = f"iss-{imported[key_name]}" if key_name == "imk-ac" else None
    obj = {"token": config.token, "label": label, "key_id": key_id, "kcv": imported}
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
        return
    for name, kcv in imported.items():
        click.echo(f"imported {label}/{name} (KCV {kcv}): derive only, sensitive, not extractable")
    if key_id:
        click.echo(
            f"issuer key id {key_id}; use it with 'capsim verifier init --pkcs11 … --issuer-label {label}'"
        )
    if issuer_keys is not None and not keep_file:
        click.echo(f"{issuer_keys} deleted: the keys now live only in the token")


@keys_group.command("list")
@_token_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@handle_errors
def keys_list_command(
    *,
    module: str | None,
    token_label: str | None,
    pin_env: str,
    pin_file: Path | None,
    prefix: str,
    as_json: bool,
) -> None:
    """List the token's secret keys: labels, fingerprints, attributes (exit 0 even with warnings)."""
    hsmkeys = _import_pkcs11()
    config = _config(module, token_label, pin_env, pin_file, prefix)
    with hsmkeys.login(config) as session:
        keys = hsmkeys.list_token_keys(session)
    view = [
        {
            "label": k.label,
            "type": k.key_type,
            "id": k.key_id,
            "sensitive": k.sensitive,
            "extractable": k.extractable,
            "derive_only": k.derive_only,
            "fingerprint": k.fingerprint,
            "warning": k.warning,
        }
        for k in keys
    ]
    if as_json:
        click.echo(json.dumps({"token": config.token, "keys": view}, sort_keys=True))
        return
    for k in keys:
        flags = ", ".join(
            [
                "sensitive" if k.sensitive else "NOT sensitive",
                "extractable" if k.extractable else "not extractable",
            ]
            + (["derive only"] if k.derive_only else [])
        )
        fp = f" fingerprint {k.fingerprint}" if k.fingerprint else ""
        kid = f" id {k.key_id}" if k.key_id else ""
        click.echo(f"{k.label}  {k.key_type}{kid}  {flags}{fp}")
        if k.warning:
            click.echo(f"warning: {k.label}: {k.warning}", err=True)
    if not keys:
        click.echo(f"token {config.token!r} holds no secret keys")


@keys_group.command("migrate")
@_token_options
@click.option(
    "--issuer-label",
    "issuer_labels",
    multiple=True,
    required=True,
    help="Issuer keys in the token to move the credentials onto (repeatable).",
)
@_db_options
@handle_errors
def keys_migrate_command(
    *,
    module: str | None,
    token_label: str | None,
    pin_env: str,
    pin_file: Path | None,
    prefix: str,
    issuer_labels: tuple[str, ...],
    db: str | None,
    as_json: bool,
) -> None:
    """Move a software-keyed verifier's credentials onto the token's issuer keys."""
    hsmkeys = _import_pkcs11()
    from capsim.verifier import pkcs11migrate as mig
    from capsim.verifier.pkcs11token import ensure_verifier_secrets

    config = _config(module, token_label, pin_env, pin_file, prefix)
    with hsmkeys.login(config, rw=True) as session:
        ensure_verifier_secrets(session, config.prefix, audit_seal=False)
        found = [hsmkeys.issuer_from_token(session, label) for label in issuer_labels]
    issuers = {i.key_id: i for i in found}
    with _open_db(db) as vs:
        kids = mig.start_migration(vs.store, config, issuers, sealer=_sealer(vs))
    with _open_db(db, keys=True) as vs:
        report = mig.MigrationReport(already=mig.count_on_token(vs.store))
        if isinstance(vs.provider, mig.MigratingProvider):
            report = mig.migrate_credentials(
                vs.store, vs.provider.software, vs.provider.token, issuers=kids, sealer=_sealer(vs)
            )
        finished = mig.finish_migration(vs.store, sealer=_sealer(vs))
    view = {
        "token": config.token,
        "issuers": sorted(issuers),
        "migrating": list(kids),
        "rebound": len(report.rebound),
        "already_on_token": report.already,
        "refused": dict(sorted(report.refused.items())),
        "finished": finished,
    }
    if as_json:
        click.echo(json.dumps(view, sort_keys=True))
    else:
        click.echo(
            f"{len(report.rebound)} credential(s) moved onto token {config.token!r}, "
            f"{report.already} already on it"
        )
        for cid, reason in sorted(report.refused.items()):
            click.echo(f"refused: credential {cid}: {reason} (left on its issuer-keys file)", err=True)
        if finished:
            click.echo("the verifier now runs on the token; the migrated issuer-keys files are unused")
        else:
            click.echo("migration unfinished: enrolment is paused until every credential moved", err=True)
    if not finished:
        raise SystemExit(int(ExitCode.ERROR))


def _sealer(vs: Any) -> Any:
    return vs.provider if vs.provider.audit_seal_key_id() is not None else None


# ------------------------------------------------------------------------------------------------
# capsim demo --pkcs11


def demo_token(workdir: Path, keys: IssuerKeys) -> Any:
    """A throwaway SoftHSM2 token in ``workdir`` holding ``keys`` as ``demo-issuer/…``."""
    hsmkeys = _import_pkcs11()
    config = hsmkeys.throwaway_softhsm_token(workdir)
    with hsmkeys.login(config, rw=True) as session:
        hsmkeys.import_issuer_keys(session, "demo-issuer", keys)
    return config


def token_key_check(config: Any, label: str) -> tuple[str, str]:
    """``("ok", detail)`` when every key ``label/…`` of the token is sensitive, not extractable
    and derive-only (what ``keys list`` shows), else ``("unsafe", detail)``."""
    hsmkeys = _import_pkcs11()
    with hsmkeys.login(config) as session:
        keys = [k for k in hsmkeys.list_token_keys(session) if k.label.startswith(f"{label}/")]
    bad = [k.label for k in keys if k.extractable or not k.sensitive or not k.derive_only]
    if len(keys) != 3 or bad:
        return "unsafe", f"{len(keys)} issuer keys; unsafe: {', '.join(bad) or '-'}"
    return "ok", ", ".join(f"{k.label} sensitive, not extractable, derive only" for k in keys)


# ------------------------------------------------------------------------------------------------
# verifier init --pkcs11: options added to the existing command


def _extend_init() -> None:
    init = verifier.commands["init"]
    callback = init.callback
    assert callback is not None
    extra = _token_options(lambda **kw: None)
    init.params.extend(extra.__click_params__)  # type: ignore[attr-defined]
    init.params.append(
        click.Option(
            ["--issuer-label", "issuer_labels"],
            multiple=True,
            help="With --pkcs11: issuer keys in the token to register (repeatable).",
        )
    )

    @functools.wraps(callback)
    def with_token(
        *,
        module: str | None = None,
        token_label: str | None = None,
        pin_env: str = "CAPSIM_PKCS11_PIN",
        pin_file: Path | None = None,
        prefix: str = "capsim",
        issuer_labels: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Any:
        if module is not None or token_label is not None or issuer_labels:
            _init_token(
                kwargs.get("db"),
                kwargs.get("keyring"),
                _config(module, token_label, pin_env, pin_file, prefix),
                issuer_labels,
                quiet=bool(kwargs.get("as_json")),
            )
        return callback(**kwargs)

    init.callback = handle_errors(with_token)


def _init_token(
    db: str | None, keyring: str | None, config: Any, labels: tuple[str, ...], *, quiet: bool
) -> None:
    _import_pkcs11()
    from capsim.verifier.session import open_session

    url = db or default_db()
    if url == default_db():
        Path(url).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(keyring) if keyring else default_keyring(url)
    with open_session(url, keyring_path=path, create=True, token=config, token_issuers=labels) as session:
        if quiet:
            return
        click.echo(
            f"verifier on token {config.token!r} ({config.module}); PIN from "
            + (f"file {config.pin_file}" if config.pin_file else f"${config.pin_env}")
        )
        for kid, entry in sorted(session.keyring.items()):
            if entry.path.startswith("pkcs11:"):
                click.echo(f"issuer keys {kid} in the token as {entry.path.removeprefix('pkcs11:')}")
        if session.token_sealed_from is not None:
            click.echo(
                f"audit sealed from record {session.token_sealed_from} with the token's key "
                f"{session.provider.audit_seal_key_id()}"
            )


_extend_init()
