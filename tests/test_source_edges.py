"""The source at its edges: endpoints that refuse gnosync, answers too large or too slow
to build whole, and a backup endpoint that accepts connections and never answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import orjson
import pytest

from gnosync.devnet import Faults
from gnosync.errors import SourceRejected
from gnosync.retry import RetryPolicy
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.sync.loop import sync_range
from gnosync.sync.syncer import Syncer

from .compare import differences
from .test_cli import gnosync, one_line_error

QUICK = RetryPolicy(initial=0.01, maximum=0.05, attempts=40)


@contextlib.contextmanager
def blackhole():
    """A loopback port that accepts connections, reads, and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/graphql/query"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


async def sync_with(urls, dsn, start, end, *, policy=QUICK, batch_size=500, **client):
    store = await Store.connect(dsn)
    await store.migrate()
    async with SourcePool(urls, **{"connect_timeout": 1.0, **client}) as pool:
        try:
            added = await sync_range(Syncer(pool, store), start, end, batch_size=batch_size, policy=policy)
            return added, {h.url: h for h in pool.health()}
        finally:
            await store.close()


async def test_an_endpoint_answering_403_is_left_for_a_healthy_one(devnet, db_dsn):
    _, refusing = devnet(blocks=800, seed=3, faults=Faults(reject_status=403))
    chain, healthy = devnet(blocks=800, seed=3)
    added, health = await sync_with([refusing, healthy], db_dsn, 0, 800)
    assert added == 801
    assert health[refusing].rejected and "check the credentials" in health[refusing].last_error
    assert await differences(db_dsn, healthy, 0, 800) == []


def test_run_with_one_refusing_endpoint_syncs_from_the_other(devnet, db_dsn):
    _, refusing = devnet(blocks=300, seed=3, faults=Faults(reject_status=403))
    _, healthy = devnet(blocks=300, seed=3)
    result = gnosync("sync", "--from", "0", "--to", "300", "--source", f"{refusing},{healthy}", "--db", db_dsn)
    assert result.returncode == 0, result.stderr
    assert "endpoint left out" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("status, says", [(401, "check the credentials"), (403, "check the credentials"),
                                          (404, "not a tx-indexer GraphQL path")])
def test_every_endpoint_refusing_is_one_clear_line(devnet, db_dsn, status, says):
    _, one = devnet(blocks=50, faults=Faults(reject_status=status))
    _, two = devnet(blocks=50, faults=Faults(reject_status=status))
    result = gnosync("sync", "--from", "0", "--to", "50", "--source", f"{one},{two}", "--db", db_dsn)
    line = one_line_error(result)
    assert result.returncode == 2 and says in line and one in line and two in line


async def test_refusals_mid_run_fail_over_and_all_refusing_stops(devnet, db_dsn):
    """An endpoint that starts refusing during a sync is cooled down and another serves;
    when the last one refuses too, the sync stops (it cannot be a passing fault)."""
    faults_a, faults_b = Faults(), Faults()
    chain, a = devnet(blocks=2000, seed=6, faults=faults_a)
    _, b = devnet(blocks=2000, seed=6, faults=faults_b)
    faults_a.reject_status = 403
    added, health = await sync_with([a, b], db_dsn, 0, 1000)
    assert added == 1001 and health[a].rejected
    faults_b.reject_status = 401
    with pytest.raises(SourceRejected, match="check the credentials"):
        await sync_with([a, b], db_dsn, 1001, 2000)


async def test_answers_over_the_size_limit_shrink_the_range_down_to_index_pages(devnet, db_dsn):
    """With a response limit smaller than one dense block's transactions, ranges halve
    down to one height and that height is read by pages of indexes: the sync still ends
    exact, and nothing asks the same too-large question forever."""
    # No genesis: its package deployments are single transactions larger than the limit.
    chain, url = devnet(blocks=400, seed=2, genesis=False, dense_start=100, dense_length=50, dense_txs=(20, 30))
    sizes = {h: [len(orjson.dumps(tx)) for tx in chain.transactions(h)] for h in range(1, chain.tip + 1)}
    limit = 2 * max(max(s) for s in sizes.values() if s) + 2048  # one transaction fits, a block does not
    assert any(sum(s) > 2 * limit for s in sizes.values())
    added, _ = await sync_with([url], db_dsn, 1, 400, max_response_bytes=limit,
                               policy=RetryPolicy(initial=0.001, maximum=0.01, attempts=400))
    assert added == 400
    assert await differences(db_dsn, url, 1, 400) == []


async def test_answers_too_slow_to_build_whole_shrink_the_range(devnet, db_dsn):
    """tx-indexer builds an answer in memory before its first byte; a server that needs
    1 ms per KB cannot answer a large range within a short timeout, but smaller ranges
    fit. The sync ends exact instead of timing out on the same range forever."""
    faults = Faults(build_ms_per_kb=2.0)
    chain, url = devnet(blocks=600, seed=4, dense_start=50, dense_length=120, dense_txs=(10, 20), faults=faults)
    added, health = await sync_with([url], db_dsn, 0, 600, timeout=1.0, batch_size=600,
                                    policy=RetryPolicy(initial=0.01, maximum=0.1, attempts=200))
    assert added == 601
    assert health[url].errors >= 1  # at least one answer did time out
    faults.clear()
    assert await differences(db_dsn, url, 0, 600) == []


async def test_a_blackholed_backup_never_holds_the_sync_up(devnet, db_dsn):
    """The backup accepts connections and never answers; its requests would wait out
    the whole-answer timeout (here ten minutes). Heights and confirmations go ahead
    without it, and no batch is sent its way."""
    chain, url = devnet(blocks=3000, seed=9)
    with blackhole() as dead:
        added, health = await asyncio.wait_for(
            sync_with([dead, url], db_dsn, 0, 3000, batch_size=200, timeout=600.0), 300
        )
    assert added == 3001
    assert health[dead].requests == 0 and health[dead].height is None
    assert await differences(db_dsn, url, 0, 3000) == []
