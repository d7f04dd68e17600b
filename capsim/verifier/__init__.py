"""The bank-side CAP verifier (verifier.md).

Public entry points: :class:`~capsim.verifier.service.Verifier` (the service),
:class:`~capsim.verifier.policy.VerifierPolicy`, the
:class:`~capsim.verifier.provider.CryptogramProvider` protocol with its
:class:`~capsim.verifier.provider.SoftwareProvider`, the :class:`~capsim.verifier.store.Store`
protocol with the in-memory :class:`~capsim.verifier.memory.MemoryStore`, and the model
values of :mod:`capsim.verifier.model`, and the certificate credential's
:class:`~capsim.verifier.certificates.CertificateVerifier`. Submodules are imported lazily,
so importing one store does not pull in the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capsim.verifier.audit import AuditEntry, AuditRecord, check_chain
    from capsim.verifier.certificates import CertificateVerifier
    from capsim.verifier.memory import MemoryStore
    from capsim.verifier.model import (
        Acceptance,
        Credential,
        CredentialProfile,
        CredentialState,
        Operation,
        OperationMode,
        User,
    )
    from capsim.verifier.policy import VerifierPolicy
    from capsim.verifier.provider import CryptogramProvider, SoftwareProvider
    from capsim.verifier.service import Verifier
    from capsim.verifier.store import Store, StoreTransaction

__all__ = [
    "Acceptance",
    "AuditEntry",
    "AuditRecord",
    "CertificateVerifier",
    "Credential",
    "CredentialProfile",
    "CredentialState",
    "CryptogramProvider",
    "MemoryStore",
    "Operation",
    "OperationMode",
    "SoftwareProvider",
    "Store",
    "StoreTransaction",
    "User",
    "Verifier",
    "VerifierPolicy",
    "check_chain",
]

_WHERE = {
    "AuditEntry": "audit",
    "AuditRecord": "audit",
    "check_chain": "audit",
    "CertificateVerifier": "certificates",
    "MemoryStore": "memory",
    "Acceptance": "model",
    "Credential": "model",
    "CredentialProfile": "model",
    "CredentialState": "model",
    "Operation": "model",
    "OperationMode": "model",
    "User": "model",
    "VerifierPolicy": "policy",
    "CryptogramProvider": "provider",
    "SoftwareProvider": "provider",
    "Verifier": "service",
    "Store": "store",
    "StoreTransaction": "store",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'capsim.verifier' has no attribute {name!r}")
    return getattr(importlib.import_module(f"capsim.verifier.{module}"), name)
