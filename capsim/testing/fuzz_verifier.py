"""``capsim fuzz verifier``: random and adversarial input against a verifier on any store.

Every example enrols a fresh emulated card (its own user and PAN) in the verifier, then runs
a Hypothesis-drawn program of steps:

``op MODE``         issue an operation (challenge, amount, currency, TDS fields drawn)
``answer I``        the card's real code for operation *I* (0 = the latest), through capsim's reader
``wrong I CODE``    a random or adversarial code for operation *I* (verifier.md V42)
``replay I``        a code accepted before, under a new request id (V24)
``again I``         the same request id as an earlier verification (V24: same result)
``burst I N``       *N* threads verify the same real code at once (V19)
``skip N``          the card makes *N* codes nobody presents (the ATC runs ahead)
``lock``, ``unlock``, ``suspend``, ``resume``, ``floor N``   lifecycle steps

After each step the invariants of verifier.md V41 are checked on the stored credential and the
acceptances seen: ``last_atc`` never decreases; 0 ≤ ``fail_count`` ≤ ``max_fail``; at most one
ACCEPT per (credential, ATC) and per operation; no ACCEPT unless the credential was active and
unlocked. Also: ``verify`` raises only ``InvalidCode``, ``TemporaryFailure`` or
``ValidationError`` (V25, V42); a replayed request id gives the same answer (V24); and a real
code for a fresh operation on an active, unlocked credential within the ATC window is
accepted.

A finding is saved with the step program in its metadata (``@ steps``) and the card's
exchanges as the transcript; :func:`replay_verifier_finding` runs the program again.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from capsim.cards import EmvCapCard, new_card
from capsim.errors import InvalidCode, TemporaryFailure, ValidationError
from capsim.jsonlimits import loads_limited
from capsim.testing.findings import Finding, save_finding
from capsim.testing.fuzz_engine import FuzzReport, _FailedError, _Run, run_engine
from capsim.testing.model import Violation
from capsim.testing.strategies import adversarial_codes, amounts, challenges, codes, currencies, tds_fields
from capsim.transports.inprocess import TEST_IMK_AC, TEST_IMK_SMC, TEST_IMK_SMI, TEST_PIN, InProcessTransport

__all__ = [
    "Checker",
    "Step",
    "VerifierBench",
    "fuzz_verifier",
    "make_verifier",
    "new_bench",
    "one_step",
    "replay_verifier_finding",
    "run_program",
    "run_step",
    "steps",
]

_log = logging.getLogger(__name__)

#: One step: a name and its arguments (module docstring).
Step = tuple[Any, ...]

_KEY_ID = "fuzz"
_RUN_IDS = itertools.count(1)


def one_step() -> st.SearchStrategy[Step]:
    """Hypothesis strategy of one step (module docstring)."""
    index = st.integers(0, 5)
    op = st.one_of(
        st.tuples(st.just("op"), st.just("identify")),
        st.tuples(st.just("op"), st.just("respond"), challenges()),
        st.tuples(st.just("op"), st.just("sign"), challenges(), amounts(max_value=10**9), currencies()),
        st.tuples(st.just("op"), st.just("tds"), tds_fields()),
    )
    return st.one_of(
        op,
        op,
        st.tuples(st.just("answer"), index),
        st.tuples(st.just("answer"), index),
        st.tuples(st.just("wrong"), index, st.one_of(codes(), adversarial_codes())),
        st.tuples(st.just("replay"), index),
        st.tuples(st.just("again"), index),
        st.tuples(st.just("burst"), index, st.integers(2, 6)),
        st.tuples(st.just("skip"), st.integers(1, 12)),
        st.tuples(st.sampled_from(("lock", "unlock", "suspend", "resume"))),
        st.tuples(st.just("floor"), st.integers(0, 40)),
    )


def steps(*, max_size: int = 12) -> st.SearchStrategy[list[Step]]:
    """Hypothesis strategy of step programs (module docstring)."""
    return st.lists(one_step(), min_size=1, max_size=max_size)


def run_step(bench: VerifierBench, checker: Checker, step: Step) -> Violation | None:
    """Run one step and check the invariants after it (for state machines)."""
    try:
        _run_step(bench, checker, bench.verifier, bench.credential_id, step)
        checker.after_step()
    except _Broken as broken:
        return Violation(invariant=broken.invariant, detail=broken.detail)
    return None


def _luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return body + str((10 - total % 10) % 10)


@dataclass
class VerifierBench:
    """A verifier with one freshly enrolled card and its reader (one example)."""

    verifier: Any
    card: EmvCapCard
    reader: Any
    credential_id: str
    run_id: str
    ops: list[Any] = field(default_factory=list)
    codes: list[tuple[int, str, str]] = field(default_factory=list)  # (op index, code, request id)
    results: dict[str, str] = field(default_factory=dict)  # request id -> outcome
    acceptances: list[Any] = field(default_factory=list)
    used_ops: set[str] = field(default_factory=set)
    serial: int = 0
    last_atc: int = -1

    def rid(self) -> str:
        self.serial += 1
        return f"fz-{self.run_id}-{self.serial}"


def new_bench(verifier: Any, *, profile: str = "secur-acces") -> VerifierBench:
    """Enrol a fresh card (new user, new PAN) with its first Identify code."""
    from capsim.reader import CapReader

    run_id = f"{int(time.time() * 1000) % 10**9:09d}{next(_RUN_IDS):05d}"
    pan = _luhn("54" + run_id[-13:])
    card = new_card(
        profile, pan=pan, pin=TEST_PIN, imk_ac=TEST_IMK_AC, imk_smi=TEST_IMK_SMI, imk_smc=TEST_IMK_SMC,
        rng=bytes,
    )  # fmt: skip
    reader = CapReader(InProcessTransport(card))
    user = f"fz-{run_id}"
    verifier.add_user(user)
    activation = verifier.issue_activation_code(user)
    first = reader.identify(TEST_PIN)
    cred = verifier.enroll_card(activation.code, card.profile, issuer_key_id=_KEY_ID, first_code=first.code)
    bench = VerifierBench(
        verifier=verifier, card=card, reader=reader, credential_id=cred.credential_id, run_id=run_id
    )
    bench.last_atc = cred.last_atc
    return bench


def _answer(bench: VerifierBench, op: Any) -> str:
    from capsim.cap import CURRENCIES

    mode = str(op.mode.value if hasattr(op.mode, "value") else op.mode)
    if mode == "identify":
        return str(bench.reader.identify(TEST_PIN).code)
    if mode == "respond":
        return str(bench.reader.respond(TEST_PIN, op.challenge).code)
    if mode == "sign":
        currency = op.currency
        if currency is not None and currency.isdigit():
            currency = next((c.alpha for c in CURRENCIES.values() if c.numeric == currency), currency)
        return str(bench.reader.sign(TEST_PIN, op.challenge, op.amount_minor, currency).code)
    return str(bench.reader.sign_data(TEST_PIN, list(op.tds_fields)).code)


class Checker:
    """V41 invariants over one bench."""

    def __init__(self, bench: VerifierBench) -> None:
        self.bench = bench
        self.by_atc: dict[int, str] = {}
        self.by_op: dict[str, str] = {}
        self.by_rid: dict[str, int] = {}

    def credential(self) -> Any:
        return self.bench.verifier.get_credential(self.bench.credential_id)

    def usable(self, cred: Any) -> bool:
        from capsim.verifier.model import CredentialState

        locked = cred.locked_until is not None and cred.locked_until > datetime.now(UTC)
        return bool(cred.state is CredentialState.ACTIVE and not locked)

    def accepted(self, acc: Any, before: Any) -> bool:
        """Check an ACCEPT; ``False`` when it is the recorded answer to a repeated request id."""
        recorded = self.by_rid.get(acc.request_id)
        if recorded is not None:  # a repeated request id returns the recorded ACCEPT (V24)
            if recorded != acc.atc:
                raise _Broken("idempotency", f"request id repeated: ATC {recorded} before, {acc.atc} now")
            return False
        self.by_rid[acc.request_id] = acc.atc
        if not self.usable(before):
            raise _Broken("v41", f"ACCEPT while the credential was {before.state.value} or locked")
        key = f"{acc.credential_id}/{acc.atc}"
        if acc.atc in self.by_atc and self.by_atc[acc.atc] != acc.request_id:
            raise _Broken("v41", f"two ACCEPTs for ATC {acc.atc} ({key})")
        self.by_atc[acc.atc] = acc.request_id
        if acc.operation_id is not None:
            if acc.operation_id in self.by_op and self.by_op[acc.operation_id] != acc.request_id:
                raise _Broken("v41", "two ACCEPTs for one operation")
            self.by_op[acc.operation_id] = acc.request_id
        return True

    def after_step(self) -> None:
        cred = self.credential()
        if cred is None:
            raise _Broken("v41", "the credential disappeared")
        if cred.last_atc < self.bench.last_atc:
            raise _Broken("v41", f"last_atc decreased from {self.bench.last_atc} to {cred.last_atc}")
        self.bench.last_atc = cred.last_atc
        if not 0 <= cred.fail_count <= cred.max_fail:
            raise _Broken("v41", f"fail_count {cred.fail_count} outside 0..{cred.max_fail}")


class _Broken(Exception):  # noqa: N818 - internal signal, never leaves this module
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(detail)
        self.invariant = invariant
        self.detail = detail


def _verify(bench: VerifierBench, checker: Checker, target: str, code: str, rid: str) -> str:
    before = checker.credential()
    try:
        acc = bench.verifier.verify(target, code, request_id=rid)
    except InvalidCode:
        return "reject"
    except TemporaryFailure:
        return "temporary"
    except ValidationError:
        return "invalid"
    except Exception as exc:  # the invariant under test (V25)
        raise _Broken("exception", f"verify raised {type(exc).__name__}") from exc
    if checker.accepted(acc, before):
        bench.acceptances.append(acc)
    return f"accept:{acc.atc}"


def run_program(bench: VerifierBench, program: Sequence[Step]) -> Violation | None:
    """Run ``program`` on ``bench``; return the first broken invariant."""
    checker = Checker(bench)
    verifier = bench.verifier
    cid = bench.credential_id
    try:
        for n, step in enumerate(program):
            _run_step(bench, checker, verifier, cid, step)
            try:
                checker.after_step()
            except _Broken as broken:
                return Violation(invariant=broken.invariant, detail=broken.detail, index=n)
    except _Broken as broken:
        return Violation(invariant=broken.invariant, detail=broken.detail)
    return None


def _run_step(bench: VerifierBench, checker: Checker, verifier: Any, cid: str, step: Step) -> None:
    name = step[0]
    ops = bench.ops
    if name == "op":
        mode = step[1]
        kwargs: dict[str, Any] = {}
        if mode == "sign":
            kwargs = {"reference": step[2], "amount": step[3], "currency": step[4]}
        elif mode == "tds":
            kwargs = {"fields": list(step[2])}
        elif mode == "respond":
            kwargs = {}
        try:
            ops.append(verifier.issue_operation(cid, mode=mode, **kwargs))
        except (ValidationError, InvalidCode, TemporaryFailure):
            return
        except Exception as exc:
            raise _Broken("exception", f"issue_operation raised {type(exc).__name__}") from exc
        return
    if name in ("answer", "wrong", "burst") and not ops:
        return
    if name == "answer":
        op = ops[-1 - step[1] % len(ops)]
        cred = checker.credential()
        stored = verifier.get_operation(op.operation_id)
        fresh = (
            op.operation_id not in bench.used_ops
            and stored is not None
            and stored.attempts == 0
            and stored.consumed_at is None
            and stored.expires_at > datetime.now(UTC)
        )
        bench.used_ops.add(op.operation_id)
        next_atc = bench.card.state.atc + 1
        within = cred.last_atc < next_atc <= cred.last_atc + verifier.policy.atc_window
        code = _answer(bench, op)
        rid = bench.rid()
        outcome = _verify(bench, checker, op.operation_id, code, rid)
        bench.results[rid] = outcome
        bench.codes.append((ops.index(op), code, rid))
        if fresh and within and cred.fail_count == 0 and checker.usable(cred) and outcome == "reject":
            raise _Broken("honest", f"a real {op.mode.value} code for a fresh operation was rejected")
        return
    if name == "wrong":
        op = ops[-1 - step[1] % len(ops)]
        bench.used_ops.add(op.operation_id)
        rid = bench.rid()
        bench.results[rid] = _verify(bench, checker, op.operation_id, step[2], rid)
        return
    if name == "replay" and bench.codes:
        op_index, code, _ = bench.codes[-1 - step[1] % len(bench.codes)]
        _verify(bench, checker, ops[op_index].operation_id, code, bench.rid())
        return
    if name == "again" and bench.codes:
        op_index, code, rid = bench.codes[-1 - step[1] % len(bench.codes)]
        first = bench.results.get(rid)
        outcome = _verify(bench, checker, ops[op_index].operation_id, code, rid)
        if first is not None and first.startswith("accept") and outcome != first:
            raise _Broken("idempotency", f"request id repeated: first {first}, now {outcome}")
        return
    if name == "burst":
        _burst(bench, checker, ops[-1 - step[1] % len(ops)], step[2])
        return
    if name == "skip":
        for _ in range(step[1]):
            bench.reader.identify(TEST_PIN)
        return
    if name == "floor":
        try:
            verifier.advance_floor(cid, max(bench.last_atc, 0) + step[1])
        except ValidationError:
            return
        return
    action = {"lock": verifier.lock, "unlock": verifier.unlock, "suspend": verifier.suspend,
              "resume": verifier.resume}.get(name)  # fmt: skip
    if action is not None:
        try:
            if name == "lock":
                verifier.lock(cid, seconds=600)
            else:
                action(cid)
        except (ValidationError, InvalidCode):
            return


def _burst(bench: VerifierBench, checker: Checker, op: Any, threads: int) -> None:
    bench.used_ops.add(op.operation_id)
    code = _answer(bench, op)
    before = checker.credential()
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    rids = [bench.rid() for _ in range(threads)]
    start = threading.Barrier(threads)

    def worker(rid: str) -> None:
        try:
            start.wait(5)
            acc = bench.verifier.verify(op.operation_id, code, request_id=rid)
        except (InvalidCode, TemporaryFailure, ValidationError, threading.BrokenBarrierError):
            return
        except Exception as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(acc)

    pool = [threading.Thread(target=worker, args=(rid,), daemon=True) for rid in rids]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    if errors:
        raise _Broken("exception", f"verify raised {type(errors[0]).__name__} in a burst")
    if len(results) > 1:
        raise _Broken("v41", f"{len(results)} ACCEPTs for one code from {threads} concurrent requests")
    for acc in results:
        if checker.accepted(acc, before):
            bench.acceptances.append(acc)


def make_verifier(store: Any) -> Any:
    """A verifier on ``store`` with the test issuer keys (key id ``fuzz``) and default policy."""
    from capsim.verifier.provider import SoftwareProvider
    from capsim.verifier.service import Verifier

    provider = SoftwareProvider()
    provider.add_issuer_keys(_KEY_ID, imk_ac=TEST_IMK_AC, imk_smi=TEST_IMK_SMI, imk_smc=TEST_IMK_SMC)
    return Verifier(store, provider)


def fuzz_verifier(
    store: Any,
    *,
    store_name: str = "memory:",
    profile: str = "secur-acces",
    seed: int = 0,
    max_examples: int = 200,
    time_budget: float | None = 60.0,
    findings_dir: str | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
    max_findings: int = 1,
    verifier: Any | None = None,
) -> FuzzReport:
    """Fuzz a verifier on ``store`` (module docstring). ``store_name`` is shown in reports
    (pass a redacted URL). ``verifier`` replaces the default :func:`make_verifier` (to fuzz
    a subclass or a wrapper with the same API; it must know the test issuer keys as ``fuzz``)."""
    if max_examples < 1:
        raise ValidationError("max_examples: expected a positive number of examples")
    verifier = verifier if verifier is not None else make_verifier(store)
    programs: dict[int, list[Step]] = {}

    def body(program: list[Step]) -> int:
        bench = new_bench(verifier, profile=profile)
        violation = run_program(bench, program)
        if violation is not None:
            run = _Run()
            programs[id(run)] = program
            raise _FailedError(violation, run)
        return len(program)

    started = time.monotonic()
    examples, count, stopped, failures, seeds = run_engine(
        body,
        steps(),
        seed=seed,
        max_examples=max_examples,
        time_budget=time_budget,
        on_example=on_progress,
        max_findings=max_findings,
        chunk=25,
    )
    findings = []
    distinct: dict[tuple[str, str], tuple[_FailedError, int]] = {}
    for failed, chunk_seed in zip(failures, seeds, strict=True):
        distinct.setdefault((failed.violation.invariant, failed.violation.detail), (failed, chunk_seed))
    for failed, chunk_seed in distinct.values():
        program = programs.get(id(failed.run), [])
        finding = Finding(
            fuzzer="verifier",
            target=store_name,
            seed=chunk_seed,
            invariant=failed.violation.invariant,
            detail=failed.violation.detail,
            meta={"steps": json.dumps(program, separators=(",", ":")), "profile": profile},
        )
        if findings_dir is not None:
            finding = save_finding(findings_dir, finding)
        findings.append(finding)
    if on_progress is not None:
        on_progress(examples, count, len(findings))
    return FuzzReport(
        fuzzer="verifier",
        target=store_name,
        seed=seed,
        examples=examples,
        apdus=count,
        elapsed=time.monotonic() - started,
        findings=tuple(findings),
        stopped=stopped,
    )


def replay_verifier_finding(finding: Finding, store: Any) -> Violation | None:
    """Run a saved step program again on ``store`` (a fresh card and user)."""
    raw = finding.meta.get("steps", "[]")
    try:
        program = [tuple(s) for s in loads_limited(raw, what="finding steps", error=ValidationError)]
    except (ValueError, TypeError):
        raise ValidationError("finding: its @ steps metadata is not a JSON step list") from None
    program = [tuple(tuple(x) if isinstance(x, list) else x for x in s) for s in program]
    bench = new_bench(make_verifier(store), profile=finding.meta.get("profile", "secur-acces"))
    return run_program(bench, program)
