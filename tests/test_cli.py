"""The gnosync command as a user runs it: real processes, real signals, real kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import asyncpg
import orjson
import pytest

from .compare import differences


def gnosync(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gnosync", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def start(*args: str, env: dict | None = None, http: str | None = "127.0.0.1:0") -> subprocess.Popen:
    """``gnosync`` in the background; its stderr lines collect in ``proc.lines``.

    ``http`` is given as ``--http`` (None: no flag, so the default address applies).
    """
    flags = [] if http is None else ["--http", http]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gnosync", *args, "--log-format", "json", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    proc.lines = []
    threading.Thread(target=lambda: proc.lines.extend(proc.stderr), daemon=True).start()
    return proc


def started(proc: subprocess.Popen) -> None:
    """Wait until the process follows the chain (its signal handlers are in place)."""
    wait_for(lambda: any('"sync started"' in line for line in proc.lines), what="start-up")


def log_events(proc: subprocess.Popen, message: str) -> list[dict]:
    """The JSON log lines of ``proc`` whose message starts with ``message``."""
    found = []
    for line in list(proc.lines):
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("message", "").startswith(message):
                found.append(entry)
    return found


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gnosync: error: "), lines[0]
    return lines[0]


async def state_of(dsn: str) -> dict | None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('indexer.app_state')"):
            return None
        row = await conn.fetchrow("SELECT * FROM indexer.app_state")
        return dict(row) if row else None
    finally:
        await conn.close()


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def last_height(dsn: str) -> int:
    state = asyncio.run(state_of(dsn))
    return state["last_block_h"] if state and state["last_block_h"] is not None else -1


@contextmanager
def html_server():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = b"<html><body>Welcome</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/graphql/query"
    finally:
        server.shutdown()


# --- bad input: one clear line, non-zero exit ------------------------------------------

def test_bad_dsn(devnet):
    _, url = devnet(blocks=10)
    line = one_line_error(gnosync("sync", "--from", "0", "--to", "5", "--source", url,
                                  "--db", "postgresql://gnosync:s3cret@127.0.0.1:1/nowhere"))
    assert "PostgreSQL" in line and "s3cret" not in line


def test_unknown_database(devnet, pg_server_dsn):
    _, url = devnet(blocks=10)
    from .conftest import with_database
    line = one_line_error(gnosync("sync", "--from", "0", "--to", "5", "--source", url,
                                  "--db", with_database(pg_server_dsn, "no_such_db_here")))
    assert "no_such_db_here" in line


def test_unreachable_source(db_dsn):
    line = one_line_error(gnosync("run", "--source", "http://127.0.0.1:1/graphql/query", "--db", db_dsn))
    assert "127.0.0.1:1" in line


def test_url_that_is_not_a_tx_indexer(db_dsn):
    with html_server() as url:
        line = one_line_error(gnosync("sync", "--from", "0", "--to", "1", "--source", url, "--db", db_dsn))
    assert "not" in line and "tx-indexer" in line


def test_missing_source(db_dsn):
    line = one_line_error(gnosync("run", "--db", db_dsn, env={"GNOSYNC_SOURCE": ""}))
    assert "GNOSYNC_SOURCE" in line


@pytest.mark.parametrize("args", [
    ["run", "--batch-size", "abc"],
    ["run", "--no-such-flag"],
    ["sync", "--from", "5", "--to", "1", "--source", "http://x"],
    ["sync", "--to", "1"],
    ["run", "--batch-size", "0", "--source", "http://x"],
    ["run", "--source", "ftp://x"],
    ["frobnicate"],
])
def test_bad_flags(args):
    one_line_error(gnosync(*args))


def test_bad_environment_value():
    line = one_line_error(gnosync("run", env={"GNOSYNC_INTERVAL": "soon", "GNOSYNC_SOURCE": "http://x"}))
    assert "interval" in line and "GNOSYNC_INTERVAL" in line


def test_given_http_address_in_use_is_one_line_error(devnet, db_dsn, tmp_path):
    _, url = devnet(blocks=10)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = tmp_path / "gnosync.toml"
        config.write_text(f'http = "{address}"\n')
        for how, env in [
            (["--http", address], {}),
            ([], {"GNOSYNC_HTTP": address}),
            (["--config", str(config)], {}),
        ]:
            result = gnosync("run", "--source", url, "--db", db_dsn, *how, env=env)
            line = one_line_error(result)
            assert result.returncode == 2
            assert f"cannot serve metrics and health on {address}: another process" in line
            assert line.count(address) == 1 and line.count("use") <= 1, line
            assert "--http" in line and "GNOSYNC_HTTP" in line and "config file" in line


def default_http_env(tmp_path) -> dict[str, str]:
    """An environment in which ``run`` uses the default metrics address: no
    GNOSYNC_HTTP, and a config file that sets nothing."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    return {"GNOSYNC_HTTP": "", "GNOSYNC_CONFIG": str(config)}


def serving_url(proc: subprocess.Popen) -> str:
    (line,) = wait_for(lambda: log_events(proc, "serving metrics and health"), what="the endpoint")
    return line["url"]


