"""Shared fixtures: a real PostgreSQL server and a fresh database per test.

``GNOSYNC_TEST_PG`` names a server by a DSN to any of its databases (``.ci/run`` sets it
to the machine's PostgreSQL). Without it, an embedded PostgreSQL (pgserver) is started
in a temporary directory for the session.

``@pytest.mark.needs_shared("schema", "gnoland1")`` marks a test that reads files from
``../shared`` (see tests/shared_files.py): it skips when they are absent.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from . import shared_files


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_shared(*names): reads these files of ../shared (tests/shared_files.py)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_shared"):
        for name in marker.args:
            shared_files.require(name)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def database_of(dsn: str) -> str:
    """The database ``dsn`` names, for a TCP DSN and for the embedded server's Unix-socket
    one alike (``postgresql://postgres:@/name?host=/tmp/...``)."""
    return urlsplit(dsn).path.lstrip("/")


def with_login(dsn: str, user: str, password: str | None = None) -> str:
    """``dsn`` logging in as ``user`` (with ``password``), host and options kept."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    login = user if password is None else f"{user}:{password}"
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    configured = os.environ.get("GNOSYNC_TEST_PG")
    if configured:
        yield configured
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="gnosync-test-pg-") as data_dir:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()


async def _admin(server_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def db_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A DSN to a new, empty database, dropped after the test."""
    import asyncio

    name = "gnosync_t_" + uuid.uuid4().hex[:12]
    asyncio.run(_admin(pg_server_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(pg_server_dsn, name)
    finally:
        asyncio.run(_admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def devnet():
    """Start devnets over loopback: ``chain, url = devnet(blocks=..., max_elements=...)``.

    ``faults`` (a ``gnosync.devnet.Faults``) is the live fault config: change its fields
    during the test and the server applies them to the next request.
    """
    from contextlib import ExitStack

    from gnosync.devnet import Chain, ChainConfig, running_devnet

    with ExitStack() as stack:

        def start(max_elements: int = 10_000, faults=None, **config):
            chain = Chain(ChainConfig(**config))
            url = stack.enter_context(running_devnet(chain, max_elements=max_elements, faults=faults))
            return chain, url

        yield start
