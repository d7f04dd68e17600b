"""The probe's pure parts: the Mann-Whitney U test, the check table and its documentation, the
adapters' protocol, and the privacyIDEA challenge parsing."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from capsim.errors import ValidationError
from capsim.probe import CHECKS, LibraryAdapter, VerifierAdapter, memory_verifier, select_checks
from capsim.probe.counters import wrong_codes
from capsim.probe.http import CapsimHttpAdapter, PrivacyIdeaAdapter, _challenge_of, shown_url
from capsim.probe.lab import luhn_pan
from capsim.probe.timing import mann_whitney_u

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def test_mann_whitney_u_matches_the_exact_figures_of_a_worked_example() -> None:
    # two groups of five, no ties; U of the first = pairs with x > y: 4>3, 6>3, 6>5, 7>3, 7>5
    xs, ys = [1.0, 2.0, 4.0, 6.0, 7.0], [3.0, 5.0, 8.0, 9.0, 10.0]
    u, p = mann_whitney_u(xs, ys)
    assert u == 5.0
    assert u == sum(1.0 for x in xs for y in ys if x > y) + 0.5 * sum(1.0 for x in xs for y in ys if x == y)
    # normal approximation by hand: mean 12.5, variance 25*11/12, continuity 0.5
    z = (abs(u - 12.5) - 0.5) / math.sqrt(25 * 11 / 12)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)))
    u2, p2 = mann_whitney_u(ys, xs)
    assert u + u2 == 25
    assert p2 == pytest.approx(p)


def test_mann_whitney_u_separates_shifted_samples_and_not_equal_ones() -> None:
    rng = random.Random(5)
    base = [rng.gauss(100, 5) for _ in range(60)]
    same = [rng.gauss(100, 5) for _ in range(60)]
    shifted = [rng.gauss(110, 5) for _ in range(60)]
    assert mann_whitney_u(base, shifted)[1] < 1e-6
    assert mann_whitney_u(base, same)[1] > 0.01
    assert mann_whitney_u([], [1.0]) == (0.0, 1.0)


def test_wrong_codes_are_distinct_well_formed_and_never_the_code() -> None:
    codes = list(wrong_codes("00000999"))
    assert len(codes) == len(set(codes)) == 999
    assert "00000999" not in codes
    assert all(re.fullmatch(r"[0-9]{8}", c) for c in codes)


def test_probe_pans_pass_the_luhn_check() -> None:
    pan = luhn_pan("999909123456789")
    digits = [int(d) for d in reversed(pan)]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    assert total % 10 == 0


def test_every_check_is_documented_with_its_sources() -> None:
    text = DOCS.read_text()
    section = text[text.index("### The checks") : text.index("**Timing.**")]
    for check in CHECKS:
        (row,) = [line for line in section.splitlines() if line.startswith(f"| `{check.name}` |")]
        documented = row.rstrip(" |").rsplit("|", 1)[1]
        for source in check.sources:
            short = "separation.py" if source == "capsim.verifier.separation" else source
            assert re.search(rf"\b{re.escape(short)}\b", documented), (check.name, source, documented)
    rows = [line for line in section.splitlines() if re.match(r"\| `[a-z][a-z-]+` \|", line)]
    assert len(rows) == len(CHECKS)


def test_select_checks_keeps_table_order_and_refuses_unknown_names() -> None:
    assert select_checks(["lockout-count", "cross-mode"]) == tuple(
        c for c in CHECKS if c.name in ("cross-mode", "lockout-count")
    )
    with pytest.raises(ValidationError, match="unknown check"):
        select_checks(["nope"])


def test_the_ready_adapters_implement_the_protocol() -> None:
    verifier, _keys, kid = memory_verifier()
    library = LibraryAdapter(verifier, issuer_key_id=kid)
    native = CapsimHttpAdapter("http://127.0.0.1:9", "k", issuer_key_id="iss-000000")
    pi = PrivacyIdeaAdapter("http://127.0.0.1:9", None, enroller=native)
    try:
        for adapter in (library, native, pi):
            assert isinstance(adapter, VerifierAdapter)
        assert pi.modes == frozenset({"respond"})
        assert not pi.request_ids
    finally:
        native.close()
        pi.close()


def test_privacyidea_challenges_are_read_from_attributes_or_the_message() -> None:
    assert _challenge_of({"multi_challenge": [{"attributes": {"challenge": "01234567"}}]}) == "01234567"
    assert _challenge_of({"message": "Enter 76543210 in your reader"}) == "76543210"
    assert (
        _challenge_of({"message": "Enter 123456789 in your reader"}) is None
    )  # nine digits: not a challenge
    assert _challenge_of({}) is None


def test_reports_never_show_url_credentials() -> None:
    assert shown_url("https://user:pw@pi.example:8443/x?token=s") == "https://pi.example:8443/x"
