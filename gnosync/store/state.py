"""Where a sync component stands: its row of ``app_state``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

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
    # PostgreSQL text cannot hold NUL; an error message may quote data that does.
    return text.replace("\x00", "\\u0000")


class SyncStateRepository:
    """Reads and writes the ``app_state`` row of ``component`` in ``schema``.

    ``where`` (host:port/database) only serves error messages.
    """

    def __init__(
        self, pool: asyncpg.Pool, schema: str, component: str, *, where: str = "PostgreSQL"
    ):
        self._pool = pool
        self._sql = sql.Statements(schema)
        self.schema = schema
        self.component = component
        self._where = where

    def _errors(self, what: str):
        return database_errors(what, self._where)

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
        async with self._errors("updating the sync state"):
            await self._pool.execute(query, self.component, *(fields[name] for name in names))

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
        async with self._errors("recording an error"):
            await self._pool.execute(self._sql.record_error, self.component, _clean_text(message))

    async def set_status(self, status: str) -> None:
        check_status(status)
        await self.update_state(status=status)
