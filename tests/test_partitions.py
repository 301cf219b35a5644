"""Partitioned tables: the in-place conversion of a populated schema (migration 0005),
and the partitions gnosync creates in the commit that first reaches their heights."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import msgspec
import pytest

from gnosync.errors import StoreError
from gnosync.store import Store, sql
from gnosync.store.migrate import apply_migrations, load_migrations
from gnosync.store.partitions import Coverage, merge, missing, parse_bound

from .factory import make_chain

CHAIN = "dev"
PARTITIONED = sql.PARTITIONED_TABLES


async def _query(dsn: str, query: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def partitions(dsn: str, table: str, schema: str = "indexer") -> list[tuple[str, str]]:
    """(partition, bound) of ``schema.table``, from pg_inherits, in name order."""
    rows = await _query(
        dsn,
        "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = (quote_ident($1) || '.' || quote_ident($2))::regclass ORDER BY 1",
        schema, table,
    )
    return [(r["name"], r["bound"]) for r in rows]


async def shape(dsn: str) -> dict:
    """What the conversion must keep: the top-level constraints of every table of the
    schema (name, table, definition), its index names and each table's row count."""
    constraints = await _query(
        dsn,
        "SELECT conname::text, conrelid::regclass::text AS tab, pg_get_constraintdef(oid) AS def"
        " FROM pg_constraint WHERE connamespace = 'indexer'::regnamespace AND conparentid = 0"
        " AND contype <> 'n'",
    )
    indexes = await _query(dsn, "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'indexer'")
    counts = {}
    for table in (*PARTITIONED, "blocks", "package_files", "coin_transfers", "packages"):
        counts[table] = (await _query(dsn, f"SELECT count(*) FROM indexer.{table}"))[0][0]
    return {
        "constraints": {(r["conname"], r["tab"], r["def"]) for r in constraints},
        "indexes": {r["indexname"] for r in indexes},
        "counts": counts,
    }


async def migrate_to(dsn: str, migrations) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn, sql.Statements("indexer"), migrations)
    finally:
        await conn.close()


# Rows the factory's transactions do not derive (their messages are derived by the commit).
DERIVED_ROWS = """
INSERT INTO indexer.events (block_height, tx_index, event_index, kind, type, pkg_path, attrs)
SELECT block_height, tx_index, 0, 'GnoEvent', 'Transfer', 'gno.land/r/x', '[]' FROM indexer.transactions;
INSERT INTO indexer.tx_accounts (address, block_height, tx_index, role)
SELECT 'g1a', block_height, tx_index, 'sender' FROM indexer.transactions;
INSERT INTO indexer.package_files (block_height, tx_index, msg_index, name, body)
SELECT block_height, tx_index, 0, 'a.gno', 'package a' FROM indexer.transactions;
INSERT INTO indexer.coin_transfers (block_height, tx_index, msg_index, coin_index, from_address,
    to_address, denom, amount, source)
SELECT block_height, tx_index, 0, 0, 'g1a', 'g1b', 'ugnot', 5, 'send' FROM indexer.transactions;
"""


async def test_a_populated_schema_is_converted_in_place_and_keeps_every_row_and_rule(db_dsn):
    migrations = load_migrations()
    assert migrations[-1].name == "0005_partitioned" and migrations[-1].steps
    await migrate_to(db_dsn, migrations[:4])
    store = await Store.connect(db_dsn)
    try:
        batch, _ = make_chain(0, 40, {h: 1 + h % 3 for h in range(1, 41)})
        await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute(DERIVED_ROWS)
        finally:
            await conn.close()
        before = await shape(db_dsn)

        # Stopped after the swap of transactions, before its foreign keys are validated:
        # the next migration carries on from there.
        async def stop(conn, statements):
            raise RuntimeError("stopped")

        interrupted = dataclasses.replace(migrations[4], steps=(*migrations[4].steps[:3], stop))
        with pytest.raises(RuntimeError, match="stopped"):
            await migrate_to(db_dsn, [*migrations[:4], interrupted])
        assert (await partitions(db_dsn, "transactions"))[0][0] == "transactions_initial"
        assert await partitions(db_dsn, "messages") == []  # still a plain table
        assert await store.migrate() == ["0005_partitioned"]
        assert await store.migrate() == []

        after = await shape(db_dsn)
        assert after == before
        for table in PARTITIONED:
            assert await partitions(db_dsn, table) == [
                (f"{table}_initial", "FOR VALUES FROM (MINVALUE) TO ('41')")
            ]
        invalid = await _query(
            db_dsn,
            "SELECT conname FROM pg_constraint WHERE connamespace = 'indexer'::regnamespace"
            " AND conparentid = 0 AND NOT convalidated",
        )
        assert invalid == []

        conn = await asyncpg.connect(db_dsn)
        try:
            # Duplicates are still refused, through the parents.
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO indexer.messages (block_height, tx_index, msg_index, type_url,"
                    " route, kind, success) VALUES (5, 0, 0, 't', 'r', 'k', true)"
                )
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO indexer.transactions SELECT * FROM indexer.transactions LIMIT 1"
                )
            # Foreign keys still refuse rows without their transaction.
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute(
                    "INSERT INTO indexer.events (block_height, tx_index, event_index, kind)"
                    " VALUES (5, 7, 0, 'GnoEvent')"
                )
            # Deleting blocks still cascades to the tables whose foreign keys say so.
            await conn.execute("DELETE FROM indexer.blocks WHERE height BETWEEN 10 AND 19")
            for table in ("transactions", "messages", "events", "package_files"):
                left = await conn.fetchval(
                    f"SELECT count(*) FROM indexer.{table} WHERE block_height BETWEEN 10 AND 19"
                )
                assert left == 0, table
        finally:
            await conn.close()

        # The next batch needs partitions above the converted rows; they are created.
        more, _ = make_chain(41, 45, {41: 2}, previous=None)
        await store.replace_range(more, chain_id=CHAIN)
        assert [name for name, _ in await partitions(db_dsn, "transactions")] == [
            "transactions_initial", "transactions_p000000000041",
        ]
    finally:
        await store.close()


