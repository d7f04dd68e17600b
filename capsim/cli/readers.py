"""``capsim readers``: the PC/SC readers (index, name, card present, ATR), then the virtual cards.

The PC/SC part is pcscd's own status of each reader (``SCardGetStatusChange``): no card is
connected or powered by listing. The index is what ``--reader N`` / ``--reader pcsc:N`` takes
(:mod:`capsim.cli._reader`). PC/SC being unavailable is a note on stderr, not an error: the
virtual cards are still there.
"""

from __future__ import annotations

import json
from typing import Any

import click

from capsim.cli._common import handle_errors
from capsim.cli.code import default_card_path
from capsim.errors import CapsimError
from capsim.transports import pcsc_reader_states

__all__ = ["readers"]


@click.command("readers")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@handle_errors
def readers(as_json: bool) -> None:
    """List the card readers: PC/SC readers (index, name, card, ATR), then the virtual cards."""
    from capsim.cards import BUILTIN_PROFILES

    states = []
    note = None
    try:
        states = pcsc_reader_states()
    except CapsimError as exc:
        note = f"PC/SC readers not listed: {exc}"
    card = default_card_path()
    virtual = [f"file:{card}"] + [f"inproc:{name}" for name in sorted(BUILTIN_PROFILES)]
    if as_json:
        listing = [
            {
                "index": s.index,
                "name": s.name,
                "spec": f"pcsc:{s.index}",
                "card_present": s.card_present,
                "atr": s.atr.hex().upper() if s.card_present else None,
            }
            for s in states
        ]
        doc: dict[str, Any] = {
            "readers": listing,
            "pcsc": [f"pcsc:{s.name}" for s in states],
            "virtual": virtual,
            "note": note,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    width = max((len(s.name) for s in states), default=0)
    for s in states:
        card_text = f"card  ATR {s.atr.hex().upper()}" if s.card_present else "no card"
        click.echo(f"{s.index}  {s.name:<{width}}  {card_text}")
    click.echo(f"file:{card}  (default virtual card{'' if card.exists() else ', created on first use'})")
    for spec in virtual[1:]:
        click.echo(f"{spec}  (fresh emulated card, PIN 1234)")
    if note is not None:
        click.echo(f"capsim: note: {note}", err=True)
