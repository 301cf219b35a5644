"""The PostgreSQL copy of the chain: migrations, the batch write path, and reads."""

from __future__ import annotations

import asyncpg

from gnosync.errors import ConfigError
from gnosync.store import sql
from gnosync.store.dsn import describe_dsn, password_of, redact_dsn, to_uri
from gnosync.store.failures import database_errors
from gnosync.store.migrate import apply_migrations
from gnosync.store.rows import block_row, transaction_row
from gnosync.store.state import SyncStateRepository, check_status
from gnosync.sync.model import Batch, BlockRef

CONNECT_TIMEOUT = 15.0


class Store:
    """A pool of connections to the database that holds gnosync's ``schema``.

    Every method raises :class:`~gnosync.errors.StoreError` on database failures;
    ``retryable`` is true when the connection was lost and a later call may succeed.
    """

    def __init__(self, pool: asyncpg.Pool, *, schema: str, component: str, where: str):
        self._pool = pool
        self._sql = sql.Statements(schema)
        self.schema = schema
        self.component = component
        self.where = where  # host:port/database, for messages
        self.state = SyncStateRepository(pool, schema, component, where=where)

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "indexer",
        component: str = "block_sync",
        min_size: int = 1,
        max_size: int = 4,
    ) -> Store:
        """Open a pool to ``dsn`` (URI or key=value form); fails fast if it cannot connect."""
        try:
            sql.quote_ident(schema)
        except ValueError as exc:
            raise ConfigError(f"invalid schema name: {exc}") from None
        if not component:
            raise ConfigError("the sync component name cannot be empty")
        try:
            uri = to_uri(dsn)
        except ValueError as exc:
            raise ConfigError(f"invalid PostgreSQL DSN {redact_dsn(dsn)!r}: {exc}") from None
        where = describe_dsn(dsn)
        pool = asyncpg.create_pool(
            uri,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": "gnosync"},
        )
        try:
            async with database_errors(
                "connecting", where, connecting=True, secret=password_of(dsn)
            ):
                try:
                    await pool
                except asyncpg.ClientConfigurationError as exc:
                    raise ConfigError(
                        f"invalid PostgreSQL DSN {redact_dsn(dsn)!r}: {exc}"
                    ) from None
        except BaseException:
            pool.terminate()
            raise
        return cls(pool, schema=schema, component=component, where=where)

    async def close(self) -> None:
        await self._pool.close()

    def _errors(self, what: str):
        return database_errors(what, self.where)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names of those applied now."""
        async with self._errors(f"migrating schema {self.schema!r}"):
            async with self._pool.acquire() as conn:
                return await apply_migrations(conn, self._sql)

    async def ping(self) -> None:
        async with self._errors("checking the connection"):
            await self._pool.fetchval(sql.PING)

    async def commit_batch(self, batch: Batch, *, chain_id: str, status: str) -> None:
        """Store ``batch`` and advance app_state, atomically.

        In one transaction: binary COPY of the blocks, then of the transactions, then the
        app_state upsert. Cancellation or a crash at any point stores nothing. The batch
        must hold only heights not yet stored: a duplicate block height, block hash or
        transaction hash raises ``StoreError`` (not retryable) and stores nothing.
        """
        if not batch.blocks:
            raise ValueError(f"batch {batch.start}..{batch.end} has no blocks")
        top = batch.blocks[-1]
        if top.height != batch.end or batch.blocks[0].height != batch.start:
            raise ValueError(
                f"batch {batch.start}..{batch.end} holds blocks "
                f"{batch.blocks[0].height}..{top.height}"
            )
        check_status(status)
        block_rows = [block_row(block) for block in batch.blocks]
        tx_rows = [transaction_row(tx) for tx in batch.transactions]
        async with self._errors(f"committing blocks {batch.start}..{batch.end}"):
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        sql.BLOCKS_TABLE,
                        records=block_rows,
                        columns=sql.BLOCK_COLUMNS,
                        schema_name=self.schema,
                    )
                    if tx_rows:
                        await conn.copy_records_to_table(
                            sql.TRANSACTIONS_TABLE,
                            records=tx_rows,
                            columns=sql.TRANSACTION_COLUMNS,
                            schema_name=self.schema,
                        )
                    await self.state.update_last_block(
                        conn,
                        height=top.height,
                        block_hash=top.hash,
                        tx_hash=batch.last_tx_hash,
                        chain_id=chain_id,
                        status=status,
                    )

    async def block_ref(self, height: int) -> BlockRef | None:
        """Height, hash, chain id and total_txs of the stored block at ``height``."""
        async with self._errors(f"reading block {height}"):
            row = await self._pool.fetchrow(self._sql.block_ref, height)
        if row is None:
            return None
        return BlockRef(
            height=row["height"],
            hash=row["hash"],
            chain_id=row["chain_id"],
            total_txs=row["total_txs"],
        )

    async def stored_bounds(self) -> tuple[int, int] | None:
        """(lowest, highest) stored block height, or None when no block is stored."""
        async with self._errors("reading the stored height range"):
            row = await self._pool.fetchrow(self._sql.stored_bounds)
        if row is None or row[0] is None:
            return None
        return row[0], row[1]

    async def block_hashes(self, start: int, end: int) -> dict[int, str]:
        """Hashes of the stored blocks ``start..end`` (inclusive), by height."""
        async with self._errors(f"reading block hashes {start}..{end}"):
            rows = await self._pool.fetch(self._sql.block_hashes, start, end)
        return {row["height"]: row["hash"] for row in rows}

