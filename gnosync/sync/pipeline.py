"""Pipelined backfill: several ranges fetched at once, committed strictly in order.

Fetching is the slow, parallel part; validation and the one-transaction commit stay
exactly as in :meth:`Syncer.commit`, one batch after the other in height order. The
number of fetched-but-uncommitted batches is bounded (``concurrency``), so memory is
bounded by backpressure, not by how far behind the database is.

Batch sizes adapt to the chain's density: empty stretches get ranges of up to
``max_blocks`` heights, dense ones shrink so a batch holds about ``target_txs``
transactions (and stays well under the source's 10,000-element cap per query).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from gnosync.retry import RetryPolicy
from gnosync.model import Batch, BlockRef
from gnosync.sync.syncer import Committed, BatchReader, Syncer, fetch_batch

OnCommit = Callable[[Committed, float], None]
OnRetry = Callable[[BaseException, int, float], Awaitable[None]]


class RangeSizer:
    """Chooses the next range's size from the transaction density seen so far."""

    def __init__(self, max_blocks: int, target_txs: int, min_blocks: int = 16, probe_blocks: int = 64):
        self.max_blocks = max_blocks
        self.target_txs = target_txs
        self.min_blocks = min(min_blocks, max_blocks)
        self.probe_blocks = min(probe_blocks, max_blocks)
        self.density: float | None = None  # transactions per block, exponentially weighted

    def observe(self, blocks: int, transactions: int) -> None:
        if blocks:
            seen = transactions / blocks
            self.density = seen if self.density is None else 0.5 * self.density + 0.5 * seen

    def next_size(self) -> int:
        if self.density is None:
            # Nothing seen yet: a small first range, so a dense chain cannot fill memory
            # with several huge batches before the density is known.
            return self.probe_blocks
        if self.density <= 0:
            return self.max_blocks
        size = int(self.target_txs / self.density)
        return max(self.min_blocks, min(self.max_blocks, size))


class Backfill:
    """Brings the database from a height to a tip with fetches running ahead of commits."""

    def __init__(
        self,
        syncer: Syncer,
        *,
        policy: RetryPolicy,
        concurrency: int = 4,
        max_blocks: int = 5000,
        target_txs: int = 5000,
        on_commit: OnCommit | None = None,
        on_retry: OnRetry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stopping: asyncio.Event | None = None,
    ):
        self.syncer = syncer
        self.policy = policy
        self.concurrency = max(1, concurrency)
        self.sizer = RangeSizer(max_blocks, target_txs)
        self.on_commit = on_commit
        self.on_retry = on_retry
        self.sleep = sleep
        self.stopping = stopping

    async def _fetch(self, start: int, end: int) -> tuple[BatchReader, Batch]:
        """One range, retried under the policy; each try asks the pool for the best
        endpoint again, so a failing one is left for another."""

        async def attempt() -> tuple[BatchReader, Batch]:
            endpoint = self.syncer.source.endpoint_for(end)
            return endpoint, await fetch_batch(endpoint, start, end)

        return await self.policy.call(attempt, on_retry=self.on_retry, sleep=self.sleep)

    async def run(self, start: int, end: int, *, tip: int) -> int:
        """Commit ``start..end`` batch by batch; return the last height committed.

        ``tip`` is the source's height, for the status written with each batch.

        Any error that escapes (bad data, a lost database) cancels the fetches ahead;
        the caller retries from whatever the database then holds. A set ``stopping``
        event ends the run after the batch being committed.
        """
        previous: BlockRef | None = await self.syncer.anchor(start)
        pending: deque[tuple[int, int, asyncio.Task[tuple[BatchReader, Batch]]]] = deque()
        next_start = start
        last = start - 1
        loop = asyncio.get_running_loop()

        def fill() -> None:
            nonlocal next_start
            while len(pending) < self.concurrency and next_start <= end:
                last_height = min(end, next_start + self.sizer.next_size() - 1)
                fetch = asyncio.ensure_future(self._fetch(next_start, last_height))
                pending.append((next_start, last_height, fetch))
                next_start = last_height + 1

        fill()
        try:
            while pending and not (self.stopping is not None and self.stopping.is_set()):
                began = loop.time()  # a batch's duration: from the previous commit to its own
                _, _, task = pending.popleft()
                endpoint, batch = await task
                self.sizer.observe(len(batch.blocks), len(batch.transactions))
                fill()
                done = await self.syncer.commit(endpoint, batch, previous, tip=tip)
                last = batch.end
                top = batch.blocks[-1]
                previous = BlockRef(top.height, top.hash, top.chain_id, top.total_txs)
                if self.on_commit is not None:
                    self.on_commit(done, loop.time() - began)
        finally:
            for _, _, task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*(task for _, _, task in pending), return_exceptions=True)
        return last
