"""Read-only checks against a real card in a real reader, through the system pcscd.

Run with the reader's name (or a unique part of it) in ``CAPSIM_HARDWARE_READER``::

    CAPSIM_HARDWARE_READER=ACR39 .venv/bin/python -m pytest tests/pcsc/test_hardware.py -m hardware

Nothing here sends VERIFY or GENERATE AC: no PIN try and no ATC is spent.
"""

from __future__ import annotations

import os

import pytest

from capsim.transports.pcsc import PcscTransport, list_readers, resolve_reader

pytestmark = [pytest.mark.hardware, pytest.mark.timeout(60)]

READER = os.environ.get("CAPSIM_HARDWARE_READER", "")
if not READER:
    pytest.skip("no real reader named: set CAPSIM_HARDWARE_READER to run", allow_module_level=True)

KNOWN_AIDS = ("A0000000048002", "A0000000038002", "A0000000041010", "A0000000031010")


def test_the_reader_is_listed_and_resolves() -> None:
    assert resolve_reader(READER) in list_readers()


def test_atr_and_an_emv_application_answer() -> None:
    with PcscTransport(READER, timeout=10) as transport:
        assert transport.atr[:1] in (b"\x3b", b"\x3f")
        assert transport.protocol in ("T=0", "T=1")
        answers = {}
        for aid in KNOWN_AIDS:
            raw = bytes.fromhex(aid)
            answers[aid] = transport.transmit(bytes([0x00, 0xA4, 0x04, 0x00, len(raw)]) + raw + b"\x00")
        selected = [aid for aid, rsp in answers.items() if rsp[-2:] == b"\x90\x00"]
        status = {aid: rsp[-2:].hex() for aid, rsp in answers.items()}
        assert selected, f"no known EMV application answered: {status}"
        # T=0 continuation was resolved in the transport: the FCI came back whole.
        assert answers[selected[0]][0] == 0x6F
