"""``capsim code identify|respond|sign|tds``: the CAP reader on the command line.

(``capsim readers`` is :mod:`capsim.cli.readers`; the ``--reader``/``--wait`` options are
:mod:`capsim.cli._reader`'s.)

With no ``--reader``, the commands use a default virtual card file in the user's data
directory (``capsim.cli._common.data_dir()``), created on first use: profile ``secur-acces``,
a random Luhn-valid test PAN, random issuer keys saved beside it (mode 0600) and the test
PIN ``1234``, printed once when the card is created. So on a fresh machine::

    capsim code respond --challenge 12345678

prompts for the PIN and prints 8 digits. The PIN is read with a hidden prompt, or from one line
of standard input with ``--pin-stdin``; it is never an option. It is asked for only once the
card's PIN try counter shows a try is left (``CapSession(pin=ASK_PIN)``), so a blocked card fails
before the prompt, with what to do (:func:`capsim.cli._common.blocked_advice`). stdout carries
only the code (``--explain`` goes to stderr, or into ``--json``). Errors print one line and exit
with the code documented in :mod:`capsim.cli._common` (wrong PIN 3, blocked 4, no card 5,
reader not found 6, PC/SC unavailable 7, no CAP application 8, card error 9, bad input 13).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from capsim.cli._common import (
    blocked_advice,
    data_dir,
    deprecated_alias,
    handle_errors,
    secret_reader,
    warn_if_exposed,
)
from capsim.cli._reader import READER_HELP, open_reader, parse_aid, wait_option
from capsim.errors import CapsimError, PinBlockedError, PinError, StateFileError
from capsim.profiles import READER_PROFILES

if TYPE_CHECKING:  # imported where a code is computed, so that ``--help`` does without them
    from capsim.reader import CapResult
    from capsim.transports import Transport

__all__ = ["DEFAULT_CARD_FILE", "DEFAULT_CARD_PROFILE", "code", "default_card_path"]

#: File name of the default virtual card inside the data directory.
DEFAULT_CARD_FILE: Final = "card.json"
#: Card template of the default virtual card.
DEFAULT_CARD_PROFILE: Final = "secur-acces"
_DEFAULT_PIN: Final = "1234"

F = TypeVar("F", bound=Callable[..., Any])


def default_card_path() -> Path:
    """Where the default virtual card lives (``<data dir>/card.json``)."""
    return data_dir() / DEFAULT_CARD_FILE


def _ensure_default_card() -> Path:
    """Create the default virtual card on first use; return its path."""
    path = default_card_path()
    if path.exists():
        return path
    import secrets

    from capsim.cards import builtin_profile, new_card
    from capsim.cli.card import random_test_pan
    from capsim.crypto import odd_parity
    from capsim.storage import IssuerKeys, save_issuer_keys

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = IssuerKeys(
        imk_ac=odd_parity(secrets.token_bytes(16)),
        imk_smi=odd_parity(secrets.token_bytes(16)),
        imk_smc=odd_parity(secrets.token_bytes(16)),
    )
    keys_path = path.with_name(f"{path.stem}.issuer-keys.json")
    recreated = keys_path.exists()  # the card file was deleted, its issuer keys were not
    try:
        if not recreated:
            save_issuer_keys(keys_path, keys)
        else:
            from capsim.storage import load_issuer_keys

            keys = load_issuer_keys(keys_path)
        template = builtin_profile(DEFAULT_CARD_PROFILE)
        card = new_card(
            template,
            pan=random_test_pan(template),
            pin=_DEFAULT_PIN,
            imk_ac=keys.imk_ac,
            imk_smi=keys.imk_smi,
            imk_smc=keys.imk_smc,
            path=path,
        )
    except StateFileError:
        if path.exists():  # another capsim process created it first
            return path
        raise
    card.close()
    click.echo(
        f"capsim: created the virtual test card {path} (profile {DEFAULT_CARD_PROFILE}); "
        f"its PIN is {_DEFAULT_PIN}; issuer keys in {keys_path}",
        err=True,
    )
    if recreated:
        from capsim.cli.card import mask_pan

        click.echo(
            f"capsim: warning: {path} was missing, so this is a NEW card with a new PAN "
            f"({mask_pan(card.profile.pan)}) under the existing issuer keys; a verifier credential "
            "enrolled with the old card will not accept its codes: enrol this card again",
            err=True,
        )
    return path


def _card_file(reader_spec: str | None) -> Path | None:
    """The card file behind a reader spec (the default card when none is given), else ``None``."""
    if reader_spec is None:
        return default_card_path()
    if reader_spec.startswith("file:"):
        return Path(reader_spec[len("file:") :])
    return None


def _blocked_advice(exc: CapsimError, card_file: Path | None) -> CapsimError:
    """A blocked PIN's error, with what to do about it; any other error as it is."""
    if isinstance(exc, PinBlockedError) or (isinstance(exc, PinError) and exc.tries_left == 0):
        return type(exc)(exc.sw, exc.ins, f"{exc}; {blocked_advice(card_file)}")
    return exc


def _open(reader_spec: str | None, wait: float | None = None) -> Transport:
    from capsim.transports import open_transport

    if reader_spec is None:
        path = _ensure_default_card()
        warn_if_exposed(path)
        return open_transport(f"file:{path}")
    card_file = _card_file(reader_spec)
    if card_file is not None:
        warn_if_exposed(card_file)
    return open_reader(reader_spec, wait=wait)


