"""The decoded tables in the store: written with each commit in its transaction, kept
right by repair and ``gnosync rederive``, and migration 0004's rewrite of stored rows.

Chains are built here (tests/factory.py) with the transaction shapes the decoder reads,
so that GRC20 transfers, mints and burns are certain to be there; the devnet tests are
in tests/test_rederive.py.
"""

from __future__ import annotations

import json

import asyncpg
import msgspec
import pytest

from gnosync.decode import DECODER_VERSION, package_address, split_files
from gnosync.errors import ConfigError, StoreError
from gnosync.model import Batch
from gnosync.store import Store, sql
from gnosync.store.migrate import apply_migrations, load_migrations
from gnosync.store.rows import block_row, transaction_row
from gnosync.sync.rederive import bring_up_to_date, rederive

from .factory import make_chain

ALICE, BOB, CAROL = (package_address(f"gno.land/r/test/{who}") for who in ("alice", "bob", "carol"))
FOO = "gno.land/r/demo/foo20"
TOKEN = f"{FOO}.FOO"


def _tx(tx, messages: list, events: list, *, success: bool = True):
    return msgspec.structs.replace(
        tx,
        success=success,
        messages=msgspec.Raw(json.dumps(messages).encode()),
        response=msgspec.Raw(json.dumps({"log": "", "info": "", "error": "", "data": "", "events": events}).encode()),
    )


def transfer(frm: str, to: str, value: int) -> dict:
    return {"__typename": "GnoEvent", "type": "Transfer", "pkg_path": FOO, "attrs": [
        {"key": "token", "value": TOKEN}, {"key": "from", "value": frm},
        {"key": "to", "value": to}, {"key": "value", "value": str(value)}]}


def call(caller: str) -> dict:
    return {"typeUrl": "exec", "route": "vm", "value": {
        "__typename": "MsgCall", "caller": caller, "send": "", "max_deposit": "",
        "pkg_path": FOO, "func": "Transfer", "args": ["x"]}}


def add_package(creator: str, path: str, files: dict[str, str]) -> dict:
    return {"typeUrl": "add_package", "route": "vm", "value": {
        "__typename": "MsgAddPackage", "creator": creator, "deposit": "", "send": "1ugnot",
        "max_deposit": "", "package": {"name": path.rsplit("/", 1)[-1], "path": path,
                                       "files": [{"name": n, "body": b} for n, b in files.items()]}}}


def chain(start: int, end: int, previous=None) -> tuple[Batch, object]:
    """Heights ``start..end``, two transactions on every third one: a token transfer
    (a mint at the start), and on some heights a package deployment or a failed call."""
    counts = {h: 2 for h in range(start, end + 1) if h % 3 == 0}
    batch, last = make_chain(start, end, counts, previous)
    txs = []
    for tx in batch.transactions:
        h = tx.block_height
        if tx.index == 0:
            event = transfer("", ALICE, 1_000_000) if h == 0 else transfer(ALICE, BOB if h % 2 else CAROL, h)
            txs.append(_tx(tx, [call(ALICE)], [event]))
        elif h % 9 == 0:
            path = f"gno.land/r/test/p{h}"
            files = {"p.gno": f"package p{h}\n// é {h}\n", "README.md": "# readme\n"}
            txs.append(_tx(tx, [add_package(BOB, path, files)], []))
        else:
            txs.append(_tx(tx, [call(BOB)], [transfer(BOB, ALICE, 5)], success=False))
    return Batch(batch.start, batch.end, batch.blocks, txs), last


async def connected(dsn: str, **options) -> Store:
    store = await Store.connect(dsn, **options)
    await store.migrate()
    return store


async def state(store: Store) -> tuple[int, int | None]:
    got = await store.decoder_state()
    return got.version, got.derived_to


COLUMNS = {"decoder_state": "(x.version, x.derived_to)"}  # not when it was written


