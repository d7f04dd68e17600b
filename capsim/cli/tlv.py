"""``capsim tlv``: decode BER-TLV and DOLs from hex (no card needed)."""

from __future__ import annotations

import sys

import click

from capsim.apdu.sw import describe_sw
from capsim.cli._common import handle_errors
from capsim.errors import ApduFormatError, ValidationError
from capsim.hexinput import parse_hex
from capsim.tags import tag_name
from capsim.tlv import decode, format_tree, parse_dol

__all__ = ["tlv"]


def _read_hex(parts: tuple[str, ...]) -> bytes:
    text = sys.stdin.read() if parts == ("-",) else " ".join(parts)
    return parse_hex("HEX", text)


@click.group()
def tlv() -> None:
    """Decode BER-TLV data and DOLs."""


@tlv.command("decode")
@click.argument("hex_parts", metavar="HEX...", nargs=-1, required=True)
@click.option(
    "--show-sensitive",
    is_flag=True,
    help="Print PAN, track data, cardholder name and expiry instead of redacting them.",
)
@click.option(
    "--response",
    "-r",
    is_flag=True,
    help="The input is a response APDU: its last two bytes are a status word.",
)
@handle_errors
def decode_cmd(hex_parts: tuple[str, ...], show_sensitive: bool, response: bool) -> None:
    """Print BER-TLV data as an indented tree with tag names.

    HEX: hex digits, optionally separated by spaces or colons, with an optional 0x prefix;
    several arguments are joined; '-' reads standard input.
    """
    data = _read_hex(hex_parts)
    sw: int | None = None
    if response:
        if len(data) < 2:
            raise ValidationError("HEX must hold at least the 2-byte status word with --response")
        data, sw = data[:-2], int.from_bytes(data[-2:], "big")
    try:
        objs = decode(data)
    except ApduFormatError as exc:
        raise ValidationError(f"HEX is not valid BER-TLV: {exc}") from exc
    if objs:
        click.echo(format_tree(objs, redact=not show_sensitive))
    if sw is not None:
        click.echo(f"SW {sw:04X} {describe_sw(sw)}")


@tlv.command("dol")
@click.argument("hex_parts", metavar="HEX...", nargs=-1, required=True)
@handle_errors
def dol_cmd(hex_parts: tuple[str, ...]) -> None:
    """List the entries of a DOL (CDOL1, CDOL2, PDOL …) and the total length.

    HEX: hex digits, optionally separated by spaces or colons, with an optional 0x prefix;
    several arguments are joined; '-' reads standard input.
    """
    data = _read_hex(hex_parts)
    try:
        entries = parse_dol(data)
    except ApduFormatError as exc:
        raise ValidationError(f"HEX is not a valid DOL: {exc}") from exc
    offset = 0
    for entry in entries:
        tag_hex = entry.to_bytes()[:-1].hex().upper()
        click.echo(f"{offset:4d}  {tag_hex:<6} {entry.length:3d}  {tag_name(entry.tag)}")
        offset += entry.length
    click.echo(f"total {offset} bytes")
