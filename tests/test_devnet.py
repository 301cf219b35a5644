"""The devnet: a deterministic chain served the way tx-indexer serves one."""

from __future__ import annotations

import base64
import collections
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
    build_schema,
    parse,
    validate,
)

from gnosync.devnet import Chain, ChainConfig, DevnetServer, running_devnet, schema_sdl
from gnosync.devnet.executor import Executor
from gnosync.source import queries
from gnosync import model

from .compare import upstream_schema
from .shared_files import GNOLAND1, gnoland1_files


# Small chains keep the tests fast: a short dense stretch early on, sparse txs after.
SMALL = dict(blocks=400, dense_start=20, dense_length=40, tx_rate=0.02)

HEIGHTS = "query($where: FilterBlock!) { getBlocks(where: $where) { height } }"
TX_KEYS = (
    "query($where: FilterTransaction!, $order: TransactionOrder) {"
    " getTransactions(where: $where, order: $order) { block_height index hash } }"
)


def run(executor: Executor, query: str, variables: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, body = executor.execute(query, variables or {})
    return status, orjson.loads(body)


def ok(executor: Executor, query: str, variables: dict[str, Any] | None = None) -> Any:
    status, body = run(executor, query, variables)
    assert status == 200, body
    return body


def heights(executor: Executor, height_filter: dict[str, Any]) -> list[int]:
    status, body = run(executor, HEIGHTS, {"where": {"height": height_filter}})
    assert status == 200, body
    return [block["height"] for block in body["data"]["getBlocks"]]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain(ChainConfig(**SMALL))


@pytest.fixture(scope="module")
def executor(chain: Chain) -> Executor:
    return Executor(chain)


def tx_hash_of(content_raw: str) -> str:
    assert content_raw.startswith("Tx{") and content_raw.endswith("}")
    return base64.b64encode(hashlib.sha256(bytes.fromhex(content_raw[3:-1])).digest()).decode()


# ---------------------------------------------------------------------- schema


def _type_shape(type_: Any) -> Any:
    if isinstance(type_, (GraphQLObjectType, GraphQLInputObjectType)):
        fields = {}
        for name, field in type_.fields.items():
            args = {arg: str(value.type) for arg, value in getattr(field, "args", {}).items()}
            fields[name] = (str(field.type), args)
        return fields
    if isinstance(type_, GraphQLUnionType):
        return {member.name for member in type_.types}
    if isinstance(type_, GraphQLEnumType):
        return set(type_.values)
    return type(type_).__name__


def test_schema_is_a_faithful_subset_of_tx_indexer() -> None:
    upstream = upstream_schema()
    devnet = build_schema(schema_sdl())
    checked = 0
    for name, type_ in devnet.type_map.items():
        if name.startswith("__"):
            continue
        assert name in upstream.type_map, f"{name} is not in tx-indexer's schema"
        theirs = upstream.type_map[name]
        assert type(type_) is type(theirs), name
        ours_shape, their_shape = _type_shape(type_), _type_shape(theirs)
        if isinstance(type_, (GraphQLObjectType, GraphQLInputObjectType)):
            for field, shape in ours_shape.items():
                assert field in their_shape, f"{name}.{field} is not in tx-indexer's schema"
                assert shape == their_shape[field], (
                    f"{name}.{field}: {shape} != {their_shape[field]}"
                )
                checked += 1
        elif isinstance(type_, (GraphQLUnionType, GraphQLEnumType)):
            assert ours_shape == their_shape, name
        else:
            assert isinstance(type_, GraphQLScalarType)
    assert checked > 100
    # Every type the devnet promises to serve is declared.
    query = devnet.query_type.fields
    assert set(query) == {"latestBlockHeight", "getBlocks", "getTransactions"}
    assert str(query["getBlocks"].args["where"].type) == "FilterBlock!"
    assert str(query["getBlocks"].args["order"].type) == "BlockOrder"
    assert str(query["getTransactions"].args["order"].type) == "TransactionOrder"
    assert set(devnet.subscription_type.fields) == {"getBlocks"}
    assert devnet.type_map["MsgAddPackage"].fields["deposit"].deprecation_reason


@pytest.mark.parametrize("name", sorted(queries.ALL_DOCUMENTS))
def test_gnosync_documents_validate_against_both_schemas(name: str) -> None:
    document = parse(queries.ALL_DOCUMENTS[name])
    for schema in (upstream_schema(), build_schema(schema_sdl())):
        assert validate(schema, document) == []


def test_int_is_64_bit(executor: Executor) -> None:
    # graphql-core's Int is 32-bit; gqlgen's (tx-indexer's) is 64-bit.
    status, body = run(executor, "{ getBlocks(where: {height: {gt: 3000000000}}) { height } }")
    assert (status, body) == (200, {"data": {"getBlocks": []}})
    status, body = run(
        executor, "{ getBlocks(where: {height: {gt: 99999999999999999999}}) { height } }"
    )
    assert status == 422 and body["data"] is None


# --------------------------------------------------------------------- filters


def test_bounds_are_exclusive(executor: Executor) -> None:
    assert heights(executor, {"gt": 5, "lt": 9}) == [6, 7, 8]
    assert heights(executor, {"gt": 5, "lt": 6}) == []
    assert heights(executor, {"eq": 7}) == [7]
    assert heights(executor, {"eq": 7, "gt": 7}) == []
    assert heights(executor, queries.height_bounds(3, 5)) == [3, 4, 5]


def test_height_zero_needs_no_lower_bound(executor: Executor, chain: Chain) -> None:
    assert heights(executor, {"lt": 3}) == [0, 1, 2]
    assert heights(executor, {"eq": 0}) == [0]
    assert heights(executor, {"gt": 0, "lt": 3}) == [1, 2]
    # Bounds are unsigned: -1 is 2^64-1.
    assert heights(executor, {"gt": -1}) == []
    assert heights(executor, {"gt": -1, "lt": 5}) == []
    assert heights(executor, {"lt": -1}) == list(range(0, chain.tip + 1))
    assert heights(executor, {"eq": -1}) == []
    assert heights(executor, {"gt": chain.tip}) == []
    assert heights(executor, {"gt": chain.tip - 2}) == [chain.tip - 1, chain.tip]


def test_where_empty_and_order(executor: Executor, chain: Chain) -> None:
    assert heights(executor, {}) == list(range(0, chain.tip + 1))
    body = ok(executor, "{ getBlocks(where: {height: {lt: 4}}, order: {height: DESC}) { height } }")
    assert [b["height"] for b in body["data"]["getBlocks"]] == [3, 2, 1, 0]
    body = ok(executor, TX_KEYS, {"where": {}, "order": {"heightAndIndex": "DESC"}})
    keys = [(tx["block_height"], tx["index"]) for tx in body["data"]["getTransactions"]]
    assert keys == sorted(keys, reverse=True) and len(keys) == chain.total_txs(chain.tip) + 3


def test_transaction_filters(executor: Executor, chain: Chain) -> None:
    dense = next(h for h in chain.tx_heights(1) if chain.num_txs(h) >= 5)
    where = {"block_height": {"eq": dense}, "index": {"gt": 1, "lt": 4}}
    body = ok(executor, TX_KEYS, {"where": where})
    assert [(t["block_height"], t["index"]) for t in body["data"]["getTransactions"]] == [
        (dense, 2),
        (dense, 3),
    ]
    # Paging by index, as gnosync does for a height with more txs than the cap.
    where = queries.transactions_where(dense, dense, after_index=2)
    body = ok(executor, TX_KEYS, {"where": where})
    assert [t["index"] for t in body["data"]["getTransactions"]] == list(
        range(3, chain.num_txs(dense))
    )
    # index gt -1 is unsigned too.
    body = ok(executor, TX_KEYS, {"where": {"block_height": {"eq": dense}, "index": {"gt": -1}}})
    assert body["data"]["getTransactions"] == []
    # By hash, and a miss is an error as in tx-indexer.
    target = chain.transactions(dense)[1]
    body = ok(executor, TX_KEYS, {"where": {"hash": {"eq": target["hash"]}}})
    assert body["data"]["getTransactions"] == [
        {"block_height": dense, "index": 1, "hash": target["hash"]}
    ]
    status, body = run(executor, TX_KEYS, {"where": {"hash": {"eq": "nope"}}})
    assert status == 200 and body["data"] == {"getTransactions": None} and body["errors"]


def test_generic_filters(executor: Executor, chain: Chain) -> None:
    body = ok(
        executor, "{ getBlocks(where: {num_txs: {gt: 0}, height: {lt: 100}}) { height num_txs } }"
    )
    assert [b["height"] for b in body["data"]["getBlocks"]] == [h for h in chain.tx_heights(0, 99)]
    query = """query($where: FilterTransaction!) { getTransactions(where: $where) {
        block_height index success messages { typeUrl } } }"""
    body = ok(executor, query, {"where": {"success": {"eq": False}}})
    failed = body["data"]["getTransactions"]
    assert failed and all(not tx["success"] for tx in failed)
    # A union filter: only transactions with a MsgCall to the users realm.
    where = {
        "messages": {"value": {"MsgCall": {"pkg_path": {"eq": "gno.land/r/gnoland/users/v1"}}}}
    }
    body = ok(executor, query, {"where": where})
    calls = body["data"]["getTransactions"]
    assert calls and all(any(m["typeUrl"] == "exec" for m in tx["messages"]) for tx in calls)
    where = {"_or": [{"block_height": {"eq": 0}}, {"block_height": {"eq": chain.tx_heights(1)[0]}}]}
    body = ok(executor, query, {"where": where})
    assert {tx["block_height"] for tx in body["data"]["getTransactions"]} == {
        0,
        chain.tx_heights(1)[0],
    }
    body = ok(executor, HEIGHTS, {"where": {"_not": {"height": {"gt": 2}}}})
    assert [b["height"] for b in body["data"]["getBlocks"]] == [0, 1, 2]
    before = chain.block(3)["time"]
    body = ok(executor, HEIGHTS, {"where": {"time": {"before": before}, "height": {"lt": 50}}})
    assert [b["height"] for b in body["data"]["getBlocks"]] == [0, 1, 2]
    body = ok(executor, HEIGHTS, {"where": {"time": {"eq": before}}})
    assert [b["height"] for b in body["data"]["getBlocks"]] == [3]


# ------------------------------------------------------------------------ cap


def test_cap_returns_the_first_elements_and_an_error() -> None:
    executor = Executor(Chain(ChainConfig(**SMALL)), max_elements=5)
    for height_filter, expected, capped in (
        ({"lt": 20}, [0, 1, 2, 3, 4], True),
        ({"gt": 9, "lt": 15}, [10, 11, 12, 13, 14], True),  # exactly the cap: still an error
        ({"gt": 9, "lt": 14}, [10, 11, 12, 13], False),
    ):
        status, body = run(executor, HEIGHTS, {"where": {"height": height_filter}})
        assert status == 200
        assert [b["height"] for b in body["data"]["getBlocks"]] == expected
        errors = body.get("errors")
        if capped:
            assert errors == [
                {"message": "max elements per query reached (5)", "path": ["getBlocks"]}
            ]
        else:
            assert errors is None
    body = ok(executor, TX_KEYS, {"where": {}})
    assert len(body["data"]["getTransactions"]) == 5
    assert body["errors"][0]["message"] == "max elements per query reached (5)"


def test_default_cap_is_ten_thousand() -> None:
    executor = Executor(Chain(ChainConfig(blocks=10_050, dense_length=0)))
    status, body = run(executor, queries.BLOCK_HEIGHTS, {"where": {}})
    assert status == 200
    assert [b["height"] for b in body["data"]["getBlocks"]] == list(range(10_000))
    assert [e["message"] for e in body["errors"]] == ["max elements per query reached (10000)"]


# ---------------------------------------------------------------------- chain


def test_genesis_quirks(executor: Executor, chain: Chain) -> None:
    body = ok(executor, queries.BLOCKS, {"where": {"height": {"lt": 3}}})
    genesis, first, second = body["data"]["getBlocks"]
    assert genesis["height"] == 0 and genesis["hash"] == "" and genesis["last_block_hash"] == ""
    assert genesis["num_txs"] == genesis["total_txs"] == 3
    assert genesis["time"] == "2026-03-16T09:00:00Z"
    assert genesis["version"] == genesis["app_hash"] == genesis["last_commit_hash"] == ""
    assert first["last_block_hash"] == "" and first["hash"]
    assert first["total_txs"] == first["num_txs"] == len(first["txs"])
    assert second["last_block_hash"] == first["hash"]

    body = ok(executor, queries.TRANSACTIONS, {"where": {"block_height": {"eq": 0}}})
    txs = body["data"]["getTransactions"]
    assert [(tx["block_height"], tx["index"]) for tx in txs] == [(0, 0), (0, 1), (0, 2)]
    # Genesis transactions are amino-encoded like any block's: listed and decoded.
    assert [entry["hash"] for entry in genesis["txs"]] == [tx["hash"] for tx in txs]
    for tx in txs:
        assert tx["hash"] == tx_hash_of(tx["content_raw"])
        content = orjson.loads(bytes.fromhex(tx["content_raw"][3:-1]))
        assert content["signatures"] == [{"pub_key": None, "signature": None}]  # unsigned
        assert [m["typeUrl"] for m in tx["messages"]] == ["add_package"]
        assert tx["gas_fee"] == {"amount": 1_000_000, "denom": "ugnot"} and tx["success"]

    without = Chain(ChainConfig(blocks=30, genesis=False))
    assert without.lowest == 1
    body = ok(Executor(without), HEIGHTS, {"where": {"height": {"lt": 3}}})
    assert [b["height"] for b in body["data"]["getBlocks"]] == [1, 2]
    assert without.block(1)["last_block_hash"] == ""
    assert without.transactions_in(0, 30) == without.transactions_in(1, 30)


def test_genesis_of_real_size_with_a_repeated_transaction() -> None:
    files = sorted(GNOLAND1.glob("*.jsonl"))
    chain = Chain(ChainConfig(blocks=5, genesis_txs=300, genesis_files=files, genesis_repeats=2))
    block = chain.block(0)
    txs = chain.transactions(0)
    assert block["num_txs"] == block["total_txs"] == len(txs) == len(block["txs"]) == 300
    assert [entry["hash"] for entry in block["txs"]] == [tx["hash"] for tx in txs]
    kinds = collections.Counter(tx["messages"][0]["typeUrl"] for tx in txs)
    assert kinds["add_package"] >= 250 and set(kinds) == {"add_package", "exec"}
    size = sum(len(tx["content_raw"]) // 2 for tx in txs)
    assert 2_000_000 < size < 8_000_000  # a few MB, like a real genesis
    if files:  # the files are the real gnoland1 ones, renamed into their packages
        real = set()
        for path in files:
            for line in path.read_bytes().splitlines():
                for msg in orjson.loads(line)["tx"]["msg"]:
                    for f in (msg.get("package") or {}).get("files") or []:
                        real.add(re.sub(r"^package \w+", "", f["body"], count=1, flags=re.M))
        for tx in txs:
            if tx["messages"][0]["typeUrl"] == "add_package":
                package = tx["messages"][0]["value"]["package"]
                for f in package["files"]:
                    # token.gno is the devnet's own: the token realms' NewToken call.
                    if f["name"].endswith(".gno") and f["name"] != "token.gno":
                        assert f"package {package['name']}" in f["body"]
                        assert re.sub(r"^package \w+", "", f["body"], count=1, flags=re.M) in real
    # Unsigned, so a repeated transaction has the same hash at another index.
    hashes = [tx["hash"] for tx in txs]
    assert len(set(hashes)) == 298
    assert chain.num_txs(1) == chain.total_txs(1)  # genesis is not counted from block 1


def test_undecodable_transaction_is_served_but_not_listed() -> None:
    """tx-indexer's Block.txs skips what it cannot amino-decode; getTransactions serves
    it with a zero std.Tx's memo, fee and messages, and num_txs counts it."""
    chain = Chain(ChainConfig(**dict(SMALL, undecodable_txs=(25, 300))))
    executor = Executor(chain)
    for height in (25, 300):
        block = ok(executor, queries.BLOCKS, {"where": {"height": {"eq": height}}})["data"]["getBlocks"][0]
        where = {"where": {"block_height": {"eq": height}}}
        txs = ok(executor, queries.TRANSACTIONS, where)["data"]["getTransactions"]
        assert block["num_txs"] == len(txs) == 20 and len(block["txs"]) == 19
        listed = [entry["hash"] for entry in block["txs"]]
        missing = [tx for tx in txs if tx["hash"] not in listed]
        assert [tx["index"] for tx in missing] == [7]
        assert listed == [tx["hash"] for tx in txs if tx["index"] != 7]
        (odd,) = missing
        assert (odd["memo"], odd["messages"], odd["gas_fee"]) == ("", [], {"amount": 0, "denom": ""})
        assert odd["hash"] == tx_hash_of(odd["content_raw"])
        assert b"/vm.m_call_v2" in bytes.fromhex(odd["content_raw"][3:-1])


def test_hostile_strings_are_served_as_their_bytes() -> None:
    """NUL comes as the escape \\u0000 and bytes that are not UTF-8 as they are, in the
    answer's bytes: as gqlgen writes strings."""
    chain = Chain(ChainConfig(**dict(SMALL, hostile_txs=(33,))))
    for fast in (True, False):
        status, body = Executor(chain, fast_path=fast).execute(
            queries.TRANSACTIONS, {"where": {"block_height": {"eq": 33}}}
        )
        assert status == 200
        with pytest.raises(UnicodeDecodeError):
            body.decode()
        assert b"caf\xe9 \xff\xfe \xed\xa0\x80 \xe2\x82" in body
        assert b'"memo":"memo with a NUL: \\u0000"' in body
        failed, named = orjson_surrogates(body)["data"]["getTransactions"]
        assert not failed["success"] and named["success"]
        assert "\x00" in failed["messages"][0]["value"]["args"][1]
        assert "\x00" in failed["response"]["events"][0]["attrs"][1]["value"]
        assert "\x00" in failed["response"]["log"]
        assert named["response"]["events"][0]["attrs"][1]["value"] == named["messages"][0]["value"]["args"][0]
        for tx in (failed, named):
            assert tx["hash"] == tx_hash_of(tx["content_raw"])
    assert b"\xff\xfe" in bytes.fromhex(chain.transactions(33)[1]["content_raw"][3:-1])


def orjson_surrogates(body: bytes) -> Any:
    """JSON with bytes that are not UTF-8 kept as surrogate escapes."""
    return json.loads(body.decode("utf-8", "surrogateescape"))


def test_odd_heights_among_exported_transactions() -> None:
    files = gnoland1_files()
    plain = Chain(ChainConfig(blocks=3000, txs_files=files))
    taken = plain.tx_heights(1, 3000)[5]
    free = next(h for h in range(2000, 3000) if not plain.num_txs(h))
    odd = Chain(ChainConfig(blocks=3000, txs_files=files, hostile_txs=(taken,), undecodable_txs=(free,)))
    assert (odd.num_txs(taken), odd.num_txs(free)) == (2, 20)
    assert odd.total_txs(3000) == plain.total_txs(3000) - plain.num_txs(taken) + 22
    grown = Chain(ChainConfig(blocks=10, txs_files=files, txs_span=3000, hostile_txs=(taken,), undecodable_txs=(free,)))
    while grown.tip < 3000:
        grown.append_block()
    assert grown.blocks_in(0, 3000) == odd.blocks_in(0, 3000)


def test_odd_heights_are_checked() -> None:
    for bad in (
        dict(hostile_txs=(0,)),
        dict(undecodable_txs=(5,), hostile_txs=(5,)),
        dict(genesis_txs=3, genesis_repeats=3),
        dict(genesis_repeats=-1),
    ):
        with pytest.raises(ValueError):
            ChainConfig(**bad)


def test_chain_links_counts_and_hashes(executor: Executor, chain: Chain) -> None:
    # Every field of Block.txs (gnosync asks for the hashes only).
    every_tx_field = "txs { hash fee { gas_wanted gas_fee { amount denom } } memo content_raw }"
    assert "txs { hash }" in queries.BLOCKS
    body = ok(executor, queries.BLOCKS.replace("txs { hash }", every_tx_field), {"where": {}})
    blocks = body["data"]["getBlocks"]
    body = ok(executor, queries.TRANSACTIONS, {"where": {}})
    txs = body["data"]["getTransactions"]
    assert [b["height"] for b in blocks] == list(range(chain.tip + 1))
    by_height = collections.defaultdict(list)
    for tx in txs:
        by_height[tx["block_height"]].append(tx)
        assert tx["hash"] == tx_hash_of(tx["content_raw"])
    assert len({tx["hash"] for tx in txs}) == len(txs)
    assert len({b["hash"] for b in blocks[1:]}) == chain.tip
    for previous, block in itertools.pairwise(blocks[1:]):
        assert block["last_block_hash"] == previous["hash"]
        assert block["total_txs"] == previous["total_txs"] + block["num_txs"]
    for block in blocks[1:]:
        mine = by_height[block["height"]]
        assert block["num_txs"] == len(block["txs"]) == len(mine)
        assert [t["hash"] for t in block["txs"]] == [t["hash"] for t in mine]
        assert [t["index"] for t in mine] == list(range(len(mine)))
        for summary, tx in zip(block["txs"], mine, strict=True):
            assert summary["memo"] == tx["memo"] and summary["content_raw"] == tx["content_raw"]
            assert summary["fee"]["gas_fee"] == tx["gas_fee"]
        assert block["proposer_address_raw"].startswith("g1")
        assert block["time"].endswith("Z")
    times = [model.parse_time(b["time"]) for b in blocks]
    assert times == sorted(times) and len(set(times)) == len(times)
    # Go's RFC3339Nano: trailing zeros trimmed, some times at full nanosecond precision.
    fractions = [b["time"][20:-1] for b in blocks[1:] if "." in b["time"]]
    assert any(len(f) == 9 for f in fractions) and all(not f.endswith("0") for f in fractions)
    assert any("." not in b["time"] for b in blocks[1:])
    # Mostly empty blocks, a dense stretch, all message kinds, failures and events.
    assert sum(1 for b in blocks if b["num_txs"] == 0) > len(blocks) // 2
    assert max(b["num_txs"] for b in blocks) >= 5
    kinds = collections.Counter(m["typeUrl"] for tx in txs for m in tx["messages"])
    assert {"send", "exec"} <= set(kinds)
    assert any(not tx["success"] and tx["response"]["error"] for tx in txs)
    events = collections.Counter(
        e["__typename"] for tx in txs for e in tx["response"]["events"] or []
    )
    assert {"GnoEvent", "StorageDepositEvent"} <= set(events)


def test_served_shapes_decode_as_gnosync_expects(executor: Executor) -> None:
    status, raw = executor.execute(queries.BLOCKS, {"where": {"height": {"lt": 81}}})
    assert status == 200
    envelope = msgspec.json.decode(raw, type=dict[str, dict[str, list[model.Block]]])
    assert len(envelope["data"]["getBlocks"]) == 81
    status, raw = executor.execute(
        queries.TRANSACTIONS, {"where": {"block_height": {"lt": 81}}}
    )
    assert status == 200
    txs = msgspec.json.decode(raw, type=dict[str, dict[str, list[model.Transaction]]])["data"][
        "getTransactions"
    ]
    assert txs and all(isinstance(tx.messages, msgspec.Raw) for tx in txs)


def test_determinism() -> None:
    # Odd heights in a dense stretch and above the first tip, grown into.
    config = dict(SMALL, blocks=150, hostile_txs=(30, 120), undecodable_txs=(125,))
    one, two = Chain(ChainConfig(**config)), Chain(ChainConfig(**config))
    assert one.blocks_in(0, 150) == two.blocks_in(0, 150)
    assert one.transactions_in(0, 150) == two.transactions_in(0, 150)
    other = Chain(ChainConfig(**dict(config, seed=2)))
    assert other.block(50)["hash"] != one.block(50)["hash"]
    assert [t["hash"] for t in other.transactions_in(0, 150)] != [
        t["hash"] for t in one.transactions_in(0, 150)
    ]
    # A chain grown block by block is the chain built at that height.
    grown = Chain(ChainConfig(**dict(config, blocks=100)))
    for _ in range(50):
        grown.append_block()
    assert grown.tip == 150
    assert grown.blocks_in(0, 150) == one.blocks_in(0, 150)


def test_large_amounts_are_64_bit() -> None:
    chain = Chain(ChainConfig(blocks=3000, dense_start=10, dense_length=300, tx_rate=0.0))
    status, raw = Executor(chain).execute(
        "{ getTransactions(where: {gas_fee: {amount: {gt: 2147483647}}}) { gas_fee { amount } } }"
    )
    assert status == 200
    fees = [tx["gas_fee"]["amount"] for tx in orjson.loads(raw)["data"]["getTransactions"]]
    assert fees and all(fee > 2**31 for fee in fees)


def test_txs_files_load_the_gnoland1_exports() -> None:
    files = gnoland1_files()
    chain = Chain(ChainConfig(blocks=3000, txs_files=files))
    assert chain.total_txs(chain.tip) == 2795
    txs = chain.transactions_in(1, chain.tip)
    assert len(txs) == 2795 and len({tx["hash"] for tx in txs}) == 2795
    kinds = collections.Counter(
        (m["typeUrl"], m["route"], m["value"]["__typename"]) for tx in txs for m in tx["messages"]
    )
    assert kinds == {
        ("send", "bank", "BankMsgSend"): 2562,
        ("exec", "vm", "MsgCall"): 583,
        ("run", "vm", "MsgRun"): 23,
        ("add_package", "vm", "MsgAddPackage"): 18,
    }
    first = orjson.loads(files[0].read_bytes().splitlines()[0])["tx"]
    served = txs[0]
    assert served["messages"][0]["value"]["caller"] == first["msg"][0]["caller"]
    assert (
        served["messages"][0]["value"]["package"]["files"][0]["body"]
        == first["msg"][0]["package"]["files"][0]["body"]
    )
    assert bytes.fromhex(served["content_raw"][3:-1]) == orjson.dumps(first)
    assert served["gas_wanted"] == 50_000_000 and served["gas_fee"] == {
        "amount": 1_000_000,
        "denom": "ugnot",
    }
    block = chain.block(served["block_height"])
    assert block["txs"][0]["fee"] == {
        "gas_wanted": 50_000_000,
        "gas_fee": {"amount": 1_000_000, "denom": "ugnot"},
    }
    # Placed in order, and the betanet's bursts show up as dense blocks.
    assert [(t["block_height"], t["index"]) for t in txs] == sorted(
        (t["block_height"], t["index"]) for t in txs
    )
    assert max(chain.num_txs(h) for h in chain.tx_heights(1)) > 20


def test_million_block_chain_is_built_lazily() -> None:
    chain = Chain(ChainConfig(blocks=1_000_000))
    block = chain.block(10)
    assert chain.tip == 1_000_000 and block["height"] == 10
    assert 1_000 < chain.total_txs(chain.tip) < 100_000
    assert len(chain.tx_heights(0, 50_000)) < 1_000  # almost every block is empty


# ---------------------------------------------------------------------- HTTP


async def test_http_server_behaviours() -> None:
    server = DevnetServer(Chain(ChainConfig(**SMALL)), max_elements=50)
    await server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/graphql/query")
        async with aiohttp.ClientSession() as http:

            async def post(payload: Any) -> tuple[int, Any]:
                async with http.post(server.url, data=orjson.dumps(payload)) as response:
                    assert response.content_type == "application/json"
                    return response.status, await response.json()

            assert await post({"query": queries.LATEST_HEIGHT}) == (
                200,
                {"data": {"latestBlockHeight": 400}},
            )
            status, body = await post(
                {"query": queries.BLOCKS, "variables": {"where": {"height": {"lt": 100}}}}
            )
            assert status == 200 and len(body["data"]["getBlocks"]) == 50
            assert body["errors"] == [
                {"message": "max elements per query reached (50)", "path": ["getBlocks"]}
            ]
            status, body = await post({"query": "{ getBlocks(where: {}) { nope } }"})
            assert status == 422 and body["data"] is None
            assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
            status, body = await post({"query": "{ getBlocks(where: {}) { height "})
            assert (
                status == 422 and body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
            )
            status, body = await post({"query": queries.BLOCKS, "variables": {}})
            assert status == 422 and body["data"] is None
            status, body = await post(
                {
                    "query": "query A { latestBlockHeight }"
                    " query B { x: latestBlockHeight __typename }",
                    "operationName": "B",
                }
            )
            assert (status, body) == (200, {"data": {"x": 400, "__typename": "Query"}})
            query = """fragment F on MsgCall { func }
                query($w: FilterTransaction!, $skip: Boolean!) { getTransactions(where: $w) {
                  i: index  messages { value { kind: __typename ...F ... on BankMsgSend { amount }
                  ... on MsgRun @skip(if: $skip) { caller } } } } }"""
            status, body = await post(
                {"query": query, "variables": {"w": {"block_height": {"eq": 20}}, "skip": True}}
            )
            assert status == 200, body
            for tx in body["data"]["getTransactions"]:
                for message in tx["messages"]:
                    value = message["value"]
                    assert set(value) == {
                        "kind",
                        {"MsgCall": "func", "BankMsgSend": "amount"}.get(value["kind"], "kind"),
                    }
            async with http.post(server.url, data=b"{not json") as response:
                assert response.status == 400
            async with http.get(server.url) as response:
                assert response.status == 405
            async with http.get(server.url, params={"query": queries.LATEST_HEIGHT}) as response:
                assert (await response.json()) == {"data": {"latestBlockHeight": 400}}
            async with http.get(server.url.replace("/graphql/query", "/elsewhere")) as response:
                assert response.status == 404
            async with http.get(server.url.replace("/graphql/query", "/")) as response:
                assert response.status == 200 and "devnet" in await response.text()
    finally:
        await server.stop()


def test_growing_chain_with_block_time() -> None:
    chain = Chain(ChainConfig(**dict(SMALL, blocks=30)))
    with running_devnet(chain, block_time=0.02) as url:
        deadline = time.monotonic() + 60  # a guard: the chain grows every 0.02 s
        while chain.tip < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        import urllib.request

        request = urllib.request.Request(
            url,
            data=orjson.dumps({"query": queries.LATEST_HEIGHT}),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            served = orjson.loads(response.read())["data"]["latestBlockHeight"]
    assert served >= 40
    blocks = chain.blocks_in(0, chain.tip)
    for previous, block in itertools.pairwise(blocks[1:]):
        assert block["last_block_hash"] == previous["hash"]
    assert Chain(ChainConfig(**dict(SMALL, blocks=chain.tip))).blocks_in(0, chain.tip) == blocks


def test_serving_ten_thousand_blocks_from_a_prepared_chain() -> None:
    chain = Chain(ChainConfig(blocks=20_000, dense_length=0))
    chain.prepare()
    executor = Executor(chain)
    variables = {"where": queries.blocks_where(5_000, 14_998)}
    first = executor.execute(queries.BLOCKS, variables)
    status, body = executor.execute(queries.BLOCKS, variables)
    assert status == 200 and body.count(b'"height"') == 9_999
    assert (status, body) == first  # the same answer, encoded once or again


def test_serve_forever_prints_its_url_and_stops_on_sigterm() -> None:
    code = (
        "import sys; from gnosync.devnet import ChainConfig, serve_forever;"
        " sys.exit(serve_forever(ChainConfig(blocks=42, chain_id='t1'), host='127.0.0.1', port=0))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline().strip()
        chain = Chain(ChainConfig(blocks=42, chain_id="t1"))
        total = chain.num_txs(0) + chain.total_txs(42)
        prefix = f"gnosync devnet serving chain 't1' heights 0..42, {total:,} transactions at http://127.0.0.1:"
        assert line.startswith(prefix) and line.endswith("/graphql/query"), line
        url = line.rsplit(" ", 1)[1]
        import urllib.request

        request = urllib.request.Request(url, data=orjson.dumps({"query": queries.LATEST_HEIGHT}))
        with urllib.request.urlopen(request, timeout=10) as response:
            assert orjson.loads(response.read()) == {"data": {"latestBlockHeight": 42}}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
