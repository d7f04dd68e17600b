"""``capsim analyze --reader``: a card analysed from what discovery reads, over the in-process,
card-file and replay transports. The read-only report equals the template-based one on every field
that needs no GENERATE AC, names the rest as unknown, and leaves the card as discovery alone does
(ATC + 1, PIN tries untouched); ``--allow-state-changes`` learns the CVN and IAD variants (then the
guessing figures equal the template's), confirms the collisions on the card, says its cost first and
asks; ``--probe-pin`` measures VERIFY."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capsim.analysis import analyze
from capsim.cards import BUILTIN_PROFILES, builtin_profile, load_card, new_card
from capsim.reader import discover
from capsim.transcript import write_transcript
from capsim.transports import open_transport
from tests.cli.helpers import Cli

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5413339000001513"
PIN = "8642"
TEMPLATES = sorted(n for n in BUILTIN_PROFILES if builtin_profile(n).ipb)

#: What a read-only run cannot know (docs/analysis.md, "--reader"): the figures that need V
#: (the IAD layout), the CVN, the emulated confirmations, the VERIFY answers, the no-PIN code and
#: the PIN try limit.
V_FIGURES = {
    "variants", "per_guess", "per_lock_period", "first_code_per_guess", "after_script_per_guess",
    "after_script_variants", "per_year", "per_year_with_daily_login", "until_permanent_block",
}  # fmt: skip
#: How a pair was checked and whether V is known: differ by construction, not by measurement.
HOW_CHECKED = {"confirmation", "confirmed_on_card", "on_card_evidence", "variants_known", "variants_at_most"}
NOT_COMPARED = {"card", "card_source", "unknown", "state_changes", "findings"}


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves; list items with an ``id`` are keyed by it."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    if isinstance(value, list) and all(isinstance(i, dict) and "id" in i for i in value) and value:
        out = {}
        for item in value:
            out.update(flatten(item, f"{prefix}{item['id']}."))
        return out
    return {prefix[:-1]: value}


def expected_unknown(obj: dict[str, Any]) -> set[str]:
    rows = [r["id"] for r in obj["mode_confusion"]]
    return (
        {f"guessing.{f}" for f in V_FIGURES}
        | {"guessing.limits.nist-per-guess", "guessing.limits.v5-ceiling", "card_data.cvn"}
        | {f"mode_confusion.{r}.confirmed_by_emulator" for r in rows}
        | {"pin.no_pin_code", "pin.wrong_pin_sw", "pin.right_pin_sw", "pin.reveals", "pin.pin_try_limit"}
    )


def _covered(path: str, unknown: set[str]) -> bool:
    return any(path == u or path.startswith(u + ".") for u in unknown)


def assert_equal_where_known(reader: dict[str, Any], template: dict[str, Any]) -> None:
    unknown = set(reader["unknown"])
    mine, theirs = flatten(reader), flatten(template)
    compared = 0
    for path, value in mine.items():
        head = path.partition(".")[0]
        if head in NOT_COMPARED or path.rsplit(".", 1)[-1] in HOW_CHECKED:
            continue
        if _covered(path, unknown) and path.startswith("guessing.limits."):
            # a V-dependent limit: decided only when its lower or upper bound decides it
            if (path.endswith(".ok") and value is not None) or not path.endswith((".ok", ".value")):
                assert value == theirs[path], path
            continue
        if _covered(path, unknown):
            assert value is None, path  # unknown is said as unknown, never guessed
            continue
        assert path in theirs, path
        assert value == theirs[path], (path, value, theirs[path])
        compared += 1
    assert compared > 100

    # the findings that need no GENERATE AC: the mode confusions and freshness
    def part(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            f["id"]: (f["severity"], f["title"], f["sources"], f["changes"])
            for f in obj["findings"]
            if f["id"].startswith(("mode.", "freshness."))
        }

    assert part(reader) == part(template)
    assert part(reader)


@pytest.mark.parametrize("name", TEMPLATES)
def test_read_only_report_equals_the_template_report_where_no_generate_ac_is_needed(
    cli: Cli, name: str
) -> None:
    reader = cli.ok("analyze", "--reader", f"inproc:{name}", "--json").json()
    template = cli.ok("analyze", "--card", name, "--json").json()
    assert reader["card_source"] == "reader"
    assert set(reader["unknown"]) == expected_unknown(reader)
    assert template["unknown"] == []
    assert_equal_where_known(reader, template)
    ids = {f["id"] for f in reader["findings"]}
    assert "analysis.not-measured" in ids
    assert not {i for i in ids if i.startswith("pin.")}  # nothing said about what was not measured
    assert all(r["confirmation"] == "derived, not confirmed" for r in reader["mode_confusion"])
    assert reader["state_changes"] is None


def test_natwest_read_only_names_its_collisions_as_derived_and_secur_acces_not_the_currency(cli: Cli) -> None:
    natwest = cli.ok("analyze", "--reader", "inproc:natwest").stdout
    assert "[medium] mode.sign-zero-equals-respond" in natwest
    assert "[medium] mode.currency-not-signed" in natwest
    currency = "sign(12345678, 15.00 EUR) vs sign(12345678, 15.00 GBP): COLLIDES, derived, not confirmed"
    assert currency in natwest
    assert "not confirmed" in natwest
    assert "V unknown" in natwest
    assert "VERIFY answers: not measured" in natwest
    secur = cli.ok("analyze", "--reader", "inproc:secur-acces").stdout
    assert "mode.currency-not-signed" not in secur


def test_a_read_only_run_changes_the_card_only_as_discovery_does(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("natwest", pan=PAN, pin=PIN, imk_ac=IMK, path=path).close()
    card = load_card(path)
    atc, ptc = card.state.atc, card.state.ptc
    card.close()
    run = cli.ok("analyze", "--reader", f"file:{path}", "--json")
    after = load_card(path)
    assert (after.state.atc, after.state.ptc) == (atc + 1, ptc)  # GET PROCESSING OPTIONS only
    after.close()
    assert PAN not in run.output
    assert PAN[-4:] not in run.stdout


def test_replay_of_a_recorded_discovery_gives_the_in_process_report(cli: Cli, tmp_path: Path) -> None:
    with open_transport("inproc:natwest") as link:
        summary = discover(link)
    path = tmp_path / "natwest-discovery.txt"
    write_transcript(path, summary.transcript, source="capsim discover inproc:natwest")
    replayed = cli.ok("analyze", "--reader", f"replay:{path}", "--json").json()
    live = cli.ok("analyze", "--reader", "inproc:natwest", "--json").json()
    assert replayed == live


def test_state_changes_learn_the_iad_variants_and_confirm_the_pairs_on_the_card(
    cli: Cli, tmp_path: Path
) -> None:
    path = tmp_path / "card.json"
    new_card("natwest", pan=PAN, pin=PIN, imk_ac=IMK, path=path).close()
    atc = builtin_profile("natwest").initial_atc
    run = cli.ok(
        "analyze", "--reader", f"file:{path}", "--allow-state-changes", "--pin-stdin", "--yes", "--json",
        stdin=PIN + "\n",
    )  # fmt: skip
    obj = run.json()
    template = cli.ok("analyze", "--card", "natwest", "--json").json()
    assert obj["guessing"] == template["guessing"]  # V known now: every figure as the template's
    assert obj["card_data"]["cvn"] == 0x0A
    colliding = [r for r in obj["mode_confusion"] if r["collides"] and not r["control"]]
    assert len(colliding) == 4
    assert all(r["confirmation"] == "card" and r["confirmed_on_card"] for r in colliding)
    assert "this runs 9 GENERATE AC on the card (its ATC goes up by 9)" in run.stderr
    sc = obj["state_changes"]
    assert (sc["generate_acs"], sc["atcs"], sc["pin_tries_spent"]) == (9, 9, 0)
    after = load_card(path)
    assert after.state.atc == atc + 1 + 9  # discovery, then the runs
    assert after.state.ptc == 3
    after.close()
    assert PIN not in run.output
    assert obj["pin"]["reveals"] is None  # no VERIFY probe without --probe-pin


def test_probe_pin_spends_a_try_says_so_and_gives_it_back(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("secur-acces", pan=PAN, pin=PIN, imk_ac=IMK, path=path).close()
    run = cli.ok(
        "analyze", "--reader", f"file:{path}", "--allow-state-changes", "--probe-pin", "--pin-stdin", "--yes",
        "--json", stdin=PIN + "\n",
    )  # fmt: skip
    assert "spends 1 PIN try" in run.stderr
    obj = run.json()
    pin = obj["pin"]
    assert (pin["wrong_pin_sw"], pin["right_pin_sw"], pin["reveals"]) == ("63C2", "9000", True)
    assert "pin.verify-oracle" in {f["id"] for f in obj["findings"]}
    after = load_card(path)
    assert after.state.ptc == 3  # the next right PIN gave the try back
    after.close()


def test_state_changes_ask_first_and_change_nothing_when_not_confirmed(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    new_card("natwest", pan=PAN, pin=PIN, imk_ac=IMK, path=path).close()
    refused = cli(
        "analyze", "--reader", f"file:{path}", "--allow-state-changes", "--pin-stdin", stdin=PIN + "\n"
    )
    assert refused.exit_code == 13
    assert "this runs 9 GENERATE AC" in refused.stderr
    assert "--yes" in refused.stderr
    after = load_card(path)
    assert (after.state.atc, after.state.ptc) == (builtin_profile("natwest").initial_atc + 1, 3)  # discovery
    after.close()
    for args in (
        ("--reader", "inproc:natwest", "--probe-pin"),
        ("--card", "natwest", "--allow-state-changes"),
        ("--card", "natwest", "--reader", "inproc:natwest"),
        ("--reader", "not-a-spec"),
    ):
        bad = cli("analyze", *args)
        assert bad.exit_code == 13, (args, bad.output)
    assert cli("analyze", "--reader", "inproc:natwest", "--pin", PIN).exit_code == 2  # never an option


@pytest.mark.parametrize("name", TEMPLATES)
def test_learned_variants_equal_the_template_variants(name: str) -> None:
    """The library path: one GENERATE AC's IAD gives the variants an enrolment stores."""
    from capsim.analysis.card import describe_summary
    from capsim.analysis.oncard import plan, run_plan
    from capsim.analysis.report import analyze_card
    from capsim.profiles import get_reader_profile

    with open_transport(f"inproc:{name}") as link:
        card = describe_summary(discover(link), name=name)
        todo = plan(card, probe_pin=False)
        on_card = run_plan(link, card, get_reader_profile(card.reader_profile), todo, "1234")
    learned = analyze_card(on_card.card, on_card=on_card)
    template = analyze(builtin_profile(name))
    assert learned.guessing.to_dict() == template.guessing.to_dict()
    assert json.dumps(learned.to_dict()["anatomy"]) == json.dumps(template.to_dict()["anatomy"])
    assert all(p.equal for p in on_card.pairs.values())


