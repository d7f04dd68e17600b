"""Shared pieces of the command line: exit codes, error mapping, the data directory.

Exit codes (also in ``docs/cli.md``):

====  ==========================================================
code  meaning
====  ==========================================================
0     success
1     any other capsim error
2     usage error (bad option or argument; click's own code)
3     wrong PIN (tries remain)
4     PIN or card blocked (also the wrong PIN that used the last try)
5     no card in the reader, or the card was removed
6     reader not found, or the name matches several readers
7     PC/SC unavailable (pcscd not running, pyscard missing)
8     no CAP application on the card
9     the card misbehaved (protocol error, unexpected status word)
10    code rejected by the verifier
11    temporary failure (retry later)
12    card or state file unusable (corrupt, newer version, locked)
13    invalid input value (challenge, amount, currency, code, PIN …; no terminal for a PIN prompt)
14    an invariant broke (fuzzing found a problem; a demo step failed)
====  ==========================================================
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import shlex
import stat
import sys
import warnings
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import click

from capsim.errors import (
    AuditTampered,
    CapsimError,
    CardBlockedError,
    CardRemovedError,
    ConfigError,
    InvalidCode,
    NoCardError,
    PcscUnavailableError,
    PinBlockedError,
    PinError,
    ProtocolError,
    ReaderNotFoundError,
    RequestConflict,
    StateFileError,
    StatusWordError,
    TemporaryFailure,
    ValidationError,
)

__all__ = [
    "JSON_ERROR_EXTRA",
    "ExitCode",
    "blocked_advice",
    "data_dir",
    "deprecated_alias",
    "exit_code_for",
    "handle_errors",
    "json_error",
    "read_secret",
    "read_signature",
    "secret_reader",
    "warn_if_exposed",
    "write_tip",
]


class ExitCode(IntEnum):
    """Documented exit codes of the ``capsim`` command."""

    OK = 0
    ERROR = 1
    USAGE = 2
    WRONG_PIN = 3
    BLOCKED = 4
    NO_CARD = 5
    READER_NOT_FOUND = 6
    PCSC_UNAVAILABLE = 7
    NO_CAP_APPLICATION = 8
    CARD_ERROR = 9
    REJECTED = 10
    TEMPORARY_FAILURE = 11
    STATE_FILE = 12
    INVALID_INPUT = 13
    INVARIANT_BROKEN = 14
    REQUEST_CONFLICT = 15


_NO_APPLICATION_SW = frozenset({0x6A82, 0x6A81})


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map an exception to its documented exit code."""
    if isinstance(exc, PinError):
        return ExitCode.WRONG_PIN if exc.tries_left else ExitCode.BLOCKED
    if isinstance(exc, PinBlockedError | CardBlockedError):
        return ExitCode.BLOCKED
    if isinstance(exc, NoCardError | CardRemovedError):
        return ExitCode.NO_CARD
    if isinstance(exc, ReaderNotFoundError):
        return ExitCode.READER_NOT_FOUND
    if isinstance(exc, PcscUnavailableError):
        return ExitCode.PCSC_UNAVAILABLE
    if isinstance(exc, StatusWordError):
        if exc.sw in _NO_APPLICATION_SW and exc.ins == 0xA4:
            return ExitCode.NO_CAP_APPLICATION
        return ExitCode.CARD_ERROR
    if isinstance(exc, ProtocolError):
        return ExitCode.CARD_ERROR
    if isinstance(exc, InvalidCode):
        return ExitCode.REJECTED
    if isinstance(exc, RequestConflict):
        return ExitCode.REQUEST_CONFLICT
    if isinstance(exc, AuditTampered):
        return ExitCode.INVARIANT_BROKEN
    if isinstance(exc, TemporaryFailure):
        return ExitCode.TEMPORARY_FAILURE
    if isinstance(exc, StateFileError):
        return ExitCode.STATE_FILE
    if isinstance(exc, ValidationError | ConfigError):
        return ExitCode.INVALID_INPUT
    return ExitCode.ERROR


P = ParamSpec("P")
R = TypeVar("R")


#: The parameter names under which commands receive their ``--json`` flag.
_JSON_PARAMS: Final = ("as_json", "json_out")
#: Where :func:`json_rejection`-style helpers leave extra keys for the JSON error object.
JSON_ERROR_EXTRA: Final = "capsim.json_error_extra"


def _wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and any(ctx.params.get(name) is True for name in _JSON_PARAMS)


def json_error(exc: BaseException | str, code: int) -> dict[str, Any]:
    """The JSON error object of a failed command run with ``--json`` (docs/cli.md, "JSON errors").

    ``{"error": {"type": …, "message": …, "exit_code": …}}``; ``type`` is the lower-case name of
    the exit code (``invalid_input``, ``wrong_pin``, ``rejected`` …), ``message`` the same text
    as the one line on stderr. Keys a command adds for its own failure (``"accepted": false``)
    come first.
    """
    try:
        kind = ExitCode(code).name.lower()
    except ValueError:
        kind = "error"
    obj: dict[str, Any] = {}
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        obj.update(ctx.meta.get(JSON_ERROR_EXTRA, {}))
    obj["error"] = {"type": kind, "message": str(exc), "exit_code": int(code)}
    return obj


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn capsim errors into one line on stderr and the documented exit code (no traceback).

    Under ``--json`` the failure is also one JSON object on stdout (:func:`json_error`), for
    capsim errors and for click's own usage errors raised inside the command alike.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CapsimError as exc:
            code = exit_code_for(exc)
            if _wants_json():
                click.echo(json.dumps(json_error(exc, code)))
            click.echo(f"capsim: error: {exc}", err=True)
            sys.exit(int(code))
        except click.ClickException as exc:
            if _wants_json():
                click.echo(json.dumps(json_error(exc.format_message(), exc.exit_code)))
            raise

    wrapper.handles_errors = True  # type: ignore[attr-defined]
    return wrapper


