"""One home for each rule: the sync, `gnosync verify` and `gnosync repair` judge a block
by the same functions, so the same damage is named the same way by each of them."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from gnosync.errors import BatchInvalid, ChainMismatch
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.sync.loop import sync_range
from gnosync.sync.syncer import Syncer, fetch_batch
from gnosync.sync.validate import link_violations, validate_batch
from gnosync.sync.verify import LINK_KINDS, audit

from .test_sync import ONE_TRY
from .test_verify import execute, synced

TIP = 600


def damaged(batch, height: int, **fields):
    """``batch`` with the block at ``height`` changed."""
    blocks = [
        msgspec.structs.replace(block, **fields) if block.height == height else block
        for block in batch.blocks
    ]
    return dataclasses.replace(batch, blocks=blocks)


# (the block's changed fields, the SQL doing the same to the stored block, the height)
DAMAGE = {
    "link": ({"last_block_hash": "elsewhere"}, "last_block_hash = 'elsewhere'", 537),
    "total": ({"total_txs": None}, "total_txs = total_txs + 1", 537),
    "first block": ({"last_block_hash": "elsewhere"}, "last_block_hash = 'elsewhere'", 1),
    "chain id": ({"chain_id": "other"}, "chain_id = 'other'", 537),
}


@pytest.mark.parametrize("case", list(DAMAGE))
async def test_validate_and_verify_name_a_damaged_block_identically(devnet, db_dsn, case):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn, end=TIP)
    fields, assignment, height = DAMAGE[case]
    store = await Store.connect(db_dsn)
    try:
        async with SourcePool([url]) as source:
            low = max(0, height - 5)
            batch = await fetch_batch(source.endpoint_for(height + 5), low, height + 5)
        block = next(b for b in batch.blocks if b.height == height)
        if fields.get("total_txs", 0) is None:
            fields = {"total_txs": block.total_txs + 1}
        previous = await store.block_ref(low - 1) if low else None
        # The sync refuses the block as served with the damage...
        with pytest.raises(BatchInvalid) as refused:
            validate_batch(damaged(batch, height, **fields), previous, block.chain_id)
        assert refused.value.height == height
        # ... and verify finds the same damage stored, in the same words.
        await execute(db_dsn, f"UPDATE indexer.blocks SET {assignment} WHERE height = {height}")
        report = await audit(store)
    finally:
        await store.close()
    named = [p for p in report.problems if p.height == height and p.kind != "checkpoint"]
    assert named, report.text()
    assert (named[0].kind, named[0].detail) == (LINK_KINDS[refused.value.check], refused.value.detail)


def test_the_link_rules_are_one_function_for_fetched_and_stored_blocks():
    """A stored row and a fetched block with the same values break the same rules."""
    from gnosync.model import BlockRef
    from gnosync.store import BlockLink

    below = BlockRef(height=9, hash="h9", chain_id="dev", total_txs=10)
    stored = BlockLink(height=10, hash="h10", last_block_hash="hx", total_txs=99, num_txs=2, chain_id="dev")
    found = link_violations(stored, below)
    assert [(v.check, v.height) for v in found] == [("last_block_hash", 10), ("total_txs", 10)]
    assert found[0].detail == "links to 'hx' but block 9 has hash 'h9'"
    assert link_violations(stored, BlockRef(height=8, hash="h8", chain_id="dev", total_txs=0)) == []
    genesis_child = BlockLink(height=1, hash="h1", last_block_hash="x", total_txs=0, num_txs=0, chain_id="dev")
    assert [v.check for v in link_violations(genesis_child, None)] == ["last_block_hash"]


async def test_sync_and_verify_compare_stored_hashes_with_the_source_alike(devnet, db_dsn):
    """A stored hash the source does not serve: `sync` over stored heights stops on it
    (a chain mismatch), `verify --against-source` reports it; both name block 537."""
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn, end=TIP)
    await execute(db_dsn, "UPDATE indexer.blocks SET hash = 'forged' WHERE height = 537")
    store = await Store.connect(db_dsn)
    try:
        async with SourcePool([url]) as source:
            report = await audit(store, source=source)
            with pytest.raises(ChainMismatch) as stopped:
                await sync_range(Syncer(source, store), 500, TIP, batch_size=100, policy=ONE_TRY)
    finally:
        await store.close()
    (difference,) = [p for p in report.problems if p.kind == "source_hash"]
    assert difference.height == 537
    assert "block 537" in str(stopped.value) and "'forged'" in str(stopped.value)
    assert f"{chain.block_hash(537)!r}" in str(stopped.value) and f"{chain.block_hash(537)!r}" in difference.detail
