"""``capsim card …``: create, inspect and drive emulated card files (docs/card.md).

Commands marked ``[!]`` touch a card (they change its counters).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

import click

from capsim.apdu.describe import describe_exchange
from capsim.cards import BUILTIN_PROFILES, CardProfile, CardState, builtin_profile, new_card
from capsim.cards.atr import atr_from_hex
from capsim.cli._common import deprecated_alias, handle_errors, read_secret
from capsim.cli._reader import one_card, open_reader, reader_options
from capsim.cli.card_info import info_command, mask_pan, show_card_info, template_profile
from capsim.cli.card_piv import PIV_TEMPLATE, piv_new_options
from capsim.crypto import CVN, KeyDerivation, odd_parity
from capsim.errors import StateFileError, ValidationError
from capsim.hexinput import parse_command_apdu
from capsim.storage import IssuerKeys, load_issuer_keys, read_card_file, save_issuer_keys

__all__ = ["card", "mask_pan"]

#: CVN names as written in scheme documents ("CVN 18") → the IAD byte.
_CVN_NAMES = {
    "10": CVN.VISA_10,
    "18": CVN.VISA_18,
    "22": CVN.VISA_22,
    "16": CVN.MC_16,
    "17": CVN.MC_17,
    "20": CVN.MC_20,
    "21": CVN.MC_21,
}
_CVN_LABEL = {v: k for k, v in _CVN_NAMES.items()}
DEFAULT_PIN = "1234"


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(pan: str) -> bool:
    """Whether ``pan`` is 12 to 19 ASCII digits whose last is the Luhn check digit (ISO/IEC 7812-1).

    A PAN of another form is left to the card's own check (``True`` here).

    >>> luhn_valid("5555555555554444"), luhn_valid("5555555555554445")
    (True, False)
    """
    if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        return True
    return _luhn_digit(pan[:-1]) == pan[-1]


def random_test_pan(profile: CardProfile) -> str:
    """A random, Luhn-valid 16-digit test PAN (``5`` for Mastercard AIDs, ``4`` for Visa)."""
    prefix = "4" if profile.aid.startswith(bytes.fromhex("A000000003")) else "5"
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(14))
    return body + _luhn_digit(body)


def _random_key() -> bytes:
    return odd_parity(secrets.token_bytes(16))


@click.group("card")
def card() -> None:
    """Emulated EMV-CAP cards: create, inspect and drive card files."""


@card.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--template",
    "template_name",
    type=click.Choice(sorted([*BUILTIN_PROFILES, PIV_TEMPLATE])),
    help="Built-in card template (`capsim card templates`) [secur-acces]; piv: a PIV certificate token.",
)
@click.option("--profile", "profile_name", type=click.Choice(sorted(BUILTIN_PROFILES)), hidden=True)
@click.option("--pan", help="Card PAN (12-19 digits, Luhn-valid); default: a random Luhn-valid test PAN.")
@click.option(
    "--allow-non-luhn",
    is_flag=True,
    help="Accept a --pan whose Luhn check digit is wrong (testing readers and verifiers with bad cards).",
)
@click.option("--psn", help="PAN sequence number (2 digits); default: the template's (00, rabobank 08).")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from one line of standard input.")
@click.option(
    "--issuer-keys",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Issuer-keys file to personalise from; default: new random keys in <PATH stem>.issuer-keys.json.",
)
@click.option(
    "--cvn", type=click.Choice(list(_CVN_NAMES)), help="Cryptogram version (default: the template's)."
)
@click.option("--atr", metavar="HEX", help="Answer to reset (default: the template's; built-in: T=0).")
@piv_new_options
@handle_errors
def new_command(
    *,
    path: Path,
    template_name: str | None,
    profile_name: str | None,
    pan: str | None,
    allow_non_luhn: bool,
    psn: str | None,
    pin_stdin: bool,
    issuer_keys: Path | None,
    cvn: str | None,
    atr: str | None,
    **piv_options: Any,
) -> None:
    """[!] Create a new card file at PATH (mode 0600; it holds the card's keys)."""
    name = deprecated_alias(template_name, profile_name, new="--template", old="--profile")
    from capsim.cli import card_piv

    if name == PIV_TEMPLATE:
        emv: dict[str, object] = {"--pan": pan, "--psn": psn, "--issuer-keys": issuer_keys, "--cvn": cvn}
        emv["--allow-non-luhn"] = allow_non_luhn
        card_piv.new_piv(path, pin_stdin=pin_stdin, atr=atr, emv_options=emv, **piv_options)
        return
    card_piv.refuse_piv_options(piv_options)
    template = builtin_profile(name or "secur-acces")
    atr_bytes = None if atr is None else atr_from_hex(atr, "--atr")  # checked before anything is written
    if path.exists():
        raise StateFileError(f"card file {path} already exists; refusing to overwrite it")
    if not path.parent.is_dir():  # checked before the issuer keys beside it are written
        raise StateFileError(f"card file {path}: directory {path.parent} does not exist")
    if pan is not None and not allow_non_luhn and not luhn_valid(pan):
        raise ValidationError(
            "--pan: the Luhn check digit (the last digit) is wrong, as on no issued card; "
            "--allow-non-luhn personalises such a card for testing"
        )
    pin = read_secret("PIN", from_stdin=True) if pin_stdin else DEFAULT_PIN
    CardState(atc=0, ptc=0, pin=pin)  # validates the PIN before anything is written
    keys_path: Path | None = None
    if issuer_keys is not None:
        keys = load_issuer_keys(issuer_keys)
    else:
        keys = IssuerKeys(imk_ac=_random_key(), imk_smi=_random_key(), imk_smc=_random_key())
        keys_path = path.with_name(f"{path.stem}.issuer-keys.json")
        if keys_path.exists():
            raise StateFileError(f"issuer keys file {keys_path} already exists; refusing to overwrite it")
    overrides: dict[str, Any] = {"key_derivation": KeyDerivation(keys.derivation)}
    if cvn is not None:
        overrides["cvn"] = _CVN_NAMES[cvn]
    if atr_bytes is not None:
        overrides["atr"] = atr_bytes
    card_pan = pan if pan is not None else random_test_pan(template)
    card_psn = psn if psn is not None else template.psn
    if keys_path is not None:
        save_issuer_keys(keys_path, keys)
    try:
        created = new_card(
            template,
            pan=card_pan,
            psn=card_psn,
            pin=pin,
            imk_ac=keys.imk_ac,
            imk_smi=keys.imk_smi,
            imk_smc=keys.imk_smc,
            path=path,
            **overrides,
        )
    except BaseException:
        if keys_path is not None:
            with contextlib.suppress(OSError):
                keys_path.unlink()
        raise
    with created:
        p = created.profile
        click.echo(f"created card {path} (template {p.name}, CVN {_CVN_LABEL[p.cvn]}, PSN {p.psn})")
        click.echo(f"PAN {mask_pan(p.pan)}{' (random test PAN)' if pan is None else ''}")
    if not pin_stdin:
        click.echo(f"PIN {DEFAULT_PIN}: the default test PIN (use --pin-stdin to choose one)")
    if keys_path is not None:
        click.echo(f"issuer keys written to {keys_path} (mode 0600)")
    click.echo("note: the card file holds the card's keys in clear; keep it private", err=True)


def _describe(profile: CardProfile, state: CardState, *, sensitive: bool) -> dict[str, Any]:
    h = state.history
    out: dict[str, Any] = {
        "profile": profile.name,
        "reader_profile": profile.reader_profile,
        "aid": profile.aid.hex().upper(),
        "pan": profile.pan if sensitive else mask_pan(profile.pan),
        "psn": profile.psn,
        "cvn": _CVN_LABEL.get(profile.cvn, f"{int(profile.cvn):02X}"),
        "iad_format": str(profile.iad_format),
        "response_format": profile.response_format,
        "atc": state.atc,
        "pin_try_counter": state.ptc,
        "pin_try_limit": profile.pin_try_limit,
        "pin": state.pin if sensitive else "****",
        "lifecycle": str(state.lifecycle),
        "last_online_atc": state.last_online_atc,
        "history": h.to_dict(),
        "issuer_key_kcvs": {
            "imk-ac": profile.kcv_imk_ac.hex().upper(),
            "imk-smi": profile.kcv_imk_smi.hex().upper(),
            "imk-smc": profile.kcv_imk_smc.hex().upper(),
        },
    }
    if sensitive:
        out["icc_keys"] = {
            "mk-ac": profile.mk_ac.hex().upper(),
            "mk-smi": profile.mk_smi.hex().upper(),
            "mk-smc": profile.mk_smc.hex().upper(),
        }
    return out


@card.command("show")
@click.argument("card_arg", metavar="[CARD]", required=False)
@reader_options
@click.option("--show-sensitive", is_flag=True, help="Show the full PAN, the PIN and the ICC keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def show_command(
    *, card_arg: str | None, reader_spec: str | None, wait: float | None, show_sensitive: bool, as_json: bool
) -> None:
    """Show a card file (PAN, PIN and keys redacted unless --show-sensitive); a PIV card file:
    its slots, certificates and PIN/PUK tries, with a warning while a default secret is in place;
    for a card in a reader (CARD or --reader SPEC), what `card info` shows."""
    from capsim.cli import card_piv

    path, spec = one_card(card_arg, reader_spec)
    if path is None:
        show_card_info(
            spec,
            wait=wait,
            show_sensitive=show_sensitive,
            as_json=as_json,
            template_profile=template_profile(None, spec),
        )
        return
    if card_piv.is_piv(path):
        card_piv.show_piv(path, sensitive=show_sensitive, as_json=as_json)
        return
    profile, state = read_card_file(path)
    info = _describe(profile, state, sensitive=show_sensitive)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


@card.command("apdu")
@click.argument("args", nargs=-1, required=True, metavar="[CARD] HEX...")
@reader_options
@click.option("--show-sensitive", is_flag=True, help="Do not redact PIN blocks, PANs and other secrets.")
@handle_errors
def apdu_command(
    *, args: tuple[str, ...], reader_spec: str | None, wait: float | None, show_sensitive: bool
) -> None:
    """[!] Power the card on and send raw APDUs (hex); print a decoded trace.

    CARD is a card file or a reader spec; with --reader SPEC every argument is an APDU: in hex
    (0x prefix, spaces and colons allowed), each at least the 4 header bytes; all are checked
    before the first is sent."""
    card_arg, apdus = (None, args) if reader_spec is not None else (args[0], args[1:])
    if not apdus:
        raise click.UsageError("give at least one APDU (hex) after the card")
    # every APDU is checked before the card is powered on: a bad one sends nothing
    commands = [parse_command_apdu(f"APDU {i}", text) for i, text in enumerate(apdus, 1)]
    _, spec = one_card(card_arg, reader_spec)
    link = open_reader(spec, wait=wait)
    try:
        click.echo(f"ATR {link.connect().hex().upper()}")
        for raw in commands:
            for line in describe_exchange(raw, link.transmit(raw), redact=not show_sensitive):
                click.echo(line)
    finally:
        link.disconnect()


card.add_command(info_command)


@card.command("templates")
def templates_command() -> None:
    """List the built-in card templates (the cards `card new --template` personalises)."""
    _list_templates()


@card.command("profiles", hidden=True)
def profiles_command() -> None:
    """Deprecated name of `capsim card templates`."""
    click.echo("capsim: warning: 'card profiles' is deprecated; use 'card templates'", err=True)
    _list_templates()


def _list_templates() -> None:
    for name in sorted([*BUILTIN_PROFILES, PIV_TEMPLATE]):
        if name == PIV_TEMPLATE:
            click.echo(f"{name:12} AID A000000308     PIV certificate token (NIST SP 800-73-4)")
            continue
        p = BUILTIN_PROFILES[name]
        click.echo(
            f"{name:12} AID {p.aid.hex().upper():16} CVN {_CVN_LABEL[p.cvn]:2} IAD {p.iad_format!s:5} "
            f"format {p.response_format}  reader {p.reader_profile:10} {p.label or '-'}"
        )
