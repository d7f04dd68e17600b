"""``capsim verifier cert …``: certificate credentials (USB keys and smart cards) in the verifier.

Reference: ``docs/cli.md`` and ``docs/certificate.md``; the rules are the library's
(:mod:`capsim.verifier.certificates`).

Theory of operation
-------------------
1. ``cert trust`` records the trust anchor, intermediate and CRL *files* (their paths; every
   other command reads them again, so replacing a CRL file takes effect at once).
2. ``cert org-new`` creates an organisation and prints its master code once; the database
   keeps only a keyed hash of it. The master code and the identity number that ``cert
   register`` needs are secrets: they are read from hidden prompts, or from two lines of
   stdin with ``--secrets-stdin`` (master code first), never from command-line values.
3. ``cert challenge`` (registration) and ``cert operation`` (a payment or a beneficiary
   addition) print a challenge id and write the exact message the token signs to ``--out``
   (or show it); ``cert register`` and ``cert authenticate`` take the token's signature as
   hex (``--signature``) or as a file of raw bytes (``--signature-file``).
4. Every refusal of a registration or a signature is the same line on stderr ("code
   rejected") and exit code 10, as for ``capsim verify``; the reason is in the audit.
5. ``--as ADMIN`` acts as the organisation's administrator (``users``, ``list``, ``revoke``,
   ``remove-user``); ``unblock`` is the bank's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from capsim.cli._common import JSON_ERROR_EXTRA, handle_errors, read_secret, read_signature
from capsim.cli.verifier import _db_options, open_session, verifier
from capsim.errors import InvalidCode, ValidationError
from capsim.verifier.certmodel import CertChallenge, CertCredential, OrgUser
from capsim.verifier.session import VerifierSession

if TYPE_CHECKING:
    from capsim.verifier.certificates import CertificateVerifier

__all__ = ["cert_group", "read_signature"]

_AS = click.option("--as", "acting_user", metavar="ADMIN", help="Act as the organisation's administrator.")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _emit(as_json: bool, obj: Mapping[str, Any], lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


def _trust_module() -> ModuleType:
    """:mod:`capsim.verifier.certtrust`, imported on first use (pyca/cryptography's X.509 takes
    a while to load, and most ``capsim verifier`` commands never need it)."""
    import capsim.verifier.certtrust as certtrust

    return certtrust


@contextmanager
def _service(db: str | None) -> Iterator[tuple[VerifierSession, CertificateVerifier]]:
    trust = _trust_module()
    from capsim.verifier.certificates import CertificateVerifier

    with open_session(db) as session:
        with session.transaction() as tx:
            recorded = tx.get_setting(trust.TRUST_SETTING)
        cv = CertificateVerifier(
            session.store, session.provider, trust=lambda: trust.trust_from_setting(recorded)
        )
        yield session, cv


@contextmanager
def _rejection(as_json: bool, key: str) -> Iterator[None]:
    try:
        yield
    except InvalidCode:
        if as_json:
            click.get_current_context().meta[JSON_ERROR_EXTRA] = {key: False}
        raise


def _signature_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--signature-file",
        "signature_file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="The token's signature, raw bytes.",
    )(func)
    return click.option("--signature", "signature_hex", metavar="HEX", help="The token's signature, hex.")(
        func
    )


def _challenge_out(as_json: bool, ch: CertChallenge, out: Path | None) -> None:
    if out is not None:
        out.write_bytes(ch.message)
    obj = {
        "challenge_id": ch.challenge_id,
        "purpose": ch.purpose.value,
        "org_id": ch.org_id,
        "cert_id": ch.cert_id,
        "details": dict(ch.details),
        "expires_at": _iso(ch.expires_at),
        "message": ch.message.decode("ascii"),
    }
    lines = [f"challenge {ch.challenge_id} (expires {_iso(ch.expires_at)})"]
    lines += [f"  {k}: {v}" for k, v in ch.details]
    lines.append(f"message written to {out}" if out is not None else ch.message.decode("ascii").rstrip())
    _emit(as_json, obj, lines)


def _cert_view(c: CertCredential) -> dict[str, Any]:
    return {
        "cert_id": c.cert_id,
        "user_id": c.user_id,
        "org_id": c.org_id,
        "state": c.state.value,
        "subject": c.subject,
        "serial": c.serial,
        "not_after": _iso(c.not_after),
        "supplementary": c.supplementary,
        "label": c.label,
        "fail_count": c.fail_count,
        "locked_until": _iso(c.locked_until),
    }


def _user_view(u: OrgUser) -> dict[str, Any]:
    return {
        "user_id": u.user_id,
        "org_id": u.org_id,
        "role": u.role.value,
        "disabled": u.disabled,
        "created_at": _iso(u.created_at),
    }


def _cert_line(c: CertCredential) -> str:
    extra = " supplementary" if c.supplementary else ""
    return f"{c.cert_id}  {c.user_id}  {c.state.value}{extra}  {c.subject}  until {_iso(c.not_after)}"


@verifier.group("cert")
def cert_group() -> None:
    """Certificate credentials: organisations, registration, operation-bound signatures."""


@cert_group.command("trust")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trust anchor certificate file, PEM or DER (repeatable).",
)
@click.option(
    "--intermediate",
    "intermediates",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Intermediate CA certificate file offered for chain building (repeatable).",
)
@click.option(
    "--crl",
    "crls",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CRL file, PEM or DER (repeatable; read again by every command).",
)
@click.option(
    "--require-crl/--no-require-crl",
    default=True,
    show_default=True,
    help="Refuse a certificate whose issuer has no current CRL.",
)
@_db_options
@handle_errors
def trust_command(
    *,
    anchors: tuple[Path, ...],
    intermediates: tuple[Path, ...],
    crls: tuple[Path, ...],
    require_crl: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Record the trust anchors, intermediates and CRL files certificates are checked against."""
    value = _trust_module().trust_setting(
        anchors, intermediates=intermediates, crls=crls, require_crl=require_crl
    )
    with _service(db) as (_session, cv):
        cv.record_trust(value)
    doc = json.loads(value)
    _emit(
        as_json,
        doc,
        [f"trust: {len(doc['anchors'])} anchor(s), {len(doc['intermediates'])} intermediate(s), "
         f"{len(doc['crls'])} CRL(s); CRL required: {'yes' if require_crl else 'no'}"],
    )  # fmt: skip


