"""Two edges a new operator meets first, measured with the real `gnosync run`.

    .venv/bin/python bench/edges.py                 # both scenarios
    .venv/bin/python bench/edges.py --only bad-block

1. **A bad block far ahead.** A devnet chain of 20,000 blocks whose block 7777 links to
   the wrong parent (the devnet's ``bad_link_height``, served the same on every try).
   `gnosync run` with its default settings; ``app_state`` is polled every 20 ms. It
   prints how long until the state reads ``last_block_h = 7776, status = error`` with
   the error naming 7777, the requests the devnet answered meanwhile, then fixes the
   block over ``/control/faults`` and prints how long until the tip is stored.
2. **Liveness through a long catch-up.** A devnet that holds every answer back 0.25 s
   (``latency``), 100,000 blocks and ``--batch-size 200``, so that the catch-up (one
   turn of the sync loop) lasts well over the liveness window (30 s); ``/healthz`` is
   polled every second all the way through. It prints the number of samples and of
   each status.

Each scenario uses its own scratch database on the machine's PostgreSQL
(``GNOSYNC_BENCH_PG``). Nothing is asserted: it prints what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import GNOSYNC, REPO, child_env, devnet_process, machine, scratch_database  # noqa: E402

STATE = "SELECT last_block_h, status, last_error FROM indexer.app_state WHERE component = 'block_sync'"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def control(url: str, faults: dict) -> dict:
    base = url.rsplit("/graphql/query", 1)[0]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/control/faults", json=faults) as response:
            return await response.json()


async def state(dsn: str) -> tuple | None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('indexer.app_state')"):
            return None
        row = await conn.fetchrow(STATE)
        return tuple(row) if row else None
    finally:
        await conn.close()


def start_run(url: str, dsn: str, http: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*GNOSYNC, "run", "--source", url, "--db", dsn, "--http", http, "--log-format", "json", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=child_env(),
    )


def stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def bad_block() -> list[tuple]:
    rows: list[tuple] = []
    with devnet_process("--blocks", "20000", "--seed", "4") as (url, _):
        await control(url, {"bad_link_height": 7777})
        async with scratch_database() as dsn:
            started = time.perf_counter()
            proc = start_run(url, dsn, f"127.0.0.1:{free_port()}")
            held = None
            try:
                while time.perf_counter() - started < 300:
                    current = await state(dsn)
                    if current and current[0] == 7776 and current[1] == "error" and "7777" in (current[2] or ""):
                        held = time.perf_counter() - started
                        break
                    if current and current[0] is not None and current[0] >= 7777:
                        break  # stepped over: reported below
                    await asyncio.sleep(0.02)
                after_hold = await state(dsn)
                requests_at_hold = (await control(url, {}))["requests"]
                await asyncio.sleep(10)
                requests_10s = (await control(url, {}))["requests"] - requests_at_hold
                fixed = time.perf_counter()
                await control(url, {"bad_link_height": -1})
                resumed = None
                while time.perf_counter() - fixed < 120:
                    current = await state(dsn)
                    if current and current[0] == 20000:
                        resumed = time.perf_counter() - fixed
                        break
                    await asyncio.sleep(0.02)
            finally:
                code = stop(proc)
        rows.append(("start → state reads 7776 / error naming 7777", "never" if held is None else f"{held:.2f} s"))
        rows.append(("state when held", f"last_block_h {after_hold[0]}, status {after_hold[1]}" if after_hold else "none"))
        rows.append(("requests the devnet answered in the next 10 s held", str(requests_10s)))
        rows.append(("block fixed → tip 20,000 stored", "never" if resumed is None else f"{resumed:.2f} s"))
        rows.append(("exit code on SIGTERM", str(code)))
    return rows


async def long_catch_up() -> list[tuple]:
    rows: list[tuple] = []
    with devnet_process("--blocks", "100000", "--seed", "7") as (url, _):
        await control(url, {"latency": 0.25})
        async with scratch_database() as dsn:
            port = free_port()
            started = time.perf_counter()
            proc = start_run(url, dsn, f"127.0.0.1:{port}", "--batch-size", "200")
            statuses: collections.Counter[str] = collections.Counter()
            caught_up = None
            try:
                async with aiohttp.ClientSession() as http:
                    while time.perf_counter() - started < 600:
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/healthz",
                                                timeout=aiohttp.ClientTimeout(total=5)) as response:
                                statuses[str(response.status)] += 1
                        except (aiohttp.ClientError, asyncio.TimeoutError):
                            statuses["no answer (starting)"] += 1
                        current = await state(dsn)
                        if current and current[0] == 100000:
                            caught_up = time.perf_counter() - started
                            break
                        await asyncio.sleep(1.0)
            finally:
                stop(proc)
        rows.append(("catch-up of 100,001 blocks, 0.25 s per answer, batches of 200", "unfinished" if caught_up is None else f"{caught_up:.1f} s"))
        rows.append(("/healthz samples, one a second", str(sum(statuses.values()))))
        for status, count in sorted(statuses.items()):
            rows.append((f"  answered {status}", str(count)))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["bad-block", "catch-up"])
    args = parser.parse_args()
    print(f"### Edges, with `gnosync run` ({machine()})\n")
    print("| what | measured |\n| --- | --- |")
    if args.only in (None, "bad-block"):
        for what, value in await bad_block():
            print(f"| {what} | {value} |")
    if args.only in (None, "catch-up"):
        for what, value in await long_catch_up():
            print(f"| {what} | {value} |")


if __name__ == "__main__":
    asyncio.run(main())
