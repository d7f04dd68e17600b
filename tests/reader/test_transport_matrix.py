"""The same reader run over every local transport gives the same code for identical cards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capsim.cards import new_card
from capsim.reader import CapReader
from capsim.transports import T0Handling, TracingTransport, Transport, open_transport
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, InProcessTransport

CARD = "natwest"


def _inproc(tmp_path: Path) -> Transport:
    return open_transport(f"inproc:{CARD}")


def _file(tmp_path: Path) -> Transport:
    path = tmp_path / "card.json"
    new_card(CARD, pan=TEST_PAN, imk_ac=TEST_IMK_AC, path=path).close()
    return open_transport(f"file:{path}")


def _replay(tmp_path: Path) -> Transport:
    path = tmp_path / "session.txt"
    with TracingTransport(open_transport(f"inproc:{CARD}")) as tracer:
        CapReader(tracer).respond("1234", "31415926")
        tracer.save(str(path), source="recorded from an inproc card in the transport matrix test")
    return open_transport(f"replay:{path}")


def _traced_t0(tmp_path: Path) -> Transport:
    card = new_card(CARD, pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    return TracingTransport(T0Handling(InProcessTransport(card)), redact=True)


FACTORIES: dict[str, Callable[[Path], Transport]] = {
    "inproc": _inproc,
    "file": _file,
    "replay": _replay,
    "traced+t0": _traced_t0,
}


@pytest.fixture(params=list(FACTORIES))
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    with FACTORIES[request.param](tmp_path) as t:
        yield t


def test_same_code_over_every_transport(transport: Transport) -> None:
    reference_card = new_card(CARD, pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    with InProcessTransport(reference_card) as reference:
        expected = CapReader(reference).respond("1234", "31415926")
    result = CapReader(transport).respond("1234", "31415926")
    assert (result.code, result.atc, result.cryptogram) == (expected.code, expected.atc, expected.cryptogram)
