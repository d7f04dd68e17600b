"""The command table of ``capsim`` (capsim.cli.COMMANDS): families load only when used, every
entry loads, the listing is the same as if everything were loaded, and the ``[!]`` marker.

What a command imports is checked in a fresh interpreter (a subprocess), never by timing:
``benchmarks/cli_startup.py`` measures the time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from capsim.cli import COMMANDS, main
from capsim.cli._lazy import LazyCommand, LazyGroup, load_command
from capsim.errors import ConfigError
from capsim.reader import CapReader
from capsim.transports import TracingTransport, open_transport

ROOT = Path(__file__).resolve().parents[2]

#: Runs the CLI with argv, then prints (as JSON on stderr) the modules it imported beyond a bare
#: interpreter: capsim's own and the top-level names of third-party packages.
_PROBE = """
import json, sys
before = set(sys.modules)
from capsim.cli import main
try:
    main(sys.argv[1:], prog_name="capsim")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
new = set(sys.modules) - before
sys.stdout.flush()
print(json.dumps({
    "exit": code,
    "capsim": sorted(m for m in new if m == "capsim" or m.startswith("capsim.")),
    "third_party": sorted({m.split(".")[0] for m in new} - set(sys.stdlib_module_names) - {"capsim"}),
}), file=sys.stderr)
"""

#: Packages ``capsim code`` must never import: the verifier's storage and service, fuzzing.
_NOT_FOR_CODE = {
    "hypothesis", "psycopg", "psycopg_pool", "fastapi", "starlette", "uvicorn", "httpx", "pydantic"
}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSIM_")}
    env["CAPSIM_HOME"] = str(tmp_path)
    env["COLUMNS"] = "100"
    return env


def _probe(tmp_path: Path, *argv: str, stdin: str = "") -> tuple[str, dict[str, object]]:
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=ROOT,
        env=_env(tmp_path),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(p.stderr.strip().splitlines()[-1])
    assert isinstance(report, dict)
    return p.stdout, report


def _capsim(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from capsim.cli import main; main(prog_name='capsim')", *argv],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _listed(help_text: str) -> list[str]:
    """The command names of a help text's "Commands:" section."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)]


# ---------------------------------------------------------------------------------- imports


