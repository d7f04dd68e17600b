"""A throwaway PostgreSQL cluster for the store tests.

The cluster is built from the Debian server binaries (``/usr/lib/postgresql/<N>/bin``):
``initdb`` into a temporary directory, then ``pg_ctl start`` with ``listen_addresses=''``
and a private unix-socket directory inside that temporary directory, so nothing listens on
TCP and nothing outside the test run can reach it. When the tests run as root the server
runs as the ``postgres`` user (PostgreSQL refuses to run as root); the temporary directory
is handed to that user first. Durability is switched off (``fsync=off``): the cluster is
thrown away at the end of the session with ``pg_ctl stop``.

Each test gets its own database, cloned from a migrated template database, so tests never
see each other's rows and cloning costs a few milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "PgBouncer",
    "PgCluster",
    "find_pg_bindir",
    "find_pgbouncer",
    "migrated_template",
    "new_test_database",
    "pg_cluster",
    "pg_dsn",
    "pg_empty_dsn",
    "pg_unavailable_reason",
    "session_cluster",
    "stop_session_cluster",
]

_PORT = 5433


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<N>/bin`` with ``initdb`` and ``pg_ctl``.

    ``$CAPSIM_PG_BINDIR`` wins when set.
    """
    env = os.environ.get("CAPSIM_PG_BINDIR")
    candidates = [env] if env else []

    def _major(path: str) -> int:
        try:
            return int(Path(path).parent.name.split(".")[0])
        except ValueError:
            return -1

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    for cand in candidates:
        p = Path(cand)
        if (p / "initdb").is_file() and (p / "pg_ctl").is_file():
            return p
    return None


def pg_unavailable_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or ``None`` when they can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install capsim[postgres])"
    if find_pg_bindir() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to run the server"
    return None


