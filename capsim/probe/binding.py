"""Checks that a code is bound to what it was made for: once, one operation, one card, one mode,
one amount and payee, and no lesser mode's input (verifier.md V2, V8, V11–V14, V16).

Theory of operation
-------------------
1. Every check here makes an honest code for one thing and presents it for another: the
   conforming verdict is ``REJECT``; an ``ACCEPT`` is the weakness the check is named after.
2. **Controls.** After the refused presentations each check presents the honest code for the
   right target and expects ``ACCEPT``: a verifier that refuses everything does not pass, and
   the wrong codes before it stay below the lockout count (a success resets it, V28).
3. **Cross-mode pairs** cover every pair of the modes the adapter can issue and the modes a
   card can be made to produce (Identify login, Respond, Sign, TDS); a fresh operation per pair
   keeps each one below its attempt limit (V14).
4. **Domain separation** (:mod:`capsim.verifier.separation`): on a card whose IAF signs the
   amount but not the currency (the run's template if it is such a card, else ``natwest``) a
   Sign of 0.00 has the cryptogram input of a Respond (and with reference 0 of an Identify).
   A conforming verifier refuses to issue such an operation, or refuses the lesser mode's code
   for it; accepting a login code as a payment approval is the failure ("mode confusion",
   FC 2009).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from capsim.errors import ConfigError
from capsim.probe.adapter import Issued, OperationRequest, Refused, Verdict
from capsim.probe.lab import Lab, Subject, Trail
from capsim.probe.model import Outcome, ProbeOptions, from_trail

__all__ = [
    "AMOUNT",
    "PAYEE",
    "check_cross_credential",
    "check_cross_mode",
    "check_domain_separation",
    "check_replay_other_operation",
    "check_replay_same_operation",
    "check_wrong_amount",
    "check_wrong_payee",
    "issue",
]

AMOUNT: Final = 150000
PAYEE: Final = "NL91ABNA0417164300"
_PAYEE_DIGITS: Final = "0417164300"
_OTHER_PAYEE: Final = "NL91ABNA0417164399"
_OTHER_PAYEE_DIGITS: Final = "0417164399"
_CHALLENGE: Final = "12345678"


def issue(lab: Lab, subject: Subject, request: OperationRequest) -> Issued:
    """An operation the check needs; a refusal ends the check (status ``error``)."""
    got = lab.adapter.issue(subject.credential, request)
    if isinstance(got, Refused):
        raise ConfigError(f"the verifier refused to issue a {request.describe()} operation: {got.reason}")
    return got


def _respond() -> OperationRequest:
    return OperationRequest(mode="respond")


def _honest(trail: Trail, subject: Subject, issued: Issued, label: str) -> Verdict:
    code = subject.code_for(issued)
    return trail.submit(f"{label} (ATC {code.atc})", issued.target, code.code, expect=Verdict.ACCEPT)


def check_replay_same_operation(lab: Lab, options: ProbeOptions) -> Outcome:
    """An accepted code is refused when presented again (operation and login)."""
    s = lab.subject()
    t = lab.trail()
    op = issue(lab, s, _respond())
    code = s.code_for(op)
    t.submit(f"respond code for its operation (ATC {code.atc})", op.target, code.code, expect=Verdict.ACCEPT)
    t.submit("the same code again, new request id", op.target, code.code, expect=Verdict.REJECT)
    login = s.identify()
    t.submit(f"identify login (ATC {login.atc})", s.login, login.code, expect=Verdict.ACCEPT)
    t.submit("the same login code again, new request id", s.login, login.code, expect=Verdict.REJECT)
    return from_trail(t, passed="every code was accepted once", failed="a code was accepted twice")


def check_replay_other_operation(lab: Lab, options: ProbeOptions) -> Outcome:
    """A code made for one operation is refused for another, before and after its own accept."""
    s = lab.subject()
    t = lab.trail()
    first = issue(lab, s, _respond())
    second = issue(lab, s, _respond())
    code = s.code_for(first)
    t.submit(
        f"operation 1's code for operation 2 (ATC {code.atc})",
        second.target,
        code.code,
        expect=Verdict.REJECT,
    )
    t.submit("operation 1's code for operation 1", first.target, code.code, expect=Verdict.ACCEPT)
    t.submit("operation 1's accepted code for operation 2", second.target, code.code, expect=Verdict.REJECT)
    _honest(t, s, second, "operation 2's own code")
    return from_trail(
        t,
        passed="codes were accepted only for their own operation",
        failed="a code was accepted for another operation",
    )


def check_cross_credential(lab: Lab, options: ProbeOptions) -> Outcome:
    """Another user's card cannot answer this credential's challenge or log in as it."""
    a = lab.subject()
    b = lab.subject()
    t = lab.trail()
    op = issue(lab, a, _respond())
    other = b.respond(op.challenge)
    t.submit(
        f"card B's respond code for card A's operation (ATC {other.atc})",
        op.target,
        other.code,
        expect=Verdict.REJECT,
    )
    login = b.identify()
    t.submit(
        f"card B's identify code as card A's login (ATC {login.atc})",
        a.login,
        login.code,
        expect=Verdict.REJECT,
    )
    _honest(t, a, op, "card A's own code")
    return from_trail(
        t, passed="codes were accepted only for their own card", failed="another card's code was accepted"
    )


def _foreign_code(subject: Subject, mode: str, issued: Issued | None) -> tuple[str, int]:
    """A code of ``mode`` over the data of ``issued`` (or neutral data for a login)."""
    req = issued.request if issued is not None else OperationRequest(mode="identify")
    challenge = (issued.challenge if issued is not None else "") or _CHALLENGE
    if mode == "identify":
        got = subject.identify()
    elif mode == "respond":
        got = subject.respond(challenge)
    elif mode == "sign":
        got = subject.sign(challenge, req.amount_minor or AMOUNT, req.currency or "EUR")
    else:
        got = subject.tds(req.fields or (str(req.amount_minor or AMOUNT), challenge))
    return got.code, got.atc


def _mode_request(mode: str) -> OperationRequest:
    if mode == "sign":
        return OperationRequest(mode="sign", amount_minor=AMOUNT, currency="EUR", payee=PAYEE)
    if mode == "tds":
        return OperationRequest(mode="tds", fields=(str(AMOUNT), _PAYEE_DIGITS))
    return OperationRequest(mode=mode)


def check_cross_mode(lab: Lab, options: ProbeOptions) -> Outcome:
    """A code of one CAP mode is refused for an operation (or login) of another mode."""
    s = lab.subject()
    t = lab.trail()
    producible = ("identify", "respond", "sign", "tds")
    targets = ["login", *(m for m in ("respond", "sign", "tds") if m in lab.adapter.modes)]
    skipped = sorted({"respond", "sign", "tds"} - set(lab.adapter.modes))
    if skipped:
        t.note(f"operations the adapter cannot issue, not probed as targets: {', '.join(skipped)}")
    for target_mode in targets:
        for code_mode in producible:
            if code_mode == target_mode or (target_mode == "login" and code_mode == "identify"):
                continue
            if target_mode == "login":
                code, atc = _foreign_code(s, code_mode, None)
                t.submit(
                    f"{code_mode} code as an identify login (ATC {atc})", s.login, code, expect=Verdict.REJECT
                )
                honest = s.identify()
                t.submit(f"identify login (ATC {honest.atc})", s.login, honest.code, expect=Verdict.ACCEPT)
                continue
            op = issue(lab, s, _mode_request(target_mode))
            code, atc = _foreign_code(s, code_mode, op)
            t.submit(
                f"{code_mode} code for a {target_mode} operation (ATC {atc})",
                op.target,
                code,
                expect=Verdict.REJECT,
            )
            _honest(t, s, op, f"the {target_mode} operation's own code")
    return from_trail(
        t,
        passed="every cross-mode code was refused",
        failed="a code was accepted for an operation of another mode",
    )


def _separation_template(lab: Lab) -> str:
    """The run's template if a Sign of 0.00 collides with a lesser mode on it, else ``natwest``."""
    from capsim.cards import builtin_profile
    from capsim.verifier.engine import MatchRequest
    from capsim.verifier.model import OperationMode
    from capsim.verifier.separation import colliding_modes
    from capsim.verifier.service import credential_profile_from_card

    profile = credential_profile_from_card(builtin_profile(lab.template))
    sign0 = MatchRequest(mode=OperationMode.SIGN, challenge="00000000", amount_minor=0, currency="978")
    return lab.template if colliding_modes(profile, sign0) else "natwest"


