"""Shared pieces of the benchmarks: devnet processes, a blackholed endpoint, a scratch
database, measured gnosync runs and Markdown tables."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parents[1]
GNOSYNC = [sys.executable, "-m", "gnosync"]
DEFAULT_PG = os.environ.get("GNOSYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_URL = re.compile(r"(http://\S+/graphql/query)")


def child_env() -> dict[str, str]:
    """The environment without GNOSYNC_* settings, so only a bench's flags configure
    gnosync (the gnoland1 exports' location is kept: the devnet looks for them there)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("GNOSYNC_") or k == "GNOSYNC_GNOLAND1_EXPORTS"}


@contextmanager
def devnet_process(
    *args: str, command: list[str] | None = None, on_line: Callable[[str], None] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A devnet on a free port in its own process; yields (GraphQL URL, process).

    ``command`` defaults to ``gnosync devnet``; ``--port 0`` and ``args`` follow it.
    Every line the devnet prints after its "serving ... at URL" line goes to
    ``on_line`` (from a reader thread).
    """
    proc = subprocess.Popen(
        [*(command or [*GNOSYNC, "devnet"]), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=child_env(),
    )
    try:
        url = None
        seen: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _URL.search(line)
            if match:
                url = match.group(1)
                break
            seen.append(line)
        if url is None:
            raise SystemExit(f"the devnet did not start: {''.join(seen[-5:]).strip()}")

        def drain() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if on_line is not None:
                    on_line(line)

        threading.Thread(target=drain, daemon=True).start()
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def blackholed_endpoint() -> Iterator[str]:
    """A loopback TCP listener that accepts every connection and never answers (nor
    closes it): a tx-indexer whose host is up but whose process hangs, or a proxy in
    front of a dead one. Yields its GraphQL URL."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read from, never written to

    thread = threading.Thread(target=accept, name="blackhole", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/graphql/query"
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in held:
            conn.close()


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
    """A process's resident set (``VmRSS``) or its peak (``VmHWM``) in MB, from /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else None


@dataclass(frozen=True)
class Measured:
    """One finished process: when it started (unix time), how long it ran, its own peak
    RSS, exit code and output."""

    started_at: float
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(args: list[str]) -> Measured:
    """Run ``args`` and wait for it; the peak RSS is that process's own.

    It is the ``VmHWM`` of the program after its exec, polled every 20 ms: ``ru_maxrss``
    would also count the copy of this (large) bench process the child was forked from
    before it exec'd, and report the bench's size instead of gnosync's.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started_at, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=REPO, env=child_env())
        peak = 0.0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                seen = rss_mb(proc.pid, "VmHWM")
                if seen is not None:
                    peak = max(peak, seen)
                done.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        proc.wait()
        done.set()
        poller.join()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Measured(started_at, seconds, peak, proc.returncode,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def table(title: str, rows: list[tuple], headers: tuple) -> str:
    """A Markdown table under a ``###`` title (the README copies it as is)."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [f"### {title}", "", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def machine() -> str:
    """``<cores>-core <arch>``, for the title of a table."""
    return f"{os.cpu_count()}-core {os.uname().machine}"