class CountingIadCard:
    """A natwest card that puts a per-transaction value in its IAD (its CVR's last byte) from the
    third ARQC on: what it MACs then differs from run to run, so no pair is the same at one ATC."""

    def __init__(self) -> None:
        self.inner = new_card("natwest", pan=PAN, pin="1234", imk_ac=IMK)
        self.arqcs = 0

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    def power_on(self) -> bytes:
        return self.inner.power_on()

    def reset(self) -> bytes:
        return self.inner.reset()

    def power_off(self) -> None:
        self.inner.power_off()

    def process(self, apdu: bytes) -> bytes:
        response = self.inner.process(apdu)
        if apdu[1] == 0xAE and apdu[2] & 0xC0 == 0x80 and response[-2:] == b"\x90\x00":
            self.arqcs += 1
            if self.arqcs >= 3 and self.arqcs % 2 == 1:  # the second run of every pair
                response = response[:-3] + bytes([response[-3] ^ 0x01]) + response[-2:]
        return response


def test_a_card_whose_iad_differs_between_the_runs_is_reported_as_disagreeing() -> None:
    from capsim.analysis import render_text
    from capsim.analysis.card import describe_summary
    from capsim.analysis.oncard import plan, run_plan
    from capsim.analysis.report import analyze_card
    from capsim.profiles import get_reader_profile
    from capsim.transports.inprocess import InProcessTransport

    link = InProcessTransport(CountingIadCard())  # type: ignore[arg-type]
    link.connect()
    card = describe_summary(discover(link), name="counting")
    on_card = run_plan(
        link, card, get_reader_profile(card.reader_profile), plan(card, probe_pin=False), "1234"
    )
    link.disconnect()
    assert on_card.pairs
    for result in on_card.pairs.values():
        assert not result.equal
        assert result.evidence["generate_ac_data_equal"] is True
        assert result.evidence["iad_equal"] is False
    report = analyze_card(on_card.card, on_card=on_card)
    mismatches = [f for f in report.findings if f.id == "analysis.model-mismatch"]
    assert len(mismatches) == len(on_card.pairs)
    assert "the card DISAGREES" in render_text(report)
    assert not [f for f in report.findings if f.id.startswith("mode.")]


