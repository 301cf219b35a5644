"""The README's first SQL questions, read out of README.md so they cannot drift, answer
on a database synced from the devnet, and agree with the devnet's own chain data."""

from __future__ import annotations

import collections
import json
import re
from decimal import Decimal
from pathlib import Path

import asyncpg

from gnosync.sync.loop import sync_range

from .test_sync import ONE_TRY, close, open_syncer

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Asking the first questions in SQL"


def readme_queries() -> list[str]:
    """The ```sql blocks of the README's SECTION, in order."""
    text = README.read_text()
    start = text.index(SECTION) + len(SECTION)
    following = re.search(r"^#{2,3} ", text[start:], re.MULTILINE)
    section = text[start: start + following.start()] if following else text[start:]
    return re.findall(r"^```sql\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def _ugnot(amount: str) -> int:
    coins = dict((denom, int(value)) for value, denom in re.findall(r"(\d+)([a-z/]+)", amount))
    return coins.get("ugnot", 0)


def test_the_section_shows_the_two_first_questions():
    queries = readme_queries()
    assert len(queries) == 2
    assert "from_address" in queries[0] and "ugnot" in queries[0]
    assert "'add_package'" in queries[1] and "creator" in queries[1]


async def test_readme_queries_answer_on_a_synced_devnet(devnet, db_dsn):
    chain, url = devnet(blocks=400, genesis_txs=6)
    syncer = await open_syncer(url, db_dsn)
    try:
        await sync_range(syncer, 0, 400, batch_size=200, policy=ONE_TRY)
    finally:
        await close(syncer)
    senders, sent = readme_queries()
    conn = await asyncpg.connect(db_dsn)
    try:
        top = await conn.fetch(senders)
        deployments = await conn.fetch(sent)
    finally:
        await conn.close()
    assert top and deployments

    # The same questions answered from the devnet's chain, not from what gnosync stored.
    txs = chain.transactions_in(0, 400)
    totals: collections.Counter[str] = collections.Counter()
    for tx in txs:
        for message in tx["messages"]:
            if tx["success"] and message["typeUrl"] == "send":
                totals[message["value"]["from_address"]] += _ugnot(message["value"]["amount"])
    expected = sorted(totals.items(), key=lambda item: -item[1])[:10]
    assert [(row["sender"], row["ugnot"]) for row in top] == [(s, Decimal(v)) for s, v in expected]

    packages = [
        (tx["block_height"], message["value"]["package"]["path"], message["value"]["creator"], tx["success"])
        for tx in txs for message in tx["messages"] if message["typeUrl"] == "add_package"
    ]
    newest = sorted(packages, key=lambda p: -p[0])[:20]
    rows = [(r["block_height"], r["path"], r["creator"], r["success"]) for r in deployments]
    assert rows == newest
    assert all(row["time"] is not None and row["path"] for row in deployments)


# ------------------------------------------------------------------ Asking the chain

CHAIN_SECTION = "## Asking the chain"
# The table each query of the section must reach through an index, in order.
CHAIN_TABLES = ["tx_accounts", "messages", "messages", "coin_transfers", "grc20_balances",
                "grc20_balances", "grc20_transfers", "events"]
BIG_TABLES = {"blocks", "transactions", "messages", "events", "tx_accounts", "coin_transfers",
              "grc20_transfers", "grc20_balances", "package_files"}
INDEX_NODES = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


def section_queries(heading: str) -> list[str]:
    """The ```sql blocks of the README section under ``heading`` (to the next ## heading)."""
    text = README.read_text()
    start = text.index("\n" + heading + "\n") + len(heading) + 1
    following = re.search(r"^## ", text[start:], re.MULTILINE)
    section = text[start: start + following.start()] if following else text[start:]
    return re.findall(r"^```sql\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def with_values(query: str, values: dict[str, str]) -> str:
    """``query`` with psql's ``:'name'`` variables replaced by quoted literals."""
    def literal(match: re.Match[str]) -> str:
        return "'" + values[match.group(1)].replace("'", "''") + "'"
    return re.sub(r":'(\w+)'", literal, query)


def plan_nodes(plan: dict) -> list[tuple[str, str | None]]:
    """(node type, relation) of every node of an EXPLAIN (FORMAT JSON) plan; a partition
    (``<table>_initial``, ``<table>_p<height>``) counts as its partitioned table."""
    relation = plan.get("Relation Name")
    if relation is not None:
        relation = re.sub(r"_(initial|p\d{12})$", "", relation)
    nodes = [(plan["Node Type"], relation)]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


def test_the_chain_section_asks_each_question():
    queries = section_queries(CHAIN_SECTION)
    assert len(queries) == len(CHAIN_TABLES)
    for query, table in zip(queries, CHAIN_TABLES, strict=True):
        assert f"indexer.{table}" in query


async def test_chain_section_queries_answer_through_indexes(devnet, db_dsn):
    from . import derived_oracle as oracle

    chain, url = devnet(blocks=160, genesis_txs=8, dense_start=2, dense_length=100)
    syncer = await open_syncer(url, db_dsn)
    try:
        await sync_range(syncer, 0, chain.tip, batch_size=100, policy=ONE_TRY)
    finally:
        await close(syncer)
    expected = oracle.derive_all(chain.transactions_in(0, chain.tip))
    busiest = collections.Counter(row[0] for row in expected["tx_accounts"]).most_common(1)[0][0]
    token = "gno.land/r/demo/defi/foo20.FOO.0000000"
    values = {"address": busiest, "realm": "gno.land/r/demo/boards", "func": "CreateThread", "token": token}
    queries = [with_values(q, values) for q in section_queries(CHAIN_SECTION)]
    conn = await asyncpg.connect(db_dsn)
    try:
        answers = [await conn.fetch(query) for query in queries]
        await conn.execute("SET enable_seqscan = off")
        for query, table in zip(queries, CHAIN_TABLES, strict=True):
            plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query))[0]["Plan"]
            nodes = plan_nodes(plan)
            assert any(kind in INDEX_NODES and relation == table for kind, relation in nodes), (query, nodes)
            assert not [n for n in nodes if n[0] == "Seq Scan" and n[1] in BIG_TABLES], (query, nodes)
    finally:
        await conn.close()
    assert all(answers), [q for q, a in zip(queries, answers, strict=True) if not a]

    txs_of, deployments, calls, largest, holders, supply, token_moves, storage = answers
    involved = sorted({(r[1], r[2]) for r in expected["tx_accounts"] if r[0] == busiest}, reverse=True)
    assert [(r["block_height"], r["tx_index"]) for r in txs_of] == involved[:50]
    assert all(r["pkg_path"] for r in deployments)
    assert all(r["sender"] for r in calls)
    top = sorted((r[7] for r in expected["coin_transfers"] if r[6] == "ugnot"), reverse=True)[:10]
    assert [int(r["amount"]) for r in largest] == top
    balances = sorted((r[2] for r in expected["grc20_balances"] if r[0] == token), reverse=True)
    assert [int(r["balance"]) for r in holders] == balances[:10]
    assert int(supply[0]["total_supply"]) == sum(balances)
    moves = [r for r in expected["grc20_transfers"] if r[3] == token and busiest in (r[5], r[6])]
    assert len(token_moves) == len(moves)
    net = collections.Counter()
    for row in expected["events"]:
        if row[4] in ("StorageDepositEvent", "StorageUnlockEvent"):
            net[row[5]] += row[7]
    assert len(storage) == min(20, len(net))
    assert all(int(r["bytes"]) == net[r["pkg_path"]] for r in storage)
    assert int(storage[0]["bytes"]) == max(net.values())