def check_domain_separation(lab: Lab, options: ProbeOptions) -> Outcome:
    """No Sign operation that a login or Respond code satisfies (module docstring, rule 4)."""
    template = _separation_template(lab)
    s = lab.subject(template=template)
    t = lab.trail()
    iaf = s.card.profile.iaf.hex().upper()
    t.note(f"card template {template} (IAF {iaf}): sign 0.00 collides with lesser modes")
    zero = OperationRequest(mode="sign", amount_minor=0, currency="EUR")
    attempts = (
        ("sign 0.00 with reference 0 (= identify)", replace(zero, reference="0"), "identify"),
        ("sign 0.00 over a drawn challenge (= respond)", zero, "respond"),
    )
    issued_any = False
    for label, request, lesser in attempts:
        got = lab.adapter.issue(s.credential, request)
        if isinstance(got, Refused):
            t.note(f"{label}: not issued ({got.reason})")
            continue
        issued_any = True
        t.note(f"{label}: issued")
        code = s.identify() if lesser == "identify" else s.respond(got.challenge)
        article = "an" if lesser == "identify" else "a"
        verdict = t.submit(
            f"{article} {lesser} code for it (ATC {code.atc})", got.target, code.code, expect=Verdict.REJECT
        )
        if verdict is not Verdict.ACCEPT:
            _honest(t, s, got, "its own sign code")
    control = issue(lab, s, OperationRequest(mode="sign", amount_minor=1, currency="EUR", payee=PAYEE))
    _honest(t, s, control, "control: sign 0.01, its own code")
    return from_trail(
        t,
        passed="no lesser mode's code approved a sign"
        + ("" if issued_any else " (the colliding operations were not issued)"),
        failed="a login or respond code approved a sign operation (no ___domain separation)",
        template=template,
    )


