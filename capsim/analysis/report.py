"""The analysis of one deployment: card × reader profile × verifier policy → findings.

Theory of operation
-------------------
1. **Inputs** (:func:`analyze_card`): a :class:`~capsim.analysis.card.CardDescription` (a card's
   design, :func:`analyze` for a :class:`capsim.cards.CardProfile`, or what discovery read from a
   real card; keys are never used), a reader profile (default: the one the description names:
   the card template's, else the one its AID selects, or the one discovery chose) and a
   :class:`~capsim.verifier.policy.VerifierPolicy`. The verifier's view of the card is the
   description's :meth:`~capsim.analysis.card.CardDescription.credential_profile`, for a design
   exactly what an enrolment stores.
2. **Sections**, one module each: code anatomy (:mod:`~capsim.analysis.anatomy`), guessing
   (:mod:`~capsim.analysis.guessing`), mode confusion (:mod:`~capsim.analysis.confusion`),
   freshness (:mod:`~capsim.analysis.freshness`) and PIN handling
   (:mod:`~capsim.analysis.emulate`).
3. **Confirmation and measurement.** With a design, every pair is confirmed and the PIN
   experiments run on emulated twins (:mod:`~capsim.analysis.emulate`). A real card read
   without state changes has no design: the pairs are *derived, not confirmed*, the VERIFY
   answers and the no-PIN code are not measured, and what depends on the CVN or the IAD
   layout (the V of the guessing figures) is unknown. What the state-changing experiments on
   the card measured (:class:`~capsim.analysis.oncard.OnCard`: one GENERATE AC's IAD, the
   colliding pairs run on the card, the VERIFY answers) fills some of it in. Every field left
   unknown is ``None`` in the JSON and named, by its path, in :attr:`Report.unknown`.
4. **Findings** (:mod:`capsim.analysis.findings`) are derived from the sections, pure
   functions of their figures, sorted by severity (highest first) then identifier.
5. :class:`Report` is plain data: :meth:`Report.to_dict` for ``--json``, :func:`render_text`
   for the terminal, :mod:`capsim.analysis.html` for the page. No secret is in any of them:
   the emulated experiments run on capsim's public test keys, and of a real card the report
   shows no PAN, no PSN value and no code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from capsim.analysis import emulate
from capsim.analysis.anatomy import Anatomy, code_anatomy
from capsim.analysis.card import CardDescription, describe_profile
from capsim.analysis.confusion import confusion_cases, derive, describe
from capsim.analysis.findings import findings_for
from capsim.analysis.freshness import Freshness, freshness
from capsim.analysis.guessing import VARIANT_FIGURES, VARIANT_LIMITS, Guessing, guessing
from capsim.analysis.model import SOURCE_TEXT, Finding, Source
from capsim.analysis.oncard import OnCard
from capsim.cards import CardProfile
from capsim.errors import ValidationError
from capsim.profiles import ReaderProfile, get_reader_profile
from capsim.verifier.policy import VerifierPolicy

__all__ = ["Report", "analyze", "analyze_card", "check_analysable", "confirmation_text", "render_text"]

#: ``confirmation`` of a mode-confusion row.
BY_EMULATOR = "emulator"
ON_CARD = "card"
DERIVED = "derived, not confirmed"


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything one analysis found (module docstring, step 5)."""

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
    card_data: dict[str, Any]
    unknown: tuple[str, ...] = ()
    state_changes: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``capsim analyze --json``)."""
        return {
            "card": self.card,
            "card_source": self.card_source,
            "card_data": self.card_data,
            "reader_profile": self.reader_profile,
            "policy": {"name": self.policy_name, **_policy_fields(self.policy)},
            "anatomy": self.anatomy.to_dict(),
            "guessing": self.guessing.to_dict(),
            "mode_confusion": list(self.confusion),
            "freshness": self.freshness.to_dict(),
            "pin": self.pin,
            "findings": [f.to_dict() for f in self.findings],
            "unknown": list(self.unknown),
            "state_changes": self.state_changes,
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
    """Analyse one deployment of a card design (module docstring).

    Raises
    ------
    ValidationError
        The card has no IPB (the Belgian code function is not analysed yet) or a reader
        profile name is unknown.
    """
    if not isinstance(card, CardProfile):
        raise ValidationError("card: expected a capsim.cards.CardProfile")
    reader_profile = _reader_for(card, reader)
    description = describe_profile(card, reader_profile=reader_profile.name, source=card_source)
    return analyze_card(description, reader=reader_profile, policy=policy, policy_name=policy_name)


def _confusion_rows(
    card: CardDescription, reader: ReaderProfile, on_card: OnCard | None
) -> tuple[tuple[dict[str, Any], ...], list[str]]:
    cred = card.credential_profile()
    twin = emulate.throwaway_profile(card.design) if card.design is not None else None
    rows, unknown = [], []
    for case in confusion_cases(cred):
        derived = derive(cred, case)
        by_emulator = None
        on = on_card.pairs.get(case.id) if on_card is not None else None
        if twin is not None:
            by_emulator = emulate.confirm(twin, reader, case.first, case.second)
            confirmation = BY_EMULATOR
        elif on is not None:
            confirmation = ON_CARD
        else:
            confirmation = DERIVED
        if by_emulator is None:
            unknown.append(f"mode_confusion.{case.id}.confirmed_by_emulator")
        rows.append(
            {
                "id": case.id,
                "title": case.title,
                "first": describe(case.first),
                "second": describe(case.second),
                "control": case.control,
                "collides": derived["collides"],
                "confirmation": confirmation,
                "confirmed_by_emulator": by_emulator,
                "confirmed_on_card": None if on is None else on.equal,
                "on_card_evidence": None if on is None else on.evidence,
                "verifier_refuses": derived["verifier_refuses"],
                "second_reachable_from": derived["second_reachable_from"],
            }
        )
    return tuple(rows), unknown


def _pin_section(
    card: CardDescription, reader: ReaderProfile, policy: VerifierPolicy, on_card: OnCard | None
) -> tuple[dict[str, Any], list[str]]:
    read = {"pin_tries": card.pin_tries, "pin_try_limit": card.pin_try_limit}
    if card.design is not None:
        twin = emulate.throwaway_profile(card.design)
        return {
            **emulate.verify_answers(twin, reader),
            "no_pin_code": emulate.no_pin_code(twin, reader, policy),
            **read,
        }, []
    unknown = ["pin.no_pin_code"]  # needs a verifier holding the card's keys: capsim probe
    answers: dict[str, Any] = {"wrong_pin_sw": None, "right_pin_sw": None, "reveals": None}
    if on_card is not None and on_card.verify is not None:
        answers = dict(on_card.verify)
    else:
        unknown += ["pin.wrong_pin_sw", "pin.right_pin_sw", "pin.reveals"]
    if card.pin_try_limit is None:
        unknown.append("pin.pin_try_limit")
    return {**answers, "no_pin_code": None, **read}, unknown


def check_analysable(card: CardDescription) -> None:
    """Raise :class:`ValidationError` when the card cannot be analysed (no IPB: the Belgian code
    function is not analysed yet); callers check it before changing a card's state."""
    if not card.ipb:
        raise ValidationError("card: this card has no IPB (9F56); only the IPB code function is analysed")


