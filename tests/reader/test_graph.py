"""The reader's layout: a typed state graph the session enforces, a driver on public methods only,
no import of the transports, T=0 on the Transport protocol, and bounded caches on pure functions."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import pickle
import subprocess
import sys
from collections.abc import Callable
from types import MappingProxyType

import pytest

import capsim.reader
import capsim.reader.session as session_module
import capsim.tlv as tlv
from capsim.apdu.redact import redact_command, redact_response
from capsim.apdu.response import ResponseApdu
from capsim.cap import CapMode
from capsim.cards import EmvCapCard, new_card
from capsim.errors import LocalProtocolError, PinBlockedError, PinError, RemoteProtocolError, ValidationError
from capsim.reader import (
    ASK_PIN,
    ENTER_PIN,
    MAX_COMMANDS,
    MAX_RECORDS,
    MAX_RESPONSE,
    TRANSITIONS,
    Answer,
    CapReader,
    CapResult,
    CapSession,
    Phase,
)
from capsim.reader.apdus import ANSWER_CACHE_SIZE, template
from capsim.reader.graph import START, Edge, describe
from capsim.reader.phases import Step
from capsim.reader.result import Explanation
from capsim.reader.run import Run
from capsim.tlv import encode
from capsim.transports import T0Handling, TracingTransport, Transport, open_transport
from capsim.transports import base as transports_base
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN, InProcessTransport
from tests.reader.helpers import ScriptedCard
from tests.reader.test_hostile import natwest_like
from tests.utils import unhex

LIVE = [p for p in Phase if p not in (Phase.DONE, Phase.ERROR)]


# ------------------------------------------------------------------ the graph


def test_every_edge_is_a_typed_callable_with_its_next_phases() -> None:
    """No handler names looked up with getattr: each edge holds the function and where it may go."""
    assert capsim.reader.TRANSITIONS is TRANSITIONS
    assert isinstance(TRANSITIONS, MappingProxyType)
    for (phase, answer), edge in TRANSITIONS.items():
        assert isinstance(phase, Phase)
        assert isinstance(answer, Answer)
        assert isinstance(edge, Edge)
        assert callable(edge.handler)
        assert not isinstance(edge.handler, str)
        assert list(inspect.signature(edge.handler).parameters) == ["run", "response"]
        assert all(isinstance(p, Phase) and p is not Phase.ERROR for p in edge.to)
    assert set(START.to) == {Phase.SELECT, Phase.SELECT_PSE}


def test_no_dead_ends() -> None:
    """Every phase a step may enter (but DONE) answers at least OK, or (PIN) is left by the PIN
    entered; every live phase is entered somewhere."""
    entered = set(START.to).union(*(edge.to for edge in TRANSITIONS.values()), ENTER_PIN.to)
    assert entered == set(LIVE) | {Phase.DONE}
    for phase in LIVE:
        if phase is Phase.PIN:
            assert not any(p is Phase.PIN for p, _ in TRANSITIONS)  # it waits for no card answer
            continue
        assert (phase, Answer.OK) in TRANSITIONS
    assert ENTER_PIN.to == (Phase.VERIFY,)
    assert list(inspect.signature(ENTER_PIN.handler).parameters) == ["run", "pin_block"]


def test_describe_lists_every_edge_once() -> None:
    lines = describe().splitlines()
    assert len(lines) == 2 + len(TRANSITIONS)
    assert "FIRST_AC    OK                  on_first_ac          -> SECOND_AC | DONE" in lines
    assert "PIN         entered             on_pin_entered       -> VERIFY" in lines


def _blocked_inproc_card() -> EmvCapCard:
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    reader = CapReader(InProcessTransport(card))
    for _ in range(3):
        with pytest.raises(PinError):
            reader.identify("0000")
    assert card.state.ptc == 0
    return card


def test_a_pin_asked_for_later_is_asked_once_the_card_allows_a_try() -> None:
    """``pin=ASK_PIN``: the session waits in PIN after GET DATA 9F17, with no command, until
    enter_pin; the run then equals one given the PIN up front."""
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    card.power_on()
    session = CapSession("identify", pin=ASK_PIN)
    phases = []
    while (command := session.next_command()) is not None:
        phases.append(session.phase)
        session.receive(ResponseApdu.from_bytes(card.process(command.to_bytes())))
    assert phases[-1] is Phase.GET_PTC
    assert session.phase is Phase.PIN
    assert session.wants_pin
    with pytest.raises(LocalProtocolError, match="no result"):
        _ = session.result
    with pytest.raises(ValidationError):
        session.enter_pin("12")
    assert session.wants_pin  # a malformed PIN sends nothing; the session still waits
    session.enter_pin("1234")
    assert session.phase is Phase.VERIFY
    assert not session.wants_pin
    with pytest.raises(LocalProtocolError, match="no PIN is wanted"):
        session.enter_pin("1234")
    while (command := session.next_command()) is not None:
        session.receive(ResponseApdu.from_bytes(card.process(command.to_bytes())))
    twin = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    given = CapReader(InProcessTransport(twin)).identify("1234")
    assert session.result.code == given.code
    assert [c[1] for c, _ in session.result.transcript] == [c[1] for c, _ in given.transcript]


def test_a_blocked_card_ends_the_run_before_the_pin_is_asked() -> None:
    card = _blocked_inproc_card()
    asked: list[bool] = []
    session = CapSession("identify", pin=ASK_PIN)
    with pytest.raises(PinBlockedError, match="0 PIN tries left"):
        CapReader(InProcessTransport(card)).run(session, ask_pin=lambda: asked.append(True) or "1234")
    assert asked == []
    assert session.phase is Phase.ERROR
    assert all(c[1] != 0x20 for c, _ in session.transcript)  # no VERIFY


def test_a_session_waiting_for_a_pin_needs_ask_pin() -> None:
    session = CapSession("identify", pin=ASK_PIN)
    with open_transport("inproc:secur-acces") as link, pytest.raises(LocalProtocolError, match="ask_pin"):
        CapReader(link).run(session)
    assert session.phase is Phase.ERROR


def test_an_ask_pin_that_fails_ends_the_session() -> None:
    def refuse() -> str:
        raise ValidationError("PIN: no terminal")

    session = CapSession("identify", pin=ASK_PIN)
    with open_transport("inproc:secur-acces") as link, pytest.raises(ValidationError, match="no terminal"):
        CapReader(link).run(session, ask_pin=refuse)
    assert session.phase is Phase.ERROR


def test_the_wrong_pin_that_uses_the_last_try_says_the_pin_is_now_blocked() -> None:
    card = new_card("secur-acces", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    reader = CapReader(InProcessTransport(card))
    messages = []
    for _ in range(3):
        with pytest.raises(PinError) as info:
            reader.identify("0000")
        messages.append((info.value.tries_left, str(info.value)))
    assert messages[-1] == (0, "wrong PIN, no tries left: the card's PIN is now blocked")
    assert messages[0] == (2, "wrong PIN, 2 tries left")


def _session_waiting_in_select() -> CapSession:
    session = CapSession(CapMode.RESPOND, pin="1234", challenge="1", profile="mc-cap")
    assert session.phase is Phase.SELECT
    return session


def test_session_refuses_a_step_the_graph_does_not_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that moves somewhere its edge does not list is a capsim bug: LocalProtocolError, ERROR."""
    fci_answer = ResponseApdu.from_bytes(natwest_like({})(bytes.fromhex("00A4040007A000000004800200")))
    # the real handler moves to GPO; the edge below allows only READ_RECORD
    bad = dict(TRANSITIONS)
    real = TRANSITIONS[(Phase.SELECT, Answer.OK)]
    bad[(Phase.SELECT, Answer.OK)] = Edge(real.handler, (Phase.READ_RECORD,))
    monkeypatch.setattr(session_module, "TRANSITIONS", bad)
    session = _session_waiting_in_select()
    with pytest.raises(LocalProtocolError, match="on_selected moved to GPO"):
        session.receive(fci_answer)
    assert session.phase is Phase.ERROR
    with pytest.raises(LocalProtocolError):
        session.next_command()

    # the same answer through the real graph: GPO
    monkeypatch.setattr(session_module, "TRANSITIONS", TRANSITIONS)
    session = _session_waiting_in_select()
    session.receive(fci_answer)
    assert session.phase is Phase.GPO


