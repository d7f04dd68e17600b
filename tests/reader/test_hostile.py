"""A hostile or broken card: only capsim errors, never a hang. And the session's state × answer table."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.apdu.response import ResponseApdu
from capsim.cap import CapMode, compute_code
from capsim.cards import new_card
from capsim.errors import (
    CapsimError,
    LocalProtocolError,
    RemoteProtocolError,
    StatusWordError,
    UnknownIssuerProfile,
)
from capsim.reader import MAX_COMMANDS, TRANSITIONS, Answer, CapReader, CapSession, Phase
from capsim.tlv import encode
from capsim.transports.inprocess import TEST_IMK_AC, TEST_PAN
from tests.reader.helpers import ScriptedCard
from tests.utils import unhex

NATWEST_RECORD = unhex(
    "70558E0A000000000000000001009F5501A09F561200001F00000000000FFFFF000000000080008C159F02069F0306"
    "9F1A0295055F2A029A039C019F37048D178A029F02069F03069F1A0295055F2A029A039C019F3704"
)
OK = b"\x90\x00"


def natwest_like(overrides: dict[int, bytes]) -> Callable[[bytes], bytes]:
    """A scripted NatWest-like card; ``overrides`` maps INS to a raw answer."""

    def answer(apdu: bytes) -> bytes:
        ins = apdu[1]
        if ins in overrides:
            return overrides[ins]
        if ins == 0xA4:
            return unhex("6F108407A0000000048002A5055F2D02656E") + OK
        if ins == 0xA8:
            return unhex("8006100008010100") + OK
        if ins == 0xB2:
            return NATWEST_RECORD + OK
        if ins == 0xCA:
            return unhex("9F170103") + OK
        if ins == 0x20:
            return OK
        if ins == 0xAE:
            return unhex("8012800042B7F9A572DA74CAFF06770A03A48000") + OK
        return unhex("6D00")

    return answer


def run(answer: Callable[[bytes], bytes]) -> tuple[str | None, ScriptedCard]:
    card = ScriptedCard(answer)
    code = CapReader(card, "mc-cap").respond("1234", "12345678").code
    return code, card


def test_baseline_script_gives_the_natwest_code() -> None:
    code, card = run(natwest_like({}))
    assert code == "04822527"
    assert len(card.sent) == 7


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({0xA4: unhex("6F20") + OK}, RemoteProtocolError, "card data rejected"),  # truncated FCI
        ({0xA4: unhex("A5009000")}, RemoteProtocolError, "no FCI"),
        ({0xA8: unhex("80011000") + OK}, RemoteProtocolError, "AIP"),
        ({0xA8: unhex("80051000080101") + OK}, RemoteProtocolError, "multiple of 4"),
        ({0xA8: unhex("8006100000010100") + OK}, RemoteProtocolError, "AFL entry"),  # SFI 0
        ({0xA8: unhex("8006100008020100") + OK}, RemoteProtocolError, "AFL entry"),  # last < first
        ({0xA8: unhex("77028200") + OK}, RemoteProtocolError, "AIP"),
        ({0xA8: unhex("9F0100") + OK}, RemoteProtocolError, "neither format"),
        ({0xA8: unhex("800610000801FE00") + OK}, RemoteProtocolError, "more than 64 records"),
        ({0xB2: unhex("6A83")}, StatusWordError, "6A83"),
        ({0xB2: unhex("7003") + OK}, RemoteProtocolError, "card data rejected"),
        ({0xB2: unhex("5A021234") + OK}, RemoteProtocolError, "record template"),
        ({0xB2: encode(0x70, encode(0x9F56, unhex("00FF"))) + OK}, RemoteProtocolError, "CDOL1"),
        (
            {0xB2: encode(0x70, encode(0x8C, unhex("9F3704"))) + OK},
            RemoteProtocolError,
            "CDOL2",
        ),
        (
            {0xB2: encode(0x70, encode(0x8C, unhex("9F3704")) + encode(0x8D, unhex("8A02"))) + OK},
            UnknownIssuerProfile,
            "no IPB",
        ),
        (
            {
                0xB2: encode(
                    0x70, encode(0x8C, unhex("9F3704")) + encode(0x8D, b"") + encode(0x9F55, b"\xc0")
                )
                + OK
            },
            RemoteProtocolError,
            "no PSN",
        ),
        (
            {0xB2: encode(0x70, encode(0x8C, unhex("9F37")) + encode(0x8D, unhex("8A02"))) + OK},
            RemoteProtocolError,
            "card data rejected",
        ),
        ({0xAE: unhex("8005800042B7F9") + OK}, RemoteProtocolError, "at least 11"),
        ({0xAE: unhex("8030" + "80" * 48) + OK}, RemoteProtocolError, "IAD of 37 bytes"),
        ({0xAE: unhex("77039F2701") + OK}, RemoteProtocolError, "card data rejected"),
        ({0xAE: unhex("77049F270180") + OK}, RemoteProtocolError, "lacks 9F36, 9F26"),
        ({0xAE: unhex("770F9F2701809F3601009F260400000000") + OK}, RemoteProtocolError, "ATC 2 and AC 8"),
        ({0xAE: unhex("6985")}, StatusWordError, "6985"),
        ({0xAE: b"\x90"}, RemoteProtocolError, "status word"),
        ({0x20: unhex("6A80")}, StatusWordError, "6A80"),
        ({0xA8: unhex("6985")}, StatusWordError, "6985"),
        ({0xA8: b"\x00" * 5000 + OK}, RemoteProtocolError, "at most 4096"),
        ({0xB2: encode(0x70, b"\x00" * 3000) + OK}, RemoteProtocolError, "CDOL1"),
    ],
)
def test_malformed_answers(overrides: dict[int, bytes], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        run(natwest_like(overrides))


def test_data_shorter_than_ipb() -> None:
    record = NATWEST_RECORD.replace(unhex("9F5612"), unhex("9F5612"))
    short_ac = unhex("800B800042B7F9A572DA74CAFF") + OK  # no IAD: D is 11 bytes, the IPB 18
    with pytest.raises(RemoteProtocolError, match="data string has 11 bytes"):
        run(natwest_like({0xB2: record + OK, 0xAE: short_ac}))


def test_endless_61xx() -> None:
    code = None
    with pytest.raises(RemoteProtocolError, match="61xx"):
        code, _ = run(lambda apdu: unhex("6110"))
    assert code is None


def test_endless_6cxx_and_wrong_le() -> None:
    with pytest.raises(RemoteProtocolError, match="again after an Le correction"):
        run(lambda apdu: unhex("6C04"))


def test_t0_continuation_is_resolved() -> None:
    """A T=0 card answering every case 4 command with 61xx still gives the NatWest code."""
    inner = natwest_like({})
    pending: dict[str, bytes] = {}

    def t0(apdu: bytes) -> bytes:
        if apdu[1] == 0xC0:
            data = pending.pop("data")
            assert apdu[4] == len(data) - 2
            return data
        full = inner(apdu)
        if len(full) > 2 and full[-2:] == OK:
            pending["data"] = full
            return bytes([0x61, len(full) - 2])
        return full

    code, card = run(t0)
    assert code == "04822527"
    assert sum(1 for c in card.sent if c[1] == 0xC0) == 6


def test_every_aid_refused_then_pse_lists_nothing_useful() -> None:
    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA4 and apdu[5:-1] == b"1PAY.SYS.DDF01":
            return unhex("6F1A840E315041592E5359532E4444463031A5088801015F2D02656E") + OK
        if apdu[1] == 0xB2 and apdu[2] == 1:
            return (
                encode(0x70, encode(0x61, encode(0x4F, unhex("A0000000041010")) + encode(0x50, b"MC"))) + OK
            )
        return unhex("6A82") if apdu[1] == 0xA4 else unhex("6A83")

    card = ScriptedCard(answer)
    with pytest.raises(StatusWordError, match=r"no CAP application .*A0000000041010 \(MC\)") as info:
        CapReader(card).identify("1234")
    assert (info.value.sw, info.value.ins) == (0x6A82, 0xA4)
    selects = [c for c in card.sent if c[1] == 0xA4]
    assert len(selects) == 6 + 1  # six known AIDs, then the PSE


def test_pse_lists_a_longer_cap_aid() -> None:
    """The PSE lists A0000000048002 + suffix; the reader selects it after the direct SELECTs fail."""
    long_aid = unhex("A000000004800201")
    inner = natwest_like({})

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA4:
            name = apdu[5:-1]
            if name == b"1PAY.SYS.DDF01":  # directory in SFI 2
                return unhex("6F1A840E315041592E5359532E4444463031A5088801025F2D02656E") + OK
            if name == long_aid:
                return unhex("6F118408A000000004800201A5055F2D02656E") + OK
            return unhex("6A82")
        if apdu[1] == 0xB2 and apdu[3] == 0x14 and apdu[2] == 1:
            entries = encode(0x61, encode(0x4F, unhex("A0000000041010")) + encode(0x87, b"\x01")) + encode(
                0x61, encode(0x4F, long_aid) + encode(0x87, b"\x02")
            )
            return encode(0x70, entries) + OK
        if apdu[1] == 0xB2 and apdu[3] == 0x14:
            return unhex("6A83")
        return inner(apdu)

    card = ScriptedCard(answer)
    result = CapReader(card).respond("1234", "12345678")
    assert result.aid == long_aid
    assert result.profile == "mc-cap"


# ------------------------------------------------------------------ fuzzing a real card's answers

MUTATIONS = st.sampled_from(["random", "truncate", "flip", "61xx", "6Cxx", "empty", "sw"])


@given(
    st.lists(
        st.tuples(st.integers(0, 9), MUTATIONS, st.binary(max_size=40), st.integers(0, 255)), max_size=4
    ),
    st.sampled_from(list(CapMode)),
)
def test_mutated_card_gives_only_capsim_errors(
    mutations: list[tuple[int, str, bytes, int]], mode: CapMode
) -> None:
    card = new_card("rabobank", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    plan = {index: (kind, blob, n) for index, kind, blob, n in mutations}
    counter = {"n": 0}

    def answer(apdu: bytes) -> bytes:
        i = counter["n"]
        counter["n"] += 1
        real = card.process(apdu)
        if i not in plan:
            return real
        kind, blob, n = plan[i]
        if kind == "random":
            return blob
        if kind == "truncate":
            return real[: n % (len(real) + 1)]
        if kind == "flip":
            pos = n % len(real)
            return real[:pos] + bytes([real[pos] ^ 0xFF]) + real[pos + 1 :]
        if kind == "61xx":
            return bytes([0x61, n])
        if kind == "6Cxx":
            return bytes([0x6C, n])
        if kind == "empty":
            return b""
        return real[:-2] + bytes([n, blob[0] if blob else 0])

    transport = ScriptedCard(answer)
    reader = CapReader(transport)
    try:
        if mode is CapMode.IDENTIFY:
            result = reader.identify("1234")
        elif mode is CapMode.RESPOND:
            result = reader.respond("1234", "1")
        elif mode is CapMode.SIGN:
            result = reader.sign("1234", "1", 100, "EUR")
        else:
            result = reader.sign_data("1234", ["1"])
    except CapsimError:
        pass
    else:
        assert len(result.code) == 8
    assert len(transport.sent) <= MAX_COMMANDS + 40


@given(st.binary(max_size=300), st.binary(min_size=2, max_size=2))
def test_any_bytes_as_every_answer(body: bytes, sw: bytes) -> None:
    card = ScriptedCard(lambda apdu: body + sw)
    with pytest.raises(CapsimError):
        CapReader(card).identify("1234")
    assert len(card.sent) <= MAX_COMMANDS + 40


def test_endless_records_and_selects_are_bounded() -> None:
    """Every SELECT refused, the PSE claims 16 records of nothing: a bounded walk."""

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA4 and apdu[5:-1] == b"1PAY.SYS.DDF01":
            return unhex("6F1A840E315041592E5359532E4444463031A5088801015F2D02656E") + OK
        if apdu[1] == 0xB2:
            return encode(0x70, b"") + OK
        return unhex("6A82")

    card = ScriptedCard(answer)
    with pytest.raises(StatusWordError, match="no CAP application"):
        CapReader(card).identify("1234")
    assert len(card.sent) < 40


# ------------------------------------------------------------------ the state × answer table

SW_FOR = {
    Answer.OK: 0x9000,
    Answer.NOT_FOUND: 0x6A82,
    Answer.RECORD_NOT_FOUND: 0x6A83,
    Answer.BLOCKED: 0x6283,
    Answer.DATA_UNAVAILABLE: 0x6A88,
    Answer.PIN_RETRY: 0x63C2,
    Answer.PIN_BLOCKED: 0x6983,
    Answer.OTHER: 0x6F00,
}


def _session_at(phase: Phase) -> tuple[CapSession, bytes]:
    """Drive a NatWest-like session until it waits in ``phase``; also return the scripted answer."""
    script = natwest_like({})
    if phase in (Phase.SELECT_PSE, Phase.READ_PSE):

        def script(apdu: bytes) -> bytes:
            if apdu[1] == 0xA4 and apdu[5:-1] == b"1PAY.SYS.DDF01":
                return unhex("6F1A840E315041592E5359532E4444463031A5088801015F2D02656E") + OK
            return unhex("6A82")

    session = CapSession(CapMode.RESPOND, pin="1234", challenge="1", profile="mc-cap")
    for _ in range(20):
        command = session.next_command()
        assert command is not None
        if session.phase is phase:
            return session, script(command.to_bytes())
        session.receive(ResponseApdu.from_bytes(script(command.to_bytes())))
    raise AssertionError(f"never reached {phase}")


# the phases that wait for a card answer (PIN waits for the cardholder: tests/reader/test_graph.py)
LIVE_PHASES = [p for p in Phase if p not in (Phase.DONE, Phase.ERROR, Phase.PIN)]


@given(st.sampled_from(LIVE_PHASES), st.sampled_from(list(Answer)), st.booleans())
def test_phase_answer_table(phase: Phase, answer: Answer, with_data: bool) -> None:
    session, real = _session_at(phase)
    data = real[:-2] if with_data else b""
    response = ResponseApdu(data, SW_FOR[answer])
    assert Answer.of(response.sw) is answer
    if (phase, answer) not in TRANSITIONS:
        # a pair missing from the table: the status word's typed error, and the ERROR phase
        with pytest.raises(StatusWordError) as info:
            session.receive(response)
        assert info.value.sw == SW_FOR[answer]
        assert session.phase is Phase.ERROR
        return
    try:
        session.receive(response)
    except CapsimError:
        # a listed pair whose data the handler rejects (or a PIN error): ERROR for good
        assert session.phase is Phase.ERROR
        with pytest.raises(LocalProtocolError):
            session.next_command()
        with pytest.raises(LocalProtocolError):
            session.receive(response)
        return
    assert session.phase is not Phase.ERROR
    assert session.next_command() is not None or session.phase is Phase.DONE


def test_local_misuse() -> None:
    session = CapSession(CapMode.IDENTIFY, pin="1234")
    with pytest.raises(LocalProtocolError, match="no result"):
        _ = session.result
    with pytest.raises(LocalProtocolError, match="ResponseApdu"):
        session.receive(b"\x90\x00")  # type: ignore[arg-type]
    session.abort()
    with pytest.raises(LocalProtocolError):
        session.next_command()


def test_session_is_sans_io_and_complete() -> None:
    card = new_card("natwest", pan=TEST_PAN, imk_ac=TEST_IMK_AC)
    card.power_on()
    session = CapSession("identify", pin="1234")
    phases = []
    while (command := session.next_command()) is not None:
        phases.append(session.phase)
        session.receive(ResponseApdu.from_bytes(card.process(command.to_bytes())))
    assert phases == [
        Phase.SELECT,
        Phase.GPO,
        Phase.READ_RECORD,
        Phase.GET_PTC,
        Phase.VERIFY,
        Phase.FIRST_AC,
        Phase.SECOND_AC,
    ]
    assert session.phase is Phase.DONE
    assert session.result.code.isdigit()
    with pytest.raises(LocalProtocolError):
        session.receive(ResponseApdu(b"", 0x9000))


# ------------------------------------------------------------------ card variations the session must handle

NATWEST_FCI_WITH_IAF = encode(
    0x6F,
    encode(0x84, unhex("A0000000048002"))
    + encode(
        0xA5, encode(0x5F2D, b"en") + encode(0xBF0C, encode(0x5F2C, b"\x00\x56") + encode(0x9F55, b"\xc0"))
    ),
)


def test_iaf_from_the_fci_and_record_wins() -> None:
    """Record IAF A0 wins over the FCI's C0: no PSN in D, the NatWest code stays."""
    code, _ = run(natwest_like({0xA4: NATWEST_FCI_WITH_IAF + OK}))
    assert code == "04822527"


