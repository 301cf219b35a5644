"""The devnet's fast path: gnosync's own queries answered from encoded JSON.

gnosync reads a chain with four documents (:mod:`gnosync.source.queries`): the latest
height, blocks with every field, block heights, and transactions with every field
gnosync stores, each over a height range. Answering them through the general executor
means building a dict per block, projecting it and encoding the result, for every
request. Here each height's answer is encoded once, as JSON bytes, and a range is
answered by joining those bytes::

    b'{"data":{"getBlocks":[' + b",".join(fragments) + b"]}}"

plus tx-indexer's element-cap error when the range holds ``max_elements`` or more.

A request takes the fast path only when its document is one of the known shapes: one
operation whose single root field is ``latestBlockHeight``, or ``getBlocks`` /
``getTransactions`` with ``where`` from a variable, ascending order (or none) and a
selection set whose printed form (:func:`graphql.print_ast`, so whitespace does not
matter) equals one of :data:`SELECTIONS`, and only when its ``where`` holds nothing but
``eq``/``gt``/``lt`` integers on the height (and, for one height's transactions, the
index). Anything else, and any request the server's data faults may change, goes to
the general executor, whose answers are the same after JSON parsing
(``tests/test_devnet_bench.py`` compares the two).

Fragments are kept per chunk of :data:`CHUNK` heights, built on first use for heights
at or below the tip (the chunk holding the tip is encoded afresh on each request, as the
chain may still grow into it), in an LRU cache bounded by the chain's
``answer_cache_mb``. :meth:`Fragments.prepare` builds chunks ahead of time.
"""

from __future__ import annotations

import binascii
import bisect
import ctypes
import hashlib
import queue
import threading
import time as _time
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from graphql import (
    FieldNode,
    ListValueNode,
    NamedTypeNode,
    NonNullTypeNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    print_ast,
)

from gnosync.devnet.chain import _MASK64 as MASK64
from gnosync.devnet.chain import _NS as NS
from gnosync.devnet.chain import APP_VERSION, BLOCK_INTERVAL_NS, VERSION, json_bytes
from gnosync.devnet.chain import block_txs as listed_txs
from gnosync.devnet.filters import U64_MAX, range_bounds
from gnosync.source import queries

if TYPE_CHECKING:
    from gnosync.devnet.chain import Chain, _Template, _Tx

__all__ = ["CHUNK", "SELECTIONS", "Fragments", "Plan", "plan_for"]

CHUNK = 1000  # heights per cached chunk
_TRIM_AFTER = 4 * 1024 * 1024  # chunks this large hand freed memory back (see _build)

try:  # glibc: give freed heap memory back to the system
    _malloc_trim: Any = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # another C library
    _malloc_trim = None
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

_encode = msgspec.json.Encoder().encode

# The selection sets the fragments encode, by kind: exactly what gnosync's documents
# select (taken from them, so the two cannot drift apart).
SELECTIONS: dict[str, str] = {
    "blocks": "{" + queries.BLOCK_FIELDS + "}",
    "heights": "{ height }",
    "hashes": "{ height hash }",
    "transactions": "{" + queries.TRANSACTION_FIELDS + "}",
}


def _block_tx_keys() -> tuple[str, ...]:
    """The fields of ``Block.txs`` entries that gnosync's block document selects."""
    from graphql import parse

    operation = parse("{ getBlocks " + SELECTIONS["blocks"] + " }").definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    blocks = operation.selection_set.selections[0]
    assert isinstance(blocks, FieldNode) and blocks.selection_set is not None
    for field in blocks.selection_set.selections:
        if isinstance(field, FieldNode) and field.name.value == "txs" and field.selection_set:
            return tuple(
                sub.name.value for sub in field.selection_set.selections if isinstance(sub, FieldNode)
            )
    return ()


# Block.txs entries as the block document selects them: their fields are top-level keys
# of a chain's block views (``fee`` is selected whole or not at all).
BLOCK_TX_KEYS = _block_tx_keys()


