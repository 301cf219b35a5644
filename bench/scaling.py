"""Scaling: the same chain stored in plain and in partitioned tables, side by side.

    .venv/bin/python bench/scaling.py --txs 20000000       # what fits: see --help
    .venv/bin/python bench/scaling.py --txs 2000000 --sync-blocks 5000

Two scratch databases on the PostgreSQL named by GNOSYNC_BENCH_PG (default: the local
server), in this one run:

- partitioned: every migration, partitions created by gnosync's own code
  (:func:`gnosync.store.partitions.ensure_partitions`) of ``--partition-size`` heights;
- plain: migrations 1..4 only, with 0005 recorded as applied without running, so the
  same gnosync writes and reads the unpartitioned tables.

In each, in order:

1. backfill: ``gnosync sync --from 0 --to N`` from a dense devnet (its own process),
   as a user runs it (process start-up and migration included);
2. bulk load: a synthetic chain of ``--txs`` transactions above the synced tip, linked
   to it, written by PostgreSQL itself (``INSERT ... SELECT`` over generate_series, in
   transactions of ``--chunk`` heights): blocks, transactions and every derived table a
   commit writes (messages, events, tx_accounts, coin and GRC20 transfers, packages),
   with the checkpoints, balances, decoder state and app_state gnosync would have
   written, so that ``gnosync verify`` finds the chain exact;
3. the README "Asking the chain" queries, each the median of ``--repeat`` runs, on the
   loaded tables (warm cache: one unmeasured run first);
4. ``gnosync verify`` of the whole chain, twice per side (plain, partitioned, then
   partitioned, plain).

Size: 20 million transactions do not fit in the time here. On the 2-core reference
machine the load writes about 6,000 transactions/s (every derived row and index
included), so 20 million would take about two hours for the two sides, and the disk about
3 GB per million transactions per side; the README's run is 1,500,000 (about 15 minutes
in all). ``--partition-size`` is scaled
down with the chain (50,000 heights there) so that the partitioned side has several
partitions.

The synthetic chain: ``--per-block`` transactions a block, one message each; even
indexes are bank sends between 100,000 addresses, odd ones GRC20 ``Transfer`` calls to
one of 50 realms (a Transfer event, and a storage deposit every tenth), one in 1,000 a
package deployment; one transaction in 50 fails. Nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import GNOSYNC, devnet_process, machine, run_measured, scratch_database, table  # noqa: E402
from gnosync import decode  # noqa: E402
from gnosync.store import sql  # noqa: E402
from gnosync.store.checkpoints import boundaries  # noqa: E402
from gnosync.store.migrate import apply_migrations, load_migrations  # noqa: E402
from gnosync.store.partitions import ensure_partitions  # noqa: E402

SCHEMA = "indexer"
CHECKPOINT_EVERY = 10_000
ADDRESSES = 100_000
ADDRESS = "g1" + "0" * 33 + "042"  # one of the synthetic addresses, for the queries
REALM = "gno.land/r/bench/token07"
TOKEN = REALM + ".TOK"

# The README's queries, with the psql variables filled in.
QUERIES: dict[str, str] = {
    "transactions of an address": f"""
SELECT t.block_height, t.tx_index, t.hash, t.success, a.roles
FROM (SELECT block_height, tx_index, array_agg(role) AS roles
      FROM indexer.tx_accounts WHERE address = '{ADDRESS}'
      GROUP BY block_height, tx_index ORDER BY block_height DESC, tx_index DESC LIMIT 50) AS a
JOIN indexer.transactions t USING (block_height, tx_index)
ORDER BY t.block_height DESC, t.tx_index DESC""",
    "package deployments of an address": f"""
SELECT block_height, tx_index, pkg_path, success FROM indexer.messages
WHERE sender = '{ADDRESS}' AND kind = 'MsgAddPackage' ORDER BY block_height DESC, tx_index DESC""",
    "calls of a realm function": f"""
SELECT block_height, tx_index, sender, args, send, success FROM indexer.messages
WHERE pkg_path = '{REALM}' AND func = 'Transfer'
ORDER BY block_height DESC, tx_index DESC LIMIT 20""",
    "largest native transfers": """
SELECT block_height, tx_index, from_address, to_address, amount, source
FROM indexer.coin_transfers WHERE denom = 'ugnot' ORDER BY amount DESC LIMIT 10""",
    "top holders of a token": f"""
