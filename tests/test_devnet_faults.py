"""Faults on demand in the devnet, observed from the client side over loopback."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest

from gnosync.devnet import Chain, ChainConfig, DevnetServer, Faults, running_devnet
from gnosync.devnet.faults import DATA_KINDS, KINDS, TRANSPORT_KINDS, FaultInjector
from gnosync.errors import BatchInvalid, ChainMismatch, SourceError
from gnosync.source import queries
from gnosync.errors import SourceDecodeError as MalformedResponse
from gnosync.source.client import SourceClient
from gnosync.model import Batch, BlockRef
from gnosync.sync.validate import validate_batch

SMALL = dict(blocks=400, dense_start=20, dense_length=40, tx_rate=0.02)
TIP = SMALL["blocks"]
LATEST = orjson.dumps({"query": queries.LATEST_HEIGHT})
# Seconds a wait may take before the test gives up: never reached when what is awaited
# happens. Stalls meant to outlast a client are far longer, so nothing depends on speed.
GUARD = 60.0
FOREVER = 3600.0


async def until(condition, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def small_chain(**changes: Any) -> Chain:
    return Chain(ChainConfig(**{**SMALL, **changes}))


@contextlib.asynccontextmanager
async def serving(
    faults: Faults | None = None, chain: Chain | None = None
) -> AsyncIterator[tuple[DevnetServer, aiohttp.ClientSession]]:
    async with DevnetServer(chain or small_chain(), faults=faults) as server:
        async with aiohttp.ClientSession() as http:
            yield server, http


async def control(
    http: aiohttp.ClientSession, server: DevnetServer, route: str, payload: Any = None
) -> tuple[int, Any]:
    url = f"{server.base_url}/control/{route}"
    if payload is None and route == "faults":
        request = http.get(url)
    else:
        request = http.post(url, data=orjson.dumps(payload) if payload is not None else b"")
    async with request as response:
        return response.status, await response.json()


async def outcome(http: aiohttp.ClientSession, server: DevnetServer) -> str:
    """What one latestBlockHeight request ran into, as a fault kind (or "ok").

    Every kind but a stall shows in the answer; a stalled answer is only late, and
    whether it was is the server's word (its stall count), never the client's clock.
    """
    stalls = server.injector.counts["stall"]
    try:
        async with http.post(
            server.url, data=LATEST, timeout=aiohttp.ClientTimeout(total=GUARD)
        ) as response:
            if response.status != 200:
                return f"http_{response.status}"
            body = await response.read()
    except aiohttp.ClientError:
        return "reset"
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "malformed"
    if document.get("data") is None and document.get("errors"):
        return "graphql_error"
    assert document == {"data": {"latestBlockHeight": TIP}}
    return "stall" if server.injector.counts["stall"] > stalls else "ok"


# ----------------------------------------------------------------------- config


def test_faults_config() -> None:
    assert not Faults().active
    mixed = Faults.mixed(0.4, seed=3, stall_seconds=0.1)
    assert mixed.active and mixed.seed == 3 and mixed.stall_seconds == 0.1
    assert mixed.transport_rate == pytest.approx(0.4)
    assert all(getattr(mixed, kind) == pytest.approx(0.05) for kind in TRANSPORT_KINDS)
    assert all(getattr(mixed, kind) == 0 for kind in DATA_KINDS)
    with pytest.raises(ValueError, match="add up"):
        Faults(http_500=0.6, stall=0.6)
    with pytest.raises(ValueError, match="probability"):
        Faults.mixed(1.5)
    with pytest.raises(ValueError, match="ops"):
        Faults(ops=("getEverything",))
    faults = Faults()
    with pytest.raises(ValueError, match="'nope'"):
        faults.update({"http_500": 0.5, "nope": 1})
    with pytest.raises(ValueError, match="http_502"):
        faults.update({"http_500": 0.5, "http_502": -1})
    assert faults == Faults()  # all or nothing
    faults.update({"http_500": 0.5, "latest_lag": 2, "ops": ["getBlocks"]})
    assert (faults.http_500, faults.latest_lag, faults.ops) == (0.5, 2, ("getBlocks",))
    faults.clear()
    assert not faults.active and faults.ops == ("getBlocks",)


# -------------------------------------------------------------- transport faults


async def test_faults_are_off_by_default() -> None:
    async with serving() as (server, http):
        outcomes = [await outcome(http, server) for _ in range(30)]
        assert outcomes == ["ok"] * 30
        status, state = await control(http, server, "faults")
        assert status == 200 and state["faults"] == Faults().to_dict()
        assert state["counts"] == dict.fromkeys(KINDS, 0) and state["injected"] == 0
        assert (state["tip"], state["chain_id"], state["up"]) == (TIP, "dev", True)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_proxy_errors(status: int) -> None:
    async with serving(Faults(**{f"http_{status}": 1.0})) as (server, http):
        async with http.post(server.url, data=LATEST) as response:
            assert response.status == status
            assert response.content_type == "text/plain"
            assert (await response.text()).startswith(str(status))
        async with SourceClient(server.url) as source:
            with pytest.raises(SourceError, match=f"HTTP {status}") as info:
                await source.latest_height()
        assert info.value.retryable
        assert server.injector.counts[f"http_{status}"] == 2


async def test_rate_limit_with_retry_after() -> None:
    async with serving(Faults(http_429=1.0)) as (server, http):
        async with http.post(server.url, data=LATEST) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "1"
        server.faults.retry_after = 2.5
        async with SourceClient(server.url) as source:
            with pytest.raises(SourceError, match="HTTP 429") as info:
                await source.latest_height()
        assert info.value.retryable and info.value.retry_after == 2.5


async def test_stall_outlasts_a_short_client_timeout() -> None:
    # A stall far longer than any guard: the error can only be the client's timeout.
    server = DevnetServer(small_chain(), faults=Faults(stall=1.0, stall_seconds=FOREVER))
    await server.start()
    try:
        async with SourceClient(server.url, timeout=0.3) as source:
            with pytest.raises(SourceError, match="did not answer"):
                await source.latest_height()
        assert server.injector.counts["stall"] == 1
        server.faults.stall_seconds = 0.05
        async with SourceClient(server.url, timeout=GUARD) as source:
            assert await source.latest_height() == TIP  # late, but answered
        assert server.injector.counts["stall"] == 2
    finally:
        # The first request's handler is still stalled; it does not hold the server up.
        await asyncio.wait_for(server.stop(), GUARD)


async def test_reset_mid_body() -> None:
    async with serving(Faults(reset=1.0)) as (server, http):
        variables = {"where": queries.blocks_where(1, 50)}
        payload = orjson.dumps({"query": queries.BLOCKS, "variables": variables})
        for _ in range(3):
            async with http.post(server.url, data=payload) as response:
                assert response.status == 200  # the status line and headers arrive...
                length = response.content_length
                assert length and length > 1000
                with pytest.raises(aiohttp.ClientPayloadError):  # ...the body does not
                    await response.read()
        async with SourceClient(server.url) as source:
            with pytest.raises(SourceError, match="connection to source .* failed"):
                await source.blocks(1, 50)
        assert server.injector.counts["reset"] == 4


async def test_malformed_json() -> None:
    async with serving(Faults(malformed=1.0, seed=4)) as (server, http):
        bodies = []
        for _ in range(12):
            async with http.post(server.url, data=LATEST) as response:
                assert response.status == 200 and response.content_type == "application/json"
                bodies.append(await response.read())
        for body in bodies:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(body)
        garbled = [body for body in bodies if b"<html>" in body]
        assert 0 < len(garbled) < len(bodies)  # both truncated and garbled answers
        honest = b'{"data":{"latestBlockHeight":400}}'
        assert all(honest.startswith(body) for body in bodies if body not in garbled)
        async with SourceClient(server.url) as source:
            with pytest.raises(MalformedResponse):
                await source.latest_height()


async def test_graphql_error() -> None:
    async with serving(Faults(graphql_error=1.0)) as (server, http):
        async with http.post(server.url, data=LATEST) as response:
            assert response.status == 200
            body = await response.json()
        assert body["data"] is None and body["errors"][0]["message"]
        async with SourceClient(server.url) as source:
            with pytest.raises(SourceError, match="returned errors") as info:
                await source.latest_height()
        assert info.value.retryable


# -------------------------------------------------------------------- wrong data

BATCH = (15, 70)  # sparse blocks and the dense stretch 20..59


def _fields(struct: Any) -> dict[str, Any]:
    return msgspec.structs.asdict(struct)


@pytest.mark.parametrize(
    ("kind", "checks"),
    [
        ("broken_link", {"last_block_hash"}),
        ("missing_tx", {"num_txs"}),
        ("wrong_num_txs", {"total_txs", "num_txs"}),
        ("missing_block", {"heights"}),
    ],
)
async def test_wrong_data_fails_validation(kind: str, checks: set[str]) -> None:
    start, end = BATCH
    chain = small_chain()
    below = start - 1
    previous = BlockRef(below, chain.block_hash(below), chain.chain_id, chain.total_txs(below))
    async with serving(chain=chain) as (server, _):
        async with SourceClient(server.url) as source:
            honest_blocks = await source.blocks(start, end)
            honest_txs = await source.transactions(start, end)
            validate_batch(Batch(start, end, honest_blocks, honest_txs), previous, "dev")
            server.faults = Faults(**{kind: 1.0}, seed=7)
            blocks = await source.blocks(start, end)
            txs = await source.transactions(start, end)
    with pytest.raises(BatchInvalid) as info:
        validate_batch(Batch(start, end, blocks, txs), previous, "dev")
    assert info.value.check in checks, info.value
    assert server.injector.counts[kind] == 1
    assert server.injector.injected == 1
    # Everything but the one fault is as served without faults.
    honest_hashes = [tx.hash for tx in honest_txs]
    if kind == "missing_tx":
        assert blocks == honest_blocks
        assert len(txs) == len(honest_txs) - 1
        assert [h for h in honest_hashes if h in {tx.hash for tx in txs}] == [tx.hash for tx in txs]
        return
    assert [tx.hash for tx in txs] == honest_hashes
    if kind == "missing_block":
        assert len(blocks) == len(honest_blocks) - 1
        assert all(block in honest_blocks for block in blocks)
        return
    changed = [(a, b) for a, b in zip(honest_blocks, blocks, strict=True) if a != b]
    assert len(changed) == 1
    honest, faulty = (_fields(block) for block in changed[0])
    differing = {name for name in honest if honest[name] != faulty[name]}
    if kind == "broken_link":
        assert differing == {"last_block_hash"}
    else:
        assert differing == {"num_txs"} and faulty["num_txs"] == honest["num_txs"] + 1


# ----------------------------------------------------------------------- heights


async def test_latest_lag() -> None:
    async with serving(Faults(latest_lag=5)) as (server, http):
        async with SourceClient(server.url) as source:
            assert await source.latest_height() == TIP - 5
            await control(http, server, "grow", {"blocks": 3})
            assert await source.latest_height() == TIP + 3 - 5
            server.faults.latest_lag = 0
            assert await source.latest_height() == TIP + 3
        assert server.injector.counts["latest_lag"] == 2


async def test_latest_backwards() -> None:
    async with serving(Faults(latest_backwards=0.5, seed=2)) as (server, _):
        async with SourceClient(server.url) as source:
            heights = [await source.latest_height() for _ in range(40)]
    lower = [height for height in heights if height != TIP]
    assert all(TIP - 50 <= height < TIP for height in lower)
    assert 0 < len(lower) < len(heights)
    first_tip = heights.index(TIP)
    assert any(height < TIP for height in heights[first_tip:])  # after TIP was reported
    assert server.injector.counts["latest_backwards"] == len(lower)


# ---------------------------------------------------------------- chain reset


async def test_chain_reset_serves_another_chain_at_the_same_heights() -> None:
    async with serving() as (server, http):
        async with SourceClient(server.url) as source:
            before = await source.blocks(0, 30)
            reset = {"chain_id": "dev-2", "seed": 9}
            status, state = await control(http, server, "chain-reset", reset)
            assert status == 200
            assert (state["chain_id"], state["seed"], state["tip"]) == ("dev-2", 9, TIP)
            assert await source.latest_height() == TIP
            after = await source.blocks(0, 30)
            txs = await source.transactions(0, 30)
        assert [b.height for b in after] == [b.height for b in before] == list(range(31))
        assert all(b.chain_id == "dev-2" for b in after)
        assert all(a.hash != b.hash for a, b in zip(before[1:], after[1:], strict=True))
        expected = Chain(ChainConfig(**{**SMALL, "chain_id": "dev-2", "seed": 9}))
        assert [b.hash for b in after] == [b["hash"] for b in expected.blocks_in(0, 30)]
        validate_batch(Batch(0, 30, after, txs), None, "dev-2")
        with pytest.raises(ChainMismatch):
            validate_batch(Batch(0, 30, after, txs), None, "dev")
        # In-process: without a seed the hashes change anyway; the chain id stays.
        hash_before = server.chain.block_hash(10)
        server.chain.reset()
        assert server.chain.chain_id == "dev-2" and server.chain.config.seed == 10
        assert server.chain.block_hash(10) != hash_before and server.chain.tip == TIP
        status, body = await control(http, server, "chain-reset", {"chain_id": ""})
        assert status == 400 and "chain_id" in body["error"]
        status, body = await control(http, server, "chain-reset", {"height": 3})
        assert status == 400 and "'height'" in body["error"]


def test_chain_reset_is_consistent_while_serving() -> None:
    chain = small_chain()
    stop = threading.Event()

    def resetter() -> None:
        seed = 100
        while not stop.is_set():
            seed += 1
            chain.reset(chain_id=f"c{seed % 3}", seed=seed)

    with running_devnet(chain) as url:
        thread = threading.Thread(target=resetter)
        thread.start()
        try:

            async def fetch() -> None:
                async with SourceClient(url) as source:
                    for _ in range(25):
                        blocks = await source.blocks(1, 120)
                        assert [b.height for b in blocks] == list(range(1, 121))
                        assert len({b.chain_id for b in blocks}) == 1
                        for previous, block in zip(blocks, blocks[1:]):
                            assert block.last_block_hash == previous.hash

            asyncio.run(fetch())
        finally:
            stop.set()
            thread.join()


# ---------------------------------------------------------------------- outages


async def test_outage_refuses_connections_then_recovers_on_the_same_port() -> None:
    async with serving() as (server, http):
        port = server.port
        # A keep-alive connection, idle after one answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: devnet\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"/graphql/query\n"), 5)

        # Longer than any guard, so every check below runs while it lasts.
        status, body = await control(http, server, "outage", {"seconds": FOREVER})
        assert status == 200 and body == {"down_for": FOREVER, "port": port}
        await until(lambda: not server.up, "the outage")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), GUARD) == b""  # the idle one was closed
        writer.close()
        async with SourceClient(server.url) as source:
            with pytest.raises(SourceError, match="cannot reach") as info:
                await source.latest_height()
            assert info.value.retryable
            await server.come_up()
            assert server.up and server.port == port
            assert await source.latest_height() == TIP
            # A timed outage ends by itself, on the same port.
            status, body = await control(http, server, "outage", {"seconds": 0.05})
            assert status == 200 and body == {"down_for": 0.05, "port": port}
            await until(lambda: server.outages == 2 and server.up, "the end of the outage")
            assert server.port == port
            assert await source.latest_height() == TIP

            # In-process, without the control route.
            await server.go_down()
            await asyncio.sleep(0.05)  # the client sees its pooled connection closed
            with pytest.raises(SourceError, match="cannot reach"):
                await source.latest_height()
            await server.come_up()
            assert await source.latest_height() == TIP
            await server.outage(0.05)
            assert await source.latest_height() == TIP
        assert server.outages == 4


async def test_outage_drops_requests_in_progress() -> None:
    async with serving(Faults(stall=1.0, stall_seconds=FOREVER)) as (server, http):
        request = asyncio.ensure_future(outcome(http, server))
        await until(lambda: server.injector.counts["stall"] == 1, "the stall")
        await server.go_down()
        assert await asyncio.wait_for(request, GUARD) == "reset"  # not answered late
        await server.come_up()
        server.faults.clear()
        assert await outcome(http, server) == "ok"


# ------------------------------------------------------------------- control


async def test_control_routes_round_trip() -> None:
    async with serving() as (server, http):
        status, state = await control(
            http, server, "faults", {"http_503": 0.25, "latest_lag": 3, "stall_seconds": 0.5}
        )
        assert status == 200
        assert (state["faults"]["http_503"], state["faults"]["latest_lag"]) == (0.25, 3)
        assert server.faults.http_503 == 0.25 and server.faults.stall_seconds == 0.5
        status, body = await control(http, server, "faults", {"nope": 1, "http_500": 0.1})
        assert status == 400 and "'nope'" in body["error"] and "known fields" in body["error"]
        assert server.faults.http_500 == 0  # nothing merged
        status, body = await control(http, server, "faults", {"http_500": 2})
        assert status == 400 and "http_500" in body["error"]
        status, body = await control(http, server, "faults", {"http_500": 0.5, "http_502": 0.6})
        assert status == 400 and "add up" in body["error"]
        async with http.post(f"{server.base_url}/control/faults", data=b"{nope") as response:
            assert response.status == 400 and "JSON" in (await response.json())["error"]

        # Control routes are never faulted; ops limit the GraphQL operations that are.
        only_blocks = {"http_503": 0, "http_500": 1.0, "ops": ["getBlocks"]}
        await control(http, server, "faults", only_blocks)
        assert await outcome(http, server) == "ok"
        variables = {"where": {"height": {"eq": 1}}}
        blocks = orjson.dumps({"query": queries.BLOCKS, "variables": variables})
        async with http.post(server.url, data=blocks) as response:
            assert response.status == 500
        status, state = await control(http, server, "faults")
        assert status == 200 and state["counts"]["http_500"] == 1 and state["requests"] == 1

        status, state = await control(http, server, "faults/reset")
        assert status == 200 and not Faults(**state["faults"]).active
        assert state["faults"]["ops"] == ["getBlocks"] and state["counts"]["http_500"] == 1
        status, state = await control(http, server, "faults/reset", {"counts": True})
        assert state["counts"] == dict.fromkeys(KINDS, 0)

        status, state = await control(http, server, "grow", {"blocks": 5})
        assert status == 200 and state["tip"] == TIP + 5 == server.chain.tip
        status, body = await control(http, server, "grow", {"blocks": -1})
        assert status == 400 and "blocks" in body["error"]
        status, body = await control(http, server, "outage", {"seconds": 0})
        assert status == 400 and "seconds" in body["error"] and server.up

        server.faults = Faults(graphql_error=1.0, seed=5)  # replaced in-process
        status, state = await control(http, server, "faults")
        assert state["faults"]["graphql_error"] == 1.0 and state["faults"]["seed"] == 5
        assert await outcome(http, server) == "graphql_error"


def test_running_devnet_takes_faults() -> None:
    faults = Faults()
    with running_devnet(small_chain(), faults=faults) as url:
        request = urllib.request.Request(url, data=LATEST)
        with urllib.request.urlopen(request, timeout=GUARD) as response:
            assert orjson.loads(response.read()) == {"data": {"latestBlockHeight": TIP}}
        faults.http_503 = 1.0  # the object given is the one served
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=GUARD)
        with info.value:
            assert info.value.code == 503


# --------------------------------------------------------- counts, determinism


async def _sequence(seed: int, requests: int = 60) -> tuple[list[str], FaultInjector]:
    faults = Faults.mixed(0.8, seed=seed, stall_seconds=0.01)
    async with serving(faults) as (server, http):
        outcomes = [await outcome(http, server) for _ in range(requests)]
        return outcomes, server.injector


async def test_counts_add_up_and_the_sequence_follows_the_seed() -> None:
    outcomes, injector = await _sequence(11)
    observed = collections.Counter(outcomes)
    faulted = len(outcomes) - observed.pop("ok", 0)
    assert observed == {kind: n for kind, n in injector.counts.items() if n}
    assert injector.injected == faulted > 30
    assert injector.requests == len(outcomes)
    assert len(observed) >= 6  # most kinds show up
    assert [kind for _, kind in injector.recent] == [o for o in outcomes if o != "ok"]

    again, injector_again = await _sequence(11)
    assert again == outcomes and list(injector_again.recent) == list(injector.recent)
    other, _ = await _sequence(12)
    assert other != outcomes


def test_cli_devnet_with_faults() -> None:
    command = [
        *(sys.executable, "-m", "gnosync", "devnet", "--port", "0", "--blocks", "42"),
        *("--fault-rate", "0.4", "--fault-seed", "5", "--stall-seconds", "0.05"),
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        _check_cli_devnet(process)


def _check_cli_devnet(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    try:
        line = process.stdout.readline().strip()
        url = line.rsplit(" ", 1)[1]
        assert re.match(r"gnosync devnet serving chain 'dev-[0-9a-f]{10}' heights 0\.\.42, [\d,]+ transactions at ", line), line
        assert "injecting faults" in process.stdout.readline()
        control_url = url.replace("/graphql/query", "/control/faults")
        with urllib.request.urlopen(control_url, timeout=GUARD) as response:
            state = orjson.loads(response.read())
        assert state["faults"] == Faults.mixed(0.4, seed=5, stall_seconds=0.05).to_dict()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
