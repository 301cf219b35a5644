"""The devnet's HTTP server: tx-indexer's GraphQL endpoint over a :class:`Chain`.

Routes (as tx-indexer serves them):

* ``POST /graphql/query`` with ``{"query", "variables", "operationName"}``: the GraphQL
  endpoint. ``GET /graphql/query?query=...`` works too, as with gqlgen's GET transport.
* ``GET /graphql``: a short page pointing at the endpoint (tx-indexer has a playground
  there); ``GET /``: one line of text. Anything else is 404.

Websocket subscriptions are not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gnosync.devnet.chain import Chain, ChainConfig
from gnosync.devnet.executor import DEFAULT_MAX_ELEMENTS, Executor

__all__ = ["DEFAULT_PORT", "DevnetServer", "running_devnet", "serve_forever"]

DEFAULT_PORT = 8546  # tx-indexer's default HTTP port
GRAPHQL_PATH = "/graphql/query"

_JSON = "application/json"


def _json_error(status: int, message: str) -> web.Response:
    body = orjson.dumps({"errors": [{"message": message}], "data": None})
    return web.Response(body=body, status=status, content_type=_JSON)


class DevnetServer:
    """Serves ``chain`` over HTTP. ``await start()``, then ``url``; ``await stop()``.

    With ``block_time`` (default: the chain config's) a background task appends a block
    every ``block_time`` seconds while the server runs. ``max_elements`` is the
    per-query element cap (tx-indexer's is 10,000).
    """

    def __init__(
        self,
        chain: Chain,
        host: str = "127.0.0.1",
        port: int = 0,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        *,
        block_time: float | None = None,
    ):
        self.chain = chain
        self.host = host
        self.port = port
        self.block_time = chain.config.block_time if block_time is None else block_time
        self.executor = Executor(chain, max_elements=max_elements)
        self._runner: web.AppRunner | None = None
        self._grower: asyncio.Task[None] | None = None

    @property
    def max_elements(self) -> int:
        return self.executor.max_elements

    @property
    def url(self) -> str:
        """The GraphQL endpoint, e.g. ``http://127.0.0.1:8546/graphql/query``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{GRAPHQL_PATH}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(GRAPHQL_PATH, self._post)
        app.router.add_get(GRAPHQL_PATH, self._get)
        app.router.add_get("/graphql", self._playground)
        app.router.add_get("/", self._root)
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
        address = runner.addresses[0]
        self.port = int(address[1])
        if self.block_time:
            self._grower = asyncio.get_running_loop().create_task(self._grow(self.block_time))

    async def stop(self) -> None:
        if self._grower is not None:
            self._grower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._grower
            self._grower = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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

    # ------------------------------------------------------------------ handlers

    def _answer(self, query: Any, variables: Any, operation_name: Any) -> web.Response:
        status, body = self.executor.execute(query, variables, operation_name)
        return web.Response(body=body, status=status, content_type=_JSON)

    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _json_error(400, f"json request body could not be decoded: {exc}")
        if not isinstance(payload, dict):
            return _json_error(400, "json request body could not be decoded: expected an object")
        return self._answer(
            payload.get("query"), payload.get("variables"), payload.get("operationName")
        )

    async def _get(self, request: web.Request) -> web.Response:
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
        return self._answer(query, variables, request.query.get("operationName"))

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


@contextlib.contextmanager
def running_devnet(chain: Chain | ChainConfig | None = None, **options: Any) -> Iterator[str]:
    """Run a devnet server in a background thread; yield its GraphQL URL.

    ``chain`` is a :class:`Chain` or a :class:`ChainConfig` (default: ``ChainConfig()``);
    ``options`` go to :class:`DevnetServer` (``host``, ``port``, ``max_elements``,
    ``block_time``). The server stops, and the thread ends, when the block exits.
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
) -> int:
    """Serve a devnet until SIGINT or SIGTERM; return the exit status (0).

    Prints one line once the server listens::

        gnosync devnet serving chain '<id>' heights <lowest>..<tip> at http://HOST:PORT/graphql/query
    """
    chain = Chain(config)
    return asyncio.run(_serve(chain, host, port, max_elements))


async def _serve(chain: Chain, host: str, port: int, max_elements: int) -> int:
    server = DevnetServer(chain, host=host, port=port, max_elements=max_elements)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not on this platform / thread
            pass
    await server.start()
    try:
        print(
            f"gnosync devnet serving chain '{chain.chain_id}' heights "
            f"{chain.lowest}..{chain.tip} at {server.url}",
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