def get_url(address: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(address, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_second_run_without_http_serves_on_a_free_port_as_a_standby(devnet, db_dsn, tmp_path):
    """Two `gnosync run` with the same flags on one host and database: the second finds
    the default port taken (by the first, or by anyone), says so, serves elsewhere and
    waits as a standby."""
    chain, url = devnet(blocks=2000)
    env = default_http_env(tmp_path)
    first = start("run", "--source", url, "--db", db_dsn, "--interval", "0.2", env=env, http=None)
    second = None
    try:
        first_url = serving_url(first)
        wait_for(lambda: last_height(db_dsn) == chain.tip, what="the first to reach the tip")
        second = start("run", "--source", url, "--db", db_dsn, "--interval", "0.2", env=env, http=None)
        second_url = serving_url(second)
        (moved,) = log_events(second, "127.0.0.1:9464 is taken")
        assert moved["level"] == "warning" and moved["taken"] == "127.0.0.1:9464"
        assert moved["url"] == second_url and second_url in moved["message"]
        assert second_url != first_url and not second_url.endswith(":9464")
        wait_for(lambda: log_events(second, "standby"), what="the second to wait as a standby")
        assert second.poll() is None and first.poll() is None

        status, body = get_url(second_url + "/healthz")
        assert status == 200 and orjson.loads(body)["ok"] is True
        _, metrics = get_url(second_url + "/metrics")
        assert "\ngnosync_leader 0.0\n" in metrics.decode()
        _, metrics = get_url(first_url + "/metrics")
        assert "\ngnosync_leader 1.0\n" in metrics.decode()
        report = orjson.loads(get_url(second_url + "/status")[1])
        assert report["leader"] and len(report["standbys"]) == 1

        for proc in (second, first):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


# --- the commands doing their job ------------------------------------------------------

def test_sync_status_and_migrate(devnet, db_dsn):
    chain, url = devnet(blocks=200, chain_id="gnoland-test")
    result = gnosync("sync", "--from", "0", "--to", "120", "--source", url, "--db", db_dsn)
    assert result.returncode == 0, result.stderr
    report = orjson.loads(gnosync("status", "--json", "--source", url, "--db", db_dsn).stdout)
    for key in ["component", "last_block_h", "last_block_hash", "status", "error_count",
                "last_error", "last_sync_time", "chain_id", "source_height", "lag"]:
        assert key in report
    assert report["last_block_h"] == 120 and report["chain_id"] == "gnoland-test"
    assert report["source_height"] == chain.tip and report["lag"] == chain.tip - 120
    assert report["component"] == "block_sync" and report["error_count"] == 0
    text = gnosync("status", "--db", db_dsn)
    assert text.returncode == 0 and "last_block_h" in text.stdout
    migrated = gnosync("migrate", "--db", db_dsn)
    assert migrated.returncode == 0 and "up to date" in migrated.stderr


def test_status_without_source_and_before_any_sync(db_dsn):
    gnosync("migrate", "--db", db_dsn)
    report = orjson.loads(gnosync("status", "--json", "--db", db_dsn, env={"GNOSYNC_SOURCE": ""}).stdout)
    assert report["last_block_h"] is None and report["source_height"] is None


def test_sigterm_mid_backfill_stops_cleanly(devnet, db_dsn):
    chain, url = devnet(blocks=300_000)
    proc = start("run", "--source", url, "--db", db_dsn, "--batch-size", "200", "--fetch-concurrency", "1")
    try:
        wait_for(lambda: last_height(db_dsn) > 1000, what="progress")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    state = asyncio.run(state_of(db_dsn))
    assert state["status"] == "stopped"
    last = state["last_block_h"]
    assert 1000 < last < chain.tip
    assert asyncio.run(differences(db_dsn, chain, 0, last)) == []


def test_sigint_at_the_tip(devnet, db_dsn):
    chain, url = devnet(blocks=300)
    proc = start("run", "--source", url, "--db", db_dsn, "--interval", "0.2")
    try:
        wait_for(lambda: (asyncio.run(state_of(db_dsn)) or {}).get("status") == "synced", what="synced")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert asyncio.run(state_of(db_dsn))["status"] == "stopped"


def test_kill_9_mid_backfill_then_restart_gives_exactly_the_source(devnet, db_dsn):
    chain, url = devnet(blocks=20_000, block_time=0.05)
    rng = random.Random(7)
    for _ in range(3):
        proc = start("run", "--source", url, "--db", db_dsn, "--batch-size", str(rng.choice([100, 250, 999])))
        before = last_height(db_dsn)
        wait_for(lambda: last_height(db_dsn) > before + 300, what="progress")
        time.sleep(rng.random() * 0.5)
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()
    proc = start("run", "--source", url, "--db", db_dsn, "--batch-size", "1000", "--interval", "0.1")
    try:
        started(proc)
        tip_then = chain.tip
        wait_for(lambda: last_height(db_dsn) >= tip_then, timeout=120, what="tip")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    last = last_height(db_dsn)
    assert asyncio.run(differences(db_dsn, chain, 0, last)) == []
