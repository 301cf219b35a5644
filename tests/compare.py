"""Compare a gnosync database with what the source serves, field by field."""

from __future__ import annotations

import asyncpg
import orjson

from gnosync.source.client import SourceClient
from gnosync.model import format_time

BLOCK_FIELDS = [
    "hash", "chain_id", "num_txs", "total_txs", "version", "app_version", "last_block_hash",
    "last_commit_hash", "validators_hash", "next_validators_hash", "consensus_hash", "app_hash",
    "last_results_hash",
]


async def source_data(url: str, start: int, end: int) -> tuple[dict, dict]:
    """Everything the source serves for ``start..end``: blocks by height, txs by hash."""
    async with SourceClient(url) as source:
        blocks = {b.height: b for b in await source.blocks(start, end)}
        txs = {t.hash: t for t in await source.transactions(start, end)}
    return blocks, txs


async def differences(dsn: str, url: str, start: int, end: int, schema: str = "indexer") -> list[str]:
    """Every way the stored heights ``start..end`` differ from the source; [] when equal."""
    blocks, txs = await source_data(url, start, end)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT * FROM "{schema}".blocks ORDER BY height')
        tx_rows = await conn.fetch(f'SELECT * FROM "{schema}".transactions ORDER BY block_height, tx_index')
    finally:
        await conn.close()
    problems: list[str] = []
    stored_heights = [r["height"] for r in rows]
    if stored_heights != list(range(start, end + 1)):
        missing = sorted(set(range(start, end + 1)) - set(stored_heights))
        extra = sorted(set(stored_heights) - set(range(start, end + 1)))
        problems.append(f"heights differ: missing {missing[:10]} extra {extra[:10]} count {len(stored_heights)}")
    for row in rows:
        block = blocks.get(row["height"])
        if block is None:
            continue
        for field in BLOCK_FIELDS:
            if row[field] != getattr(block, field):
                problems.append(f"block {block.height} {field}: {row[field]!r} != {getattr(block, field)!r}")
        if row["proposer_address"] != block.proposer_address_raw:
            problems.append(f"block {block.height} proposer_address differs")
        if format_time(row["time"], row["time_ns"]) != block.time:
            problems.append(f"block {block.height} time {format_time(row['time'], row['time_ns'])} != {block.time}")
    if len(tx_rows) != len(txs):
        problems.append(f"{len(tx_rows)} transactions stored, source serves {len(txs)}")
    for row in tx_rows:
        tx = txs.get(row["hash"])
        if tx is None:
            problems.append(f"stored transaction {row['hash']} is not served")
            continue
        for field, stored, value in transaction_differences(row, tx):
            problems.append(f"transaction {tx.hash} {field}: {stored!r:.80} != {value!r:.80}")
    return problems


def transaction_differences(row, tx) -> list[tuple[str, object, object]]:
    """(column, stored, served) for each column of a stored transaction row that differs
    from the transaction as served; JSON columns compare as JSON."""
    served = {
        "block_height": tx.block_height, "tx_index": tx.index, "success": tx.success,
        "gas_wanted": tx.gas_wanted, "gas_used": tx.gas_used, "memo": tx.memo,
        "content_raw": tx.content_raw,
        "gas_fee_amount": tx.gas_fee.amount if tx.gas_fee else None,
        "gas_fee_denom": tx.gas_fee.denom if tx.gas_fee else None,
        "messages": orjson.loads(bytes(tx.messages)),
        "response": orjson.loads(bytes(tx.response)),
    }
    out = []
    for field, value in served.items():
        stored = row[field]
        if field in ("messages", "response"):
            stored = orjson.loads(stored)
        if stored != value:
            out.append((field, stored, value))
    return out
