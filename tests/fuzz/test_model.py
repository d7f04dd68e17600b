"""The reference model flags each invariant on hand-made exchanges (capsim.testing.model)."""

from __future__ import annotations

import pytest

from capsim.testing.model import CardModel, Violation

AID = bytes.fromhex("A0000000048002")
SELECT = bytes.fromhex("00A4040007A000000004800200")
GPO = bytes.fromhex("80A8000002830000")
GET_PTC = bytes.fromhex("80CA9F1700")
GET_ATC = bytes.fromhex("80CA9F3600")
RIGHT = bytes.fromhex("0020008008241234FFFFFFFFFF")
WRONG = bytes.fromhex("0020008008240000FFFFFFFFFF")


def gac(p1: int) -> bytes:
    return bytes((0x80, 0xAE, p1, 0x00, 0x02, 0x00, 0x00, 0x00))


def gac_answer(cid: int, atc: int) -> bytes:
    return bytes((0x80, 0x12, cid)) + atc.to_bytes(2, "big") + bytes(8) + bytes(7) + b"\x90\x00"


def run(*exchanges: tuple[bytes, bytes], **kwargs: object) -> Violation | None:
    model = CardModel(aid=AID, pin="1234", pin_try_limit=3, **kwargs)  # type: ignore[arg-type]
    for cmd, rsp in exchanges:
        found = model.observe(cmd, rsp)
        if found is not None:
            return found
    return None


OPEN = (
    (SELECT, b"\x6f\x00\x90\x00"),
    (GET_ATC, bytes.fromhex("9F360200059000")),
    (GET_PTC, bytes.fromhex("9F1701039000")),
)


def test_an_honest_transaction_passes() -> None:
    assert (
        run(
            *OPEN,
            (GPO, b"\x80\x02\x10\x00\x90\x00"),
            (WRONG, b"\x63\xc2"),
            (RIGHT, b"\x90\x00"),
            (GET_PTC, bytes.fromhex("9F1701039000")),
            (gac(0x80), gac_answer(0x80, 6)),
            (gac(0x00), gac_answer(0x00, 6)),
            (GET_ATC, bytes.fromhex("9F360200069000")),
        )
        is None
    )


@pytest.mark.parametrize(
    ("exchanges", "invariant", "fragment"),
    [
        ((OPEN[0], (GET_PTC, b"\x90")), "sw", "no status word"),
        ((OPEN[0], (GET_PTC, b"\x6f\x00")), "crash", "6F00"),
        ((OPEN[0], (GET_PTC, b"\x91\x00")), "sw", "9100"),
        ((OPEN[0], (GET_PTC, b"\x01\x6a\x88")), "sw", "data byte"),
        ((*OPEN, (GPO, b"\x90\x00"), (WRONG, b"\x63\xc2"), (WRONG, b"\x63\xc2")), "ptc", "expected 63C1"),
        (
            (*OPEN, (GPO, b"\x90\x00"), (WRONG, b"\x63\xc2"), (GET_PTC, bytes.fromhex("9F1701039000"))),
            "ptc",
            "PTC 3",
        ),
        ((*OPEN, (GPO, b"\x90\x00"), (WRONG, b"\x90\x00")), "ptc", "wrong PIN"),
        ((*OPEN, (GPO, b"\x90\x00"), (RIGHT, b"\x63\xc2")), "ptc", "correct PIN"),
        ((*OPEN, (GPO, b"\x90\x00"), (RIGHT, b"\x69\x83")), "ptc", "blocked"),
        ((*OPEN, (RIGHT, b"\x90\x00")), "sequence", "VERIFY"),
        ((*OPEN, (gac(0x80), gac_answer(0x80, 5))), "sequence", "no GET PROCESSING OPTIONS"),
        (
            (*OPEN, (GPO, b"\x90\x00"), (gac(0x80), gac_answer(0x80, 6)), (GPO, b"\x90\x00")),
            "sequence",
            "GET PROCESSING",
        ),
        ((*OPEN, (GPO, b"\x90\x00"), (gac(0x00), gac_answer(0x80, 6))), "sequence", "ARQC for a AAC"),
        (
            (*OPEN, (GPO, b"\x90\x00"), (gac(0x80), gac_answer(0x80, 6)), (gac(0x80), gac_answer(0x80, 6))),
            "sequence",
            "#2 returned an ARQC",
        ),
        (
            (*OPEN, (GPO, b"\x90\x00"), (gac(0x40), gac_answer(0x00, 6)), (gac(0x40), gac_answer(0x40, 6))),
            "sequence",
            "TC after an AAC",
        ),
        (
            (
                *OPEN,
                (GPO, b"\x90\x00"),
                (gac(0x80), gac_answer(0x80, 6)),
                (gac(0x00), gac_answer(0x00, 6)),
                (gac(0x00), gac_answer(0x00, 6)),
            ),
            "sequence",
            "third",
        ),
        ((*OPEN, (GPO, b"\x90\x00"), (gac(0x80), gac_answer(0x80, 9))), "atc", "expected 0006"),
        ((*OPEN, (GPO, b"\x90\x00"), (GET_ATC, bytes.fromhex("9F360200059000"))), "atc", "expected 0006"),
        ((*OPEN, (GET_ATC, bytes.fromhex("9F360200049000"))), "atc", "expected 0005"),
        ((*OPEN, (GPO, b"\x90\x00"), (gac(0x80), b"\x90\x00")), "sequence", "without CID"),
    ],
)
def test_each_invariant_is_flagged(exchanges: tuple, invariant: str, fragment: str) -> None:
    found = run(*exchanges)
    assert found is not None
    assert found.invariant == invariant
    assert fragment in found.detail
    assert found.index == len(exchanges) - 1


def test_atc_never_wraps() -> None:
    found = run((SELECT, b"\x90\x00"), (GET_ATC, bytes.fromhex("9F3602FFFF9000")), (GPO, b"\x90\x00"))
    assert found is not None
    assert found.invariant == "atc"
    assert "wrapped" in found.detail


def test_power_cycle_ends_the_transaction() -> None:
    model = CardModel(aid=AID)
    for cmd, rsp in (*OPEN, (GPO, b"\x90\x00")):
        assert model.observe(cmd, rsp) is None
    model.power_cycle()
    found = model.observe(WRONG, b"\x63\xc2")
    assert found is not None
    assert found.invariant == "sequence"


def test_script_success_makes_the_ptc_unknown() -> None:
    assert (
        run(
            *OPEN,
            (GPO, b"\x90\x00"),
            (gac(0x80), gac_answer(0x80, 6)),
            (bytes.fromhex("8424000008") + bytes(8), b"\x90\x00"),
            (GET_PTC, bytes.fromhex("9F1701039000")),
        )
        is None
    )
