"""``capsim analyze`` on the command line: templates, card files (read, never written), policies from
``--policy`` and from a real SQLite verifier database, ``--json``, and the HTML page, whose SVG parses
as XML and which refers to nothing outside itself."""

from __future__ import annotations

import html.parser
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from capsim.analysis import analyze
from capsim.cards import builtin_profile, new_card
from capsim.errors import ConfigError
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.service import Verifier
from capsim.verifier.sqlite import SqliteStore
from tests.cli.helpers import Cli

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5413339000001513"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


def test_natwest_text_names_both_collisions_and_secur_acces_not_the_currency(cli: Cli) -> None:
    natwest = cli.ok("analyze", "--card", "natwest").stdout
    assert "[medium] mode.sign-zero-equals-respond" in natwest
    assert "[medium] mode.currency-not-signed" in natwest
    assert "optimised-to-fail: S. Drimer, S. J. Murdoch, R. Anderson" in natwest
    secur = cli.ok("analyze", "--card", "secur-acces").stdout
    assert "mode.currency-not-signed" not in secur
    assert "mode.sign-zero-equals-respond" not in secur


def test_json_report_and_psd2_policy(cli: Cli) -> None:
    obj = cli.ok("analyze", "--card", "rabobank", "--policy", "psd2", "--json").json()
    assert obj["policy"]["name"] == "psd2"
    assert obj["policy"]["psd2"] is True
    assert obj["anatomy"]["bit_map"] == "PPP" + "T" * 7 + "A" * 16
    assert obj["guessing"]["per_lock_period"] == pytest.approx(10 / 2**16)
    ids = [f["id"] for f in obj["findings"]]
    assert ids[0] == "guessing.ceiling"  # highest severity first
    severities = [f["severity"] for f in obj["findings"]]
    order = ["high", "medium", "low", "info"]
    assert severities == sorted(severities, key=order.index)
    for finding in obj["findings"]:
        assert finding["sources"], finding
        assert all(s["citation"] for s in finding["sources"])


def test_policy_read_from_a_verifier_database_which_is_not_changed(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store = SqliteStore(db)
    try:
        Verifier(store, SoftwareProvider(), policy=VerifierPolicy(max_fail=3, atc_window=8, max_atc_gap=8))
    finally:
        store.close()
    before = db.read_bytes()
    obj = cli.ok("analyze", "--card", "natwest", "--db", str(db), "--json").json()
    assert obj["policy"]["name"] == "from --db"
    assert (obj["policy"]["max_fail"], obj["policy"]["atc_window"]) == (3, 8)
    assert obj["guessing"]["per_lock_period"] == pytest.approx(3 / 2**20)  # 3 × 1 × 1 / 2^20
    assert db.read_bytes() == before


def test_bad_inputs_are_one_line_errors(cli: Cli, tmp_path: Path) -> None:
    missing = cli("analyze", "--db", str(tmp_path / "nope.db"))
    assert missing.exit_code == 13
    assert "no verifier database" in missing.stderr
    assert "Traceback" not in missing.output
    both = cli("analyze", "--db", str(tmp_path / "nope.db"), "--policy", "psd2")
    assert both.exit_code == 13
    unknown = cli("analyze", "--card", "no-such-card", "--json")
    assert unknown.exit_code == 13
    assert json.loads(unknown.stdout)["error"]["type"] == "invalid_input"


def test_a_card_file_is_read_not_written_and_its_secrets_never_shown(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("natwest", pan=PAN, pin="4321", imk_ac=IMK, path=path).close()
    before = path.read_bytes()
    run = cli.ok("analyze", "--card", str(path), "--json")
    obj = run.json()
    assert obj["card_source"] == "card file"
    assert "currency-not-signed" in {f["id"].removeprefix("mode.") for f in obj["findings"]}
    assert path.read_bytes() == before
    assert PAN not in run.output
    assert "4321" not in json.dumps(obj["pin"])


# ------------------------------------------------------------------------------------------------
# The HTML page


class _Refs(html.parser.HTMLParser):
    """Every tag and every attribute that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "data", "action", "srcset", "poster") and value:
                self.refs.append(value)

    handle_startendtag = handle_starttag


def _page(cli: Cli, tmp_path: Path, card: str) -> str:
    pytest.importorskip("matplotlib")
    out = tmp_path / f"{card}.html"
    run = cli.ok("analyze", "--card", card, "--html", str(out))
    assert f"wrote {out}" in run.stderr
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize("card", ["natwest", "rabobank"])
def test_html_page_svg_parses_and_refers_to_nothing_outside(cli: Cli, tmp_path: Path, card: str) -> None:
    page = _page(cli, tmp_path, card)
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)
    assert len(svgs) == 1
    root = ET.fromstring(svgs[0])
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(list(root.iter())) > 50  # a real plot, not an empty frame
    refs = _Refs()
    refs.feed(page)
    assert refs.tags.isdisjoint({"link", "script", "img", "iframe", "object", "embed", "base"})
    assert all(ref.startswith("#") for ref in refs.refs), [r for r in refs.refs if not r.startswith("#")]
    assert "url(" not in page.replace("url(#", "")
    assert "@import" not in page
    # the only absolute URIs are XML namespace names, which nothing fetches
    for uri in re.findall(r"[a-z]+://[^\"'\s<>]*", page):
        assert uri in ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"), uri
    expected = {"natwest": "mode.currency-not-signed", "rabobank": "guessing.ceiling"}[card]
    assert expected in page
    assert "<script" not in page.lower()


def test_html_page_is_reproducible(cli: Cli, tmp_path: Path) -> None:
    first = _page(cli, tmp_path, "secur-acces")
    assert _page(cli, tmp_path, "secur-acces") == first


def test_html_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from capsim.analysis.html import render_html

    report = analyze(builtin_profile("natwest"))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an installation without the extra gives
    with pytest.raises(ConfigError, match=r"capsim\[analysis\]"):
        render_html(report)


def test_text_and_json_need_no_matplotlib(monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.ok("analyze", "--card", "visa-dpa", "--json").json()["card"] == "visa-dpa"



def test_the_readme_example_output_is_what_the_command_prints(cli: Cli) -> None:
    import shlex

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Analysing a deployment\n")
    command, output = re.compile(r"^```\n(.*?)^```$", re.M | re.S).findall(text, start)[:2]
    args = shlex.split(command.strip())
    assert args[:2] == ["capsim", "analyze"]
    printed = cli.ok(*args[1:]).stdout.splitlines()
    shown = output.splitlines()
    assert len(shown) >= 5
    for line in shown:
        assert line in printed, line
