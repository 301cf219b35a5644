"""The operator's view: Prometheus metrics, the HTTP endpoints, and the deploy/ files
(alert rules and dashboard) that read the metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gnosync.errors import (
    BatchInvalid,
    ChainMismatch,
    ConfigError,
    NotATxIndexer,
    SourceError,
    SourceTimeout,
    StoreError,
)
from gnosync.observe.http import (
    AddressInUse,
    Liveness,
    ObserveServer,
    liveness_window,
    parse_address,
)
from gnosync.observe.metrics import CONTENT_TYPE, SyncMetrics, error_kind
from gnosync.source.pool import EndpointHealth

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
METRIC_NAME = re.compile(r"\bgnosync_[a-z0-9_]*[a-z0-9]\b")

PUBLIC_NAMES = {
    "gnosync_blocks_synced_total",
    "gnosync_transactions_synced_total",
    "gnosync_last_synced_height",
    "gnosync_source_height",
    "gnosync_lag_blocks",
    "gnosync_lag_seconds",
    "gnosync_last_sync_timestamp_seconds",
    "gnosync_batch_duration_seconds_bucket",
    "gnosync_batch_duration_seconds_sum",
    "gnosync_batch_duration_seconds_count",
    "gnosync_batch_size_blocks_bucket",
    "gnosync_batch_size_blocks_sum",
    "gnosync_batch_size_blocks_count",
    "gnosync_errors_total",
    "gnosync_retries_total",
    "gnosync_stuck",
    "gnosync_source_up",
    "gnosync_source_latency_seconds",
    "gnosync_source_reported_height",
    "gnosync_leader",
    "gnosync_up",
}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(metrics: SyncMetrics) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition text, keyed by name and labels."""
    parsed = text_string_to_metric_families(metrics.render().decode())
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parsed
        for s in family.samples
    }


