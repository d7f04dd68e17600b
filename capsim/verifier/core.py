"""The plumbing every part of the verifier service shares: transactions, audit, metrics, padding.

Theory of operation (verifier.md §1, §5; V22, V25, V30, V37)
------------------------------------------------------------
1. **One object, no I/O of its own.** :class:`ServiceCore` holds what the service's modules
   (:mod:`.enrolment`, :mod:`.lifecycle`, :mod:`.operations`, :mod:`.verification`,
   :mod:`.floor`, :mod:`.issuerscript`) work with: the store, the provider, the policy, the
   node name, the permanent-block hook, the monotonic clock and the metrics. The modules are
   functions taking it as their first argument; :class:`~capsim.verifier.service.Verifier`
   builds one and delegates to them. Nothing here imports those modules.
2. **Policy at construction.** With no policy given, the one stored by an earlier run is
   loaded (else the defaults). The profiles given are checked against the false-accept ceiling
   (V5) and size the dummy padding; a policy that differs from the stored one is stored and
   recorded, with its bound, in the audit.
3. **Failures are temporary.** :meth:`ServiceCore.tx` opens a store transaction (sealed when
   the provider holds an audit seal key) whose unexpected errors become
   :class:`~capsim.errors.TemporaryFailure` (V25); capsim's own errors pass unchanged. A write
   that had to touch one row and did not raises :class:`ConflictError` inside it, which is a
   temporary failure too unless the caller keeps it (verifications turn it into the uniform
   reject). :func:`provider_failures` does the same around a provider call.
4. **Audit entries** carry this node's name (:meth:`ServiceCore.entry`); **metrics** count
   matcher calls, candidate and dummy recomputations under a lock (V4, V20);
   :meth:`ServiceCore.dummy` spends recomputations that can never match, so refusals take as
   long as evaluations (V30).
5. **Permissions** go through the one check of :mod:`capsim.verifier.authority`
   (:meth:`ServiceCore.authorize`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from capsim.errors import ConfigError, TemporaryFailure, ValidationError, VerifierError
from capsim.jsonlimits import loads_limited
from capsim.verifier import checks, decision, engine
from capsim.verifier.audit import AuditEntry, AuditProblem, AuditTip, check_chain
from capsim.verifier.authority import Power, authorize
from capsim.verifier.model import Credential, CredentialProfile
from capsim.verifier.policy import BoundReport, VerifierPolicy, false_accept_bound
from capsim.verifier.provider import CryptogramProvider
from capsim.verifier.store import Store, StoreTransaction

__all__ = [
    "CRED_PREFIX",
    "OP_PREFIX",
    "ConflictError",
    "ServiceCore",
    "VerifierMetrics",
    "provider_failures",
]

# the service's logger, whichever of its modules logs (logging configured by name keeps working)
_log = logging.getLogger("capsim.verifier.service")

#: Prefix of operation ids.
OP_PREFIX: Final = "op-"
#: Prefix of credential ids.
CRED_PREFIX: Final = "cr-"
#: The store setting where the audit sealing start is recorded (the keyring file keeps its own copy).
_SEAL_SETTING: Final = "audit.seal"


class ConflictError(Exception):
    """A write that had to touch exactly one row did not (roll back and reject)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifierMetrics:
    """Instrumentation counters (V4, V20): verify calls that ran the matcher, candidate
    recomputations, and dummy recomputations (unknown credentials and bare refusals)."""

    evaluation_calls: int
    candidate_evaluations: int
    dummy_evaluations: int


@contextmanager
def provider_failures() -> Iterator[None]:
    """Around a provider call: capsim input/config errors pass; any other failure is temporary."""
    try:
        yield
    except (ValidationError, ConfigError):
        raise
    except Exception:
        raise TemporaryFailure("cryptogram provider unavailable") from None


