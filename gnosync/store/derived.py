"""Writing the decoded tables on a connection inside a write transaction.

The rows come from :func:`gnosync.decode.derive`; this module only stores them, with
the statements of :mod:`gnosync.store.sql`: binary COPY for the per-transaction tables,
one set-based statement each for packages, tokens and balances. Every function runs on
a connection already inside the caller's transaction (a commit, a repair's replace, a
re-derivation batch), so derived rows are never ahead of or behind the blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from gnosync.store import sql

if TYPE_CHECKING:
    from gnosync.decode import Derived

# Which rows of a Derived go to which table by COPY, in the order they are written.
_COPIED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("messages", sql.MESSAGES_TABLE, sql.MESSAGE_COLUMNS),
    ("events", sql.EVENTS_TABLE, sql.EVENT_COLUMNS),
    ("tx_accounts", sql.TX_ACCOUNTS_TABLE, sql.TX_ACCOUNT_COLUMNS),
    ("coin_transfers", sql.COIN_TRANSFERS_TABLE, sql.COIN_TRANSFER_COLUMNS),
    ("grc20_transfers", sql.GRC20_TRANSFERS_TABLE, sql.GRC20_TRANSFER_COLUMNS),
)


async def copy_rows(
    conn: asyncpg.Connection, schema: str, table: str, columns: tuple[str, ...], rows: list
) -> None:
    """Binary COPY of ``rows`` into ``table``; nothing when there are none."""
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=columns, schema_name=schema)


async def copy_package_files(conn: asyncpg.Connection, schema: str, rows: list) -> None:
    """The package_files rows of a batch (stored data, written in both derive modes)."""
    await copy_rows(conn, schema, sql.PACKAGE_FILES_TABLE, sql.PACKAGE_FILE_COLUMNS, rows)


async def write_derived(
    conn: asyncpg.Connection,
    statements: sql.Statements,
    derived: Derived,
    start: int,
    end: int,
) -> None:
    """Store ``derived``, the rows of heights ``start..end``, and add the range's GRC20
    transfers to the balances; derived_to moves up to ``end`` when nothing below
    ``start`` is missing. The range's transactions must be stored (this transaction's
    COPY, or earlier) and hold no derived rows yet."""
    schema = statements.schema
    for field, table, columns in _COPIED:
        await copy_rows(conn, schema, table, columns, getattr(derived, field))
    if derived.packages:
        await conn.execute(statements.insert_packages, *_arrays(derived.packages, len(sql.PACKAGE_COLUMNS)))
    if derived.grc20_tokens:
        await conn.execute(
            statements.upsert_grc20_tokens, *_arrays(derived.grc20_tokens, len(sql.GRC20_TOKEN_COLUMNS))
        )
    if derived.grc20_transfers:
        await conn.execute(statements.apply_balances, start, end, 1)
    await conn.execute(statements.advance_derived_to, start, end)


async def take_back(conn: asyncpg.Connection, statements: sql.Statements, start: int, end: int) -> None:
    """Undo the derived rows of heights ``start..end``: their GRC20 transfers come back
    out of the balances, then the rows are deleted (tokens and balance rows stay)."""
    await conn.execute(statements.apply_balances, start, end, -1)
    await conn.execute(statements.delete_derived_between, start, end)


def _arrays(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the parameters of an ``unnest`` insert."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
