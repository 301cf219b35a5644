"""PostgreSQL connection strings: where they point, and the form asyncpg takes.

gnosync accepts a DSN in either of libpq's forms: a URI
(``postgresql://user:secret@host:5432/db?sslmode=require``) or key=value pairs
(``host=db user=gnosync password=secret dbname=chain``). asyncpg takes only the URI,
so :func:`to_uri` converts the second form. Redaction lives in :mod:`gnosync.redact`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from gnosync.redact import redact_dsn

__all__ = [
    "describe_dsn", "is_uri", "parse_pairs", "password_of", "redact_dsn", "to_uri", "without_password",
]

_SCHEMES = ("postgresql://", "postgres://")
# key = value, where value is a single-quoted string (with \' and \\ escapes) or a word.
_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


def is_uri(dsn: str) -> bool:
    return dsn.strip().lower().startswith(_SCHEMES)


def parse_pairs(dsn: str) -> dict[str, str]:
    """The settings of a key=value DSN. Raises ``ValueError`` on malformed input."""
    settings: dict[str, str] = {}
    position = 0
    text = dsn.strip()
    while position < len(text):
        match = _PAIR.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"malformed connection string near {text[position:position + 20]!r}")
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        settings[key] = value
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return settings


def to_uri(dsn: str) -> str:
    """``dsn`` as a URI asyncpg accepts. Raises ``ValueError`` on malformed input."""
    text = dsn.strip()
    if is_uri(text):
        return text
    settings = parse_pairs(text)
    user = settings.pop("user", "")
    password = settings.pop("password", "")
    host = settings.pop("host", "")
    port = settings.pop("port", "")
    dbname = settings.pop("dbname", "")
    query: dict[str, str] = {}
    if host.startswith("/") or "," in host:
        query["host"] = host
        host = ""
    if port and not host:
        query["port"] = port
        port = ""
    query.update(settings)
    userinfo = ""
    if user or password:
        userinfo = quote(user, safe="")
        if password:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    authority = userinfo + host + (f":{port}" if port else "")
    uri = f"postgresql://{authority}/{quote(dbname, safe='')}"
    if query:
        uri += "?" + urlencode(query)
    return uri


def password_of(dsn: str) -> str | None:
    """The password written in ``dsn``, if any (to scrub it from messages)."""
    try:
        parts = urlsplit(to_uri(dsn))
    except ValueError:
        return None
    password = parts.password
    if password:
        return unquote(password)
    for key, value in parse_qsl(parts.query):
        if key == "password" and value:
            return value
    return None


def without_password(dsn: str) -> str:
    """``dsn`` as a URI with its passwords left out (not masked): still a DSN psql and
    drivers take, which then read the password from ``PGPASSWORD`` or ``~/.pgpass``, or
    ask for it. Raises ``ValueError`` on malformed input."""
    parts = urlsplit(to_uri(dsn))
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = (userinfo.partition(":")[0] + at + hosts) if at else hosts
    query = [
        (key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("password", "sslpassword")
    ]
    return parts._replace(netloc=netloc, query=urlencode(query, safe="/", quote_via=quote)).geturl()


def describe_dsn(dsn: str) -> str:
    """Where ``dsn`` points, as ``host:port/database`` (``h1:p1,h2:p2/database`` for a
    multi-host DSN); never includes a password."""
    try:
        parts = urlsplit(to_uri(dsn))
        query = dict(parse_qsl(parts.query))
        hostinfo = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "an unparsable DSN"
    host, port = hostinfo, ""
    if hostinfo and "," not in hostinfo:
        if hostinfo.startswith("["):  # [IPv6]:port
            bracket = hostinfo.find("]")
            host, port = hostinfo[: bracket + 1], hostinfo[bracket + 2 :]
        elif ":" in hostinfo:
            host, _, port = hostinfo.rpartition(":")
    host = unquote(host) or query.get("host") or os.environ.get("PGHOST") or "localhost"
    port = port or query.get("port") or os.environ.get("PGPORT") or "5432"
    user = unquote(parts.username or "") or query.get("user") or os.environ.get("PGUSER") or ""
    database = (
        unquote(parts.path.lstrip("/"))
        or query.get("dbname")
        or query.get("database")
        or os.environ.get("PGDATABASE")
        or user
        or "postgres"
    )
    if "," in hostinfo:  # a multi-host URI names each host with its port
        return f"{unquote(hostinfo)}/{database}"
    if "," in host:  # host=h1,h2 port=p1,p2: each host with its port, as libpq pairs them
        ports = port.split(",")
        hosts = host.split(",")
        ports = ports if len(ports) == len(hosts) else [ports[0]] * len(hosts)
        return ",".join(f"{h}:{p}" for h, p in zip(hosts, ports)) + f"/{database}"
    return f"{host}:{port}/{database}"
