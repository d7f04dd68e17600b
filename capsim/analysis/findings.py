"""Findings: the sections' figures turned into statements with a severity, sources and changes.

Theory of operation
-------------------
1. **Guessing** (``guessing.*``). ``guessing.ceiling``: the V5 bound per lock period is above
   the policy's ceiling (high: capsim's verifier refuses to enrol such a card, another
   verifier would accept the risk silently). ``guessing.short-code``: the per-guess
   probability is above NIST's 2^-20 (medium). ``guessing.limits``: a PSD2 RTS or NIST
   limit on failures or lifetime is not kept (medium). Otherwise one ``info`` finding with
   the figures.
2. **Mode confusion** (``mode.<case>``): every non-control pair whose cryptogram inputs
   collide, with the case's severity; a control pair that collides, or an emulator that
   disagrees with the derivation, is ``analysis.model-mismatch`` (high: the analysis itself
   cannot be trusted for this card).
3. **Freshness**: ``freshness.identify-ahead`` (medium when Identify logins need no operation,
   low otherwise), ``freshness.tds-ahead`` (low), ``freshness.no-challenge`` (high: the CDOL1
   has no UN), ``freshness.challenge`` (info: what the verifier's challenge gives).
4. **PIN handling**: ``pin.verify-oracle`` (medium when VERIFY answers differ for a wrong and
   the right PIN), ``pin.no-pin-code`` (high when a code made without VERIFY is accepted,
   info when rejected, medium when the control failed and nothing can be said).
5. **Unknown V** (a real card read without a GENERATE AC, :mod:`capsim.analysis.guessing`
   step 5): ``guessing.ceiling`` and ``guessing.short-code`` are stated only when the lower
   bound (V = 1) already breaks the limit; when only the upper bound (V = the policy's
   ``history_variants``) would, it is ``guessing.variants-unknown`` (low), and
   ``guessing.bound`` only when even the upper bound keeps every limit.
6. **Derived, not confirmed.** A pair checked neither on emulated twins nor on the card
   itself is reported from the derivation alone and says so; a pair the card contradicts is
   ``analysis.model-mismatch``. Whatever the analysis could not measure without changing the
   card's state is listed in one ``analysis.not-measured`` finding (info), with the option that
   measures it.
7. Sorted by severity, highest first, then by identifier. Pure.
"""

from __future__ import annotations

from typing import Any

from capsim.analysis.anatomy import Anatomy
from capsim.analysis.confusion import ConfusionCase
from capsim.analysis.freshness import Freshness
from capsim.analysis.guessing import NIST_MAX_GUESS_PROBABILITY, VARIANT_LIMITS, Guessing
from capsim.analysis.model import Change, Finding, Lever, Severity, Source
from capsim.verifier.model import CredentialProfile
from capsim.verifier.policy import VerifierPolicy

__all__ = ["findings_for"]

_MORE_AC_BITS = Change(
    lever=Lever.CARD_TEMPLATE,
    text="an IPB with more AC bits (20 or more) and enough low ATC bits to make C = 1",
)
_TIGHTER_POLICY = Change(
    lever=Lever.POLICY,
    text="a lower max_fail, a smaller atc_window, fewer history_variants, or a longer escalation period",
)


