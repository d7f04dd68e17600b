"""capsim: an EMV-CAP toolkit (emulated card, CAP reader, bank-side verifier).

The main entry points are re-exported here and imported on first use, so ``import capsim``
stays cheap (the verifier, for one, is only loaded when asked for):

>>> import capsim
>>> card = capsim.new_card("secur-acces", pan="5412345678901234", imk_ac=bytes(range(16)))
>>> card.process(bytes.fromhex("00A4040007A000000004800200"))[-2:].hex().upper()
'9000'
>>> with capsim.open_transport("inproc:secur-acces") as link:
...     len(capsim.CapReader(link).respond("1234", "12345678").code)
8
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from capsim._version import __version__
from capsim.errors import CapsimError

if TYPE_CHECKING:
    from capsim.cap import CapMode, compute_code
    from capsim.cards import load_card, new_card
    from capsim.reader import CapReader, CapResult
    from capsim.transports import open_transport
    from capsim.verifier import Verifier

__all__ = [
    "CapMode",
    "CapReader",
    "CapResult",
    "CapsimError",
    "Verifier",
    "__version__",
    "compute_code",
    "load_card",
    "new_card",
    "open_transport",
]

_LAZY = {
    "CapMode": "capsim.cap",
    "compute_code": "capsim.cap",
    "new_card": "capsim.cards",
    "load_card": "capsim.cards",
    "CapReader": "capsim.reader",
    "CapResult": "capsim.reader",
    "open_transport": "capsim.transports",
    "Verifier": "capsim.verifier",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'capsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
