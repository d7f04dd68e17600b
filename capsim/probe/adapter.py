"""The adapter protocol: how ``capsim probe`` talks to a verifier it does not know.

Theory of operation
-------------------
1. **Two verbs and an enrolment.** A verifier is probed through three calls only:
   :meth:`VerifierAdapter.enroll` binds an emulated card to a user, :meth:`VerifierAdapter.issue`
   asks for an operation (a challenge bound to data), :meth:`VerifierAdapter.submit` presents a
   code for an operation or, for an Identify login, for a credential. Everything else the
   checks learn, they learn from what those calls answer.
2. **Answers are data.** ``submit`` returns a :class:`Verdict` (``ACCEPT``, ``REJECT``,
   ``CONFLICT`` for a request id reused with another request) and never raises for a refusal;
   ``issue`` returns an :class:`Issued` or a :class:`Refused` (the verifier would not create the
   operation, e.g. for ___domain separation). Only a verifier that cannot be reached, or answers
   something the adapter does not understand, raises (a :class:`~capsim.errors.CapsimError`:
   the run stops, it is not a check failure).
3. **What the verifier claims.** :attr:`VerifierAdapter.limits` is the policy the verifier is
   configured with (its lockout count, its ATC windows); the checks test the behaviour against
   it. :attr:`VerifierAdapter.modes` names the modes ``issue`` can ask for and
   :attr:`VerifierAdapter.request_ids` whether ``submit`` honours request ids; a check that
   needs more is skipped, with the reason.
4. **Targets** are :class:`Target` values: the adapter's own identifiers, opaque to the checks.
   :meth:`VerifierAdapter.unknown` gives a target that names nothing, for the uniform-reject
   checks.
5. An adapter is the only place with I/O; the checks (:mod:`capsim.probe.checks`) are functions
   of an adapter and the cards enrolled through it. Ready adapters:
   :class:`capsim.probe.local.LibraryAdapter` (capsim's :class:`~capsim.verifier.Verifier`, any
   store), :class:`capsim.probe.http.CapsimHttpAdapter` (capsim's HTTP service, ``/v1``) and
   :class:`capsim.probe.http.PrivacyIdeaAdapter` (``/validate/triggerchallenge`` +
   ``/validate/check``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from capsim.cards import EmvCapCard

__all__ = [
    "ALL_MODES",
    "Capabilities",
    "Enroller",
    "Issued",
    "Limits",
    "OperationRequest",
    "Refused",
    "Target",
    "TargetKind",
    "Verdict",
    "VerifierAdapter",
]

#: The CAP modes an operation can be issued for.
ALL_MODES: frozenset[str] = frozenset({"identify", "respond", "sign", "tds"})

TargetKind = Literal["credential", "operation"]


class Verdict(enum.Enum):
    """What the verifier answered to one code."""

    ACCEPT = "accept"
    REJECT = "reject"
    #: The request id was used before for another request (nothing was evaluated).
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Target:
    """What a code is presented for: a credential (Identify login) or an operation."""

    kind: TargetKind
    id: str

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """The policy the verifier claims (verifier.md V1, V14, V18, V28); capsim's defaults.

    Attributes
    ----------
    max_fail:
        Consecutive wrong codes that lock a credential (V28).
    atc_window:
        ATCs above the last accepted one that a code for an operation may come from (V1).
    max_atc_gap:
        The same for an Identify login without an operation (V18).
    max_attempts_per_operation:
        Wrong codes after which an operation closes (V14).
    """

    max_fail: int = 5
    atc_window: int = 16
    max_atc_gap: int = 16
    max_attempts_per_operation: int = 3

    def to_dict(self) -> dict[str, int]:
        return {
            "max_fail": self.max_fail,
            "atc_window": self.atc_window,
            "max_atc_gap": self.max_atc_gap,
            "max_attempts_per_operation": self.max_attempts_per_operation,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class OperationRequest:
    """An operation the probe asks for (the verifier draws the challenge unless ``reference``).

    ``amount_minor`` in minor units, ``currency`` ISO 4217 alpha (``"EUR"``), ``fields`` the TDS
    data fields, ``reference`` a Sign payee reference the caller chooses.
    """

    mode: str
    amount_minor: int | None = None
    currency: str | None = None
    payee: str | None = None
    fields: tuple[str, ...] = ()
    reference: str | None = None

    def describe(self) -> str:
        parts = [self.mode]
        if self.reference is not None:
            parts.append(f"reference {self.reference}")
        if self.amount_minor is not None:
            parts.append(f"amount {self.amount_minor}")
        if self.currency is not None:
            parts.append(self.currency)
        if self.payee is not None:
            parts.append(f"payee {self.payee}")
        if self.fields:
            parts.append("fields " + ",".join(self.fields))
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True, slots=True)
class Issued:
    """An operation the verifier created: its target and the challenge it shows the user."""

    target: Target
    request: OperationRequest
    #: The 8-digit challenge (Respond, Sign) or ``""`` (Identify, TDS).
    challenge: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """The verifier would not create the operation; ``reason`` is its message."""

    reason: str


@runtime_checkable
class Enroller(Protocol):
    """Binds an emulated card to a user of the verifier; returns the credential's target id."""

    def enroll(self, card: EmvCapCard, *, user: str, first_code: str) -> str:
        """Enrol ``card`` for ``user`` (created when new); ``first_code`` is its first Identify code."""
        ...


@runtime_checkable
class VerifierAdapter(Enroller, Protocol):
    """A verifier under probe (module docstring). Implement it to probe your own verifier."""

    @property
    def name(self) -> str:
        """What is probed, for the report (never a key or a password)."""
        ...

    @property
    def limits(self) -> Limits:
        """The policy the verifier is configured with."""
        ...

    @property
    def modes(self) -> frozenset[str]:
        """The modes :meth:`issue` can ask for (a subset of :data:`ALL_MODES`)."""
        ...

    @property
    def request_ids(self) -> bool:
        """Whether :meth:`submit` passes request ids on (idempotent retries, V24)."""
        ...

    def issue(self, credential: str, request: OperationRequest) -> Issued | Refused:
        """Ask for an operation on ``credential`` (an id :meth:`enroll` returned)."""
        ...

    def submit(self, target: Target, code: str, *, request_id: str | None = None) -> Verdict:
        """Present ``code`` for ``target``; a refusal of any kind is ``REJECT``."""
        ...

    def unknown(self, kind: TargetKind) -> Target:
        """A target of ``kind`` that names nothing the verifier knows."""
        ...

    def close(self) -> None:
        """Release connections (the verifier's own state is left as it is)."""
        ...


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a check needs from an adapter (:attr:`modes` and :attr:`request_ids`)."""

    modes: frozenset[str] = field(default_factory=frozenset)
    request_ids: bool = False

    def missing(self, adapter: VerifierAdapter) -> str | None:
        """Why ``adapter`` cannot run a check with these needs, or ``None``."""
        lacking: Sequence[str] = sorted(self.modes - adapter.modes)
        if lacking:
            return f"the adapter cannot issue {', '.join(lacking)} operations"
        if self.request_ids and not adapter.request_ids:
            return "the adapter does not pass request ids on"
        return None
