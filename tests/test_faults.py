"""The follow loop under real faults: bad HTTP, bad data, outages, lost connections."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from gnosync.devnet import Faults
from gnosync.errors import ChainMismatch
from gnosync.retry import RetryPolicy
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.sync.loop import Follower
from gnosync.sync.syncer import Syncer

from .compare import differences
from .conftest import database_of

FAST = RetryPolicy(initial=0.02, maximum=0.3)


class Running:
    """A Follower on its own task, with the handles a test needs."""

    def __init__(self, syncer: Syncer, follower: Follower):
        self.syncer, self.follower = syncer, follower
        self.task = asyncio.create_task(follower.run())

    async def state(self):
        return await self.syncer.store.state.get_state()

    async def wait(self, predicate, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.task.done():
                self.task.result()
                raise AssertionError(f"the loop ended before {what}")
            try:
                state = await self.state()
            except Exception:  # the database may be what the test took away
                state = None
            if state is not None and predicate(state):
                return state
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {state}")

    async def stop(self):
        self.follower.stop()
        await asyncio.wait_for(self.task, 15)
        await self.syncer.source.close()
        await self.syncer.store.close()


async def follow(urls: list[str], dsn: str, *, batch_size: int = 200, **client) -> Running:
    store = await Store.connect(dsn)
    await store.migrate()
    # Timeouts no honest answer on a busy machine comes near; a test of stalls sets its own.
    pool = SourcePool(urls, **{"read_timeout": 30.0, "connect_timeout": 30.0, **client})
    follower = Follower(Syncer(pool, store), batch_size=batch_size, interval=0.05, policy=FAST)
    return Running(follower.syncer, follower)


def at(height):
    return lambda s: s.last_block_h is not None and s.last_block_h >= height


def counted(run: Running, name: str, **labels: str) -> float:
    """A metric's value summed over the label values not given."""
    total = 0.0
    for family in run.follower.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_mixed_transport_faults_never_lose_or_repeat_a_height(devnet, db_dsn):
    faults = Faults.mixed(0.3, seed=11, stall_seconds=1.0)
    chain, url = devnet(blocks=3000, seed=9, faults=faults)
    run = await follow([url], db_dsn, timeout=0.5)  # stalls outlast it
    try:
        await run.wait(at(chain.tip), what="the tip")
    finally:
        await run.stop()
    faults.clear()  # the comparison reads the devnet too
    assert await differences(db_dsn, url, 0, chain.tip) == []


async def test_bad_data_stops_at_last_good_height_then_resumes(devnet, db_dsn):
    devnet_faults = Faults()
    chain, url = devnet(blocks=600, seed=3, faults=devnet_faults)
    run = await follow([url], db_dsn, batch_size=100)
    try:
        await run.wait(at(300), what="first progress")
        devnet_faults.bad_link_height = 650
        for _ in range(100):
            chain.append_block()
        state = await run.wait(lambda s: s.status == "error" and s.last_error, what="an error")
        assert "block 650 failed check 'last_block_hash'" in state.last_error
        assert state.last_block_h == 649
        await asyncio.sleep(0.5)
        assert (await run.state()).last_block_h == 649  # nothing stepped over
        devnet_faults.bad_link_height = -1
        state = await run.wait(lambda s: s.last_block_h == chain.tip and s.status == "synced", what="recovery")
        assert state.error_count == 0 and state.last_error is None
    finally:
        await run.stop()
    assert await differences(db_dsn, url, 0, chain.tip) == []


@pytest.mark.parametrize("kind", ["missing_tx", "wrong_num_txs", "missing_block"])
async def test_each_kind_of_bad_data_is_never_committed(devnet, db_dsn, kind):
    faults = Faults(ops=("getBlocks", "getTransactions"))
    chain, url = devnet(blocks=400, seed=6, faults=faults)
    setattr(faults, kind, 1.0)
    run = await follow([url], db_dsn, batch_size=400)
    try:
        # Each bad answer commits at most the validated heights below its damage.
        await run.wait(lambda s: counted(run, "gnosync_errors_total", kind="validation") >= 2, what="errors")
        setattr(faults, kind, 0.0)
        await run.wait(at(chain.tip), what="recovery")
    finally:
        await run.stop()
    assert await differences(db_dsn, url, 0, chain.tip) == []


async def test_latest_height_lagging_and_going_backwards(devnet, db_dsn):
    faults = Faults(latest_backwards=0.5)
    chain, url = devnet(blocks=800, seed=8, faults=faults)
    run = await follow([url], db_dsn, batch_size=64)
    try:
        await run.wait(at(chain.tip - 60), what="progress")
        faults.latest_backwards = 0.0
        faults.latest_lag = 5
        await run.wait(at(chain.tip - 5), what="lagging tip")
        faults.latest_lag = 0
        await run.wait(at(chain.tip), what="tip")
    finally:
        await run.stop()
    assert await differences(db_dsn, url, 0, chain.tip) == []


