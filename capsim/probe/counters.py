"""Checks of the verifier's counters: the ATC window, the lockout count, the sibling cards'
shared lock and request ids (verifier.md V1–V3, V11, V18, V24, V28, V29).

Theory of operation
-------------------
1. **ATCs.** A code made and kept (never presented) becomes *stale* once a later code is
   accepted: it must be refused (V3), as must the enrolment's first code. A code made after
   ``k`` unpresented ones has ATC ``last_atc + k + 1``: at ``k + 1 = W`` it must be accepted
   and at ``W + 1`` refused (V1 for operations with ``atc_window``, V18 for a login with
   ``max_atc_gap``). A verifier that accepts beyond its claimed window fails: its real
   window, and so its false-accept bound (V5), is larger than the bank believes.
2. **The exact lockout count** (V28): on one fresh card ``max_fail - 1`` wrong codes and then
   the right one must be accepted (no early lock); on another ``max_fail`` wrong codes and
   then the right one must be refused (the lock). Both together pin the count exactly.
3. **Lock bypass through a sibling** (V11, V29): a card of the same user and PAN with
   another PSN is a sibling, and a verifier may accept a card's code through a sibling's
   target. Once a card is locked, its code must not get in through a sibling enrolled after
   the lock, and the sibling's own code still must (the refusal is the lock's, not the
   sibling's).
4. **Request ids** (V24): the same request again gives the recorded verdict without a second
   evaluation; the id with another code is not an accept (``CONFLICT``, or a refusal) and
   changes nothing, so that code is accepted afterwards under a new id; the first code under
   a new id is a replay.
5. Wrong codes are well-formed codes that the card did not make (:func:`wrong_codes`); each
   check counts them so that it stays below the lockout count unless the lock is its subject.
"""

from __future__ import annotations

from collections.abc import Iterator

from capsim.probe.adapter import OperationRequest, Verdict
from capsim.probe.binding import issue
from capsim.probe.lab import Lab, Subject, Trail
from capsim.probe.model import Outcome, ProbeOptions, from_trail

__all__ = [
    "check_far_future_atc",
    "check_lockout_count",
    "check_request_id_reuse",
    "check_sibling_lock_bypass",
    "check_stale_atc",
    "present_wrong",
    "wrong_codes",
]


def wrong_codes(code: str) -> Iterator[str]:
    """Distinct well-formed codes other than ``code`` (999 of them): its last three digits changed.

    >>> from itertools import islice
    >>> list(islice(wrong_codes("12345678"), 3))
    ['12345679', '12345680', '12345681']
    """
    base = int(code[-3:])
    for step in range(1, 1000):
        yield code[:-3] + f"{(base + step) % 1000:03d}"


def present_wrong(t: Trail, s: Subject, count: int, label: str) -> None:
    """Present ``count`` wrong codes as ``s``'s login."""
    source = s.identify()
    for n, code in zip(range(1, count + 1), wrong_codes(source.code), strict=False):
        t.submit(f"{label}: wrong code {n} of {count}", s.login, code, expect=Verdict.REJECT)


def check_stale_atc(lab: Lab, options: ProbeOptions) -> Outcome:
    """A code whose ATC is at or below the last accepted one is refused (V2, V3)."""
    s = lab.subject()
    t = lab.trail()
    t.note(f"the enrolment code was at ATC {s.atc}")
    kept_for_op: tuple[str, int] | None = None
    op = None
    if "respond" in lab.adapter.modes:
        op = issue(lab, s, OperationRequest(mode="respond"))
        made = s.code_for(op)
        kept_for_op = (made.code, made.atc)
    kept = s.identify()
    later = s.identify()
    t.submit(f"identify login (ATC {later.atc})", s.login, later.code, expect=Verdict.ACCEPT)
    t.submit(f"a kept login code of the lower ATC {kept.atc}", s.login, kept.code, expect=Verdict.REJECT)
    if op is not None and kept_for_op is not None:
        t.submit(
            f"a kept respond code of the lower ATC {kept_for_op[1]} for its still open operation",
            op.target,
            kept_for_op[0],
            expect=Verdict.REJECT,
        )
        control = issue(lab, s, OperationRequest(mode="respond"))
        fresh = s.code_for(control)
        t.submit(
            f"control: a new operation's own code (ATC {fresh.atc})",
            control.target,
            fresh.code,
            expect=Verdict.ACCEPT,
        )
    return from_trail(
        t, passed="codes below the last accepted ATC were refused", failed="a stale ATC was accepted"
    )


