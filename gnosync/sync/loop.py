"""The drivers: a one-shot range sync and the continuous follow-the-tip loop.

Both are thin: they plan ranges, hand them to :class:`Syncer`, and wrap every step in
the one :class:`RetryPolicy`. The database is the only record of progress; after any
error the next height is read from it again, so an ambiguous commit (connection lost
during COMMIT) can neither repeat nor skip a height.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from gnosync.errors import GnosyncError, StoreError
from gnosync.observe.http import Liveness
from gnosync.observe.metrics import SyncMetrics
from gnosync.observe.progress import BackfillProgress
from gnosync.retry import RetryPolicy
from gnosync.settings import Settings
from gnosync.source.subscribe import TipWatcher
from gnosync.sync.pipeline import Backfill, RangeSizer
from gnosync.sync.syncer import Committed, Syncer

log = structlog.get_logger("gnosync.sync")

# The defaults live with the settings; the loop's own callers (tests, benches) get the same.
DEFAULT_PENDING_BYTES: int = Settings.model_fields["max_pending_bytes"].default
DEFAULT_STUCK_AFTER: int = Settings.model_fields["stuck_after"].default


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
    max_pending_bytes: int = DEFAULT_PENDING_BYTES,
) -> int:
    """Sync exactly ``start..end`` once; return the number of blocks added.

    Heights already stored are checked against the source, not written again.
    """
    state = syncer.store.state

    async def on_retry(exc: BaseException, attempt: int, delay: float, height: int | None = None) -> None:
        log.warning("retrying", error=str(exc), cause=exc_kind(exc), attempt=attempt,
                    delay=round(delay, 2), height=height)

    stored, new = syncer.plan_range(start, end, await syncer.store.stored_bounds())
    added = 0

    def committed(done: Committed, seconds: float) -> None:
        nonlocal added
        added += done.blocks
        _log_batch(done, seconds)

    backfill = Backfill(
        syncer, policy=policy, sizer=sizer_for(batch_size, batch_txs, concurrency, max_pending_bytes),
        concurrency=concurrency, max_pending_bytes=max_pending_bytes,
        on_commit=committed, on_retry=on_retry,
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


def sizer_for(batch_size: int, batch_txs: int, concurrency: int, max_pending_bytes: int) -> RangeSizer:
    """The range sizer of a sync: each of ``concurrency`` batches may hold its share of
    ``max_pending_bytes``."""
    return RangeSizer(batch_size, batch_txs, max(1, max_pending_bytes // max(1, concurrency)))


def exc_kind(exc: BaseException) -> str:
    return exc.kind if isinstance(exc, GnosyncError) else type(exc).__name__


def _log_batch(done: Committed, seconds: float | None = None, *, at_tip: bool = False) -> None:
    """One line per committed batch: info while catching up, debug at the tip (where
    :class:`TipSummary` says what happened once a minute instead)."""
    if not done.blocks:
        return
    fields: dict[str, object] = {
        "from_height": done.start, "to_height": done.end,
        "blocks": done.blocks, "txs": done.transactions,
    }
    if seconds is not None:
        fields["duration_ms"] = round(seconds * 1000, 1)
    (log.debug if at_tip else log.info)("batch committed", **fields)


class TipSummary:
    """What following the tip logs at info level: one line when the tip is reached,
    then one summary line every ``every`` seconds (measured on ``clock``).

    A turn that finds the source more than ``catch_up_lag`` blocks ahead is a catch-up
    again (after an outage, say): its batches log at info, and reaching the tip is
    announced anew.
    """

    def __init__(self, every: float = 60.0, *, catch_up_lag: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.catch_up_lag = catch_up_lag
        self._clock = clock
        self.following = False
        self._since = 0.0
        self._blocks = 0
        self._txs = 0

    def turn(self, start: int, tip: int) -> None:
        """A turn syncs ``start..tip``: a long way behind, the catch-up starts again."""
        if self.following and tip - start + 1 > self.catch_up_lag:
            self.following = False

    def committed(self, done: Committed) -> None:
        if self.following:
            self._blocks += done.blocks
            self._txs += done.transactions

    def at_tip(self, height: int) -> None:
        """The stored chain reached the source's height ``height``."""
        now = self._clock()
        if not self.following:
            self.following = True
            self._since, self._blocks, self._txs = now, 0, 0
            log.info(f"following the tip at height {height}, lag 0", height=height, lag=0)
            return
        if now - self._since >= self.every:
            minute = "minute" if self.every == 60 else f"{self.every:g} s"
            log.info(
                f"at the tip: {self._blocks} blocks, {self._txs} txs in the last {minute}, height {height}",
                blocks=self._blocks, txs=self._txs, height=height, seconds=round(now - self._since, 1),
            )
            self._since, self._blocks, self._txs = now, 0, 0


class Blockage:
    """Failures since the last commit, and what they say about progress.

    Progress is *blocked* once failures have gone on for ``retry_cap`` seconds (the
    longest retry delay) with no commit: a retry that a commit soon follows is a
    healthy catch-up's hiccup, counted in metrics but not written to app_state. The
    sync is *stuck* when the same error came back ``stuck_after`` times in a row at
    one height: it keeps retrying, and someone has to look.
    """

    def __init__(self, retry_cap: float, stuck_after: int, *, clock: Callable[[], float] = time.monotonic):
        self.retry_cap = retry_cap
        self.stuck_after = stuck_after
        self._clock = clock
        self.since: float | None = None  # when the first failure since a commit came
        self.last: BaseException | None = None
        self._key: tuple[object, ...] | None = None
        self.repeats = 0

    def failed(self, exc: BaseException, height: int | None) -> None:
        if self.since is None:
            self.since = self._clock()
        key = (type(exc), str(exc), height)
        self.repeats = self.repeats + 1 if key == self._key else 1
        self._key = key
        self.last = exc

    @property
    def blocked(self) -> bool:
        return self.since is not None and self._clock() - self.since >= self.retry_cap

    @property
    def stuck(self) -> bool:
        return self.repeats >= self.stuck_after

    def cleared(self) -> float | None:
        """A commit went through: forget the failures; how long they lasted, if any."""
        since, self.since, self._key, self.last, self.repeats = self.since, None, None, None, 0
        return None if since is None else self._clock() - since


