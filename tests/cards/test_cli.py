"""``capsim card new|show|apdu|profiles`` (docs/card.md)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from capsim.cards import load_card
from capsim.cli import main
from capsim.cli._common import ExitCode
from capsim.storage import load_issuer_keys, read_card_file


def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_new_with_defaults_writes_card_and_issuer_keys(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    code, out, err = _run("card", "new", str(path))
    assert code == 0, err
    keys_path = tmp_path / "alice.issuer-keys.json"
    assert f"issuer keys written to {keys_path}" in out
    assert "PIN 1234: the default test PIN" in out
    for p in (path, keys_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    profile, state = read_card_file(path)
    keys = load_issuer_keys(keys_path)
    assert profile.kcv_imk_ac == keys.kcvs()["imk-ac"]
    assert profile.name == "secur-acces"
    assert state.pin == "1234"
    digits = [int(c) for c in profile.pan]
    checksum = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    assert checksum % 10 == 0  # Luhn-valid
    assert profile.pan not in out
    # refuses to overwrite either file
    code, _, err = _run("card", "new", str(path))
    assert code == ExitCode.STATE_FILE
    assert "already exists" in err
    other = tmp_path / "bob.json"
    (tmp_path / "bob.issuer-keys.json").write_text("{}")
    code, _, err = _run("card", "new", str(other))
    assert code == ExitCode.STATE_FILE
    assert not other.exists()


def test_new_with_pin_stdin_issuer_keys_and_cvn(tmp_path: Path) -> None:
    first = tmp_path / "a.json"
    assert _run("card", "new", str(first), "--template", "visa-dpa", "--pan", "4761739001010010")[0] == 0
    keys = tmp_path / "a.issuer-keys.json"
    second = tmp_path / "b.json"
    code, out, err = _run(
        "card", "new", str(second), "--template", "visa-dpa", "--pan", "4761739001010010", "--psn", "01",
        "--pin-stdin", "--issuer-keys", str(keys), "--cvn", "18", stdin="987654\n",
    )  # fmt: skip
    assert code == 0, err
    assert "issuer keys written" not in out
    assert "default test PIN" not in out
    profile, state = read_card_file(second)
    assert state.pin == "987654"
    assert int(profile.cvn) == 0x12
    assert profile.iad_template[2] == 0x12
    assert profile.kcv_imk_ac == read_card_file(first)[0].kcv_imk_ac
    assert profile.mk_ac != read_card_file(first)[0].mk_ac  # PSN 01


def test_new_rejects_bad_input_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    code, _, err = _run("card", "new", str(path), "--pan", "12AB")
    assert code == ExitCode.INVALID_INPUT
    assert "pan" in err
    code, _, _ = _run("card", "new", str(path), "--pin-stdin", stdin="12\n")
    assert code == ExitCode.INVALID_INPUT
    assert list(tmp_path.iterdir()) == []


def test_show_redacts_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _run("card", "new", str(path), "--pan", "5412345678981234")
    code, out, _ = _run("card", "show", str(path))
    assert code == 0
    assert "541234******1234" in out
    assert "5412345678981234" not in out
    assert "1234\n" not in out.replace("541234******1234\n", "")
    profile, _ = read_card_file(path)
    assert profile.mk_ac.hex().upper() not in out
    code, out, _ = _run("card", "show", str(path), "--json", "--show-sensitive")
    info = json.loads(out)
    assert info["pan"] == "5412345678981234"
    assert info["pin"] == "1234"
    assert info["icc_keys"]["mk-ac"] == profile.mk_ac.hex().upper()
    code, out, _ = _run("card", "show", str(path), "--json")
    assert "icc_keys" not in json.loads(out)


def test_apdu_trace(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _run("card", "new", str(path), "--template", "natwest", "--pan", "5412345678981234")
    code, out, err = _run(
        "card", "apdu", str(path), "00A4040007A000000004800200", "80A8 0000 0283 0000",
        "0020008008241234FFFFFFFFFF", "80CA9F1700", "00000000",
    )  # fmt: skip
    assert code == 0, err
    assert "Language Preference" in out
    assert "241234" not in out  # the PIN block is redacted
    assert "> 0020008008FFFFFFFFFFFFFFFF" in out  # the same redaction as --trace
    assert "    VERIFY" in out
    assert "9F170103" in out.replace(" ", "")
    assert "6D00" in out
    with load_card(path) as card:
        assert card.state.atc == 1
    code, _, err = _run("card", "apdu", str(path), "zz")
    assert code == ExitCode.INVALID_INPUT
    code, _, err = _run("card", "apdu", str(tmp_path / "missing.json"), "00A40400")
    assert code == ExitCode.STATE_FILE


def test_profiles_lists_every_builtin() -> None:
    code, out, _ = _run("card", "profiles")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["barclays", "natwest", "piv", "rabobank", "secur-acces", "visa-dpa"]


def test_new_psn_defaults_to_the_profile(tmp_path: Path) -> None:
    assert _run("card", "new", str(tmp_path / "r.json"), "--template", "rabobank")[0] == 0
    assert read_card_file(tmp_path / "r.json")[0].psn == "08"
    assert _run("card", "new", str(tmp_path / "s.json"))[0] == 0
    assert read_card_file(tmp_path / "s.json")[0].psn == "00"


def test_renamed_options_keep_their_old_names_for_one_release(tmp_path: Path) -> None:
    """`--profile` became `--template` (card templates) and `--reader-profile` (reader
    profiles), `card profiles` became `card templates`: the old names still work and warn."""
    from click.testing import CliRunner

    from capsim.cli import main

    runner = CliRunner(env={"CAPSIM_HOME": str(tmp_path / "home")})
    old = runner.invoke(main, ["card", "new", str(tmp_path / "a.json"), "--profile", "natwest"])
    assert old.exit_code == 0, old.output
    assert "--profile is deprecated; use --template" in old.stderr
    new = runner.invoke(main, ["card", "new", str(tmp_path / "b.json"), "--template", "natwest"])
    assert new.exit_code == 0
    assert "deprecated" not in new.stderr
    clash = runner.invoke(
        main, ["card", "new", str(tmp_path / "c.json"), "--template", "natwest", "--profile", "rabobank"]
    )
    assert clash.exit_code == 13
    assert not (tmp_path / "c.json").exists()
    listed = runner.invoke(main, ["card", "profiles"])
    assert listed.exit_code == 0
    assert "use 'card templates'" in listed.stderr
    assert listed.stdout == runner.invoke(main, ["card", "templates"]).stdout
    code = runner.invoke(
        main,
        ["code", "identify", "--reader", "inproc:natwest", "--profile", "mc-cap", "--pin-stdin"],
        input="1234\n",
    )
    assert code.exit_code == 0, code.output
    assert "--profile is deprecated; use --reader-profile" in code.stderr
