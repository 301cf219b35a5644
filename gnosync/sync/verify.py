"""``gnosync verify``: audit the stored chain and report what is damaged.

:func:`audit` runs the store's set-based checks (:mod:`gnosync.store.audit`) on one
snapshot and turns their rows into a :class:`VerifyReport`: one :class:`Problem` per
damaged height (a run of heights for missing ones, a segment for a checkpoint). The
links are judged by the sync's own rules (:func:`gnosync.sync.validate.link_violations`),
so verify names a broken link exactly as the sync would have refused it. With a source
it also compares every stored block hash with the one served
(:mod:`gnosync.sync.source_check`). It reads only, and never migrates: a schema without
gnosync's tables is a :class:`~gnosync.errors.ConfigError`. Re-syncing what it finds
is :mod:`gnosync.sync.repair`'s job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gnosync.decode import DECODER_VERSION
from gnosync.errors import GnosyncError
from gnosync.retry import RetryPolicy
from gnosync.store.audit import MAX_HEIGHT, MIN_HEIGHT, AuditBounds, AuditReader
from gnosync.store.checkpoints import checkpoint_checksum
from gnosync.store.replica import ReplicaState, lag_warning
from gnosync.sync.source_check import HashSources, stored_against_served
from gnosync.sync.validate import Violation, chain_id_violation, link_violations

T = TypeVar("T")

# Each check reports at most this many rows; the report says which were cut short.
PROBLEM_LIMIT = 100_000
# How many heights the text report names per kind.
SHOWN = 10

# Every kind of problem, in report order, with what it means.
KINDS: dict[str, str] = {
    "missing": "heights with no stored block",
    "duplicate_hash": "a block hash stored at more than one height",
    "link": "last_block_hash is not the hash of the block below, a first block links to"
    " something, or the hash is empty",
    "total_txs": "total_txs is not the block below's plus num_txs",
    "chain_id": "the block's chain id is not the recorded one",
    "tx_count": "the block's num_txs is not the number of stored transactions",
    "tx_index": "the stored transaction indexes do not run 0, 1, 2, ...",
    "orphan_tx": "transactions stored at a height with no block",
    "checkpoint": "a checkpoint does not match its recomputation from the rows",
    "state": "app_state does not match the highest stored block",
    "source_hash": "the stored block hash differs from the source's",
    "derived": "a transaction's message or event rows are not as many as its stored JSON holds",
    "balance": "a GRC20 balance is not the sum of its transfers",
}

# The report kind of each check of gnosync.sync.validate's link rules.
LINK_KINDS: dict[str, str] = {
    "hash": "link",
    "last_block_hash": "link",
    "total_txs": "total_txs",
    "chain_id": "chain_id",
}


class CouldNotVerify(GnosyncError):
    """The audit could not run (bad settings, unreachable database or source, missing
    schema): neither clean nor damaged, so ``gnosync verify`` exits 2."""

    exit_code = 2


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
    decoder_version: int | None = None  # of the derived tables (0: never derived)
    derived_to: int | None = None  # every height up to it has its derived rows
    # What is worth knowing but is no damage: transaction hashes shared by identical
    # transactions (unsigned genesis ones can repeat byte for byte).
    notes: list[str] = field(default_factory=list)
    replica: ReplicaState | None = None  # the server audited is a replica, this far behind

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
            "derived": {"decoder_version": self.decoder_version, "derived_to": self.derived_to},
            "notes": self.notes,
            "replica": None if self.replica is None else self.replica.to_json_dict(),
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
            if self.derived_to is not None:
                head += f", derived through {self.derived_to} (decoder {self.decoder_version})"
        if self.source is not None:
            if self.source_checked is None:
                head += f"; nothing to compare with {self.source}"
            else:
                low, high = self.source_checked
                head += f"; hashes compared with {self.source} for {low}..{high}"
        counts = self.counts()
        head += f"; {'clean' if self.ok else 'DAMAGED'}"
        if self.replica is not None:
            head += f"; ran on {self.replica.describe()}"
        lines = [head]
        warning = lag_warning(self.replica)
        if warning is not None:
            lines.append(f"warning: {warning}")
        for kind, count in counts.items():
            of_kind = [p for p in self.problems if p.kind == kind]
            shown = ", ".join(_where(p) for p in of_kind[:SHOWN])
            more = ", ..." if len(of_kind) > SHOWN else ""
            noun = "height" if count == 1 else "heights"
            cut = " (list cut short)" if kind in self.truncated else ""
            lines.append(f"{kind}: {count} {noun}{cut} at {shown}{more}; first: {of_kind[0].detail}")
        lines.extend(f"note: {note}" for note in self.notes[:SHOWN])
        if len(self.notes) > SHOWN:
            lines.append(f"note: ... and {len(self.notes) - SHOWN} more")
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


class AuditSource(HashSources, Protocol):
    async def latest_height(self) -> int: ...


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
    ``policy`` when given. On a replica the report says how far behind its primary
    the audited snapshot is (``replica``).
    """
    if start is not None and end is not None and end < start:
        raise ValueError(f"end {end} is below start {start}")
    async with store.auditing() as reader:
        await reader.check_schema()
        replica = await reader.replica()
        bounds = await reader.bounds()
        low, high = _range(bounds, start, end)
        report = VerifyReport(start=low, end=high, replica=replica)
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
        await _check_derived(report, reader, low, high, limit)
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
    blocks = [row for row in rows if row[0] == "block"]
    problems = [
        Problem("duplicate_hash", height, f"block hash {hash_!r} is stored at heights {heights}")
        for _, hash_, heights in blocks
        for height in sorted(set(heights))
    ]
    _add(report, "duplicate_hash", blocks, limit, problems)
    report.notes.extend(
        f"transaction hash {hash_!r} is stored at heights {sorted(heights)}: identical"
        " transactions share a hash, as unsigned genesis ones may"
        for what, hash_, heights in rows if what == "transaction"
    )


