"""The source client: range filters, and every failure mapped to a typed error."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from graphql import build_schema, parse, validate
from hypothesis import given
from hypothesis import strategies as st

from gnosync.errors import NotATxIndexer, SourceError
from gnosync.source import queries
from gnosync.source.client import SourceClient, graphql_url

from .test_devnet import UPSTREAM_SCHEMA


def test_every_document_validates_against_tx_indexer_schema():
    schema = build_schema(UPSTREAM_SCHEMA.read_text())
    for name, document in queries.ALL_DOCUMENTS.items():
        assert validate(schema, parse(document)) == [], name


@given(st.integers(0, 10**9), st.integers(0, 10**6))
def test_height_filters_are_two_sided_and_exact(start, length):
    end = start + length
    if start == 0 and end > 0:
        with pytest.raises(ValueError):
            queries.height_bounds(start, end)
        return
    bounds = queries.height_bounds(start, end)
    if "eq" in bounds:
        assert bounds == {"eq": start} and start == end
    else:
        # Both bounds, exclusive, never negative (the server casts them to unsigned).
        assert set(bounds) == {"gt", "lt"} and bounds["gt"] >= 0
        assert bounds["gt"] + 1 == start and bounds["lt"] - 1 == end


def test_paging_filter_is_two_sided():
    where = queries.transactions_where(7, 7, after_index=3)
    assert where == {"block_height": {"eq": 7}, "index": {"gt": 3, "lt": queries.MAX_INDEX}}


@pytest.mark.parametrize("given_url, expected", [
    ("http://h:8546", "http://h:8546/graphql/query"),
    ("http://h:8546/", "http://h:8546/graphql/query"),
    ("http://h:8546/graphql", "http://h:8546/graphql/query"),
    ("https://h/custom/path", "https://h/custom/path"),
])
def test_graphql_url(given_url, expected):
    assert graphql_url(given_url) == expected


async def serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/graphql/query", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/graphql/query"


def answer(status=200, body=b"", headers=None, delay=0.0):
    async def handler(request):
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=body, headers=headers or {"Content-Type": "application/json"})
    return handler


CASES = [
    ("http_500", answer(500, b"oops"), SourceError, True),
    ("http_502", answer(502, b"bad gateway"), SourceError, True),
    ("http_503", answer(503, b""), SourceError, True),
    ("graphql_errors", answer(200, b'{"errors":[{"message":"storage closed"}],"data":null}'), SourceError, True),
    ("malformed_json", answer(200, b'{"data": {"latestBlockHeight": '), SourceError, True),
    ("wrong_type", answer(200, b'{"data": {"latestBlockHeight": "ten"}}'), SourceError, True),
    ("not_found", answer(404, b"404 page not found", {"Content-Type": "text/plain"}), NotATxIndexer, False),
    ("html_mid_run", answer(200, b"<html>hi</html>", {"Content-Type": "text/html"}), SourceError, True),
    ("rejected_query", answer(422, b'{"errors":[{"message":"Cannot query field"}],"data":null}'), SourceError, False),
]


@pytest.mark.parametrize("name, handler, error, retryable", CASES, ids=[c[0] for c in CASES])
async def test_failures_become_typed_errors(name, handler, error, retryable):
    runner, url = await serve(handler)
    try:
        async with SourceClient(url, timeout=30) as client:  # answers come at once
            with pytest.raises(error) as info:
                await client.latest_height()
        assert info.value.retryable is retryable
        assert url in str(info.value)
    finally:
        await runner.cleanup()


async def test_first_contact_with_a_web_page_says_not_a_tx_indexer():
    runner, url = await serve(answer(200, b"<html>hi</html>", {"Content-Type": "text/html"}))
    try:
        async with SourceClient(url) as client:
            with pytest.raises(NotATxIndexer, match="not JSON"):
                await client.check()
    finally:
        await runner.cleanup()


async def test_429_carries_retry_after():
    runner, url = await serve(answer(429, b"slow down", {"Retry-After": "3"}))
    try:
        async with SourceClient(url) as client:
            with pytest.raises(SourceError) as info:
                await client.latest_height()
        assert info.value.retryable and info.value.retry_after == 3.0
    finally:
        await runner.cleanup()


async def test_stall_times_out_as_retryable():
    runner, url = await serve(answer(200, b'{"data":{"latestBlockHeight":1}}', delay=5))
    try:
        async with SourceClient(url, timeout=0.3) as client:
            with pytest.raises(SourceError, match="did not answer") as info:
                await client.latest_height()
        assert info.value.retryable
    finally:
        await runner.cleanup()


async def test_connection_refused_is_retryable():
    async with SourceClient("http://127.0.0.1:1/graphql/query") as client:
        with pytest.raises(SourceError, match="cannot reach") as info:
            await client.latest_height()
    assert info.value.retryable


async def test_lowest_height_with_and_without_genesis(devnet):
    _, with_genesis = devnet(blocks=20)
    _, without = devnet(blocks=20, genesis=False)
    async with SourceClient(with_genesis) as a, SourceClient(without) as b:
        assert await a.lowest_height(20) == 0
        assert await b.lowest_height(20) == 1