class Follower:
    """Syncs from the stored height to the tip, then follows the tip until stopped.

    Only the holder of the writer lock syncs; a second process waits as a standby and
    takes over when the leader's lock goes away. Every commit, fetch answer and retry
    beats ``liveness`` (a whole catch-up is one turn of the loop, and must not look
    hung); metrics follow each step, and a catch-up shows ``progress``. At the tip,
    ``tip_summary`` logs one line a minute in place of the per-batch ones.

    ``prepare`` runs each time this process becomes the writer, before it syncs: the
    derived tables are brought up to date there (see
    :func:`gnosync.sync.rederive.bring_up_to_date`). A retryable failure runs it again.
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
        max_pending_bytes: int = DEFAULT_PENDING_BYTES,
        stuck_after: int = DEFAULT_STUCK_AFTER,
        metrics: SyncMetrics | None = None,
        liveness: Liveness | None = None,
        progress: BackfillProgress | None = None,
        watcher: TipWatcher | None = None,
        tip_summary: TipSummary | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
    ):
        self.syncer = syncer
        self.batch_size = batch_size
        self.interval = interval
        self.policy = policy
        self.start_height = start_height
        self.stop_grace = stop_grace
        self.concurrency = concurrency
        self.max_pending_bytes = max_pending_bytes
        self.sizer = sizer_for(batch_size, batch_txs, concurrency, max_pending_bytes)
        self.blockage = Blockage(policy.maximum, stuck_after)
        self.metrics = metrics or SyncMetrics()
        self.liveness = liveness or Liveness.for_interval(interval)
        self.progress = progress or BackfillProgress()
        self.watcher = watcher
        self.tip_summary = tip_summary or TipSummary()
        self.stopping = asyncio.Event()
        self._standby = False
        self.prepare = prepare
        self._prepared = False

    @property
    def stuck(self) -> str | None:
        """Why the sync is stuck (the repeated error), or None while it is not."""
        if not self.blockage.stuck:
            return None
        return f"the same error {self.blockage.repeats} times in a row: {self.blockage.last}"

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
        """Hold the writer lock before writing; wait as a standby while another has it.
        Once held, ``prepare`` runs (again after a failure, or a lock lost and regained)."""
        store = self.syncer.store
        if not store.is_writer:
            await self._claim()
            self._prepared = False
        if not self._prepared and self.prepare is not None:
            await self.prepare()
        self._prepared = True

    async def _claim(self) -> None:
        store = self.syncer.store

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
        if self.blockage.since is not None:
            await store.health()  # nothing resumes on a database that is not back
        await self._ensure_writer()
        tip = await self.syncer.source.latest_height()
        self.metrics.source_height(tip)
        self.metrics.endpoints(self.syncer.source.health())
        start = await self.next_height(tip)
        if start is None or start > tip:
            if self.blockage.since is not None:
                await store.state.update_state(status="synced", last_error=None, error_count=0)
            self._recovered()
            self.progress.close()
            self.tip_summary.at_tip(tip)
            return True
        summary = self.tip_summary
        summary.turn(start, tip)

        def committed(done: Committed, seconds: float) -> None:
            _log_batch(done, seconds, at_tip=summary.following)
            summary.committed(done)
            self.metrics.batch_committed(done.blocks, done.transactions, seconds, done.end, done.last_time)
            self.progress.update(done.end, tip)
            self._recovered()

        backfill = Backfill(
            self.syncer, policy=self.policy, sizer=self.sizer, concurrency=self.concurrency,
            max_pending_bytes=self.max_pending_bytes,
            on_commit=committed, on_retry=self._on_retry, on_progress=self.liveness.beat,
            sleep=self._backoff, stopping=self.stopping,
        )
        reached = await backfill.run(start, tip, tip=tip)
        if reached < tip:
            return False
        summary.at_tip(tip)
        return True

    def _recovered(self) -> None:
        was_stuck = self.blockage.stuck
        seconds = self.blockage.cleared()
        if seconds is not None:
            log.info("recovered", seconds=round(seconds, 3))
        if was_stuck:
            self.metrics.stuck(False)

    async def _on_retry(self, exc: BaseException, attempt: int, delay: float, height: int | None = None) -> None:
        """Every retry, of a fetch, of a held batch or of a whole turn, comes here."""
        was_stuck = self.blockage.stuck
        self.blockage.failed(exc, height)
        self.liveness.beat()
        self.metrics.error(exc)
        self.metrics.retry(exc_kind(exc))
        log.warning("sync error, retrying", error=str(exc), cause=exc_kind(exc), attempt=attempt,
                    delay=round(delay, 2), height=height)
        if self.blockage.stuck and not was_stuck:
            self.metrics.stuck(True)
            log.error(
                "sync stuck: the same error keeps coming back; gnosync keeps retrying, but"
                " the source needs a look: check it, or add another endpoint to --source."
                " A block that fails validation at every endpoint is never stepped over",
                error=str(exc), cause=exc_kind(exc), repeats=self.blockage.repeats, height=height,
            )
        # A standby leaves the leader's state alone; a brief hiccup leaves it alone too.
        if self.blockage.blocked and self.syncer.store.is_writer:
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
