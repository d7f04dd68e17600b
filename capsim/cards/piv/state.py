"""The persistent state of an emulated PIV card, and the card's fixed data model.

Theory of operation
-------------------
1. :class:`PivState` is everything a PIV card keeps across power cycles: PIN and PUK with their
   remaining tries, the card management key, the asymmetric keys by slot, the data objects by
   tag, and the serial number. It is immutable: the card computes the next state, persists it,
   and only then answers (a PIN try counter is never rolled back by a kill).
2. The slots (SP 800-73-4 table 4b) are ``9A`` PIV authentication, ``9C`` digital signature,
   ``9D`` key management and ``9E`` card authentication; each has its certificate object
   (:data:`CERT_OBJECT`) and its PIN rule (:data:`SLOT_PIN`): ``9C`` needs the PIN verified
   right before each use ("PIN always"), ``9E`` needs none.
3. PIN and PUK are 6 to 8 ASCII digits, sent padded with ``FF`` to 8 bytes; three wrong tries
   block each by default (:data:`DEFAULT_TRY_LIMIT`). The well-known defaults of shipped tokens
   (:data:`DEFAULT_PIN`, :data:`DEFAULT_PUK`, :data:`DEFAULT_MGMT_KEY`) are what a new card
   gets unless told otherwise; :meth:`PivState.defaults_in_place` names those still in place.
4. :meth:`PivState.to_dict` / :meth:`PivState.from_dict` are the card file's ``state`` (binary
   values as upper-case hex); a malformed document raises
   :class:`~capsim.errors.ValidationError` and builds nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

from capsim.apdu.pinblock import piv_reference_block
from capsim.cards.piv.keys import PivAlgorithm, PivKey
from capsim.errors import ValidationError

__all__ = [
    "CERT_OBJECT",
    "DEFAULT_MGMT_KEY",
    "DEFAULT_PIN",
    "DEFAULT_PUK",
    "DEFAULT_TRY_LIMIT",
    "PIN_PROTECTED_OBJECTS",
    "SLOTS",
    "SLOT_PIN",
    "PinRule",
    "PivState",
    "pad_reference",
]

DEFAULT_PIN: Final = "123456"
DEFAULT_PUK: Final = "12345678"
#: The well-known 3DES management key of shipped PIV tokens (01..08 three times).
DEFAULT_MGMT_KEY: Final = bytes(range(1, 9)) * 3
DEFAULT_TRY_LIMIT: Final = 3


class PinRule(Enum):
    """When a slot's private key may be used."""

    NEVER = "never"  # no PIN (card authentication)
    ONCE = "once"  # PIN verified at some point in this session
    ALWAYS = "always"  # PIN verified right before each use


SLOTS: Final = (0x9A, 0x9C, 0x9D, 0x9E)
CERT_OBJECT: Final[Mapping[int, int]] = MappingProxyType(
    {0x9A: 0x5FC105, 0x9C: 0x5FC10A, 0x9D: 0x5FC10B, 0x9E: 0x5FC101}
)
SLOT_PIN: Final[Mapping[int, PinRule]] = MappingProxyType(
    {0x9A: PinRule.ONCE, 0x9C: PinRule.ALWAYS, 0x9D: PinRule.ONCE, 0x9E: PinRule.NEVER}
)
#: Objects readable only after PIN verification (fingerprints, facial image, printed info, iris).
PIN_PROTECTED_OBJECTS: Final = frozenset({0x5FC103, 0x5FC108, 0x5FC109, 0x5FC121})
_MAX_OBJECT: Final = 4096


def _reference(name: str, value: object) -> str:
    piv_reference_block(value, name)  # type: ignore[arg-type]  # the one PIN/PUK rule
    return str(value)


def pad_reference(value: str) -> bytes:
    """A PIN or PUK as the card receives it (:func:`capsim.apdu.pinblock.piv_reference_block`)."""
    return piv_reference_block(value)