def _selected_block_txs(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: view[key] for key in BLOCK_TX_KEYS} for view in views]


# root field -> (its where input type, the order argument's ascending value)
_LISTS = {
    "getBlocks": ("FilterBlock", {"height": "ASC"}),
    "getTransactions": ("FilterTransaction", {"heightAndIndex": "ASC"}),
}


def _fingerprint(selection_set: Any) -> str:
    return print_ast(selection_set)


_FINGERPRINTS: dict[str, str] | None = None


def _fingerprints() -> dict[str, str]:
    """Printed selection set -> kind."""
    global _FINGERPRINTS
    if _FINGERPRINTS is None:
        from graphql import parse

        found = {}
        for kind, selection in SELECTIONS.items():
            field = "getTransactions" if kind == "transactions" else "getBlocks"
            operation = parse("{ " + field + " " + selection + " }").definitions[0]
            assert isinstance(operation, OperationDefinitionNode)
            node = operation.selection_set.selections[0]
            assert isinstance(node, FieldNode)
            found[_fingerprint(node.selection_set)] = kind
        _FINGERPRINTS = found
    return _FINGERPRINTS


@dataclass(frozen=True, slots=True)
class Plan:
    """How to answer a known document from fragments."""

    kind: str  # "latest", "blocks", "heights", "hashes" or "transactions"
    key: bytes  # the root field's response key, JSON-ready
    variable: str | None  # the variable holding ``where``
    operation_name: str | None

    def bounds(self, variables: dict[str, Any]) -> tuple[int, int, int, int] | None:
        """(low, high, first index, last index) of a plain range request, unsigned and
        inclusive as tx-indexer reads them; None when the variables hold anything else
        (the general executor then answers)."""
        if self.variable is None:
            return (0, 0, 0, U64_MAX)
        where = variables.get(self.variable)
        if type(where) is not dict:
            return None
        height_field = "block_height" if self.kind == "transactions" else "height"
        for name, bounds in where.items():
            if name != height_field and not (name == "index" and self.kind == "transactions"):
                return None
            if type(bounds) is not dict:
                return None
            for op, value in bounds.items():
                if op not in ("eq", "gt", "lt") or type(value) is not int:
                    return None
                if not INT64_MIN <= value <= INT64_MAX:
                    return None
        low, high = range_bounds(where, height_field)
        first, last = range_bounds(where, "index") if "index" in where else (0, U64_MAX)
        return low, high, first, last


def plan_for(operation: OperationDefinitionNode, fragments: dict[str, Any]) -> Plan | None:
    """The fast plan of a validated operation, or None when it is not a known shape."""
    if operation.operation != OperationType.QUERY or operation.directives:
        return None
    selections = operation.selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    node = selections[0]
    if node.directives:
        return None
    name = node.name.value
    key = (node.alias.value if node.alias else name).encode()
    operation_name = operation.name.value if operation.name else None
    definitions = operation.variable_definitions or ()
    if name == "latestBlockHeight":
        if node.arguments or definitions:
            return None
        return Plan("latest", key, None, operation_name)
    if name not in _LISTS or node.selection_set is None or len(definitions) != 1:
        return None
    input_type, ascending = _LISTS[name]
    definition = definitions[0]
    variable = definition.variable.name.value
    type_node = definition.type
    if not (
        isinstance(type_node, NonNullTypeNode)
        and isinstance(type_node.type, NamedTypeNode)
        and type_node.type.name.value == input_type
        and definition.default_value is None
        and not definition.directives
    ):
        return None
    for argument in node.arguments:
        value = argument.value
        if argument.name.value == "where":
            if not isinstance(value, VariableNode) or value.name.value != variable:
                return None
        elif argument.name.value == "order":
            if not isinstance(value, ObjectValueNode) or _literal(value) != ascending:
                return None
        else:
            return None
    if not any(argument.name.value == "where" for argument in node.arguments):
        return None
    kind = _fingerprints().get(_fingerprint(node.selection_set))
    if kind is None or (kind == "transactions") != (name == "getTransactions"):
        return None
    return Plan(kind, key, variable, operation_name)


