"""The devnet as the quickstart uses it: a chain id per chain, the start-up line, and
``gnosync run --devnet`` stopping with one Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import asyncpg
import orjson
import pytest

from gnosync.devnet import Chain, ChainConfig, derived_chain_id
from gnosync.source import queries

GUARD = 120  # seconds a step may take before the test gives up: a hang, not a timing


def _send(sender: str, amount: str, timestamp: int) -> bytes:
    tx = {
        "msg": [{"@type": "/bank.MsgSend", "from_address": sender, "to_address": "g1dest", "amount": amount}],
        "fee": {"gas_wanted": "100000", "gas_fee": "1000ugnot"},
        "signatures": [],
        "memo": "",
    }
    return orjson.dumps({"tx": tx, "metadata": {"timestamp": str(timestamp)}}) + b"\n"


def test_each_chain_gets_its_own_derived_chain_id(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(_send("g1alice", "5ugnot", 100) + _send("g1bob", "7ugnot", 200))
    second.write_bytes(_send("g1carol", "9ugnot", 150))
    base = derived_chain_id(ChainConfig(genesis_txs=3))
    assert re.fullmatch(r"dev-[0-9a-f]{10}", base)
    # What a height holds is unchanged by how far the chain reaches or grows, or caching.
    assert derived_chain_id(ChainConfig(genesis_txs=3, blocks=50, block_time=1.0, answer_cache_mb=1)) == base
    others = [
        ChainConfig(genesis_txs=3, seed=2),
        ChainConfig(genesis_txs=4),
        ChainConfig(genesis_txs=3, hostile_txs=(5,)),
        ChainConfig(genesis_txs=3, txs_files=[first]),
        ChainConfig(genesis_txs=3, txs_files=[first, second]),
        ChainConfig(genesis_txs=3, txs_files=[first], blocks=2000),  # files spread wider
    ]
    ids = [derived_chain_id(config) for config in others]
    assert len(set(ids + [base])) == len(ids) + 1, ids
    # Files count by their bytes, not their names.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(first.read_bytes())
    assert derived_chain_id(ChainConfig(genesis_txs=3, txs_files=[copy])) == ids[3]


def _devnet_line(*args: str) -> str:
    process = subprocess.Popen(
        [sys.executable, "-m", "gnosync", "devnet", "--port", "0", "--genesis-txs", "2", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=GUARD) == 0, process.stderr.read() if process.stderr else ""
        return line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_devnets_of_different_chains_announce_different_ids_and_their_transactions(tmp_path: Path) -> None:
    txs = tmp_path / "sends.jsonl"
    txs.write_bytes(b"".join(_send(f"g1s{i}", f"{i}ugnot", 1000 + i) for i in range(5)))
    pattern = re.compile(
        r"gnosync devnet serving chain '(dev-[0-9a-f]{10})' heights 0\.\.(\d+), ([\d,]+) transactions"
        r"(?: \(([\d,]+) loaded from (\d+) transaction files?\))? at (http://\S+/graphql/query)$"
    )
    default, seeded, loaded = (
        pattern.fullmatch(_devnet_line(*args)) for args in
        (("--blocks", "30"), ("--blocks", "30", "--seed", "7"), ("--blocks", "30", "--txs", str(txs), "--txs", str(txs)))
    )
    assert default and seeded and loaded
    assert len({default[1], seeded[1], loaded[1]}) == 3
    assert loaded.group(4, 5) == ("5", "2")  # the second copy of each transaction is dropped
    # The count is the chain's, read independently of the server.
    chain = Chain(ChainConfig(blocks=30, genesis_txs=2, chain_id=loaded[1], txs_files=[txs, txs]))
    assert int(loaded[3].replace(",", "")) == chain.num_txs(0) + chain.total_txs(30)
    assert default[1] == derived_chain_id(ChainConfig(genesis_txs=2, genesis_files=_exports()))
    # The same chain served again, taller, keeps its id: the database takes it up again.
    assert pattern.fullmatch(_devnet_line("--blocks", "60"))[1] == default[1]
    assert _devnet_line("--blocks", "30", "--chain-id", "mine").startswith("gnosync devnet serving chain 'mine' ")


def _exports() -> list[Path]:
    from gnosync.devnet import gnoland1_exports

    return gnoland1_exports()


def test_devnet_help_says_txs_repeats_and_how_the_chain_id_is_chosen() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gnosync", "devnet", "--help"], capture_output=True, text=True, timeout=GUARD
    )
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    assert "repeat --txs for several files" in text
    assert "--chain-id TEXT Chain id [default: dev-<hash of --seed, --txs files" in text


def test_run_devnet_refuses_a_source_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gnosync", "run", "--devnet", "--source", "http://127.0.0.1:1/graphql/query"],
        capture_output=True, text=True, timeout=GUARD,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == "gnosync: error: --devnet serves its own test chain: give --devnet or --source, not both"


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


async def _stored_tip(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('indexer.app_state')"):
            return None
        return await conn.fetchval("SELECT last_block_h FROM indexer.app_state")
    finally:
        await conn.close()


def _latest_height(url: str) -> int:
    request = urllib.request.Request(url, data=orjson.dumps({"query": queries.LATEST_HEIGHT}))
    with urllib.request.urlopen(request, timeout=GUARD) as response:
        return orjson.loads(response.read())["data"]["latestBlockHeight"]


def test_run_devnet_syncs_to_the_tip_and_one_sigint_stops_both(db_dsn: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gnosync", "run", "--devnet", "--db", db_dsn, "--http", "off", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    assert process.stderr is not None
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    try:
        _wait(lambda: any("/graphql/query" in line for line in lines), "the devnet's line")
        banner = next(line for line in lines if "/graphql/query" in line)
        match = re.match(r"gnosync devnet serving chain '(dev-[0-9a-f]{10})' heights 0\.\.1000, .* at (\S+) ", banner)
        assert match, banner
        url = match[2]
        _wait(lambda: any('"following the tip' in line for line in lines), "the tip")
        # The devnet grows; the stored chain reaches a height the devnet served after the
        # catch-up, read from the devnet itself.
        target = _latest_height(url) + 1
        _wait(lambda: (asyncio.run(_stored_tip(db_dsn)) or 0) >= target, f"height {target} stored")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=GUARD) == 0, "".join(lines[-5:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    host, port = url.split("/")[2].split(":")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=5):
        pass
    assert any('"sync stopped"' in line for line in lines)


def _cli_chain(**options: object) -> ChainConfig:
    """The chain ``gnosync devnet`` serves with these options and no --chain-id."""
    config = ChainConfig(genesis_txs=2, **options)
    config.chain_id = derived_chain_id(config)
    return config


def _sync(url: str, dsn: str, start: int, end: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gnosync", "sync", "--from", str(start), "--to", str(end), "--source", url, "--db", dsn],
        capture_output=True, text=True, timeout=GUARD,
    )


def test_a_database_continues_the_same_devnet_chain_served_taller_and_names_another(db_dsn: str) -> None:
    from gnosync.devnet import running_devnet

    first = _cli_chain(blocks=30)
    with running_devnet(first) as url:
        assert _sync(url, db_dsn, 0, 30).returncode == 0
    with running_devnet(_cli_chain(blocks=60, block_time=5.0)) as url:
        result = _sync(url, db_dsn, 31, 60)
        assert result.returncode == 0, result.stderr
    other = _cli_chain(blocks=80, seed=2)
    with running_devnet(other) as url:
        result = _sync(url, db_dsn, 61, 70)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"gnosync: error: the source serves chain '{other.chain_id}' but the database holds chain"
        f" '{first.chain_id}'"
    ), line
