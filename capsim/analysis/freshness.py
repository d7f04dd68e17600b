"""Freshness: which codes can be made ahead of time, how far ahead, and what the challenge gives.

Theory of operation
-------------------
1. A code is fresh only through what its cryptogram covers: the ATC (a counter) and, for
   Respond and Sign, the unpredictable number ``9F37`` when the card's CDOL1 asks for it.
   Identify and TDS runs send UN 0 (cap-protocol.md §4): anyone who holds the card and knows
   the PIN for a moment can make codes for the next ATCs and use them later ("Optimised to
   Fail").
2. **How far ahead.** The verifier accepts an ATC in ``last_atc + 1 … last_atc + W`` (V1,
   V4; W = ``atc_window``, or ``sync_window`` with auto-resync, V35); a code made ahead stays
   good until the card's own later code is accepted. An Identify login without an operation
   (V18) is bounded by ``max_atc_gap``.
3. **The challenge source.** capsim's verifier draws Respond and Sign challenges with
   :mod:`secrets`: 8 digits, never ``00000000`` (V9), so a code made ahead for a guessed
   challenge fits with probability 1 / (10^8 − 1), and the operation lives
   ``operation_ttl_s``. A caller-supplied Sign reference (a payee account number) is as
   predictable as the caller makes it ("Chip and Skim": predictable unpredictable numbers).
4. Pure: from the credential profile and the policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from capsim.tlv import parse_dol
from capsim.verifier.model import CredentialProfile
from capsim.verifier.policy import VerifierPolicy

__all__ = ["CHALLENGE_VALUES", "Freshness", "ModeFreshness", "freshness"]

#: Challenges capsim's verifier draws: 8 digits, never all zeros (V9).
CHALLENGE_VALUES: Final = 10**8 - 1
_UN: Final = 0x9F37


@dataclass(frozen=True, kw_only=True)
class ModeFreshness:
    """One mode: can its codes be made ahead, how far, and what makes them fresh."""

    mode: str
    precomputable: bool
    ahead_atcs: int
    fresh_by: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mode": self.mode,
            "precomputable": self.precomputable,
            "ahead_atcs": self.ahead_atcs,
            "fresh_by": self.fresh_by,
        }


@dataclass(frozen=True, kw_only=True)
class Freshness:
    """The freshness of every mode of one card under one policy."""

    cdol_has_un: bool
    window: int
    identify_gap: int | None
    challenge_bits: float
    precompute_hit: float
    operation_ttl_s: int
    modes: tuple[ModeFreshness, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "cdol_has_un": self.cdol_has_un,
            "window": self.window,
            "identify_without_operation_gap": self.identify_gap,
            "challenge_bits": round(self.challenge_bits, 2),
            "precomputed_challenge_hit": self.precompute_hit,
            "operation_ttl_s": self.operation_ttl_s,
            "modes": [m.to_dict() for m in self.modes],
        }


def freshness(profile: CredentialProfile, policy: VerifierPolicy) -> Freshness:
    """The :class:`Freshness` of ``profile`` under ``policy`` (module docstring).

    >>> from capsim.cards import builtin_profile
    >>> from capsim.verifier.enrolment import credential_profile_from_card
    >>> f = freshness(credential_profile_from_card(builtin_profile("natwest")), VerifierPolicy())
    >>> [(m.mode, m.precomputable, m.ahead_atcs) for m in f.modes]
    [('identify', True, 16), ('respond', False, 0), ('sign', False, 0), ('tds', True, 16)]
    """
    has_un = any(entry.tag == _UN for entry in parse_dol(profile.cdol1))
    window = max(policy.atc_window, policy.sync_window if policy.auto_resync else 0)
    gap = policy.max_atc_gap if policy.allow_identify_without_operation else None
    ttl = policy.operation_ttl_s
    by_atc = f"the ATC only: good until the card's next accepted code, up to {window} ATCs ahead"
    drawn = (
        f"a challenge drawn by the verifier ({CHALLENGE_VALUES} values, single use, {ttl} s)"
        if has_un
        else by_atc + " (the card's CDOL1 has no 9F37: no challenge is signed)"
    )
    modes = (
        ModeFreshness(mode="identify", precomputable=True, ahead_atcs=window, fresh_by=by_atc),
        ModeFreshness(
            mode="respond", precomputable=not has_un, ahead_atcs=0 if has_un else window, fresh_by=drawn
        ),
        ModeFreshness(
            mode="sign",
            precomputable=not has_un,
            ahead_atcs=0 if has_un else window,
            fresh_by=drawn + "; a caller-supplied payee reference is only as unpredictable as the payee",
        ),
        ModeFreshness(
            mode="tds",
            precomputable=True,
            ahead_atcs=window,
            fresh_by=by_atc + "; the fields (amount, payee) are known in advance",
        ),
    )
    return Freshness(
        cdol_has_un=has_un,
        window=window,
        identify_gap=gap,
        challenge_bits=math.log2(CHALLENGE_VALUES) if has_un else 0.0,
        precompute_hit=1 / CHALLENGE_VALUES if has_un else 1.0,
        operation_ttl_s=ttl,
        modes=modes,
    )