async def rows_of(dsn: str, *tables: str) -> dict[str, list[str]]:
    """Every row of ``tables``, as text, sorted: equal contents compare equal."""
    conn = await asyncpg.connect(dsn)
    try:
        return {t: [r[0] for r in await conn.fetch(f"SELECT {COLUMNS.get(t, 'x')}::text FROM indexer.{t} x ORDER BY 1")]
                for t in tables}
    finally:
        await conn.close()


async def query(dsn: str, statement: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


DERIVED = (*sql.DERIVED_TABLES, "package_files")

# Every balance equals the sum of its transfers (received minus sent), and the other way.
BALANCES_OFF = """
SELECT coalesce(b.token, s.token), coalesce(b.address, s.address), b.balance, s.sum
  FROM indexer.grc20_balances b
  FULL JOIN (SELECT token, address, sum(delta) AS sum FROM (
      SELECT token, to_address AS address, amount AS delta FROM indexer.grc20_transfers WHERE to_address IS NOT NULL
      UNION ALL
      SELECT token, from_address, -amount FROM indexer.grc20_transfers WHERE from_address IS NOT NULL) d
      GROUP BY token, address) s ON s.token = b.token AND s.address = b.address
 WHERE b.balance IS DISTINCT FROM s.sum AND NOT (s.sum IS NULL AND b.balance = 0)
"""


async def test_a_commit_writes_the_derived_rows_and_package_files(db_dsn):
    store = await connected(db_dsn)
    try:
        first, ref = chain(0, 30)
        await store.commit_batch(first, chain_id="dev", status="syncing")
        second, _ = chain(31, 60, ref)
        await store.commit_batch(second, chain_id="dev", status="syncing")
        assert await state(store) == (DECODER_VERSION, 60)
    finally:
        await store.close()
    txs = len(first.transactions) + len(second.transactions)
    (counts,) = await query(db_dsn, "SELECT (SELECT count(*) FROM indexer.messages) AS messages,"
                            " (SELECT count(*) FROM indexer.events) AS events,"
                            " (SELECT count(*) FROM indexer.packages) AS packages,"
                            " (SELECT count(*) FROM indexer.package_files) AS files,"
                            " (SELECT count(*) FROM indexer.grc20_transfers) AS transfers")
    deployments = len([h for h in range(0, 61) if h % 9 == 0])
    assert counts["messages"] == txs
    assert counts["packages"] == deployments and counts["files"] == 2 * deployments
    # One transfer per height with transactions (the failed ones move nothing).
    assert counts["transfers"] == len([h for h in range(0, 61) if h % 3 == 0])
    assert await query(db_dsn, BALANCES_OFF) == []
    (alice,) = await query(db_dsn, "SELECT balance FROM indexer.grc20_balances WHERE address = $1", ALICE)
    # BOB's transfers to ALICE all failed: ALICE only sent.
    assert alice["balance"] == 1_000_000 - sum(range(3, 61, 3))
    (token,) = await query(db_dsn, "SELECT pkg_path, first_height FROM indexer.grc20_tokens")
    assert tuple(token) == (FOO, 0)
    # The stored messages keep each file's name and size; package_files has the body.
    (row,) = await query(db_dsn, "SELECT messages::text FROM indexer.transactions WHERE block_height = 9 AND tx_index = 1")
    files = json.loads(row[0])[0]["value"]["package"]["files"]
    body = "package p9\n// é 9\n"
    assert files == [{"name": "p.gno", "size": len(body.encode())}, {"name": "README.md", "size": 9}]
    (stored,) = await query(db_dsn, "SELECT body FROM indexer.package_files WHERE block_height = 9 AND name = 'p.gno'")
    assert stored["body"] == body
    (package,) = await query(db_dsn, "SELECT creator, file_count, bytes, address FROM indexer.packages WHERE block_height = 9")
    assert tuple(package) == (BOB, 2, len(body.encode()) + 9, package_address("gno.land/r/test/p9"))


async def test_a_failed_commit_leaves_no_derived_row(db_dsn):
    store = await connected(db_dsn)
    try:
        first, ref = chain(0, 30)
        await store.commit_batch(first, chain_id="dev", status="syncing")
        before = await rows_of(db_dsn, *DERIVED, "decoder_state")
        # The last statement of the commit (app_state's upsert) fails.
        await query(db_dsn, "CREATE FUNCTION indexer.refuse() RETURNS trigger LANGUAGE plpgsql"
                    " AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$")
        await query(db_dsn, "CREATE TRIGGER refuse BEFORE UPDATE ON indexer.app_state"
                    " FOR EACH ROW EXECUTE FUNCTION indexer.refuse()")
        second, _ = chain(31, 60, ref)
        with pytest.raises(StoreError, match="refused"):
            await store.commit_batch(second, chain_id="dev", status="syncing")
    finally:
        await store.close()
    assert await rows_of(db_dsn, *DERIVED, "decoder_state") == before


async def test_derive_none_writes_package_files_and_no_derived_row(db_dsn):
    store = await connected(db_dsn, derive="none")
    try:
        batch, _ = chain(0, 30)
        await store.commit_batch(batch, chain_id="dev", status="syncing")
        assert await state(store) == (DECODER_VERSION, None)
    finally:
        await store.close()
    tables = await rows_of(db_dsn, *DERIVED)
    assert len(tables.pop("package_files")) == 2 * len([h for h in range(0, 31) if h % 9 == 0])
    assert all(rows == [] for rows in tables.values()), tables


async def test_rederive_of_a_range_is_idempotent_and_balances_stay_the_sum_of_transfers(db_dsn):
    store = await connected(db_dsn)
    try:
        ref = None
        for start in range(0, 120, 40):
            batch, ref = chain(start, start + 39, ref)
            await store.commit_batch(batch, chain_id="dev", status="syncing")
        before = await rows_of(db_dsn, *DERIVED, "decoder_state")
        for _ in range(2):
            done = await rederive(store, 20, 70, batch_size=7, batch_txs=5)
            assert (done.start, done.end) == (20, 70) and done.batches > 3
            assert await rows_of(db_dsn, *DERIVED, "decoder_state") == before
        assert await query(db_dsn, BALANCES_OFF) == []
        # A range from emptied rows (derived_to stays: the rows below were there).
        await query(db_dsn, "DELETE FROM indexer.grc20_transfers WHERE block_height BETWEEN 30 AND 40")
        await query(db_dsn, "DELETE FROM indexer.messages WHERE block_height BETWEEN 30 AND 40")
        await rederive(store, 30, 40)
        after = await rows_of(db_dsn, *DERIVED, "decoder_state")
        assert after["messages"] == before["messages"]
        assert after["grc20_transfers"] == before["grc20_transfers"]
        # The whole database, from emptied tables: the same rows, package files untouched.
        await query(db_dsn, "TRUNCATE " + ", ".join(f"indexer.{t}" for t in sql.DERIVED_TABLES))
        await query(db_dsn, "UPDATE indexer.decoder_state SET derived_to = NULL")
        done = await rederive(store, batch_txs=13)
        assert (done.start, done.end) == (0, 119)
        assert await rows_of(db_dsn, *DERIVED, "decoder_state") == before
    finally:
        await store.close()


async def test_replace_range_keeps_the_derived_rows_and_balances_right(db_dsn):
    store = await connected(db_dsn)
    try:
        first, ref = chain(0, 59)
        await store.commit_batch(first, chain_id="dev", status="syncing")
        before = await rows_of(db_dsn, *DERIVED, "decoder_state")
        again, _ = chain(0, 59)
        middle = Batch(
            18, 40, [b for b in again.blocks if 18 <= b.height <= 40],
            [t for t in again.transactions if 18 <= t.block_height <= 40],
        )
        await store.replace_range(middle, chain_id="dev")
        assert await rows_of(db_dsn, *DERIVED, "decoder_state") == before
        # Replaced without deriving: the range's rows are gone, derived_to falls below it,
        # and the balances lose its transfers, so they stay the sum of those stored.
        raw = await Store.connect(db_dsn, derive="none")
        try:
            await raw.replace_range(middle, chain_id="dev")
            assert await state(raw) == (DECODER_VERSION, 17)
        finally:
            await raw.close()
        assert await query(db_dsn, "SELECT 1 FROM indexer.messages WHERE block_height BETWEEN 18 AND 40") == []
        assert await query(db_dsn, BALANCES_OFF) == []
        assert (await rows_of(db_dsn, "package_files"))["package_files"] == before["package_files"]
    finally:
        await store.close()


async def test_migration_0004_moves_file_bodies_out_of_stored_messages(db_dsn):
    """A database at schema 3, whose messages hold file bodies inline, migrated: the
    bodies are in package_files and the messages are what split_files makes of them."""
    batch, _ = chain(0, 40)
    # Two files of one name (the first is split out), and a name that is not a string.
    message = add_package(BOB, "gno.land/r/test/dup", {})
    message["value"]["package"]["files"] = [
        {"name": "a.gno", "body": "twice"}, {"name": 7, "body": "odd"}, {"name": "a.gno", "body": "one"}]
    duplicate = msgspec.structs.replace(batch.transactions[1], messages=msgspec.Raw(json.dumps([message]).encode()))
    txs = [duplicate, *batch.transactions[2:]]
    conn = await asyncpg.connect(db_dsn)
    try:
        await apply_migrations(conn, sql.Statements("indexer"), load_migrations()[:3])
        await conn.copy_records_to_table("blocks", records=[block_row(b) for b in batch.blocks],
                                         columns=sql.BLOCK_COLUMNS, schema_name="indexer")
        old_rows = [transaction_row(tx) for tx in txs]
        await conn.copy_records_to_table("transactions", records=old_rows,
                                         columns=sql.TRANSACTION_COLUMNS, schema_name="indexer")
    finally:
        await conn.close()
    store = await connected(db_dsn)
    try:
        # Stored rows, never derived: version 0 until a re-derivation.
        assert await state(store) == (0, None)
    finally:
        await store.close()
    stored = {(r[0], r[1]): json.loads(r[2]) for r in await query(
        db_dsn, "SELECT block_height, tx_index, messages::text FROM indexer.transactions")}
    files = sorted(tuple(r) for r in await query(
        db_dsn, "SELECT block_height, tx_index, msg_index, name, body FROM indexer.package_files"))
    expected_files = []
    for row in old_rows:
        messages, rows = split_files(row[0], row[1], row[10])
        assert stored[(row[0], row[1])] == json.loads(messages)
        expected_files.extend(rows)
    assert files == sorted(expected_files)
    assert len(files) == 2 * len([h for h in range(1, 41) if h % 9 == 0]) + 1
    dup = stored[(duplicate.block_height, duplicate.index)][0]["value"]["package"]["files"]
    assert dup == [{"name": "a.gno", "size": 5}, {"name": 7, "body": "odd"}, {"name": "a.gno", "body": "one"}]


async def test_heights_stored_without_derivation_are_derived_before_more_are(db_dsn):
    raw = await connected(db_dsn, derive="none")
    try:
        first, ref = chain(0, 30)
        await raw.commit_batch(first, chain_id="dev", status="syncing")
    finally:
        await raw.close()
    store = await connected(db_dsn)
    try:
        # Rows derived above a hole do not claim the heights below.
        second, _ = chain(31, 60, ref)
        await store.commit_batch(second, chain_id="dev", status="syncing")
        assert await state(store) == (DECODER_VERSION, None)
        await store.require_writer()
        done = await bring_up_to_date(store, batch_txs=10)
        assert (done.start, done.end) == (0, 60)
        assert await state(store) == (DECODER_VERSION, 60)
        assert await bring_up_to_date(store) is None
        messages = await query(db_dsn, "SELECT count(*) FROM indexer.messages")
        assert messages[0][0] == len(first.transactions) + len(second.transactions)
        assert await query(db_dsn, BALANCES_OFF) == []
        # A range cannot be re-derived over tables of another decoder version.
        await query(db_dsn, "UPDATE indexer.decoder_state SET version = 0")
        with pytest.raises(ConfigError, match="re-derive them all"):
            await rederive(store, 10, 20)
    finally:
        await store.close()
