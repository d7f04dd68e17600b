"""pyscard exceptions → capsim errors, and reader selection by name (pcsc.md §3, §5).

The exception classes are pyscard's own (both hierarchies), built with the hresults the
stack produces; the end-to-end tests in ``test_stack.py`` provoke them for real.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import (
    CardRemovedError,
    NoCardError,
    PcscUnavailableError,
    ReaderAmbiguousError,
    ReaderNotFoundError,
    TransportError,
    TransportTimeoutError,
    ValidationError,
)
from capsim.transports.pcsc import PcscTransport, map_pyscard_error, resolve_reader

exceptions = pytest.importorskip("smartcard.Exceptions", reason="pyscard is not installed")
pcsc_exceptions = pytest.importorskip("smartcard.pcsc.PCSCExceptions", reason="pyscard is not installed")

SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_SERVICE_STOPPED = 0x8010001E
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_W_REMOVED_CARD = 0x80100069
SCARD_W_RESET_CARD = 0x80100068
SCARD_E_NOT_TRANSACTED = 0x80100016
SCARD_E_TIMEOUT = 0x8010000A
SCARD_E_UNKNOWN_READER = 0x80100009
SCARD_E_SHARING_VIOLATION = 0x8010000B
SCARD_E_PROTO_MISMATCH = 0x8010000F


def _cases() -> list[tuple[BaseException, bool, type[TransportError]]]:
    e, p = exceptions, pcsc_exceptions
    cce = e.CardConnectionException
    return [
        # pcscd down: the PCSCExceptions hierarchy, not a SmartcardException
        (p.EstablishContextException(SCARD_E_NO_SERVICE), False, PcscUnavailableError),
        (p.ListReadersException(SCARD_E_SERVICE_STOPPED), False, PcscUnavailableError),
        (e.CardServiceStoppedException(hresult=SCARD_E_SERVICE_STOPPED), False, PcscUnavailableError),
        (e.CardServiceNotFoundException(hresult=SCARD_E_NO_SERVICE), False, PcscUnavailableError),
        # PCSCCardConnection.__init__ when pcscd is down
        (cce("Failed to establish context", hresult=SCARD_E_NO_SERVICE), False, PcscUnavailableError),
        # connect() without a card
        (e.NoCardException("Unable to connect", hresult=SCARD_E_NO_SMARTCARD), False, NoCardError),
        (e.NoCardException("Unable to connect", hresult=SCARD_W_REMOVED_CARD), False, NoCardError),
        # a session whose card disappeared (pcsc.md §5 table)
        (cce("Card returned no valid response", hresult=0), True, CardRemovedError),
        (cce("Failed to transmit", hresult=SCARD_E_NOT_TRANSACTED), True, CardRemovedError),
        (cce("Failed to transmit", hresult=SCARD_W_REMOVED_CARD), True, CardRemovedError),
        (cce("Failed to transmit", hresult=SCARD_W_RESET_CARD), True, CardRemovedError),
        (cce("Card not connected"), True, CardRemovedError),
        (e.NoCardException("Unable to reconnect", hresult=SCARD_W_REMOVED_CARD), True, CardRemovedError),
        # the rest
        (e.CardRequestTimeoutException(hresult=SCARD_E_TIMEOUT), False, TransportTimeoutError),
        (cce("x", hresult=SCARD_E_UNKNOWN_READER), False, ReaderNotFoundError),
        (e.InvalidReaderException("Gemalto"), False, ReaderNotFoundError),
        (e.NoReadersException(), False, ReaderNotFoundError),
        (cce("x", hresult=SCARD_E_SHARING_VIOLATION), False, TransportError),
        (cce("x", hresult=SCARD_E_PROTO_MISMATCH), False, TransportError),
        (ImportError("No module named 'smartcard'"), False, PcscUnavailableError),
    ]


@pytest.mark.parametrize(("exc", "connected", "expected"), _cases(), ids=lambda v: type(v).__name__)
def test_every_pyscard_exception_maps_to_its_capsim_error(
    exc: BaseException, connected: bool, expected: type[TransportError]
) -> None:
    mapped = map_pyscard_error(exc, reader="CAPSIM Virtual 00 00", connected=connected)
    assert type(mapped) is expected
    assert str(mapped)  # one line for the CLI
    assert "\n" not in str(mapped)


def test_the_proto_mismatch_message_points_at_the_atr() -> None:
    exc = exceptions.CardConnectionException("x", hresult=SCARD_E_PROTO_MISMATCH)
    assert "ATR" in str(map_pyscard_error(exc))


def test_negative_hresults_are_normalised() -> None:
    exc = pcsc_exceptions.EstablishContextException(SCARD_E_NO_SERVICE - (1 << 32))
    assert isinstance(map_pyscard_error(exc), PcscUnavailableError)


def test_a_capsim_error_passes_through_unchanged() -> None:
    err = NoCardError("no card")
    assert map_pyscard_error(err) is err


NAMES = ["ACS ACR39U ICC Reader 00 00", "CAPSIM Virtual 00 00", "CAPSIM Virtual 00 01"]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("CAPSIM Virtual 00 01", "CAPSIM Virtual 00 01"),
        ("acr39", "ACS ACR39U ICC Reader 00 00"),
        ("Virtual 00 00", "CAPSIM Virtual 00 00"),
        ("00 01", "CAPSIM Virtual 00 01"),
    ],
)
def test_resolve_reader_by_exact_name_or_unique_substring(wanted: str, expected: str) -> None:
    assert resolve_reader(wanted, NAMES) == expected


def test_an_exact_name_wins_over_a_longer_match() -> None:
    names = ["Reader 00 00", "Reader 00 00 (2)"]
    assert resolve_reader("Reader 00 00", names) == "Reader 00 00"


def test_ambiguity_lists_the_candidates() -> None:
    with pytest.raises(ReaderAmbiguousError) as info:
        resolve_reader("CAPSIM", NAMES)
    assert info.value.candidates == ["CAPSIM Virtual 00 00", "CAPSIM Virtual 00 01"]
    assert "CAPSIM Virtual 00 00" in str(info.value)
    assert "CAPSIM Virtual 00 01" in str(info.value)


def test_no_match_names_the_readers_there_are() -> None:
    with pytest.raises(ReaderNotFoundError) as info:
        resolve_reader("Omnikey", NAMES)
    assert not isinstance(info.value, ReaderAmbiguousError)
    assert "ACS ACR39U" in str(info.value)
    with pytest.raises(ReaderNotFoundError, match="no readers"):
        resolve_reader("Omnikey", [])


@pytest.mark.parametrize("bad", ["", "   ", None, True, -1])
def test_resolve_reader_rejects_empty_names(bad: object) -> None:
    with pytest.raises(ValidationError, match="reader"):
        resolve_reader(bad, NAMES)  # type: ignore[arg-type]


@given(
    names=st.lists(st.text(alphabet="ABCabc 01", min_size=1, max_size=8), max_size=5, unique=True),
    wanted=st.text(alphabet="ABCabc 01", min_size=1, max_size=4).filter(lambda s: s.strip()),
)
def test_resolve_reader_returns_a_matching_reader_or_says_why_not(names: list[str], wanted: str) -> None:
    matching = [n for n in names if wanted.casefold() in n.casefold()]
    if wanted in names or len(matching) == 1:
        chosen = resolve_reader(wanted, names)
        assert chosen == (wanted if wanted in names else matching[0])
    elif matching:
        with pytest.raises(ReaderAmbiguousError) as info:
            resolve_reader(wanted, names)
        assert info.value.candidates == matching
    else:
        with pytest.raises(ReaderNotFoundError) as not_found:
            resolve_reader(wanted, names)
        assert not isinstance(not_found.value, ReaderAmbiguousError)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"reader": ""}, "reader"),
        ({"reader": "x", "timeout": 0}, "timeout"),
        ({"reader": "x", "timeout": -1.0}, "timeout"),
    ],
)
def test_transport_rejects_bad_arguments(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValidationError, match=word):
        PcscTransport(**kwargs)  # type: ignore[arg-type]


def test_transmit_before_connect_is_a_clear_error() -> None:
    transport = PcscTransport("CAPSIM")
    with pytest.raises(TransportError, match="connect"):
        transport.transmit(bytes.fromhex("00A4040000"))
    with pytest.raises(ValidationError, match="apdu"):
        transport.transmit(b"\x00\xa4")
    transport.disconnect()  # idempotent without a session


@pytest.mark.parametrize(
    ("code", "connected", "expected"),
    [
        (SCARD_E_NO_SERVICE, False, PcscUnavailableError),
        (SCARD_E_NO_SMARTCARD, False, NoCardError),
        (SCARD_W_REMOVED_CARD, False, NoCardError),
        (SCARD_W_REMOVED_CARD, True, CardRemovedError),
        (SCARD_E_NOT_TRANSACTED, True, CardRemovedError),
        (SCARD_W_RESET_CARD, True, CardRemovedError),
        (SCARD_E_TIMEOUT, True, TransportTimeoutError),
        (SCARD_E_UNKNOWN_READER, False, ReaderNotFoundError),
        (SCARD_E_SHARING_VIOLATION, False, TransportError),
        (0x80100099, True, TransportError),  # not a known code
    ],
)
def test_result_codes_of_the_scard_layer_map_like_the_exceptions(
    code: int, connected: bool, expected: type[TransportError]
) -> None:
    from smartcard import scard

    from capsim.transports.pcsc_errors import hresult_error

    error = hresult_error(scard, code, "transmit", reader="R", connected=connected)
    assert type(error) is expected
    assert "\n" not in str(error)


def test_missing_pyscard_is_pcsc_unavailable_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from click.testing import CliRunner

    from capsim.cli import main
    from capsim.cli._common import ExitCode
    from capsim.transports.pcsc import list_readers

    monkeypatch.setitem(sys.modules, "smartcard", None)  # "import smartcard" now fails
    with pytest.raises(PcscUnavailableError, match=r"capsim\[pcsc\]"):
        list_readers()
    with pytest.raises(PcscUnavailableError, match=r"capsim\[pcsc\]"):
        PcscTransport("CAPSIM", timeout=5).connect()
    args = ["code", "respond", "--reader", "pcsc:CAPSIM", "--challenge", "1", "--pin-stdin"]
    result = CliRunner().invoke(main, args, input="1234\n")
    assert result.exit_code == ExitCode.PCSC_UNAVAILABLE, result.output
    assert "Traceback" not in result.output
