"""Small, valid chain segments built from the model structs, for the pure tests."""

from __future__ import annotations

import base64
import hashlib

import msgspec

from gnosync.model import Batch, Block, BlockRef, BlockTransaction, Coin, Transaction


def digest(*parts: object) -> str:
    return base64.b64encode(hashlib.sha256("|".join(map(str, parts)).encode()).digest()).decode()


def make_tx(height: int, index: int) -> Transaction:
    return Transaction(
        index=index,
        hash=digest("tx", height, index),
        success=True,
        block_height=height,
        gas_wanted=100_000,
        gas_used=50_000,
        gas_fee=Coin(amount=1_000_000, denom="ugnot"),
        content_raw=f"Tx{{{height:x}{index:x}}}",
        memo="",
        messages=msgspec.Raw(b'[{"typeUrl":"send","route":"bank","value":{"__typename":"BankMsgSend"}}]'),
        response=msgspec.Raw(b'{"log":"","info":"","error":"","data":"","events":[]}'),
    )


def make_chain(start: int, end: int, tx_counts: dict[int, int] | None = None,
               previous: BlockRef | None = None, chain_id: str = "dev") -> tuple[Batch, BlockRef]:
    """Blocks ``start..end`` linked to ``previous``; returns the batch and its last ref."""
    tx_counts = tx_counts or {}
    prev_hash = previous.hash if previous else ""
    total = previous.total_txs if previous else 0
    blocks, txs = [], []
    for height in range(start, end + 1):
        count = tx_counts.get(height, 0)
        block_txs = [make_tx(height, i) for i in range(count)]
        total = count if height <= 1 else total + count
        block = Block(
            hash="" if height == 0 else digest("block", chain_id, height),
            height=height, version="v1", chain_id=chain_id,
            time=f"2026-03-16T09:{height // 60 % 60:02d}:{height % 60:02d}.5Z",
            num_txs=count, total_txs=total, app_version="1", last_block_hash=prev_hash,
            last_commit_hash="c", validators_hash="v", next_validators_hash="v",
            consensus_hash="k", app_hash="a", last_results_hash="r", proposer_address_raw="g1x",
            txs=[BlockTransaction(hash=t.hash) for t in block_txs],
        )
        blocks.append(block)
        txs.extend(block_txs)
        prev_hash = block.hash
    last = blocks[-1]
    return Batch(start, end, blocks, txs), BlockRef(last.height, last.hash, chain_id, last.total_txs)
