"""The attack battery of ``capsim probe``, as data: :data:`CHECKS`.

Theory of operation
-------------------
1. One row per check (:class:`~capsim.probe.model.Check`): its name (what ``--check`` takes and
   the report shows), what it proves, its sources in the verifier specification (verifier.md
   V-numbers, and :mod:`capsim.verifier.separation` for ___domain separation), what it needs from
   the adapter, and its function. Adding a check is adding a row; ``docs/probe.md`` describes
   every row, and a test keeps the two in step.
2. The rows run in the order given; each makes its own cards, so the order changes nothing
   but the report's reading order: bindings first, then counters, then timing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from capsim.probe import binding, counters, timing
from capsim.probe.adapter import Capabilities
from capsim.probe.model import Check

__all__ = ["CHECKS", "CHECKS_BY_NAME"]

_RESPOND: Final = Capabilities(modes=frozenset({"respond"}))
_SIGN: Final = Capabilities(modes=frozenset({"sign"}))

#: The battery, in report order (module docstring).
CHECKS: Final[tuple[Check, ...]] = (
    Check(
        name="replay-same-operation",
        title="replay on the same operation or login",
        proves="an accepted code is accepted once: again on its operation, or as a login, it is refused",
        sources=("V2", "V14", "V24"),
        run=binding.check_replay_same_operation,
        needs=_RESPOND,
    ),
    Check(
        name="replay-other-operation",
        title="replay on another operation",
        proves="a code made for one operation is refused for another, before and after its own accept",
        sources=("V8", "V14"),
        run=binding.check_replay_other_operation,
        needs=_RESPOND,
    ),
    Check(
        name="cross-credential",
        title="another card's code",
        proves="a code of another user's card neither answers this credential's challenge nor logs in as it",
        sources=("V8", "V11"),
        run=binding.check_cross_credential,
        needs=_RESPOND,
    ),
    Check(
        name="cross-mode",
        title="a code of another CAP mode",
        proves="for every pair of modes, a code of one mode is refused for an operation or a login of "
        "the other",
        sources=("V8", "V12"),
        run=binding.check_cross_mode,
    ),
    Check(
        name="separation",
        title="___domain separation (mode confusion)",
        proves="no Sign operation exists that a login or Respond code satisfies (Sign 0.00 on a card "
        "that does not sign the currency)",
        sources=("V8", "V16", "V17", "capsim.verifier.separation"),
        run=binding.check_domain_separation,
        needs=_SIGN,
    ),
    Check(
        name="wrong-amount",
        title="wrong amount or currency",
        proves="a Sign code over another amount, or another currency when the card signs it, is refused",
        sources=("V13",),
        run=binding.check_wrong_amount,
        needs=_SIGN,
    ),
    Check(
        name="wrong-payee",
        title="wrong payee",
        proves="a code approving one payee is refused for another (Sign operations, TDS payee fields)",
        sources=("V12", "V13"),
        run=binding.check_wrong_payee,
        needs=_SIGN,
    ),
    Check(
        name="stale-atc",
        title="stale ATC",
        proves="a genuine but unused code whose ATC is below the last accepted one is refused",
        sources=("V2", "V3"),
        run=counters.check_stale_atc,
    ),
    Check(
        name="far-future-atc",
        title="far-future ATC",
        proves="codes are accepted up to the claimed ATC window and refused one ATC beyond it",
        sources=("V1", "V5", "V18"),
        run=counters.check_far_future_atc,
    ),
    Check(
        name="lockout-count",
        title="exact lockout count",
        proves="max_fail - 1 wrong codes leave the credential usable; max_fail wrong codes lock it",
        sources=("V28", "V29"),
        run=counters.check_lockout_count,
    ),
    Check(
        name="sibling-lock-bypass",
        title="lock bypass through a sibling card",
        proves="a locked card's code does not get in through a card of the same user and PAN with "
        "another PSN",
        sources=("V11", "V29"),
        run=counters.check_sibling_lock_bypass,
    ),
    Check(
        name="request-id-reuse",
        title="request-id reuse",
        proves="a request id replays its recorded verdict, and with another code neither accepts "
        "nor changes state",
        sources=("V24",),
        run=counters.check_request_id_reuse,
        needs=Capabilities(request_ids=True),
    ),
    Check(
        name="uniform-reject-timing",
        title="uniform-reject timing",
        proves="locked and unknown credentials (consumed and unknown operations) are refused in "
        "indistinguishable time (Mann-Whitney U over interleaved samples)",
        sources=("V30",),
        run=timing.check_uniform_reject_timing,
    ),
)

#: :data:`CHECKS` by name.
CHECKS_BY_NAME: Final[Mapping[str, Check]] = MappingProxyType({c.name: c for c in CHECKS})