def _common_options(func: F) -> F:
    options = [
        click.option(
            "-r",
            "--reader",
            "reader_spec",
            metavar="SPEC",
            help=READER_HELP.rstrip(".") + "; default: the virtual card in the data directory.",
        ),
        wait_option,
        click.option(
            "--reader-profile",
            type=click.Choice(list(READER_PROFILES)),
            help="Reader profile (default: chosen from the card's application).",
        ),
        click.option("--profile", "profile_alias", type=click.Choice(list(READER_PROFILES)), hidden=True),
        click.option("--aid", metavar="HEX", help="Select only this application."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--trace", is_flag=True, help="Print every APDU on stderr (redacted)."),
        click.option("--explain", is_flag=True, help="Show where each bit of the code came from."),
        click.option("--pin-stdin", is_flag=True, help="Read the PIN from one line of standard input."),
        click.option(
            "--show-sensitive",
            is_flag=True,
            help="Do not redact PIN blocks and PAN in --trace; add the cryptogram to --json.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _result_dict(result: CapResult, *, explain: bool, sensitive: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": result.code,
        "mode": result.mode.value,
        "atc": result.atc,
        "profile": result.profile,
        "aid": result.aid.hex().upper(),
        "psn": result.psn,
        "code_function": result.code_function.value,
        "warnings": list(result.warnings),
    }
    if sensitive:
        out["cryptogram"] = result.cryptogram.hex().upper()
        if result.tds_mac is not None:
            out["tds_mac"] = result.tds_mac.hex().upper()
    if explain:
        out["explanation"] = [str(bit) for bit in result.explanation]
    return out


def _run(
    mode_name: str,
    *,
    reader_spec: str | None,
    reader_profile: str | None,
    profile_alias: str | None,
    aid: str | None,
    as_json: bool,
    trace: bool,
    explain: bool,
    pin_stdin: bool,
    show_sensitive: bool,
    wait: float | None,
    **inputs: Any,
) -> None:
    # The reader's stack is imported here, not at the top: ``capsim code … --help`` needs none of it.
    from capsim.cap import CapMode
    from capsim.reader import ASK_PIN, CapReader, CapSession
    from capsim.transports import TracingTransport

    mode = CapMode(mode_name)
    profile = deprecated_alias(reader_profile, profile_alias, new="--reader-profile", old="--profile")
    selected_aid = parse_aid(aid)
    # Every input but the PIN is checked before the card is opened; the PIN is asked for only
    # once the card has shown its PIN is not blocked (and a missing terminal fails first).
    session = CapSession(mode, pin=ASK_PIN, profile=profile, aid=selected_aid, **inputs)
    ask_pin = secret_reader("PIN", from_stdin=pin_stdin)
    transport = _open(reader_spec, wait)
    if trace:
        transport = TracingTransport(
            transport, redact=not show_sensitive, sink=lambda line: click.echo(line, err=True), decode=True
        )
    with transport:
        try:
            result = CapReader(transport, profile, aid=selected_aid).run(session, ask_pin=ask_pin)
        except (PinError, PinBlockedError) as exc:
            raise _blocked_advice(exc, _card_file(reader_spec)) from None
    if as_json:
        click.echo(json.dumps(_result_dict(result, explain=explain, sensitive=show_sensitive), indent=2))
        return
    click.echo(result.code)
    for warning in result.warnings:
        click.echo(f"capsim: warning: {warning}", err=True)
    if explain:  # stdout carries only the code
        click.echo(result.explain(), err=True)


@click.group("code")
def code() -> None:
    """[!] Compute CAP codes with a card: identify, respond, sign, tds."""


@code.command("identify")
@_common_options
@handle_errors
def identify_command(**options: Any) -> None:
    """[!] Identify (Mode 2): a code from the PIN alone."""
    _run("identify", **options)


@code.command("respond")
@click.option("-c", "--challenge", required=True, help="The bank's challenge: 1 to 8 digits.")
@_common_options
@handle_errors
def respond_command(challenge: str, **options: Any) -> None:
    """[!] Respond (Mode 3): a code over the bank's challenge."""
    _run("respond", challenge=challenge, **options)


@code.command("sign")
@click.option("-c", "--challenge", help="Challenge or payee reference: 1 to 8 digits.")
@click.option("-a", "--amount", help="Amount as a decimal in major units (15.00), if the card asks for one.")
@click.option("--currency", help="ISO 4217 currency, alphabetic (EUR) or numeric (978).")
@_common_options
@handle_errors
def sign_command(challenge: str | None, amount: str | None, currency: str | None, **options: Any) -> None:
    """[!] Sign (Mode 1): challenge, amount and currency as the card's IAF asks."""
    _run("sign", challenge=challenge, amount=amount, currency=currency, **options)


@code.command("tds")
@click.option(
    "--field", "fields", multiple=True, required=True, help="A data field of 1 to 10 digits (1 to 10 fields)."
)
@_common_options
@handle_errors
def tds_command(fields: tuple[str, ...], **options: Any) -> None:
    """[!] Transaction data signing (Mode 2 + TDS): a code over 1 to 10 data fields."""
    from capsim.cap import validate_tds_fields

    validate_tds_fields(fields, option="--field")  # named as typed: "--field #2"
    _run("tds", fields=list(fields), **options)