def test_a_handler_step_without_a_command_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_command(run: Run, response: ResponseApdu) -> Step:
        return Step(Phase.GPO)

    bad = dict(TRANSITIONS)
    bad[(Phase.SELECT, Answer.OK)] = Edge(no_command, (Phase.GPO,))
    monkeypatch.setattr(session_module, "TRANSITIONS", bad)
    session = _session_waiting_in_select()
    with pytest.raises(LocalProtocolError, match="no command for GPO"):
        session.receive(ResponseApdu(unhex("6F00"), 0x9000))
    assert session.phase is Phase.ERROR


def test_phase_and_answer_keep_the_enum_hash() -> None:
    assert Phase.__hash__ is enum.Enum.__hash__
    assert Answer.__hash__ is enum.Enum.__hash__


# ------------------------------------------------------------------ layout and public API


def test_package_reexports_the_former_module_names() -> None:
    for name in (
        "MAX_COMMANDS",
        "MAX_RECORDS",
        "MAX_RESPONSE",
        "TRANSITIONS",
        "Answer",
        "CapReader",
        "CapResult",
        "CapSession",
        "Phase",
    ):
        assert name in capsim.reader.__all__
        assert hasattr(capsim.reader, name)
    assert (MAX_COMMANDS, MAX_RECORDS, MAX_RESPONSE) == (128, 64, 4096)


