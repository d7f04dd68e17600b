"""Two card rules that no built-in template reaches on its own.

1. The unpredictable number of the AC key (cap-protocol.md §9.4): the card takes 9F37 from the
   CDOL1 data; a 9F37 shorter than 4 bytes is left-padded with zeros, a longer one gives its
   first four bytes, and a CDOL1 without 9F37
   leaves the UN at four zero bytes. Only the Mastercard SKD session key (CVN 16/17) puts the UN
   into the key, so these cards run CVN 16 with a CDOL1 record rewritten; the cryptogram is
   checked against :func:`capsim.crypto.generate_ac` with the UN spelled out.
2. Issuer-script commands without data (APPLICATION BLOCK / UNBLOCK, CARD BLOCK) take P1 = P2 =
   00: either one set is ``6A86`` and the card's life cycle does not change.
"""

from __future__ import annotations

import dataclasses

import pytest

from capsim.cards import EmvCapCard, Lifecycle, new_card
from capsim.cards.builtin import builtin_profile
from capsim.cards.profile import CardProfile, Record
from capsim.crypto import CVN, generate_ac
from capsim.sm import build_script_command
from capsim.tlv import DolEntry, decode, encode, encode_constructed, encode_dol
from tests.cards.helpers import IMK_A, IMK_B, IMK_C, PAN, h, parse_gac, start, sw

_CDOL1_HEAD = [DolEntry(0x9F02, 6), DolEntry(0x9F03, 6), DolEntry(0x9F1A, 2), DolEntry(0x95, 5),
               DolEntry(0x5F2A, 2), DolEntry(0x9A, 3), DolEntry(0x9C, 1)]  # fmt: skip


def _with_cdol1(template: CardProfile, cdol1: bytes) -> CardProfile:
    """``template`` with tag 8C of its records replaced by ``cdol1``."""
    records = []
    for rec in template.records:
        (tpl,) = decode(rec.data)
        parts = [encode(c.tag, cdol1 if c.tag == 0x8C else c.value) for c in tpl.children]
        records.append(Record(sfi=rec.sfi, number=rec.number, data=encode_constructed(0x70, parts)))
    return dataclasses.replace(template, records=tuple(records))


def _card(cdol1: bytes) -> EmvCapCard:
    template = _with_cdol1(builtin_profile("secur-acces"), cdol1)
    card = new_card(template, pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, cvn=CVN.MC_16)
    assert card.profile.cdol1 == cdol1
    return card


@pytest.mark.parametrize(
    ("un_entry", "expected_un"),
    [
        (None, "00000000"),  # no 9F37: the UN stays four zero bytes
        (DolEntry(0x9F37, 2), "0000C1C2"),  # short: left-padded
        (DolEntry(0x9F37, 3), "00C1C2C3"),
        (DolEntry(0x9F37, 4), "C1C2C3C4"),
        (DolEntry(0x9F37, 6), "C1C2C3C4"),  # long: its first four bytes
    ],
    ids=["no-9F37", "2-byte-9F37", "3-byte-9F37", "4-byte-9F37", "6-byte-9F37"],
)
def test_the_ac_key_takes_the_un_of_the_cdol1_data(un_entry: DolEntry | None, expected_un: str) -> None:
    entries = [*_CDOL1_HEAD, *([un_entry] if un_entry is not None else [])]
    card = _card(encode_dol(entries))
    start(card)
    data = bytes(25) + bytes.fromhex("C1C2C3C4C5C6")[: un_entry.length if un_entry else 0]
    resp = card.process(bytes([0x80, 0xAE, 0x80, 0x00, len(data)]) + data + b"\x00")
    assert sw(resp) == 0x9000
    gac = parse_gac(resp[:-2])
    p = card.profile
    want = generate_ac(CVN.MC_16, p.mk_ac, cdol1_data=data, aip=p.aip, atc=gac.atc, iad=gac.iad,
                       un=bytes.fromhex(expected_un))  # fmt: skip
    assert gac.ac == want
    other = generate_ac(CVN.MC_16, p.mk_ac, cdol1_data=data, aip=p.aip, atc=gac.atc, iad=gac.iad,
                        un=bytes.fromhex("FFFFFFFF"))  # fmt: skip
    assert gac.ac != other  # the UN is in the key: the check above can tell


@pytest.mark.parametrize(
    "ins", [0x1E, 0x18, 0x16], ids=["application-block", "application-unblock", "card-block"]
)
@pytest.mark.parametrize(("p1", "p2"), [(0x01, 0x00), (0x00, 0x01), (0x80, 0x00)])
def test_a_script_command_without_data_refuses_p1_or_p2(ins: int, p1: int, p2: int) -> None:
    card = new_card("secur-acces", pan=PAN, imk_ac=IMK_A, imk_smi=IMK_B, imk_smc=IMK_C, cvn=CVN.MC_16)
    start(card)
    resp = card.process(bytes([0x80, 0xAE, 0x80, 0x00, 29]) + bytes(29) + b"\x00")
    gac = parse_gac(resp[:-2])
    p = card.profile
    cmd = build_script_command(p.cvn, ins=ins, p1=p1, p2=p2, mk_smi=p.mk_smi, atc=gac.atc, arqc=gac.ac)
    assert card.process(cmd) == h("6A86")
    assert card.state.lifecycle is Lifecycle.ACTIVE
    assert card.state.history.script_failed
    ok = build_script_command(p.cvn, ins=0x1E, mk_smi=p.mk_smi, atc=gac.atc, arqc=gac.ac)
    assert card.process(ok) == h("9000")  # the same script with P1 = P2 = 00 is carried out
    assert card.state.lifecycle is Lifecycle.APP_BLOCKED
