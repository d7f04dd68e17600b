"""Database URLs as text: what a ``--db`` value names (:func:`parse_db_url`) and the same text
with its secrets hidden (:func:`redact_db_url`). Pure functions: nothing is opened or created.

The accepted forms are listed in :mod:`capsim.verifier.dburl`, which opens the store a URL
names; this module sits below every store, so a store can redact its own URL in messages.

Theory of operation
-------------------
1. **Classification is a pure function of the text** (:func:`parse_db_url`); nothing is
   opened or created. In order: a path-like object is a SQLite path; a text starting with a
   URL scheme is a URL (``sqlite:``, ``postgresql:``/``postgres:``, ``memory:``, anything else
   refused); a text starting with ``keyword =`` is a libpq keyword/value string; any other
   text is a SQLite path, unless it contains a libpq keyword followed by ``=`` after a blank
   or a quote, which is refused as ambiguous (a mistyped connection string must not become a
   file named after its password).
2. **Keyword strings follow libpq's grammar** (``conninfo_parse``): ``keyword = value`` pairs
   separated by blanks; a value is either unquoted (up to the next blank) or single-quoted, and
   a backslash escapes the next character in both. Every keyword must be one of libpq's
   (:data:`LIBPQ_KEYWORDS`, or one the installed libpq reports). A malformed string or an
   unknown keyword is a :class:`~capsim.errors.ValidationError`.
3. **Messages never repeat the value**: a refused value may hold a password, so errors name
   at most a keyword that comes before every secret (a later "keyword" may be the tail of an
   unquoted password).
4. **Redaction** (:func:`redact_db_url`) replaces the secrets of every form with ``***``: the
   values of :data:`SECRET_KEYWORDS` in keyword strings and in URL query parameters (names
   percent-decoded, as libpq decodes them) and the password of a URL's userinfo (up to the
   last ``@``). Whatever cannot be parsed after a secret is hidden too: redaction errs on
   the side of hiding.
"""


from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import unquote, urlsplit

from capsim.errors import ValidationError

__all__ = [
    "LIBPQ_KEYWORDS",
    "SECRET_KEYWORDS",
    "DbKind",
    "DbUrl",
    "parse_db_url",
    "redact_db_url",
]

#: libpq's connection keywords (PostgreSQL 18); keywords the installed libpq reports are accepted too.
LIBPQ_KEYWORDS: Final = frozenset(
    {
        "application_name", "channel_binding", "client_encoding", "connect_timeout", "dbname",
        "fallback_application_name", "gssdelegation", "gssencmode", "gsslib", "host", "hostaddr",
        "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval", "krbsrvname",
        "load_balance_hosts", "max_protocol_version", "min_protocol_version", "oauth_client_id",
        "oauth_client_secret", "oauth_issuer", "oauth_scope", "options", "passfile", "password", "port",
        "replication", "require_auth", "requirepeer", "scram_client_key", "scram_server_key", "service",
        "ssl_max_protocol_version", "ssl_min_protocol_version", "sslcert", "sslcertmode", "sslcompression",
        "sslcrl", "sslcrldir", "sslkey", "sslkeylogfile", "sslmode", "sslnegotiation", "sslpassword",
        "sslrootcert", "sslsni", "target_session_attrs", "tcp_user_timeout", "user",
    }
)  # fmt: skip
#: The keywords whose values are secrets (redacted everywhere).
SECRET_KEYWORDS: Final = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)

_WS: Final = " \t\n\v\f\r"  # C isspace(), as libpq uses it
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_KW_START_RE = re.compile(r"^[ \t\n\v\f\r]*[A-Za-z_][A-Za-z0-9_]*[ \t\n\v\f\r]*=")
_KW_INSIDE_RE = re.compile(r"[ \t\n\v\f\r'\"]([A-Za-z_][A-Za-z0-9_]*)[ \t\n\v\f\r]*=")
_LOOSE_SECRET_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(?:" + "|".join(sorted(SECRET_KEYWORDS)) + r")[ \t\n\v\f\r]*=[ \t\n\v\f\r]*"
)
# host[:port][,host[:port]…] followed by a path or query: an "@" after it is not userinfo
_HOSTPORT_THEN_PATH_RE = re.compile(r"[^:/?#@]*:[0-9]*(?:,[^/?#@]*)*[/?#].*", re.S)
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HIDDEN: Final = "***"


