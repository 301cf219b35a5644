"""`gnosync status` as a user runs it: on a database gnosync has not set up, and with a
leader and a standby running, named by gnosync's pid and host in fields, never reprs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import urllib.request
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg
import orjson

from gnosync.decode import DECODER_VERSION

from gnosync.store.lock import APPLICATION_NAME_BYTES, leader_name, parse_writer_name, standby_name

from .test_cli import gnosync, log_events, start, started, wait_for

SECRET = "hunter2-St4"


def with_password(dsn: str) -> str:
    """``dsn`` carrying a password (the test servers trust any)."""
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"postgres:{SECRET}@" + parts.netloc.rpartition("@")[2]).geturl()


async def schemas(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%'")
        return sorted(row[0] for row in rows)
    finally:
        await conn.close()


def test_status_on_a_database_without_gnosync_tables_is_not_initialised(db_dsn):
    before = asyncio.run(schemas(db_dsn))
    dsn = with_password(db_dsn)
    result = gnosync("status", "--json", "--db", dsn, env={"GNOSYNC_SOURCE": ""})
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["status"] == "not initialised" and report["last_block_h"] is None
    assert "gnosync migrate" in report["hint"] and "gnosync run" in report["hint"]
    assert report["database"] == dsn.replace(SECRET, "***")
    assert report["leader"] is None and report["standbys"] == []

    text = gnosync("status", "--db", dsn, "--db-schema", "elsewhere", env={"GNOSYNC_SOURCE": ""})
    assert text.returncode == 0, text.stderr
    lines = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert lines["status"] == "not initialised"
    assert "schema 'elsewhere'" in lines["hint"] and "`gnosync migrate`" in lines["hint"]
    assert SECRET not in result.stdout + result.stderr + text.stdout + text.stderr
    # status reads only: no schema, no table was created.
    assert asyncio.run(schemas(db_dsn)) == before


def test_status_and_logs_show_the_writers_pid_and_host(devnet, db_dsn):
    _, url = devnet(blocks=300, block_time=0.2)
    dsn = with_password(db_dsn)
    host = socket.gethostname()
    leader = start("run", "--source", url, "--db", dsn)
    standby = None
    try:
        started(leader)
        # The start-up line names the database, password-free.
        (using,) = log_events(leader, "using PostgreSQL")
        assert using["dsn"] == dsn.replace(SECRET, "***")
        standby = start("run", "--source", url, "--db", dsn)
        waiting = wait_for(lambda: log_events(standby, "standby:"), what="the standby's line")
        assert waiting[0]["leader"].startswith(f"leader pid {leader.pid} on host {host} since ")

        def writers() -> dict:
            report = orjson.loads(gnosync("status", "--json", "--db", dsn, "--source", url).stdout)
            return report if report["leader"] and report["standbys"] else {}

        report = wait_for(writers, what="a leader and a standby in status")
        first = report["leader"]
        assert (first["role"], first["pid"], first["host"]) == ("leader", leader.pid, host)
        assert isinstance(first["backend_pid"], int) and first["backend_pid"] != leader.pid
        assert datetime.fromisoformat(first["since"]).tzinfo is not None
        assert first["application_name"].endswith(f" {leader.pid}@{host}")
        assert [(w["role"], w["pid"], w["host"]) for w in report["standbys"]] == [
            ("standby", standby.pid, host)
        ]
        assert report["sources"] == [{"url": url, "up": True, "height": report["source_height"], "error": None}]
        # The decoded tables keep up with the blocks (read a moment later, so maybe higher).
        assert report["decoder_version"] == DECODER_VERSION
        assert report["derived_to"] >= report["last_block_h"] >= 0

        # GET /status serves the same object.
        (serving,) = log_events(leader, "serving metrics and health")
        with urllib.request.urlopen(serving["url"] + "/status", timeout=30) as response:
            served = orjson.loads(response.read())
        assert served["database"] == report["database"]
        assert (served["leader"]["pid"], served["leader"]["host"]) == (leader.pid, host)

        text = gnosync("status", "--db", dsn, "--source", url)
        assert text.returncode == 0, text.stderr
        lines = dict(line.split(None, 1) for line in text.stdout.splitlines())
        assert lines["database"] == dsn.replace(SECRET, "***")
        assert lines["leader"].startswith(f"leader pid {leader.pid} on host {host} since ")
        assert f"(PostgreSQL backend pid {first['backend_pid']} from " in lines["leader"]
        assert lines["standbys"].startswith(f"standby pid {standby.pid} on host {host} since ")
        assert lines["sources"].startswith(f"{url} up at height ")
        for repr_mark in ("WriterInfo(", "datetime.", "{'", "'up': "):
            assert repr_mark not in text.stdout
        everything = text.stdout + text.stderr + "".join(leader.lines) + "".join(standby.lines)
        assert SECRET not in everything and "WriterInfo(" not in everything
    finally:
        for proc in (leader, standby):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        for proc in (leader, standby):
            if proc is not None:
                proc.wait(timeout=30)


def test_writer_names_keep_role_pid_and_host_within_postgresql_limit():
    name = leader_name("indexer", "block_sync", pid=1234, host="node-1")
    assert name == "gnosync leader indexer.block_sync 1234@node-1"
    assert parse_writer_name(name) == (1234, "node-1")
    # A long schema and component are cut, never the role or pid@host.
    long = standby_name("s" * 63, "c" * 80, pid=4_194_304, host="h" * 64 + ".example.org")
    assert len(long.encode()) <= APPLICATION_NAME_BYTES and long.startswith("gnosync standby sss")
    assert parse_writer_name(long) == (4_194_304, "h" * 24)
    # PostgreSQL would show non-ASCII as '?': the host is written that way already.
    assert parse_writer_name(leader_name("ïndexer", "x", pid=7, host="hôte 2")) == (7, "h?te?2")
    # A name written by an older gnosync, or by something else, has neither.
    assert parse_writer_name("gnosync leader indexer.block_sync") == (None, None)
    assert parse_writer_name("psql 12@x") == (None, None)


async def test_writers_read_back_pid_and_host_from_postgresql_with_a_long_component(db_dsn):
    from gnosync.store import Store

    store = await Store.connect(db_dsn, component="c" * 80)
    try:
        assert await store.claim_writer(wait=False)
        (writer,) = await store.writers()
        assert len(writer.application_name.encode()) <= APPLICATION_NAME_BYTES
        assert (writer.role, writer.pid, writer.host) == ("leader", os.getpid(), socket.gethostname()[:24])
        assert writer.backend_pid != os.getpid()
        assert str(writer).startswith(f"leader pid {os.getpid()} on host ")
    finally:
        await store.close()
