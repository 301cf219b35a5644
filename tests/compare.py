"""Compare a gnosync database with the chain it copies, field by field.

The chain is read without any gnosync code, so a decoding, paging or range-splitting
bug that gnosync's sync shares with its own client cannot cancel out:

* from the devnet's in-process :class:`~gnosync.devnet.Chain` when the test has it
  (``source`` is the chain), or
* over HTTP with GraphQL documents built here and plain ``json`` (``source`` is the
  URL), paging past the server's element cap with a cursor of its own.

What a stored JSON column must hold is derived from tx-indexer's published schema
(``shared/txindexer/schema.graphql``): every field of each type that is not deprecated,
with ``__typename`` on union members. Block times are compared as the exact string
served against the stored ``time`` (timestamptz) plus ``time_ns``, rendered here with
plain datetime arithmetic.

Rows PostgreSQL could not hold as served (NUL, lone surrogates or invalid UTF-8 in
``memo``, ``messages`` or ``response``) are stored with each such character replaced by
U+FFFD and ``sanitized`` set; for those rows the expectation applies the same
replacement, and ``content_raw`` is always compared exactly. Without a ``sanitized``
column every row is compared exactly.

Package file bodies are not in ``transactions.messages`` but in ``package_files``: the
expected stored messages are the served ones with each such file as ``{name, size}``
(the rule restated here by :func:`split_bodies`), and ``package_files`` must hold
exactly the bodies taken out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
    get_named_type,
)

from . import shared_files

if TYPE_CHECKING:
    from gnosync.devnet import Chain


# Stored column -> the served field it holds. ``time``/``time_ns`` and the gas fee
# columns are compared on their own, below.
BLOCK_COLUMNS = {
    "height": "height", "hash": "hash", "chain_id": "chain_id", "num_txs": "num_txs",
    "total_txs": "total_txs", "version": "version", "app_version": "app_version",
    "last_block_hash": "last_block_hash", "last_commit_hash": "last_commit_hash",
    "validators_hash": "validators_hash", "next_validators_hash": "next_validators_hash",
    "consensus_hash": "consensus_hash", "app_hash": "app_hash",
    "last_results_hash": "last_results_hash", "proposer_address": "proposer_address_raw",
}
BLOCK_TIME_COLUMNS = ("time", "time_ns")
TRANSACTION_COLUMNS = {
    "block_height": "block_height", "tx_index": "index", "hash": "hash", "success": "success",
    "gas_wanted": "gas_wanted", "gas_used": "gas_used", "content_raw": "content_raw",
}
FEE_COLUMNS = ("gas_fee_amount", "gas_fee_denom")
SANITIZED_COLUMNS = ("memo", "messages", "response")  # text and JSON a NUL can be in
JSON_COLUMNS = ("messages", "response")
FLAG_COLUMN = "sanitized"

REPLACEMENT = "\ufffd"
MAX_INDEX = 2**31 - 1  # upper bound when paging one height's transactions by index
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- the schema: what is served, what is stored -----------------------------------------

_schema: GraphQLSchema | None = None


def upstream_schema() -> GraphQLSchema:
    """tx-indexer's schema, read on first use: ``../shared``'s copy of it when present
    (CI always has it), else the devnet's, a faithful subset of it wherever both are
    there (tests/test_devnet.py::test_schema_is_a_faithful_subset_of_tx_indexer)."""
    global _schema
    if _schema is None:
        if shared_files.UPSTREAM_SCHEMA.is_file():
            _schema = build_schema(shared_files.UPSTREAM_SCHEMA.read_text())
        else:
            from gnosync.devnet import schema_sdl

            _schema = build_schema(schema_sdl())
    return _schema


def _fields(named: GraphQLObjectType) -> Iterable[tuple[str, Any]]:
    return ((name, field) for name, field in named.fields.items() if not field.deprecation_reason)


def selection(type_: Any, *, skip: frozenset[str] = frozenset()) -> str:
    """The selection set asking for every non-deprecated field of ``type_``, all the way down."""
    named = get_named_type(type_)
    if isinstance(named, GraphQLUnionType):
        members = " ".join(f"... on {member.name} {selection(member)}" for member in named.types)
        return "{ __typename " + members + " }"
    if isinstance(named, GraphQLObjectType):
        parts = [f"{name} {selection(field.type)}".strip() for name, field in _fields(named)
                 if name not in skip]
        return "{ " + " ".join(parts) + " }"
    return ""


def project(value: Any, type_: Any, path: str) -> Any:
    """``value`` cut to what :func:`selection` asks for; raises ``ValueError`` naming the
    path of a field the value lacks."""
    if value is None:
        return None
    if isinstance(type_, GraphQLNonNull):
        return project(value, type_.of_type, path)
    if isinstance(type_, GraphQLList):
        return [project(item, type_.of_type, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(type_, GraphQLUnionType):
        member = upstream_schema().type_map.get(value.get("__typename"))
        if member not in type_.types:
            raise ValueError(f"{path}: {value.get('__typename')!r} is not a {type_.name}")
        return {"__typename": member.name, **project(value, member, path)}
    if isinstance(type_, GraphQLObjectType):
        out = {}
        for name, field in _fields(type_):
            if name not in value:
                raise ValueError(f"{path}.{name} is missing")
            out[name] = project(value[name], field.type, f"{path}.{name}")
        return out
    return value


def block_type() -> GraphQLObjectType:
    return upstream_schema().type_map["Block"]


def transaction_type() -> GraphQLObjectType:
    return upstream_schema().type_map["Transaction"]


def served_block(block: dict[str, Any]) -> dict[str, Any]:
    """A served block with the fields the ``blocks`` table holds (not its ``txs``)."""
    return {name: block[name] for name, _ in _fields(block_type()) if name != "txs"}


def served_transaction(tx: dict[str, Any]) -> dict[str, Any]:
    return project(tx, transaction_type(), f"transaction {tx.get('block_height')}/{tx.get('index')}")


# -- reading the chain ------------------------------------------------------------------


async def source_data(
    source: Chain | str, start: int, end: int
) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, int], dict[str, Any]]]:
    """Everything the chain holds for heights ``start..end``: blocks by height and
    transactions by (height, index), as plain dicts of served fields."""
    if isinstance(source, str):
        async with aiohttp.ClientSession() as http:
            blocks = await _http_blocks(http, source, start, end)
            txs = await _http_transactions(http, source, start, end)
    else:
        with source.lock:
            blocks = list(source.iter_blocks(start, end))
            txs = list(source.iter_transactions(start, end))
    return (
        {block["height"]: served_block(block) for block in blocks},
        {(tx["block_height"], tx["index"]): served_transaction(tx) for tx in txs},
    )


BLOCKS_QUERY = (
    "query CompareBlocks($where: FilterBlock!) {"
    " getBlocks(where: $where, order: {height: ASC}) %s }"
)
TRANSACTIONS_QUERY = (
    "query CompareTransactions($where: FilterTransaction!) {"
    " getTransactions(where: $where, order: {heightAndIndex: ASC}) %s }"
)


async def _query(http: aiohttp.ClientSession, url: str, document: str, where: dict) -> tuple[list, bool]:
    """The list a query answers, and whether the server's element cap cut it short."""
    payload = {"query": document, "variables": {"where": where}}
    async with http.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=600)) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered HTTP {response.status} to {where}: {body[:200]!r}")
    # Invalid UTF-8 stays visible (as lone surrogates) instead of failing the decode.
    answer = json.loads(body.decode("utf-8", errors="surrogateescape"))
    items = next(iter((answer.get("data") or {}).values()), None)
    errors = answer.get("errors") or []
    capped = bool(errors) and all("max elements" in str(e.get("message")) for e in errors)
    if items is None or (errors and not capped):
        raise RuntimeError(f"{url} answered {where} with errors {errors}")
    return items, capped