def _window(t: Trail, lab: Lab, s: Subject, width: int, *, login: bool) -> None:
    """The accepted edge ``last + width`` and the refused ``last + width + 1`` (rule 1)."""
    what = "identify login" if login else "respond operation"
    for beyond in (False, True):
        s.skip(width if beyond else width - 1)
        expect = Verdict.REJECT if beyond else Verdict.ACCEPT
        offset = width + 1 if beyond else width
        if login:
            code = s.identify()
            t.submit(f"{what} at last ATC + {offset} (ATC {code.atc})", s.login, code.code, expect=expect)
        else:
            op = issue(lab, s, OperationRequest(mode="respond"))
            code = s.code_for(op)
            t.submit(f"{what} at last ATC + {offset} (ATC {code.atc})", op.target, code.code, expect=expect)


def check_far_future_atc(lab: Lab, options: ProbeOptions) -> Outcome:
    """Codes are accepted up to the claimed ATC window and refused one beyond it (V1, V18)."""
    limits = lab.adapter.limits
    t = lab.trail()
    t.note(f"claimed: atc_window {limits.atc_window} (operations), max_atc_gap {limits.max_atc_gap} (login)")
    if "respond" in lab.adapter.modes:
        _window(t, lab, lab.subject(), limits.atc_window, login=False)
    _window(t, lab, lab.subject(), limits.max_atc_gap, login=True)
    return from_trail(
        t,
        passed="the ATC windows are exactly as claimed",
        failed="the ATC window differs from the claimed one",
        **limits.to_dict(),
    )


def check_lockout_count(lab: Lab, options: ProbeOptions) -> Outcome:
    """The credential locks after exactly ``max_fail`` consecutive wrong codes (V28)."""
    n = lab.adapter.limits.max_fail
    t = lab.trail()
    early = lab.subject()
    present_wrong(t, early, n - 1, f"card A, {n - 1} wrong codes")
    ok = early.identify()
    t.submit(
        f"card A's right code after {n - 1} wrong ones (ATC {ok.atc})",
        early.login,
        ok.code,
        expect=Verdict.ACCEPT,
    )
    locked = lab.subject()
    present_wrong(t, locked, n, f"card B, {n} wrong codes")
    late = locked.identify()
    t.submit(
        f"card B's right code after {n} wrong ones (ATC {late.atc})",
        locked.login,
        late.code,
        expect=Verdict.REJECT,
    )
    return from_trail(
        t,
        passed=f"locked after exactly {n} wrong codes",
        failed=f"the lock does not come after exactly {n} wrong codes (max_fail {n} claimed)",
        max_fail=n,
    )


def check_sibling_lock_bypass(lab: Lab, options: ProbeOptions) -> Outcome:
    """A locked card's code does not get in through a sibling card (same user and PAN, V11, V29)."""
    n = lab.adapter.limits.max_fail
    t = lab.trail()
    a = lab.subject()
    present_wrong(t, a, n, f"card A (PSN {a.psn}), {n} wrong codes")
    b = lab.subject(user=a.user, pan=a.pan, psn="01")
    t.note(f"card B enrolled after the lock: same user and PAN, PSN {b.psn}")
    code = a.identify()
    t.submit(
        f"locked card A's right code through card B (ATC {code.atc})",
        b.login,
        code.code,
        expect=Verdict.REJECT,
    )
    t.submit("the same code through card A", a.login, code.code, expect=Verdict.REJECT)
    own = b.identify()
    t.submit(f"card B's own code (ATC {own.atc})", b.login, own.code, expect=Verdict.ACCEPT)
    return from_trail(
        t,
        passed="the lock held through the sibling card",
        failed="a locked card's code was accepted through a sibling",
    )


def check_request_id_reuse(lab: Lab, options: ProbeOptions) -> Outcome:
    """A request id replays its recorded verdict and binds to its request (V24)."""
    s = lab.subject()
    t = lab.trail()
    rid = lab.rid()
    first = s.identify()
    t.submit(
        f"identify login (ATC {first.atc}) under id R",
        s.login,
        first.code,
        expect=Verdict.ACCEPT,
        request_id=rid,
    )
    t.submit(
        "the same request under R again (recorded verdict)",
        s.login,
        first.code,
        expect=Verdict.ACCEPT,
        request_id=rid,
    )
    second = s.identify()
    t.submit(
        f"another code (ATC {second.atc}) under R",
        s.login,
        second.code,
        expect={Verdict.CONFLICT, Verdict.REJECT},
        request_id=rid,
    )
    t.submit("that code under a new id (nothing was changed)", s.login, second.code, expect=Verdict.ACCEPT)
    t.submit("the first code under a new id (a replay)", s.login, first.code, expect=Verdict.REJECT)
    return from_trail(
        t,
        passed="request ids replay their verdict and bind to their request",
        failed="a request id was misused",
    )
