"""Backfill throughput: gnosync against the limits of its source and its database.

    .venv/bin/python bench/backfill.py --profile sparse            # 1,000,000 blocks
    .venv/bin/python bench/backfill.py --profile dense             # 50,000 blocks, ~20 txs each

Starts its own devnet (in its own process) and uses the PostgreSQL named by
GNOSYNC_BENCH_PG (default: the local server). Every figure comes from this one run:

- gnosync: `gnosync sync --from 0 --to N` as a user runs it (process start-up included),
  with its peak RSS;
- source limit: a client with gnosync's fetch concurrency and range sizes that fetches
  and parses the same ranges and throws them away;
- write limit: gnosync's commit path (binary COPY, one transaction with app_state)
  writing already-parsed batches, with no fetching;
- naive baseline: the design note taken literally: sequential 100-block batches,
  row-by-row INSERTs, app_state updated after each batch.

The two limits and the baseline run over a prefix of the chain when asked to
(`--write-blocks`, `--naive-blocks`) so the run stays short; rates are per second either way.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections import deque
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import DEFAULT_PG, GNOSYNC, devnet_process, run_measured, scratch_database, table  # noqa: E402
from gnosync.settings import Settings  # noqa: E402
from gnosync.source.pool import SourcePool  # noqa: E402
from gnosync.store import Store  # noqa: E402
from gnosync.model import Batch  # noqa: E402
from gnosync.sync.pipeline import RangeSizer  # noqa: E402
from gnosync.sync.syncer import fetch_batch  # noqa: E402

BATCH_BLOCKS = 10_000
BATCH_TXS = 5000


async def fetch_ranges(url: str, start: int, end: int, concurrency: int, keep: bool = False):
    """Fetch ``start..end`` the way gnosync's pipeline does; return (blocks, txs, batches)."""
    sizer = RangeSizer(BATCH_BLOCKS, BATCH_TXS)
    kept: list[Batch] = []
    blocks = txs = 0
    async with SourcePool([url]) as pool:
        pending: deque = deque()
        next_start = start

        def fill():
            nonlocal next_start
            while len(pending) < concurrency and next_start <= end:
                last = min(end, next_start + sizer.next_size() - 1)
                endpoint = pool.endpoint_for(last)
                pending.append(asyncio.ensure_future(fetch_batch(endpoint, next_start, last)))
                next_start = last + 1

        fill()
        while pending:
            batch = await pending.popleft()
            sizer.observe(len(batch.blocks), len(batch.transactions))
            fill()
            blocks += len(batch.blocks)
            txs += len(batch.transactions)
            if keep:
                kept.append(batch)
    return blocks, txs, kept


