"""The matcher's expected code is the reader's code of the candidate's own data string.

The verifier recomputes the AC and then the code with the one code function of
:mod:`capsim.codelayout`, exactly as the reader does; no bit of the presented code goes into
the expected value (the presented code only filters candidates, then is compared whole).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect

from hypothesis import given, settings
from hypothesis import strategies as st

from capsim.cap import compute_code
from capsim.errors import CodeOverflowError
from capsim.verifier import engine
from capsim.verifier.model import CredentialProfile, OperationMode
from tests.verifier.conftest import make_provider

PROVIDER = make_provider()
KEYS = PROVIDER.register_card(issuer_key_id="bank", pan="1234567890123456", psn="00")
#: CAP-SYNTH (vectors.md §1)
BASE = CredentialProfile(
    reader_profile="visa-dpa",
    cdol1=bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704"),
    aip=bytes.fromhex("1000"),
    ipb=bytes.fromhex("8000FF000000000001FFFF00000000000000"),
    iaf=b"\xa0",
    cvn=0x0A,
    iad_variants=(bytes.fromhex("060A0A03A49000"), bytes.fromhex("060A0A03A41000")),
)
REQUESTS = (
    engine.MatchRequest(mode=OperationMode.IDENTIFY),
    engine.MatchRequest(mode=OperationMode.RESPOND, challenge="78901234"),
    engine.MatchRequest(mode=OperationMode.TDS, tds_fields=("150000", "0123456789")),
)


def _card(profile: CredentialProfile, psn: str = "00", last_atc: int = 0x10) -> engine.CardCandidate:
    return engine.CardCandidate(
        credential_id="c", key_ref=KEYS.key_ref, psn=psn, profile=profile, last_atc=last_atc
    )


def readers_code(card: engine.CardCandidate, request: engine.MatchRequest, atc: int, variant: int) -> str:
    """What the reader shows: the card's AC (or TDS MAC) through capsim.cap.compute_code."""
    from capsim.cap import tds_mac

    profile = card.profile
    fn = PROVIDER.ac_function(card.key_ref, cvn=profile.cvn)
    un = bytes.fromhex(request.challenge) if request.challenge else bytes(4)
    atc_b = atc.to_bytes(2, "big")
    iad = profile.iad_variants[variant]
    ac = fn(engine.cdol_data_for(profile, request), profile.aip, atc_b, iad, un)
    if request.mode is OperationMode.TDS:
        ac = tds_mac(request.tds_fields, ac)
    psn = bytes([int(card.psn)]) if profile.psn_in_data else None
    try:
        return compute_code(
            profile.ipb, b"\x80", atc_b, ac, iad, psn=psn, digits=profile.display_digits, allow_short=True
        )
    except CodeOverflowError:
        return ""


@settings(max_examples=60, deadline=None)
@given(
    ipb=st.binary(min_size=1, max_size=24),
    psn_in_data=st.booleans(),
    psn=st.integers(0, 99),
    atc=st.integers(0, 0xFFFF),
    variant=st.integers(0, 1),
    request=st.sampled_from(REQUESTS),
)
def test_expected_code_is_the_readers_code(
    ipb: bytes, psn_in_data: bool, psn: int, atc: int, variant: int, request: engine.MatchRequest
) -> None:
    """Random IPBs, also ones that run past the data string (missing bits are 0 for both)."""
    profile = dataclasses.replace(BASE, ipb=ipb, iaf=b"\xe0" if psn_in_data else b"\xa0")
    card = _card(profile, psn=f"{psn:02d}")
    assert engine.expected_code(card, request, atc, variant, PROVIDER) == readers_code(
        card, request, atc, variant
    )


def test_match_finds_the_readers_code_when_the_ipb_runs_past_the_iad() -> None:
    """An IPB one byte longer than D selects a 0 there, for the reader and the verifier alike
    (here after an IAD bit that is 1: the IAD run is that bit and the 0)."""
    # CAP-SYNTH's IPB less its CID bit and an AC bit, plus IAD byte 6 b8 (a 1) and a bit past D
    ipb = b"\x00" + BASE.ipb[1:8] + b"\x00" + BASE.ipb[9:16] + b"\x80" + BASE.ipb[17:] + b"\x01"
    assert len(ipb) == 19
    assert int.from_bytes(ipb, "big").bit_count() == 26
    profile = dataclasses.replace(BASE, ipb=ipb, iad_variants=(BASE.iad_variants[0],))
    card = _card(profile)
    request = REQUESTS[1]
    code = readers_code(card, request, 0x16, 0)
    assert code
    result = engine.match([card], engine.parse_code(code), request, PROVIDER, window=16)
    assert result.match is not None
    assert result.match.atc == 0x16


def test_match_accepts_every_readers_code_and_only_at_its_atc() -> None:
    for psn_in_data in (False, True):
        profile = dataclasses.replace(BASE, iaf=b"\xe0" if psn_in_data else b"\xa0")
        card = _card(profile, psn="07")
        for request in REQUESTS:
            for atc in (0x11, 0x15, 0x20):
                code = engine.parse_code(readers_code(card, request, atc, 1))
                result = engine.match([card], code, request, PROVIDER, window=16)
                assert result.match is not None
                assert (result.match.atc, result.match.variant) == (atc, 1)
                later = dataclasses.replace(card, last_atc=atc)
                assert engine.match([later], code, request, PROVIDER, window=16).match is None


def test_match_puts_no_presented_bit_into_the_expected_code() -> None:
    """No shift or bitwise or in the matcher: it assembles no code value of its own."""
    for fn in (engine.match, engine.expected_code, engine._expected_text):
        tree = ast.parse(inspect.getsource(fn).lstrip())
        ops = [
            n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.LShift | ast.BitOr)
        ]
        assert ops == [], fn.__name__
