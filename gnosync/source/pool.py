"""Several tx-indexer endpoints behind one source, with health tracking and failover.

Each endpoint's health is its run of consecutive errors (which puts it in a growing
cool-down), its latency, and the height it last reported. A batch is read from the
healthiest endpoint that reports the batch's last height; blocks and transactions of a
batch always come from the same endpoint. Endpoints are never trusted blindly against
each other: before a batch is committed, the hash of its last block is compared with the
other endpoints that serve that height, and a disagreement stops the sync with an error
naming both (hashes chain, so agreeing on the last block means agreeing on the batch).

A slow or dead backup must not slow the sync: heights are asked of every endpoint at
once and the first answers win (the others get a short grace); confirmations skip
endpoints in cool-down or without a known height, are asked concurrently, and are
bounded by a short timeout. An endpoint that refuses gnosync (HTTP 4xx, or not a
tx-indexer) is taken out of rotation for a long cool-down; only when every endpoint
refuses does the sync stop, with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gnosync.errors import (
    BatchInvalid,
    ChainMismatch,
    EndpointRejected,
    SourceError,
    SourceRejected,
    SourceStatusError,
)
from gnosync.model import Block, Transaction
from gnosync.source.client import SourceClient

T = TypeVar("T")

COOLDOWN_BASE = 0.25  # seconds out of rotation after one error; doubles per error
COOLDOWN_MAX = 5.0
REJECTED_COOLDOWN = 60.0  # an endpoint that refused gnosync (4xx) is asked again after this
HEIGHT_GRACE = 0.2  # after the first height answer, how long the others may take
CONFIRM_TIMEOUT = 2.0  # the longest a cross-endpoint hash check may hold up a commit


@dataclass
class EndpointHealth:
    """What gnosync knows of one endpoint; exported for status and metrics."""

    url: str
    height: int | None = None
    consecutive_errors: int = 0
    errors: int = 0
    requests: int = 0
    latency: float | None = None  # seconds, exponentially weighted
    last_error: str | None = None
    cooldown_until: float = 0.0
    up: bool = field(default=True)
    rejected: bool = False  # the last answer was a refusal (4xx / not a tx-indexer)

    def succeeded(self, seconds: float) -> None:
        self.requests += 1
        self.consecutive_errors = 0
        self.cooldown_until = 0.0
        self.up = True
        self.rejected = False
        self.latency = seconds if self.latency is None else 0.8 * self.latency + 0.2 * seconds

    def failed(self, error: BaseException) -> None:
        self.requests += 1
        self.errors += 1
        self.consecutive_errors += 1
        self.up = False
        self.last_error = str(error)
        delay = min(COOLDOWN_MAX, COOLDOWN_BASE * 2 ** min(self.consecutive_errors - 1, 16))
        self.cooldown_until = time.monotonic() + delay

    def refused(self, error: BaseException) -> None:
        """The endpoint will not serve gnosync: out of rotation for a long while."""
        self.failed(error)
        self.rejected = True
        self.height = None
        self.cooldown_until = time.monotonic() + REJECTED_COOLDOWN

    @property
    def cooling(self) -> bool:
        return self.cooldown_until > time.monotonic()


class Endpoint:
    """One endpoint's client, recording every call's outcome in its health.

    ``others_usable`` tells whether another endpoint of the pool may still serve;
    it decides whether this endpoint's refusal fails over or stops the sync.
    """

    def __init__(self, client: SourceClient, others_usable: Callable[[], bool] = lambda: False):
        self.client = client
        self.url = client.url
        self.health = EndpointHealth(client.url)
        self._others_usable = others_usable
        self._height_request: asyncio.Task[int] | None = None

    async def _timed(self, call: Awaitable[T], *, clears_errors: bool = True) -> T:
        started = time.monotonic()
        try:
            result = await call
        except SourceError as exc:
            if _is_refusal(exc):
                raise self._refusal(exc) from None
            self.health.failed(exc)
            raise
        if clears_errors:
            self.health.succeeded(time.monotonic() - started)
        return result

    def _refusal(self, exc: SourceError) -> SourceError:
        self.health.refused(exc)
        if self._others_usable():
            return EndpointRejected(f"{exc}; trying another endpoint")
        return SourceRejected(str(exc))

    async def latest_height(self) -> int:
        # An endpoint that answers this small query but fails block queries is not
        # healthy again: only a data answer ends its cool-down.
        height = await self._timed(self.client.latest_height(), clears_errors=False)
        self.health.height = height
        return height

    def height_request(self) -> asyncio.Task[int]:
        """The endpoint's height query in flight, started when none is: a dead endpoint
        has at most one request hanging, however often heights are asked."""
        if self._height_request is None or self._height_request.done():
            self._height_request = asyncio.ensure_future(self.latest_height())
        return self._height_request

    async def lowest_height(self, tip: int) -> int | None:
        return await self._timed(self.client.lowest_height(tip))

    async def blocks(self, start: int, end: int) -> list[Block]:
        return await self._timed(self.client.blocks(start, end))

    async def block_hashes(self, start: int, end: int) -> dict[int, str]:
        return await self._timed(self.client.block_hashes(start, end))

    async def transactions(self, start: int, end: int, *, page: int | None = None) -> list[Transaction]:
        return await self._timed(self.client.transactions(start, end, page=page))

    def penalize(self, reason: BaseException) -> None:
        """Bad data counts like an error: the next batch goes elsewhere if it can."""
        self.health.failed(reason)

    async def close(self) -> None:
        if self._height_request is not None and not self._height_request.done():
            self._height_request.cancel()
            await asyncio.gather(self._height_request, return_exceptions=True)
        await self.client.close()


class SourcePool:
    """The sync's source: one or more endpoints of the same chain."""

    def __init__(self, urls: list[str], **client_options):
        if not urls:
            raise ValueError("at least one source URL is needed")
        self.endpoints = [self._endpoint(SourceClient(url, **client_options)) for url in urls]

    def _endpoint(self, client: SourceClient) -> Endpoint:
        endpoint = Endpoint(client, others_usable=lambda: self._usable_besides(endpoint))
        return endpoint

    async def __aenter__(self) -> SourcePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.close()

    def _usable_besides(self, endpoint: Endpoint) -> bool:
        return any(not other.health.rejected for other in self.endpoints if other is not endpoint)

    def _ranked(self, height: int | None = None) -> list[Endpoint]:
        """Endpoints best first: out of cool-down, known to serve ``height``, fewest
        errors, fastest. Endpoints in cool-down come last, soonest back first."""
        now = time.monotonic()

        def key(endpoint: Endpoint) -> tuple:
            h = endpoint.health
            cooling = h.cooldown_until > now
            unknown = h.height is None
            behind = height is not None and h.height is not None and h.height < height
            return (cooling, h.cooldown_until if cooling else 0.0, behind, unknown,
                    h.consecutive_errors, h.latency if h.latency is not None else 0.0)

        return sorted(self.endpoints, key=key)

    def endpoint_for(self, height: int) -> Endpoint:
        """The endpoint to read a batch ending at ``height`` from."""
        return self._ranked(height)[0]

    async def check(self) -> int:
        """The highest height the endpoints report, before a sync starts.

        Like :meth:`latest_height`, the first answers win and a silent endpoint is not
        waited for. An endpoint that refuses gnosync (4xx, not a tx-indexer) is left
        out with a long cool-down; only when every endpoint does is it fatal
        (``SourceRejected``, naming each). Passing failures are fine while one endpoint
        answers; if none does, the first of them is raised (retryable).
        """
        requests = {asyncio.ensure_future(e.client.check()): e for e in self.endpoints}
        outcomes = await _first_answers(requests, cancel_late=True)
        refusals: list[BaseException] = []
        heights: list[int] = []
        failures: list[SourceError] = []
        for endpoint, outcome in outcomes:
            if isinstance(outcome, int):
                endpoint.health.height = outcome
                heights.append(outcome)
            elif isinstance(outcome, SourceError):
                if _is_refusal(outcome):
                    endpoint.health.refused(outcome)
                    refusals.append(outcome)
                else:
                    endpoint.health.failed(outcome)
                    failures.append(outcome)
            else:
                raise outcome
        if heights:
            return max(heights)
        if len(refusals) == len(self.endpoints):
            raise SourceRejected("; ".join(str(r) for r in refusals))
        raise failures[0]

    async def latest_height(self) -> int:
        """The highest height reported by the endpoints that answer first.

        Every endpoint is asked at once (those in cool-down too: a height is how a
        lagging one shows it caught up); once one answers, the others get
        ``HEIGHT_GRACE`` more. One that has not answered by then keeps its request
        running but loses its known height, so no batch is sent its way meanwhile.
        Fails only when every endpoint fails.
        """
        requests = {endpoint.height_request(): endpoint for endpoint in self.endpoints}
        outcomes = await _first_answers(requests, cancel_late=False)
        answered = [outcome for _, outcome in outcomes if isinstance(outcome, int)]
        if answered:
            return max(answered)
        errors = [outcome for _, outcome in outcomes if isinstance(outcome, BaseException)]
        for error in errors:
            if not isinstance(error, SourceError):
                raise error
        if all(endpoint.health.rejected for endpoint in self.endpoints):
            raise SourceRejected("; ".join(str(e) for e in errors))
        raise next(e for e in errors if isinstance(e, SourceError))

    async def lowest_height(self, tip: int) -> int | None:
        last_error: BaseException | None = None
        for endpoint in self._ranked():
            try:
                return await endpoint.lowest_height(tip)
            except SourceError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def confirm(self, origin: Endpoint, height: int, block_hash: str) -> None:
        """Check ``block_hash`` (served by ``origin`` at ``height``) with the others.

        Asked concurrently, of the endpoints out of cool-down that reported ``height``
        or above, for at most ``CONFIRM_TIMEOUT``: one that does not answer in time
        cannot vouch either way and must not hold the sync up. A disagreement is read
        again from both sides: if they still disagree, they follow different chains
        (``ChainMismatch``); if not, ``origin`` served a bad batch (``BatchInvalid``,
        fetched again).
        """
        witnesses = [
            other for other in self.endpoints
            if other is not origin and not other.health.cooling
            and other.health.height is not None and other.health.height >= height
        ]
        if not witnesses:
            return
        hashes = await asyncio.gather(*(self._hash_at(other, height) for other in witnesses))
        for other, theirs in zip(witnesses, hashes):
            if theirs is None or theirs == block_hash:
                continue
            ours, theirs = await asyncio.gather(self._hash_at(origin, height), self._hash_at(other, height))
            if ours is not None and theirs is not None and ours != theirs:
                raise ChainMismatch(
                    f"sources disagree on block {height}: {origin.url} serves hash {ours!r},"
                    f" {other.url} serves {theirs!r}; they follow different chains or forks:"
                    " remove the wrong one from --source / GNOSYNC_SOURCE"
                )
            origin.penalize(SourceError(f"served a stray hash for block {height}"))
            raise BatchInvalid(
                height, "hash",
                f"{origin.url} served hash {block_hash!r} in a batch but {ours!r} when asked"
                f" again, and {other.url} serves {theirs!r}",
            )

    @staticmethod
    async def _hash_at(endpoint: Endpoint, height: int) -> str | None:
        try:
            hashes = await asyncio.wait_for(endpoint.block_hashes(height, height), CONFIRM_TIMEOUT)
        except asyncio.TimeoutError:
            endpoint.health.failed(SourceError(f"no answer within {CONFIRM_TIMEOUT:g}s to a hash check"))
            return None
        except SourceError:
            return None
        return hashes.get(height)

    def health(self) -> list[EndpointHealth]:
        return [endpoint.health for endpoint in self.endpoints]


def _is_refusal(error: SourceError) -> bool:
    return isinstance(error, SourceRejected) or (
        isinstance(error, SourceStatusError) and error.endpoint_fault
    )


async def _first_answers(
    requests: dict[asyncio.Future[int], Endpoint], *, cancel_late: bool
) -> list[tuple[Endpoint, int | BaseException]]:
    """The outcomes of ``requests`` that came in by ``HEIGHT_GRACE`` after the first
    answer (or all of them, when none answers). The endpoints still silent then lose
    their known height; their requests are cancelled with ``cancel_late``, else left to
    finish in the background."""
    pending = set(requests)
    outcomes: list[tuple[Endpoint, int | BaseException]] = []

    def collect(done: set[asyncio.Future[int]]) -> None:
        for request in done:
            if not request.cancelled():
                error = request.exception()
                outcomes.append((requests[request], request.result() if error is None else error))

    while pending and not any(isinstance(outcome, int) for _, outcome in outcomes):
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        collect(done)
    if pending:
        done, pending = await asyncio.wait(pending, timeout=HEIGHT_GRACE)
        collect(done)
    for request in pending:
        requests[request].health.height = None
        if cancel_late:
            request.cancel()
    return outcomes
