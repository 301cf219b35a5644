"""Checkpoints, ``gnosync verify`` and ``gnosync repair`` against a real PostgreSQL and the
devnet; damage is made by editing the database with SQL, as an accident or a person would."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import asyncpg
import orjson
import pytest

from gnosync.source.pool import SourcePool
from gnosync.store import NotTheWriter, Store, boundaries, checkpoint_checksum
from gnosync.sync.syncer import batches, fetch_batch
from gnosync.sync.validate import validate_batch
from gnosync.sync.repair import merge_ranges, plan_repair, repair
from gnosync.sync.verify import Problem, VerifyReport, audit

from .compare import differences
from .conftest import database_of, with_login

EVERY = 100  # checkpoint interval of the synced test databases
TIP = 1200
CLI_ENV = {"GNOSYNC_CHECKPOINT_EVERY": str(EVERY), "GNOSYNC_SOURCE": ""}


def gnosync(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gnosync", *args, "--log-format", "json"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **CLI_ENV, **(env or {})},
    )


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch(dsn: str, query: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def checkpoints_of(dsn: str, schema: str = "indexer") -> list[tuple]:
    rows = await fetch(
        dsn,
        f'SELECT height, block_hash, last_tx_hash, checksum, blocks, transactions'
        f' FROM "{schema}".checkpoints ORDER BY height',
    )
    return [tuple(row) for row in rows]


async def commit_range(store: Store, source: SourcePool, start: int, end: int, size: int) -> None:
    """Fetch, validate and commit ``start..end`` in batches of exactly ``size`` heights."""
    for first, last in batches(start, end, size):
        batch = await fetch_batch(source.endpoint_for(last), first, last)
        validate_batch(batch, await store.block_ref(first - 1) if first else None, None)
        await store.commit_batch(batch, chain_id=batch.blocks[0].chain_id, status="syncing")


async def synced(url: str, dsn: str, *, size: int = 64, every: int = EVERY, schema: str = "indexer",
                 end: int = TIP) -> None:
    store = await Store.connect(dsn, schema=schema, checkpoint_every=every)
    try:
        await store.migrate()
        async with SourcePool([url]) as source:
            await commit_range(store, source, 0, end, size)
    finally:
        await store.close()


def found(report: VerifyReport) -> dict[str, list[int]]:
    kinds: dict[str, list[int]] = {}
    for problem in report.problems:
        kinds.setdefault(problem.kind, []).append(problem.height)
    return kinds


async def heights_with_txs(dsn: str, at_least: int) -> list[int]:
    rows = await fetch(
        dsn,
        "SELECT height FROM indexer.blocks WHERE num_txs >= $1 AND height % $2 <> 0"
        " AND height > 0 ORDER BY height",
        at_least, EVERY,
    )
    return [row["height"] for row in rows]


def next_boundary(height: int) -> int:
    return -(-height // EVERY) * EVERY


# -- the checksum, by hand ---------------------------------------------------------------------


def test_checksum_definition_by_hand():
    lines = "abc\n" + "7:h7\n" + "7:0:t0\n" + "7:1:t1\n" + "8:h8\n"
    assert checkpoint_checksum(
        "abc", [(8, "h8"), (7, "h7")], [(7, 1, "t1"), (7, 0, "t0")]
    ) == hashlib.sha256(lines.encode()).hexdigest()
    # The first checkpoint chains from the empty string.
    assert checkpoint_checksum(None, [(0, "")]) == hashlib.sha256(b"\n0:\n").hexdigest()
    assert list(boundaries(0, 350, 100)) == [100, 200, 300]
    assert list(boundaries(100, 100, 100)) == [100]
    assert list(boundaries(101, 199, 100)) == []
    assert list(boundaries(0, 10, 0)) == []


def test_plan_repair_expands_and_merges():
    report = VerifyReport(start=0, end=1000, problems=[
        Problem("link", 10, ""),                      # 9..10
        Problem("tx_count", 11, ""),                  # 11 (adjacent: merged)
        Problem("missing", 50, "", (50, 52)),
        Problem("checkpoint", 300, "", (201, 300)),
        Problem("source_hash", 250, ""),              # inside the segment
        Problem("orphan_tx", 900, ""),                # in range: re-synced
        Problem("orphan_tx", 5000, ""),               # outside: deleted only
    ])
    assert plan_repair(report) == ([(9, 11), (50, 52), (201, 300), (900, 900)], [(5000, 5000)])
    assert merge_ranges([(5, 6), (1, 2), (3, 4), (8, 9), (2, 2)]) == [(1, 6), (8, 9)]


# -- checkpoints -------------------------------------------------------------------------------


async def test_checkpoints_at_multiples_across_batch_boundaries(devnet, db_dsn):
    chain, url = devnet(blocks=1000, seed=3)
    store = await Store.connect(db_dsn, checkpoint_every=EVERY)
    try:
        await store.migrate()
        async with SourcePool([url]) as source:
            # Batches of 64 (not dividing 100), then one block at a time as at the tip.
            await commit_range(store, source, 0, 839, 64)
            await commit_range(store, source, 840, 1000, 1)
    finally:
        await store.close()
    stored = await checkpoints_of(db_dsn)
    assert [row[0] for row in stored] == list(range(EVERY, 1001, EVERY))

    # The Python definition gives the checksums SQL wrote, chained from the first.
    blocks = await fetch(db_dsn, "SELECT height, hash FROM indexer.blocks ORDER BY height")
    txs = await fetch(db_dsn, "SELECT block_height, tx_index, hash FROM indexer.transactions")
    previous, low = None, -1
    for height, block_hash, last_tx_hash, checksum, n_blocks, n_txs in stored:
        seg_blocks = [(b["height"], b["hash"]) for b in blocks if low < b["height"] <= height]
        seg_txs = sorted(tuple(t) for t in txs if low < t["block_height"] <= height)
        assert checksum == checkpoint_checksum(previous, seg_blocks, seg_txs)
        assert block_hash == chain.block_hash(height)
        assert (n_blocks, n_txs) == (len(seg_blocks), len(seg_txs))
        assert last_tx_hash == (seg_txs[-1][2] if seg_txs else None)
        previous, low = checksum, height
    assert stored[0][4] == EVERY + 1  # the first covers genesis too
    assert any(row[5] for row in stored)

    # Batching does not matter: one big batch gives the same checkpoints; 0 writes none.
    await synced(url, db_dsn, size=1001, schema="whole", end=1000)
    assert await checkpoints_of(db_dsn, "whole") == stored
    await synced(url, db_dsn, size=500, schema="none", end=1000, every=0)
    assert await checkpoints_of(db_dsn, "none") == []


# -- verify --------------------------------------------------------------------------------------


async def test_clean_database_verifies_clean(devnet, db_dsn):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    result = gnosync("verify", "--db", db_dsn, "--json")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["counts"] == {}
    assert report["range"] == {"from": 0, "to": TIP} and report["blocks"] == TIP + 1
    assert report["checkpoints"] == TIP // EVERY and report["transactions"] > 0
    result = gnosync("verify", "--db", db_dsn, "--against-source", "--source", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("clean") and f"for 0..{TIP}" in result.stdout


async def test_verify_reports_damage_and_exits_1(devnet, db_dsn):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    await execute(db_dsn, "DELETE FROM indexer.blocks WHERE height = 537")
    result = gnosync("verify", "--db", db_dsn)
    assert result.returncode == 1, result.stderr
    assert "error" not in result.stderr and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("DAMAGED")
    assert lines[1].startswith("missing: 1 height at 537;")
    assert lines[2].startswith("checkpoint: 1 height at 600;")
    # A range sees only its own heights (checkpoint 600 vouches for 501..600).
    result = gnosync("verify", "--db", db_dsn, "--from", "500", "--to", "540", "--json")
    report = orjson.loads(result.stdout)
    assert result.returncode == 1 and report["counts"] == {"missing": 1}
    assert report["problems"] == [{
        "kind": "missing", "height": 537, "detail": "block 537 is not stored", "heights": [537, 537],
    }]
    assert gnosync("verify", "--db", db_dsn, "--from", "601").returncode == 0


async def _damage(case: str, dsn: str) -> tuple[list[str], dict[str, list[int]]]:
    """SQL that damages a synced database, and what verify must find."""
    if case == "deleted block":
        return ["DELETE FROM indexer.blocks WHERE height = 537"], {"missing": [537], "checkpoint": [600]}
    if case == "deleted boundary block":
        return ["DELETE FROM indexer.blocks WHERE height = 600"], {"missing": [600], "checkpoint": [700]}
    if case == "broken link":
        return ["UPDATE indexer.blocks SET last_block_hash = 'elsewhere' WHERE height = 537"], {"link": [537]}
    if case == "broken total":
        return ["UPDATE indexer.blocks SET total_txs = total_txs + 1 WHERE height = 537"], {"total_txs": [537, 538]}
    if case == "deleted transaction":
        h = (await heights_with_txs(dsn, 2))[0]
        return (
            [f"DELETE FROM indexer.transactions WHERE block_height = {h} AND tx_index = 0"],
            {"tx_count": [h], "tx_index": [h], "checkpoint": [next_boundary(h)]},
        )
    if case == "extra transaction":
        h = (await heights_with_txs(dsn, 1))[0]
        return (
            [
                "INSERT INTO indexer.transactions SELECT block_height, tx_index + 1000, 'extra', success,"
                " gas_wanted, gas_used, gas_fee_amount, gas_fee_denom, memo, content_raw, messages,"
                f" response FROM indexer.transactions WHERE block_height = {h} AND tx_index = 0"
            ],
            # The copy has no message rows of its own.
            {"tx_count": [h], "tx_index": [h], "checkpoint": [next_boundary(h)], "derived": [h]},
        )
    if case == "orphan transaction":
        return (
            [
                "SET session_replication_role = replica",  # lets the row past the foreign key
                "INSERT INTO indexer.transactions SELECT 5000, 0, 'orphan', success, gas_wanted,"
                " gas_used, gas_fee_amount, gas_fee_denom, memo, content_raw, messages, response"
                " FROM indexer.transactions LIMIT 1",
            ],
            {"orphan_tx": [5000]},
        )
    if case == "corrupt checkpoint":
        return (
            ["UPDATE indexer.checkpoints SET checksum = repeat('0', 64) WHERE height = 500"],
            {"checkpoint": [500]},  # and not 600, chained from it
        )
    if case == "changed hash":
        return (
            ["UPDATE indexer.blocks SET hash = 'forged' WHERE height = 537"],
            {"link": [538], "checkpoint": [600], "source_hash": [537]},
        )
    if case == "changed top hash":
        return (
            [f"UPDATE indexer.blocks SET hash = 'forged' WHERE height = {TIP}"],
            {"checkpoint": [TIP], "state": [TIP], "source_hash": [TIP]},
        )
    if case == "state behind":
        return ["UPDATE indexer.app_state SET last_block_h = 1150"], {"state": [TIP]}
    if case == "top blocks lost":
        return (
            [f"DELETE FROM indexer.blocks WHERE height > {TIP - 5}"],
            {"missing": [TIP - 4], "state": [TIP - 5]},
        )
    if case == "duplicate hash":
        return (
            [
                # Only without the unique index can a hash be stored twice.
                "ALTER TABLE indexer.blocks DROP CONSTRAINT blocks_hash_key",
                "UPDATE indexer.blocks SET hash = (SELECT hash FROM indexer.blocks WHERE height = 536)"
                " WHERE height = 537",
            ],
            {"duplicate_hash": [536, 537], "link": [538], "checkpoint": [600]},
        )
    if case == "missing derived rows":
        h = (await heights_with_txs(dsn, 1))[0]
        return [f"DELETE FROM indexer.messages WHERE block_height = {h}"], {"derived": [h]}
    if case == "wrong balance":
        (row,) = await fetch(
            dsn, "SELECT token, address, last_height FROM indexer.grc20_balances"
            " ORDER BY last_height, token, address LIMIT 1"
        )
        return (
            [f"UPDATE indexer.grc20_balances SET balance = balance + 7 WHERE token = '{row[0]}'"
             f" AND address = '{row[1]}'"],
            {"balance": [row[2]]},
        )
    raise AssertionError(case)


CASES = [
    "deleted block", "deleted boundary block", "broken link", "broken total", "deleted transaction",
    "extra transaction", "orphan transaction", "corrupt checkpoint", "changed hash",
    "changed top hash", "state behind", "top blocks lost", "duplicate hash",
    "missing derived rows", "wrong balance",
]


@pytest.mark.parametrize("case", CASES)
async def test_damage_is_found_and_repaired(devnet, db_dsn, case):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    clean = await checkpoints_of(db_dsn)
    statements, expected = await _damage(case, db_dsn)
    await execute(db_dsn, *statements)
    against = "source_hash" in expected
    store = await Store.connect(db_dsn, checkpoint_every=EVERY)
    try:
        async with SourcePool([url]) as source:
            report = await audit(store, source=source if against else None)
            assert found(report) == expected, report.text()
            if against:  # without the source, all but the source's own finding
                plain = await audit(store)
                assert found(plain) == {k: v for k, v in expected.items() if k != "source_hash"}
            result = await repair(store, source, against_source=against, batch_size=64)
    finally:
        await store.close()
    assert not result.before.ok
    assert result.after.ok, result.after.text()
    assert await differences(db_dsn, url, 0, TIP) == []
    assert await checkpoints_of(db_dsn) == clean
    state = (await fetch(db_dsn, "SELECT last_block_h, last_block_hash FROM indexer.app_state"))[0]
    assert tuple(state) == (TIP, chain.block_hash(TIP))


# -- repair from the command line ---------------------------------------------------------------


async def test_repair_from_the_cli_fixes_several_damages(devnet, db_dsn):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    clean = await checkpoints_of(db_dsn)
    h = (await heights_with_txs(db_dsn, 2))[0]
    await execute(
        db_dsn,
        "DELETE FROM indexer.blocks WHERE height BETWEEN 300 AND 305",
        "UPDATE indexer.blocks SET last_block_hash = 'elsewhere' WHERE height = 777",
        f"DELETE FROM indexer.transactions WHERE block_height = {h} AND tx_index = 1",
        "UPDATE indexer.blocks SET hash = 'forged' WHERE height = 1001",
    )
    result = gnosync("repair", "--db", db_dsn, "--source", url, "--against-source", "--json")
    assert result.returncode == 0, result.stderr
    outcome = orjson.loads(result.stdout)
    assert outcome["ok"] is True and outcome["after"]["ok"] is True
    assert set(outcome["before"]["counts"]) == {
        "missing", "link", "tx_count", "tx_index", "checkpoint", "source_hash"
    }
    for low, high in [(300, 305), (776, 777), (h, h), (1001, 1002)]:
        assert any(a <= low and high <= b for a, b in outcome["replaced"]), outcome["replaced"]
    assert await differences(db_dsn, url, 0, TIP) == []
    assert await checkpoints_of(db_dsn) == clean
    assert gnosync("verify", "--db", db_dsn).returncode == 0
    # Nothing left to do: a clean database is left alone.
    result = gnosync("repair", "--db", db_dsn, "--source", url)
    assert result.returncode == 0, result.stderr
    assert "nothing to repair" in result.stdout


async def test_repair_refuses_while_another_process_holds_the_writer_lock(devnet, db_dsn):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    await execute(db_dsn, "DELETE FROM indexer.blocks WHERE height = 537")
    leader = await Store.connect(db_dsn)
    try:
        assert await leader.claim_writer(wait=False)
        result = gnosync("repair", "--db", db_dsn, "--source", url)
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("gnosync: error: "), result.stderr
        assert "is writing schema indexer" in lines[0] and "leader pid " in lines[0]
        # Nothing was written; verify still reads (and finds the damage).
        assert await fetch(db_dsn, "SELECT 1 FROM indexer.blocks WHERE height = 537") == []
        assert gnosync("verify", "--db", db_dsn).returncode == 1
        # In process too: NotTheWriter before anything is read or written.
        store = await Store.connect(db_dsn)
        try:
            async with SourcePool([url]) as source:
                with pytest.raises(NotTheWriter):
                    await repair(store, source)
        finally:
            await store.close()
    finally:
        await leader.close()
    result = gnosync("repair", "--db", db_dsn, "--source", url)
    assert result.returncode == 0, result.stderr
    assert await differences(db_dsn, url, 0, TIP) == []


async def test_repair_refuses_a_range_whose_neighbour_is_damaged(devnet, db_dsn):
    """Damage just outside the range asked for is named, not written over or around."""
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    await execute(
        db_dsn,
        "DELETE FROM indexer.blocks WHERE height = 537",
        "UPDATE indexer.blocks SET last_block_hash = 'elsewhere' WHERE height = 538",
    )
    result = gnosync("repair", "--db", db_dsn, "--source", url, "--from", "530", "--to", "537")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "gnosync: error: the stored block 538 fails check 'last_block_hash' against block 537"
    ), lines
    assert "links to 'elsewhere'" in lines[0] and "--to 538" in lines[0]
    assert await fetch(db_dsn, "SELECT 1 FROM indexer.blocks WHERE height = 537") == []
    assert gnosync("repair", "--db", db_dsn, "--source", url, "--from", "530").returncode == 0
    assert await differences(db_dsn, url, 0, TIP) == []


# -- verify reads only ---------------------------------------------------------------------------


async def schemas(dsn: str) -> set[str]:
    return {row[0] for row in await fetch(dsn, "SELECT nspname FROM pg_namespace")}


@pytest.fixture
async def read_only_dsn(db_dsn):
    """``await read_only_dsn()``: a DSN to the test database as a role that may only read
    gnosync's tables, with every transaction read-only by default (as on a replica)."""
    role = "ro_" + database_of(db_dsn)
    created = False

    async def make() -> str:
        nonlocal created
        await execute(
            db_dsn,
            f'CREATE ROLE "{role}" LOGIN',
            f'ALTER ROLE "{role}" SET default_transaction_read_only = on',
            f'GRANT USAGE ON SCHEMA indexer TO "{role}"',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA indexer TO "{role}"',
        )
        created = True
        return with_login(db_dsn, role)

    yield make
    if created:
        await execute(db_dsn, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


async def test_verify_works_for_a_read_only_role_and_writes_nothing(devnet, db_dsn, read_only_dsn):
    chain, url = devnet(blocks=TIP, seed=3)
    await synced(url, db_dsn)
    dsn = await read_only_dsn()
    result = gnosync("verify", "--db", dsn, "--against-source", "--source", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("clean")
    await execute(db_dsn, "DELETE FROM indexer.blocks WHERE height = 537")
    result = gnosync("verify", "--db", dsn)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[1].startswith("missing: 1 height at 537;")
    # The role really cannot write: a migration (what verify used to run) is refused.
    assert gnosync("migrate", "--db", dsn).returncode != 0


@pytest.mark.parametrize("as_read_only", [False, True])
async def test_verify_of_a_schema_without_tables_exits_2_and_creates_nothing(
    devnet, db_dsn, read_only_dsn, as_read_only
):
    chain, url = devnet(blocks=100, seed=3)
    await synced(url, db_dsn, end=100)
    dsn = await read_only_dsn() if as_read_only else db_dsn
    before = await schemas(db_dsn)
    result = gnosync("verify", "--db", dsn, "--db-schema", "indexr")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    database = database_of(db_dsn)
    assert lines == [
        f"gnosync: error: schema 'indexr' has no gnosync tables in database '{database}';"
        " check --db-schema, or run gnosync migrate"
    ], result.stderr
    assert result.stdout == ""
    assert await schemas(db_dsn) == before and "indexr" not in before


async def test_verify_exit_codes_tell_could_not_run_from_damaged(devnet, db_dsn):
    chain, url = devnet(blocks=100, seed=3)
    await synced(url, db_dsn, end=100)
    # Half-migrated: the tables are there but a migration is not.
    await execute(db_dsn, "DELETE FROM indexer.schema_migrations WHERE version = 2")
    result = gnosync("verify", "--db", db_dsn)
    assert result.returncode == 2 and "lacks migrations 0002_checkpoints" in result.stderr
    assert "run gnosync migrate" in result.stderr
    await execute(db_dsn, "INSERT INTO indexer.schema_migrations (version, name) VALUES (2, '0002_checkpoints')")
    assert gnosync("verify", "--db", db_dsn).returncode == 0
    # An unreachable database, an unreachable source: could not run, not damaged.
    for args in (
        ("--db", "postgresql://postgres@127.0.0.1:1/x"),
        ("--db", db_dsn, "--against-source", "--source", "http://127.0.0.1:1/graphql/query"),
        ("--db", db_dsn, "--against-source"),  # no source at all
    ):
        result = gnosync("verify", *args, env={"GNOSYNC_RETRY_ATTEMPTS": "1"})
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("gnosync: error: "), result.stderr
        assert "Traceback" not in result.stderr
