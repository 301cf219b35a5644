"""The operator's endpoints of a running `gnosync run`, read over real HTTP."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request

import orjson

from gnosync.devnet import Faults

from .test_cli import start, started, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_health_readiness_and_status_while_syncing(devnet, db_dsn):
    faults = Faults(ops=("getBlocks",))
    chain, url = devnet(blocks=3000, faults=faults)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start("run", "--source", url, "--db", db_dsn, "--interval", "0.2",
                 env={"GNOSYNC_READY_MAX_LAG": "20"}, http=f"127.0.0.1:{port}")
    try:
        started(proc)
        wait_for(lambda: get(base + "/readyz")[0] == 200, what="ready at the tip")
        status, body = get(base + "/healthz")
        assert status == 200 and orjson.loads(body)["ok"] is True

        text = get(base + "/metrics")[1].decode()
        assert metric(text, "gnosync_blocks_synced_total") == chain.tip + 1
        assert metric(text, "gnosync_transactions_synced_total") > 0
        assert metric(text, "gnosync_last_synced_height") == chain.tip
        assert metric(text, "gnosync_source_height") == chain.tip
        assert metric(text, "gnosync_lag_blocks") == 0
        assert metric(text, "gnosync_leader") == 1
        assert metric(text, "gnosync_batch_duration_seconds_count") >= 1
        assert f'gnosync_source_up{{endpoint="{url}"}} 1.0' in text

        report = orjson.loads(get(base + "/status")[1])
        assert report["last_block_h"] == chain.tip and report["status"] == "synced"
        assert report["leader"] and report["lag"] == 0

        # The source stops serving blocks while the chain grows: lag builds, /readyz
        # flips, errors are counted; the loop still turns, so /healthz stays up.
        faults.http_503 = 1.0
        for _ in range(100):
            chain.append_block()
        wait_for(lambda: get(base + "/readyz")[0] == 503, what="not ready")
        status, body = get(base + "/readyz")
        assert "behind" in orjson.loads(body)["reason"]
        assert get(base + "/healthz")[0] == 200
        wait_for(lambda: (metric(get(base + "/metrics")[1].decode(), 'gnosync_errors_total{kind="source"}') or 0) > 0,
                 what="errors counted")

        faults.http_503 = 0.0
        wait_for(lambda: get(base + "/readyz")[0] == 200, what="ready again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
