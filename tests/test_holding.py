"""A bad block far ahead, stuck detection, the error status, and liveness through a long
catch-up: the follow loop against the devnet over loopback and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from gnosync.devnet import Faults
from gnosync.observe.http import Liveness, ObserveServer
from gnosync.retry import RetryPolicy
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.sync.loop import Follower
from gnosync.sync.syncer import Syncer

from .compare import differences
from .test_faults import Running, counted


async def follow(url: str, dsn: str, *, policy: RetryPolicy, **options) -> Running:
    store = await Store.connect(dsn)
    await store.migrate()
    pool = SourcePool([url], connect_timeout=1.0)
    follower = Follower(Syncer(pool, store), interval=0.05, policy=policy, **{"batch_size": 10_000, **options})
    return Running(follower.syncer, follower)


async def test_a_bad_block_far_ahead_holds_just_below_it_and_refetches_only_from_it(devnet, db_dsn):
    """Block 7777 of 20,000 links to the wrong parent. The sync commits up to 7776, says
    so in app_state, retries only the range from 7777 (no restart of the whole pipeline),
    and resumes by itself once the source serves the right block."""
    faults = Faults(bad_link_height=7777)
    chain, url = devnet(blocks=20_000, seed=4, faults=faults)
    run = await follow(url, db_dsn, policy=RetryPolicy(initial=0.2, maximum=1.0))
    try:
        state = await run.wait(
            lambda s: s.last_block_h == 7776 and s.status == "error", timeout=120, what="the hold at 7776"
        )
        assert "block 7777 failed check 'last_block_hash'" in state.last_error
        endpoint = run.syncer.source.endpoints[0]
        requests, held = endpoint.health.requests, counted(run, "gnosync_retries_total", cause="bad_data")
        await run.wait(
            lambda s: counted(run, "gnosync_retries_total", cause="bad_data") >= held + 5,
            timeout=120, what="five more retries",
        )
        retried = counted(run, "gnosync_retries_total", cause="bad_data") - held
        # Per retry: the blocks from 7777, their transactions, and a look at the stored
        # block 7776 on the source (is it another chain?); not a pipeline of probes and
        # ranges rebuilt from 7777 on every time.
        assert endpoint.health.requests - requests <= 4 * (retried + 1)
        assert (await run.state()).last_block_h == 7776
        faults.bad_link_height = -1
        await run.wait(lambda s: s.last_block_h == chain.tip and s.status == "synced", timeout=120,
                       what="the tip once the block is fixed")
    finally:
        await run.stop()
    assert await differences(db_dsn, url, 0, chain.tip) == []


async def test_the_same_error_over_and_over_is_reported_as_stuck(devnet, db_dsn):
    faults = Faults(bad_link_height=300)
    chain, url = devnet(blocks=500, seed=2, faults=faults)
    run = await follow(url, db_dsn, policy=RetryPolicy(initial=0.01, maximum=0.05), stuck_after=4)
    try:
        await run.wait(lambda s: run.follower.stuck is not None, what="stuck")
        assert counted(run, "gnosync_stuck") == 1
        assert "block 300 failed check" in run.follower.stuck
        assert (await run.state()).last_block_h == 299
        faults.bad_link_height = -1
        await run.wait(lambda s: s.last_block_h == chain.tip, what="the tip")
        assert run.follower.stuck is None and counted(run, "gnosync_stuck") == 0
    finally:
        await run.stop()


async def test_retries_that_a_commit_soon_follows_never_flip_the_status(devnet, db_dsn):
    """status=error means progress is blocked: transient 503s during a healthy catch-up
    are counted as retries but never written to app_state."""
    faults = Faults(http_503=0.15, seed=3)
    chain, url = devnet(blocks=4000, seed=5, faults=faults)
    run = await follow(url, db_dsn, policy=RetryPolicy(initial=0.01, maximum=5.0), batch_size=100)
    seen: set[str] = set()
    try:
        await run.wait(lambda s: seen.add(s.status) or s.last_block_h == chain.tip, what="the tip")
    finally:
        await run.stop()
    assert counted(run, "gnosync_retries_total", cause="http_status") >= 1
    assert "error" not in seen


async def test_liveness_stays_true_through_a_long_catch_up(devnet, db_dsn):
    """A whole catch-up is one turn of the loop; /healthz must still answer 200 all the
    way through, because every commit, answer and retry beats. The window is scaled
    down (1.5 s) against a source that needs 0.1 s per answer, so the catch-up lasts
    many windows."""
    faults = Faults(latency=0.1)
    chain, url = devnet(blocks=3000, seed=7, faults=faults)
    liveness = Liveness(window=1.5)
    run = await follow(url, db_dsn, policy=RetryPolicy(initial=0.05, maximum=0.5), batch_size=50,
                       concurrency=1, liveness=liveness)

    async def ready() -> tuple[bool, str]:
        return True, "ok"

    server = ObserveServer("127.0.0.1", 0, metrics=run.follower.metrics, ready=ready,
                           alive=liveness.alive, status=lambda: asyncio.sleep(0, {}))
    await server.start()
    answers: list[int] = []
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                state = await run.state()
                if state is not None and state.last_block_h == chain.tip:
                    break
                async with http.get(f"{server.url}/healthz") as response:
                    answers.append(response.status)
                await asyncio.sleep(0.3)
    finally:
        await server.stop()
        await run.stop()
    assert time.monotonic() - started > 3 * liveness.window, "the catch-up should outlast several windows"
    assert answers and set(answers) == {200}


def test_a_stuck_run_says_so_on_readyz_and_in_its_log(devnet, db_dsn):
    """`gnosync run` as an operator runs it: the same bad block over and over makes
    /readyz answer 503 naming it, and one error line says what to look at; once the
    block is served right, /readyz is ready again."""
    from .test_cli import get_url, log_events, serving_url, start, wait_for

    faults = Faults(bad_link_height=300)
    chain, url = devnet(blocks=400, seed=2, faults=faults)
    env = {"GNOSYNC_STUCK_AFTER": "3", "GNOSYNC_RETRY_INITIAL": "0.01", "GNOSYNC_RETRY_MAX": "0.1"}
    proc = start("run", "--source", url, "--db", db_dsn, "--interval", "0.2", env=env)
    try:
        ready = serving_url(proc) + "/readyz"
        status, body = wait_for(lambda: (lambda r: r if r[0] == 503 and b"stuck" in r[1] else None)(get_url(ready)),
                                what="/readyz to say stuck")
        assert b"block 300 failed check" in body
        (line,) = wait_for(lambda: log_events(proc, "sync stuck"), what="the stuck log line")
        assert line["level"] == "error" and line["height"] == 300
        faults.bad_link_height = -1
        wait_for(lambda: get_url(ready)[0] == 200, what="/readyz ready again")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
