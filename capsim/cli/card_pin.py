"""``capsim card unblock``, ``change-pin`` and ``change-puk``: the issuer's PIN scripts for a card
file, and a PIV card's PUK.

A card whose PIN is blocked (three wrong PINs) refuses every code until its issuer unblocks
it. For a real card only the bank can; for a capsim card file these commands do what the bank
does, with the card's issuer keys.

Theory of operation
===================

1. **The keys.** The issuer-keys file is ``--issuer-keys FILE``, else
   ``<card stem>.issuer-keys.json`` beside the card (what ``capsim card new`` and the default
   card write). It is refused when other users can access it
   (:func:`capsim.issuerkeys.load_issuer_keys`), and when its keys' check values are not the
   ones the card was personalised with (:class:`~capsim.errors.KeyFileMismatch`, exit 12):
   then nothing is sent, so the card's ATC and PIN try counter stay as they were.
2. **The new PIN** (change-pin) is read like every PIN: a hidden prompt, asked twice, or one
   line of standard input with ``--pin-stdin``; it is checked (4 to 12 digits) before the card
   is touched and never printed.
3. **The bank's online transaction.** Over the card's reader: a transaction without
   cardholder verification (:meth:`capsim.reader.CapReader.issuer_request`: no VERIFY, so it
   runs on a blocked card) gives the ARQC and ATC; the script command is built from them with
   the card's master keys, derived from the issuer keys and the card's PAN and PSN
   (:func:`capsim.crypto.derive_icc_mk`), by :func:`capsim.sm.build_pin_change` (MAC under
   SK-SMI, the new PIN block enciphered under SK-SMC); it is sent over the same link before
   the card is powered off. A status word other than ``9000`` is the card's typed error.
   Then one more online transaction without a PIN collects the card's report of the script
   (the card puts it in the IAD of the transaction after a script, as the bank's next online
   contact would see it): so the cardholder's next code carries the card's usual history, the
   one a verifier that did not build the script itself expects (verifier.md V10).
4. **What to do about a blocked PIN** is said by every command that meets one
   (:func:`capsim.cli._common.blocked_advice`): for a card file, the ``capsim card unblock``
   command to run; for a real card, its bank.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

import click

from capsim._validate import digits
from capsim.apdu.response import status_error
from capsim.cards import CardProfile
from capsim.cli._common import handle_errors, secret_reader, warn_if_exposed
from capsim.cli.card import card
from capsim.cli.code import default_card_path
from capsim.crypto import derive_icc_mk
from capsim.errors import KeyFileMismatch, StateFileError, ValidationError
from capsim.issuerkeys import IssuerKeys, load_issuer_keys
from capsim.reader import CapReader
from capsim.sm import build_pin_change
from capsim.storage import read_card_file
from capsim.transports import open_transport

__all__ = ["change_pin_command", "change_puk_command", "default_keys_path", "unblock_command"]

_OK: Final = 0x9000


def default_keys_path(card_file: Path) -> Path:
    """``<card stem>.issuer-keys.json`` beside the card (rule 1)."""
    return card_file.with_name(f"{card_file.stem}.issuer-keys.json")


def _card_keys(card_file: Path, keys_file: Path | None) -> tuple[CardProfile, IssuerKeys]:
    """The card's personalisation and its issuer keys, checked against each other (rule 1)."""
    profile, _ = read_card_file(card_file)
    path = keys_file if keys_file is not None else default_keys_path(card_file)
    keys = load_issuer_keys(path)
    recorded = (profile.kcv_imk_ac, profile.kcv_imk_smi, profile.kcv_imk_smc)
    kcvs = keys.kcvs()
    mine = (kcvs["imk-ac"], kcvs["imk-smi"], kcvs["imk-smc"])
    for have, want in zip(mine, recorded, strict=True):
        if want and not hmac.compare_digest(have[: len(want)], want):
            raise KeyFileMismatch(
                f"issuer keys file {path} does not hold the issuer keys of card {card_file} "
                "(their check values differ); nothing was sent to the card"
            )
    return profile, keys


def _run_script(card_file: Path, profile: CardProfile, keys: IssuerKeys, new_pin: str | None) -> int:
    """The bank's online transaction and its PIN script (rule 3); the transaction's ATC."""
    option = profile.key_derivation
    mk_ac, mk_smi, mk_smc = (
        derive_icc_mk(imk, profile.pan, profile.psn, option=option)
        for imk in (keys.imk_ac, keys.imk_smi, keys.imk_smc)
    )
    with open_transport(f"file:{card_file}") as transport:
        request = CapReader(transport).issuer_request()
        script = build_pin_change(
            profile.cvn,
            new_pin=new_pin,
            mk_ac=mk_ac,
            mk_smi=mk_smi,
            mk_smc=mk_smc,
            atc=request.atc.to_bytes(2, "big"),
            arqc=request.cryptogram,
        )
        sw = int.from_bytes(transport.transmit(script)[-2:], "big")
        if sw != _OK:
            raise status_error(sw, script[1])
        CapReader(transport).issuer_request()  # the card reports the script here (rule 3)
    return request.atc


