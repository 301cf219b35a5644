"""The new-block doorbell (TipWatcher) against real websocket servers over loopback:
the devnet's getBlocks subscription, its faults and outages, and servers without one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiohttp import WSMsgType, web
from graphql import build_schema, parse, validate

from gnosync.devnet import Chain, ChainConfig, DevnetServer, Faults, schema_sdl
from gnosync.retry import RetryPolicy
from gnosync.source.subscribe import NEW_BLOCKS, TipWatcher, websocket_url

from .compare import upstream_schema

SMALL = dict(blocks=40, dense_start=20, dense_length=10, tx_rate=0.02)
QUICK = RetryPolicy(initial=0.01, maximum=0.05)
GUARD = 60.0  # seconds: only ever reached when what is awaited never happens


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def devnet(faults: Faults | None = None) -> AsyncIterator[DevnetServer]:
    async with DevnetServer(Chain(ChainConfig(**SMALL)), faults=faults, keepalive=0) as server:
        yield server


@contextlib.asynccontextmanager
async def watching(url: str) -> AsyncIterator[TipWatcher]:
    watcher = TipWatcher([url], policy=QUICK, connect_timeout=5.0)
    watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


def watch_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if "TipWatcher._watch" in repr(t.get_coro())]


def test_subscription_document_validates_against_both_schemas():
    document = parse(NEW_BLOCKS)
    for schema in (upstream_schema(), build_schema(schema_sdl())):
        assert validate(schema, document) == []


def test_websocket_url():
    assert websocket_url("http://h:8546") == "ws://h:8546/graphql/query"
    assert websocket_url("https://h/graphql/query") == "wss://h/graphql/query"


async def test_wakes_on_a_block_pushed_by_the_devnet():
    async with devnet() as server, watching(server.url) as watcher:
        chain = server.chain
        await until(lambda: server.hub.subscriptions == 1, "the subscription")
        await until(lambda: watcher.connected == {websocket_url(server.url)}, "the ack")
        assert await watcher.wait(0) is False and watcher.height is None  # nothing pushed yet
        chain.append_block()
        assert await watcher.wait(GUARD) is True
        assert watcher.height == chain.tip
        assert await watcher.wait(0) is False  # one push, one wake-up
        for _ in range(3):
            chain.append_block()
        await until(lambda: watcher.height == chain.tip, "the highest pushed height")
        assert await watcher.wait(GUARD) is True
        assert server.hub.pushed == 4


async def test_reconnects_after_the_devnet_drops_the_subscription():
    async with devnet(Faults(drop_subscriptions=1.0)) as server, watching(server.url) as watcher:
        chain = server.chain
        await until(lambda: server.hub.subscriptions == 1, "the subscription")
        chain.append_block()  # cut instead of pushed
        await until(lambda: server.injector.counts["drop_subscriptions"] == 1, "the cut")
        server.faults.drop_subscriptions = 0.0
        # The dropped connection's subscription is gone: this one is the watcher's new one.
        await until(lambda: server.hub.subscriptions == 1, "a new subscription")
        assert await watcher.wait(0) is False  # the cut block never arrived
        assert server.hub.pushed == 0
        chain.append_block()
        assert await watcher.wait(GUARD) is True
        assert watcher.height == chain.tip and server.hub.pushed == 1
        assert watcher.connected == {websocket_url(server.url)}


async def test_polls_while_the_devnet_is_down_and_subscribes_when_it_is_back():
    async with devnet() as server:
        await server.go_down()
        async with watching(server.url) as watcher:
            assert await watcher.wait(0.05) is False  # the wait is a poll interval, no more
            assert watcher.connected == set() and watch_tasks()  # still trying
            await server.come_up()
            await until(lambda: server.hub.subscriptions == 1, "the subscription once back")
            server.chain.append_block()
            assert await watcher.wait(GUARD) is True
            # An outage while subscribed: the next subscription picks up again.
            await server.go_down()
            await until(lambda: not watcher.connected, "the watcher to notice the outage")
            assert await watcher.wait(0.05) is False
            await server.come_up()
            await until(lambda: server.hub.subscriptions == 1, "the subscription after the outage")
            server.chain.append_block()
            assert await watcher.wait(GUARD) is True
            assert watcher.height == server.chain.tip


@contextlib.asynccontextmanager
async def without_subscriptions(kind: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A GraphQL server that answers queries but cannot subscribe; yields its URL and the
    websocket attempts it saw."""
    attempts: list[str] = []

    async def graphql(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("Upgrade"):
            return web.json_response({"data": {"latestBlockHeight": 1}})
        attempts.append(kind)
        if kind == "no websocket":
            # A proxy in front of the indexer that does not pass websocket upgrades on:
            # the request gets an ordinary HTTP answer.
            return web.json_response(
                {"errors": [{"message": "transport not supported"}], "data": None}, status=400)
        ws = web.WebSocketResponse(protocols=("graphql-transport-ws", "graphql-ws"))
        await ws.prepare(request)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                break
            message = orjson.loads(frame.data)
            if message.get("type") == "connection_init":
                await ws.send_json({"type": "connection_ack"})
            elif message.get("type") in ("subscribe", "start"):
                # A schema without a Subscription type: the document does not validate,
                # and gqlgen answers with an error, then completes the operation.
                await ws.send_json({"id": message["id"], "type": "error", "payload": [{
                    "message": "schema does not support subscription",
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]})
                await ws.send_json({"id": message["id"], "type": "complete"})
        return ws

    app = web.Application()
    app.router.add_route("*", "/graphql/query", graphql)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/graphql/query", attempts
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["no websocket", "no subscription in the schema"])
async def test_polls_when_the_server_cannot_subscribe(kind):
    async with without_subscriptions(kind) as (url, attempts), watching(url) as watcher:
        await until(lambda: len(attempts) >= 3, "the watcher to try again")
        assert await watcher.wait(0.05) is False
        if kind == "no websocket":
            assert watcher.connected == set()
        assert watcher.height is None


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_stop_is_clean():
    idle = TipWatcher(["http://127.0.0.1:1/graphql/query"], policy=QUICK)
    await idle.stop()  # never started: nothing to do

    async with devnet() as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            watcher = TipWatcher([server.url], policy=QUICK)
            watcher.start()
            await until(lambda: server.hub.subscriptions == 1, "the subscription")
            assert len(watch_tasks()) == 1
            await asyncio.wait_for(watcher.stop(), GUARD)
            assert watch_tasks() == []
            await until(lambda: not server.hub.sessions, "the websocket to close")
            await watcher.stop()  # twice is fine
            server.chain.append_block()
            assert await watcher.wait(0) is False  # stopped: nothing is heard any more
            assert server.hub.pushed == 0

            # Stopping while it waits to retry an endpoint that is not there.
            retrying = TipWatcher([f"http://127.0.0.1:{unused_port()}/graphql/query"], policy=QUICK)
            retrying.start()
            assert await retrying.wait(0.05) is False
            await asyncio.wait_for(retrying.stop(), GUARD)
            assert watch_tasks() == []
            gc.collect()
        unclosed = [w for w in caught if "Unclosed" in str(w.message)]
        assert unclosed == []
