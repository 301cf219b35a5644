"""The devnet's HTTP server: tx-indexer's GraphQL endpoint over a :class:`Chain`.

Routes (as tx-indexer serves them):

* ``POST /graphql/query`` with ``{"query", "variables", "operationName"}``: the GraphQL
  endpoint. ``GET /graphql/query?query=...`` works too, as with gqlgen's GET transport.
* ``GET /graphql/query`` with ``Upgrade: websocket``: subscriptions (``getBlocks``, new
  blocks pushed as they are stored) over gqlgen's ``graphql-transport-ws`` and
  ``graphql-ws`` protocols; see :mod:`gnosync.devnet.subscriptions`.
* ``GET /graphql``: a short page pointing at the endpoint (tx-indexer has a playground
  there); ``GET /``: one line of text. Anything else is 404.

Control routes, for tests and chaos runs (JSON in and out, never faulted; a bad request
gets HTTP 400 with ``{"error": "..."}``):

* ``GET /control/faults``: the fault config (``faults``), ``counts`` of injected faults
  by kind, ``injected``, ``requests``, and the chain's ``chain_id``, ``seed``,
  ``lowest``, ``tip``, plus ``up``, ``outages``, the open websocket ``sessions`` and
  ``subscriptions``, and the ``answer_cache`` of encoded answers (its size and counts).
  Every control route answers this.
* ``POST /control/faults`` ``{"http_503": 0.1, ...}``: merge fields into the config
  (see :class:`gnosync.devnet.faults.Faults`); an unknown field or bad value is a 400.
* ``POST /control/faults/reset``: every rate back to 0 (``{"counts": true}`` zeroes
  the counts too).
* ``POST /control/chain-reset`` ``{"chain_id": "...", "seed": N}`` (both optional):
  serve another chain at the same heights (:meth:`Chain.reset`).
* ``POST /control/outage`` ``{"seconds": 2.5}``: answer, then refuse connections for
  that long (websockets are cut), then listen again on the same port.
* ``POST /control/grow`` ``{"blocks": N}``: append N blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gnosync.devnet.chain import Chain, ChainConfig
from gnosync.devnet.executor import DEFAULT_MAX_ELEMENTS, Executor
from gnosync.devnet.faults import (
    GRAPHQL_ERROR_MESSAGE,
    PROXY_BODIES,
    FaultInjector,
    Faults,
)
from gnosync.devnet.subscriptions import DEFAULT_KEEPALIVE, SubscriptionHub, is_websocket

__all__ = ["DEFAULT_PORT", "DevnetServer", "banner", "running_devnet", "serve_forever"]

DEFAULT_PORT = 8546  # tx-indexer's default HTTP port
GRAPHQL_PATH = "/graphql/query"
CONTROL_PATH = "/control"

_JSON = "application/json"
# The reason phrases of the statuses a proxy or a wrong path in front of tx-indexer sends.
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


def _json_error(status: int, message: str) -> web.Response:
    body = orjson.dumps({"errors": [{"message": message}], "data": None})
    return web.Response(body=body, status=status, content_type=_JSON)


class DevnetServer:
    """Serves ``chain`` over HTTP. ``await start()``, then ``url``; ``await stop()``.

    With ``block_time`` (default: the chain config's) a background task appends a block
    every ``block_time`` seconds while the server runs. ``max_elements`` is the
    per-query element cap (tx-indexer's is 10,000). ``faults`` (default: none) makes
    the GraphQL endpoint misbehave on demand; ``server.faults`` may be changed or
    replaced at any time, and ``server.injector.counts`` counts what was injected.
    ``go_down()``/``come_up()``/``outage(seconds)`` take the listening socket away and
    bring it back on the same port. ``keepalive`` is the seconds between the legacy
    websocket protocol's ``ka`` messages (tx-indexer's 10).
    """

    def __init__(
        self,
        chain: Chain,
        host: str = "127.0.0.1",
        port: int = 0,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        *,
        block_time: float | None = None,
        faults: Faults | None = None,
        keepalive: float = DEFAULT_KEEPALIVE,
    ):
        self.chain = chain
        self.host = host
        self.port = port
        self.block_time = chain.config.block_time if block_time is None else block_time
        self.executor = Executor(chain, max_elements=max_elements)
        self.injector = FaultInjector(faults)
        self.hub = SubscriptionHub(chain, self.executor, self.injector, keepalive=keepalive)
        self.outages = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._grower: asyncio.Task[None] | None = None
        self._outage: asyncio.Task[None] | None = None
        self._interrupt = asyncio.Event()  # set when the server goes down: ends stalls

    @property
    def faults(self) -> Faults:
        """The fault config in force (mutable in place)."""
        return self.injector.faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        self.injector.faults = faults if faults is not None else Faults()

    @property
    def max_elements(self) -> int:
        return self.executor.max_elements

    @property
    def url(self) -> str:
        """The GraphQL endpoint, e.g. ``http://127.0.0.1:8546/graphql/query``."""
        return self.base_url + GRAPHQL_PATH

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: the control routes live under ``/control/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def up(self) -> bool:
        """Whether the server accepts connections (started and not in an outage)."""
        return self._site is not None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(GRAPHQL_PATH, self._post)
        app.router.add_get(GRAPHQL_PATH, self._get)
        app.router.add_get("/graphql", self._playground)
        app.router.add_get("/", self._root)
        app.router.add_get(CONTROL_PATH + "/faults", self._control_faults)
        app.router.add_post(CONTROL_PATH + "/faults", self._control_set_faults)
        app.router.add_post(CONTROL_PATH + "/faults/reset", self._control_reset_faults)
        app.router.add_post(CONTROL_PATH + "/chain-reset", self._control_chain_reset)
        app.router.add_post(CONTROL_PATH + "/outage", self._control_outage)
        app.router.add_post(CONTROL_PATH + "/grow", self._control_grow)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the devnet server is already running")
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._site = site
        self._interrupt = asyncio.Event()
        address = runner.addresses[0]
        self.port = int(address[1])
        self.hub.start()
        if self.block_time:
            self._grower = asyncio.get_running_loop().create_task(self._grow(self.block_time))

    async def stop(self) -> None:
        for task in (self._grower, self._outage):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._grower = self._outage = None
        self._interrupt.set()
        if self._runner is not None:
            await self.hub.stop()
            await self._runner.cleanup()
            self._runner = None
        self._site = None

    async def __aenter__(self) -> DevnetServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _grow(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.chain.append_block()
            next_at += interval

    # ------------------------------------------------------------------ outages

    async def go_down(self) -> None:
        """Stop listening (new connections are refused) and close open connections,
        idle keep-alive ones, those with a request in progress and websockets alike."""
        if self._runner is None:
            raise RuntimeError("the devnet server is not running")
        if self._site is None:
            return
        site, self._site = self._site, None
        self.hub.cut_all()  # before stop(): it may wait for open connections
        await site.stop()
        self.outages += 1
        self._interrupt.set()
        self.hub.cut_all()  # any that came in meanwhile
        for handler in self._runner.server.connections if self._runner.server else ():
            handler.force_close()

    async def come_up(self) -> None:
        """Listen again, on the same host and port."""
        if self._runner is None:
            raise RuntimeError("the devnet server is not running")
        if self._site is not None:
            return
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._site = site
        self._interrupt = asyncio.Event()

    async def outage(self, seconds: float) -> None:
        """Go down for ``seconds``, then come back up on the same port."""
        await self.go_down()
        await asyncio.sleep(seconds)
        await self.come_up()

    def _schedule_outage(self, seconds: float) -> None:
        if self._outage is not None:
            self._outage.cancel()  # the new outage decides when the server comes back
        self._outage = asyncio.get_running_loop().create_task(self.outage(seconds))

    # ------------------------------------------------------------------ handlers

    async def _answer(
        self, request: web.Request, query: Any, variables: Any, operation_name: Any
    ) -> web.StreamResponse:
        injector = self.injector
        if not injector.faults.queries_active:
            status, body = self.executor.execute(query, variables, operation_name)
            return web.Response(body=body, status=status, content_type=_JSON)
        operations = self.executor.root_fields(query, operation_name)
        faults = injector.faults
        if faults.reject_status and injector.applies(operations):
            injector.count("reject_status")
            return web.Response(
                status=faults.reject_status,
                text=f"{faults.reject_status} {_REASONS.get(faults.reject_status, 'Client Error')}\n",
                content_type="text/plain",
            )
        kind = injector.transport_fault(operations)
        if kind in _PROXY_STATUSES:
            status = _PROXY_STATUSES[kind]
            headers = {}
            if status == 429:
                headers["Retry-After"] = f"{injector.faults.retry_after:g}"
            return web.Response(
                status=status, text=PROXY_BODIES[status], content_type="text/plain", headers=headers
            )
        if kind == "graphql_error":
            body = orjson.dumps({"errors": [{"message": GRAPHQL_ERROR_MESSAGE}], "data": None})
            return web.Response(body=body, status=200, content_type=_JSON)
        if kind in ("reset", "malformed"):
            status, body = self.executor.execute(query, variables, operation_name)
            if kind == "malformed":
                return web.Response(body=injector.garble(body), status=200, content_type=_JSON)
            return await self._reset_midway(request, status, body)
        if kind == "stall" and not await self._stall(injector.faults.stall_seconds):
            return _abort(request)
        status, body = self.executor.execute(
            query, variables, operation_name, amend=injector.amend
        )
        if not await self._hold(faults.latency + faults.build_ms_per_kb * len(body) / 1024 / 1000):
            return _abort(request)
        return web.Response(body=body, status=status, content_type=_JSON)

    async def _hold(self, seconds: float) -> bool:
        """Hold a finished answer back ``seconds`` before its first byte, as tx-indexer
        does while it encodes one; False when the server went down meanwhile."""
        return seconds <= 0 or await self._stall(seconds)

    async def _stall(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the server went down meanwhile."""
        interrupt = self._interrupt
        try:
            await asyncio.wait_for(interrupt.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _reset_midway(
        self, request: web.Request, status: int, body: bytes
    ) -> web.StreamResponse:
        """Status line, headers and part of ``body``, then a TCP reset."""
        response = web.StreamResponse(status=status, headers={"Content-Type": _JSON})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: self.injector.cut(body)])
        transport = request.transport
        if transport is not None:
            # Let what was written leave before the reset, or the client sees none of it.
            deadline = asyncio.get_running_loop().time() + 1.0
            while (
                transport.get_write_buffer_size()
                and asyncio.get_running_loop().time() < deadline
            ):
                await asyncio.sleep(0.001)
        return _abort(request, response)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _json_error(400, f"json request body could not be decoded: {exc}")
        if not isinstance(payload, dict):
            return _json_error(400, "json request body could not be decoded: expected an object")
        return await self._answer(
            request, payload.get("query"), payload.get("variables"), payload.get("operationName")
        )

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if is_websocket(request):
            return await self.hub.handle(request)
        query = request.query.get("query")
        if query is None:
            return web.Response(
                status=405,
                text=f"POST GraphQL requests to {GRAPHQL_PATH} (or GET with ?query=...)\n",
                headers={"Allow": "GET, POST"},
            )
        variables: Any = None
        if "variables" in request.query:
            try:
                variables = orjson.loads(request.query["variables"])
            except orjson.JSONDecodeError:
                return _json_error(400, "variables could not be decoded")
        return await self._answer(request, query, variables, request.query.get("operationName"))

    async def _playground(self, request: web.Request) -> web.Response:
        html = (
            "<!doctype html><title>gnosync devnet</title>"
            f"<h1>gnosync devnet</h1><p>Chain <code>{self.chain.chain_id}</code>, heights "
            f"{self.chain.lowest}..{self.chain.tip}.</p>"
            f"<p>POST GraphQL queries to <code>{GRAPHQL_PATH}</code>, for example "
            "<code>{ latestBlockHeight }</code>.</p>"
        )
        return web.Response(text=html, content_type="text/html")

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(
            text=(
                f"gnosync devnet: chain '{self.chain.chain_id}' heights "
                f"{self.chain.lowest}..{self.chain.tip}; GraphQL at {GRAPHQL_PATH}\n"
            )
        )

    # ------------------------------------------------------------ control routes

    def _state(self) -> dict[str, Any]:
        chain = self.chain
        return {
            **self.injector.snapshot(),
            "chain_id": chain.chain_id,
            "seed": chain.config.seed,
            "lowest": chain.lowest,
            "tip": chain.tip,
            "up": self.up,
            "outages": self.outages,
            "sessions": len(self.hub.sessions),
            "subscriptions": self.hub.subscriptions,
            "answer_cache": chain.fragments.snapshot(),
        }

    async def _control_faults(self, request: web.Request) -> web.Response:
        return _json(self._state())

    async def _control_set_faults(self, request: web.Request) -> web.Response:
        changes = await _control_body(request)
        if isinstance(changes, web.Response):
            return changes
        try:
            self.injector.faults.update(changes)
        except ValueError as exc:
            return _control_error(str(exc))
        return _json(self._state())

    async def _control_reset_faults(self, request: web.Request) -> web.Response:
        options = await _control_body(request, allowed=("counts",))
        if isinstance(options, web.Response):
            return options
        self.injector.faults.clear()
        if options.get("counts"):
            self.injector.clear_counts()
        return _json(self._state())

    async def _control_chain_reset(self, request: web.Request) -> web.Response:
        options = await _control_body(request, allowed=("chain_id", "seed"))
        if isinstance(options, web.Response):
            return options
        chain_id, seed = options.get("chain_id"), options.get("seed")
        if chain_id is not None and (not isinstance(chain_id, str) or not chain_id):
            return _control_error(f"chain_id must be a non-empty string, got {chain_id!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            return _control_error(f"seed must be an integer, got {seed!r}")
        try:
            await asyncio.to_thread(self.chain.reset, chain_id, seed)
        except ValueError as exc:
            return _control_error(str(exc))
        return _json(self._state())

    async def _control_outage(self, request: web.Request) -> web.StreamResponse:
        options = await _control_body(request, allowed=("seconds",))
        if isinstance(options, web.Response):
            return options
        seconds = options.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not 0 < seconds <= 3600
        ):
            return _control_error(f"seconds must be a number in (0, 3600], got {seconds!r}")
        response = _json({"down_for": seconds, "port": self.port})
        response.force_close()
        # Answer first: the connection closes cleanly after the answer, then the outage.
        await response.prepare(request)
        await response.write_eof()
        self._schedule_outage(float(seconds))
        return response

    async def _control_grow(self, request: web.Request) -> web.Response:
        options = await _control_body(request, allowed=("blocks",))
        if isinstance(options, web.Response):
            return options
        blocks = options.get("blocks", 1)
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= 10_000_000:
            return _control_error(f"blocks must be an integer in 0..10000000, got {blocks!r}")
        for _ in range(blocks):
            self.chain.append_block()
        return _json(self._state())


_PROXY_STATUSES = {"http_500": 500, "http_502": 502, "http_503": 503, "http_429": 429}


def _abort(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Reset the request's TCP connection (RST, not a clean close); the returned
    response is never delivered."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return response if response is not None else web.Response(status=500)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=_JSON)


def _control_error(message: str) -> web.Response:
    return _json({"error": message}, status=400)


async def _control_body(
    request: web.Request, allowed: tuple[str, ...] | None = None
) -> dict[str, Any] | web.Response:
    """The JSON object a control request carries (an empty body is ``{}``), or a 400."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _control_error(f"the request body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _control_error("the request body must be a JSON object")
    if allowed is not None:
        unknown = sorted(name for name in body if name not in allowed)
        if unknown:
            return _control_error(
                f"unknown field{'s' if len(unknown) > 1 else ''}"
                f" {', '.join(repr(name) for name in unknown)}; known fields:"
                f" {', '.join(allowed)}"
            )
    return body


@contextlib.contextmanager
def running_devnet(chain: Chain | ChainConfig | None = None, **options: Any) -> Iterator[str]:
    """Run a devnet server in a background thread; yield its GraphQL URL.

    ``chain`` is a :class:`Chain` or a :class:`ChainConfig` (default: ``ChainConfig()``);
    ``options`` go to :class:`DevnetServer` (``host``, ``port``, ``max_elements``,
    ``block_time``, ``faults``). The server stops, and the thread ends, when the block
    exits. The ``Chain`` and ``Faults`` objects given are the ones served: changing
    them from the caller's thread takes effect on the next request.
    """
    if not isinstance(chain, Chain):
        chain = Chain(chain)
    server = DevnetServer(chain, **options)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="gnosync-devnet", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        thread.join()
        raise failure[0]
    try:
        yield server.url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def serve_forever(
    config: ChainConfig,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    faults: Faults | None = None,
    *,
    prepare: bool = False,
) -> int:
    """Serve a devnet until SIGINT or SIGTERM; return the exit status (0).

    With ``prepare``, hashes the chain and encodes the answers to gnosync's queries
    (``Chain.prepare(encode=True)``) before listening. Prints one line once the server
    listens (see :func:`banner`)::

        gnosync devnet serving chain '<id>' heights <lowest>..<tip>, <N> transactions at http://HOST:PORT/graphql/query

    and, when ``faults`` makes anything happen, a second line about them.
    """
    chain = Chain(config)
    return asyncio.run(_serve(chain, host, port, max_elements, faults, prepare))


def banner(chain: Chain, url: str) -> str:
    """The devnet's start-up line: chain id, heights, transactions, and the URL last
    (scripts take the line's last word)."""
    total = chain.num_txs(0) + chain.total_txs(chain.tip)  # genesis holds none without one
    files = len(chain.config.txs_files)
    loaded = (
        f" ({chain.loaded_txs:,} loaded from {files} transaction file{'s' if files > 1 else ''})"
        if files else ""
    )
    return (
        f"gnosync devnet serving chain '{chain.chain_id}' heights {chain.lowest}..{chain.tip},"
        f" {total:,} transactions{loaded} at {url}"
    )


async def _serve(
    chain: Chain,
    host: str,
    port: int,
    max_elements: int,
    faults: Faults | None = None,
    prepare: bool = False,
) -> int:
    server = DevnetServer(chain, host=host, port=port, max_elements=max_elements, faults=faults)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not on this platform / thread
            pass
    try:
        if prepare:
            await asyncio.to_thread(chain.prepare, encode=True)
            if stop.is_set():
                return 0
        await server.start()
        print(banner(chain, server.url), flush=True)
        if server.faults.active:
            rate = server.faults.transport_rate
            drops = server.faults.drop_subscriptions
            print(
                f"gnosync devnet injecting faults: {rate:.3g} of requests fail"
                f" (seed {server.faults.seed}, stalls {server.faults.stall_seconds:g}s)"
                + (f", {drops:.3g} of pushed blocks cut the subscription" if drops else "")
                + f"; see {server.base_url}{CONTROL_PATH}/faults",
                flush=True,
            )
        try:
            await stop.wait()
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
    finally:
        await server.stop()
        for signum in installed:
            loop.remove_signal_handler(signum)
    sys.stdout.flush()
    return 0
