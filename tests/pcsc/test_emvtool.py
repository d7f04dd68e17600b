"""python-emv's ``emvtool`` (PyPI ``emv`` 1.0.14) gets CAP codes from a served capsim card.

emvtool forces T=0 (it fails with ``SCARD_E_PROTO_MISMATCH`` on a T=1-only ATR), so this is
also the check that the built-in templates offer T=0. It pins pyscard 2.0.0, so it lives in
its own venv, which ``scripts/test.sh`` prepares before pytest runs (pytest runs without a
network): ``$CAPSIM_EMVTOOL``, else ``.cache/emvtool-venv/bin/emvtool``. Without it the tests
skip, unless ``CAPSIM_REQUIRE_EMVTOOL=1`` (set by ``scripts/test.sh`` once the venv is ready),
where they fail.

What is asserted, for each card and mode (docs/reader.md, "Other CAP programs"): emvtool's
code is capsim's code under the ``visa-dpa`` reader profile (date ``010101``, no currency)
printed as an integer, without its leading zeros. On Mastercard CAP applications capsim's
``mc-cap`` profile (date ``000000``, as CAP readers send) gives a different code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsim.cards import load_card, new_card
from capsim.cli import main
from tests.pcsc.conftest import ServeFactory

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"
MC_CAP_AID = "A0000000048002"


def _emvtool() -> str:
    """The emvtool executable, or skip (fail when ``CAPSIM_REQUIRE_EMVTOOL=1``)."""
    explicit = os.environ.get("CAPSIM_EMVTOOL")
    path = Path(explicit) if explicit else ROOT / ".cache" / "emvtool-venv" / "bin" / "emvtool"
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    reason = (
        f"python-emv's emvtool not found at {path}: scripts/test.sh prepares it "
        "(python3 -m venv .cache/emvtool-venv && .cache/emvtool-venv/bin/pip install emv==1.0.14)"
    )
    if os.environ.get("CAPSIM_REQUIRE_EMVTOOL") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def emvtool() -> str:
    tool = _emvtool()
    version = subprocess.run([tool, "version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.stdout.strip() == "1.0.14", version.stdout + version.stderr
    return tool


def _emvtool_code(tool: str, *cap_args: str) -> str:
    result = subprocess.run(
        [tool, "-r", "0", "-p", "1234", "cap", *cap_args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def _capsim_code(card_file: Path, mode_args: list[str], *profile_args: str) -> dict[str, str]:
    args = ["code", *mode_args, "-r", f"file:{card_file}", "--pin-stdin", "--json", *profile_args]
    result = CliRunner().invoke(main, args, input="1234\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    value: dict[str, str] = json.loads(result.output[result.output.index("{") :])
    return value


MODES = {
    "identify": ([], ["identify"]),
    "respond": (["-c", "12345678"], ["respond", "-c", "12345678"]),
    "respond-short": (["-c", "1234"], ["respond", "-c", "1234"]),
    "sign": (["-c", "12345678", "-a", "12.34"], ["sign", "-c", "12345678", "-a", "12.34"]),
}

CASES = [
    # Visa DPA applications: capsim picks the visa-dpa profile by itself.
    *[("visa-dpa", mode) for mode in MODES],
    *[("barclays", mode) for mode in ("identify", "respond")],
    # Mastercard CAP applications: only visa-dpa's constants reproduce emvtool's codes. Sign is
    # left out on secur-acces, whose IAF asks for the currency emvtool never sends.
    *[("natwest", mode) for mode in MODES],
    *[("secur-acces", mode) for mode in ("identify", "respond", "respond-short")],
]


@pytest.mark.parametrize(("template", "mode"), CASES)
def test_emvtool_codes_are_capsim_visa_dpa_codes_without_leading_zeros(
    emvtool: str, serve: ServeFactory, tmp_path: Path, template: str, mode: str
) -> None:
    path = tmp_path / "card.json"
    new_card(template, pan=PAN, imk_ac=IMK, path=path).close()
    twins = {name: tmp_path / f"{name}.json" for name in ("visa-dpa", "mc-cap")}
    for twin in twins.values():
        shutil.copyfile(path, twin)
    emv_args, capsim_args = MODES[mode]
    with load_card(path) as card:
        serve(card)
        theirs = _emvtool_code(emvtool, *emv_args)
        atc = card.state.atc
    mastercard = template in ("natwest", "secur-acces")
    pinned = ["--reader-profile", "visa-dpa"] + (["--aid", MC_CAP_AID] if mastercard else [])
    ours = _capsim_code(twins["visa-dpa"], capsim_args, *pinned)
    assert ours["profile"] == "visa-dpa"
    assert ours["atc"] == atc  # the same transaction on the twin card
    assert theirs == str(int(ours["code"]))
    if mastercard:
        cap_reader = _capsim_code(twins["mc-cap"], capsim_args)
        assert cap_reader["profile"] == "mc-cap"
        assert cap_reader["code"] != ours["code"]  # date 000000, not 010101


def test_emvtool_drops_the_leading_zeros_capsim_prints(
    emvtool: str, serve: ServeFactory, tmp_path: Path
) -> None:
    """With these keys, secur-acces' first Identify code starts with a zero (found once, fixed data)."""
    path = tmp_path / "card.json"
    new_card("secur-acces", pan=PAN, imk_ac=IMK, path=path).close()
    twin = tmp_path / "twin.json"
    shutil.copyfile(path, twin)
    with load_card(path) as card:
        serve(card)
        theirs = _emvtool_code(emvtool)
    ours = _capsim_code(twin, ["identify"], "--reader-profile", "visa-dpa", "--aid", MC_CAP_AID)["code"]
    assert ours == "02733122"
    assert theirs == "2733122"
