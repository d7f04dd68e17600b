"""``capsim verifier cert … --db http(s)://HOST``: certificate credentials against a remote
verifier service, through :class:`capsim.client.VerifierClient` (see :mod:`capsim.cli.remote`).

Theory of operation
-------------------
1. Each handler makes the API calls a bank backend would and prints the lines or JSON object of
   the local command (:mod:`capsim.cli.verifier_certs`); JSON objects carry what the API returns.
2. The master code and the identity number are read here as for a local database (hidden
   prompts, or two lines of stdin with ``--secrets-stdin``) and sent only in request bodies;
   certificates and signature files are read here too. ``cert trust`` names files on the
   service's machine and is not covered; ``--as`` is refused (the API key decides who acts:
   an organisation's administrator uses its own ``customer-admin`` key).
3. Every refused registration or signature is the same ``code rejected`` line, exit 10.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from capsim.cli._common import read_secret, read_signature
from capsim.cli.remote_common import Handler, emit, json_rejection
from capsim.client import CertChallenge, Certificate, OrgUser, VerifierClient
from capsim.errors import ValidationError

__all__ = ["CERT_COMMANDS"]


def _signature(kw: dict[str, Any]) -> bytes:
    return read_signature(kw["signature_hex"], kw["signature_file"])


def _challenge(kw: dict[str, Any], ch: CertChallenge) -> None:
    out: Path | None = kw.get("out")
    if out is not None:
        out.write_bytes(ch.message.encode("ascii"))
    obj = ch.to_dict()
    lines = [f"challenge {ch.challenge_id} (expires {obj['expires_at']})"]
    lines += [f"  {k}: {v}" for k, v in ch.details]
    lines.append(f"message written to {out}" if out is not None else ch.message.rstrip())
    emit(kw, obj, lines)


def _cert_line(c: Certificate) -> str:
    extra = " supplementary" if c.supplementary else ""
    return f"{c.cert_id}  {c.user_id}  {c.state}{extra}  {c.subject}  until {c.to_dict()['not_after']}"


def _user_line(u: OrgUser) -> str:
    return f"{u.user_id}  {u.role}{'  disabled' if u.disabled else ''}"


def _org_new(c: VerifierClient, kw: dict[str, Any]) -> None:
    org = c.create_organisation(kw["name"], kind=kw["kind"])
    emit(kw, org.to_dict(), [f"organisation {org.org_id}: master code {org.master_code} (shown once)"])


def _register_challenge(c: VerifierClient, kw: dict[str, Any]) -> None:
    _challenge(kw, c.registration_challenge(kw["org_id"]))


def _register(c: VerifierClient, kw: dict[str, Any]) -> None:
    signature = _signature(kw)
    certificate = Path(kw["cert_path"]).read_bytes()
    master = read_secret("Organisation master code", from_stdin=kw["secrets_stdin"])
    identity = read_secret("Identity number", from_stdin=kw["secrets_stdin"])
    with json_rejection(kw, "registered"):
        cert = c.register_certificate(
            kw["org_id"],
            master_code=master,
            identity_number=identity,
            certificate=certificate,
            challenge_id=kw["challenge_id"],
            signature=signature,
            administrator=kw["administrator"],
            user_id=kw["user_id"],
            label=kw["label"],
        )
    role = " (supplementary)" if cert.supplementary else ""
    emit(kw, {"registered": True, **cert.to_dict()},
         [f"registered {cert.cert_id} for identifier {cert.user_id}{role}"])  # fmt: skip


def _operation(c: VerifierClient, kw: dict[str, Any]) -> None:
    payment, beneficiary = kw["payment"], kw["beneficiary"]
    if (payment is None) == (beneficiary is None):
        raise ValidationError("--payment AMOUNT CURRENCY PAYEE or --beneficiary PAYEE NAME: exactly one")
    if payment is not None:
        amount, currency, payee = payment
        ch = c.operation_challenge(
            kw["cert_id"], kind="payment", amount=amount, currency=currency, payee=payee
        )
    else:
        ch = c.operation_challenge(
            kw["cert_id"], kind="beneficiary", payee=beneficiary[0], name=beneficiary[1]
        )
    _challenge(kw, ch)


def _authenticate(c: VerifierClient, kw: dict[str, Any]) -> None:
    signature = _signature(kw)
    with json_rejection(kw, "accepted"):
        acc = c.authenticate(kw["challenge_id"], signature)
    emit(kw, {"accepted": True, **acc.to_dict()},
         [f"accepted: {dict(acc.details).get('kind', '')} approved by {acc.cert_id}"])  # fmt: skip


def _users(c: VerifierClient, kw: dict[str, Any]) -> None:
    users = c.list_org_users(kw["org_id"])
    emit(kw, {"users": [u.to_dict() for u in users]}, [_user_line(u) for u in users])


def _list(c: VerifierClient, kw: dict[str, Any]) -> None:
    certs = c.list_certificates(kw["org_id"], user_id=kw["user_id"])
    emit(kw, {"certificates": [x.to_dict() for x in certs]}, [_cert_line(x) for x in certs])


def _lifecycle(action: str) -> Handler:
    def handler(c: VerifierClient, kw: dict[str, Any]) -> None:
        cert = c.certificate_lifecycle(kw["cert_id"], action, reason=kw["reason"])
        emit(kw, cert.to_dict(), [f"certificate {cert.cert_id}: {cert.state}"])

    return handler


def _remove_user(c: VerifierClient, kw: dict[str, Any]) -> None:
    user = c.remove_org_user(kw["user_id"])
    emit(kw, user.to_dict(), [f"user {user.user_id}: removed"])


#: The ``verifier cert`` commands the HTTP API covers (all but ``cert trust``).
CERT_COMMANDS: Final[dict[str, Handler]] = {
    "verifier cert org-new": _org_new,
    "verifier cert challenge": _register_challenge,
    "verifier cert register": _register,
    "verifier cert operation": _operation,
    "verifier cert authenticate": _authenticate,
    "verifier cert users": _users,
    "verifier cert list": _list,
    "verifier cert revoke": _lifecycle("revoke"),
    "verifier cert unblock": _lifecycle("unblock"),
    "verifier cert remove-user": _remove_user,
}
