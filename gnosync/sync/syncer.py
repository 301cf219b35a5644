"""Range sync: fetch a batch, validate it, commit it with the state, in three stages.

``sync/`` knows nothing of HTTP or SQL: it drives a :class:`SyncSource` and a :class:`SyncStore`,
the two small interfaces below, so tests and benchmarks can plug in the real client and
store and the stages can be pipelined without touching either side.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from gnosync.errors import BatchInvalid, ConfigError
from gnosync.model import Batch, Block, BlockRef, Transaction
from gnosync.sync.source_check import chain_mismatch, served_hash_if_different, stored_against_served
from gnosync.sync.validate import validate_batch


class BatchReader(Protocol):
    """One place blocks come from; a batch's blocks and transactions share one."""

    url: str

    async def blocks(self, start: int, end: int) -> list[Block]: ...
    async def block_hashes(self, start: int, end: int) -> dict[int, str]: ...
    async def transactions(self, start: int, end: int, *, page: int | None = None) -> list[Transaction]: ...
    def penalize(self, reason: BaseException) -> None: ...


class SyncSource(Protocol):
    async def latest_height(self) -> int: ...
    async def lowest_height(self, tip: int) -> int | None: ...
    def endpoint_for(self, height: int) -> BatchReader: ...
    def health(self) -> list: ...
    async def confirm(self, origin: BatchReader, height: int, block_hash: str) -> None: ...


class StateRepository(Protocol):
    async def get_last_synced_height(self) -> int | None: ...


class SyncStore(Protocol):
    state: StateRepository
    is_writer: bool

    async def claim_writer(self, *, wait: bool, on_standby=None, stop=None) -> bool: ...
    async def health(self) -> None: ...

    async def commit_batch(self, batch: Batch, *, chain_id: str, status: str) -> None: ...
    def prepare(self, batch: Batch) -> None: ...
    async def block_ref(self, height: int) -> BlockRef | None: ...
    async def stored_bounds(self) -> tuple[int, int] | None: ...
    async def block_hashes(self, start: int, end: int) -> dict[int, str]: ...


@dataclass(frozen=True)
class Committed:
    """What one commit stored: heights ``start..end`` (``blocks`` 0 when nothing was).

    ``held`` is the validation failure that stopped the batch above ``end``: the
    validated prefix was committed, the rest must be fetched again.
    """

    start: int
    end: int
    blocks: int
    transactions: int
    last_time: str | None  # the last block's time, as served
    held: BatchInvalid | None = None


def batches(start: int, end: int, size: int) -> Iterator[tuple[int, int]]:
    """Split ``start..end`` into consecutive inclusive ranges of at most ``size`` heights."""
    for first in range(start, end + 1, size):
        yield first, min(end, first + size - 1)


def within_budget(blocks: list[Block], start: int, end: int, max_txs: int | None) -> int:
    """The highest height up to which ``blocks`` count at most ``max_txs`` transactions.

    At least the first block is kept, however many it counts. Blocks of a range are
    cheap and say how many transactions each holds, so a range that lands in a dense
    stretch is cut before its transactions are fetched, not after.
    """
    if max_txs is None:
        return end
    counted = 0
    for block in blocks:
        if not start <= block.height <= end:
            continue
        counted += block.num_txs
        if counted > max_txs and block.height > start:
            return block.height - 1
    return end


async def fetch_batch(
    endpoint: BatchReader,
    start: int,
    end: int,
    *,
    max_txs: int | None = None,
    tx_page: int | None = None,
) -> Batch:
    """Blocks ``start..end`` and their transactions from ``endpoint``, unvalidated.

    The batch may end below ``end`` when its blocks count more than ``max_txs``
    transactions (see :func:`within_budget`); the caller fetches the rest later.
    Transactions are asked for only over the heights whose blocks count some: on real
    chains almost every block is empty, and most batches need no transaction query.
    ``tx_page`` (a one-height batch) reads the height's transactions that many at a time.
    """
    blocks = await endpoint.blocks(start, end)
    cut = within_budget(blocks, start, end, max_txs)
    if cut < end:
        blocks = [b for b in blocks if b.height <= cut]
        end = cut
    with_txs = [b.height for b in blocks if b.num_txs > 0 and start <= b.height <= end]
    transactions: list[Transaction] = []
    if with_txs:
        page = tx_page if with_txs[0] == with_txs[-1] else None
        transactions = await endpoint.transactions(with_txs[0], with_txs[-1], page=page)
    return Batch(start=start, end=end, blocks=blocks, transactions=transactions)