def _guessing(policy: VerifierPolicy, anatomy: Anatomy, guess: Guessing) -> list[Finding]:
    b = guess.bound
    figures = {
        "per_guess": guess.per_guess,
        "per_lock_period": guess.per_lock_period,
        "per_year": guess.per_year,
        "ac_bits": b.ac_bits,
        "candidates": b.candidates,
        "variants": b.variants,
    }
    sources = (Source.OPTIMISED_TO_FAIL, Source.EPCI, Source.CAPSIM_V5)
    out = []
    at_least = "" if guess.variants_known else " (V unknown: at least, with V = 1)"
    if guess.per_lock_period > policy.false_accept_ceiling:
        out.append(
            Finding(
                id="guessing.ceiling",
                title="the false-accept bound per lock period exceeds the policy's ceiling",
                severity=Severity.HIGH,
                detail=(
                    f"P = {b.max_fail} × {b.candidates} × {b.variants} / 2^{b.ac_bits} = "
                    f"{guess.per_lock_period:.3g}{at_least} > {policy.false_accept_ceiling:.3g}: "
                    "capsim's verifier refuses to enrol this card under this policy; one that does not "
                    "check accepts it"
                ),
                sources=sources,
                changes=(_MORE_AC_BITS, _TIGHTER_POLICY),
                evidence=figures,
            )
        )
    if guess.per_guess > NIST_MAX_GUESS_PROBABILITY:
        out.append(
            Finding(
                id="guessing.short-code",
                title="fewer than 20 secret bits per guess",
                severity=Severity.MEDIUM,
                detail=(
                    f"{anatomy.total_bits} code bits but only {anatomy.ac_bits} from the AC; with C = "
                    f"{b.candidates} and V = {b.variants} one guess succeeds with "
                    f"{guess.per_guess:.3g}{at_least} "
                    f"(NIST SP 800-63B: at most 2^-20 = {NIST_MAX_GUESS_PROBABILITY:.3g})"
                ),
                sources=(Source.OPTIMISED_TO_FAIL, Source.EPCI, Source.NIST_800_63B),
                changes=(_MORE_AC_BITS,),
                evidence=figures,
            )
        )
    failed = [lim for lim in guess.limits if lim.ok is False and lim.id not in VARIANT_LIMITS]
    if failed:
        out.append(
            Finding(
                id="guessing.limits",
                title="the policy breaks a published limit",
                severity=Severity.MEDIUM,
                detail="; ".join(f"{lim.name}: {lim.value}, allowed {lim.limit}" for lim in failed),
                sources=(Source.PSD2_RTS, Source.NIST_800_63B),
                changes=(
                    Change(lever=Lever.POLICY, text="the PSD2 profile (VerifierPolicy.psd2_profile())"),
                ),
                evidence={"failed": [lim.to_dict() for lim in failed]},
            )
        )
    open_limits = [lim for lim in guess.limits if lim.ok is None]
    if open_limits:
        out.append(
            Finding(
                id="guessing.variants-unknown",
                title="guessing may break a limit, depending on the card's IAD variants",
                severity=Severity.LOW,
                detail=(
                    "; ".join(f"{lim.name}: {lim.value}, allowed {lim.limit}" for lim in open_limits)
                    + ": V needs the card's IAD layout, which a GENERATE AC shows (--allow-state-changes)"
                ),
                sources=sources,
                changes=(_MORE_AC_BITS, _TIGHTER_POLICY),
                evidence={**figures, "variants_at_most": guess.variants_at_most},
            )
        )
    if not out:
        out.append(
            Finding(
                id="guessing.bound",
                title="guessing stays within the policy's ceiling and the published limits",
                severity=Severity.INFO,
                detail=(
                    f"{guess.per_guess:.3g} per guess, {guess.per_lock_period:.3g} per lock period, "
                    f"{guess.per_year:.3g} over a year of guesses that never block the card"
                    if guess.variants_known
                    else f"at most {guess.per_guess * guess.variants_at_most:.3g} per guess and "
                    f"{guess.per_lock_period * guess.variants_at_most:.3g} per lock period "
                    f"(V unknown, at most {guess.variants_at_most})"
                ),
                sources=sources,
                evidence=figures,
            )
        )
    return out


_CHECKED_BY = {"emulator": "emulated cards' codes", "card": "on the card, the GENERATE AC input and IAD"}
_HOW = {
    "emulator": "confirmed on emulated cards",
    "card": "confirmed on the card: the same GENERATE AC input and IAD",
    "derived, not confirmed": "derived from the CDOL1 fill and the IAF, not confirmed",
}


