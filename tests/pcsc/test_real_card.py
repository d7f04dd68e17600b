"""capsim's EMV-CAP card behind pcscd+vpcd gives the codes it gives in process (issue 5 §3).

A card file is copied before it is served; the same CAP function with the same challenge run
in process on the copy must give the same code, ATC and cryptogram. Served cards keep ATC
and PIN try counter exactly as durable as in process: a power cycle clears only the
selected application and the transaction.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsim.cards import DEFAULT_ATR, EmvCapCard, load_card, new_card
from capsim.errors import PinError
from capsim.reader import CapReader
from capsim.transports import open_transport
from capsim.transports.pcsc import PcscTransport
from tests.pcsc.conftest import ServeFactory, run_opensc_tool
from tests.pcsc.stack import PcscdStack

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(60)]

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"


def _card_file(directory: Path, profile: str = "natwest") -> Path:
    path = directory / f"{profile}.json"
    new_card(profile, pan=PAN, imk_ac=IMK, path=path).close()
    return path


@pytest.fixture
def served(tmp_path: Path, serve: ServeFactory, stack: PcscdStack) -> Iterator[tuple[EmvCapCard, Path, Path]]:
    """A card file served on slot 0, and an untouched copy of it taken before serving."""
    path = _card_file(tmp_path)
    copy = tmp_path / "copy.json"
    shutil.copyfile(path, copy)
    card = load_card(path)
    try:
        serve(card)
        yield card, path, copy
    finally:
        card.close()


def test_respond_through_pcsc_equals_in_process(
    served: tuple[EmvCapCard, Path, Path], stack: PcscdStack
) -> None:
    _, _, copy = served
    with PcscTransport("CAPSIM Virtual 00 00", timeout=10) as transport:
        assert transport.atr == DEFAULT_ATR
        over_pcsc = CapReader(transport).respond("1234", "12345678")
    with open_transport(f"file:{copy}") as local:
        in_process = CapReader(local).respond("1234", "12345678")
    assert len(over_pcsc.code) == 8
    assert over_pcsc.code == in_process.code
    assert over_pcsc.atc == in_process.atc
    assert over_pcsc.cryptogram == in_process.cryptogram
    assert [c for c, _ in over_pcsc.transcript] == [c for c, _ in in_process.transcript]


@pytest.mark.parametrize("mode", ["identify", "sign"])
def test_other_modes_through_pcsc_equal_in_process(
    served: tuple[EmvCapCard, Path, Path], stack: PcscdStack, mode: str
) -> None:
    _, _, copy = served

    def run(transport: object) -> str:
        reader = CapReader(transport)  # type: ignore[arg-type]
        if mode == "identify":
            return reader.identify("1234").code
        return reader.sign("1234", "4711", amount="12.34", currency="EUR").code

    with PcscTransport(stack.readers[0], timeout=10) as transport:
        remote = run(transport)
    with open_transport(f"file:{copy}") as local:
        assert run(local) == remote


def test_power_cycles_keep_atc_and_pin_tries_durable(
    served: tuple[EmvCapCard, Path, Path], stack: PcscdStack
) -> None:
    card, _, _ = served
    atc0 = card.state.atc
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        first = CapReader(transport).respond("1234", "1")
        with pytest.raises(PinError) as wrong:
            CapReader(transport).respond("9999", "2")
    tries_after_wrong = wrong.value.tries_left
    # disconnect() unpowered the card, connect() powers it again: durable state survives
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        second = CapReader(transport).respond("1234", "3")
    assert first.atc == atc0 + 1
    assert second.atc == first.atc + 2  # the wrong-PIN run spent an ATC too
    assert card.state.atc == second.atc
    assert tries_after_wrong == card.profile.pin_try_limit - 1
    assert card.state.ptc == card.profile.pin_try_limit  # a correct PIN restores the counter


def test_served_state_is_persisted_to_the_card_file(
    tmp_path: Path, serve: ServeFactory, stack: PcscdStack
) -> None:
    path = _card_file(tmp_path, "rabobank")
    card = load_card(path)
    server = serve(card)
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        result = CapReader(transport).respond("1234", "87654321")
    server.stop()
    card.close()
    with load_card(path) as reopened:
        assert reopened.state.atc == result.atc


def test_opensc_tool_drives_the_emulated_card(served: tuple[EmvCapCard, Path, Path]) -> None:
    """OpenSC probes for its own card types first; the EMV card must refuse them cleanly."""
    card, _, _ = served
    out = run_opensc_tool(
        "00 A4 04 00 07 A0 00 00 00 03 10 10 00",  # an application the card lacks
        "00 A4 04 00 07 A0 00 00 00 04 80 02 00",  # the CAP application
        "80 CA 9F 17 00",  # PIN try counter
    )
    assert "SW1=0x6A, SW2=0x82" in out
    assert out.count("SW1=0x90, SW2=0x00") == 2
    assert f"9F 17 01 {card.state.ptc:02X}" in out


def test_a_warm_reset_through_pcscd_keeps_the_atc_and_drops_the_selection(
    served: tuple[EmvCapCard, Path, Path], stack: PcscdStack
) -> None:
    """pyscard's reconnect() makes pcscd send vpcd's RESET: volatile state only (pcsc.md §4)."""
    from smartcard.CardConnection import CardConnection
    from smartcard.System import readers

    from tests.pcsc.stack import call_with_timeout

    card, _, _ = served
    reader = next(r for r in call_with_timeout(readers, 10) if str(r) == stack.readers[0])
    connection = reader.createConnection()

    def send(hexstr: str) -> str:
        data, sw1, sw2 = call_with_timeout(lambda: connection.transmit(list(bytes.fromhex(hexstr))), 10)
        return bytes([*data, sw1, sw2]).hex().upper()

    call_with_timeout(connection.connect, 10)
    try:
        assert send("00A4040007A000000004800200").endswith("9000")
        assert send("80A8000002830000").endswith("9000")  # GPO: ATC + 1, written before the answer
        atc = card.state.atc
        assert send("80CA9F3600") == f"9F3602{atc:04X}9000"
        call_with_timeout(lambda: connection.reconnect(CardConnection.T0_protocol), 10)  # warm reset, T=0
        assert send("80CA9F3600") == "6985"  # no application selected any more …
        assert send("00A4040007A000000004800200").endswith("9000")
        assert send("80CA9F3600") == f"9F3602{atc:04X}9000"  # … and the ATC is unchanged
    finally:
        call_with_timeout(connection.disconnect, 10)
        call_with_timeout(connection.release, 10)


def test_transport_reset_keeps_durable_state(
    served: tuple[EmvCapCard, Path, Path], stack: PcscdStack
) -> None:
    card, _, _ = served
    with PcscTransport(stack.readers[0], timeout=10) as transport:
        first = CapReader(transport).respond("1234", "5")
        assert transport.reset() == DEFAULT_ATR
        assert transport.transmit(bytes.fromhex("80CA9F3600")) == b"\x69\x85"  # nothing selected
        second = CapReader(transport).respond("1234", "5")
    assert second.atc == first.atc + 1 == card.state.atc
