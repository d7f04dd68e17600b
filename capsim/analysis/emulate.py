"""The analysis's experiments on emulated cards and a throwaway in-memory verifier.

Theory of operation
-------------------
1. **Never a real key.** Every experiment runs on a copy of the analysed card's design
   (:func:`throwaway_profile`): the same template (AID, records, CDOL1, IAF, IPB, CVN, IAD
   template, PIN try limit) personalised again with capsim's public test PAN and keys
   (:mod:`capsim.transports.inprocess`). A card file's own keys, PAN and state are never used,
   and its file is never opened for writing.
2. **Twins** (:func:`twins`): two emulated cards with the same profile and state answer the
   same bytes with the same cryptogram. A pair of runs is *confirmed* to collide when the two
   codes are equal (:func:`confirm`), compared with :func:`hmac.compare_digest`.
3. **VERIFY answers** (:func:`verify_answers`): one Identify run with a wrong PIN and one with
   the right PIN, through the CAP reader; the status words the card gave to VERIFY are read
   from the session's transcript (the PIN block itself is redacted there).
4. **A code without PIN verification** (:func:`no_pin_code`): a throwaway
   :class:`~capsim.verifier.Verifier` on a :class:`~capsim.verifier.memory.MemoryStore` with
   the analysed policy enrols a twin with its first Identify code; a PIN-verified Respond code
   is verified first (the control: if it is not accepted the probe says nothing), then a
   Respond run *without* VERIFY, whose CVR shows "offline PIN not performed", is submitted to
   a fresh operation. The throwaway verifier's false-accept ceiling is lifted (the V5 check
   would refuse to enrol a card with too few AC bits, and the guessing section reports that);
   every other limit is the analysed policy's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import os
from typing import Any, Final

from capsim.cap import CapMode
from capsim.cards import CardProfile, EmvCapCard, initial_state
from capsim.errors import CapsimError, InvalidCode
from capsim.iad import MCHIP_CVR_LAYOUT, VIS_CVR_LAYOUT, CvrFlag, IadFormat, iad_format_for_cvn
from capsim.profiles import ReaderProfile
from capsim.reader import CapReader, CapResult, CapSession
from capsim.transports.inprocess import (
    TEST_IMK_AC,
    TEST_IMK_SMC,
    TEST_IMK_SMI,
    TEST_PAN,
    TEST_PIN,
    InProcessTransport,
)
from capsim.verifier.engine import MatchRequest
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import OperationMode
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import SoftwareProvider
from capsim.verifier.service import Verifier

__all__ = [
    "confirm",
    "no_pin_code",
    "pin_verified",
    "session_for",
    "throwaway_profile",
    "twins",
    "verify_answers",
    "verify_sw",
]

_WRONG_PIN: Final = "9" * len(TEST_PIN) if set(TEST_PIN) != {"9"} else "0" * len(TEST_PIN)
_VERIFY: Final = 0x20
_KEY_ID: Final = "analysis"
_NO_CEILING: Final = 0.999999


def throwaway_profile(card: CardProfile) -> CardProfile:
    """The card's design with capsim's test PAN and keys (step 1)."""
    return card.personalise(
        pan=TEST_PAN,
        psn=card.psn or "00",
        imk_ac=TEST_IMK_AC,
        imk_smi=TEST_IMK_SMI,
        imk_smc=TEST_IMK_SMC,
    )


def twins(profile: CardProfile, count: int = 2) -> tuple[EmvCapCard, ...]:
    """``count`` fresh emulated cards with ``profile`` (personalised) and equal states (step 2)."""
    return tuple(EmvCapCard(profile, initial_state(profile, TEST_PIN), rng=os.urandom) for _ in range(count))


def session_for(request: MatchRequest, reader: ReaderProfile, *, pin: str | None) -> CapSession:
    """The CAP reader session that runs ``request`` (``pin=None``: no VERIFY)."""
    mode = OperationMode(request.mode)
    if mode is OperationMode.IDENTIFY:
        return CapSession(CapMode.IDENTIFY, pin=pin, profile=reader)
    if mode is OperationMode.RESPOND:
        return CapSession(CapMode.RESPOND, pin=pin, challenge=request.challenge, profile=reader)
    if mode is OperationMode.TDS:
        return CapSession(CapMode.TDS, pin=pin, fields=request.tds_fields, profile=reader)
    return CapSession(
        CapMode.SIGN,
        pin=pin,
        challenge=request.challenge or None,
        amount=request.amount_minor,
        currency=request.currency,
        profile=reader,
    )


def run(
    card: EmvCapCard, request: MatchRequest, reader: ReaderProfile, *, pin: str | None = TEST_PIN
) -> CapResult:
    """One CAP run of ``request`` on ``card`` through the reader (``pin=None``: no VERIFY)."""
    return CapReader(InProcessTransport(card), reader).run(session_for(request, reader, pin=pin))


def confirm(profile: CardProfile, reader: ReaderProfile, first: MatchRequest, second: MatchRequest) -> bool:
    """Do the two runs give the same code on two identical cards at the same ATC (step 2)?"""
    one, two = twins(profile)
    a = run(one, first, reader)
    b = run(two, second, reader)
    return hmac.compare_digest(a.code.encode(), b.code.encode())


def verify_sw(transcript: tuple[tuple[bytes, bytes], ...]) -> str | None:
    """The status word the card gave to the first VERIFY of ``transcript`` (``None``: no VERIFY)."""
    for command, response in transcript:
        if len(command) > 1 and command[1] == _VERIFY and len(response) >= 2:
            return response[-2:].hex().upper()
    return None


def _transcript_of(profile: CardProfile, reader: ReaderProfile, pin: str) -> tuple[tuple[bytes, bytes], ...]:
    (card,) = twins(profile, 1)
    session = session_for(MatchRequest(mode=OperationMode.IDENTIFY), reader, pin=pin)
    with contextlib.suppress(CapsimError):  # a wrong PIN ends the run: the transcript has the answer
        CapReader(InProcessTransport(card), reader).run(session)
    return session.transcript


def verify_answers(profile: CardProfile, reader: ReaderProfile) -> dict[str, Any]:
    """The status words the card gives to VERIFY with a wrong and with the right PIN (step 3).

    ``reveals`` is true when the two differ: the card tells anyone holding it, outside any
    cryptogram, whether a PIN is right.
    """
    wrong = verify_sw(_transcript_of(profile, reader, _WRONG_PIN))
    right = verify_sw(_transcript_of(profile, reader, TEST_PIN))
    return {
        "wrong_pin_sw": wrong,
        "right_pin_sw": right,
        "reveals": wrong is not None and right is not None and wrong != right,
    }


def pin_verified(iad: bytes, cvn: int) -> bool:
    """Whether the CVR inside ``iad`` says "offline PIN verification performed"."""
    layout = VIS_CVR_LAYOUT if iad_format_for_cvn(cvn) is IadFormat.VIS else MCHIP_CVR_LAYOUT
    index, mask = layout.flags[CvrFlag.OFFLINE_PIN_PERFORMED]
    where = layout.offset + index
    return where < len(iad) and bool(iad[where] & mask)


def _accepted(verifier: Verifier, target: str, code: str, request_id: str) -> bool:
    try:
        verifier.verify(target, code, request_id=request_id)
    except InvalidCode:
        return False
    return True


def no_pin_code(profile: CardProfile, reader: ReaderProfile, policy: VerifierPolicy) -> dict[str, Any]:
    """Is a Respond code made without VERIFY accepted by a verifier with ``policy`` (step 4)?

    Returns ``{"control_accepted", "cvr_says_no_pin", "accepted"}``; ``accepted`` is ``None``
    when the control (a PIN-verified code) was not accepted either.
    """
    (card,) = twins(profile, 1)
    provider = SoftwareProvider()
    provider.add_issuer_keys(_KEY_ID, imk_ac=TEST_IMK_AC, imk_smi=TEST_IMK_SMI, imk_smc=TEST_IMK_SMC)
    store = MemoryStore()
    try:
        lifted = dataclasses.replace(policy, false_accept_ceiling=_NO_CEILING)
        verifier = Verifier(store, provider, policy=lifted, node="analysis")
        verifier.add_user("analysis")
        activation = verifier.issue_activation_code("analysis")
        first = run(card, MatchRequest(mode=OperationMode.IDENTIFY), reader)
        cred = verifier.enroll_card(
            activation.code,
            card.profile,
            issuer_key_id=_KEY_ID,
            first_code=first.code,
            reader_profile=reader.name,
        )
        cid = cred.credential_id
        control_op = verifier.issue_operation(cid, mode=OperationMode.RESPOND)
        control = run(card, MatchRequest(mode=OperationMode.RESPOND, challenge=control_op.challenge), reader)
        control_ok = _accepted(verifier, control_op.operation_id, control.code, "analysis-1")
        probe_op = verifier.issue_operation(cid, mode=OperationMode.RESPOND)
        probe = run(
            card, MatchRequest(mode=OperationMode.RESPOND, challenge=probe_op.challenge), reader, pin=None
        )
        probe_ok = _accepted(verifier, probe_op.operation_id, probe.code, "analysis-2")
    finally:
        store.close()
    return {
        "control_accepted": control_ok,
        "cvr_says_no_pin": not pin_verified(probe.iad, int(profile.cvn)),
        "accepted": probe_ok if control_ok else None,
    }
