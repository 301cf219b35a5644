"""Several endpoints: health, failover, and refusing to pick between disagreeing ones."""

from __future__ import annotations

import pytest

from gnosync.errors import ChainMismatch, SourceError
from gnosync.retry import RetryPolicy
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.sync.loop import sync_range
from gnosync.sync.syncer import Syncer

from .compare import differences

DEAD = "http://127.0.0.1:1/graphql/query"
QUICK = RetryPolicy(initial=0.01, maximum=0.05, attempts=6)


async def sync_with(urls: list[str], dsn: str, start: int, end: int) -> int:
    store = await Store.connect(dsn)
    await store.migrate()
    async with SourcePool(urls, connect_timeout=0.5) as pool:
        try:
            return await sync_range(Syncer(pool, store), start, end, batch_size=50, policy=QUICK)
        finally:
            await store.close()


async def test_latest_height_is_the_highest_any_endpoint_reports(devnet):
    _, short = devnet(blocks=50)
    _, tall = devnet(blocks=80)
    async with SourcePool([short, DEAD, tall], connect_timeout=0.5) as pool:
        assert await pool.latest_height() == 80
        health = {h.url: h for h in pool.health()}
        assert health[DEAD].up is False and health[DEAD].errors == 1
        assert health[tall].height == 80 and health[short].height == 50
        # A batch ending above the short endpoint's height is read from the tall one.
        assert pool.endpoint_for(70).url == tall


async def test_all_endpoints_down_is_a_retryable_error():
    async with SourcePool([DEAD, DEAD.replace(":1/", ":2/")], connect_timeout=0.5) as pool:
        with pytest.raises(SourceError) as info:
            await pool.latest_height()
    assert info.value.retryable


async def test_fails_over_from_a_dead_endpoint_without_losing_heights(devnet, db_dsn):
    _, url = devnet(blocks=300, seed=5)
    assert await sync_with([DEAD, url], db_dsn, 0, 300) == 301
    assert await differences(db_dsn, url, 0, 300) == []


async def test_endpoints_serving_different_hashes_stop_the_sync(devnet, db_dsn):
    _, one = devnet(blocks=100, seed=1)
    _, other = devnet(blocks=100, seed=2)
    with pytest.raises(ChainMismatch) as info:
        await sync_with([one, other], db_dsn, 0, 100)
    assert one in str(info.value) and other in str(info.value)
    store = await Store.connect(db_dsn)
    try:
        assert await store.stored_bounds() is None
    finally:
        await store.close()


async def test_agreeing_endpoints_sync_normally(devnet, db_dsn):
    _, one = devnet(blocks=200, seed=4)
    _, two = devnet(blocks=200, seed=4)
    assert await sync_with([one, two], db_dsn, 0, 200) == 201
    assert await differences(db_dsn, two, 0, 200) == []
