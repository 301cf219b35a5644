"""The devnet for benchmarks: the fast path answers as the general one, and the profiles.

Speed is measured by hand (see gnosync.devnet.fragments); these tests pin behaviour:
every answer of the fast path, byte source aside, is the general executor's answer.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import os
import random
import re
import subprocess
import sys
from typing import Any

import orjson
import pytest

from gnosync.devnet import Chain, ChainConfig, Executor, gnoland1_exports
from gnosync.devnet.fragments import CHUNK
from gnosync.source import queries

from .shared_files import GNOLAND1

GNOLAND1_FILES = sorted(GNOLAND1.glob("*.jsonl"))  # [] without them; such tests are marked
GNOLAND1_TYPES = {"send", "exec", "add_package", "run"}


def parse(body: bytes) -> Any:
    """An answer as JSON; one with bytes that are not UTF-8 (hostile_txs) keeps them as
    surrogate escapes."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body.decode("utf-8", "surrogateescape"))


def answers(fast: Executor, general: Executor, query: str, variables: Any) -> Any:
    status, body = fast.execute(query, variables)
    expected_status, expected = general.execute(query, variables)
    assert status == expected_status
    parsed = parse(body)
    assert parsed == parse(expected), (query[:40], variables)
    return parsed


def blocks_where(start: int, end: int) -> dict[str, Any]:
    # As tx-indexer needs them: from height 0, only an upper bound (or eq: 0).
    if start == 0:
        return {"height": {"eq": 0} if end == 0 else {"lt": end + 1}}
    return {"height": {"gt": start - 1, "lt": end + 1}}


def txs_where(start: int, end: int) -> dict[str, Any]:
    return {"block_height": blocks_where(start, end)["height"]}


def compare_many(
    chain: Chain, rng: random.Random, *, rounds: int, cap: int, sweep: int = 10**9
) -> None:
    fast = Executor(chain, max_elements=cap)
    general = Executor(chain, max_elements=cap, fast_path=False)
    assert fast.plan(queries.BLOCKS) is not None
    tip = chain.tip
    for _ in range(rounds):
        start = rng.choice([0, 1, rng.randint(0, tip), rng.randint(max(0, tip - 30), tip + 3)])
        end = start + rng.choice([0, 1, 7, CHUNK - 1, CHUNK, rng.randint(0, 3 * CHUNK)])
        answers(fast, general, queries.BLOCKS, {"where": blocks_where(start, end)})
        answers(fast, general, queries.BLOCK_HEIGHTS, {"where": blocks_where(start, end)})
        answers(fast, general, queries.TRANSACTIONS, {"where": txs_where(start, end)})
        after = rng.choice([-1, 0, 1, 5, 40])
        where = {"block_height": {"eq": start}, "index": {"gt": after, "lt": 2**31 - 1}}
        answers(fast, general, queries.TRANSACTIONS, {"where": where})
    answers(fast, general, queries.LATEST_HEIGHT, None)
    # The ranges gnosync's client sends, end to end (the first ``sweep`` of them).
    for start in range(1, min(tip, sweep * 997) + 1, 997):
        answers(fast, general, queries.BLOCKS, {"where": queries.blocks_where(start, start + 996)})
        answers(
            fast,
            general,
            queries.TRANSACTIONS,
            {"where": queries.transactions_where(start, min(tip, start + 996))},
        )


CHAINS = {
    "default": dict(blocks=3 * CHUNK + 17, dense_start=40, dense_length=30, tx_rate=0.02),
    "no-genesis": dict(
        blocks=2 * CHUNK + 5, genesis=False, tx_rate=0.02, dense_length=30, chain_id='odd%"id'
    ),
    # The dense profile's templated transactions, fewer a block (the general executor,
    # compared with, is slow on many).
    "dense": dict(blocks=CHUNK + 300, profile="dense", dense_txs=(3, 8)),
    "sparse-gnoland1": dict(blocks=4 * CHUNK, txs_files=GNOLAND1_FILES, txs_span=4 * CHUNK),
    # A larger genesis with a repeated transaction, hostile and undecodable heights (in
    # and out of dense stretches, at chunk edges), plain and templated.
    "odd-data": dict(
        blocks=2 * CHUNK + 40, dense_start=40, dense_length=30, tx_rate=0.02, genesis_txs=40,
        genesis_repeats=2, hostile_txs=(5, 45, CHUNK, 2 * CHUNK + 3), undecodable_txs=(6, CHUNK + 1),
    ),
    "dense-odd": dict(
        blocks=CHUNK + 300, profile="dense", dense_txs=(3, 8), hostile_txs=(7, CHUNK),
        undecodable_txs=(8, CHUNK + 299),
    ),
}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.needs_shared("gnoland1")] if "gnoland1" in name else [])
    for name in CHAINS
])
def test_fast_path_answers_as_the_general_executor(name: str) -> None:
    config = CHAINS[name]
    chain = Chain(ChainConfig(**config))
    compare_many(chain, random.Random(name), rounds=25, cap=700, sweep=1)
    # The default cap, with answers over several chunks.
    compare_many(chain, random.Random(name + "2"), rounds=3, cap=10_000)