@cert_group.command("org-new")
@click.argument("name")
@click.option("--kind", type=click.Choice(["supplier", "customer"]), default="supplier", show_default=True)
@_db_options
@handle_errors
def org_new_command(*, name: str, kind: str, db: str | None, as_json: bool) -> None:
    """Create an organisation; its master code is shown once (hand it over out of band)."""
    with _service(db) as (_session, cv):
        mc = cv.create_organisation(name, kind=kind)
    _emit(
        as_json,
        {"org_id": mc.org_id, "master_code": mc.code, "kind": kind, "name": name},
        [f"organisation {mc.org_id}: master code {mc.code} (shown once)"],
    )


@cert_group.command("challenge")
@click.option("--org", "org_id", required=True, help="The organisation the registrant joins.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the message to sign here."
)
@_db_options
@handle_errors
def challenge_command(*, org_id: str, out: Path | None, db: str | None, as_json: bool) -> None:
    """Issue a registration challenge: the registrant's token signs its message."""
    with _service(db) as (_session, cv):
        ch = cv.registration_challenge(org_id)
    _challenge_out(as_json, ch, out)


@cert_group.command("register")
@click.option("--org", "org_id", required=True, help="The organisation.")
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The token's certificate, PEM or DER.",
)
@click.option("--challenge", "challenge_id", required=True, help="The registration challenge id.")
@_signature_options
@click.option("--admin", "administrator", is_flag=True, help="Take the organisation's administrator role.")
@click.option("--user", "user_id", help="Register a supplementary certificate under this identifier.")
@click.option("--label", default="", help="A free-text label.")
@click.option(
    "--secrets-stdin",
    is_flag=True,
    help="Read the master code and the identity number from two lines of stdin.",
)
@_db_options
@handle_errors
def register_command(
    *,
    org_id: str,
    cert_path: Path,
    challenge_id: str,
    signature_hex: str | None,
    signature_file: Path | None,
    administrator: bool,
    user_id: str | None,
    label: str,
    secrets_stdin: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Register a certificate with the organisation's master code, the user's identity number
    and the token's signature of a registration challenge. Any refusal: exit 10."""
    signature = read_signature(signature_hex, signature_file)
    certificate = cert_path.read_bytes()
    master = read_secret("Organisation master code", from_stdin=secrets_stdin)
    identity = read_secret("Identity number", from_stdin=secrets_stdin)
    with _service(db) as (_session, cv), _rejection(as_json, "registered"):
        cred = cv.register_certificate(
            org_id,
            master_code=master,
            identity_number=identity,
            certificate=certificate,
            challenge_id=challenge_id,
            signature=signature,
            administrator=administrator,
            user_id=user_id,
            label=label,
        )
    obj = {"registered": True, **_cert_view(cred)}
    role = " (supplementary)" if cred.supplementary else ""
    _emit(as_json, obj, [f"registered {cred.cert_id} for identifier {cred.user_id}{role}"])


@cert_group.command("operation")
@click.argument("cert_id", metavar="CERT")
@click.option(
    "--payment",
    nargs=3,
    metavar="AMOUNT CURRENCY PAYEE",
    help="A payment: amount (major units), currency and payee account.",
)
@click.option(
    "--beneficiary", nargs=2, metavar="PAYEE NAME", help="A beneficiary addition: account and holder."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the message to sign here."
)
@_db_options
@handle_errors
def operation_command(
    *,
    cert_id: str,
    payment: tuple[str, str, str] | None,
    beneficiary: tuple[str, str] | None,
    out: Path | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Issue a challenge bound to one operation (PSD2 dynamic linking) for CERT."""
    if (payment is None) == (beneficiary is None):
        raise ValidationError("--payment AMOUNT CURRENCY PAYEE or --beneficiary PAYEE NAME: exactly one")
    with _service(db) as (_session, cv):
        if payment is not None:
            amount, currency, payee = payment
            ch = cv.operation_challenge(
                cert_id, kind="payment", amount=amount, currency=currency, payee=payee
            )
        else:
            assert beneficiary is not None
            ch = cv.operation_challenge(
                cert_id, kind="beneficiary", payee=beneficiary[0], name=beneficiary[1]
            )
    _challenge_out(as_json, ch, out)


@cert_group.command("authenticate")
@click.argument("challenge_id", metavar="CHALLENGE")
@_signature_options
@_db_options
@handle_errors
def authenticate_command(
    *,
    challenge_id: str,
    signature_hex: str | None,
    signature_file: Path | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Check the token's signature of CHALLENGE, once. Exit 0 on accept; every reject is
    "code rejected" with exit 10."""
    signature = read_signature(signature_hex, signature_file)
    with _service(db) as (_session, cv), _rejection(as_json, "accepted"):
        acc = cv.authenticate(challenge_id, signature)
    obj = {
        "accepted": True,
        "cert_id": acc.cert_id,
        "user_id": acc.user_id,
        "org_id": acc.org_id,
        "challenge_id": acc.challenge_id,
        "details": dict(acc.details),
        "accepted_at": _iso(acc.accepted_at),
    }
    _emit(as_json, obj, [f"accepted: {dict(acc.details).get('kind', '')} approved by {acc.cert_id}"])


@cert_group.command("users")
@click.option("--org", "org_id", required=True, help="The organisation.")
@_AS
@_db_options
@handle_errors
def users_command(*, org_id: str, acting_user: str | None, db: str | None, as_json: bool) -> None:
    """List an organisation's users."""
    with _service(db) as (_session, cv):
        users = cv.list_users(org_id, acting_user=acting_user)
    _emit(
        as_json,
        {"users": [_user_view(u) for u in users]},
        [f"{u.user_id}  {u.role.value}{'  disabled' if u.disabled else ''}" for u in users],
    )


@cert_group.command("list")
@click.option("--org", "org_id", required=True, help="The organisation.")
@click.option("--user", "user_id", help="Only this user's certificates.")
@_AS
@_db_options
@handle_errors
def list_command(
    *, org_id: str, user_id: str | None, acting_user: str | None, db: str | None, as_json: bool
) -> None:
    """List an organisation's certificates."""
    with _service(db) as (_session, cv):
        certs = cv.list_certificates(org_id, user_id=user_id, acting_user=acting_user)
    _emit(as_json, {"certificates": [_cert_view(c) for c in certs]}, [_cert_line(c) for c in certs])


def _lifecycle(name: str, doc: str) -> None:
    @cert_group.command(name, help=doc)
    @click.argument("cert_id", metavar="CERT")
    @click.option("--reason", default="", help="Why (recorded in the audit).")
    @_AS
    @_db_options
    @handle_errors
    def command(*, cert_id: str, reason: str, acting_user: str | None, db: str | None, as_json: bool) -> None:
        with _service(db) as (_session, cv):
            if name == "revoke":
                cert = cv.revoke_certificate(cert_id, acting_user=acting_user, reason=reason)
            else:
                cert = cv.unblock_certificate(cert_id, acting_user=acting_user, reason=reason)
        _emit(as_json, _cert_view(cert), [f"certificate {cert.cert_id}: {cert.state.value}"])

    del command


_lifecycle("revoke", "Revoke certificate CERT for good (the bank, or the organisation's administrator).")
_lifecycle("unblock", "Unblock certificate CERT: clear its lock and failure counters (the bank).")


@cert_group.command("remove-user")
@click.argument("user_id", metavar="USER")
@_AS
@_db_options
@handle_errors
def remove_user_command(*, user_id: str, acting_user: str | None, db: str | None, as_json: bool) -> None:
    """Disable USER and revoke its certificates (the bank, or the organisation's administrator)."""
    with _service(db) as (_session, cv):
        user = cv.remove_user(user_id, acting_user=acting_user)
    _emit(as_json, _user_view(user), [f"user {user.user_id}: removed"])
