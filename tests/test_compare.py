"""The end-to-end oracle (tests/compare.py) itself: both of its readings of the chain
agree, and every kind of damage to a stored row is reported."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
from graphql import build_schema, parse, validate

from gnosync.devnet import schema_sdl

from . import shared_files
from .compare import (
    BLOCKS_QUERY,
    TRANSACTIONS_QUERY,
    block_type,
    transaction_type,
    differences,
    rfc3339_nano,
    selection,
    source_data,
    transaction_differences,
    upstream_schema,
)
from .test_cli import gnosync


@pytest.mark.parametrize("kind", ["blocks", "transactions"])
def test_the_oracle_documents_validate_against_both_schemas(kind):
    document = {
        "blocks": lambda: BLOCKS_QUERY % selection(block_type(), skip=frozenset({"txs"})),
        "transactions": lambda: TRANSACTIONS_QUERY % selection(transaction_type()),
    }[kind]()
    for schema in (upstream_schema(), build_schema(schema_sdl())):
        assert validate(schema, parse(document)) == []


async def test_the_chain_and_its_http_answers_agree_past_a_small_cap(devnet):
    chain, url = devnet(blocks=300, max_elements=7)
    assert max(chain.num_txs(h) for h in chain.tx_heights(0, 300)) > 7  # pages within a height
    from_chain = await source_data(chain, 0, 300)
    over_http = await source_data(url, 0, 300)
    assert from_chain == over_http
    blocks, txs = from_chain
    assert sorted(blocks) == list(range(301))
    assert len(txs) == sum(chain.num_txs(h) for h in range(301))
    assert await source_data(url, 17, 17) == await source_data(chain, 17, 17)


def test_times_render_as_go_prints_them():
    utc = timezone.utc
    moment = datetime(2026, 3, 16, 9, 0, 2, 123456, tzinfo=utc)
    assert rfc3339_nano(moment, 789) == "2026-03-16T09:00:02.123456789Z"
    assert rfc3339_nano(moment, 0) == "2026-03-16T09:00:02.123456Z"
    assert rfc3339_nano(moment.replace(microsecond=100000), 0) == "2026-03-16T09:00:02.1Z"
    assert rfc3339_nano(moment.replace(microsecond=0), 0) == "2026-03-16T09:00:02Z"
    assert rfc3339_nano(moment.replace(microsecond=0), 1) == "2026-03-16T09:00:02.000000001Z"
    other_zone = moment.astimezone(timezone(timedelta(hours=-5)))
    assert rfc3339_nano(other_zone, 789) == "2026-03-16T09:00:02.123456789Z"


SERVED = {
    "index": 0, "hash": "aGFzaA==", "success": False, "block_height": 9, "gas_wanted": 10,
    "gas_used": 7, "gas_fee": {"amount": 1, "denom": "ugnot"}, "content_raw": "Tx{00FF}",
    "memo": "nul \x00 here",
    "messages": [{"typeUrl": "exec", "route": "vm",
                  "value": {"__typename": "MsgCall", "args": ["a\x00b"]}}],
    "response": {"log": "", "info": "", "error": None, "data": "",
                 "events": [{"__typename": "GnoEvent", "attrs": [{"key": "k\x00", "value": "v"}]}]},
}


def stored(sanitized: bool | None, **changes) -> dict:
    import json

    row = {
        "block_height": 9, "tx_index": 0, "hash": "aGFzaA==", "success": False,
        "gas_wanted": 10, "gas_used": 7, "gas_fee_amount": 1, "gas_fee_denom": "ugnot",
        "content_raw": "Tx{00FF}", "memo": "nul \ufffd here",
        "messages": json.dumps([{"typeUrl": "exec", "route": "vm",
                                 "value": {"__typename": "MsgCall", "args": ["a\ufffdb"]}}]),
        "response": json.dumps({"log": "", "info": "", "error": None, "data": "", "events": [
            {"__typename": "GnoEvent", "attrs": [{"key": "k\ufffd", "value": "v"}]}]}),
    }
    if sanitized is not None:
        row["sanitized"] = sanitized
    row.update(changes)
    return row


def columns(found) -> set[str]:
    return {column for column, _, _ in found}


def test_sanitized_rows_compare_after_the_replacement():
    assert transaction_differences(stored(True), SERVED) == []
    # The flag must say what happened, and only flagged rows get the replacement.
    assert columns(transaction_differences(stored(False), SERVED)) == {
        "sanitized", "memo", "messages", "response"}
    # Before the column exists, every row compares exactly.
    assert columns(transaction_differences(stored(None), SERVED)) == {"memo", "messages", "response"}
    # content_raw is exact, always; a flag on a row that needs no replacement is wrong.
    assert columns(transaction_differences(stored(True, content_raw="Tx{00}"), SERVED)) == {"content_raw"}
    clean = {**SERVED, "memo": "fine", "messages": [], "response": {**SERVED["response"], "events": []}}
    row = stored(True, memo="fine", messages="[]", response=stored(True)["response"])
    assert "sanitized" in columns(transaction_differences(row, clean))
    # A column the oracle does not know is a difference, not silence.
    assert columns(transaction_differences(stored(True, surprise=1), SERVED)) == {"surprise"}


async def test_every_kind_of_damage_is_reported(devnet, db_dsn):
    chain, url = devnet(blocks=300)
    result = gnosync("sync", "--from", "0", "--to", "300", "--source", url, "--db", db_dsn)
    assert result.returncode == 0, result.stderr
    assert await differences(db_dsn, chain, 0, 300) == []
    assert await differences(db_dsn, url, 0, 300) == []
    first, second, third, fourth = [
        (h, i) for h in chain.tx_heights(1, 300) for i in range(chain.num_txs(h))][:4]

    conn = await asyncpg.connect(db_dsn)
    try:
        for sql in [
            "UPDATE indexer.blocks SET time_ns = (time_ns + 1) % 1000 WHERE height = 5",
            "UPDATE indexer.blocks SET time = time + interval '1 microsecond' WHERE height = 6",
            "UPDATE indexer.blocks SET app_hash = 'x' WHERE height = 7",
            "UPDATE indexer.blocks SET proposer_address = 'g1nobody' WHERE height = 8",
        ]:
            await conn.execute(sql)
        where = "WHERE block_height = $1 AND tx_index = $2"
        await conn.execute(f"UPDATE indexer.transactions SET memo = memo || ' ' {where}", *first)
        await conn.execute(
            "UPDATE indexer.transactions SET messages = jsonb_set(messages,"
            f" '{{0,value,__typename}}', '\"Other\"'), response = response - 'log' {where}", *second)
        await conn.execute(
            f"UPDATE indexer.transactions SET gas_fee_amount = gas_fee_amount + 1 {where}", *third)
        await conn.execute(f"DELETE FROM indexer.transactions {where}", *fourth)
    finally:
        await conn.close()

    for source in (chain, url):
        problems = await differences(db_dsn, source, 0, 300)
        expected = [
            "block 5 time:", "block 6 time:", "block 7 app_hash:", "block 8 proposer_address:",
            f"transaction {first[0]}/{first[1]} memo:",
            f"transaction {second[0]}/{second[1]} messages:",
            f"transaction {second[0]}/{second[1]} response:",
            f"transaction {third[0]}/{third[1]} gas_fee_amount:",
            f"transaction {fourth[0]}/{fourth[1]} ",
        ]
        for start in expected:
            assert any(p.startswith(start) for p in problems), (start, problems)
        assert len(problems) == len(expected), problems
        assert any(p.endswith("is not stored") for p in problems)
    # A stored range other than the one asked for.
    problems = await differences(db_dsn, chain, 0, 299)
    assert any(p.startswith("heights differ: missing [] extra [300]") for p in problems)
