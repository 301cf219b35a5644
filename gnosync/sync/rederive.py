"""``gnosync rederive``: rebuild the derived tables from the stored transactions.

No source is needed: every batch reads stored transactions, derives their rows with
:func:`gnosync.decode.derive` and writes them in one transaction
(:meth:`gnosync.store.Store.write_rederived`), while the next batch is read and decoded.
Each batch holds whole heights, at most ``batch_size`` of them, aiming at ``batch_txs``
transactions, and moves ``decoder_state.derived_to`` up, so a killed run is simply run
again.

* Whole database (no range): empty the derived tables (package_files is stored data and
  stays), record this decoder's version, then derive from the lowest stored height up.
* A range: per batch, take the old rows back (balances, then rows) and derive anew.

:func:`bring_up_to_date` is what ``run`` and ``sync`` do first with ``derive = all``: a
database built by an older decoder is rebuilt, one whose derived rows stop below the
stored top (after ``derive = none``) is derived from there on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from gnosync.decode import DECODER_VERSION, Derived, StoredTx, derive
from gnosync.errors import ConfigError
from gnosync.observe.progress import BackfillProgress
from gnosync.store.store import DecoderState

log = structlog.get_logger("gnosync.rederive")


class DecoderTooNew(ConfigError):
    """The derived tables were built by a newer gnosync than this one."""


class RederiveStore(Protocol):
    schema: str

    async def require_writer(self) -> None: ...
    async def decoder_state(self) -> DecoderState: ...
    async def stored_bounds(self) -> tuple[int, int] | None: ...
    async def reset_derived(self) -> None: ...
    async def nth_transaction_height(self, start: int, end: int, n: int) -> int | None: ...
    async def stored_transactions(self, start: int, end: int) -> list[StoredTx]: ...
    async def write_rederived(self, start: int, end: int, derived: Derived, *, clear: bool) -> None: ...


@dataclass(frozen=True)
class Rederived:
    """What a re-derivation did: heights ``start..end`` (None when nothing is stored)."""

    start: int | None
    end: int | None
    batches: int = 0
    transactions: int = 0


async def rederive(
    store: RederiveStore,
    start: int | None = None,
    end: int | None = None,
    *,
    batch_size: int = 10_000,
    batch_txs: int = 5000,
    progress: BackfillProgress | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> Rederived:
    """Re-derive the whole database (``start`` and ``end`` None), or heights
    ``start..end`` of it (either bound defaults to the stored one).

    Takes the writer lock first, without waiting (``NotTheWriter`` while another process
    holds it). A range needs derived tables of this decoder's version; an older or
    newer one is rebuilt whole (``ConfigError`` says so). ``on_batch(first, last, txs)``
    follows every committed batch.
    """
    await store.require_writer()
    whole = start is None and end is None
    if not whole:
        state = await store.decoder_state()
        if state.version != DECODER_VERSION:
            raise ConfigError(
                f"schema {store.schema}'s derived tables are of decoder version {state.version},"
                f" this gnosync's is {DECODER_VERSION}: re-derive them all (gnosync rederive"
                " without --from/--to), not a range"
            )
    bounds = await store.stored_bounds()
    if whole:
        await store.reset_derived()
    if bounds is None:
        return Rederived(None, None)
    low = bounds[0] if start is None else max(start, bounds[0])
    high = bounds[1] if end is None else min(end, bounds[1])
    return await _forward(
        store, low, high, clear=not whole, batch_size=batch_size, batch_txs=batch_txs,
        progress=progress, on_batch=on_batch,
    )


def check_decoder_version(schema: str, state: DecoderState) -> None:
    """Raise :class:`DecoderTooNew` when a newer gnosync built the derived tables: this
    one cannot add rows of its older decoder to them."""
    if state.version > DECODER_VERSION:
        raise DecoderTooNew(
            f"schema {schema}'s derived tables are of decoder version {state.version},"
            f" this gnosync's is {DECODER_VERSION}: built by a newer gnosync; upgrade, or"
            " run with --derive none"
        )


async def bring_up_to_date(
    store: RederiveStore,
    *,
    batch_size: int = 10_000,
    batch_txs: int = 5000,
    progress: BackfillProgress | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> Rederived | None:
    """Make the derived tables complete and of this decoder's version before a sync
    writes more (``derive = all``); None when they already are. The caller holds the
    writer lock.

    Raises :class:`DecoderTooNew` for tables built by a newer gnosync.
    """
    state = await store.decoder_state()
    check_decoder_version(store.schema, state)
    bounds = await store.stored_bounds()
    if bounds is None:
        if state.version != DECODER_VERSION:
            await store.reset_derived()
        return None
    low, high = bounds
    options = dict(batch_size=batch_size, batch_txs=batch_txs, progress=progress, on_batch=on_batch)
    if state.version < DECODER_VERSION:
        log.info(
            f"re-deriving heights {low}..{high}: the derived tables are of decoder version"
            f" {state.version}, this gnosync's is {DECODER_VERSION}",
            from_height=low, to_height=high, old_version=state.version, new_version=DECODER_VERSION,
        )
        await store.reset_derived()
        return await _forward(store, low, high, clear=False, **options)
    if state.derived_to is not None and state.derived_to >= high:
        return None
    first = low if state.derived_to is None else max(low, state.derived_to + 1)
    log.info(
        f"re-deriving heights {first}..{high}, stored without derived rows"
        f" (decoder version {state.version} -> {DECODER_VERSION})",
        from_height=first, to_height=high, old_version=state.version, new_version=DECODER_VERSION,
    )
    return await _forward(store, first, high, clear=True, **options)


async def _forward(
    store: RederiveStore,
    low: int,
    high: int,
    *,
    clear: bool,
    batch_size: int,
    batch_txs: int,
    progress: BackfillProgress | None,
    on_batch: Callable[[int, int, int], None] | None,
) -> Rederived:
    """Derive ``low..high`` batch by batch, in height order.

    The next batch is read and decoded while the one before is written (the reads use
    a pool connection, the writes the writer's), so PostgreSQL's work on one and
    gnosync's on the other overlap; the writes stay strictly in height order.
    """

    async def read(first: int) -> tuple[int, int, int, Derived]:
        last = min(high, first + batch_size - 1)
        over = await store.nth_transaction_height(first, last, batch_txs)
        if over is not None:
            last = max(first, over - 1)
        txs = await store.stored_transactions(first, last)
        return first, last, len(txs), derive(txs)

    batches = transactions = 0
    ahead: asyncio.Task | None = asyncio.ensure_future(read(low)) if low <= high else None
    try:
        while ahead is not None:
            first, last, count, derived = await ahead
            ahead = asyncio.ensure_future(read(last + 1)) if last < high else None
            await store.write_rederived(first, last, derived, clear=clear)
            transactions += count
            batches += 1
            if on_batch is not None:
                on_batch(first, last, count)
            if progress is not None:
                progress.update(last, high)
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
        if progress is not None:
            progress.close()
    return Rederived(low, high, batches, transactions)
