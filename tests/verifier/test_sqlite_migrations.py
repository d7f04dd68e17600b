"""V27: versioned migrations, tested from every released schema to head (SQLite here).

:class:`MigrationContract` holds the engine-independent tests; each engine subclasses it
with a ``harness`` fixture (the PostgreSQL one is in ``test_postgres_migrations.py``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from capsim.errors import ConfigError, ValidationError, VerifierError
from capsim.verifier import migrate
from capsim.verifier.audit import GENESIS_HASH, AuditEntry, check_chain, seal
from capsim.verifier.migrate import Migration
from capsim.verifier.sqlite import SqliteStore
from capsim.verifier.store import Store
from tests.verifier.test_sqlite_store import PROFILE, make_credential

SEED_TIME = "2026-03-01T12:00:00.000000Z"
SEED_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


class Harness(Protocol):
    engine: str

    def connect(self) -> Any: ...
    def execute(self, conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
    def catalog(self, conn: Any) -> list[tuple[Any, ...]]: ...
    def open_store(self, *, migrate: bool) -> Store: ...
    def fresh(self) -> None: ...


def _seed(h: Harness, conn: Any, version: int) -> None:
    """Rows that a deployment at ``version`` could hold; they must survive every later upgrade."""
    if version >= 1:
        h.execute(
            conn,
            "INSERT INTO cap_credential (credential_id, user_id, customer_id, state, key_ref, pan_token,"
            " pan_last4, psn, profile, created_at, last_atc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "c-seed", "u1", "k1", "active", "key-c-seed", "tok-a", "0017", "01",
                json.dumps(PROFILE.to_dict()), SEED_TIME, 41,
            ),
        )  # fmt: skip
        h.execute(
            conn,
            "INSERT INTO cap_acceptance (credential_id, atc, mode, request_id, accepted_at)"
            " VALUES (?, ?, ?, ?, ?)",
            ("c-seed", 41, "identify", "r-seed", SEED_TIME),
        )
        # a two-record audit chain, which the upgraded store must continue
        prev = GENESIS_HASH
        for seq in (1, 2):
            rec = seal(AuditEntry(event="verify", outcome="accept", request_id=f"seed-{seq}"), seq=seq,
                       at=SEED_AT, prev_hash=prev)  # fmt: skip
            h.execute(
                conn,
                "INSERT INTO cap_audit (seq, at, event, outcome, request_id, prev_hash, record_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, SEED_TIME, "verify", "accept", f"seed-{seq}", rec.prev_hash, rec.record_hash),
            )
            prev = rec.record_hash
        if h.engine == "postgres":
            h.execute(conn, "UPDATE cap_audit_head SET seq = ?, record_hash = ? WHERE id = 1", (2, prev))
    if version >= 2:
        h.execute(
            conn,
            "INSERT INTO cap_user (user_id, customer_id, role, created_at) VALUES (?, ?, ?, ?)",
            ("u1", "k1", "admin", SEED_TIME),
        )


def _check_seed(store: Store, version: int) -> None:
    t = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with store.transaction() as tx:
        if version >= 1:
            assert tx.get_credential("c-seed") == make_credential("c-seed", created_at=t, last_atc=41)
            assert [a.atc for a in tx.list_acceptances("c-seed")] == [41]
            tx.append_audit(AuditEntry(event="verify", outcome="reject", request_id="after-upgrade"))
        if version >= 2:
            user = tx.get_user("u1")
            assert user is not None
            assert user.created_at == t
    records = list(store.audit_records())
    assert check_chain(records) == ()
    if version >= 1:
        assert [r.entry.request_id for r in records] == ["seed-1", "seed-2", "after-upgrade"]


class MigrationContract:
    """V27 for one engine (subclasses provide the ``harness`` fixture)."""

    def test_V27_shipped_migrations_numbered_upwards(self, harness: Harness) -> None:
        ms = migrate.load_migrations(harness.engine)
        versions = [m.version for m in ms]
        assert versions[0] == 1
        assert versions == sorted(set(versions))  # increasing; a number reserved elsewhere may be skipped
        assert migrate.head_version(harness.engine) == versions[-1] >= 2
        # both engines ship the same releases
        other = "postgres" if harness.engine == "sqlite" else "sqlite"
        assert [m.name for m in ms] == [m.name for m in migrate.load_migrations(other)]

    def test_V27_upgrade_from_every_released_schema(self, harness: Harness) -> None:
        head = migrate.head_version(harness.engine)
        versions = [m.version for m in migrate.load_migrations(harness.engine)]
        ref = harness.connect()
        assert migrate.upgrade(ref) == tuple(versions)
        expected_catalog = harness.catalog(ref)
        ref.close()
        for start in [0, *versions]:
            harness.fresh()
            conn = harness.connect()
            assert migrate.upgrade(conn, target=start) == tuple(v for v in versions if v <= start)
            assert migrate.current_version(conn) == start
            _seed(harness, conn, start)
            assert migrate.upgrade(conn) == tuple(v for v in versions if v > start), f"from {start}"
            assert migrate.current_version(conn) == head
            assert harness.catalog(conn) == expected_catalog, f"schema after upgrading from {start}"
            conn.close()
            store = harness.open_store(migrate=False)
            try:
                _check_seed(store, start)
            finally:
                store.close()

    def test_V27_decision_migration_moves_state_into_columns_and_closes_the_holes(
        self, harness: Harness
    ) -> None:
        """0004: the issuer-script setting becomes a column, old request ids bind to nothing, and
        the newer of two live credentials of one card (the enrolment race) is revoked."""
        conn = harness.connect()
        migrate.upgrade(conn, target=3)
        _seed(harness, conn, 3)
        harness.execute(
            conn,
            "INSERT INTO cap_credential (credential_id, user_id, customer_id, state, key_ref, pan_token,"
            " pan_last4, psn, profile, created_at, last_atc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "c-twin", "u2", "k2", "active", "key-c-twin", "tok-a", "0017", "01",
                json.dumps(PROFILE.to_dict()), "2026-03-02T12:00:00.000000Z", -1,
            ),
        )  # fmt: skip
        harness.execute(
            conn, "INSERT INTO cap_setting (name, value) VALUES (?, ?)", ("issuer-script:c-seed", "40")
        )
        harness.execute(
            conn,
            "INSERT INTO cap_request (request_id, outcome, recorded_at) VALUES (?, ?, ?)",
            ("r-old", "reject", SEED_TIME),
        )
        assert migrate.upgrade(conn)[0] == 4
        conn.close()
        store = harness.open_store(migrate=False)
        try:
            with store.transaction() as tx:
                seed = tx.get_credential("c-seed")
                twin = tx.get_credential("c-twin")
                old = tx.get_request("r-old")
                assert tx.get_setting("issuer-script:c-seed") is None
                assert tx.card_floor("tok-a", "01") == 41
                # the unique index: a third live credential of the card is refused
                assert tx.insert_credential(make_credential("c-third", psn="01")) == 0
            assert seed is not None
            assert seed.script_atc == 40
            assert seed.state.value == "active"
            assert twin is not None
            assert twin.state.value == "revoked"
            assert old is not None
            assert old.method == ""
            assert not old.binds(method="verify", target="cr-x", fingerprint=b"")
        finally:
            store.close()

    def test_V27_repeated_upgrade_is_a_noop(self, harness: Harness) -> None:
        conn = harness.connect()
        migrate.upgrade(conn)
        before = harness.catalog(conn)
        stamps = harness.execute(conn, f"SELECT version, name, applied_at FROM {migrate.VERSION_TABLE}")
        for _ in range(3):
            assert migrate.upgrade(conn) == ()
        assert harness.catalog(conn) == before
        assert (
            harness.execute(conn, f"SELECT version, name, applied_at FROM {migrate.VERSION_TABLE}") == stamps
        )
        conn.close()

    def test_V27_failed_migration_leaves_stamp_unchanged(self, harness: Harness) -> None:
        shipped = migrate.load_migrations(harness.engine)
        head = shipped[-1].version
        broken = Migration(
            version=head + 1,
            name="broken",
            sql="CREATE TABLE cap_half (x INTEGER);\nINSERT INTO cap_half VALUES (1);\n"
            "INSERT INTO cap_no_such_table VALUES (1);\n",
        )
        conn = harness.connect()
        migrate.upgrade(conn)
        before = harness.catalog(conn)
        with pytest.raises(VerifierError, match=f"{head + 1:04d}_broken failed.*version {head}"):
            migrate.upgrade(conn, migrations=(*shipped, broken))
        assert migrate.current_version(conn) == head
        assert harness.catalog(conn) == before  # cap_half was rolled back with it
        conn.close()

    def test_V27_failure_midway_keeps_earlier_migrations(self, harness: Harness) -> None:
        shipped = migrate.load_migrations(harness.engine)
        broken2 = Migration(
            version=2, name="enrolment", sql=shipped[1].sql + "\nSELECT * FROM cap_missing;\n"
        )
        conn = harness.connect()
        with pytest.raises(VerifierError, match="0002_enrolment failed"):
            migrate.upgrade(conn, migrations=(shipped[0], broken2, *shipped[2:]))
        assert migrate.current_version(conn) == 1
        names = {row[0] for row in harness.catalog(conn)}
        assert "cap_credential" in names
        assert "cap_user" not in names
        # the real migration then applies cleanly
        assert migrate.upgrade(conn) == tuple(m.version for m in shipped[1:])
        conn.close()

    def test_V27_a_skipped_number_shipped_later_is_applied(self, harness: Harness) -> None:
        """Numbers may be skipped (reserved by another release); when that release ships, its
        migration still runs on a database already past it."""
        shipped = migrate.load_migrations(harness.engine)
        head = shipped[-1].version
        late = Migration(version=head + 1, name="late", sql="CREATE TABLE cap_late (x INTEGER);\n")
        after = Migration(version=head + 2, name="after", sql="CREATE TABLE cap_after (x INTEGER);\n")
        conn = harness.connect()
        assert migrate.upgrade(conn, migrations=(*shipped, after))[-1] == head + 2
        assert migrate.upgrade(conn, migrations=(*shipped, late, after)) == (head + 1,)
        assert migrate.current_version(conn) == head + 2
        assert {"cap_late", "cap_after"} <= {str(row[0]) for row in harness.catalog(conn)}
        conn.close()

    def test_V27_newer_schema_is_refused(self, harness: Harness) -> None:
        conn = harness.connect()
        migrate.upgrade(conn)
        head = migrate.head_version(harness.engine)
        harness.execute(
            conn, f"INSERT INTO {migrate.VERSION_TABLE} (version, name) VALUES (?, ?)", (head + 1, "future")
        )
        with pytest.raises(ConfigError, match=f"version {head + 1}, newer"):
            migrate.upgrade(conn)
        conn.close()
        with pytest.raises(ConfigError):
            harness.open_store(migrate=True)

    def test_V27_bad_target_is_refused(self, harness: Harness) -> None:
        conn = harness.connect()
        head = migrate.head_version(harness.engine)
        for target in (-1, head + 1, True, "1"):
            with pytest.raises(ValidationError, match="target"):
                migrate.upgrade(conn, target=target)  # type: ignore[arg-type]
        assert migrate.current_version(conn) == 0
        conn.close()

    def test_V27_concurrent_upgraders_apply_each_migration_once(self, harness: Harness) -> None:
        errors: list[BaseException] = []
        applied: list[tuple[int, ...]] = []
        barrier = threading.Barrier(4)

        def worker() -> None:
            conn = harness.connect()
            try:
                barrier.wait()
                applied.append(migrate.upgrade(conn))
            except BaseException as exc:
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        versions = [m.version for m in migrate.load_migrations(harness.engine)]
        assert sorted(v for a in applied for v in a) == versions
        conn = harness.connect()
        rows = harness.execute(conn, f"SELECT version FROM {migrate.VERSION_TABLE} ORDER BY version")
        assert [r[0] for r in rows] == versions
        conn.close()


class SqliteHarness:
    engine = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.path = root / "v0.db"

    def fresh(self) -> None:
        self.n += 1
        self.path = self.root / f"v{self.n}.db"

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, timeout=10)

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(conn.execute(sql, params).fetchall())

    def catalog(self, conn: Any) -> list[tuple[Any, ...]]:
        return list(
            conn.execute(
                "SELECT name, type, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                " ORDER BY name"
            ).fetchall()
        )

    def open_store(self, *, migrate: bool) -> Store:
        return SqliteStore(self.path, migrate=migrate)


class TestSqliteMigrations(MigrationContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> SqliteHarness:
        return SqliteHarness(tmp_path)


def test_runner_requires_autocommit_sqlite_connection(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v.db")
    with pytest.raises(ValidationError, match="isolation_level=None"):
        migrate.upgrade(conn)
    conn.close()


def test_statement_splitter_keeps_trigger_bodies_whole() -> None:
    sql = migrate.load_migrations("sqlite")[0].sql
    statements = migrate._sqlite_statements(sql)
    triggers = [s for s in statements if "CREATE TRIGGER" in s]
    assert len(triggers) == 2
    assert all(s.rstrip().endswith("END;") for s in triggers)
