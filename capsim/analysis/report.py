"""The analysis of one deployment: card template × reader profile × verifier policy → findings.

Theory of operation
-------------------
1. **Inputs** (:func:`analyze`): a card's design (:class:`capsim.cards.CardProfile`: a
   built-in template or a card file's profile; keys are never used), a reader profile
   (default: the one the card template names, :attr:`capsim.cards.CardProfile.reader_profile`,
   which defaults to the one its AID selects) and a
   :class:`~capsim.verifier.policy.VerifierPolicy`. The verifier's view of the card is
   :func:`capsim.verifier.enrolment.credential_profile_from_card`, exactly what an enrolment
   stores.
2. **Sections**, one module each: code anatomy (:mod:`~capsim.analysis.anatomy`), guessing
   (:mod:`~capsim.analysis.guessing`), mode confusion (:mod:`~capsim.analysis.confusion`,
   confirmed on emulated cards), freshness (:mod:`~capsim.analysis.freshness`) and PIN
   handling (:mod:`~capsim.analysis.emulate`).
3. **Findings** (:mod:`capsim.analysis.findings`) are derived from the sections, pure
   functions of their figures, sorted by severity (highest first) then identifier.
4. :class:`Report` is plain data: :meth:`Report.to_dict` for ``--json``, :func:`render_text`
   for the terminal, :mod:`capsim.analysis.html` for the page. No secret is in any of them:
   the experiments run on capsim's public test keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capsim.analysis import emulate
from capsim.analysis.anatomy import Anatomy, code_anatomy
from capsim.analysis.confusion import confusion_cases, derive, describe
from capsim.analysis.findings import findings_for
from capsim.analysis.freshness import Freshness, freshness
from capsim.analysis.guessing import Guessing, guessing
from capsim.analysis.model import SOURCE_TEXT, Finding, Source
from capsim.cards import CardProfile
from capsim.errors import ValidationError
from capsim.profiles import ReaderProfile, get_reader_profile
from capsim.verifier.enrolment import credential_profile_from_card
from capsim.verifier.policy import VerifierPolicy

__all__ = ["Report", "analyze", "render_text"]


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything one analysis found (module docstring, step 4)."""

    card: str
    card_source: str
    reader_profile: str
    policy_name: str
    policy: VerifierPolicy
    anatomy: Anatomy
    guessing: Guessing
    confusion: tuple[dict[str, Any], ...]
    freshness: Freshness
    pin: dict[str, Any]
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``capsim analyze --json``)."""
        return {
            "card": self.card,
            "card_source": self.card_source,
            "reader_profile": self.reader_profile,
            "policy": {"name": self.policy_name, **_policy_fields(self.policy)},
            "anatomy": self.anatomy.to_dict(),
            "guessing": self.guessing.to_dict(),
            "mode_confusion": list(self.confusion),
            "freshness": self.freshness.to_dict(),
            "pin": self.pin,
            "findings": [f.to_dict() for f in self.findings],
        }


def _policy_fields(policy: VerifierPolicy) -> dict[str, Any]:
    keys = (
        "max_fail", "lock_duration_s", "escalate_after", "escalation_period_s", "atc_window",
        "max_atc_gap", "allow_identify_without_operation", "history_variants", "auto_resync",
        "sync_window", "operation_ttl_s", "false_accept_ceiling", "psd2",
    )  # fmt: skip
    return {k: getattr(policy, k) for k in keys}


def _reader_for(card: CardProfile, reader: ReaderProfile | str | None) -> ReaderProfile:
    if isinstance(reader, ReaderProfile):
        return reader
    if reader is not None:
        return get_reader_profile(reader)
    return get_reader_profile(card.reader_profile)  # the template's (else the AID's, CardProfile)


def analyze(
    card: CardProfile,
    *,
    reader: ReaderProfile | str | None = None,
    policy: VerifierPolicy | None = None,
    card_source: str = "template",
    policy_name: str = "default",
) -> Report:
    """Analyse one deployment (module docstring).

    Raises
    ------
    ValidationError
        The card has no IPB (the Belgian code function is not analysed yet) or a reader
        profile name is unknown.
    """
    if not isinstance(card, CardProfile):
        raise ValidationError("card: expected a capsim.cards.CardProfile")
    if not card.ipb:
        raise ValidationError("card: this card has no IPB (9F56); only the IPB code function is analysed")
    policy = policy if policy is not None else VerifierPolicy()
    reader_profile = _reader_for(card, reader)
    cred = credential_profile_from_card(card, reader_profile=reader_profile.name)
    twin = emulate.throwaway_profile(card)
    anatomy = code_anatomy(cred.ipb, psn_in_data=cred.psn_in_data)
    guess = guessing(cred, policy)
    rows = []
    for case in confusion_cases(cred):
        derived = derive(cred, case)
        confirmed = emulate.confirm(twin, reader_profile, case.first, case.second)
        rows.append(
            {
                "id": case.id,
                "title": case.title,
                "first": describe(case.first),
                "second": describe(case.second),
                "control": case.control,
                "collides": derived["collides"],
                "confirmed_by_emulator": confirmed,
                "verifier_refuses": derived["verifier_refuses"],
                "second_reachable_from": derived["second_reachable_from"],
            }
        )
    fresh = freshness(cred, policy)
    pin = {
        **emulate.verify_answers(twin, reader_profile),
        "no_pin_code": emulate.no_pin_code(twin, reader_profile, policy),
    }
    found = findings_for(
        cred=cred,
        policy=policy,
        anatomy=anatomy,
        guess=guess,
        confusion=tuple(rows),
        cases=confusion_cases(cred),
        fresh=fresh,
        pin=pin,
    )
    return Report(
        card=card.name,
        card_source=card_source,
        reader_profile=reader_profile.name,
        policy_name=policy_name,
        policy=policy,
        anatomy=anatomy,
        guessing=guess,
        confusion=tuple(rows),
        freshness=fresh,
        pin=pin,
        findings=found,
    )


# ------------------------------------------------------------------------------------------------
# Text


def _p(value: float) -> str:
    return f"{value:.3g}"


def render_text(report: Report) -> str:
    """The report for a terminal: sections, then the findings with sources and changes."""
    a, g, f = report.anatomy, report.guessing, report.freshness
    out = [
        f"capsim analyze: card {report.card} ({report.card_source}), reader profile "
        f"{report.reader_profile}, policy {report.policy_name}",
        "",
        "Code anatomy",
        f"  {a.total_bits} bits (up to {a.max_digits} digits): AC {a.ac_bits}, ATC {a.atc_bits}, "
        f"PSN {a.psn_bits}, CID {a.cid_bits}, IAD {a.iad_bits}; only the {a.ac_bits} AC bits are secret",
        f"  bit map (most significant first; A=AC T=ATC P=PSN C=CID I=IAD): {a.bit_map()}",
        "",
        "Guessing (verifier.md V5: P = max_fail × C × V / 2^a)",
        f"  a = {g.bound.ac_bits} AC bits, C = {g.bound.candidates} candidate ATC(s), "
        f"V = {g.bound.variants} history variant(s), max_fail = {g.bound.max_fail}",
        f"  per guess {_p(g.per_guess)}; per lock period {_p(g.per_lock_period)}; "
        f"first code {_p(g.first_code_per_guess)}/guess; after an issuer script "
        f"{_p(g.after_script_per_guess)}/guess (V = {g.after_script_variants})",
        f"  over a year without a permanent block: {g.guesses_per_year} guesses, {_p(g.per_year)} "
        f"({g.guesses_per_year_with_logins} guesses, {_p(g.per_year_with_logins)} with a daily login "
        "by the cardholder)",
        f"  until the permanent block: {g.guesses_until_block} guesses, {_p(g.until_block)}",
    ]
    out += [f"  [{'ok' if lim.ok else 'FAIL'}] {lim.name}: {lim.value} ({lim.limit})" for lim in g.limits]
    out += ["", "Mode confusion (same cryptogram input = same code at one ATC)"]
    for row in report.confusion:
        verdict = "COLLIDES" if row["collides"] else "differs"
        check = "confirmed" if row["collides"] == row["confirmed_by_emulator"] else "EMULATOR DISAGREES"
        control = " (control)" if row["control"] else ""
        out.append(f"  {row['first']} vs {row['second']}: {verdict}, {check}{control}")
    out += ["", "Freshness"]
    out += [
        f"  {m.mode}: {'can be made ahead' if m.precomputable else 'fresh'}: {m.fresh_by}" for m in f.modes
    ]
    pin = report.pin
    nopin = pin["no_pin_code"]
    accepted = {True: "ACCEPTED", False: "rejected", None: "undetermined"}[nopin["accepted"]]
    out += [
        "",
        "PIN handling",
        f"  VERIFY answers: wrong PIN {pin['wrong_pin_sw']}, right PIN {pin['right_pin_sw']}"
        f"{' (the card reveals whether a PIN is right)' if pin['reveals'] else ''}",
        f"  a code made without VERIFY (CVR: PIN {'not ' if nopin['cvr_says_no_pin'] else ''}verified): "
        f"{accepted} by the policy's verifier",
        "",
        f"Findings ({len(report.findings)})",
    ]
    used: list[Source] = []
    for finding in report.findings:
        out.append(f"  [{finding.severity.value}] {finding.id}: {finding.title}")
        out.append(f"      {finding.detail}")
        out += [f"      change ({c.lever.value}): {c.text}" for c in finding.changes]
        out.append(f"      source: {', '.join(s.value for s in finding.sources)}")
        used += [s for s in finding.sources if s not in used]
    out += ["", "Sources"] + [f"  {s.value}: {SOURCE_TEXT[s]}" for s in used]
    return "\n".join(out)
