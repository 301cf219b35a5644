"""Checkpoints: a rolling checksum of the stored chain, written every N heights.

A checkpoint is a row of ``checkpoints`` written at each height ``k > 0`` that is a
multiple of ``checkpoint_every`` (default 10,000; 0 writes none), in the transaction
that commits ``k``. It covers the *segment* of heights after the previous checkpoint
(the highest stored checkpoint below ``k``; when there is none, every stored height
below ``k``) up to and including ``k``, and records the hash of block ``k``, the last
transaction of the segment, how many blocks and transactions it covers, and::

    checksum(k) = lowercase hex of sha256( UTF-8 of
        previous + "\\n"
        + for each stored height h of the segment, ascending:
              "<h>:<block hash>\\n"
              then for each transaction of h, by index i ascending:
                  "<h>:<i>:<transaction hash>\\n" )

where ``previous`` is the previous checkpoint's checksum (the empty string for the
first checkpoint), heights and indexes are written in decimal, and hashes exactly as
stored (base64, as tx-indexer serves them). Because each checksum folds in the one
before it, a checkpoint vouches for every stored block and transaction hash at or
below its height.

The write path computes it in SQL from the rows in the database, after the batch's
COPY and inside its transaction (see ``Statements.insert_checkpoint``), so a batch may
span several boundaries or end between two, and a one-block batch at the tip still
gets the whole segment. :func:`checkpoint_checksum` is the same definition in Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator


def checkpoint_checksum(
    previous: str | None,
    blocks: Iterable[tuple[int, str]],
    transactions: Iterable[tuple[int, int, str]] = (),
) -> str:
    """The checksum of a segment: ``blocks`` as (height, hash), ``transactions`` as
    (height, index, hash), in any order; ``previous`` is the previous checkpoint's
    checksum, or None (the empty string) for the first one."""
    lines: list[tuple[int, int, str]] = [
        (height, -1, f"{height}:{block_hash}\n") for height, block_hash in blocks
    ]
    lines.extend(
        (height, index, f"{height}:{index}:{tx_hash}\n")
        for height, index, tx_hash in transactions
    )
    lines.sort(key=lambda line: (line[0], line[1]))
    digest = hashlib.sha256()
    digest.update(((previous or "") + "\n").encode())
    for _, _, line in lines:
        digest.update(line.encode())
    return digest.hexdigest()


def boundaries(start: int, end: int, every: int) -> Iterator[int]:
    """The checkpoint heights in ``start..end``: the multiples of ``every`` above 0."""
    if every <= 0 or end < start:
        return
    first = max(start, 1)
    height = -(-first // every) * every  # the first multiple at or above ``first``
    while height <= end:
        yield height
        height += every