async def test_chain_reset_stops_with_a_chain_mismatch(devnet, db_dsn):
    chain, url = devnet(blocks=200, seed=2)
    run = await follow([url], db_dsn)
    await run.wait(at(chain.tip), what="the tip")
    chain.reset(seed=99)
    for _ in range(10):
        chain.append_block()
    with pytest.raises(ChainMismatch, match="block 200"):
        await asyncio.wait_for(run.task, 30)
    state = await run.state()
    assert state.status == "error" and "another chain" in state.last_error
    assert state.last_block_h == 200
    await run.syncer.source.close()
    await run.syncer.store.close()


async def test_chain_id_change_stops_the_sync(devnet, db_dsn):
    chain, url = devnet(blocks=100, seed=2, chain_id="first")
    run = await follow([url], db_dsn)
    await run.wait(at(chain.tip), what="the tip")
    chain.reset(chain_id="second", seed=2)
    chain.append_block()
    with pytest.raises(ChainMismatch, match="'second'.*'first'"):
        await asyncio.wait_for(run.task, 30)
    await run.syncer.source.close()
    await run.syncer.store.close()


async def test_source_outage_then_recovery(devnet, db_dsn):
    chain, url = devnet(blocks=300, seed=4, block_time=0.05)
    run = await follow([url], db_dsn)
    try:
        await run.wait(at(300), what="progress")
        await asyncio.to_thread(_outage, url, 1.5)
        await run.wait(lambda s: s.status == "error", what="the outage to show")
        tip_then = chain.tip
        await run.wait(lambda s: s.last_block_h >= tip_then and s.status != "error", what="recovery")
    finally:
        await run.stop()
    assert await differences(db_dsn, url, 0, (await _last(db_dsn))) == []


def _outage(url: str, seconds: float) -> None:
    import urllib.request

    base = url.rsplit("/graphql", 1)[0]
    request = urllib.request.Request(
        base + "/control/outage", data=f'{{"seconds": {seconds}}}'.encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    urllib.request.urlopen(request, timeout=5).read()


async def _last(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT last_block_h FROM indexer.app_state")
    finally:
        await conn.close()


async def test_failover_between_endpoints_during_an_outage(devnet, db_dsn):
    chain_a, url_a = devnet(blocks=500, seed=12)
    chain_b, url_b = devnet(blocks=500, seed=12)
    run = await follow([url_a, url_b], db_dsn, batch_size=50)
    try:
        await run.wait(at(100), what="progress")
        await asyncio.to_thread(_outage, url_a, 3.0)
        await run.wait(at(500), what="the tip through the other endpoint")
    finally:
        await run.stop()
    assert await differences(db_dsn, url_b, 0, 500) == []


async def test_database_connections_dropped_mid_run(devnet, db_dsn, pg_server_dsn):
    chain, url = devnet(blocks=20_000, seed=13)
    run = await follow([url], db_dsn, batch_size=100)
    database = database_of(db_dsn)
    try:
        for round_ in range(3):
            await run.wait(at(2000 * (round_ + 1)), what="progress")
            admin = await asyncpg.connect(pg_server_dsn)
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()", database)
            finally:
                await admin.close()
            assert killed >= 1
        await run.wait(at(chain.tip), timeout=120, what="the tip")
    finally:
        await run.stop()
    assert await differences(db_dsn, url, 0, chain.tip) == []


async def test_postgresql_restart_mid_run(devnet, tmp_path):
    """A real restart of a PostgreSQL server of the test's own: the batch in flight rolls
    back, gnosync reconnects, re-claims the writer lock and carries on."""
    from gnosync.store.embedded import start_embedded, stop_embedded

    chain, url = devnet(blocks=30_000, seed=21)
    dsn, data_dir = await asyncio.to_thread(start_embedded, tmp_path / "pg")
    run = await follow([url], dsn, batch_size=100)
    try:
        await run.wait(at(3000), what="progress")
        await asyncio.to_thread(stop_embedded, data_dir)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(start_embedded, data_dir)
        await run.wait(at(chain.tip), timeout=120, what="the tip after the restart")
        assert run.syncer.store.is_writer
        assert counted(run, "gnosync_retries_total") >= 1  # the restart was felt, and survived
    finally:
        await run.stop()
        try:
            assert await differences(dsn, url, 0, chain.tip) == []
        finally:
            await asyncio.to_thread(stop_embedded, data_dir)
