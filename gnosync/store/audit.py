"""The read side of ``gnosync verify``: set-based checks of the stored chain.

Each method is one SQL statement over a height range (window functions and grouped
joins, no per-row round trips) and returns the offending rows only, at most ``limit``
of them; except the links, whose rules live in :mod:`gnosync.sync.validate`: those
rows are streamed to it. All run on one connection in one read-only REPEATABLE READ transaction (see
:meth:`gnosync.store.Store.auditing`), so they see one consistent snapshot even while
``gnosync run`` commits elsewhere. Turning the rows into a report is
:mod:`gnosync.sync.verify`'s job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg

from gnosync.errors import ConfigError
from gnosync.store import sql
from gnosync.store.migrate import load_migrations
from gnosync.store.replica import ReplicaState

# Heights read per statement when streaming the links (faster than a cursor).
LINK_CHUNK = 50_000

# The largest and smallest heights a range can name.
MIN_HEIGHT = -(2**63)
MAX_HEIGHT = 2**63 - 1

Errors = Callable[[str], AbstractAsyncContextManager[None]]


@dataclass(frozen=True, slots=True)
class AuditBounds:
    """The stored range and the component's app_state row (``has_state`` False: none)."""

    min_height: int | None
    max_height: int | None
    min_tx_height: int | None
    max_tx_height: int | None
    has_state: bool
    last_block_h: int | None
    last_block_hash: str | None
    chain_id: str | None
    hash_at_last: str | None  # the stored hash at last_block_h


@dataclass(frozen=True, slots=True)
class AuditCounts:
    blocks: int
    low: int | None
    high: int | None
    transactions: int
    checkpoints: int


@dataclass(frozen=True, slots=True)
class CheckpointAudit:
    """A stored checkpoint beside what the rows below it say it should be."""

    height: int
    block_hash: str
    last_tx_hash: str | None
    checksum: str
    blocks: int
    transactions: int
    prev_height: int | None
    prev_checksum: str | None
    stored_block_hash: str | None
    expected: str  # chained from the stored previous checksum
    counted_blocks: int
    counted_transactions: int
    counted_last_tx_hash: str | None
    first_height: int | None  # the lowest stored height of its segment