def test_iaf_only_in_the_fci() -> None:
    """Record without 9F55: the FCI's C0 applies, so the PSN must exist (and is then in D)."""
    record_without_iaf = NATWEST_RECORD.replace(unhex("9F5501A0"), b"").replace(unhex("7055"), unhex("7051"))
    with pytest.raises(RemoteProtocolError, match="no PSN"):
        run(natwest_like({0xA4: NATWEST_FCI_WITH_IAF + OK, 0xB2: record_without_iaf + OK}))
    with_psn = unhex("7055") + record_without_iaf[2:] + unhex("5F340101")
    code, _ = run(natwest_like({0xA4: NATWEST_FCI_WITH_IAF + OK, 0xB2: with_psn + OK}))
    # IAF C0 from the FCI: the PSN byte leads D, so the IPB now falls one byte earlier
    expected = compute_code(
        unhex("00001F00000000000FFFFF00000000008000"),
        b"\x80",
        unhex("0042"),
        unhex("B7F9A572DA74CAFF"),
        unhex("06770A03A48000"),
        psn=b"\x01",
    )
    assert code == expected != "04822527"


def test_get_data_6c04_is_resent_with_le() -> None:
    inner = natwest_like({})

    def answer(apdu: bytes) -> bytes:
        if apdu == unhex("80CA9F1700"):
            return unhex("6C04")
        if apdu == unhex("80CA9F1704"):
            return unhex("9F170102") + OK
        return inner(apdu)

    card = ScriptedCard(answer)
    result = CapReader(card, "mc-cap").respond("1234", "12345678")
    assert unhex("80CA9F1704") in card.sent
    assert result.warnings == ("only 2 PIN tries left",)


