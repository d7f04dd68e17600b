"""SQLite store: file, WAL, BEGIN IMMEDIATE, busy timeout, and the Store protocol semantics.

The protocol semantics are checked differentially: Hypothesis generates programs of store
calls (several transactions, some rolled back) and every result of the SQLite store must equal
the in-memory reference store's (:mod:`capsim.verifier.memory`), audit chain included.
:func:`run_differential` is reused by the PostgreSQL tests.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import ConfigError, TemporaryFailure, ValidationError
from capsim.verifier import migrate
from capsim.verifier.audit import AuditEntry, check_chain
from capsim.verifier.dburl import DbKind, open_store, parse_db_url, redact_db_url
from capsim.verifier.memory import MemoryStore
from capsim.verifier.model import (
    Acceptance,
    ActivationRecord,
    BatchItem,
    Credential,
    CredentialProfile,
    CredentialState,
    CustomerAccount,
    Operation,
    OperationMode,
    Outcome,
    RequestRecord,
    User,
    UserRole,
)
from capsim.verifier.sqlite import SqliteStore
from capsim.verifier.store import Store
from tests.verifier.certprograms import CERT_CALLS, apply_cert_call, cert_call, read_cert_tables

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

PROFILE = CredentialProfile(
    reader_profile="mc-cap",
    cdol1=bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704"),
    aip=bytes.fromhex("1000"),
    ipb=bytes.fromhex("0000FFFFFF0000000000000000000000000000000000000000000000000000"),
    iaf=bytes.fromhex("80"),
    cvn=0x10,
    iad_variants=(bytes.fromhex("0110A00000000000"), bytes.fromhex("0110A04000000000")),
)


def make_credential(cid: str, **kw: Any) -> Credential:
    base: dict[str, Any] = {
        "credential_id": cid,
        "user_id": "u1",
        "customer_id": "k1",
        "state": CredentialState.ACTIVE,
        "key_ref": f"key-{cid}",
        "pan_token": "tok-a",
        "pan_last4": "0017",
        "psn": "01",
        "profile": PROFILE,
        "created_at": T0,
    }
    base.update(kw)
    return Credential(**base)


def make_operation(oid: str, cid: str, **kw: Any) -> Operation:
    base: dict[str, Any] = {
        "operation_id": oid,
        "credential_id": cid,
        "mode": OperationMode.SIGN,
        "challenge": "00001234",
        "txn_digest": bytes(range(32)),
        "created_at": T0,
        "expires_at": T0 + timedelta(seconds=120),
        "amount_minor": 12345,
        "currency": "978",
        "payee": "ACME Ltd",
        "tds_fields": ("12", "0034"),
        "batch": (BatchItem(payee="p1", amount_minor=5),),
    }
    base.update(kw)
    return Operation(**base)


# ---------------------------------------------------------------------------------------------
# Differential programs: every store call the Protocol offers, on a small pool of keys so that
# conflicts, compare-and-swap misses and filters are exercised.

CIDS = ("c1", "c2", "c3")
OIDS = ("o1", "o2", "o3")
RIDS = ("r1", "r2", "r3")
UIDS = ("u1", "u2")
TOKS = ("tok-a", "tok-b")

_times = st.integers(min_value=-3, max_value=3).map(
    lambda s: T0 + timedelta(seconds=60 * s, microseconds=7 * s)
)
_opt_times = st.none() | _times


@st.composite
def _call(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(
        st.sampled_from(
            [
                "insert_credential", "update_credential", "get_credential", "lock_credential",
                "lock_credentials", "list_credentials", "insert_operation", "update_operation",
                "get_operation", "list_open_operations", "insert_acceptance", "list_acceptances",
                "insert_request", "get_request", "insert_user", "get_user", "list_users",
                "insert_customer", "get_customer", "insert_activation", "get_activation",
                "update_activation", "append_audit", "set_setting", "get_setting", "now",
                "rebind_credential",
            ]
        )
    )  # fmt: skip
    cid = draw(st.sampled_from(CIDS))
    if kind == "insert_credential":
        return (
            kind,
            make_credential(
                cid,
                user_id=draw(st.sampled_from(UIDS)),
                pan_token=draw(st.sampled_from(TOKS)),
                state=draw(st.sampled_from(CredentialState)),
                last_atc=draw(st.integers(-1, 20)),
            ),
        )
    if kind == "update_credential":
        changes = {
            "last_atc": draw(st.integers(-1, 30)),
            "fail_count": draw(st.integers(0, 5)),
            "locked_until": draw(_opt_times),
            "state": draw(st.sampled_from(CredentialState)),
            "parked_atc": draw(st.none() | st.integers(0, 65535)),
            "parked_at": draw(_opt_times),
            "lock_escalations": draw(st.integers(0, 3)),
            "label": draw(st.sampled_from(["", "work card", "ünïcode"])),
            # immutable columns must be ignored by the store
            "key_ref": draw(st.sampled_from(["key-x", "key-y"])),
        }
        return (kind, cid, draw(st.integers(0, 4)), changes)
    if kind == "rebind_credential":
        # half the time the credential is inserted first, so that rebinds do find a row
        first = make_credential(
            cid,
            pan_token=draw(st.sampled_from(TOKS)),
            state=draw(st.sampled_from(CredentialState)),
            last_atc=draw(st.integers(-1, 20)),
        )
        return (
            kind,
            draw(st.none() | st.just(first)),
            cid,
            draw(st.sampled_from(["p11:key-x", "p11:key-y"])),
            draw(st.sampled_from((*TOKS, "tok-c"))),
            draw(st.booleans()),  # a stale version: the compare-and-swap misses
        )
    if kind in ("get_credential", "lock_credential", "list_acceptances"):
        return (kind, cid)
    if kind == "lock_credentials":
        return (kind, draw(st.lists(st.sampled_from((*CIDS, "missing")), max_size=4)))
    if kind == "list_credentials":
        return (
            kind,
            draw(st.none() | st.sampled_from(UIDS)),
            draw(st.none() | st.sampled_from(TOKS)),
            draw(st.none() | st.frozensets(st.sampled_from(CredentialState), max_size=3)),
        )
    if kind == "insert_operation":
        return (
            kind,
            make_operation(
                draw(st.sampled_from(OIDS)),
                cid,
                mode=draw(st.sampled_from(OperationMode)),
                expires_at=draw(_times),
                attempts=draw(st.integers(0, 3)),
                amount_minor=draw(st.none() | st.integers(0, 10**12)),
                payment=draw(st.booleans()),
                tds_fields=tuple(draw(st.lists(st.text("0123456789", min_size=1, max_size=10), max_size=3))),
            ),
        )
    if kind == "update_operation":
        return (
            kind,
            draw(st.sampled_from(OIDS)),
            draw(st.integers(0, 3)),
            draw(st.integers(0, 4)),
            draw(_opt_times),
        )
    if kind == "get_operation":
        return (kind, draw(st.sampled_from(OIDS)))
    if kind == "list_open_operations":
        return (kind, cid, draw(_times))
    if kind == "insert_acceptance":
        return (
            kind,
            Acceptance(
                credential_id=cid,
                atc=draw(st.integers(0, 5)),
                mode=draw(st.sampled_from(OperationMode)),
                request_id=draw(st.sampled_from(RIDS)),
                accepted_at=draw(_times),
                operation_id=draw(st.none() | st.sampled_from(OIDS)),
                txn_digest=draw(st.binary(max_size=32)),
            ),
        )
    if kind == "insert_request":
        acc = Acceptance(
            credential_id=cid,
            atc=draw(st.integers(0, 65535)),
            mode=OperationMode.IDENTIFY,
            request_id="x",
            accepted_at=draw(_times),
        )
        return (
            kind,
            RequestRecord(
                request_id=draw(st.sampled_from(RIDS)),
                outcome=draw(st.sampled_from(Outcome)),
                recorded_at=draw(_times),
                acceptance=draw(st.none() | st.just(acc)),
            ),
        )
    if kind == "get_request":
        return (kind, draw(st.sampled_from(RIDS)))
    if kind == "insert_user":
        return (
            kind,
            User(
                user_id=draw(st.sampled_from(UIDS)),
                customer_id=draw(st.sampled_from(["k1", "k2"])),
                role=draw(st.sampled_from(UserRole)),
                created_at=draw(_times),
                created_by=draw(st.none() | st.just("admin")),
                disabled=draw(st.booleans()),
            ),
        )
    if kind == "get_user":
        return (kind, draw(st.sampled_from(UIDS)))
    if kind == "list_users":
        return (kind, draw(st.none() | st.sampled_from(["k1", "k2"])))
    if kind == "insert_customer":
        return (
            kind,
            CustomerAccount(
                customer_id=draw(st.sampled_from(["k1", "k2"])), created_at=draw(_times), name="Ltd"
            ),
        )
    if kind == "get_customer":
        return (kind, draw(st.sampled_from(["k1", "k2", "k3"])))
    digest = draw(st.sampled_from([b"\x01" * 32, b"\x02" * 32]))
    if kind == "insert_activation":
        return (
            kind,
            ActivationRecord(
                code_digest=digest,
                user_id=draw(st.sampled_from(UIDS)),
                created_at=T0,
                expires_at=draw(_times),
                attempts=draw(st.integers(0, 2)),
            ),
        )
    if kind == "get_activation":
        return (kind, digest)
    if kind == "update_activation":
        return (kind, digest, draw(_opt_times), draw(st.integers(0, 3)), draw(st.integers(0, 2)))
    if kind == "append_audit":
        return (
            kind,
            AuditEntry(
                event=draw(st.sampled_from(["verify", "resync", "lifecycle"])),
                outcome=draw(st.sampled_from(["accept", "reject", "ok"])),
                reason=draw(st.sampled_from(["", "wrong-code", "locked"])),
                request_id=draw(st.none() | st.sampled_from(RIDS)),
                credential_id=cid,
                atc=draw(st.none() | st.integers(0, 65535)),
                txn_digest=draw(st.binary(max_size=32)),
                duration_us=draw(st.integers(0, 10**6)),
                details=draw(
                    st.dictionaries(st.sampled_from(["p", "bound"]), st.sampled_from(["1e-05", "x"]))
                ),
            ),
        )
    if kind == "set_setting":
        return (
            kind,
            draw(st.sampled_from(["policy", "node"])),
            draw(st.text(max_size=20).filter(lambda s: "\x00" not in s)),
        )
    if kind == "get_setting":
        return (kind, draw(st.sampled_from(["policy", "node", "none"])))
    return ("now",)


@dataclass(frozen=True)
class TxPlan:
    calls: tuple[tuple[Any, ...], ...]
    rollback: bool


programs = st.lists(
    st.builds(TxPlan, st.lists(_call() | cert_call(), min_size=1, max_size=8).map(tuple), st.booleans()),
    min_size=1,
    max_size=6,
)
#: Programs over the certificate tables only, so that their unique indexes meet often.
cert_programs = st.lists(
    st.builds(TxPlan, st.lists(cert_call(), min_size=2, max_size=12).map(tuple), st.booleans()),
    min_size=1,
    max_size=6,
)


def _apply(tx: Any, call: tuple[Any, ...]) -> Any:
    kind, *args = call
    if kind == "update_credential":
        cid, expected, changes = args
        cur = tx.get_credential(cid)
        if cur is None:
            return (
                "absent",
                tx.update_credential(make_credential(cid, version=expected + 1), expected_version=expected),
            )
        new = dataclasses.replace(cur, version=expected + 1, **changes)
        return tx.update_credential(new, expected_version=expected)
    if kind == "rebind_credential":
        first, cid, key_ref, token, stale = args
        inserted = None if first is None else tx.insert_credential(first)
        cur = tx.get_credential(cid)
        expected = (1 if cur is None else cur.version) - stale
        changed = tx.rebind_credential(cid, key_ref=key_ref, pan_token=token, expected_version=expected)
        return (inserted, changed)
    if kind == "update_operation":
        oid, attempts, expected, consumed = args
        cur = tx.get_operation(oid)
        op = cur if cur is not None else make_operation(oid, "c1")
        return tx.update_operation(
            dataclasses.replace(op, attempts=attempts, consumed_at=consumed), expected_attempts=expected
        )
    if kind == "update_activation":
        digest, used, attempts, expected = args
        rec = ActivationRecord(
            code_digest=digest, user_id="u1", created_at=T0, expires_at=T0, used_at=used, attempts=attempts
        )
        return tx.update_activation(rec, expected_attempts=expected)
    if kind == "list_credentials":
        user_id, token, states = args
        return tx.list_credentials(user_id=user_id, pan_token=token, states=states)
    if kind in CERT_CALLS:
        return apply_cert_call(tx, call)
    if kind == "append_audit":
        rec = tx.append_audit(args[0])
        return (rec.seq, rec.at, rec.prev_hash, rec.record_hash, rec.entry)
    if kind == "set_setting":
        tx.set_setting(*args)
        return None
    return getattr(tx, kind)(*args)


class _RollbackError(Exception):
    pass


def run_program(store: Store, program: list[TxPlan]) -> list[Any]:
    """Run ``program`` on ``store``; return every call's result (and the final audit chain)."""
    results: list[Any] = []
    for plan in program:
        try:
            with store.transaction() as tx:
                results.extend(_apply(tx, call) for call in plan.calls)
                if plan.rollback:
                    raise _RollbackError
        except _RollbackError:
            results.append("rolled back")
        except ValidationError as exc:  # a schema constraint (one live credential per card)
            results.append(("refused", str(exc).split("(")[0]))
    with store.transaction() as tx:
        for cid in CIDS:
            results.append(tx.get_credential(cid))
            results.append(tx.list_acceptances(cid))
            results.append(tx.list_open_operations(cid, T0))
        results.append(tx.list_users())
        results.extend(read_cert_tables(tx))
        for token in (*TOKS, "tok-c"):  # the PAN-token index after rebinds
            results.append(tx.list_credentials(pan_token=token))
            results.append(tx.card_floor(token, "01"))
    records = list(store.audit_records())
    assert check_chain(records) == ()
    results.append(records)
    return results


