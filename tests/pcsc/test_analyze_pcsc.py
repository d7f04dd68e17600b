"""``capsim analyze --reader`` through pcscd against a served card: the read-only report equals the
template report wherever no GENERATE AC is needed, and the card is left as discovery leaves it
(GET PROCESSING OPTIONS: ATC + 1; no VERIFY: PIN tries unchanged)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from capsim.cards import new_card
from capsim.cli import main
from tests.analysis.test_analyze_reader import assert_equal_where_known, expected_unknown
from tests.pcsc.conftest import ServeFactory

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(90)]

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"


def test_read_only_analysis_over_pcsc_equals_the_template_and_only_moves_the_atc(serve: ServeFactory) -> None:
    card = new_card("natwest", pan=PAN, pin="8642", imk_ac=IMK)
    serve(card)
    atc, ptc = card.state.atc, card.state.ptc
    runner = CliRunner()
    result = runner.invoke(main, ["analyze", "--reader", "pcsc:0", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (card.state.atc, card.state.ptc) == (atc + 1, ptc)
    reader = json.loads(result.stdout)
    template = json.loads(runner.invoke(main, ["analyze", "--card", "natwest", "--json"]).stdout)
    assert set(reader["unknown"]) == expected_unknown(reader)
    assert_equal_where_known(reader, template)
    assert PAN not in result.output