class DbKind(StrEnum):
    """Which store a URL selects."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"
    MEMORY = "memory"


@dataclass(frozen=True, kw_only=True)
class DbUrl:
    """A parsed ``--db`` value.

    Attributes
    ----------
    kind:
        The store it selects.
    target:
        The SQLite file path, the libpq URL or keyword string for PostgreSQL, or ``""`` for
        memory.
    """

    kind: DbKind
    target: str

    def __repr__(self) -> str:
        return f"DbUrl(kind={self.kind.value!r}, target={redact_db_url(self.target)!r})"


def parse_db_url(url: str | os.PathLike[str]) -> DbUrl:
    """Classify ``url`` without opening anything (rules 1–3; the forms: :mod:`capsim.verifier.dburl`).

    Examples
    --------
    >>> parse_db_url("/var/lib/capsim/verifier.db")
    DbUrl(kind='sqlite', target='/var/lib/capsim/verifier.db')
    >>> parse_db_url("sqlite:///tmp/v.db").target
    '/tmp/v.db'
    >>> parse_db_url("postgresql://bank@db.example/capsim").kind
    <DbKind.POSTGRES: 'postgres'>
    >>> parse_db_url("host=/run/postgresql dbname=capsim password='s3 cret'")
    DbUrl(kind='postgres', target='host=/run/postgresql dbname=capsim password=***')
    >>> parse_db_url("mysql://x")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    capsim.errors.ValidationError: db url: unsupported scheme 'mysql'; ...
    """
    if isinstance(url, os.PathLike):
        path = os.fspath(url)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ValidationError("db url: a path must be a non-empty str path without NUL characters")
        return DbUrl(kind=DbKind.SQLITE, target=path)
    if not isinstance(url, str):
        raise ValidationError(f"db url must be a str or path, got {type(url).__name__}")
    if not url or "\x00" in url:
        raise ValidationError("db url must be a non-empty path or URL without NUL characters")
    match = _SCHEME_RE.match(url)
    # A one-letter "scheme" is a Windows drive letter; treat it as a path.
    if match is not None and len(match.group(1)) > 1:
        parsed = _parse_scheme_url(url, match.group(1).lower())
        if parsed.kind is DbKind.POSTGRES:
            _check_encodable(url)
        return parsed
    if _KW_START_RE.match(url):
        _check_encodable(url)
        _check_keyword_string(url)
        return DbUrl(kind=DbKind.POSTGRES, target=url)
    for inner in _KW_INSIDE_RE.finditer(url):
        if _is_libpq_keyword(inner.group(1)):
            raise ValidationError(
                "db url: this value mixes a path with libpq connection keywords; write a PostgreSQL "
                "connection string as keyword=value pairs only (host=… dbname=…), or name a SQLite "
                "file as sqlite:PATH"
            )
    return DbUrl(kind=DbKind.SQLITE, target=url)


def _check_encodable(url: str) -> None:
    """libpq takes UTF-8 text (an undecodable command-line byte arrives as a lone surrogate)."""
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("db url: a PostgreSQL connection string or URL must be valid UTF-8") from None


def _parse_scheme_url(url: str, scheme: str) -> DbUrl:
    if scheme == "sqlite":
        rest = url[len("sqlite:") :]
        if rest.startswith("//"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise ValidationError("db url: sqlite URLs take no host; use sqlite:///ABSOLUTE/PATH")
            path = unquote(parts.path)
        else:
            path = unquote(rest)
        if not path:
            raise ValidationError("db url: sqlite URL without a path; use sqlite:///ABSOLUTE/PATH")
        return DbUrl(kind=DbKind.SQLITE, target=path)
    if scheme in ("postgresql", "postgres"):
        return DbUrl(kind=DbKind.POSTGRES, target=url)
    if scheme == "memory":
        return DbUrl(kind=DbKind.MEMORY, target="")
    raise ValidationError(
        f"db url: unsupported scheme {scheme!r}; expected a path, sqlite:///PATH, postgresql://…, "
        "a libpq keyword string (host=… dbname=…) or memory:"
    )


# ---------------------------------------------------------------------------------------------
# libpq keyword/value strings


@dataclass(frozen=True)
class _Pair:
    """One ``keyword = value`` of a keyword string, with the spans it occupies in the text."""

    keyword: str
    value: str
    start: int  # first character of the keyword
    value_start: int  # first character of the value as written (quote included)
    end: int  # one past the value as written


@dataclass(frozen=True)
class _Scan:
    """The pairs read before the end of the text or the first syntax error."""

    pairs: tuple[_Pair, ...]
    error_at: int | None = None  # where the offending word starts
    error: str = ""


def _scan_keywords(conninfo: str) -> _Scan:
    """Split ``conninfo`` as libpq's ``conninfo_parse`` does (module docstring, rule 2)."""
    pairs: list[_Pair] = []
    i, n = 0, len(conninfo)
    while True:
        while i < n and conninfo[i] in _WS:
            i += 1
        if i >= n:
            return _Scan(tuple(pairs))
        start = i
        while i < n and conninfo[i] != "=" and conninfo[i] not in _WS:
            i += 1
        key_end = i
        while i < n and conninfo[i] in _WS:
            i += 1
        if i >= n or conninfo[i] != "=":
            return _Scan(tuple(pairs), start, "a word without '='")
        i += 1
        while i < n and conninfo[i] in _WS:
            i += 1
        value_start = i
        chars: list[str] = []
        quoted = i < n and conninfo[i] == "'"
        if quoted:
            i += 1
        while True:
            if i >= n:
                if quoted:
                    return _Scan(tuple(pairs), start, "an unterminated quoted value")
                break
            char = conninfo[i]
            if char == "\\":
                if i + 1 < n:
                    chars.append(conninfo[i + 1])
                i += 2
                continue
            if (quoted and char == "'") or (not quoted and char in _WS):
                i += 1 if quoted else 0
                break
            chars.append(char)
            i += 1
        pairs.append(_Pair(conninfo[start:key_end], "".join(chars), start, value_start, min(i, n)))


