"""``capsim demo``: a card, a reader and a verifier, end to end, in a throwaway directory.

Reference: ``docs/cli.md``; the flow is the enrolment and verification flow of verifier.md §1
and the PIN lifecycle of cap-protocol.md §9.5/§9.7.

Theory of operation
-------------------
1. A ``secur-acces`` card is personalised with fresh random issuer keys into a temporary
   directory (card file and issuer-keys file, mode 0600). The verifier uses a SQLite database in
   the same directory, or the store named by ``--db`` (a SQLite path or a ``postgresql://`` URL;
   its stored policy applies). A SQLite file named by ``--db`` must exist unless ``--create-db``
   is given (then the demo says on stderr that it created it), so a mistyped name is an error.
2. Every code is computed by the CAP reader (:class:`capsim.reader.CapReader`) talking to the card
   file through the ``file:`` transport, and judged by :class:`capsim.verifier.Verifier`. The
   PIN UNBLOCK script is built from the ARQC and ATC of the reader's transaction without a PIN
   (:meth:`~capsim.reader.CapReader.issuer_request`) and sent over the same link: the demo
   speaks no APDU of its own.
3. Each step states what must happen (accept, reject, a PIN error …) and records what did.
   The first step that behaves otherwise stops the demo: the command names it and exits with
   ``INVARIANT_BROKEN`` (14). Exit 0 means every step behaved as expected.
4. Codes are shown (they are demo codes of a throwaway card); keys, the full PAN and
   activation codes are not.
5. ``--pkcs11``: the issuer keys go into a throwaway SoftHSM2 token (docs/hsm.md) and their
   file is deleted; every cryptogram, PIN script and audit seal is then computed by the token,
   and a last step checks that the token's issuer keys are sensitive and not extractable.
6. ``--certificate`` tells the certificate token's story instead, with the same steps and exit
   codes (:mod:`capsim.cli.demo_certificate`).
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import click

from capsim.cards import builtin_profile, new_card
from capsim.cli._common import ExitCode, handle_errors
from capsim.cli.card import mask_pan, random_test_pan
from capsim.cli.demo_steps import DemoStep
from capsim.cli.verifier import default_keyring
from capsim.crypto import KeyDerivation, odd_parity
from capsim.errors import CapsimError, ConfigError, InvalidCode, PinBlockedError, PinError
from capsim.reader import CapReader, CapResult
from capsim.storage import IssuerKeys, read_card_file, save_issuer_keys
from capsim.transports import open_transport
from capsim.verifier.keyring import issuer_key_id
from capsim.verifier.session import VerifierSession, open_session, sqlite_file
from capsim.verifier.store import Store

__all__ = ["DEMO_PIN", "DemoStep", "demo", "run_demo"]

#: The throwaway card's PIN.
DEMO_PIN: Final = "1234"
_WRONG_PIN: Final = "0000"
_PAYEE: Final = "FR76 3000 6000 0112 3456 7890 189"
_AMOUNT: Final = "125.00"
_OTHER_AMOUNT: Final = "925.00"
_CURRENCY: Final = "EUR"
_TDS_FIELDS: Final = ("30006000", "12500", "7890189")


@dataclass
class _Demo:
    """The running demo: card, issuer, verifier and the steps so far."""

    workdir: Path
    store: Store
    session: VerifierSession
    on_step: Callable[[DemoStep], None]
    keys: IssuerKeys | None = None
    steps: list[DemoStep] = field(default_factory=list)
    current: str = "personalise"

    # -- plumbing --------------------------------------------------------------------------------
    def begin(self, name: str) -> None:
        self.current = name

    def record(self, step: DemoStep) -> bool:
        self.steps.append(step)
        self.on_step(step)
        return step.ok

    def card_spec(self) -> str:
        return f"file:{self.workdir / 'card.json'}"

    def reader_run(self, action: Callable[[CapReader], CapResult]) -> CapResult:
        with open_transport(self.card_spec()) as transport:
            return action(CapReader(transport))


def run_demo(
    workdir: Path, *, db: str | None, on_step: Callable[[DemoStep], None], pkcs11: bool = False
) -> list[DemoStep]:
    """Run every step in ``workdir``; stop at the first step that misbehaves.

    Parameters
    ----------
    workdir:
        An empty directory for the card file, the issuer keys and (without ``db``) the database.
    db:
        A verifier store URL (``--db``), or ``None`` for a SQLite file in ``workdir``.
    on_step:
        Called with each finished step (for live output).
    pkcs11:
        Keep the issuer keys in a throwaway SoftHSM2 token (rule 5).

    Returns
    -------
    list[DemoStep]
        The steps carried out; all ``ok`` when the demo passed. A capsim error inside a step
        ends the demo with that step recorded as failed.

    Raises
    ------
    ValidationError, ConfigError, TemporaryFailure
        ``db`` is not a usable store (nothing has been run).
    """
    url = db if db is not None else str(workdir / "verifier.db")
    keys, token = _new_issuer_keys(), None
    if pkcs11:
        from capsim.cli.verifier_keys import demo_token

        token = demo_token(workdir, keys)
    # an initialised, sealed verifier database, so that 'capsim verifier … --db' can inspect it
    with open_session(
        url,
        keyring_path=default_keyring(url),
        create=True,
        allow_memory=True,
        token=token,
        token_issuers=("demo-issuer",) if token is not None else (),
    ) as session:
        d = _Demo(workdir=workdir, store=session.store, session=session, on_step=on_step, keys=keys)
        try:
            _run_steps(d)
        except CapsimError as exc:
            d.record(
                DemoStep(
                    name=d.current,
                    title=f"{d.current}: the step could not complete",
                    expected="completed",
                    observed="error",
                    detail=f"{type(exc).__name__}: {exc}",
                )
            )
    return d.steps


def _new_issuer_keys() -> IssuerKeys:
    return IssuerKeys(
        imk_ac=odd_parity(secrets.token_bytes(16)),
        imk_smi=odd_parity(secrets.token_bytes(16)),
        imk_smc=odd_parity(secrets.token_bytes(16)),
    )


def _run_steps(d: _Demo) -> None:
    workdir = d.workdir
    card_path = workdir / "card.json"

    # 1. personalise ------------------------------------------------------------------------------
    keys = d.keys or _new_issuer_keys()
    if d.session.token is None:
        save_issuer_keys(workdir / "issuer-keys.json", keys)
    pan = random_test_pan(builtin_profile("secur-acces"))
    card = new_card(
        "secur-acces",
        pan=pan,
        psn="00",
        pin=DEMO_PIN,
        imk_ac=keys.imk_ac,
        imk_smi=keys.imk_smi,
        imk_smc=keys.imk_smc,
        path=card_path,
        key_derivation=KeyDerivation(keys.derivation),
    )
    card.close()
    profile, _state = read_card_file(card_path)
    d.record(
        DemoStep(
            name="personalise",
            title="personalise a secur-acces card",
            expected="ok",
            observed="ok",
            detail=f"PAN {mask_pan(pan)}, PSN {profile.psn}, PIN {DEMO_PIN}, fresh issuer keys"
            + ("" if d.session.token is None else f" (only in token {d.session.token.token!r})"),
        )
    )

    # 2. verifier and enrolment -------------------------------------------------------------------
    d.begin("enrol")
    store = d.store
    provider = d.session.provider
    kid = issuer_key_id(keys)
    if d.session.token is None:
        provider.add_issuer_keys(kid, imk_ac=keys.imk_ac, imk_smi=keys.imk_smi, imk_smc=keys.imk_smc)
    del keys
    d.keys = None
    v = d.session.verifier
    serial = iter(range(1, 1000))

    def rid() -> str:
        return f"demo-{secrets.token_hex(6)}-{next(serial)}"

    user = v.add_user(f"demo-{secrets.token_hex(4)}")
    activation = v.issue_activation_code(user.user_id)

    def identify(pin: str = DEMO_PIN) -> CapResult:
        return d.reader_run(lambda r: r.identify(pin))

    first = identify()
    try:
        cred = v.enroll_card(
            activation.code, profile, issuer_key_id=kid, first_code=first.code, request_id=rid()
        )
        observed, detail = "accept", f"credential {cred.credential_id} active at ATC {cred.last_atc}"
    except InvalidCode:
        observed, detail = "reject", "the first Identify code did not activate the card"
    if not d.record(
        DemoStep(
            name="enrol",
            title=f"enrol the card for user {user.user_id} with its first Identify code",
            expected="accept",
            observed=observed,
            detail=detail,
            code=first.code,
        )
    ):
        return
    cid = cred.credential_id

    def judge(name: str, title: str, *, expected: str, target: str, code: str, extra: str = "") -> bool:
        try:
            acc = v.verify(target, code, request_id=rid())
            observed, detail = "accept", f"accepted at ATC {acc.atc}"
        except InvalidCode:
            observed, detail = "reject", "code rejected"
        if extra:
            detail = f"{extra}; {detail}"
        return d.record(
            DemoStep(name=name, title=title, expected=expected, observed=observed, detail=detail, code=code)
        )

    # 3. Identify login
    d.begin("identify")
    op = v.issue_operation(cid, mode="identify")
    login = identify()
    if not judge(
        "identify",
        "log in with an Identify code",
        expected="accept",
        target=op.operation_id,
        code=login.code,
    ):
        return

    def challenge_step(
        name: str,
        title: str,
        *,
        expected: str,
        run: Callable[[CapReader, str], CapResult],
        mode: str,
        amount: str | None = None,
    ) -> bool:
        """Issue a challenge operation, let the reader answer it with ``run`` and judge the code."""
        d.begin(name)
        if amount is None:
            operation = v.issue_operation(cid, mode=mode)
        else:
            operation = v.issue_operation(cid, mode=mode, amount=amount, currency=_CURRENCY, payee=_PAYEE)
        challenge = operation.challenge
        res = d.reader_run(lambda r: run(r, challenge))
        return judge(
            name,
            title,
            expected=expected,
            target=operation.operation_id,
            code=res.code,
            extra=f"challenge {challenge}",
        )

    # 4. Respond
    if not challenge_step(
        "respond",
        "answer the bank's challenge (Respond)",
        expected="accept",
        run=lambda r, challenge: r.respond(DEMO_PIN, challenge),
        mode="respond",
    ):
        return

    # 5. Sign
    if not challenge_step(
        "sign",
        f"sign {_AMOUNT} {_CURRENCY} to {_PAYEE}",
        expected="accept",
        run=lambda r, challenge: r.sign(DEMO_PIN, challenge, _AMOUNT, _CURRENCY),
        mode="sign",
        amount=_AMOUNT,
    ):
        return

    # 6. TDS
    d.begin("tds")
    op = v.issue_operation(cid, mode="tds", fields=list(_TDS_FIELDS))
    res = d.reader_run(lambda r: r.sign_data(DEMO_PIN, _TDS_FIELDS))
    if not judge(
        "tds",
        "sign transaction data (TDS) over several fields",
        expected="accept",
        target=op.operation_id,
        code=res.code,
        extra="fields " + " ".join(_TDS_FIELDS),
    ):
        return

    # 7. Replay
    d.begin("replay")
    op = v.issue_operation(cid, mode="identify")
    if not judge(
        "replay",
        "replay the login code of step 3",
        expected="reject",
        target=op.operation_id,
        code=login.code,
        extra="same code, new login",
    ):
        return

    # 8. Another amount
    if not challenge_step(
        "other-amount",
        f"a code signed for {_OTHER_AMOUNT} presented for {_AMOUNT}",
        expected="reject",
        run=lambda r, challenge: r.sign(DEMO_PIN, challenge, _OTHER_AMOUNT, _CURRENCY),
        mode="sign",
        amount=_AMOUNT,
    ):
        return

    # 9. Three wrong PINs
    d.begin("wrong-pins")
    tries: list[str] = []
    for _ in range(3):
        try:
            identify(_WRONG_PIN)
            tries.append("accepted")
        except PinError as exc:
            tries.append(str(exc.tries_left))
        except PinBlockedError:
            tries.append("blocked")
    try:
        identify()
        after = "right PIN accepted"
        observed = "pin-usable"
    except PinBlockedError:
        after = "the right PIN is refused: PIN blocked"
        observed = "pin-blocked" if tries == ["2", "1", "0"] else "unexpected-tries"
    if not d.record(
        DemoStep(
            name="wrong-pins",
            title="three wrong PINs block the card's PIN",
            expected="pin-blocked",
            observed=observed,
            detail=f"tries left {', '.join(tries)}; {after}",
        )
    ):
        return

    # 10. PIN UNBLOCK issuer script
    d.begin("pin-unblock")
    with open_transport(d.card_spec()) as transport:
        # the reader's transaction without a PIN gives the ARQC and ATC the issuer needs
        request = CapReader(transport).issuer_request()
        script = v.build_pin_script(cid, arqc=request.cryptogram, atc=request.atc)
        sw = transport.transmit(script)[-2:].hex().upper()
    observed = "ok" if sw == "9000" else "script-refused"
    detail = f"ARQC at ATC {request.atc}: the verifier's PIN UNBLOCK script answered {sw}"
    if not d.record(
        DemoStep(
            name="pin-unblock",
            title="the issuer sends a PIN UNBLOCK script built from the card's ARQC and ATC",
            expected="ok",
            observed=observed,
            detail=detail,
        )
    ):
        return

    # 11. The PIN works again
    d.begin("pin-restored")
    op = v.issue_operation(cid, mode="identify")
    try:
        again = identify()
    except (PinError, PinBlockedError) as exc:
        d.record(
            DemoStep(
                name="pin-restored",
                title="the PIN works again and its code is accepted",
                expected="accept",
                observed="pin-refused",
                detail=str(exc),
            )
        )
        return
    if not judge(
        "pin-restored",
        "the PIN works again and its code is accepted",
        expected="accept",
        target=op.operation_id,
        code=again.code,
    ):
        return

    # 12. Audit chain
    d.begin("audit")
    problems = v.check_audit()
    d.record(
        DemoStep(
            name="audit",
            title="the verifier's hash-chained audit is intact",
            expected="intact",
            observed="intact" if not problems else "broken",
            detail=f"{sum(1 for _ in store.audit_records())} records"
            + ("" if not problems else f", {len(problems)} problems"),
        )
    )
    if d.session.token is not None:
        from capsim.cli.verifier_keys import token_key_check

        d.begin("token-keys")
        observed, detail = token_key_check(d.session.token, "demo-issuer")
        d.record(
            DemoStep(
                name="token-keys",
                title="the issuer keys in the token are sensitive and not extractable",
                expected="ok",
                observed=observed,
                detail=detail,
            )
        )


def _missing_sqlite_db(db: str | None, *, create: bool) -> Path | None:
    """The SQLite file ``--db`` names when it does not exist yet and ``--create-db`` allows
    creating it; a missing one without ``--create-db`` is an error (a typo must not silently
    become a new database, rule 1)."""
    target = None if db is None else sqlite_file(db)
    if target is None or target.exists():
        return None
    if not create:
        raise ConfigError(
            f"--db: no database at {target}; pass --create-db to create it there, "
            "or leave --db out for a throwaway one"
        )
    return target


@click.command("demo")
@click.option(
    "--db",
    metavar="URL",
    help="Run the verifier on this store (SQLite path, sqlite:///PATH, postgresql://…) "
    "[default: a SQLite file in the temporary directory].",
)
@click.option(
    "--create-db",
    is_flag=True,
    help="Create the SQLite file named by --db if it does not exist (else a missing one is an error).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the steps as one JSON object.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (card file, keys, database).")
@click.option(
    "--pkcs11", is_flag=True, help="Keep the issuer keys in a throwaway SoftHSM2 token (docs/hsm.md)."
)
@click.option(
    "--certificate",
    is_flag=True,
    help="The certificate token instead: a PIV token registered with an organisation, an "
    "operation-bound signature, three wrong PINs and the PUK (docs/certificate.md).",
)
@handle_errors
def demo(
    *, db: str | None, create_db: bool, as_json: bool, keep: bool, pkcs11: bool, certificate: bool
) -> None:
    """[!] Card, reader and verifier end to end: enrol, log in, respond, sign, TDS, a replay
    and a wrong amount refused, three wrong PINs, a PIN UNBLOCK script. Exit 0 only if every
    step behaved as expected, else 14 naming the failed step."""
    if certificate and pkcs11:
        raise ConfigError("--certificate and --pkcs11: the certificate demo has no issuer keys to protect")
    new_db = _missing_sqlite_db(db, create=create_db)
    if keep:
        workdir = Path(tempfile.mkdtemp(prefix="capsim-demo-"))
        cleanup: Callable[[], None] = lambda: None  # noqa: E731
    else:
        tmp = tempfile.TemporaryDirectory(prefix="capsim-demo-")
        workdir = Path(tmp.name)
        cleanup = tmp.cleanup

    def show(step: DemoStep) -> None:
        if as_json:
            return
        mark = "ok  " if step.ok else "FAIL"
        code = f"code {step.code}: " if step.code else ""
        click.echo(f"[{mark}] {step.title}")
        click.echo(f"       {code}{step.detail}")
        if not step.ok:
            click.echo(f"       expected {step.expected}, observed {step.observed}")

    if not as_json:
        where = "a SQLite database beside the card" if db is None else "the store given by --db"
        place = f"in {workdir} (kept" if keep else "in a temporary directory (removed afterwards"
        click.echo(f"capsim demo{' --certificate' if certificate else ''} {place}; verifier on {where})")
    try:
        if certificate:
            from capsim.cli.demo_certificate import run_certificate_demo

            steps = run_certificate_demo(workdir, db=db, on_step=show)
        else:
            steps = run_demo(workdir, db=db, on_step=show, pkcs11=pkcs11)
    finally:
        cleanup()
    if new_db is not None and new_db.exists():
        click.echo(f"capsim: note: created the verifier database {new_db} (--create-db)", err=True)
    failed = next((s for s in steps if not s.ok), None)
    failure: str | None = None
    if failed is not None:
        failure = f"step '{failed.name}' failed: expected {failed.expected}, observed {failed.observed}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": failure is None,
                    "failure": failure,
                    "steps": [s.to_dict() for s in steps],
                    "workdir": str(workdir) if keep else None,
                },
                sort_keys=True,
            )
        )
    if failure is not None:
        click.echo(f"capsim: error: demo {failure}", err=True)
        raise SystemExit(int(ExitCode.INVARIANT_BROKEN))
    if not as_json:
        click.echo(f"all {len(steps)} steps behaved as expected")
