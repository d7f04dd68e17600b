"""A small harness for the verifier CLI tests: a real card file, a real verifier database,
codes computed by ``capsim code`` over the card file, everything through the click entry point."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from capsim.cli import main

PIN = "1234"


@dataclass(frozen=True)
class Run:
    """One command's outcome."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Cli:
    """Invokes ``capsim`` in-process with a private data directory and no inherited ``CAPSIM_DB``."""

    home: Path
    runs: list[Run] = field(default_factory=list)

    def __call__(self, *args: str, stdin: str | None = None) -> Run:
        runner = CliRunner(env={"CAPSIM_HOME": str(self.home), "CAPSIM_DB": None})
        result = runner.invoke(main, list(args), input=stdin, catch_exceptions=False)
        run = Run(result.exit_code, result.stdout, result.stderr)
        self.runs.append(run)
        return run

    def ok(self, *args: str, stdin: str | None = None) -> Run:
        run = self(*args, stdin=stdin)
        assert run.exit_code == 0, (args, run.stdout, run.stderr)
        return run


@dataclass
class World:
    """A card file, its issuer keys, an initialised verifier database and one user."""

    cli: Cli
    tmp: Path
    card: Path
    keys: Path
    db: str
    user: str = "alice"

    def v(self, *args: str, stdin: str | None = None) -> Run:
        """``capsim verifier ARGS --db DB``."""
        return self.cli("verifier", *args, "--db", self.db, stdin=stdin)

    def verify(self, target: str, code: str, *extra: str, stdin: str | None = None) -> Run:
        return self.cli("verify", target, code, "--db", self.db, *extra, stdin=stdin)

    def code(self, mode: str, *args: str, pin: str = PIN) -> str:
        """A real code: ``capsim code MODE --reader file:CARD --pin-stdin --json``."""
        reader = f"file:{self.card}"
        run = self.cli.ok("code", mode, *args, "--reader", reader, "--pin-stdin", "--json", stdin=pin + "\n")
        code = run.json()["code"]
        assert isinstance(code, str)
        return code

    def activation(self, user: str | None = None) -> str:
        run = self.v("activation-code", user or self.user, "--json")
        assert run.exit_code == 0, run.stderr
        value = run.json()["activation_code"]
        assert isinstance(value, str)
        return value

    def enroll(self, *, user: str | None = None) -> str:
        """Enrol the card with its first Identify code; return the credential id."""
        act = self.activation(user)
        first = self.code("identify")
        run = self.v("enroll", "--activation-code", act, "--card", str(self.card), "--code", first, "--json")
        assert run.exit_code == 0, run.stderr
        cid = run.json()["credential_id"]
        assert isinstance(cid, str)
        return cid

    def operation(self, cid: str, mode: str, *args: str) -> dict[str, Any]:
        run = self.v("operation", "new", cid, "--mode", mode, *args, "--json")
        assert run.exit_code == 0, run.stderr
        op = run.json()
        assert isinstance(op, dict)
        return op

    def credential(self, cid: str) -> dict[str, Any]:
        creds = self.v("credential", "list", "--json").json()["credentials"]
        (match,) = [c for c in creds if c["credential_id"] == cid]
        assert isinstance(match, dict)
        return match


def make_world(tmp: Path, *, db: str | None = None, init_args: tuple[str, ...] = ()) -> World:
    """``capsim card new``, ``capsim verifier init --issuer-keys``, ``capsim verifier user add alice``."""
    cli = Cli(tmp / "home")
    card = tmp / "card.json"
    cli.ok("card", "new", str(card))
    keys = tmp / "card.issuer-keys.json"
    world = World(cli=cli, tmp=tmp, card=card, keys=keys, db=db or str(tmp / "verifier.db"))
    run = world.v("init", "--issuer-keys", str(keys), *init_args)
    assert run.exit_code == 0, run.stderr
    assert world.v("user", "add", world.user).exit_code == 0
    return world