def analyze_card(
    card: CardDescription,
    *,
    reader: ReaderProfile | str | None = None,
    policy: VerifierPolicy | None = None,
    policy_name: str = "default",
    on_card: OnCard | None = None,
) -> Report:
    """Analyse one deployment of a described card (module docstring).

    ``on_card``: what the state-changing experiments measured on the card (step 3).

    Raises
    ------
    ValidationError
        The card has no IPB (the Belgian code function is not analysed yet) or a reader
        profile name is unknown.
    """
    check_analysable(card)
    policy = policy if policy is not None else VerifierPolicy()
    reader_profile = _reader_for_card(card, reader)
    card = replace(card, reader_profile=reader_profile.name)
    cred = card.credential_profile()
    unknown: list[str] = []
    anatomy = code_anatomy(cred.ipb, psn_in_data=cred.psn_in_data)
    guess = guessing(cred, policy, variants_known=card.variants_known)
    if not card.variants_known:
        unknown += [f"guessing.{name}" for name in VARIANT_FIGURES]
        unknown += [f"guessing.limits.{name}" for name in VARIANT_LIMITS]
        unknown.append("card_data.cvn")
    rows, more = _confusion_rows(card, reader_profile, on_card)
    unknown += more
    fresh = freshness(cred, policy)
    pin, more = _pin_section(card, reader_profile, policy, on_card)
    unknown += more
    found = findings_for(
        cred=cred,
        policy=policy,
        anatomy=anatomy,
        guess=guess,
        confusion=rows,
        cases=confusion_cases(cred),
        fresh=fresh,
        pin=pin,
        unknown=tuple(unknown),
    )
    return Report(
        card=card.name,
        card_source=card.source,
        reader_profile=reader_profile.name,
        policy_name=policy_name,
        policy=policy,
        anatomy=anatomy,
        guessing=guess,
        confusion=rows,
        freshness=fresh,
        pin=pin,
        findings=found,
        card_data={
            "aid": card.aid.hex().upper(),
            "psn_present": card.psn_present,
            "cvn": card.cvn,
        },
        unknown=tuple(unknown),
        state_changes=None if on_card is None else on_card.summary(),
    )


