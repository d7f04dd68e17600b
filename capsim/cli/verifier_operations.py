"""``capsim verifier operation new``: single-use challenges bound to one credential.

Reference: ``docs/cli.md``; behaviour: verifier.md §1–§2. The shared options, the session and
the output helpers are :mod:`capsim.cli.verifier`'s (as is ``capsim verify``, which checks a
code against an operation); the command table in :mod:`capsim.cli` attaches this group to the
``verifier`` group.

Theory of operation
-------------------
1. ``operation new`` asks the verifier for an operation of one mode (identify, respond, sign,
   tds) and prints what the user types into the reader: the challenge, the amount in minor
   units and the currency, the TDS fields. The amount and currency rules are the verifier's.
2. ``--payment`` marks a payment approval, where the PSD2 dynamic-linking rules apply.
"""

from __future__ import annotations

from typing import Any

import click

from capsim.cap import validate_tds_fields
from capsim.cli._common import handle_errors
from capsim.cli.verifier import _db_options, _emit, _iso, open_session
from capsim.verifier.model import Operation

__all__ = ["operation_group"]


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


# -- operations --------------------------------------------------------------------------------------
@click.group("operation")
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
