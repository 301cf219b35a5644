"""Pipelined backfill: several ranges fetched at once, committed strictly in order.

Fetching is the slow, parallel part; validation and the one-transaction commit stay
exactly as in :meth:`Syncer.commit`, one batch after the other in height order. What
is fetched but not yet committed is bounded twice: by ``concurrency`` ranges, and by an
estimate of their bytes (``max_pending_bytes``), so memory stays flat when a sparse
stretch gives way to a dense one.

Range sizes adapt to the chain (:class:`RangeSizer`): empty stretches get ranges of up
to ``max_blocks`` heights, dense ones shrink so a batch holds about ``target_txs``
transactions and ``target_bytes`` of them, and a range whose answer timed out or was
too large is halved (down to one height, whose transactions are then read by pages of
indexes). The sizer outlives a :class:`Backfill`, so what it learnt survives a retry.

A batch that fails validation at height h commits its validated prefix, then only the
range from h is fetched again, after the retry policy's delay; the ranges fetched
ahead of it stay. The sync so holds at h-1, never steps over h, and loses no work.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gnosync.errors import SHRINKS_RANGE, BatchInvalid, ResponseTooLarge
from gnosync.model import Batch, BlockRef
from gnosync.retry import RetryPolicy
from gnosync.sync.syncer import BatchReader, Committed, Syncer, fetch_batch

OnCommit = Callable[[Committed, float], None]
OnRetry = Callable[[BaseException, int, float, int], Awaitable[None]]
"""``on_retry(error, attempt, delay, height)``: ``height`` is where the failed range starts."""

BLOCK_BYTES = 1024  # a decoded block header, roughly, in memory
FIRST_TX_BYTES = 4096  # the size assumed of a transaction before any is seen
FIRST_TX_PAGE = 256  # the first page size when one height must be read by index pages


class RangeSizer:
    """Chooses the next range's size from what the chain has shown so far."""

    def __init__(
        self,
        max_blocks: int,
        target_txs: int,
        target_bytes: int = 16 * 1024 * 1024,
        *,
        min_blocks: int = 16,
        probe_blocks: int = 64,
    ):
        self.max_blocks = max_blocks
        self.target_txs = target_txs
        self.target_bytes = target_bytes
        self.min_blocks = min(min_blocks, max_blocks)
        self.probe_blocks = min(probe_blocks, max_blocks)
        self.density: float | None = None  # transactions per block, exponentially weighted
        self.tx_bytes: float = FIRST_TX_BYTES  # bytes per transaction, likewise
        self.limit = max_blocks  # lowered by shrink(), raised again by grow()

    def observe(self, blocks: int, transactions: int, tx_bytes: int) -> None:
        if blocks:
            seen = transactions / blocks
            self.density = seen if self.density is None else 0.5 * self.density + 0.5 * seen
        if transactions:
            self.tx_bytes = 0.5 * self.tx_bytes + 0.5 * (tx_bytes / transactions)

    def shrink(self, size: int) -> None:
        """A range of ``size`` heights was too slow or too large: halve what follows."""
        self.limit = max(1, min(self.limit, size) // 2)

    def grow(self) -> None:
        """A batch went through: let ranges double back towards ``max_blocks``."""
        self.limit = min(self.max_blocks, self.limit * 2)

    def next_size(self) -> int:
        if self.density is None:
            # Nothing seen yet: a small first range, so a dense chain cannot fill memory
            # with several huge batches before the density is known.
            return min(self.limit, self.probe_blocks)
        if self.density <= 0:
            return self.limit
        size = int(self.tx_budget() / self.density)
        return max(min(self.min_blocks, self.limit), min(self.limit, size))

    def tx_budget(self) -> int:
        """The most transactions one batch should hold, by count and by bytes."""
        return max(1, min(self.target_txs, int(self.target_bytes / self.tx_bytes)))

    def expected_bytes(self, blocks: int) -> int:
        """What a range of ``blocks`` heights is expected to hold in memory."""
        density = self.density if self.density is not None else 1.0
        txs = min(blocks * density, self.tx_budget())
        return int(blocks * BLOCK_BYTES + txs * self.tx_bytes)


def batch_bytes(batch: Batch) -> tuple[int, int]:
    """(all, transactions') bytes ``batch`` holds, as served: the memory it stands for."""
    tx_bytes = sum(
        len(tx.content_raw) + len(tx.messages) + len(tx.response) + len(tx.memo)
        for tx in batch.transactions
    )
    return len(batch.blocks) * BLOCK_BYTES + tx_bytes, tx_bytes


@dataclass
class _Range:
    """A range planned for fetching, and its fetch."""

    start: int
    end: int
    fetch: asyncio.Future[tuple[BatchReader, Batch]]
    expected: int  # bytes, until the fetch is done

    def bytes(self) -> int:
        if self.fetch.done() and not self.fetch.cancelled() and self.fetch.exception() is None:
            return batch_bytes(self.fetch.result()[1])[0]
        return self.expected


class Backfill:
    """Brings the database from a height to a tip with fetches running ahead of commits."""

    def __init__(
        self,
        syncer: Syncer,
        *,
        policy: RetryPolicy,
        sizer: RangeSizer,
        concurrency: int = 4,
        max_pending_bytes: int = 64 * 1024 * 1024,
        on_commit: OnCommit | None = None,
        on_retry: OnRetry | None = None,
        on_progress: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stopping: asyncio.Event | None = None,
    ):
        self.syncer = syncer
        self.policy = policy
        self.sizer = sizer
        self.concurrency = max(1, concurrency)
        self.max_pending_bytes = max_pending_bytes
        self.on_commit = on_commit
        self.on_retry = on_retry
        self.on_progress = on_progress
        self.sleep = sleep
        self.stopping = stopping

    def _progressed(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    async def _fetch(self, start: int, end: int, *, delay: float = 0.0) -> tuple[BatchReader, Batch]:
        """``start..`` at most ``end``, retried under the policy after ``delay`` seconds.

        Each try asks the pool for the best endpoint again, so a failing one is left for
        another. A try that timed out or got too large an answer is followed by one
        over half the heights; at one height, by pages of indexes, halved likewise.
        """
        if delay:
            await self.sleep(delay)
        last = end
        page: int | None = None

        async def attempt() -> tuple[BatchReader, Batch]:
            nonlocal last, page
            endpoint = self.syncer.source.endpoint_for(last)
            try:
                batch = await fetch_batch(
                    endpoint, start, last, max_txs=self.sizer.tx_budget(), tx_page=page
                )
            except SHRINKS_RANGE as exc:
                if last > start:
                    self.sizer.shrink(last - start + 1)
                    last = start + (last - start) // 2
                elif page != 1:
                    page = FIRST_TX_PAGE if page is None else max(1, page // 2)
                elif isinstance(exc, ResponseTooLarge):
                    raise ResponseTooLarge(
                        f"a single transaction of block {start} is larger than the response"
                        f" limit ({exc}); raise GNOSYNC_MAX_RESPONSE_BYTES"
                    ) from None
                raise
            self._progressed()
            # The rows for its commit, computed while the batch before is written.
            self.syncer.store.prepare(batch)
            return endpoint, batch

        async def retrying(exc: BaseException, attempt_number: int, wait: float) -> None:
            self._progressed()
            if self.on_retry is not None:
                await self.on_retry(exc, attempt_number, wait, start)

        return await self.policy.call(attempt, on_retry=retrying, sleep=self.sleep)

    def _plan(self, start: int, end: int, *, delay: float = 0.0) -> _Range:
        return _Range(
            start, end,
            asyncio.ensure_future(self._fetch(start, end, delay=delay)),
            self.sizer.expected_bytes(end - start + 1),
        )

    async def run(self, start: int, end: int, *, tip: int) -> int:
        """Commit ``start..end`` batch by batch; return the last height committed.

        ``tip`` is the source's height, for the status written with each batch.

        Any error that escapes (a lost database, a chain change, retries used up)
        cancels the fetches ahead; the caller retries from whatever the database then
        holds. A set ``stopping`` event ends the run after the batch being committed.
        """
        previous: BlockRef | None = await self.syncer.anchor(start)
        pending: deque[_Range] = deque()
        next_start = start
        last = start - 1
        held_tries = 0  # consecutive validation failures at the height being held
        loop = asyncio.get_running_loop()

        def fill() -> None:
            nonlocal next_start
            while next_start <= end and len(pending) < self.concurrency and (
                not pending or sum(r.bytes() for r in pending) < self.max_pending_bytes
            ):
                planned = _plan_end(next_start, end, self.sizer.next_size())
                pending.append(self._plan(next_start, planned))
                next_start = planned + 1

        fill()
        try:
            while pending and not (self.stopping is not None and self.stopping.is_set()):
                began = loop.time()  # a batch's duration: from the previous commit to its own
                head = pending.popleft()
                endpoint, batch = await head.fetch
                _, tx_bytes = batch_bytes(batch)
                self.sizer.observe(len(batch.blocks), len(batch.transactions), tx_bytes)
                try:
                    done: Committed | None = await self.syncer.commit(endpoint, batch, previous, tip=tip)
                    held = done.held
                except BatchInvalid as exc:
                    done, held = None, exc
                if done is not None:
                    last = done.end
                    top = next(b for b in reversed(batch.blocks) if b.height == done.end)
                    previous = BlockRef(top.height, top.hash, top.chain_id, top.total_txs)
                    self.sizer.grow()
                    self._progressed()
                    if self.on_commit is not None:
                        self.on_commit(done, loop.time() - began)
                if held is not None:
                    held_tries = 1 if done is not None else held_tries + 1
                    pending.appendleft(await self._refetch(held, held_tries, last + 1, head.end))
                else:
                    held_tries = 0
                    if batch.end < head.end:  # cut short by the transaction budget
                        pending.appendleft(self._plan(batch.end + 1, head.end))
                fill()
        finally:
            for planned in pending:
                planned.fetch.cancel()
            if pending:
                await asyncio.gather(*(planned.fetch for planned in pending), return_exceptions=True)
        return last

    async def _refetch(self, held: BatchInvalid, tries: int, start: int, end: int) -> _Range:
        """The range ``start..end`` again, after a batch was held at ``start`` by ``held``.

        The policy's attempt limit (one-shot commands) applies as to any retry.
        """
        if self.policy.attempts is not None and tries >= self.policy.attempts:
            raise held
        delay = self.policy.delay(tries)
        self._progressed()
        if self.on_retry is not None:
            await self.on_retry(held, tries, delay, start)
        return self._plan(start, end, delay=delay)


def _plan_end(start: int, end: int, size: int) -> int:
    return min(end, start + max(1, size) - 1)
