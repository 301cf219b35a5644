"""The steps of migration 0005: the tables that grow become partitioned, in place.

``transactions``, ``messages``, ``events`` and ``tx_accounts`` become partitioned by
RANGE (block_height); each existing table, rows untouched, becomes the first partition
``<table>_initial`` (heights below the first height not stored yet) in the partitions
schema (:func:`gnosync.store.sql.partitions_schema`). Why each step is safe and what it
locks is in ``migrations/0005_partitioned.sql``. Every step looks in the catalog for
what is done and does one unit of what is not (see :mod:`gnosync.store.migrate`), so
the conversion resumes wherever it was stopped.

These statements are part of the migration, like the ``.sql`` files, and run with
``search_path`` set to the schema: names of the schema's tables are unqualified.
"""

from __future__ import annotations

import re

import asyncpg

from gnosync.store import sql

TRANSACTIONS = sql.TRANSACTIONS_TABLE
DERIVED = tuple(table for table in sql.PARTITIONED_TABLES if table != TRANSACTIONS)
_BOUND_VALUE = re.compile(r"<\s*\(?'?(-?\d+)")
_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

# relkind of each of the four tables in this schema: 'r' plain, 'p' partitioned.
_KINDS = (
    "SELECT c.relname::text AS name, c.relkind::text AS kind FROM pg_class c"
    " WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    " AND c.relname = ANY($1::text[])"
)
# The bound constraint of a plain table ($1), and whether it is validated.
_BOUND = (
    "SELECT conname::text, convalidated, pg_get_constraintdef(oid) AS def FROM pg_constraint"
    " WHERE conrelid = $1::regclass AND conname = $2"
)
_TOP = (
    "SELECT GREATEST((SELECT max(height) FROM blocks), (SELECT max(block_height) FROM transactions),"
    " (SELECT max(block_height) FROM messages), (SELECT max(block_height) FROM events),"
    " (SELECT max(block_height) FROM tx_accounts))"
)
_FOREIGN_KEYS = (
    "SELECT conname::text, pg_get_constraintdef(oid) AS def FROM pg_constraint"
    " WHERE conrelid = $1::regclass AND contype = 'f' AND conparentid = 0 ORDER BY conname"
)
# Top-level foreign keys that reference table $1: re-pointed when it is swapped.
_REFERENCING = (
    "SELECT c.conrelid::regclass::text AS tab, c.conname::text,"
    " ARRAY(SELECT attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o)"
    "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) AS cols,"
    " ARRAY(SELECT attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o)"
    "  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) AS refs,"
    " c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update"
    " FROM pg_constraint c WHERE c.confrelid = $1::regclass AND c.contype = 'f'"
    " AND c.conparentid = 0 ORDER BY 1, 2"
)
_NOT_VALIDATED = (
    "SELECT c.conrelid::regclass::text AS tab, c.conname::text FROM pg_constraint c"
    " WHERE c.confrelid = $1::regclass AND c.contype = 'f' AND c.conparentid = 0"
    " AND NOT c.convalidated ORDER BY 1, 2 LIMIT 1"
)
# (parent index, its partition on $1) pairs, to give the parent's indexes the old names.
_INDEX_PAIRS = (
    "SELECT p.relname::text AS parent, c.relname::text AS child FROM pg_index x"
    " JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_inherits i ON i.inhrelid = c.oid"
    " JOIN pg_class p ON p.oid = i.inhparent WHERE x.indrelid = $1::regclass ORDER BY 2"
)
_TABLE_COMMENT = "SELECT obj_description($1::regclass, 'pg_class')"
_COMMENT_ON_TABLE = "SELECT format('COMMENT ON TABLE %I IS %L', $1::text, $2::text)"


def bound_name(table: str) -> str:
    return f"{table}_initial_bound"


def initial_name(table: str) -> str:
    return f"{table}_initial"


async def _kinds(conn: asyncpg.Connection) -> dict[str, str]:
    return {row["name"]: row["kind"] for row in await conn.fetch(_KINDS, list(sql.PARTITIONED_TABLES))}


async def add_bounds(conn: asyncpg.Connection, statements: sql.Statements) -> bool:
    """Step 1: a NOT VALID ``CHECK (block_height < X)`` on each of the four tables, X the
    first height above every stored one. No scan; ACCESS EXCLUSIVE for an instant. From
    here on a row at X or above is refused until its table is partitioned."""
    await conn.execute(statements.create_partitions_schema)
    kinds = await _kinds(conn)
    if any(kind == "p" for kind in kinds.values()):
        return False
    if await conn.fetchrow(_BOUND, TRANSACTIONS, bound_name(TRANSACTIONS)) is not None:
        return False
    top = await conn.fetchval(_TOP)
    first_free = 0 if top is None else int(top) + 1
    for table in sql.PARTITIONED_TABLES:
        await conn.execute(
            f"ALTER TABLE {sql.quote_ident(table)} ADD CONSTRAINT {sql.quote_ident(bound_name(table))}"
            f" CHECK (block_height < {first_free}) NOT VALID"
        )
    return False


async def validate_bound(conn: asyncpg.Connection, statements: sql.Statements) -> bool:
    """Step 2, once per table: VALIDATE its bound. A full read of the table under SHARE
    UPDATE EXCLUSIVE: reads and writes go on; no row is rewritten."""
    kinds = await _kinds(conn)
    for table in sql.PARTITIONED_TABLES:
        if kinds.get(table) != "r":
            continue
        row = await conn.fetchrow(_BOUND, table, bound_name(table))
        if row is not None and not row["convalidated"]:
            await conn.execute(
                f"ALTER TABLE {sql.quote_ident(table)} VALIDATE CONSTRAINT"
                f" {sql.quote_ident(bound_name(table))}"
            )
            return True
    return False


