"""Secrets out of everything gnosync shows: DSNs, source URLs, and any text holding them.

The one place that knows what a secret looks like. A PostgreSQL DSN keeps its user and
loses its passwords (``postgresql://gno:***@db/chain``, ``password=***``). A source URL
loses its whole userinfo (``https://***@host/...``: HTTP basic credentials, where a
lone user name is often the token itself) and the value of every query or fragment
parameter whose name looks like a credential (``?apikey=***``, ``token``, ``key``,
``access_token``, ``secret``, ``password``, ``signature``...). :func:`redact_text`
applies both to every URL and ``password=`` pair inside free text (a library's error
message, a log line), and is the safety net behind the display names that gnosync
builds for each endpoint and database.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

REDACTED = "***"

_DSN_SCHEMES = ("postgresql", "postgres")
_DSN_QUERY_SECRETS = frozenset({"password", "sslpassword"})
# Parameter names (lowercased, without '-' and '_') that carry credentials in URLs.
_URL_SECRET_WORDS = ("key", "token", "secret", "pass", "pwd", "auth", "sig", "credential", "session", "jwt")

# key = value in a libpq key=value DSN, value single-quoted (with \' and \\) or a word.
_PAIR_SECRET = re.compile(
    r"(?<![A-Za-z0-9_])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']*)", re.IGNORECASE
)
# A URL inside free text: a scheme, then everything up to whitespace, a quote, a
# bracket or a control character.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>\\\x00-\x1f\x7f]+")


def redact_url(url: str) -> str:
    """``url`` without its userinfo and credential-like parameter values; safe to show.

    Idempotent; a URL without secrets comes back unchanged. A ``postgresql://`` URL is
    treated as a DSN (see :func:`redact_dsn`).
    """
    scheme = url.strip().partition("://")[0].lower()
    if scheme in _DSN_SCHEMES:
        return redact_dsn(url)
    return _redact_uri(url.strip(), keep_user=False, secret=_is_url_secret)


def redact_dsn(dsn: str) -> str:
    """``dsn`` (URI or key=value form) with every password replaced by ``***``."""
    text = dsn.strip()
    if not text.lower().startswith(tuple(f"{s}://" for s in _DSN_SCHEMES)):
        return _PAIR_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    return _redact_uri(text, keep_user=True, secret=lambda key: key.lower() in _DSN_QUERY_SECRETS)


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted and every ``password=`` value hidden."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    if "assword" in text or "ASSWORD" in text:
        text = _PAIR_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _is_url_secret(key: str) -> bool:
    name = unquote(key).lower().replace("-", "").replace("_", "")
    return any(word in name for word in _URL_SECRET_WORDS)


def _redact_uri(text: str, *, keep_user: bool, secret) -> str:
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text
    # The authority ends at the first '/', '?' or '#'; a password may hold none of them
    # unencoded, but may hold '@' and ':' when written sloppily, so split at the last '@'.
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, _, hosts = authority.rpartition("@")
        if keep_user:
            user, colon, password = userinfo.partition(":")
            if colon and password:
                userinfo = f"{user}:{REDACTED}"
        elif userinfo:
            userinfo = REDACTED
        authority = f"{userinfo}@{hosts}"
    path, hash_mark, fragment = tail.partition("#")
    path, question, query = path.partition("?")
    if question:
        query = _redact_params(query, secret)
    if hash_mark and "=" in fragment:
        fragment = _redact_params(fragment, secret)
    return f"{scheme}://{authority}{path}{question}{query}{hash_mark}{fragment}"


def _redact_params(params: str, secret) -> str:
    """``a=1&b=2`` with the values of secret keys replaced."""
    parts = []
    for part in params.split("&"):
        key, equals, value = part.partition("=")
        if equals and value and secret(key):
            part = f"{key}={REDACTED}"
        parts.append(part)
    return "&".join(parts)
