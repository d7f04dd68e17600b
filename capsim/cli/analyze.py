"""``capsim analyze``: what a CAP deployment guarantees, measured (docs/analysis.md).

Theory of operation
-------------------
1. The card is a built-in template name (``--card natwest``), a card file (``--card
   card.json``: only its design is read; its keys, PAN and state are never used and the file
   is not written), or a card behind a reader spec (``--reader SPEC``, any transport:
   :mod:`capsim.cli._reader`; ``--wait`` waits for it).
2. A card behind ``--reader`` is read by :func:`capsim.reader.discover` (SELECT, GET
   PROCESSING OPTIONS, READ RECORD, GET DATA ``9F17``): no VERIFY, no GENERATE AC; the ATC
   goes up by one, as with any reader, and the PIN try counter is untouched.
3. ``--allow-state-changes`` adds the experiments of :mod:`capsim.analysis.oncard`: their cost
   (GENERATE AC runs, ATCs, PIN tries) is printed first and confirmed on the terminal unless
   ``--yes``; the PIN comes from a hidden prompt or ``--pin-stdin``, never an option.
   ``--probe-pin`` adds the VERIFY probe, which spends a PIN try.
4. The reader profile defaults to the one the card names (template, AID, or discovery's
   choice); the policy is capsim's default, ``--policy psd2``, or the one stored in a verifier
   database (``--db``, read only). Output: text, ``--json``, and ``--html FILE`` (a
   self-contained page; needs the ``analysis`` extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from capsim.analysis import Report, analyze, render_text
from capsim.analysis.card import describe_summary
from capsim.analysis.oncard import OnCard, plan, run_plan
from capsim.analysis.report import analyze_card, check_analysable
from capsim.cards import BUILTIN_PROFILES, CardProfile, builtin_profile
from capsim.cli._common import handle_errors, secret_reader
from capsim.cli._reader import READER_HELP, open_reader, wait_option
from capsim.errors import ConfigError, ValidationError
from capsim.profiles import READER_PROFILES, get_reader_profile
from capsim.reader import discover
from capsim.storage import read_card_file
from capsim.transports import parse_spec
from capsim.verifier.dbparse import DbKind, parse_db_url
from capsim.verifier.dburl import open_store
from capsim.verifier.policy import VerifierPolicy

__all__ = ["analyze_command"]


def _card(value: str) -> tuple[CardProfile, str]:
    if value in BUILTIN_PROFILES:
        return builtin_profile(value), "template"
    path = Path(value)
    if path.is_file():
        profile, _ = read_card_file(path)
        return profile, "card file"
    raise ValidationError(
        f"--card: {value!r} is neither a card template "
        f"({', '.join(sorted(BUILTIN_PROFILES))}) nor a card file"
    )


def _db_policy(url: str) -> VerifierPolicy:
    """The policy stored in a verifier database, read without changing it."""
    parsed = parse_db_url(url)
    if parsed.kind is DbKind.SQLITE and not Path(parsed.target).exists():
        raise ConfigError(f"--db: no verifier database at {parsed.target}")
    store = open_store(url, migrate=False)
    try:
        with store.transaction() as tx:
            stored = tx.get_setting("policy")
    finally:
        store.close()
    return VerifierPolicy.from_json(stored) if stored else VerifierPolicy()


def _policy(name: str | None, db: str | None) -> tuple[VerifierPolicy, str]:
    if db is not None:
        if name is not None:
            raise ValidationError("--policy and --db: give one of them (--db reads the database's policy)")
        return _db_policy(db), "from --db"
    if name == "psd2":
        return VerifierPolicy.psd2_profile(), "psd2"
    return VerifierPolicy(), "default"


def _state_change_options(
    allow: bool, probe_pin: bool, pin_stdin: bool, yes: bool, reader: str | None
) -> None:
    if reader is None and (allow or probe_pin or pin_stdin or yes):
        raise ValidationError(
            "--allow-state-changes, --probe-pin, --pin-stdin and --yes: only with --reader (a template "
            "or card file is analysed on emulated cards)"
        )
    if not allow and (probe_pin or pin_stdin or yes):
        raise ValidationError("--probe-pin, --pin-stdin and --yes: only with --allow-state-changes")


def _consent(text: str, *, yes: bool, pin_stdin: bool) -> None:
    """Rule 3: say what the experiments cost, and ask unless ``--yes``."""
    click.echo(f"capsim: {text}", err=True)
    if yes:
        return
    if pin_stdin or not sys.stdin.isatty():
        raise ValidationError(
            "--allow-state-changes: confirm on a terminal, or give --yes to accept the cost above"
        )
    if not click.confirm("capsim: go on?", default=False, err=True):
        raise ValidationError("--allow-state-changes: not confirmed; nothing was sent after the discovery")


def _reader_report(
    spec: str,
    *,
    wait: float | None,
    reader_profile: str | None,
    policy: VerifierPolicy,
    policy_name: str,
    allow: bool,
    probe_pin: bool,
    pin_stdin: bool,
    yes: bool,
) -> Report:
    """Rules 2 and 3: discover, then (if allowed) run the experiments, then analyse."""
    ask = secret_reader("PIN", from_stdin=pin_stdin) if allow else None  # no terminal: fail first
    link = open_reader(spec, wait=wait)
    on_card: OnCard | None = None
    try:
        link.connect()
        summary = discover(link, reader_profile)
        card = describe_summary(summary, name=summary.label or summary.aid.hex().upper())
        check_analysable(card)  # before any state change
        if allow and ask is not None:
            todo = plan(card, probe_pin=probe_pin)
            _consent(todo.describe(), yes=yes, pin_stdin=pin_stdin)
            pin = ask()
            on_card = run_plan(link, card, get_reader_profile(card.reader_profile), todo, pin)
            del pin
            card = on_card.card
    finally:
        link.disconnect()
    return analyze_card(card, policy=policy, policy_name=policy_name, on_card=on_card)


@click.command("analyze")
@click.option(
    "--card",
    "card",
    default=None,
    metavar="TEMPLATE|FILE",
    help="A card template name or a card file (only its design is read) [secur-acces].",
)
@click.option(
    "--reader", "reader_spec", metavar="SPEC", help=READER_HELP + " Read only: no VERIFY, no GENERATE AC."
)
@wait_option
@click.option(
    "--allow-state-changes",
    "allow",
    is_flag=True,
    help="With --reader: also run GENERATE AC on the card (costs ATCs; asks first) to learn its CVN/IAD "
    "and confirm the collisions.",
)
@click.option(
    "--probe-pin", is_flag=True, help="With --allow-state-changes: probe VERIFY (spends a PIN try)."
)
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from one line of standard input.")
@click.option("--yes", is_flag=True, help="Do not ask before the state-changing experiments.")
@click.option(
    "--reader-profile",
    type=click.Choice(sorted(READER_PROFILES)),
    help="Reader profile [the one the card's AID selects].",
)
@click.option(
    "--policy", "policy_name", type=click.Choice(["default", "psd2"]), help="Verifier policy [default]."
)
@click.option("--db", metavar="URL", help="Read the verifier policy from this database (read only).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page (needs the 'analysis' extra).",
)
@handle_errors
def analyze_command(
    *,
    card: str | None,
    reader_spec: str | None,
    wait: float | None,
    allow: bool,
    probe_pin: bool,
    pin_stdin: bool,
    yes: bool,
    reader_profile: str | None,
    policy_name: str | None,
    db: str | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Measure a CAP deployment: code anatomy, guessing, mode confusion, freshness, PIN handling.

    Each finding names its severity, its published source and what a bank can change.
    """
    if card is not None and reader_spec is not None:
        raise ValidationError("--card and --reader: give one card")
    _state_change_options(allow, probe_pin, pin_stdin, yes, reader_spec)
    policy, pname = _policy(policy_name, db)
    report: Report
    if reader_spec is not None:
        parse_spec(reader_spec)  # a spec only (a card file is file:PATH)
        report = _reader_report(
            reader_spec,
            wait=wait,
            reader_profile=reader_profile,
            policy=policy,
            policy_name=pname,
            allow=allow,
            probe_pin=probe_pin,
            pin_stdin=pin_stdin,
            yes=yes,
        )
    else:
        profile, source = _card(card if card is not None else "secur-acces")
        report = analyze(profile, reader=reader_profile, policy=policy, card_source=source, policy_name=pname)
    if html_file is not None:
        from capsim.analysis.html import render_html

        html_file.write_text(render_html(report), encoding="utf-8")
        click.echo(f"capsim: wrote {html_file}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(report))
