"""A dead backup endpoint: does it slow the backfill down?

    .venv/bin/python bench/dead_backup.py                  # sparse chain of 200,000 blocks
    .venv/bin/python bench/dead_backup.py --blocks 20000   # a quick look

Starts its own devnet (sparse profile, in its own process) and a blackholed endpoint: a
loopback TCP listener that accepts connections and never answers (`bench/harness.py`),
as a tx-indexer whose host is up but whose process hangs. Then, in this one run and
on the same chain and heights, `gnosync sync --from 0 --to N`:

1. with the good endpoint alone (`--source GOOD`);
2. with the good one and the blackholed one (`--source GOOD --source BLACKHOLED`).

Prints each run's wall time (process start-up included), the time to its first commit
(start-up, migration, the first contact with the sources), the commit phase (first to
last "batch committed" log line), blocks/s, and the ratios of run 2's speed to run 1's,
over the whole run and over the commit phase. gnosync runs with its default settings
(read timeout 10 s): that is what an operator's backup endpoint costs. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import GNOSYNC, Measured, blackholed_endpoint, devnet_process, machine, run_measured, scratch_database, table  # noqa: E402


@dataclass(frozen=True)
class Run:
    sources: str
    seconds: float
    first_commit: float  # seconds from start to the first commit
    commit_phase: float  # seconds from the first commit to the last
    batches: int
    blocks: int

    @property
    def speed(self) -> float:
        return self.blocks / self.seconds

    @property
    def commit_speed(self) -> float:
        return self.blocks / self.commit_phase if self.commit_phase > 0 else float("nan")


def commit_times(done: Measured) -> list[float]:
    """The unix times of the run's "batch committed" log lines."""
    stamps = []
    for line in done.stderr.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("message") == "batch committed":
            stamps.append(dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp())
    return stamps


async def sync(label: str, sources: list[str], tip: int) -> Run:
    async with scratch_database() as dsn:
        flags = [arg for url in sources for arg in ("--source", url)]
        done = await asyncio.to_thread(
            run_measured,
            [*GNOSYNC, "sync", "--from", "0", "--to", str(tip), *flags, "--db", dsn,
             "--log-level", "info", "--log-format", "json"],
        )
        if done.returncode != 0:
            raise SystemExit(f"gnosync sync with {label} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        conn = await asyncpg.connect(dsn)
        try:
            blocks = await conn.fetchval("SELECT count(*) FROM indexer.blocks")
        finally:
            await conn.close()
    stamps = commit_times(done)
    if blocks != tip + 1 or not stamps:
        raise SystemExit(f"gnosync sync with {label} stored {blocks} blocks, expected {tip + 1}")
    return Run(label, done.seconds, stamps[0] - done.started_at, stamps[-1] - stamps[0], len(stamps), blocks)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=200_000, help="chain tip (default 200,000)")
    args = parser.parse_args()
    tip = args.blocks
    with devnet_process("--profile", "sparse", "--blocks", str(tip)) as (good, _), blackholed_endpoint() as dead:
        print(f"devnet: sparse chain of {tip + 1:,} blocks at {good}; blackholed endpoint at {dead}", flush=True)
        alone = await sync("[good]", [good], tip)
        print(f"[good] measured ({alone.seconds:.1f} s)", flush=True)
        backed = await sync("[good, blackholed]", [good, dead], tip)
        print(f"[good, blackholed] measured ({backed.seconds:.1f} s)", flush=True)
    rows = [
        (r.sources, f"{r.seconds:.1f}", f"{r.speed:,.0f}", f"{r.first_commit:.1f}", f"{r.commit_phase:.1f}",
         f"{r.commit_speed:,.0f}", r.batches, f"{r.speed / alone.speed:.2f}", f"{r.commit_speed / alone.commit_speed:.2f}")
        for r in (alone, backed)
    ]
    print()
    print(table(
        f"Backfill with a blackholed backup endpoint, sparse profile, heights 0..{tip:,} for both runs ({machine()})",
        rows, ("sources", "seconds", "blocks/s", "to first commit s", "commit phase s", "commit phase blocks/s",
               "batches", "speed ÷ [good]", "commit phase speed ÷ [good]"),
    ))
    print(f"\n[good, blackholed] runs at {backed.speed / alone.speed:.2f} of [good]'s speed over the whole run"
          f" (start-up included), {backed.commit_speed / alone.commit_speed:.2f} over the commit phase.")


if __name__ == "__main__":
    asyncio.run(main())
