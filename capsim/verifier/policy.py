"""Verifier policy: windows, lockout, TTLs, the PSD2 profile and the false-accept bound.

All limits of verifier.md §2 live here as one frozen value. :meth:`VerifierPolicy.validate`
refuses impossible or (for the PSD2 profile) non-compliant combinations with
:class:`~capsim.errors.ConfigError`; :func:`false_accept_bound` computes V5's
P = ``max_fail`` × C × V / 2^a for a credential profile.

>>> p = VerifierPolicy()
>>> p.max_fail, p.atc_window, p.operation_ttl_s, p.max_attempts_per_operation
(5, 16, 120, 3)
>>> VerifierPolicy.psd2_profile(operation_ttl_s=301)
Traceback (most recent call last):
...
capsim.errors.ConfigError: operation_ttl_s: the PSD2 profile allows at most 300 s (RTS Art. 4(3)(d)), got 301
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from capsim.errors import ConfigError
from capsim.jsonlimits import loads_limited
from capsim.verifier.model import CredentialProfile

__all__ = [
    "DEFAULT_FALSE_ACCEPT_CEILING",
    "BoundReport",
    "VerifierPolicy",
    "effective_variants",
    "false_accept_bound",
    "ipb_layout",
]

#: Default ceiling of the false-accept bound per lock period (V5) [choice].
DEFAULT_FALSE_ACCEPT_CEILING: Final = 1e-4
_PSD2_MAX_FAIL: Final = 5
_PSD2_MAX_TTL_S: Final = 300
_MAX_ATC: Final = 0xFFFF


@dataclass(frozen=True, kw_only=True)
class VerifierPolicy:
    """Every verifier limit (verifier.md §2; defaults are capsim choices).

    Attributes
    ----------
    atc_window:
        W: ATCs ``last_atc + 1 … last_atc + W`` are candidates (V1, V4).
    max_atc_gap:
        Largest ATC gap accepted for an Identify code without an operation (V18; ≤ W).
    allow_identify_without_operation:
        Whether ``verify(credential_id, …)`` accepts Identify logins at all (V18).
    max_fail:
        Consecutive failures before a temporary lock (V28; PSD2: ≤ 5).
    lock_duration_s:
        Length of a temporary lock (V29).
    escalate_after, escalation_period_s:
        Temporary locks within the period after which the credential blocks (V31).
    max_attempts_per_operation:
        Failed attempts that close an operation (V14; ≤ ``max_fail``).
    operation_ttl_s:
        Operation lifetime (V15; PSD2: ≤ 300 s).
    activation_ttl_s:
        Lifetime of an activation code (24 h).
    max_active_credentials:
        Non-terminal credentials per user (5).
    sync_window, resync_count, resync_max_interval_s:
        Resync search range, number of consecutive codes (2 or 3) and their time limit (V34).
    auto_resync:
        Park a code found beyond the window and accept the next consecutive one (V35; off).
    try_sibling_cards:
        Also try the other active cards that share the credential's PAN (V11).
    false_accept_ceiling:
        Ceiling of P (V5).
    lock_timeout_s:
        Seconds to wait for the credential row lock (V22).
    psd2:
        Apply the PSD2 payment profile rules (V15, V17, V28).
    history_variants:
        IAD (card history) variants tried per candidate ATC, most likely first (V10). A
        credential's first code (activation, or ``last_atc`` −1) is tried with at least 2
        (the first code ever differs, cap-protocol.md §9.6); right after an issuer script
        every variant is tried once.
    display_digits:
        Digits of a presented code (V7); credentials must use the same.
    accept_unpadded:
        Accept codes typed without their leading zeros (V7; off).
    """

    atc_window: int = 16
    max_atc_gap: int = 16
    allow_identify_without_operation: bool = True
    max_fail: int = 5
    lock_duration_s: int = 900
    escalate_after: int = 3
    escalation_period_s: int = 86_400
    max_attempts_per_operation: int = 3
    operation_ttl_s: int = 120
    activation_ttl_s: int = 86_400
    max_active_credentials: int = 5
    sync_window: int = 256
    resync_count: int = 2
    resync_max_interval_s: int = 300
    auto_resync: bool = False
    try_sibling_cards: bool = True
    false_accept_ceiling: float = DEFAULT_FALSE_ACCEPT_CEILING
    lock_timeout_s: float = 2.0
    psd2: bool = False
    display_digits: int = 8
    accept_unpadded: bool = False
    history_variants: int = 2

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def psd2_profile(cls, **overrides: object) -> VerifierPolicy:
        """The PSD2 payment profile (RTS Art. 4, 5): strict limits, validated."""
        return cls(**{"psd2": True, **overrides})  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first impossible or non-compliant field."""
        ints = {
            "atc_window": (1, _MAX_ATC),
            "max_atc_gap": (0, _MAX_ATC),
            "max_fail": (1, 100),
            "lock_duration_s": (1, 10**8),
            "escalate_after": (1, 1000),
            "escalation_period_s": (1, 10**9),
            "max_attempts_per_operation": (1, 100),
            "operation_ttl_s": (1, 10**7),
            "activation_ttl_s": (1, 10**8),
            "max_active_credentials": (1, 1000),
            "sync_window": (1, _MAX_ATC),
            "resync_count": (2, 3),
            "resync_max_interval_s": (1, 86_400),
            "display_digits": (4, 16),
            "history_variants": (1, 64),
        }
        for name, (lo, hi) in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{name}: expected an integer in {lo}..{hi}, got {value!r}")
        if self.max_atc_gap > self.atc_window:
            raise ConfigError(
                f"max_atc_gap: must not exceed atc_window ({self.atc_window}), got {self.max_atc_gap}"
            )
        if self.max_attempts_per_operation > self.max_fail:
            raise ConfigError(
                "max_attempts_per_operation: must not exceed max_fail "
                f"({self.max_fail}), got {self.max_attempts_per_operation}"
            )
        if self.sync_window < self.atc_window:
            raise ConfigError(f"sync_window: must be at least atc_window ({self.atc_window})")
        ceiling = self.false_accept_ceiling
        if not isinstance(ceiling, float | int) or not 0 < ceiling < 1:
            raise ConfigError(f"false_accept_ceiling: expected a number in (0, 1), got {ceiling!r}")
        if not isinstance(self.lock_timeout_s, float | int) or not 0 < self.lock_timeout_s <= 60:
            raise ConfigError(f"lock_timeout_s: expected seconds in (0, 60], got {self.lock_timeout_s!r}")
        if self.psd2:
            if self.max_fail > _PSD2_MAX_FAIL:
                raise ConfigError(
                    f"max_fail: the PSD2 profile allows at most {_PSD2_MAX_FAIL} (RTS Art. 4(3)(b)), "
                    f"got {self.max_fail}"
                )
            if self.operation_ttl_s > _PSD2_MAX_TTL_S:
                raise ConfigError(
                    f"operation_ttl_s: the PSD2 profile allows at most {_PSD2_MAX_TTL_S} s "
                    f"(RTS Art. 4(3)(d)), got {self.operation_ttl_s}"
                )

    def to_json(self) -> str:
        """Serialise (for the store's settings and the audit)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VerifierPolicy:
        """Inverse of :meth:`to_json`; unknown fields raise :class:`ConfigError`."""
        try:
            data = loads_limited(text, what="policy: malformed serialised policy", error=ConfigError)
            if not isinstance(data, Mapping):
                raise TypeError("not an object")
            return cls(**data)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"policy: malformed serialised policy ({exc})") from None


@dataclass(frozen=True, kw_only=True)
class BoundReport:
    """The terms of V5's false-accept bound for one credential profile."""

    probability: float
    max_fail: int
    candidates: int
    variants: int
    ac_bits: int
    atc_bits: int