def test_the_read_only_html_page_says_what_was_not_measured(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import xml.etree.ElementTree as ET

    out = tmp_path / "reader.html"
    cli.ok("analyze", "--reader", "inproc:natwest", "--html", str(out))
    page = out.read_text(encoding="utf-8")
    assert "derived, not confirmed" in page
    assert "VERIFY answers: not measured." in page
    assert "V unknown (1 to 2): figures per variant" in page
    (svg,) = [page[page.index("<svg") : page.index("</svg>") + 6]]
    assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"


# Worked out by hand, V unknown (1 to history_variants = 2), default policy (max_fail 5, C = 1):
# rabobank  a = 16: per guess 2^-16 > 2^-20 already at V = 1 (NIST broken for sure); per lock period
#           5 / 2^16 = 7.6e-5 at V = 1, 1.5e-4 at V = 2: the 1e-4 ceiling depends on V (unknown).
# natwest   a = 20: per guess 2^-20 at V = 1 (kept), 2^-19 at V = 2 (broken): unknown; per lock period
#           at most 5 * 2 / 2^20 = 9.5e-6 <= 1e-4: kept for sure.
@pytest.mark.parametrize(
    ("name", "nist", "v5", "present", "absent"),
    [
        ("rabobank", False, None, {"guessing.short-code", "guessing.variants-unknown"}, {"guessing.ceiling"}),
        ("natwest", None, True, {"guessing.variants-unknown"}, {"guessing.short-code", "guessing.bound"}),
    ],
)
def test_limits_that_depend_on_v_are_decided_only_by_a_bound_that_decides_them(
    cli: Cli, name: str, nist: bool | None, v5: bool | None, present: set[str], absent: set[str]
) -> None:
    obj = cli.ok("analyze", "--reader", f"inproc:{name}", "--json").json()
    limits = {lim["id"]: lim["ok"] for lim in obj["guessing"]["limits"]}
    assert (limits["nist-per-guess"], limits["v5-ceiling"]) == (nist, v5)
    ids = {f["id"] for f in obj["findings"]}
    assert present <= ids
    assert not absent & ids
    assert obj["guessing"]["per_guess_per_variant"] == 2.0 ** -{"rabobank": 16, "natwest": 20}[name]