class Syncer:
    """Moves validated batches from a source into a store, one transaction each."""

    def __init__(self, source: SyncSource, store: SyncStore, *, chain_id: str | None = None):
        self.source = source
        self.store = store
        self.chain_id = chain_id

    async def commit(
        self, endpoint: BatchReader, batch: Batch, previous: BlockRef | None, *, tip: int | None
    ) -> Committed:
        """The ordered stage: validate ``batch`` against ``previous``, then commit it.

        ``previous`` is the block at ``batch.start - 1`` as stored (or as just committed
        by the caller). A batch that fails validation at height h penalizes its endpoint;
        its validated prefix ``start..h-1`` is still committed (one transaction, like any
        batch), and the result says where it was held (``Committed.held``). A failure at
        the batch's first height commits nothing and raises ``BatchInvalid``; one that
        does not link to the stored chain is first checked for a chain change.
        """
        held: BatchInvalid | None = None
        while True:
            try:
                validate_batch(batch, previous, self.chain_id)
                break
            except BatchInvalid as exc:
                if held is None:
                    endpoint.penalize(exc)
                held = exc
                if exc.height <= batch.start:
                    if previous is not None and exc.check == "last_block_hash":
                        await self._check_stored_block(endpoint, previous)
                    raise
                # Checks run over the whole batch before the per-block ones, so the
                # prefix below the failure is validated again on its own.
                batch = batch.prefix(exc.height - 1)
        done = await self._commit_valid(endpoint, batch, tip)
        return done if held is None else replace(done, held=held)

    async def _commit_valid(self, endpoint: BatchReader, batch: Batch, tip: int | None) -> Committed:
        last = batch.blocks[-1]
        await self.source.confirm(endpoint, batch.end, last.hash)
        chain_id = self.chain_id or batch.blocks[0].chain_id
        status = "synced" if tip is not None and batch.end >= tip else "syncing"
        await self.store.commit_batch(batch, chain_id=chain_id, status=status)
        self.chain_id = chain_id
        return Committed(batch.start, batch.end, len(batch.blocks), len(batch.transactions), last.time)

    async def anchor(self, start: int) -> BlockRef | None:
        """The block below ``start`` that a batch starting there must link to.

        The stored one when there is one; on a fresh sync that starts above height 1,
        the source's own block (so even the first batch's first link is checked).
        """
        if start == 0:
            return None
        stored = await self.store.block_ref(start - 1)
        if stored is not None or start < 2:
            return stored
        below = await self.source.endpoint_for(start - 1).blocks(start - 1, start - 1)
        if not below or below[0].height != start - 1:
            return None
        block = below[0]
        return BlockRef(block.height, block.hash, block.chain_id, block.total_txs)

    async def _check_stored_block(self, endpoint: BatchReader, stored: BlockRef) -> None:
        """A batch that does not link to the stored chain: is the source on another one?"""
        served = await served_hash_if_different(endpoint, stored)
        if served is not None:
            raise chain_mismatch(endpoint.url, stored.height, served, stored.hash)

    async def verify_stored(self, start: int, end: int) -> None:
        """Check that the source serves the stored hashes for ``start..end``.

        Another hash is a ``ChainMismatch``; no block at a stored height is bad data
        from that endpoint (``BatchInvalid``, retried).
        """
        async for difference in stored_against_served(self.store, self.source, start, end):
            if difference.served is None:
                raise BatchInvalid(difference.height, "heights", difference.detail)
            raise difference.chain_mismatch()

    def plan_range(
        self, start: int, end: int, bounds: tuple[int, int] | None
    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """Split a requested range into the part already stored and the part to add.

        The database holds one contiguous run of heights; a request that would leave a
        gap below or above it is refused rather than stored with a hole.
        """
        if bounds is None:
            return None, (start, end)
        low, high = bounds
        if start < low:
            raise ConfigError(
                f"heights {start}..{min(end, low - 1)} lie below the stored range {low}..{high};"
                " gnosync extends the stored range upwards only"
            )
        if start > high + 1:
            raise ConfigError(
                f"syncing {start}..{end} would leave heights {high + 1}..{start - 1} missing;"
                f" sync from {high + 1} instead"
            )
        stored = (start, min(end, high)) if start <= high else None
        new = (max(start, high + 1), end) if end > high else None
        return stored, new

