"""The source client: range filters, and every failure mapped to a typed error."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from graphql import build_schema, parse, validate
from hypothesis import given
from hypothesis import strategies as st

from gnosync.errors import (
    NotATxIndexer,
    ResponseTooLarge,
    SourceDecodeError,
    SourceError,
    SourceGraphQLError,
    SourceStatusError,
    SourceTimeout,
    SourceTransportError,
)
from gnosync.source import queries
from gnosync.source.client import SourceClient, graphql_url

from .compare import upstream_schema


def test_every_document_validates_against_tx_indexer_schema():
    schema = upstream_schema()
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
    ("http_500", answer(500, b"oops"), SourceStatusError, True),
    ("http_502", answer(502, b"bad gateway"), SourceStatusError, True),
    ("http_503", answer(503, b""), SourceStatusError, True),
    ("graphql_errors", answer(200, b'{"errors":[{"message":"storage closed"}],"data":null}'), SourceGraphQLError, True),
    ("malformed_json", answer(200, b'{"data": {"latestBlockHeight": '), SourceDecodeError, True),
    ("wrong_type", answer(200, b'{"data": {"latestBlockHeight": "ten"}}'), SourceDecodeError, True),
    ("not_found", answer(404, b"404 page not found", {"Content-Type": "text/plain"}), SourceStatusError, False),
    ("unauthorized", answer(401, b"401 Unauthorized", {"Content-Type": "text/plain"}), SourceStatusError, False),
    ("forbidden", answer(403, b"403 Forbidden", {"Content-Type": "text/plain"}), SourceStatusError, False),
    ("html_mid_run", answer(200, b"<html>hi</html>", {"Content-Type": "text/html"}), SourceDecodeError, True),
    ("rejected_query", answer(422, b'{"errors":[{"message":"Cannot query field"}],"data":null}'), SourceStatusError, False),
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


@pytest.mark.parametrize("status, says", [(401, "check the credentials"), (403, "check the credentials"),
                                          (404, "not a tx-indexer GraphQL path")])
async def test_refusals_say_what_to_check(status, says):
    runner, url = await serve(answer(status, b"no", {"Content-Type": "text/plain"}))
    try:
        async with SourceClient(url) as client:
            with pytest.raises(SourceStatusError, match=says) as info:
                await client.latest_height()
        assert info.value.endpoint_fault and info.value.kind == "http_status"
    finally:
        await runner.cleanup()


async def test_a_long_wait_for_the_first_byte_is_not_a_silence():
    """tx-indexer builds an answer whole before sending it: the wait counts against the
    whole-answer timeout, not against the read (silence) timeout."""
    runner, url = await serve(answer(200, b'{"data":{"latestBlockHeight":7}}', delay=1.0))
    try:
        async with SourceClient(url, timeout=10, read_timeout=0.2) as client:
            assert await client.latest_height() == 7
    finally:
        await runner.cleanup()


async def test_silence_in_the_middle_of_an_answer_times_out():
    async def handler(request):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 40
        await response.prepare(request)
        await response.write(b'{"data":{"latestBl')
        await asyncio.sleep(5)
        return response

    runner, url = await serve(handler)
    try:
        async with SourceClient(url, timeout=30, read_timeout=0.2) as client:
            with pytest.raises(SourceTimeout, match="did not answer"):
                await client.latest_height()
    finally:
        await runner.cleanup()


async def test_an_answer_over_the_size_limit_is_a_cap_error():
    body = b'{"data":{"latestBlockHeight":1}, "pad": "' + b"x" * 5000 + b'"}'
    runner, url = await serve(answer(200, body))
    try:
        async with SourceClient(url, max_response_bytes=1024) as client:
            with pytest.raises(ResponseTooLarge) as info:
                await client.latest_height()
        assert info.value.kind == "cap" and info.value.retryable
    finally:
        await runner.cleanup()


async def test_strings_that_are_not_utf8_are_repaired_and_marked():
    """tx-indexer writes a string's bytes as they are: an answer may not be UTF-8."""
    tx = (
        b'{"index":0,"hash":"h0","success":false,"block_height":5,"gas_wanted":1,"gas_used":1,'
        b'"gas_fee":null,"content_raw":"Tx{00}","memo":"bad \xff\xfe memo",'
        b'"messages":[{"typeUrl":"exec","route":"vm","value":{"__typename":"MsgCall","args":["\xc3"]}}],'
        b'"response":{"log":"","info":"","error":null,"data":"","events":[]}}'
    )
    clean = tx.replace(b'"index":0', b'"index":1').replace(b'"h0"', b'"h1"').replace(
        b"bad \xff\xfe memo", b"fine").replace(b'["\xc3"]', b'["ok"]')
    body = b'{"data":{"getTransactions":[' + tx + b"," + clean + b"]}}"
    runner, url = await serve(answer(200, body))
    try:
        async with SourceClient(url) as client:
            bad, good = await client.transactions(5, 5)
    finally:
        await runner.cleanup()
    assert bad.memo == "bad \ufffd\ufffd memo" and bad.repaired
    assert "\ufffd" in bytes(bad.messages).decode()
    assert good.memo == "fine" and not good.repaired
    from gnosync.store.rows import transaction_row

    assert transaction_row(bad)[-1] is True and transaction_row(good)[-1] is False


async def test_paging_stops_when_the_server_ignores_the_index_filter():
    """A server that sends the same page whatever index is asked for must not make the
    client loop (and grow) forever."""
    tx = {
        "index": 0, "hash": "h0", "success": True, "block_height": 5, "gas_wanted": 1,
        "gas_used": 1, "gas_fee": None, "content_raw": "", "memo": "", "messages": [],
        "response": {"log": "", "info": "", "error": None, "data": "", "events": []},
    }
    body = orjson.dumps({"data": {"getTransactions": [dict(tx, index=i, hash=f"h{i}") for i in range(4)]}})
    runner, url = await serve(answer(200, body))
    try:
        async with SourceClient(url) as client:
            with pytest.raises(SourceDecodeError, match="ignored the index filter"):
                await client.transactions(5, 5, page=4)
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
            with pytest.raises(SourceTimeout, match="did not answer") as info:
                await client.latest_height()
        assert info.value.retryable
    finally:
        await runner.cleanup()


async def test_connection_refused_is_retryable():
    async with SourceClient("http://127.0.0.1:1/graphql/query") as client:
        with pytest.raises(SourceTransportError, match="cannot reach") as info:
            await client.latest_height()
    assert info.value.retryable


async def test_lowest_height_with_and_without_genesis(devnet):
    _, with_genesis = devnet(blocks=20)
    _, without = devnet(blocks=20, genesis=False)
    async with SourceClient(with_genesis) as a, SourceClient(without) as b:
        assert await a.lowest_height(20) == 0
        assert await b.lowest_height(20) == 1
