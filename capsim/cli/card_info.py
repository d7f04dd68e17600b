"""``capsim card info``: a redacted, paste-able dump of a card's CAP data, for bug reports.

Theory of operation
===================

1. The card is a card file or any reader spec (:mod:`capsim.cli.readers`, rules 1–3): a real
   card in a PC/SC reader, a served card, an emulated one.
2. What is read comes from the library's reader (:func:`capsim.reader.discover`): the
   session of a CAP run, stopped before the first GENERATE AC. No VERIFY, no cryptogram; the
   card's ATC goes up by one (GET PROCESSING OPTIONS), as with any reader.
3. Redaction: the PAN is always masked (first 6 and last 4 digits); the PSN's presence is
   shown, its value only with ``--show-sensitive``; track data, names and the APDU trace are
   never printed. Everything else (AIDs, labels, IPB, IAF, CDOLs, PIN try counter, ATR) is
   what a bug report needs and identifies no cardholder.
4. The reader profile is printed with why it was chosen: named with ``--reader-profile``,
   named by the card file's template, by the selected AID, or a fallback.

The command is registered on the ``card`` group by :mod:`capsim.cli.card`, which also uses
:func:`show_card_info` for ``card show`` of a card that is not a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from capsim._version import __version__
from capsim.cli._common import handle_errors
from capsim.cli._reader import one_card, open_reader, parse_aid, reader_options
from capsim.profiles import READER_PROFILES
from capsim.reader import CardSummary, ProfileSource, discover
from capsim.tlv import parse_dol

__all__ = ["card_info", "info_command", "mask_pan", "show_card_info", "template_profile"]

_REASONS = {
    ProfileSource.GIVEN: "given with --reader-profile",
    ProfileSource.TEMPLATE: "the card template's choice",
    ProfileSource.AID: "by AID: the built-in profile for {aid}",
    ProfileSource.FALLBACK: "fallback: no built-in profile knows {aid}",
}


def mask_pan(pan: str) -> str:
    """``123456******3456``: the first 6 and last 4 digits (rule 3).

    >>> mask_pan("5412345678901234"), mask_pan("1234")
    ('541234******1234', '****')
    """
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def _dol_text(dol: bytes | None) -> str | None:
    """``9F02(6) 9F03(6) …``: a DOL's entries, tag and length (the raw hex if it does not parse)."""
    if dol is None:
        return None
    try:
        return " ".join(f"{entry.tag:X}({entry.length})" for entry in parse_dol(dol))
    except ValueError:  # ApduFormatError is a ValueError
        return f"{dol.hex().upper()} (does not parse)"


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex().upper()


def card_info(
    summary: CardSummary, *, reader: str, atr: bytes, sensitive: bool
) -> dict[str, Any]:
    """The dump as a JSON-able dict (rule 3: redacted unless ``sensitive`` for the PSN)."""
    data = summary.data
    pan = data.get(0x5A)
    psn = data.get(0x5F34)
    aid = summary.aid.hex().upper()
    out: dict[str, Any] = {
        "capsim": __version__,
        "reader": reader,
        "atr": atr.hex().upper(),
        "application": {"aid": aid, "label": summary.label},
        "applications": [
            {
                "aid": a.aid.hex().upper(),
                "status": a.status,
                "label": a.label,
                "priority": a.priority,
            }
            for a in summary.applications
        ],
        "reader_profile": {
            "name": summary.profile,
            "chosen": summary.profile_source.value,
            "why": _REASONS[summary.profile_source].format(aid=aid),
        },
        "ipb": _hex(data.get(0x9F56)),
        "iaf": _hex(data.get(0x9F55)),
        "cdol1": _hex(data.get(0x8C)),
        "cdol1_entries": _dol_text(data.get(0x8C)),
        "cdol2": _hex(data.get(0x8D)),
        "cdol2_entries": _dol_text(data.get(0x8D)),
        "psn_present": psn is not None,
        "pan": None if pan is None else mask_pan(pan.hex().upper().rstrip("F")),
        "pin_tries": summary.pin_tries,
        "pin_try_limit": summary.pin_try_limit,
        "warnings": list(summary.warnings),
    }
    if sensitive and psn is not None:
        out["psn"] = psn.hex().upper()
    return out


