"""Tip following: how long a new block takes from the devnet to a row in PostgreSQL.

    .venv/bin/python bench/tip.py                 # 10 blocks/s, 5 minutes per mode
    .venv/bin/python bench/tip.py --minutes 1     # a quick look

Runs `gnosync run` twice, each time against a fresh growing devnet (in its own process)
and a fresh database: with the new-block subscription, and with polling only
(`--no-subscribe`). A block's lag runs

- from the devnet producing it: the devnet stamps each block with its own clock when it
  appends it to its chain, before serving or pushing it (`bench/stamped_devnet.py`),
- to its row being visible in PostgreSQL: a separate connection polls
  `SELECT max(height) FROM indexer.blocks` every `--poll-ms` and stamps every height up
  to the answer the first time it sees it (heights are committed in order, so a height
  at or below the maximum is there).

Both stamps come from this machine's wall clock. Measured are the blocks produced during
the window of `--minutes` that opens once gnosync has caught up with the devnet's tip
(the first seconds are a backfill). After the window the bench keeps polling for a
grace period (`--grace`, default 5 s or three poll intervals if longer); a block of the
window still not in the database then is *never committed*: a failure, counted in the
table and treated as an infinite lag in the percentiles, never left out. gnosync is
stopped with SIGTERM at the end; its exit code is reported.

Prints, per mode: blocks produced in the window, how many never committed, lag
p50/p95/p99/max, and gnosync's RSS 10 s after start, at the end and its peak. Nothing
is asserted: the numbers are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import GNOSYNC, REPO, child_env, devnet_process, machine, rss_mb, scratch_database, table  # noqa: E402

STAMPED_DEVNET = [sys.executable, str(REPO / "bench" / "stamped_devnet.py")]


@dataclass
class Produced:
    """Heights the devnet appended, with its own time of each (filled by a reader thread)."""

    at: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_line(self, line: str) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "appended":
            with self.lock:
                self.at[int(parts[1])] = float(parts[2])

    def tip(self) -> int | None:
        with self.lock:
            return max(self.at) if self.at else None

    def between(self, start: float, end: float) -> dict[int, float]:
        with self.lock:
            return {h: t for h, t in self.at.items() if start <= t < end}


async def watch_rows(dsn: str, visible_at: dict[int, float], stop: asyncio.Event, poll: float) -> None:
    """Stamp each height the first time ``max(height)`` shows it is stored."""
    conn = await asyncpg.connect(dsn)
    seen = -1
    try:
        while not stop.is_set():
            try:
                top = await conn.fetchval("SELECT max(height) FROM indexer.blocks")
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                top = None  # gnosync has not migrated yet
            now = time.time()
            if top is not None and top > seen:
                for height in range(seen + 1, top + 1):
                    visible_at[height] = now
                seen = top
            await asyncio.sleep(poll)
    finally:
        await conn.close()


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (inf counts as the largest lag)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


async def one_mode(args: argparse.Namespace, subscribe: bool) -> dict:
    produced = Produced()
    grace = max(args.grace, 3 * args.interval)
    with devnet_process("--blocks", "1000", "--block-time", str(args.block_time),
                        command=STAMPED_DEVNET, on_line=produced.on_line) as (url, _):
        async with scratch_database() as dsn:
            visible_at: dict[int, float] = {}
            stop = asyncio.Event()
            rows = asyncio.create_task(watch_rows(dsn, visible_at, stop, args.poll_ms / 1000))
            flag = "--subscribe" if subscribe else "--no-subscribe"
            proc = subprocess.Popen(
                [*GNOSYNC, "run", "--source", url, "--db", dsn, flag, "--interval", str(args.interval),
                 "--http", "off", "--log-level", "warning", "--log-format", "json"],
                cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            stderr_tail: list[str] = []
            threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
            started = time.time()
            rss_10s = None
            try:
                # Caught up: every block produced so far is in the database.
                while True:
                    await asyncio.sleep(0.05)
                    if proc.poll() is not None:
                        raise SystemExit(f"gnosync run exited ({proc.returncode}) before catching up:"
                                         f" {''.join(stderr_tail[-3:]).strip()}")
                    tip = produced.tip()
                    if tip is not None and visible_at and max(visible_at) >= tip:
                        break
                    if time.time() - started > 120:
                        raise SystemExit("gnosync did not catch up with the devnet within 120 s")
                window_start = time.time()
                window_end = window_start + args.minutes * 60
                while time.time() < window_end + grace:
                    await asyncio.sleep(0.5)
                    if rss_10s is None and time.time() - started >= 10:
                        rss_10s = rss_mb(proc.pid)
                rss_end, rss_peak = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    returncode: int | str = await asyncio.to_thread(proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait)
                    returncode = "none: still running 15 s after SIGTERM, killed"
                stop.set()
                await rows
    window = produced.between(window_start, window_end)
    lags = sorted(visible_at[h] - t if h in visible_at else math.inf for h, t in window.items())
    return {
        "mode": "subscription" if subscribe else f"polling every {args.interval:g} s (`--no-subscribe`)",
        "blocks": len(window), "never": sum(1 for h in window if h not in visible_at),
        "p50": percentile(lags, 0.50), "p95": percentile(lags, 0.95), "p99": percentile(lags, 0.99),
        "max": lags[-1] if lags else math.nan,
        "rss_10s": rss_10s, "rss_end": rss_end, "rss_peak": rss_peak,
        "caught_up_s": window_start - started, "returncode": returncode,
    }


def ms(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.0f}"


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="measured window per mode (default 5)")
    parser.add_argument("--block-time", type=float, default=0.1, help="seconds between blocks (default 0.1)")
    parser.add_argument("--interval", type=float, default=1.0, help="gnosync's poll interval (default 1)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="how often the database is polled (default 5)")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds after the window for its last blocks to arrive (default 5)")
    args = parser.parse_args()
    results = []
    for subscribe in (True, False):
        print(f"measuring {'with' if subscribe else 'without'} the subscription for"
              f" {args.minutes:g} min", flush=True)
        results.append(await one_mode(args, subscribe))
        r = results[-1]
        print(f"  caught up after {r['caught_up_s']:.1f} s; {r['blocks']} blocks in the window,"
              f" {r['never']} never committed; gnosync's exit code on SIGTERM: {r['returncode']}", flush=True)
    rows = [
        (r["mode"], f"{r['blocks']:,}", f"{r['never']:,}", ms(r["p50"]), ms(r["p95"]), ms(r["p99"]),
         ms(r["max"]), mb(r["rss_10s"]), mb(r["rss_end"]), mb(r["rss_peak"]))
        for r in results
    ]
    print()
    print(table(
        f"Tip following at {1 / args.block_time:g} blocks/s, {args.minutes:g} min per mode ({machine()})",
        rows, ("mode", "blocks", "never committed", "lag p50 ms", "lag p95 ms", "lag p99 ms",
               "lag max ms", "RSS at 10 s MB", "RSS at end MB", "peak RSS MB"),
    ))
    print(f"\nLag: the devnet appending the block (its own clock) -> the row visible in PostgreSQL"
          f" (polled every {args.poll_ms:g} ms). Never committed within {max(args.grace, 3 * args.interval):g} s"
          " after the window: counted as an infinite lag.")
    exits = {r["mode"]: r["returncode"] for r in results if r["returncode"] != 0}
    if exits:
        print(f"gnosync did not exit 0 on SIGTERM: {exits}")


if __name__ == "__main__":
    asyncio.run(main())
