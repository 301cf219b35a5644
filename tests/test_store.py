"""gnosync.store against a real PostgreSQL: schema, the batch write path, state, errors."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest

from gnosync.errors import BatchInvalid, ConfigError, StoreError
from gnosync.store import (
    NotTheWriter,
    Store,
    SyncState,
    block_row,
    checkpoint_checksum,
    describe_dsn,
    redact_dsn,
    start_embedded,
    stop_embedded,
    transaction_row,
)
from gnosync.store import sql
from gnosync.store.dsn import to_uri
from gnosync.store.migrate import load_migrations, lock_key
from gnosync.model import (
    Batch,
    Block,
    BlockTransaction,
    Coin,
    Transaction,
    format_time,
    parse_time,
)

CHAIN = "test-chain"
MIGRATIONS = ["0001_initial", "0002_checkpoints", "0003_sanitized_shared_hashes", "0004_decoded", "0005_partitioned"]


# -- building batches by hand --------------------------------------------------------------


def block_hash(height: int) -> str:
    # tx-indexer serves the genesis block with an empty hash.
    return "" if height == 0 else f"hash-{height:08d}"


def tx_hash(height: int, index: int) -> str:
    return f"tx-{height:08d}-{index}"


def block_time(height: int) -> str:
    # Nanoseconds below the microsecond on odd heights, a whole second on multiples of 5.
    if height % 5 == 0:
        return f"2024-03-01T10:{height % 60:02d}:00Z"
    return f"2024-03-01T10:{height % 60:02d}:{height % 60:02d}.{height % 1_000_000_000:09d}Z"


def make_tx(height: int, index: int, *, fee: bool = True, hash: str | None = None) -> Transaction:
    messages = json.dumps(
        [
            {
                "typeUrl": "exec",
                "route": "vm",
                "value": {
                    "__typename": "MsgCall",
                    "caller": "g1caller",
                    "send": "",
                    "pkg_path": "gno.land/r/demo/boards",
                    "func": "CreateThread",
                    "args": ["1", f"title {height}/{index}", 'body with "quotes", é and \\ \n'],
                    "max_deposit": "",
                },
            }
        ]
    ).encode()
    response = json.dumps(
        {
            "log": "msg:0,success:true",
            "info": "",
            "error": None,
            "data": "AAE=",
            "events": [
                {
                    "__typename": "GnoEvent",
                    "type": "ThreadCreated",
                    "pkg_path": "gno.land/r/demo/boards",
                    "attrs": [{"key": "id", "value": str(index)}],
                },
                {"__typename": "UnknownEvent", "value": {"big": 123456789012345678901234567890}},
            ],
        }
    ).encode()
    return Transaction(
        index=index,
        hash=hash or tx_hash(height, index),
        success=index % 3 != 2,
        block_height=height,
        gas_wanted=2_000_000 + index,
        gas_used=1_500_000 + height,
        gas_fee=Coin(amount=1_000_000 + index, denom="ugnot") if fee else None,
        content_raw=f"CgRjb250ZW50{height}x{index}",
        memo=f"memo {height}" if index == 0 else "",
        messages=msgspec.Raw(messages),
        response=msgspec.Raw(response),
    )


def make_block(height: int, txs: list[Transaction], total_before: int) -> Block:
    return Block(
        hash=block_hash(height),
        height=height,
        version="v1.0.0",
        chain_id=CHAIN,
        time=block_time(height),
        num_txs=len(txs),
        total_txs=total_before + len(txs),
        app_version="app-1",
        last_block_hash=block_hash(height - 1) if height > 0 else "",
        last_commit_hash=f"commit-{height}",
        validators_hash="validators",
        next_validators_hash="validators",
        consensus_hash="consensus",
        app_hash=f"app-{height}",
        last_results_hash=f"results-{height}",
        proposer_address_raw="g1proposer",
        txs=[
            BlockTransaction(hash=tx.hash)
            for tx in txs
        ],
    )


def make_batch(start: int, end: int, *, txs_per_block=lambda h: h % 3, fee=True) -> Batch:
    blocks: list[Block] = []
    transactions: list[Transaction] = []
    total = 0
    for height in range(start, end + 1):
        txs = [make_tx(height, i, fee=fee and i % 2 == 0) for i in range(txs_per_block(height))]
        blocks.append(make_block(height, txs, total))
        total += len(txs)
        transactions.extend(txs)
    return Batch(start=start, end=end, blocks=blocks, transactions=transactions)


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
async def store(db_dsn: str):
    s = await Store.connect(db_dsn)
    await s.migrate()
    yield s
    await s.close()


async def fetch(dsn: str, query: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def snapshot(dsn: str, schema: str = "indexer"):
    """Everything gnosync stored, for before/after comparisons."""
    return (
        [tuple(r) for r in await fetch(dsn, f'SELECT * FROM "{schema}".blocks ORDER BY height')],
        [
            tuple(r)
            for r in await fetch(
                dsn, f'SELECT * FROM "{schema}".transactions ORDER BY block_height, tx_index'
            )
        ],
        [tuple(r) for r in await fetch(dsn, f'SELECT * FROM "{schema}".app_state')],
    )


async def counts(dsn: str) -> tuple[int, int, int]:
    rows = await fetch(
        dsn,
        "SELECT (SELECT count(*) FROM indexer.blocks), (SELECT count(*) FROM indexer.transactions),"
        " (SELECT count(*) FROM indexer.app_state)",
    )
    return tuple(rows[0])


async def wait_for_lock_wait(conn: asyncpg.Connection, timeout: float = 10.0) -> int:
    """The pid of gnosync's backend once it waits on a lock."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'gnosync'"
            " AND wait_event_type = 'Lock' AND datname = current_database()"
        )
        if pid is not None:
            return pid
        assert asyncio.get_running_loop().time() < deadline, "commit never waited on the lock"
        await asyncio.sleep(0.02)


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{hosts}"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- rows ---------------------------------------------------------------------------------