def _print_text(info: dict[str, Any]) -> None:
    app = info["application"]
    profile = info["reader_profile"]
    tries = info["pin_tries"]
    lines = [
        f"capsim card info (capsim {info['capsim']})",
        f"reader:          {info['reader']}",
        f"ATR:             {info['atr']}",
        f"application:     {app['aid']}" + (f"  {app['label']!r}" if app["label"] else ""),
        "applications:",
        *(
            f"  {a['aid']:<32} {a['status']}"
            + (f"  {a['label']!r}" if a["label"] else "")
            + (f"  priority {a['priority']}" if a["priority"] is not None else "")
            for a in info["applications"]
        ),
        f"reader profile:  {profile['name']} ({profile['why']})",
        f"IPB (9F56):      {info['ipb'] or 'absent'}",
        f"IAF (9F55):      {info['iaf'] or 'absent'}",
        f"CDOL1 (8C):      {info['cdol1_entries'] or 'absent'}",
        f"CDOL2 (8D):      {info['cdol2_entries'] or 'absent'}",
        "PSN (5F34):      "
        + (
            "absent"
            if not info["psn_present"]
            else info.get("psn", "present (value hidden; --show-sensitive shows it)")
        ),
        f"PAN (5A):        {info['pan'] or 'absent'}",
        f"PIN tries left:  {'unknown (GET DATA 9F17 not answered)' if tries is None else tries}"
        f" (limit {info['pin_try_limit']})",
    ]
    lines.extend(f"warning:         {w}" for w in info["warnings"])
    for line in lines:
        click.echo(line)


def show_card_info(
    spec: str,
    *,
    wait: float | None = None,
    reader_profile: str | None = None,
    aid: str | None = None,
    show_sensitive: bool = False,
    as_json: bool = False,
    template_profile: str | None = None,
) -> None:
    """Read the card behind ``spec`` (rule 2) and print the dump (rules 3, 4)."""
    selected_aid = parse_aid(aid)
    profile = reader_profile or template_profile
    link = open_reader(spec, wait=wait)
    try:
        atr = link.connect()
        summary = discover(
            link, profile, aid=selected_aid, from_template=reader_profile is None and profile is not None
        )
        reader = getattr(link, "reader_name", None)
    finally:
        link.disconnect()
    label = f"pcsc:{reader}" if isinstance(reader, str) else spec
    info = card_info(summary, reader=label, atr=atr, sensitive=show_sensitive)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_text(info)


def template_profile(path: Path | None, spec: str) -> str | None:
    """The reader profile the card's template names, when capsim knows the template (rule 4):
    a card file's, or the built-in template of ``inproc:TEMPLATE``; ``None`` for any other card
    (a real card does not say) or a template format without the field."""
    from capsim.cards import BUILTIN_PROFILES
    from capsim.storage import read_card_file

    if path is not None:
        if not path.is_file():
            return None  # opening it says why
        profile = read_card_file(path)[0]
    elif spec.startswith("inproc:") and spec.removeprefix("inproc:") in BUILTIN_PROFILES:
        profile = BUILTIN_PROFILES[spec.removeprefix("inproc:")]
    else:
        return None
    return profile.reader_profile


@click.command("info")
@click.argument("card_arg", metavar="[CARD]", required=False)
@reader_options
@click.option(
    "--reader-profile",
    type=click.Choice(list(READER_PROFILES)),
    help="Read with this reader profile (default: chosen as a CAP run would).",
)
@click.option("--aid", metavar="HEX", help="Select only this application.")
@click.option("--show-sensitive", is_flag=True, help="Also show the PSN's value (the PAN stays masked).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def info_command(
    *,
    card_arg: str | None,
    reader_spec: str | None,
    wait: float | None,
    reader_profile: str | None,
    aid: str | None,
    show_sensitive: bool,
    as_json: bool,
) -> None:
    """[!] A redacted dump of a card's CAP data for bug reports (no PIN, no cryptogram; ATC +1).

    CARD is a card file or a reader spec; or give --reader SPEC.
    """
    path, spec = one_card(card_arg, reader_spec)
    show_card_info(
        spec,
        wait=wait,
        reader_profile=reader_profile,
        aid=aid,
        show_sensitive=show_sensitive,
        as_json=as_json,
        template_profile=template_profile(path, spec),
    )

