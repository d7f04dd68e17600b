"""JSON documents from files and the database, parsed with size and nesting limits.

Theory of operation
-------------------
1. Every JSON document capsim reads from outside (card files, issuer-keys files, keyrings,
   stored settings) goes through :func:`loads_limited`. A document larger than ``max_bytes``
   or nested deeper than ``max_depth`` is refused *before* :func:`json.loads` runs, so a
   hostile file (``'[' * 100000``) can neither exhaust memory nor reach the interpreter's
   recursion limit: it raises the capsim error the caller names (``StateFileError`` for
   files, ``ValidationError`` for arguments), never ``RecursionError``.
2. The nesting depth is counted over the brackets outside string literals: a linear scan of
   one regular expression, with no recursion of its own.

>>> loads_limited('{"a": [1, 2, {"b": "[[["}]}', what="example")
{'a': [1, 2, {'b': '[[['}]}
>>> loads_limited('[' * 100, what="example", max_depth=32)
Traceback (most recent call last):
...
capsim.errors.StateFileError: example: JSON nested deeper than 32 levels
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from capsim.errors import CapsimError, StateFileError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH", "json_depth", "loads_limited"]

#: Largest document accepted by default (1 MiB: a card file is a few KiB).
DEFAULT_MAX_BYTES: Final = 1 << 20
#: Deepest nesting accepted by default (capsim's own documents nest at most 4 levels).
DEFAULT_MAX_DEPTH: Final = 32

# a string literal, or one bracket; anything else is skipped by finditer
_TOKENS: Final = re.compile(r'"(?:[^"\\]+|\\.)*"?|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside string literals (0 for a scalar).

    >>> json_depth('[{"x": "]]]"}, [[]]]')
    3
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        piece = match.group()
        if piece in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif piece in "]}":
            depth -= 1
    return deepest


def loads_limited(
    text: str | bytes,
    *,
    what: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    error: type[CapsimError] = StateFileError,
) -> Any:
    """Parse ``text`` as JSON, refusing documents over ``max_bytes`` or ``max_depth``.

    ``what`` names the document in the message; ``error`` is the capsim error raised for an
    oversized, too deeply nested or malformed document.
    """
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise error(f"{what}: larger than {max_bytes} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{what}: not UTF-8 text") from None
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise error(f"{what}: larger than {max_bytes} bytes")
    if json_depth(text) > max_depth:
        raise error(f"{what}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{what}: not valid JSON ({getattr(exc, 'msg', 'too deep')})") from None
