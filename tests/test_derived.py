"""The derived tables of a synced devnet agree row by row with tests/derived_oracle.py,
which recomputes them from the devnet's own chain data (not with gnosync.decode)."""

from __future__ import annotations

import collections
import json
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from gnosync.devnet import Chain, ChainConfig
from gnosync.sync.loop import sync_range

from . import derived_oracle as oracle
from .shared_files import gnoland1_files
from .test_cli import gnosync
from .test_sync import ONE_TRY, close, open_syncer

JSON_COLUMNS = {("events", "attrs")}


def served(chain: Chain) -> list[dict[str, Any]]:
    return chain.transactions_in(chain.lowest, chain.tip)


async def sync(url: str, dsn: str, tip: int) -> None:
    syncer = await open_syncer(url, dsn)
    try:
        await sync_range(syncer, 0, tip, batch_size=25, policy=ONE_TRY)
    finally:
        await close(syncer)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, list):
        return tuple(value)
    return value


def _normal(table: str, columns: tuple[str, ...], row: tuple) -> tuple:
    return tuple(
        oracle.canonical_json(value) if (table, column) in JSON_COLUMNS and value is not None else _plain(value)
        for column, value in zip(columns, row, strict=True)
    )


async def stored_tables(dsn: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table, (columns, _) in oracle.TABLES.items():
            rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM indexer.{table}")
            out[table] = [_normal(table, columns, tuple(row)) for row in rows]
        return out
    finally:
        await conn.close()


def differences(expected: dict[str, list[tuple]], got: dict[str, list[tuple]]) -> list[str]:
    """One line per table that differs: counts and a few rows missing / unexpected."""
    lines = []
    for table, (columns, _) in oracle.TABLES.items():
        want = collections.Counter(_normal(table, columns, row) for row in expected[table])
        have = collections.Counter(got[table])
        if want == have:
            continue
        missing = sorted((want - have).elements(), key=repr)[:3]
        extra = sorted((have - want).elements(), key=repr)[:3]
        lines.append(f"{table}: expected {sum(want.values())} rows, got {sum(have.values())};"
                     f" missing {missing}; unexpected {extra}")
    return lines


def test_the_devnet_serves_every_shape_the_decoder_knows() -> None:
    """Not a database test: the devnet's chain, read by the oracle, holds each case."""
    chain = Chain(ChainConfig(blocks=150, genesis_txs=8, dense_start=2, dense_length=120, failure_rate=0.1))
    txs = served(chain)
    rows = oracle.derive_all(txs)
    kinds = collections.Counter(row[8] for row in rows["grc20_transfers"])
    assert kinds["mint"] and kinds["burn"] and kinds["transfer"]
    tokens = {row[0]: row for row in rows["grc20_tokens"]}
    foo = tokens["gno.land/r/demo/defi/foo20.FOO.0000000"]
    assert foo[1:] == ("gno.land/r/demo/defi/foo20", "Foo", "FOO", 4, 0)  # NewToken at genesis
    legacy = tokens["gno.land/r/gnoswap/gns"]  # Transfer without a token attribute
    assert legacy[1:5] == ("gno.land/r/gnoswap/gns", None, None, None)
    events = [e for tx in txs for e in tx["response"]["events"] or []]
    nft = [e for e in events if e.get("pkg_path") == "gno.land/p/demo/tokens/grc721"]
    assert nft and all(e["type"] == "Transfer" for e in nft)
    assert not any(row[4] == "gno.land/p/demo/tokens/grc721" for row in rows["grc20_transfers"])
    assert {"Approval", "NewToken", "StorageDepositEvent", "StorageUnlockEvent"} <= {e.get("type") for e in events}
    assert any(e["__typename"] == "UnknownEvent" for e in events)
    # Hand-typed addresses: some valid (tx_accounts 'event'), some with a bad checksum (not).
    typed = [a["value"] for e in events if e.get("type") == "ProfileFieldSet"
             for a in e["attrs"] if a["value"].startswith("g1")]
    assert any(oracle.is_address(v) for v in typed) and any(not oracle.is_address(v) for v in typed)
    accounts = {row[0] for row in rows["tx_accounts"]}
    assert not any(v in accounts for v in typed if not oracle.is_address(v))
    sources = {row[8] for row in rows["coin_transfers"]}
    assert sources == {"send", "call", "add_package", "run"}
    assert any(len({r[6] for r in rows["coin_transfers"] if r[:3] == row[:3]}) > 1 for row in rows["coin_transfers"])
    failed = [tx for tx in txs if not tx["success"]]
    assert failed and all(not tx["response"]["events"] for tx in failed)
    assert rows["packages"] and rows["package_files"]
    # The same config makes the same chain.
    assert oracle.derive_all(served(Chain(chain.config))) == rows


async def test_derived_tables_agree_with_the_chain_row_by_row(devnet, db_dsn):
    chain, url = devnet(profile="dense", blocks=150, genesis_txs=8, failure_rate=0.05, hostile_txs=(40, 90))
    await sync(url, db_dsn, chain.tip)
    expected = oracle.derive_all(served(chain))
    assert all(expected[table] for table in oracle.TABLES), [t for t in oracle.TABLES if not expected[t]]
    assert differences(expected, await stored_tables(db_dsn)) == []

    # Emptied and rebuilt from the stored transactions alone, they agree again.
    conn = await asyncpg.connect(db_dsn)
    try:
        for table in oracle.TABLES:
            if table != "package_files":
                await conn.execute(f"DELETE FROM indexer.{table}")
    finally:
        await conn.close()
    result = gnosync("rederive", "--db", db_dsn, "--batch-size", "40")
    assert result.returncode == 0, result.stderr
    assert differences(expected, await stored_tables(db_dsn)) == []


@pytest.mark.needs_shared("gnoland1")
async def test_every_real_gnoland1_message_decodes(devnet, db_dsn):
    chain, url = devnet(blocks=1500, genesis_txs=2, txs_files=gnoland1_files(), tx_rate=0.0)
    await sync(url, db_dsn, chain.tip)
    txs = served(chain)
    conn = await asyncpg.connect(db_dsn)
    try:
        unexpected = await conn.fetchval("SELECT count(*) FROM indexer.messages WHERE kind = 'UnexpectedMessage'")
        by_kind = dict(await conn.fetch("SELECT kind, count(*) FROM indexer.messages GROUP BY kind"))
    finally:
        await conn.close()
    served_kinds = collections.Counter(m["value"]["__typename"] for tx in txs for m in tx["messages"])
    assert unexpected == 0
    assert by_kind == dict(served_kinds)
    assert sum(by_kind.values()) > 2000
    expected = oracle.derive_all(txs)
    assert differences(expected, await stored_tables(db_dsn)) == []


def test_oracle_rules_on_odd_shapes() -> None:
    """The rules of the spec the devnet does not exercise, on hand-made transactions."""
    address = oracle.package_address("gno.land/r/demo/x")
    tx = {
        "block_height": 7, "index": 0, "success": True,
        "messages": [
            {"typeUrl": "send", "route": "bank", "value": {
                "__typename": "BankMsgSend", "from_address": address, "to_address": address,
                "amount": "100ugnot,0foo,bad,5foo"}},
            {"typeUrl": "odd", "value": {}},
        ],
        "response": {"events": [
            {"__typename": "GnoEvent", "type": "Transfer", "pkg_path": "p",
             "attrs": [{"key": "from", "value": ""}, {"key": "to", "value": ""}, {"key": "value", "value": "1"}]},
            {"__typename": "GnoEvent", "type": "Transfer", "pkg_path": "p",
             "attrs": [{"key": "from", "value": "a"}, {"key": "to", "value": ""},
                       {"key": "value", "value": "9" * 39}]},
            {"__typename": "GnoEvent", "type": "Transfer", "pkg_path": "gno.land/p/t",
             "attrs": [{"key": "token", "value": "gno.land/r/x/y.Z"}, {"key": "from", "value": "a"},
                       {"key": "from", "value": "b"}, {"key": "to", "value": "c"}, {"key": "value", "value": "3"}]},
            {"__typename": "Mystery", "x": 1},
        ]},
    }
    rows = oracle.derive_all([tx])
    assert [(r[3], r[6], r[7]) for r in rows["coin_transfers"]] == [(0, "ugnot", 100), (3, "foo", 5)]
    assert rows["messages"][1][3:7] == ("odd", "", "UnexpectedMessage", None)
    assert rows["grc20_transfers"] == [(7, 0, 2, "gno.land/r/x/y.Z", "gno.land/p/t", "a", "c", 3, "transfer")]
    assert rows["grc20_tokens"] == [("gno.land/r/x/y.Z", "gno.land/r/x/y", None, None, None, 7)]
    assert rows["events"][3][3] == "Mystery" and json.loads(rows["events"][3][10]) == {"__typename": "Mystery", "x": 1}
    assert rows["tx_accounts"] == [(address, 7, 0, "recipient"), (address, 7, 0, "sender")]
