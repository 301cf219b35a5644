"""Several tx-indexer endpoints behind one source, with health tracking and failover.

Each endpoint's health is its run of consecutive errors (which puts it in a growing
cool-down), its latency, and the height it last reported. A batch is read from the
healthiest endpoint that reports the batch's last height; blocks and transactions of a
batch always come from the same endpoint. Endpoints are never trusted blindly against
each other: before a batch is committed, the hash of its last block is compared with the
other endpoints that serve that height, and a disagreement stops the sync with an error
naming both (hashes chain, so agreeing on the last block means agreeing on the batch).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from gnosync.errors import BatchInvalid, ChainMismatch, SourceError
from gnosync.source.client import SourceClient
from gnosync.model import Block, Transaction

COOLDOWN_BASE = 0.25  # seconds out of rotation after one error; doubles per error
COOLDOWN_MAX = 5.0


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

    def succeeded(self, seconds: float) -> None:
        self.requests += 1
        self.consecutive_errors = 0
        self.cooldown_until = 0.0
        self.up = True
        self.latency = seconds if self.latency is None else 0.8 * self.latency + 0.2 * seconds

    def failed(self, error: BaseException) -> None:
        self.requests += 1
        self.errors += 1
        self.consecutive_errors += 1
        self.up = False
        self.last_error = str(error)
        delay = min(COOLDOWN_MAX, COOLDOWN_BASE * 2 ** (self.consecutive_errors - 1))
        self.cooldown_until = time.monotonic() + delay


class Endpoint:
    """One endpoint's client, recording every call's outcome in its health."""

    def __init__(self, client: SourceClient):
        self.client = client
        self.url = client.url
        self.health = EndpointHealth(client.url)

    async def _timed(self, call, *, clears_errors: bool = True):
        started = time.monotonic()
        try:
            result = await call
        except SourceError as exc:
            self.health.failed(exc)
            raise
        if clears_errors:
            self.health.succeeded(time.monotonic() - started)
        return result

    async def latest_height(self) -> int:
        # An endpoint that answers this small query but fails block queries is not
        # healthy again: only a data answer ends its cool-down.
        height = await self._timed(self.client.latest_height(), clears_errors=False)
        self.health.height = height
        return height

    async def lowest_height(self, tip: int) -> int | None:
        return await self._timed(self.client.lowest_height(tip))

    async def blocks(self, start: int, end: int) -> list[Block]:
        return await self._timed(self.client.blocks(start, end))

    async def transactions(self, start: int, end: int) -> list[Transaction]:
        return await self._timed(self.client.transactions(start, end))

    def penalize(self, reason: BaseException) -> None:
        """Bad data counts like an error: the next batch goes elsewhere if it can."""
        self.health.failed(reason)


class SourcePool:
    """The sync's source: one or more endpoints of the same chain."""

    def __init__(self, urls: list[str], **client_options):
        if not urls:
            raise ValueError("at least one source URL is needed")
        self.endpoints = [Endpoint(SourceClient(url, **client_options)) for url in urls]

    async def __aenter__(self) -> SourcePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()

    def _ranked(self, height: int | None = None) -> list[Endpoint]:
        """Endpoints best first: out of cool-down, serving ``height``, fewest errors,
        fastest. Endpoints in cool-down come last, soonest back first."""
        now = time.monotonic()

        def key(endpoint: Endpoint) -> tuple:
            h = endpoint.health
            cooling = h.cooldown_until > now
            behind = height is not None and h.height is not None and h.height < height
            return (cooling, h.cooldown_until if cooling else 0.0, behind,
                    h.consecutive_errors, h.latency if h.latency is not None else 0.0)

        return sorted(self.endpoints, key=key)

    def endpoint_for(self, height: int) -> Endpoint:
        """The endpoint to read a batch ending at ``height`` from."""
        return self._ranked(height)[0]

    async def check(self) -> int:
        """The highest height the endpoints report.

        Raises ``NotATxIndexer`` (or another non-retryable error) if any endpoint is not
        a tx-indexer at all: that is a configuration mistake. Passing failures are fine
        while one endpoint answers; if none does, the first error is raised (retryable).
        """
        results = await asyncio.gather(*(e.client.check() for e in self.endpoints), return_exceptions=True)
        for endpoint, result in zip(self.endpoints, results):
            if isinstance(result, BaseException):
                if not isinstance(result, SourceError) or not result.retryable:
                    raise result
                endpoint.health.failed(result)
            else:
                endpoint.health.height = result
        heights = [r for r in results if isinstance(r, int)]
        if not heights:
            raise next(r for r in results if isinstance(r, BaseException))
        return max(heights)

    async def latest_height(self) -> int:
        """The highest height reported by the endpoints that answer.

        Endpoints in cool-down are asked too (that is how they come back), but only one
        failing everywhere makes this fail.
        """
        results = await asyncio.gather(*(e.latest_height() for e in self.endpoints), return_exceptions=True)
        heights = [r for r in results if isinstance(r, int)]
        if heights:
            return max(heights)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, SourceError):
                raise error
        raise errors[0]

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

        Endpoints that do not answer, or have not reached ``height``, are skipped: they
        cannot vouch either way, and must not hold the sync up. A disagreement is read
        again from both sides: if they still disagree, they follow different chains
        (``ChainMismatch``); if not, ``origin`` served a bad batch (``BatchInvalid``,
        fetched again).
        """
        for other in self.endpoints:
            if other is origin or (other.health.height is not None and other.health.height < height):
                continue
            theirs = await self._hash_at(other, height)
            if theirs is None or theirs == block_hash:
                continue
            ours = await self._hash_at(origin, height)
            theirs = await self._hash_at(other, height)
            if ours is not None and theirs is not None and ours != theirs:
                raise ChainMismatch(
                    f"sources disagree on block {height}: {origin.url} serves hash {ours!r},"
                    f" {other.url} serves {theirs!r}; they follow different chains or forks:"
                    " remove the wrong one from --source / GNOSYNC_SOURCE"
                )
            origin.penalize(SourceError(f"served a stray hash for block {height}", retryable=True))
            raise BatchInvalid(
                height, "hash",
                f"{origin.url} served hash {block_hash!r} in a batch but {ours!r} when asked"
                f" again, and {other.url} serves {theirs!r}",
            )

    @staticmethod
    async def _hash_at(endpoint: Endpoint, height: int) -> str | None:
        try:
            blocks = await endpoint.blocks(height, height)
        except SourceError:
            return None
        return blocks[0].hash if blocks and blocks[0].height == height else None

    def health(self) -> list[EndpointHealth]:
        return [endpoint.health for endpoint in self.endpoints]
