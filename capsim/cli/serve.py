"""``capsim card serve``: put card files into vpcd reader slots, so any PC/SC program sees them.

The cards are served to vsmartcard's vpcd driver inside pcscd (``docs/pcsc.md``,
``pcsc.md`` §2, §4). One vpcd entry has two slots: slot 0 on PORT and slot 1 on PORT + 1,
shown by pcscd as ``"<FRIENDLYNAME> 00 00"`` and ``"… 00 01"``. Serve one card with
``--slot 0|1``, or give two card files to fill both slots from one process.

Without a vpcd to connect to, the server says so at once with what to check (pcscd running
with the vpcd driver?), then every ``--report-interval`` seconds what it is still waiting for.

A PIV card file (``capsim card new --template piv``) is served the same way: OpenSC,
yubico-piv-tool and every PKCS#11 consumer see a PIV token (docs/certificate.md).

The card files stay locked while they are served; every ATC and PIN-try change is written
before the card answers, exactly as in process. SIGINT or SIGTERM unplugs the cards and
exits with status 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from capsim.cards import load_card
from capsim.cards.base import CardOS
from capsim.cli._common import handle_errors
from capsim.cli.card import card
from capsim.errors import ValidationError
from capsim.transports.vpcd import DEFAULT_HOST, DEFAULT_PORT, VPCD_SLOTS, VpcdCardServer, parse_vpcd_address

if TYPE_CHECKING:
    from capsim.cards import EmvCapCard
    from capsim.cards.piv import PivCard

__all__ = ["serve"]

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


@click.command("serve")
@click.argument(
    "card_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--vpcd",
    "address",
    default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    help="HOST:PORT of the vpcd entry: the port of its slot 0 (DEVICENAME /dev/null:PORT).",
)
@click.option(
    "--slot",
    type=click.IntRange(0, VPCD_SLOTS - 1),
    default=None,
    help="Slot for a single card: 0 uses PORT, 1 uses PORT+1 [default: 0]. "
    "Two card files take slots 0 and 1.",
)
@click.option(
    "--log-level",
    type=click.Choice(sorted(_LOG_LEVELS)),
    default="info",
    show_default=True,
    help="Log verbosity on stderr (debug shows each APDU header and status word).",
)
@click.option("--show-sensitive", is_flag=True, help="Log whole APDUs: PIN blocks, PAN, cryptograms.")
@click.option(
    "--report-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="While vpcd is unreachable, say every SECONDS what the card is waiting for.",
)
@handle_errors
def serve(
    *,
    card_files: tuple[Path, ...],
    address: str,
    slot: int | None,
    log_level: str,
    show_sensitive: bool,
    report_interval: float,
) -> None:
    """[!] Serve EMV or PIV CARD_FILES to pcscd through vpcd until interrupted (Ctrl-C or SIGTERM)."""
    if len(card_files) > VPCD_SLOTS:
        raise ValidationError(
            f"card_files: at most {VPCD_SLOTS} cards (one per vpcd slot), got {len(card_files)}"
        )
    if len(card_files) > 1 and slot is not None:
        raise ValidationError("--slot: only for a single card file; two card files take slots 0 and 1")
    slots = [slot or 0] if len(card_files) == 1 else list(range(len(card_files)))
    targets = [parse_vpcd_address(address, slot=s) for s in slots]
    logging.basicConfig(
        level=_LOG_LEVELS[log_level],
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with ExitStack() as stack:
        cards: list[CardOS] = []
        for path in card_files:
            loaded = _load_any(path)
            stack.callback(loaded.close)
            cards.append(loaded)
        servers = [
            VpcdCardServer(
                c, host=host, port=port, show_sensitive=show_sensitive, report_interval=report_interval
            )
            for c, (host, port) in zip(cards, targets, strict=True)
        ]
        messages = [
            f"serving {path} in vpcd slot {s} ({host}:{port}); Ctrl-C to stop"
            for path, s, (host, port) in zip(card_files, slots, targets, strict=True)
        ]
        _run(servers, messages)
    click.echo("stopped; card files closed", err=True)


def _load_any(path: Path) -> EmvCapCard | PivCard:
    """The card in an EMV card file or a PIV card file (told apart by the file's format)."""
    from capsim.cards.piv import is_piv_card_file, load_piv_card

    return load_piv_card(path) if is_piv_card_file(path) else load_card(path)


def _run(servers: list[VpcdCardServer], messages: list[str]) -> None:
    """Serve the first card in the foreground and any other in a thread until a signal."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for server in servers:
            server.stop(timeout=0)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for message in messages:  # only now: a signal from here on stops cleanly
            click.echo(message, err=True)
        for server in servers[1:]:
            server.start()
        if not stopping.is_set():
            servers[0].serve_forever()
    finally:
        for server in servers:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


card.add_command(serve)
