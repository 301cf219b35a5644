"""Readers on a read-only streaming replica (tests/pgpair.py): ``gnosync status`` and
``gnosync verify`` run there without writing anything, say they ran on a replica and how
far behind its primary, and the README's queries answer as on the primary."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timezone

import asyncpg
import orjson
import pytest

from gnosync.observe.status import status_lines
from gnosync.store.replica import ReplicaState, lag_warning
from gnosync.sync.verify import VerifyReport

from . import pgpair
from .test_faults import at, follow
from .test_readme_sql import readme_queries

needs_pair = pytest.mark.skipif(not pgpair.available(), reason="no PostgreSQL server binaries")

BLOCKS = 800


def gnosync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gnosync", *args, "--log-format", "json"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "GNOSYNC_SOURCE": ""},
    )


def as_json(*args: str) -> dict:
    result = gnosync(*args, "--json")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


@pytest.fixture
def pair():
    with pgpair.running_pair() as started:
        yield started


async def sync_to_tip(chain, url: str, dsn: str) -> None:
    run = await follow([url], dsn, batch_size=400)
    try:
        await run.wait(at(chain.tip), what="the tip")
    finally:
        await run.stop()


async def fetch_all(dsn: str, queries: list[str]) -> list[list[tuple]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [[tuple(row) for row in await conn.fetch(query)] for query in queries]
    finally:
        await conn.close()


@needs_pair
async def test_status_verify_and_readme_queries_on_a_caught_up_replica(devnet, pair):
    chain, url = devnet(blocks=BLOCKS, genesis_txs=6)
    await sync_to_tip(chain, url, pair.primary_dsn)
    await asyncio.to_thread(pair.wait_replayed)

    status = await asyncio.to_thread(as_json, "status", "--db", pair.replica_dsn)
    assert status["last_block_h"] == chain.tip and status["status"] == "stopped"
    replica = status["replica"]
    assert replica["in_recovery"] and replica["receiving"] and replica["replay_lag_s"] == 0
    assert "warning" not in status
    # A hot standby refuses every write: these exiting 0 is the proof that they write nothing.
    report = await asyncio.to_thread(as_json, "verify", "--db", pair.replica_dsn)
    assert report["ok"] and report["range"] == {"from": 0, "to": chain.tip}
    assert report["replica"]["replay_lag_s"] == 0
    text = await asyncio.to_thread(gnosync, "verify", "--db", pair.replica_dsn)
    assert text.returncode == 0, text.stderr
    head = text.stdout.splitlines()[0]
    assert head.endswith("clean; ran on a replica 0 s behind its primary (streaming, last replayed"
                         f" commit at {replica['last_replayed_at']})")
    # On the primary: no replica entry at all.
    primary = await asyncio.to_thread(as_json, "status", "--db", pair.primary_dsn)
    assert "replica" not in primary and primary["leader"] is None

    queries = readme_queries()
    answers = await fetch_all(pair.replica_dsn, queries)
    assert all(answers) and answers == await fetch_all(pair.primary_dsn, queries)


@needs_pair
async def test_a_replica_cut_off_from_its_primary_says_how_far_behind_it_is(devnet, pair):
    chain, url = devnet(blocks=BLOCKS)
    await sync_to_tip(chain, url, pair.primary_dsn)
    await asyncio.to_thread(pair.wait_replayed)
    await asyncio.to_thread(pair.cut_off)
    for _ in range(50):
        chain.append_block()
    await sync_to_tip(chain, url, pair.primary_dsn)  # commits the replica never gets

    status = await asyncio.to_thread(as_json, "status", "--db", pair.replica_dsn)
    assert status["last_block_h"] == BLOCKS  # what it replayed, consistent
    replica = status["replica"]
    assert replica["in_recovery"] and not replica["receiving"]
    assert replica["replay_lag_s"] > 0
    result = await asyncio.to_thread(gnosync, "verify", "--db", pair.replica_dsn)
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[0]
    assert f"heights 0..{BLOCKS}:" in head and "clean; ran on a replica " in head
    assert "s behind its primary (not receiving from a primary, last replayed commit at" in head


def test_a_large_replay_lag_is_a_warning_line():
    at_ = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    far = ReplicaState(receiving=True, last_replayed_at=at_, replay_lag_s=125.5)
    near = ReplicaState(receiving=True, last_replayed_at=at_, replay_lag_s=59.0)
    cut = ReplicaState(receiving=False, last_replayed_at=None, replay_lag_s=None)
    assert lag_warning(None) is None and lag_warning(near) is None
    assert lag_warning(far) == (
        "this replica is 125.5 s behind its primary: it lacks what was committed since;"
        " read from the primary, or check the replication")
    assert "unknown time" in lag_warning(cut) and "receives nothing from a primary" in lag_warning(cut)

    report = VerifyReport(start=0, end=9, blocks=10, replica=far)
    lines = report.text().splitlines()
    assert lines[0].endswith("clean; ran on a replica 125.5 s behind its primary (streaming,"
                             " last replayed commit at 2026-01-02T03:04:05+00:00)")
    assert lines[1] == f"warning: {lag_warning(far)}"
    assert report.to_json_dict()["replica"] == {
        "in_recovery": True, "receiving": True,
        "last_replayed_at": "2026-01-02T03:04:05+00:00", "replay_lag_s": 125.5}
    lines = status_lines({"last_block_h": 9, "replica": far.to_json_dict(), "warning": lag_warning(far)})
    assert lines[1] == ("replica       a replica 125.5 s behind its primary (streaming, last replayed"
                        " commit at 2026-01-02T03:04:05+00:00); the writers show on the primary")
    assert lines[2] == f"warning       {lag_warning(far)}"
    assert VerifyReport(start=0, end=9).text().splitlines() == [
        "heights 0..9: 0 blocks, 0 transactions, 0 checkpoints; clean"]