def test_block_row_follows_columns_and_keeps_nanoseconds():
    block = make_batch(7, 7).blocks[0]
    row = block_row(block)
    assert len(row) == len(sql.BLOCK_COLUMNS)
    values = dict(zip(sql.BLOCK_COLUMNS, row))
    assert values["height"] == 7
    assert values["hash"] == block.hash
    assert values["proposer_address"] == "g1proposer"
    assert isinstance(values["time"], datetime) and values["time"].tzinfo is not None
    assert values["time_ns"] == 7 % 1000
    assert format_time(values["time"], values["time_ns"]) == block.time


def test_block_row_rejects_bad_time():
    """A time tx-indexer cannot have formatted is bad data: retried, never stored."""
    block = msgspec.structs.replace(make_batch(1, 1).blocks[0], time="yesterday")
    with pytest.raises(BatchInvalid) as info:
        block_row(block)
    assert (info.value.height, info.value.check) == (1, "time")


def test_transaction_row_follows_columns():
    with_fee, without_fee = make_tx(3, 0, fee=True), make_tx(3, 1, fee=False)
    row = dict(zip(sql.TRANSACTION_COLUMNS, transaction_row(with_fee)))
    assert len(transaction_row(with_fee)) == len(sql.TRANSACTION_COLUMNS)
    assert (row["block_height"], row["tx_index"], row["hash"]) == (3, 0, tx_hash(3, 0))
    assert (row["gas_fee_amount"], row["gas_fee_denom"]) == (1_000_000, "ugnot")
    assert isinstance(row["messages"], str) and row["messages"] == bytes(with_fee.messages).decode()
    assert isinstance(row["response"], str)
    row = dict(zip(sql.TRANSACTION_COLUMNS, transaction_row(without_fee)))
    assert (row["gas_fee_amount"], row["gas_fee_denom"]) == (None, None)


def test_quote_ident_and_update_state_sql():
    assert sql.quote_ident('we"ird') == '"we""ird"'
    for bad in ("", "a\x00b", "x" * 64):
        with pytest.raises(ValueError):
            sql.quote_ident(bad)
    with pytest.raises(ValueError, match="unknown app_state column"):
        sql.Statements("indexer").update_state(["status", "component"])


# -- migrations ---------------------------------------------------------------------------


