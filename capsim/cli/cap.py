"""``capsim cap [-c CHALLENGE] [-a AMOUNT] [-r READER]``: one command that picks the CAP mode.

Theory of operation
-------------------
1. The mode follows from the arguments, as python-emv's ``emvtool cap`` chooses it:
   no challenge and no amount → Identify (Mode 2); a challenge → Respond (Mode 3); a
   challenge and an amount → Sign (Mode 1). :func:`choose_mode` is that rule, a pure function.
2. An amount without a challenge, or a currency without an amount, is refused (bad input,
   exit 13) before the card is opened or the PIN asked for: the command never guesses.
3. Everything else (reader, reader profile, PIN entry, ``--json``, ``--trace``, ``--explain``,
   exit codes) is ``capsim code``'s own implementation (:func:`capsim.cli.code._run` and its
   options), so ``capsim cap -c 1234`` and ``capsim code respond -c 1234`` print the same code
   for the same card state.
"""

from __future__ import annotations

from typing import Any

import click

from capsim.cap import CapMode
from capsim.cli._common import handle_errors
from capsim.cli.code import _common_options, _run
from capsim.errors import ValidationError

__all__ = ["cap", "choose_mode"]


def choose_mode(challenge: str | None, amount: str | None, currency: str | None = None) -> CapMode:
    """The CAP mode the arguments ask for (rule 1), or ``ValidationError`` (rule 2).

    Examples
    --------
    >>> choose_mode(None, None).value, choose_mode("1234", None).value, choose_mode("1", "5.00").value
    ('identify', 'respond', 'sign')
    """
    if amount is None:
        if currency is not None:
            raise ValidationError("--currency: a currency goes with an amount (-a, Sign mode)")
        return CapMode.IDENTIFY if challenge is None else CapMode.RESPOND
    if challenge is None:
        raise ValidationError("-a/--amount: an amount needs a challenge too (-c CHALLENGE -a AMOUNT signs)")
    return CapMode.SIGN


@click.command("cap")
@click.option(
    "-c", "--challenge", metavar="CHALLENGE", help="Challenge: Respond, or Sign with -a (1 to 8 digits)."
)
@click.option("-a", "--amount", metavar="AMOUNT", help="Amount in major units (15.00): Sign, with -c.")
@click.option(
    "--currency", metavar="CURRENCY", help="ISO 4217 currency for Sign, alphabetic (EUR) or numeric (978)."
)
@_common_options
@handle_errors
def cap(challenge: str | None, amount: str | None, currency: str | None, **options: Any) -> None:
    """[!] A CAP code, the mode chosen from the arguments: none → Identify, -c → Respond,
    -c and -a → Sign."""
    mode = choose_mode(challenge, amount, currency)
    if mode is CapMode.IDENTIFY:
        _run(mode, **options)
    elif mode is CapMode.RESPOND:
        _run(mode, challenge=challenge, **options)
    else:
        _run(mode, challenge=challenge, amount=amount, currency=currency, **options)
