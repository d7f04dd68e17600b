"""``capsim analyze``: what a CAP deployment guarantees, measured (docs/analysis.md).

The card is a built-in template name (``--card natwest``) or a card file (``--card card.json``:
only its design is read; its keys, PAN and state are never used and the file is not written).
The reader profile defaults to the one the card's AID selects; the policy is capsim's default,
``--policy psd2``, or the one stored in a verifier database (``--db``, read only). Output: text,
``--json``, and ``--html FILE`` (a self-contained page; needs the ``analysis`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from capsim.analysis import Report, analyze, render_text
from capsim.cards import BUILTIN_PROFILES, CardProfile, builtin_profile
from capsim.cli._common import handle_errors
from capsim.errors import ConfigError, ValidationError
from capsim.profiles import READER_PROFILES
from capsim.storage import read_card_file
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


@click.command("analyze")
@click.option(
    "--card",
    "card",
    default="secur-acces",
    show_default=True,
    metavar="TEMPLATE|FILE",
    help="A card template name or a card file (only its design is read).",
)
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
    card: str,
    reader_profile: str | None,
    policy_name: str | None,
    db: str | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Measure a CAP deployment: code anatomy, guessing, mode confusion, freshness, PIN handling.

    Each finding names its severity, its published source and what a bank can change.
    """
    profile, source = _card(card)
    policy, pname = _policy(policy_name, db)
    report: Report = analyze(
        profile, reader=reader_profile, policy=policy, card_source=source, policy_name=pname
    )
    if html_file is not None:
        from capsim.analysis.html import render_html

        html_file.write_text(render_html(report), encoding="utf-8")
        click.echo(f"capsim: wrote {html_file}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(report))
