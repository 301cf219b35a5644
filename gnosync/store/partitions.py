"""Partitions of the tables that grow, created by gnosync ahead of the heights it writes.

``transactions``, ``messages``, ``events`` and ``tx_accounts`` are partitioned by RANGE
(block_height) (migration 0005). Every write path that stores rows at new heights calls
:func:`ensure_partitions` in its own transaction, before its COPY: a partition created
there commits with the batch or, if the batch fails, disappears with it, so no empty
partition is ever left behind by a failed commit. Partitions are ``size`` heights long
and aligned on multiples of ``size``; where an existing partition (the converted table,
or one made with another size) already covers part of a range, only the rest is
created, so any sizes and any order of writes (backfill, prepending, repair) work.

The caller keeps the :class:`Coverage` it gets back and passes it again: while it covers
a batch's heights, nothing is read from the catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from gnosync.store import sql

# Heights stand in for MINVALUE and MAXVALUE of a range bound.
LOWEST = -(2**63)
HIGHEST = 2**63
_BOUND = re.compile(
    r"FOR VALUES FROM \((MINVALUE|'?-?\d+'?)\) TO \((MAXVALUE|'?-?\d+'?)\)"
)


@dataclass(frozen=True, slots=True)
class Coverage:
    """Height intervals ``[low, high)`` (sorted, merged) where every partitioned table
    has a partition. ``everything``: the tables are not partitioned at all."""

    intervals: tuple[tuple[int, int], ...] = ()
    everything: bool = False

    def covers(self, start: int, end: int) -> bool:
        """Whether heights ``start..end`` (inclusive) all have partitions."""
        if self.everything:
            return True
        return any(low <= start and end < high for low, high in self.intervals)


def parse_bound(text: str | None) -> tuple[int, int] | None:
    """``[low, high)`` of a range partition's bound as ``pg_get_expr`` prints it; None
    for a DEFAULT partition (or no partition)."""
    if not text:
        return None
    match = _BOUND.fullmatch(text.strip())
    if match is None:
        return None
    low, high = match.groups()
    return (
        LOWEST if low == "MINVALUE" else int(low.strip("'")),
        HIGHEST if high == "MAXVALUE" else int(high.strip("'")),
    )


def merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``intervals`` sorted, with touching or overlapping ones joined."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def missing(
    existing: tuple[tuple[int, int], ...], start: int, end: int, size: int
) -> list[tuple[int, int]]:
    """The partitions to create so that heights ``start..end`` are covered: each
    ``size``-aligned slot that meets the range, less what ``existing`` (merged) covers."""
    if size < 1:
        raise ValueError(f"partition size must be at least 1, got {size}")
    wanted: list[tuple[int, int]] = []
    slot = (start // size) * size
    while slot <= end:
        low, high = slot, slot + size
        for have_low, have_high in existing:
            if have_high <= low or have_low >= high:
                continue
            if have_low > low:
                wanted.append((low, have_low))
            low = max(low, have_high)
            if low >= high:
                break
        if low < high:
            wanted.append((low, high))
        slot += size
    return wanted


def partition_name(table: str, low: int) -> str:
    """``transactions_p000001000000``: the parent's name and the first height, padded so
    that names sort by height."""
    return f"{table}_p{low:012d}"


async def read_coverage(conn: asyncpg.Connection, statements: sql.Statements) -> dict[str, tuple]:
    """Per partitioned table of the schema, its partitions' merged intervals."""
    rows = await conn.fetch(
        statements.partition_bounds, statements.schema, list(sql.PARTITIONED_TABLES)
    )
    found: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        intervals = found.setdefault(row["parent"], [])
        bound = parse_bound(row["bound"])
        if bound is not None:
            intervals.append(bound)
    return {table: merge(intervals) for table, intervals in found.items()}


async def ensure_partitions(
    conn: asyncpg.Connection,
    statements: sql.Statements,
    coverage: Coverage | None,
    start: int,
    end: int,
    size: int,
) -> Coverage:
    """Create, on ``conn`` (inside the caller's transaction), the partitions that heights
    ``start..end`` lack; the coverage once that transaction commits. Reads the catalog
    only when ``coverage`` (what the caller knew) does not cover the range."""
    if coverage is not None and coverage.covers(start, end):
        return coverage
    per_table = await read_coverage(conn, statements)
    if not per_table:
        return Coverage(everything=True)  # a schema whose tables are not partitioned
    common: tuple[tuple[int, int], ...] | None = None
    for table in sql.PARTITIONED_TABLES:
        have = per_table.get(table)
        if have is None:
            continue
        for low, high in missing(have, start, end, size):
            for statement in sql.create_partition(
                statements.schema, table, partition_name(table, low), low, high
            ):
                await conn.execute(statement)
            have = merge([*have, (low, high)])
        common = have if common is None else _intersect(common, have)
    return Coverage(intervals=common or ())


def _intersect(
    a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    out = []
    for a_low, a_high in a:
        for b_low, b_high in b:
            low, high = max(a_low, b_low), min(a_high, b_high)
            if low < high:
                out.append((low, high))
    return merge(out)
