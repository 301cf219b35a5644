"""Shared pieces of the benchmarks: a devnet process, a scratch database, RSS sampling."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parents[1]
GNOSYNC = [sys.executable, "-m", "gnosync"]
DEFAULT_PG = os.environ.get("GNOSYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def devnet_process(*args: str):
    """``gnosync devnet`` on a free port in its own process; yields its GraphQL URL."""
    proc = subprocess.Popen(
        [*GNOSYNC, "devnet", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"(http://\S+/graphql/query)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            raise RuntimeError("the devnet did not start")
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


@asynccontextmanager
async def scratch_database(server_dsn: str = DEFAULT_PG):
    """A new empty database, dropped afterwards; yields its DSN."""
    name = "gnosync_bench_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_dsn, name)
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else None


def run_measured(args: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; return (seconds, peak RSS in MB, result). Peak RSS comes from
    GNU time's maximum resident set size of the process."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB=%M", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO,
    )
    seconds = time.perf_counter() - started
    match = re.search(r"MAXRSS_KB=(\d+)", result.stderr)
    peak = int(match.group(1)) / 1024 if match else float("nan")
    return seconds, peak, result


def table(title: str, rows: list[tuple], headers: tuple) -> str:
    """A plain fixed-width table (the README copies it as is)."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [f"### {title}", "", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def run(coro):
    return asyncio.run(coro)
