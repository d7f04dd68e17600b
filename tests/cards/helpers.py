"""Shared helpers for the card tests: keys, a minimal CAP terminal, response parsing."""

from __future__ import annotations

from dataclasses import dataclass

from capsim.cards import EmvCapCard
from capsim.tlv import decode, fill_dol, find

IMK_A = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IMK_B = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
IMK_C = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
PAN = "1234567890123456"


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def sw(resp: bytes) -> int:
    return int.from_bytes(resp[-2:], "big")


def pin_block(pin: str) -> bytes:
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


def verify(card: EmvCapCard, pin: str) -> int:
    return sw(card.process(b"\x00\x20\x00\x80\x08" + pin_block(pin)))


def cdol_values(*, un: bytes = bytes(4), amount: int = 0, date: bytes = bytes(3)) -> dict[int, bytes]:
    """CDOL values of a CAP reader (cap-protocol.md §4; profile mc-cap)."""
    return {
        0x9F02: bcd_amount(amount),
        0x95: h("8000000000"),
        0x9A: date,
        0x9F37: un,
        0x9F35: b"\x34",
        0x9F34: h("010002"),
        0x9F33: h("208000"),
    }


def bcd_amount(amount: int) -> bytes:
    return bytes.fromhex(f"{amount:012d}")


@dataclass
class GacResult:
    cid: int
    atc: bytes
    ac: bytes
    iad: bytes


def parse_gac(resp: bytes) -> GacResult:
    """Parse a format-1 or format-2 GENERATE AC answer (without SW)."""
    (obj,) = decode(resp)
    if obj.tag == 0x80:
        v = obj.value
        return GacResult(v[0], v[1:3], v[3:11], v[11:])
    cid = find(obj, 0x9F27)
    atc = find(obj, 0x9F36)
    ac = find(obj, 0x9F26)
    iad = find(obj, 0x9F10)
    assert cid
    assert atc
    assert ac
    assert iad
    return GacResult(cid.value[0], atc.value, ac.value, iad.value)


def gac1_command(card: EmvCapCard, *, p1: int = 0x80, un: bytes = bytes(4), amount: int = 0) -> bytes:
    data = fill_dol(card.profile.cdol1, cdol_values(un=un, amount=amount))
    return bytes([0x80, 0xAE, p1, 0x00, len(data)]) + data + b"\x00"


def gac2_command(
    card: EmvCapCard, *, p1: int = 0x00, un: bytes = bytes(4), arc: bytes = b"Z3", issuer_data: bytes = b""
) -> bytes:
    values = {**cdol_values(un=un), 0x8A: arc}
    if issuer_data:
        values[0x91] = issuer_data
    data = fill_dol(card.profile.cdol2, values)
    return bytes([0x80, 0xAE, p1, 0x00, len(data)]) + data + b"\x00"


def start(card: EmvCapCard) -> None:
    """SELECT the profile's AID and GET PROCESSING OPTIONS, asserting 9000."""
    aid = card.profile.aid
    assert sw(card.process(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00")) == 0x9000
    assert sw(card.process(h("80A8000002830000"))) == 0x9000


def cap_transaction(
    card: EmvCapCard, *, pin: str | None = "1234", un: bytes = bytes(4), amount: int = 0, gac2: bool = True
) -> tuple[GacResult, bytes]:
    """SELECT, GPO, [VERIFY], GAC #1 (ARQC), [GAC #2 AAC with Z3]. Returns the ARQC and its CDOL1 data."""
    start(card)
    if pin is not None:
        assert verify(card, pin) == 0x9000
    cmd = gac1_command(card, un=un, amount=amount)
    resp = card.process(cmd)
    assert sw(resp) == 0x9000, resp.hex()
    result = parse_gac(resp[:-2])
    if gac2:
        r2 = card.process(gac2_command(card, un=un))
        assert sw(r2) == 0x9000, r2.hex()
    return result, cmd[5:-1]
