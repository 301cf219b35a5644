"""The stored chain against the source: the one hash comparison and the one probe.

:func:`stored_against_served` compares stored block hashes with the served ones, range
by range; ``gnosync sync`` (heights already stored), ``gnosync verify
--against-source`` and ``gnosync repair --against-source`` all use it.
:func:`served_hash_if_different` is the probe run when a batch does not link to the
stored block below it: does the source serve that stored block with another hash?
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gnosync.errors import ChainMismatch
from gnosync.model import BlockRef

T = TypeVar("T")

# Heights compared per source request (tx-indexer's element cap).
SOURCE_CHUNK = 10_000

Call = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


class HashSource(Protocol):
    """One endpoint's block hashes, and its name for messages."""

    url: str

    async def block_hashes(self, start: int, end: int) -> dict[int, str]: ...


class HashSources(Protocol):
    def endpoint_for(self, height: int) -> HashSource: ...


class StoredHashes(Protocol):
    async def block_hashes(self, start: int, end: int) -> dict[int, str]: ...


@dataclass(frozen=True, slots=True)
class HashDifference:
    """A stored height whose hash the source does not serve (``served`` None: no block)."""

    height: int
    stored: str
    served: str | None
    url: str

    @property
    def detail(self) -> str:
        if self.served is None:
            return f"{self.url} serves no block {self.height}"
        return f"block {self.height} is stored with hash {self.stored!r}, {self.url} serves {self.served!r}"

    def chain_mismatch(self) -> ChainMismatch:
        assert self.served is not None
        return chain_mismatch(self.url, self.height, self.served, self.stored)


def chain_mismatch(url: str, height: int, served: str, stored: str) -> ChainMismatch:
    """The error of a source serving another hash than the stored one at ``height``."""
    return ChainMismatch(
        f"source {url} serves hash {served!r} for block {height} but the database holds"
        f" {stored!r}: the source follows another chain, or its chain was reset. Point"
        " gnosync at a source of the stored chain, or sync the new chain into another"
        " database or --db-schema"
    )


def hash_differences(stored: dict[int, str], by_height: dict[int, str], url: str) -> list[HashDifference]:
    """The stored heights whose hash is not the served one, in height order. Pure."""
    return [
        HashDifference(height, block_hash, by_height.get(height), url)
        for height, block_hash in sorted(stored.items())
        if by_height.get(height) != block_hash
    ]


async def _direct(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


async def stored_against_served(
    store: StoredHashes,
    source: HashSources,
    start: int,
    end: int,
    *,
    call: Call = _direct,
    chunk: int = SOURCE_CHUNK,
) -> AsyncIterator[HashDifference]:
    """Every stored height in ``start..end`` whose hash the source does not serve.

    ``chunk`` heights per request, each from the endpoint the source picks for the
    chunk's last height; source requests go through ``call`` (e.g. a retry policy's).
    """
    for first in range(start, end + 1, chunk):
        last = min(end, first + chunk - 1)
        stored = await store.block_hashes(first, last)
        if not stored:
            continue
        endpoint = source.endpoint_for(last)

        async def served(endpoint: HashSource = endpoint, first: int = first, last: int = last) -> dict[int, str]:
            return await endpoint.block_hashes(first, last)

        for difference in hash_differences(stored, await call(served), endpoint.url):
            yield difference


async def served_hash_if_different(endpoint: HashSource, stored: BlockRef) -> str | None:
    """The hash ``endpoint`` serves for the stored block ``stored``, when it is another
    one; None when it serves the same hash or no such block."""
    served = (await endpoint.block_hashes(stored.height, stored.height)).get(stored.height)
    return served if served is not None and served != stored.hash else None