async def test_partitions_are_created_in_the_commit_that_reaches_them(db_dsn):
    store = await Store.connect(db_dsn, partition_size=100)
    try:
        await store.migrate()
        # A fresh schema: the converted tables were empty, their partitions hold < 0.
        assert await partitions(db_dsn, "transactions") == [
            ("transactions_initial", "FOR VALUES FROM (MINVALUE) TO ('0')")
        ]
        first, ref = make_chain(0, 149, {h: 1 for h in range(1, 150)})
        await store.commit_batch(first, chain_id=CHAIN, status="syncing")
        second, ref = make_chain(150, 260, {h: 2 for h in range(150, 261)}, previous=ref)
        await store.commit_batch(second, chain_id=CHAIN, status="syncing")
        for table in PARTITIONED:
            assert await partitions(db_dsn, table) == [
                (f"{table}_initial", "FOR VALUES FROM (MINVALUE) TO ('0')"),
                (f"{table}_p000000000000", "FOR VALUES FROM ('0') TO ('100')"),
                (f"{table}_p000000000100", "FOR VALUES FROM ('100') TO ('200')"),
                (f"{table}_p000000000200", "FOR VALUES FROM ('200') TO ('300')"),
            ]
        rows = await _query(
            db_dsn, "SELECT count(*) FROM indexer_partitions.transactions_p000000000100"
        )
        assert rows[0][0] == 50 + 50 * 2  # heights 100..149 hold one each, 150..199 two
        # A failed commit leaves no partition behind: it was created in its transaction.
        bad, _ = make_chain(261, 420, {300: 2}, previous=ref)
        bad.transactions[-1] = msgspec.structs.replace(bad.transactions[-1], index=0)
        with pytest.raises(StoreError):
            await store.commit_batch(bad, chain_id=CHAIN, status="syncing")
        assert len(await partitions(db_dsn, "transactions")) == 4
        good, ref = make_chain(261, 420, {300: 2}, previous=ref)
        await store.commit_batch(good, chain_id=CHAIN, status="syncing")
        assert [name for name, _ in await partitions(db_dsn, "events")][-2:] == [
            "events_p000000000300", "events_p000000000400",
        ]
        # A repair at old heights replaces rows across two partitions.
        old, _ = make_chain(90, 110, {h: 3 for h in range(90, 111)})
        await store.replace_range(old, chain_id=CHAIN)
        rows = await _query(
            db_dsn, "SELECT count(*) FROM indexer.transactions WHERE block_height BETWEEN 90 AND 110"
        )
        assert rows[0][0] == 21 * 3
    finally:
        await store.close()


async def test_readers_do_not_wait_for_a_new_partition(db_dsn):
    store = await Store.connect(db_dsn, partition_size=10)
    reader = await asyncpg.connect(db_dsn)
    try:
        await store.migrate()
        batch, ref = make_chain(0, 9, {1: 1})
        await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
        # A long read holds ACCESS SHARE on every table it reads.
        async with reader.transaction(isolation="repeatable_read", readonly=True):
            await reader.fetchval(
                "SELECT count(*) FROM indexer.transactions t JOIN indexer.messages m"
                " USING (block_height, tx_index)"
            )
            more, _ = make_chain(10, 35, {12: 1, 33: 1}, previous=ref)
            await asyncio.wait_for(
                store.commit_batch(more, chain_id=CHAIN, status="syncing"), timeout=60
            )
        assert len(await partitions(db_dsn, "tx_accounts")) == 5
    finally:
        await reader.close()
        await store.close()


def test_partition_ranges():
    assert parse_bound("FOR VALUES FROM (MINVALUE) TO ('41')") == (-(2**63), 41)
    assert parse_bound("FOR VALUES FROM ('100') TO ('200')") == (100, 200)
    assert parse_bound("DEFAULT") is None
    assert merge([(5, 9), (0, 5), (20, 30)]) == ((0, 9), (20, 30))
    # Aligned slots, less what exists (a converted table, or another size).
    assert missing(((-(2**63), 41),), 30, 250, 100) == [(41, 100), (100, 200), (200, 300)]
    assert missing(((0, 100),), 0, 99, 100) == []
    assert missing(((100, 150),), 120, 180, 100) == [(150, 200)]
    assert missing((), 250, 250, 100) == [(200, 300)]
    assert Coverage(((0, 100),)).covers(0, 99) and not Coverage(((0, 100),)).covers(50, 100)
