"""API clients of the verifier service: who calls it, with which key and which scope.

Theory of operation
-------------------
1. **A client** (:class:`ApiClient`) is a caller of the HTTP service (``capsim verifier
   serve``): a bank backend, an authentication front end, a company's administration portal.
   It has an id (``cl-…``), a name, one :class:`ClientScope` and, for a customer
   administrator, the administrator user it acts as (``acting_user``).
2. **Keys are shown once and stored hashed.** :func:`new_api_key` draws 256 random bits and
   returns the key the caller keeps (``capsim_<client id>_<secret>``) and the SHA-256 digest
   of the secret, the only thing stored. A key of that strength needs no slow hash: nothing
   short of the key finds a preimage. :func:`parse_api_key` splits a presented key without
   touching any store, :func:`key_matches` compares digests with :func:`hmac.compare_digest`.
3. **Scopes** (what each may call is the service's table, ``docs/http-api.md``):
   ``operator`` is the bank's operator (everything, ``acting_user=None`` for the verifier);
   ``verification`` issues operations, verifies codes and logs users in (the backend's key);
   ``customer-admin`` acts as one customer administrator, with the powers of
   :data:`capsim.verifier.authority.CUSTOMER_ADMIN_POWERS` over its own account only.
4. **Rotation and revocation** replace the digest or set ``revoked_at``; both are
   compare-and-swap on ``version`` in the store, like credentials.

>>> key, digest = new_api_key("cl-0123456789abcdef")
>>> parsed = parse_api_key(key)
>>> parsed is not None and parsed[0] == "cl-0123456789abcdef" and key_matches(parsed[1], digest)
True
>>> parse_api_key("not a key") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

__all__ = [
    "ApiClient",
    "ClientScope",
    "key_digest",
    "key_matches",
    "new_api_key",
    "new_client_id",
    "parse_api_key",
]

_KEY_RE: Final = re.compile(r"^capsim_(cl-[0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class ClientScope(StrEnum):
    """What a client may do (module docstring, rule 3)."""

    OPERATOR = "operator"
    VERIFICATION = "verification"
    CUSTOMER_ADMIN = "customer-admin"


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiClient:
    """One API client (module docstring). ``key_digest`` is SHA-256 of the key's secret."""

    client_id: str
    name: str
    scope: ClientScope
    key_digest: bytes
    created_at: datetime
    acting_user: str | None = None
    revoked_at: datetime | None = None
    version: int = 1

    def __repr__(self) -> str:
        return f"ApiClient(client_id={self.client_id!r}, scope={self.scope.value!r})"


def new_client_id() -> str:
    """A fresh client id: ``cl-`` and 16 hex digits from :mod:`secrets`."""
    return "cl-" + secrets.token_hex(8)


def key_digest(secret: str) -> bytes:
    """The stored digest of a key's secret part."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def new_api_key(client_id: str) -> tuple[str, bytes]:
    """A new key for ``client_id`` (shown once) and the digest to store."""
    secret = secrets.token_urlsafe(32)
    return f"capsim_{client_id}_{secret}", key_digest(secret)


def parse_api_key(presented: str) -> tuple[str, str] | None:
    """``(client id, secret)`` of a well-formed key, else ``None`` (nothing looked up)."""
    match = _KEY_RE.match(presented.strip()) if len(presented) <= 128 else None
    return None if match is None else (match.group(1), match.group(2))


def key_matches(secret: str, digest: bytes) -> bool:
    """Whether ``secret`` hashes to ``digest`` (constant-time comparison)."""
    return hmac.compare_digest(key_digest(secret), digest)