def value(metrics: SyncMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def exercised(clock: FakeClock | None = None) -> SyncMetrics:
    """Metrics after one call of every method, so every series exists."""
    metrics = SyncMetrics(clock=clock or FakeClock())
    metrics.source_height(1500)
    metrics.batch_committed(1000, 12, 0.42, 1000, datetime(2024, 1, 1, tzinfo=timezone.utc))
    metrics.error(SourceTimeout("timeout"))
    metrics.retry("timeout")
    metrics.stuck(False)
    metrics.endpoints([
        EndpointHealth("http://idx-1:8546/graphql/query", height=1500, latency=0.02),
        EndpointHealth("http://idx-2:8546/graphql/query", height=1490, latency=0.05, up=False),
    ])
    metrics.role(True)
    return metrics


# -- metrics ----------------------------------------------------------------------------


def test_render_exposes_every_public_name():
    metrics = exercised()
    rendered = {name for name, _ in samples(metrics)}
    assert PUBLIC_NAMES <= rendered
    assert PUBLIC_NAMES <= metrics.names()
    assert value(metrics, "gnosync_up") == 1
    text = metrics.render().decode()
    assert "# TYPE gnosync_batch_duration_seconds histogram" in text
    assert "_created" not in text


def test_registries_are_independent():
    a, b = SyncMetrics(), SyncMetrics()
    a.batch_committed(5, 1, 0.01, 4, None)
    assert value(a, "gnosync_blocks_synced_total") == 5
    assert value(b, "gnosync_blocks_synced_total") == 0


def test_counters_and_histograms_add_up():
    clock = FakeClock()
    metrics = SyncMetrics(clock=clock)
    metrics.batch_committed(100, 3, 0.002, 99, None)
    clock.now += 10
    metrics.batch_committed(50, 7, 3.0, 149, None)
    assert value(metrics, "gnosync_blocks_synced_total") == 150
    assert value(metrics, "gnosync_transactions_synced_total") == 10
    assert value(metrics, "gnosync_batch_duration_seconds_count") == 2
    assert value(metrics, "gnosync_batch_duration_seconds_sum") == pytest.approx(3.002)
    assert value(metrics, "gnosync_batch_duration_seconds_bucket", le="0.0025") == 1
    assert value(metrics, "gnosync_batch_duration_seconds_bucket", le="5.0") == 2
    assert value(metrics, "gnosync_batch_duration_seconds_bucket", le="0.001") == 0
    # average batch size = sum / count
    assert value(metrics, "gnosync_batch_size_blocks_sum") / value(metrics, "gnosync_batch_size_blocks_count") == 75
    assert value(metrics, "gnosync_last_synced_height") == 149
    assert value(metrics, "gnosync_last_sync_timestamp_seconds") == clock.now
    metrics.retry("timeout")
    metrics.retry("bad_data")
    assert value(metrics, "gnosync_retries_total", cause="timeout") == 1
    assert value(metrics, "gnosync_retries_total", cause="bad_data") == 1


def test_batch_duration_buckets_span_a_millisecond_to_ten_seconds():
    metrics = SyncMetrics()
    bounds = {
        float(dict(labels)["le"])
        for name, labels in samples(metrics)
        if name == "gnosync_batch_duration_seconds_bucket"
    }
    assert min(bounds) == 0.001
    assert max(b for b in bounds if b != float("inf")) == 10.0
    assert len(bounds) >= 10


def test_lag_blocks_and_seconds():
    clock = FakeClock()
    metrics = SyncMetrics(clock=clock)
    assert metrics.lag_blocks is None
    assert value(metrics, "gnosync_lag_blocks") == 0

    block_time = datetime.fromtimestamp(clock.now - 90, tz=timezone.utc)
    metrics.batch_committed(10, 0, 0.1, 100, block_time)
    assert metrics.lag_blocks is None  # the source height is not known yet
    metrics.source_height(130)
    assert metrics.lag_blocks == 30
    assert value(metrics, "gnosync_lag_blocks") == 30
    assert value(metrics, "gnosync_source_height") == 130
    assert value(metrics, "gnosync_lag_seconds") == pytest.approx(90)
    clock.now += 15  # computed when scraped: a stalled sync shows a growing lag
    assert value(metrics, "gnosync_lag_seconds") == pytest.approx(105)

    metrics.batch_committed(30, 0, 0.1, 130, datetime.fromtimestamp(clock.now - 1, tz=timezone.utc))
    assert metrics.lag_blocks == 0
    assert value(metrics, "gnosync_lag_seconds") == 0  # at the tip
    metrics.source_height(125)  # an endpoint behind the stored tip is no negative lag
    assert metrics.lag_blocks == 0


def test_block_time_as_naive_datetime_or_rfc3339_text():
    clock = FakeClock(datetime(2024, 5, 1, 12, 0, 10, tzinfo=timezone.utc).timestamp())
    metrics = SyncMetrics(clock=clock)
    metrics.source_height(10)
    metrics.synced_to(5, datetime(2024, 5, 1, 12, 0, 0))  # naive: UTC
    assert metrics.lag_seconds == pytest.approx(10)
    metrics.synced_to(6, "2024-05-01T12:00:05.123456789Z")
    assert metrics.lag_seconds == pytest.approx(4.876543211, abs=1e-6)
    assert metrics.last_height == 6
    assert value(metrics, "gnosync_blocks_synced_total") == 0  # synced_to counts nothing


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (SourceError("down"), "source"),
        (NotATxIndexer("not graphql"), "source"),
        (StoreError("connection lost", retryable=True), "store"),
        (BatchInvalid(12, "link", "hash differs"), "validation"),
        (ChainMismatch("other chain"), "chain"),
        (ConfigError("bad"), "other"),
        (RuntimeError("boom"), "other"),
        (asyncio.TimeoutError(), "other"),
    ],
)
def test_error_classification(exc: BaseException, kind: str):
    assert error_kind(exc) == kind
    metrics = SyncMetrics()
    metrics.error(exc)
    metrics.error(exc)
    for other in ("source", "store", "validation", "chain", "other"):
        assert value(metrics, "gnosync_errors_total", kind=other) == (2 if other == kind else 0)


