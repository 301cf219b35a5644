"""Chain strings made storable: what PostgreSQL's ``text`` and ``jsonb`` refuse, replaced.

PostgreSQL (server encoding UTF8) refuses three things a Gno transaction can carry:

* the NUL character: in ``text`` as a raw character ("invalid byte sequence for encoding
  UTF8: 0x00"), in ``jsonb`` as the escape ``\\u0000`` ("unsupported Unicode escape
  sequence");
* bytes that are not UTF-8: tx-indexer serves a string's bytes as they are (Go strings
  are bytes, and gqlgen writes them into the answer unchecked), so a memo, call argument
  or event attribute can arrive as invalid UTF-8;
* UTF-16 surrogates that are not a pair: a lone ``\\ud800`` escape in ``jsonb``
  ("Unicode low surrogate must follow a high surrogate"), and in ``text`` a lone
  surrogate character, which is not UTF-8 at all.

Each of these becomes U+FFFD (the replacement character) and the caller is told that
something was replaced, so the row can be marked. Everything else passes through
unchanged, byte for byte: a valid surrogate pair, any other escape (``\\u0001``,
``\\\\u0000``, which is a backslash and the text "u0000"), U+FFFD that was already
there. Pure functions; the common case (nothing to replace) costs two or three scans of
the text and no JSON parsing.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"

# One JSON escape: a surrogate pair (kept), any other \uXXXX, or a one-character escape
# (consumed whole, so that the "u0000" of an escaped backslash is never read as one).
_ESCAPE = re.compile(
    r"\\(?:(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|.)",
    re.DOTALL,
)
# What text cannot hold: NUL and surrogates (a str holds them only as lone code points).
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def clean_text(value: str) -> tuple[str, bool]:
    """``value`` as PostgreSQL ``text`` accepts it, and whether anything was replaced.

    NUL and lone surrogates become U+FFFD.
    """
    if value.isascii():  # O(1) for str; then one memchr
        if "\x00" not in value:
            return value, False
        return value.replace("\x00", REPLACEMENT), True
    if _BAD_TEXT.search(value) is None:
        return value, False
    return _BAD_TEXT.sub(REPLACEMENT, value), True


def clean_json(raw: bytes) -> tuple[str, bool]:
    """JSON text ``raw`` as PostgreSQL ``jsonb`` accepts it, and whether anything was
    replaced.

    ``raw`` is JSON as a parser that skips UTF-8 checks accepts it (msgspec keeps
    ``Raw`` values so): NUL (the ``\\u0000`` escape or a raw NUL byte), lone surrogate
    escapes and bytes that are not UTF-8 become U+FFFD. The result is still the same
    JSON document apart from those characters; it is not parsed or re-encoded.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # One U+FFFD per maximal invalid subsequence (Unicode's recommended practice).
        text = raw.decode("utf-8", "replace")
        changed = True
    else:
        # The common case: no NUL and no escape at all, or none that is \u. Checked on
        # the text, whose one-character searches are memchr (bytes' are slower).
        if "\x00" not in text and ("\\" not in text or "\\u" not in text):
            return text, False
        changed = False
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
        changed = True
    if "\\u" in text:
        replaced = _ESCAPE.sub(_clean_escape, text)
        if replaced != text:
            text, changed = replaced, True
    return text, changed


def _clean_escape(match: re.Match[str]) -> str:
    code = match.group(2)
    if code is not None:
        value = int(code, 16)
        if value == 0 or 0xD800 <= value <= 0xDFFF:
            return REPLACEMENT
    return match.group(0)
