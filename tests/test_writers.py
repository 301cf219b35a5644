"""Two `gnosync run` processes on one database: one leader, one standby, a clean handover."""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import orjson

from .compare import differences
from .test_cli import gnosync, last_height, start, wait_for


async def roles(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'gnosync %'"
        )
        return sorted(row[0].split()[1] for row in names)
    finally:
        await conn.close()


def test_second_run_is_a_standby_and_takes_over_when_the_leader_dies(devnet, db_dsn):
    chain, url = devnet(blocks=20_000, block_time=0.05)
    leader = start("run", "--source", url, "--db", db_dsn, "--batch-size", "200")
    standby = None
    try:
        wait_for(lambda: last_height(db_dsn) > 500, what="the leader's progress")
        standby = start("run", "--source", url, "--db", db_dsn, "--batch-size", "200")
        wait_for(lambda: asyncio.run(roles(db_dsn)) == ["leader", "standby"], what="a standby")
        report = orjson.loads(gnosync("status", "--json", "--db", db_dsn).stdout)
        assert report["leader"] and len(report["standbys"]) == 1

        # While both run, only one ever holds the lock.
        for _ in range(20):
            assert asyncio.run(roles(db_dsn)).count("leader") == 1
            time.sleep(0.05)

        leader.kill()  # SIGKILL: PostgreSQL releases the lock when the socket closes
        leader.wait()
        before = last_height(db_dsn)
        wait_for(lambda: last_height(db_dsn) > before + 200, timeout=30, what="the takeover")
        assert asyncio.run(roles(db_dsn)) == ["leader"]
        tip_then = chain.tip
        wait_for(lambda: last_height(db_dsn) >= tip_then, timeout=60, what="the tip")
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(timeout=10) == 0
    finally:
        leader.kill()
        if standby is not None:
            standby.kill()
    assert asyncio.run(differences(db_dsn, url, 0, last_height(db_dsn))) == []


def test_two_components_in_one_schema_have_one_leader(devnet, db_dsn):
    """The tables are the schema's: a run with another component waits as a standby."""
    chain, url = devnet(blocks=2000)
    first = start("run", "--source", url, "--db", db_dsn, env={"GNOSYNC_COMPONENT": "block_sync"})
    second = None
    try:
        wait_for(lambda: last_height(db_dsn) >= 0, what="the first run's progress")
        second = start("run", "--source", url, "--db", db_dsn, env={"GNOSYNC_COMPONENT": "mirror"})
        wait_for(lambda: any("standby" in line for line in second.lines), what="the second to wait")
        assert asyncio.run(roles(db_dsn)) == ["leader", "standby"]
        wait_for(lambda: last_height(db_dsn) >= chain.tip, what="the tip")
        for _ in range(10):
            assert asyncio.run(roles(db_dsn)).count("leader") == 1
            time.sleep(0.05)
        assert asyncio.run(components_with_blocks(db_dsn)) == ["block_sync"]
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert asyncio.run(differences(db_dsn, url, 0, chain.tip)) == []


async def components_with_blocks(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT component FROM indexer.app_state WHERE last_block_h IS NOT NULL ORDER BY 1"
        )
        return [row[0] for row in rows]
    finally:
        await conn.close()


def test_sync_refuses_while_run_holds_the_lock(devnet, db_dsn):
    from gnosync.devnet import Faults

    # The running leader reads from a source that fails every request, so it holds the
    # lock without writing; `sync` reads the same chain from a healthy copy.
    _, broken = devnet(blocks=300, seed=4, faults=Faults(http_503=1.0, ops=("getBlocks",)))
    _, healthy = devnet(blocks=300, seed=4)
    runner = start("run", "--source", broken, "--db", db_dsn)
    try:
        wait_for(lambda: "leader" in asyncio.run(roles(db_dsn)), what="the leader")
        result = gnosync("sync", "--from", "0", "--to", "50", "--source", healthy, "--db", db_dsn)
        lines = [line for line in result.stderr.splitlines() if line.startswith("gnosync: error")]
        assert result.returncode != 0 and lines and "another gnosync process" in lines[0]
        assert last_height(db_dsn) == -1  # nothing was written
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=10)
