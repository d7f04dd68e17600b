"""A served built-in card offers T=0: pyscard forcing T=0, capsim's own reader, OpenSC and
``capsim cap`` all work through pcscd and vpcd.

vpcd passes every APDU to the served card unchanged, Le included (pcsc.md §4): a case-4
command reaches the card with its Le, and the card answers it with its data and ``9000``,
as a T=0 card behind a reader that has already resolved GET RESPONSE appears to PC/SC. No
``61xx`` reaches the client, and a client that still handles ``61xx`` (python-emv, OpenSC,
capsim) is not disturbed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capsim.cards import DEFAULT_ATR, EmvCapCard, load_card, new_card
from capsim.cli import main
from capsim.reader import CapReader
from capsim.transports.inprocess import InProcessTransport
from capsim.transports.pcsc import PcscTransport
from tests.pcsc.conftest import ServeFactory, run_opensc_tool
from tests.pcsc.stack import PcscdStack, call_with_timeout

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(90)]

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "5412345678901234"
SLOT0 = "pcsc:CAPSIM Virtual 00 00"


def _capsim(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), input="1234\n", catch_exceptions=False)


def _json(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    value: dict[str, object] = json.loads(result.output[result.output.index("{") :])
    return value


@pytest.fixture
def card_and_copy(tmp_path: Path) -> Iterator[tuple[EmvCapCard, Path]]:
    """A served ``secur-acces`` card file (opened here) and an untouched copy of it."""
    path = tmp_path / "card.json"
    new_card("secur-acces", pan=PAN, imk_ac=IMK, path=path).close()
    copy = tmp_path / "copy.json"
    shutil.copyfile(path, copy)
    card = load_card(path)
    try:
        yield card, copy
    finally:
        card.close()


def test_pyscard_forcing_t0_on_a_served_builtin_card(serve: ServeFactory, stack: PcscdStack) -> None:
    from smartcard.CardConnection import CardConnection
    from smartcard.System import readers

    card = new_card("secur-acces", pan=PAN, imk_ac=IMK)
    serve(card)
    reader = next(r for r in call_with_timeout(readers, 10) if str(r) == stack.readers[0])
    connection = reader.createConnection()
    call_with_timeout(lambda: connection.connect(CardConnection.T0_protocol), 10)
    try:
        assert connection.getProtocol() == CardConnection.T0_protocol
        assert bytes(connection.getATR()) == DEFAULT_ATR

        def send(hexstr: str) -> str:
            data, sw1, sw2 = call_with_timeout(lambda: connection.transmit(list(bytes.fromhex(hexstr))), 10)
            return bytes([*data, sw1, sw2]).hex().upper()

        twin = new_card("secur-acces", pan=PAN, imk_ac=IMK)  # the same card, in process
        for case4 in ("00A4040007A000000004800200", "80A8000002830000"):  # SELECT, GPO
            # the answer comes at once, as in process: data and 9000, no 61xx
            assert send(case4) == twin.process(bytes.fromhex(case4)).hex().upper()
        assert send("80CA9F1700") == "9F1701039000"  # case 2
        assert send("80CA9F1702") == "6C04"  # wrong Le, T=0 style
        assert send("00A4040007A000000099999900") == "6A82"
    finally:
        call_with_timeout(connection.disconnect, 10)
        call_with_timeout(connection.release, 10)


def test_capsim_reader_negotiates_t0_and_gets_the_in_process_code(
    serve: ServeFactory, card_and_copy: tuple[EmvCapCard, Path]
) -> None:
    card, copy = card_and_copy
    serve(card)
    with PcscTransport("CAPSIM Virtual 00 00", timeout=10) as transport:
        assert transport.protocol == "T=0"
        assert transport.atr == DEFAULT_ATR
        remote = CapReader(transport).respond("1234", "12345678")
    with load_card(copy) as twin:
        local = CapReader(InProcessTransport(twin)).respond("1234", "12345678")
    assert remote.code == local.code
    assert remote.atc == local.atc == card.state.atc


def test_opensc_tool_drives_a_t0_card(serve: ServeFactory) -> None:
    serve(new_card("natwest", pan=PAN, imk_ac=IMK))
    out = run_opensc_tool("00 A4 04 00 07 A0 00 00 00 04 80 02 00", "80 CA 9F 17 00")
    assert "SW1=0x90, SW2=0x00" in out
    assert "9F 17 01 03" in out


def test_a_card_file_with_another_atr_is_served_with_it(serve: ServeFactory, tmp_path: Path) -> None:
    path = tmp_path / "t1.json"
    created = _capsim("card", "new", str(path), "--template", "natwest", "--atr", "3B80800101")
    assert created.exit_code == 0, created.output
    with load_card(path) as card:
        serve(card)
        with PcscTransport("CAPSIM Virtual 00 00", timeout=10) as transport:
            assert transport.atr == bytes.fromhex("3B80800101")
            assert transport.protocol == "T=1"  # T=0 and T=1 offered: pcscd picks T=1


def test_capsim_cap_through_pcscd_picks_the_mode_from_its_arguments(
    serve: ServeFactory, card_and_copy: tuple[EmvCapCard, Path]
) -> None:
    card, copy = card_and_copy
    serve(card)
    identify = _json(_capsim("cap", "-r", SLOT0, "--pin-stdin", "--json"))
    respond = _json(_capsim("cap", "-r", SLOT0, "-c", "12345678", "--pin-stdin", "--json"))
    sign = _json(_capsim("cap", "-r", SLOT0, "-c", "12345678", "-a", "15.00", "--currency", "EUR",
                         "--pin-stdin", "--json"))  # fmt: skip
    assert [identify["mode"], respond["mode"], sign["mode"]] == ["identify", "respond", "sign"]
    # The same three transactions with `capsim code` on the untouched copy give the same codes.
    twin = f"file:{copy}"
    assert _json(_capsim("code", "identify", "-r", twin, "--pin-stdin", "--json")) == identify
    assert _json(_capsim("code", "respond", "-r", twin, "-c", "12345678", "--pin-stdin", "--json")) == respond
    signed = _capsim("code", "sign", "-r", twin, "-c", "12345678", "-a", "15.00", "--currency", "EUR",
                     "--pin-stdin", "--json")  # fmt: skip
    assert _json(signed) == sign
    assert card.state.atc == sign["atc"]