def _confusion(rows: tuple[dict[str, Any], ...], cases: tuple[ConfusionCase, ...]) -> list[Finding]:
    out = []
    by_id = {case.id: case for case in cases}
    for row in rows:
        case = by_id[row["id"]]
        checked = row["confirmed_by_emulator"]
        if checked is None and row["confirmed_on_card"] is not None:
            checked = row["confirmed_on_card"]
        agree = checked is None or row["collides"] == checked
        if not agree or (case.control and row["collides"]):
            out.append(
                Finding(
                    id="analysis.model-mismatch",
                    title=f"the analysis is unsure about {row['first']} vs {row['second']}",
                    severity=Severity.HIGH,
                    detail=(
                        f"derived: {'collide' if row['collides'] else 'differ'}; "
                        + (
                            "derived, not confirmed"
                            if checked is None
                            else f"{_CHECKED_BY[row['confirmation']]}: {'equal' if checked else 'different'}"
                        )
                    ),
                    sources=case.sources,
                    evidence=dict(row),
                )
            )
            continue
        if case.control or not row["collides"]:
            continue
        refuses = row["verifier_refuses"]
        out.append(
            Finding(
                id=f"mode.{case.id}",
                title=case.title,
                severity=case.severity,
                detail=(
                    f"{row['first']} and {row['second']} give the same cryptogram input, hence the same "
                    f"code at one ATC ({_HOW[row['confirmation']]})"
                    + ("; capsim's verifier refuses to issue the higher one" if refuses else "")
                ),
                sources=case.sources,
                changes=case.changes,
                evidence=dict(row),
            )
        )
    return out


def _freshness(policy: VerifierPolicy, fresh: Freshness) -> list[Finding]:
    out = [
        Finding(
            id="freshness.identify-ahead",
            title="Identify codes can be made ahead of time",
            severity=Severity.MEDIUM if policy.allow_identify_without_operation else Severity.LOW,
            detail=(
                f"Identify signs no challenge: whoever holds the card and PIN for a moment can make codes "
                f"for the next {fresh.window} ATCs, good until the card's own next code is accepted"
                + (
                    f"; logins without an operation accept an ATC gap of {fresh.identify_gap}"
                    if fresh.identify_gap is not None
                    else ""
                )
            ),
            sources=(Source.OPTIMISED_TO_FAIL, Source.EPCI),
            changes=(
                Change(
                    lever=Lever.POLICY,
                    text="allow_identify_without_operation = false and Respond operations for logins; "
                    "a smaller atc_window",
                ),
            ),
            evidence={"window": fresh.window, "identify_gap": fresh.identify_gap},
        ),
        Finding(
            id="freshness.tds-ahead",
            title="TDS codes can be made ahead of time for known fields",
            severity=Severity.LOW,
            detail=f"TDS signs no challenge: a code over known fields stays good for {fresh.window} ATCs",
            sources=(Source.OPTIMISED_TO_FAIL, Source.DESIGNED_TO_FAIL),
            changes=(
                Change(lever=Lever.POLICY, text="add a verifier-drawn field (a challenge) to every TDS"),
            ),
            evidence={"window": fresh.window},
        ),
    ]
    if not fresh.cdol_has_un:
        out.append(
            Finding(
                id="freshness.no-challenge",
                title="the card's CDOL1 has no unpredictable number: Respond and Sign sign no challenge",
                severity=Severity.HIGH,
                detail="every Respond and Sign code is an Identify code (or one over the amount only)",
                sources=(Source.OPTIMISED_TO_FAIL, Source.CHIP_AND_SKIM),
                changes=(Change(lever=Lever.CARD_TEMPLATE, text="a CDOL1 that asks for 9F37"),),
            )
        )
    else:
        out.append(
            Finding(
                id="freshness.challenge",
                title="Respond and Sign are fresh through a verifier-drawn challenge",
                severity=Severity.INFO,
                detail=(
                    f"8 random digits, never 00000000 ({fresh.challenge_bits:.1f} bits): a code made ahead "
                    f"fits with {fresh.precompute_hit:.3g}; the operation lives {fresh.operation_ttl_s} s"
                ),
                sources=(Source.CHIP_AND_SKIM,),
                changes=(
                    Change(
                        lever=Lever.POLICY,
                        text="draw Sign references too, not caller-supplied payee numbers",
                    ),
                ),
            )
        )
    return out


