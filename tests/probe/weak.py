"""Deliberately weakened verifiers: each breaks one rule the probe checks.

They are subclasses of capsim's :class:`~capsim.verifier.service.Verifier` that change what
``verify`` does through its public API only, the way a bank's own verifier might get one rule
wrong; the policy-level weaknesses (a lockout off by one, a wider ATC window) are a real
verifier run under another policy than the one claimed.
"""

from __future__ import annotations

import secrets
import time

from capsim.errors import InvalidCode
from capsim.verifier.model import Acceptance
from capsim.verifier.service import Verifier


class ReplayingVerifier(Verifier):
    """Accepts an accepted code again for the same target (no single use: V2, V14)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.accepted: dict[tuple[str, str], Acceptance] = {}

    def verify(self, target: str, code: str, *, request_id: str) -> Acceptance:
        if (target, code) in self.accepted:
            return self.accepted[target, code]
        acceptance = super().verify(target, code, request_id=request_id)
        self.accepted[target, code] = acceptance
        return acceptance


class ForgetfulRequestIds(Verifier):
    """Ignores request ids: every call is a new request (V24)."""

    def verify(self, target: str, code: str, *, request_id: str) -> Acceptance:
        return super().verify(target, code, request_id=request_id + "-" + secrets.token_hex(4))


class SiblingBypass(Verifier):
    """After a refusal, tries the code on the user's locked sibling cards (V11, V29)."""

    def verify(self, target: str, code: str, *, request_id: str) -> Acceptance:
        try:
            return super().verify(target, code, request_id=request_id)
        except InvalidCode:
            cred = self.get_credential(target) if target.startswith("cr-") else None
            if cred is None:
                raise
            for other in self.list_credentials(cred.user_id):
                if other.credential_id != target and other.locked_until is not None:
                    self.unlock(other.credential_id)
                    return super().verify(other.credential_id, code, request_id=request_id + "-sibling")
            raise


class SlowOnKnownTargets(Verifier):
    """Refuses a code for a target it knows 3 ms later than for one it does not (V30)."""

    def verify(self, target: str, code: str, *, request_id: str) -> Acceptance:
        known = (
            self.get_credential(target) if target.startswith("cr-") else self.get_operation(target)
        ) is not None
        try:
            return super().verify(target, code, request_id=request_id)
        except InvalidCode:
            if known:
                time.sleep(0.003)
            raise
