"""``capsim card info``, ``card show`` and ``card apdu`` on any transport; reader specs; no stray
``.lock`` files. Real emulated cards and real card files throughout (the PC/SC runs of the same
commands are in ``tests/pcsc/test_readers_pcsc.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cards import load_card, new_card
from capsim.cards.cardfile import CardFile
from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.errors import ReaderAmbiguousError, ReaderNotFoundError, StateFileError, ValidationError
from capsim.reader import discover
from capsim.transports import TracingTransport, is_spec, parse_spec
from capsim.transports.inprocess import InProcessTransport
from capsim.transports.pcsc import resolve_reader

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"
SELECT_CAP = "00A4040007A000000004800200"


def _capsim(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _card_file(directory: Path, template: str = "rabobank") -> Path:
    path = directory / "card.json"
    new_card(template, pan=PAN, psn="08", imk_ac=IMK, path=path).close()
    return path


# ---------------------------------------------------------------- reader specs (one parser)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", ("pcsc", 0)),
        ("12", ("pcsc", 12)),
        ("pcsc:0", ("pcsc", 0)),
        ("pcsc:00", ("pcsc", 0)),
        ("pcsc:Gemalto", ("pcsc", "Gemalto")),
        ("pcsc:Virtual 00 00", ("pcsc", "Virtual 00 00")),
        ("inproc:natwest", ("inproc", "natwest")),
        ("file:card.json", ("file", "card.json")),
        ("replay:t.txt", ("replay", "t.txt")),
    ],
)
def test_a_reader_spec_is_an_index_a_name_fragment_or_a_transport(
    spec: str, expected: tuple[str, object]
) -> None:
    assert parse_spec(spec) == expected
    assert is_spec(spec)


@pytest.mark.parametrize("spec", ["usb:1", "Gemalto", "card.json", "-1", "١"])
def test_anything_else_is_refused_and_the_forms_are_listed(spec: str) -> None:
    with pytest.raises(ValidationError, match=r"pcsc:N, pcsc:NAME, inproc:TEMPLATE"):
        parse_spec(spec)
    assert not is_spec(spec)


def test_an_index_picks_by_position_never_by_a_name_containing_the_digit() -> None:
    names = ["Gemalto 00 00", "CAPSIM Virtual 00 01"]
    assert resolve_reader(0, names) == "Gemalto 00 00"
    assert resolve_reader(1, names) == "CAPSIM Virtual 00 01"
    with pytest.raises(ReaderNotFoundError, match=r"no reader 2; readers: 0: 'Gemalto 00 00', 1: "):
        resolve_reader(2, names)
    with pytest.raises(ReaderAmbiguousError) as info:  # a name fragment: ambiguity still refused
        resolve_reader("00", names)
    assert info.value.candidates == names


# ---------------------------------------------------------------- no stray .lock files


def test_a_missing_card_file_is_refused_before_any_lock_file_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "typo.json"
    with pytest.raises(StateFileError, match="does not exist"):
        CardFile(missing)
    with pytest.raises(StateFileError, match="not a regular file"):
        CardFile(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["card", "apdu", "typo.json", SELECT_CAP],
        ["card", "show", "typo.json"],
        ["card", "info", "typo.json"],
        ["code", "identify", "--reader", "file:typo.json", "--pin-stdin"],
    ],
)
def test_a_mistyped_card_path_leaves_no_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args, input="1234\n")
    assert result.exit_code == ExitCode.STATE_FILE, result.output
    assert "card file typo.json does not exist" in result.output
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- card apdu / card show on any transport


def test_card_apdu_on_an_emulated_card_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["inproc:natwest", SELECT_CAP], ["--reader", "inproc:natwest", SELECT_CAP]):
        result = _capsim("card", "apdu", *args)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("ATR 3B")
        assert "A0000000048002" in result.output
        assert "    9000: normal processing" in result.output
    assert list(tmp_path.iterdir()) == []  # no "inproc:natwest.lock"


def test_card_apdu_on_a_card_file_by_path_or_spec_keeps_its_state(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    for card in (str(path), f"file:{path}"):
        result = _capsim("card", "apdu", card, SELECT_CAP, "80A8000002830000")
        assert result.exit_code == 0, result.output
    with load_card(path) as card_obj:
        assert card_obj.state.atc == 2  # one GPO per run, persisted to the file


def test_card_apdu_needs_an_apdu_and_exactly_one_card(tmp_path: Path) -> None:
    assert _capsim("card", "apdu", "inproc:natwest").exit_code == ExitCode.USAGE
    both = _capsim("card", "apdu", "--reader", "inproc:natwest", "inproc:natwest", SELECT_CAP)
    assert both.exit_code == ExitCode.INVALID_INPUT  # "inproc:natwest" is not hex
    neither = _capsim("card", "show")
    assert neither.exit_code == ExitCode.INVALID_INPUT
    assert "--reader SPEC" in neither.output


def test_card_show_on_a_non_file_transport_shows_what_card_info_shows() -> None:
    shown = _capsim("card", "show", "inproc:visa-dpa")
    info = _capsim("card", "info", "--reader", "inproc:visa-dpa")
    assert shown.exit_code == info.exit_code == 0, shown.output + info.output
    assert shown.output == info.output
    assert "reader profile:  visa-dpa" in shown.output
    shown_json = json.loads(_capsim("card", "show", "--reader", "inproc:visa-dpa", "--json").output)
    assert shown_json["application"]["aid"] == "A0000000038002"


def test_card_show_of_a_card_file_is_unchanged(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    result = _capsim("card", "show", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pan"] == "541234******1234"


# ---------------------------------------------------------------- card info


def test_card_info_of_a_card_file_is_redacted_and_read_only(tmp_path: Path) -> None:
    path = _card_file(tmp_path)
    with load_card(path) as before:
        profile, ptc, atc = before.profile, before.state.ptc, before.state.atc
    result = _capsim("card", "info", str(path), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["reader"] == f"file:{path}"
    assert info["atr"] == profile.atr.hex().upper()
    assert info["application"] == {"aid": "A0000000048002", "label": "SecureCode Aut"}
    assert info["applications"][0]["status"] == "selected"
    assert info["reader_profile"]["name"] == "mc-cap"
    # a card file's template names its reader profile where the card format has the field
    named = getattr(profile, "reader_profile", "")
    assert info["reader_profile"]["chosen"] == ("template" if named else "aid")
    assert info["ipb"] == profile.ipb.hex().upper()
    assert info["iaf"] == profile.iaf.hex().upper()
    assert info["cdol1"] == profile.cdol1.hex().upper()
    assert info["cdol2"] == profile.cdol2.hex().upper()
    assert info["cdol1_entries"].startswith("9F02(6) 9F03(6) ")
    assert info["psn_present"] is True
    assert "psn" not in info  # the value only with --show-sensitive
    assert info["pan"] == "541234******1234"
    assert PAN not in result.output
    assert info["pin_tries"] == 3
    with load_card(path) as after:
        assert after.state.ptc == ptc  # no VERIFY
        assert after.state.atc == atc + 1  # GET PROCESSING OPTIONS only: no GENERATE AC
        assert after.state.history.to_dict() == before.state.history.to_dict()
    sensitive = json.loads(_capsim("card", "info", str(path), "--json", "--show-sensitive").output)
    assert sensitive["psn"] == "08"
    assert sensitive["pan"] == "541234******1234"  # the PAN stays masked


def test_card_info_text_is_one_paste_able_block(tmp_path: Path) -> None:
    result = _capsim("card", "info", str(_card_file(tmp_path)))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("capsim card info (capsim ")
    labels = ("ATR:", "application:", "reader profile:", "IPB (9F56):", "IAF (9F55):")
    labels += ("CDOL1 (8C):", "CDOL2 (8D):", "PSN (5F34):", "PAN (5A):", "PIN tries left:")
    for label in labels:
        assert any(line.startswith(label) for line in lines), label
    assert "PSN (5F34):      present (value hidden" in result.output
    assert "reader profile:  mc-cap (" in result.output


def _transcript(directory: Path) -> str:
    """A recorded discovery of a Visa DPA card, to replay (a card that names no template)."""
    link = TracingTransport(InProcessTransport(new_card("barclays", pan=PAN, imk_ac=IMK)), redact=False)
    with link:
        discover(link)
    path = directory / "barclays.txt"
    link.save(str(path), source="test")
    return str(path)


def test_card_info_says_why_the_reader_profile_was_chosen(tmp_path: Path) -> None:
    given = json.loads(
        _capsim("card", "info", "inproc:barclays", "--reader-profile", "visa-dpa", "--json").output
    )
    assert given["reader_profile"] == {
        "name": "visa-dpa",
        "chosen": "given",
        "why": "given with --reader-profile",
    }
    replayed = _capsim("card", "info", "--reader", f"replay:{_transcript(tmp_path)}", "--json")
    by_aid = json.loads(replayed.output)
    assert by_aid["reader_profile"] == {
        "name": "visa-dpa",
        "chosen": "aid",
        "why": "by AID: the built-in profile for A0000000038002",
    }
    assert [(a["aid"], a["status"]) for a in by_aid["applications"]] == [
        ("A0000000048002", "not found"),
        ("A0000000038002", "selected"),
    ]


def test_card_info_errors_are_one_line_with_their_exit_code() -> None:
    result = _capsim("card", "info", "--reader", "usb:1")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert result.output.count("capsim: error:") == 1
    assert "Traceback" not in result.output
