"""A click group that imports a command's module only when that command is used.

Theory of operation
-------------------
1. The command line is described by one table, path → :class:`LazyCommand` (module, attribute,
   short help), in :mod:`capsim.cli`. A path is a command's words: ``"code"`` is a top-level
   command, ``"card serve"`` is ``serve`` inside the ``card`` group.
2. ``capsim --help`` lists the top-level entries with the table's short help, shortened exactly
   as click shortens a docstring: nothing is imported for it.
3. Invoking a top-level command (or asking for its ``--help``) imports its module, takes the
   named attribute (it must be a :class:`click.Command`), then loads every table entry below
   that path the same way and adds it to its parent group. A family that extends another
   family (``card serve``, ``verifier keys``) is therefore loaded whenever its parent is, however
   the parent itself was loaded.
4. The only dynamic lookup is :func:`importlib.import_module` of the table's module path and
   the table's attribute in that module; an entry whose module or attribute does not exist, or
   is not a click command, is a :class:`capsim.errors.ConfigError` naming the entry (the test
   suite loads every entry, so a typo fails there first).
5. A command name that is not in the table (a user's typo) loads every family first, so that
   click's error message and its suggestions are exactly those of an eager group.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from capsim.errors import ConfigError

__all__ = ["LazyCommand", "LazyGroup", "load_command"]


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives: ``attribute`` of module ``module``; ``short_help`` is shown by
    its parent's ``--help`` before the module is imported (the first line of its docstring)."""

    module: str
    attribute: str
    short_help: str


def _children(table: Mapping[str, LazyCommand], path: str) -> list[str]:
    """The names of the table's entries directly below ``path`` (``""``: the top level)."""
    depth = 0 if not path else len(path.split(" "))
    prefix = f"{path} " if path else ""
    return sorted(
        key.split(" ")[depth]
        for key in table
        if key.startswith(prefix) and len(key.split(" ")) == depth + 1
    )


def load_command(table: Mapping[str, LazyCommand], path: str) -> click.Command:
    """Import the command at ``path`` and, into it, every entry below ``path`` (recursively)."""
    entry = table[path]
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not entry.module.startswith(exc.name):
            raise  # a missing dependency inside the module: not a table error
        raise ConfigError(f"command {path!r}: no module {entry.module!r}") from None
    command: object = vars(module).get(entry.attribute)
    if not isinstance(command, click.Command):
        raise ConfigError(f"command {path!r}: {entry.module}.{entry.attribute} is not a click command")
    below = _children(table, path)
    if below:
        if not isinstance(command, click.Group):
            raise ConfigError(f"command {path!r}: {entry.module}.{entry.attribute} is not a click group")
        for name in below:
            command.add_command(load_command(table, f"{path} {name}"), name)
    return command


class LazyGroup(click.Group):
    """A :class:`click.Group` whose commands come from a table and load on first use."""

    def __init__(self, *args: Any, table: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = table

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(_children(self.table, "")))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.table:
            self.add_command(load_command(self.table, cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and args[0] not in self.table:
            # A mistyped name: load every family, so that click's own error (with its "Did you
            # mean …?" where the click version has one) is the one an eager group would give.
            for name in self.list_commands(ctx):
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, with a not yet loaded command's short help from the table."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            loaded = self.commands.get(name)
            # A placeholder shortens the table's text exactly as click shortens a docstring.
            command = loaded if loaded is not None else click.Command(name, help=self.table[name].short_help)
            if not command.hidden:
                rows.append((name, command))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])
