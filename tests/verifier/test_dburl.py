"""``--db`` values: libpq keyword strings, URLs, paths, and password redaction in every form.

libpq itself is the oracle: ``psycopg.conninfo.conninfo_to_dict`` (``PQconninfoParse``) parses
the generated keyword strings and URLs, and the redacted text must parse to the same values
with every secret replaced by ``***``. Secrets are generated with a marker character (``§``)
that no other generated value contains, so "the secret leaked" is "``§`` is in the output".
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import ConfigError, TemporaryFailure, ValidationError
from capsim.verifier.dburl import (
    LIBPQ_KEYWORDS,
    SECRET_KEYWORDS,
    DbKind,
    open_store,
    parse_db_url,
    redact_db_url,
)
from tests.cli.helpers import Cli
from tests.verifier.pgcluster import PgCluster, pg_cluster

__all__ = ["pg_cluster"]

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install capsim[postgres])")
from psycopg import pq  # noqa: E402
from psycopg.conninfo import conninfo_to_dict  # noqa: E402

MARK = "§"
_PLAIN_KEYWORDS = sorted(LIBPQ_KEYWORDS - SECRET_KEYWORDS - {"dbname"})


def _quote_kw(value: str) -> str:
    """A value written as libpq reads it back: single-quoted, backslash before ``\\`` and ``'``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquoted_kw(value: str) -> str:
    """A value written unquoted: backslash before blanks, backslashes and a leading quote."""
    out = "".join("\\" + c if c in " \t\n\v\f\r\\" else c for c in value)
    return "\\" + out if out.startswith("'") else out


_no_nul = st.characters(blacklist_characters="\x00" + MARK, blacklist_categories=("Cs",))
_plain_values = st.text(_no_nul, max_size=12)
_secrets = st.builds(
    lambda a, b: a + MARK + b,
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
)


