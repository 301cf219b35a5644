"""New-block signals from tx-indexer's ``getBlocks`` subscription over websocket.

The subscription is only a doorbell: a pushed block wakes the follow loop at once,
instead of at its next poll, and the loop then syncs through the ordinary validated
path. Polling ``latestBlockHeight`` goes on regardless, so a subscription that is
unavailable or drops costs latency, never data. A dropped subscription is reconnected
with the one retry policy.

Both of gqlgen's websocket protocols are spoken: ``graphql-transport-ws`` (preferred)
and the older ``graphql-ws``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import structlog

from gnosync.errors import SourceError
from gnosync.retry import RetryPolicy
from gnosync.source.client import graphql_url

log = structlog.get_logger("gnosync.subscribe")

NEW_BLOCKS = "subscription NewBlocks { getBlocks(where: {}) { height } }"
PROTOCOLS = ("graphql-transport-ws", "graphql-ws")


def websocket_url(url: str) -> str:
    parts = urlsplit(graphql_url(url))
    return urlunsplit(parts._replace(scheme="wss" if parts.scheme == "https" else "ws"))


def _height(message: dict) -> int | None:
    try:
        return int(message["payload"]["data"]["getBlocks"]["height"])
    except (KeyError, TypeError, ValueError):
        return None


class TipWatcher:
    """Listens for new blocks on every endpoint; :meth:`wait` returns when one arrives."""

    def __init__(self, urls: list[str], *, policy: RetryPolicy, connect_timeout: float = 3.0):
        self.urls = [websocket_url(url) for url in urls]
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.height: int | None = None
        self.connected: set[str] = set()
        self._new_block = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(url)) for url in self.urls]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a pushed block; True if one came."""
        try:
            await asyncio.wait_for(self._new_block.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._new_block.clear()
        return True

    async def _watch(self, url: str) -> None:
        async def attempt() -> None:
            await self._listen(url)
            # A subscription that ends cleanly is still a subscription lost.
            raise SourceError(f"subscription at {url} closed")

        async def on_retry(exc: BaseException, attempt_no: int, delay: float) -> None:
            self.connected.discard(url)
            log.info("subscription down; polling meanwhile", url=url, error=str(exc),
                     retry_in=round(delay, 2))

        await self.policy.call(attempt, on_retry=on_retry)

    async def _listen(self, url: str) -> None:
        timeout = aiohttp.ClientWSTimeout(ws_close=self.connect_timeout)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(
                    url, protocols=PROTOCOLS, heartbeat=30, timeout=timeout
                ) as ws:
                    legacy = ws.protocol == "graphql-ws"
                    await ws.send_bytes(orjson.dumps({"type": "connection_init", "payload": {}}))
                    await ws.send_bytes(orjson.dumps({
                        "id": "1",
                        "type": "start" if legacy else "subscribe",
                        "payload": {"query": NEW_BLOCKS},
                    }))
                    async for frame in ws:
                        if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                            break
                        await self._handle(ws, url, orjson.loads(frame.data))
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            raise SourceError(f"subscription at {url} failed: {exc}") from None

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, url: str, message: dict) -> None:
        kind = message.get("type")
        if kind == "connection_ack":
            self.connected.add(url)
            log.info("subscribed to new blocks", url=url)
        elif kind in ("next", "data"):
            height = _height(message)
            if height is not None:
                self.height = height if self.height is None else max(self.height, height)
                self._new_block.set()
        elif kind == "ping":
            await ws.send_bytes(orjson.dumps({"type": "pong"}))
        elif kind in ("error", "connection_error"):
            raise SourceError(f"subscription at {url} refused: {message.get('payload')}")
        elif kind == "complete":
            raise SourceError(f"subscription at {url} completed by the server")