def _heights(low: int, high: int) -> dict[str, int]:
    # tx-indexer casts bounds to unsigned integers and scans between the filter's lowest
    # and highest bound: two-sided ranges only, and height 0 only by ``eq``.
    return {"eq": low} if low == high else {"gt": low - 1, "lt": high + 1}


async def _http_blocks(http: aiohttp.ClientSession, url: str, start: int, end: int) -> list[dict]:
    document = BLOCKS_QUERY % selection(block_type(), skip=frozenset({"txs"}))
    blocks: list[dict] = []
    low = start
    while low <= end:
        high = 0 if low == 0 else end
        got, capped = await _query(http, url, document, {"height": _heights(low, high)})
        blocks.extend(got)
        if capped and got:
            low = got[-1]["height"] + 1
        elif low == 0:
            low = 1
        else:
            break
    return blocks


async def _http_transactions(http: aiohttp.ClientSession, url: str, start: int, end: int) -> list[dict]:
    document = TRANSACTIONS_QUERY % selection(transaction_type())
    txs: list[dict] = []
    low, after = start, None  # next: heights from ``low``; at ``low``, indexes above ``after``
    while low <= end:
        if after is not None:  # the rest of one height the cap cut short
            where = {"block_height": {"eq": low}, "index": {"gt": after, "lt": MAX_INDEX}}
        else:
            where = {"block_height": _heights(low, 0 if low == 0 else end)}
        got, capped = await _query(http, url, document, where)
        txs.extend(got)
        if capped and got:
            low, after = got[-1]["block_height"], got[-1]["index"]
        elif after is not None or low == 0:
            low, after = low + 1, None
        else:
            break
    return txs