def _reader_for_card(card: CardDescription, reader: ReaderProfile | str | None) -> ReaderProfile:
    if isinstance(reader, ReaderProfile):
        return reader
    return get_reader_profile(reader if reader is not None else card.reader_profile)


# ------------------------------------------------------------------------------------------------
# Text


def _p(value: float) -> str:
    return f"{value:.3g}"


_LIMIT_MARK = {True: "ok", False: "FAIL", None: "unknown"}
_VERDICT = {True: "ACCEPTED", False: "rejected", None: "undetermined"}


def confirmation_text(row: dict[str, Any]) -> str:
    """How a mode-confusion row's verdict was checked: ``confirmed``, ``EMULATOR DISAGREES``,
    ``confirmed on the card``, ``the card DISAGREES`` or ``derived, not confirmed``."""
    if row["confirmation"] == BY_EMULATOR:
        return "confirmed" if row["collides"] == row["confirmed_by_emulator"] else "EMULATOR DISAGREES"
    if row["confirmation"] == ON_CARD:
        return "confirmed on the card" if row["confirmed_on_card"] else "the card DISAGREES"
    return DERIVED


def _guessing_lines(g: Guessing) -> list[str]:
    b = g.bound
    if not g.variants_known:
        return [
            f"  a = {b.ac_bits} AC bits, C = {b.candidates} candidate ATC(s), V unknown (1 to "
            f"{g.variants_at_most}: the IAD layout needs a GENERATE AC), max_fail = {b.max_fail}",
            f"  per guess and variant {_p(g.per_guess)}; "
            f"per lock period and variant {_p(g.per_lock_period)}; "
            f"the first code, after an issuer script, over a year: unknown (they need V)",
            f"  guesses over a year without a permanent block: {g.guesses_per_year} "
            f"({g.guesses_per_year_with_logins} with a daily login by the cardholder); "
            f"until the permanent block: {g.guesses_until_block}",
        ]
    return [
        f"  a = {b.ac_bits} AC bits, C = {b.candidates} candidate ATC(s), "
        f"V = {b.variants} history variant(s), max_fail = {b.max_fail}",
        f"  per guess {_p(g.per_guess)}; per lock period {_p(g.per_lock_period)}; "
        f"first code {_p(g.first_code_per_guess)}/guess; after an issuer script "
        f"{_p(g.after_script_per_guess)}/guess (V = {g.after_script_variants})",
        f"  over a year without a permanent block: {g.guesses_per_year} guesses, {_p(g.per_year)} "
        f"({g.guesses_per_year_with_logins} guesses, {_p(g.per_year_with_logins)} with a daily login "
        "by the cardholder)",
        f"  until the permanent block: {g.guesses_until_block} guesses, {_p(g.until_block)}",
    ]