async def swap_transactions(conn: asyncpg.Connection, statements: sql.Statements) -> bool:
    """Step 3: ``transactions`` becomes partitioned (see :func:`_swap`), and the foreign
    keys that reference it are re-pointed at the new parent as NOT VALID (no scan; they
    hold for every new row at once)."""
    if (await _kinds(conn)).get(TRANSACTIONS) != "r":
        return False
    referencing = await conn.fetch(_REFERENCING, TRANSACTIONS)
    await _swap(conn, statements, TRANSACTIONS)
    for fk in referencing:
        name = sql.quote_ident(fk["conname"])
        await conn.execute(f"ALTER TABLE {fk['tab']} DROP CONSTRAINT {name}")
        await conn.execute(
            f"ALTER TABLE {fk['tab']} ADD CONSTRAINT {name} FOREIGN KEY"
            f" ({', '.join(map(sql.quote_ident, fk['cols']))})"
            f" REFERENCES {sql.quote_ident(TRANSACTIONS)}"
            f" ({', '.join(map(sql.quote_ident, fk['refs']))})"
            f" ON DELETE {_ACTIONS[fk['on_delete']]} ON UPDATE {_ACTIONS[fk['on_update']]}"
            " NOT VALID"
        )
    return False


async def validate_foreign_key(conn: asyncpg.Connection, statements: sql.Statements) -> bool:
    """Step 4, once per re-pointed key: VALIDATE it. Reads the referencing table under
    SHARE UPDATE EXCLUSIVE (ROW SHARE on transactions); nothing is rewritten."""
    if (await _kinds(conn)).get(TRANSACTIONS) != "p":
        return False
    row = await conn.fetchrow(_NOT_VALIDATED, TRANSACTIONS)
    if row is None:
        return False
    await conn.execute(f"ALTER TABLE {row['tab']} VALIDATE CONSTRAINT {sql.quote_ident(row['conname'])}")
    return True


async def swap_derived(conn: asyncpg.Connection, statements: sql.Statements) -> bool:
    """Step 5, once per table: messages, events, tx_accounts become partitioned."""
    kinds = await _kinds(conn)
    for table in DERIVED:
        if kinds.get(table) == "r":
            await _swap(conn, statements, table)
            return True
    return False


async def _swap(conn: asyncpg.Connection, statements: sql.Statements, table: str) -> None:
    """``table`` (plain, its bound validated) becomes the first partition of a new
    partitioned ``table`` with the same columns, defaults, checks, indexes, foreign keys,
    comments and names. Catalog changes only: the validated bound lets ATTACH skip its
    scan, the existing indexes become the parent's index partitions (none is built), and
    the existing foreign keys, already pointing where the parent's do, are adopted
    without being checked again. ACCESS EXCLUSIVE on the table, for an instant."""
    parts = sql.partitions_schema(statements.schema)
    name = sql.quote_ident(table)
    initial = f"{sql.quote_ident(parts)}.{sql.quote_ident(initial_name(table))}"
    bound = await conn.fetchrow(_BOUND, table, bound_name(table))
    if bound is None or not bound["convalidated"]:
        raise RuntimeError(f"{table} has no validated {bound_name(table)}; its earlier steps did not run")
    first_free = int(_BOUND_VALUE.search(bound["def"]).group(1))
    comment = await conn.fetchval(_TABLE_COMMENT, table)
    foreign_keys = await conn.fetch(_FOREIGN_KEYS, table)

    await conn.execute(f"ALTER TABLE {name} RENAME TO {sql.quote_ident(initial_name(table))}")
    await conn.execute(
        f"ALTER TABLE {sql.quote_ident(initial_name(table))} SET SCHEMA {sql.quote_ident(parts)}"
    )
    await conn.execute(
        f"CREATE TABLE {name} (LIKE {initial} INCLUDING ALL) PARTITION BY RANGE (block_height)"
    )
    await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {sql.quote_ident(bound_name(table))}")
    for fk in foreign_keys:
        await conn.execute(f"ALTER TABLE {name} ADD CONSTRAINT {sql.quote_ident(fk['conname'])} {fk['def']}")
    await conn.execute(
        f"ALTER TABLE {name} ATTACH PARTITION {initial} FOR VALUES FROM (MINVALUE) TO ({first_free})"
    )
    await conn.execute(f"ALTER TABLE {initial} DROP CONSTRAINT {sql.quote_ident(bound_name(table))}")
    # LIKE names the parent's indexes after their columns; give them the old names.
    pairs = [(row["parent"], row["child"]) for row in await conn.fetch(_INDEX_PAIRS, initial)]
    for i, (parent, child) in enumerate(pairs):
        if parent != child:
            await conn.execute(f"ALTER INDEX {sql.quote_ident(parent)} RENAME TO {sql.quote_ident(f'gnosync_tmp_{i}')}")
    for i, (parent, child) in enumerate(pairs):
        if parent != child:
            await conn.execute(f"ALTER INDEX {sql.quote_ident(f'gnosync_tmp_{i}')} RENAME TO {sql.quote_ident(child)}")
    if comment is not None:
        await conn.execute(await conn.fetchval(_COMMENT_ON_TABLE, table, comment))


STEPS = (add_bounds, validate_bound, swap_transactions, validate_foreign_key, swap_derived)
