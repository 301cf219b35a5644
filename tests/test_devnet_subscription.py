"""The devnet's getBlocks subscription over websocket (gqlgen's two protocols)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from gnosync.devnet import Chain, ChainConfig, DevnetServer, Faults, running_devnet

SMALL = dict(blocks=40, dense_start=20, dense_length=40, tx_rate=0.02)
FIELDS = "height hash last_block_hash num_txs txs { hash memo }"
BLOCKS = "subscription { getBlocks(where: {}) { " + FIELDS + " } }"
WINDOW = (
    "subscription Window($where: FilterBlock!) {"
    " b: getBlocks(where: $where) { height chain_id } }"
)
# Seconds a wait may take before the test gives up: never reached when what is awaited
# happens. Nothing here depends on how fast the machine is.
GUARD = 60.0


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[DevnetServer, aiohttp.ClientSession]]:
    chain = options.pop("chain", None) or Chain(ChainConfig(**SMALL))
    server = DevnetServer(chain, **options)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield server, http
    finally:
        await server.stop()


async def until(condition: Callable[[], bool], timeout: float = GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = GUARD) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    return orjson.loads(message.data)


async def nothing_pending(ws: aiohttp.ClientWebSocketResponse, legacy: bool = False) -> None:
    """Nothing was sent to ``ws`` before the answer to a message sent now.

    The server handles a session's messages in order and pushes blocks appended before
    (on the loop's queue ahead of this message) first, so the answer is a barrier.
    """
    if legacy:
        query = {"query": "{ latestBlockHeight }"}
        await ws.send_json({"id": "barrier", "type": "start", "payload": query})
        message = await receive(ws)
        assert message["id"] == "barrier" and message["type"] == "data", message
        assert await receive(ws) == {"id": "barrier", "type": "complete"}
    else:
        await ws.send_json({"type": "ping", "payload": {"barrier": True}})
        assert await receive(ws) == {"payload": {"barrier": True}, "type": "pong"}


async def cut_off(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The connection ends without a close frame."""
    message = await ws.receive(timeout=GUARD)
    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), message
    assert ws.close_code not in (1000, 1001)


def projected(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "height": block["height"],
        "hash": block["hash"],
        "last_block_hash": block["last_block_hash"],
        "num_txs": block["num_txs"],
        "txs": [{"hash": tx["hash"], "memo": tx["memo"]} for tx in block["txs"]],
    }


async def connect(
    http: aiohttp.ClientSession, server: DevnetServer, protocol: str | None
) -> aiohttp.ClientWebSocketResponse:
    protocols = (protocol,) if protocol else ()
    ws = await http.ws_connect(server.url, protocols=protocols)
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert await receive(ws) == {"type": "connection_ack"}
    if protocol != "graphql-transport-ws":
        assert await receive(ws) == {"type": "ka"}
    return ws


