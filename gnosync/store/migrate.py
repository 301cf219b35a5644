"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order.

Each file runs in its own transaction with ``search_path`` set to the target schema,
under a transaction-scoped advisory lock keyed by the schema name, so processes that
migrate the same schema at once apply each file exactly once. Applied versions are
recorded in ``<schema>.schema_migrations``.

A migration too long for one transaction is still a ``.sql`` file, holding its
documentation and a line ``-- steps: <module>``: the runner then calls the module's
``STEPS`` in order, each again and again, one transaction per call, until it answers
False (nothing left). A step checks the catalog for what is already done, so a
migration stopped at any point resumes where it stood; the version is recorded once
every step is done.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg

from gnosync.errors import StoreError
from gnosync.store import sql

_FILE_NAME = re.compile(r"^(\d{4,})_([a-z0-9_]+)\.sql$")
_STEPS_LINE = re.compile(r"^-- steps: ([a-z0-9_.]+)$", re.MULTILINE)

# One unit of a stepped migration, on a connection inside its transaction (search_path
# set to the schema): True when it did something and wants to be called again.
Step = Callable[[asyncpg.Connection, sql.Statements], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_initial"
    sql: str
    steps: tuple[Step, ...] | None = None  # from the module its "-- steps:" line names


def load_migrations() -> list[Migration]:
    """The migrations shipped with gnosync, in version order."""
    found: list[Migration] = []
    folder = resources.files("gnosync.store").joinpath("migrations")
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        steps = _STEPS_LINE.search(text)
        found.append(
            Migration(
                version=int(match.group(1)),
                name=entry.name.removesuffix(".sql"),
                sql=text,
                steps=tuple(importlib.import_module(steps.group(1)).STEPS) if steps else None,
            )
        )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


def lock_key(schema: str) -> int:
    """The advisory lock key for migrating ``schema``: a stable signed 64-bit integer."""
    digest = hashlib.sha256(f"gnosync.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def apply_migrations(
    conn: asyncpg.Connection, statements: sql.Statements, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply the pending ``migrations`` to ``statements.schema``; the names applied now."""
    if migrations is None:
        migrations = load_migrations()
    key = lock_key(statements.schema)
    async with conn.transaction():
        await conn.execute(sql.ADVISORY_XACT_LOCK, key)
        await conn.execute(statements.create_schema)
        await conn.execute(statements.create_migrations_table)
        applied = {row["version"] for row in await conn.fetch(statements.applied_migrations)}
    known = {migration.version for migration in migrations}
    unknown = sorted(applied - known)
    if unknown:
        raise StoreError(
            f"schema {statements.schema!r} has migration version(s) {unknown} that this "
            "gnosync does not know; it was migrated by a newer gnosync, so upgrade gnosync",
            retryable=False,
        )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        if migration.steps is not None:
            if await _apply_steps(conn, statements, migration, key):
                done.append(migration.name)
            continue
        async with conn.transaction():
            await conn.execute(sql.ADVISORY_XACT_LOCK, key)
            # Another process may have applied it while this one waited for the lock.
            versions = {row["version"] for row in await conn.fetch(statements.applied_migrations)}
            if migration.version in versions:
                continue
            await conn.execute(sql.SET_LOCAL_SEARCH_PATH, statements.search_path)
            await conn.execute(migration.sql)
            await conn.execute(statements.record_migration, migration.version, migration.name)
        done.append(migration.name)
    return done


async def _apply_steps(
    conn: asyncpg.Connection, statements: sql.Statements, migration: Migration, key: int
) -> bool:
    """Run a stepped migration to its end; False when another process finished it first.

    Between two steps the lock is free, so another process migrating the same schema may
    run the next ones: every step finds its work done or does it, whoever calls it.
    """
    assert migration.steps is not None
    for step in migration.steps:
        more = True
        while more:
            async with conn.transaction():
                await conn.execute(sql.ADVISORY_XACT_LOCK, key)
                if await _recorded(conn, statements, migration.version):
                    return False
                await conn.execute(sql.SET_LOCAL_SEARCH_PATH, statements.search_path)
                more = await step(conn, statements)
    async with conn.transaction():
        await conn.execute(sql.ADVISORY_XACT_LOCK, key)
        if await _recorded(conn, statements, migration.version):
            return False
        await conn.execute(statements.record_migration, migration.version, migration.name)
    return True


async def _recorded(conn: asyncpg.Connection, statements: sql.Statements, version: int) -> bool:
    return version in {row["version"] for row in await conn.fetch(statements.applied_migrations)}
