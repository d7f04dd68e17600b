"""Audit, data protection and key custody (verifier.md V37–V40)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import pickle
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capsim.errors import InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier import migrate
from capsim.verifier.audit import AuditEntry, AuditRecord, AuditTip, check_chain, seal
from capsim.verifier.memory import MemoryStore
from capsim.verifier.postgres import PostgresStore
from capsim.verifier.provider import CardKeys, CryptogramProvider, SecretKey, SoftwareProvider
from capsim.verifier.service import Verifier
from capsim.verifier.sqlite import SqliteStore
from capsim.verifier.store import Store
from tests.verifier.conftest import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    PAN,
    Clock,
    StoreFactory,
    make_bench,
    make_provider,
)
from tests.verifier.helpers import MODES, new_op, run_mode
from tests.verifier.pgcluster import new_test_database


def _audit(b: Any) -> list[AuditRecord]:
    return list(b.store.audit_records())


# -- V37 ----------------------------------------------------------------------------------------------


def test_v37_every_verify_writes_exactly_one_record_with_its_fields(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "sign")
    r = run_mode(b, op)
    n = len(_audit(b))
    acc = b.verifier.verify(op.operation_id, r.code, request_id="audit-1")
    records = _audit(b)
    assert len(records) == n + 1
    e = records[-1].entry
    assert e.event == "verify"
    assert e.outcome == "accept"
    assert e.request_id == "audit-1"
    assert e.credential_id == b.cid
    assert e.operation_id == op.operation_id
    assert e.atc == acc.atc
    assert e.mode == "sign"
    assert e.txn_digest == op.txn_digest
    assert e.node == "capsim"
    assert e.duration_us >= 0
    assert records[-1].at == clock.now
    for code, rid in (("00000000", "audit-2"), (r.code, "audit-3"), ("00000000", "audit-2")):
        n = len(_audit(b))
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, code, request_id=rid)
        assert len(_audit(b)) == n + 1
        assert _audit(b)[-1].entry.outcome == "reject"


def test_v37_record_is_in_the_same_transaction_as_the_state_change(
    store_factory: StoreFactory, clock: Clock
) -> None:
    """A transaction that rolls back leaves neither the state change nor its record."""
    b = make_bench(store_factory(clock), clock)
    n = len(_audit(b))
    cred = b.refresh()

    def crash() -> None:
        with b.store.transaction() as tx:
            tx.append_audit(AuditEntry(event="verify", outcome="accept"))
            tx.update_credential(
                dataclasses.replace(cred, last_atc=99, version=cred.version + 1),
                expected_version=cred.version,
            )
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash()
    assert len(_audit(b)) == n
    assert b.refresh().last_atc == cred.last_atc


# -- V38 ----------------------------------------------------------------------------------------------


def test_v38_no_code_pan_key_or_pin_in_any_output(
    store_factory: StoreFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = make_bench(store_factory(clock), clock)
    submitted: list[str] = [b.first.code]
    texts: list[str] = []
    for mode in MODES:
        op = new_op(b, mode)
        r = run_mode(b, op)
        submitted.append(r.code)
        try:
            b.verifier.verify(
                b.cid if mode == "identify" else op.operation_id,
                f"{(int(r.code) + 1) % 10**8:08d}",
                request_id=b.rid(),
            )
        except InvalidCode as exc:
            texts += [str(exc), repr(exc), repr(exc.args)]
        submitted.append(f"{(int(r.code) + 1) % 10**8:08d}")
        b.verifier.verify(op.operation_id, r.code, request_id=b.rid())
    wrong = "13572468"
    submitted.append(wrong)
    for target in (b.cid, "cr-unknown", "op-unknown"):
        with pytest.raises(InvalidCode) as info:
            b.verifier.verify(target, wrong, request_id=b.rid())
        texts += [str(info.value), repr(info.value)]
    with pytest.raises(ValidationError) as bad:
        b.verifier.verify(b.cid, "1234567x", request_id=b.rid())
    texts.append(str(bad.value))
    script = b.verifier.build_pin_script(b.cid, arqc=bytes(8), atc=5, new_pin="864297531246")
    assert script
    texts += [rec.message for rec in caplog.records]
    texts += [str(r) for r in _audit(b)]
    texts += [repr(b.refresh()), repr(b.verifier), repr(b.provider), repr(b.store)]
    with b.store.transaction() as tx:
        texts += [repr(a) for a in tx.list_acceptances(b.cid)]
    from capsim.verifier.audit import canonical_bytes

    texts += [canonical_bytes(r.entry, seq=r.seq, at=r.at).decode() for r in _audit(b)]
    blob = "\n".join(texts)
    for secret in [*submitted, PAN, IMK_AC.hex(), IMK_AC.hex().upper(), "864297531246"]:
        assert secret not in blob, secret


# -- V39 ----------------------------------------------------------------------------------------------


def test_v39_checker_flags_deleted_reordered_and_edited_records(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    for _ in range(3):
        b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    records = _audit(b)
    assert len(records) >= 6
    assert check_chain(records) == ()
    assert b.verifier.check_audit() == ()
    deleted = records[:2] + records[3:]
    assert {p.kind for p in check_chain(deleted)} >= {"gap", "broken-link"}
    swapped = [*records[:2], records[3], records[2], *records[4:]]
    assert {p.kind for p in check_chain(swapped)} >= {"order", "broken-link"}
    edited_entry = dataclasses.replace(records[2].entry, outcome="accept", reason="")
    edited = [*records[:2], dataclasses.replace(records[2], entry=edited_entry), *records[3:]]
    assert [(p.seq, p.kind) for p in check_chain(edited)] == [(records[2].seq, "edited")]
    resealed = seal(edited_entry, seq=records[2].seq, at=records[2].at, prev_hash=records[2].prev_hash)
    forged = [*records[:2], resealed, *records[3:]]
    assert [(p.seq, p.kind) for p in check_chain(forged)] == [(records[3].seq, "broken-link")]
    truncated_tail = records[:-1]
    assert check_chain(truncated_tail) == ()  # a cut tail needs the head hash kept elsewhere


# -- V40 ----------------------------------------------------------------------------------------------


def test_v40_keys_never_in_repr_str_exceptions_or_pickles() -> None:
    key = SecretKey(IMK_AC)
    for text in (repr(key), str(key), f"{key}"):
        assert IMK_AC.hex() not in text.lower()
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            attempt(key)
    provider = SoftwareProvider()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    with pytest.raises(TypeError):
        pickle.dumps(provider)
    for text in (repr(provider), str(provider)):
        assert IMK_AC.hex().upper() not in text.upper()
    with pytest.raises(Exception) as info:
        provider.add_issuer_keys("bank", imk_ac=IMK_AC)
    assert IMK_AC.hex() not in str(info.value).lower()
    with pytest.raises(ValidationError) as info2:
        provider.ac_function("sw1:bank:auto:AAAA", cvn=10)
    assert IMK_AC.hex() not in str(info2.value).lower()
    keys = provider.register_card(issuer_key_id="bank", pan=PAN)
    assert PAN not in keys.key_ref
    assert PAN not in keys.pan_token


class MockHsm:
    """A stand-in HSM: keys live in slots inside it; callers get slot handles only."""

    def __init__(self) -> None:
        self._inner = SoftwareProvider(cache_size=0)
        self.commands = 0

    def load_issuer_key(self, slot: str, imk_ac: bytes, imk_smi: bytes, imk_smc: bytes) -> None:
        self._inner.add_issuer_keys(slot, imk_ac=imk_ac, imk_smi=imk_smi, imk_smc=imk_smc)

    def generate_seal_key(self, slot: str) -> str:
        """A token key generated inside the HSM: callers only ever see its slot name."""
        self._inner.set_audit_seal_key(slot, os.urandom(32))
        return slot

    def command(self, name: str, **kwargs: Any) -> Any:
        self.commands += 1
        return getattr(self._inner, name)(**kwargs)


class HsmProvider:
    """A :class:`CryptogramProvider` adapter over the mock HSM: every call is an HSM command."""

    def __init__(self, hsm: MockHsm) -> None:
        self._hsm = hsm

    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        return self._hsm.command(
            "register_card", issuer_key_id=issuer_key_id, pan=pan, psn=psn, derivation=derivation
        )

    def ac_function(self, key_ref: str, *, cvn: int, method: str | None = None, tree: Any = None) -> Any:
        def fn(cdol: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes) -> bytes:
            return self.generate_ac(
                key_ref, cvn=cvn, cdol1_data=cdol, aip=aip, atc=atc, iad=iad, un=un, method=method, tree=tree
            )

        return fn

    def generate_ac(self, key_ref: str, **kwargs: Any) -> bytes:
        result: bytes = self._hsm.command("generate_ac", key_ref=key_ref, **kwargs)
        return result

    def build_pin_change(self, key_ref: str, **kwargs: Any) -> bytes:
        result: bytes = self._hsm.command("build_pin_change", key_ref=key_ref, **kwargs)
        return result

    def dummy_key_ref(self) -> str:
        result: str = self._hsm.command("dummy_key_ref")
        return result

    seal_slot: str | None = None  # the handle of the HSM's seal key (known without an HSM call)

    def audit_seal_key_id(self) -> str | None:
        return self.seal_slot

    def audit_seal(self, message: bytes) -> bytes:
        result: bytes = self._hsm.command("audit_seal", message=message)
        return result


def test_v40_hsm_provider_passes_the_suite_against_a_mock(store_factory: StoreFactory, clock: Clock) -> None:
    hsm = MockHsm()
    hsm.load_issuer_key("bank", IMK_AC, IMK_SMI, IMK_SMC)
    provider = HsmProvider(hsm)
    provider.seal_slot = hsm.generate_seal_key("audit-slot")
    assert isinstance(provider, CryptogramProvider)
    b = make_bench(store_factory(clock), clock, provider=provider)  # type: ignore[arg-type]
    # the HSM seals the audit records with its token key (by reference)
    sealed = _audit(b)
    assert sealed
    assert all(r.seal_key_id == "audit-slot" and len(r.seal) == 32 for r in sealed)
    assert check_chain(sealed, sealer=provider, sealed_from=1) == ()
    for mode in MODES:
        op = new_op(b, mode)
        r = run_mode(b, op)
        with pytest.raises(InvalidCode):
            b.verifier.verify(op.operation_id, f"{(int(r.code) + 3) % 10**8:08d}", request_id=b.rid())
        assert b.verifier.verify(op.operation_id, r.code, request_id=b.rid()).atc == r.atc
    with pytest.raises(InvalidCode):
        b.verifier.verify("cr-nobody", "12345678", request_id=b.rid())
    assert hsm.commands > 0
    assert "bank" not in repr(provider) or IMK_AC.hex() not in repr(provider)


def test_v40_provider_outage_is_temporary(store_factory: StoreFactory, clock: Clock) -> None:
    hsm = MockHsm()
    hsm.load_issuer_key("bank", IMK_AC, IMK_SMI, IMK_SMC)
    provider = HsmProvider(hsm)
    b = make_bench(store_factory(clock), clock, provider=provider)  # type: ignore[arg-type]
    r = b.identify()

    def down(name: str, **kwargs: Any) -> Any:
        raise ConnectionResetError("hsm link down")

    hsm.command = down  # type: ignore[method-assign]
    with pytest.raises(TemporaryFailure):
        b.verifier.verify(b.cid, r.code, request_id="hsm")
    assert b.refresh().fail_count == 0
    assert Verifier  # the public service is what callers use


def test_v37_escalating_failure_still_writes_one_record(store_factory: StoreFactory, clock: Clock) -> None:
    from capsim.verifier.policy import VerifierPolicy

    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(escalate_after=1))
    for i in range(5):
        n = len(_audit(b))
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, f"{i:08d}", request_id=b.rid())
        assert len(_audit(b)) == n + 1
    assert _audit(b)[-1].entry.reason == "wrong-code-blocked"


# -- malformed rows, keyed seals and exported tips (SQLite and PostgreSQL, raw SQL edits) -------------


@dataclass
class RawDb:
    """A SQL store plus a raw autocommit connection to the same database (to play the attacker)."""

    backend: str
    store: Store
    run: Callable[[str, tuple[Any, ...]], None]

    def sql(self, sql: str, *params: Any) -> None:
        self.run(sql if self.backend == "sqlite" else sql.replace("?", "%s"), params)

    def drop_append_only_triggers(self) -> None:
        if self.backend == "sqlite":
            self.sql("DROP TRIGGER cap_audit_no_update")
            self.sql("DROP TRIGGER cap_audit_no_delete")
        else:
            self.sql("DROP TRIGGER cap_audit_no_update ON cap_audit")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def raw_db(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[RawDb]:
    if request.param == "sqlite":
        store: Store = SqliteStore(tmp_path / "v.db", clock=clock)
        conn = sqlite3.connect(tmp_path / "v.db", isolation_level=None)
        yield RawDb("sqlite", store, lambda sql, p: conn.execute(sql, p) and None)
        conn.close()
    else:
        import psycopg

        dsn = new_test_database(request)
        store = PostgresStore(dsn, clock=clock, pool_size=2)
        pconn = psycopg.connect(dsn, autocommit=True)
        yield RawDb("postgres", store, lambda sql, p: pconn.execute(sql.encode(), p or None) and None)
        pconn.close()
    store.close()


def sealing_provider() -> Any:
    provider = make_provider()
    provider.set_audit_seal_key("aud-test", os.urandom(32))
    return provider


# Edits no writer produces. PostgreSQL's typed columns refuse the SQLite values themselves, so
# there the same three edits are: a JSON value that is not an object, an infinite timestamp
# (which the driver cannot load) and the event column turned into bytes.
_MALFORMED_EDITS = {
    "sqlite": {
        "details": ["UPDATE cap_audit SET details = 'not json' WHERE seq = ?"],
        "at": ["UPDATE cap_audit SET at = 'garbage' WHERE seq = ?"],
        "event": ["UPDATE cap_audit SET event = X'00FF' WHERE seq = ?"],
    },
    "postgres": {
        "details": ["UPDATE cap_audit SET details = '\"not json\"'::jsonb WHERE seq = ?"],
        "at": ["UPDATE cap_audit SET at = 'infinity' WHERE seq = ?"],
        "event": [
            "ALTER TABLE cap_audit ALTER COLUMN event TYPE bytea USING convert_to(event, 'UTF8')",
            "UPDATE cap_audit SET event = '\\x00ff'::bytea WHERE seq = ?",
        ],
    },
}


@pytest.mark.parametrize("column", ["details", "at", "event"])
def test_v39_a_row_edited_to_an_undecodable_value_is_reported_not_raised(
    raw_db: RawDb, clock: Clock, column: str
) -> None:
    b = make_bench(raw_db.store, clock)
    b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    records = _audit(b)
    target = records[2].seq
    raw_db.drop_append_only_triggers()
    for sql in _MALFORMED_EDITS[raw_db.backend][column]:
        raw_db.sql(sql, *((target,) if "?" in sql else ()))
    # (on PostgreSQL the column's new type makes every row's event bytes)
    edited = [r.seq for r in records] if (raw_db.backend, column) == ("postgres", "event") else [target]
    read = list(raw_db.store.audit_records())  # never raises on an edited row
    assert [r.seq for r in read] == [r.seq for r in records]
    assert [r.seq for r in read if r.malformed] == edited
    assert all(column in r.malformed or "cannot be loaded" in r.malformed for r in read if r.malformed)
    problems = b.verifier.check_audit()  # returns problems, never raises
    assert [(p.seq, p.kind) for p in problems] == [(seq, "malformed") for seq in edited]


def _rehash_from(raw_db: RawDb, records: list[AuditRecord], start: int) -> None:
    """The attacker's rewrite: edit record ``start`` and re-hash it and every later one."""
    prev = records[start - 1].prev_hash
    for rec in records[start - 1 :]:
        entry = rec.entry
        if rec.seq == start:
            entry = dataclasses.replace(entry, outcome="reject", reason="wrong-code")
        new = seal(entry, seq=rec.seq, at=rec.at, prev_hash=prev)
        raw_db.sql(
            "UPDATE cap_audit SET outcome = ?, reason = ?, prev_hash = ?, record_hash = ? WHERE seq = ?",
            entry.outcome,
            entry.reason,
            new.prev_hash,
            new.record_hash,
            rec.seq,
        )
        prev = new.record_hash
    if raw_db.backend == "postgres":
        raw_db.sql("UPDATE cap_audit_head SET record_hash = ? WHERE id = 1", prev)