class AuditReader:
    """The audit statements, bound to one snapshot of one schema."""

    def __init__(self, conn: asyncpg.Connection, statements: sql.Statements, component: str, errors: Errors):
        self._conn = conn
        self._sql = statements
        self._component = component
        self._errors = errors

    async def _fetch(self, what: str, query: str, *args: object) -> list[asyncpg.Record]:
        async with self._errors(what):
            return await self._conn.fetch(query, *args)

    async def check_schema(self) -> None:
        """Raise ``ConfigError`` (one line: what is wrong, what to do) unless the schema
        holds gnosync's tables at the migrations this gnosync knows. Reads only: the
        audit never migrates, so that it runs on a read-only role or replica."""
        what = f"reading the tables of schema {self._sql.schema!r}"
        (row,) = await self._fetch(what, self._sql.audit_tables, self._sql.schema, list(sql.TABLES))
        schema, database, tables = self._sql.schema, row["database"], set(row["tables"])
        if not tables:
            raise ConfigError(
                f"schema {schema!r} has no gnosync tables in database {database!r};"
                " check --db-schema, or run gnosync migrate"
            )
        missing = [table for table in sql.TABLES if table not in tables]
        applied = set()
        if sql.MIGRATIONS_TABLE not in missing:
            applied = {r["version"] for r in await self._fetch(what, self._sql.applied_migrations)}
        known = {migration.version: migration.name for migration in load_migrations()}
        newer = sorted(applied - set(known))
        if newer:
            raise ConfigError(
                f"schema {schema!r} in database {database!r} has migration version(s) {newer}"
                " that this gnosync does not know; it was migrated by a newer gnosync, so upgrade"
                " gnosync"
            )
        pending = [name for version, name in sorted(known.items()) if version not in applied]
        if missing or pending:
            lacking = f"tables {', '.join(missing)}" if missing else f"migrations {', '.join(pending)}"
            raise ConfigError(
                f"schema {schema!r} in database {database!r} lacks {lacking};"
                " run gnosync migrate (verify never changes the database)"
            )

    async def replica(self) -> ReplicaState | None:
        """Where the server stands as a replica: None on a primary."""
        (row,) = await self._fetch("reading the replication state", sql.REPLICA_STATE)
        return ReplicaState.from_row(row)

    async def bounds(self) -> AuditBounds:
        rows = await self._fetch("reading the stored range", self._sql.audit_bounds, self._component)
        return AuditBounds(**dict(rows[0]))

    async def counts(self, start: int, end: int) -> AuditCounts:
        rows = await self._fetch(f"counting heights {start}..{end}", self._sql.audit_counts, start, end)
        return AuditCounts(**dict(rows[0]))

    async def gaps(self, start: int, end: int, limit: int) -> list[tuple[int, int]]:
        """Runs (first, last) of missing heights between the stored ones in ``start..end``."""
        rows = await self._fetch(
            f"looking for missing heights in {start}..{end}", self._sql.audit_gaps, start, end, limit
        )
        return [(row["first"], row["last"]) for row in rows]

    async def duplicate_hashes(self, start: int, end: int, limit: int) -> list[tuple[str, str, list[int]]]:
        """(``block`` or ``transaction``, hash, heights) for hashes stored more than once.

        A valid unique index on ``hash`` makes this impossible, and such a table is not
        scanned: ``blocks``, unless the index was dropped or is invalid. Transactions may
        share a hash (identical transactions at two heights), so they are scanned.
        """
        what = f"looking for duplicate hashes in {start}..{end}"
        guarded = {
            row["table_name"]
            for row in await self._fetch(what, self._sql.unique_hash_tables, self._sql.schema)
        }
        rows: list[asyncpg.Record] = []
        if sql.BLOCKS_TABLE not in guarded:
            rows += await self._fetch(what, self._sql.audit_duplicate_block_hashes, start, end, limit)
        if sql.TRANSACTIONS_TABLE not in guarded:
            rows += await self._fetch(
                what, self._sql.audit_duplicate_transaction_hashes, start, end, limit
            )
        return [(row["what"], row["hash"], list(row["heights"])) for row in rows]

    async def block_links(self, start: int, end: int) -> AsyncIterator[list[BlockLink]]:
        """The stored blocks of ``start - 1..end`` in height order, in lists of at most
        ``LINK_CHUNK`` heights (one statement each, so memory stays bounded), for the
        link rules to judge."""
        for first in range(start - 1, end + 1, LINK_CHUNK):
            last = min(end, first + LINK_CHUNK - 1)
            rows = await self._fetch(
                f"reading the links of {first}..{last}", self._sql.audit_block_links, first, last
            )
            yield [BlockLink(*row) for row in rows]

    async def transactions(
        self, start: int, end: int, tx_start: int, tx_end: int, limit: int
    ) -> list[asyncpg.Record]:
        """Heights whose stored transactions disagree with their block, or have none."""
        return await self._fetch(
            f"checking the transactions of {start}..{end}",
            self._sql.audit_transactions, start, end, tx_start, tx_end, limit,
        )

    async def decoder_state(self) -> tuple[int, int | None]:
        """(decoder version, derived_to) of the derived tables."""
        (row,) = await self._fetch("reading the decoder state", self._sql.decoder_state)
        return row["version"], row["derived_to"]

    async def derived_counts(self, start: int, end: int, limit: int) -> list[asyncpg.Record]:
        """Transactions of ``start..end`` whose message or event rows are not as many as
        their stored JSON holds."""
        return await self._fetch(
            f"counting the derived rows of {start}..{end}",
            self._sql.audit_derived_counts, start, end, limit,
        )

    async def balances(self, limit: int) -> list[asyncpg.Record]:
        """GRC20 balances that are not the sum of their transfers."""
        return await self._fetch("summing the GRC20 transfers", self._sql.audit_balances, limit)

    async def checkpoints(self, start: int, end: int) -> list[CheckpointAudit]:
        rows = await self._fetch(
            f"recomputing the checkpoints in {start}..{end}", self._sql.audit_checkpoints, start, end
        )
        return [CheckpointAudit(**dict(row)) for row in rows]

    async def segment(self, low: int, high: int) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
        """The block and transaction hashes of the heights ``low < h <= high``."""
        what = f"reading the hashes of {low + 1}..{high}"
        blocks = await self._fetch(what, self._sql.segment_blocks, low, high)
        txs = await self._fetch(what, self._sql.segment_transactions, low, high)
        return [tuple(row) for row in blocks], [tuple(row) for row in txs]


@dataclass(frozen=True, slots=True)
class BlockLink:
    """What a stored block says about the block below it."""

    height: int
    hash: str
    last_block_hash: str
    total_txs: int
    num_txs: int
    chain_id: str
