"""The bank-side CAP verifier (verifier.md).

See :mod:`capsim.verifier.model` (values), :mod:`capsim.verifier.store` (the persistence
protocol) and :mod:`capsim.verifier.audit` (hash-chained audit).
"""

from __future__ import annotations

__all__: list[str] = []
