"""Shared helpers for the reader tests: an independent IPB reference and a scripted card."""

from __future__ import annotations

from collections.abc import Callable

from capsim.transports.base import TransportBase


def naive_extract(ipb: bytes, data: bytes) -> int:
    """Reference IPB mask written independently of capsim.cap: via bit strings."""
    ipb_bits = "".join(f"{b:08b}" for b in ipb)
    data_bits = "".join(f"{b:08b}" for b in data).ljust(len(ipb_bits), "0")
    picked = "".join(d for m, d in zip(ipb_bits, data_bits, strict=False) if m == "1")
    return int(picked, 2) if picked else 0


class ScriptedCard(TransportBase):
    """A transport answering each command through ``answer(command) -> response``.

    ``sent`` keeps every command, so tests can count what reached the card.
    """

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.sent: list[bytes] = []

    def connect(self) -> bytes:
        return b"\x3b\x00"

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.answer(apdu)

    def disconnect(self) -> None:
        return None
