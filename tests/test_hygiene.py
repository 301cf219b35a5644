"""Secrets stay secret, TLS is verified, and no input can change the SQL gnosync runs."""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading

import orjson

import pytest
import trustme
from aiohttp import web

from gnosync.devnet import Faults
from gnosync.errors import ConfigError
from gnosync.redact import redact_dsn, redact_text, redact_url
from gnosync.store import Store

from .conftest import with_database, with_login
from .test_cli import gnosync, one_line_error, start, started, state_of, wait_for
from .test_endpoints import free_port, get

SECRET = "hunter2-Zq9"
TOKEN = "tok-Wq81x"
API_KEY = "key-Pv27m"


def with_password(dsn: str) -> str:
    # The test servers use trust authentication: any password is accepted, so a DSN
    # carrying one exercises every path that could print it.
    return with_login(dsn, "postgres", SECRET)


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


def with_credentials(url: str) -> str:
    """``url`` carrying basic credentials and an API key (the devnet ignores both)."""
    return url.replace("http://", f"http://gnouser:{TOKEN}@", 1) + f"?apikey={API_KEY}"


def test_redaction_forms():
    assert (
        redact_url(f"https://gnouser:{TOKEN}@rpc.example/graphql/query?apikey={API_KEY}&x=1")
        == "https://***@rpc.example/graphql/query?apikey=***&x=1"
    )
    # A lone user name is often the token itself; every credential-like parameter goes.
    assert redact_url(f"https://{TOKEN}@h/q") == "https://***@h/q"
    for key in ("token", "key", "access_token", "api-key", "X-Api-Key", "secret", "password", "sig"):
        assert redact_url(f"http://h/q?{key}={TOKEN}&height=3") == f"http://h/q?{key}=***&height=3"
    assert redact_url(f"http://h/q#access_token={TOKEN}&state=1") == "http://h/q#access_token=***&state=1"
    assert redact_url("http://127.0.0.1:8546/graphql/query") == "http://127.0.0.1:8546/graphql/query"
    once = redact_url(f"https://u:{TOKEN}@h/q?token={API_KEY}")
    assert redact_url(once) == once
    # DSNs keep their user, as before; both kinds inside free text.
    assert redact_url(f"postgresql://gno:{SECRET}@db/chain") == redact_dsn(f"postgresql://gno:{SECRET}@db/chain")
    text = redact_text(
        f"ClientResponseError: 302, url=URL('https://u:{TOKEN}@h/q?apikey={API_KEY}');"
        f" db postgresql://gno:{SECRET}@db/chain, host=db password={SECRET}"
    )
    assert TOKEN not in text and API_KEY not in text and SECRET not in text
    assert "URL('https://***@h/q?apikey=***')" in text and "postgresql://gno:***@db/chain" in text


def test_source_credentials_never_shown(devnet, db_dsn):
    """Source URLs with credentials: requests use them, nothing shows them (logs, errors,
    app_state.last_error, /status, /metrics labels, `status --json`, endpoint health)."""
    faults = Faults(ops=("getBlocks",))
    chain, url = devnet(blocks=300, faults=faults)
    good = with_credentials(url)
    dead = with_credentials(f"http://127.0.0.1:{free_port()}/graphql/query")
    shown = good.replace(f"gnouser:{TOKEN}", "***").replace(API_KEY, "***")
    dsn = with_password(db_dsn)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start("run", "--source", good, "--source", dead, "--db", dsn, "--interval", "0.2",
                 "--log-level", "debug", http=f"127.0.0.1:{port}")
    try:
        started(proc)
        wait_for(lambda: (asyncio.run(state_of(db_dsn)) or {}).get("last_block_h") == chain.tip,
                 what="the tip")
        # The source fails while the chain grows: errors naming the endpoint everywhere.
        faults.http_503 = 1.0
        for _ in range(20):
            chain.append_block()
        state = wait_for(
            lambda: (lambda s: s if s and s["last_error"] and "503" in s["last_error"] else None)(
                asyncio.run(state_of(db_dsn))),
            what="the error recorded",
        )
        status_page = get(base + "/status")[1].decode()
        metrics_page = get(base + "/metrics")[1].decode()
        status_json = gnosync("status", "--json", "--source", good, "--source", dead, "--db", dsn)
        one_shot = gnosync("sync", "--from", "0", "--to", "5", "--source", dead, "--db", dsn)
        faults.http_503 = 0.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    logs = "".join(proc.lines)
    assert status_json.returncode == 0, status_json.stderr
    assert shown in state["last_error"], state["last_error"]  # the endpoint is still named
    assert f'endpoint="{shown}"' in metrics_page
    report = orjson.loads(status_page)
    assert shown in [s["url"] for s in report["sources"]]
    assert any(s["error"] for s in report["sources"])  # the dead one's health
    assert "cannot reach source" in one_line_error(one_shot)
    for where, text in {
        "logs": logs, "last_error": state["last_error"], "/status": status_page,
        "/metrics": metrics_page, "status --json": status_json.stdout + status_json.stderr,
        "sync error": one_shot.stdout + one_shot.stderr,
    }.items():
        assert text, where
        for secret in (TOKEN, API_KEY, SECRET):
            assert secret not in text, (where, secret)


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
