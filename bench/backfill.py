"""Backfill throughput and memory: gnosync against the limits of its source and database.

    .venv/bin/python bench/backfill.py --profile sparse            # 1,000,000 blocks
    .venv/bin/python bench/backfill.py --profile dense             # 50,000 blocks, ~20 txs each
    .venv/bin/python bench/backfill.py --profile gnoland1-dense    # real gnoland1 txs, 20 a block

Starts its own devnet (in its own process) and uses the PostgreSQL named by
GNOSYNC_BENCH_PG (default: the local server). Every contender syncs the same heights
0..N of the same chain, in this one run, so the ratios compare like with like:

- gnosync, derive all: `gnosync sync --from 0 --to N` as a user runs it (process start-up
  and migration included), decoding every transaction into the derived tables, with the
  peak RSS of that process alone;
- gnosync, raw only: the same with `--derive none` (blocks, transactions, package files);
- rederive: `gnosync rederive` of the derive-all database, rebuilding every derived table
  from the stored transactions (no source);
- ceiling, derive all / raw only: PostgreSQL alone ingesting the rows gnosync stored
  (binary COPY of each table, read out beforehand, into identical freshly migrated
  tables, one transaction): what the bytes written per transaction cost by themselves;
- source limit: a client with gnosync's fetch concurrency and range sizes that fetches
  and parses every range and throws it away (after one unmeasured pass that warms the
  devnet's answer cache);
- write limit: gnosync's commit path (derive all) over the same batches, each fetched
  before its commit; only the commits are timed;
- naive baseline: the design note taken literally: sequential 100-block batches,
  row-by-row INSERTs, app_state updated after each batch.

Profiles: `sparse` is gnoland1's density with its real transactions; `dense` packs ~20
generated transactions into every block; `gnoland1-dense` is a sparse lead-in
(`--lead-in` blocks, one real transaction every 1,000) followed by `--dense-blocks`
blocks of 20 real gnoland1 transactions each, package deployments among them
(`bench/gnoland1_dense.py`), the shape that lands gnosync's largest ranges on a dense
stretch. With `--blocks` (sparse, dense) or smaller `--lead-in`/`--dense-blocks` every
contender runs on the smaller chain: the naive baseline is the slow one (about 2,000
blocks/s sparse, 2,500 transactions/s dense, on the reference machine); `--no-naive`
leaves it out.

Nothing is asserted about time; the run stops with an error only if the contenders did
not all see the same blocks and transactions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gnoland1_dense import DenseLayout, write_txs_file  # noqa: E402
from bench.harness import DEFAULT_PG, GNOSYNC, devnet_process, machine, run_measured, scratch_database, table  # noqa: E402
from gnosync.model import Batch  # noqa: E402
from gnosync.settings import Settings  # noqa: E402
from gnosync.source.pool import SourcePool  # noqa: E402
from gnosync.store import Store, sql  # noqa: E402
from gnosync.store.partitions import ensure_partitions  # noqa: E402
from gnosync.sync.pipeline import RangeSizer, batch_bytes  # noqa: E402
from gnosync.sync.syncer import fetch_batch  # noqa: E402

DEFAULTS = Settings()  # gnosync's own batch sizes and commit settings
NAIVE_BATCH = 100


@dataclass(frozen=True)
class Result:
    run: str
    seconds: float
    blocks: int
    txs: int


async def batches(url: str, start: int, end: int, concurrency: int) -> AsyncIterator[Batch]:
    """``start..end`` in gnosync's range sizes, ``concurrency`` ranges fetched ahead."""
    sizer = RangeSizer(DEFAULTS.batch_size, DEFAULTS.batch_txs)
    async with SourcePool([url]) as pool:
        pending: deque[asyncio.Future[Batch]] = deque()
        next_start = start

        def fill() -> None:
            nonlocal next_start
            while len(pending) < concurrency and next_start <= end:
                last = min(end, next_start + sizer.next_size() - 1)
                pending.append(asyncio.ensure_future(fetch_batch(pool.endpoint_for(last), next_start, last)))
                next_start = last + 1

        fill()
        try:
            while pending:
                batch = await pending.popleft()
                sizer.observe(len(batch.blocks), len(batch.transactions), batch_bytes(batch)[1])
                fill()
                yield batch
        finally:
            for task in pending:
                task.cancel()


