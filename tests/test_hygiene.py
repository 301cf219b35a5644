"""Secrets stay secret, TLS is verified, and no input can change the SQL gnosync runs."""

from __future__ import annotations

import asyncio
import ssl
import threading

import pytest
import trustme
from aiohttp import web

from gnosync.errors import ConfigError
from gnosync.store import Store

from .conftest import with_database
from .test_cli import gnosync, one_line_error

SECRET = "hunter2-Zq9"


def with_password(dsn: str) -> str:
    # The test servers use trust authentication: any password is accepted, so a DSN
    # carrying one exercises every path that could print it.
    return dsn.replace("postgres@", f"postgres:{SECRET}@", 1)


def test_password_never_printed_by_sync_status_or_errors(devnet, db_dsn, pg_server_dsn):
    _, url = devnet(blocks=50)
    dsn = with_password(db_dsn)
    assert SECRET in dsn
    outputs = [
        gnosync("sync", "--from", "0", "--to", "50", "--source", url, "--db", dsn, "--log-level", "debug"),
        gnosync("status", "--json", "--source", url, "--db", dsn),
        gnosync("status", "--db", dsn),
        gnosync("sync", "--from", "0", "--to", "5", "--source", url,
                "--db", with_password(with_database(pg_server_dsn, "no_such_db"))),
        gnosync("sync", "--from", "0", "--to", "5", "--source", url,
                "--db", f"postgresql://u:{SECRET}@127.0.0.1:1/x"),
    ]
    assert outputs[0].returncode == 0 and outputs[1].returncode == 0
    for result in outputs:
        assert SECRET not in result.stdout + result.stderr


@pytest.fixture
def tls_source(devnet):
    """A tx-indexer-like HTTPS endpoint whose certificate comes from a private CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    _, plain_url = devnet(blocks=20)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    async def proxy(request: web.Request) -> web.Response:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.post(plain_url, data=await request.read(),
                                    headers={"Content-Type": "application/json"}) as answer:
                return web.Response(body=await answer.read(), content_type="application/json")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/graphql/query", proxy)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with ca.cert_pem.tempfile() as ca_file:
        yield f"https://127.0.0.1:{port}/graphql/query", ca_file
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_tls_certificates_are_verified_by_default(tls_source, db_dsn):
    url, ca_file = tls_source
    line = one_line_error(gnosync("sync", "--from", "0", "--to", "5", "--source", url, "--db", db_dsn))
    assert "certificate" in line and "SSL_CERT_FILE" in line
    trusted = gnosync("sync", "--from", "0", "--to", "5", "--source", url, "--db", db_dsn,
                      env={"SSL_CERT_FILE": ca_file})
    assert trusted.returncode == 0, trusted.stderr


@pytest.mark.parametrize("schema", ["", "x" * 70])
async def test_impossible_schema_names_are_refused(db_dsn, schema):
    with pytest.raises(ConfigError):
        await Store.connect(db_dsn, schema=schema)


async def test_a_hostile_schema_name_is_just_a_name(db_dsn):
    import asyncpg

    hostile = 'x"; DROP SCHEMA public CASCADE; --'
    store = await Store.connect(db_dsn, schema=hostile)
    try:
        await store.migrate()
    finally:
        await store.close()
    conn = await asyncpg.connect(db_dsn)
    try:
        schemas = {r[0] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
    finally:
        await conn.close()
    assert hostile in schemas and "public" in schemas


def test_values_are_data_never_sql(devnet, db_dsn):
    chain, url = devnet(blocks=30, chain_id="it's'; DROP SCHEMA indexer CASCADE; --")
    result = gnosync("sync", "--from", "0", "--to", "30", "--source", url, "--db", db_dsn)
    assert result.returncode == 0, result.stderr
    report = gnosync("status", "--json", "--db", db_dsn)
    assert "DROP SCHEMA" in report.stdout  # stored verbatim as the chain id
