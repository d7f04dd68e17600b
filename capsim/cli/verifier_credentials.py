"""``capsim verifier credential …``: the lifecycle of an enrolled card's credential.

Reference: ``docs/cli.md``; behaviour: verifier.md §1–§2 and V33–V36. The shared options, the
session and the output helpers are :mod:`capsim.cli.verifier`'s; the command table in
:mod:`capsim.cli` attaches this group to the ``verifier`` group.

Theory of operation
-------------------
1. The states and their transitions are the verifier's (verifier.md V32, the transition
   table in :mod:`capsim.verifier.model`): ``pending`` (enrolled, waiting for its first code),
   ``active``, ``suspended``, ``blocked``, and the ends ``lost``, ``revoked`` and ``replaced``.
   ``unlock`` clears a temporary lock and the failure counters. Each command prints the state
   the verifier reached.
2. ``activate`` takes the card's first Identify code (a refusal is "code rejected", exit 10),
   or, without ``--code``, is an administrator act.
3. ``replace`` and ``lost --replacement-card`` read the new card's PAN, PSN and profile from its
   card file (:func:`capsim.cli.verifier.card_issuer_key`) and create its credential
   ``pending`` in the same transaction as the old one's end.
4. ``resync`` takes consecutive Identify codes of a card that ran beyond the ATC window;
   failures count (V34). ``advance-floor`` only ever raises the ATC floor and never counts a
   failure (V36).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from capsim.cli._common import handle_errors
from capsim.cli.verifier import (
    _AS_OPTION,
    _READER_PROFILE_OPTION,
    _REQUEST_ID_OPTION,
    VerifierSession,
    _credential_line,
    _credential_view,
    _db_options,
    _emit,
    _emit_credential_state,
    _json_rejection,
    _read_line_from_stdin,
    _request_id,
    card_issuer_key,
    open_session,
)
from capsim.errors import ValidationError

__all__ = ["credential_group"]


# -- credentials -------------------------------------------------------------------------------------
@click.group("credential")
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


