"""One exchange with a card, written out for a person: the decoded trace of ``--trace`` and
``capsim card apdu``.

Theory of operation
===================

1. The command line is ``> `` and the command in hex, redacted by
   :func:`capsim.apdu.redact.redact_command` (the one redaction rule: VERIFY and script data
   become ``FF`` bytes, the length stays), then on its own indented line the instruction's name.
2. The answer line is ``< `` and the whole answer in hex (data and status word), redacted by
   :func:`capsim.apdu.redact.redact_response`; then, indented, the status word's meaning and the
   answer's data as a BER-TLV tree with tag names (:func:`capsim.tlv.format_tree`, sensitive
   values redacted), or ``(not BER-TLV)``.
3. The ``> ``/``< `` lines are exactly what an undecoded trace shows, so tools that grep traces
   keep working; decoding only adds indented lines.

>>> for line in describe_exchange(bytes.fromhex("80CA9F1700"), bytes.fromhex("9F1701039000")):
...     print(line)
> 80CA9F1700
    GET DATA
< 9F1701039000
    9000: normal processing: command completed
    9F17 Personal Identification Number (PIN) Try Counter (1 byte) 03
"""

from __future__ import annotations

from typing import Final

from capsim.apdu.ins import INS
from capsim.apdu.redact import redact_command, redact_response
from capsim.apdu.sw import describe_sw
from capsim.errors import ApduFormatError
from capsim.tlv import decode, format_tree

__all__ = ["describe_command", "describe_exchange", "instruction_name"]

#: Names that read better than the enum's.
_NAMES: Final = {INS.GPO: "GET PROCESSING OPTIONS", INS.PIN_CHANGE_UNBLOCK: "PIN CHANGE/UNBLOCK"}
_INDENT: Final = "    "


def instruction_name(command: bytes) -> str:
    """The instruction's name (``SELECT``, ``GENERATE AC`` …), or ``INS xx``."""
    if len(command) < 2:
        return "not a command"
    try:
        ins = INS(command[1])
    except ValueError:
        return f"INS {command[1]:02X}"
    return _NAMES.get(ins, ins.name.replace("_", " "))


def describe_command(command: bytes, *, redact: bool = True) -> list[str]:
    """The command's lines (rule 1)."""
    shown = redact_command(command) if redact else command
    return [f"> {shown.hex().upper()}", f"{_INDENT}{instruction_name(command)}"]


def describe_exchange(command: bytes, response: bytes, *, redact: bool = True) -> list[str]:
    """The lines of one exchange (rules 1–3)."""
    lines = describe_command(command, redact=redact)
    shown = redact_response(response) if redact else response
    lines.append(f"< {shown.hex().upper()}")
    if len(response) < 2:
        lines.append(f"{_INDENT}(not a response: {len(response)} bytes)")
        return lines
    sw = int.from_bytes(response[-2:], "big")
    lines.append(f"{_INDENT}{sw:04X}: {describe_sw(sw)}")
    data = response[:-2]
    if data:
        try:
            tree = format_tree(decode(data), redact=redact)
        except ApduFormatError:
            tree = "(not BER-TLV)"
        lines.extend(f"{_INDENT}{line}" for line in tree.splitlines())
    return lines
