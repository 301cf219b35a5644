"""Hostile transaction data (NUL, bytes that are not UTF-8, lone surrogates) is stored,
marked ``sanitized``, and never stops the sync.

The pure functions are checked against a real PostgreSQL (it must accept every result);
the sync against the devnet over loopback, whose hostile transactions are served with
their bytes as tx-indexer serves them.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnosync.errors import BatchInvalid
from gnosync.model import Coin
from gnosync.store import block_row, sql, transaction_row
from gnosync.store.sanitize import REPLACEMENT, clean_json, clean_text

from .factory import make_chain, make_tx

# What PostgreSQL cannot hold, as Python text: NUL and surrogate code points.
BAD = re.compile("[\x00\ud800-\udfff]")

# Any code point, surrogates included, with the troublesome ones drawn often.
CHARACTERS = st.one_of(
    st.characters(codec=None, categories=None, exclude_categories=()),
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ufffd", "\\", '"', "😀", "\x01", "\n"]),
)
TEXT = st.text(CHARACTERS, max_size=40)
# Text holding "\u0000" literally: after JSON encoding, an escaped backslash before "u0000".
TRICKY_TEXT = st.one_of(TEXT, st.sampled_from(["\\u0000", "\\\\u0000", "\\ud800", "a\\", "\\\\"]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4),
    max_leaves=12,
)


def gqlgen_quote(data: bytes) -> bytes:
    """A Go string's bytes as gqlgen's ``writeQuotedString`` writes them: ``"``, ``\\``
    and control characters escaped, every other byte as it is (valid UTF-8 or not)."""
    out = bytearray(b'"')
    for byte in data:
        if byte == 0x22:
            out += b'\\"'
        elif byte == 0x5C:
            out += b"\\\\"
        elif byte == 0x0A:
            out += b"\\n"
        elif byte < 0x20:
            out += b"\\u%04X" % byte
        else:
            out.append(byte)
    out += b'"'
    return bytes(out)


def replaced(value):
    """``value`` (parsed JSON) with what PostgreSQL cannot hold replaced by U+FFFD."""
    if isinstance(value, str):
        return BAD.sub(REPLACEMENT, value)
    if isinstance(value, list):
        return [replaced(item) for item in value]
    if isinstance(value, dict):
        return {replaced(key): replaced(item) for key, item in value.items()}
    return value


@pytest.fixture
def pg(db_dsn: str) -> Iterator:
    """``pg(query, *args)`` on one connection of a fresh database, synchronously (for
    hypothesis)."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(db_dsn))

    def fetchval(query: str, *args):
        return loop.run_until_complete(conn.fetchval(query, *args))

    try:
        yield fetchval
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


PG_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PG_SETTINGS
@given(text=TEXT)
def test_clean_text_is_accepted_by_postgresql_and_keeps_clean_text(pg, text):
    cleaned, changed = clean_text(text)
    assert pg("SELECT $1::text", cleaned) == cleaned
    assert cleaned == BAD.sub(REPLACEMENT, text)
    assert changed == (BAD.search(text) is not None)
    if not changed:
        assert cleaned is text


def holds_bad(value) -> bool:
    if isinstance(value, str):
        return BAD.search(value) is not None
    if isinstance(value, list):
        return any(holds_bad(item) for item in value)
    if isinstance(value, dict):
        return any(holds_bad(key) or holds_bad(item) for key, item in value.items())
    return False


@PG_SETTINGS
@given(value=JSON_VALUES, ascii_escapes=st.booleans())
def test_clean_json_is_accepted_by_jsonb_and_replaces_only_the_bad(pg, value, ascii_escapes):
    if ascii_escapes:  # NUL as \u0000, surrogates as \udXXX escapes (pairs stay pairs)
        raw = json.dumps(value).encode()
        bad = holds_bad(json.loads(raw))  # a pair of escapes is one character
    else:  # raw characters: a surrogate becomes bytes that are not UTF-8
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        bad = holds_bad(value)
    cleaned, changed = clean_json(raw)
    stored = json.loads(pg("SELECT $1::text::jsonb::text", cleaned))
    assert changed == bad
    if ascii_escapes:
        assert stored == replaced(json.loads(raw))
    else:
        assert stored == replaced(json.loads(raw.decode("utf-8", "replace")))
    if not bad:
        assert cleaned == raw.decode()  # byte for byte


@PG_SETTINGS
@given(strings=st.lists(st.binary(max_size=24), min_size=1, max_size=4))
def test_clean_json_takes_go_strings_as_tx_indexer_writes_them(pg, strings):
    """Arbitrary bytes, quoted as gqlgen quotes a Go string: PostgreSQL accepts the result,
    and valid UTF-8 without NUL passes through unchanged."""
    raw = b'{"args":[' + b",".join(gqlgen_quote(s) for s in strings) + b'],"n":1}'
    cleaned, changed = clean_json(raw)
    parsed = json.loads(pg("SELECT $1::text::jsonb::text", cleaned))
    expected = [BAD.sub(REPLACEMENT, s.decode("utf-8", "replace")) for s in strings]
    assert parsed == {"args": expected, "n": 1}
    valid = all(b"\x00" not in s for s in strings)
    try:
        for s in strings:
            s.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    assert changed == (not valid)
    if valid:
        assert cleaned == raw.decode()


