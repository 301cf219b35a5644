"""``gnosync verify`` and ``gnosync repair``: audit the stored chain, re-sync what is damaged.

:func:`audit` runs the store's set-based checks (:mod:`gnosync.store.audit`) on one
snapshot and turns their rows into a :class:`VerifyReport`: one :class:`Problem` per
damaged height (a run of heights for missing ones, a segment for a checkpoint). With a
source it also compares every stored block hash with the one served.

:func:`repair` holds the writer lock for its whole run, audits, groups the problem
heights into contiguous ranges, and replaces each range with blocks fetched from the
source again, validated exactly like a sync (against the stored block below, and the
stored block above must link to the last one) and written by
:meth:`gnosync.store.Store.replace_range` (delete and re-insert in one transaction).
Then it audits again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from gnosync.errors import BatchInvalid, GnosyncError
from gnosync.retry import RetryPolicy
from gnosync.store.audit import MAX_HEIGHT, MIN_HEIGHT, AuditBounds, AuditReader
from gnosync.store.checkpoints import checkpoint_checksum
from gnosync.model import Batch, Block
from gnosync.sync.syncer import BatchReader, batches, fetch_batch
from gnosync.sync.validate import FIRST_COUNTED_HEIGHT, validate_batch

log = structlog.get_logger("gnosync.verify")

T = TypeVar("T")

# Each check reports at most this many rows; the report says which were cut short.
PROBLEM_LIMIT = 100_000
# Heights compared with the source per request (tx-indexer's element cap).
SOURCE_CHUNK = 10_000
# How many heights the text report names per kind.
SHOWN = 10

# Every kind of problem, in report order, with what it means.
KINDS: dict[str, str] = {
    "missing": "heights with no stored block",
    "duplicate_hash": "a block or transaction hash stored at more than one height",
    "link": "last_block_hash is not the hash of the block below (or the hash is empty)",
    "total_txs": "total_txs is not the block below's plus num_txs",
    "chain_id": "the block's chain id is not the recorded one",
    "tx_count": "the block's num_txs is not the number of stored transactions",
    "tx_index": "the stored transaction indexes do not run 0, 1, 2, ...",
    "orphan_tx": "transactions stored at a height with no block",
    "checkpoint": "a checkpoint does not match its recomputation from the rows",
    "state": "app_state does not match the highest stored block",
    "source_hash": "the stored block hash differs from the source's",
}


class RepairRefused(GnosyncError):
    """The source's blocks do not fit the stored ones around a damaged range."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One damaged height (or run of heights, ``heights`` inclusive) and what is wrong."""

    kind: str
    height: int
    detail: str
    heights: tuple[int, int] | None = None

    @property
    def span(self) -> tuple[int, int]:
        return self.heights or (self.height, self.height)

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "height": self.height, "detail": self.detail}
        if self.heights is not None:
            data["heights"] = list(self.heights)
        return data


