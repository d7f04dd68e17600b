"""One step of ``capsim demo`` and how it went: shared by the CAP demo (:mod:`capsim.cli.demo`)
and the certificate demo (:mod:`capsim.cli.demo_certificate`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DemoStep"]


@dataclass(frozen=True, kw_only=True)
class DemoStep:
    """One step of the demo and how it went.

    Attributes
    ----------
    name:
        Short identifier (``identify``, ``replay`` …).
    title:
        What the step shows.
    expected, observed:
        What had to happen and what did (``accept``, ``reject``, ``ok``, ``pin-blocked`` …).
    detail:
        One line for the reader of the output (codes, ATCs; never keys or the full PAN).
    code:
        The code the reader computed in this step, if any.
    """

    name: str
    title: str
    expected: str
    observed: str
    detail: str = ""
    code: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the step behaved as expected."""
        return self.expected == self.observed

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "name": self.name,
            "title": self.title,
            "expected": self.expected,
            "observed": self.observed,
            "ok": self.ok,
            "detail": self.detail,
            "code": self.code,
        }
