"""The typed answers' plumbing of :mod:`capsim.client`: JSON objects to frozen dataclasses and
back, by the dataclass's own field annotations, and identifiers as path segments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote

from capsim.errors import CapsimError, ValidationError

__all__ = ["Answer", "drop_none", "field_value", "seg", "shape"]

_IDENT: Final = re.compile(r"[A-Za-z0-9@._-]{1,64}")
_T = TypeVar("_T", bound="Answer")


def shape(what: str) -> CapsimError:
    """The error of an answer without the documented shape."""
    return CapsimError(f"the service answered with an unexpected shape ({what})")


def field_value(obj: Mapping[str, Any], name: str, kind: str) -> Any:
    """The value of ``obj[name]`` of ``kind`` (:func:`_kind`), or :func:`shape`'s error."""
    if name not in obj:
        raise shape(f"no {name!r}")
    value = obj[name]
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and optional:
        return None
    if kind == "datetime" and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise shape(f"{name!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise shape(f"{name!r} has no time zone")
        return parsed
    if kind == "strs" and isinstance(value, list) and all(isinstance(x, str) for x in value):
        return tuple(value)
    if kind == "pairs" and isinstance(value, Mapping) and all(isinstance(x, str) for x in value.values()):
        return tuple(sorted((str(k), v) for k, v in value.items()))
    expected = {"str": str, "int": int, "bool": bool}.get(kind)
    if expected is not None and isinstance(value, expected) and (kind == "bool") == isinstance(value, bool):
        return value
    raise shape(f"{name!r} is not a {kind}")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return list(value)
    return value


def _kind(annotation: object) -> str:
    """A field's kind from its annotation: ``str``, ``int``, ``bool``, ``datetime``, ``strs``
    (a tuple of strings), ``pairs`` (a JSON object of strings, as sorted ``(name, value)``
    pairs), with ``?`` when ``None`` is allowed."""
    text = str(annotation)
    base = text.removesuffix(" | None")
    optional = base != text
    base = {"tuple[str, ...]": "strs", "tuple[tuple[str, str], ...]": "pairs"}.get(base, base)
    return base + ("?" if optional else "")


class Answer:
    """Parsing from and back to the JSON object, by the dataclass's own fields."""

    @classmethod
    def from_json(cls: type[_T], obj: object) -> _T:
        """The value of a JSON object of the API; :class:`~capsim.errors.CapsimError` if malformed."""
        if not isinstance(obj, Mapping):
            raise shape(f"expected a {cls.__name__} object")
        names = fields(cls)  # type: ignore[arg-type]
        return cls(**{f.name: field_value(obj, f.name, _kind(f.type)) for f in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the API (times in ISO 8601, UTC as ``Z``)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = dict(value) if _kind(f.type) == "pairs" else _json_value(value)
        return out


def seg(value: str) -> str:
    """An identifier as one path segment. It must be an identifier (1..64 letters, digits,
    ``-``, ``_``, ``.``, ``@``; not ``.`` or ``..``): anything else could change the route the
    service matches (it decodes ``%2F`` before routing), so it is refused before sending."""
    if value in (".", "..") or not _IDENT.fullmatch(value):
        raise ValidationError("identifier: expected 1..64 ASCII letters, digits, '-', '_', '.' or '@'")
    return quote(value, safe="@")


def drop_none(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without its ``None`` values (the service's defaults apply)."""
    return {k: v for k, v in body.items() if v is not None}
