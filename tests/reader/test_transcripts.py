"""Published transcripts replay to their published codes, and the reader's commands match them
field by field (date, TVR, 9F34, 9F35, UN, amount)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsim.cap import CapMode
from capsim.errors import RemoteProtocolError, StateFileError, StatusWordError
from capsim.reader import CapReader, CapResult
from capsim.tlv import parse_dol
from capsim.transports import TracingTransport, open_transport
from capsim.transports.replay import RecordedSession, ReplayTransport, read_transcript
from tests.reader.helpers import ScriptedCard
from tests.utils import VECTORS, load_kv_blocks, load_transcript, unhex

# Every transcript that publishes a code (and the reader inputs that produced it).
TRANSCRIPTS = sorted(
    p for p in (VECTORS / "transcripts").glob("*.txt") if {"CODE", "MODE"} <= load_transcript(p).meta.keys()
)
FIELD_TAGS = {
    0x9A: "date",
    0x95: "TVR",
    0x9F34: "CVM results",
    0x9F35: "terminal type",
    0x9F37: "UN",
    0x9F02: "amount",
    0x5F2A: "currency",
    0x8A: "ARC",
}


def _run(reader: CapReader, meta: dict[str, str]) -> CapResult:
    mode = CapMode(meta["MODE"])
    if mode is CapMode.RESPOND:
        return reader.respond("1234", meta["CHALLENGE"])
    if mode is CapMode.TDS:
        return reader.sign_data("1234", meta["FIELDS"].split(","))
    if mode is CapMode.IDENTIFY:
        return reader.identify("1234")
    return reader.sign("1234", meta.get("CHALLENGE"), meta.get("AMOUNT"), meta.get("CURRENCY"))


def _fields(dol: bytes, data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    for entry in parse_dol(dol):
        out[entry.tag] = data[pos : pos + entry.length]
        pos += entry.length
    assert pos == len(data)
    return out


def _record_tags(transcript_responses: list[bytes]) -> dict[int, bytes]:
    from capsim.tlv import decode, walk

    tags: dict[int, bytes] = {}
    for rsp in transcript_responses:
        if rsp.startswith(b"\x70"):
            for _, obj in walk(decode(rsp[:-2])):
                tags.setdefault(obj.tag, obj.value)
    return tags


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript_replays_to_published_code(path: Path) -> None:
    t = load_transcript(path)
    profile = t.meta["PROFILE"]
    tracer = TracingTransport(ReplayTransport(path), redact=False)
    with tracer:
        result = _run(CapReader(tracer, profile), t.meta)
        assert tracer.inner.remaining == 0  # type: ignore[attr-defined]
    assert result.code == t.meta["CODE"]
    assert result.profile == profile

    # The commands the reader sent, minus the PIN steps the recording lacks, are the recorded ones.
    sent = [c for c, _ in tracer.exchanges if c[1] not in (0x20, 0xCA)]
    recorded = [c for c, _ in t.exchanges]
    assert len(sent) == len(recorded)
    for mine, theirs in zip(sent, recorded, strict=True):
        if len(theirs) == len(mine) - 1 and len(theirs) > 5 and len(theirs) == 5 + theirs[4]:
            # the recording has no Le byte (case 3 form); the reader sends Le = 00 (case 4)
            assert mine[-1] == 0x00
            assert mine[:-1] == theirs
        else:
            assert mine == theirs


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript_fields_one_by_one(path: Path) -> None:
    """Date, TVR, 9F34, 9F35, UN and amount: each compared separately, with its name."""
    t = load_transcript(path)
    tags = _record_tags([r for _, r in t.exchanges])
    cdol1, cdol2 = tags[0x8C], tags[0x8D]
    tracer = TracingTransport(ReplayTransport(path), redact=False)
    with tracer:
        _run(CapReader(tracer, t.meta["PROFILE"]), t.meta)
    mine = [c for c, _ in tracer.exchanges if c[1] == 0xAE]
    theirs = [c for c, _ in t.exchanges if c[1] == 0xAE]
    for dol, a, b in ((cdol1, mine[0], theirs[0]), (cdol2, mine[1], theirs[1])):
        fa = _fields(dol, a[5 : 5 + a[4]])
        fb = _fields(dol, b[5 : 5 + b[4]])
        assert fa.keys() == fb.keys()
        for tag, name in FIELD_TAGS.items():
            if tag in fb:
                assert fa[tag] == fb[tag], f"{name} ({tag:X}) differs"
        assert fa == fb
    assert mine[0][2] == 0x80  # ARQC
    assert mine[1][2] == 0x00  # AAC


def test_natwest_explanation_and_details() -> None:
    with ReplayTransport(VECTORS / "transcripts/natwest-fc09.txt") as card:
        result = CapReader(card, "mc-cap").respond("1234", "12345678")
    assert result.code == "04822527"
    assert result.atc == 0x42
    assert result.cryptogram == unhex("B7F9A572DA74CAFF")
    assert result.iad == unhex("06770A03A48000")
    assert result.psn is None
    assert result.aid == unhex("A0000000048002")
    assert result.warnings == ()
    assert "".join(str(b.value) for b in result.explanation) == f"{4822527:026b}"
    # the leading-zero challenge form is the same challenge
    with ReplayTransport(VECTORS / "transcripts/natwest-fc09.txt") as card:
        assert CapReader(card, "mc-cap").sign("1234", "12345678", 0, "EUR").code == "04822527"


def test_rabobank_tds_details() -> None:
    with ReplayTransport(VECTORS / "transcripts/rabobank-tds.txt") as card:
        result = CapReader(card, "mc-cap").sign_data("1234", ["0530026806"])
    assert result.code == "08180460"
    assert result.tds_mac == unhex("D2EC6598EC48C83B")
    assert result.cryptogram == unhex("9CA5A4CA1651CE31")
    assert result.psn == "08"
    assert [b.field for b in result.explanation[:3]] == ["PSN"] * 3


def test_automatic_profile_on_replay() -> None:
    """No profile named: the first AID tried is mc-cap's, which the NatWest card answers."""
    with ReplayTransport(VECTORS / "transcripts/natwest-fc09.txt") as card:
        result = CapReader(card).respond("1234", "12345678")
    assert (result.profile, result.code) == ("mc-cap", "04822527")


