"""The CAP session at its edges: the command limit, the answer-size limit, a result asked too
early, the PSE directory it read, any error ending it for good, a first step off the graph.

Each test pins a rule of :mod:`capsim.reader.session` (its theory of operation, rules 3 and 4)
that a planted bug changed while every other reader test still passed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from capsim.apdu.response import ResponseApdu
from capsim.errors import LocalProtocolError, RemoteProtocolError, StatusWordError
from capsim.reader import MAX_COMMANDS, MAX_RESPONSE, TRANSITIONS, Answer, CapReader, CapSession, Phase, Step
from capsim.reader import session as session_module
from capsim.reader.apdus import gpo
from capsim.reader.graph import START, Edge, Start
from capsim.reader.run import Run
from capsim.tlv import encode
from tests.reader.helpers import ScriptedCard
from tests.reader.test_hostile import OK, natwest_like
from tests.utils import unhex

PSE_FCI = unhex("6F1A840E315041592E5359532E4444463031A5088801015F2D02656E")  # directory in SFI 1
MC_CAP = unhex("A0000000048002")


def _pse_listing(count: int) -> Callable[[bytes], bytes]:
    """A card refusing every SELECT but the PSE's, whose directory (record 1 of SFI 1) lists
    ``count`` distinct CAP-like applications (A0000000048002 + 2 bytes)."""
    entries = b"".join(encode(0x61, encode(0x4F, MC_CAP + i.to_bytes(2, "big"))) for i in range(count))

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA4:
            return PSE_FCI + OK if apdu[5:-1] == b"1PAY.SYS.DDF01" else unhex("6A82")
        if apdu[1] == 0xB2 and apdu[2] == 1:
            return encode(0x70, entries) + OK
        return unhex("6A83")

    return answer


def _commands_without_listed_applications() -> int:
    """Commands of a walk whose PSE lists nothing: the direct SELECTs, the PSE and its records."""
    card = ScriptedCard(_pse_listing(0))
    with pytest.raises(StatusWordError, match="no CAP application"):
        CapReader(card).identify("1234")
    return len(card.sent)


def test_the_first_command_and_max_commands_more_are_sent_then_the_session_gives_up() -> None:
    """Rule 4: one listed application more than fits and the session stops after exactly
    1 + MAX_COMMANDS commands; one fewer and the walk ends on its own with the same count."""
    fits = MAX_COMMANDS + 1 - _commands_without_listed_applications()
    assert fits > 0

    exact = ScriptedCard(_pse_listing(fits))
    with pytest.raises(StatusWordError, match="no CAP application"):
        CapReader(exact).identify("1234")
    assert len(exact.sent) == MAX_COMMANDS + 1

    over = ScriptedCard(_pse_listing(fits + 1))
    with pytest.raises(RemoteProtocolError) as caught:
        CapReader(over).identify("1234")
    assert str(caught.value) == f"CAP session: more than {MAX_COMMANDS} commands; giving up"
    assert len(over.sent) == MAX_COMMANDS + 1


def _first_answer(data: bytes) -> CapSession:
    session = CapSession("identify", pin="1234", profile="mc-cap")
    assert session.next_command() is not None
    session.receive(ResponseApdu(data, 0x9000))
    return session


def test_an_answer_over_max_response_bytes_is_refused_with_its_size() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        _first_answer(bytes(MAX_RESPONSE + 1))
    assert str(caught.value) == f"card sent {MAX_RESPONSE + 1} bytes; at most {MAX_RESPONSE} are accepted"


def test_an_answer_of_max_response_bytes_is_parsed() -> None:
    """At the limit the answer reaches the handler (which finds no FCI in zeros)."""
    with pytest.raises(RemoteProtocolError) as caught:
        _first_answer(bytes(MAX_RESPONSE))
    assert str(caught.value) == "SELECT answer has no FCI template 6F"


def test_a_result_asked_before_the_end_names_the_phase() -> None:
    session = CapSession("identify", pin="1234")
    with pytest.raises(LocalProtocolError) as caught:
        _ = session.result
    assert str(caught.value) == "CAP session: no result yet (phase select)"
    session.abort()
    with pytest.raises(LocalProtocolError) as caught:
        _ = session.result
    assert str(caught.value) == "CAP session: no result yet (phase error)"


def test_the_directory_is_the_pse_listing_once_read() -> None:
    """``directory`` is a property giving ``(AID, priority, label)`` of every PSE entry."""
    long_aid = MC_CAP + b"\x01"
    inner = natwest_like({})
    listing = encode(
        0x70,
        encode(0x61, encode(0x4F, unhex("A0000000041010")) + encode(0x50, b"MC") + encode(0x87, b"\x01"))
        + encode(0x61, encode(0x4F, long_aid) + encode(0x87, b"\x02")),
    )

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA4:
            name = apdu[5:-1]
            if name == b"1PAY.SYS.DDF01":  # directory in SFI 2 (the application's records are in SFI 1)
                return unhex("6F1A840E315041592E5359532E4444463031A5088801025F2D02656E") + OK
            if name == long_aid:
                return unhex("6F118408A000000004800201A5055F2D02656E") + OK
            return unhex("6A82")
        if apdu[1] == 0xB2 and apdu[3] == 0x14:  # SFI 2: the PSE directory
            return (listing + OK) if apdu[2] == 1 else unhex("6A83")
        return inner(apdu)

    card = ScriptedCard(answer)
    session = CapSession("identify", pin="1234")
    assert session.directory == ()
    while (command := session.next_command()) is not None:
        session.receive(ResponseApdu.from_bytes(card.transmit(command.to_bytes())))
    assert session.phase is Phase.DONE
    assert session.directory == ((unhex("A0000000041010"), 1, "MC"), (long_aid, 2, ""))
    assert session.result.aid == long_aid


def test_any_error_in_a_handler_ends_the_session_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 3, even for an error no card data should cause (a capsim bug): ERROR, for good."""

    def broken(run: Run, response: ResponseApdu) -> Step:
        raise TypeError("a bug")

    bad = dict(TRANSITIONS)
    bad[(Phase.SELECT, Answer.OK)] = Edge(broken, (Phase.GPO,))
    monkeypatch.setattr(session_module, "TRANSITIONS", bad)
    session = CapSession("identify", pin="1234", profile="mc-cap")
    with pytest.raises(TypeError, match="a bug"):
        session.receive(ResponseApdu(b"", 0x9000))
    assert session.phase is Phase.ERROR
    with pytest.raises(LocalProtocolError, match="a previous error ended this session"):
        session.next_command()
    with pytest.raises(LocalProtocolError, match=r"no command is waiting for an answer \(error\)"):
        session.receive(ResponseApdu(b"", 0x9000))


