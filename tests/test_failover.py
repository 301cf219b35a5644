"""Failover to a promoted replica: a real primary and streaming replica (tests/pgpair.py),
gnosync given both in a multi-host DSN, the primary killed mid-backfill and the replica
promoted. gnosync carries on against the new primary and ends exact, also when the
replica lacked the last commits."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gnosync.devnet import Faults

from . import pgpair
from .compare import differences
from .test_faults import Running, at, follow

pytestmark = pytest.mark.skipif(not pgpair.available(), reason="no PostgreSQL server binaries")

BLOCKS = 30_000
# Each answer held back a little, so that the kill lands mid-backfill on any machine.
SLOW = 0.01


@pytest.fixture
def pair():
    with pgpair.running_pair() as started:
        yield started


async def stored(dsn: str) -> dict:
    """What the database at ``dsn`` holds, read without gnosync: app_state's height and
    the stored blocks' bounds and count."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT last_block_h FROM indexer.app_state) AS last_block_h,"
            " min(height) AS low, max(height) AS high, count(*) AS blocks FROM indexer.blocks")
        return dict(row)
    finally:
        await conn.close()


async def fail_over(pair: pgpair.PgPair) -> None:
    await asyncio.to_thread(pair.kill_primary)
    await asyncio.to_thread(pair.promote)


async def test_primary_killed_mid_backfill_then_replica_promoted(devnet, pair):
    faults = Faults(latency=SLOW)
    chain, url = devnet(blocks=BLOCKS, seed=31, faults=faults)
    run = await follow([url], pair.multi_host_dsn, batch_size=200)
    try:
        await run.wait(at(BLOCKS // 4), what="the backfill to be under way")
        await fail_over(pair)
        before = await stored(pair.replica_dsn)
        assert before["last_block_h"] < chain.tip  # the kill landed mid-backfill
        faults.latency = 0.0
        await run.wait(at(chain.tip), timeout=120, what="the tip on the promoted replica")
    finally:
        await run.stop()
    after = await stored(pair.replica_dsn)
    assert after == {"last_block_h": chain.tip, "low": 0, "high": chain.tip, "blocks": chain.tip + 1}
    assert await differences(pair.replica_dsn, chain, 0, chain.tip) == []


async def test_replica_lacking_the_last_commits_is_a_consistent_prefix(devnet, pair):
    faults = Faults(latency=SLOW)
    chain, url = devnet(blocks=BLOCKS, seed=32, faults=faults)
    run = await follow([url], pair.multi_host_dsn, batch_size=200)
    try:
        await run.wait(at(BLOCKS // 10), what="the backfill to be under way")
        await asyncio.to_thread(pair.cut_off)
        cut = await stored(pair.replica_dsn)
        primary = await run.wait(at(cut["last_block_h"] + 2000), what="commits the replica lacks")
        await fail_over(pair)
        promoted = await stored(pair.replica_dsn)
        # The commits after the cut are lost, and with them the app_state that
        # recorded them: what is left is a prefix, whole and consistent.
        assert promoted["last_block_h"] < primary.last_block_h
        assert promoted == {"last_block_h": promoted["high"], "low": 0,
                            "high": promoted["high"], "blocks": promoted["high"] + 1}
        faults.latency = 0.0
        await run.wait(at(chain.tip), timeout=120, what="the tip on the promoted replica")
    finally:
        await run.stop()
    after = await stored(pair.replica_dsn)
    assert after == {"last_block_h": chain.tip, "low": 0, "high": chain.tip, "blocks": chain.tip + 1}
    assert await differences(pair.replica_dsn, chain, 0, chain.tip) == []
