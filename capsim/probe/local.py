"""Probing capsim's own verifier in this process: :class:`LibraryAdapter`.

Theory of operation
-------------------
1. The adapter drives a :class:`capsim.verifier.Verifier` (any store: memory, SQLite,
   PostgreSQL) through its public API: ``add_user``, ``issue_activation_code`` and
   ``enroll_card`` to enrol, ``issue_operation`` to issue, ``verify`` to submit.
2. ``verify``'s :class:`~capsim.errors.InvalidCode` is ``REJECT`` and
   :class:`~capsim.errors.RequestConflict` is ``CONFLICT``; a ``ValidationError`` or
   ``ConfigError`` from ``issue_operation`` is a :class:`~capsim.probe.adapter.Refused`.
   Temporary failures propagate (the run stops).
3. The claimed :class:`~capsim.probe.adapter.Limits` are the verifier's policy unless given: a
   test can claim a policy the verifier does not keep, as a bank's documentation might.
4. :func:`memory_verifier` builds the default target of ``capsim probe``: an in-memory
   verifier holding freshly generated issuer keys, nothing written anywhere.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from capsim.errors import ConfigError, InvalidCode, RequestConflict, ValidationError
from capsim.probe.adapter import (
    ALL_MODES,
    Issued,
    Limits,
    OperationRequest,
    Refused,
    Target,
    TargetKind,
    Verdict,
)

if TYPE_CHECKING:
    from capsim.cards import EmvCapCard
    from capsim.issuerkeys import IssuerKeys
    from capsim.verifier.service import Verifier

__all__ = ["LibraryAdapter", "limits_of", "memory_verifier"]


def limits_of(verifier: Verifier) -> Limits:
    """The :class:`Limits` of a verifier's policy."""
    p = verifier.policy
    return Limits(
        max_fail=p.max_fail,
        atc_window=p.atc_window,
        max_atc_gap=p.max_atc_gap,
        max_attempts_per_operation=p.max_attempts_per_operation,
    )


def memory_verifier() -> tuple[Verifier, IssuerKeys, str]:
    """An in-memory verifier, the issuer keys it holds and their key id (module docstring, rule 4)."""
    from capsim.issuerkeys import IssuerKeys
    from capsim.verifier.memory import MemoryStore
    from capsim.verifier.provider import SoftwareProvider
    from capsim.verifier.service import Verifier

    keys = IssuerKeys(
        imk_ac=secrets.token_bytes(16), imk_smi=secrets.token_bytes(16), imk_smc=secrets.token_bytes(16)
    )
    provider = SoftwareProvider()
    provider.add_issuer_keys("probe", imk_ac=keys.imk_ac, imk_smi=keys.imk_smi, imk_smc=keys.imk_smc)
    return Verifier(MemoryStore(), provider), keys, "probe"


class LibraryAdapter:
    """A :class:`~capsim.probe.adapter.VerifierAdapter` over a :class:`~capsim.verifier.Verifier`.

    Parameters
    ----------
    verifier:
        The verifier (its store and provider are the caller's; :meth:`close` leaves them open).
    issuer_key_id:
        The provider's key id of the issuer keys the probe's cards are made with.
    name:
        What the report calls the target.
    limits:
        The claimed policy (default: the verifier's own, rule 3).
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        issuer_key_id: str,
        name: str = "capsim verifier (library)",
        limits: Limits | None = None,
    ) -> None:
        self._verifier = verifier
        self._key_id = issuer_key_id
        self._name = name
        self._limits = limits

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> Limits:
        return self._limits or limits_of(self._verifier)

    @property
    def modes(self) -> frozenset[str]:
        return ALL_MODES

    @property
    def request_ids(self) -> bool:
        return True

    def enroll(self, card: EmvCapCard, *, user: str, first_code: str) -> str:
        if self._verifier.get_user(user) is None:
            self._verifier.add_user(user)
        activation = self._verifier.issue_activation_code(user)
        cred = self._verifier.enroll_card(
            activation.code, card.profile, issuer_key_id=self._key_id, first_code=first_code
        )
        return cred.credential_id

    def issue(self, credential: str, request: OperationRequest) -> Issued | Refused:
        try:
            op = self._verifier.issue_operation(
                credential,
                mode=request.mode,
                reference=request.reference,
                amount=request.amount_minor,
                currency=request.currency,
                payee=request.payee,
                fields=list(request.fields) if request.mode == "tds" else None,
            )
        except (ValidationError, ConfigError) as exc:
            return Refused(str(exc))
        return Issued(target=Target("operation", op.operation_id), request=request, challenge=op.challenge)

    def submit(self, target: Target, code: str, *, request_id: str | None = None) -> Verdict:
        rid = request_id or "probe-" + secrets.token_hex(8)
        try:
            self._verifier.verify(target.id, code, request_id=rid)
        except InvalidCode:
            return Verdict.REJECT
        except RequestConflict:
            return Verdict.CONFLICT
        return Verdict.ACCEPT

    def unknown(self, kind: TargetKind) -> Target:
        prefix = "cr-" if kind == "credential" else "op-"
        return Target(kind, prefix + secrets.token_hex(8))

    def close(self) -> None:
        return None
