"""``gnosync repair``: re-sync from the source what ``gnosync verify`` finds damaged.

:func:`repair` holds the writer lock for its whole run, audits
(:func:`gnosync.sync.verify.audit`), groups the problem heights into contiguous ranges,
and replaces each range with blocks fetched from the source again, validated exactly
like a sync (against the stored block below by :func:`~gnosync.sync.validate.validate_batch`,
and the stored block above must link to the last one by the same
:func:`~gnosync.sync.validate.link_violations`) and written by
:meth:`gnosync.store.Store.replace_range` (delete and re-insert in one transaction).
Then it audits again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gnosync.errors import BatchInvalid, GnosyncError
from gnosync.model import Batch, Block, BlockRef
from gnosync.retry import RetryPolicy
from gnosync.store.audit import BlockLink
from gnosync.sync.source_check import served_hash_if_different
from gnosync.sync.syncer import BatchReader, batches, fetch_batch
from gnosync.sync.validate import link_violations, validate_batch
from gnosync.sync.verify import AuditSource, AuditStore, VerifyReport, audit, with_policy

log = structlog.get_logger("gnosync.repair")


class RepairRefused(GnosyncError):
    """The source's blocks do not fit the stored ones around a damaged range."""


@dataclass
class RepairResult:
    before: VerifyReport
    after: VerifyReport
    replaced: list[tuple[int, int]]  # heights re-synced from the source
    orphans_deleted: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "ok": self.after.ok,
            "before": self.before.to_json_dict(),
            "replaced": [list(r) for r in self.replaced],
            "orphans_deleted": self.orphans_deleted,
            "after": self.after.to_json_dict(),
        }


def plan_repair(report: VerifyReport) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The height ranges to re-sync, merged and in order, and those where only
    transactions without a block are to be deleted (outside the checked range).

    A missing run or a checkpoint's segment is re-synced whole; a broken link or
    total at ``h`` re-syncs ``h-1..h`` (either side may be the damaged one); any other
    problem at ``h`` re-syncs ``h`` (its derived rows with it). A balance that is not
    the sum of its transfers is no height's: :func:`repair` sums them all again.
    """
    resync: list[tuple[int, int]] = []
    strays: list[tuple[int, int]] = []
    for problem in report.problems:
        low, high = problem.span
        if problem.kind == "balance":
            continue  # not a height's fault: the balances are summed again instead
        if problem.kind == "orphan_tx":
            inside = report.start is not None and report.start <= low and high <= report.end
            (resync if inside else strays).append((low, high))
        elif problem.kind in ("link", "total_txs"):
            resync.append((max(0, low - 1), high))
        else:
            resync.append((low, high))
    return merge_ranges(resync), merge_ranges(strays)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or adjacent inclusive ranges joined, in order."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


class RepairStore(AuditStore, Protocol):
    async def require_writer(self) -> None: ...
    async def replace_range(self, batch: Batch, *, chain_id: str) -> None: ...
    async def delete_orphan_transactions(self, start: int, end: int) -> int: ...
    async def rebuild_balances(self) -> None: ...
    async def block_ref(self, height: int) -> BlockRef | None: ...
    async def block_link(self, height: int) -> BlockLink | None: ...


class RepairSource(AuditSource, Protocol):
    async def confirm(self, origin: BatchReader, height: int, block_hash: str) -> None: ...


async def repair(
    store: RepairStore,
    source: RepairSource,
    start: int | None = None,
    end: int | None = None,
    *,
    against_source: bool = False,
    batch_size: int = 1000,
    policy: RetryPolicy | None = None,
) -> RepairResult:
    """Audit ``start..end``, re-sync every damaged range from ``source``, audit again.

    Takes the writer lock first, without waiting (``NotTheWriter`` while ``gnosync
    run`` or another writer holds it), and keeps it to the end. Each range is
    replaced in chunks of ``batch_size`` heights, each chunk in one transaction, each
    retried through ``policy``. ``against_source`` also re-syncs the heights whose
    stored hash differs from the source's.
    """
    await store.require_writer()
    before = await audit(store, start, end, source if against_source else None, policy=policy)
    async with store.auditing() as reader:
        chain_id = (await reader.bounds()).chain_id
    resync, strays = plan_repair(before)
    deleted = 0
    for low, high in strays:
        deleted += await store.delete_orphan_transactions(low, high)
    if any(problem.kind == "balance" for problem in before.problems):
        await store.rebuild_balances()
        log.info("GRC20 balances summed again from their transfers")
    for low, high in resync:
        chunks = list(batches(low, high, batch_size))
        for first, last in chunks:
            check_above = last == high

            async def replace(first: int = first, last: int = last, check_above: bool = check_above) -> Batch:
                return await _replace(store, source, first, last, chain_id, check_above=check_above)

            batch = await with_policy(policy, replace)
            chain_id = chain_id or batch.blocks[0].chain_id
            log.info(
                "range repaired", from_height=first, to_height=last,
                blocks=len(batch.blocks), txs=len(batch.transactions),
            )
    after = await audit(store, start, end, source if against_source else None, policy=policy)
    return RepairResult(before=before, after=after, replaced=resync, orphans_deleted=deleted)


async def _replace(
    store: RepairStore, source: RepairSource, first: int, last: int, chain_id: str | None, *, check_above: bool
) -> Batch:
    """Fetch ``first..last``, validate it between its stored neighbours, replace it."""
    endpoint = source.endpoint_for(last)
    batch = await fetch_batch(endpoint, first, last)
    previous = await store.block_ref(first - 1) if first > 0 else None
    try:
        validate_batch(batch, previous, chain_id)
    except BatchInvalid as exc:
        endpoint.penalize(exc)
        if previous is not None and exc.height == first and exc.check == "last_block_hash":
            served = await served_hash_if_different(endpoint, previous)
            if served is not None:
                raise RepairRefused(
                    f"the stored block {previous.height} has hash {previous.hash!r} but"
                    f" {endpoint.url} serves {served!r}: it is damaged too (repair from"
                    f" --from {previous.height} or lower), or the source follows another chain"
                ) from None
        raise
    top = batch.blocks[-1]
    if check_above:
        above = await store.block_link(last + 1)
        if above is not None:
            _check_above(endpoint.url, top, above)
    await source.confirm(endpoint, last, top.hash)
    await store.replace_range(batch, chain_id=chain_id or batch.blocks[0].chain_id)
    return batch


def _check_above(url: str, top: Block, above: BlockLink) -> None:
    """The stored block just above a replaced range must link to its new last block,
    by the sync's own link rules."""
    violations = link_violations(above, top)
    if violations:
        first = violations[0]
        raise RepairRefused(
            f"the stored block {above.height} fails check '{first.check}' against block"
            f" {top.height} as {url} serves it ({first.detail}): block {above.height} is"
            f" damaged too (repair up to --to {above.height} or higher), or the source"
            " follows another chain"
        )
