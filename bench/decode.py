"""Decoder cost per transaction: ``split_files`` and ``derive`` on stored-shaped JSON.

    .venv/bin/python bench/decode.py [--blocks 2000] [--repeat 10]

Two sets: the devnet's dense profile (generated sends, calls with events, a few package
deployments), and the real gnoland1 transactions (the exports placed on a devnet chain,
which makes up their results). Each transaction is turned into what the store holds:
the served ``messages``/``response`` as JSON, sanitized (``clean_json``), file bodies
split out (``split_files``). Prints the best of ``--repeat`` runs, in µs per transaction,
for every transaction and for the ordinary ones (a send or a call, no package files).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gnosync.decode import StoredTx, derive, split_files
from gnosync.devnet import Chain, ChainConfig, gnoland1_exports
from gnosync.store.sanitize import clean_json

Served = tuple[int, int, bool, str, str]  # height, index, success, messages, response


def served(chain: Chain) -> list[Served]:
    out = []
    for height in chain.tx_heights(0, chain.tip):
        for tx in chain.transactions(height):
            messages, _ = clean_json(orjson.dumps(tx["messages"]))
            response, _ = clean_json(orjson.dumps(tx["response"]))
            out.append((height, tx["index"], tx["success"], messages, response))
    return out


def stored(txs: Iterable[Served]) -> list[StoredTx]:
    return [StoredTx(h, i, ok, split_files(h, i, m)[0], r) for h, i, ok, m, r in txs]


def best(repeat: int, work: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, txs: list[Served], repeat: int) -> None:
    ordinary = [t for t in txs if '"files"' not in t[3]]
    rows = stored(txs)
    ordinary_rows = stored(ordinary)
    derive(rows)  # warm the address caches, as a running sync has them

    def split_all() -> None:
        for h, i, _, m, _ in txs:
            split_files(h, i, m)

    split = best(repeat, split_all) / len(txs) * 1e6
    every = best(repeat, lambda: derive(rows)) / len(rows) * 1e6
    plain = best(repeat, lambda: derive(ordinary_rows)) / max(1, len(ordinary_rows)) * 1e6
    print(f"{name}: {len(txs):,} txs ({len(ordinary):,} ordinary)")
    print(f"  split_files      {split:8.2f} µs/tx (all)")
    print(f"  derive           {every:8.2f} µs/tx (all)")
    print(f"  derive           {plain:8.2f} µs/tx (ordinary: a send or a call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000, help="dense devnet blocks")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    report("devnet dense", served(Chain(ChainConfig(profile="dense", blocks=args.blocks))),
           args.repeat)
    exports = gnoland1_exports()
    if not exports:
        print("gnoland1: exports not found (set GNOSYNC_GNOLAND1_EXPORTS)")
        return
    chain = Chain(ChainConfig(blocks=10_000, txs_files=exports, tx_rate=0.0))
    report("gnoland1", served(chain), args.repeat)


if __name__ == "__main__":
    main()