def data_dir() -> Path:
    """The user's capsim data directory (``$CAPSIM_HOME``, else ``$XDG_DATA_HOME/capsim``)."""
    home = os.environ.get("CAPSIM_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "capsim"


def read_secret(prompt: str, *, from_stdin: bool) -> str:
    """Read a PIN: one line from stdin (``--pin-stdin``) or a hidden prompt. Never an option.

    The hidden prompt needs a terminal. Without one it raises
    :class:`~capsim.errors.ValidationError` (exit 13) naming ``--pin-stdin``, rather than
    reading an input that may be echoed (:func:`getpass.getpass`'s fallback).
    """
    return secret_reader(prompt, from_stdin=from_stdin)()


def secret_reader(prompt: str, *, from_stdin: bool) -> Callable[[], str]:
    """:func:`read_secret` to call later (when the card is ready for the PIN); the terminal is
    checked now, so a command without one fails before it touches a card."""
    if from_stdin:
        return _stdin_line
    if _no_terminal():
        raise _no_terminal_error(prompt)

    def ask() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("error", getpass.GetPassWarning)
            try:
                value: str = click.prompt(prompt, hide_input=True, type=str, err=True)  # stdout: results only
            except getpass.GetPassWarning:
                click.echo(err=True)  # end the prompt's line
                raise _no_terminal_error(prompt) from None
        return value

    return ask


def _stdin_line() -> str:
    return sys.stdin.readline().rstrip("\r\n")


def _no_terminal_error(prompt: str) -> ValidationError:
    return ValidationError(
        f"{prompt}: there is no terminal to ask for it; give it on standard input with --pin-stdin"
    )


def _no_terminal() -> bool:
    """True when a hidden prompt is impossible: no ``/dev/tty`` and standard input is a file
    that is not a terminal (what makes :func:`getpass.getpass` fall back to echoing)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        pass
    else:
        os.close(fd)
        return False
    try:
        stdin_fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return False  # not a file (an embedding application): the prompt itself decides
    return not os.isatty(stdin_fd)


def blocked_advice(card_file: Path | None) -> str:
    """What to do about a blocked PIN: for a card file, the ``capsim card unblock`` command to
    run; for any other card (a real one), its bank."""
    if card_file is not None:
        return f"to unblock it, run: capsim card unblock {shlex.quote(str(card_file))}"
    return "only the card's issuer can unblock it: ask your bank"


def warn_if_exposed(card_file: Path) -> None:
    """Warn on stderr when a card file (it holds the card's keys and PIN) is readable or
    writable by other users; the file is left as it is."""
    try:
        mode = stat.S_IMODE(card_file.stat().st_mode)
    except OSError:
        return  # opening it reports the problem
    if mode & 0o077:
        click.echo(
            f"capsim: warning: card file {card_file} is accessible to other users (mode {mode:04o}); "
            f"it holds the card's keys and PIN: chmod 600 {shlex.quote(str(card_file))}",
            err=True,
        )


def deprecated_alias(new_value: str | None, old_value: str | None, *, new: str, old: str) -> str | None:
    """The value of an option renamed from ``old`` to ``new`` (the old name is kept, hidden, for
    one release): the new one wins; the old one still works and warns on stderr."""
    if old_value is None:
        return new_value
    click.echo(f"capsim: warning: {old} is deprecated; use {new} (the old name goes next release)", err=True)
    if new_value is not None and new_value != old_value:
        raise ValidationError(f"{new} and {old} (its old name) disagree; give only {new}")
    return old_value


def write_tip(text: str, target: str) -> Path | None:
    """Write an exported audit tip to ``target`` atomically (``-``: to stdout); the file, or
    ``None`` for stdout. :class:`~capsim.errors.StateFileError` when it cannot be written."""
    if target == "-":
        click.echo(text, nl=False)
        return None
    from capsim.atomicfile import atomic_replace  # only the audit commands write a tip

    path = Path(target)
    try:
        atomic_replace(path, text)
    except OSError as exc:
        raise StateFileError(f"--export-tip: cannot write {path} ({exc.strerror})") from None
    return path


#: The largest signature file ``--signature-file`` reads.
_MAX_SIGNATURE_FILE: Final = 4096


def read_signature(hex_value: str | None, path: Path | None) -> bytes:
    """The token's signature from ``--signature HEX`` or ``--signature-file FILE`` (exactly one)."""
    if (hex_value is None) == (path is None):
        raise ValidationError("--signature HEX or --signature-file FILE: exactly one is needed")
    if hex_value is not None:
        from capsim.hexinput import parse_hex  # only the certificate commands read signatures

        return parse_hex("--signature", hex_value, max_bytes=_MAX_SIGNATURE_FILE)
    assert path is not None
    data = path.read_bytes()[: _MAX_SIGNATURE_FILE + 1]
    if len(data) > _MAX_SIGNATURE_FILE:
        raise ValidationError(f"--signature-file: larger than {_MAX_SIGNATURE_FILE} bytes")
    return data
