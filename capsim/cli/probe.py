"""``capsim probe``: the CAP attack battery against a verifier (guide: ``docs/analysis.md``,
"capsim probe").

The target is ``--db``: ``memory:`` (the default: a fresh in-memory verifier with fresh keys),
a SQLite file or a ``postgresql://`` URL of an initialised verifier database (the library, in
this process), or the ``http(s)://`` URL of ``capsim verifier serve`` (its ``/v1`` API, an
operator key in ``CAPSIM_API_KEY``; with ``--privacyidea`` its privacyIDEA-compatible
``/validate`` routes). The probe enrols new users ``probe-<run>-<n>`` with emulated cards made
with the issuer keys the verifier holds, so probe a test database, not a production one.

Exit status: 0 when no check failed (warnings and skips included), 14 (``INVARIANT_BROKEN``)
when a check failed or could not finish; other capsim errors map as everywhere
(``docs/cli.md``): 11 when the verifier went away, 13 for a bad option value.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from capsim.cli._common import ExitCode, handle_errors
from capsim.errors import ConfigError

__all__ = ["probe"]

_TEMPLATES = ("secur-acces", "natwest", "visa-dpa", "barclays", "rabobank")


def _limits(base: Any, max_fail: int | None, atc_window: int | None, max_atc_gap: int | None) -> Any:
    from dataclasses import replace

    given = {"max_fail": max_fail, "atc_window": atc_window, "max_atc_gap": max_atc_gap}
    changes = {k: v for k, v in given.items() if v is not None}
    return replace(base, **changes)


def _keys_for_db(session: Any, issuer_keys: Path | None) -> tuple[Any, str]:
    """The issuer keys of the probe's cards and their key id, for a verifier database."""
    from capsim.issuerkeys import load_issuer_keys
    from capsim.verifier.keyring import issuer_key_id

    if issuer_keys is not None:
        keys = load_issuer_keys(issuer_keys)
        kid = issuer_key_id(keys)
        if kid not in session.keyring:
            raise ConfigError(
                f"--issuer-keys: {kid} is not registered with this database; "
                "register it with 'capsim verifier init --issuer-keys FILE'"
            )
        return keys, kid
    entries = list(session.keyring.values())
    if len(entries) != 1:
        raise ConfigError(
            f"--issuer-keys: the database has {len(entries)} registered issuer-keys files; "
            "name the one to use"
        )
    return load_issuer_keys(entries[0].path), entries[0].key_id


@contextmanager
def _adapter(
    db: str, issuer_keys: Path | None, privacyidea: bool, claimed: dict[str, int | None]
) -> Iterator[tuple[Any, Any]]:
    """The adapter for ``--db`` and the issuer keys of the probe's cards."""
    from capsim.probe.adapter import Limits

    with ExitStack() as stack:
        if db.startswith(("http://", "https://")):
            from capsim.issuerkeys import load_issuer_keys
            from capsim.probe.http import CapsimHttpAdapter, PrivacyIdeaAdapter
            from capsim.verifier.keyring import issuer_key_id

            key = os.environ.get("CAPSIM_API_KEY", "")
            if not key:
                raise ConfigError(
                    "CAPSIM_API_KEY: an operator client's API key is needed for an http(s):// --db"
                )
            if issuer_keys is None:
                raise ConfigError(
                    "--issuer-keys: an http(s):// --db needs the issuer-keys file the service holds"
                )
            keys = load_issuer_keys(issuer_keys)
            limits = _limits(Limits(), **claimed)
            native = CapsimHttpAdapter(db, key, issuer_key_id=issuer_key_id(keys), limits=limits)
            stack.callback(native.close)
            if privacyidea:
                pi = PrivacyIdeaAdapter(db, key, enroller=native, limits=limits)
                stack.callback(pi.close)
                yield pi, keys
            else:
                yield native, keys
            return
        if privacyidea:
            raise ConfigError("--privacyidea: needs an http(s):// --db (the service's /validate routes)")
        from capsim.probe.local import LibraryAdapter, limits_of, memory_verifier

        if db == "memory:":
            if issuer_keys is not None:
                raise ConfigError("--issuer-keys: memory: makes its own keys; give a database with --db")
            verifier, keys, kid = memory_verifier()
            name = "capsim verifier (library, memory store)"
        else:
            from capsim.cli.verifier import open_session

            session = stack.enter_context(open_session(db, keys=True))
            keys, kid = _keys_for_db(session, issuer_keys)
            verifier = session.verifier
            name = f"capsim verifier (library, {session.shown_url})"
        adapter = LibraryAdapter(
            verifier, issuer_key_id=kid, name=name, limits=_limits(limits_of(verifier), **claimed)
        )
        yield adapter, keys


@click.command("probe")
@click.option(
    "--db",
    default="memory:",
    show_default=True,
    metavar="URL",
    help="The verifier: memory:, a SQLite file, postgresql://…, or http(s):// (capsim verifier serve; "
    "key in CAPSIM_API_KEY).",
)
@click.option(
    "--issuer-keys",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The issuer-keys file the verifier holds (default for a database: its only registered one).",
)
@click.option(
    "--privacyidea",
    is_flag=True,
    help="Probe the service's privacyIDEA-compatible /validate routes (enrolment through /v1).",
)
@click.option(
    "--template",
    type=click.Choice(_TEMPLATES),
    default="secur-acces",
    show_default=True,
    help="Card template of the probe's cards.",
)
@click.option("--check", "checks", multiple=True, metavar="NAME", help="Run only this check (repeatable).")
@click.option(
    "--max-fail", type=click.IntRange(1, 100), help="The claimed lockout count [default: the policy's]."
)
@click.option(
    "--atc-window", type=click.IntRange(1, 1000), help="The claimed ATC window [default: the policy's]."
)
@click.option(
    "--max-atc-gap", type=click.IntRange(1, 1000), help="The claimed login ATC gap [default: the policy's]."
)
@click.option("--strict-timing", is_flag=True, help="A timing difference fails instead of warning.")
@click.option(
    "--timing-samples",
    type=click.IntRange(10, 10000),
    default=50,
    show_default=True,
    help="Samples per reject class of the timing check.",
)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Seed of the timing check's interleaving.")
@click.option("--json", "as_json", is_flag=True, help="One JSON report on stdout.")
@handle_errors
def probe(**kw: Any) -> None:
    """Run the CAP attack battery against a verifier and report each check with its evidence.

    Checks: replay, cross-credential, cross-mode, ___domain separation, wrong amount and payee,
    stale and far-future ATCs, the exact lockout count, lock bypass through a sibling card,
    request-id reuse and uniform-reject timing. Exit 14 when a check fails.
    """
    from capsim.probe.lab import Lab
    from capsim.probe.model import ProbeOptions
    from capsim.probe.run import run_probe, select_checks

    selected = select_checks(kw["checks"])
    options = ProbeOptions(
        strict_timing=kw["strict_timing"], timing_samples=kw["timing_samples"], seed=kw["seed"]
    )
    claimed = {"max_fail": kw["max_fail"], "atc_window": kw["atc_window"], "max_atc_gap": kw["max_atc_gap"]}
    with _adapter(kw["db"], kw["issuer_keys"], kw["privacyidea"], claimed) as (adapter, keys):
        report = run_probe(Lab(adapter, keys, template=kw["template"]), selected, options)
    if kw["as_json"]:
        doc = report.to_dict()
        doc["exit_code"] = int(ExitCode.INVARIANT_BROKEN if report.failed else ExitCode.OK)
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(report.text())
    if report.failed:
        sys.exit(int(ExitCode.INVARIANT_BROKEN))
