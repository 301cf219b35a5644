"""tx-indexer's subscriptions: new blocks pushed over a websocket as they are stored.

A client opens a websocket on the GraphQL path (``/graphql/query``) and subscribes with
``subscription { getBlocks(where: {...}) { <fields> } }``; each block the chain stores
afterwards (a ``block_time`` tick, ``/control/grow``, :meth:`Chain.append_block` from any
thread) is pushed, in height order, to every subscription whose ``where`` matches it,
projected with the subscription's selection set. Blocks stored before the subscription
started are never pushed.

The two protocols of gqlgen's websocket transport, chosen by ``Sec-WebSocket-Protocol``
(none named: the legacy one, as gqlgen does):

* ``graphql-transport-ws``: ``connection_init`` -> ``connection_ack``; ``subscribe``
  ``{id, payload: {query, variables, operationName}}`` -> ``next {id, payload: {data}}``
  per block; ``complete {id}`` from the client ends a subscription (the server confirms
  with ``complete``); ``ping`` -> ``pong`` (same payload). The server sends no pings of
  its own (tx-indexer sets no ping interval).
* ``graphql-ws`` (subscriptions-transport-ws): ``connection_init`` ->
  ``connection_ack`` and a first ``ka``, then ``ka`` every ``keepalive`` seconds (10, as
  tx-indexer); ``start`` -> ``data`` per block; ``stop`` -> ``complete``;
  ``connection_terminate`` closes the connection.

As in gqlgen: a document that does not parse or validate gets ``error {id, payload:
[errors]}`` then ``complete``; a query (not a subscription) is answered once
(``next``/``data``) then completed; a first message other than ``connection_init``, an
unknown message type or a message that is not JSON closes the connection with code 1002
(the legacy protocol sends ``connection_error`` first).

Faults: an outage (:meth:`DevnetServer.go_down`) cuts every websocket; the
``drop_subscriptions`` fault cuts a subscriber's connection instead of pushing it a
block. Cut means no close frame: the TCP connection is reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from gnosync.devnet.executor import RequestError

if TYPE_CHECKING:
    from gnosync.devnet.chain import Chain
    from gnosync.devnet.executor import Executor, Subscription
    from gnosync.devnet.faults import FaultInjector

__all__ = [
    "DEFAULT_KEEPALIVE",
    "GRAPHQL_TRANSPORT_WS",
    "GRAPHQL_WS",
    "PROTOCOLS",
    "SubscriptionHub",
    "is_websocket",
]

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
PROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)
DEFAULT_KEEPALIVE = 10.0  # seconds between "ka" messages (gqlgen's, as tx-indexer sets it)

_PROTOCOL_ERRORS = frozenset({"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"})


def is_websocket(request: web.Request) -> bool:
    """Whether a request asks for a websocket (gqlgen looks for any ``Upgrade``)."""
    return bool(request.headers.get("Upgrade"))


def _cut(transport: Any) -> None:
    """Reset a TCP connection (RST, no close frame, nothing more delivered)."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason


_CUT = object()  # in a session's outbox: cut the connection once what is before it left
_END = object()  # in a session's outbox: the writer stops


class _Subscribed:
    __slots__ = ("after", "id_json", "subscription")

    def __init__(self, id_json: bytes, subscription: Subscription, after: int):
        self.id_json = id_json
        self.subscription = subscription
        self.after = after  # the tip when it started: only higher blocks are pushed


