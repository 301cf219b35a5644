"""One writer per schema, against a real PostgreSQL: claims, standbys,
takeover, fencing of writes, lost connections."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from datetime import datetime

import asyncpg
import pytest

from gnosync.errors import StoreError
from gnosync.store import NotTheWriter, Store, WriterInfo, writer_lock_key
from gnosync.store.lock import leader_name, lock_tag, standby_lock_key, standby_name
from tests.test_store import CHAIN, counts, fetch, make_batch

# In-process stores name their connections with this process's pid and host.
LEADER = leader_name("indexer", "block_sync")
STANDBY = standby_name("indexer", "block_sync")
# Seconds a wait may take before the test gives up on it: never reached when what is
# awaited happens. Tests assert what happened and in which order, not how fast.
GUARD = 60.0


@pytest.fixture
async def stores(db_dsn):
    """``stores()`` opens a migrated Store on the test database; all closed afterwards."""
    opened: list[Store] = []

    async def open_store(**kwargs) -> Store:
        store = await Store.connect(db_dsn, **kwargs)
        opened.append(store)
        await store.migrate()
        return store

    yield open_store
    for store in opened:
        await store.close()


async def terminate(dsn: str, pid: int) -> None:
    rows = await fetch(dsn, "SELECT pg_terminate_backend($1)", pid)
    assert rows[0][0], f"backend {pid} was not there to terminate"


async def wait_until(predicate, timeout: float = GUARD, what: str = "condition") -> float:
    """Poll ``predicate`` (maybe async) until true; the seconds it took."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def leader_pid(store: Store) -> int:
    (leader,) = [w for w in await store.writers() if w.role == "leader"]
    return leader.backend_pid


async def standby_count(store: Store) -> int:
    return sum(w.role == "standby" for w in await store.writers())


# -- keys ---------------------------------------------------------------------------------


def test_lock_keys_are_stable_and_distinct():
    key = writer_lock_key("indexer")
    assert key == writer_lock_key("indexer")
    assert -(2**63) <= key < 2**63
    others = {writer_lock_key("other"), standby_lock_key("indexer"), standby_lock_key("other")}
    assert key not in others and len(others) == 3
    high, low = lock_tag(key)
    assert 0 <= high < 2**32 and 0 <= low < 2**32
    assert int.from_bytes((high << 32 | low).to_bytes(8, "big"), "big", signed=True) == key


