"""The drivers: a one-shot range sync and the continuous follow-the-tip loop.

Both are thin: they plan ranges, hand them to :class:`Syncer`, and wrap every step in
the one :class:`RetryPolicy`. The database is the only record of progress; after any
error the next height is read from it again, so an ambiguous commit (connection lost
during COMMIT) can neither repeat nor skip a height.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from gnosync.errors import GnosyncError, StoreError
from gnosync.observe.http import Liveness
from gnosync.observe.metrics import SyncMetrics
from gnosync.observe.progress import BackfillProgress
from gnosync.retry import RetryPolicy
from gnosync.source.subscribe import TipWatcher
from gnosync.sync.pipeline import Backfill
from gnosync.sync.syncer import Committed, Syncer

log = structlog.get_logger("gnosync.sync")


class StateWriter(Protocol):
    async def get_last_synced_height(self) -> int | None: ...
    async def record_error(self, message: str) -> None: ...
    async def set_status(self, status: str) -> None: ...
    async def update_state(self, **fields: object) -> None: ...


async def _record_error(state: StateWriter, exc: BaseException) -> None:
    """Write the error to app_state; the database itself may be what failed."""
    try:
        await state.record_error(str(exc))
    except StoreError:
        pass


async def sync_range(
    syncer: Syncer,
    start: int,
    end: int,
    *,
    batch_size: int,
    policy: RetryPolicy,
    concurrency: int = 4,
    batch_txs: int = 5000,
) -> int:
    """Sync exactly ``start..end`` once; return the number of blocks added.

    Heights already stored are checked against the source, not written again.
    """
    state = syncer.store.state

    async def on_retry(exc: BaseException, attempt: int, delay: float) -> None:
        log.warning("retrying", error=str(exc), attempt=attempt, delay=round(delay, 2))
        await _record_error(state, exc)

    stored, new = syncer.plan_range(start, end, await syncer.store.stored_bounds())
    added = 0

    def committed(done: Committed, seconds: float) -> None:
        nonlocal added
        added += done.blocks
        _log_batch(done, seconds)

    backfill = Backfill(
        syncer, policy=policy, concurrency=concurrency, max_blocks=batch_size,
        target_txs=batch_txs, on_commit=committed, on_retry=on_retry,
    )

    async def rest() -> None:
        # After an error the outcome of the last COMMIT is unknown: ask the database
        # where it stands instead of writing anything twice.
        bounds = await syncer.store.stored_bounds()
        first = new[0] if bounds is None else max(new[0], bounds[1] + 1)
        if first <= new[1]:
            tip = await syncer.source.latest_height()
            await backfill.run(first, new[1], tip=tip)

    try:
        if stored is not None:
            await policy.call(lambda: syncer.verify_stored(*stored), on_retry=on_retry)
        if new is not None:
            await policy.call(rest, on_retry=on_retry)
    except GnosyncError as exc:
        await _record_error(state, exc)
        raise
    return added


def _log_batch(done: Committed, seconds: float | None = None) -> None:
    if not done.blocks:
        return
    fields: dict[str, object] = {
        "from_height": done.start, "to_height": done.end,
        "blocks": done.blocks, "txs": done.transactions,
    }
    if seconds is not None:
        fields["duration_ms"] = round(seconds * 1000, 1)
    log.info("batch committed", **fields)


class Follower:
    """Syncs from the stored height to the tip, then follows the tip until stopped.

    Only the holder of the writer lock syncs; a second process waits as a standby and
    takes over when the leader's lock goes away. Every turn beats ``liveness`` and
    feeds ``metrics``; a catch-up shows ``progress``.
    """

    def __init__(
        self,
        syncer: Syncer,
        *,
        batch_size: int,
        interval: float,
        policy: RetryPolicy,
        start_height: int | None = None,
        stop_grace: float = 5.0,
        concurrency: int = 4,
        batch_txs: int = 5000,
        metrics: SyncMetrics | None = None,
        liveness: Liveness | None = None,
        progress: BackfillProgress | None = None,
        watcher: TipWatcher | None = None,
    ):
        self.syncer = syncer
        self.batch_size = batch_size
        self.interval = interval
        self.policy = policy
        self.start_height = start_height
        self.stop_grace = stop_grace
        self.concurrency = concurrency
        self.batch_txs = batch_txs
        self.metrics = metrics or SyncMetrics()
        self.liveness = liveness or Liveness.for_interval(interval)
        self.progress = progress or BackfillProgress()
        self.watcher = watcher
        self.stopping = asyncio.Event()
        self._failing_since: float | None = None
        self._standby = False

    def stop(self) -> None:
        self.stopping.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when a stop is asked for."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _idle(self) -> None:
        """At the tip: wait for the next poll, a pushed new block, or a stop."""
        if self.watcher is None:
            await self._sleep(self.interval)
            return
        pushed = asyncio.ensure_future(self.watcher.wait(self.interval))
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({pushed, stop}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (pushed, stop):
            waiter.cancel()

    async def next_height(self, tip: int) -> int | None:
        last = await self.syncer.store.state.get_last_synced_height()
        if last is not None:
            if self.start_height is not None and self.start_height != last + 1:
                log.warning(
                    "ignoring start height: the database already holds blocks",
                    start_height=self.start_height,
                    last_block_h=last,
                )
                self.start_height = None
            return last + 1
        if self.start_height is not None:
            return self.start_height
        return await self.syncer.source.lowest_height(tip)

    async def _ensure_writer(self) -> None:
        """Hold the writer lock before writing; wait as a standby while another has it."""
        store = self.syncer.store
        if store.is_writer:
            return

        async def on_standby(leader: object) -> None:
            self._standby = True
            self.metrics.role(False)
            log.info("standby: another gnosync process is the writer; waiting to take over",
                     leader=str(leader) if leader else None)

        try:
            held = await store.claim_writer(wait=True, on_standby=on_standby, stop=self.stopping)
        finally:
            self._standby = False
        if not held:
            raise _Stopped
        self.metrics.role(True)
        log.info("leader: holding the writer lock")

    async def step(self) -> bool:
        """One turn: sync the next batch if behind. Return True when at the tip."""
        store = self.syncer.store
        self.liveness.beat()
        if self._failing_since is not None:
            await store.health()  # nothing resumes on a database that is not back
        await self._ensure_writer()
        tip = await self.syncer.source.latest_height()
        self.metrics.source_height(tip)
        self.metrics.endpoints(self.syncer.source.health())
        start = await self.next_height(tip)
        if start is None or start > tip:
            if self._failing_since is not None:
                await store.state.update_state(status="synced", last_error=None, error_count=0)
            self._recovered()
            self.progress.close()
            return True

        def committed(done: Committed, seconds: float) -> None:
            _log_batch(done, seconds)
            self.metrics.batch_committed(done.blocks, done.transactions, seconds, done.end, done.last_time)
            self.progress.update(done.end, tip)
            self._recovered()

        backfill = Backfill(
            self.syncer, policy=self.policy, concurrency=self.concurrency,
            max_blocks=self.batch_size, target_txs=self.batch_txs,
            on_commit=committed, on_retry=self._on_retry, sleep=self._backoff,
            stopping=self.stopping,
        )
        return await backfill.run(start, tip, tip=tip) >= tip

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("recovered", seconds=round(time.monotonic() - self._failing_since, 3))
        self._failing_since = None

    async def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self.metrics.error(exc)
        self.metrics.retry()
        log.warning("sync error, retrying", error=str(exc), attempt=attempt, delay=round(delay, 2))
        if self.syncer.store.is_writer:  # a standby leaves the leader's state alone
            await _record_error(self.syncer.store.state, exc)

    async def _backoff(self, seconds: float) -> None:
        await self._sleep(seconds)
        if self.stopping.is_set():
            raise _Stopped

    async def _heartbeat(self) -> None:
        """Keeps a standby's liveness fresh while it waits for the lock."""
        while True:
            if self._standby:
                self.liveness.beat()
            await asyncio.sleep(min(1.0, self.interval))

    async def run(self) -> None:
        """Follow the chain until :meth:`stop`; non-retryable errors escape.

        On stop, the batch in flight gets ``stop_grace`` seconds to commit; after that it
        is cancelled and its transaction rolls back. Status becomes ``stopped``; an
        escaping error leaves ``error`` and its message in the state instead.
        """
        log.info("sync started", interval=self.interval, batch_size=self.batch_size)
        heartbeat = asyncio.create_task(self._heartbeat())
        if self.watcher is not None:
            self.watcher.start()
        try:
            while not self.stopping.is_set():
                turn = asyncio.ensure_future(
                    self.policy.call(self.step, on_retry=self._on_retry, sleep=self._backoff)
                )
                stop_wait = asyncio.ensure_future(self.stopping.wait())
                await asyncio.wait({turn, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                if not turn.done():
                    await asyncio.wait({turn}, timeout=self.stop_grace)
                    if not turn.done():
                        turn.cancel()
                        await asyncio.gather(turn, return_exceptions=True)
                        break
                try:
                    at_tip = turn.result()
                except _Stopped:
                    break
                if at_tip:
                    await self._idle()
                    self.liveness.beat()
        except GnosyncError as exc:
            self.metrics.error(exc)
            log.error("sync failed", error=str(exc))
            await _record_error(self.syncer.store.state, exc)
            raise
        finally:
            heartbeat.cancel()
            if self.watcher is not None:
                await self.watcher.stop()
            self.progress.close()
        await self._mark_stopped()
        log.info("sync stopped")

    async def _mark_stopped(self) -> None:
        if not self.syncer.store.is_writer:
            return
        try:
            await self.syncer.store.state.set_status("stopped")
        except StoreError:
            log.warning("could not record the stopped status")


class _Stopped(Exception):
    """A stop was asked for while waiting (for a retry, or for the writer lock)."""