def test_v39_sealed_chain_reports_an_edit_rehashed_to_the_end(raw_db: RawDb, clock: Clock) -> None:
    provider = sealing_provider()
    b = make_bench(raw_db.store, clock, provider=provider)
    for _ in range(2):
        b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    records = _audit(b)
    assert all(r.seal_key_id == "aud-test" and r.seal for r in records)
    assert check_chain(records, sealer=provider, sealed_from=1) == ()
    accepted = [r.seq for r in records if r.entry.outcome == "accept"]
    start = accepted[0]
    raw_db.drop_append_only_triggers()
    _rehash_from(raw_db, records, start)
    rewritten = list(raw_db.store.audit_records())
    assert check_chain(rewritten) == ()  # the chain alone cannot tell
    problems = check_chain(rewritten, sealer=provider, sealed_from=1)
    assert [(p.seq, p.kind) for p in problems] == [(r.seq, "bad-seal") for r in records[start - 1 :]]


def test_v39_a_deleted_tail_is_reported_against_an_exported_tip(raw_db: RawDb, clock: Clock) -> None:
    provider = sealing_provider()
    b = make_bench(raw_db.store, clock, provider=provider)
    b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    records = _audit(b)
    tip = AuditTip.from_json(AuditTip.of(records[-1]).to_json())
    assert check_chain(records, sealer=provider, sealed_from=1, tip=tip) == ()
    raw_db.drop_append_only_triggers()
    raw_db.sql("DELETE FROM cap_audit WHERE seq >= ?", records[-2].seq)
    cut = list(raw_db.store.audit_records())
    assert check_chain(cut, sealer=provider, sealed_from=1) == ()  # a valid, sealed, shorter chain
    problems = check_chain(cut, sealer=provider, sealed_from=1, tip=tip)
    assert [(p.seq, p.kind) for p in problems] == [(tip.seq, "truncated")]