def test_a_first_step_the_graph_does_not_allow_is_refused_by_the_constructor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def to_gpo(run: Run) -> Step:
        return Step(Phase.GPO, gpo(b""))

    monkeypatch.setattr(session_module, "START", Start(to_gpo, START.to))
    with pytest.raises(LocalProtocolError) as caught:
        CapSession("identify", pin="1234")
    assert str(caught.value) == "CAP session: start moved to GPO, which the reader's graph does not allow"


def test_a_step_to_done_before_any_generate_ac_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def done(run: Run, response: ResponseApdu) -> Step:
        return Step(Phase.DONE)

    bad = dict(TRANSITIONS)
    bad[(Phase.SELECT, Answer.OK)] = Edge(done, (Phase.DONE,))
    monkeypatch.setattr(session_module, "TRANSITIONS", bad)
    session = CapSession("identify", pin="1234", profile="mc-cap")
    with pytest.raises(LocalProtocolError) as caught:
        session.receive(ResponseApdu(b"", 0x9000))
    assert str(caught.value) == "CAP session: done without a first GENERATE AC"
    assert session.phase is Phase.ERROR


def _message(call: Callable[[], object]) -> str:
    with pytest.raises(LocalProtocolError) as caught:
        call()
    return str(caught.value)


def test_each_misuse_of_a_session_has_its_own_message() -> None:
    session = CapSession("identify", pin="1234", profile="mc-cap")
    assert _message(lambda: session.enter_pin("1234")) == "CAP session: no PIN is wanted now (select)"
    bad_answer = b"not a response"
    assert _message(lambda: session.receive(bad_answer)) == "CAP session: receive() expects a ResponseApdu"  # type: ignore[arg-type]
    assert session.phase is Phase.SELECT  # a caller's mistake, not the card's: the session goes on
    session.abort()
    assert _message(session.next_command) == "CAP session: a previous error ended this session"
    assert _message(session.next_apdu) == "CAP session: a previous error ended this session"
    assert _message(lambda: session.receive(ResponseApdu(b"", 0x9000))) == (
        "CAP session: no command is waiting for an answer (error)"
    )