def test_the_reader_imports_nothing_from_the_transports() -> None:
    code = (
        "import sys, capsim.reader, capsim.reader.driver, capsim.reader.session; "
        "bad = sorted(m for m in sys.modules if m.startswith('capsim.transports')); "
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_driver_uses_only_public_session_methods() -> None:
    assert "session._" not in inspect.getsource(CapReader.run)
    # run() and discover() drive sessions through drive()
    source = inspect.getsource(CapReader.drive) + inspect.getsource(CapReader._next)
    assert "session._" not in source
    assert "session.next_apdu()" in source
    assert "session.receive(" in source


def test_next_apdu_is_next_command_encoded() -> None:
    session = CapSession("identify", pin="1234")
    command = session.next_command()
    assert command is not None
    assert session.next_apdu() == command.to_bytes()
    session.abort()
    with pytest.raises(LocalProtocolError):
        session.next_apdu()


def test_modules_stay_small() -> None:
    for module in capsim.reader.__dict__.values():
        if inspect.ismodule(module) and module.__name__.startswith("capsim.reader."):
            lines = inspect.getsource(module).count("\n")
            assert lines <= 600, f"{module.__name__}: {lines} lines"
            assert "Theory of operation" in (module.__doc__ or ""), module.__name__


# ------------------------------------------------------------------ redaction and T=0 below both layers


def test_redaction_lives_in_the_apdu_layer_and_the_transports_reuse_it() -> None:
    assert transports_base.redact_command is redact_command
    assert transports_base.redact_response is redact_response
    assert redact_command(unhex("0020008008241234FFFFFFFFFF")) == unhex("0020008008FFFFFFFFFFFFFFFF")


class _BareLink:
    """A transport written without capsim's base class and without ``resolves_t0``."""

    def connect(self) -> bytes:
        return b""

    def transmit(self, apdu: bytes) -> bytes:
        return unhex("9000")

    def disconnect(self) -> None:
        return None

    def __enter__(self) -> _BareLink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_resolves_t0_is_part_of_the_transport_protocol() -> None:
    assert not isinstance(_BareLink(), Transport)  # the protocol asks for resolves_t0
    card = ScriptedCard(lambda apdu: unhex("9000"))
    assert isinstance(card, Transport)
    assert card.resolves_t0 is False
    assert T0Handling(card).resolves_t0 is True
    assert TracingTransport(T0Handling(card)).resolves_t0 is True
    assert TracingTransport(card).resolves_t0 is False


def _chained(answer: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """``answer``'s data delivered over T=0: ``61xx`` first, then GET RESPONSE."""
    pending: list[bytes] = []

    def t0(apdu: bytes) -> bytes:
        if apdu[1] == 0xC0:
            return pending.pop()
        full = answer(apdu)
        if len(full) > 2:
            pending.append(full)
            return bytes([0x61, len(full) - 2])
        return full

    return t0


class _ResolvingCard(ScriptedCard):
    @property
    def resolves_t0(self) -> bool:
        return True


def test_the_reader_adds_t0_handling_only_where_the_link_lacks_it() -> None:
    plain = ScriptedCard(_chained(natwest_like({})))
    assert CapReader(plain, "mc-cap").respond("1234", "12345678").code == "04822527"
    assert any(apdu[1] == 0xC0 for apdu in plain.sent)
    # a link that claims to resolve T=0 gets no second resolver: the 61xx reaches the session
    claims = _ResolvingCard(_chained(natwest_like({})))
    with pytest.raises(Exception) as info:
        CapReader(claims, "mc-cap").respond("1234", "12345678")
    assert "61" in str(info.value)
    assert not any(apdu[1] == 0xC0 for apdu in claims.sent)


# ------------------------------------------------------------------ the result and the caches


def _result() -> CapResult:
    with open_transport("inproc:natwest") as card:
        return CapReader(card).identify("1234")


def test_explanation_is_lazy_on_a_plain_helper_not_a_descriptor() -> None:
    assert "explanation" not in CapResult.__dict__  # no descriptor installed on the frozen class
    field = {f.name: f for f in dataclasses.fields(CapResult)}["explanation"]
    assert field.type in ("Explanation", Explanation)
    result = _result()
    assert isinstance(result.explanation, Explanation)
    assert "bits" not in vars(result.explanation)  # not computed yet
    bits = tuple(result.explanation)
    assert vars(result.explanation)["bits"] == bits
    again = _result()
    assert "bits" not in vars(again.explanation)
    assert again == result
    assert hash(again) == hash(result)
    assert pickle.loads(pickle.dumps(again)) == result == dataclasses.replace(again)


def test_tlv_caches_are_bounded_lru_caches() -> None:
    for name in ("_TAG_BYTES", "_DOLS", "_FILL_RULES", "_FILL_PLANS"):
        assert not hasattr(tlv, name)
    for cache in (tlv._cached_parse_dol, tlv._cached_fill_plan_of):
        info = cache.cache_info()
        assert info.maxsize is not None
        assert info.maxsize <= 256
    # a stream of distinct DOLs (a hostile card) cannot grow them past their bound
    for i in range(600):
        dol = bytes([0x9F, 0x01 + i % 0x7E, 1 + i // 0x7E])
        tlv.fill_dol(dol, {})
    assert tlv._cached_parse_dol.cache_info().currsize <= 256
    assert tlv._cached_fill_plan_of.cache_info().currsize <= 256
    long_dol = b"\x9f\x37\x04" * 100  # longer than any card DOL: parsed, never kept
    before = tlv._cached_parse_dol.cache_info().misses
    assert len(tlv.parse_dol(long_dol)) == 100
    assert tlv._cached_parse_dol.cache_info().misses == before


def test_the_answer_cache_is_bounded_and_read_only() -> None:
    info = template.cache_info()
    assert info.maxsize == ANSWER_CACHE_SIZE
    for i in range(3 * ANSWER_CACHE_SIZE):
        template(encode(0x70, encode(0x9F36, i.to_bytes(2, "big"))), 0x70)
    assert template.cache_info().currsize <= ANSWER_CACHE_SIZE
    _, values = template(unhex("70045F340101"), 0x70)
    with pytest.raises(TypeError):
        values[0x5F34] = b"\x02"  # type: ignore[index]
    # a malformed answer is never cached: it raises every time
    for _ in range(2):
        with pytest.raises(Exception, match="needs"):
            template(unhex("7005"), 0x70)


def test_a_malformed_cdol2_stops_the_run_before_verify() -> None:
    """CDOL2 is parsed with CDOL1 after the records (not kept): a bad one costs no PIN try."""
    record = encode(
        0x70,
        encode(0x8C, unhex("9F3704")) + encode(0x8D, unhex("9F37")) + encode(0x9F56, unhex("0000FF")),
    )
    card = ScriptedCard(natwest_like({0xB2: record + unhex("9000")}))
    with pytest.raises(RemoteProtocolError, match="card data rejected"):
        CapReader(card, "mc-cap").respond("1234", "12345678")
    assert not any(apdu[1] == 0x20 for apdu in card.sent)