async def source_limit(url: str, tip: int, concurrency: int) -> Result:
    blocks = txs = 0
    started = time.perf_counter()
    async for batch in batches(url, 0, tip, concurrency):
        blocks += len(batch.blocks)
        txs += len(batch.transactions)
    return Result("source limit (fetch+parse only)", time.perf_counter() - started, blocks, txs)


async def write_limit(url: str, tip: int) -> Result:
    """Only the commits are timed; each batch is fetched (one at a time) before it."""
    blocks = txs = 0
    seconds = 0.0
    async with scratch_database() as dsn:
        store = await Store.connect(
            dsn, checkpoint_every=DEFAULTS.checkpoint_every, durable_commits=DEFAULTS.durable_commits
        )
        try:
            await store.migrate()
            async for batch in batches(url, 0, tip, concurrency=1):
                started = time.perf_counter()
                await store.commit_batch(batch, chain_id=batch.blocks[0].chain_id, status="syncing")
                seconds += time.perf_counter() - started
                blocks += len(batch.blocks)
                txs += len(batch.transactions)
        finally:
            await store.close()
    return Result("write limit (COPY only)", seconds, blocks, txs)


NAIVE_SCHEMA = """
CREATE TABLE blocks (height bigint PRIMARY KEY, hash text UNIQUE, chain_id text, time text,
  num_txs int, total_txs bigint, last_block_hash text, data text);
CREATE TABLE transactions (block_height bigint, tx_index int, hash text UNIQUE, success bool,
  gas_wanted bigint, gas_used bigint, memo text, content_raw text, messages jsonb, response jsonb,
  PRIMARY KEY (block_height, tx_index));
CREATE TABLE app_state (component text PRIMARY KEY, last_block_h bigint, updated_at timestamptz);
"""


async def naive_baseline(url: str, tip: int) -> Result:
    """The design note's loop, literally: 100 blocks at a time, one INSERT per row."""
    blocks = txs = 0
    async with scratch_database() as dsn, SourcePool([url]) as pool:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(NAIVE_SCHEMA)
            started = time.perf_counter()
            for first in range(0, tip + 1, NAIVE_BATCH):
                last = min(tip, first + NAIVE_BATCH - 1)
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
    return Result("naive baseline", seconds, blocks, txs)


