"""``capsim fuzz``: fuzz cards, readers and verifiers (guide: ``docs/fuzzing.md``).

``card`` [!] sends APDU sequences to a card (``pcsc:`` targets are guarded: nothing that
changes the card without ``--allow-state-changes``, and never a VERIFY below PTC 2);
``reader`` runs capsim's reader against a hostile card; ``serve`` [!] serves the hostile card
through pcscd + vpcd for any PC/SC program; ``verifier`` attacks a verifier store;
``atheris`` runs the coverage-guided targets; ``replay`` checks a saved finding again.

Exit status 0 when no invariant broke, 14 (``INVARIANT_BROKEN``) when one did; other capsim
errors map as everywhere (``docs/cli.md``).
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from capsim._validate import digits
from capsim.cli._common import ExitCode, deprecated_alias, handle_errors, read_secret
from capsim.errors import ConfigError

__all__ = ["fuzz"]

_DEFAULT_FINDINGS = "capsim-findings"


def _seed(value: int | None) -> int:
    return value if value is not None else secrets.randbelow(2**31)


def _needs_hypothesis(command: str) -> None:
    """A clear error instead of a traceback when Hypothesis (a dependency) cannot be imported."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"capsim fuzz {command} needs Hypothesis, a dependency of capsim that is missing from "
            "this environment: pip install 'hypothesis>=6.100' (or reinstall capsim)"
        ) from None


def _progress(
    json_out: bool, budget: float | None, label: str
) -> tuple[Any, Callable[[int, int, int], None]]:
    from capsim.testing.progress import Progress

    bar = Progress(None if json_out else sys.stderr, budget=budget, label=label)

    def update(examples: int, apdus: int, findings: int) -> None:
        bar.update(examples=examples, apdus=apdus, findings=findings)

    return bar, update


def _report(report: Any, json_out: bool) -> None:
    if json_out:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(
            f"{report.fuzzer} {report.target}: seed {report.seed}, {report.examples} examples, "
            f"{report.apdus} {'steps' if report.fuzzer == 'verifier' else 'APDUs'} in {report.elapsed:.1f} s "
            f"(stopped: {report.stopped})"
        )
        if getattr(report, "refused", 0):
            click.echo(f"  {report.refused} state-changing command(s) not sent (guard)")
        if report.findings:
            click.echo(f"{len(report.findings)} finding(s):")
            for finding in report.findings:
                click.echo(f"  {finding.summary()}")
                if finding.path:
                    click.echo(f"    saved: {finding.path}")
        else:
            click.echo("no invariant broke")
    if report.findings:
        sys.exit(int(ExitCode.INVARIANT_BROKEN))


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--json", "json_out", is_flag=True, help="JSON report on stdout, no progress line.")(
        func
    )
    func = click.option(
        "--findings",
        "findings_dir",
        default=_DEFAULT_FINDINGS,
        show_default=True,
        type=click.Path(file_okay=False),
        help="Directory for findings (replayable transcripts), created when needed.",
    )(func)
    func = click.option(
        "--time-budget", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds."
    )(func)
    func = click.option(
        "--max-findings",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Go on after a finding until this many (each shrunk; duplicates reported once).",
    )(func)
    return click.option(
        "--seed", type=int, default=None, help="Seed of the run [default: random, reported]."
    )(func)


@click.group("fuzz")
def fuzz() -> None:
    """Fuzz cards, readers and verifiers; findings are saved as replayable transcripts."""


@fuzz.command("card")
@click.option(
    "--target",
    required=True,
    help="[!] inproc:TEMPLATE, inproc:piv, file:CARD.json, pcsc:READER or py:MODULE:FACTORY.",
)
@click.option("--max-examples", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--allow-state-changes",
    is_flag=True,
    help="pcsc: send GPO, VERIFY (only at PTC >= 2), GENERATE AC, CLA 84, writes. Off by default.",
)
@click.option("--safe", is_flag=True, help="Guard any target as if it were a real card.")
@click.option(
    "--pin-stdin", is_flag=True, help="Read the card's correct PIN from stdin (checked, never shown)."
)
@_common
@handle_errors
def card(
    *,
    target: str,
    max_examples: int,
    allow_state_changes: bool,
    safe: bool,
    pin_stdin: bool,
    seed: int | None,
    time_budget: float,
    findings_dir: str,
    max_findings: int,
    json_out: bool,
) -> None:
    """[!] Structured and random APDU sequences against a card, checking its invariants."""
    from capsim.testing.fuzz_card import fuzz_card, open_card_target

    pin = read_secret("card PIN: ", from_stdin=True) if pin_stdin else None
    if pin is not None:
        digits("--pin-stdin", pin, 4, 12)
    opened = open_card_target(target, pin=pin, guarded=True if safe else None)
    bar, update = _progress(json_out, time_budget, "fuzz card")
    try:
        report = fuzz_card(
            opened,
            seed=_seed(seed),
            max_examples=max_examples,
            time_budget=time_budget,
            allow_state_changes=allow_state_changes,
            findings_dir=findings_dir,
            max_findings=max_findings,
            on_progress=update,
        )
    finally:
        opened.close()
        bar.finish()
    _report(report, json_out)


