"""Guessing: how likely a made-up code is accepted, per guess, per lock period and over a year.

Theory of operation
-------------------
1. **The source is the verifier's bound** (verifier.md V5):
   :func:`capsim.verifier.policy.false_accept_bound` gives P = ``max_fail`` × C × V / 2^a for one
   credential profile under one policy, C the candidate ATCs of the window (auto-resync
   included), V the IAD (history) variants tried per candidate, a the AC bits of the code.
   The probability per guess is P / ``max_fail`` = C × V / 2^a; nothing here recomputes C, V
   or a.
2. **Variants.** Three cases of V: the steady state (``policy.history_variants``), a
   credential's first code (at least 2), and the code right after an issuer script (every
   distinct variant the code cannot tell apart:
   :func:`capsim.verifier.policy.effective_variants` without limit).
3. **The attacker over time** (:func:`attack_schedule`) guesses online against one card
   without ever getting it blocked for good: each batch of ``max_fail`` wrong codes sets a
   temporary lock (V28, V29); the next batch waits ``lock_duration_s``; ``escalate_after``
   locks within ``escalation_period_s`` of a window's first lock block the card (V31,
   :func:`capsim.verifier.decision.count_failure`), so the attacker stops at
   ``escalate_after − 1`` locks per window and starts a new window once the old one has
   passed. With ``escalate_after`` = 1 every lock is permanent, and the attacker keeps to
   ``max_fail − 1`` guesses in all. A cardholder's successful login resets the failure
   count (V28), which gives ``max_fail − 1`` more guesses per login without a lock: reported
   separately (one login a day).
4. **Probabilities over many guesses** are the union bound N × p (capped at 1), the same
   conservative reading as V5's own formula.
5. **V unknown.** A real card read without a GENERATE AC shows no IAD, so V is unknown
   (:mod:`capsim.analysis.card`): the figures are then computed with V = 1, *per variant*,
   a lower bound, and V is at most the policy's ``history_variants`` (the verifier never
   tries more). Every figure that depends on V is reported as unknown (``None``); a limit is
   broken for sure when the lower bound breaks it, kept for sure when the upper bound keeps
   it, and unknown otherwise.
6. **Limits.** PSD2 RTS Art. 4(3)(b): at most 5 consecutive failures; Art. 4(3)(d): at most
   5 minutes (the operation TTL). NIST SP 800-63B: an OTP of at least ~20 bits (per-guess
   probability ≤ 2^-20) and at most 100 consecutive failures. The V5 ceiling of the policy.
7. Pure: numbers in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from capsim.verifier.model import CredentialProfile
from capsim.verifier.policy import BoundReport, VerifierPolicy, effective_variants, false_accept_bound

__all__ = [
    "NIST_MAX_CONSECUTIVE_FAILURES",
    "NIST_MAX_GUESS_PROBABILITY",
    "PSD2_MAX_FAIL",
    "PSD2_MAX_TTL_S",
    "VARIANT_FIGURES",
    "VARIANT_LIMITS",
    "YEAR_S",
    "Guessing",
    "Limit",
    "attack_schedule",
    "guesses_by",
    "guessing",
]

YEAR_S: Final = 365 * 86_400
PSD2_MAX_FAIL: Final = 5
PSD2_MAX_TTL_S: Final = 300
NIST_MAX_CONSECUTIVE_FAILURES: Final = 100
#: Six decimal digits, "approximately 20 bits": 2^-20 per guess.
NIST_MAX_GUESS_PROBABILITY: Final = 2.0**-20


@dataclass(frozen=True, kw_only=True)
class Limit:
    """One published limit and whether the deployment keeps it (``ok`` ``None``: unknown, step 5)."""

    id: str
    name: str
    limit: str
    value: str
    ok: bool | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "name": self.name, "limit": self.limit, "value": self.value, "ok": self.ok}


#: The figures of :meth:`Guessing.to_dict` that depend on V (unknown without a GENERATE AC, step 5).
VARIANT_FIGURES: Final = (
    "variants",
    "per_guess",
    "per_lock_period",
    "first_code_per_guess",
    "after_script_per_guess",
    "after_script_variants",
    "per_year",
    "per_year_with_daily_login",
    "until_permanent_block",
)
#: The limits that depend on V.
VARIANT_LIMITS: Final = ("nist-per-guess", "v5-ceiling")


@dataclass(frozen=True, kw_only=True)
class Guessing:
    """The guessing figures of one card under one policy (module docstring)."""

    bound: BoundReport
    per_guess: float
    per_lock_period: float
    first_code_per_guess: float
    after_script_per_guess: float
    after_script_variants: int
    guesses_per_year: int
    per_year: float
    guesses_per_year_with_logins: int
    per_year_with_logins: float
    guesses_until_block: int
    until_block: float
    limits: tuple[Limit, ...]
    variants_known: bool = True
    variants_at_most: int = 1

    @property
    def per_guess_per_variant(self) -> float:
        """C / 2^a: the per-guess probability for V = 1 (known without a GENERATE AC)."""
        return self.per_guess / self.bound.variants

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the V figures ``None`` when V is unknown, step 5)."""
        b = self.bound
        out = {
            "ac_bits": b.ac_bits,
            "atc_bits": b.atc_bits,
            "candidates": b.candidates,
            "variants": b.variants,
            "max_fail": b.max_fail,
            "per_guess": self.per_guess,
            "per_lock_period": self.per_lock_period,
            "first_code_per_guess": self.first_code_per_guess,
            "after_script_per_guess": self.after_script_per_guess,
            "after_script_variants": self.after_script_variants,
            "guesses_per_year": self.guesses_per_year,
            "per_year": self.per_year,
            "guesses_per_year_with_daily_login": self.guesses_per_year_with_logins,
            "per_year_with_daily_login": self.per_year_with_logins,
            "guesses_until_permanent_block": self.guesses_until_block,
            "until_permanent_block": self.until_block,
            "limits": [limit.to_dict() for limit in self.limits],
            "variants_known": self.variants_known,
            "variants_at_most": self.variants_at_most,
            "per_guess_per_variant": self.per_guess_per_variant,
        }
        if not self.variants_known:
            out.update(dict.fromkeys(VARIANT_FIGURES))
        return out


