"""A tiny ISO 7816-4 card OS for exercising the vpcd link without the EMV emulator.

It knows one application (the MasterCard CAP AID), answers ``6A82`` to any other SELECT,
``6E00`` to a foreign class and ``6D00`` to an unknown instruction, like a real card does
(OpenSC probes foreign AIDs). In T=0 mode it returns case-4 data the T=0 way: ``61xx``
then GET RESPONSE, and ``6Cxx`` for a wrong Le. A durable counter (INS ``0xCC``) survives
power cycles; the selected application does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CAP_AID = bytes.fromhex("A0000000048002")
ATR_T1 = bytes.fromhex("3B80800101")  # T=0 and T=1 offered (TD1: T=0, TD2: T=1), TCK 01
ATR_T0 = bytes.fromhex("3B021450")  # T=0 only (pcsc.md §4)

INS_ECHO = 0xEE
INS_COUNTER = 0xCC
INS_SELECTED = 0x5E
INS_BLOCK = 0xBB


class MiniCard:
    """Five-method card OS: ``atr``, ``power_on``, ``reset``, ``power_off``, ``process``."""

    def __init__(self, *, t0: bool = False, label: bytes = b"mini") -> None:
        self.t0 = t0
        self.label = label
        self._atr = ATR_T0 if t0 else ATR_T1
        self.selected: bytes | None = None
        self.counter = 0  # durable
        self.events: list[str] = []
        self._pending = b""  # T=0 GET RESPONSE buffer
        self.on_block: Callable[[], None] | None = None
        self.block_release = threading.Event()

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> bytes:
        self.events.append("on")
        self.selected = None
        self._pending = b""
        return self._atr

    def reset(self) -> bytes:
        self.events.append("reset")
        self.selected = None
        self._pending = b""
        return self._atr

    def power_off(self) -> None:
        self.events.append("off")
        self.selected = None
        self._pending = b""

    def _reply(self, data: bytes, le: int | None) -> bytes:
        if not self.t0 or not data:
            return data + b"\x90\x00"
        if le is None or le == 0:
            self._pending = data
            return bytes([0x61, len(data) & 0xFF])
        if le != len(data):
            return bytes([0x6C, len(data) & 0xFF])
        return data + b"\x90\x00"

    def process(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return b"\x67\x00"
        cla, ins, p1, _p2 = apdu[:4]
        body = apdu[4:]
        data = b""
        le: int | None = None
        if len(body) == 1:
            le = body[0]
        elif len(body) > 1:
            lc = body[0]
            data = body[1 : 1 + lc]
            if len(data) != lc:
                return b"\x67\x00"
            rest = body[1 + lc :]
            le = rest[0] if rest else None
        if cla not in (0x00, 0x80):
            return b"\x6e\x00"
        if ins == 0xC0 and self.t0:
            pending, self._pending = self._pending, b""
            if not pending:
                return b"\x69\x85"
            return pending + b"\x90\x00"
        self._pending = b""
        if ins == 0xA4:
            if p1 == 0x04 and data == CAP_AID:
                self.selected = data
                fci = bytes([0x6F, len(data) + 2, 0x84, len(data)]) + data
                return self._reply(fci, le)
            return b"\x6a\x82"
        if ins == INS_ECHO:
            return self._reply(data, le)
        if ins == INS_COUNTER:
            self.counter += 1
            return self._reply(self.counter.to_bytes(2, "big") + self.label, le)
        if ins == INS_SELECTED:
            return self._reply(b"\x01" if self.selected else b"\x00", le)
        if ins == INS_BLOCK:
            if self.on_block is not None:
                self.on_block()
            self.block_release.wait(10)
            return b"\x90\x00"
        return b"\x6d\x00"
