"""A deterministic, tx-indexer-compatible test chain served over HTTP.

Tests, benchmarks and the quickstart use it in place of a real tx-indexer::

    from gnosync.devnet import Chain, ChainConfig, running_devnet

    with running_devnet(Chain(ChainConfig(blocks=5_000))) as url:
        ...  # point gnosync at url (http://127.0.0.1:PORT/graphql/query)

It serves the part of tx-indexer's GraphQL API that gnosync uses (``latestBlockHeight``,
``getBlocks``, ``getTransactions``) with the same names, types, filters, element cap and
genesis quirks; see :mod:`gnosync.devnet.chain` and :mod:`gnosync.devnet.executor`. New
blocks are pushed to ``getBlocks`` subscribers over websocket
(:mod:`gnosync.devnet.subscriptions`).

``gnosync devnet`` names each chain ``dev-<digest>`` of what shapes it
(:func:`derived_chain_id`), so two different test chains never share a chain id.

For benchmarks it is never the bottleneck: ``ChainConfig(profile="sparse" | "dense")``
shapes the chain like gnoland1 or packs ~20 transactions into every block, and gnosync's
own queries are answered from JSON encoded once per height
(:mod:`gnosync.devnet.fragments`; ``chain.prepare(encode=True)`` encodes ahead)::

    chain = Chain(ChainConfig(profile="sparse", blocks=1_000_000))
    chain.prepare(encode=True)
    with running_devnet(chain) as url:
        ...

It also fails on demand, for tests and chaos runs: HTTP errors, stalls, connection
resets, malformed or wrong answers, lagging or backwards heights
(:mod:`gnosync.devnet.faults`), chain resets and outages, driven in-process or through
the ``/control/*`` routes (:mod:`gnosync.devnet.server`).
"""

from gnosync.devnet.chain import PROFILES, Chain, ChainConfig, derived_chain_id, gnoland1_exports
from gnosync.devnet.executor import DEFAULT_MAX_ELEMENTS, Executor, devnet_schema, schema_sdl
from gnosync.devnet.faults import FaultInjector, Faults
from gnosync.devnet.server import DEFAULT_PORT, DevnetServer, running_devnet, serve_forever

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_PORT",
    "PROFILES",
    "Chain",
    "ChainConfig",
    "DevnetServer",
    "Executor",
    "FaultInjector",
    "Faults",
    "derived_chain_id",
    "devnet_schema",
    "gnoland1_exports",
    "running_devnet",
    "schema_sdl",
    "serve_forever",
]
