"""Blocks and transactions as the row tuples gnosync COPYs into PostgreSQL.

Pure functions: the tuples follow ``sql.BLOCK_COLUMNS`` and ``sql.TRANSACTION_COLUMNS``.
Times are split by :func:`gnosync.model.parse_time` into a microsecond
``datetime`` and the nanoseconds below it. Raw JSON becomes ``str``, which asyncpg's
binary jsonb codec takes as is.
"""

from __future__ import annotations

from typing import Any

from gnosync.model import Block, Transaction, parse_time


def block_row(block: Block) -> tuple[Any, ...]:
    """``block`` as a row of ``blocks``. Raises ``ValueError`` on a malformed time."""
    try:
        moment, nanos = parse_time(block.time)
    except ValueError as exc:
        raise ValueError(f"block {block.height}: {exc}") from None
    return (
        block.height,
        block.hash,
        block.chain_id,
        moment,
        nanos,
        block.num_txs,
        block.total_txs,
        block.version,
        block.app_version,
        block.last_block_hash,
        block.last_commit_hash,
        block.validators_hash,
        block.next_validators_hash,
        block.consensus_hash,
        block.app_hash,
        block.last_results_hash,
        block.proposer_address_raw,
    )


def transaction_row(tx: Transaction) -> tuple[Any, ...]:
    """``tx`` as a row of ``transactions``."""
    fee = tx.gas_fee
    return (
        tx.block_height,
        tx.index,
        tx.hash,
        tx.success,
        tx.gas_wanted,
        tx.gas_used,
        None if fee is None else fee.amount,
        None if fee is None else fee.denom,
        tx.memo,
        tx.content_raw,
        bytes(tx.messages).decode(),
        bytes(tx.response).decode(),
    )
