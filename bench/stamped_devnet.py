"""A growing devnet that says when it produced each block, by its own clock.

    .venv/bin/python bench/stamped_devnet.py --port 0 --blocks 1000 --block-time 0.1

Serves the same chain and server as ``gnosync devnet`` (``gnosync.devnet``) and prints,
after the usual "serving ... at URL" line, one line per block it appends::

    appended <height> <unix time, seconds>

stamped by a chain listener, which the chain calls right after the block is stored and
before it is served or pushed to anyone. ``bench/tip.py`` reads these lines, so its lag
starts when the block exists, not when some subscriber hears of it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnosync.devnet import Chain, ChainConfig, DevnetServer  # noqa: E402


def stamp(height: int) -> None:
    # Called in the devnet's event loop thread; one short write per block.
    sys.stdout.write(f"appended {height} {time.time():.6f}\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    chain = Chain(ChainConfig(blocks=args.blocks, seed=args.seed))
    chain.add_listener(stamp)
    server = DevnetServer(chain, host="127.0.0.1", port=args.port, block_time=args.block_time)
    await server.start()
    print(f"stamped devnet serving heights {chain.lowest}..{chain.tip} at {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=1000, help="initial tip")
    parser.add_argument("--block-time", type=float, required=True, help="seconds between blocks")
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
