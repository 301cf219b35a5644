"""What tx-indexer really serves at the edges, synced end to end: a genesis block listing
hundreds of package deployments, a block that leaves out of ``Block.txs`` a transaction
tx-indexer cannot decode, and byte-identical transactions sharing a hash.

Each runs the ``gnosync`` command against the devnet over loopback and a real
PostgreSQL, and compares what is stored with the devnet's own chain data.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request

import asyncpg

from gnosync.devnet import gnoland1_exports

from .compare import split_bodies


def gnosync(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gnosync", *args], capture_output=True, text=True, timeout=timeout
    )


def sync(url: str, dsn: str, start: int, end: int) -> None:
    result = gnosync("sync", "--from", str(start), "--to", str(end), "--source", url, "--db", dsn)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


async def fetch(dsn: str, query: str, *args) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(row) for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()


TXS_AT = (
    "SELECT block_height, tx_index, hash, memo, content_raw, gas_fee_amount, gas_fee_denom, sanitized,"
    " messages::text AS messages,"
    " (SELECT COALESCE(json_agg(json_build_array(f.msg_index, f.name, f.body)), '[]')::text"
    "  FROM indexer.package_files f WHERE f.block_height = t.block_height AND f.tx_index = t.tx_index) AS files"
    " FROM indexer.transactions t WHERE block_height = $1 ORDER BY tx_index"
)


def assert_stored_as_served(rows: list[dict], served: list[dict]) -> None:
    """The stored rows (``TXS_AT``) are ``served`` as gnosync stores them: messages with
    package file bodies in package_files."""
    assert [(r["tx_index"], r["hash"], r["content_raw"]) for r in rows] == [
        (tx["index"], tx["hash"], tx["content_raw"]) for tx in served
    ]
    for row, tx in zip(rows, served):
        assert row["memo"] == tx["memo"] and not row["sanitized"]
        assert (row["gas_fee_amount"], row["gas_fee_denom"]) == (tx["gas_fee"]["amount"], tx["gas_fee"]["denom"])
        messages, bodies = split_bodies(tx["messages"], row["block_height"], row["tx_index"])
        assert_selected(json.loads(row["messages"]), messages)
        files = {(row["block_height"], row["tx_index"], m, name): body for m, name, body in json.loads(row["files"])}
        assert files == bodies


def assert_selected(stored, served) -> None:
    """``stored`` is ``served`` as gnosync's query selects it: every stored field is the
    served one (the query leaves some out, e.g. MsgAddPackage's ``deposit``)."""
    if isinstance(stored, dict):
        assert isinstance(served, dict), (stored, served)
        for key, value in stored.items():
            assert key in served, key
            assert_selected(value, served[key])
    elif isinstance(stored, list):
        assert isinstance(served, list) and len(stored) == len(served)
        for a, b in zip(stored, served):
            assert_selected(a, b)
    else:
        assert stored == served


async def test_genesis_of_hundreds_of_packages_is_synced_and_verified(devnet, db_dsn):
    chain, url = devnet(blocks=40, genesis_txs=300, genesis_files=gnoland1_exports())
    genesis = chain.block(0)
    assert genesis["hash"] == "" and len(genesis["txs"]) == genesis["num_txs"] == 300
    sync(url, db_dsn, 0, 40)
    (block,) = await fetch(db_dsn, "SELECT hash, num_txs, total_txs FROM indexer.blocks WHERE height = 0")
    assert block == {"hash": "", "num_txs": 300, "total_txs": 300}
    assert_stored_as_served(await fetch(db_dsn, TXS_AT, 0), chain.transactions(0))
    report = gnosync("verify", "--json", "--db", db_dsn)
    assert report.returncode == 0 and json.loads(report.stdout)["ok"], report.stdout


async def test_block_leaving_out_an_undecodable_transaction_is_synced_past(devnet, db_dsn):
    """Block 5055 lists 19 of its 20 transactions: the 20th is one tx-indexer cannot
    decode, served by getTransactions all the same."""
    chain, url = devnet(blocks=6000, undecodable_txs=(5055,))
    block = chain.block(5055)
    assert block["num_txs"] == 20 and len(block["txs"]) == 19
    sync(url, db_dsn, 0, 6000)
    (state,) = await fetch(db_dsn, "SELECT last_block_h, last_error FROM indexer.app_state")
    assert state == {"last_block_h": 6000, "last_error": None}
    rows = await fetch(db_dsn, TXS_AT, 5055)
    assert_stored_as_served(rows, chain.transactions(5055))
    listed = {entry["hash"] for entry in block["txs"]}
    assert [row["tx_index"] for row in rows if row["hash"] not in listed] == [7]
    (count,) = await fetch(db_dsn, "SELECT count(*) AS n FROM indexer.transactions")
    assert count["n"] == len(chain.transactions_in(0, 6000))


async def test_identical_genesis_transactions_are_both_stored_and_reported(devnet, db_dsn):
    """Unsigned genesis transactions can repeat byte for byte: both copies are stored at
    their indexes, and verify names the shared hash in a note, not as damage (exit 0)."""
    chain, url = devnet(blocks=120, genesis_txs=12, genesis_repeats=2)
    served = chain.transactions(0)
    repeated = {tx["hash"] for tx in served if [t["hash"] for t in served].count(tx["hash"]) > 1}
    assert repeated
    sync(url, db_dsn, 0, 120)
    assert_stored_as_served(await fetch(db_dsn, TXS_AT, 0), served)
    report = gnosync("verify", "--json", "--db", db_dsn)
    assert report.returncode == 0, report.stdout
    verified = json.loads(report.stdout)
    assert verified["ok"] and verified["problems"] == []
    assert {h for h in repeated if any(h in note and "[0, 0]" in note for note in verified["notes"])} == repeated
    # The same at two heights: a transaction above genesis identical to a genesis one.
    height = next(h for h in range(1, chain.tip + 1) if chain.num_txs(h))
    twin = next(iter(repeated))
    await fetch(
        db_dsn,
        "UPDATE indexer.transactions SET hash = $1 WHERE block_height = $2 AND tx_index = 0",
        twin, height,
    )
    notes = json.loads(gnosync("verify", "--json", "--db", db_dsn).stdout)["notes"]
    assert any(twin in note and f", {height}]" in note for note in notes)


def test_the_quickstart_devnet_serves_a_real_sized_genesis(db_dsn):
    """``gnosync devnet`` as the README starts it: genesis lists its 300 transactions,
    a few MB of package deployments, and gnosync syncs them."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gnosync", "devnet", "--port", "0", "--blocks", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        match = re.search(r"(http://\S+/graphql/query)", process.stdout.readline())
        assert match, "the devnet printed no URL"
        url = match.group(1)
        query = (
            "{ getBlocks(where: {height: {eq: 0}}) { hash num_txs txs { hash } } "
            "getTransactions(where: {block_height: {eq: 0}}) { hash content_raw } }"
        )
        request = urllib.request.Request(url, data=json.dumps({"query": query}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            data = json.loads(response.read())["data"]
        (genesis,) = data["getBlocks"]
        txs = data["getTransactions"]
        assert genesis["hash"] == "" and genesis["num_txs"] == len(genesis["txs"]) == len(txs) == 300
        assert [t["hash"] for t in genesis["txs"]] == [t["hash"] for t in txs]
        assert sum(len(t["content_raw"]) // 2 for t in txs) > 2_000_000
        sync(url, db_dsn, 0, 20)
        rows = asyncio.run(fetch(db_dsn, "SELECT hash FROM indexer.transactions WHERE block_height = 0 ORDER BY tx_index"))
        assert [r["hash"] for r in rows] == [t["hash"] for t in txs]
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
