"""A dense chain made of the real gnoland1 transactions, for memory benchmarks.

The devnet places the transactions of a ``--txs`` file over heights ``1..--blocks`` in
proportion to their timestamps (``gnosync.devnet.chain``): the first line lands on
height 1, the last on the tip, and a line stamped ``h - 1`` on height ``h`` when the
stamps run from 0 to ``tip - 1``. :func:`write_txs_file` uses that to lay out

* a sparse lead-in, heights ``1..lead_in``: one real transaction every ``sparse_every``
  heights (about gnoland1's own density), so gnosync's ranges grow to their largest;
* a dense stretch, heights ``lead_in + 1..lead_in + dense_blocks``: ``per_block`` real
  transactions on every block, the gnoland1 exports in their own order over and over
  (bank sends, calls, ``run`` scripts and package deployments of up to 550 KB as they
  come). A chain never includes one transaction twice, so every copy after the first
  gets a signature of its own (and so a hash of its own); everything else is as
  exported.

Serve it with ``gnosync devnet --txs FILE --blocks <lead_in + dense_blocks>``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from gnosync.devnet import gnoland1_exports


@dataclass(frozen=True)
class DenseLayout:
    """Where the transactions go; ``tip`` is the chain's height."""

    lead_in: int = 100_000
    dense_blocks: int = 3_000
    per_block: int = 20
    sparse_every: int = 1_000

    @property
    def tip(self) -> int:
        return self.lead_in + self.dense_blocks

    @property
    def dense_txs(self) -> int:
        return self.dense_blocks * self.per_block


def exported_txs() -> list[dict]:
    """The amino transactions of the gnoland1 exports the devnet finds
    (:func:`gnosync.devnet.gnoland1_exports`), in timestamp order."""
    paths = gnoland1_exports()
    if not paths:
        raise SystemExit(
            "gnoland1 exports (*.jsonl) not found: set GNOSYNC_GNOLAND1_EXPORTS to their directory"
        )
    records = []
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    record = orjson.loads(line)
                    records.append((int(record["metadata"]["timestamp"]), len(records), record["tx"]))
    records.sort(key=lambda r: (r[0], r[1]))
    return [tx for _, _, tx in records]


def _resigned(tx: dict, copy: int, number: int) -> dict:
    """``tx`` with its signatures replaced by unique ones of the same size (64 bytes)."""
    if copy == 0:
        return tx
    seed = f"gnoland1-dense\x00{copy}\x00{number}".encode()
    signatures = [
        {**sig, "signature": base64.b64encode(hashlib.sha512(seed + bytes([i])).digest()).decode()}
        for i, sig in enumerate(tx.get("signatures") or [{}])
    ]
    return {**tx, "signatures": signatures}


def _placed(layout: DenseLayout, txs: list[dict]) -> Iterator[tuple[int, dict]]:
    """(height, transaction) of every transaction the layout places, ascending."""
    supply = (
        _resigned(tx, copy, number)
        for copy in itertools.count()
        for number, tx in enumerate(txs)
    )
    for height in range(1, layout.lead_in + 1, layout.sparse_every):
        yield height, next(supply)
    for height in range(layout.lead_in + 1, layout.tip + 1):
        for _ in range(layout.per_block):
            yield height, next(supply)


def write_txs_file(path: Path, layout: DenseLayout) -> dict[str, int]:
    """Write the layout's ``--txs`` file; return what it holds (transactions, bytes,
    package deployments)."""
    if layout.lead_in < 1 or layout.dense_blocks < 1 or layout.per_block < 1:
        raise ValueError("lead_in, dense_blocks and per_block must be at least 1")
    txs = exported_txs()
    written = size = packages = 0
    with open(path, "wb") as out:
        for height, tx in _placed(layout, txs):
            # Stamp h - 1 puts it on height h (the first on 1, the last on the tip).
            line = orjson.dumps({"tx": tx, "metadata": {"timestamp": str(height - 1)}}) + b"\n"
            out.write(line)
            written += 1
            size += len(line)
            packages += sum(1 for m in tx["msg"] if m.get("@type") == "/vm.m_addpkg")
    return {"transactions": written, "bytes": size, "package_deployments": packages}