async def test_graphql_transport_ws_pushes_new_blocks_in_order() -> None:
    async with serving(keepalive=0) as (server, http):
        chain = server.chain
        ws = await connect(http, server, "graphql-transport-ws")
        assert ws.protocol == "graphql-transport-ws"
        await ws.send_json({"id": "s1", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 1)
        start = chain.tip
        for _ in range(5):  # in this thread, between pushes: each lands once, in order
            chain.append_block()
        for height in range(start + 1, start + 6):
            message = await receive(ws)
            assert message == {
                "payload": {"data": {"getBlocks": projected(chain.block(height))}},
                "id": "s1",
                "type": "next",
            }
        # ping -> pong, with its payload
        await ws.send_json({"type": "ping", "payload": {"n": 7}})
        assert await receive(ws) == {"payload": {"n": 7}, "type": "pong"}
        await ws.send_json({"type": "pong"})  # unsolicited pongs are fine
        # complete ends the subscription; the server confirms
        await ws.send_json({"id": "s1", "type": "complete"})
        assert await receive(ws) == {"id": "s1", "type": "complete"}
        await until(lambda: server.hub.subscriptions == 0)
        chain.append_block()
        await nothing_pending(ws)
        await ws.close()


async def test_graphql_ws_legacy_with_keep_alive_and_a_height_filter() -> None:
    async with serving(keepalive=0.1) as (server, http):
        chain = server.chain
        # Without a subprotocol, gqlgen (and the devnet) speaks graphql-ws.
        ws = await connect(http, server, None)
        assert ws.protocol is None
        start = chain.tip
        where = {"height": {"gt": start + 2, "lt": start + 5}}
        await ws.send_json(
            {"id": 1, "type": "start", "payload": {"query": WINDOW, "variables": {"where": where}}}
        )
        await until(lambda: server.hub.subscriptions == 1)
        for _ in range(6):
            chain.append_block()
        # The two blocks in the window, and keep-alives going on meanwhile (every 0.1 s).
        data, kas = [], 0
        while len(data) < 2 or kas < 2:
            message = await receive(ws)
            if message["type"] == "ka":
                kas += 1
            else:
                data.append(message)
        assert data == [
            {
                "payload": {"data": {"b": {"height": height, "chain_id": "dev"}}},
                "id": "1",
                "type": "data",
            }
            for height in (start + 3, start + 4)
        ]
        # Nothing but keep-alives until the stop is confirmed: no block outside the window.
        await ws.send_json({"id": "1", "type": "stop"})
        message = await receive(ws)
        while message["type"] == "ka":
            message = await receive(ws)
        assert message == {"id": "1", "type": "complete"}
        await ws.send_json({"type": "connection_terminate"})
        closing = await ws.receive(timeout=GUARD)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1000


async def test_graphql_ws_named_protocol_and_eq_filter() -> None:
    async with serving(keepalive=0) as (server, http):
        chain = server.chain
        ws = await connect(http, server, "graphql-ws")
        assert ws.protocol == "graphql-ws"
        target = chain.tip + 2
        query = "subscription { getBlocks(where: {height: {eq: %d}}) { height } }" % target
        await ws.send_json({"id": "x", "type": "start", "payload": {"query": query}})
        await until(lambda: server.hub.subscriptions == 1)
        for _ in range(4):
            chain.append_block()
        assert await receive(ws) == {
            "payload": {"data": {"getBlocks": {"height": target}}},
            "id": "x",
            "type": "data",
        }
        await nothing_pending(ws, legacy=True)
        await ws.close()


async def test_only_blocks_stored_after_the_subscription_and_several_subscribers() -> None:
    async with serving(keepalive=0) as (server, http):
        chain = server.chain
        first = await connect(http, server, "graphql-transport-ws")
        await first.send_json({"id": "a", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 1)
        chain.append_block()
        early = chain.tip
        assert (await receive(first))["payload"]["data"]["getBlocks"]["height"] == early
        second = await connect(http, server, "graphql-transport-ws")
        await second.send_json({"id": "b", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 2)
        chain.append_block()
        for ws, sub_id in ((first, "a"), (second, "b")):
            message = await receive(ws)
            assert message["id"] == sub_id
            assert message["payload"]["data"]["getBlocks"]["height"] == early + 1
        await first.close()
        await second.close()


async def test_growth_by_block_time_and_control_grow_is_pushed() -> None:
    async with serving(block_time=0.05, keepalive=0) as (server, http):
        ws = await connect(http, server, "graphql-transport-ws")
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": BLOCKS}})
        heights = [(await receive(ws))["payload"]["data"]["getBlocks"]["height"] for _ in range(3)]
        assert heights == list(range(heights[0], heights[0] + 3))
        async with http.post(f"{server.base_url}/control/grow", json={"blocks": 3}) as response:
            assert response.status == 200
        more = [(await receive(ws))["payload"]["data"]["getBlocks"]["height"] for _ in range(6)]
        assert more == list(range(heights[-1] + 1, heights[-1] + 7))
        await ws.close()


async def test_blocks_appended_from_another_thread_reach_the_server_loop() -> None:
    chain = Chain(ChainConfig(**SMALL))
    with running_devnet(chain) as url:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url, protocols=("graphql-transport-ws",))
            await ws.send_json({"type": "connection_init"})
            assert await receive(ws) == {"type": "connection_ack"}
            await ws.send_json({"id": "t", "type": "subscribe", "payload": {"query": BLOCKS}})
            # The subscription has started once the server answered a later message.
            await ws.send_json({"type": "ping"})
            assert await receive(ws) == {"type": "pong"}
            start = chain.tip
            await asyncio.to_thread(lambda: [chain.append_block() for _ in range(20)])
            got = [(await receive(ws))["payload"]["data"]["getBlocks"] for _ in range(20)]
            assert got == [projected(chain.block(h)) for h in range(start + 1, start + 21)]
            # A reset serves another chain at the same heights; pushes carry on.
            await asyncio.to_thread(chain.reset)
            await asyncio.to_thread(chain.append_block)
            block = (await receive(ws))["payload"]["data"]["getBlocks"]
            assert block == projected(chain.block(start + 21))
            await ws.close()


async def test_errors_queries_and_protocol_violations() -> None:
    async with serving(keepalive=0) as (server, http):
        ws = await connect(http, server, "graphql-transport-ws")
        bad = "subscription { getBlocks(where: {}) { nope } }"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": bad}})
        error = await receive(ws)
        assert error["type"] == "error" and error["id"] == "1"
        assert error["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert await receive(ws) == {"id": "1", "type": "complete"}
        missing = "subscription($w: FilterBlock!) { getBlocks(where: $w) { height } }"
        await ws.send_json({"id": "2", "type": "subscribe", "payload": {"query": missing}})
        assert (await receive(ws))["type"] == "error"
        assert await receive(ws) == {"id": "2", "type": "complete"}
        # A query over the websocket: one answer, then complete.
        await ws.send_json(
            {"id": "3", "type": "subscribe", "payload": {"query": "{ latestBlockHeight }"}}
        )
        assert await receive(ws) == {
            "payload": {"data": {"latestBlockHeight": server.chain.tip}},
            "id": "3",
            "type": "next",
        }
        assert await receive(ws) == {"id": "3", "type": "complete"}
        # An unknown message type closes the connection (1002).
        await ws.send_json({"type": "start", "id": "4"})
        closing = await ws.receive(timeout=GUARD)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1002

        # Anything before connection_init is refused; the legacy protocol says why.
        legacy = await http.ws_connect(server.url, protocols=("graphql-ws",))
        await legacy.send_json({"id": "1", "type": "start", "payload": {"query": BLOCKS}})
        assert await receive(legacy) == {
            "payload": {"message": "unexpected message start"},
            "type": "connection_error",
        }
        closing = await legacy.receive(timeout=GUARD)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1002
        # Not JSON.
        other = await http.ws_connect(server.url, protocols=("graphql-transport-ws",))
        await other.send_str("{nope")
        closing = await other.receive(timeout=GUARD)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1002
        # A plain GET still answers queries.
        async with http.get(server.url, params={"query": "{ latestBlockHeight }"}) as response:
            assert (await response.json())["data"]["latestBlockHeight"] == server.chain.tip


async def test_outage_cuts_subscriptions_and_they_can_come_back() -> None:
    async with serving(keepalive=0) as (server, http):
        ws = await connect(http, server, "graphql-transport-ws")
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 1)
        await server.go_down()
        await cut_off(ws)
        await until(lambda: not server.hub.sessions)
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.ws_connect(server.url, protocols=("graphql-transport-ws",))
        await server.come_up()
        again = await connect(http, server, "graphql-transport-ws")
        await again.send_json({"id": "2", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 1)
        server.chain.append_block()
        message = await receive(again)
        assert message["payload"]["data"]["getBlocks"]["height"] == server.chain.tip
        await again.close()

        # The same through the control route, with the websocket open.
        ws = await connect(http, server, "graphql-ws")
        async with http.post(f"{server.base_url}/control/outage", json={"seconds": 0.2}) as r:
            assert r.status == 200
        await cut_off(ws)
        await until(lambda: server.up)


async def test_drop_subscriptions_fault() -> None:
    async with serving(keepalive=0, faults=Faults(drop_subscriptions=1.0)) as (server, http):
        chain = server.chain
        ws = await connect(http, server, "graphql-transport-ws")
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 1)
        chain.append_block()
        await cut_off(ws)  # instead of the block
        assert server.injector.counts["drop_subscriptions"] == 1
        # Blocks a subscription's where does not match are not pushed, so never dropped.
        ws = await connect(http, server, "graphql-transport-ws")
        query = "subscription { getBlocks(where: {height: {gt: %d}}) { height } }" % (
            chain.tip + 2
        )
        await ws.send_json({"id": "2", "type": "subscribe", "payload": {"query": query}})
        await until(lambda: server.hub.subscriptions == 1)
        chain.append_block()
        chain.append_block()
        await nothing_pending(ws)
        assert server.injector.counts["drop_subscriptions"] == 1
        chain.append_block()
        await cut_off(ws)
        assert server.injector.counts["drop_subscriptions"] == 2

        # Through the control route: a rate, seeded: some blocks arrive, then the cut.
        async with http.post(
            f"{server.base_url}/control/faults", json={"drop_subscriptions": 0.25, "seed": 3}
        ) as response:
            state = await response.json()
            assert state["faults"]["drop_subscriptions"] == 0.25
        ws = await connect(http, server, "graphql-transport-ws")
        await ws.send_json({"id": "3", "type": "subscribe", "payload": {"query": BLOCKS}})
        await until(lambda: server.hub.subscriptions == 1)
        start = chain.tip
        for _ in range(40):
            chain.append_block()
        heights = []
        while True:
            message = await ws.receive(timeout=GUARD)
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            heights.append(orjson.loads(message.data)["payload"]["data"]["getBlocks"]["height"])
        assert heights == list(range(start + 1, start + 1 + len(heights)))
        assert len(heights) < 40 and server.injector.counts["drop_subscriptions"] == 3
        # HTTP queries are untouched by this fault.
        async with http.post(server.url, json={"query": "{ latestBlockHeight }"}) as response:
            assert (await response.json())["data"]["latestBlockHeight"] == chain.tip


async def test_stop_closes_websockets_going_away() -> None:
    server = DevnetServer(Chain(ChainConfig(**SMALL)), keepalive=0)
    await server.start()
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server, "graphql-transport-ws")
        await asyncio.wait_for(server.stop(), GUARD)
        closing = await ws.receive(timeout=GUARD)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