def test_endpoint_gauges_per_url():
    metrics = SyncMetrics()
    a, b = "http://idx-1:8546/graphql/query", "http://idx-2:8546/graphql/query"
    metrics.endpoints([EndpointHealth(a, height=100, latency=0.25), EndpointHealth(b, up=False)])
    assert value(metrics, "gnosync_source_up", endpoint=a) == 1
    assert value(metrics, "gnosync_source_up", endpoint=b) == 0
    assert value(metrics, "gnosync_source_latency_seconds", endpoint=a) == 0.25
    assert value(metrics, "gnosync_source_reported_height", endpoint=a) == 100
    # unknown latency and height are left out, not reported as 0
    assert value(metrics, "gnosync_source_latency_seconds", endpoint=b) is None
    assert value(metrics, "gnosync_source_reported_height", endpoint=b) is None

    metrics.endpoints([EndpointHealth(b, height=120, latency=0.5)])  # a is gone
    assert value(metrics, "gnosync_source_up", endpoint=a) is None
    assert value(metrics, "gnosync_source_latency_seconds", endpoint=a) is None
    assert value(metrics, "gnosync_source_up", endpoint=b) == 1
    assert value(metrics, "gnosync_source_reported_height", endpoint=b) == 120


def test_role():
    metrics = SyncMetrics()
    assert value(metrics, "gnosync_leader") == 0
    metrics.role(True)
    assert value(metrics, "gnosync_leader") == 1
    metrics.role(False)
    assert value(metrics, "gnosync_leader") == 0


# -- liveness ---------------------------------------------------------------------------


def test_liveness_window():
    assert liveness_window(1.0) == 30
    assert liveness_window(10.0) == 50
    assert Liveness.for_interval(12).window == 60
    clock = FakeClock(0)
    liveness = Liveness(30, clock=clock)
    clock.now = 29.9
    assert liveness.alive()[0]
    clock.now = 30.1
    ok, reason = liveness.alive()
    assert not ok and "30.1s" in reason
    liveness.beat()
    assert liveness.alive() == (True, "last turn 0.0s ago")
    with pytest.raises(ValueError):
        Liveness(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("localhost", ("localhost", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]", ("::", 9464)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:port", "127.0.0.1:70000", "[::1"])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError):
        parse_address(text)


# -- HTTP -------------------------------------------------------------------------------


class Probe:
    """Callbacks the tests flip."""

    def __init__(self):
        self.ready = (False, "catching up: 500 blocks behind")
        self.ready_error: Exception | None = None
        self.report = {"component": "block_sync", "status": "syncing", "last_block_h": 1000,
                       "last_sync_time": datetime(2024, 1, 1, tzinfo=timezone.utc)}

    async def status(self) -> dict:
        return self.report

    async def is_ready(self) -> tuple[bool, str]:
        if self.ready_error is not None:
            raise self.ready_error
        return self.ready