def attack_schedule(policy: VerifierPolicy, horizon_s: int = YEAR_S) -> tuple[tuple[int, int], ...]:
    """``(time in s, guesses)`` batches of the attacker of step 3 up to ``horizon_s`` (inclusive).

    >>> p = VerifierPolicy()  # max_fail 5, 900 s locks, 3 locks per 86 400 s block
    >>> attack_schedule(p, 86_401)
    ((0, 5), (900, 5), (86401, 5))
    >>> attack_schedule(VerifierPolicy(escalate_after=1), 10**6)
    ((0, 4),)
    """
    m = policy.max_fail
    per_window = policy.escalate_after - 1
    if per_window == 0:
        return ((0, m - 1),) if m > 1 else ()
    out: list[tuple[int, int]] = []
    t = 0
    window_start = 0
    in_window = 0
    while t <= horizon_s:
        out.append((t, m))
        in_window += 1
        t += policy.lock_duration_s
        if t - window_start > policy.escalation_period_s:
            window_start, in_window = t, 0
        elif in_window >= per_window:
            t = max(t, window_start + policy.escalation_period_s + 1)
            window_start, in_window = t, 0
    return tuple(out)


def guesses_by(schedule: tuple[tuple[int, int], ...], t_s: int) -> int:
    """Guesses the schedule has made by time ``t_s``.

    >>> guesses_by(((0, 5), (900, 5)), 899), guesses_by(((0, 5), (900, 5)), 900)
    (5, 10)
    """
    return sum(n for t, n in schedule if t <= t_s)


def _at_most(p: float) -> float:
    return min(1.0, p)


