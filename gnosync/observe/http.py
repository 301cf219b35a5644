"""The operator's HTTP endpoints: metrics, liveness, readiness and status.

=============  ===========================================================================
``/metrics``   Prometheus text exposition of :class:`~gnosync.observe.metrics.SyncMetrics`
``/healthz``   200 while the sync loop turns (:class:`Liveness`), else 503: restart me
``/readyz``    200 when the ``ready`` callback says so, else 503: do not rely on my data
``/status``    the JSON status dict (as ``gnosync status --json`` prints it)
=============  ===========================================================================

Health, readiness and status answer JSON objects; failures carry a ``reason``. The
server binds to loopback unless told otherwise: the endpoints are for a local
Prometheus, a supervisor or a reverse proxy, not for the open internet.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gnosync.observe.metrics import CONTENT_TYPE, SyncMetrics

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
DEFAULT_ADDRESS = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
LIVENESS_MIN_WINDOW = 30.0
LIVENESS_INTERVALS = 5

StatusCallback = Callable[[], Awaitable[dict[str, Any]]]
ReadyCallback = Callable[[], Awaitable[tuple[bool, str]]]
AliveCallback = Callable[[], tuple[bool, str]]


def liveness_window(interval: float) -> float:
    """How long the loop may go without a turn: max(30 s, 5 × the poll interval)."""
    return max(LIVENESS_MIN_WINDOW, LIVENESS_INTERVALS * interval)


class Liveness:
    """Whether the sync loop still turns.

    The loop calls :meth:`beat` every turn (waits at the tip included). :meth:`alive`
    is true while the last beat is younger than ``window`` seconds. Construction counts
    as the first beat, so start-up gets one window of grace.
    """

    def __init__(self, window: float = LIVENESS_MIN_WINDOW, *, clock: Callable[[], float] = time.monotonic):
        if window <= 0:
            raise ValueError("the liveness window must be positive")
        self.window = window
        self._clock = clock
        self._last = clock()
        self.beats = 0

    @classmethod
    def for_interval(cls, interval: float, **kwargs: Any) -> Liveness:
        """A liveness whose window is :func:`liveness_window` of ``interval``."""
        return cls(liveness_window(interval), **kwargs)

    def beat(self) -> None:
        self._last = self._clock()
        self.beats += 1

    @property
    def age(self) -> float:
        """Seconds since the last beat."""
        return self._clock() - self._last

    def alive(self) -> tuple[bool, str]:
        age = self.age
        if age < self.window:
            return True, f"last turn {age:.1f}s ago"
        return False, f"no turn of the sync loop for {age:.1f}s (limit {self.window:g}s)"

    __call__ = alive


def parse_address(value: str, *, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port``, ``host`` or ``port`` → (host, port).

    A missing host means loopback; a missing port means ``default_port``.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty listen address; expected host:port, e.g. 127.0.0.1:9464")
    if text.isdigit():
        host, port_text = "", text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{value!r}: unclosed '[' in the listen address")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected [host]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{value!r}: the port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be 0..65535")
    return host or DEFAULT_HOST, port


class AddressInUse(OSError):
    """Another socket already listens on the address the server was asked to use."""


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class ObserveServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz`` and ``/status`` over HTTP.

    ``status`` and ``ready`` are awaited per request, for at most ``timeout`` seconds;
    one that fails or times out answers 503 with the reason. ``port`` 0 picks a free
    port; :attr:`port` and :attr:`url` give the real one after :meth:`start`.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        metrics: SyncMetrics,
        status: StatusCallback,
        ready: ReadyCallback,
        alive: AliveCallback,
        timeout: float = 5.0,
    ):
        self.host = host
        self.port = port
        self.metrics = metrics
        self._status = status
        self._ready = ready
        self._alive = alive
        self.timeout = timeout
        self.taken_port: int | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._handle_metrics)
        self.app.router.add_get("/healthz", self._handle_healthz)
        self.app.router.add_get("/readyz", self._handle_readyz)
        self.app.router.add_get("/status", self._handle_status)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, *, or_free_port: bool = False) -> None:
        """Listen on ``host:port``.

        Raises :class:`AddressInUse` when another socket has that address, or ``OSError``
        when it cannot be used at all (``filename`` is the address either way). With ``or_free_port``, a taken port is replaced by
        a free one of the same host: :attr:`port` is then the one listened on and
        :attr:`taken_port` the one that was taken.
        """
        if self._runner is not None:
            return
        try:
            await self._listen()
        except AddressInUse:
            if not or_free_port or self.port == 0:
                raise
            self.taken_port, self.port = self.port, 0
            await self._listen()

    async def _listen(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.host}:{self.port}"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            kind = AddressInUse if exc.errno == errno.EADDRINUSE else OSError
            raise kind(exc.errno, reason, where) from exc
        self._runner = runner
        if self.port == 0:
            for address in runner.addresses:
                self.port = address[1]
                break

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ObserveServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ----------------------------------------------------------------------

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        try:
            ok, reason = self._alive()
        except Exception as exc:  # a broken check must not look healthy
            ok, reason = False, f"liveness check failed: {exc}"
        return _json({"ok": ok, "reason": reason}, 200 if ok else 503)

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        try:
            ok, reason = await asyncio.wait_for(self._ready(), self.timeout)
        except asyncio.TimeoutError:
            ok, reason = False, f"readiness check took longer than {self.timeout:g}s"
        except Exception as exc:
            ok, reason = False, f"readiness check failed: {exc}"
        body: dict[str, Any] = {"ok": ok, "reason": reason}
        lag = self.metrics.lag_blocks
        if lag is not None:
            body["lag_blocks"] = lag
        return _json(body, 200 if ok else 503)

    async def _handle_status(self, request: web.Request) -> web.Response:
        try:
            report = await asyncio.wait_for(self._status(), self.timeout)
        except asyncio.TimeoutError:
            return _json({"error": f"status took longer than {self.timeout:g}s"}, 503)
        except Exception as exc:
            return _json({"error": f"status failed: {exc}"}, 503)
        return _json(report)
