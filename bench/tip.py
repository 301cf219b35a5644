"""Tip following: how long a new block takes to reach the database.

    .venv/bin/python bench/tip.py                 # 10 blocks/s, 5 minutes per mode
    .venv/bin/python bench/tip.py --minutes 1     # a quick look

Starts its own growing devnet (in its own process) and runs `gnosync run` twice against
a fresh database each time: with the new-block subscription, and with polling only
(`--no-subscribe`). A block's lag is the time from the devnet storing it (seen as its
push on the devnet's own subscription, which it sends right after storing) to gnosync
having committed it (seen by polling app_state.last_block_h every 5 ms). Prints lag
p50/p95/p99 per mode and gnosync's RSS shortly after start and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import GNOSYNC, REPO, devnet_process, rss_mb, scratch_database, table  # noqa: E402
from gnosync.source.subscribe import NEW_BLOCKS, websocket_url  # noqa: E402


async def watch_pushes(url: str, stored_at: dict[int, float], ready: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(websocket_url(url), protocols=("graphql-transport-ws",)) as ws:
            await ws.send_bytes(orjson.dumps({"type": "connection_init", "payload": {}}))
            await ws.send_bytes(orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": NEW_BLOCKS}}))
            async for frame in ws:
                message = orjson.loads(frame.data)
                if message.get("type") == "connection_ack":
                    ready.set()
                elif message.get("type") == "next":
                    stored_at[message["payload"]["data"]["getBlocks"]["height"]] = time.time()
                elif message.get("type") == "ping":
                    await ws.send_bytes(orjson.dumps({"type": "pong"}))


async def watch_commits(dsn: str, committed_at: dict[int, float], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    last = None
    try:
        while not stop.is_set():
            try:
                height = await conn.fetchval("SELECT last_block_h FROM indexer.app_state")
            except asyncpg.UndefinedTableError:
                height = None
            now = time.time()
            if height is not None:
                first = (last + 1) if last is not None else height
                for h in range(first, height + 1):
                    committed_at.setdefault(h, now)
                last = height
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def one_mode(url: str, subscribe: bool, seconds: float, interval: float) -> dict:
    async with scratch_database() as dsn:
        stored_at: dict[int, float] = {}
        committed_at: dict[int, float] = {}
        ready, stop = asyncio.Event(), asyncio.Event()
        pushes = asyncio.create_task(watch_pushes(url, stored_at, ready))
        await asyncio.wait_for(ready.wait(), 10)
        commits = asyncio.create_task(watch_commits(dsn, committed_at, stop))
        flag = "--subscribe" if subscribe else "--no-subscribe"
        proc = subprocess.Popen(
            [*GNOSYNC, "run", "--source", url, "--db", dsn, flag, "--interval", str(interval),
             "--http", "off", "--log-level", "warning", "--log-format", "json"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        started = time.time()
        rss_start = None
        try:
            while time.time() - started < seconds:
                await asyncio.sleep(1)
                if rss_start is None and time.time() - started > 10:
                    rss_start = rss_mb(proc.pid)
            rss_end = rss_mb(proc.pid)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 15)
            stop.set()
            await commits
            pushes.cancel()
        # Only blocks stored after gnosync had caught up count: the first seconds are a backfill.
        caught_up = started + 10
        lags = sorted(
            committed_at[h] - t for h, t in stored_at.items()
            if t > caught_up and h in committed_at
        )
        missed = sum(1 for h, t in stored_at.items() if t > caught_up and h not in committed_at)
    def pct(p: float) -> float:
        return lags[min(len(lags) - 1, int(p * len(lags)))] if lags else float("nan")
    return {
        "mode": "subscription" if subscribe else f"polling every {interval:g}s",
        "blocks": len(lags), "uncommitted_at_end": missed,
        "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
        "mean": statistics.fmean(lags) if lags else float("nan"),
        "rss_start": rss_start, "rss_end": rss_end,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="per mode")
    parser.add_argument("--block-time", type=float, default=0.1)
    parser.add_argument("--interval", type=float, default=1.0, help="gnosync's poll interval")
    args = parser.parse_args()
    results = []
    for subscribe in (True, False):
        with devnet_process("--blocks", "1000", "--block-time", str(args.block_time)) as (url, _):
            print(f"measuring {'with' if subscribe else 'without'} the subscription for {args.minutes:g} min", flush=True)
            results.append(await one_mode(url, subscribe, args.minutes * 60, args.interval))
    rows = [
        (r["mode"], r["blocks"], f"{r['p50'] * 1000:.0f}", f"{r['p95'] * 1000:.0f}", f"{r['p99'] * 1000:.0f}",
         f"{r['rss_start']:.0f}" if r["rss_start"] else "-", f"{r['rss_end']:.0f}" if r["rss_end"] else "-")
        for r in results
    ]
    print()
    print(table(
        f"Tip following at {1 / args.block_time:g} blocks/s, {args.minutes:g} min per mode "
        f"({platform.node()}, {os.cpu_count()} cores)",
        rows, ("mode", "blocks", "lag p50 ms", "lag p95 ms", "lag p99 ms", "RSS at 10 s MB", "RSS at end MB"),
    ))


if __name__ == "__main__":
    asyncio.run(main())
