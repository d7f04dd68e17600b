"""The card OS reuses the APDU and TLV layers: one command parser, one BER encoder, one PSE
name and one table of instruction bytes in capsim."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import capsim
from capsim import profiles, sm
from capsim.apdu import builders
from capsim.apdu.command import CommandApdu
from capsim.apdu.ins import INS
from capsim.apdu.sw import SW
from capsim.cards import emv_cap, new_card
from capsim.cards.base import Command, StatusError, parse_command
from capsim.errors import ApduFormatError
from capsim.tlv import decode
from tests.cards.helpers import IMK_A, PAN, gac1_command, start

CAPSIM = Path(capsim.__file__).parent


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(CAPSIM)), ast.parse(p.read_text(encoding="utf-8")))
        for p in sorted(CAPSIM.rglob("*.py"))
    ]


def _constant_assignments(tree: ast.Module) -> list[tuple[str, object]]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            out += [(t.id, node.value.value) for t in node.targets if isinstance(t, ast.Name)]
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.target, ast.Name)
        ):
            out.append((node.target.id, node.value.value))
    return out


# a mix of well-formed short and extended APDUs and of byte strings that are none
_apdus = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda h, d, le: h + (bytes([len(d)]) + d if d else b"") + le,
        st.binary(min_size=4, max_size=4),
        st.binary(max_size=255),
        st.sampled_from([b"", b"\x00", b"\x10"]),
    ),
)


@given(_apdus)
def test_the_card_parses_with_the_apdu_layers_parser(raw: bytes) -> None:
    """Same fields as CommandApdu.from_bytes; 6700 for what it refuses and for extended APDUs."""
    try:
        want: CommandApdu | None = CommandApdu.from_bytes(raw)
    except ApduFormatError:
        want = None
    if want is None or want.extended:
        with pytest.raises(StatusError) as info:
            parse_command(raw)
        assert info.value.sw == SW.WRONG_LENGTH
        return
    got = parse_command(raw)
    assert isinstance(got, CommandApdu)
    assert (got.cla, got.ins, got.p1, got.p2, got.data, got.le) == (
        want.cla, want.ins, want.p1, want.p2, want.data, want.le,
    )  # fmt: skip
    assert got.to_bytes() == raw


def test_the_card_command_is_the_apdu_layers_command_without_its_data_in_repr() -> None:
    cmd = parse_command(bytes.fromhex("0020008008241234FFFFFFFFFF"))
    assert type(cmd) is Command
    assert issubclass(Command, CommandApdu)
    assert "241234" not in repr(cmd)
    assert repr(cmd) == "Command(cla=0x00, ins=0x20, p1=0x00, p2=0x80, lc=8)"


def test_card_answers_are_encoded_by_the_tlv_module() -> None:
    offenders = [
        f"{name}:{node.name}"
        for name, tree in _modules()
        if name.startswith("cards/")
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and re.fullmatch(r"_*(tlv|ber_tlv|encode_tlv|tlv_encode)", node.name)
    ]
    assert offenders == []
    formats = set()
    for profile in ("barclays", "secur-acces", "rabobank"):
        card = new_card(profile, pan=PAN, imk_ac=IMK_A)
        start(card)
        answer = card.process(gac1_command(card))
        (obj,) = decode(answer[:-2])
        assert obj.tag == (0x80 if card.profile.response_format == 1 else 0x77)
        formats.add(card.profile.response_format)
    assert formats == {1, 2}


def test_pse_name_is_defined_once() -> None:
    found = [
        f"{name}:{target}"
        for name, tree in _modules()
        for target, value in _constant_assignments(tree)
        if value == b"1PAY.SYS.DDF01"
    ]
    assert found == ["apdu/builders.py:PSE_NAME"]
    assert profiles.PSE_NAME is builders.PSE_NAME
    assert emv_cap.PSE_NAME is builders.PSE_NAME


def test_issuer_script_instructions_are_defined_once() -> None:
    """The script INS bytes are members of apdu.ins.INS; no module names them again."""
    script = {INS.PIN_CHANGE_UNBLOCK, INS.APPLICATION_BLOCK, INS.APPLICATION_UNBLOCK, INS.CARD_BLOCK}
    found = [
        f"{name}:{target}"
        for name, tree in _modules()
        for target, value in _constant_assignments(tree)
        if type(value) is int and value in script and re.search(r"(^|_)INS(_|$)", target)
    ]
    assert found == []
    assert sm.PIN_CHANGE_INS is INS.PIN_CHANGE_UNBLOCK
