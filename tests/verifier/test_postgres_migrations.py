"""V27 on PostgreSQL: the migration contract of ``test_sqlite_migrations.py`` against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from capsim.verifier.postgres import PostgresStore
from capsim.verifier.store import Store
from tests.verifier.pgcluster import PgCluster
from tests.verifier.test_sqlite_migrations import MigrationContract

pytestmark = pytest.mark.postgres



class PostgresHarness:
    engine = "postgres"

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.created: list[str] = []
        self.fresh()

    def fresh(self) -> None:
        self.dsn = self.cluster.create_schema(migrated=False)
        self.created.append(self.dsn)

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = conn.execute(sql.replace("?", "%s"), params or None)
        return list(cur.fetchall()) if cur.description is not None else []

    def catalog(self, conn: Any) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for sql in (
            "SELECT table_name, 'column', column_name, data_type, is_nullable, coalesce(column_default, '')"
            " FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 3",
            "SELECT tablename, 'index', indexname, indexdef, '', '' FROM pg_indexes"
            " WHERE schemaname = current_schema() ORDER BY 1, 3",
            "SELECT conrelid::regclass::text, 'constraint', conname, pg_get_constraintdef(oid), '', ''"
            " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 3",
            "SELECT t.tgrelid::regclass::text, 'trigger', t.tgname, pg_get_triggerdef(t.oid), '', ''"
            " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace ORDER BY 1, 3",
            "SELECT proname, 'function', proname, prosrc, '', '' FROM pg_proc"
            " WHERE pronamespace = current_schema()::regnamespace ORDER BY 1",
        ):
            out += [tuple(r) for r in conn.execute(sql).fetchall()]
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        out = [tuple(str(v).replace(f"{schema}.", "") for v in r) for r in out]
        # the audit chain head row is part of the schema (inserted by migration 1)
        if any(r[0] == "cap_audit_head" for r in out):
            out += [
                ("cap_audit_head", "rows", str(r[0]), "", "", "")
                for r in conn.execute("SELECT id FROM cap_audit_head")
            ]
        return out

    def open_store(self, *, migrate: bool) -> Store:
        return PostgresStore(self.dsn, migrate=migrate, pool_size=2)


class TestPostgresMigrations(MigrationContract):
    @pytest.fixture
    def harness(self, pg_cluster: PgCluster) -> Any:
        h = PostgresHarness(pg_cluster)
        yield h
        for dsn in h.created:
            pg_cluster.drop_schema(dsn)