# -- comparing --------------------------------------------------------------------------


def rfc3339_nano(moment: datetime, nanos_below_micro: int) -> str:
    """A stored time as Go's RFC3339Nano prints it: UTC, ``Z``, trailing zeros trimmed."""
    delta = moment - EPOCH
    total = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000 + nanos_below_micro
    seconds, fraction = divmod(total, 10**9)
    text = (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def _unrepresentable(char: str) -> bool:
    return char == "\x00" or "\ud800" <= char <= "\udfff"


def sanitize(value: Any) -> Any:
    """``value`` with every NUL and lone surrogate (or undecodable byte) in its strings,
    keys included, replaced by U+FFFD."""
    if isinstance(value, str):
        if not any(_unrepresentable(char) for char in value):
            return value
        return "".join(REPLACEMENT if _unrepresentable(char) else char for char in value)
    if isinstance(value, list):
        return [sanitize(item) for item in value]
    if isinstance(value, dict):
        return {sanitize(key): sanitize(item) for key, item in value.items()}
    return value


def split_bodies(messages: Any, height: int, index: int) -> tuple[Any, dict[tuple, str]]:
    """Served ``messages`` as gnosync stores them, and the package_files rows they give
    ((height, index, msg_index, name) -> body). In each message's
    ``value.package.files``, the first file of each name, if its name and body are
    strings, becomes ``{name, size}`` (UTF-8 bytes of the body); the rest stay as
    served."""
    if not isinstance(messages, list):
        return messages, {}
    stored: list[Any] = []
    bodies: dict[tuple, str] = {}
    for msg_index, message in enumerate(messages):
        value = message.get("value") if isinstance(message, dict) else None
        package = value.get("package") if isinstance(value, dict) else None
        files = package.get("files") if isinstance(package, dict) else None
        if not isinstance(files, list):
            stored.append(message)
            continue
        seen: set[str] = set()
        kept: list[Any] = []
        for file in files:
            if not isinstance(file, dict):
                kept.append(file)
                continue
            name, body = file.get("name"), file.get("body")
            key = json.dumps(name)
            first = key not in seen
            seen.add(key)
            if first and isinstance(name, str) and isinstance(body, str):
                bodies[(height, index, msg_index, name)] = body
                kept.append({**{k: v for k, v in file.items() if k != "body"},
                             "size": len(body.encode("utf-8", "surrogatepass"))})
            else:
                kept.append(file)
        stored.append({**message, "value": {**value, "package": {**package, "files": kept}}})
    return stored, bodies


def expected_stored(tx: dict[str, Any], column: str, flagged: bool) -> Any:
    """What ``column`` (memo, messages or response) of ``tx`` must hold as stored."""
    expected = sanitize(tx[column]) if flagged else tx[column]
    if column == "messages":
        expected = split_bodies(expected, tx["block_height"], tx["index"])[0]
    return expected


def needs_sanitizing(tx: dict[str, Any]) -> bool:
    """Whether PostgreSQL cannot hold the transaction's memo, messages or response as served."""
    return any(sanitize(tx[name]) != tx[name] for name in ("memo", "messages", "response"))


def block_differences(row: Any, block: dict[str, Any]) -> list[tuple[str, object, object]]:
    """(column, stored, served) for each column of a stored block row that differs from
    the block as served; every column of the row must be known here."""
    out: list[tuple[str, object, object]] = []
    for column, field in BLOCK_COLUMNS.items():
        if row[column] != block[field]:
            out.append((column, row[column], block[field]))
    stored_time = rfc3339_nano(row["time"], row["time_ns"])
    if not 0 <= row["time_ns"] <= 999 or stored_time != block["time"]:
        out.append(("time", stored_time, block["time"]))
    for column in row.keys():
        if column not in BLOCK_COLUMNS and column not in BLOCK_TIME_COLUMNS:
            out.append((column, row[column], "<not compared: unknown column>"))
    return out


def transaction_differences(row: Any, tx: dict[str, Any]) -> list[tuple[str, object, object]]:
    """(column, stored, expected) for each column of a stored transaction row that differs
    from the transaction as served (after the documented replacement for rows marked
    ``sanitized``); JSON columns compare as JSON."""
    out: list[tuple[str, object, object]] = []
    for column, field in TRANSACTION_COLUMNS.items():
        if row[column] != tx[field]:
            out.append((column, row[column], tx[field]))
    fee = tx["gas_fee"]
    expected_fee = (None, None) if fee is None else (fee["amount"], fee["denom"])
    for column, expected in zip(FEE_COLUMNS, expected_fee):
        if row[column] != expected:
            out.append((column, row[column], expected))
    columns = set(row.keys())
    flagged = FLAG_COLUMN in columns and row[FLAG_COLUMN]
    if FLAG_COLUMN in columns and flagged != needs_sanitizing(tx):
        out.append((FLAG_COLUMN, row[FLAG_COLUMN], needs_sanitizing(tx)))
    for column in SANITIZED_COLUMNS:
        stored = row[column]
        if column in JSON_COLUMNS:
            stored = json.loads(stored)
        expected = expected_stored(tx, column, flagged)
        if stored != expected:
            out.append((column, stored, expected))
    known = {*TRANSACTION_COLUMNS, *FEE_COLUMNS, *SANITIZED_COLUMNS, FLAG_COLUMN}
    for column in columns - known:
        out.append((column, row[column], "<not compared: unknown column>"))
    return out


async def differences(
    dsn: str, source: Chain | str, start: int, end: int, schema: str = "indexer"
) -> list[str]:
    """Every way the database differs from the chain's heights ``start..end``: it must
    hold exactly those blocks and their transactions; [] when it does."""
    blocks, txs = await source_data(source, start, end)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT * FROM "{schema}".blocks ORDER BY height')
        tx_rows = await conn.fetch(
            f'SELECT * FROM "{schema}".transactions ORDER BY block_height, tx_index')
        file_rows = await conn.fetch(
            f'SELECT block_height, tx_index, msg_index, name, body FROM "{schema}".package_files')
    finally:
        await conn.close()
    problems: list[str] = []
    wanted = range(start, end + 1)
    stored_heights = [row["height"] for row in rows]
    if stored_heights != list(wanted):
        missing = sorted(set(wanted) - set(stored_heights))
        extra = sorted(set(stored_heights) - set(wanted))
        problems.append(f"heights differ: missing {missing[:10]} extra {extra[:10]}"
                        f" count {len(stored_heights)}")
    unserved = sorted(set(wanted) - set(blocks))
    if unserved:
        problems.append(f"the source does not serve heights {unserved[:10]} of {start}..{end}")
    for row in rows:
        block = blocks.get(row["height"])
        if block is None:
            continue
        for column, stored, served in block_differences(row, block):
            problems.append(f"block {row['height']} {column}: {stored!r:.80} != {served!r:.80}")
    stored_places = {(row["block_height"], row["tx_index"]): row for row in tx_rows}
    for place in sorted(set(txs) - set(stored_places)):
        problems.append(f"transaction {place[0]}/{place[1]} {txs[place]['hash']} is not stored")
    for place, row in stored_places.items():
        tx = txs.get(place)
        if tx is None:
            problems.append(f"stored transaction {place[0]}/{place[1]} {row['hash']} is not served")
            continue
        for column, stored, expected in transaction_differences(row, tx):
            problems.append(f"transaction {place[0]}/{place[1]} {column}: {stored!r:.80} != {expected!r:.80}")
    problems.extend(file_differences(file_rows, txs, {place: row for place, row in stored_places.items()}))
    return problems


def file_differences(
    file_rows: list[Any], txs: dict[tuple[int, int], dict[str, Any]], stored: dict[tuple[int, int], Any]
) -> list[str]:
    """How ``package_files`` differs from the bodies the stored transactions' served
    messages hold."""
    expected: dict[tuple, str] = {}
    for place, row in stored.items():
        tx = txs.get(place)
        if tx is None:
            continue
        flagged = FLAG_COLUMN in row.keys() and row[FLAG_COLUMN]
        messages = sanitize(tx["messages"]) if flagged else tx["messages"]
        expected.update(split_bodies(messages, *place)[1])
    held = {(r["block_height"], r["tx_index"], r["msg_index"], r["name"]): r["body"] for r in file_rows}
    problems = [f"package file {key} is not stored" for key in sorted(set(expected) - set(held))]
    problems += [f"package file {key} is stored but not served" for key in sorted(set(held) - set(expected))]
    problems += [
        f"package file {key} body: {held[key]!r:.80} != {body!r:.80}"
        for key, body in sorted(expected.items()) if key in held and held[key] != body
    ]
    return problems
