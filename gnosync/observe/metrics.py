"""Prometheus metrics of one gnosync process.

:class:`SyncMetrics` owns its own :class:`~prometheus_client.CollectorRegistry` (not the
process-wide default one), so several can live side by side. The sync loop calls its
methods as things happen; each call only updates a few numbers in memory. Values that
depend on the clock (``gnosync_lag_seconds``) are computed when scraped.

Metric names are a public interface: the alert rules and the dashboard in ``deploy/``
query them, and operators' own dashboards may too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from gnosync.errors import BatchInvalid, ChainMismatch, SourceError, StoreError

PREFIX = "gnosync_"

ERROR_KINDS = ("source", "store", "validation", "chain", "other")

# One committed batch takes from about a millisecond (a few empty blocks) to seconds.
BATCH_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# From one block per turn at the tip to the largest batches operators configure.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class EndpointView(Protocol):
    """What :meth:`SyncMetrics.endpoints` reads of each source endpoint."""

    url: str
    up: bool
    latency: float | None
    height: int | None


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of ``gnosync_errors_total`` for ``exc``."""
    if isinstance(exc, SourceError):
        return "source"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, BatchInvalid):
        return "validation"
    if isinstance(exc, ChainMismatch):
        return "chain"
    return "other"


def _epoch(value: datetime | str | None) -> float | None:
    """Seconds since the epoch of a block time; naive times are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        from gnosync.model import parse_time

        value = parse_time(value)[0]
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


class SyncMetrics:
    """The metrics of one sync process, in a registry of their own.

    ``clock`` gives wall-clock seconds since the epoch (``time.time``); tests may pass
    a fake one.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._last_height: int | None = None
        self._last_block_time: float | None = None
        self._source_height: int | None = None
        self._endpoints: set[str] = set()
        r = self.registry

        self.blocks_synced = Counter(
            "gnosync_blocks_synced", "Blocks committed to the database.", registry=r)
        self.transactions_synced = Counter(
            "gnosync_transactions_synced", "Transactions committed to the database.", registry=r)

        self.last_synced_height = Gauge(
            "gnosync_last_synced_height", "Height of the highest committed block.", registry=r)
        self.source_height_gauge = Gauge(
            "gnosync_source_height", "Highest height the source endpoints report.", registry=r)
        self.lag_blocks_gauge = Gauge(
            "gnosync_lag_blocks", "Blocks the database is behind the source (0 at the tip).", registry=r)
        self.lag_seconds_gauge = Gauge(
            "gnosync_lag_seconds",
            "Seconds since the time of the last committed block, or 0 at the tip.",
            registry=r,
        )
        self.lag_seconds_gauge.set_function(self._lag_seconds)
        self.last_sync_timestamp = Gauge(
            "gnosync_last_sync_timestamp_seconds",
            "When the last batch committed (Unix time; 0 before the first).",
            registry=r,
        )

        self.batch_duration = Histogram(
            "gnosync_batch_duration_seconds",
            "Time to fetch, validate and commit one batch.",
            buckets=BATCH_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "gnosync_batch_size_blocks",
            "Blocks per committed batch (sum/count is the average).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )

        self.errors = Counter(
            "gnosync_errors", "Sync errors by kind: source, store, validation, chain, other.",
            ["kind"], registry=r,
        )
        for kind in ERROR_KINDS:  # every kind exists from the start, so rate() sees the first one
            self.errors.labels(kind=kind)
        self.retries = Counter(
            "gnosync_retries",
            "Retries of a failed fetch, batch or turn, by cause (timeout, cap, http_status,"
            " transport, decode, graphql, bad_data, database, ...).",
            ["cause"], registry=r,
        )
        self.stuck_gauge = Gauge(
            "gnosync_stuck",
            "1 while the same error keeps coming back at one height (see the logs); the"
            " sync keeps retrying but needs a look.",
            registry=r,
        )

        self.source_up = Gauge(
            "gnosync_source_up", "1 when the endpoint's last request succeeded.", ["endpoint"], registry=r)
        self.source_latency = Gauge(
            "gnosync_source_latency_seconds", "The endpoint's request latency (moving average).",
            ["endpoint"], registry=r,
        )
        self.source_reported_height = Gauge(
            "gnosync_source_reported_height", "The height the endpoint last reported.",
            ["endpoint"], registry=r,
        )

        self.leader = Gauge(
            "gnosync_leader", "1 while this process holds the writer lock, 0 as a standby.", registry=r)
        self.up = Gauge("gnosync_up", "1 while the process runs.", registry=r)
        self.up.set(1)
        self._exposed = _WithoutCreated(self.registry)

    # -- what the sync loop reports ---------------------------------------------------

    def batch_committed(
        self,
        blocks: int,
        txs: int,
        seconds: float,
        last_height: int,
        last_block_time: datetime | str | None,
    ) -> None:
        """A batch of ``blocks`` blocks and ``txs`` transactions committed in ``seconds``,
        ending at ``last_height`` whose block time is ``last_block_time``."""
        self.blocks_synced.inc(blocks)
        self.transactions_synced.inc(txs)
        self.batch_duration.observe(seconds)
        self.batch_size.observe(blocks)
        self.last_sync_timestamp.set(self._clock())
        self.synced_to(last_height, last_block_time)

    def synced_to(self, last_height: int | None, last_block_time: datetime | str | None = None) -> None:
        """Where the database ends, without counting a batch (e.g. read at start-up)."""
        self._last_height = last_height
        if last_height is not None:
            self.last_synced_height.set(last_height)
        self._last_block_time = _epoch(last_block_time)
        self._update_lag()

    def source_height(self, height: int) -> None:
        """The highest height the source reports."""
        self._source_height = height
        self.source_height_gauge.set(height)
        self._update_lag()

    def error(self, exc: BaseException) -> None:
        """Count a failed turn or batch under its kind."""
        self.errors.labels(kind=error_kind(exc)).inc()

    def retry(self, cause: str) -> None:
        self.retries.labels(cause=cause).inc()

    def stuck(self, stuck: bool) -> None:
        self.stuck_gauge.set(1 if stuck else 0)

    def endpoints(self, healths: Iterable[EndpointView]) -> None:
        """Per-endpoint gauges from the endpoints' health; endpoints no longer listed
        are dropped."""
        seen: set[str] = set()
        for health in healths:
            url = health.url
            seen.add(url)
            self.source_up.labels(endpoint=url).set(1 if health.up else 0)
            self._set_or_drop(self.source_latency, url, health.latency)
            self._set_or_drop(self.source_reported_height, url, health.height)
        for url in self._endpoints - seen:
            for gauge in (self.source_up, self.source_latency, self.source_reported_height):
                self._drop(gauge, url)
        self._endpoints = seen

    def role(self, leader: bool) -> None:
        """Leader (holds the writer lock) or standby."""
        self.leader.set(1 if leader else 0)

    # -- reading -----------------------------------------------------------------------

    @property
    def lag_blocks(self) -> int | None:
        """Blocks behind the source; None until both heights are known."""
        if self._source_height is None or self._last_height is None:
            return None
        return max(0, self._source_height - self._last_height)

    @property
    def lag_seconds(self) -> float:
        return self._lag_seconds()

    @property
    def last_height(self) -> int | None:
        return self._last_height

    def render(self) -> bytes:
        """All metrics in the Prometheus text exposition format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self._exposed)

    def names(self) -> set[str]:
        """Every sample name :meth:`render` exposes now (with ``_total``, ``_bucket``...)."""
        return {sample.name for family in self._exposed.collect() for sample in family.samples}

    # -- internals ---------------------------------------------------------------------

    def _update_lag(self) -> None:
        lag = self.lag_blocks
        self.lag_blocks_gauge.set(lag if lag is not None else 0)

    def _lag_seconds(self) -> float:
        if not self.lag_blocks or self._last_block_time is None:
            return 0.0
        seconds = self._clock() - self._last_block_time
        return seconds if seconds > 0 and math.isfinite(seconds) else 0.0

    @classmethod
    def _set_or_drop(cls, gauge: Gauge, url: str, value: float | None) -> None:
        if value is None:
            cls._drop(gauge, url)
        else:
            gauge.labels(endpoint=url).set(value)

    @staticmethod
    def _drop(gauge: Gauge, url: str) -> None:
        try:
            gauge.remove(url)
        except KeyError:
            pass


class _WithoutCreated:
    """The registry minus the ``*_created`` series: they double the series count of every
    counter and histogram, and nothing in gnosync's rules or dashboard reads them."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield kept