def _literal(node: Any) -> Any:
    if isinstance(node, ObjectValueNode):
        return {field.name.value: _literal(field.value) for field in node.fields}
    if isinstance(node, ListValueNode):
        return [_literal(value) for value in node.values]
    return getattr(node, "value", None)


# -------------------------------------------------------------------- encoders


# Union members whose fields gnosync selects differently from the chain's dicts: the
# fields it selects, in its document's order.
_RESHAPED = {
    "MsgAddPackage": ("__typename", "creator", "send", "max_deposit", "package"),
    "MsgRun": ("__typename", "caller", "send", "max_deposit", "package"),
}


def _as_selected(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The messages as gnosync selects them (every field but MsgAddPackage.deposit, in
    document order); None when that is what they already are."""
    if not any(m["value"].get("__typename") in _RESHAPED for m in messages):
        return None
    out = []
    for message in messages:
        value = message["value"]
        names = _RESHAPED.get(value.get("__typename"))
        if names is not None:
            message = {**message, "value": {name: value[name] for name in names}}
        out.append(message)
    return out


@dataclass(frozen=True, slots=True)
class _EncodedTemplate:
    """A template's constant parts, encoded: copies splice in what is their own."""

    success: bytes
    middle: bytes  # Transaction: from gas_wanted to the opening of content_raw
    tail: bytes  # Transaction: from the end of content_raw to the end of the object


def _encoded_template(template: _Template) -> _EncodedTemplate:
    encoded = template.encoded
    if encoded is None:
        result = template.result
        encoded = template.encoded = _EncodedTemplate(
            success=b"true" if result["success"] else b"false",
            middle=b"".join(
                (
                    b',"gas_wanted":',
                    _encode(result["gas_wanted"]),
                    b',"gas_used":',
                    _encode(result["gas_used"]),
                    b',"gas_fee":',
                    _encode(template.gas_fee),
                    b',"content_raw":"Tx{',
                )
            ),
            tail=b"".join(
                (
                    b'}","memo":',
                    _encode(template.memo),
                    b',"messages":',
                    _encode(_as_selected(template.messages) or template.messages),
                    b',"response":',
                    _encode(template.response),
                    b"}",
                )
            ),
        )
    return encoded


def transaction_fragment(tx: _Tx) -> bytes:
    """One transaction as gnosync's TRANSACTIONS document selects it, encoded."""
    template = tx.template
    if template is not None and tx.height:
        encoded = _encoded_template(template)
        return b"".join(
            (
                b'{"index":',
                b"%d" % tx.index,
                b',"hash":"',
                tx.hash.encode(),
                b'","success":',
                encoded.success,
                b',"block_height":',
                b"%d" % tx.height,
                encoded.middle,
                binascii.hexlify(tx.content).upper(),
                encoded.tail,
            )
        )
    view = tx.full_view()
    messages = _as_selected(view["messages"])
    if messages is not None:
        view = {**view, "messages": messages}
    return _encode_any(view)


def _encode_any(value: Any) -> bytes:
    """``value`` encoded, strings holding bytes that are not UTF-8 included (written as
    those bytes, as tx-indexer does: see :func:`gnosync.devnet.chain.json_bytes`)."""
    try:
        return _encode(value)
    except UnicodeEncodeError:
        return json_bytes(value)


_DAYS: dict[int, bytes] = {}  # day number since the epoch -> b"YYYY-MM-DDT"


def _block_template(chain: Chain) -> bytes:
    """A block's JSON (every field) with ``%`` slots for what changes per height."""

    def constant(value: str) -> bytes:
        return _encode(value).replace(b"%", b"%%")

    return (
        b'{"hash":"%s","height":%d,"version":'
        + constant(VERSION)
        + b',"chain_id":'
        + constant(chain.config.chain_id)
        + b',"time":"%s","num_txs":%d,"total_txs":%d,"app_version":'
        + constant(APP_VERSION)
        + b',"last_block_hash":"%s","last_commit_hash":"%s","validators_hash":'
        + constant(chain._validators_hash)
        + b',"next_validators_hash":'
        + constant(chain._validators_hash)
        + b',"consensus_hash":'
        + constant(chain._consensus_hash)
        + b',"app_hash":"%s","last_results_hash":"%s","proposer_address_raw":"%s","txs":%s}'
    )


def encode_range(
    chain: Chain, start: int, end: int, *, with_txs: bool = False
) -> tuple[list[bytes], list[bytes], array | None]:
    """Heights ``start..end`` (within the chain) encoded: (one JSON object per block,
    every field, as :meth:`Chain.iter_blocks` yields it; with ``with_txs`` their
    transactions as gnosync's TRANSACTIONS document selects them, in order; and where
    each height's transactions start in that list, one entry per height and one more).

    The same values as the chain's dicts, computed without them: times, hashes and
    templated transactions are spliced into pre-encoded bytes.
    """
    chain._ensure_hashed(end)
    blocks: list[bytes] = []
    txs: list[bytes] = []
    starts = array("Q", [0]) * (end - start + 2) if with_txs else None
    first = start
    if start == 0:
        genesis = chain._genesis_block()
        genesis["txs"] = _selected_block_txs(genesis["txs"])
        blocks.append(_encode(genesis))
        if with_txs:
            txs.extend(transaction_fragment(tx) for tx in chain._txs_at(0))
        start = 1
    template = _block_template(chain)
    b64 = binascii.b2a_base64
    hexlify = binascii.hexlify
    sha256 = hashlib.sha256
    hashes = chain._hashes
    counts = chain._tx_count
    file_pool = chain._file_pool
    special = chain._special
    templated = chain.config.tx_templates > 0
    hashes_only = BLOCK_TX_KEYS == ("hash",)
    proposers = [validator.encode() for validator in chain.validators]
    n_validators = len(proposers)
    commit_key = chain._key + b"commit"
    results_key = chain._key + b"results"
    key64 = chain._key64
    base_ns = chain._start_ns - NS
    days = _DAYS
    tx_heights, tx_cum = chain._tx_heights, chain._tx_cum
    n_tx_heights = len(tx_heights)
    after = bisect.bisect_right(tx_heights, start)
    app_state = -1
    app_hash = b""
    append = blocks.append
    mask = MASK64
    for height in range(start, end + 1):
        if starts is not None:
            starts[height - first] = len(txs)
        while after < n_tx_heights and tx_heights[after] <= height:
            after += 1
        total = tx_cum[after - 1] if after else 0
        below = after - 1 if after and tx_heights[after - 1] == height else after
        state = tx_heights[below - 1] if below else 0
        if state != app_state:
            app_state, app_hash = state, chain._app_hash_of(state).encode()
        # The time, as Chain._time_ns and format_time_ns make it.
        mixed = ((key64 ^ (height * 0x2545F4914F6CDD1D & mask)) + 0x9E3779B97F4A7C15) & mask
        mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & mask
        mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & mask
        mixed ^= mixed >> 31
        mode = mixed % 100
        rest = mixed >> 8
        if mode < 5:
            offset = (rest % (2 * NS)) | 1
        elif mode < 15:
            offset = (rest % 2) * NS
        elif mode < 40:
            offset = (rest % 2_000_000) * 1_000
        else:
            offset = (rest % 2_000) * 1_000_000
        seconds, fraction = divmod(base_ns + height * BLOCK_INTERVAL_NS + offset, NS)
        day, second = divmod(seconds, 86_400)
        date = days.get(day)
        if date is None:
            if len(days) > 100_000:
                days.clear()
            date = days[day] = _time.strftime("%Y-%m-%dT", _time.gmtime(day * 86_400)).encode()
        hour, second = divmod(second, 3600)
        minute, second = divmod(second, 60)
        if fraction:
            time_text = (
                b"%s%02d:%02d:%02d.%09d" % (date, hour, minute, second, fraction)
            ).rstrip(b"0") + b"Z"
        else:
            time_text = b"%s%02d:%02d:%02dZ" % (date, hour, minute, second)
        offset = (height - 1) * 32
        if height >= 2:
            previous = hashes[offset - 32 : offset]
            last_block_hash = b64(previous, newline=False)
            last_commit_hash = b64(sha256(commit_key + previous).digest(), newline=False)
            if counts.get(height - 1):
                last_results_hash = b64(sha256(results_key + previous).digest(), newline=False)
            else:
                last_results_hash = b""
        else:
            last_block_hash = last_commit_hash = last_results_hash = b""
        count = counts.get(height, 0)
        if not count:
            block_txs = b"[]"
        elif templated and height not in file_pool and height not in special:
            parts = []
            for index, (tx_template, _, content, _, tx_hash) in enumerate(
                chain._take_light_txs(height, count)
            ):
                encoded = tx_template.encoded or _encoded_template(tx_template)
                hexed = hexlify(content).upper() if with_txs or not hashes_only else b""
                if hashes_only:
                    parts.append(b'{"hash":"' + tx_hash + b'"}')
                else:
                    view = {
                        "hash": tx_hash.decode(),
                        "fee": tx_template.block_fee,
                        "memo": tx_template.memo,
                        "content_raw": "Tx{" + hexed.decode() + "}",
                    }
                    parts.append(_encode(_selected_block_txs([view])[0]))
                if with_txs:
                    txs.append(
                        b"".join(
                            (
                                b'{"index":',
                                b"%d" % index,
                                b',"hash":"',
                                tx_hash,
                                b'","success":',
                                encoded.success,
                                b',"block_height":',
                                b"%d" % height,
                                encoded.middle,
                                hexed,
                                encoded.tail,
                            )
                        )
                    )
            block_txs = b"[" + b",".join(parts) + b"]"
        else:
            chain_txs = chain._txs_at(height)
            block_txs = _encode_any(_selected_block_txs(listed_txs(chain_txs)))
            if with_txs:
                txs.extend(transaction_fragment(tx) for tx in chain_txs)
        append(
            template
            % (
                b64(hashes[offset : offset + 32], newline=False),
                height,
                time_text,
                count,
                total,
                last_block_hash,
                last_commit_hash,
                app_hash,
                last_results_hash,
                proposers[height % n_validators],
                block_txs,
            )
        )
    if starts is not None:
        starts[end - first + 1] = len(txs)
    return blocks, txs, starts


def _offsets(parts: list[bytes]) -> array:
    """Where each part starts in ``b",".join(parts)``, and one past the end + 1."""
    offsets = array("Q", [0]) * (len(parts) + 1)
    position = 0
    for i, part in enumerate(parts):
        offsets[i] = position
        position += len(part) + 1
    offsets[len(parts)] = position
    return offsets


class _Chunk:
    """Encoded answers of heights ``first..last`` (all at or below the tip)."""

    __slots__ = (
        "block_offsets",
        "blocks",
        "first",
        "last",
        "size",
        "tx_offsets",
        "tx_starts",
        "txs",
    )

    def __init__(self, first: int, last: int):
        self.first = first
        self.last = last
        self.blocks: bytes | None = None  # block fragments joined by ","
        self.block_offsets: array | None = None
        self.txs: bytes | None = None  # transaction fragments joined by ","
        self.tx_offsets: array | None = None
        self.tx_starts: array | None = None  # per height: its first transaction's position
        self.size = 0


class Fragments:
    """The encoded answers of one chain (see the module docstring).

    Callers hold the chain's lock. With the chain's ``read_ahead`` > 0, a request that
    encodes chunk N has a background thread encode the next ``read_ahead`` chunks (the
    cache evicting the least recently used ones as usual), so that a client reading the
    chain in order finds them ready: the work is done while the client handles what it
    got.
    """

    def __init__(self, chain: Chain):
        self.chain = chain
        self.budget = chain.config.answer_cache_mb * 1024 * 1024
        self.read_ahead = chain.config.read_ahead
        self._chunks: OrderedDict[int, _Chunk] = OrderedDict()
        self.size = 0  # bytes held
        self.stats = {"built": 0, "evicted": 0, "hits": 0, "ahead": 0}
        self._last_size = 0  # of the chunk built last
        self._ahead: queue.Queue[int] = queue.Queue()
        self._queued: set[int] = set()
        self._worker: threading.Thread | None = None
        self._building: set[int] = set()  # chunks the read-ahead thread is encoding
        self._built = threading.Condition(chain.lock)

    def snapshot(self) -> dict[str, Any]:
        """Size and counts, as JSON values."""
        with self.chain.lock:
            return {
                "mb": round(self.size / 2**20, 1),
                "budget_mb": round(self.budget / 2**20, 1),
                "chunks": len(self._chunks),
                **self.stats,
            }

    # ------------------------------------------------------------------- chunks

    def _chunk(self, number: int) -> _Chunk | None:
        """Chunk ``number``, or None when it reaches above the tip (not cacheable)."""
        last = number * CHUNK + CHUNK - 1
        if last > self.chain.tip:
            return None
        while number in self._building:  # the read-ahead thread has it nearly done
            self._built.wait(timeout=30.0)
        chunk = self._chunks.get(number)
        if chunk is not None:
            self._chunks.move_to_end(number)
            self.stats["hits"] += 1
            return chunk
        chunk = _Chunk(max(number * CHUNK, self.chain.lowest), last)
        self._chunks[number] = chunk
        self.stats["built"] += 1
        return chunk

    def _grew(self, number: int, chunk: _Chunk, size: int) -> None:
        """Account for ``size`` more bytes in a chunk; evict the least recently used
        chunks (possibly this one) past the budget."""
        if self._chunks.get(number) is not chunk:
            return  # already evicted: its bytes live only as long as the request
        chunk.size += size
        self.size += size
        while self.size > self.budget and self._chunks:
            _, dropped = self._chunks.popitem(last=False)
            self.size -= dropped.size
            self.stats["evicted"] += 1

    def _blocks_of(self, number: int, chunk: _Chunk) -> tuple[bytes, array]:
        if chunk.blocks is None or chunk.block_offsets is None:
            self._build(number, chunk)
        assert chunk.blocks is not None and chunk.block_offsets is not None
        return chunk.blocks, chunk.block_offsets

    def _txs_of(self, number: int, chunk: _Chunk) -> tuple[bytes, array, array]:
        if chunk.txs is None or chunk.tx_offsets is None or chunk.tx_starts is None:
            self._build(number, chunk)
        assert chunk.txs is not None and chunk.tx_offsets is not None
        assert chunk.tx_starts is not None
        return chunk.txs, chunk.tx_offsets, chunk.tx_starts

    def _build(self, number: int, chunk: _Chunk) -> None:
        """Encode a chunk's blocks and transactions, both at once: they are made of the
        same transactions, which the chain keeps only for a while."""
        self._fill(number, chunk, encode_range(self.chain, chunk.first, chunk.last, with_txs=True))

    def _fill(
        self,
        number: int,
        chunk: _Chunk,
        encoded: tuple[list[bytes], list[bytes], array | None],
    ) -> None:
        blocks, txs, starts = encoded
        assert starts is not None
        chunk.blocks = b",".join(blocks)
        chunk.block_offsets = _offsets(blocks)
        chunk.txs = b",".join(txs)
        chunk.tx_offsets = _offsets(txs)
        chunk.tx_starts = starts
        size = len(chunk.blocks) + len(chunk.txs)
        size += 8 * (len(chunk.block_offsets) + len(chunk.tx_offsets) + len(starts))
        self._last_size = size
        self._grew(number, chunk, size)
        if size > _TRIM_AFTER and _malloc_trim is not None:
            # Encoding a large chunk leaves its pieces' memory free but scattered over
            # the heap (and the read-ahead thread's own), where the process keeps it.
            _malloc_trim(0)

    def _requested(self, number: int) -> _Chunk | None:
        """Chunk ``number`` for a request (None: not cacheable); the chunks after it
        are encoded ahead."""
        if not self.budget:
            return None
        self._read_ahead(number)
        return self._chunk(number)

    def _read_ahead(self, number: int) -> None:
        """Have the background thread encode the chunks after ``number``."""
        if self.read_ahead <= 0:
            return
        for following in range(number + 1, number + 1 + self.read_ahead):
            if following not in self._chunks and following not in self._queued:
                self._queued.add(following)
                self._ahead.put(following)
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, name="gnosync-devnet-read-ahead", daemon=True
            )
            self._worker.start()

    def _work(self) -> None:
        """The read-ahead thread. It encodes without holding the chain's lock (requests
        go on meanwhile; one for the chunk being encoded waits for it), then files the
        chunk under the lock, unless the chain was reset meanwhile."""
        chain = self.chain
        while True:
            try:
                number = self._ahead.get(timeout=5.0)
            except queue.Empty:
                with chain.lock:
                    if self._ahead.empty():
                        self._worker = None
                        return
                continue
            with chain.lock:
                self._queued.discard(number)
                if chain._fragments is not self:
                    self._worker = None
                    return  # the chain was reset: this cache is no longer used
                if number in self._chunks or number * CHUNK + CHUNK - 1 > chain.tip:
                    continue
                if (
                    self.size + self._last_size > self.budget
                    and len(self._chunks) <= self.read_ahead + 2
                ):
                    continue  # no room without evicting what is being read
                first, last = max(number * CHUNK, chain.lowest), number * CHUNK + CHUNK - 1
                chain._ensure_hashed(last)
                self._building.add(number)
            encoded = None
            try:
                encoded = encode_range(chain, first, last, with_txs=True)
            finally:
                with chain.lock:
                    self._building.discard(number)
                    if encoded is not None and chain._fragments is self:
                        chunk = self._chunk(number)
                        if chunk is not None and chunk.blocks is None:
                            self._fill(number, chunk, encoded)
                            self.stats["ahead"] += 1
                    self._built.notify_all()

    def encode_blocks(self, start: int, end: int) -> list[bytes]:
        """Blocks ``start..end``, each as gnosync's BLOCKS document selects it (every
        field), encoded."""
        start, end = max(start, self.chain.lowest), min(end, self.chain.tip)
        if end < start:
            return []
        return encode_range(self.chain, start, end)[0]

    def prepare(self, upto: int | None = None) -> int:
        """Encode the blocks and transactions of every whole chunk from the lowest
        height up to ``upto`` (default: the tip), while the cache has room; return how
        many chunks were encoded. Takes the chain's lock one chunk at a time."""
        chain = self.chain
        upto = chain.tip if upto is None else min(upto, chain.tip)
        done = 0
        number = chain.lowest // CHUNK
        while (number + 1) * CHUNK - 1 <= upto:
            with chain.lock:
                if number not in self._chunks and self.size + self._last_size > self.budget:
                    break  # the next chunk would not fit: stop rather than evict
                chunk = self._chunk(number)
                if chunk is None:
                    break
                evicted = self.stats["evicted"]
                if chunk.blocks is None:
                    self._build(number, chunk)
                if self.stats["evicted"] != evicted:
                    break
            done += 1
            number += 1
        return done

    # ------------------------------------------------------------------ answers

    def block_parts(self, low: int, high: int) -> list[Any]:
        """Encoded blocks ``low..high`` (within the chain), as pieces to join with no
        separator (commas included)."""
        pieces: list[Any] = []
        height = low
        while height <= high:
            number = height // CHUNK
            stop = min(high, number * CHUNK + CHUNK - 1)
            if pieces:
                pieces.append(b",")
            chunk = self._requested(number)
            if chunk is None:
                pieces.append(b",".join(self.encode_blocks(height, stop)))
            else:
                blocks, offsets = self._blocks_of(number, chunk)
                first = height - chunk.first
                pieces.append(
                    memoryview(blocks)[offsets[first] : offsets[stop - chunk.first + 1] - 1]
                )
            height = stop + 1
        return pieces

    def transaction_parts(
        self, low: int, high: int, first_index: int, last_index: int, limit: int
    ) -> tuple[list[Any], int]:
        """Encoded transactions of heights ``low..high`` (within the chain) whose index
        is in ``first_index..last_index``, at most ``limit`` of them: (pieces to join
        with no separator, how many)."""
        pieces: list[Any] = []
        count = 0
        chain = self.chain
        height = low
        windowed = first_index > 0 or last_index < U64_MAX
        while height <= high and count < limit:
            number = height // CHUNK
            stop = min(high, number * CHUNK + CHUNK - 1)
            chunk = self._requested(number)
            if chunk is None:
                for tx_height in chain.tx_heights(height, stop):
                    for tx in chain._txs_at(tx_height):
                        if count >= limit:
                            break
                        if windowed and not first_index <= tx.index <= last_index:
                            continue
                        if pieces:
                            pieces.append(b",")
                        pieces.append(transaction_fragment(tx))
                        count += 1
            else:
                txs, offsets, starts = self._txs_of(number, chunk)
                if windowed:
                    # One height at a time: positions of its window.
                    for h in range(height, stop + 1):
                        begin, end = starts[h - chunk.first], starts[h - chunk.first + 1]
                        if first_index > end - begin:
                            continue
                        begin, end = begin + first_index, min(end, begin + last_index + 1)
                        end = min(end, begin + limit - count)
                        if end > begin:
                            if pieces:
                                pieces.append(b",")
                            pieces.append(memoryview(txs)[offsets[begin] : offsets[end] - 1])
                            count += end - begin
                        if count >= limit:
                            break
                else:
                    begin = starts[height - chunk.first]
                    end = starts[stop - chunk.first + 1]
                    end = min(end, begin + limit - count)
                    if end > begin:
                        if pieces:
                            pieces.append(b",")
                        pieces.append(memoryview(txs)[offsets[begin] : offsets[end] - 1])
                        count += end - begin
            height = stop + 1
        return pieces, count

    def answer(self, plan: Plan, bounds: tuple[int, int, int, int], cap: int) -> bytes:
        """The response body of a fast-path request (see :meth:`Plan.bounds`)."""
        chain = self.chain
        key = plan.key
        if plan.kind == "latest":
            return b'{"data":{"%s":%d}}' % (key, chain.tip)
        low, high, first_index, last_index = bounds
        low, high = max(low, chain.lowest), min(high, chain.tip)
        pieces: list[Any]
        if low > high:
            pieces, count = [], 0
        elif plan.kind == "transactions":
            pieces, count = self.transaction_parts(low, high, first_index, last_index, cap)
        else:
            count = min(high - low + 1, cap)
            high = low + count - 1
            if plan.kind == "heights":
                pieces = [b",".join([b'{"height":%d}' % h for h in range(low, high + 1)])]
            elif plan.kind == "hashes":
                pieces = [b",".join([
                    b'{"height":%d,"hash":"%s"}' % (h, chain.block_hash(h).encode())
                    for h in range(low, high + 1)
                ])]
            else:
                pieces = self.block_parts(low, high)
        if count >= cap:
            head = (
                b'{"errors":[{"message":"max elements per query reached (%d)","path":["%s"]}],'
                b'"data":{"%s":[' % (cap, key, key)
            )
        else:
            head = b'{"data":{"%s":[' % key
        return b"".join([head, *pieces, b"]}}"])
