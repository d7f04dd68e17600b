"""Issuer-script commands under secure messaging (cap-protocol.md §9.7, emv-crypto.md §7).

Theory of operation
-------------------
1. A script command is ``84 INS P1 P2 Lc [enciphered data] MAC``. It is accepted only after
   GENERATE AC #1 of the current selection, because its keys depend on this transaction's ATC
   and AC (used as "ARQC" whatever its type, so an application blocked card still takes an
   APPLICATION UNBLOCK).
2. The MAC is checked first, in constant time (:func:`capsim.sm.verify_script_mac`); a bad
   MAC answers ``6988`` and changes nothing but the "script failed" history bit.
3. A command with a good MAC counts as processed (script counter + 1). If it then fails
   (wrong P1/P2 ``6A86``, malformed data ``6A80``) it also sets "script failed", and the
   card's PIN, PTC and lifecycle stay as they were.
4. PIN CHANGE/UNBLOCK ``84 24 00 P2``: P2 ``00`` resets the PTC; ``01`` sets a new PIN given
   as a VIS block with the current PIN; ``02`` sets a new PIN given as an ISO 9564 format 2
   block (first nibble ``2``) or a VIS block without the current PIN (first nibble ``0``).
   A PIN change also resets the PTC.

This module holds the pure decoding steps; the state changes are applied by the card.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsim.apdu.sw import SW
from capsim.cards.base import Command, StatusError
from capsim.cards.profile import CardProfile
from capsim.crypto import cvn_spec
from capsim.errors import CapsimError
from capsim.sm import (
    decipher_pin_block,
    parse_pin_block_iso2,
    parse_pin_block_vis,
    sm_session_keys,
    verify_script_mac,
)

__all__ = ["ScriptKeys", "decipher_new_pin", "script_keys", "split_and_verify"]


@dataclass(frozen=True, slots=True)
class ScriptKeys:
    """Session keys for issuer scripts of one transaction (never shown)."""

    smi: bytes
    smc: bytes

    def __repr__(self) -> str:
        return "ScriptKeys(<redacted>)"


def script_keys(profile: CardProfile, *, atc: bytes, arqc: bytes) -> ScriptKeys:
    """Derive SK-SMI and SK-SMC for this transaction (emv-crypto.md §4.2, §7.2)."""
    smi, smc = sm_session_keys(profile.cvn, profile.mk_smi, profile.mk_smc, atc=atc, arqc=arqc)
    return ScriptKeys(smi=smi, smc=smc)


def split_and_verify(
    profile: CardProfile, keys: ScriptKeys, cmd: Command, *, atc: bytes, arqc: bytes
) -> bytes | None:
    """Check the command MAC; return the data part, or ``None`` when the MAC is bad.

    Raises
    ------
    StatusError
        ``6700`` when the command is shorter than its MAC.
    """
    mac_len = profile.script_mac_length
    if len(cmd.data) < mac_len:
        raise StatusError(SW.WRONG_LENGTH)
    data, mac = cmd.data[:-mac_len], cmd.data[-mac_len:]
    header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)))
    try:
        ok = verify_script_mac(profile.cvn, keys.smi, header, data, mac, atc=atc, arqc=arqc)
    except CapsimError:
        return None
    return data if ok else None


def decipher_new_pin(
    profile: CardProfile, keys: ScriptKeys, data: bytes, *, p2: int, current_pin: str
) -> str:
    """Decipher and parse the new PIN of a PIN CHANGE command.

    Raises
    ------
    StatusError
        ``6A80`` for anything that does not decipher to a well-formed PIN block of 4-12 digits.
    """
    if not data:
        raise StatusError(SW.WRONG_DATA)
    try:
        block = decipher_pin_block(cvn_spec(profile.cvn).pin_encipherment, keys.smc, data)
        if p2 == 0x01:
            pin = parse_pin_block_vis(block, profile.mk_ac, current_pin)
        elif block[0] >> 4 == 0x2:
            pin = parse_pin_block_iso2(block)
        else:
            pin = parse_pin_block_vis(block, profile.mk_ac, None)
    except CapsimError as exc:
        raise StatusError(SW.WRONG_DATA) from exc
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise StatusError(SW.WRONG_DATA)
    return pin