@pytest.fixture
async def served():
    probe = Probe()
    metrics = exercised()
    probe.clock = FakeClock(0)
    liveness = Liveness(30, clock=probe.clock)
    server = ObserveServer(
        "127.0.0.1", 0, metrics=metrics, status=probe.status, ready=probe.is_ready, alive=liveness.alive
    )
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield server, session, probe, liveness, metrics
    await server.stop()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_server_binds_a_real_port(served):
    server, *_ = served
    assert server.port != 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_metrics_endpoint(served):
    server, session, _, _, metrics = served
    status, content_type, body = await get(session, server.url + "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE
    assert content_type.startswith("text/plain; version=")
    names = {s.name for family in text_string_to_metric_families(body) for s in family.samples}
    assert PUBLIC_NAMES <= names
    metrics.batch_committed(7, 0, 0.01, 1007, None)
    _, _, body = await get(session, server.url + "/metrics")
    assert "gnosync_blocks_synced_total 1007.0" in body


async def test_healthz_flips_when_the_loop_stops_turning(served):
    server, session, probe, liveness, _ = served
    status, content_type, body = await get(session, server.url + "/healthz")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body)["ok"] is True

    probe.clock.now = 30.1  # no beat for longer than the window
    status, _, body = await get(session, server.url + "/healthz")
    assert status == 503
    answer = json.loads(body)
    assert answer["ok"] is False
    assert "no turn of the sync loop" in answer["reason"]

    liveness.beat()
    status, _, body = await get(session, server.url + "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True


async def test_readyz_follows_the_ready_callback(served):
    server, session, probe, _, _ = served
    status, content_type, body = await get(session, server.url + "/readyz")
    assert status == 503 and content_type == "application/json"
    answer = json.loads(body)
    assert answer["ok"] is False
    assert answer["reason"] == "catching up: 500 blocks behind"
    assert answer["lag_blocks"] == 500

    probe.ready = (True, "at the tip")
    status, _, body = await get(session, server.url + "/readyz")
    assert status == 200
    assert json.loads(body)["reason"] == "at the tip"

    probe.ready_error = StoreError("connection refused", retryable=True)
    status, _, body = await get(session, server.url + "/readyz")
    assert status == 503
    assert "connection refused" in json.loads(body)["reason"]


async def test_status_json(served):
    server, session, probe, _, _ = served
    status, content_type, body = await get(session, server.url + "/status")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body) == {
        "component": "block_sync",
        "status": "syncing",
        "last_block_h": 1000,
        "last_sync_time": "2024-01-01T00:00:00+00:00",
    }


async def test_slow_or_failing_callbacks_answer_503():
    async def slow_status() -> dict:
        await asyncio.sleep(5)
        return {}

    async def slow_ready() -> tuple[bool, str]:
        await asyncio.sleep(5)
        return True, ""

    def broken_alive() -> tuple[bool, str]:
        raise RuntimeError("broken")

    server = ObserveServer(
        port=0, metrics=SyncMetrics(), status=slow_status, ready=slow_ready, alive=broken_alive, timeout=0.1
    )
    async with server, aiohttp.ClientSession() as session:
        assert server.host == "127.0.0.1"  # loopback by default
        status, _, body = await get(session, server.url + "/status")
        assert status == 503 and "longer than" in json.loads(body)["error"]
        status, _, body = await get(session, server.url + "/readyz")
        assert status == 503 and "longer than" in json.loads(body)["reason"]
        status, _, body = await get(session, server.url + "/healthz")
        assert status == 503 and "broken" in json.loads(body)["reason"]
        status, _, _ = await get(session, server.url + "/nope")
        assert status == 404


async def test_stop_closes_the_port():
    async def status() -> dict:
        return {}

    async def ready() -> tuple[bool, str]:
        return True, "ok"

    server = ObserveServer("127.0.0.1", 0, metrics=SyncMetrics(), status=status, ready=ready,
                           alive=Liveness().alive)
    await server.start()
    url = server.url
    await server.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url + "/metrics")


def _idle_server(port: int) -> ObserveServer:
    async def status() -> dict:
        return {}

    async def ready() -> tuple[bool, str]:
        return True, "ok"

    return ObserveServer(port=port, metrics=SyncMetrics(), status=status, ready=ready,
                         alive=Liveness().alive)


async def test_port_in_use_is_a_clear_error():
    async with _idle_server(0) as first:
        second = _idle_server(first.port)
        with pytest.raises(AddressInUse, match="in use") as info:
            await second.start()
        assert info.value.filename == f"127.0.0.1:{first.port}"
        assert second.port == first.port and second.taken_port is None
        await second.stop()  # nothing to stop, and no error