def test_v39_a_tip_not_sealed_by_this_key_is_reported(memory_factory: StoreFactory, clock: Clock) -> None:
    provider = sealing_provider()
    b = make_bench(memory_factory(clock), clock, provider=provider)
    records = _audit(b)
    forged = AuditTip(
        seq=records[-1].seq, record_hash=records[-1].record_hash, seal=bytes(32), seal_key_id="aud-test"
    )
    problems = check_chain(records, sealer=provider, sealed_from=1, tip=forged)
    assert [(p.seq, p.kind) for p in problems] == [(forged.seq, "rewritten"), (forged.seq, "bad-tip")]


def test_v39_memory_store_seals_and_the_checker_reports_every_kind(
    memory_factory: StoreFactory, clock: Clock
) -> None:
    provider = sealing_provider()
    store = memory_factory(clock)
    assert isinstance(store, MemoryStore)
    b = make_bench(store, clock, provider=provider)
    b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    records = _audit(b)
    n = len(records)
    tip = AuditTip.of(records[-1])
    assert check_chain(records, sealer=provider, sealed_from=1, tip=tip) == ()
    # re-hash an edited record and every later one
    k = n - 2
    prev = records[k - 1].prev_hash
    forged: list[AuditRecord] = list(records[: k - 1])
    for rec in records[k - 1 :]:
        entry = dataclasses.replace(rec.entry, reason="forged") if rec.seq == k else rec.entry
        new = seal(entry, seq=rec.seq, at=rec.at, prev_hash=prev)
        forged.append(dataclasses.replace(new, seal=rec.seal, seal_key_id=rec.seal_key_id))
        prev = new.record_hash
    store.audit[:] = forged
    assert check_chain(b.store.audit_records()) == ()
    assert [
        (p.seq, p.kind) for p in check_chain(b.store.audit_records(), sealer=provider, sealed_from=1)
    ] == [(s, "bad-seal") for s in range(k, n + 1)]
    # the chain then rewritten (a new tail in place of the anchored record)
    assert (tip.seq, "rewritten") in [
        (p.seq, p.kind) for p in check_chain(b.store.audit_records(), sealer=provider, sealed_from=1, tip=tip)
    ]
    # a record written without the key after sealing started
    store.audit[:] = list(records)
    unsealed = Verifier(store, make_provider())
    unsealed.add_user("mallory")
    problems = check_chain(b.store.audit_records(), sealer=provider, sealed_from=1)
    assert [(p.seq, p.kind) for p in problems] == [(n + 1, "unsealed")]
    # records before the sealing start are checked by the chain alone
    assert check_chain(b.store.audit_records(), sealer=provider, sealed_from=n + 2) == ()