def _pin(pin: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    if pin["reveals"] is None and pin["no_pin_code"] is None:
        return out
    if pin["reveals"]:
        out.append(
            Finding(
                id="pin.verify-oracle",
                title="the card tells anyone holding it whether a PIN is right",
                severity=Severity.MEDIUM,
                detail=(
                    f"VERIFY answers {pin['wrong_pin_sw']} to a wrong PIN and {pin['right_pin_sw']} to the "
                    "right one, outside any cryptogram: any CAP reader is a PIN-checking oracle for a "
                    "stolen card, and the bank never sees the tries"
                ),
                sources=(Source.OPTIMISED_TO_FAIL, Source.DESIGNED_TO_FAIL),
                changes=(
                    Change(lever=Lever.CARD_TEMPLATE, text="a low PIN try limit (pin_try_limit 3)"),
                    Change(
                        lever=Lever.READER_PROFILE,
                        text="readers that compute a code on a wrong PIN too (the CVR then tells the bank)",
                    ),
                ),
                evidence={k: pin[k] for k in ("wrong_pin_sw", "right_pin_sw")},
            )
        )
    nopin = pin["no_pin_code"]
    if nopin is None:
        return out
    accepted = nopin["accepted"]
    severity = {True: Severity.HIGH, False: Severity.INFO, None: Severity.MEDIUM}[accepted]
    verdict = {
        True: "is accepted: the verifier ignores the CVR's PIN result",
        False: "is rejected: the verifier recomputes with the PIN-verified CVR",
        None: "could not be judged: a PIN-verified control code was not accepted either",
    }[accepted]
    out.append(
        Finding(
            id="pin.no-pin-code",
            title="a code made without PIN verification",
            severity=severity,
            detail=f"a Respond code made without VERIFY (the CVR says so) {verdict}",
            sources=(Source.OPTIMISED_TO_FAIL,),
            changes=(
                (Change(lever=Lever.POLICY, text="predict only PIN-verified IADs (capsim's verifier does)"),)
                if accepted is not False
                else ()
            ),
            evidence=dict(nopin),
        )
    )
    return out


def _not_measured(rows: tuple[dict[str, Any], ...], unknown: tuple[str, ...]) -> list[Finding]:
    if not unknown:
        return []
    what: list[str] = []
    if "card_data.cvn" in unknown:
        what.append(
            "the cryptogram version and IAD layout, hence V, the history variants of the guessing "
            "figures (one PIN-verified GENERATE AC shows them: --allow-state-changes)"
        )
    derived = [r for r in rows if r["confirmation"] == "derived, not confirmed" and r["collides"]]
    if derived:
        what.append(
            f"{len(derived)} colliding pair(s) derived from the CDOL1 fill and the IAF, not confirmed "
            "(--allow-state-changes runs both on the card)"
        )
    if "pin.reveals" in unknown:
        what.append("the card's VERIFY answers (--allow-state-changes --probe-pin; it spends a PIN try)")
    if "pin.no_pin_code" in unknown:
        what.append(
            "whether a code made without PIN verification is accepted (it needs a verifier that holds "
            "the card's keys: capsim probe with an enrolled card)"
        )
    return [
        Finding(
            id="analysis.not-measured",
            title="what this analysis did not measure",
            severity=Severity.INFO,
            detail="; ".join(what) if what else "see unknown",
            sources=(),
            evidence={"unknown": list(unknown)},
        )
    ]


def findings_for(
    *,
    cred: CredentialProfile,
    policy: VerifierPolicy,
    anatomy: Anatomy,
    guess: Guessing,
    confusion: tuple[dict[str, Any], ...],
    cases: tuple[ConfusionCase, ...],
    fresh: Freshness,
    pin: dict[str, Any],
    unknown: tuple[str, ...] = (),
) -> tuple[Finding, ...]:
    """Every finding of one analysis, highest severity first (module docstring).

    ``unknown``: the report's fields not measured (step 6), by path.
    """
    del cred
    found = [
        *_guessing(policy, anatomy, guess),
        *_confusion(confusion, cases),
        *_freshness(policy, fresh),
        *_pin(pin),
        *_not_measured(confusion, unknown),
    ]
    return tuple(sorted(found, key=lambda f: (-f.severity.rank, f.id)))
