"""Validation of a fetched batch before it may be committed. Pure functions, no I/O.

A batch passes only if it is exactly the chain segment ``start..end``: every height once,
in order, each block linked by hash to the one before it (the first one to the stored
block below the batch), each block carrying exactly the transactions its header counts,
all of one chain. The first failure raises :class:`BatchInvalid` naming the height and
the check, or :class:`ChainMismatch` when the source serves another chain altogether.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

from gnosync.errors import BatchInvalid, ChainMismatch
from gnosync.model import Batch, Block, BlockRef, Transaction

# tx-indexer stores the genesis state's transactions as a synthetic block 0 with an empty
# hash (fetch/fetch.go getGenesisBlock); its num_txs and Block.txs count and list them
# like any block's. The real chain starts counting total_txs after genesis, at block 1.
GENESIS_HEIGHT = 0
FIRST_COUNTED_HEIGHT = 2


def validate_batch(batch: Batch, previous: BlockRef | None, chain_id: str | None) -> None:
    """Raise unless ``batch`` is complete and consistent; name the lowest bad height.

    ``previous`` is the stored block at ``batch.start - 1`` (None when nothing is stored
    below the batch); ``chain_id`` is the chain recorded at the first sync (None before).
    """
    check_heights(batch.start, batch.end, batch.blocks)
    check_chain_id(batch.blocks, chain_id or (previous.chain_id if previous else None))
    by_height = group_transactions(batch.start, batch.end, batch.transactions)
    prev = previous
    for block in batch.blocks:
        check_link(block, prev)
        check_block_transactions(block, by_height.pop(block.height, []))
        prev = BlockRef(block.height, block.hash, block.chain_id, block.total_txs)
    for height in sorted(by_height):
        raise BatchInvalid(height, "tx_height", "transactions served for a block not in the batch")


def check_heights(start: int, end: int, blocks: list[Block]) -> None:
    expected = start
    for block in blocks:
        if block.height != expected or block.height > end:
            if block.height < expected:
                raise BatchInvalid(
                    block.height,
                    "heights",
                    f"served twice or out of order in range {start}..{end}",
                )
            if expected <= end:
                raise BatchInvalid(expected, "heights", f"missing from range {start}..{end}")
            raise BatchInvalid(block.height, "heights", f"outside range {start}..{end}")
        expected += 1
    if expected <= end:
        raise BatchInvalid(expected, "heights", f"missing from range {start}..{end}")


def check_chain_id(blocks: list[Block], chain_id: str | None) -> None:
    if not blocks:
        return
    expected = chain_id if chain_id is not None else blocks[0].chain_id
    for block in blocks:
        violation = chain_id_violation(block.height, block.chain_id, expected)
        if violation is None:
            continue
        if chain_id is not None and all(b.chain_id == block.chain_id for b in blocks):
            raise ChainMismatch(
                f"the source serves chain '{block.chain_id}' but the database holds chain"
                f" '{chain_id}'; point gnosync at a source of '{chain_id}', or sync the new"
                " chain into another database or --db-schema"
            )
        raise violation.error()


class PreviousBlock(Protocol):
    """What a block's link is checked against: the block just below it."""

    height: int
    hash: str
    total_txs: int


class LinkedBlock(PreviousBlock, Protocol):
    """A block as the link rules see it: a fetched :class:`Block`, or a stored row."""

    last_block_hash: str
    num_txs: int


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule a block breaks: its height, the check's name and what is wrong."""

    height: int
    check: str
    detail: str

    def error(self) -> BatchInvalid:
        return BatchInvalid(self.height, self.check, self.detail)


