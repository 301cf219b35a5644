"""Blocks and transactions as the row tuples gnosync COPYs into PostgreSQL.

Pure functions: the tuples follow ``sql.BLOCK_COLUMNS`` and ``sql.TRANSACTION_COLUMNS``.
Times are split by :func:`gnosync.model.parse_time` into a microsecond
``datetime`` and the nanoseconds below it. Raw JSON becomes ``str``, which asyncpg's
binary jsonb codec takes as is.

What PostgreSQL cannot hold (NUL, bytes that are not UTF-8, lone surrogates; see
:mod:`gnosync.store.sanitize`) is replaced by U+FFFD in a transaction's ``memo``, gas fee
denomination, ``messages`` and ``response``, and the row's ``sanitized`` column says so;
``content_raw`` keeps the transaction's exact bytes either way.
"""

from __future__ import annotations

from typing import Any

# The module, not its names: gnosync.decode imports gnosync.store.sql, and either
# package may be imported first.
from gnosync import decode
from gnosync.errors import BatchInvalid
from gnosync.model import Block, Transaction, parse_time
from gnosync.store.sql import TRANSACTION_COLUMNS
from gnosync.store.sanitize import clean_json, clean_text

_MESSAGES = TRANSACTION_COLUMNS.index("messages")
_RESPONSE = TRANSACTION_COLUMNS.index("response")
_SUCCESS = TRANSACTION_COLUMNS.index("success")


def block_row(block: Block) -> tuple[Any, ...]:
    """``block`` as a row of ``blocks``.

    Raises ``BatchInvalid`` on a malformed time, or a chain id PostgreSQL cannot store.
    """
    try:
        moment, nanos = parse_time(block.time)
    except ValueError as exc:
        raise BatchInvalid(block.height, "time", str(exc)) from None
    version, app_version = block.version, block.app_version
    # A block's strings are no one's input but the chain's and tx-indexer's. The hashes,
    # the time and the proposer are tx-indexer's base64, RFC 3339 and bech32 of bytes it
    # holds: ASCII always (a server sending otherwise gets PostgreSQL's one-line refusal,
    # and the time is checked above). version and app_version are the node's and
    # chain_id the genesis': strings, made storable like a memo, so that an odd chain is
    # stored rather than stopping gnosync. Except chain_id: it is recorded in app_state
    # and compared with the source's on every batch and start, so it must be stored
    # exactly, and one PostgreSQL cannot hold is refused, by name.
    chain_set = block.chain_id + version + app_version
    if not chain_set.isascii() or "\x00" in chain_set:
        if clean_text(block.chain_id)[1]:
            raise BatchInvalid(
                block.height,
                "chain_id",
                f"the chain id {block.chain_id!r} holds a character PostgreSQL cannot store"
                " (NUL or a lone surrogate); gnosync cannot keep a copy of this chain",
            )
        version, app_version = clean_text(version)[0], clean_text(app_version)[0]
    return (
        block.height,
        block.hash,
        block.chain_id,
        moment,
        nanos,
        block.num_txs,
        block.total_txs,
        version,
        app_version,
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
    """``tx`` as a row of ``transactions``, ``sanitized`` last.

    ``hash`` and ``content_raw`` are tx-indexer's base64 and hex of the transaction's
    bytes, ASCII whatever the transaction holds, and are stored as served.
    """
    fee = tx.gas_fee
    memo, memo_changed = clean_text(tx.memo)
    messages, messages_changed = clean_json(bytes(tx.messages))
    response, response_changed = clean_json(bytes(tx.response))
    denom, denom_changed = (None, False) if fee is None else clean_text(fee.denom)
    return (
        tx.block_height,
        tx.index,
        tx.hash,
        tx.success,
        tx.gas_wanted,
        tx.gas_used,
        None if fee is None else fee.amount,
        denom,
        memo,
        tx.content_raw,
        messages,
        response,
        tx.repaired or memo_changed or messages_changed or response_changed or denom_changed,
    )


def stored_transaction_row(tx: Transaction) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """``tx`` as gnosync stores it: its ``transactions`` row, whose ``messages`` keep
    each package file's name and size but not its body, and the ``package_files`` rows
    holding those bodies (see :func:`gnosync.decode.split_files`)."""
    row = transaction_row(tx)
    messages, files = decode.split_files(row[0], row[1], row[_MESSAGES])
    if messages is not row[_MESSAGES]:
        row = (*row[:_MESSAGES], messages, *row[_MESSAGES + 1:])
    return row, files


def stored_tx(row: tuple[Any, ...]) -> decode.StoredTx:
    """What the decoder reads of a ``transactions`` row (``stored_transaction_row``'s)."""
    return decode.StoredTx(
        block_height=row[0],
        tx_index=row[1],
        success=row[_SUCCESS],
        messages=row[_MESSAGES],
        response=row[_RESPONSE],
    )