def test_fast_path_follows_growth_and_resets() -> None:
    chain = Chain(ChainConfig(blocks=CHUNK - 3, tx_rate=0.05, dense_length=0))
    fast, general = Executor(chain), Executor(chain, fast_path=False)
    for _ in range(2):
        for _ in range(5):  # across a chunk boundary: the tip's chunk is not kept
            chain.append_block()
            for query, where in (
                (queries.BLOCKS, blocks_where(1, chain.tip)),
                (queries.TRANSACTIONS, txs_where(CHUNK - 10, chain.tip)),
            ):
                answers(fast, general, query, {"where": where})
        before = fast.execute(queries.BLOCKS, {"where": blocks_where(5, 9)})[1]
        chain.reset()
        after = answers(fast, general, queries.BLOCKS, {"where": blocks_where(5, 9)})
        assert orjson.loads(before) != after  # another chain, not the cached one


def test_cache_budget_prepare_and_read_ahead() -> None:
    chain = Chain(ChainConfig(blocks=5 * CHUNK + 10, tx_rate=0.01, read_ahead=2))
    chain.prepare(encode=True)
    fragments = chain.fragments
    assert fragments.stats["built"] == 5 and fragments.size > 0
    general = Executor(chain, fast_path=False)
    answers(Executor(chain), general, queries.BLOCKS, {"where": blocks_where(1, 5 * CHUNK)})
    assert fragments.stats["built"] == 5  # all served from what prepare made

    # Nothing kept: every answer is encoded afresh, and still the same.
    bare = Chain(ChainConfig(blocks=2 * CHUNK + 50, tx_rate=0.05, answer_cache_mb=0))
    compare_many(bare, random.Random(3), rounds=5, cap=1000, sweep=1)
    assert bare.fragments.size == 0

    # A budget below one dense chunk: chunks are built, used and dropped.
    small = Chain(
        ChainConfig(blocks=CHUNK + 50, profile="dense", dense_txs=(2, 4), answer_cache_mb=1)
    )
    compare_many(small, random.Random(4), rounds=2, cap=1000, sweep=1)
    assert small.fragments.size <= 1024 * 1024 and small.fragments.stats["evicted"] > 0


def test_plans_recognise_gnosync_documents_only() -> None:
    executor = Executor(Chain(ChainConfig(blocks=10)))
    for name, document in queries.ALL_DOCUMENTS.items():
        assert executor.plan(document) is not None, name
    plans = [executor.plan(document) for document in queries.ALL_DOCUMENTS.values()]
    assert {plan.kind for plan in plans if plan} == {"latest", "blocks", "heights", "hashes", "transactions"}
    reflowed = " ".join(queries.BLOCKS.split()).replace("{ ", "{\n  ")
    assert executor.plan(reflowed) is not None
    aliased = queries.BLOCK_HEIGHTS.replace("getBlocks(", "b: getBlocks(")
    plan = executor.plan(aliased)
    assert plan is not None and plan.key == b"b"
    body = executor.execute(aliased, {"where": {"height": {"eq": 3}}})[1]
    assert orjson.loads(body) == {"data": {"b": [{"height": 3}]}}
    not_fast = [
        queries.BLOCKS.replace("app_hash", ""),  # another selection
        queries.BLOCKS.replace("ASC", "DESC"),
        queries.BLOCKS.replace("order: {height: ASC}", "order: {height: ASC}) @skip(if: false"),
        "query($where: FilterBlock!) { getBlocks(where: $where) { ...F } }"
        " fragment F on Block { height }",
        "{ getBlocks(where: {height: {eq: 1}}) { height } }",
        "query { latestBlockHeight __typename }",
        "query($w: FilterTransaction!) { getTransactions(where: $w) { index } }",
        "{ nope }",
    ]
    for document in not_fast:
        assert executor.plan(document) is None, document
    # Variables the fast path leaves to the general executor.
    fast, general = executor, Executor(executor.chain, fast_path=False)
    blocks_plan = executor.plan(queries.BLOCKS)
    assert blocks_plan is not None
    for where in (
        {"height": {"gt": "1", "lt": 5}},
        {"height": {"gt": 1, "lt": 5}, "hash": {"eq": "x"}},
        {"height": {"gt": 1, "lt": 5, "exists": True}},
        {"height": None},
        {"_and": [{"height": {"gt": 1}}]},
        {"height": {"gt": True}},
    ):
        assert blocks_plan.bounds({"where": where}) is None
        answers(fast, general, queries.BLOCKS, {"where": where})
    answers(fast, general, queries.BLOCKS, {})
    answers(fast, general, queries.BLOCKS, {"where": {"height": {"gt": -1}}})  # nothing
    answers(fast, general, queries.BLOCKS, {"where": {"height": {"lt": -1}}})  # everything


