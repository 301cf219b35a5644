"""``gnosync rederive`` and the start-up re-derivation of ``run``, from the command line,
against a devnet chain synced into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal

import asyncpg

from gnosync.decode import DECODER_VERSION
from gnosync.store import Store, sql

from .test_cli import gnosync, log_events, one_line_error, start, wait_for

TIP = 300
DERIVED = (*sql.DERIVED_TABLES, "package_files")


async def _rows(dsn: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {t: [r[0] for r in await conn.fetch(f"SELECT x::text FROM indexer.{t} x ORDER BY 1")]
               for t in DERIVED}
        out["decoder_state"] = [tuple(await conn.fetchrow("SELECT version, derived_to FROM indexer.decoder_state"))]
        return out
    finally:
        await conn.close()


def rows(dsn: str) -> dict[str, list[str]]:
    """Every derived table's rows as sorted text, and the decoder state."""
    return asyncio.run(_rows(dsn))


def execute(dsn: str, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def synced(devnet, dsn: str, *flags: str) -> tuple[object, str, dict]:
    chain, url = devnet(blocks=TIP, seed=5, genesis_txs=20)
    result = gnosync("sync", "--from", "0", "--to", str(TIP), "--source", url, "--db", dsn, *flags)
    assert result.returncode == 0, result.stderr
    return chain, url, rows(dsn)


EMPTY = "TRUNCATE " + ", ".join(f"indexer.{t}" for t in sql.DERIVED_TABLES)


def test_rederive_restores_emptied_derived_tables_identically(devnet, db_dsn):
    _, _, before = synced(devnet, db_dsn)
    assert before["messages"] and before["events"] and before["packages"] and before["tx_accounts"]
    assert before["decoder_state"] == [(DECODER_VERSION, TIP)]
    execute(db_dsn, EMPTY, "UPDATE indexer.decoder_state SET derived_to = NULL")
    result = gnosync("rederive", "--db", db_dsn, "--batch-size", "50")
    assert result.returncode == 0, result.stderr
    assert f"re-derived heights 0..{TIP}" in result.stderr
    assert rows(db_dsn) == before
    # A sub-range, twice: nothing changes.
    for _ in range(2):
        result = gnosync("rederive", "--db", db_dsn, "--from", "40", "--to", "120", "--batch-size", "7")
        assert result.returncode == 0, result.stderr
        assert rows(db_dsn) == before


def test_rederive_refuses_while_another_process_holds_the_writer_lock(devnet, db_dsn):
    _, _, before = synced(devnet, db_dsn)

    async def held() -> None:
        leader = await Store.connect(db_dsn)
        try:
            assert await leader.claim_writer(wait=False)
            result = await asyncio.to_thread(gnosync, "rederive", "--db", db_dsn)
            assert result.returncode == 2
            line = one_line_error(result)
            assert "is writing schema indexer" in line and "leader pid " in line
        finally:
            await leader.close()

    asyncio.run(held())
    assert rows(db_dsn) == before


def _run_until_synced(url: str, dsn: str, *flags: str) -> list[dict]:
    """``gnosync run`` until it reports the tip; its "re-deriving" log lines."""
    proc = start("run", "--source", url, "--db", dsn, "--interval", "0.2", *flags)
    try:
        wait_for(lambda: log_events(proc, "following the tip"), what="the tip")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    return log_events(proc, "re-deriving heights")


def test_run_rederives_after_derive_none_and_after_a_decoder_version_bump(devnet, db_dsn):
    chain, url = devnet(blocks=TIP, seed=5, genesis_txs=20)
    # The top 100 heights stored with --derive none: the next run derives them first.
    for first, last, flags in ((0, TIP - 100, []), (TIP - 99, TIP, ["--derive", "none"])):
        result = gnosync("sync", "--from", str(first), "--to", str(last), "--source", url, "--db", db_dsn, *flags)
        assert result.returncode == 0, result.stderr
    assert rows(db_dsn)["decoder_state"] == [(DECODER_VERSION, TIP - 100)]
    (line,) = _run_until_synced(url, db_dsn)
    assert line["message"].startswith(f"re-deriving heights {TIP - 99}..{TIP}")
    caught_up = rows(db_dsn)
    assert caught_up["decoder_state"] == [(DECODER_VERSION, TIP)]
    # As if an older gnosync had built them: rebuilt whole, to the same rows.
    execute(db_dsn, "UPDATE indexer.decoder_state SET version = 0",
            "DELETE FROM indexer.messages WHERE block_height < 100")
    (line,) = _run_until_synced(url, db_dsn)
    assert line["message"].startswith(f"re-deriving heights 0..{TIP}")
    assert (line["old_version"], line["new_version"]) == (0, DECODER_VERSION)
    assert rows(db_dsn) == caught_up
    # Nothing to do: no line.
    assert _run_until_synced(url, db_dsn) == []


def test_a_database_derived_by_a_newer_gnosync_is_refused(devnet, db_dsn):
    chain, url, before = synced(devnet, db_dsn)
    execute(db_dsn, f"UPDATE indexer.decoder_state SET version = {DECODER_VERSION + 1}")
    result = gnosync("run", "--source", url, "--db", db_dsn, "--http", "off")
    assert result.returncode == 2
    assert "built by a newer gnosync; upgrade, or run with --derive none" in one_line_error(result)
    # Raw rows only: that works.
    result = gnosync("sync", "--from", "0", "--to", str(TIP), "--source", url, "--db", db_dsn, "--derive", "none")
    assert result.returncode == 0, result.stderr