def _pin_lines(pin: dict[str, Any]) -> list[str]:
    tries = pin["pin_tries"]
    out = [
        "  PIN tries left (GET DATA 9F17, no VERIFY): "
        + ("not answered" if tries is None else str(tries))
        + (f" of {pin['pin_try_limit']}" if pin["pin_try_limit"] is not None else "")
    ]
    if pin["reveals"] is None:
        out.append("  VERIFY answers: not measured (it needs VERIFY: --allow-state-changes --probe-pin)")
    else:
        out.append(
            f"  VERIFY answers: wrong PIN {pin['wrong_pin_sw']}, right PIN {pin['right_pin_sw']}"
            f"{' (the card reveals whether a PIN is right)' if pin['reveals'] else ''}"
        )
    nopin = pin["no_pin_code"]
    if nopin is None:
        out.append(
            "  a code made without VERIFY: not measured on a real card (it needs a verifier that holds "
            "the card's keys: capsim probe)"
        )
    else:
        out.append(
            f"  a code made without VERIFY (CVR: PIN {'not ' if nopin['cvr_says_no_pin'] else ''}verified): "
            f"{_VERDICT[nopin['accepted']]} by the policy's verifier"
        )
    return out


def render_text(report: Report) -> str:
    """The report for a terminal: sections, then the findings with sources and changes."""
    a, g, f = report.anatomy, report.guessing, report.freshness
    out = [
        f"capsim analyze: card {report.card} ({report.card_source}), reader profile "
        f"{report.reader_profile}, policy {report.policy_name}",
    ]
    if report.state_changes is not None:
        sc = report.state_changes
        out.append(
            f"state changes on the card: {sc['generate_acs']} GENERATE AC run(s), ATC +{sc['atcs']}, "
            f"{sc['pin_tries_spent']} PIN try spent"
        )
    out += [
        "",
        "Code anatomy",
        f"  {a.total_bits} bits (up to {a.max_digits} digits): AC {a.ac_bits}, ATC {a.atc_bits}, "
        f"PSN {a.psn_bits}, CID {a.cid_bits}, IAD {a.iad_bits}; only the {a.ac_bits} AC bits are secret",
        f"  bit map (most significant first; A=AC T=ATC P=PSN C=CID I=IAD): {a.bit_map()}",
        "",
        "Guessing (verifier.md V5: P = max_fail × C × V / 2^a)",
        *_guessing_lines(g),
    ]
    out += [f"  [{_LIMIT_MARK[lim.ok]}] {lim.name}: {lim.value} ({lim.limit})" for lim in g.limits]
    out += ["", "Mode confusion (same cryptogram input = same code at one ATC)"]
    for row in report.confusion:
        verdict = "COLLIDES" if row["collides"] else "differs"
        control = " (control)" if row["control"] else ""
        out.append(f"  {row['first']} vs {row['second']}: {verdict}, {confirmation_text(row)}{control}")
    out += ["", "Freshness"]
    out += [
        f"  {m.mode}: {'can be made ahead' if m.precomputable else 'fresh'}: {m.fresh_by}" for m in f.modes
    ]
    out += ["", "PIN handling", *_pin_lines(report.pin), "", f"Findings ({len(report.findings)})"]
    used: list[Source] = []
    for finding in report.findings:
        out.append(f"  [{finding.severity.value}] {finding.id}: {finding.title}")
        out.append(f"      {finding.detail}")
        out += [f"      change ({c.lever.value}): {c.text}" for c in finding.changes]
        if finding.sources:
            out.append(f"      source: {', '.join(s.value for s in finding.sources)}")
        used += [s for s in finding.sources if s not in used]
    out += ["", "Sources"] + [f"  {s.value}: {SOURCE_TEXT[s]}" for s in used]
    return "\n".join(out)