SELECT address, balance, last_height FROM indexer.grc20_balances
WHERE token = '{TOKEN}' ORDER BY balance DESC LIMIT 10""",
    "total supply of a token": f"""
SELECT sum(balance) AS total_supply, count(*) FILTER (WHERE balance > 0) AS holders
FROM indexer.grc20_balances WHERE token = '{TOKEN}'""",
    "token transfers of an address": f"""
SELECT block_height, tx_index, event_index, from_address, to_address, amount, kind
FROM indexer.grc20_transfers
WHERE token = '{TOKEN}' AND (from_address = '{ADDRESS}' OR to_address = '{ADDRESS}')
ORDER BY block_height DESC, tx_index DESC, event_index DESC""",
    "storage deposited per realm": """
SELECT pkg_path, sum(bytes_delta) AS bytes,
       sum(fee_amount) FILTER (WHERE type = 'StorageDepositEvent') AS deposited,
       sum(fee_amount) FILTER (WHERE type = 'StorageUnlockEvent') AS refunded
FROM indexer.events WHERE type IN ('StorageDepositEvent', 'StorageUnlockEvent')
GROUP BY pkg_path ORDER BY bytes DESC LIMIT 20""",
}

# -- the synthetic chain, generated by PostgreSQL: $1..$2 are the chunk's heights, $3 the
# base height (the synced tip), $4 the transactions per block -----------------------------
_ADDR = "('g1' || lpad((({h} * 7919 + {i} * 104729 + {k}) % " + str(ADDRESSES) + ")::text, 38, '0'))"


def _addr(h: str, i: str, k: int) -> str:
    return _ADDR.format(h=h, i=i, k=k)


_TXS = (
    "SELECT h, i, {sender} AS sender, {recipient} AS recipient,"
    " 'gno.land/r/bench/token' || lpad(((h + i) % 50)::text, 2, '0') AS realm,"
    " (h * 31 + i) % 1000 = 7 AS deploy, (h + i) % 50 <> 0 AS ok,"
    " ((h * 13 + i) % 100000 + 1) * 1000 AS amount"
    " FROM generate_series($1::bigint, $2::bigint + 0 * $3::bigint) h,"
    " generate_series(0, $4::int - 1) i"
).format(sender=_addr("h", "i", 0), recipient=_addr("h", "i", 1))

LOAD = [
    # blocks, linked to the block below (the synced tip's for the first one)
    "INSERT INTO blocks SELECT h, md5('b' || h), b.chain_id, b.time + (h - $3) * interval '1 s', 0,"
    " $4::int, b.total_txs + (h - $3) * $4::int, 'v1', '1',"
    " CASE WHEN h = $3 + 1 THEN b.hash ELSE md5('b' || (h - 1)) END,"
    " 'c', 'v', 'v', 'k', 'a', 'r', 'g1proposer'"
    " FROM generate_series($1::bigint, $2::bigint) h, (SELECT * FROM blocks WHERE height = $3) b",
    # transactions: one message each; the response's events are the ones derived below
    f"INSERT INTO transactions SELECT h, i, md5('t' || h || ':' || i), ok, 200000, 100000,"
    " 1000, 'ugnot', '', repeat('x', 160) || h || ':' || i,"
    " jsonb_build_array(CASE WHEN deploy THEN jsonb_build_object('typeUrl', 'add_package',"
    "  'route', 'vm', 'value', jsonb_build_object('__typename', 'MsgAddPackage', 'creator', sender,"
    "  'package', jsonb_build_object('name', 'p', 'path', 'gno.land/r/bench/p' || h || '_' || i,"
    "  'files', '[]'::jsonb), 'send', '', 'max_deposit', ''))"
    "  WHEN i % 2 = 0 THEN jsonb_build_object('typeUrl', 'send', 'route', 'bank', 'value',"
    "  jsonb_build_object('__typename', 'BankMsgSend', 'from_address', sender, 'to_address', recipient,"
    "  'amount', amount || 'ugnot'))"
    "  ELSE jsonb_build_object('typeUrl', 'exec', 'route', 'vm', 'value', jsonb_build_object("
    "  '__typename', 'MsgCall', 'caller', sender, 'pkg_path', realm, 'func', 'Transfer',"
    "  'args', jsonb_build_array(recipient, amount::text), 'send', '', 'max_deposit', '')) END),"
    " jsonb_build_object('log', '', 'info', '', 'error', '', 'data', '', 'events',"
    "  CASE WHEN deploy OR i % 2 = 0 OR NOT ok THEN '[]'::jsonb ELSE jsonb_build_array("
    "  jsonb_build_object('__typename', 'GnoEvent', 'type', 'Transfer', 'pkg_path', realm, 'attrs',"
    "  jsonb_build_array(jsonb_build_object('key', 'token', 'value', realm || '.TOK'),"
    "  jsonb_build_object('key', 'from', 'value', sender), jsonb_build_object('key', 'to', 'value', recipient),"
    "  jsonb_build_object('key', 'value', 'value', amount::text))))"
    "  || CASE WHEN h % 10 = 0 THEN jsonb_build_array(jsonb_build_object('__typename',"
    "  'StorageDepositEvent', 'type', 'StorageDepositEvent', 'pkg_path', realm, 'bytes_delta', 120,"
    "  'fee_delta', jsonb_build_object('amount', 12000, 'denom', 'ugnot'))) ELSE '[]'::jsonb END END),"
    f" false FROM ({_TXS}) x",
    # messages
    "INSERT INTO messages SELECT h, i, 0,"
    " CASE WHEN deploy THEN 'add_package' WHEN i % 2 = 0 THEN 'send' ELSE 'exec' END,"
    " CASE WHEN i % 2 = 0 AND NOT deploy THEN 'bank' ELSE 'vm' END,"
    " CASE WHEN deploy THEN 'MsgAddPackage' WHEN i % 2 = 0 THEN 'BankMsgSend' ELSE 'MsgCall' END,"
    " sender, CASE WHEN i % 2 = 0 AND NOT deploy THEN recipient END,"
    " CASE WHEN deploy THEN 'gno.land/r/bench/p' || h || '_' || i WHEN i % 2 = 1 THEN realm END,"
    " CASE WHEN i % 2 = 1 AND NOT deploy THEN 'Transfer' END,"
    " CASE WHEN i % 2 = 1 AND NOT deploy THEN ARRAY[recipient, amount::text] END,"
    " CASE WHEN deploy THEN '' WHEN i % 2 = 0 THEN amount || 'ugnot' ELSE '' END,"
    " CASE WHEN deploy OR i % 2 = 1 THEN '' END, ok"
    f" FROM ({_TXS}) x",
    # events: the Transfer, then a storage deposit every tenth height
    "INSERT INTO events SELECT h, i, 0, 'GnoEvent', 'Transfer', realm,"
    " jsonb_build_array(jsonb_build_object('key', 'token', 'value', realm || '.TOK'),"
    "  jsonb_build_object('key', 'from', 'value', sender), jsonb_build_object('key', 'to', 'value', recipient),"
    "  jsonb_build_object('key', 'value', 'value', amount::text)), NULL, NULL, NULL, NULL"
    f" FROM ({_TXS}) x WHERE i % 2 = 1 AND NOT deploy AND ok",
    "INSERT INTO events SELECT h, i, 1, 'StorageDepositEvent', 'StorageDepositEvent', realm, NULL,"
    " 120, 12000, 'ugnot', NULL"
    f" FROM ({_TXS}) x WHERE i % 2 = 1 AND NOT deploy AND ok AND h % 10 = 0",
    # tx_accounts: the sender; the recipient of a send; an event's addresses
    "INSERT INTO tx_accounts SELECT DISTINCT address, h, i, role FROM ("
    " SELECT sender AS address, h, i, 'sender' AS role FROM ({txs}) x"
    " UNION ALL SELECT recipient, h, i, 'recipient' FROM ({txs}) x WHERE i % 2 = 0 AND NOT deploy"
    " UNION ALL SELECT a, h, i, 'event' FROM ({txs}) x, LATERAL (VALUES (sender), (recipient)) v (a)"
    "  WHERE i % 2 = 1 AND NOT deploy AND ok) r".format(txs=_TXS),
    "INSERT INTO coin_transfers SELECT h, i, 0, 0, sender, recipient, 'ugnot', amount, 'send'"
    f" FROM ({_TXS}) x WHERE i % 2 = 0 AND NOT deploy AND ok",
    "INSERT INTO grc20_transfers SELECT h, i, 0, realm || '.TOK', realm, sender, recipient, amount,"
    f" 'transfer' FROM ({_TXS}) x WHERE i % 2 = 1 AND NOT deploy AND ok",
    "INSERT INTO packages SELECT 'gno.land/r/bench/p' || h || '_' || i, 'p', sender, h, i, 0, 0, 0,"
    f" 'g1pkg' || h || '_' || i FROM ({_TXS}) x WHERE deploy AND ok",
]
FINISH = [
    # balances and tokens from the transfers, as a commit's set-based upserts do
    "INSERT INTO grc20_balances (token, address, balance, last_height)"
    " SELECT token, address, sum(amount), max(block_height) FROM ("
    " SELECT token, to_address AS address, amount, block_height FROM grc20_transfers"
    "  WHERE block_height > $1"
    " UNION ALL SELECT token, from_address, -amount, block_height FROM grc20_transfers"
    "  WHERE block_height > $1) d"
    " GROUP BY token, address"
    " ON CONFLICT (token, address) DO UPDATE SET balance = grc20_balances.balance + EXCLUDED.balance,"
    " last_height = GREATEST(grc20_balances.last_height, EXCLUDED.last_height)",
    "INSERT INTO grc20_tokens SELECT token, min(pkg_path), NULL, NULL, NULL, min(block_height)"
    " FROM grc20_transfers GROUP BY token ON CONFLICT (token) DO NOTHING",
    "UPDATE decoder_state SET version = $1, derived_to = (SELECT max(height) FROM blocks)",
    "UPDATE app_state SET last_block_h = b.height, last_block_hash = b.hash,"
    " last_tx_hash = (SELECT hash FROM transactions ORDER BY block_height DESC, tx_index DESC LIMIT 1)"
    " FROM (SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1) b",
    # Both sides start their reads from vacuumed, analyzed tables, not from whatever
    # autovacuum happens to be doing after the load.
    "VACUUM (ANALYZE)",
]


@dataclass
class Side:
    name: str
    dsn: str
    partitioned: bool
    results: dict


async def prepare(side: Side) -> None:
    conn = await asyncpg.connect(side.dsn)
    try:
        statements = sql.Statements(SCHEMA)
        migrations = load_migrations()
        if side.partitioned:
            await apply_migrations(conn, statements, migrations)
        else:
            await apply_migrations(conn, statements, migrations[:4])
            # The same gnosync, told the conversion ran: it then writes the plain tables.
            await conn.execute(statements.record_migration, migrations[4].version, migrations[4].name)
    finally:
        await conn.close()


async def bulk_load(side: Side, base: int, txs: int, per_block: int, chunk: int, size: int) -> float:
    """The synthetic chain above height ``base``; seconds taken."""
    conn = await asyncpg.connect(side.dsn)
    statements = sql.Statements(SCHEMA)
    coverage = None
    top = base + txs // per_block
    started = time.perf_counter()
    try:
        await conn.execute(f"SET search_path = {SCHEMA}")
        low = base + 1
        while low <= top:
            high = min(top, low + chunk - 1)
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                coverage = await ensure_partitions(conn, statements, coverage, low, high, size)
                for statement in LOAD:
                    await conn.execute(statement, low, high, base, per_block)
                for height in boundaries(low, high, CHECKPOINT_EVERY):
                    await conn.fetchval(statements.insert_checkpoint, height)
            print(f"  {side.name}: loaded heights ..{high:,} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            low = high + 1
        await conn.execute(FINISH[0], base)
        await conn.execute(FINISH[1])
        await conn.execute(FINISH[2], decode.DECODER_VERSION)
        for statement in FINISH[3:]:
            await conn.execute(statement)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def query_latency(side: Side, repeat: int) -> dict[str, float]:
    conn = await asyncpg.connect(side.dsn)
    out = {}
    try:
        for name, query in QUERIES.items():
            await conn.fetch(query)
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await conn.fetch(query)
                times.append(time.perf_counter() - started)
            out[name] = statistics.median(times) * 1000
    finally:
        await conn.close()
    return out


async def sizes(side: Side) -> tuple[int, int, int]:
    conn = await asyncpg.connect(side.dsn)
    try:
        txs = await conn.fetchval("SELECT count(*) FROM indexer.transactions")
        blocks = await conn.fetchval("SELECT count(*) FROM indexer.blocks")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    return blocks, txs, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--txs", type=int, default=2_000_000, help="synthetic transactions (default 2,000,000)")
    parser.add_argument("--per-block", type=int, default=4, help="synthetic transactions a block (default 4)")
    parser.add_argument("--chunk", type=int, default=50_000, help="heights per load transaction (default 50,000)")
    parser.add_argument("--partition-size", type=int, default=100_000,
                        help="heights per partition on the partitioned side (default 100,000)")
    parser.add_argument("--sync-blocks", type=int, default=5_000,
                        help="tip of the dense devnet chain synced first (default 5,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per query (median; default 5)")
    args = parser.parse_args()

    async with scratch_database() as plain_dsn, scratch_database() as part_dsn:
        sides = [Side("plain", plain_dsn, False, {}), Side("partitioned", part_dsn, True, {})]
        for side in sides:
            await prepare(side)
        config = Path(tempfile.mkdtemp(prefix="gnosync-scaling-")) / "gnosync.toml"
        # gnosync's own partitions take the bench's size too (GNOSYNC_* is not passed on).
        config.write_text(f"partition_size = {args.partition_size}\n")
        with devnet_process("--profile", "dense", "--blocks", str(args.sync_blocks)) as (url, _):
            for side in sides:
                done = await asyncio.to_thread(
                    run_measured,
                    [*GNOSYNC, "sync", "--from", "0", "--to", str(args.sync_blocks), "--source", url,
                     "--db", side.dsn, "--config", str(config), "--log-level", "warning",
                     "--log-format", "json"],
                )
                if done.returncode != 0:
                    raise SystemExit(f"gnosync sync failed on {side.name}:\n{done.stderr[-2000:]}")
                blocks, txs, _ = await sizes(side)
                side.results["sync"] = (done.seconds, blocks, txs)
                print(f"  {side.name}: synced {blocks:,} blocks in {done.seconds:.1f} s", file=sys.stderr, flush=True)
        for side in sides:
            base = side.results["sync"][1] - 1
            side.results["load"] = await bulk_load(
                side, base, args.txs, args.per_block, args.chunk, args.partition_size
            )
            side.results["size"] = await sizes(side)
        for side in sides:
            side.results["queries"] = await query_latency(side, args.repeat)
        # Twice each, the second round in the other order, so neither side always runs
        # on what the other left in the caches.
        for side in [*sides, *reversed(sides)]:
            done = await asyncio.to_thread(run_measured, [*GNOSYNC, "verify", "--db", side.dsn])
            side.results.setdefault("verify", []).append(
                (done.seconds, done.returncode, done.stdout[-300:] + done.stderr[-300:])
            )
            print(f"  {side.name}: verify exit {done.returncode} in {done.seconds:.1f} s", file=sys.stderr, flush=True)

    plain, part = sides
    blocks, txs, db_bytes = part.results["size"]
    rows: list[tuple] = []

    def row(what: str, a: str, b: str) -> None:
        rows.append((what, a, b))

    s_p, s_q = plain.results["sync"], part.results["sync"]
    row(f"`gnosync sync` 0..{args.sync_blocks:,} (dense devnet, {s_p[2]:,} txs), txs/s",
        f"{s_p[2] / s_p[0]:,.0f}", f"{s_q[2] / s_q[0]:,.0f}")
    loaded = args.txs
    row(f"bulk load of {loaded:,} txs (all derived rows), txs/s",
        f"{loaded / plain.results['load']:,.0f}", f"{loaded / part.results['load']:,.0f}")
    row("database size, GB", f"{plain.results['size'][2] / 1e9:.1f}", f"{db_bytes / 1e9:.1f}")
    for name in QUERIES:
        row(f"query: {name}, ms", f"{plain.results['queries'][name]:.2f}", f"{part.results['queries'][name]:.2f}")
    def runs(side: Side) -> str:
        return ", ".join(f"{seconds:.1f} (exit {code})" for seconds, code, _ in side.results["verify"])

    row("`gnosync verify` (whole chain), s, run 1 and 2", runs(plain), runs(part))
    print(table(
        f"Scaling, {blocks:,} blocks, {txs:,} transactions, plain vs partitioned"
        f" ({args.partition_size:,} heights per partition) ({machine()})",
        rows, ("", "plain", "partitioned"),
    ))
    for side in sides:
        for _, code, output in side.results["verify"]:
            if code != 0:
                print(f"\n{side.name} verify output: {output}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
