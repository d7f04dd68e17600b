"""``capsim verifier … --db http(s)://HOST`` and ``capsim verify … --db http(s)://HOST``: the
same commands against a remote verifier service, through :class:`capsim.client.VerifierClient`.

Theory of operation
-------------------
1. ``--db`` (or ``CAPSIM_DB``) naming an ``http://`` or ``https://`` URL routes the command here
   (:func:`capsim.cli.verifier._db_options`) instead of opening a database. The API key comes
   from the ``CAPSIM_API_KEY`` environment variable only, never from an option (options end up
   in shell histories and process lists); without it the command stops with exit 13.
2. Each covered command (:data:`COMMANDS`, keyed by its command path such as ``verifier
   credential suspend``) makes the same API calls a bank backend would and prints the same
   lines or JSON object as the local command; the JSON objects carry what the API returns
   (a credential has no ``cvn`` over HTTP). Refusals keep their exit codes: a rejected code
   10, a temporary failure or rate limit 11, an invalid input 13, a broken audit 14, a
   reused request id 15.
   ``verifier cert …`` commands are in :mod:`capsim.cli.remote_certs`.
3. Commands the API does not cover (``init``, ``keys …``, ``client …``, ``serve``, the audit
   listing, ``cert trust``) and ``--as`` (over HTTP the API key decides who acts) are refused with a
   :class:`~capsim.errors.ConfigError` (exit 13) that says so; nothing is sent.
4. Card files are read here, on the command line, as for a local database: PAN, PSN and
   profile go to the service, the card's keys never do. No code, key or PAN is printed.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Final

import click

from capsim.cap import validate_tds_fields
from capsim.cli._common import JSON_ERROR_EXTRA, handle_errors, write_tip
from capsim.cli.remote_common import Handler
from capsim.cli.remote_common import emit as _emit
from capsim.cli.remote_common import json_rejection as _json_rejection
from capsim.client import Credential, VerifierClient
from capsim.errors import AuditTampered, ConfigError, StateFileError, ValidationError
from capsim.storage import read_card_file
from capsim.verifier.audit import AuditTip

__all__ = ["API_KEY_ENV", "COMMANDS", "is_remote", "run_remote"]

#: The environment variable holding the API key of remote commands.
API_KEY_ENV: Final = "CAPSIM_API_KEY"


def is_remote(db: object) -> bool:
    """Whether a ``--db`` value names a verifier service rather than a database."""
    return isinstance(db, str) and db.lower().startswith(("http://", "https://"))


def _command_path() -> str:
    names: list[str] = []
    ctx: click.Context | None = click.get_current_context()
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


@handle_errors
def run_remote(kwargs: dict[str, Any]) -> None:
    """Run the current command against the service named by ``kwargs["db"]``."""
    path = _command_path()
    handler = COMMANDS.get(path)
    if handler is None and path.startswith("verifier cert "):
        from capsim.cli.remote_certs import CERT_COMMANDS

        handler = CERT_COMMANDS.get(path)
    if handler is None:
        raise ConfigError(
            f"'{path}' is not available against a verifier service (the HTTP API does not cover it); "
            "run it where --db names the verifier database itself"
        )
    if kwargs.get("acting_user") is not None:
        raise ConfigError(
            "--as: against a verifier service the API key decides who acts; use that client's key"
        )
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"--db {kwargs['db']}: set {API_KEY_ENV} to the API key of a client of this service "
            "('capsim verifier client add' shows it once)"
        )
    with VerifierClient(str(kwargs["db"]), key) as client:
        handler(client, kwargs)


# ------------------------------------------------------------------------------------------------
# Output and input, as the local commands do them


def _stdin(value: str | None, what: str) -> str | None:
    if value != "-":
        return value
    line = sys.stdin.readline()
    if not line:
        raise ValidationError(f"{what}: expected one line on standard input ('-'), got nothing")
    return line.rstrip("\r\n")


def _request_id(value: str | None) -> str:
    return value if value is not None else "cli-" + secrets.token_hex(12)


def _card(card_path: Path, reader_profile: str | None) -> dict[str, Any]:
    from capsim.verifier.enrolment import credential_profile_from_card

    profile, _state = read_card_file(card_path)
    return {
        "pan": profile.pan,
        "psn": profile.psn,
        "issuer_key_id": "iss-" + profile.kcv_imk_ac.hex().upper(),
        "profile": credential_profile_from_card(profile, reader_profile=reader_profile).to_dict(),
    }


def _credential_line(credential: Credential) -> str:
    c = credential.to_dict()
    lock = f" locked until {c['locked_until']}" if c.get("locked_until") else ""
    return (
        f"{c['credential_id']}  {c['state']:9} user {c['user_id']}  card ****{c['pan_last4']} PSN {c['psn']}"
        f"  {c['reader_profile']}  last ATC {c['last_atc']}  failures {c['fail_count']}/{c['max_fail']}{lock}"
    )


# ------------------------------------------------------------------------------------------------
# The covered commands


def _user_add(c: VerifierClient, kw: dict[str, Any]) -> None:
    user = c.add_user(kw["user_id"], customer_id=kw["customer_id"], admin=True if kw["admin"] else None)
    _emit(
        kw,
        user.to_dict(),
        [f"user {user.user_id} created in customer account {user.customer_id} ({user.role})"],
    )


def _user_list(c: VerifierClient, kw: dict[str, Any]) -> None:
    users = c.list_users(kw["customer_id"])
    lines = [f"{u.user_id}  account {u.customer_id}  {u.role}" for u in users]
    _emit(kw, {"users": [u.to_dict() for u in users]}, lines or ["no users"])


def _activation_code(c: VerifierClient, kw: dict[str, Any]) -> None:
    act = c.issue_activation_code(kw["user_id"], ttl_s=kw["ttl_s"]).to_dict()
    obj = {"activation_code": act["code"], "user_id": act["user_id"], "expires_at": act["expires_at"]}
    line = f"activation code for {act['user_id']}: {act['code']} (single use, expires {act['expires_at']})"
    _emit(kw, obj, [line])


def _enroll(c: VerifierClient, kw: dict[str, Any]) -> None:
    activation = _stdin(kw["activation"], "--activation-code") or ""
    first = _stdin(kw["first_code"], "--code")
    card = _card(kw["card_path"], kw["reader_profile"])
    rid = None if first is None else _request_id(kw["request_id"])
    with _json_rejection(kw, "enrolled"):
        cred = c.enroll(activation, first_code=first, label=kw["label"], request_id=rid, **card)
    tail = f" (ATC {cred.last_atc})" if first is not None else " (needs its first code)"
    _emit(kw, cred.to_dict(), [f"credential {cred.credential_id} for user {cred.user_id}: card "
                               f"****{cred.pan_last4} PSN {cred.psn}, {cred.state}{tail}"])  # fmt: skip


def _operation_new(c: VerifierClient, kw: dict[str, Any]) -> None:
    if kw["fields"]:
        validate_tds_fields(kw["fields"], option="--field")  # named as typed: "--field #2"
    operation = c.issue_operation(
        kw["credential_id"],
        mode=kw["mode"],
        reference=kw["reference"],
        amount=kw["amount"],
        currency=kw["currency"],
        payee=kw["payee"],
        fields=list(kw["fields"]) if kw["fields"] else None,
        payment=kw["payment"],
        ttl_s=kw["ttl_s"],
    )
    op = operation.to_dict()
    lines = [f"operation {op['operation_id']} ({op['mode']}), expires {op['expires_at']}"]
    if op["challenge"]:
        lines.append(f"challenge: {op['challenge']}")
    if op["amount_minor"] is not None:
        lines.append(f"amount: {op['amount_minor']} minor units, currency {op['currency'] or '-'}")
    if op["fields"]:
        lines.append("fields: " + " ".join(op["fields"]))
    _emit(kw, op, lines)


def _credential_list(c: VerifierClient, kw: dict[str, Any]) -> None:
    users = [kw["user_id"]] if kw["user_id"] is not None else [u.user_id for u in c.list_users()]
    creds = [cred for u in users for cred in c.list_credentials(u)]
    creds.sort(key=lambda x: (x.user_id, x.created_at, x.credential_id))
    _emit(
        kw,
        {"credentials": [x.to_dict() for x in creds]},
        [_credential_line(x) for x in creds] or ["no credentials"],
    )


def _lifecycle(action: str) -> Handler:
    def handler(c: VerifierClient, kw: dict[str, Any]) -> None:
        cred = c.lifecycle(kw["credential_id"], action, reason=kw["reason"])
        _emit(kw, cred.to_dict(), [f"credential {cred.credential_id}: {cred.state}"])

    return handler


def _activate(c: VerifierClient, kw: dict[str, Any]) -> None:
    cid = kw["credential_id"]
    code = _stdin(kw["code"], "--code")
    if code is None:
        cred = c.admin_activate(cid)
    else:
        with _json_rejection(kw, "activated"):
            c.activate(cid, code, request_id=_request_id(kw["request_id"]))
        cred = c.get_credential(cid)
    _emit(kw, cred.to_dict(), [f"credential {cred.credential_id}: {cred.state}"])


def _replace(c: VerifierClient, kw: dict[str, Any]) -> None:
    new = c.replace(kw["credential_id"], **_card(kw["card_path"], kw["reader_profile"]))
    _emit(kw, new.to_dict(), [f"credential {kw['credential_id']}: replaced by {new.credential_id} (card "
                              f"****{new.pan_last4} PSN {new.psn}, {new.state})"])  # fmt: skip


def _lost(c: VerifierClient, kw: dict[str, Any]) -> None:
    cid = kw["credential_id"]
    if kw["card_path"] is None:
        c.report_lost(cid)
        state = c.get_credential(cid).state
        _emit(kw, {"credential_id": cid, "state": state, "replacement": None}, [f"credential {cid}: {state}"])
        return
    card = _card(kw["card_path"], kw["reader_profile"])
    new = c.report_lost(
        cid,
        replacement_pan=card["pan"],
        replacement_psn=card["psn"],
        issuer_key_id=card["issuer_key_id"],
        profile=card["profile"],
    )
    if new is None:
        raise ValidationError("--replacement-card: no replacement was created")
    _emit(
        kw,
        {"credential_id": cid, "state": "replaced", "replacement": new.to_dict()},
        [f"credential {cid}: lost, replaced by {new.credential_id} ({new.state})"],
    )


def _resync(c: VerifierClient, kw: dict[str, Any]) -> None:
    cid = kw["credential_id"]
    codes = [_stdin(x, "CODE") or "" for x in kw["codes"]]
    with _json_rejection(kw, "resynchronised"):
        atc = c.resync(cid, codes, request_id=_request_id(kw["request_id"]))
    _emit(kw, {"resynchronised": True, "credential_id": cid, "last_atc": atc},
          [f"credential {cid}: resynchronised, last ATC {atc}"])  # fmt: skip


def _advance_floor(c: VerifierClient, kw: dict[str, Any]) -> None:
    cid = kw["credential_id"]
    last = c.advance_floor(cid, kw["atc"])
    _emit(kw, {"credential_id": cid, "last_atc": last}, [f"credential {cid}: last ATC {last}"])


def _audit(c: VerifierClient, kw: dict[str, Any]) -> None:
    tip_file: Path | None = kw["tip_file"]
    check = bool(kw["check"]) or tip_file is not None
    export = kw["export_tip"]
    if not check and export is None:
        raise ConfigError(
            "'verifier audit' lists records only where --db names the database; "
            "against a service use --check or --export-tip"
        )
    if check and export == "-":
        raise click.UsageError("--export-tip without FILE prints the tip: it cannot be combined with --check")
    tip = None
    if tip_file is not None:
        try:
            tip = AuditTip.from_json(tip_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise StateFileError(f"--tip: cannot read {tip_file} ({exc})") from None
    report = c.audit_check(tip)
    problems = report.problems
    if check:
        obj = {**report.to_dict(), "tip": None if tip is None else tip.seq}
        lines = [f"record {p.seq}: {p.kind}" + (f" ({p.detail})" if p.detail else "") for p in problems]
        if not problems:
            lines = [f"audit chain intact: {report.records} records"]
            sealed = report.sealed_from
            lines.append("the audit is not sealed" if sealed is None else f"sealed from record {sealed}")
            if tip is not None:
                lines.append(f"the exported tip (record {tip.seq}) is present and unchanged")
        if kw["as_json"] and problems:  # one object: handle_errors adds the error to the report
            click.get_current_context().meta[JSON_ERROR_EXTRA] = obj
        else:
            _emit(kw, obj, lines)
    if problems:
        seqs = ", ".join(str(s) for s in sorted({p.seq for p in problems}))
        raise AuditTampered(f"the audit chain is broken ({len(problems)} problem(s); records {seqs})")
    if export is not None:
        text = c.audit_tip().to_json()
        path = write_tip(text, export)
        if path is None:
            return
        if not check:
            seq = json.loads(text)["seq"]
            _emit(
                kw,
                {"tip": json.loads(text), "file": str(path)},
                [f"audit tip exported: record {seq} to {path}"],
            )


def _verify(c: VerifierClient, kw: dict[str, Any]) -> None:
    target: str = kw["target"]
    code = _stdin(kw["code"], "CODE") or ""
    rid = _request_id(kw["request_id"])
    with _json_rejection(kw, "accepted"):
        if target.startswith("op-"):
            acc = c.verify(target, code, request_id=rid)
        else:
            acc = c.login(target, code, request_id=rid)
    obj = {"accepted": True, **acc.to_dict(), "request_id": rid}
    _emit(kw, obj, [f"accepted: {acc.mode} for credential {acc.credential_id} (ATC {acc.atc})"])


#: Every command the HTTP API covers, by command path (rule 2).
COMMANDS: Final[dict[str, Handler]] = {
    "verifier user add": _user_add,
    "verifier user list": _user_list,
    "verifier activation-code": _activation_code,
    "verifier enroll": _enroll,
    "verifier operation new": _operation_new,
    "verifier credential list": _credential_list,
    "verifier credential suspend": _lifecycle("suspend"),
    "verifier credential resume": _lifecycle("resume"),
    "verifier credential revoke": _lifecycle("revoke"),
    "verifier credential unlock": _lifecycle("unlock"),
    "verifier credential activate": _activate,
    "verifier credential replace": _replace,
    "verifier credential lost": _lost,
    "verifier credential resync": _resync,
    "verifier credential advance-floor": _advance_floor,
    "verifier audit": _audit,
    "verify": _verify,
}
