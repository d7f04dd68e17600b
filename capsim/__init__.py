"""capsim: an EMV-CAP toolkit (emulated card, CAP reader, bank-side verifier)."""

from __future__ import annotations

from capsim._version import __version__
from capsim.errors import CapsimError

__all__ = ["CapsimError", "__version__"]
