"""``capsim.analysis``: every built-in template's report against figures worked out by hand here,
the published mode confusions on the cards that have them (and not on those that do not),
confirmed on emulated cards, and the PIN experiments against a throwaway verifier."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from capsim.analysis import Severity, analyze, render_text
from capsim.analysis.emulate import confirm, no_pin_code, throwaway_profile, verify_answers
from capsim.analysis.guessing import attack_schedule, guesses_by
from capsim.cards import BUILTIN_PROFILES, builtin_profile
from capsim.profiles import get_reader_profile
from capsim.verifier.engine import MatchRequest
from capsim.verifier.enrolment import credential_profile_from_card
from capsim.verifier.model import OperationMode
from capsim.verifier.policy import VerifierPolicy, ipb_layout

# Worked out by hand from each template's IPB (9F56) and IAF (9F55), D = [PSN] CID ATC(2) AC(8) IAD:
#
# secur-acces  IPB 00 001F 0000000000 0FFFFF 000000000004, IAF 80: ATC low byte 1F = 5 bits, AC bytes
#              6-8 0F FF FF = 4 + 8 + 8 = 20 bits, IAD byte 6 b3 = 1 bit (M/Chip CVR byte 4 b3, "last
#              online transaction not completed": it tells the two likeliest history variants apart,
#              so V = 1).
# natwest      IPB 00 001F 0000000000 0FFFFF 00000000008000, IAF A0: 5 ATC bits, 20 AC bits, IAD byte 6
#              b8 = 1 bit (VIS CVR byte 2 b8, the same history flag: V = 1).
# visa-dpa,    IPB 80 00FF 0000000000 01FFFF 00..., IAF A0: CID b8 = 1 bit, ATC low byte = 8 bits, AC
# barclays     1 + 8 + 8 = 17 bits, no IAD bit (V = policy.history_variants = 2).
# rabobank     IPB 07 00 007F FFFF 0000..., IAF C0 (PSN leads D): PSN 3 bits, ATC low byte 7F = 7 bits,
#              AC bytes 1-2 = 16 bits, no IAD bit (V = 2).
#
# With the default policy (W = 16) every card discloses at least 5 low ATC bits, so C = ceil(16 / 2^k) = 1.
# Per guess: C * V / 2^a; per lock period: 5 times that.
# A year of guessing that never blocks the card (max_fail 5, 900 s locks, 3 locks within 86 400 s
# block): a window of 2 locks every 86 401 s; windows start at k * 86 401 <= 31 536 000 for k = 0..364,
# both locks inside: 365 * 2 * 5 = 3650 guesses. Until the permanent block: 3 * 5 = 15 guesses.
#: name -> (PSN, CID, ATC, AC, IAD bits), V, bit map (most significant first)
HAND = {
    "secur-acces": ((0, 0, 5, 20, 1), 1, "T" * 5 + "A" * 20 + "I"),
    "natwest": ((0, 0, 5, 20, 1), 1, "T" * 5 + "A" * 20 + "I"),
    "visa-dpa": ((0, 1, 8, 17, 0), 2, "C" + "T" * 8 + "A" * 17),
    "barclays": ((0, 1, 8, 17, 0), 2, "C" + "T" * 8 + "A" * 17),
    "rabobank": ((3, 0, 7, 16, 0), 2, "P" * 3 + "T" * 7 + "A" * 16),
}
YEAR_GUESSES = 3650
UNTIL_BLOCK = 15


def test_every_builtin_template_is_worked_out_by_hand() -> None:
    assert set(HAND) == set(BUILTIN_PROFILES)


@pytest.mark.parametrize("name", sorted(HAND))
def test_template_report_matches_the_hand_figures(name: str) -> None:
    bits, v, bit_map = HAND[name]
    ac = bits[3]
    report = analyze(builtin_profile(name))
    a, g = report.anatomy, report.guessing
    assert (a.psn_bits, a.cid_bits, a.atc_bits, a.ac_bits, a.iad_bits) == bits
    assert a.total_bits == 26
    assert a.bit_map() == bit_map
    assert (g.bound.candidates, g.bound.variants, g.bound.ac_bits) == (1, v, ac)
    per_guess = v / 2**ac
    assert g.per_guess == pytest.approx(per_guess, rel=1e-12)
    assert g.per_lock_period == pytest.approx(5 * per_guess, rel=1e-12)
    assert g.guesses_per_year == YEAR_GUESSES
    assert g.per_year == pytest.approx(YEAR_GUESSES * per_guess, rel=1e-12)
    assert g.guesses_until_block == UNTIL_BLOCK
    assert g.until_block == pytest.approx(UNTIL_BLOCK * per_guess, rel=1e-12)
    # with a daily login the attacker gets max_fail - 1 = 4 more guesses a day without a lock
    assert g.guesses_per_year_with_logins == YEAR_GUESSES + 4 * 365


def test_the_anatomy_and_the_verifier_bound_read_the_same_layout() -> None:
    for name in BUILTIN_PROFILES:
        cred = credential_profile_from_card(builtin_profile(name))
        report = analyze(builtin_profile(name))
        assert ipb_layout(cred) == (report.anatomy.atc_bits, report.anatomy.ac_bits, report.anatomy.iad_bits)


def test_rabobank_breaks_the_default_ceiling_and_nist_per_guess() -> None:
    # 5 * 1 * 2 / 2^16 = 1.53e-4 > 1e-4; 2 / 2^16 = 3.05e-5 > 2^-20
    ids = {f.id: f.severity for f in analyze(builtin_profile("rabobank")).findings}
    assert ids["guessing.ceiling"] is Severity.HIGH
    assert ids["guessing.short-code"] is Severity.MEDIUM
    secur = {f.id for f in analyze(builtin_profile("secur-acces")).findings}
    assert "guessing.ceiling" not in secur
    assert "guessing.short-code" not in secur
    assert "guessing.bound" in secur


def test_a_wider_window_and_fewer_atc_bits_multiply_the_candidates() -> None:
    # visa-dpa discloses 8 ATC bits: W = 1024 gives C = 1024 / 256 = 4; P = 5 * 4 * 2 / 2^17
    wide = VerifierPolicy(atc_window=1024, sync_window=1024, max_atc_gap=16, false_accept_ceiling=0.9)
    report = analyze(builtin_profile("visa-dpa"), policy=wide)
    assert report.guessing.bound.candidates == 4
    assert report.guessing.per_lock_period == pytest.approx(40 / 2**17)


def test_policy_limits_are_reported() -> None:
    lax = VerifierPolicy(max_fail=10, max_attempts_per_operation=3, operation_ttl_s=600)
    report = analyze(builtin_profile("secur-acces"), policy=lax)
    failed = {lim.name for lim in report.guessing.limits if not lim.ok}
    assert any("4(3)(b)" in n for n in failed)
    assert any("4(3)(d)" in n for n in failed)
    assert "guessing.limits" in {f.id for f in report.findings}
    strict = analyze(builtin_profile("secur-acces"), policy=VerifierPolicy.psd2_profile())
    assert all(lim.ok for lim in strict.guessing.limits)


def test_attack_schedule_follows_the_lock_and_escalation_rules() -> None:
    # every lock blocks for good: the attacker stays below max_fail in all
    assert attack_schedule(VerifierPolicy(escalate_after=1), 10**7) == ((0, 4),)
    # locks longer than the escalation period: every lock opens a new window, never a block
    long_locks = VerifierPolicy(lock_duration_s=100_000, escalation_period_s=50_000)
    assert attack_schedule(long_locks, 300_000) == ((0, 5), (100_000, 5), (200_000, 5), (300_000, 5))
    schedule = attack_schedule(VerifierPolicy())
    assert guesses_by(schedule, 0) == 5
    assert guesses_by(schedule, 899) == 5
    assert guesses_by(schedule, 900) == 10
    assert guesses_by(schedule, 86_400) == 10  # the third lock would block
    assert guesses_by(schedule, 86_401) == 15


# ------------------------------------------------------------------------------------------------
# Mode confusion


def _rows(name: str) -> dict[str, dict[str, object]]:
    return {row["id"]: row for row in analyze(builtin_profile(name)).confusion}


def test_natwest_reports_sign_zero_respond_and_currency_collisions() -> None:
    report = analyze(builtin_profile("natwest"))  # IAF A0: amount signed, currency not
    ids = {f.id for f in report.findings}
    assert "mode.sign-zero-equals-respond" in ids
    assert "mode.currency-not-signed" in ids
    assert "mode.amount-not-signed" not in ids
    text = render_text(report)
    assert "respond(12345678) vs sign(12345678, 0.00 EUR): COLLIDES, confirmed" in text
    assert "sign(12345678, 15.00 EUR) vs sign(12345678, 15.00 GBP): COLLIDES, confirmed" in text


def test_secur_acces_does_not_report_the_currency_collision() -> None:
    report = analyze(builtin_profile("secur-acces"))  # IAF 80: amount and currency signed
    ids = {f.id for f in report.findings}
    assert "mode.currency-not-signed" not in ids
    assert "mode.sign-zero-equals-respond" not in ids  # 0.00 EUR still signs the currency 0978
    rows = _rows("secur-acces")
    assert rows["currency-not-signed"]["collides"] is False
    assert rows["currency-not-signed"]["confirmed_by_emulator"] is False
    # no other mode reaches a secur-acces Sign(12345678, 0.00 EUR); on natwest Respond(12345678) does
    assert rows["sign-zero-equals-respond"]["second_reachable_from"] == []
    assert _rows("natwest")["sign-zero-equals-respond"]["second_reachable_from"] == ["respond"]


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
def test_derivation_and_emulated_cards_agree_and_controls_differ(name: str) -> None:
    rows = _rows(name)
    for row in rows.values():
        assert row["collides"] == row["confirmed_by_emulator"], row
        if row["control"]:
            assert row["collides"] is False, row
    # Respond 00000000 is the Identify input on every template (UN 0 either way)
    assert rows["respond-zero-equals-identify"]["collides"] is True
    assert "analysis.model-mismatch" not in {f.id for f in analyze(builtin_profile(name)).findings}


def test_emulated_twins_tell_a_currency_apart_only_where_it_is_signed() -> None:
    eur = MatchRequest(mode=OperationMode.SIGN, challenge="12345678", amount_minor=1500, currency="EUR")
    gbp = replace(eur, currency="GBP")
    mc = get_reader_profile("mc-cap")
    assert confirm(throwaway_profile(builtin_profile("natwest")), mc, eur, gbp) is True
    assert confirm(throwaway_profile(builtin_profile("secur-acces")), mc, eur, gbp) is False


def test_a_card_without_amount_signing_reports_sign_equals_respond() -> None:
    # the natwest design with IAF b8 cleared: the reader ignores amount and currency
    natwest = builtin_profile("natwest")
    record = natwest.records[0]
    data = record.data.replace(bytes.fromhex("9F5501A0"), bytes.fromhex("9F550100"))
    plain = replace(natwest, records=(replace(record, data=data),))
    assert plain.iaf == b"\x00"
    report = analyze(plain)
    ids = {f.id: f.severity for f in report.findings}
    assert ids["mode.sign-equals-respond"] is Severity.HIGH
    rows = {row["id"]: row for row in report.confusion}
    assert rows["sign-equals-respond"]["confirmed_by_emulator"] is True


# ------------------------------------------------------------------------------------------------
# Freshness and PIN handling


def test_freshness_identify_and_tds_ahead_by_the_window() -> None:
    report = analyze(builtin_profile("secur-acces"), policy=VerifierPolicy(atc_window=8, max_atc_gap=8))
    modes = {m.mode: m for m in report.freshness.modes}
    assert (modes["identify"].precomputable, modes["identify"].ahead_atcs) == (True, 8)
    assert (modes["tds"].precomputable, modes["tds"].ahead_atcs) == (True, 8)
    assert modes["respond"].precomputable is False
    assert report.freshness.challenge_bits == pytest.approx(math.log2(10**8 - 1))
    found = {f.id: f.severity for f in report.findings}
    assert found["freshness.identify-ahead"] is Severity.MEDIUM
    no_login = analyze(
        builtin_profile("secur-acces"), policy=VerifierPolicy(allow_identify_without_operation=False)
    )
    assert {f.id: f.severity for f in no_login.findings}["freshness.identify-ahead"] is Severity.LOW


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
def test_verify_answers_reveal_the_pin_and_no_pin_codes_are_rejected(name: str) -> None:
    card = throwaway_profile(builtin_profile(name))
    reader = get_reader_profile(card.reader_profile)
    answers = verify_answers(card, reader)
    assert answers["wrong_pin_sw"] == "63C2"  # 3 tries, one spent
    assert answers["right_pin_sw"] == "9000"
    assert answers["reveals"] is True
    probe = no_pin_code(card, reader, VerifierPolicy.psd2_profile())
    assert probe == {"control_accepted": True, "cvr_says_no_pin": True, "accepted": False}


def test_no_report_carries_the_test_keys_or_pan() -> None:
    import json

    from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN

    for name in BUILTIN_PROFILES:
        report = analyze(builtin_profile(name))
        blob = json.dumps(report.to_dict()) + render_text(report)
        assert TEST_PAN not in blob
        assert TEST_IMK_AC.hex().upper() not in blob.upper()