def run_differential(make_store: Callable[[], Iterator[Store]], program: list[TxPlan]) -> None:
    """Assert the store built by ``make_store`` gives the memory store's results for ``program``."""
    expected = run_program(MemoryStore(clock=lambda: T0), program)
    gen = make_store()
    store = next(gen)
    try:
        got = run_program(store, program)
    finally:
        store.close()
        next(gen, None)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"result {i} differs: {g!r} != {e!r}"


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "verifier.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path, clock=lambda: T0)
    yield s
    s.close()


@given(program=programs)
def test_V26_sqlite_matches_memory_reference(
    tmp_path_factory: pytest.TempPathFactory, program: list[TxPlan]
) -> None:
    def make() -> Iterator[Store]:
        path = tmp_path_factory.mktemp("diff") / "v.db"
        yield SqliteStore(path, clock=lambda: T0)

    run_differential(make, program)


@given(program=cert_programs)
def test_V26_sqlite_certificate_tables_match_memory_reference(
    tmp_path_factory: pytest.TempPathFactory, program: list[TxPlan]
) -> None:
    def make() -> Iterator[Store]:
        path = tmp_path_factory.mktemp("diff") / "v.db"
        yield SqliteStore(path, clock=lambda: T0)

    run_differential(make, program)


def test_file_mode_0600_and_wal(store: SqliteStore, db_path: Path) -> None:
    with store.transaction() as tx:
        tx.insert_credential(make_credential("c1"))
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    wal = Path(str(db_path) + "-wal")
    assert wal.exists()
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_existing_world_readable_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    path.touch()
    os.chmod(path, 0o644)
    SqliteStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unopenable_path_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="path"):
        SqliteStore(tmp_path / "no" / "such" / "dir" / "v.db")
    with pytest.raises(ValidationError, match="lock_timeout"):
        SqliteStore(tmp_path / "v.db", lock_timeout=-1)


