"""Code anatomy: which bits of the displayed code come from the AC, the ATC, the PSN, the IAD.

Theory of operation
-------------------
1. The code layout is read from :mod:`capsim.codelayout` only (the IPB code function defined
   once): :func:`capsim.codelayout.code_layout` gives each field's width, and
   :func:`capsim.codelayout.explain_ipb` over an all-zero data string gives, bit by bit, the
   field, the byte of ``D`` and the EMV bit number each code bit comes from. Nothing here
   recomputes the IPB walk.
2. Only the AC bits (the TDS MAC's in TDS mode) are secret. The ATC bits are a counter an
   observer can read off the previous code; the PSN, the CID and the IAD (CVR) bits are fixed
   or nearly fixed per card. So the code's strength is its AC bits, not its width in digits
   ("Optimised to Fail", EPCI).
3. :class:`Anatomy` is the per-field count and the bit map (most significant bit first); the
   decimal digits a reader shows are ``ceil(total_bits · log10 2)`` at most.
4. Pure: no card, no key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from capsim.codelayout import code_layout, explain_ipb

__all__ = ["Anatomy", "BitCell", "code_anatomy"]

#: The data string ``D`` is at most 1 (PSN) + 1 (CID) + 2 (ATC) + 8 (AC) + 32 (IAD) bytes.
_MAX_D = 44


@dataclass(frozen=True, kw_only=True)
class BitCell:
    """One bit of the code value: its position (0 = least significant) and where it comes from."""

    position: int
    field: str
    data_index: int
    field_byte: int
    bit: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "position": self.position,
            "field": self.field,
            "d_index": self.data_index,
            "field_byte": self.field_byte,
            "bit": self.bit,
        }


@dataclass(frozen=True, kw_only=True)
class Anatomy:
    """Where the code's bits come from (module docstring, step 3)."""

    ipb: bytes
    psn_in_data: bool
    total_bits: int
    psn_bits: int
    cid_bits: int
    atc_bits: int
    ac_bits: int
    iad_bits: int
    atc_mask: int
    max_digits: int
    bits: tuple[BitCell, ...]

    @property
    def secret_bits(self) -> int:
        """The AC (or TDS MAC) bits: the only ones an attacker cannot read or predict (step 2)."""
        return self.ac_bits

    def bit_map(self) -> str:
        """One letter per code bit, most significant first: ``P`` PSN, ``C`` CID, ``T`` ATC,
        ``A`` AC, ``I`` IAD (``natwest``: ``TTTTTAAAAAAAAAAAAAAAAAAAAI``)."""
        letters = {"PSN": "P", "CID": "C", "ATC": "T", "AC": "A", "IAD": "I"}
        return "".join(letters.get(cell.field, "?") for cell in self.bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ipb": self.ipb.hex().upper(),
            "psn_in_data": self.psn_in_data,
            "total_bits": self.total_bits,
            "psn_bits": self.psn_bits,
            "cid_bits": self.cid_bits,
            "atc_bits": self.atc_bits,
            "ac_bits": self.ac_bits,
            "iad_bits": self.iad_bits,
            "atc_mask": f"{self.atc_mask:04X}",
            "max_digits": self.max_digits,
            "bit_map": self.bit_map(),
            "bits": [cell.to_dict() for cell in self.bits],
        }


def code_anatomy(ipb: bytes, *, psn_in_data: bool) -> Anatomy:
    """The :class:`Anatomy` of a card's IPB (``psn_in_data``: the IAF sets b7).

    Raises
    ------
    ValidationError
        ``ipb`` is not 1 to 64 bytes.

    >>> a = code_anatomy(bytes.fromhex("00001F00000000000FFFFF00000000008000"), psn_in_data=False)
    >>> a.atc_bits, a.ac_bits, a.iad_bits, a.bit_map()
    (5, 20, 1, 'TTTTTAAAAAAAAAAAAAAAAAAAAI')
    """
    layout = code_layout(ipb, psn_in_data)
    cells = tuple(
        BitCell(
            position=b.position,
            field=b.field,
            data_index=b.data_index,
            field_byte=b.field_byte,
            bit=b.bit,
        )
        for b in explain_ipb(ipb, bytes(_MAX_D), psn_in_data=psn_in_data)
    )
    return Anatomy(
        ipb=ipb,
        psn_in_data=psn_in_data,
        total_bits=layout.total_bits,
        psn_bits=layout.psn_bits,
        cid_bits=layout.cid_bits,
        atc_bits=layout.atc_bits,
        ac_bits=layout.ac_bits,
        iad_bits=layout.iad_bits,
        atc_mask=layout.atc_mask,
        max_digits=max(1, math.ceil(layout.total_bits * math.log10(2))),
        bits=cells,
    )