async def _check_links(report, reader: AuditReader, low, high, chain_id, limit) -> None:
    """Each stored block of ``low..high`` against the stored block below it, by the
    sync's own link rules, and against the recorded chain id."""
    found = 0
    previous = None
    async for blocks in reader.block_links(low, high):
        for block in blocks:
            if block.height >= low:
                violations = link_violations(block, previous)
                if chain_id is not None and block.chain_id != chain_id:
                    violations.append(chain_id_violation(block.height, block.chain_id, chain_id))
                if violations:
                    report.problems.extend(problem_of(violation) for violation in violations)
                    found += len(violations)
                    if found >= limit:
                        report.truncated.append("link")
                        return
            previous = block


def problem_of(violation: Violation) -> Problem:
    """The report's problem for a broken rule of :mod:`gnosync.sync.validate`."""
    return Problem(LINK_KINDS[violation.check], violation.height, violation.detail)


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


async def _check_derived(report: VerifyReport, reader: AuditReader, low: int, high: int, limit: int) -> None:
    """The derived rows of the heights that have them (up to ``derived_to``): as many
    messages and events per transaction as its stored JSON holds, and every GRC20
    balance equal to the sum of its transfers (balances span all heights, so they are
    checked whatever the range)."""
    version, derived_to = await reader.decoder_state()
    report.decoder_version, report.derived_to = version, derived_to
    if version and version < DECODER_VERSION:
        report.notes.append(
            f"the derived tables were built by decoder version {version}; this gnosync's is"
            f" {DECODER_VERSION}, and gnosync run (or gnosync rederive) rebuilds them"
        )
    if derived_to is not None and derived_to >= low:
        top = min(high, derived_to)
        rows = await reader.derived_counts(low, top, limit)
        first_of: dict[int, Any] = {}
        for row in rows:  # one problem per height, naming its first such transaction
            first_of.setdefault(row["height"], row)
        _add(report, "derived", rows, limit, (
            Problem(
                "derived", height,
                f"transaction {height}/{row['tx_index']} holds {row['served_messages']}"
                f" messages and {row['served_events']} events, {row['messages']} and"
                f" {row['events']} are derived",
            )
            for height, row in first_of.items()
        ))
    rows = await reader.balances(limit)
    _add(report, "balance", rows, limit, (
        Problem(
            "balance", row["height"],
            f"the {row['token']} balance of {row['address']} is {row['balance']},"
            f" its transfers sum to {row['total'] if row['total'] is not None else 0}",
        )
        for row in rows
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


async def with_policy(policy: RetryPolicy | None, fn: Callable[[], Awaitable[T]]) -> T:
    """``fn()``, retried through ``policy`` when there is one."""
    return await (policy.call(fn) if policy is not None else fn())


async def _compare_with_source(report, store: AuditStore, source: AuditSource, policy, limit) -> None:
    endpoints = getattr(source, "endpoints", None) or []
    report.source = ", ".join(endpoint.url for endpoint in endpoints) or "the source"
    if report.start is None:
        return
    tip = await with_policy(policy, source.latest_height)
    top = min(report.end, tip)
    if top < report.start:
        return
    report.source_checked = (report.start, top)
    found = 0
    differences = stored_against_served(
        store, source, report.start, top, call=lambda fn: with_policy(policy, fn)
    )
    async for difference in differences:
        report.problems.append(Problem("source_hash", difference.height, difference.detail))
        found += 1
        if found >= limit:
            report.truncated.append("source_hash")
            return