def ipb_layout(profile: CredentialProfile, *, tds: bool = False) -> tuple[int, int, int]:
    """Count the IPB bits on the ATC, on the AC (or TDS MAC) and on the IAD (cap-protocol.md §6).

    Returns ``(atc_bits, ac_bits, iad_bits)``; the data string is
    ``[PSN] ‖ CID ‖ ATC(2) ‖ AC(8) ‖ IAD``.

    >>> from capsim.verifier.model import CredentialProfile
    >>> natwest = CredentialProfile(reader_profile="mc-cap", cdol1=b"", aip=b"\\x10\\x00",
    ...     ipb=bytes.fromhex("00001F00000000000FFFFF00000000008000"), iaf=b"\\xa0", cvn=10,
    ...     iad_variants=(bytes(7),))
    >>> ipb_layout(natwest)
    (5, 20, 1)
    """
    del tds  # the TDS MAC takes the AC's place: same positions
    off = 1 if profile.psn_in_data else 0
    ipb = profile.ipb

    def bits(lo: int, hi: int) -> int:
        return sum(b.bit_count() for b in ipb[lo:hi])

    return bits(off + 1, off + 3), bits(off + 3, off + 11), bits(off + 11, len(ipb))


def effective_variants(profile: CredentialProfile, limit: int | None = None) -> int:
    """V of V4/V5 for one card: the largest group of IAD variants that the code cannot tell apart.

    Variants differing in an IPB-covered IAD bit are told apart by the code itself (the engine
    evaluates only those matching it), so only the largest group sharing the same visible bits
    multiplies the candidates.
    """
    off = (1 if profile.psn_in_data else 0) + 11
    mask = profile.ipb[off:]
    groups: dict[bytes, int] = {}
    for iad in profile.iad_variants[:limit]:
        key = bytes(a & b for a, b in zip(mask, iad, strict=False))
        groups[key] = groups.get(key, 0) + 1
    return max(groups.values(), default=1)


def false_accept_bound(
    profile: CredentialProfile, policy: VerifierPolicy, *, variants: int | None = None, tds: bool = False
) -> BoundReport:
    """V5: P = ``max_fail`` × C × V / 2^a for one profile under ``policy``.

    C = ⌈W / 2^k⌉ (k disclosed ATC bits; W = the larger of the ATC window and the resync
    window when auto-resync is on), V = the history/PSN variants evaluated per candidate ATC
    (by default the profile's IAD variants), a = the IPB bits on the AC or TDS MAC bytes.
    """
    atc_bits, ac_bits, _ = ipb_layout(profile, tds=tds)
    window = max(policy.atc_window, policy.sync_window if policy.auto_resync else 0)
    candidates = math.ceil(window / (1 << atc_bits))
    v = effective_variants(profile, policy.history_variants) if variants is None else variants
    v = max(v, 1)
    p = policy.max_fail * candidates * v / float(1 << ac_bits)
    return BoundReport(
        probability=p,
        max_fail=policy.max_fail,
        candidates=candidates,
        variants=v,
        ac_bits=ac_bits,
        atc_bits=atc_bits,
    )
