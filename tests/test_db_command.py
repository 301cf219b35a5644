"""`gnosync db url|psql|stop` as a user runs them, on a real embedded PostgreSQL in a
temporary data directory (never the user's) and on a configured server."""

from __future__ import annotations

import asyncio
import os
import stat
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import orjson
import pytest

from gnosync.cli import find_psql
from gnosync.errors import ConfigError
from gnosync.store.embedded import bundled_psql, running_dsn, stop_embedded

from .test_cli import gnosync, one_line_error

SECRET = "hunter2-Db7"


@pytest.fixture
def embedded(tmp_path):
    """The environment of a user without a configured database, whose embedded
    PostgreSQL lives in a temporary data directory; the server is stopped afterwards."""
    data_dir = tmp_path / "pg"
    config = tmp_path / "gnosync.toml"  # empty: no database configured by a user's file
    config.write_text("")
    env = {"GNOSYNC_DATA_DIR": str(data_dir), "GNOSYNC_DB": "", "GNOSYNC_CONFIG": str(config)}
    try:
        yield data_dir, env
    finally:
        stop_embedded(data_dir)


def psql(dsn: str, query: str) -> str:
    """``query``'s rows as psql prints them unaligned, from a psql run outside gnosync."""
    import subprocess

    executable = find_psql(os.environ.get("PATH"), bundled_psql())
    result = subprocess.run(
        [executable, dsn, "-X", "-Atc", query], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def fetchval(dsn: str, query: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def test_embedded_database_found_used_and_stopped(embedded):
    data_dir, env = embedded
    # Nothing runs yet: stop says so, status says what to do and creates nothing.
    stopped = gnosync("db", "stop", env=env)
    assert stopped.returncode == 0 and "no embedded PostgreSQL is running" in stopped.stderr
    report = orjson.loads(gnosync("status", "--json", env=env).stdout)
    assert report["status"] == "not initialised"
    assert "gnosync migrate" in report["hint"] and "gnosync run" in report["hint"]
    assert report["database"] is None and report["leader"] is None and report["lag"] is None
    assert not data_dir.exists()

    # `db url` starts the server and prints one DSN that psql and asyncpg both take.
    url = gnosync("db", "url", env=env)
    assert url.returncode == 0, url.stderr
    (dsn,) = url.stdout.splitlines()
    assert "keeps running after gnosync exits; `gnosync db stop` stops it" in url.stderr
    assert psql(dsn, "SELECT current_user || ' ' || current_database()") == "postgres gnosync"
    assert asyncio.run(fetchval(dsn, "SELECT 1")) == 1

    # By design the server outlives the gnosync process that started it.
    assert running_dsn(data_dir) == dsn
    assert gnosync("db", "url", env=env).stdout.strip() == dsn

    # `db psql` opens psql on it; arguments after -- go to psql.
    opened = gnosync("db", "psql", "--", "-X", "-Atc", "SELECT 6 * 7", env=env)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "42"

    # status on the running server: its DSN, "not initialised", and still no tables.
    result = gnosync("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["database"] == dsn and report["status"] == "not initialised"
    assert psql(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'indexer'") == "0"
    text = gnosync("status", env=env)
    assert text.returncode == 0 and f"database       {dsn}" in text.stdout
    migrated = gnosync("migrate", env=env)
    assert migrated.returncode == 0 and f"using embedded PostgreSQL {dsn} in {data_dir}" in migrated.stderr
    assert orjson.loads(gnosync("status", "--json", env=env).stdout)["status"] == "never synced"

    # `db stop` stops it; psql then finds nothing, and a second stop says so.
    stopped = gnosync("db", "stop", env=env)
    assert stopped.returncode == 0 and f"stopped the embedded PostgreSQL in {data_dir}" in stopped.stderr
    assert running_dsn(data_dir) is None
    with pytest.raises((OSError, asyncpg.PostgresError)):
        asyncio.run(fetchval(dsn, "SELECT 1"))
    again = gnosync("db", "stop", env=env)
    assert again.returncode == 0 and "nothing to stop" in again.stderr
    # The data stays: the next command starts the server again on it.
    assert orjson.loads(gnosync("status", "--json", env=env).stdout)["status"] == "never synced"


def test_configured_database_url_psql_and_stop(db_dsn):
    # Over TCP or a Unix socket, whichever the test server listens on.
    parts = urlsplit(db_dsn)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query["host"]
    port = parts.port or query.get("port", "5432")
    database = parts.path.lstrip("/")
    dsn = parts._replace(netloc=f"postgres:{SECRET}@" + parts.netloc.rpartition("@")[2]).geturl()
    url = gnosync("db", "url", "--db", dsn)
    assert url.returncode == 0, url.stderr
    assert SECRET not in url.stdout + url.stderr
    assert psql(url.stdout.strip(), "SELECT current_database()") == database
    assert gnosync("db", "url", "--db", dsn, "--with-password").stdout.strip() == dsn
    # The key=value form comes out as a URI psql takes.
    pairs = f"host={host} port={port} user=postgres password={SECRET} dbname={database}"
    pairs_url = gnosync("db", "url", "--db", pairs).stdout.strip()
    assert pairs_url.startswith("postgresql://postgres@") and SECRET not in pairs_url
    assert psql(pairs_url, "SELECT current_database()") == database

    # The password reaches psql in its environment, never on its command line.
    opened = gnosync("db", "psql", "--db", dsn, "--", "-X", "-Atc", "SELECT current_database()")
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == database

    line = one_line_error(gnosync("db", "stop", "--db", dsn))
    assert "gnosync does not stop it" in line and SECRET not in line
    assert asyncio.run(fetchval(db_dsn, "SELECT 1")) == 1


def test_psql_is_found_on_path_then_bundled_else_named_for_install(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "psql"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    bundled = tmp_path / "bundled-psql"
    assert find_psql(str(bin_dir), bundled) == str(fake)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_psql(str(empty), bundled) == str(bundled)
    with pytest.raises(ConfigError) as info:
        find_psql(str(empty), None)
    message = str(info.value)
    assert "psql is not installed" in message and "postgresql-client" in message
    assert "\n" not in message and info.value.exit_code == 2
