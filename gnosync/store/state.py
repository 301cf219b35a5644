"""Where a sync component stands: its row of ``app_state``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gnosync.redact import redact_text
from gnosync.store import sql
from gnosync.store.failures import database_errors


@dataclass(frozen=True, slots=True)
class SyncState:
    """One row of ``app_state``."""

    component: str
    last_block_h: int | None
    last_block_hash: str | None
    last_tx_hash: str | None
    last_sync_time: datetime | None
    status: str | None
    error_count: int
    last_error: str | None
    chain_id: str | None
    updated_at: datetime

    def to_json_dict(self) -> dict[str, Any]:
        """The state with JSON-ready values; times as ISO 8601 strings."""
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in asdict(self).items()
        }


def check_status(status: str) -> None:
    if status not in sql.STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {sorted(sql.STATUSES)}")


def _clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL; an error message may quote data that does, or
    # a library's message may quote a URL with its credentials.
    return redact_text(text).replace("\x00", "\\u0000")


# Opens a write transaction: ``writing("recording an error")`` yields its connection.
Writing = Callable[[str], AbstractAsyncContextManager[asyncpg.Connection]]
# Turns database failures inside it into StoreError: ``errors("reading the sync state")``.
Errors = Callable[[str], AbstractAsyncContextManager[None]]


class SyncStateRepository:
    """Reads and writes the ``app_state`` row of ``component`` in ``schema``.

    ``where`` (host:port/database) only serves error messages. Writes run in a
    transaction opened by ``writing``; :class:`~gnosync.store.Store` passes one that
    respects the writer lock (a write refused by it raises ``NotTheWriter``), and its
    own ``errors``. Without them, writes use a pool connection and no lock.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        component: str,
        *,
        where: str = "PostgreSQL",
        writing: Writing | None = None,
        errors: Errors | None = None,
    ):
        self._pool = pool
        self._sql = sql.Statements(schema)
        self.schema = schema
        self.component = component
        self._where = where
        self._writing = writing or self._pool_transaction
        self._errors = errors or self._database_errors

    def _database_errors(self, what: str):
        return database_errors(what, self._where)

    @asynccontextmanager
    async def _pool_transaction(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        async with self._errors(what), self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def get_state(self) -> SyncState | None:
        async with self._errors("reading the sync state"):
            row = await self._pool.fetchrow(self._sql.get_state, self.component)
        return None if row is None else SyncState(**dict(row))

    async def update_state(self, **fields: Any) -> None:
        """Set just ``fields`` (app_state columns) of the row, creating it if absent."""
        if "status" in fields and fields["status"] is not None:
            check_status(fields["status"])
        if isinstance(fields.get("last_error"), str):
            fields["last_error"] = _clean_text(fields["last_error"])
        names = sorted(fields)  # a stable order keeps asyncpg's statement cache useful
        query = self._sql.update_state(names)
        async with self._writing("updating the sync state") as conn:
            await conn.execute(query, self.component, *(fields[name] for name in names))

    async def update_last_block(
        self,
        conn: asyncpg.Connection,
        *,
        height: int,
        block_hash: str,
        tx_hash: str | None,
        chain_id: str,
        status: str,
    ) -> None:
        """Record a committed batch whose last block is ``height``, on ``conn``.

        Meant to run inside the batch's transaction. ``last_block_h`` becomes the greater
        of the stored one and ``height``; ``block_hash`` and ``tx_hash`` (the batch's last
        transaction, or None when it has none) are taken only when ``height`` is at the
        top. Clears the error count and last error.
        """
        check_status(status)
        # asyncpg prepares the statement once per connection and caches it.
        await conn.execute(
            self._sql.upsert_last_block,
            self.component,
            height,
            block_hash,
            tx_hash,
            status,
            chain_id,
        )

    async def get_last_synced_height(self) -> int | None:
        """app_state's last_block_h, else the highest stored block, else None."""
        async with self._errors("reading the last synced height"):
            return await self._pool.fetchval(self._sql.last_synced_height, self.component)

    async def record_error(self, message: str) -> None:
        """Set status 'error', count it and keep ``message``, creating the row if absent."""
        async with self._writing("recording an error") as conn:
            await conn.execute(self._sql.record_error, self.component, _clean_text(message))

    async def set_status(self, status: str) -> None:
        check_status(status)
        await self.update_state(status=status)