def _card_file(path: Path | None) -> Path:
    return path if path is not None else default_card_path()


def _new_pin(pin_stdin: bool) -> str:
    """The new PIN (rule 2): one stdin line, or the hidden prompt twice."""
    if pin_stdin:
        return digits("new PIN", secret_reader("new PIN", from_stdin=True)(), 4, 12)
    ask = secret_reader("New PIN", from_stdin=False)
    first = digits("new PIN", ask(), 4, 12)
    again = secret_reader("Repeat the new PIN", from_stdin=False)()
    if not hmac.compare_digest(first.encode(), again.encode()):
        raise ValidationError("new PIN: the two entries differ; nothing was changed")
    return first


_CARD_ARG = click.argument(
    "card_file", metavar="[CARD.json]", required=False, type=click.Path(dir_okay=False, path_type=Path)
)
_KEYS_OPT = click.option(
    "--issuer-keys",
    "keys_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The card's issuer-keys file (default: <card stem>.issuer-keys.json beside the card).",
)


def _piv(path: Path, keys_file: Path | None) -> bool:
    """Whether ``path`` is a PIV card file (rule 5); they have no issuer keys."""
    from capsim.cli.card_piv import is_piv

    if not is_piv(path):
        return False
    if keys_file is not None:
        raise ValidationError("--issuer-keys: a PIV card has no issuer keys; its PUK unblocks the PIN")
    return True


_PIN_STDIN = click.option(
    "--pin-stdin",
    is_flag=True,
    help="Read the PINs from standard input, one line each (PIV unblock: the PUK, then the new PIN; "
    "PIV change-pin: the current PIN, then the new one).",
)


@card.command("unblock")
@_CARD_ARG
@_KEYS_OPT
@_PIN_STDIN
@handle_errors
def unblock_command(card_file: Path | None, keys_file: Path | None, pin_stdin: bool) -> None:
    """[!] Unblock the card's PIN with the issuer's PIN UNBLOCK script (default card: the one of
    `capsim code`); a PIV card: with its PUK (RESET RETRY COUNTER), setting a new PIN."""
    path = _card_file(card_file)
    if _piv(path, keys_file):
        from capsim.cli.card_piv import piv_unblock

        click.echo(piv_unblock(path, pin_stdin=pin_stdin))
        return
    if pin_stdin:
        raise ValidationError("--pin-stdin: an EMV card's unblock asks for no PIN (the issuer's script)")
    warn_if_exposed(path)
    profile, keys = _card_keys(path, keys_file)
    atc = _run_script(path, profile, keys, None)
    click.echo(f"PIN unblocked: card {path} accepted the issuer's PIN UNBLOCK script (ATC {atc})")


@card.command("change-pin")
@_CARD_ARG
@_KEYS_OPT
@_PIN_STDIN
@handle_errors
def change_pin_command(card_file: Path | None, keys_file: Path | None, pin_stdin: bool) -> None:
    """[!] Set a new PIN with the issuer's PIN CHANGE script (it also unblocks the PIN); a PIV
    card: with the current PIN (CHANGE REFERENCE DATA)."""
    path = _card_file(card_file)
    if _piv(path, keys_file):
        from capsim.cli.card_piv import piv_change_pin

        click.echo(piv_change_pin(path, pin_stdin=pin_stdin))
        return
    warn_if_exposed(path)
    profile, keys = _card_keys(path, keys_file)
    new_pin = _new_pin(pin_stdin)
    atc = _run_script(path, profile, keys, new_pin)
    click.echo(f"PIN changed: card {path} accepted the issuer's PIN CHANGE script (ATC {atc})")


@card.command("change-puk")
@click.argument("card_file", metavar="CARD.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pin-stdin", is_flag=True, help="Read the current PUK, then the new one, from stdin.")
@handle_errors
def change_puk_command(card_file: Path, pin_stdin: bool) -> None:
    """[!] Set a new PUK on a PIV card (CHANGE REFERENCE DATA with the current PUK)."""
    if not card_file.exists():
        raise StateFileError(f"card file {card_file} does not exist")
    if not _piv(card_file, None):
        raise ValidationError(f"card {card_file}: not a PIV card file; only PIV cards have a PUK")
    from capsim.cli.card_piv import piv_change_puk

    click.echo(piv_change_puk(card_file, pin_stdin=pin_stdin))