@dataclass
class PgCluster:
    """One running throwaway cluster; use :meth:`start` and :meth:`stop` (or :meth:`running`)."""

    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="capsim-pg-")))
    port: int = _PORT
    _user: str | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = self._user
        return subprocess.run(
            list(args),
            check=True,
            capture_output=True,
            text=True,
            user=user,
            cwd=self.root,
            timeout=120,
        )

    def start(self) -> None:
        """``initdb`` and ``pg_ctl start`` (blocks until the server accepts connections)."""
        self.sockdir.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._user = "postgres"
            for p in (self.root, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        opts = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{self.sockdir}'",
                f"-p {self.port}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=32MB",
                "-c log_min_messages=fatal",
                "-c deadlock_timeout=200ms",
            ]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.datadir),
            "-l", str(self.root / "server.log"),
            "-o", opts,
            "-w", "-t", "60",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        """``pg_ctl stop`` and remove the temporary directory."""
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` over the private socket."""
        return f"host={self.sockdir} port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """The same as a ``postgresql://`` URL (socket directory in the ``host`` query parameter)."""
        return f"postgresql://postgres@/{dbname}?host={self.sockdir}&port={self.port}"

    def admin_execute(self, sql: str, *, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode on ``dbname``."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, template: str | None = None) -> str:
        """Create a fresh database (optionally cloned from ``template``) and return its name."""
        name = "t_" + uuid.uuid4().hex[:16]
        clause = f" TEMPLATE {template}" if template else ""
        for attempt in range(20):
            try:
                self.admin_execute(f"CREATE DATABASE {name}{clause}")
                break
            except Exception as exc:  # the template is briefly busy while another clone runs
                if "is being accessed by other users" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.05)
        return name

    def create_schema(self, *, migrated: bool, dbname: str = "postgres") -> str:
        """A fresh schema in ``dbname`` and a DSN whose ``search_path`` is that schema only.

        Much cheaper than a database per test (``CREATE DATABASE`` copies files and waits for
        a checkpoint). With ``migrated`` the schema is brought to the head version.
        """
        name = "s_" + uuid.uuid4().hex[:16]
        self.admin_execute(f"CREATE SCHEMA {name}", dbname=dbname)
        dsn = f"{self.dsn(dbname)} options=-csearch_path={name}"
        if migrated:
            import psycopg

            from capsim.verifier import migrate

            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate.upgrade(conn)
        return dsn

    def reset_schema(self, dsn: str) -> None:
        """Empty every verifier table of a migrated schema (the audit chain included)."""
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename LIKE 'cap\\_%' AND tablename <> 'cap_audit_head'"
                ).fetchall()
            ]
            with conn.transaction():
                # replica role: the append-only guard of cap_audit does not fire
                conn.execute("SET LOCAL session_replication_role = replica")
                for table in tables:  # DELETE: far cheaper than TRUNCATE on tiny tables
                    conn.execute(f"DELETE FROM {table}".encode())
                conn.execute("UPDATE cap_audit_head SET seq = 0, record_hash = %s", (bytes(32),))

    def drop_schema(self, dsn: str, *, dbname: str = "postgres") -> None:
        """Drop the schema a :meth:`create_schema` DSN points at, with everything in it."""
        name = dsn.rsplit("search_path=", 1)[1]
        with contextlib.suppress(Exception):
            self.admin_execute(f"DROP SCHEMA IF EXISTS {name} CASCADE", dbname=dbname)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, terminating any session still connected to it."""
        with contextlib.suppress(Exception):
            self.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PgCluster]:
        """Start a cluster for the duration of the ``with`` block."""
        bindir = find_pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries")
        cluster = cls(bindir=bindir)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


_SESSION: PgCluster | None = None
_SESSION_LOCK = threading.RLock()


def session_cluster() -> PgCluster:
    """The one cluster of this test process, started on first use.

    Stopped by :func:`stop_session_cluster` (the session fixture's finaliser) or, failing
    that, at interpreter exit.
    """
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            bindir = find_pg_bindir()
            if bindir is None:
                raise RuntimeError("no PostgreSQL server binaries")
            cluster = PgCluster(bindir=bindir)
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            import atexit

            atexit.register(cluster.stop)
            _SESSION = cluster
        return _SESSION


def stop_session_cluster() -> None:
    """Stop the session cluster if it was started."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is not None:
            _SESSION.stop()
            _SESSION = None


# ---------------------------------------------------------------------------------------------
# pytest fixtures (import them into a test module or a conftest)

_TEMPLATE: str | None = None


def migrated_template(cluster: PgCluster) -> str:
    """A database at the head schema, used as the template every test database is cloned from."""
    global _TEMPLATE
    with _SESSION_LOCK:
        if _TEMPLATE is None:
            import psycopg

            from capsim.verifier import migrate

            name = cluster.create_database()
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                migrate.upgrade(conn)
            _TEMPLATE = name
        return _TEMPLATE


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's throwaway cluster (skips, with the reason, only if PostgreSQL is absent).

    Started on first use and stopped with ``pg_ctl stop`` when the session ends.
    """
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    yield session_cluster()
    stop_session_cluster()


@pytest.fixture
def pg_empty_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty schema (version 0); the DSN selects it through ``search_path``."""
    dsn = pg_cluster.create_schema(migrated=False)
    yield dsn
    pg_cluster.drop_schema(dsn)


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh schema at the head version; the DSN selects it through ``search_path``."""
    dsn = pg_cluster.create_schema(migrated=True)
    yield dsn
    pg_cluster.drop_schema(dsn)


def new_test_database(request: pytest.FixtureRequest) -> str:
    """A fresh migrated schema for the requesting test (dropped at its teardown); its DSN."""
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    dsn = cluster.create_schema(migrated=True)
    request.addfinalizer(lambda: cluster.drop_schema(dsn))
    return dsn


# ---------------------------------------------------------------------------------------------
# PgBouncer in transaction pooling mode in front of the cluster


def find_pgbouncer() -> str | None:
    """The PgBouncer binary, if installed (Debian package ``pgbouncer``)."""
    found = shutil.which("pgbouncer")
    if found is None and Path("/usr/sbin/pgbouncer").exists():
        found = "/usr/sbin/pgbouncer"
    return found


@dataclass
class PgBouncer:
    """A PgBouncer (``pool_mode = transaction``) on a private unix socket, in front of ``cluster``.

    ``server_pool`` server connections are shared by any number of clients, so consecutive
    transactions of one client usually run on different server sessions.
    """

    cluster: PgCluster
    dbname: str
    server_pool: int = 3
    port: int = 6432
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.cluster.root / "bouncer"

    def dsn(self) -> str:
        return f"host={self.root} port={self.port} user=postgres dbname={self.dbname}"

    def start(self) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed")
        self.root.mkdir(exist_ok=True)
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.dbname} = host={self.cluster.sockdir} port={self.cluster.port} dbname={self.dbname}\n"
            "[pgbouncer]\n"
            "listen_addr =\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.root}\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.server_pool}\n"
            f"max_db_connections = {self.server_pool}\n"
            "max_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
        )
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in self.root.iterdir():
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._proc = subprocess.Popen(
            [binary, str(self.root / "pgbouncer.ini")],
            user="postgres" if os.geteuid() == 0 else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock = self.root / f".s.PGSQL.{self.port}"
        for _ in range(200):
            if sock.exists():
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self._proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not open its socket")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