@fuzz.command("reader")
@click.option("--template", "profile", help="Card template the hostile card mutates [secur-acces].")
@click.option("--profile", "profile_alias", hidden=True)
@click.option("--max-examples", type=click.IntRange(min=1), default=1000, show_default=True)
@_common
@handle_errors
def reader(
    *,
    profile: str | None,
    profile_alias: str | None,
    max_examples: int,
    seed: int | None,
    time_budget: float,
    findings_dir: str,
    max_findings: int,
    json_out: bool,
) -> None:
    """capsim's reader against a hostile card: only capsim errors, no hangs."""
    profile = deprecated_alias(profile, profile_alias, new="--template", old="--profile") or "secur-acces"
    _needs_hypothesis("reader")
    from capsim.testing.fuzz_reader import fuzz_reader

    bar, update = _progress(json_out, time_budget, "fuzz reader")
    try:
        report = fuzz_reader(
            profile=profile,
            seed=_seed(seed),
            max_examples=max_examples,
            time_budget=time_budget,
            findings_dir=findings_dir,
            max_findings=max_findings,
            on_progress=update,
        )
    finally:
        bar.finish()
    _report(report, json_out)


@fuzz.command("verifier")
@click.option(
    "--db", default="memory:", show_default=True, help="Store URL (memory:, a SQLite path, postgresql://…)."
)
@click.option("--template", "profile", help="Card template of the enrolled cards [secur-acces].")
@click.option("--profile", "profile_alias", hidden=True)
@click.option("--max-examples", type=click.IntRange(min=1), default=200, show_default=True)
@_common
@handle_errors
def verifier(
    *,
    db: str,
    profile: str | None,
    profile_alias: str | None,
    max_examples: int,
    seed: int | None,
    time_budget: float,
    findings_dir: str,
    max_findings: int,
    json_out: bool,
) -> None:
    """Random and adversarial codes, replays and bursts against a verifier store (V41, V42).

    Each example enrols a fresh test card under a new user: use a scratch database.
    """
    profile = deprecated_alias(profile, profile_alias, new="--template", old="--profile") or "secur-acces"
    _needs_hypothesis("verifier")
    from capsim.testing.fuzz_verifier import fuzz_verifier
    from capsim.verifier.dburl import open_store, redact_db_url

    store = open_store(db)
    bar, update = _progress(json_out, time_budget, "fuzz verifier")
    try:
        report = fuzz_verifier(
            store,
            store_name=redact_db_url(db),
            profile=profile,
            seed=_seed(seed),
            max_examples=max_examples,
            time_budget=time_budget,
            findings_dir=findings_dir,
            max_findings=max_findings,
            on_progress=update,
        )
    finally:
        bar.finish()
        store.close()
    _report(report, json_out)


@fuzz.command("serve")
@click.option("--template", "profile", help="Card template the hostile card mutates [secur-acces].")
@click.option("--profile", "profile_alias", hidden=True)
@click.option(
    "--vpcd", "address", default="127.0.0.1:35963", show_default=True, help="HOST:PORT of vpcd slot 0."
)
@click.option("--slot", type=click.IntRange(0, 1), default=0, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Share of mutated answers.",
)
@click.option("--seed", type=int, default=None, help="Seed of the mutations [default: random, reported].")
@click.option(
    "--time-budget", type=click.FloatRange(min=0.1), default=None, help="Seconds [default: until Ctrl-C]."
)
@click.option(
    "--record", type=click.Path(dir_okay=False), default=None, help="Save the session as a transcript."
)
@click.option("--json", "json_out", is_flag=True, help="JSON summary on stdout, no progress line.")
@handle_errors
def serve(
    *,
    profile: str | None,
    profile_alias: str | None,
    address: str,
    slot: int,
    rate: float,
    seed: int | None,
    time_budget: float | None,
    record: str | None,
    json_out: bool,
) -> None:
    """[!] Serve a hostile card through pcscd + vpcd so any PC/SC program can be fuzzed."""
    profile = deprecated_alias(profile, profile_alias, new="--template", old="--profile") or "secur-acces"
    _needs_hypothesis("serve")
    from capsim.testing.fuzz_reader import serve_hostile
    from capsim.transports.replay import write_transcript
    from capsim.transports.vpcd import parse_vpcd_address

    host, port = parse_vpcd_address(address, slot=slot)
    chosen = _seed(seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    from capsim.testing.progress import Progress

    bar = Progress(None if json_out else sys.stderr, budget=time_budget, label="fuzz serve")
    if not json_out:
        click.echo(
            f"serving a hostile {profile} card at {host}:{port} (seed {chosen}); Ctrl-C to stop", err=True
        )
    try:
        hostile = serve_hostile(
            profile=profile,
            seed=chosen,
            rate=rate,
            host=host,
            port=port,
            time_budget=time_budget,
            stop=stop,
            on_progress=lambda n: bar.update(examples=n, apdus=n),
        )
    finally:
        bar.finish()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    from capsim.transports.base import redact_command

    if record is not None:
        write_transcript(
            record,
            [(redact_command(c), r) for c, r in hostile.exchanges],
            source=f"capsim fuzz serve --profile {profile} --seed {chosen} --rate {rate}",
            meta={"seed": str(chosen), "rate": str(rate), "profile": profile},
        )
    summary = {"seed": chosen, "apdus": len(hostile.exchanges), "profile": profile, "record": record}
    if json_out:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"served {len(hostile.exchanges)} APDUs (seed {chosen})")