def test_wrong_profile_diverges_at_date() -> None:
    """visa-dpa sends date 010101 where the NatWest reader sent 000000: the replay names the byte."""
    with ReplayTransport(VECTORS / "transcripts/natwest-fc09.txt") as card:
        reader = CapReader(card, "visa-dpa", aid=unhex("A0000000048002"))
        with pytest.raises(
            RemoteProtocolError,
            match=r"command 4 differs from the recording at byte 26: sent 01, recorded 00",
        ):
            reader.respond("1234", "12345678")


def test_wrong_challenge_diverges_at_un() -> None:
    with ReplayTransport(VECTORS / "transcripts/natwest-fc09.txt") as card:
        with pytest.raises(RemoteProtocolError, match="byte 30: sent 87, recorded 12"):
            CapReader(card, "mc-cap").respond("1234", "87654321")
        with pytest.raises(RemoteProtocolError, match="already diverged"):
            card.transmit(bytes.fromhex("00A4040007A000000004800200"))


# ------------------------------------------------------------------ Barclays (python-emv fixtures)

BARCLAYS = {b["ID"]: b for b in load_kv_blocks(VECTORS / "cap/barclays.txt")}


@pytest.mark.parametrize(
    ("gac", "response", "call"),
    [
        ("CAP-BARCLAYS-GAC-IDENTIFY", "CAP-BARCLAYS-1", lambda r: r.identify("1234")),
        ("CAP-BARCLAYS-GAC-SIGN", "CAP-BARCLAYS-2", lambda r: r.sign("1234", "78901234", 123456)),
        ("CAP-BARCLAYS-GAC-SIGN15", "CAP-BARCLAYS-1", lambda r: r.sign("1234", "78901234", "15.00")),
    ],
)
def test_barclays_card_data(gac: str, response: str, call: object) -> None:
    """The published Barclays record and GENERATE AC answers behind a scripted card.

    SELECT and GPO answers are not published for these cards; the script uses a plain FCI and
    the record's AFL (synthetic). The record, the expected GENERATE AC command and the
    responses are the published fixtures.
    """
    record = unhex(BARCLAYS["CAP-BARCLAYS-RECORD"]["RECORD"])
    expected_gac = unhex(BARCLAYS[gac]["COMMAND"])
    gac_response = unhex(BARCLAYS[response]["RESPONSE"])
    script = RecordedSession(
        exchanges=(
            (unhex("00A4040007A000000004800200"), unhex("6A82")),  # automatic choice: mc-cap first
            (unhex("00A4040007A000000003800200"), unhex("6F098407A0000000038002A5009000")),
            (unhex("80A8000002830000"), unhex("800610000801010090 00")),
            (unhex("00B2010C00"), record + b"\x90\x00"),
            (expected_gac, gac_response),
            (unhex("80AE00001F5A33") + expected_gac[5:-1] + b"\x00", unhex("6985")),
        )
    )
    with ReplayTransport(script) as card:
        result = call(CapReader(card))  # type: ignore[operator]
    assert result.code == BARCLAYS[response]["CODE"]
    assert result.profile == "visa-dpa"
    assert result.warnings == ("the closing GENERATE AC (AAC) was answered 6985",)