def test_main_help_imports_no_command_family(tmp_path: Path) -> None:
    out, report = _probe(tmp_path, "--help")
    assert report["exit"] == 0
    assert report["capsim"] == [
        "capsim", "capsim._version", "capsim.cli", "capsim.cli._lazy", "capsim.errors"
    ]
    assert report["third_party"] == ["click"]
    assert "verifier" in _listed(out)


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (("code", "identify", "--help"), ""),
        (("code", "identify", "--reader", "inproc:secur-acces", "--pin-stdin"), "1234\n"),
    ],
    ids=["help", "identify"],
)
def test_code_imports_neither_verifier_nor_service_nor_fuzzing(
    tmp_path: Path, argv: tuple[str, ...], stdin: str
) -> None:
    out, report = _probe(tmp_path, *argv, stdin=stdin)
    assert report["exit"] == 0
    if "--help" not in argv:
        assert re.fullmatch(r"\d{8}", out.strip())
    loaded = report["capsim"]
    assert isinstance(loaded, list)
    assert "capsim.cli.code" in loaded
    for forbidden in (
        "capsim.verifier", "capsim.service", "capsim.client", "capsim.testing", "capsim.cli.verifier"
    ):
        assert not [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")], forbidden
    for family in ("capsim.cli.demo", "capsim.cli.fuzz", "capsim.cli.tlv", "capsim.cli.serve"):
        assert family not in loaded
    third_party = report["third_party"]
    assert isinstance(third_party, list)
    assert not _NOT_FOR_CODE & set(third_party)


#: Everything ``capsim code identify --help`` imports from capsim: the command line's shared
#: pieces and what its options need (the reader-spec forms, the reader profiles' names). The
#: reader, the APDU and TLV layers, the CAP computations, the cards and the cryptography load
#: only when a code is computed; a new module here is a start-up cost every ``capsim code``
#: user pays.
_CODE_HELP_MODULES = [
    "capsim",
    "capsim._version",
    "capsim.cli",
    "capsim.cli._common",
    "capsim.cli._lazy",
    "capsim.cli._reader",
    "capsim.cli.code",
    "capsim.errors",
    "capsim.profiles",
    "capsim.transports",
]


def test_code_help_imports_only_what_its_options_need(tmp_path: Path) -> None:
    out, report = _probe(tmp_path, "code", "identify", "--help")
    assert report["exit"] == 0
    assert out.startswith("Usage: capsim code identify ")
    assert report["capsim"] == _CODE_HELP_MODULES
    assert report["third_party"] == ["click"]


def test_code_on_a_card_that_is_not_emulated_loads_no_cryptography(tmp_path: Path) -> None:
    """A real card (here a recorded session played back, as ``pcsc:`` would be) computes its
    cryptogram itself: the reader builds the plaintext PIN block and reads the code from the
    card's answers, so neither the card emulator nor the DES backend nor the issuer-script
    cryptography is loaded."""
    transcript = tmp_path / "identify.txt"
    with TracingTransport(open_transport("inproc:secur-acces")) as tracer:
        expected = CapReader(tracer).identify("1234").code
        tracer.save(str(transcript), source="recorded for the import test")
    out, report = _probe(
        tmp_path, "code", "identify", "--reader", f"replay:{transcript}", "--pin-stdin", stdin="1234\n"
    )
    assert report["exit"] == 0
    assert out.strip() == expected
    loaded = report["capsim"]
    assert isinstance(loaded, list)
    assert {"capsim.reader", "capsim.cap", "capsim.transports.replay"} <= set(loaded)
    for unneeded in ("capsim.cards", "capsim.crypto", "capsim._des", "capsim.sm"):
        assert not [m for m in loaded if m == unneeded or m.startswith(unneeded + ".")], unneeded
    third_party = report["third_party"]
    assert isinstance(third_party, list)
    assert not {"cryptography", "Crypto"} & set(third_party)


# ------------------------------------------------------------------------------- the table


def test_every_listed_command_loads_and_shows_its_own_help(tmp_path: Path) -> None:
    """A typo in the table (module, attribute) fails here, through the real entry point."""
    top = _capsim(tmp_path, "--help")
    assert top.returncode == 0, top.stderr
    listed = _listed(top.stdout)
    assert listed == sorted(path for path in COMMANDS if " " not in path)
    for name in listed:
        run = _capsim(tmp_path, name, "--help")
        assert run.returncode == 0, (name, run.stderr)
        assert run.stdout.startswith(f"Usage: capsim {name} "), (name, run.stdout)


def test_every_subcommand_of_every_group_shows_its_help() -> None:
    """Below the top level too: ``card serve``, ``verifier keys`` … are reachable and load."""
    runner = CliRunner()
    seen: list[str] = []

    def walk(words: list[str]) -> None:
        result = runner.invoke(main, [*words, "--help"], prog_name="capsim", catch_exceptions=False)
        assert result.exit_code == 0, (words, result.output)
        assert result.output.startswith("Usage: capsim " + " ".join(words))
        seen.append(" ".join(words))
        if "\nCommands:\n" in result.output:
            for name in _listed(result.output):
                walk([*words, name])

    for name in sorted(p for p in COMMANDS if " " not in p):
        walk([name])
    assert set(COMMANDS) <= set(seen)
    assert {"card serve", "verifier keys import", "verifier client add", "verifier audit"} <= set(seen)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_table_short_help_is_the_command_docstring(path: str) -> None:
    command = load_command(COMMANDS, path)
    placeholder = click.Command(path, help=COMMANDS[path].short_help)
    assert placeholder.get_short_help_str(1000) == command.get_short_help_str(1000), (
        f"COMMANDS[{path!r}].short_help differs from the first sentence of its docstring"
    )


def test_lazy_listing_is_the_eager_listing(tmp_path: Path) -> None:
    """``capsim --help`` from the table is what click prints with every family loaded."""
    script = (
        "from click.testing import CliRunner\n"
        "from capsim.cli import COMMANDS, main\n"
        "from capsim.cli._lazy import load_command\n"
        "lazy = CliRunner().invoke(main, ['--help'], prog_name='capsim', terminal_width=80).output\n"
        "for path in COMMANDS:\n"
        "    if ' ' not in path:\n"
        "        main.add_command(load_command(COMMANDS, path), path)\n"
        "eager = CliRunner().invoke(main, ['--help'], prog_name='capsim', terminal_width=80).output\n"
        "import sys\n"
        "assert 'capsim.cli.verifier_audit' in sys.modules\n"
        "print(lazy == eager)\n"
        "print(lazy)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("True\n"), p.stdout


@pytest.mark.parametrize("argv", [["verifer"], ["verifier", "credentail"], ["cod", "identify"]])
def test_a_mistyped_command_gets_the_eager_groups_message(tmp_path: Path, argv: list[str]) -> None:
    """Suggestions ("Did you mean …?", click >= 8.2) name commands not yet loaded."""
    eager = (
        "from capsim.cli import COMMANDS, main\n"
        "from capsim.cli._lazy import load_command\n"
        "for path in COMMANDS:\n"
        "    if ' ' not in path:\n"
        "        main.add_command(load_command(COMMANDS, path), path)\n"
        "main(prog_name='capsim')\n"
    )
    lazy = _capsim(tmp_path, *argv)
    reference = subprocess.run(
        [sys.executable, "-c", eager, *argv],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert lazy.returncode == reference.returncode == 2
    assert lazy.stderr == reference.stderr
    assert "No such command" in lazy.stderr


def test_parent_loaded_alone_gets_its_table_children() -> None:
    """``card serve`` and ``verifier keys`` are added whenever their parent is loaded, and
    ``verifier init`` keeps the options ``verifier keys`` adds to it."""
    card = load_command(COMMANDS, "card")
    assert isinstance(card, click.Group)
    assert "serve" in card.commands
    verifier = load_command(COMMANDS, "verifier")
    assert isinstance(verifier, click.Group)
    assert {"init", "user", "activation-code", "enroll", "operation", "credential", "audit", "keys", "serve",
            "client"} <= set(verifier.commands)
    assert {"module", "token_label", "issuer_labels"} <= {p.name for p in verifier.commands["init"].params}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (LazyCommand("capsim.cli.tvl", "tlv", "x"), "no module 'capsim.cli.tvl'"),
        (LazyCommand("capsim.cli.tlv", "tvl", "x"), "capsim.cli.tlv.tvl is not a click command"),
        (LazyCommand("capsim.cli.tlv", "ExitCode", "x"), "is not a click command"),
    ],
)
def test_a_wrong_entry_is_named(entry: LazyCommand, message: str) -> None:
    group = LazyGroup(table={"broken": entry})
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        group.get_command(click.Context(group), "broken")
    assert "'broken'" in str(info.value)


def test_a_child_entry_under_a_plain_command_is_refused() -> None:
    table = {
        "verify": COMMANDS["verify"],
        "verify extra": LazyCommand("capsim.cli.tlv", "tlv", "Decode BER-TLV data and DOLs."),
    }
    with pytest.raises(ConfigError, match="is not a click group"):
        load_command(table, "verify")


# ---------------------------------------------------------------------------- the [!] marker

#: Commands that change a card's state (ATC, PIN try counter).
_STATE_CHANGING = [
    ("card", "new"),
    ("card", "apdu"),
    ("card", "serve"),
    ("code",),
    ("code", "identify"),
    ("code", "respond"),
    ("code", "sign"),
    ("code", "tds"),
    ("demo",),
    ("fuzz", "card"),
    ("fuzz", "serve"),
]


def test_main_help_explains_the_marker() -> None:
    result = CliRunner().invoke(main, ["--help"], prog_name="capsim", terminal_width=100)
    text = " ".join(result.output.split())
    assert "Commands marked [!] change a card's state" in text
    assert "ATC" in text
    assert "PIN try counter" in text


@pytest.mark.parametrize("words", _STATE_CHANGING, ids=" ".join)
def test_state_changing_commands_carry_the_marker(words: tuple[str, ...]) -> None:
    command: click.Command = main
    ctx = click.Context(main)
    for word in words:
        assert isinstance(command, click.Group)
        found = command.get_command(ctx, word)
        assert found is not None, words
        command = found
    assert (command.help or "").startswith("[!] "), words


def test_docs_explain_the_marker() -> None:
    text = " ".join((ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split())
    intro = text.split("## ", 1)[0]
    assert "Commands marked **[!]**" in intro
    assert "PIN try counter" in intro
    for words in _STATE_CHANGING:
        if len(words) > 1:
            assert f"`{' '.join(words)}`" in intro or f"`{words[0]} …`" in intro, words
    assert "`card serve` **[!]**" in text
