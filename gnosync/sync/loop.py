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
from gnosync.retry import RetryPolicy
from gnosync.sync.syncer import Committed, Syncer, batches

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


async def sync_range(syncer: Syncer, start: int, end: int, *, batch_size: int, policy: RetryPolicy) -> int:
    """Sync exactly ``start..end`` once; return the number of blocks added.

    Heights already stored are checked against the source, not written again.
    """
    state = syncer.store.state

    async def on_retry(exc: BaseException, attempt: int, delay: float) -> None:
        log.warning("retrying", error=str(exc), attempt=attempt, delay=round(delay, 2))
        await _record_error(state, exc)

    stored, new = syncer.plan_range(start, end, await syncer.store.stored_bounds())
    added = 0
    try:
        if stored is not None:
            await policy.call(lambda: syncer.verify_stored(*stored), on_retry=on_retry)
        if new is not None:
            tip = await policy.call(syncer.source.latest_height, on_retry=on_retry)
            for first, last in batches(new[0], new[1], batch_size):
                done = await policy.call(
                    lambda: _sync_rest(syncer, first, last, tip), on_retry=on_retry
                )
                _log_batch(done)
                added += done.blocks
    except GnosyncError as exc:
        await _record_error(state, exc)
        raise
    return added


async def _sync_rest(syncer: Syncer, first: int, last: int, tip: int) -> Committed:
    """Sync what of ``first..last`` is not stored yet.

    A retry after a lost connection cannot know whether the earlier COMMIT landed, so
    it asks the database rather than writing the batch again.
    """
    bounds = await syncer.store.stored_bounds()
    if bounds is not None and bounds[1] >= first:
        first = bounds[1] + 1
    if first > last:
        return Committed(first, last, 0, 0)
    return await syncer.sync_batch(first, last, tip=tip)


def _log_batch(done: Committed, started: float | None = None) -> None:
    fields = {"from_height": done.start, "to_height": done.end, "blocks": done.blocks, "txs": done.transactions}
    if started is not None:
        fields["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    log.info("batch committed", **fields)


class Follower:
    """Syncs from the stored height to the tip, then follows the tip until stopped."""

    def __init__(
        self,
        syncer: Syncer,
        *,
        batch_size: int,
        interval: float,
        policy: RetryPolicy,
        start_height: int | None = None,
        stop_grace: float = 5.0,
    ):
        self.syncer = syncer
        self.batch_size = batch_size
        self.interval = interval
        self.policy = policy
        self.start_height = start_height
        self.stop_grace = stop_grace
        self.stopping = asyncio.Event()
        self._had_error = False

    def stop(self) -> None:
        self.stopping.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when a stop is asked for."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

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

    async def step(self) -> bool:
        """One turn: sync the next batch if behind. Return True when at the tip."""
        tip = await self.syncer.source.latest_height()
        start = await self.next_height(tip)
        if start is None or start > tip:
            if self._had_error:
                await self.syncer.store.state.update_state(status="synced", last_error=None, error_count=0)
            self._had_error = False
            return True
        end = min(start + self.batch_size - 1, tip)
        started = time.monotonic()
        _log_batch(await self.syncer.sync_batch(start, end, tip=tip), started)
        self._had_error = False
        return end >= tip

    async def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        self._had_error = True
        log.warning("sync error, retrying", error=str(exc), attempt=attempt, delay=round(delay, 2))
        await _record_error(self.syncer.store.state, exc)

    async def _backoff(self, seconds: float) -> None:
        await self._sleep(seconds)
        if self.stopping.is_set():
            raise _Stopped

    async def run(self) -> None:
        """Follow the chain until :meth:`stop`; non-retryable errors escape.

        On stop, the batch in flight gets ``stop_grace`` seconds to commit; after that it
        is cancelled and its transaction rolls back. Status becomes ``stopped``; an
        escaping error leaves ``error`` and its message in the state instead.
        """
        log.info("sync started", interval=self.interval, batch_size=self.batch_size)
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
                    await self._sleep(self.interval)
        except GnosyncError as exc:
            log.error("sync failed", error=str(exc))
            await _record_error(self.syncer.store.state, exc)
            raise
        await self._mark_stopped()
        log.info("sync stopped")

    async def _mark_stopped(self) -> None:
        try:
            await self.syncer.store.state.set_status("stopped")
        except StoreError:
            log.warning("could not record the stopped status")


class _Stopped(Exception):
    """A stop was asked for during a retry wait."""
