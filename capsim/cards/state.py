"""The card's persistent state: :class:`CardState` (cap-protocol.md §9.2).

Theory of operation
-------------------
1. Persistent: ATC, PIN try counter, the PIN itself (a PIN CHANGE script replaces it),
   lifecycle, last online ATC (``9F13``) and the history flags (:class:`~capsim.iad.
   CardHistory`). Everything else (selected application, phase, PIN verified, AC count, this
   transaction's ARQC) is volatile and lives in the card object only.
2. A state is a frozen value; the card replaces it as a whole and hands the new value to its
   persistence callback *before* any R-APDU that reveals it (architecture.md §5).
3. ``to_dict``/``from_dict`` give the JSON form used in card files; no file I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from capsim.errors import ValidationError
from capsim.iad import CardHistory

__all__ = ["CardState", "Lifecycle"]


class Lifecycle(StrEnum):
    """Application / card lifecycle (cap-protocol.md §9.3, §9.7)."""

    ACTIVE = "active"
    APP_BLOCKED = "app-blocked"
    CARD_BLOCKED = "card-blocked"


def _check_pin(pin: str) -> str:
    if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise ValidationError("pin: expected 4 to 12 ASCII digits")
    return pin


@dataclass(frozen=True, kw_only=True)
class CardState:
    """Persistent card state. Never shows the PIN in ``repr``.

    Attributes
    ----------
    atc:
        Application transaction counter of the last GET PROCESSING OPTIONS (0-65535).
    ptc:
        PIN try counter (0 = PIN blocked).
    pin:
        The cardholder PIN (4-12 digits).
    lifecycle:
        Active, application blocked, or card blocked.
    last_online_atc:
        ATC of the last online transaction completed with issuer authentication (``9F13``).
    history:
        Flags describing the previous transaction (CVR history bits).
    """

    atc: int
    ptc: int
    pin: str = field(repr=False)
    lifecycle: Lifecycle = Lifecycle.ACTIVE
    last_online_atc: int = 0
    history: CardHistory = field(default_factory=CardHistory)

    def __post_init__(self) -> None:
        if type(self.atc) is not int or not 0 <= self.atc <= 0xFFFF:
            raise ValidationError("atc: expected an integer 0..65535")
        if type(self.ptc) is not int or not 0 <= self.ptc <= 15:
            raise ValidationError("ptc: expected an integer 0..15")
        if type(self.last_online_atc) is not int or not 0 <= self.last_online_atc <= 0xFFFF:
            raise ValidationError("last_online_atc: expected an integer 0..65535")
        _check_pin(self.pin)
        object.__setattr__(self, "lifecycle", Lifecycle(self.lifecycle))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "atc": self.atc,
            "ptc": self.ptc,
            "pin": self.pin,
            "lifecycle": str(self.lifecycle),
            "last_online_atc": self.last_online_atc,
            "history": self.history.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CardState:
        """Inverse of :meth:`to_dict`; ``ValidationError`` names the bad field."""
        if not isinstance(data, Mapping):
            raise ValidationError("state: expected a JSON object")
        expected = {"atc", "ptc", "pin", "lifecycle", "last_online_atc", "history"}
        if set(data) != expected:
            raise ValidationError(f"state: expected keys {sorted(expected)}, got {sorted(data)}")
        try:
            lifecycle = Lifecycle(data["lifecycle"])
        except ValueError as exc:
            raise ValidationError(f"state.lifecycle: unknown value {data['lifecycle']!r}") from exc
        return cls(
            atc=data["atc"],
            ptc=data["ptc"],
            pin=data["pin"],
            lifecycle=lifecycle,
            last_online_atc=data["last_online_atc"],
            history=CardHistory.from_dict(data["history"]),
        )