def test_clean_json_examples():
    assert clean_json(b'{"memo":"a\\u0000b"}') == ('{"memo":"a\ufffdb"}', True)
    assert clean_json(b'["\\ud800","\\udc00x","\\ud83d\\ude00"]') == ('["\ufffd","\ufffdx","\\ud83d\\ude00"]', True)
    assert clean_json(b'["\\ud800\\u0041"]') == ('["\ufffd\\u0041"]', True)
    # An escaped backslash and the text "u0000" is no NUL.
    assert clean_json(b'["\\\\u0000", "\\\\\\u0000"]') == ('["\\\\u0000", "\\\\\ufffd"]', True)
    assert clean_json(b'["\\\\u0000"]') == ('["\\\\u0000"]', False)
    assert clean_json(b'["ok \xff\xfe", "\xed\xa0\x80"]')[1] is True
    assert clean_json('["gm 🌞", "\\u0001"]'.encode()) == ('["gm 🌞", "\\u0001"]', False)
    assert clean_text("memo\x00") == ("memo\ufffd", True)
    assert clean_text("gm 🌞 \ud800") == ("gm 🌞 \ufffd", True)
    assert clean_text("gm 🌞") == ("gm 🌞", False)


def test_transaction_row_marks_what_it_replaced():
    clean = make_tx(5, 0)
    row = dict(zip(sql.TRANSACTION_COLUMNS, transaction_row(clean)))
    assert row["sanitized"] is False
    assert row["messages"] == bytes(clean.messages).decode() and row["memo"] == clean.memo
    for change in (
        {"memo": "gm\x00"},
        {"messages": msgspec.Raw(b'[{"value":{"args":["\\u0000"]}}]')},
        {"response": msgspec.Raw(b'{"events":[{"attrs":[{"value":"\xff"}]}]}')},
        {"gas_fee": Coin(amount=1, denom="ug\x00not")},
    ):
        hostile = msgspec.structs.replace(clean, **change)
        row = dict(zip(sql.TRANSACTION_COLUMNS, transaction_row(hostile)))
        assert row["sanitized"] is True, change
        assert row["content_raw"] == clean.content_raw
        assert "\x00" not in row["memo"] + row["messages"] + row["response"] + row["gas_fee_denom"]


def test_block_row_makes_node_strings_storable_but_refuses_such_a_chain_id():
    batch, _ = make_chain(1, 1)
    block = batch.blocks[0]
    row = dict(zip(sql.BLOCK_COLUMNS, block_row(block)))
    assert row["version"] == block.version and row["chain_id"] == block.chain_id
    odd = msgspec.structs.replace(block, version="v1\x00", app_version="\ud800")
    row = dict(zip(sql.BLOCK_COLUMNS, block_row(odd)))
    assert (row["version"], row["app_version"]) == ("v1\ufffd", "\ufffd")
    with pytest.raises(BatchInvalid) as info:
        block_row(msgspec.structs.replace(block, chain_id="dev\x00"))
    assert (info.value.height, info.value.check) == (1, "chain_id")


# -- the sync, end to end ------------------------------------------------------------------


def gnosync(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gnosync", *args], capture_output=True, text=True, timeout=timeout
    )


def storable(value):
    """The devnet's own value of a served field, as PostgreSQL can hold it: the bytes
    of each string (bytes that are not UTF-8 are kept as surrogate escapes) read as
    UTF-8 with U+FFFD for what is not, and NUL as U+FFFD."""
    if isinstance(value, str):
        text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return text.replace("\x00", REPLACEMENT)
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {key: storable(item) for key, item in value.items()}
    return value


async def stored_transactions(dsn: str) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT block_height, tx_index, hash, memo, content_raw, gas_fee_denom, sanitized,"
            " messages::text AS messages, response::text AS response"
            " FROM indexer.transactions ORDER BY block_height, tx_index"
        )
        state = await conn.fetchrow("SELECT last_block_h, status, last_error FROM indexer.app_state")
    finally:
        await conn.close()
    return [dict(row) for row in rows], dict(state)


async def test_hostile_transactions_are_stored_marked_and_the_sync_goes_on(devnet, db_dsn):
    """A failed call with NUL in its memo, an argument and an event attribute, and a call
    whose argument is not UTF-8, at height 6000 of 8000: the sync reaches the end."""
    chain, url = devnet(blocks=8000, hostile_txs=(6000,))
    result = gnosync("sync", "--from", "0", "--to", "8000", "--source", url, "--db", db_dsn)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows, state = await stored_transactions(db_dsn)
    assert state["last_block_h"] == 8000 and state["last_error"] is None
    served = chain.transactions_in(0, 8000)  # the devnet's own data
    assert [(r["block_height"], r["tx_index"], r["hash"]) for r in rows] == [
        (tx["block_height"], tx["index"], tx["hash"]) for tx in served
    ]
    hostile = [r for r in rows if r["sanitized"]]
    assert [(r["block_height"], r["tx_index"]) for r in hostile] == [(6000, 0), (6000, 1)]
    for row, tx in zip(rows, served):
        assert row["content_raw"] == tx["content_raw"]  # the exact bytes, always
        if row["sanitized"]:
            assert row["memo"] == storable(tx["memo"])
            assert json.loads(row["messages"]) == storable(tx["messages"])
            assert json.loads(row["response"]) == storable(tx["response"])
        else:
            assert row["memo"] == tx["memo"]
    failed, named = hostile
    assert failed["memo"] == "memo with a NUL: \ufffd"
    failed_messages = json.loads(failed["messages"])
    assert failed_messages[0]["value"]["args"] == ["1", "Re: \ufffd the NUL thread", "body\ufffd"]
    attrs = json.loads(failed["response"])["events"][0]["attrs"]
    assert attrs[1] == {"key": "title", "value": "Re: \ufffd the NUL thread"}
    name = b"caf\xe9 \xff\xfe \xed\xa0\x80 \xe2\x82".decode("utf-8", "replace")
    assert json.loads(named["messages"])[0]["value"]["args"] == [name]
    assert json.loads(named["response"])["events"][0]["attrs"][1]["value"] == name
    assert b"\xff\xfe" in bytes.fromhex(named["content_raw"][3:-1])