@st.composite
def keyword_strings(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A libpq keyword/value string with one to three secrets, and the values libpq reads."""
    pairs: list[tuple[str, str]] = [("host", draw(_plain_values))]
    for _ in range(draw(st.integers(0, 4))):
        pairs.append((draw(st.sampled_from(_PLAIN_KEYWORDS)), draw(_plain_values)))
    for kw in draw(st.lists(st.sampled_from(sorted(SECRET_KEYWORDS)), min_size=1, max_size=3, unique=True)):
        pairs.insert(draw(st.integers(0, len(pairs))), (kw, draw(_secrets)))
    text = ""
    for kw, value in pairs:
        around = draw(st.sampled_from(["=", " = ", "=\t", " ="]))
        written = _quote_kw(value) if not value or draw(st.booleans()) else _unquoted_kw(value)
        text += draw(st.sampled_from([" ", "  ", "\n", "\t"])) if text else ""
        text += kw + around + written
    return text, dict(pairs)


@given(keyword_strings())
def test_keyword_strings_are_postgresql_and_redacted(case: tuple[str, dict[str, str]]) -> None:
    text, values = case
    assert conninfo_to_dict(text) == values  # the generator writes what libpq reads
    parsed = parse_db_url(text)
    assert parsed.kind is DbKind.POSTGRES
    assert parsed.target == text
    redacted = redact_db_url(text)
    assert MARK not in redacted
    assert MARK not in repr(parsed)
    assert conninfo_to_dict(redacted) == {k: "***" if k in SECRET_KEYWORDS else v for k, v in values.items()}


@given(st.sampled_from(["", "'"]), st.text(st.characters(blacklist_characters="\x00" + MARK), max_size=20))
def test_malformed_keyword_strings_never_show_the_secret(quote_char: str, tail: str) -> None:
    text = f"host=/run/pg password={quote_char}{MARK}{tail}"
    assert MARK not in redact_db_url(text)
    try:
        libpq_password: str | None = conninfo_to_dict(text)["password"]
    except (psycopg.ProgrammingError, UnicodeEncodeError):
        libpq_password = None
    if libpq_password is None:  # libpq refuses it: so does capsim, without echoing it
        with pytest.raises(ValidationError) as info:
            parse_db_url(text)
        assert MARK not in str(info.value)
    else:
        assert libpq_password.startswith(MARK)
        parsed = parse_db_url(text)
        assert parsed.kind is DbKind.POSTGRES
        assert MARK not in repr(parsed)


_url_safe = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=8)


@given(
    user=_url_safe,
    password=_secrets,
    host=st.sampled_from(["db.example", "10.0.0.1", "[::1]", "db1:5432,db2:5433", ""]),
    in_query=st.sampled_from(["", "password", "pass%77ord", "%70assword"]),
    before=st.lists(st.sampled_from(["sslmode=require", "host=%2Frun%2Fpg", "application_name=a%40b"])),
    scheme=st.sampled_from(["postgresql", "postgres"]),
)
def test_urls_are_redacted(
    user: str, password: str, host: str, in_query: str, before: list[str], scheme: str
) -> None:
    enc = quote(password, safe="")
    if in_query:
        query = "&".join([*before, f"{in_query}={enc}", "connect_timeout=3"])
        url = f"{scheme}://{user}@{host}/capsim?{query}"
    else:
        url = f"{scheme}://{user}:{enc}@{host}/capsim" + ("?" + "&".join(before) if before else "")
    values = conninfo_to_dict(url)
    assert values["password"] == password
    parsed = parse_db_url(url)
    assert parsed.kind is DbKind.POSTGRES
    redacted = redact_db_url(url)
    for shown in (redacted, repr(parsed)):
        assert MARK not in shown
        assert enc not in shown
    assert conninfo_to_dict(redacted) == {**values, "password": "***"}


@pytest.mark.parametrize(
    "text",
    [
        "host=/tmp dbname=capsim user=bank password=s3cret",
        "dbname=capsim",
        "  host = /run/postgresql   port=5432 sslmode=require",
        "host=db password='s3 cret' options='-c search_path=capsim'",
        "service=capsim",
    ],
)
def test_keyword_strings_select_postgresql(text: str) -> None:
    parsed = parse_db_url(text)
    assert parsed.kind is DbKind.POSTGRES
    assert parsed.target == text
    assert "s3" not in repr(parsed)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("hots=/tmp dbname=capsim", "'hots'"),  # a typo in a keyword
        ("a=b.db", "'a'"),  # a file whose name contains "=": write sqlite:a=b.db
        ("HOST=db", "'HOST'"),  # libpq's keywords are lower case
        ("host=db password=s3 cret", None),  # an unquoted blank: "cret" is not a keyword
        ("host=db password=s3 cret=x", None),  # the same, and "cret" is not named
        ("host=db password='s3cret", None),  # unterminated quote
        ("host=db dbname", None),
        ("'host=db password=s3cret'", None),  # quoted whole: neither a path nor a string
        ("my file host=db", None),
        ("host=db dbname=\udcff", None),  # an undecodable command-line byte: libpq takes UTF-8
        ("postgresql://db/\udcff", None),
    ],
)
def test_ambiguous_or_malformed_keyword_strings_are_refused(text: str, named: str | None) -> None:
    with pytest.raises(ValidationError, match="db url") as info:
        parse_db_url(text)
    message = str(info.value)
    assert "s3" not in message
    assert "cret" not in message
    if named is not None:
        assert named in message


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("sqlite:a=b.db", "a=b.db"),
        ("./a=b.db", "./a=b.db"),
        ("/srv/host=1/v.db", "/srv/host=1/v.db"),
        (Path("host=db password=x"), "host=db password=x"),  # a path object is always a path
    ],
)
def test_paths_with_equals_signs(value: str | Path, target: str) -> None:
    parsed = parse_db_url(value)
    assert parsed.kind is DbKind.SQLITE
    assert parsed.target == target


def test_every_keyword_of_the_installed_libpq_is_accepted() -> None:
    options = pq.Conninfo.get_defaults()
    assert options
    for option in options:
        keyword = option.keyword.decode()
        assert parse_db_url(f"{keyword}=x").kind is DbKind.POSTGRES, keyword
        if option.dispchar == b"*":  # libpq's own "hide this" mark
            assert keyword in SECRET_KEYWORDS


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bank:s3cret@/capsim?host=/nonexistent&frobnicate=1",
        "postgresql:///capsim?password=s3cret&x",
    ],
)
def test_a_url_libpq_refuses_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError, match="libpq refused") as info:
        open_store(url)
    assert not isinstance(info.value, TemporaryFailure)
    assert "s3cret" not in str(info.value)


def test_redaction_examples() -> None:
    assert redact_db_url("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
    assert redact_db_url("postgresql://u:p@ss@h/d") == "postgresql://u:***@h/d"
    assert redact_db_url("postgresql://u:1234@h/d") == "postgresql://u:***@h/d"
    assert redact_db_url("postgresql://h:5432/d?application_name=a@b") == (
        "postgresql://h:5432/d?application_name=a@b"
    )
    assert redact_db_url("postgresql://h/d?password=a&b&sslmode=require") == (
        "postgresql://h/d?password=***&***&sslmode=require"
    )
    assert redact_db_url("host=db password=s3 cret") == "host=db password=*** ***"
    assert redact_db_url("host=db sslpassword=k password='x\\' y' user=u") == (
        "host=db sslpassword=*** password=*** user=u"
    )
    assert redact_db_url("'host=db password=s3 cret'") == "'host=db password=***"
    assert redact_db_url("/var/lib/capsim/v.db") == "/var/lib/capsim/v.db"


# -- through the command line -------------------------------------------------------------------


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize(
    "db",
    [
        "host=127.0.0.1 port=1 connect_timeout=2 user=bank password=s3cret dbname=x",
        "host=/nonexistent-capsim-socket-dir password=s3cret dbname=x",
    ],
)
def test_cli_init_with_a_keyword_string_creates_no_file_and_hides_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cli = Cli(tmp_path / "home")
    for args in (("verifier", "init"), ("verifier", "user", "list"), ("verifier", "init", "--json")):
        run = cli(*args, "--db", db)
        assert run.exit_code == 11, run.output  # PostgreSQL unreachable: a temporary failure
        assert "s3cret" not in run.output
        assert run.stderr.count("\n") == 1
        assert "Traceback" not in run.output
        assert _listing(cwd) == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_cli_refuses_a_malformed_keyword_string_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = Cli(tmp_path / "home")("verifier", "init", "--db", "host=db password=s3 cret dbname=x")
    assert run.exit_code == 13
    assert "s3" not in run.output
    assert "cret" not in run.output
    assert _listing(tmp_path) == []


@pytest.mark.postgres
def test_cli_keyword_string_on_a_real_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_cluster: PgCluster
) -> None:
    name = pg_cluster.create_database()  # empty: init creates the schema
    monkeypatch.chdir(tmp_path)
    cli = Cli(tmp_path / "home")
    where = f"host={pg_cluster.sockdir} port={pg_cluster.port}"
    db = f"{where} user=postgres password='s3cret word' dbname={name}"
    try:
        run = cli("verifier", "init", "--db", db, "--json")
        assert run.exit_code == 0, run.output
        assert run.json()["kind"] == "postgres"
        assert run.json()["db"].endswith("password=*** dbname=" + name)
        assert cli("verifier", "user", "add", "alice", "--db", db).exit_code == 0
        listed = cli("verifier", "user", "list", "--db", db, "--json")
        assert listed.exit_code == 0, listed.output
        assert "alice" in listed.stdout
        for run in cli.runs:
            assert "s3cret" not in run.output
        # nothing but the verifier's keyring file, in the data directory, never in the working
        # directory, and no file named after any part of the connection string
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert [p.parent for p in files] == [tmp_path / "home"] * len(files)
        assert all(p.name.startswith("keyring-") and "s3cret" not in p.name for p in files), files
        with psycopg.connect(pg_cluster.dsn(name)) as conn:
            assert conn.execute("SELECT user_id FROM cap_user").fetchall() == [("alice",)]
    finally:
        pg_cluster.drop_database(name)


@pytest.mark.postgres
def test_store_repr_hides_the_password(pg_cluster: PgCluster) -> None:
    name = pg_cluster.create_database()
    try:
        store = open_store(f"{pg_cluster.dsn(name)} password=s3cret")
        try:
            assert "s3cret" not in repr(store)
            assert "password=***" in repr(store)
        finally:
            store.close()
    finally:
        pg_cluster.drop_database(name)
