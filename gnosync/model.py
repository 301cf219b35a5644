"""Blocks and transactions as tx-indexer serves them.

The structs mirror the selection sets in ``gnosync.source.queries`` field for field, so
decoding a response is a single typed ``msgspec`` pass that rejects malformed data.
``messages`` and ``response`` stay raw JSON: gnosync stores them as served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import msgspec


class Coin(msgspec.Struct, frozen=True):
    amount: int
    denom: str


class BlockTransaction(msgspec.Struct, frozen=True):
    hash: str


class Block(msgspec.Struct, frozen=True):
    hash: str
    height: int
    version: str
    chain_id: str
    time: str
    num_txs: int
    total_txs: int
    app_version: str
    last_block_hash: str
    last_commit_hash: str
    validators_hash: str
    next_validators_hash: str
    consensus_hash: str
    app_hash: str
    last_results_hash: str
    proposer_address_raw: str
    # The schema allows null entries: tx-indexer drops transactions it cannot decode.
    txs: list[BlockTransaction | None]


class Transaction(msgspec.Struct, frozen=True):
    index: int
    hash: str
    success: bool
    block_height: int
    gas_wanted: int
    gas_used: int
    gas_fee: Coin | None
    content_raw: str
    memo: str
    messages: msgspec.Raw
    response: msgspec.Raw
    # Not served: set by the client when it had to replace bytes that are not UTF-8
    # in this transaction's strings (tx-indexer writes a string's bytes as they are).
    repaired: bool = False


@dataclass(frozen=True, slots=True)
class BlockRef:
    """What validation needs to know about the block just before a batch."""

    height: int
    hash: str
    chain_id: str
    total_txs: int


@dataclass(frozen=True, slots=True)
class Batch:
    """The blocks ``start..end`` (inclusive) and their transactions, in height order."""

    start: int
    end: int
    blocks: list[Block]
    transactions: list[Transaction]

    def prefix(self, end: int) -> Batch:
        """The batch cut after height ``end`` (``start <= end``)."""
        if not self.start <= end <= self.end:
            raise ValueError(f"cannot cut batch {self.start}..{self.end} at {end}")
        blocks = [block for block in self.blocks if block.height <= end]
        transactions = [tx for tx in self.transactions if tx.block_height <= end]
        return Batch(self.start, end, blocks, transactions)

    @property
    def last_tx_hash(self) -> str | None:
        return self.transactions[-1].hash if self.transactions else None


def parse_time(value: str) -> tuple[datetime, int]:
    """Split an RFC 3339 time into a microsecond ``datetime`` and the nanoseconds below it.

    PostgreSQL's timestamptz keeps microseconds; tx-indexer serves nanoseconds. Storing
    the remainder (0..999) keeps the time lossless. Raises ``ValueError`` on bad input.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    nanos_below_micro = 0
    dot = text.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        digits = text[dot + 1 : end]
        if not digits:
            raise ValueError(f"invalid time {value!r}")
        padded = digits.ljust(9, "0")
        if len(padded) > 9:
            raise ValueError(f"invalid time {value!r}: more than nanosecond precision")
        nanos_below_micro = int(padded[6:9])
        text = text[:dot] + "." + padded[:6] + text[end:]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"invalid time {value!r}: no time zone")
    return parsed.astimezone(timezone.utc), nanos_below_micro


def format_time(moment: datetime, nanos_below_micro: int = 0) -> str:
    """The inverse of :func:`parse_time`, in tx-indexer's RFC 3339 form (UTC, ``Z``)."""
    moment = moment.astimezone(timezone.utc)
    nanos = moment.microsecond * 1000 + nanos_below_micro
    base = moment.replace(microsecond=0, tzinfo=None).isoformat()
    if nanos:
        base += "." + f"{nanos:09d}".rstrip("0")
    return base + "Z"
