"""Range sync and the follow loop, against a real PostgreSQL and the devnet over loopback."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from gnosync.errors import BatchInvalid, ChainMismatch, ConfigError
from gnosync.retry import RetryPolicy
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.sync.loop import Follower, sync_range
from gnosync.sync.syncer import Syncer

from .compare import differences

ONE_TRY = RetryPolicy(initial=0.01, maximum=0.05, attempts=1)
QUICK = RetryPolicy(initial=0.01, maximum=0.05, attempts=5)


async def open_syncer(url: str, dsn: str, *, max_elements: int = 10_000, schema: str = "indexer") -> Syncer:
    store = await Store.connect(dsn, schema=schema)
    await store.migrate()
    state = await store.state.get_state()
    source = SourcePool([url], max_elements=max_elements)
    return Syncer(source, store, chain_id=state.chain_id if state else None)


async def close(syncer: Syncer) -> None:
    await syncer.source.close()
    await syncer.store.close()


async def counts(dsn: str, schema: str = "indexer") -> tuple[int, int, tuple | None]:
    conn = await asyncpg.connect(dsn)
    try:
        blocks = await conn.fetchval(f'SELECT count(*) FROM "{schema}".blocks')
        txs = await conn.fetchval(f'SELECT count(*) FROM "{schema}".transactions')
        state = await conn.fetchrow(f'SELECT last_block_h, last_block_hash, status FROM "{schema}".app_state')
        return blocks, txs, tuple(state) if state else None
    finally:
        await conn.close()


async def follow_to_tip(syncer: Syncer, tip: int, *, batch_size: int = 500, start_height=None) -> str:
    """Run the follow loop until the database reaches ``tip``; return the status seen there."""
    follower = Follower(syncer, batch_size=batch_size, interval=0.05, policy=QUICK, start_height=start_height)
    task = asyncio.create_task(follower.run())
    try:
        for _ in range(2000):
            state = await syncer.store.state.get_state()
            if state and state.last_block_h == tip and state.status == "synced":
                return state.status
            assert not task.done(), task.exception()
            await asyncio.sleep(0.02)
        raise AssertionError(f"did not reach {tip}: {state}")
    finally:
        follower.stop()
        await task


async def test_fresh_sync_from_genesis_equals_source(devnet, db_dsn):
    chain, url = devnet(blocks=1200, seed=3)
    syncer = await open_syncer(url, db_dsn)
    try:
        assert await follow_to_tip(syncer, chain.tip) == "synced"
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, chain.tip) == []
    blocks, txs, state = await counts(db_dsn)
    assert blocks == chain.tip + 1 and txs > 0
    assert state[0] == chain.tip and state[2] == "stopped"


async def test_first_sync_starts_at_lowest_served_height(devnet, db_dsn):
    chain, url = devnet(blocks=50, genesis=False)
    syncer = await open_syncer(url, db_dsn)
    try:
        await follow_to_tip(syncer, chain.tip)
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 1, chain.tip) == []


async def test_start_height_for_a_new_database(devnet, db_dsn):
    chain, url = devnet(blocks=100)
    syncer = await open_syncer(url, db_dsn)
    try:
        await follow_to_tip(syncer, chain.tip, start_height=40)
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 40, chain.tip) == []


async def test_resume_after_restart_and_growing_chain(devnet, db_dsn):
    chain, url = devnet(blocks=400)
    syncer = await open_syncer(url, db_dsn)
    try:
        await sync_range(syncer, 0, 150, batch_size=40, policy=ONE_TRY)
    finally:
        await close(syncer)
    for _ in range(25):
        chain.append_block()
    syncer = await open_syncer(url, db_dsn)
    try:
        await follow_to_tip(syncer, chain.tip, batch_size=64)
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, chain.tip) == []


async def test_resync_is_idempotent_and_overlap_only_adds_new(devnet, db_dsn):
    chain, url = devnet(blocks=300)
    syncer = await open_syncer(url, db_dsn)
    try:
        assert await sync_range(syncer, 0, 200, batch_size=64, policy=ONE_TRY) == 201
        before = await counts(db_dsn)
        assert await sync_range(syncer, 0, 200, batch_size=64, policy=ONE_TRY) == 0
        assert await sync_range(syncer, 50, 60, batch_size=64, policy=ONE_TRY) == 0
        assert await counts(db_dsn) == before
        assert await sync_range(syncer, 150, 300, batch_size=64, policy=ONE_TRY) == 100
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, 300) == []


async def test_single_block_ranges(devnet, db_dsn):
    chain, url = devnet(blocks=30)
    syncer = await open_syncer(url, db_dsn)
    try:
        for height in range(0, 31):
            assert await sync_range(syncer, height, height, batch_size=1, policy=ONE_TRY) == 1
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, 30) == []


async def test_range_over_the_cap_in_one_batch(devnet, db_dsn):
    chain, url = devnet(blocks=12_500)
    syncer = await open_syncer(url, db_dsn)
    try:
        assert await sync_range(syncer, 0, 12_500, batch_size=12_501, policy=ONE_TRY) == 12_501
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, 12_500) == []


async def test_small_cap_splits_blocks_and_transactions(devnet, db_dsn):
    """A server cap far below the batch exercises every split path, including one
    height holding more transactions than the cap."""
    chain, url = devnet(blocks=600, max_elements=7)
    dense = [h for h in range(chain.tip + 1) if len(chain.transactions(h)) > 7]
    assert dense, "the devnet should have blocks with more transactions than this cap"
    syncer = await open_syncer(url, db_dsn, max_elements=10_000)
    try:
        await sync_range(syncer, 0, 600, batch_size=600, policy=ONE_TRY)
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, 600) == []


async def test_gap_and_below_range_requests_are_refused(devnet, db_dsn):
    chain, url = devnet(blocks=100)
    syncer = await open_syncer(url, db_dsn)
    try:
        await sync_range(syncer, 10, 20, batch_size=50, policy=ONE_TRY)
        with pytest.raises(ConfigError, match="missing"):
            await sync_range(syncer, 30, 40, batch_size=50, policy=ONE_TRY)
        with pytest.raises(ConfigError, match="below"):
            await sync_range(syncer, 0, 5, batch_size=50, policy=ONE_TRY)
    finally:
        await close(syncer)


class Tampering:
    """An endpoint of the real pool, with one kind of damage applied to what it serves."""

    def __init__(self, endpoint, damage: str, height: int):
        self.endpoint, self.damage, self.height = endpoint, damage, height
        self.url = endpoint.url

    def penalize(self, reason):
        self.endpoint.penalize(reason)

    async def blocks(self, start, end):
        out = []
        for b in await self.endpoint.blocks(start, end):
            if b.height == self.height:
                if self.damage == "drop_block":
                    continue
                if self.damage == "link":
                    b = msgspec.structs.replace(b, last_block_hash="AAAA")
                if self.damage == "num_txs":
                    b = msgspec.structs.replace(b, num_txs=b.num_txs + 1, total_txs=b.total_txs + 1)
                if self.damage == "chain_id":
                    b = msgspec.structs.replace(b, chain_id="evil")
            out.append(b)
        return out

    async def block_hashes(self, start, end):
        return {b.height: b.hash for b in await self.blocks(start, end)}

    async def transactions(self, start, end, *, page=None):
        txs = await self.endpoint.transactions(start, end, page=page)
        if self.damage == "drop_tx":
            txs = [t for t in txs if not (t.block_height == self.height and t.index == 0)]
        return txs


def tamper(pool: SourcePool, damage: str, height: int) -> SourcePool:
    real = pool.endpoint_for
    pool.endpoint_for = lambda h: Tampering(real(h), damage, height)
    return pool


@pytest.mark.parametrize("damage", ["drop_block", "link", "num_txs", "drop_tx", "chain_id"])
async def test_validation_failure_commits_the_good_prefix_and_holds_at_the_bad_height(devnet, db_dsn, damage):
    """A bad block inside a batch: the heights below it are committed (validated, in one
    transaction with the state), nothing from it on, and the error names it."""
    chain, url = devnet(blocks=300)
    bad = next(h for h in range(120, 300) if chain.block(h)["num_txs"] > 0)
    syncer = await open_syncer(url, db_dsn)
    try:
        await sync_range(syncer, 0, 99, batch_size=100, policy=ONE_TRY)
        tamper(syncer.source, damage, bad)
        with pytest.raises(BatchInvalid) as info:
            await sync_range(syncer, 100, 299, batch_size=200, policy=QUICK)
        assert info.value.height == bad
        assert str(bad) in str(info.value)
        assert await syncer.store.stored_bounds() == (0, bad - 1)
        state = await syncer.store.state.get_state()
        assert state.last_block_h == bad - 1
        assert state.status == "error" and state.error_count >= 1 and str(bad) in state.last_error
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, bad - 1) == []
    blocks, txs, _ = await counts(db_dsn)
    assert blocks == bad and txs == sum(len(chain.transactions(h)) for h in range(bad))


async def test_stored_hash_differing_from_source_is_a_chain_mismatch(devnet, db_dsn):
    chain, url = devnet(blocks=100, seed=1)
    other, other_url = devnet(blocks=100, seed=2)
    syncer = await open_syncer(url, db_dsn)
    try:
        await sync_range(syncer, 0, 50, batch_size=100, policy=ONE_TRY)
    finally:
        await close(syncer)
    syncer = await open_syncer(other_url, db_dsn)
    try:
        with pytest.raises((ChainMismatch, BatchInvalid)):
            await sync_range(syncer, 40, 60, batch_size=100, policy=ONE_TRY)
    finally:
        await close(syncer)
    assert (await counts(db_dsn))[0] == 51


async def test_custom_schema(devnet, db_dsn):
    chain, url = devnet(blocks=60)
    syncer = await open_syncer(url, db_dsn, schema="chain_copy")
    try:
        await sync_range(syncer, 0, 60, batch_size=25, policy=ONE_TRY)
    finally:
        await close(syncer)
    assert await differences(db_dsn, url, 0, 60, schema="chain_copy") == []


@pytest.mark.parametrize("height, start_height", [(0, None), (1, None), (40, 40)])
async def test_first_block_of_a_fresh_sync_is_checked_too(devnet, db_dsn, height, start_height):
    """Nothing is stored below a fresh sync's first block: genesis and block 1 must link
    to nothing, and a later first block to the source's own block below it."""
    chain, url = devnet(blocks=100)
    syncer = await open_syncer(url, db_dsn)
    try:
        tamper(syncer.source, "link", height)
        with pytest.raises(BatchInvalid) as info:
            await sync_range(syncer, start_height or 0, 60, batch_size=100, policy=QUICK)
        assert info.value.height == height and info.value.check == "last_block_hash"
        # Only what lies below the bad block may be stored: genesis, when block 1 is bad.
        below = (0, height - 1) if height == 1 else None
        assert await syncer.store.stored_bounds() == below
    finally:
        await close(syncer)