def _tries(name: str, value: object, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValidationError(f"{name}: expected an integer 0..{limit}")
    return value


@dataclass(frozen=True, kw_only=True)
class PivState:
    """A PIV card's persistent state (module docstring, rules 1–3)."""

    pin: str = DEFAULT_PIN
    puk: str = DEFAULT_PUK
    pin_limit: int = DEFAULT_TRY_LIMIT
    puk_limit: int = DEFAULT_TRY_LIMIT
    pin_tries: int = DEFAULT_TRY_LIMIT
    puk_tries: int = DEFAULT_TRY_LIMIT
    mgmt_key: bytes = DEFAULT_MGMT_KEY
    keys: Mapping[int, PivKey] = field(default_factory=dict)
    objects: Mapping[int, bytes] = field(default_factory=dict)
    serial: int = 0

    def __post_init__(self) -> None:
        _reference("pin", self.pin)
        _reference("puk", self.puk)
        for name in ("pin_limit", "puk_limit"):
            _tries(name, getattr(self, name), 15)
            if getattr(self, name) == 0:
                raise ValidationError(f"{name}: expected an integer 1..15")
        _tries("pin_tries", self.pin_tries, self.pin_limit)
        _tries("puk_tries", self.puk_tries, self.puk_limit)
        if not isinstance(self.mgmt_key, bytes) or len(self.mgmt_key) != 24:
            raise ValidationError("mgmt_key: expected 24 bytes (3-key 3DES)")
        for slot, key in self.keys.items():
            if slot not in SLOTS or not isinstance(key, PivKey) or key.algorithm is PivAlgorithm.TDES:
                raise ValidationError(
                    f"keys: slot {slot!r} must be one of 9A 9C 9D 9E with an RSA or ECC key"
                )
        for tag, value in self.objects.items():
            if not isinstance(tag, int) or not 0 < tag <= 0xFFFFFF or not isinstance(value, bytes):
                raise ValidationError("objects: expected tag -> bytes")
            if len(value) > _MAX_OBJECT:
                raise ValidationError(f"objects: {tag:X} is over {_MAX_OBJECT} bytes")
        if (
            isinstance(self.serial, bool)
            or not isinstance(self.serial, int)
            or not 0 <= self.serial < 1 << 32
        ):
            raise ValidationError("serial: expected a 32-bit unsigned integer")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "objects", MappingProxyType(dict(self.objects)))

    def replace(self, **changes: Any) -> PivState:
        """A copy with ``changes`` (validated like a new state)."""
        return dataclasses.replace(self, **changes)

    def with_key(self, slot: int, key: PivKey) -> PivState:
        return self.replace(keys={**self.keys, slot: key})

    def with_object(self, tag: int, value: bytes) -> PivState:
        return self.replace(objects={**self.objects, tag: value})

    def without_object(self, tag: int) -> PivState:
        """A copy without the object ``tag`` (the same state when there is none)."""
        return self.replace(objects={t: v for t, v in self.objects.items() if t != tag})

    def defaults_in_place(self) -> tuple[str, ...]:
        """Which well-known defaults the card still has (``card show`` warns about them)."""
        names = []
        if self.pin == DEFAULT_PIN:
            names.append("PIN")
        if self.puk == DEFAULT_PUK:
            names.append("PUK")
        if self.mgmt_key == DEFAULT_MGMT_KEY:
            names.append("management key")
        return tuple(names)

    def __repr__(self) -> str:
        return (
            f"PivState(pin_tries={self.pin_tries}/{self.pin_limit}, puk_tries={self.puk_tries}/"
            f"{self.puk_limit}, slots={[f'{s:02X}' for s in sorted(self.keys)]}, "
            f"objects={[f'{t:X}' for t in sorted(self.objects)]}, serial={self.serial})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pin": self.pin,
            "puk": self.puk,
            "pin_limit": self.pin_limit,
            "puk_limit": self.puk_limit,
            "pin_tries": self.pin_tries,
            "puk_tries": self.puk_tries,
            "mgmt_key": self.mgmt_key.hex().upper(),
            "keys": {
                f"{slot:02X}": {"algorithm": int(key.algorithm), "der": key.der.hex().upper()}
                for slot, key in sorted(self.keys.items())
            },
            "objects": {f"{tag:X}": value.hex().upper() for tag, value in sorted(self.objects.items())},
            "serial": self.serial,
        }

    @classmethod
    def from_dict(cls, data: object) -> PivState:
        """Inverse of :meth:`to_dict`; :class:`ValidationError` on any wrong shape."""
        expected = {"pin", "puk", "pin_limit", "puk_limit", "pin_tries", "puk_tries", "mgmt_key", "keys"}
        expected |= {"objects", "serial"}
        if not isinstance(data, Mapping):
            raise ValidationError("state: expected a JSON object")
        if set(data) != expected:
            raise ValidationError(f"state: expected the keys {sorted(expected)}")
        try:
            keys = {
                int(slot, 16): PivKey(PivAlgorithm(entry["algorithm"]), bytes.fromhex(entry["der"]))
                for slot, entry in data["keys"].items()
            }
            objects = {int(tag, 16): bytes.fromhex(value) for tag, value in data["objects"].items()}
            mgmt_key = bytes.fromhex(data["mgmt_key"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValidationError(
                f"state: malformed keys, objects or management key ({type(exc).__name__})"
            ) from None
        return cls(
            pin=data["pin"],
            puk=data["puk"],
            pin_limit=data["pin_limit"],
            puk_limit=data["puk_limit"],
            pin_tries=data["pin_tries"],
            puk_tries=data["puk_tries"],
            mgmt_key=mgmt_key,
            keys=keys,
            objects=objects,
            serial=data["serial"],
        )