async def test_a_taken_port_gives_way_to_a_free_one_when_asked():
    async with _idle_server(0) as first, aiohttp.ClientSession() as session:
        second = _idle_server(first.port)
        await second.start(or_free_port=True)
        try:
            assert second.taken_port == first.port
            assert second.port not in (0, first.port)
            assert second.url == f"http://127.0.0.1:{second.port}"
            for server in (first, second):  # both answer, each on its own port
                status, _, body = await get(session, server.url + "/healthz")
                assert status == 200 and json.loads(body)["ok"] is True
        finally:
            await second.stop()
        # A free port is used as asked, and nothing is said to have been taken.
        third = _idle_server(0)
        async with third:
            assert third.taken_port is None and third.port != 0


async def test_an_unusable_address_is_an_error_even_when_a_free_port_would_do():
    server = _idle_server(9464)
    server.host = "192.0.2.1"  # TEST-NET-1: not an address of this machine
    with pytest.raises(OSError) as info:
        await server.start(or_free_port=True)
    assert info.value.filename == "192.0.2.1:9464"
    assert not isinstance(info.value, AddressInUse) and server.taken_port is None


# -- deploy/ ----------------------------------------------------------------------------


def known_names() -> set[str]:
    return exercised().names()


def test_dashboard_queries_only_existing_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "gnosync-dashboard.json").read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in dashboard["__inputs"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used - known_names() == set()
    # the panels the operator needs are there
    for name in ("gnosync_last_synced_height", "gnosync_source_height", "gnosync_lag_blocks",
                 "gnosync_lag_seconds", "gnosync_blocks_synced_total", "gnosync_transactions_synced_total",
                 "gnosync_batch_duration_seconds_bucket", "gnosync_errors_total", "gnosync_retries_total",
                 "gnosync_source_up", "gnosync_source_latency_seconds", "gnosync_source_reported_height",
                 "gnosync_leader"):
        assert name in used, name
    assert any("histogram_quantile(0.99" in e for e in exprs)
    datasources = {json.dumps(p.get("datasource")) for p in dashboard["panels"] if p["type"] != "row"}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})}


def test_alert_rules_use_only_existing_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "gnosync-rules.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"GnosyncLagHigh", "GnosyncErrorsRising", "GnosyncNoLeader", "GnosyncNotReady",
            "GnosyncStalled"} <= set(alerts)
    used = {name for expr in alerts.values() for name in METRIC_NAME.findall(expr)}
    assert used - known_names() == set()

    tests = yaml.safe_load((DEPLOY / "prometheus" / "gnosync-rules.test.yml").read_text())
    series = {name for t in tests["tests"] for s in t["input_series"] for name in METRIC_NAME.findall(s["series"])}
    assert series - known_names() == set()
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert {"GnosyncLagHigh", "GnosyncNoLeader"} <= tested


def test_systemd_unit_and_env_example():
    unit = (DEPLOY / "gnosync.service").read_text()
    for line in ("EnvironmentFile=/etc/gnosync/gnosync.env", "Restart=on-failure", "RestartSec=2",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "KillSignal=SIGTERM", "TimeoutStopSec=15",
                 "User=gnosync"):
        assert line in unit.splitlines(), line
    assert re.search(r"^ExecStart=\S*gnosync run\b", unit, re.M)
    env = (DEPLOY / "gnosync.env.example").read_text()
    for key in ("GNOSYNC_SOURCE=", "GNOSYNC_DB=", "GNOSYNC_HTTP=127.0.0.1:9464"):
        assert key in env


promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")


@promtool
def test_deploy_check_script():
    result = subprocess.run([str(DEPLOY / "check.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@promtool
def test_dashboard_queries_parse(tmp_path):
    """Every dashboard query is valid PromQL (checked as recording rules by promtool)."""
    dashboard = json.loads((DEPLOY / "grafana" / "gnosync-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    substituted = [
        e.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*") for e in exprs
    ]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(substituted)
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