def _write_unsealed_v3_database(path: Path, clock: Clock) -> list[AuditRecord]:
    """A database at schema version 3 with a chain as the releases before sealing wrote it."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrate.upgrade(conn, target=3)
    records: list[AuditRecord] = []
    prev = bytes(32)
    for i, event in enumerate(("policy", "user", "enroll")):
        rec = seal(AuditEntry(event=event, outcome="ok", node="old"), seq=i + 1, at=clock.now, prev_hash=prev)
        conn.execute(
            "INSERT INTO cap_audit (seq, at, event, outcome, reason, txn_digest, node, duration_us, details,"
            " prev_hash, record_hash) VALUES (?, ?, ?, ?, '', X'', 'old', 0, '{}', ?, ?)",
            (
                rec.seq,
                clock.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                event,
                "ok",
                rec.prev_hash,
                rec.record_hash,
            ),
        )
        records.append(rec)
        prev = rec.record_hash
    conn.close()
    return records


def test_v39_upgraded_database_checks_clean_and_is_sealed_from_then_on(tmp_path: Path, clock: Clock) -> None:
    old = _write_unsealed_v3_database(tmp_path / "v.db", clock)
    store = SqliteStore(tmp_path / "v.db", clock=clock)  # migrates to head
    try:
        assert check_chain(store.audit_records()) == ()
        provider = sealing_provider()
        sealed_from = len(old) + 1
        b = make_bench(store, clock, provider=provider)
        records = list(store.audit_records())
        assert [r.seal for r in records[: len(old)]] == [b""] * len(old)
        assert all(r.seal for r in records[len(old) :])
        assert check_chain(records, sealer=provider, sealed_from=sealed_from) == ()
        assert [p.kind for p in check_chain(records, sealer=provider, sealed_from=1)] == ["unsealed"] * len(
            old
        )
        assert b.verifier.check_audit() == ()
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_seal_rides_with_commit_no_extra_statement(
    request: pytest.FixtureRequest, clock: Clock
) -> None:
    """Sealing sends no statement of its own: the seal insert is pipelined with COMMIT."""
    dsn = new_test_database(request)
    counts: dict[str, int] = {}
    store = PostgresStore(dsn, clock=clock, pool_size=2)
    try:
        runs = (("plain", make_provider(), PAN), ("sealed", sealing_provider(), "5413339000001521"))
        for name, provider, pan in runs:
            b = make_bench(store, clock, provider=provider, user=f"u-{name}", pan=pan)
            r = b.identify()
            sent: list[str] = []

            def hook(when: str, sql: str, conn: Any, sent: list[str] = sent) -> None:
                if when == "before":
                    sent.append(sql)

            store.fault_hook = hook
            b.verifier.verify(b.cid, r.code, request_id=f"rid-{name}")
            store.fault_hook = None
            counts[name] = len(sent)
            last = list(store.audit_records())[-1]
            assert bool(last.seal) == (name == "sealed")
        assert counts["sealed"] == counts["plain"]
    finally:
        store.close()


class _FixedSealer:
    def audit_seal_key_id(self) -> str:
        return "aud-fixed"

    def audit_seal(self, message: bytes) -> bytes:
        return bytes(32)


@pytest.mark.postgres
def test_postgres_a_failed_seal_insert_rolls_the_transaction_back(request: pytest.FixtureRequest) -> None:
    """The seal insert pipelined with COMMIT fails: COMMIT is skipped, nothing is kept, and the
    pooled connection is usable again."""
    import psycopg

    dsn = new_test_database(request)
    store = PostgresStore(dsn, pool_size=1)
    try:
        with store.transaction(sealer=_FixedSealer()) as tx:
            tx.append_audit(AuditEntry(event="first", outcome="ok"))
        with psycopg.connect(dsn, autocommit=True) as conn:  # a seal row squatting on the next seq
            conn.execute("INSERT INTO cap_audit_seal (seq, key_id, seal) VALUES (2, 'x', %s)", (bytes(32),))

        def second() -> None:
            with store.transaction(sealer=_FixedSealer()) as tx:
                tx.append_audit(AuditEntry(event="second", outcome="ok"))
                tx.set_setting("written", "yes")

        with pytest.raises(ValidationError):
            second()
        with store.transaction() as tx:
            assert tx.get_setting("written") is None
        records = list(store.audit_records())
        assert [(r.seq, r.seal_key_id) for r in records] == [(1, "aud-fixed")]
    finally:
        store.close()
