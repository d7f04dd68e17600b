"""Hostile JSON and oversized files: one error line and exit 12, never a traceback.

A card file or issuer-keys file nested ``'[' * 100000`` deep used to reach the interpreter's
recursion limit inside :func:`json.loads`; a file of several MiB was read whole. Every loader
(card files, issuer-keys files, the serialised policy, transcripts, a finding's step program)
now refuses both with a capsim error, and every command that reads such a file prints
``capsim: error: …`` and exits with the state-file code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cards import new_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.errors import ConfigError, StateFileError, ValidationError
from capsim.storage import IssuerKeys, load_issuer_keys, read_card_file, save_issuer_keys
from capsim.testing.findings import Finding
from capsim.testing.fuzz_verifier import replay_verifier_finding
from capsim.transports.replay import MAX_TRANSCRIPT_BYTES, read_transcript
from capsim.verifier.policy import VerifierPolicy

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"
DEEP = "[" * 100_000
MIB = 1 << 20


def _deep(path: Path) -> Path:
    path.write_text(DEEP)
    path.chmod(0o600)  # private, as key files must be: the content is what is hostile
    return path


def _padded(path: Path, valid: Path) -> Path:
    """A valid document followed by more than 1 MiB of whitespace (still valid JSON)."""
    path.write_text(valid.read_text() + " " * (MIB + 1))
    path.chmod(0o600)
    return path


@pytest.fixture
def card_file(tmp_path: Path) -> Path:
    path = tmp_path / "card.json"
    new_card("secur-acces", pan=PAN, imk_ac=IMK, path=path).close()
    return path


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    save_issuer_keys(path, IssuerKeys(imk_ac=IMK, imk_smi=IMK, imk_smc=IMK))
    return path


def _cli(tmp_path: Path, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner(env={"CAPSIM_HOME": str(tmp_path / "home"), "CAPSIM_DB": None})
    return runner.invoke(main, list(args), input=stdin)


def _refused(result: Result, *fragments: str) -> None:
    """Exit 12, one ``capsim: error:`` line on stderr naming the problem, no traceback."""
    assert result.exit_code == ExitCode.STATE_FILE == 12, (result.stdout, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("capsim: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# ------------------------------------------------------------------------------------------------
# The library loaders


def test_deep_card_and_keys_files_raise_state_file_errors(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="nested deeper than 32 levels"):
        read_card_file(_deep(tmp_path / "card.json"))
    with pytest.raises(StateFileError, match="nested deeper than 32 levels"):
        load_issuer_keys(_deep(tmp_path / "keys.json"))


def test_files_over_one_mib_are_refused(tmp_path: Path, card_file: Path, keys_file: Path) -> None:
    assert read_card_file(card_file)  # the same document without the padding loads
    with pytest.raises(StateFileError, match=f"larger than {MIB} bytes"):
        read_card_file(_padded(tmp_path / "big-card.json", card_file))
    with pytest.raises(StateFileError, match=f"larger than {MIB} bytes"):
        load_issuer_keys(_padded(tmp_path / "big-keys.json", keys_file))


def test_serialised_policy_with_hostile_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested deeper"):
        VerifierPolicy.from_json(DEEP)
    with pytest.raises(ConfigError, match="larger than"):
        VerifierPolicy.from_json(VerifierPolicy().to_json() + " " * (MIB + 1))
    assert VerifierPolicy.from_json(VerifierPolicy().to_json()) == VerifierPolicy()


def test_oversized_transcript_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("# Source: test\n" + "#" * MAX_TRANSCRIPT_BYTES + "\n")
    with pytest.raises(StateFileError, match="larger than"):
        read_transcript(path)


def test_finding_with_a_deep_step_program_is_a_validation_error() -> None:
    finding = Finding(
        fuzzer="verifier", target="memory", seed=1, invariant="x", detail="y", meta={"steps": DEEP}
    )
    with pytest.raises(ValidationError, match="not a JSON step list"):
        replay_verifier_finding(finding, store=None)


# ------------------------------------------------------------------------------------------------
# The commands that read those files

Hostile = Callable[[Path, Path], Path]
HOSTILE: dict[str, Hostile] = {
    "deep": lambda tmp, valid: _deep(tmp / f"deep-{valid.name}"),
    "huge": lambda tmp, valid: _padded(tmp / f"huge-{valid.name}", valid),
}
MESSAGE = {"deep": "nested deeper than 32 levels", "huge": f"larger than {MIB} bytes"}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_card_show(tmp_path: Path, card_file: Path, kind: str) -> None:
    bad = HOSTILE[kind](tmp_path, card_file)
    _refused(_cli(tmp_path, "card", "show", str(bad)), str(bad), MESSAGE[kind])


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_card_apdu(tmp_path: Path, card_file: Path, kind: str) -> None:
    bad = HOSTILE[kind](tmp_path, card_file)
    _refused(_cli(tmp_path, "card", "apdu", str(bad), "80CA9F1700"), MESSAGE[kind])


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_card_new_from_issuer_keys(tmp_path: Path, keys_file: Path, kind: str) -> None:
    bad = HOSTILE[kind](tmp_path, keys_file)
    result = _cli(tmp_path, "card", "new", str(tmp_path / "new.json"), "--issuer-keys", str(bad))
    _refused(result, MESSAGE[kind])
    assert not (tmp_path / "new.json").exists()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_code_with_a_file_reader(tmp_path: Path, card_file: Path, kind: str) -> None:
    bad = HOSTILE[kind](tmp_path, card_file)
    result = _cli(
        tmp_path,
        "code",
        "respond",
        "--challenge",
        "1234",
        "--reader",
        f"file:{bad}",
        "--pin-stdin",
        stdin="1234\n",
    )
    _refused(result, MESSAGE[kind])


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_verifier_init_with_issuer_keys(tmp_path: Path, keys_file: Path, kind: str) -> None:
    bad = HOSTILE[kind](tmp_path, keys_file)
    db = tmp_path / "verifier.db"
    _refused(_cli(tmp_path, "verifier", "init", "--issuer-keys", str(bad), "--db", str(db)), MESSAGE[kind])


@pytest.mark.timeout(60)  # a card that loads would be served until interrupted
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_card_serve(tmp_path: Path, card_file: Path, kind: str) -> None:
    bad = HOSTILE[kind](tmp_path, card_file)
    result = _cli(tmp_path, "card", "serve", str(bad), "--vpcd", "127.0.0.1:1")
    _refused(result, MESSAGE[kind])


def test_card_show_as_a_real_process(tmp_path: Path) -> None:
    """The installed entry point, end to end: the same one line and exit 12."""
    bad = _deep(tmp_path / "card.json")
    env = {**os.environ, "CAPSIM_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "capsim", "card", "show", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 12, proc.stderr
    assert proc.stdout == ""
    assert (
        proc.stderr
        == f"capsim: error: card file {bad} is corrupt or truncated: JSON nested deeper than 32 levels\n"
    )
