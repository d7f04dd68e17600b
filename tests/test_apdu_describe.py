"""The decoded trace: one description of an exchange for ``--trace`` and ``capsim card apdu``,
redacted by the one rule the reader's transcripts use."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from capsim.apdu.describe import describe_exchange, instruction_name
from capsim.apdu.redact import SENSITIVE_TAGS, redact_response
from capsim.cli import main
from capsim.tags import TAGS
from capsim.tlv import encode


def test_one_list_of_sensitive_tags_for_traces_and_trees() -> None:
    assert {tag for tag, info in TAGS.items() if info.sensitive} == SENSITIVE_TAGS
    # the expiry date and the cardholder name extended were shown in traces before
    assert {0x5F24, 0x9F0B, 0x9F20, 0x99} <= SENSITIVE_TAGS


def test_a_record_is_redacted_in_the_hex_line_and_in_the_tree() -> None:
    record = encode(
        0x70, encode(0x5A, bytes.fromhex("5413339000001513")) + encode(0x5F24, bytes.fromhex("301231"))
    )
    lines = describe_exchange(bytes.fromhex("00B2010C00"), record + b"\x90\x00")
    assert lines[0] == "> 00B2010C00"
    assert lines[1] == "    READ RECORD"
    assert lines[2] == "< " + redact_response(record + b"\x90\x00").hex().upper()
    assert "5413339000001513" not in "\n".join(lines)
    assert "301231" not in "\n".join(lines)
    assert lines[3] == "    9000: normal processing: command completed"
    shown = describe_exchange(bytes.fromhex("00B2010C00"), record + b"\x90\x00", redact=False)
    assert "5413339000001513" in shown[2]
    assert any("301231" in line for line in shown[4:])


def test_names_status_words_and_data_that_is_not_tlv() -> None:
    assert instruction_name(bytes.fromhex("80A80000")) == "GET PROCESSING OPTIONS"
    assert instruction_name(bytes.fromhex("00EE0000")) == "INS EE"
    lines = describe_exchange(bytes.fromhex("00840000"), bytes.fromhex("0001") + b"\x6a\x82")
    assert lines[3] == "    6A82: file or application not found"
    assert lines[4] == "    (not BER-TLV)"
    assert describe_exchange(b"\x00", b"\x90")[-1] == "    (not a response: 1 bytes)"


def test_code_trace_is_decoded_and_keeps_its_hex_lines(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["code", "identify", "--reader", "inproc:natwest", "--trace", "--pin-stdin"],
        input="1234\n",
        env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")},
    )
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "> 0020008008FFFFFFFFFFFFFFFF\n    VERIFY\n< 9000\n    9000: normal processing" in err
    assert "    GENERATE AC" in err
    assert "    SELECT" in err
    assert "FCI Proprietary Template" in err  # the FCI as a tree
    assert result.stdout.strip().isdigit()
