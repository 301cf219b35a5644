"""Every GraphQL document gnosync sends, and the filters that bound them.

tx-indexer's ``FilterInt`` has only exclusive ``gt``/``lt`` and casts bounds to unsigned
integers, so ``gt: -1`` matches nothing. Its resolvers also derive the store scan from
the filter's minimum and maximum bound; with a single bound both are the same value and
the scan covers one height, so a one-sided filter (``{lt: b}`` or ``{gt: a}`` alone)
can come back empty. gnosync therefore only ever sends two-sided ranges
``{gt: a-1, lt: b+1}`` or ``{eq: h}``; height 0, which no ``gt`` can include, is always
asked for on its own with ``eq: 0``. Tests validate each document here against
tx-indexer's published schema.
"""

from __future__ import annotations

from typing import Any

LATEST_HEIGHT = "query LatestHeight { latestBlockHeight }"

# Of a block's own transaction list only the hashes are asked for: they are all that
# validation uses, and the transactions' content comes once, from getTransactions. A
# genesis block lists hundreds of package deployments; their bodies would otherwise
# cross the network twice, in an answer no range split can make smaller.
BLOCK_FIELDS = """
    hash height version chain_id time num_txs total_txs app_version
    last_block_hash last_commit_hash validators_hash next_validators_hash
    consensus_hash app_hash last_results_hash proposer_address_raw
    txs { hash }
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

# Only heights and hashes: what comparing stored blocks with the source needs.
BLOCK_HASHES = (
    "query BlockHashes($where: FilterBlock!) {"
    " getBlocks(where: $where, order: {height: ASC}) { height hash } }"
)

ALL_DOCUMENTS = {
    "LatestHeight": LATEST_HEIGHT,
    "Blocks": BLOCKS,
    "BlockHeights": BLOCK_HEIGHTS,
    "BlockHashes": BLOCK_HASHES,
    "Transactions": TRANSACTIONS,
}


# The largest index a paging filter names as its upper bound (tx-indexer casts indexes
# to uint32; no block holds anywhere near this many transactions).
MAX_INDEX = 2**31 - 1


def height_bounds(start: int, end: int) -> dict[str, int]:
    """The ``FilterInt`` selecting heights ``start..end`` inclusive.

    A range that starts at 0 and holds more than one height cannot be expressed safely
    (see the module docstring): split height 0 off first.
    """
    if not 0 <= start <= end:
        raise ValueError(f"invalid height range {start}..{end}")
    if start == end:
        return {"eq": start}
    if start == 0:
        raise ValueError("a range from height 0 must ask for height 0 on its own")
    return {"gt": start - 1, "lt": end + 1}


def blocks_where(start: int, end: int) -> dict[str, Any]:
    return {"height": height_bounds(start, end)}


def transactions_where(
    start: int, end: int, *, after_index: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Transactions of heights ``start..end``; with ``after_index`` or ``limit``, one
    height's indexes ``after_index+1 ..`` (at most ``limit`` of them).

    Paging by index is how a single height with more transactions than the server's
    cap, or with an answer too large to build in time, is read completely. The first
    page has no lower bound (``gt: -1`` would be cast to a huge unsigned number and
    match nothing); tx-indexer's scan then starts at index 0.
    """
    where: dict[str, Any] = {"block_height": height_bounds(start, end)}
    if after_index is None and limit is None:
        return where
    if start != end:
        raise ValueError("paging by index needs a single height")
    if after_index is None or after_index < 0:
        where["index"] = {"lt": limit if limit is not None else MAX_INDEX}
    else:
        upper = MAX_INDEX if limit is None else min(MAX_INDEX, after_index + limit + 1)
        where["index"] = {"gt": after_index, "lt": upper}
    return where