async def tables_in(dsn: str, schema: str) -> set[str]:
    rows = await fetch(
        dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    return {r["table_name"] for r in rows}


async def test_migrate_creates_tables_in_default_schema(db_dsn):
    store = await Store.connect(db_dsn)
    try:
        names = [m.name for m in load_migrations()]
        assert names[0] == "0001_initial"
        assert await store.migrate() == names
    finally:
        await store.close()
    assert await tables_in(db_dsn, "indexer") == {
        "blocks",
        "transactions",
        "app_state",
        "checkpoints",
        "schema_migrations",
        "decoder_state",
        "package_files",
        *sql.DERIVED_TABLES,
    }
    rows = await fetch(db_dsn, "SELECT indexname FROM pg_indexes WHERE schemaname = 'indexer'")
    indexes = {r["indexname"] for r in rows}
    assert "blocks_time_idx" in indexes
    rows = await fetch(db_dsn, "SELECT version, name, applied_at FROM indexer.schema_migrations")
    assert [(r["version"], r["name"]) for r in rows] == list(enumerate(MIGRATIONS, 1))
    assert rows[0]["applied_at"] is not None


async def test_migrate_custom_schema_with_odd_name(db_dsn):
    schema = 'Chain "B"; x'
    store = await Store.connect(db_dsn, schema=schema)
    try:
        assert await store.migrate() == MIGRATIONS
        await store.commit_batch(make_batch(0, 3), chain_id=CHAIN, status="syncing")
        assert await store.stored_bounds() == (0, 3)
        assert (await store.state.get_state()).last_block_h == 3
    finally:
        await store.close()
    tables = await tables_in(db_dsn, schema)
    assert {"blocks", "transactions", "app_state", "checkpoints", "schema_migrations"} <= tables
    assert await tables_in(db_dsn, "indexer") == set()
    # The search_path set for the migration did not leak into pooled connections.
    rows = await fetch(db_dsn, "SHOW search_path")
    assert rows[0][0] == '"$user", public'


async def test_migrate_is_idempotent(db_dsn):
    store = await Store.connect(db_dsn)
    try:
        assert await store.migrate() == MIGRATIONS
        assert await store.migrate() == []
        assert await store.migrate() == []
    finally:
        await store.close()
    assert len(await fetch(db_dsn, "SELECT * FROM indexer.schema_migrations")) == len(MIGRATIONS)


async def test_concurrent_migrations_apply_each_file_once(db_dsn):
    for schema in ("indexer", "other"):
        stores = [await Store.connect(db_dsn, schema=schema) for _ in range(4)]
        try:
            results = await asyncio.gather(*(s.migrate() for s in stores))
        finally:
            for s in stores:
                await s.close()
        # Each file is applied exactly once, by whichever process got to it first.
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(MIGRATIONS)
        rows = await fetch(db_dsn, f'SELECT version FROM "{schema}".schema_migrations')
        assert [r["version"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


async def test_migrate_refuses_a_schema_from_a_newer_gnosync(store, db_dsn):
    await fetch(
        db_dsn, "INSERT INTO indexer.schema_migrations (version, name) VALUES (9999, '9999_future')"
    )
    with pytest.raises(StoreError, match="newer gnosync") as info:
        await store.migrate()
    assert not info.value.retryable


def test_lock_key_is_stable_per_schema():
    assert lock_key("indexer") == lock_key("indexer")
    assert lock_key("indexer") != lock_key("other")
    assert -(2**63) <= lock_key("indexer") < 2**63


# -- commit_batch ---------------------------------------------------------------------------


async def test_commit_batch_round_trip_is_lossless(store, db_dsn):
    batch = make_batch(0, 12)
    assert any(tx.gas_fee is None for tx in batch.transactions)
    await store.commit_batch(batch, chain_id=CHAIN, status="syncing")

    rows = await fetch(db_dsn, "SELECT * FROM indexer.blocks ORDER BY height")
    assert len(rows) == len(batch.blocks)
    for row, block in zip(rows, batch.blocks):
        assert row["height"] == block.height
        assert row["hash"] == block.hash
        assert row["chain_id"] == block.chain_id
        assert format_time(row["time"], row["time_ns"]) == block.time
        assert (row["time"], row["time_ns"]) == parse_time(block.time)
        assert row["num_txs"] == block.num_txs and row["total_txs"] == block.total_txs
        for field in (
            "version",
            "app_version",
            "last_block_hash",
            "last_commit_hash",
            "validators_hash",
            "next_validators_hash",
            "consensus_hash",
            "app_hash",
            "last_results_hash",
        ):
            assert row[field] == getattr(block, field)
        assert row["proposer_address"] == block.proposer_address_raw
    assert rows[0]["hash"] == ""  # genesis

    rows = await fetch(db_dsn, "SELECT * FROM indexer.transactions ORDER BY block_height, tx_index")
    assert len(rows) == len(batch.transactions) > 0
    for row, tx in zip(rows, batch.transactions):
        assert row["block_height"] == tx.block_height and row["tx_index"] == tx.index
        assert row["hash"] == tx.hash
        assert row["success"] is tx.success
        assert (row["gas_wanted"], row["gas_used"]) == (tx.gas_wanted, tx.gas_used)
        if tx.gas_fee is None:
            assert row["gas_fee_amount"] is None and row["gas_fee_denom"] is None
        else:
            assert row["gas_fee_amount"] == tx.gas_fee.amount
            assert row["gas_fee_denom"] == tx.gas_fee.denom
        assert row["memo"] == tx.memo and row["content_raw"] == tx.content_raw
        assert json.loads(row["messages"]) == json.loads(bytes(tx.messages))
        assert json.loads(row["response"]) == json.loads(bytes(tx.response))


async def test_commit_batch_sets_app_state(store):
    before = datetime.now(timezone.utc)
    await store.state.record_error("boom")
    batch = make_batch(0, 5)
    await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    state = await store.state.get_state()
    assert isinstance(state, SyncState)
    assert state.component == "block_sync"
    assert state.last_block_h == 5
    assert state.last_block_hash == block_hash(5)
    assert state.last_tx_hash == batch.last_tx_hash == batch.transactions[-1].hash
    assert state.status == "syncing"
    assert state.error_count == 0 and state.last_error is None
    assert state.chain_id == CHAIN
    assert state.last_sync_time >= before and state.updated_at >= before

    # At the top, without transactions: the last tx hash stays.
    empty = make_batch(6, 8, txs_per_block=lambda h: 0)
    await store.commit_batch(empty, chain_id=CHAIN, status="synced")
    state = await store.state.get_state()
    assert (state.last_block_h, state.last_block_hash) == (8, block_hash(8))
    assert state.last_tx_hash == batch.last_tx_hash
    assert state.status == "synced"


async def test_prepended_batch_does_not_move_the_top(store):
    top = make_batch(20, 25)
    await store.commit_batch(top, chain_id=CHAIN, status="syncing")
    below = make_batch(10, 19, txs_per_block=lambda h: 2)
    await store.commit_batch(below, chain_id=CHAIN, status="synced")
    state = await store.state.get_state()
    assert state.last_block_h == 25
    assert state.last_block_hash == block_hash(25)
    assert state.last_tx_hash == top.last_tx_hash
    assert state.status == "synced"
    assert await store.stored_bounds() == (10, 25)


async def test_duplicate_commit_raises_and_changes_nothing(store, db_dsn):
    batch = make_batch(0, 6)
    await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    before = await snapshot(db_dsn)

    with pytest.raises(StoreError) as info:
        await store.commit_batch(batch, chain_id=CHAIN, status="synced")
    assert not info.value.retryable
    assert "23505" in str(info.value) and "\n" not in str(info.value)

    # New heights, but one of them repeats a stored block hash.
    overlapping = make_batch(7, 9)
    overlapping.blocks[1] = msgspec.structs.replace(overlapping.blocks[1], hash=block_hash(3))
    with pytest.raises(StoreError, match="23505"):
        await store.commit_batch(overlapping, chain_id=CHAIN, status="synced")

    assert await snapshot(db_dsn) == before
    # The store is usable afterwards.
    await store.commit_batch(make_batch(7, 9), chain_id=CHAIN, status="synced")
    assert await store.stored_bounds() == (0, 9)


async def test_a_transaction_hash_may_be_stored_at_two_heights(store, db_dsn):
    """Byte-identical transactions (unsigned genesis ones) share a hash: both are kept,
    and the hash stays indexed."""
    first = make_batch(0, 6, txs_per_block=lambda h: 1)
    await store.commit_batch(first, chain_id=CHAIN, status="syncing")
    repeat = make_batch(7, 9, txs_per_block=lambda h: 1)
    repeat.transactions[2] = msgspec.structs.replace(repeat.transactions[2], hash=first.transactions[0].hash)
    await store.commit_batch(repeat, chain_id=CHAIN, status="synced")
    rows = await fetch(
        db_dsn,
        "SELECT block_height FROM indexer.transactions WHERE hash = $1 ORDER BY block_height",
        first.transactions[0].hash,
    )
    assert [r["block_height"] for r in rows] == [first.transactions[0].block_height, 9]
    rows = await fetch(
        db_dsn,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'indexer' AND tablename = 'transactions'",
    )
    definitions = [r["indexdef"] for r in rows]
    assert any(d.endswith("USING btree (hash)") and "UNIQUE" not in d for d in definitions), definitions


async def test_failing_second_copy_stores_nothing(store, db_dsn):
    batch = make_batch(0, 9, txs_per_block=lambda h: 2)
    # The last transaction takes the one before's place: the transactions' COPY fails.
    batch.transactions[-1] = msgspec.structs.replace(batch.transactions[-1], index=0)
    with pytest.raises(StoreError, match=r"transactions_\w*pkey"):
        await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (0, 0, 0)


async def test_transaction_without_its_block_is_refused(store, db_dsn):
    batch = make_batch(0, 2, txs_per_block=lambda h: 1)
    batch.transactions.append(make_tx(99, 0))
    with pytest.raises(StoreError, match="23503"):
        await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (0, 0, 0)


async def test_commit_batch_rejects_inconsistent_batches(store):
    batch = make_batch(0, 3)
    with pytest.raises(ValueError):
        await store.commit_batch(
            Batch(0, 4, batch.blocks, batch.transactions), chain_id=CHAIN, status="syncing"
        )
    with pytest.raises(ValueError):
        await store.commit_batch(Batch(0, 0, [], []), chain_id=CHAIN, status="syncing")
    with pytest.raises(ValueError, match="status"):
        await store.commit_batch(batch, chain_id=CHAIN, status="running")


@pytest.mark.parametrize("blocked_at", ["transactions copy", "app_state upsert"])
async def test_cancellation_mid_commit_stores_nothing(store, db_dsn, blocked_at):
    """Cancel while the commit waits after writing part of the batch; nothing remains."""
    batch = make_batch(0, 1999, txs_per_block=lambda h: 2)
    blocker = await asyncpg.connect(db_dsn)
    try:
        blocker_tx = blocker.transaction()
        await blocker_tx.start()
        if blocked_at == "transactions copy":
            # Blocks are COPYed; the COPY into transactions waits for this lock.
            await blocker.execute("LOCK TABLE indexer.transactions IN SHARE MODE")
        else:
            # Both COPYs are done; the app_state upsert waits on this uncommitted row.
            await blocker.execute("INSERT INTO indexer.app_state (component) VALUES ('block_sync')")
        task = asyncio.create_task(store.commit_batch(batch, chain_id=CHAIN, status="syncing"))
        await wait_for_lock_wait(blocker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await blocker_tx.rollback()
    finally:
        await blocker.close()
    assert await counts(db_dsn) == (0, 0, 0)
    # The pool recovered: the same batch commits in full now.
    await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (2000, 4000, 1)


async def test_cancellation_at_any_moment_is_all_or_nothing(store, db_dsn):
    batch = make_batch(0, 2999, txs_per_block=lambda h: 1)
    outcomes = set()
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1, 0.2):
        task = asyncio.create_task(store.commit_batch(batch, chain_id=CHAIN, status="syncing"))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
            committed = True
        except asyncio.CancelledError:
            committed = False
        found = await counts(db_dsn)
        if committed:
            # A cancel that arrives after COMMIT was sent may still let it commit.
            assert found == (3000, 3000, 1)
        else:
            assert found in ((0, 0, 0), (3000, 3000, 1))
        outcomes.add(found)
        if found != (0, 0, 0):
            await fetch(db_dsn, "TRUNCATE indexer.blocks, indexer.transactions, indexer.checkpoints, indexer.app_state CASCADE")
    assert (0, 0, 0) in outcomes


async def test_lost_connection_mid_commit_is_retryable(store, db_dsn):
    batch = make_batch(0, 99, txs_per_block=lambda h: 1)
    blocker = await asyncpg.connect(db_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE indexer.transactions IN SHARE MODE")
            task = asyncio.create_task(store.commit_batch(batch, chain_id=CHAIN, status="syncing"))
            pid = await wait_for_lock_wait(blocker)
            assert await blocker.fetchval("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(StoreError) as info:
                await task
    finally:
        await blocker.close()
    assert info.value.retryable
    message = str(info.value)
    assert message.startswith(
        f"lost the connection to PostgreSQL at {describe_dsn(db_dsn)} while committing blocks 0..99:"
    )
    assert "\n" not in message
    assert await counts(db_dsn) == (0, 0, 0)
    await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (100, 100, 1)


# -- reads ---------------------------------------------------------------------------------


# -- checkpoints and replace_range --------------------------------------------------------------


def part(batch: Batch, start: int, end: int) -> Batch:
    """Heights ``start..end`` of ``batch``, as fetched again."""
    return Batch(
        start=start,
        end=end,
        blocks=[b for b in batch.blocks if start <= b.height <= end],
        transactions=[t for t in batch.transactions if start <= t.block_height <= end],
    )


def expected_checkpoints(batch: Batch, every: int) -> list[tuple]:
    """(height, block hash, last tx hash, checksum, blocks, transactions) per boundary."""
    rows, previous, low = [], None, -1
    for height in range(every, batch.end + 1, every):
        blocks = [(b.height, b.hash) for b in batch.blocks if low < b.height <= height]
        txs = [(t.block_height, t.index, t.hash) for t in batch.transactions if low < t.block_height <= height]
        checksum = checkpoint_checksum(previous, blocks, txs)
        rows.append((height, block_hash(height), txs[-1][2] if txs else None, checksum, len(blocks), len(txs)))
        previous, low = checksum, height
    return rows


async def stored_checkpoints(dsn: str) -> list[tuple]:
    rows = await fetch(
        dsn,
        "SELECT height, block_hash, last_tx_hash, checksum, blocks, transactions"
        " FROM indexer.checkpoints ORDER BY height",
    )
    return [tuple(r) for r in rows]


async def test_commit_batch_writes_checkpoints_at_multiples(db_dsn):
    whole = make_batch(0, 23, txs_per_block=lambda h: h % 4)
    store = await Store.connect(db_dsn, checkpoint_every=5)
    try:
        await store.migrate()
        # Batches spanning none, one and two boundaries, ending on and between them.
        for start, end in [(0, 3), (4, 12), (13, 13), (14, 15), (16, 20), (21, 23)]:
            await store.commit_batch(part(whole, start, end), chain_id=CHAIN, status="syncing")
    finally:
        await store.close()
    assert await stored_checkpoints(db_dsn) == expected_checkpoints(whole, 5)
    rows = await fetch(db_dsn, "SELECT created_at FROM indexer.checkpoints")
    assert len(rows) == 4 and all(r["created_at"] is not None for r in rows)
    # Deleting a block deletes its checkpoint.
    await fetch(db_dsn, "DELETE FROM indexer.blocks WHERE height = 10")
    assert [r[0] for r in await stored_checkpoints(db_dsn)] == [5, 15, 20]


async def test_checkpoint_every_zero_writes_none(db_dsn):
    store = await Store.connect(db_dsn, checkpoint_every=0)
    try:
        await store.migrate()
        await store.commit_batch(make_batch(0, 30), chain_id=CHAIN, status="syncing")
    finally:
        await store.close()
    assert await stored_checkpoints(db_dsn) == []
    with pytest.raises(ConfigError):
        await Store.connect(db_dsn, checkpoint_every=-1)


async def test_replace_range_swaps_heights_atomically_and_keeps_the_top(db_dsn):
    whole = make_batch(0, 20, txs_per_block=lambda h: 2)
    store = await Store.connect(db_dsn, checkpoint_every=5)
    try:
        await store.migrate()
        await store.commit_batch(whole, chain_id=CHAIN, status="synced")
        clean = await snapshot(db_dsn)
        checkpoints = await stored_checkpoints(db_dsn)
        for damage in (
            "DELETE FROM indexer.blocks WHERE height = 9",
            "UPDATE indexer.blocks SET hash = 'forged' WHERE height = 8",
            "DELETE FROM indexer.transactions WHERE block_height = 7 AND tx_index = 1",
        ):
            await fetch(db_dsn, damage)
        await store.replace_range(part(whole, 7, 10), chain_id=CHAIN)
        blocks, txs, state = await snapshot(db_dsn)
        assert (blocks, txs) == clean[:2]
        assert await stored_checkpoints(db_dsn) == checkpoints
        # In the middle: the top, the status and the error state stay as they were.
        assert [r[:-1] for r in state] == [r[:-1] for r in clean[2]]  # all but updated_at
        # A failing replace changes nothing: a block hash stored at another height.
        before = await snapshot(db_dsn)
        bad = part(whole, 12, 13)
        bad.blocks[0] = msgspec.structs.replace(bad.blocks[0], hash=block_hash(3))
        with pytest.raises(StoreError, match="23505"):
            await store.replace_range(bad, chain_id=CHAIN)
        assert await snapshot(db_dsn) == before
        # At the top it records the top again, never lower than before.
        await fetch(db_dsn, "UPDATE indexer.app_state SET last_block_h = 19, last_block_hash = 'x'")
        await store.replace_range(part(whole, 20, 20), chain_id=CHAIN)
        state = await store.state.get_state()
        assert (state.last_block_h, state.last_block_hash) == (20, block_hash(20))
        await fetch(db_dsn, "UPDATE indexer.app_state SET last_block_h = 25")
        await store.replace_range(part(whole, 18, 20), chain_id=CHAIN)
        assert (await store.state.get_state()).last_block_h == 25
        assert await store.delete_orphan_transactions(0, 100) == 0
    finally:
        await store.close()


async def test_replace_range_is_fenced_by_the_writer_lock(db_dsn):
    whole = make_batch(0, 10)
    leader, other = await Store.connect(db_dsn), await Store.connect(db_dsn)
    try:
        await leader.migrate()
        await leader.commit_batch(whole, chain_id=CHAIN, status="synced")
        before = await snapshot(db_dsn)
        assert await leader.claim_writer(wait=False)
        with pytest.raises(NotTheWriter):
            await other.replace_range(part(whole, 3, 4), chain_id=CHAIN)
        with pytest.raises(NotTheWriter):
            await other.delete_orphan_transactions(0, 10)
        with pytest.raises(NotTheWriter, match="leader pid "):
            await other.require_writer()
        assert await snapshot(db_dsn) == before
        await leader.replace_range(part(whole, 3, 4), chain_id=CHAIN)
        assert (await snapshot(db_dsn))[:2] == before[:2]
    finally:
        await leader.close()
        await other.close()


async def test_block_ref_bounds_and_hashes(store):
    assert await store.stored_bounds() is None
    assert await store.block_ref(0) is None
    assert await store.block_hashes(0, 100) == {}
    batch = make_batch(5, 9)
    await store.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await store.stored_bounds() == (5, 9)
    ref = await store.block_ref(7)
    assert (ref.height, ref.hash, ref.chain_id) == (7, block_hash(7), CHAIN)
    assert ref.total_txs == batch.blocks[2].total_txs
    assert await store.block_ref(10) is None
    assert await store.block_hashes(0, 6) == {5: block_hash(5), 6: block_hash(6)}
    assert await store.block_hashes(8, 8) == {8: block_hash(8)}
    await store.ping()


# -- sync state ----------------------------------------------------------------------------


async def test_last_synced_height_falls_back_to_stored_blocks(store, db_dsn):
    assert await store.state.get_last_synced_height() is None
    await store.commit_batch(make_batch(0, 4), chain_id=CHAIN, status="syncing")
    assert await store.state.get_last_synced_height() == 4
    await fetch(db_dsn, "UPDATE indexer.app_state SET last_block_h = 3")
    assert await store.state.get_last_synced_height() == 3  # app_state wins
    await fetch(db_dsn, "DELETE FROM indexer.app_state")
    assert await store.state.get_state() is None
    assert await store.state.get_last_synced_height() == 4
    await store.state.record_error("no height in this row")
    assert await store.state.get_last_synced_height() == 4


async def test_record_error_set_status_update_state(store):
    assert await store.state.get_state() is None
    await store.state.record_error("first\x00failure")
    await store.state.record_error("second failure")
    state = await store.state.get_state()
    assert (state.status, state.error_count, state.last_error) == ("error", 2, "second failure")
    assert state.last_block_h is None

    await store.state.set_status("stopped")
    state = await store.state.get_state()
    assert (state.status, state.error_count) == ("stopped", 2)

    await store.state.update_state(chain_id="other-chain", last_error=None, error_count=7)
    state = await store.state.get_state()
    assert (state.chain_id, state.last_error) == ("other-chain", None)
    assert (state.error_count, state.status) == (7, "stopped")

    with pytest.raises(ValueError, match="unknown app_state column"):
        await store.state.update_state(bogus=1)
    with pytest.raises(ValueError, match="unknown app_state column"):
        await store.state.update_state(updated_at=datetime.now(timezone.utc))
    with pytest.raises(ValueError, match="status"):
        await store.state.set_status("running")

    await store.commit_batch(make_batch(0, 1), chain_id=CHAIN, status="synced")
    state = await store.state.get_state()
    assert (state.status, state.error_count, state.last_error) == ("synced", 0, None)
    assert state.chain_id == CHAIN

    data = state.to_json_dict()
    assert json.loads(json.dumps(data)) == data
    assert datetime.fromisoformat(data["updated_at"]) == state.updated_at
    assert datetime.fromisoformat(data["last_sync_time"]) == state.last_sync_time
    assert data["last_block_h"] == 1 and data["component"] == "block_sync"


async def test_components_have_separate_state(db_dsn):
    a = await Store.connect(db_dsn)
    b = await Store.connect(db_dsn, component="other")
    try:
        await a.migrate()
        await a.commit_batch(make_batch(0, 2), chain_id=CHAIN, status="syncing")
        await b.state.set_status("stopped")
        assert (await a.state.get_state()).status == "syncing"
        assert (await b.state.get_state()).status == "stopped"
        assert await b.state.get_last_synced_height() == 2  # falls back to stored blocks
    finally:
        await a.close()
        await b.close()


# -- DSNs and connection errors -------------------------------------------------------------


def test_redact_dsn_hides_passwords():
    assert (
        redact_dsn("postgresql://gno:s3cret@db.example:5433/chain")
        == "postgresql://gno:***@db.example:5433/chain"
    )
    assert (
        redact_dsn("postgres://gno:p%40ss@h/db?sslmode=require&password=again")
        == "postgres://gno:***@h/db?sslmode=require&password=***"
    )
    assert redact_dsn("postgresql://gno@h/db") == "postgresql://gno@h/db"
    assert redact_dsn("postgresql://h/db") == "postgresql://h/db"
    assert (
        redact_dsn("host=db user=gno password=s3cret dbname=chain")
        == "host=db user=gno password=*** dbname=chain"
    )
    assert (
        redact_dsn("host=db password = 'with space\\' quote' port=1")
        == "host=db password = *** port=1"
    )
    assert "s3cret" not in redact_dsn("postgresql://gno:s3cret@[::1]:5432/chain")


def test_describe_dsn_and_key_value_form():
    assert describe_dsn("postgresql://gno:s3cret@db.example:5433/chain") == "db.example:5433/chain"
    assert describe_dsn("host=db port=6 user=gno password=x dbname=chain") == "db:6/chain"
    assert describe_dsn("postgresql://gno@/chain?host=/run/pg&port=5999") == "/run/pg:5999/chain"
    assert describe_dsn("postgresql://gno@h1:5432,h2:5433/chain?target_session_attrs=read-write") == (
        "h1:5432,h2:5433/chain")
    assert describe_dsn("host=h1,h2 port=5432,5433 dbname=chain") == "h1:5432,h2:5433/chain"
    assert to_uri("host=db port=6 user=gno password='a b' dbname=chain sslmode=disable") == (
        "postgresql://gno:a%20b@db:6/chain?sslmode=disable"
    )


async def test_key_value_dsn_connects(db_dsn):
    parts = urlsplit(db_dsn)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query["host"]
    port = parts.port or query.get("port", 5432)
    dsn = f"host={host} port={port} user={parts.username} dbname={parts.path[1:]}"
    store = await Store.connect(dsn)
    try:
        await store.ping()
    finally:
        await store.close()


async def test_connecting_to_a_closed_port(db_dsn):
    port = free_port()
    dsn = f"postgresql://postgres:hunter2-secret@127.0.0.1:{port}/x"
    with pytest.raises(StoreError) as info:
        await Store.connect(dsn)
    message = str(info.value)
    assert not info.value.retryable
    assert message == (
        f"cannot connect to PostgreSQL at 127.0.0.1:{port}/x: connection refused;"
        " check --db or GNOSYNC_DB"
    )
    assert "hunter2" not in message


async def test_connecting_to_an_unknown_database(db_dsn):
    dsn = with_password(with_database(db_dsn, "gnosync_no_such_db"), "hunter2-secret")
    with pytest.raises(StoreError) as info:
        await Store.connect(dsn)
    message = str(info.value)
    assert not info.value.retryable
    assert message.startswith(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}:")
    assert 'database "gnosync_no_such_db" does not exist' in message
    assert message.endswith("check --db or GNOSYNC_DB")
    assert "hunter2" not in message and "\n" not in message


async def test_connecting_to_an_unknown_host():
    with pytest.raises(StoreError) as info:
        await Store.connect("postgresql://u:hunter2-secret@gnosync-no-such-host.invalid:5432/db")
    message = str(info.value)
    assert not info.value.retryable
    assert message.startswith(
        "cannot connect to PostgreSQL at gnosync-no-such-host.invalid:5432/db: unknown host"
    )
    assert "hunter2" not in message


async def test_unmigrated_schema_gives_a_clear_error(db_dsn):
    store = await Store.connect(db_dsn, schema="never_migrated")
    try:
        with pytest.raises(StoreError, match="are the migrations applied") as info:
            await store.stored_bounds()
        assert not info.value.retryable
    finally:
        await store.close()


# -- embedded server ------------------------------------------------------------------------


async def test_embedded_server_starts_and_is_reused(tmp_path):
    data_dir = tmp_path / "pg"
    dsn, used = start_embedded(data_dir)
    try:
        assert used == data_dir.resolve()
        assert (used / "PG_VERSION").exists()
        store = await Store.connect(dsn)
        try:
            assert await store.migrate() == MIGRATIONS
            await store.commit_batch(make_batch(0, 2), chain_id=CHAIN, status="synced")
            assert await store.stored_bounds() == (0, 2)
        finally:
            await store.close()
        assert describe_dsn(dsn).endswith("/gnosync")
        # A second start reuses the running server and its database.
        again, _ = start_embedded(data_dir)
        assert again == dsn
    finally:
        stop_embedded(data_dir)
    with pytest.raises(StoreError):
        await Store.connect(dsn)