async def test_lock_tag_matches_pg_locks(db_dsn):
    key = writer_lock_key("indexer")
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
        row = await conn.fetchrow(
            "SELECT classid, objid, objsubid FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert (row["classid"], row["objid"], row["objsubid"]) == (*lock_tag(key), 1)


# -- claiming -------------------------------------------------------------------------------


async def test_second_store_cannot_claim_without_waiting(stores):
    a, b = await stores(), await stores()
    assert not a.is_writer
    assert await a.claim_writer(wait=False)
    assert a.is_writer
    assert await a.claim_writer(wait=False)  # already held
    assert not await b.claim_writer(wait=False)
    assert not b.is_writer
    writers = await b.writers()
    assert [(w.role, w.application_name) for w in writers] == [("leader", LEADER)]
    # Another schema has its own tables, and its own lock.
    elsewhere = await stores(schema="elsewhere")
    assert await elsewhere.claim_writer(wait=False)


async def test_one_writer_per_schema_whatever_the_component(stores, db_dsn):
    """Components share the schema's tables: a second component must not lead too."""
    a = await stores()
    other = await stores(component="other")
    assert await a.claim_writer(wait=False)
    assert not await other.claim_writer(wait=False)
    with pytest.raises(NotTheWriter, match="is writing schema indexer"):
        await other.commit_batch(make_batch(0, 4), chain_id=CHAIN, status="syncing")
    with pytest.raises(NotTheWriter):
        await other.state.set_status("stopped")
    assert await counts(db_dsn) == (0, 0, 0)
    # The other component sees the leader (named by its own component) and waits for it.
    leaders: list[WriterInfo | None] = []
    claim = asyncio.create_task(other.claim_writer(wait=True, poll=0.1, on_standby=leaders.append))
    await wait_until(lambda: leaders, what="the standby callback")
    assert leaders[0] is not None and leaders[0].application_name == LEADER
    assert [(w.role, w.application_name) for w in await a.writers()] == [
        ("leader", LEADER), ("standby", standby_name("indexer", "other")),
    ]
    await a.release_writer()
    assert await asyncio.wait_for(claim, 5.0)
    await other.commit_batch(make_batch(0, 4), chain_id=CHAIN, status="syncing")
    assert (await counts(db_dsn))[0] == 5


async def test_standby_takes_over_after_release(stores):
    a, b = await stores(), await stores()
    assert await a.claim_writer(wait=False)
    seen: list[WriterInfo | None] = []

    async def on_standby(leader: WriterInfo | None) -> None:
        seen.append(leader)

    claim = asyncio.create_task(b.claim_writer(wait=True, poll=0.1, on_standby=on_standby))
    await wait_until(lambda: seen, what="the standby callback")
    assert not claim.done()
    assert seen[0] is not None and seen[0].role == "leader"
    assert seen[0].backend_pid == await leader_pid(a)
    assert (seen[0].pid, seen[0].host) == (os.getpid(), socket.gethostname())
    assert seen[0].application_name == LEADER

    await a.release_writer()
    assert not a.is_writer
    await a.release_writer()  # idempotent
    assert await asyncio.wait_for(claim, GUARD)
    assert b.is_writer and len(seen) == 1
    assert [(w.role, w.application_name) for w in await a.writers()] == [("leader", LEADER)]
    # The old leader's writes are refused now.
    with pytest.raises(NotTheWriter):
        await a.commit_batch(make_batch(0, 1), chain_id=CHAIN, status="syncing")


async def test_standby_takes_over_when_leader_backend_is_terminated(stores, db_dsn):
    a, b = await stores(), await stores()
    assert await a.claim_writer(wait=False)
    calls: list[WriterInfo | None] = []
    claim = asyncio.create_task(b.claim_writer(wait=True, poll=0.1, on_standby=calls.append))
    await wait_until(lambda: calls, what="the standby callback")

    await terminate(db_dsn, await leader_pid(a))
    assert await asyncio.wait_for(claim, GUARD)
    assert b.is_writer

    # The old leader finds out at its next write, which stores nothing.
    with pytest.raises(StoreError) as info:
        await a.commit_batch(make_batch(0, 2), chain_id=CHAIN, status="syncing")
    assert info.value.retryable and not isinstance(info.value, NotTheWriter)
    assert not a.is_writer
    with pytest.raises(NotTheWriter):
        await a.commit_batch(make_batch(0, 2), chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (0, 0, 0)
    await b.commit_batch(make_batch(0, 2), chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (3, 3, 1)


async def test_claim_stops_when_asked(stores):
    a, b = await stores(), await stores()
    assert await a.claim_writer(wait=False)
    stop = asyncio.Event()
    waiting = asyncio.Event()
    # A poll far longer than any guard: the claim can only return because of the stop.
    claim = asyncio.create_task(
        b.claim_writer(wait=True, poll=3600.0, stop=stop, on_standby=lambda _: waiting.set())
    )
    await asyncio.wait_for(waiting.wait(), GUARD)
    assert await standby_count(a) == 1
    stop.set()
    assert await asyncio.wait_for(claim, GUARD) is False
    assert not b.is_writer
    await wait_until(lambda: _no_standby(a), what="the standby to go")


async def _no_standby(store: Store) -> bool:
    return await standby_count(store) == 0


async def test_cancelled_claim_leaves_no_connection(stores):
    a, b = await stores(), await stores()
    assert await a.claim_writer(wait=False)
    claim = asyncio.create_task(b.claim_writer(wait=True, poll=0.1))
    await wait_until(lambda: standby_count(a), what="a standby")
    claim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await claim
    await wait_until(lambda: _no_standby(a), what="the standby to go")
    assert not b.is_writer


async def test_writers_reports_leader_and_standbys(stores):
    a, b, c, observer = await stores(), await stores(), await stores(), await stores()
    assert await observer.writers() == []
    assert await a.claim_writer(wait=False)
    stop = asyncio.Event()
    claims = [
        asyncio.create_task(s.claim_writer(wait=True, poll=0.1, stop=stop)) for s in (b, c)
    ]
    await wait_until(lambda: _standbys_are(observer, 2), what="two standbys")
    writers = await observer.writers()
    assert [w.role for w in writers] == ["leader", "standby", "standby"]
    assert [w.application_name for w in writers] == [LEADER, STANDBY, STANDBY]
    assert len({w.backend_pid for w in writers}) == 3
    for w in writers:
        assert isinstance(w.backend_start, datetime)
        assert w.client_addr in ("127.0.0.1", "::1", None)
        assert w.to_json_dict()["backend_pid"] == w.backend_pid
        assert w.to_json_dict()["pid"] == w.pid == os.getpid()
    assert writers[1].backend_start <= writers[2].backend_start
    stop.set()
    assert await asyncio.gather(*claims) == [False, False]
    await wait_until(lambda: _standbys_are(observer, 0), what="the standbys to go")
    await a.release_writer()
    await wait_until(lambda: _writers_are(observer, 0), what="the leader to go")


async def _standbys_are(store: Store, n: int) -> bool:
    return await standby_count(store) == n


async def _writers_are(store: Store, n: int) -> bool:
    return len(await store.writers()) == n


# -- fencing --------------------------------------------------------------------------------


async def test_store_without_the_lock_cannot_write(stores, db_dsn):
    a, b = await stores(), await stores()
    assert await a.claim_writer(wait=False)
    with pytest.raises(NotTheWriter) as info:
        await b.commit_batch(make_batch(0, 4), chain_id=CHAIN, status="syncing")
    error = info.value
    assert isinstance(error, StoreError) and not error.retryable
    message = str(error)
    pid = await leader_pid(a)
    assert message.startswith(
        f"another gnosync process, leader pid {os.getpid()} on host {socket.gethostname()} since "
    )
    assert f" (PostgreSQL backend pid {pid} from " in message
    assert "), is writing schema indexer at " in message
    assert message.endswith("stop it, or let this one wait as a standby (gnosync run)")
    assert error.holder is not None and error.holder.backend_pid == pid
    assert await counts(db_dsn) == (0, 0, 0)

    # State writes are fenced too; reads are not.
    with pytest.raises(NotTheWriter):
        await b.state.record_error("should not land")
    with pytest.raises(NotTheWriter):
        await b.state.set_status("stopped")
    assert await b.state.get_state() is None

    await a.commit_batch(make_batch(0, 4), chain_id=CHAIN, status="syncing")
    await a.state.set_status("synced")
    assert (await b.state.get_state()).status == "synced"
    assert await b.stored_bounds() == (0, 4)

    # Once released, a store without the lock writes again through its pool.
    await a.release_writer()
    await b.commit_batch(make_batch(5, 6), chain_id=CHAIN, status="syncing")
    assert await b.stored_bounds() == (0, 6)


async def test_concurrent_pool_writes_of_one_store_queue(stores):
    """Without a claim, writes go through the pool; one store's writes never refuse each other."""
    a = await stores()
    await asyncio.gather(
        a.commit_batch(make_batch(0, 2), chain_id=CHAIN, status="syncing"),
        a.state.record_error("meanwhile"),
        a.commit_batch(make_batch(3, 5), chain_id=CHAIN, status="syncing"),
    )
    assert await a.stored_bounds() == (0, 5)


async def test_commits_run_on_the_writer_connection(stores, db_dsn):
    a = await stores()
    assert await a.claim_writer(wait=False)
    blocker = await asyncpg.connect(db_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE indexer.blocks IN SHARE MODE")
            task = asyncio.create_task(
                a.commit_batch(make_batch(0, 9), chain_id=CHAIN, status="syncing")
            )
            waiting = await _lock_waiter(blocker)
            assert waiting == (await leader_pid(a), LEADER)
        await asyncio.wait_for(task, GUARD)
    finally:
        await blocker.close()
    assert await counts(db_dsn) == (10, 9, 1)
    await a.state.record_error("through the writer too")
    assert (await a.state.get_state()).error_count == 1


async def _lock_waiter(conn: asyncpg.Connection) -> tuple[int, str]:
    found: list = []

    async def check() -> bool:
        row = await conn.fetchrow(
            "SELECT pid, application_name FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if row is not None:
            found.append((row["pid"], row["application_name"]))
        return row is not None

    await wait_until(check, what="a commit waiting on the table lock")
    return found[0]


async def test_lost_writer_connection_then_claim_again(stores, db_dsn):
    a = await stores()
    assert await a.claim_writer(wait=False)
    await a.commit_batch(make_batch(0, 1), chain_id=CHAIN, status="syncing")
    await terminate(db_dsn, await leader_pid(a))

    with pytest.raises(StoreError) as info:
        await a.commit_batch(make_batch(2, 3), chain_id=CHAIN, status="syncing")
    assert info.value.retryable
    assert "lost the connection to PostgreSQL" in str(info.value)
    assert not a.is_writer
    assert await a.stored_bounds() == (0, 1)

    assert await a.claim_writer(wait=False)
    assert a.is_writer
    await a.commit_batch(make_batch(2, 3), chain_id=CHAIN, status="syncing")
    assert await a.stored_bounds() == (0, 3)
    assert (await a.state.get_state()).last_block_h == 3


async def test_writer_connection_lost_mid_commit(stores, db_dsn):
    a = await stores()
    assert await a.claim_writer(wait=False)
    blocker = await asyncpg.connect(db_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE indexer.transactions IN SHARE MODE")
            task = asyncio.create_task(
                a.commit_batch(make_batch(0, 99, txs_per_block=lambda h: 1), chain_id=CHAIN,
                               status="syncing")
            )
            pid, _ = await _lock_waiter(blocker)
            await terminate(db_dsn, pid)
            with pytest.raises(StoreError) as info:
                await task
    finally:
        await blocker.close()
    assert info.value.retryable and not a.is_writer
    assert await counts(db_dsn) == (0, 0, 0)
    assert await a.claim_writer(wait=False)
    await a.commit_batch(make_batch(0, 99, txs_per_block=lambda h: 1), chain_id=CHAIN,
                         status="syncing")
    assert await counts(db_dsn) == (100, 100, 1)


async def test_cancelled_commit_on_the_writer_connection_stores_nothing(stores, db_dsn):
    a = await stores()
    assert await a.claim_writer(wait=False)
    batch = make_batch(0, 999, txs_per_block=lambda h: 1)
    blocker = await asyncpg.connect(db_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE indexer.transactions IN SHARE MODE")
            task = asyncio.create_task(a.commit_batch(batch, chain_id=CHAIN, status="syncing"))
            await _lock_waiter(blocker)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await blocker.close()
    assert await counts(db_dsn) == (0, 0, 0)
    # The writer connection is clean again, or was dropped; either way writing resumes.
    if not a.is_writer:
        assert await a.claim_writer(wait=False)
    await a.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (1000, 1000, 1)


async def test_cancellation_at_any_moment_on_the_writer_connection(stores, db_dsn):
    """All or nothing, and the writer connection never stays inside a transaction."""
    a = await stores()
    batch = make_batch(0, 1999, txs_per_block=lambda h: 1)
    outcomes = set()
    for delay in (0.0, 0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1):
        if not a.is_writer:
            assert await a.claim_writer(wait=False)
        task = asyncio.create_task(a.commit_batch(batch, chain_id=CHAIN, status="syncing"))
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        found = await counts(db_dsn)
        assert found in ((0, 0, 0), (2000, 2000, 1))
        outcomes.add(found)
        if a.is_writer:
            rows = await fetch(db_dsn, "SELECT state FROM pg_stat_activity WHERE pid = $1",
                               await leader_pid(a))
            assert rows[0]["state"] == "idle"
        if found != (0, 0, 0):
            await fetch(db_dsn, "TRUNCATE indexer.checkpoints, indexer.blocks, indexer.transactions, indexer.app_state")
    assert (0, 0, 0) in outcomes
    if not a.is_writer:
        assert await a.claim_writer(wait=False)
    await a.commit_batch(batch, chain_id=CHAIN, status="syncing")
    assert await counts(db_dsn) == (2000, 2000, 1)  # seen from another connection: committed


async def test_close_releases_the_lock(stores, db_dsn):
    a = await Store.connect(db_dsn)
    await a.migrate()
    b = await stores()
    assert await a.claim_writer(wait=False)
    claim = asyncio.create_task(b.claim_writer(wait=True, poll=0.1))
    await a.close()
    assert await asyncio.wait_for(claim, GUARD)


# -- health and recovery ----------------------------------------------------------------------


async def test_health_checks_pool_and_writer(stores, db_dsn):
    a = await stores()
    await a.health()
    assert await a.claim_writer(wait=False)
    await a.health()
    await terminate(db_dsn, await leader_pid(a))
    with pytest.raises(StoreError) as info:
        await a.health()
    assert info.value.retryable
    assert not a.is_writer
    await a.health()  # only the pool now, which is fine


async def test_pool_recovers_after_its_connections_are_terminated(db_dsn, pg_server_dsn):
    store = await Store.connect(db_dsn, min_size=3, max_size=3)
    try:
        await store.migrate()
        await store.commit_batch(make_batch(0, 4), chain_id=CHAIN, status="syncing")
        await asyncio.gather(*(store.ping() for _ in range(3)))
        admin = await asyncpg.connect(db_dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t"
            )
        finally:
            await admin.close()
        assert killed >= 1

        async def eventually(call):
            for attempt in range(2):
                try:
                    return await call()
                except StoreError as exc:
                    assert exc.retryable and attempt == 0, exc
            raise AssertionError("unreachable")

        assert await eventually(store.stored_bounds) == (0, 4)
        await eventually(store.ping)
        await eventually(
            lambda: store.commit_batch(make_batch(5, 6), chain_id=CHAIN, status="syncing")
        )
        # Every pooled connection works again.
        await asyncio.gather(*(store.stored_bounds() for _ in range(6)))
        await store.health()
        assert (await store.state.get_state()).last_block_h == 6
    finally:
        await store.close()


# -- a leader that is killed ------------------------------------------------------------------

HOLDER = """
import asyncio, sys
import asyncpg
from gnosync.store import writer_lock_key

async def main():
    conn = await asyncpg.connect(sys.argv[1], server_settings={"application_name": sys.argv[2]})
    await conn.execute("SELECT pg_advisory_lock($1)", writer_lock_key("indexer"))
    print("locked", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_killed_leader_process_is_replaced_within_seconds(stores, db_dsn):
    store = await stores()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        db_dsn,
        LEADER,
        stdout=asyncio.subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), GUARD)
        assert line.strip() == b"locked"
        assert not await store.claim_writer(wait=False)
        leaders: list[WriterInfo | None] = []
        claim = asyncio.create_task(
            store.claim_writer(wait=True, poll=0.5, on_standby=leaders.append)
        )
        await wait_until(lambda: leaders, what="the standby callback")
        assert leaders[0] is not None and leaders[0].application_name == LEADER
        with pytest.raises(NotTheWriter):
            await store.commit_batch(make_batch(0, 0), chain_id=CHAIN, status="syncing")

        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(claim, GUARD)
        assert store.is_writer
        await store.commit_batch(make_batch(0, 0), chain_id=CHAIN, status="syncing")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
