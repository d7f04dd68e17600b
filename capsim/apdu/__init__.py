"""ISO/IEC 7816-4 APDUs, status words, instruction codes, command builders and T=0 helpers.

Everything here is pure: bytes in, bytes or immutable values out.

>>> from capsim.apdu import ResponseApdu, SW, builders
>>> builders.read_record(1, 1).to_bytes().hex().upper()
'00B2010C00'
>>> ResponseApdu.from_bytes(bytes.fromhex("9000")).sw == SW.OK
True
"""

from __future__ import annotations

from capsim.apdu import builders, t0
from capsim.apdu.command import CommandApdu
from capsim.apdu.ins import INS
from capsim.apdu.response import ResponseApdu, status_error
from capsim.apdu.sw import (
    SW,
    bytes_available,
    correct_le,
    describe_sw,
    is_more_data,
    is_pin_retry,
    is_wrong_le,
    pin_tries_left,
)
from capsim.apdu.t0 import T0Exchange, transmit_with_t0

__all__ = [
    "INS",
    "SW",
    "CommandApdu",
    "ResponseApdu",
    "T0Exchange",
    "builders",
    "bytes_available",
    "correct_le",
    "describe_sw",
    "is_more_data",
    "is_pin_retry",
    "is_wrong_le",
    "pin_tries_left",
    "status_error",
    "t0",
    "transmit_with_t0",
]