@functools.cache
def _installed_libpq_keywords() -> frozenset[str]:
    """The keywords of the libpq psycopg is linked with (empty without psycopg)."""
    try:
        from psycopg import pq
    except ImportError:  # pragma: no cover - exercised only without the extra
        return frozenset()
    try:
        return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())
    except Exception:  # pragma: no cover - a libpq without PQconndefaults
        return frozenset()


def _is_libpq_keyword(word: str) -> bool:
    return word in LIBPQ_KEYWORDS or word in _installed_libpq_keywords()


def _check_keyword_string(text: str) -> None:
    """Raise :class:`ValidationError` unless ``text`` is a libpq keyword string (rules 2–3)."""
    scan = _scan_keywords(text)
    secret_seen = False
    for pair in scan.pairs:
        if not _is_libpq_keyword(pair.keyword):
            shown = not secret_seen and _WORD_RE.fullmatch(pair.keyword) is not None
            named = f" {pair.keyword!r}" if shown else ""
            hint = (
                " (quote a value that contains blanks: password='…')"
                if secret_seen
                else "; to name a SQLite file whose name contains '=', write sqlite:PATH or ./PATH"
            )
            raise ValidationError(
                f"db url: unknown libpq connection keyword{named} in a keyword=value string{hint}"
            )
        secret_seen = secret_seen or pair.keyword in SECRET_KEYWORDS
    if scan.error_at is not None:
        raise ValidationError(
            f"db url: malformed libpq connection string: {scan.error} at character {scan.error_at + 1}"
            " (quote a value that contains blanks: keyword='…', with \\' for a quote)"
        )


# ---------------------------------------------------------------------------------------------
# redaction


def redact_db_url(url: str) -> str:
    """``url`` with every secret replaced by ``***`` (for messages and logs; rule 4).

    Examples
    --------
    >>> redact_db_url("postgresql://bank:s3cret@db/capsim")
    'postgresql://bank:***@db/capsim'
    >>> redact_db_url("postgresql://bank@db/capsim?sslmode=require&password=s3cret")
    'postgresql://bank@db/capsim?sslmode=require&password=***'
    >>> redact_db_url("host=db user=bank password='s3 cret' dbname=capsim")
    'host=db user=bank password=*** dbname=capsim'
    >>> redact_db_url("/tmp/v.db")
    '/tmp/v.db'
    """
    match = _SCHEME_RE.match(url)
    if match is not None and len(match.group(1)) > 1:
        return _redact_uri(url, match.end())
    if _KW_START_RE.match(url):
        return _redact_keywords(url)
    return _redact_loose(url)


def _redact_loose(text: str) -> str:
    """Hide everything after the first ``secret=`` (a path, or text no grammar fits)."""
    match = _LOOSE_SECRET_RE.search(text)
    return text if match is None else text[: match.end()] + _HIDDEN


def _redact_keywords(text: str) -> str:
    scan = _scan_keywords(text)
    out: list[str] = []
    pos = 0
    secret_seen = False
    for pair in scan.pairs:
        if pair.keyword.lower() in SECRET_KEYWORDS:
            out += [text[pos : pair.value_start], _HIDDEN]
            secret_seen = True
        elif secret_seen and pair.keyword not in LIBPQ_KEYWORDS:
            # after a secret, an unknown "keyword" may be the tail of an unquoted password
            out += [text[pos : pair.start], _HIDDEN]
        else:
            out.append(text[pos : pair.end])
        pos = pair.end
    if scan.error_at is None:
        out.append(text[pos:])
    elif secret_seen:
        out += [text[pos : scan.error_at], _HIDDEN]
    else:
        out += [text[pos : scan.error_at], _redact_loose(text[scan.error_at :])]
    return "".join(out)


def _redact_uri(url: str, after_scheme: int) -> str:
    if url.startswith("//", after_scheme):
        start = after_scheme + 2
        at = url.rfind("@", start)
        userinfo = url[start:at] if at >= 0 else ""
        colon = userinfo.find(":")
        if colon >= 0 and not _HOSTPORT_THEN_PATH_RE.fullmatch(userinfo):
            url = url[: start + colon + 1] + _HIDDEN + url[at:]
    query = url.find("?")
    if query < 0:
        return url
    params: list[str] = []
    hiding = False
    for param in url[query + 1 :].split("&"):
        name, eq, _ = param.partition("=")
        if unquote(name).strip().lower() in SECRET_KEYWORDS:
            params.append(f"{name}={_HIDDEN}")
            hiding = True
        elif hiding and not eq:
            params.append(_HIDDEN)  # an unencoded "&" inside the secret
        else:
            params.append(param)
            hiding = False
    return url[: query + 1] + "&".join(params)
