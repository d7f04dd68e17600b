"""Who may do what: the bank's operator and customer administrators, as a table.

Theory of operation
-------------------
1. Every administrative method of :class:`~capsim.verifier.service.Verifier` names the
   :class:`Power` it exercises and who acts (``acting_user``). ``None`` is the bank's own
   operator, who holds every power over every account.
2. A customer administrator (a :class:`~capsim.verifier.model.User` with role ``admin``,
   not disabled) holds the powers in :data:`CUSTOMER_ADMIN_POWERS`, and only over the users
   and credentials of its own customer account: it adds secondary users, issues their
   activation codes, lists their credentials, and suspends, resumes and revokes them.
   Everything else (activating a credential without its first code, unlocking or unblocking
   a credential, reporting a card lost, replacing it, building issuer PIN scripts) is the
   bank's: these decide whether a possibly stolen card works again.
3. :func:`authorize` is the one check; a refusal raises
   :class:`~capsim.errors.ValidationError` and changes nothing.

>>> from datetime import datetime, timezone
>>> from capsim.verifier.model import User, UserRole
>>> admin = User(user_id="boss", customer_id="cu-1", role=UserRole.ADMIN,
...              created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
>>> authorize(admin, Power.SUSPEND, "cu-1")
>>> authorize(admin, Power.UNLOCK, "cu-1")
Traceback (most recent call last):
...
capsim.errors.ValidationError: acting_user: a customer administrator may not unlock; the bank's operator may
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from capsim.errors import ValidationError
from capsim.verifier.model import User, UserRole

__all__ = ["CUSTOMER_ADMIN_POWERS", "Power", "authorize"]


class Power(StrEnum):
    """An administrative act (docs/verifier.md, "Who may do what")."""

    ADD_USER = "add a user"
    ISSUE_ACTIVATION = "issue activation codes"
    LIST = "list credentials"
    SUSPEND = "suspend"
    RESUME = "resume"
    REVOKE = "revoke"
    ACTIVATE = "activate without a first code"
    UNLOCK = "unlock"
    REPORT_LOST = "report a card lost"
    REPLACE = "replace a card"
    PIN_SCRIPT = "build issuer PIN scripts"


#: What a customer administrator may do, within its own customer account.
CUSTOMER_ADMIN_POWERS: Final = frozenset(
    {Power.ADD_USER, Power.ISSUE_ACTIVATION, Power.LIST, Power.SUSPEND, Power.RESUME, Power.REVOKE}
)


def authorize(actor: User | None, power: Power, customer_id: str, *, operator: bool = False) -> None:
    """Refuse unless ``actor`` may exercise ``power`` over ``customer_id``'s account.

    ``operator=True`` (with ``actor=None``) is the bank's operator. ``actor=None`` without it
    is an ``acting_user`` that does not exist.
    """
    if operator:
        return
    if (
        actor is None
        or actor.disabled
        or actor.role is not UserRole.ADMIN
        or actor.customer_id != customer_id
    ):
        raise ValidationError("acting_user: not an administrator of this customer account")
    if power not in CUSTOMER_ADMIN_POWERS:
        raise ValidationError(
            f"acting_user: a customer administrator may not {power.value}; the bank's operator may"
        )