async def source_limit(url: str, tip: int, concurrency: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    blocks, txs, _ = await fetch_ranges(url, 0, tip, concurrency)
    return time.perf_counter() - started, blocks, txs


async def write_limit(url: str, count: int, concurrency: int) -> tuple[float, int, int]:
    _, _, batches = await fetch_ranges(url, 0, count - 1, concurrency, keep=True)
    async with scratch_database() as dsn:
        # The same commit settings as `gnosync sync` uses by default.
        defaults = Settings()
        store = await Store.connect(
            dsn, checkpoint_every=defaults.checkpoint_every, durable_commits=defaults.durable_commits
        )
        try:
            await store.migrate()
            started = time.perf_counter()
            for batch in batches:
                await store.commit_batch(batch, chain_id=batch.blocks[0].chain_id, status="syncing")
            seconds = time.perf_counter() - started
        finally:
            await store.close()
    return seconds, sum(len(b.blocks) for b in batches), sum(len(b.transactions) for b in batches)


NAIVE_SCHEMA = """
CREATE TABLE blocks (height bigint PRIMARY KEY, hash text UNIQUE, chain_id text, time text,
  num_txs int, total_txs bigint, last_block_hash text, data text);
CREATE TABLE transactions (block_height bigint, tx_index int, hash text UNIQUE, success bool,
  gas_wanted bigint, gas_used bigint, memo text, content_raw text, messages jsonb, response jsonb,
  PRIMARY KEY (block_height, tx_index));
CREATE TABLE app_state (component text PRIMARY KEY, last_block_h bigint, updated_at timestamptz);
"""


async def naive_baseline(url: str, count: int) -> tuple[float, int, int]:
    """The design note's loop, literally: 100 blocks at a time, one INSERT per row."""
    blocks = txs = 0
    async with scratch_database() as dsn, SourcePool([url]) as pool:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(NAIVE_SCHEMA)
            started = time.perf_counter()
            for first in range(0, count, 100):
                last = min(count - 1, first + 99)
                batch = await fetch_batch(pool.endpoint_for(last), first, last)
                for b in batch.blocks:
                    await conn.execute(
                        "INSERT INTO blocks VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                        b.height, b.hash, b.chain_id, b.time, b.num_txs, b.total_txs,
                        b.last_block_hash, b.app_hash,
                    )
                for t in batch.transactions:
                    await conn.execute(
                        "INSERT INTO transactions VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                        t.block_height, t.index, t.hash, t.success, t.gas_wanted, t.gas_used,
                        t.memo, t.content_raw, bytes(t.messages).decode(), bytes(t.response).decode(),
                    )
                await conn.execute(
                    "INSERT INTO app_state VALUES ('block_sync', $1, now()) ON CONFLICT (component)"
                    " DO UPDATE SET last_block_h = excluded.last_block_h, updated_at = now()", last,
                )
                blocks += len(batch.blocks)
                txs += len(batch.transactions)
            seconds = time.perf_counter() - started
        finally:
            await conn.close()
    return seconds, blocks, txs


async def gnosync_run(url: str, tip: int, concurrency: int) -> tuple[float, float, int, int]:
    async with scratch_database() as dsn:
        seconds, peak, result = await asyncio.to_thread(
            run_measured,
            [*GNOSYNC, "sync", "--from", "0", "--to", str(tip), "--source", url, "--db", dsn,
             "--log-level", "warning", "--log-format", "json", "--fetch-concurrency", str(concurrency)],
        )
        if result.returncode != 0:
            raise SystemExit(f"gnosync sync failed:\n{result.stderr[-2000:]}")
        conn = await asyncpg.connect(dsn)
        try:
            blocks = await conn.fetchval("SELECT count(*) FROM indexer.blocks")
            txs = await conn.fetchval("SELECT count(*) FROM indexer.transactions")
        finally:
            await conn.close()
    return seconds, peak, blocks, txs


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["sparse", "dense"], default="sparse")
    parser.add_argument("--blocks", type=int, help="chain length (sparse 1,000,000; dense 50,000)")
    parser.add_argument("--write-blocks", type=int, help="prefix for the write limit")
    parser.add_argument("--naive-blocks", type=int, help="prefix for the naive baseline")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    sparse = args.profile == "sparse"
    tip = args.blocks or (1_000_000 if sparse else 50_000)
    write_blocks = min(tip + 1, args.write_blocks or (200_000 if sparse else 20_000))
    naive_blocks = min(tip + 1, args.naive_blocks or (20_000 if sparse else 2_000))

    with devnet_process("--profile", args.profile, "--blocks", str(tip)) as (url, _):
        print(f"devnet: {args.profile} chain of {tip:,} blocks at {url}", flush=True)
        await source_limit(url, tip, args.concurrency)  # warm-up: the devnet caches its answers
        src_s, src_blocks, src_txs = await source_limit(url, tip, args.concurrency)
        print(f"source limit measured ({src_s:.1f}s)", flush=True)
        gs_s, gs_peak, gs_blocks, gs_txs = await gnosync_run(url, tip, args.concurrency)
        print(f"gnosync measured ({gs_s:.1f}s)", flush=True)
        wr_s, wr_blocks, wr_txs = await write_limit(url, write_blocks, args.concurrency)
        print(f"write limit measured ({wr_s:.1f}s)", flush=True)
        nv_s, nv_blocks, nv_txs = await naive_baseline(url, naive_blocks)
        print(f"naive baseline measured ({nv_s:.1f}s)", flush=True)

    assert gs_blocks == tip + 1, f"gnosync stored {gs_blocks} blocks, expected {tip + 1}"
    g_bps, g_tps = rate(gs_blocks, gs_s), rate(gs_txs, gs_s)
    s_bps, s_tps = rate(src_blocks, src_s), rate(src_txs, src_s)
    w_bps, w_tps = rate(wr_blocks, wr_s), rate(wr_txs, wr_s)
    n_bps, n_tps = rate(nv_blocks, nv_s), rate(nv_txs, nv_s)
    rows = [
        ("gnosync sync", f"{gs_blocks:,}", f"{gs_txs:,}", f"{gs_s:.1f}", f"{g_bps:,.0f}", f"{g_tps:,.0f}", "1.00"),
        ("source limit (fetch+parse only)", f"{src_blocks:,}", f"{src_txs:,}", f"{src_s:.1f}", f"{s_bps:,.0f}", f"{s_tps:,.0f}", f"{(g_tps if not sparse else g_bps) / (s_tps if not sparse else s_bps):.2f}"),
        ("write limit (COPY only)", f"{wr_blocks:,}", f"{wr_txs:,}", f"{wr_s:.1f}", f"{w_bps:,.0f}", f"{w_tps:,.0f}", f"{(g_tps if not sparse else g_bps) / (w_tps if not sparse else w_bps):.2f}"),
        ("naive baseline", f"{nv_blocks:,}", f"{nv_txs:,}", f"{nv_s:.1f}", f"{n_bps:,.0f}", f"{n_tps:,.0f}", f"{(g_tps if not sparse else g_bps) / (n_tps if not sparse else n_bps):.1f}"),
    ]
    unit = "blocks/s" if sparse else "txs/s"
    print()
    print(table(
        f"Backfill, {args.profile} profile, {tip + 1:,} blocks ({platform.node()}, {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores)",
        rows, ("run", "blocks", "txs", "seconds", "blocks/s", "txs/s", f"gnosync ÷ this ({unit})"),
    ))
    print(f"\ngnosync peak RSS: {gs_peak:.0f} MB; fetch concurrency {args.concurrency}; PostgreSQL at {DEFAULT_PG.rsplit('@', 1)[-1]}")


if __name__ == "__main__":
    asyncio.run(main())
