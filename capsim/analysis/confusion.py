"""Mode confusion: which pairs of CAP modes and inputs give the same cryptogram input on a card.

Theory of operation
-------------------
1. **The pairs** (:func:`confusion_cases`). For one card the reader can be made to run
   Identify, Respond with any challenge, Sign with a reference, an amount and a currency as
   the card's IAF asks, and TDS over data fields (cap-protocol.md §4, §5). The published
   confusions are each one pair of such runs:

   - ``respond-zero-equals-identify``: Respond ``00000000`` against Identify;
   - ``sign-zero-equals-respond``: Sign(reference, 0.00) against Respond(reference);
   - ``sign-zero-equals-identify``: Sign without reference, 0.00, against Identify;
   - ``sign-equals-respond``: Sign(reference, 15.00) against Respond(reference), a card
     that signs no amount;
   - ``currency-not-signed``: Sign(15.00 EUR) against Sign(15.00 GBP);
   - ``amount-not-signed``: Sign(15.00) against Sign(99.99), same currency;
   - and two pairs that must never collide, kept as controls: two Sign references, and
     TDS against Identify (TDS's AC *is* an Identify AC; its code is a MAC over the fields
     under that AC).

   A pair is listed only when the card allows both runs (amount and currency pairs need
   IAF b8).
2. **Derived verdict.** Both runs' cryptogram inputs come from
   :func:`capsim.verifier.separation.cryptogram_input`: the CDOL1 data the verifier
   recomputes (:func:`capsim.cap.cdol_values` through the reader profile, with the IAF's
   amount and currency rules), plus the TDS message. Equal inputs at one ATC give one AC and
   so one code. The comparison is of public reader input, not of secrets.
3. **Confirmed verdict** (:mod:`capsim.analysis.emulate`): both runs on two identical
   emulated cards at the same ATC; the codes are compared. The report states both and flags
   any disagreement.
4. **Severity** follows what a collision lets a code made for less authorise: a payment
   approved by a login or Respond code (Sign pairs, amount not signed) is high or medium; a
   login taken from a Respond code is low. Whether capsim's own verifier would refuse to
   issue the higher operation (:func:`capsim.verifier.separation.separation_refusal`) is
   recorded as evidence.
5. Pure: no card, no key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from capsim.analysis.model import Change, Lever, Severity, Source
from capsim.cap import IAF_AMOUNT
from capsim.verifier.engine import MatchRequest
from capsim.verifier.model import CredentialProfile, OperationMode
from capsim.verifier.separation import colliding_modes, cryptogram_input, separation_refusal

__all__ = ["CHALLENGE", "ConfusionCase", "confusion_cases", "derive", "describe"]

#: The reference and amounts of the representative runs.
CHALLENGE: Final = "12345678"
_OTHER_CHALLENGE: Final = "87654321"
_AMOUNT: Final = 1500
_OTHER_AMOUNT: Final = 9999
_FIELDS: Final = ("1500", "12345678")

_I = OperationMode.IDENTIFY
_R = OperationMode.RESPOND
_S = OperationMode.SIGN
_T = OperationMode.TDS


@dataclass(frozen=True, kw_only=True)
class ConfusionCase:
    """One pair of runs (module docstring, step 1) and what a collision would mean."""

    id: str
    title: str
    first: MatchRequest
    second: MatchRequest
    severity: Severity
    control: bool = False
    changes: tuple[Change, ...] = field(default=())
    sources: tuple[Source, ...] = (Source.OPTIMISED_TO_FAIL,)


def describe(request: MatchRequest) -> str:
    """``sign(12345678, 0.00 EUR)``-style text of one run.

    >>> describe(MatchRequest(mode=OperationMode.SIGN, challenge="", amount_minor=0, currency="EUR"))
    'sign(no reference, 0.00 EUR)'
    """
    mode = OperationMode(request.mode)
    if mode is _I:
        return "identify"
    if mode is _T:
        return f"tds({', '.join(request.tds_fields)})"
    if mode is _R:
        return f"respond({request.challenge})"
    parts = [request.challenge or "no reference"]
    if request.amount_minor is not None:
        whole, cents = divmod(request.amount_minor, 100)
        parts.append(f"{whole}.{cents:02d}{' ' + request.currency if request.currency else ''}")
    return f"sign({', '.join(parts)})"


def _sign(challenge: str, amount: int | None, currency: str | None) -> MatchRequest:
    return MatchRequest(mode=_S, challenge=challenge, amount_minor=amount, currency=currency)


_SIGN_AMOUNT = Change(
    lever=Lever.CARD_TEMPLATE,
    text="personalise the IAF with b8 set (sign the amount) and CDOL1 asking for 9F02",
)
_NO_ZERO_SIGN = Change(
    lever=Lever.POLICY,
    text="never issue a Sign for 0.00 (capsim's verifier refuses it: ___domain separation); use TDS or a "
    "non-zero amount for non-payment approvals",
)
_SIGN_CURRENCY = Change(
    lever=Lever.CARD_TEMPLATE,
    text="personalise the IAF with b6 clear so the currency 5F2A is signed (as secur-acces does)",
)
_FIXED_CURRENCY = Change(
    lever=Lever.POLICY,
    text="issue Sign operations only in the account's own currency and state it on the payer's screen",
)
_NONZERO_CHALLENGE = Change(
    lever=Lever.POLICY,
    text="never issue Respond 00000000 (capsim's verifier never draws it) and bind logins to an operation "
    "(allow_identify_without_operation = false)",
)


def confusion_cases(profile: CredentialProfile) -> tuple[ConfusionCase, ...]:
    """The pairs this card allows (module docstring, step 1), in a fixed order."""
    iaf0 = profile.iaf[0] if profile.iaf else 0
    signs_amount = bool(iaf0 & IAF_AMOUNT)
    amount = _AMOUNT if signs_amount else None
    cur = "EUR" if signs_amount else None  # ignored by the reader when IAF b6 is set
    cases = [
        ConfusionCase(
            id="respond-zero-equals-identify",
            title="Respond 00000000 gives the Identify code",
            first=MatchRequest(mode=_I),
            second=MatchRequest(mode=_R, challenge="00000000"),
            severity=Severity.LOW,
            changes=(_NONZERO_CHALLENGE,),
        ),
    ]
    if signs_amount:
        cases += [
            ConfusionCase(
                id="sign-zero-equals-respond",
                title="Sign with amount 0.00 gives the Respond code of the same reference",
                first=MatchRequest(mode=_R, challenge=CHALLENGE),
                second=_sign(CHALLENGE, 0, cur),
                severity=Severity.MEDIUM,
                changes=(_NO_ZERO_SIGN, _SIGN_CURRENCY),
            ),
            ConfusionCase(
                id="sign-zero-equals-identify",
                title="Sign without reference and amount 0.00 gives the Identify code",
                first=MatchRequest(mode=_I),
                second=_sign("", 0, cur),
                severity=Severity.MEDIUM,
                changes=(_NO_ZERO_SIGN, _SIGN_CURRENCY),
            ),
            ConfusionCase(
                id="currency-not-signed",
                title="Sign gives the same code for the same amount in another currency",
                first=_sign(CHALLENGE, _AMOUNT, "EUR"),
                second=_sign(CHALLENGE, _AMOUNT, "GBP"),
                severity=Severity.MEDIUM,
                changes=(_SIGN_CURRENCY, _FIXED_CURRENCY),
            ),
            ConfusionCase(
                id="amount-not-signed",
                title="Sign gives the same code for another amount",
                first=_sign(CHALLENGE, _AMOUNT, cur),
                second=_sign(CHALLENGE, _OTHER_AMOUNT, cur),
                severity=Severity.HIGH,
                changes=(_SIGN_AMOUNT,),
            ),
        ]
    cases += [
        ConfusionCase(
            id="sign-equals-respond",
            title="Sign over an amount gives the Respond code of the same reference (no amount signed)",
            first=MatchRequest(mode=_R, challenge=CHALLENGE),
            second=_sign(CHALLENGE, amount, cur),
            severity=Severity.HIGH,
            changes=(
                _SIGN_AMOUNT,
                Change(lever=Lever.POLICY, text="approve payments with TDS over amount and payee digits"),
            ),
        ),
        ConfusionCase(
            id="sign-reference-signed",
            title="Sign over another reference (control: must differ)",
            first=_sign(CHALLENGE, amount, cur),
            second=_sign(_OTHER_CHALLENGE, amount, cur),
            severity=Severity.HIGH,
            control=True,
        ),
        ConfusionCase(
            id="tds-equals-identify",
            title="TDS against Identify (control: the TDS code is a MAC under the Identify AC)",
            first=MatchRequest(mode=_I),
            second=MatchRequest(mode=_T, tds_fields=_FIELDS),
            severity=Severity.HIGH,
            control=True,
        ),
    ]
    return tuple(cases)


def derive(profile: CredentialProfile, case: ConfusionCase) -> dict[str, Any]:
    """The derived verdict of one pair (module docstring, steps 2 and 4).

    Returns ``{"collides": bool, "verifier_refuses": bool, "second_reachable_from": [mode, …]}``:
    whether the two cryptogram inputs are equal, whether capsim's verifier refuses to issue the
    higher-ranked run of the two, and every other mode whose runs (with *any* input a reader
    accepts) can produce the second run's input (:func:`capsim.verifier.separation.colliding_modes`,
    a witness search over the card's CDOL1, not only the representative inputs).
    """
    first = cryptogram_input(profile, case.first)
    second = cryptogram_input(profile, case.second)
    # public reader input (CDOL1 data and TDS digits), never a code or a MAC: plain equality
    collides = first == second
    refuses = any(separation_refusal(profile, r) is not None for r in (case.first, case.second))
    reachable = [m.value for m in colliding_modes(profile, case.second)]
    return {"collides": collides, "verifier_refuses": refuses, "second_reachable_from": reachable}