@fuzz.command("atheris")
@click.option("--target", "name", type=click.Choice(["apdu", "tlv", "card"]), required=True)
@click.option("--runs", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option(
    "--corpus", type=click.Path(file_okay=False), default=None, help="Corpus directory [default: temporary]."
)
@click.option(
    "--vectors",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Seed the corpus from these vector files [default: vectors/ of the capsim checkout].",
)
@click.option("--seed", type=int, default=None, help="libFuzzer seed [default: random].")
@click.option("--max-total-time", type=click.IntRange(min=1), default=None, help="Seconds.")
@handle_errors
def atheris(
    *,
    name: str,
    runs: int,
    corpus: str | None,
    vectors: str | None,
    seed: int | None,
    max_total_time: int | None,
) -> None:
    """Coverage-guided fuzzing of the APDU/TLV parsers or the card dispatcher (needs atheris)."""
    try:
        import atheris as _atheris  # noqa: F401
    except ImportError:
        raise ConfigError(
            "capsim fuzz atheris needs atheris, an optional extra: pip install 'capsim[fuzz]' "
            "(Linux, CPython with a C++ compiler)"
        ) from None
    from capsim.testing.atheris_targets import default_vectors, run_atheris, seed_corpus

    source = Path(vectors) if vectors is not None else default_vectors()
    directory = corpus or tempfile.mkdtemp(prefix=f"capsim-{name}-corpus-")
    count = seed_corpus(source, directory, target=name)
    click.echo(f"corpus {directory}: {count} seed input(s) from {source}", err=True)
    argv = [sys.argv[0], directory, f"-runs={runs}", f"-seed={_seed(seed)}"]
    if max_total_time is not None:
        argv.append(f"-max_total_time={max_total_time}")
    run_atheris(name, argv)


@fuzz.command("replay")
@click.argument("finding_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--target", default=None, help="Send the commands to this card target instead of the recording."
)
@click.option(
    "--db", default="memory:", show_default=True, help="Verifier findings: the store to run them on."
)
@click.option("--json", "json_out", is_flag=True)
@handle_errors
def replay(*, finding_path: Path, target: str | None, db: str, json_out: bool) -> None:
    """Check a saved finding again (exit 14 while it still reproduces)."""
    from capsim.testing.findings import finding_from_transcript

    finding = finding_from_transcript(finding_path)
    if finding.fuzzer == "reader":
        _needs_hypothesis("replay")
        from capsim.testing.fuzz_reader import replay_reader_finding

        violation = replay_reader_finding(finding)
    elif finding.fuzzer == "verifier":
        _needs_hypothesis("replay")
        from capsim.testing.fuzz_verifier import replay_verifier_finding
        from capsim.verifier.dburl import open_store

        store = open_store(db)
        try:
            violation = replay_verifier_finding(finding, store)
        finally:
            store.close()
    else:
        from capsim.testing.fuzz_card import open_card_target, replay_card_finding

        opened = open_card_target(target) if target else None
        try:
            violation = replay_card_finding(finding, target=opened)
        finally:
            if opened is not None:
                opened.close()
    result = {
        "finding": str(finding_path),
        "reproduced": violation is not None,
        "invariant": violation.invariant if violation else None,
        "detail": violation.detail if violation else None,
    }
    if json_out:
        click.echo(json.dumps(result, indent=2))
    elif violation is not None:
        click.echo(f"reproduced: {violation.invariant}: {violation.detail}")
    else:
        click.echo("not reproduced: the sequence now passes")
    if violation is not None:
        sys.exit(int(ExitCode.INVARIANT_BROKEN))