class ServiceCore:
    """What the service's modules share (module docstring); built by the
    :class:`~capsim.verifier.service.Verifier`, whose parameters it takes."""

    policy: VerifierPolicy

    def __init__(
        self,
        store: Store,
        provider: CryptogramProvider,
        *,
        policy: VerifierPolicy | None,
        node: str,
        profiles: Sequence[CredentialProfile],
        on_before_permanent_block: Callable[[Credential], None] | None,
        monotonic: Callable[[], float],
    ) -> None:
        self.store = store
        self.provider = provider
        self.node = checks.ident("node", node)
        self.hook = on_before_permanent_block
        self.monotonic = monotonic
        self._metrics_lock = threading.Lock()
        self._calls = 0
        self._evals = 0
        self._dummies = 0
        #: Recomputations a verification is padded to (V30).
        self.dummy_size = 1
        #: The credential profile unknown targets are evaluated under (V30): the first profile
        #: given to the constructor, then the last real credential's.
        self.typical_profile: CredentialProfile = profiles[0] if profiles else decision.DUMMY_PROFILE
        with self.tx() as tx:
            stored = tx.get_setting("policy")
            if policy is None:
                policy = VerifierPolicy.from_json(stored) if stored else VerifierPolicy()
            self.policy = policy
            reports = [self.check_bound(p) for p in profiles]
            self.dummy_size = max([policy.history_variants, *(r.candidates * r.variants for r in reports)])
            current = policy.to_json()
            if stored != current:
                worst = max((r.probability for r in reports), default=0.0)
                tx.set_setting("policy", current)
                tx.append_audit(
                    self.entry(
                        event="policy",
                        outcome="ok",
                        details={"policy": current, "false_accept_bound": f"{worst:.3g}"},
                    )
                )

    # -- transactions ------------------------------------------------------------------------------
    @contextmanager
    def tx(self, *, keep_conflict: bool = False) -> Iterator[StoreTransaction]:
        """A store transaction whose unexpected errors become :class:`TemporaryFailure` (V25).

        A write that had to touch one row and did not (a concurrent change) is a temporary
        failure too, except for ``verify``/``resync``, which turn it into the uniform reject.
        """
        try:
            # the provider seals the audit records when it holds a seal key (audit.py rule 4);
            # the keyword is passed only then, so stores that predate it keep working unsealed
            seal_key = getattr(self.provider, "audit_seal_key_id", None)
            if seal_key is not None and seal_key() is not None:
                opened = self.store.transaction(lock_timeout=self._lock_timeout(), sealer=self.provider)
            else:
                opened = self.store.transaction(lock_timeout=self._lock_timeout())
            with opened as tx:
                yield tx
        except ConflictError:
            if keep_conflict:
                raise
            raise TemporaryFailure("concurrent update; retry") from None
        except (VerifierError, ValidationError, ConfigError):
            raise
        except Exception as exc:
            _log.warning("store failure (%s): treated as a temporary failure", type(exc).__name__)
            raise TemporaryFailure("verifier store unavailable") from None

    def _lock_timeout(self) -> float:
        policy = getattr(self, "policy", None)
        return 2.0 if policy is None else float(policy.lock_timeout_s)

    @staticmethod
    def must(rows: int) -> None:
        """A write that had to touch exactly one row: anything else rolls back (:class:`ConflictError`)."""
        if rows != 1:
            raise ConflictError

    # -- audit, permissions, time ------------------------------------------------------------------
    def entry(self, **fields: object) -> AuditEntry:
        """An audit entry of this node."""
        return AuditEntry(node=self.node, **fields)  # type: ignore[arg-type]

    def authorize(
        self, tx: StoreTransaction, acting_user: str | None, customer_id: str, power: Power
    ) -> None:
        """The one permission check (:mod:`capsim.verifier.authority`)."""
        if acting_user is None:
            return  # the bank's own operator
        authorize(tx.get_user(acting_user), power, customer_id)

    def us(self, t0: float) -> int:
        """Microseconds since ``t0`` on the monotonic clock."""
        return max(0, int((self.monotonic() - t0) * 1_000_000))

    def check_audit(
        self, *, sealed_from: int | None = None, tip: AuditTip | None = None
    ) -> tuple[AuditProblem, ...]:
        """The chain checker over the whole audit (:meth:`Verifier.check_audit
        <capsim.verifier.service.Verifier.check_audit>`)."""
        sealer = self.provider if self.provider.audit_seal_key_id() is not None else None
        try:
            if sealer is not None and sealed_from is None:
                with self.store.transaction(lock_timeout=self.policy.lock_timeout_s) as tx:
                    raw = tx.get_setting(_SEAL_SETTING)
                recorded = (
                    None if raw is None else loads_limited(raw, what="audit seal setting", error=ConfigError)
                )
                sealed_from = int(recorded["sealed_from"]) if isinstance(recorded, dict) else None
            return check_chain(self.store.audit_records(), sealer=sealer, sealed_from=sealed_from, tip=tip)
        except (ValidationError, ConfigError):
            raise
        except Exception:
            raise TemporaryFailure("verifier store unavailable") from None

    # -- codes, bounds, metrics, padding -----------------------------------------------------------
    def parse(self, code: object) -> engine.PresentedCode:
        """A presented code, checked against the policy's display (V7)."""
        return engine.parse_code(
            code, digits=self.policy.display_digits, accept_unpadded=self.policy.accept_unpadded
        )

    def check_bound(self, profile: CredentialProfile) -> BoundReport:
        """V5's bound for ``profile``; :class:`ConfigError` above the policy's ceiling."""
        report = false_accept_bound(profile, self.policy)
        if report.probability > self.policy.false_accept_ceiling:
            raise ConfigError(
                f"false-accept bound {report.probability:.3g} exceeds the ceiling "
                f"{self.policy.false_accept_ceiling:.3g} (max_fail={report.max_fail}, "
                f"candidates={report.candidates}, variants={report.variants}, ac_bits={report.ac_bits})"
            )
        return report

    def count(self, calls: int = 0, evals: int = 0, dummies: int = 0) -> None:
        """Add to the metrics."""
        with self._metrics_lock:
            self._calls += calls
            self._evals += evals
            self._dummies += dummies

    def metrics(self) -> VerifierMetrics:
        """The metrics since construction."""
        with self._metrics_lock:
            return VerifierMetrics(
                evaluation_calls=self._calls,
                candidate_evaluations=self._evals,
                dummy_evaluations=self._dummies,
            )

    def pad(self, card: engine.CardCandidate | None, count: int) -> None:
        """Spend ``count`` recomputations that never match, through ``card``'s own AC function
        (a dummy card of the typical profile when ``None``): padding costs what a candidate of
        that card costs, so the time does not tell how many real candidates there were (V30).
        Called even for 0 evaluations, so the provider calls stay the same."""
        try:
            n = engine.pad_evaluate(card or self.dummy_card(), self.provider, evaluations=max(count, 0))
        except Exception:  # padding must never change the outcome
            n = 0
        self.count(dummies=n)

    def dummy_card(self) -> engine.CardCandidate:
        """The card an unknown target is evaluated against: the provider's dummy key under the
        profile of the credentials this verifier last evaluated."""
        return engine.CardCandidate(
            credential_id="",
            key_ref=self.provider.dummy_key_ref(),
            psn="00",
            profile=self.typical_profile,
            last_atc=-1,
            variants=self.policy.history_variants,
        )