def _v_limit(id_: str, name: str, *, limit: float, low: float, high: float, known: bool) -> Limit:
    """A limit on a V-dependent figure: ``low`` at the known (or lowest) V, ``high`` at the most."""
    if known:
        return Limit(id=id_, name=name, limit=f"≤ {limit:.3g}", value=f"{low:.3g}", ok=low <= limit)
    ok = False if low > limit else (True if high <= limit else None)
    value = f"{low:.3g} to {high:.3g} (V unknown: 1 to the policy's history_variants)"
    return Limit(id=id_, name=name, limit=f"≤ {limit:.3g}", value=value, ok=ok)


def guessing(profile: CredentialProfile, policy: VerifierPolicy, *, variants_known: bool = True) -> Guessing:
    """The :class:`Guessing` figures of ``profile`` under ``policy`` (module docstring).

    ``variants_known`` false: the profile's IAD variants are unknown (step 5); the figures are
    per variant and the V-dependent ones are reported unknown.
    """
    if not variants_known:
        profile = replace(profile, iad_variants=())  # V = 1: per variant
    bound = false_accept_bound(profile, policy)
    most = bound.variants if variants_known else max(1, policy.history_variants)
    per_guess = bound.probability / bound.max_fail
    first = false_accept_bound(profile, policy, variants=max(bound.variants, min(2, _all_variants(profile))))
    script_v = _all_variants(profile)
    script = false_accept_bound(profile, policy, variants=script_v)
    schedule = attack_schedule(policy)
    year = guesses_by(schedule, YEAR_S)
    logins = year + (policy.max_fail - 1) * 365
    until_block = policy.max_fail * policy.escalate_after
    limits = (
        Limit(
            id="psd2-max-fail",
            name="PSD2 RTS Art. 4(3)(b): consecutive failures before a block",
            limit=f"≤ {PSD2_MAX_FAIL}",
            value=str(policy.max_fail),
            ok=policy.max_fail <= PSD2_MAX_FAIL,
        ),
        Limit(
            id="psd2-ttl",
            name="PSD2 RTS Art. 4(3)(d): operation lifetime",
            limit=f"≤ {PSD2_MAX_TTL_S} s",
            value=f"{policy.operation_ttl_s} s",
            ok=policy.operation_ttl_s <= PSD2_MAX_TTL_S,
        ),
        _v_limit(
            "nist-per-guess",
            "NIST SP 800-63B: success probability per guess (≥ 20 bits)",
            limit=NIST_MAX_GUESS_PROBABILITY,
            low=per_guess,
            high=per_guess * most,
            known=variants_known,
        ),
        Limit(
            id="nist-failures",
            name="NIST SP 800-63B: consecutive failures (rate limiting)",
            limit=f"≤ {NIST_MAX_CONSECUTIVE_FAILURES}",
            value=str(policy.max_fail),
            ok=policy.max_fail <= NIST_MAX_CONSECUTIVE_FAILURES,
        ),
        _v_limit(
            "v5-ceiling",
            "capsim V5: false-accept bound per lock period",
            limit=policy.false_accept_ceiling,
            low=bound.probability,
            high=bound.probability * most,
            known=variants_known,
        ),
    )
    return Guessing(
        bound=bound,
        per_guess=per_guess,
        per_lock_period=bound.probability,
        first_code_per_guess=first.probability / first.max_fail,
        after_script_per_guess=script.probability / script.max_fail,
        after_script_variants=script_v,
        guesses_per_year=year,
        per_year=_at_most(year * per_guess),
        guesses_per_year_with_logins=logins,
        per_year_with_logins=_at_most(logins * per_guess),
        guesses_until_block=until_block,
        until_block=_at_most(until_block * per_guess),
        limits=limits,
        variants_known=variants_known,
        variants_at_most=most,
    )


def _all_variants(profile: CredentialProfile) -> int:
    """V right after an issuer script: every variant the code cannot tell apart (step 2)."""
    return max(1, effective_variants(profile, None))