def check_wrong_amount(lab: Lab, options: ProbeOptions) -> Outcome:
    """A Sign code for another amount (or currency, when the card signs it) is refused."""
    s = lab.subject()
    t = lab.trail()
    op = issue(lab, s, _mode_request("sign"))
    wrong = s.sign(op.challenge, AMOUNT + 1, "EUR")
    t.submit(
        f"code over amount {AMOUNT + 1} for a {AMOUNT} operation (ATC {wrong.atc})",
        op.target,
        wrong.code,
        expect=Verdict.REJECT,
    )
    iaf0 = s.card.profile.iaf[0] if s.card.profile.iaf else 0
    if iaf0 & 0x80 and not iaf0 & 0x20:
        other = s.sign(op.challenge, AMOUNT, "USD")
        t.submit(
            f"code over the amount in USD for a EUR operation (ATC {other.atc})",
            op.target,
            other.code,
            expect=Verdict.REJECT,
        )
    else:
        t.note("this card does not sign the currency: no currency step")
    _honest(t, s, op, "the operation's own code")
    return from_trail(
        t, passed="only the signed amount was accepted", failed="a code over another amount was accepted"
    )


def check_wrong_payee(lab: Lab, options: ProbeOptions) -> Outcome:
    """A code approving one payee is refused for another (Sign operations; TDS fields)."""
    s = lab.subject()
    t = lab.trail()
    mine = issue(lab, s, _mode_request("sign"))
    theirs = issue(
        lab, s, OperationRequest(mode="sign", amount_minor=AMOUNT, currency="EUR", payee=_OTHER_PAYEE)
    )
    code = s.code_for(mine)
    t.submit(
        f"code for payee ...4300 presented for payee ...4399 (ATC {code.atc})",
        theirs.target,
        code.code,
        expect=Verdict.REJECT,
    )
    t.submit("the same code for its own operation", mine.target, code.code, expect=Verdict.ACCEPT)
    if "tds" in lab.adapter.modes:
        tds = issue(lab, s, OperationRequest(mode="tds", fields=(str(AMOUNT), _PAYEE_DIGITS)))
        wrong = s.tds((str(AMOUNT), _OTHER_PAYEE_DIGITS))
        t.submit(
            f"tds code over payee digits ...4399 for ...4300 (ATC {wrong.atc})",
            tds.target,
            wrong.code,
            expect=Verdict.REJECT,
        )
        _honest(t, s, tds, "the tds operation's own code")
    else:
        t.note("the adapter cannot issue tds operations: no tds step")
    return from_trail(
        t, passed="codes were accepted only for their payee", failed="a code was accepted for another payee"
    )