def test_an_answer_after_the_end_is_refused() -> None:
    card = ScriptedCard(natwest_like({}))
    session = CapSession("respond", pin="1234", challenge="12345678", profile="mc-cap")
    while (command := session.next_command()) is not None:
        session.receive(ResponseApdu.from_bytes(card.transmit(command.to_bytes())))
    assert session.result.code == "04822527"
    assert _message(lambda: session.receive(ResponseApdu(b"", 0x9000))) == (
        "CAP session: no command is waiting for an answer (done)"
    )


def test_malformed_card_data_is_retyped_naming_the_command() -> None:
    session = CapSession("identify", pin="1234", profile="mc-cap")
    with pytest.raises(RemoteProtocolError) as caught:
        session.receive(ResponseApdu(unhex("6F20"), 0x9000))
    assert str(caught.value) == (
        "card data rejected in A4 answer: value of tag 6F needs 32 bytes, only 0 remain (at offset 2)"
    )
    assert session.phase is Phase.ERROR


def test_a_handler_step_without_a_command_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_command(run: Run, response: ResponseApdu) -> Step:
        return Step(Phase.GPO)

    bad = dict(TRANSITIONS)
    bad[(Phase.SELECT, Answer.OK)] = Edge(no_command, (Phase.GPO,))
    monkeypatch.setattr(session_module, "TRANSITIONS", bad)
    session = CapSession("identify", pin="1234", profile="mc-cap")
    assert _message(lambda: session.receive(ResponseApdu(b"", 0x9000))) == (
        "CAP session: no_command gave no command for GPO"
    )


def test_what_a_session_knows_before_and_after_the_application_is_selected() -> None:
    """``application``, ``reader_profile``, ``card_data`` and ``warnings`` are read-only views."""
    card = ScriptedCard(natwest_like({0xCA: unhex("9F170102") + OK}))
    session = CapSession("respond", pin="1234", challenge="12345678")
    assert session.application is None
    assert session.reader_profile is None
    assert dict(session.card_data) == {}
    assert session.warnings == ()
    command = session.next_command()
    assert command is not None
    session.receive(ResponseApdu.from_bytes(card.transmit(command.to_bytes())))  # the FCI
    assert session.application == MC_CAP
    profile = session.reader_profile
    assert profile is not None
    assert profile.name == "mc-cap"
    assert session.card_data[0x84] == MC_CAP  # from the FCI
    while (command := session.next_command()) is not None:
        session.receive(ResponseApdu.from_bytes(card.transmit(command.to_bytes())))
    data = session.card_data
    assert data[0x84] == MC_CAP
    assert data[0x9F55] == b"\xa0"  # from the record
    with pytest.raises(TypeError):
        data[0x84] = b""  # type: ignore[index]
    assert session.warnings == ("only 2 PIN tries left",)
    assert session.result.warnings == session.warnings
