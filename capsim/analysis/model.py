"""The vocabulary of an analysis: severities, published sources, changes a bank can make, findings.

Theory of operation
-------------------
1. A :class:`Finding` is one statement about a deployment (card template + reader profile +
   verifier policy): an identifier that never changes (``mode.sign-zero-equals-respond``), a
   :class:`Severity`, what was measured, the publications it comes from (:class:`Source`) and
   what a bank can change, each change naming the lever (:class:`Lever`: the verifier policy,
   the reader profile or the card template).
2. Severities are ordered: ``info`` < ``low`` < ``medium`` < ``high``. ``info`` states a fact
   that is no weakness under the analysed policy (a check that passed).
3. Everything here is plain frozen data with a ``to_dict`` for ``--json``; nothing reads a
   card, a store or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["SOURCE_TEXT", "Change", "Finding", "Lever", "Severity", "Source"]


class Severity(StrEnum):
    """How much a finding matters (module docstring, step 2)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for ``info`` … 3 for ``high``."""
        return list(Severity).index(self)


class Source(StrEnum):
    """The published analyses and standards a finding comes from (docs/analysis.md)."""

    OPTIMISED_TO_FAIL = "optimised-to-fail"
    DESIGNED_TO_FAIL = "designed-to-fail"
    CHIP_AND_SKIM = "chip-and-skim"
    EPCI = "epci"
    PSD2_RTS = "psd2-rts"
    NIST_800_63B = "nist-sp800-63b"
    CAPSIM_V5 = "capsim-verifier-v5"


#: The full citation of each :class:`Source`.
SOURCE_TEXT: dict[Source, str] = {
    Source.OPTIMISED_TO_FAIL: (
        "S. Drimer, S. J. Murdoch, R. Anderson: Optimised to Fail: Card Readers for Online Banking, "
        "Financial Cryptography 2009"
    ),
    Source.DESIGNED_TO_FAIL: (
        "A. Blom, G. de Koning Gans, E. Poll, J. de Ruiter, R. Verdult: Designed to Fail: A USB-Connected "
        "Reader for Online Banking (e.dentifier2), NordSec 2012"
    ),
    Source.CHIP_AND_SKIM: (
        "M. Bond, O. Choudary, S. J. Murdoch, S. Skorobogatov, R. Anderson: Chip and Skim: cloning EMV "
        "cards with the pre-play attack, 2012 (IEEE S&P 2014)"
    ),
    Source.EPCI: "EPCI (Belgium): analysis of unconnected CAP/Digipass readers and their code functions",
    Source.PSD2_RTS: (
        "Commission Delegated Regulation (EU) 2018/389 (PSD2 RTS on SCA), Art. 4(3)(b) and 4(3)(d), Art. 5"
    ),
    Source.NIST_800_63B: (
        "NIST SP 800-63B, Digital Identity Guidelines: OTP output of at least 6 digits (~20 bits, "
        "rev. 3 §5.1.4 and §5.1.5, OTP devices) and at most 100 consecutive failed attempts (rev. 3 §5.2.2)"
    ),
    Source.CAPSIM_V5: "capsim verifier.md V5: false-accept bound P = max_fail × C × V / 2^a per lock period",
}


class Lever(StrEnum):
    """What a bank changes to act on a finding."""

    POLICY = "policy"
    READER_PROFILE = "reader profile"
    CARD_TEMPLATE = "card template"


@dataclass(frozen=True, kw_only=True)
class Change:
    """One thing a bank can change: the lever and what to do with it."""

    lever: Lever
    text: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"lever": self.lever.value, "text": self.text}


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One statement about the deployment (module docstring, step 1)."""

    id: str
    title: str
    severity: Severity
    detail: str
    sources: tuple[Source, ...]
    changes: tuple[Change, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sources as their identifiers and full citations)."""
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity.value,
            "detail": self.detail,
            "sources": [{"id": s.value, "citation": SOURCE_TEXT[s]} for s in self.sources],
            "changes": [c.to_dict() for c in self.changes],
            "evidence": self.evidence,
        }
