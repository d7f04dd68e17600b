"""``capsim verifier user add|list``, ``verifier activation-code`` and ``verifier enroll``:
users, their activation codes and the enrolment of their cards.

Reference: ``docs/cli.md``; behaviour: verifier.md §1–§2. The shared options, the session and
the output helpers are :mod:`capsim.cli.verifier`'s (its "Theory of operation" holds for every
command here); the command table in :mod:`capsim.cli` attaches these commands to the
``verifier`` group.

Theory of operation
-------------------
1. The first user of a new customer account is its administrator; an administrator (``--as``)
   adds secondary users to its own account only.
2. An activation code is printed once, to be handed to the user out of band; it is single use.
3. Enrolment reads PAN, PSN and profile from the card file (as a bank's card-management system
   would hand them over) and picks the registered issuer keys whose KCV matches the card's. The
   card's first Identify code, if given, activates the credential; without it the credential
   stays pending. No PAN is printed: only its last four digits.
"""

from __future__ import annotations

from pathlib import Path

import click

from capsim.cli._common import handle_errors
from capsim.cli.verifier import (
    _AS_OPTION,
    _READER_PROFILE_OPTION,
    _REQUEST_ID_OPTION,
    _credential_view,
    _db_options,
    _emit,
    _iso,
    _json_rejection,
    _read_line_from_stdin,
    _request_id,
    _user_view,
    card_issuer_key,
    open_session,
)

__all__ = ["activation_code_command", "enroll_command", "user_group"]


# -- users -------------------------------------------------------------------------------------------
@click.group("user")
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
@click.command("activation-code")
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


@click.command("enroll")
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