def link_violations(block: LinkedBlock, previous: PreviousBlock | None) -> list[Violation]:
    """Every link rule ``block`` breaks against the block just below it, in check order.

    The one home of the link rules: the sync's validation, ``gnosync verify`` and
    ``gnosync repair`` all decide with it. Genesis (height 0) links to nothing, and so
    does the chain's first real block (height 1: its previous block id is empty, which
    is also genesis's hash). Any other block is checked against ``previous`` when that
    is the block at ``block.height - 1``; the caller supplies it from the database or
    the source.
    """
    found: list[Violation] = []
    if block.height != GENESIS_HEIGHT and not block.hash:
        found.append(Violation(block.height, "hash", "the block has an empty hash"))
    if block.height < FIRST_COUNTED_HEIGHT and block.last_block_hash != "":
        found.append(Violation(
            block.height,
            "last_block_hash",
            f"block {block.height} links to {block.last_block_hash!r}; the chain's first"
            " blocks link to nothing",
        ))
    if previous is None or previous.height != block.height - 1:
        return found
    if block.last_block_hash != previous.hash:
        found.append(Violation(
            block.height,
            "last_block_hash",
            f"links to {block.last_block_hash!r} but block {previous.height}"
            f" has hash {previous.hash!r}",
        ))
    if block.height >= FIRST_COUNTED_HEIGHT and block.total_txs != previous.total_txs + block.num_txs:
        found.append(Violation(
            block.height,
            "total_txs",
            f"total_txs {block.total_txs} is not block {previous.height}'s"
            f" {previous.total_txs} plus num_txs {block.num_txs}",
        ))
    return found


def check_link(block: LinkedBlock, previous: PreviousBlock | None) -> None:
    """Raise :class:`BatchInvalid` for the first rule of :func:`link_violations` that
    ``block`` breaks."""
    violations = link_violations(block, previous)
    if violations:
        raise violations[0].error()


def chain_id_violation(height: int, chain_id: str, expected: str) -> Violation | None:
    """The block at ``height`` against the chain it must belong to."""
    if chain_id == expected:
        return None
    return Violation(height, "chain_id", f"chain id {chain_id!r} differs from the chain's {expected!r}")


def group_transactions(
    start: int, end: int, transactions: list[Transaction]
) -> dict[int, list[Transaction]]:
    """Transactions by height; each must lie in ``start..end``.

    A hash may be served twice: byte-identical transactions (unsigned genesis ones) share
    it. A transaction served twice at one height breaks that height's index order, which
    :func:`check_block_transactions` names.
    """
    by_height: dict[int, list[Transaction]] = defaultdict(list)
    for tx in transactions:
        if not start <= tx.block_height <= end:
            raise BatchInvalid(
                tx.block_height, "tx_height", f"transaction {tx.hash} is outside {start}..{end}"
            )
        by_height[tx.block_height].append(tx)
    return by_height


def check_block_transactions(block: Block, txs: list[Transaction]) -> None:
    """``txs`` are exactly the transactions ``block`` counts, in index order, and include
    the ones it lists, in the same order.

    tx-indexer drops from ``Block.txs`` every transaction it cannot amino-decode
    (serve/graph/model/block.go, ``getTxs``: ``NewBlockTransaction`` returns nil and is
    skipped) while ``getTransactions`` serves it all the same, and ``num_txs`` counts it.
    So the listed hashes may be an ordered subset of the served ones, never more: the
    count must be ``num_txs`` and every listed hash must be served, in order. (tx-indexer
    v0.5.0 stored genesis transactions amino-JSON-encoded, fixed in v0.5.1 by "fix:
    genesis transaction marshaling", so its genesis block listed none of them: the same
    rule covers it.)
    """
    if block.num_txs == 0 and not txs and not block.txs:
        return  # the common case on real chains: an empty block
    if len(txs) != block.num_txs:
        raise BatchInvalid(
            block.height,
            "num_txs",
            f"the block counts {block.num_txs} transactions, the source served {len(txs)}",
        )
    for position, tx in enumerate(txs):
        if tx.index != position:
            raise BatchInvalid(
                block.height,
                "tx_index",
                f"transaction {tx.hash} has index {tx.index}, expected {position}",
            )
    served = [tx.hash for tx in txs]
    position = 0  # the served transactions before it are matched or dropped
    for listed, entry in enumerate(block.txs):
        wanted = entry.hash if entry is not None else None
        while position < len(served) and served[position] != wanted:
            position += 1
        if position == len(served):
            if wanted not in served:
                problem = "the source did not serve it"
            else:
                problem = "the source served it earlier, or fewer times, than listed"
            raise BatchInvalid(
                block.height,
                "tx_hashes",
                f"the block lists transaction {wanted} (entry {listed} of {len(block.txs)}) but"
                f" {problem} (its {len(served)} transactions must include the listed ones in order)",
            )
        position += 1
