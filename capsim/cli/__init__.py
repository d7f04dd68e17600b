"""The ``capsim`` command line.

Each command family lives in its own module and is named in :data:`COMMANDS`; a family's
module is imported only when one of its commands is used (:mod:`capsim.cli._lazy`), so
``capsim --help`` imports no family and ``capsim code …`` only the reader's side. Exit codes
are documented in :mod:`capsim.cli._common` and in ``docs/cli.md``.

**Adding a command is one line in** :data:`COMMANDS`: its path (``"cap"``, or ``"card info"``
for a command inside the ``card`` group), the module, the click command's name in that module
and the first sentence of its docstring, for example::

    "card info": LazyCommand("capsim.cli.card_info", "info", "Print a redacted dump of a card."),

A subcommand's module only defines its command (with ``@click.command``) and need not import
its parent group: the table adds it to the parent whenever the parent is loaded, and loads it
only then (a module that also registers itself on its parent, as ``serve`` does, works the
same). ``tests/cli/test_lazy_cli.py`` loads every entry and checks its short help against the
docstring, so a typo or a stale short help fails there.

Commands marked ``[!]`` change a card's state (its ATC, its PIN try counter), as a real card
would: their short help starts with it, and the main help says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import click

from capsim._version import __version__
from capsim.cli._lazy import LazyCommand, LazyGroup

__all__ = ["COMMANDS", "main"]

#: Every command family and every subcommand that lives outside its group's module.
COMMANDS: Final[Mapping[str, LazyCommand]] = {
    "tlv": LazyCommand("capsim.cli.tlv", "tlv", "Decode BER-TLV data and DOLs."),
    "card": LazyCommand("capsim.cli.card", "card", "Emulated EMV-CAP cards: create, inspect and drive card files."),  # noqa: E501
    "card serve": LazyCommand("capsim.cli.serve", "serve", "[!] Serve EMV or PIV CARD_FILES to pcscd through vpcd until interrupted (Ctrl-C or SIGTERM)."),  # noqa: E501
    "code": LazyCommand("capsim.cli.code", "code", "[!] Compute CAP codes with a card: identify, respond, sign, tds."),  # noqa: E501
    "cap": LazyCommand("capsim.cli.cap", "cap", "[!] A CAP code, the mode chosen from the arguments: none → Identify, -c → Respond, -c and -a → Sign."),  # noqa: E501
    "card unblock": LazyCommand("capsim.cli.card_pin", "unblock_command", "[!] Unblock the card's PIN with the issuer's PIN UNBLOCK script (default card: the one of `capsim code`); a PIV card: with its PUK (RESET RETRY COUNTER), setting a new PIN."),  # noqa: E501
    "card change-pin": LazyCommand("capsim.cli.card_pin", "change_pin_command", "[!] Set a new PIN with the issuer's PIN CHANGE script (it also unblocks the PIN); a PIV card: with the current PIN (CHANGE REFERENCE DATA)."),  # noqa: E501
    "card change-puk": LazyCommand("capsim.cli.card_pin", "change_puk_command", "[!] Set a new PUK on a PIV card (CHANGE REFERENCE DATA with the current PUK)."),  # noqa: E501
    "readers": LazyCommand("capsim.cli.readers", "readers", "List the card readers: PC/SC readers (index, name, card, ATR), then the virtual cards."),  # noqa: E501
    "verifier": LazyCommand("capsim.cli.verifier", "verifier", "The bank-side verifier: users, enrolment, operations, credentials and audit."),  # noqa: E501
    "verifier user": LazyCommand("capsim.cli.verifier_enrolment", "user_group", "Users and customer accounts."),  # noqa: E501
    "verifier activation-code": LazyCommand("capsim.cli.verifier_enrolment", "activation_code_command", "Issue a single-use activation code for USER (hand it to the user out of band)."),  # noqa: E501
    "verifier enroll": LazyCommand("capsim.cli.verifier_enrolment", "enroll_command", "Bind a card to the user of an activation code (its first Identify code activates it)."),  # noqa: E501
    "verifier operation": LazyCommand("capsim.cli.verifier_operations", "operation_group", "Operations: single-use, bound challenges for one credential."),  # noqa: E501
    "verifier credential": LazyCommand("capsim.cli.verifier_credentials", "credential_group", "Credentials (enrolled cards): list, activate, suspend, resume, unlock, revoke, lost, replace, resync, advance-floor."),  # noqa: E501
    "verifier cert": LazyCommand("capsim.cli.verifier_certs", "cert_group", "Certificate credentials: organisations, registration, operation-bound signatures."),  # noqa: E501
    "verifier audit": LazyCommand("capsim.cli.verifier_audit", "audit_command", "List the audit records, or check their chain and seals (verifier.md V37-V39)."),  # noqa: E501
    "verifier keys": LazyCommand("capsim.cli.verifier_keys", "keys_group", "Issuer keys in a PKCS#11 token: import them, list them, migrate a verifier onto them."),  # noqa: E501
    "verifier serve": LazyCommand("capsim.cli.verifier_serve", "serve_command", "Serve the verifier over HTTP (docs/http-api.md)."),  # noqa: E501
    "verifier client": LazyCommand("capsim.cli.verifier_serve", "client_group", "API clients of the HTTP service: keys shown once, stored hashed."),  # noqa: E501
    "verify": LazyCommand("capsim.cli.verifier", "verify", "Verify CODE ('-': one line of stdin) for OPERATION (or, for an Identify login, a credential id)."),  # noqa: E501
    "demo": LazyCommand("capsim.cli.demo", "demo", "[!] Card, reader and verifier end to end: enrol, log in, respond, sign, TDS, a replay and a wrong amount refused, three wrong PINs, a PIN UNBLOCK script."),  # noqa: E501
    "token": LazyCommand("capsim.cli.token", "token", "Certificate tokens (PIV cards, USB keys): sign a verifier's challenge."),  # noqa: E501
    "fuzz": LazyCommand("capsim.cli.fuzz", "fuzz", "Fuzz cards, readers and verifiers; findings are saved as replayable transcripts."),  # noqa: E501
    "analyze": LazyCommand("capsim.cli.analyze", "analyze_command", "Measure a CAP deployment: code anatomy, guessing, mode confusion, freshness, PIN handling."),  # noqa: E501
    "probe": LazyCommand("capsim.cli.probe", "probe", "Run the CAP attack battery against a verifier and report each check with its evidence."),  # noqa: E501
}


@click.group(
    cls=LazyGroup,
    table=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="capsim")
def main() -> None:
    """capsim: emulated EMV-CAP cards, a CAP reader and a bank-side verifier.

    Commands marked [!] change a card's state, as a real card would: they move its
    application transaction counter (ATC) or its PIN try counter. Run them on a real card
    only if you mean to.
    """