class _Session:
    """One websocket connection: its protocol, subscriptions and outbox."""

    def __init__(self, hub: SubscriptionHub, request: web.Request, ws: web.WebSocketResponse):
        self.hub = hub
        self.request = request
        self.ws = ws
        self.legacy = (ws.ws_protocol or GRAPHQL_WS) == GRAPHQL_WS
        self.next_type = b"data" if self.legacy else b"next"
        self.subscriptions: dict[str, _Subscribed] = {}
        self.closing = False
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._keepalive: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- sending

    def send(self, message: dict[str, Any]) -> None:
        if not self.closing:
            self._outbox.put_nowait(orjson.dumps(message))

    def send_raw(self, message: bytes) -> None:
        if not self.closing:
            self._outbox.put_nowait(message)

    def close(self, code: int, reason: str) -> None:
        """Close cleanly (a close frame) once what is queued has been sent."""
        if not self.closing:
            self.closing = True
            self.subscriptions.clear()
            self._outbox.put_nowait(_Close(code, reason))

    def cut(self, *, now: bool = False) -> None:
        """Cut the connection: at once, or once what is queued has been sent."""
        first = not self.closing
        self.closing = True
        self.subscriptions.clear()
        if now:
            _cut(self.request.transport)
            self._outbox.put_nowait(_END)
        elif first:
            self._outbox.put_nowait(_CUT)

    def push(self, subscribed: _Subscribed, block: dict[str, Any]) -> None:
        """Push ``block`` to one subscription (if its ``where`` matches)."""
        payload = subscribed.subscription.payload(block)
        if payload is None:
            return
        if self.hub.injector.drop_subscription():
            self.cut()
            return
        self.send_raw(
            b'{"payload":%s,"id":%s,"type":"%s"}' % (payload, subscribed.id_json, self.next_type)
        )
        self.hub.pushed += 1

    async def _write(self) -> None:
        ws = self.ws
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, bytes):
                    await ws.send_frame(item, WSMsgType.TEXT)
                elif isinstance(item, _Close):
                    await ws.close(code=item.code, message=item.reason.encode())
                    return
                elif item is _CUT:
                    await self._drained()
                    _cut(self.request.transport)
                    return
                else:
                    return
            except (ConnectionError, RuntimeError):
                return  # the connection is gone

    async def _drained(self, timeout: float = 1.0) -> None:
        """Wait (a little) until what was written has left, so a cut does not eat it."""
        transport = self.request.transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size()
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.001)

    async def _keep_alive(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.send({"type": "ka"})

    # ---------------------------------------------------------------- receiving

    async def run(self) -> None:
        writer = asyncio.get_running_loop().create_task(self._write())
        self.hub.sessions.add(self)
        try:
            await self._read()
        finally:
            self.hub.sessions.discard(self)
            self.subscriptions.clear()
            if self._keepalive is not None:
                self._keepalive.cancel()
            self.closing = True
            self._outbox.put_nowait(_END)
            try:
                await asyncio.wait_for(writer, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()

    def _refuse(self, message: str, reason: str) -> None:
        if self.legacy:
            self.send({"payload": {"message": message}, "type": "connection_error"})
        self.close(1002, reason)

    async def _read(self) -> None:
        initialised = False
        async for frame in self.ws:
            if self.closing:
                return
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return
            try:
                message = orjson.loads(frame.data)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except (orjson.JSONDecodeError, ValueError):
                self._refuse("invalid json", "decoding error")
                return
            kind = message.get("type")
            if not initialised:
                if kind == "connection_init":
                    initialised = True
                    self.send({"type": "connection_ack"})
                    if self.legacy:
                        self.send({"type": "ka"})
                        if self.hub.keepalive:
                            self._keepalive = asyncio.get_running_loop().create_task(
                                self._keep_alive(self.hub.keepalive)
                            )
                elif kind == "connection_terminate" and self.legacy:
                    self.close(1000, "terminated")
                    return
                else:
                    self._refuse(f"unexpected message {kind}", "unexpected message")
                    return
            elif kind == ("start" if self.legacy else "subscribe"):
                self._subscribe(message)
            elif kind == ("stop" if self.legacy else "complete"):
                self._stop(message.get("id"))
            elif kind == "ping" and not self.legacy:
                pong: dict[str, Any] = {"type": "pong"}
                if message.get("payload") is not None:
                    pong = {"payload": message["payload"], **pong}
                self.send(pong)
            elif kind == "pong" and not self.legacy:
                pass
            elif kind == "connection_terminate" and self.legacy:
                self.close(1000, "terminated")
                return
            else:
                self._refuse(f"unexpected message {kind}", "unexpected message")
                return

    def _subscribe(self, message: dict[str, Any]) -> None:
        raw_id = message.get("id")
        sub_id = "" if raw_id is None else str(raw_id)
        payload = message.get("payload")
        if not isinstance(payload, dict):
            self.send({"payload": [{"message": "invalid json"}], "id": sub_id, "type": "error"})
            self.send({"id": sub_id, "type": "complete"})
            return
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName") or None
        executor = self.hub.executor
        try:
            subscription = executor.subscription(query, variables, operation_name)
        except RequestError as exc:
            self._errors(sub_id, exc.errors)
            return
        if subscription is None:  # a query: one answer, then complete
            status, body = executor.execute(query, variables, operation_name)
            if status == 200:
                self.send_raw(
                    b'{"payload":%s,"id":%s,"type":"%s"}'
                    % (body, orjson.dumps(sub_id), self.next_type)
                )
            else:
                self._errors(sub_id, orjson.loads(body).get("errors") or [], complete=False)
            self.send({"id": sub_id, "type": "complete"})
            return
        self.subscriptions[sub_id] = _Subscribed(
            orjson.dumps(sub_id), subscription, after=self.hub.chain.tip
        )

    def _errors(self, sub_id: str, errors: list[dict[str, Any]], *, complete: bool = True) -> None:
        codes = {(error.get("extensions") or {}).get("code") for error in errors}
        if codes & _PROTOCOL_ERRORS:
            self.send({"payload": errors, "id": sub_id, "type": "error"})
        else:
            self.send(
                {
                    "payload": {"errors": errors, "data": None},
                    "id": sub_id,
                    "type": self.next_type.decode(),
                }
            )
        if complete:
            self.send({"id": sub_id, "type": "complete"})

    def _stop(self, raw_id: Any) -> None:
        sub_id = "" if raw_id is None else str(raw_id)
        if self.subscriptions.pop(sub_id, None) is not None:
            self.send({"id": sub_id, "type": "complete"})


class SubscriptionHub:
    """A server's websocket sessions, and the pushing of new blocks to them.

    ``start()`` on the server's event loop; blocks appended from any thread are pushed
    from that loop, in order, each once.
    """

    def __init__(
        self,
        chain: Chain,
        executor: Executor,
        injector: FaultInjector,
        *,
        keepalive: float = DEFAULT_KEEPALIVE,
    ):
        self.chain = chain
        self.executor = executor
        self.injector = injector
        self.keepalive = keepalive
        self.sessions: set[_Session] = set()
        self.pushed = 0  # messages pushed with a block
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pushed_upto = chain.tip

    @property
    def subscriptions(self) -> int:
        """Open subscriptions, over all sessions."""
        return sum(len(session.subscriptions) for session in self.sessions)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pushed_upto = self.chain.tip
        self.chain.add_listener(self._on_block)

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop pushing; close every websocket (1001, going away), cutting those that
        do not close within ``timeout``."""
        self.chain.remove_listener(self._on_block)
        self._loop = None
        sessions = list(self.sessions)
        for session in sessions:
            session.close(1001, "server shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for session in list(self.sessions):
            session.cut(now=True)

    def cut_all(self) -> None:
        """Cut every websocket at once (the server went down)."""
        for session in list(self.sessions):
            session.cut(now=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one websocket connection until it closes."""
        ws = web.WebSocketResponse(protocols=PROTOCOLS, compress=False, timeout=2.0)
        await ws.prepare(request)
        await _Session(self, request, ws).run()
        return ws

    def _on_block(self, tip: int) -> None:
        """A chain listener: called in whichever thread appended the block."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._push)

    def _push(self) -> None:
        chain = self.chain
        tip = chain.tip
        start = self._pushed_upto + 1
        if tip < start:
            return
        self._pushed_upto = tip
        subscribed = [
            (session, sub)
            for session in self.sessions
            if not session.closing
            for sub in session.subscriptions.values()
        ]
        if not subscribed:
            return
        start = max(start, min(sub.after for _, sub in subscribed) + 1)
        with chain.lock:
            for block in chain.iter_blocks(start, tip):
                height = block["height"]
                for session, sub in subscribed:
                    if height > sub.after and not session.closing:
                        session.push(sub, block)
