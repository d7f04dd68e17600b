"""A card template names its reader profile (docs/card.md, "Adding a bank's card"): the name is
validated, kept in card files (older files without it still load), agrees with the profile a
reader picks from the card's AID, drives enrolment and is shown by ``card templates`` and
``card show``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from capsim.cards import BUILTIN_PROFILES, CardProfile, builtin_profile, new_card
from capsim.cli import main
from capsim.errors import StateFileError, ValidationError
from capsim.profiles import READER_PROFILES, default_reader_profile
from capsim.reader import CapReader
from capsim.storage import read_card_file
from capsim.transports import open_transport
from capsim.transports.inprocess import InProcessTransport
from capsim.verifier.enrolment import credential_profile_from_card
from tests.cards.helpers import IMK_A, PAN

TEMPLATES = sorted(BUILTIN_PROFILES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_reader_uses_exactly_the_reader_profile_the_template_names(name: str) -> None:
    """No ``--reader-profile``: the reader picks its profile from the card's AID alone, and that
    is the one the template names."""
    template = builtin_profile(name)
    assert template.reader_profile in READER_PROFILES
    with open_transport(f"inproc:{name}") as link:
        result = CapReader(link).respond("1234", "12345678")
    assert result.profile == template.reader_profile
    assert default_reader_profile(template.aid).name == template.reader_profile


def test_every_builtin_template_names_its_reader_profile_explicitly() -> None:
    assert {n: p.reader_profile for n, p in BUILTIN_PROFILES.items()} == {
        "barclays": "visa-dpa",
        "natwest": "mc-cap",
        "rabobank": "mc-cap",
        "secur-acces": "mc-cap",
        "visa-dpa": "visa-dpa",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "nope",
            "reader_profile: unknown reader profile 'nope'; expected one of mc-cap, visa-dpa, be-payment",
        ),
        ("MC-CAP", "reader_profile: unknown reader profile 'MC-CAP'"),
        (7, "reader_profile: expected a string"),
    ],
)
def test_an_unknown_reader_profile_is_refused(value: object, message: str) -> None:
    template = builtin_profile("secur-acces")
    with pytest.raises(ValidationError) as info:
        template.with_overrides(reader_profile=value)
    assert str(info.value).startswith(message)
    doc = template.to_dict() | {"reader_profile": value}
    with pytest.raises(ValidationError, match="reader_profile"):
        CardProfile.from_dict(doc)


def test_an_aid_no_reader_profile_lists_defaults_to_mc_cap() -> None:
    template = builtin_profile("visa-dpa")
    unknown = bytes.fromhex("A0000009998002")
    assert template.with_overrides(aid=unknown).reader_profile == "mc-cap"
    assert template.with_overrides(aid=unknown, reader_profile="visa-dpa").reader_profile == "visa-dpa"


def test_a_new_aid_brings_the_reader_profile_it_selects() -> None:
    moved = builtin_profile("secur-acces").with_overrides(aid=bytes.fromhex("A0000000038002"))
    assert moved.reader_profile == "visa-dpa"
    maestro = builtin_profile("secur-acces").with_overrides(aid=bytes.fromhex("A0000000043060"))
    assert maestro.reader_profile == "be-payment"
    with InProcessTransport(new_card(maestro, pan=PAN, imk_ac=IMK_A)) as link:
        assert CapReader(link).respond("1234", "12345678").profile == "be-payment"


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")
    os.chmod(path, 0o600)


@pytest.mark.parametrize("name", TEMPLATES)
def test_card_files_keep_the_reader_profile_and_older_files_get_the_aid_choice(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / "card.json"
    new_card(name, pan=PAN, imk_ac=IMK_A, path=path).close()
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["profile"]["reader_profile"] == BUILTIN_PROFILES[name].reader_profile
    assert read_card_file(path)[0].reader_profile == BUILTIN_PROFILES[name].reader_profile
    # a card file written before the field existed
    del doc["profile"]["reader_profile"]
    old = tmp_path / "old.json"
    _write(old, doc)
    profile, _ = read_card_file(old)
    assert (
        profile.reader_profile
        == default_reader_profile(profile.aid).name
        == BUILTIN_PROFILES[name].reader_profile
    )
    # a card file naming a reader profile that does not exist is refused, not reset
    doc["profile"]["reader_profile"] = "no-such-reader"
    bad = tmp_path / "bad.json"
    _write(bad, doc)
    with pytest.raises(StateFileError, match="reader_profile: unknown reader profile 'no-such-reader'"):
        read_card_file(bad)


@pytest.mark.parametrize("name", TEMPLATES)
def test_enrolment_takes_the_reader_profile_the_card_names(name: str) -> None:
    card = builtin_profile(name).personalise(pan=PAN, imk_ac=IMK_A, imk_smi=IMK_A, imk_smc=IMK_A)
    assert credential_profile_from_card(card).reader_profile == card.reader_profile


class _NamesItsReader:
    """A card profile as a card-management system might hand it over, naming a reader profile
    other than the one its AID would select (a bank whose terminal differs)."""

    def __init__(self, card: CardProfile, reader_profile: str) -> None:
        self._card = card
        self.reader_profile = reader_profile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._card, name)


def test_enrolment_follows_the_card_not_the_aid() -> None:
    card = builtin_profile("secur-acces").personalise(pan=PAN, imk_ac=IMK_A, imk_smi=IMK_A, imk_smc=IMK_A)
    named = _NamesItsReader(card, "be-payment")
    assert credential_profile_from_card(named).reader_profile == "be-payment"
    assert credential_profile_from_card(named, reader_profile="visa-dpa").reader_profile == "visa-dpa"
    with pytest.raises(ValidationError):
        credential_profile_from_card(_NamesItsReader(card, "nope"))


def test_card_templates_and_card_show_print_the_reader_profile(tmp_path: Path) -> None:
    runner = CliRunner(env={"CAPSIM_HOME": str(tmp_path / "home")})
    listed = runner.invoke(main, ["card", "templates"])
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert sorted(lines) == sorted([*TEMPLATES, "piv"])  # the PIV token is no CAP card: no reader profile
    assert "reader " not in lines.pop("piv")
    for name, line in lines.items():
        assert f"reader {BUILTIN_PROFILES[name].reader_profile} " in line
    path = tmp_path / "card.json"
    assert runner.invoke(main, ["card", "new", str(path), "--template", "barclays"]).exit_code == 0
    shown = runner.invoke(main, ["card", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "reader_profile: visa-dpa" in shown.stdout.splitlines()
    as_json = runner.invoke(main, ["card", "show", str(path), "--json"])
    assert json.loads(as_json.stdout)["reader_profile"] == "visa-dpa"