def test_state_survives_reopen(db_path: Path) -> None:
    """V2 across restarts: the stored last_atc and the ledger are on disk."""
    s = SqliteStore(db_path, clock=lambda: T0)
    with s.transaction() as tx:
        tx.insert_credential(make_credential("c1"))
        cur = tx.lock_credential("c1")
        assert cur is not None
        assert tx.update_credential(dataclasses.replace(cur, last_atc=7, version=2), expected_version=1) == 1
        acc = Acceptance(
            credential_id="c1", atc=7, mode=OperationMode.IDENTIFY, request_id="r1", accepted_at=T0
        )
        assert tx.insert_acceptance(acc) == 1
    s.close()
    s2 = SqliteStore(db_path, migrate=False)
    with s2.transaction() as tx:
        cred = tx.get_credential("c1")
        assert cred is not None
        assert cred.last_atc == 7
        assert cred.version == 2
        # the same ATC can never enter the ledger again
        assert tx.insert_acceptance(dataclasses.replace(acc, request_id="r2")) == 0
    s2.close()


def test_rollback_leaves_nothing(store: SqliteStore) -> None:
    def body() -> None:
        with store.transaction() as tx:
            tx.insert_credential(make_credential("c1"))
            tx.append_audit(AuditEntry(event="verify", outcome="accept"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        body()
    with store.transaction() as tx:
        assert tx.get_credential("c1") is None
    assert list(store.audit_records()) == []


def test_busy_writer_lock_is_temporary_failure(store: SqliteStore, db_path: Path) -> None:
    """Another process-like connection holds the write lock: TemporaryFailure, nothing changes."""
    with store.transaction() as tx:
        tx.insert_credential(make_credential("c1"))
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        t = time.monotonic()
        with pytest.raises(TemporaryFailure), store.transaction(lock_timeout=0.2) as tx:
            tx.set_setting("never", "written")
        assert 0.15 <= time.monotonic() - t < 3
        other.execute("ROLLBACK")
    finally:
        other.close()
    with store.transaction() as tx:
        assert tx.get_setting("never") is None
        assert tx.get_credential("c1") == make_credential("c1")


def test_busy_thread_of_the_same_process_is_temporary_failure(store: SqliteStore) -> None:
    """A thread of this process holds a transaction: another one gives up after lock_timeout."""
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.transaction() as tx:
            tx.set_setting("holder", "1")
            holding.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with pytest.raises(TemporaryFailure), store.transaction(lock_timeout=0.2) as tx:
            tx.set_setting("waiter", "1")
        assert 0.15 <= time.monotonic() - started < 3
    finally:
        release.set()
        t.join()
    with store.transaction() as tx:
        assert tx.get_setting("holder") == "1"
        assert tx.get_setting("waiter") is None


def test_writers_are_serialised_across_threads(store: SqliteStore) -> None:
    """BEGIN IMMEDIATE: read-check-write sequences never interleave (one CAS winner per version)."""
    with store.transaction() as tx:
        tx.insert_credential(make_credential("c1"))
    wins: list[int] = []

    def worker(atc: int) -> None:
        with store.transaction() as tx:
            cur = tx.lock_credential("c1")
            assert cur is not None
            time.sleep(0.001)
            if cur.last_atc < 5:
                new = dataclasses.replace(cur, last_atc=5, version=cur.version + 1)
                assert tx.update_credential(new, expected_version=cur.version) == 1
                acc = Acceptance(
                    credential_id="c1",
                    atc=5,
                    mode=OperationMode.IDENTIFY,
                    request_id=f"r{atc}",
                    accepted_at=T0,
                )
                assert tx.insert_acceptance(acc) == 1
                wins.append(atc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with store.transaction() as tx:
        assert len(tx.list_acceptances("c1")) == 1


def test_audit_is_append_only_in_the_database(store: SqliteStore, db_path: Path) -> None:
    with store.transaction() as tx:
        tx.append_audit(AuditEntry(event="verify", outcome="reject", reason="wrong-code"))
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE cap_audit SET outcome = 'accept'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM cap_audit")
    finally:
        conn.close()


def test_out_of_range_value_is_validation_error_and_rolls_back(store: SqliteStore) -> None:
    def body() -> None:
        with store.transaction() as tx:
            tx.insert_credential(make_credential("c1"))
            tx.insert_credential(make_credential("c2", last_atc=70000))

    with pytest.raises(ValidationError):
        body()
    with store.transaction() as tx:
        assert tx.get_credential("c1") is None


def test_naive_datetime_refused(store: SqliteStore) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"), store.transaction() as tx:
        tx.insert_credential(make_credential("c1", created_at=datetime(2026, 1, 1)))


def test_closed_store_is_temporary_failure(db_path: Path) -> None:
    s = SqliteStore(db_path)
    s.close()
    with pytest.raises(TemporaryFailure), s.transaction():
        pass


def test_schema_must_match_without_migrate(db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    migrate.upgrade(conn, target=1)
    conn.close()
    with pytest.raises(ConfigError, match="version 1"):
        SqliteStore(db_path, migrate=False)
    SqliteStore(db_path).close()  # migrates to head


# -- --db URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "target"),
    [
        ("/var/lib/capsim/v.db", DbKind.SQLITE, "/var/lib/capsim/v.db"),
        ("v.db", DbKind.SQLITE, "v.db"),
        ("sqlite:///tmp/a%20b.db", DbKind.SQLITE, "/tmp/a b.db"),
        ("sqlite:rel/v.db", DbKind.SQLITE, "rel/v.db"),
        ("SQLITE:///x.db", DbKind.SQLITE, "/x.db"),
        ("postgresql://bank@db/capsim", DbKind.POSTGRES, "postgresql://bank@db/capsim"),
        ("postgres://bank@/capsim?host=/run/pg", DbKind.POSTGRES, "postgres://bank@/capsim?host=/run/pg"),
        ("memory:", DbKind.MEMORY, ""),
        ("C:\\data\\v.db", DbKind.SQLITE, "C:\\data\\v.db"),
    ],
)
def test_parse_db_url(url: str, kind: DbKind, target: str) -> None:
    parsed = parse_db_url(url)
    assert parsed.kind is kind
    assert parsed.target == target


@pytest.mark.parametrize("url", ["", "mysql://x/y", "sqlite://host/x.db", "sqlite:", "a\x00b"])
def test_parse_db_url_rejects(url: str) -> None:
    with pytest.raises(ValidationError, match="db url"):
        parse_db_url(url)


def test_redaction_hides_passwords() -> None:
    assert redact_db_url("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
    assert "pw" not in redact_db_url("postgresql://h/d?password=pw&sslmode=require")
    assert "pw" not in repr(parse_db_url("postgresql://u:pw@h/d"))


def test_open_store_sqlite_forms(tmp_path: Path) -> None:
    for url in (str(tmp_path / "a.db"), f"sqlite://{tmp_path}/b.db", tmp_path / "c.db"):
        s = open_store(url)
        assert isinstance(s, SqliteStore)
        with s.transaction() as tx:
            tx.set_setting("k", "v")
        s.close()
    assert (tmp_path / "b.db").exists()
    assert isinstance(open_store("memory:"), MemoryStore)