# ------------------------------------------------------------------ recording and replaying


def test_trace_save_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "session.txt"
    lines: list[str] = []
    with TracingTransport(open_transport("inproc:rabobank"), sink=lines.append) as tracer:
        first = CapReader(tracer).respond("1234", "4711")
        tracer.save(str(path), source="capsim test session", meta={"MODE": "respond"})
    text = path.read_text()
    assert text.startswith("# Source: capsim test session")
    assert "0020008008FFFFFFFFFFFFFFFF" in text  # the PIN block is redacted
    assert "241234" not in text
    assert "1234567890123456" not in text  # the card's PAN (5A) is redacted
    assert "5A08FFFFFFFFFFFFFFFF" in text
    assert any(line.startswith("> 0020008008FF") for line in lines)
    session = read_transcript(path)
    assert session.meta["MODE"] == "respond"
    with ReplayTransport(path) as card:
        again = CapReader(card).respond("9999", "00004711")  # any PIN matches a redacted block
    assert again.code == first.code
    assert again.atc == first.atc


def test_unredacted_trace_keeps_pin_block() -> None:
    with TracingTransport(open_transport("inproc:natwest"), redact=False) as tracer:
        CapReader(tracer).identify("1234")
    verify = [c for c, _ in tracer.exchanges if c[1] == 0x20]
    assert verify == [unhex("0020008008241234FFFFFFFFFF")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("> 00A4\n< 9000\n", "Source"),
        ("# Source: x\n> 00A4\n> 00A4\n< 9000\n", "two commands"),
        ("# Source: x\n< 9000\n", "response without a command"),
        ("# Source: x\n> 00A4\n< 90\n", "status word"),
        ("# Source: x\n> 00ZZ\n< 9000\n", "not hex"),
        ("# Source: x\nhello\n", "expected"),
        ("# Source: x\n> 00A4\n", "no response"),
    ],
)
def test_malformed_transcripts(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    if message == "Source":
        read_transcript(path)  # the provenance header is a vectors/ rule, not a file-format rule
        return
    with pytest.raises(StateFileError, match=message):
        read_transcript(path)


def test_replay_beyond_the_recording() -> None:
    script = RecordedSession(exchanges=((unhex("00A4040007A000000004800200"), unhex("6A82")),))
    with ReplayTransport(script, synthesize_pin=False) as card:
        assert card.transmit(unhex("00A4040007A000000004800200")) == unhex("6A82")
        with pytest.raises(RemoteProtocolError, match="beyond the recording"):
            card.transmit(unhex("00A4040007A000000003800200"))


def test_replay_spec_string() -> None:
    with open_transport(f"replay:{VECTORS / 'transcripts/natwest-fc09.txt'}") as card:
        assert CapReader(card, "mc-cap").respond("1234", "12345678").code == "04822527"


def test_scripted_card_helper_counts() -> None:
    card = ScriptedCard(lambda apdu: b"\x6a\x82")
    with card, pytest.raises(StatusWordError, match="no CAP application"):
        CapReader(card, "mc-cap").identify("1234")
    # mc-cap's AID, then the PSE
    assert [c[5:-1] for c in card.sent] == [unhex("A0000000048002"), b"1PAY.SYS.DDF01"]


def test_on_exchange_sees_every_raw_exchange() -> None:
    seen: list[tuple[bytes, bytes]] = []
    with ReplayTransport(VECTORS / "transcripts/natwest-fc09.txt") as card:
        reader = CapReader(card, "mc-cap")
        from capsim.reader import CapSession

        session = CapSession("respond", pin="1234", challenge="12345678", profile="mc-cap")
        result = reader.run(session, on_exchange=lambda c, r: seen.append((c, r)))
    assert len(seen) == len(result.transcript) == 7  # 5 recorded + synthesized GET DATA and VERIFY
    assert seen[4][0] == unhex("0020008008241234FFFFFFFFFF")  # raw: the PIN block is not redacted here
    assert result.transcript[4][0] == unhex("0020008008FFFFFFFFFFFFFFFF")