# ------------------------------------------------------------------- profiles


def messages_and_events(
    txs: list[dict[str, Any]],
) -> tuple[collections.Counter[str], collections.Counter[str]]:
    messages = collections.Counter(m["typeUrl"] for tx in txs for m in tx["messages"])
    events = collections.Counter(e["__typename"] for tx in txs for e in tx["response"]["events"])
    return messages, events


def test_dense_profile_shape() -> None:
    chain = Chain(ChainConfig(profile="dense", blocks=400))
    counts = [chain.num_txs(height) for height in range(1, 401)]
    assert min(counts) >= 10 and max(counts) <= 30
    assert 17 <= sum(counts) / len(counts) <= 23
    txs = chain.transactions_in(1, 400)
    assert len(txs) == sum(counts)
    messages, events = messages_and_events(txs)
    assert messages["send"] > messages["exec"] > messages["run"] > 0
    assert messages["add_package"] > 0
    assert events["GnoEvent"] > 1000 and events["StorageDepositEvent"] > 100
    assert 0 < sum(not tx["success"] for tx in txs) < len(txs) // 10
    sizes = [len(tx["content_raw"]) for tx in txs]
    assert max(sizes) > 2.5 * min(sizes)  # varied sizes
    # Copies of templates, each a transaction of its own.
    assert len({tx["hash"] for tx in txs}) == len(txs)
    for tx in txs[:200]:
        content = bytes.fromhex(tx["content_raw"][3:-1])
        assert base64.b64encode(hashlib.sha256(content).digest()).decode() == tx["hash"]
        assert orjson.loads(content)["msg"]
    assert chain.transaction_by_hash(txs[777]["hash"]) == txs[777]
    # Blocks link and count them.
    block = chain.block(200)
    assert block["num_txs"] == len(block["txs"]) == chain.num_txs(200)
    assert block["total_txs"] == sum(counts[:200])
    assert ChainConfig(profile="dense", dense_txs=(2, 3)).dense_txs == (2, 3)  # kept


def test_dense_chain_grown_is_the_chain_built() -> None:
    grown = Chain(ChainConfig(profile="dense", blocks=50))
    for _ in range(30):
        grown.append_block()
    built = Chain(ChainConfig(profile="dense", blocks=80))
    assert grown.blocks_in(0, 80) == built.blocks_in(0, 80)
    assert grown.transactions_in(0, 80) == built.transactions_in(0, 80)


@pytest.mark.needs_shared("gnoland1")
def test_sparse_profile_shape() -> None:
    assert gnoland1_exports()  # found beside the checkout
    chain = Chain(ChainConfig(profile="sparse", blocks=300_000))
    assert chain.config.txs_files and chain.config.txs_span == 3_427_614
    heights = chain.tx_heights(1, chain.tip)
    total = chain.total_txs(chain.tip)
    # gnoland1's first 300,000 blocks (by time): about a thousand transactions, in
    # bursts: the busiest tenth of the chain holds far more than a tenth of them.
    assert 500 < total < 2_000 and len(heights) < chain.tip / 200
    per_window = collections.Counter(height * 10 // chain.tip for height in heights)
    assert max(per_window.values()) > len(heights) / 4
    txs = chain.transactions_in(1, chain.tip)
    messages, _ = messages_and_events(txs)
    assert set(messages) <= GNOLAND1_TYPES and messages["send"] > messages["exec"] > 0
    # Growing past the initial tip keeps placing the exports where a longer chain has them.
    grown = Chain(ChainConfig(profile="sparse", blocks=100_000))
    while grown.tip < 100_500:
        grown.append_block()
    built = Chain(ChainConfig(profile="sparse", blocks=100_500))
    assert grown.tx_heights(0, 100_500) == built.tx_heights(0, 100_500)
    assert grown.blocks_in(99_990, 100_500) == built.blocks_in(99_990, 100_500)


def test_cli_devnet_profile_prints_the_banner() -> None:
    command = ["devnet", "--profile", "dense", "--blocks", "2500", "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "gnosync", *command, "--chain-id", "bench"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert re.match(r"gnosync devnet serving chain 'bench' heights 0\.\.2500, [\d,]+ transactions at http://", line), line
        import urllib.request

        url = line.rsplit(" ", 1)[1]
        payload = {"query": queries.BLOCKS, "variables": {"where": queries.blocks_where(1, 1999)}}
        request = urllib.request.Request(url, data=orjson.dumps(payload))
        with urllib.request.urlopen(request, timeout=30) as response:
            blocks = orjson.loads(response.read())["data"]["getBlocks"]
        assert len(blocks) == 1999 and all(block["num_txs"] >= 10 for block in blocks)
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