@dataclass
class VerifyReport:
    """What an audit checked and found; ``ok`` when it found nothing."""

    start: int | None  # the heights checked (None: nothing stored)
    end: int | None
    blocks: int = 0
    transactions: int = 0
    checkpoints: int = 0
    source: str | None = None  # the source compared with, if any
    source_checked: tuple[int, int] | None = None  # the heights compared with it
    problems: list[Problem] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)  # checks that hit PROBLEM_LIMIT

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Damaged heights per kind, in report order (a missing run counts each height)."""
        found: Counter[str] = Counter()
        for problem in self.problems:
            low, high = problem.span
            found[problem.kind] += high - low + 1 if problem.kind == "missing" else 1
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "range": None if self.start is None else {"from": self.start, "to": self.end},
            "blocks": self.blocks,
            "transactions": self.transactions,
            "checkpoints": self.checkpoints,
            "source": self.source,
            "source_checked": None if self.source_checked is None else list(self.source_checked),
            "counts": self.counts(),
            "problems": [problem.to_json_dict() for problem in self.problems],
            "truncated": self.truncated,
        }

    def text(self) -> str:
        """A summary line, then one line per problem kind: its count and first heights."""
        if self.start is None:
            head = "nothing stored"
        else:
            head = (
                f"heights {self.start}..{self.end}: {self.blocks} blocks,"
                f" {self.transactions} transactions, {self.checkpoints} checkpoints"
            )
        if self.source is not None:
            if self.source_checked is None:
                head += f"; nothing to compare with {self.source}"
            else:
                low, high = self.source_checked
                head += f"; hashes compared with {self.source} for {low}..{high}"
        counts = self.counts()
        head += f"; {'clean' if self.ok else 'DAMAGED'}"
        lines = [head]
        for kind, count in counts.items():
            of_kind = [p for p in self.problems if p.kind == kind]
            shown = ", ".join(_where(p) for p in of_kind[:SHOWN])
            more = ", ..." if len(of_kind) > SHOWN else ""
            noun = "height" if count == 1 else "heights"
            cut = " (list cut short)" if kind in self.truncated else ""
            lines.append(f"{kind}: {count} {noun}{cut} at {shown}{more}; first: {of_kind[0].detail}")
        return "\n".join(lines)


def _where(problem: Problem) -> str:
    low, high = problem.span
    if problem.kind == "missing" and high > low:
        return f"{low}..{high}"
    return str(problem.height)


# -- audit -----------------------------------------------------------------------------------


class AuditStore(Protocol):
    def auditing(self) -> Any: ...
    async def block_hashes(self, start: int, end: int) -> dict[int, str]: ...


class AuditSource(Protocol):
    async def latest_height(self) -> int: ...
    def endpoint_for(self, height: int) -> BatchReader: ...


async def audit(
    store: AuditStore,
    start: int | None = None,
    end: int | None = None,
    source: AuditSource | None = None,
    *,
    policy: RetryPolicy | None = None,
    limit: int = PROBLEM_LIMIT,
) -> VerifyReport:
    """Check the stored heights ``start..end`` and report every problem found.

    Without a range: from the lowest stored height to the highest one (or to
    app_state's ``last_block_h`` when that is higher, so heights lost from the top
    show as missing), and transactions at any height. All store checks read one
    snapshot. With ``source``, the stored hashes are compared with the served ones
    up to the source's height, 10,000 heights per request; source calls go through
    ``policy`` when given.
    """
    if start is not None and end is not None and end < start:
        raise ValueError(f"end {end} is below start {start}")
    async with store.auditing() as reader:
        bounds = await reader.bounds()
        low, high = _range(bounds, start, end)
        report = VerifyReport(start=low, end=high)
        if low is None:
            if start is None and end is None:
                if bounds.min_tx_height is not None:  # transactions, but not one block
                    await _check_transactions(report, reader, 1, 0, MIN_HEIGHT, MAX_HEIGHT, limit)
                _check_state(report, bounds)
            return report
        counts = await reader.counts(low, high)
        report.blocks, report.transactions = counts.blocks, counts.transactions
        report.checkpoints = counts.checkpoints
        await _check_missing(report, reader, low, high, counts, limit)
        await _check_duplicates(report, reader, low, high, limit)
        await _check_links(report, reader, low, high, bounds.chain_id, limit)
        whole = start is None and end is None
        tx_low, tx_high = (MIN_HEIGHT, MAX_HEIGHT) if whole else (low, high)
        await _check_transactions(report, reader, low, high, tx_low, tx_high, limit)
        await _check_checkpoints(report, reader, low, high, bounds)
        if end is None or (bounds.max_height is not None and high >= bounds.max_height):
            _check_state(report, bounds)
    if source is not None:
        await _compare_with_source(report, store, source, policy, limit)
    report.problems.sort(key=lambda p: (list(KINDS).index(p.kind), p.height))
    return report


def _range(bounds: AuditBounds, start: int | None, end: int | None) -> tuple[int | None, int | None]:
    if bounds.min_height is None:
        if start is None or end is None:
            return None, None
        return start, end
    low = bounds.min_height if start is None else start
    if end is None:
        high = bounds.max_height
        if bounds.last_block_h is not None and bounds.last_block_h > high:
            high = bounds.last_block_h
    else:
        high = end
    if high < low:
        return None, None  # nothing stored there, and nothing recorded as stored
    return low, high


def _add(report: VerifyReport, kind: str, rows: list, limit: int, problems: Iterable[Problem]) -> None:
    report.problems.extend(problems)
    if len(rows) >= limit and kind not in report.truncated:
        report.truncated.append(kind)


async def _check_missing(report, reader: AuditReader, low, high, counts, limit) -> None:
    if counts.blocks == high - low + 1:
        return
    if counts.low is None:
        report.problems.append(_missing(low, high))
        return
    runs: list[tuple[int, int]] = []
    if counts.low > low:
        runs.append((low, counts.low - 1))
    gaps = await reader.gaps(low, high, limit)
    runs.extend(gaps)
    if counts.high < high:
        runs.append((counts.high + 1, high))
    _add(report, "missing", gaps, limit, (_missing(a, b) for a, b in runs))


def _missing(first: int, last: int) -> Problem:
    what = f"block {first} is" if first == last else f"blocks {first}..{last} are"
    return Problem("missing", first, f"{what} not stored", (first, last))


async def _check_duplicates(report, reader: AuditReader, low, high, limit) -> None:
    rows = await reader.duplicate_hashes(low, high, limit)
    problems = [
        Problem("duplicate_hash", height, f"{what} hash {hash_!r} is stored at heights {heights}")
        for what, hash_, heights in rows
        for height in sorted(set(heights))
    ]
    _add(report, "duplicate_hash", rows, limit, problems)


async def _check_links(report, reader: AuditReader, low, high, chain_id, limit) -> None:
    rows = await reader.links(low, high, chain_id, limit)
    problems: list[Problem] = []
    for row in rows:
        height = row["height"]
        below = row["prev_height"] == height - 1
        if height != 0 and row["hash"] == "":
            problems.append(Problem("link", height, "the block has an empty hash"))
        elif below and row["last_block_hash"] != row["prev_hash"]:
            problems.append(Problem(
                "link", height,
                f"block {height} links to {row['last_block_hash']!r} but block {height - 1}"
                f" has hash {row['prev_hash']!r}",
            ))
        if (
            below
            and height >= FIRST_COUNTED_HEIGHT
            and row["total_txs"] != row["prev_total"] + row["num_txs"]
        ):
            problems.append(Problem(
                "total_txs", height,
                f"total_txs {row['total_txs']} is not block {height - 1}'s {row['prev_total']}"
                f" plus num_txs {row['num_txs']}",
            ))
        if chain_id is not None and row["chain_id"] != chain_id:
            problems.append(Problem(
                "chain_id", height,
                f"chain id {row['chain_id']!r} differs from the recorded {chain_id!r}",
            ))
    _add(report, "link", rows, limit, problems)


async def _check_transactions(report, reader: AuditReader, low, high, tx_low, tx_high, limit) -> None:
    rows = await reader.transactions(low, high, tx_low, tx_high, limit)
    problems: list[Problem] = []
    for row in rows:
        height, stored = row["height"], row["stored"]
        if row["num_txs"] is None:
            problems.append(Problem(
                "orphan_tx", height, f"{stored} transaction(s) stored at height {height}, which has no block"
            ))
            continue
        if row["num_txs"] != stored:
            problems.append(Problem(
                "tx_count", height,
                f"block {height} counts {row['num_txs']} transactions, {stored} are stored",
            ))
        if row["min_index"] is not None and (row["min_index"] != 0 or row["max_index"] != stored - 1):
            problems.append(Problem(
                "tx_index", height,
                f"the {stored} stored transactions of block {height} have indexes"
                f" {row['min_index']}..{row['max_index']}, not 0..{stored - 1}",
            ))
    _add(report, "tx_count", rows, limit, problems)


async def _check_checkpoints(report, reader: AuditReader, low, high, bounds: AuditBounds) -> None:
    """Each checkpoint in range against the rows below it.

    A checksum is checked chained from the stored previous checksum, and, when that
    fails while the previous checkpoint was itself found wrong, chained from the
    previous one as recomputed from the rows: so a damaged segment is reported at its
    own checkpoint only, and a damaged checksum does not make the next one look bad.
    """
    recomputed_previous: str | None = None  # set while it differs from the stored one
    for cp in await reader.checkpoints(low, high):
        wrong: list[str] = []
        if cp.stored_block_hash != cp.block_hash:
            wrong.append(f"records block hash {cp.block_hash!r}, block {cp.height} has {cp.stored_block_hash!r}")
        if (cp.counted_blocks, cp.counted_transactions) != (cp.blocks, cp.transactions):
            wrong.append(
                f"covers {cp.blocks} blocks and {cp.transactions} transactions,"
                f" {cp.counted_blocks} and {cp.counted_transactions} are stored"
            )
        if cp.counted_last_tx_hash != cp.last_tx_hash:
            wrong.append(f"records last transaction {cp.last_tx_hash!r}, the rows end with {cp.counted_last_tx_hash!r}")
        recomputed = cp.expected
        if recomputed_previous is not None:
            blocks, txs = await reader.segment(-1 if cp.prev_height is None else cp.prev_height, cp.height)
            recomputed = checkpoint_checksum(recomputed_previous, blocks, txs)
        if cp.checksum not in (cp.expected, recomputed):
            wrong.append(f"checksum {cp.checksum} does not match the rows ({recomputed})")
        recomputed_previous = recomputed if recomputed != cp.checksum else None
        if wrong:
            if cp.prev_height is not None:
                first = cp.prev_height + 1
            else:
                first = min(cp.height, bounds.min_height if bounds.min_height is not None else cp.height)
            report.problems.append(Problem(
                "checkpoint", cp.height,
                f"checkpoint {cp.height} (heights {first}..{cp.height}) " + "; ".join(wrong),
                (first, cp.height),
            ))


def _check_state(report: VerifyReport, bounds: AuditBounds) -> None:
    top = bounds.max_height
    if not bounds.has_state:
        return  # no app_state row: gnosync goes by the stored blocks
    if top is None:
        if bounds.last_block_h is not None:
            report.problems.append(Problem(
                "state", bounds.last_block_h,
                f"app_state.last_block_h is {bounds.last_block_h} but no block is stored",
            ))
    elif bounds.last_block_h is None:
        report.problems.append(Problem(
            "state", top, f"app_state records no height but blocks up to {top} are stored"
        ))
    elif bounds.last_block_h != top:
        report.problems.append(Problem(
            "state", top,
            f"app_state.last_block_h is {bounds.last_block_h} but the highest stored block is {top}",
        ))
    elif bounds.last_block_hash != bounds.hash_at_last:
        report.problems.append(Problem(
            "state", top,
            f"app_state.last_block_hash is {bounds.last_block_hash!r} but block {top}"
            f" has hash {bounds.hash_at_last!r}",
        ))


async def _call(policy: RetryPolicy | None, fn: Callable[[], Awaitable[T]]) -> T:
    return await (policy.call(fn) if policy is not None else fn())


async def _compare_with_source(report, store: AuditStore, source: AuditSource, policy, limit) -> None:
    endpoints = getattr(source, "endpoints", None) or []
    report.source = ", ".join(endpoint.url for endpoint in endpoints) or "the source"
    if report.start is None:
        return
    tip = await _call(policy, source.latest_height)
    top = min(report.end, tip)
    found = 0
    if top >= report.start:
        report.source_checked = (report.start, top)
    for first, last in batches(report.start, top, SOURCE_CHUNK):
        stored = await store.block_hashes(first, last)
        if not stored:
            continue
        endpoint = source.endpoint_for(last)

        async def served(endpoint: BatchReader = endpoint, first: int = first, last: int = last) -> list[Block]:
            return await endpoint.blocks(first, last)

        by_height = {block.height: block.hash for block in await _call(policy, served)}
        for height, block_hash in sorted(stored.items()):
            theirs = by_height.get(height)
            if theirs == block_hash:
                continue
            detail = (
                f"{endpoint.url} serves no block {height}" if theirs is None
                else f"block {height} is stored with hash {block_hash!r}, {endpoint.url} serves {theirs!r}"
            )
            report.problems.append(Problem("source_hash", height, detail))
            found += 1
            if found >= limit:
                report.truncated.append("source_hash")
                return


# -- repair ----------------------------------------------------------------------------------


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
    problem at ``h`` re-syncs ``h``.
    """
    resync: list[tuple[int, int]] = []
    strays: list[tuple[int, int]] = []
    for problem in report.problems:
        low, high = problem.span
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
    async def block_ref(self, height: int) -> Any: ...
    async def block_link(self, height: int) -> Any: ...


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
    for low, high in resync:
        chunks = list(batches(low, high, batch_size))
        for first, last in chunks:
            check_above = last == high

            async def replace(first: int = first, last: int = last, check_above: bool = check_above) -> Batch:
                return await _replace(store, source, first, last, chain_id, check_above=check_above)

            batch = await _call(policy, replace)
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
            served = await endpoint.blocks(previous.height, previous.height)
            if served and served[0].height == previous.height and served[0].hash != previous.hash:
                raise RepairRefused(
                    f"the stored block {previous.height} has hash {previous.hash!r} but"
                    f" {endpoint.url} serves {served[0].hash!r}: it is damaged too (repair from"
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


def _check_above(url: str, top: Block, above: Any) -> None:
    """The stored block just above a replaced range must link to its new last block."""
    hint = (
        f"block {above.height} is damaged too (repair up to --to {above.height} or higher),"
        " or the source follows another chain"
    )
    if above.last_block_hash != top.hash:
        raise RepairRefused(
            f"the stored block {above.height} links to {above.last_block_hash!r} but {url}"
            f" serves block {top.height} with hash {top.hash!r}: {hint}"
        )
    if above.height >= FIRST_COUNTED_HEIGHT and above.total_txs != top.total_txs + above.num_txs:
        raise RepairRefused(
            f"the stored block {above.height} has total_txs {above.total_txs}, but {url} serves"
            f" block {top.height} with total_txs {top.total_txs} and block {above.height}"
            f" counts {above.num_txs}: {hint}"
        )
