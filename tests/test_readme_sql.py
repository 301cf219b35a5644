"""The README's first SQL questions, read out of README.md so they cannot drift, answer
on a database synced from the devnet, and agree with the devnet's own chain data."""

from __future__ import annotations

import collections
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