async def stored_counts(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        blocks = await conn.fetchval("SELECT count(*) FROM indexer.blocks")
        txs = await conn.fetchval("SELECT count(*) FROM indexer.transactions")
    finally:
        await conn.close()
    return blocks, txs


async def gnosync_sync(dsn: str, url: str, tip: int, concurrency: int, derive: str) -> tuple[Result, float]:
    """``gnosync sync --from 0 --to tip --derive derive`` into ``dsn``; its result and
    its peak RSS (MB)."""
    done = await asyncio.to_thread(
        run_measured,
        [*GNOSYNC, "sync", "--from", "0", "--to", str(tip), "--source", url, "--db", dsn,
         "--derive", derive, "--log-level", "warning", "--log-format", "json",
         "--fetch-concurrency", str(concurrency)],
    )
    if done.returncode != 0:
        raise SystemExit(f"gnosync sync failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    blocks, txs = await stored_counts(dsn)
    label = "gnosync sync, derive all" if derive == "all" else "gnosync sync, raw only"
    return Result(label, done.seconds, blocks, txs), done.peak_rss_mb


async def rederive(dsn: str) -> tuple[Result, float]:
    """``gnosync rederive`` of the whole stored chain in ``dsn``."""
    done = await asyncio.to_thread(
        run_measured,
        [*GNOSYNC, "rederive", "--db", dsn, "--log-level", "warning", "--log-format", "json"],
    )
    if done.returncode != 0:
        raise SystemExit(f"gnosync rederive failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    blocks, txs = await stored_counts(dsn)
    return Result("gnosync rederive (no source)", done.seconds, blocks, txs), done.peak_rss_mb


RAW_TABLES = ("blocks", "transactions", "package_files", "checkpoints")
DERIVED_TABLES = (
    "messages", "events", "tx_accounts", "packages", "coin_transfers",
    "grc20_transfers", "grc20_balances", "grc20_tokens",
)
CEILING_SCHEMA = "ceiling"


async def ceiling(dsn: str, tables: tuple[str, ...], label: str) -> Result:
    """PostgreSQL alone writing the rows gnosync stored in ``tables`` into identical,
    freshly migrated tables (schema ``ceiling``), one transaction; only that is timed.

    Each table is read out first with a binary COPY into a file, so the timed part is
    what gnosync's own commits pay too: binary COPY in, jsonb parsed, every index and
    key maintained."""
    store = await Store.connect(dsn, schema=CEILING_SCHEMA)
    try:
        await store.migrate()
    finally:
        await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        with tempfile.TemporaryDirectory(prefix="gnosync-ceiling-") as folder:
            files = {}
            for name in tables:
                files[name] = str(Path(folder) / name)
                await conn.copy_from_table(name, schema_name="indexer", output=files[name], format="binary")
            low, high = await conn.fetchrow("SELECT min(height), max(height) FROM indexer.blocks")
            started = time.perf_counter()
            async with conn.transaction():
                if not DEFAULTS.durable_commits:
                    await conn.execute("SET LOCAL synchronous_commit TO off")
                # As a commit does: the partitions of the heights, in the transaction.
                await ensure_partitions(
                    conn, sql.Statements(CEILING_SCHEMA), None, low, high, DEFAULTS.partition_size
                )
                for name in tables:
                    await conn.copy_to_table(name, schema_name=CEILING_SCHEMA, source=files[name], format="binary")
            seconds = time.perf_counter() - started
        await conn.execute(f"DROP SCHEMA {CEILING_SCHEMA} CASCADE")
        await conn.execute(f"DROP SCHEMA {sql.partitions_schema(CEILING_SCHEMA)} CASCADE")
    finally:
        await conn.close()
    blocks, txs = await stored_counts(dsn)
    return Result(label, seconds, blocks, txs)


def devnet_args(args: argparse.Namespace, workdir: Path) -> tuple[list[str], int, str]:
    """The devnet's flags, the chain's tip, and a line describing the chain."""
    if args.profile == "gnoland1-dense":
        layout = DenseLayout(lead_in=args.lead_in, dense_blocks=args.dense_blocks)
        path = workdir / "gnoland1-dense.jsonl"
        made = write_txs_file(path, layout)
        return (
            ["--txs", str(path), "--blocks", str(layout.tip), "--prepare"],
            layout.tip,
            f"gnoland1-dense chain of {layout.tip + 1:,} blocks: heights 1..{layout.lead_in:,} one real"
            f" transaction every {layout.sparse_every:,}, then {layout.dense_blocks:,} blocks of"
            f" {layout.per_block} ({made['transactions']:,} real gnoland1 transactions,"
            f" {made['bytes'] / 1e6:,.0f} MB of amino JSON, {made['package_deployments']:,} package deployments)",
        )
    tip = args.blocks or (1_000_000 if args.profile == "sparse" else 50_000)
    return ["--profile", args.profile, "--blocks", str(tip)], tip, f"{args.profile} chain of {tip + 1:,} blocks"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["sparse", "dense", "gnoland1-dense"], default="sparse")
    parser.add_argument("--blocks", type=int, help="chain tip, sparse and dense (default 1,000,000 / 50,000)")
    parser.add_argument("--lead-in", type=int, default=100_000, help="gnoland1-dense: sparse blocks first (default 100,000)")
    parser.add_argument("--dense-blocks", type=int, default=3_000, help="gnoland1-dense: blocks of 20 txs (default 3,000)")
    parser.add_argument("--concurrency", type=int, default=DEFAULTS.fetch_concurrency)
    parser.add_argument("--no-naive", action="store_true", help="leave out the naive baseline (the slow one)")
    args = parser.parse_args()
    if args.profile == "gnoland1-dense" and args.blocks:
        parser.error("--blocks is for sparse and dense; gnoland1-dense takes --lead-in and --dense-blocks")

    with tempfile.TemporaryDirectory(prefix="gnosync-bench-") as workdir:
        flags, tip, chain = devnet_args(args, Path(workdir))
        print(f"devnet: {chain}", flush=True)
        with devnet_process(*flags) as (url, _):
            await source_limit(url, tip, args.concurrency)  # warm-up: the devnet caches its answers
            source = await source_limit(url, tip, args.concurrency)
            print(f"source limit measured ({source.seconds:.1f} s)", flush=True)
            async with scratch_database() as full_dsn, scratch_database() as raw_dsn:
                derived, peak = await gnosync_sync(full_dsn, url, tip, args.concurrency, "all")
                print(f"gnosync, derive all, measured ({derived.seconds:.1f} s, peak RSS {peak:.0f} MB)", flush=True)
                raw, raw_peak = await gnosync_sync(raw_dsn, url, tip, args.concurrency, "none")
                print(f"gnosync, raw only, measured ({raw.seconds:.1f} s, peak RSS {raw_peak:.0f} MB)", flush=True)
                rebuilt, rebuilt_peak = await rederive(full_dsn)
                print(f"rederive measured ({rebuilt.seconds:.1f} s, peak RSS {rebuilt_peak:.0f} MB)", flush=True)
                full_ceiling = await ceiling(full_dsn, RAW_TABLES + DERIVED_TABLES, "ceiling, derive all (PostgreSQL alone)")
                raw_ceiling = await ceiling(raw_dsn, RAW_TABLES, "ceiling, raw only (PostgreSQL alone)")
                print("ceilings measured", flush=True)
            results = [derived, raw, rebuilt, full_ceiling, raw_ceiling, source]
            results.append(await write_limit(url, tip))
            print(f"write limit measured ({results[-1].seconds:.1f} s of commits)", flush=True)
            if not args.no_naive:
                results.append(await naive_baseline(url, tip))
                print(f"naive baseline measured ({results[-1].seconds:.1f} s)", flush=True)

    counts = {(r.blocks, r.txs) for r in results}
    if counts != {(derived.blocks, derived.txs)} or derived.blocks != tip + 1:
        raise SystemExit("the contenders did not see the same chain: " + ", ".join(
            f"{r.run} {r.blocks:,} blocks {r.txs:,} txs" for r in results) + f" (expected {tip + 1:,} blocks)")
    rows = [
        (r.run, f"{r.seconds:.1f}", f"{r.blocks / r.seconds:,.0f}", f"{r.txs / r.seconds:,.0f}",
         f"{r.seconds / derived.seconds:.2f}")
        for r in results
    ]
    print()
    print(table(
        f"Backfill, {args.profile} profile, heights 0..{tip:,} ({derived.blocks:,} blocks,"
        f" {derived.txs:,} transactions) for every run ({machine()})",
        rows, ("run", "seconds", "blocks/s", "txs/s", "derive-all speed ÷ this"),
    ))
    print(f"\nderive all ÷ raw only: {raw.seconds / derived.seconds:.2f} of raw-only speed;"
          f" derive all ÷ its ceiling: {full_ceiling.seconds / derived.seconds:.2f};"
          f" raw only ÷ its ceiling: {raw_ceiling.seconds / raw.seconds:.2f}.")
    print(f"rederive: {rebuilt.txs / rebuilt.seconds:,.0f} transactions/s.")
    print(f"Peak RSS (each gnosync process alone): derive all {peak:.0f} MB, raw only {raw_peak:.0f} MB,"
          f" rederive {rebuilt_peak:.0f} MB. gnosync's times include process start-up and migration."
          f" Fetch concurrency {args.concurrency}; PostgreSQL at {DEFAULT_PG.rsplit('@', 1)[-1]}.")


if __name__ == "__main__":
    asyncio.run(main())