def test_aac_at_first_generate_ac_is_reported() -> None:
    aac = unhex("8012000042B7F9A572DA74CAFF06770A03A48000") + OK
    code, _ = run(natwest_like({0xAE: aac}))
    assert code is not None
    card = ScriptedCard(natwest_like({0xAE: aac}))
    result = CapReader(card, "mc-cap").respond("1234", "12345678")
    assert result.cid == 0
    assert "returned an AAC (CID 00) instead of an ARQC" in result.warnings[0]


def test_short_data_allowed_by_profile() -> None:
    from capsim.profiles import get_reader_profile

    short_ac = unhex("800B800042B7F9A572DA74CAFF") + OK
    profile = get_reader_profile("mc-cap").replace(allow_short_data=True)
    card = ScriptedCard(natwest_like({0xAE: short_ac}))
    result = CapReader(card, profile).respond("1234", "12345678")
    assert result.warnings == ("the data string is shorter than the IPB: missing bits taken as 0",)
    # the NatWest code's last bit came from IAD byte 6, now missing: 04822527 - 1
    assert result.code == "04822526"


def test_psn_prefix_digits() -> None:
    from capsim.errors import CodeOverflowError
    from capsim.profiles import get_reader_profile

    record = unhex("7059") + NATWEST_RECORD[2:] + unhex("5F340107")
    card = ScriptedCard(natwest_like({0xB2: record + OK}))
    profile = get_reader_profile("mc-cap").replace(psn_prefix_digits=3)
    assert CapReader(card, profile).respond("1234", "12345678").code == "007" + "04822527"
    big_psn = unhex("7059") + NATWEST_RECORD[2:] + unhex("5F340112")
    card = ScriptedCard(natwest_like({0xB2: big_psn + OK}))
    with pytest.raises(CodeOverflowError, match="PSN 18 does not fit 1 prefix digit"):
        CapReader(card, profile.replace(psn_prefix_digits=1)).respond("1234", "12345678")
    no_psn = ScriptedCard(natwest_like({}))
    with pytest.raises(RemoteProtocolError, match="prefixes the PSN"):
        CapReader(no_psn, profile).respond("1234", "12345678")


def test_no_closing_aac_when_the_profile_says_so() -> None:
    from capsim.profiles import get_reader_profile

    card = ScriptedCard(natwest_like({}))
    result = CapReader(card, get_reader_profile("mc-cap").replace(send_aac=False)).respond("1234", "12345678")
    assert result.code == "04822527"
    assert sum(1 for c in card.sent if c[1] == 0xAE) == 1


def test_belgian_explanation_matches_the_value() -> None:
    from capsim.profiles import get_reader_profile

    card = ScriptedCard(natwest_like({}))
    profile = get_reader_profile("mc-cap").replace(no_ipb="belgian", belgian_aids=(unhex("A0000000048002"),))
    result = CapReader(card, profile).respond("1234", "12345678")
    assert result.code == "43255423"  # vectors/cap/belgian-synthetic.txt BE-NATWEST-AC
    v = sum(b.value << b.position for b in result.explanation)
    assert f"{(v + (v % 10) * 10**7) % 10**8:08d}" == result.code
    assert [(b.field, b.field_byte) for b in result.explanation[:3]] == [("AC", 6), ("AC", 6), ("AC", 7)]
    assert "Belgian function" in result.explain()
