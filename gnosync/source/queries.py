"""Every GraphQL document gnosync sends, and the filters that bound them.

tx-indexer's ``FilterInt`` has only exclusive ``gt``/``lt`` and casts bounds to unsigned
integers, so ``gt: -1`` matches nothing. An inclusive range ``a..b`` is therefore
``{gt: a-1, lt: b+1}``, and a range that starts at height 0 has no lower bound at all.
Tests validate each document here against tx-indexer's published schema.
"""

from __future__ import annotations

from typing import Any

LATEST_HEIGHT = "query LatestHeight { latestBlockHeight }"

BLOCK_FIELDS = """
    hash height version chain_id time num_txs total_txs app_version
    last_block_hash last_commit_hash validators_hash next_validators_hash
    consensus_hash app_hash last_results_hash proposer_address_raw
    txs { hash fee { gas_wanted gas_fee { amount denom } } memo content_raw }
"""

BLOCKS = (
    "query Blocks($where: FilterBlock!) {"
    " getBlocks(where: $where, order: {height: ASC}) {" + BLOCK_FIELDS + "} }"
)

# Only heights: used to find the lowest height a source serves, cheaply.
BLOCK_HEIGHTS = (
    "query BlockHeights($where: FilterBlock!) {"
    " getBlocks(where: $where, order: {height: ASC}) { height } }"
)

TRANSACTION_FIELDS = """
    index hash success block_height gas_wanted gas_used
    gas_fee { amount denom }
    content_raw memo
    messages {
      typeUrl route
      value {
        __typename
        ... on BankMsgSend { from_address to_address amount }
        ... on MsgCall { caller send pkg_path func args max_deposit }
        ... on MsgAddPackage {
          creator send max_deposit
          package { name path files { name body } }
        }
        ... on MsgRun {
          caller send max_deposit
          package { name path files { name body } }
        }
        ... on UnexpectedMessage { raw }
      }
    }
    response {
      log info error data
      events {
        __typename
        ... on GnoEvent { type pkg_path attrs { key value } }
        ... on StorageDepositEvent { type bytes_delta fee_delta { amount denom } pkg_path }
        ... on StorageUnlockEvent { type bytes_delta fee_refund { amount denom } pkg_path }
        ... on UnknownEvent { value }
      }
    }
"""

TRANSACTIONS = (
    "query Transactions($where: FilterTransaction!) {"
    " getTransactions(where: $where, order: {heightAndIndex: ASC}) {"
    + TRANSACTION_FIELDS
    + "} }"
)

ALL_DOCUMENTS = {
    "LatestHeight": LATEST_HEIGHT,
    "Blocks": BLOCKS,
    "BlockHeights": BLOCK_HEIGHTS,
    "Transactions": TRANSACTIONS,
}


def height_bounds(start: int, end: int | None) -> dict[str, int]:
    """The ``FilterInt`` selecting heights ``start..end`` inclusive (``end=None``: open)."""
    if start < 0:
        raise ValueError(f"heights start at 0, got {start}")
    bounds: dict[str, int] = {}
    if start > 0:
        bounds["gt"] = start - 1
    if end is not None:
        if end < start:
            raise ValueError(f"empty range {start}..{end}")
        bounds["lt"] = end + 1
    return bounds


def blocks_where(start: int, end: int | None) -> dict[str, Any]:
    return {"height": height_bounds(start, end)}


def transactions_where(
    start: int, end: int, *, after_index: int | None = None
) -> dict[str, Any]:
    """Transactions of heights ``start..end``; with ``after_index``, only one height's tail.

    Paging by index is how a single height with more transactions than the server's cap
    is read completely.
    """
    where: dict[str, Any] = {"block_height": height_bounds(start, end)}
    if after_index is not None:
        if start != end:
            raise ValueError("paging by index needs a single height")
        where["index"] = {"gt": after_index}
    return where
