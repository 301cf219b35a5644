"""A long randomized fault scenario: gnosync keeps exact data and recovers fast.

    .venv/bin/python bench/chaos.py [--minutes 5] [--seed 1] [--without FAULT] [--json out.json]
    .venv/bin/python bench/chaos.py --minutes 1      # a quick check

What runs, all on loopback and in a temporary directory:

* a PostgreSQL of its own, so restarting it disturbs nothing else: a primary and a
  streaming replica started from the installed server binaries (``tests/pgpair.py``),
  given to gnosync as one multi-host DSN (``target_session_attrs=read-write``) so that
  it can ride the failover episode; with ``--without primary_failover``, or where the
  binaries are not installed, an embedded PostgreSQL (pgserver) instead;
* two ``gnosync devnet`` processes serving the same chain (same seed, the real gnoland1
  transactions, and one transaction with NUL bytes), each growing a
  block every ``--block-time`` seconds on its own (their tips differ a little, as two
  real tx-indexers' do). Endpoint B always fails a share of requests
  (``--fault-rate``); endpoint A goes through phases set over ``/control/faults``:
  calm, transport faults, wrong data, lagging or backwards heights, a mix;
* ``gnosync run --source A --source B`` as a subprocess, with a random batch size and
  poll interval each time it starts.

What happens to it: ``kill -9`` at random moments (restarted at once), standby
takeovers (a second ``gnosync run`` waits as a standby, the leader is killed), one
PostgreSQL restart (with a standby waiting), one outage of one endpoint and one of both,
and one primary failover (the replica cut off from the primary for a moment, so that it
lacks the last commits as an asynchronous replica can, then the primary killed with
``pg_ctl stop -m immediate`` and the replica promoted 0.5-2 s later, as a failover
manager would).

What is measured: the recovery time of every episode that stops progress, from the end
of the fault (the process killed, PostgreSQL accepting connections again, both
endpoints answering again, the replica promoted) to the next commit, taken from the ``timestamp`` of the
first "batch committed" log line after it (and, as a cross-check, when a 50 ms poll of
``app_state.last_block_h`` first saw it move). A kill + restart includes Python's
start-up and is reported apart from the recoveries inside a running process. Every
100 ms ``pg_locks``/``pg_stat_activity`` are sampled for sessions holding the writer
lock or named "gnosync leader ...": there must never be two, nor two commits of one
height (except the heights a failover lost with the killed primary, committed again).

At the end the faults stop, gnosync catches up with endpoint A's tip, is stopped with
SIGTERM, and the database is compared with endpoint A hash by hash and field by field
for every stored height (the comparison of ``tests/compare.py``, imported from there,
plus a count of what is missing, duplicated or different).

The faults are listed by name below (``PHASES``, ``EPISODES``, ``CHAIN``), with how to
add one; ``--without NAME`` leaves one out.

It prints a report ending in PASS/FAIL lines, then the README's table of the run in
Markdown (and writes the report as JSON with ``--json``). Exit status: 0 when every
check passed (caught up with the tip; blocks and transactions exact; every measured
recovery under ``RECOVERY_LIMIT``; never two writers; no gnosync exiting by itself or
writing a traceback, and clean SIGTERM stops), 1 when any failed, 2 when the run
itself could not complete. If gnosync keeps exiting by itself the chaos ends early
(a FAIL) rather than restarting it into the same exit for minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import hashlib
import json
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gnoland1_dense import exported_txs  # noqa: E402
from bench.harness import child_env, machine  # noqa: E402
from gnosync.devnet import gnoland1_exports  # noqa: E402
from gnosync.devnet.faults import DATA_KINDS, KINDS, TRANSPORT_KINDS  # noqa: E402
from gnosync.store.embedded import start_embedded, stop_embedded  # noqa: E402
from gnosync.store.lock import leader_name, lock_tag, writer_lock_key  # noqa: E402
from tests import pgpair  # noqa: E402
from tests.compare import block_differences, differences, source_data, transaction_differences  # noqa: E402

GNOSYNC = str(Path(sys.executable).with_name("gnosync"))
SCHEMA = "indexer"
COMPONENT = "block_sync"
RECOVERY_LIMIT = 5.0  # seconds: every measured recovery must be shorter
RECOVERY_WAIT = 60.0  # seconds to wait for a recovery before calling it missing
BATCH_SIZES = (20, 64, 100, 250, 500, 1000, 2500, 5000)
INTERVALS = (0.2, 0.5, 1.0)
GIVE_UP_EXITS = 5  # gnosync exiting by itself this often ends the chaos early (a FAIL)

# The faults of a run, by name; ``--without NAME`` leaves one out. Kills (``kill -9`` of
# the leader or a standby, standby takeovers, restarts) run throughout and always.
#
# * PHASES: how endpoint A misbehaves for 10-25 s at a time, set over /control/faults.
#   Each draws on the devnet's own kinds (gnosync.devnet.faults), so a kind the devnet
#   adds to a family joins its phase; "mixed" combines the families not left out.
# * EPISODES: one-off faults, each started once at a share of the run. To add one,
#   write ``async def <name>_episode(self)`` on Chaos that injects the fault (through
#   the devnets' /control routes, the processes or PostgreSQL), ends it and records an
#   Episode (``measured`` when progress stops until it ends), then list it here.
# * CHAIN: faults baked into the chain both devnets serve from the start (the same
#   ``--txs`` files): a transaction carrying NUL bytes, which PostgreSQL's text and JSONB
#   cannot hold and which must still be stored, never stop the sync.
PHASES: dict[str, str] = {
    "transport": "HTTP 5xx and 429, stalls, resets, malformed answers, GraphQL errors",
    "data": "broken links, missing blocks and transactions, wrong num_txs",
    "heights": "latestBlockHeight lagging or going backwards",
}
EPISODES: dict[str, tuple[float, str]] = {
    "outage_one": (0.2, "one endpoint refuses connections for 5 s"),
    "pg_restart": (0.4, "PostgreSQL stopped and started again, with a standby waiting"),
    "outage_both": (0.65, "both endpoints refuse connections for 2-4 s"),
    "refusing_endpoint": (0.3, "endpoint B answers HTTP 403 for 8 s"),
    "bad_block": (0.5, "both endpoints serve a block 1,000 heights ahead with a wrong"
                       " parent hash for 6 s, then the right one"),
    "primary_failover": (0.8, "the PostgreSQL replica cut off from its primary for 0.5-3 s"
                              " (so it lacks the last commits), the primary killed"
                              " (pg_ctl stop -m immediate), the replica promoted 0.5-2 s later"),
}
CHAIN: dict[str, str] = {
    "nul_tx": "a transaction with NUL in its memo and a call argument, 60 % into the backfill",
}
FAULT_NAMES = (*PHASES, *EPISODES, *CHAIN)
NUL_MEMO = "chaos run: a NUL \u0000 in the memo"

STATE_SQL = f"SELECT last_block_h FROM {SCHEMA}.app_state WHERE component = $1"
WRITERS_SQL = """
SELECT
  (SELECT count(DISTINCT l.pid) FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'
      AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  ) AS holders,
  (SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name LIKE $3) AS named
"""


def now() -> float:
    return time.time()


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * (len(ordered) - 1))))]

    return {
        "count": len(ordered),
        "min": round(ordered[0], 3),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(pct(0.95), 3),
        "max": round(ordered[-1], 3),
    }


# ------------------------------------------------------------------------------ the chain


def nul_transaction(txs: list[dict[str, Any]]) -> dict[str, Any]:
    """A copy of the first real call with arguments, with NUL in its memo and first
    argument (the devnet's events repeat the arguments) and a signature of its own."""
    call = next(tx for tx in txs
                if any(m.get("@type") == "/vm.m_call" and m.get("args") for m in tx["msg"]))
    msgs = [dict(m) for m in call["msg"]]
    first = next(m for m in msgs if m.get("@type") == "/vm.m_call" and m.get("args"))
    first["args"] = [first["args"][0] + "\u0000", *first["args"][1:]]
    signature = base64.b64encode(hashlib.sha512(b"chaos nul tx").digest()).decode()
    signatures = [{**sig, "signature": signature} for sig in call["signatures"]]
    return {**call, "msg": msgs, "memo": NUL_MEMO, "signatures": signatures}


def chain_txs(workdir: Path, with_nul: bool) -> tuple[list[Path], str | None]:
    """The ``--txs`` files of both devnets: the real gnoland1 exports, and with
    ``with_nul`` one more file holding :func:`nul_transaction`, stamped 60 % of the way
    through the exports' time span (so the devnet places it 60 % up the initial chain).
    Returns the files and the NUL transaction's hash as the devnet serves it."""
    exports = gnoland1_exports()
    if not exports:
        raise SystemExit("the gnoland1 exports (*.jsonl) were not found: set"
                         " GNOSYNC_GNOLAND1_EXPORTS to their directory")
    if not with_nul:
        return exports, None
    stamps = [int(orjson.loads(line)["metadata"]["timestamp"])
              for path in exports for line in path.read_bytes().splitlines() if line.strip()]
    tx = nul_transaction(exported_txs())
    stamp = min(stamps) + int(0.6 * (max(stamps) - min(stamps)))
    path = workdir / "nul-tx.jsonl"
    path.write_bytes(orjson.dumps({"tx": tx, "metadata": {"timestamp": str(stamp)}}) + b"\n")
    # The devnet hashes a transaction's amino JSON as it loaded it (gnosync.devnet.chain).
    return [*exports, path], base64.b64encode(hashlib.sha256(orjson.dumps(tx)).digest()).decode()


# ------------------------------------------------------------------------------ devnets


class Devnet:
    """A ``gnosync devnet`` subprocess and its control routes."""

    def __init__(self, name: str, workdir: Path, *, blocks: int, block_time: float, seed: int,
                 fault_rate: float | None, fault_seed: int, txs: list[Path]):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/graphql/query"
        self.log_path = workdir / f"devnet-{name}.log"
        self.args = [GNOSYNC, "devnet", "--host", "127.0.0.1", "--port", str(self.port),
                     "--blocks", str(blocks), "--block-time", str(block_time), "--seed", str(seed),
                     "--fault-seed", str(fault_seed)]
        for path in txs:
            self.args += ["--txs", str(path)]
        if fault_rate:
            self.args += ["--fault-rate", str(fault_rate)]
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it from here
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=child_env())
        log.close()
        deadline = now() + 60
        while now() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"devnet {self.name} exited: {self.log_path.read_text()}")
            with contextlib.suppress(Exception):
                await self.state(timeout=0.5)
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"devnet {self.name} did not start: see {self.log_path}")

    async def state(self, timeout: float = 3.0) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(f"{self.base}/control/faults",
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return await resp.json()

    async def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.post(f"{self.base}/control/{path}", json=body or {},
                                  timeout=aiohttp.ClientTimeout(total=5)) as resp:
            payload = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"devnet {self.name} /control/{path}: {payload}")
            return payload

    async def height_of(self, tx_hash: str) -> int | None:
        """The height the devnet serves a transaction at (plain GraphQL, no gnosync code)."""
        assert self.http is not None
        query = ("query($h: String!) { getTransactions(where: {hash: {eq: $h}})"
                 " { block_height } }")
        async with self.http.post(self.url, json={"query": query, "variables": {"h": tx_hash}},
                                  timeout=aiohttp.ClientTimeout(total=10)) as resp:
            answer = await resp.json()
        found = (answer.get("data") or {}).get("getTransactions") or []
        return found[0]["block_height"] if found else None

    async def set_faults(self, faults: dict[str, Any]) -> None:
        await self.control("faults/reset")
        if faults:
            await self.control("faults", faults)

    async def wait_back(self, outages_before: int, limit: float = 60.0) -> float:
        """Wait until the endpoint answers again after an outage; return when it did."""
        deadline = now() + limit
        while now() < deadline:
            try:
                state = await self.state(timeout=0.3)
                if state.get("up") and state.get("outages", 0) > outages_before:
                    return now()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.02)
        raise RuntimeError(f"devnet {self.name} did not come back from its outage")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# ------------------------------------------------------------------------------ gnosync


@dataclass
class Commit:
    ts: float
    proc: int
    start: int
    end: int
    blocks: int
    txs: int


class Gnosync:
    """One ``gnosync run`` subprocess, its log kept in a file and read as it comes."""

    def __init__(self, run: Chaos, number: int, purpose: str):
        self.run = run
        self.number = number
        self.purpose = purpose
        self.batch_size = run.rng.choice(BATCH_SIZES)
        self.interval = run.rng.choice(INTERVALS)
        self.log_path = run.workdir / f"gnosync-{number}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.started = 0.0
        self.role = "starting"
        self.role_ts = 0.0
        self.leader_ts: list[float] = []
        self.standby_ts: list[float] = []
        self.killed_at: float | None = None
        self.terminated = False
        self.tail: collections.deque[str] = collections.deque(maxlen=12)
        self.retries = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        run = self.run
        args = [GNOSYNC, "run", "--source", run.a.url, "--source", run.b.url, "--db", run.dsn,
                "--db-schema", SCHEMA, "--http", "127.0.0.1:0", "--log-format", "json",
                # Every commit's line, also at the tip (where info level summarises them).
                "--log-level", "debug",
                "--batch-size", str(self.batch_size), "--interval", str(self.interval)]
        self.started = now()
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=child_env(), limit=4 * 1024 * 1024)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        run = self.run
        block: dict[str, Any] | None = None
        with open(self.log_path, "ab") as log:
            while True:
                try:
                    raw = await self.proc.stderr.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    continue
                if not raw:
                    return
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.tail.append(line)
                try:
                    entry = orjson.loads(raw)
                    message = entry["message"]
                    ts = parse_ts(entry["timestamp"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    if line.startswith("gnosync: error: "):
                        continue  # the one-line error of an exit: reported with the exit
                    if line.strip():  # not a JSON log line: a traceback is one block
                        if block is None:
                            block = {"proc": self.number, "first": line[:300], "lines": 0}
                            run.stray_lines.append(block)
                        block["lines"] += 1
                        block["last"] = line[:300]
                    continue
                block = None
                if message == "batch committed":
                    run.commits.append(Commit(ts, self.number, entry["from_height"],
                                              entry["to_height"], entry["blocks"], entry["txs"]))
                elif message.startswith("leader"):
                    self.role, self.role_ts = "leader", ts
                    self.leader_ts.append(ts)
                elif message.startswith("standby"):
                    self.role, self.role_ts = "standby", ts
                    self.standby_ts.append(ts)
                elif message == "recovered":
                    run.recovered.append({"proc": self.number, "ts": ts,
                                          "seconds": entry.get("seconds")})
                elif message in ("sync error, retrying", "retrying"):
                    self.retries += 1
                    run.retry_errors[_error_kind(entry.get("error", ""))] += 1
                elif entry.get("level") in ("error", "critical"):
                    run.error_lines.append(f"#{self.number}: {line[:400]}")

    async def kill9(self) -> float:
        """SIGKILL; returns the moment it was sent, once the process is gone."""
        assert self.proc is not None
        at = now()
        self.killed_at = at
        self.proc.kill()
        await self.proc.wait()
        return at

    async def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; None when it did not stop in time (then it is killed)."""
        if not self.alive:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.terminated = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None

    async def finish_reading(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.reader, 5)


def _error_kind(error: str) -> str:
    """A short, number-free label for a retried error, to count them by kind."""
    text = " ".join(error.split())
    for marker, label in (
        ("HTTP 5", "source HTTP 5xx"), ("HTTP 429", "source HTTP 429"),
        ("not JSON", "source malformed answer"), ("GraphQL error", "source GraphQL error"),
        ("the indexer database is busy", "source GraphQL error"),
        ("last_block_hash", "bad data: broken link"), ("num_txs", "bad data: wrong num_txs"),
        ("transaction", "bad data: transactions"), ("missing", "bad data: missing"),
        ("timed out", "source timeout"), ("connect", "connection refused/lost"),
        ("PostgreSQL", "database"), ("writer", "writer lock"),
    ):
        if marker in text:
            return label
    return "".join(c for c in text[:60] if not c.isdigit())


# ------------------------------------------------------------------------------ the run


@dataclass
class Episode:
    kind: str  # kill_restart | takeover | pg_restart | outage_both | outage_one | kill_standby
    started: float  # when the fault began (wall clock)
    fault_end: float  # when it ended: process killed / database back / endpoints back
    baseline: int | None  # last_block_h when the fault ended (or before, for pg_restart)
    recovery: float | None = None  # fault end -> first "batch committed" after it
    recovery_db: float | None = None  # fault end -> last_block_h seen moving
    recovered_by: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.kind in ("kill_restart", "takeover", "pg_restart", "outage_both", "bad_block",
                             "primary_failover")

    def to_json(self, t0: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at_s": round(self.started - t0, 3),
            "fault_s": round(self.fault_end - self.started, 3),
            "recovery_s": None if self.recovery is None else round(self.recovery, 3),
            "recovery_seen_in_db_s": None if self.recovery_db is None else round(self.recovery_db, 3),
            "recovered_by": self.recovered_by,
            **self.detail,
        }


class Chaos:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="gnosync-chaos-"))
        self.pgdata = self.workdir / "pg"
        self.pair: pgpair.PgPair | None = None  # the primary and replica, when run on them
        self.dsn = ""
        self.a: Devnet
        self.b: Devnet
        self.procs: list[Gnosync] = []
        self.commits: list[Commit] = []
        self.recovered: list[dict[str, Any]] = []
        self.retry_errors: collections.Counter[str] = collections.Counter()
        self.error_lines: list[str] = []
        self.stray_lines: list[dict[str, Any]] = []  # stderr lines that are not JSON logs
        self.monitor_errors: collections.Counter[str] = collections.Counter()
        self.episodes: list[Episode] = []
        self.standing: dict[str, Any] = {}  # faults endpoint A keeps through its phases
        self.unexpected_exits: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.observed: list[tuple[float, int]] = []  # (wall, last_block_h) when it changed
        self.h_backwards = 0
        self.samples = 0
        self.sample_failures = 0
        self.max_holders = 0
        self.max_named = 0
        self.two_leader_samples = 0
        self.db_down = False
        self.kills = 0
        self.t0 = 0.0
        self.notes: list[str] = []
        self.faults = [name for name in FAULT_NAMES if name not in args.without]
        self.gave_up: str | None = None
        self.nul_hash: str | None = None
        self.watcher_failed = False

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(f"[{now() - self.t0:7.1f}s] {text}", flush=True)

    # -- processes ------------------------------------------------------------------------

    def alive(self) -> list[Gnosync]:
        return [p for p in self.procs if p.alive]

    def leader(self) -> Gnosync | None:
        leaders = [p for p in self.alive() if p.role == "leader"]
        return max(leaders, key=lambda p: p.role_ts) if leaders else None

    async def spawn(self, purpose: str) -> Gnosync:
        proc = Gnosync(self, len(self.procs) + 1, purpose)
        self.procs.append(proc)
        await proc.start()
        return proc

    async def wait_role(self, proc: Gnosync, role: str, limit: float = 30.0) -> bool:
        deadline = now() + limit
        while now() < deadline and proc.alive:
            if proc.role == role:
                return True
            await asyncio.sleep(0.02)
        return False

    async def wait_leader(self, limit: float = 30.0) -> Gnosync | None:
        deadline = now() + limit
        while now() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            await asyncio.sleep(0.05)
        return None

    def check_exits(self) -> None:
        """Record processes that ended without being killed or told to stop."""
        for proc in self.procs:
            if (proc.proc is not None and proc.proc.returncode is not None
                    and proc.killed_at is None and not proc.terminated
                    and not getattr(proc, "_reported", False)):
                proc._reported = True  # type: ignore[attr-defined]
                self.unexpected_exits.append({
                    "proc": proc.number, "returncode": proc.proc.returncode,
                    "after_s": round(now() - proc.started, 2), "tail": list(proc.tail)[-4:],
                })
                self.say(f"gnosync #{proc.number} EXITED by itself (rc {proc.proc.returncode}):"
                         f" {list(proc.tail)[-1:] or ''}")

    async def ensure_running(self) -> None:
        """Start a gnosync when none runs, unless gnosync keeps exiting by itself: then
        the chaos ends early (the run is a FAIL either way) instead of restarting it
        into the same exit over and over."""
        self.check_exits()
        if len(self.unexpected_exits) >= GIVE_UP_EXITS and not self.gave_up:
            self.gave_up = f"gnosync exited by itself {len(self.unexpected_exits)} times"
            self.say(f"giving up the chaos early: {self.gave_up}; the last exit:"
                     f" {self.unexpected_exits[-1]['tail'][-1:]}")
        if not self.alive() and not self.db_down and not self.gave_up:
            self.say("no gnosync running: starting one")
            await self.spawn("replacement after an unexpected exit")

    # -- the database, watched ------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, timeout=2, server_settings={
            "application_name": "gnosync chaos monitor"})

    async def poll_height(self, stop: asyncio.Event) -> None:
        """Every 50 ms: last_block_h, recording each change with the moment it was seen."""
        conn: asyncpg.Connection | None = None
        last: int | None = None
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncio.wait_for(self._connect(), 3)
                h = await asyncio.wait_for(conn.fetchval(STATE_SQL, COMPONENT), 3)
                if h is not None and h != last:
                    if last is not None and h < last:
                        self.h_backwards += 1
                    last = h
                    self.observed.append((now(), h))
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                pass
            except Exception as exc:  # the database restarting, most likely: reconnect
                self.monitor_errors[f"height poll: {type(exc).__name__}"] += 1
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(0.05)
        if conn is not None:
            conn.terminate()

    async def sample_writers(self, stop: asyncio.Event) -> None:
        """Every 100 ms: sessions holding the writer lock, and sessions named leader."""
        classid, objid = lock_tag(writer_lock_key(SCHEMA))
        # Any gnosync process's leader connection: the name ends in that process's pid@host.
        name = leader_name(SCHEMA, COMPONENT, pid=0, host="h").rpartition(" ")[0] + " %"
        conn: asyncpg.Connection | None = None
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncio.wait_for(self._connect(), 3)
                row = await asyncio.wait_for(conn.fetchrow(WRITERS_SQL, classid, objid, name), 3)
                self.samples += 1
                holders, named = row["holders"], row["named"]
                self.max_holders = max(self.max_holders, holders)
                self.max_named = max(self.max_named, named)
                if holders > 1 or named > 1:
                    self.two_leader_samples += 1
                    self.say(f"TWO WRITERS sampled: {holders} lock holders, {named} leader sessions")
            except Exception as exc:  # the database restarting, most likely: reconnect
                self.monitor_errors[f"writer sample: {type(exc).__name__}"] += 1
                self.sample_failures += 1
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(0.1)
        if conn is not None:
            conn.terminate()

    def _watcher_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.watcher_failed = True
            self.notes.append(f"a database watcher stopped early: {task.exception()!r}")

    def height(self) -> int | None:
        return self.observed[-1][1] if self.observed else None

    async def height_now(self) -> int | None:
        try:
            conn = await self._connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            return self.height()
        try:
            return await conn.fetchval(STATE_SQL, COMPONENT, timeout=2)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
            return self.height()
        finally:
            await conn.close()

    # -- recoveries -----------------------------------------------------------------------

    def first_commit_after(self, moment: float, exclude: int | None = None) -> Commit | None:
        after = [c for c in self.commits if c.ts > moment and c.proc != exclude]
        return min(after, key=lambda c: c.ts) if after else None

    def first_seen_above(self, baseline: int | None, moment: float) -> float | None:
        for seen, h in self.observed:
            if seen >= moment and (baseline is None or h > baseline):
                return seen
        return None

    async def measure(self, episode: Episode, exclude: int | None = None) -> None:
        """Wait for the first commit after the fault ended; fill in the episode."""
        deadline = now() + RECOVERY_WAIT
        commit = None
        while now() < deadline and not self.gave_up:
            await self.ensure_running()
            commit = self.first_commit_after(episode.fault_end, exclude)
            if commit is not None:
                break
            await asyncio.sleep(0.02)
        if commit is not None:
            episode.recovery = commit.ts - episode.fault_end
            episode.recovered_by = commit.proc
            # The poll sees it within ~50 ms; give it a moment.
            for _ in range(40):
                seen = self.first_seen_above(episode.baseline, episode.fault_end)
                if seen is not None:
                    episode.recovery_db = seen - episode.fault_end
                    break
                await asyncio.sleep(0.025)
        self.episodes.append(episode)
        rec = "NO RECOVERY" if episode.recovery is None else f"next commit after {episode.recovery:.3f}s"
        if episode.recovery_db is not None:
            rec += f" (seen in app_state after {episode.recovery_db:.3f}s)"
        self.say(f"  {episode.kind}: {rec}")

    # -- episodes -------------------------------------------------------------------------

    async def kill_episode(self) -> None:
        alive = self.alive()
        leader = await self.wait_leader()
        if leader is None:
            self.notes.append("a kill was skipped: no leader within 30 s")
            self.say("no leader within 30 s; kill skipped")
            return
        standby = next((p for p in alive if p is not leader), None)
        if standby is not None and self.rng.random() < 0.15:
            # Kill the standby: no progress stops; a new standby replaces it.
            at = await standby.kill9()
            self.kills += 1
            self.say(f"kill -9 standby #{standby.number}; starting a new standby")
            self.episodes.append(Episode("kill_standby", at, at, self.height()))
            await self.spawn("standby")
            return
        if standby is None and self.rng.random() < 0.35:
            standby = await self.spawn("standby")
            self.say(f"started standby #{standby.number} (batch {standby.batch_size},"
                     f" interval {standby.interval})")
            if not await self.wait_role(standby, "standby"):
                self.say(f"  #{standby.number} did not become a standby (role {standby.role},"
                         f" {'running' if standby.alive else 'exited'})")
                if standby.role == "leader":
                    return  # the leader lost the lock meanwhile; the next kill decides
            if standby.alive:
                await asyncio.sleep(self.rng.uniform(0.2, 3.0))
            leader = self.leader()
            if leader is None or leader is standby:
                return
            if not standby.alive:
                standby = None  # it failed to start: this becomes a kill + restart
        if standby is not None:
            at = await leader.kill9()
            self.kills += 1
            baseline = await self.height_now()
            self.say(f"kill -9 leader #{leader.number} at h={baseline}; standby #{standby.number}"
                     " takes over")
            episode = Episode("takeover", at, at, baseline,
                              detail={"killed": leader.number, "standby": standby.number})
            await self.measure(episode, exclude=leader.number)
            locked = [t for t in standby.leader_ts if t > at]
            if locked:
                episode.detail["lock_taken_s"] = round(min(locked) - at, 3)
            return
        at = await leader.kill9()
        self.kills += 1
        baseline = await self.height_now()
        replacement = await self.spawn("restart")
        self.say(f"kill -9 #{leader.number} at h={baseline}; restarted as #{replacement.number}"
                 f" (batch {replacement.batch_size}, interval {replacement.interval})")
        episode = Episode("kill_restart", at, at, baseline,
                          detail={"killed": leader.number, "restarted": replacement.number})
        await self.measure(episode, exclude=leader.number)

    async def pg_restart_episode(self) -> None:
        if len(self.alive()) < 2:
            standby = await self.spawn("standby")
            await self.wait_role(standby, "standby")
        await asyncio.sleep(self.rng.uniform(0.3, 2.0))
        baseline = self.height()
        down_for = self.rng.uniform(2.0, 4.0)
        self.say(f"PostgreSQL restart: pg_ctl stop -m fast at h={baseline}, start in {down_for:.1f}s")
        started = now()
        self.db_down = True
        await asyncio.to_thread(self.stop_database)
        stopped = now()
        await asyncio.sleep(down_for)
        starting = asyncio.ensure_future(asyncio.to_thread(self.start_database))
        back = None
        while back is None:  # the moment PostgreSQL accepts connections again
            try:
                conn = await asyncpg.connect(self.dsn, timeout=1)
                await conn.close()
                back = now()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError):
                if starting.done() and starting.exception() is not None:
                    raise starting.exception()  # type: ignore[misc]
                await asyncio.sleep(0.02)
        dsn = await starting
        if dsn != self.dsn:
            self.notes.append(f"the embedded PostgreSQL came back with another DSN: {dsn}")
        self.db_down = False
        episode = Episode("pg_restart", started, back, baseline,
                          detail={"stop_s": round(stopped - started, 3),
                                  "down_s": round(back - stopped, 3)})
        await self.measure(episode)

    def stop_database(self) -> None:
        """``pg_ctl stop -m fast`` of the server gnosync writes to."""
        if self.pair is not None:
            self.pair.stop_primary("fast")
        else:
            stop_embedded(self.pgdata)

    def start_database(self) -> str:
        """Start it again; its DSN."""
        if self.pair is not None:
            self.pair.start_primary()
            return self.dsn
        return start_embedded(self.pgdata)[0]

    async def primary_failover_episode(self) -> None:
        """The primary dies as in a crash; a failover manager promotes the replica a moment
        later. gnosync, on the multi-host DSN, must find the new primary by itself and
        re-sync whatever the replica had not received."""
        if self.pair is None:
            self.notes.append("the primary failover was skipped: no primary and replica pair")
            return
        if len(self.alive()) < 2 and self.rng.random() < 0.5:
            standby = await self.spawn("standby")
            await self.wait_role(standby, "standby")
        await asyncio.sleep(self.rng.uniform(0.3, 2.0))
        cut_for = round(self.rng.uniform(0.5, 3.0), 2)
        wait = round(self.rng.uniform(0.5, 2.0), 2)
        await asyncio.to_thread(self.pair.cut_off)
        cut_at_h = self.height()
        await asyncio.sleep(cut_for)
        lag = await asyncio.to_thread(self.pair.replay_lag)
        self.say(f"primary failover: replica cut off at h={cut_at_h} for {cut_for:g}s, then"
                 f" pg_ctl stop -m immediate of the primary at h={self.height()}; replica"
                 f" promoted {wait:g}s later")
        started = now()
        self.db_down = True
        await asyncio.to_thread(self.pair.kill_primary)
        killed_at_h = self.height()  # the last height the monitor saw on the old primary
        await asyncio.sleep(wait)
        await asyncio.to_thread(self.pair.promote)
        back = now()
        self.db_down = False
        promoted = await self.height_now()
        episode = Episode("primary_failover", started, back, promoted, detail={
            "promote_after_s": round(back - started, 3), "cut_off_s": cut_for,
            "replay_lag_s": round(lag, 3), "last_seen_on_primary": killed_at_h, "promoted_holds": promoted,
            "heights_resynced": None if killed_at_h is None or promoted is None
            else max(0, killed_at_h - promoted)})
        await self.measure(episode)
        if episode.recovery is not None:
            episode.detail["kill_to_commit_s"] = round(episode.recovery + back - started, 3)

    async def outage_one_episode(self) -> None:
        devnet = self.rng.choice([self.a, self.b])
        seconds = 5.0
        before = (await devnet.state())["outages"]
        started = now()
        await devnet.control("outage", {"seconds": seconds})
        self.say(f"outage of endpoint {devnet.name} for {seconds:g}s")
        back = await devnet.wait_back(before)
        during = [c for c in self.commits if started <= c.ts <= back]
        stamps = [started] + [c.ts for c in during] + [back]
        gap = max(b - a for a, b in zip(stamps, stamps[1:]))
        episode = Episode("outage_one", started, back, self.height(), detail={
            "endpoint": devnet.name, "commits_during": len(during),
            "longest_commit_gap_s": round(gap, 3)})
        self.episodes.append(episode)
        self.say(f"  endpoint {devnet.name} back after {back - started:.2f}s; {len(during)}"
                 f" commits meanwhile (longest gap {gap:.2f}s)")

    async def refusing_endpoint_episode(self) -> None:
        started = now()
        await self.b.control("faults", {"reject_status": 403})
        self.say("endpoint B answers HTTP 403 for 8s")
        await asyncio.sleep(8.0)
        await self.b.control("faults", {"reject_status": 0})
        back = now()
        during = [c for c in self.commits if started <= c.ts <= back]
        self.episodes.append(Episode("refusing_endpoint", started, back, self.height(),
                                     detail={"commits_during": len(during)}))
        self.say(f"  endpoint B serves again; {len(during)} commits meanwhile")

    async def bad_block_episode(self) -> None:
        """A bad block ahead of the sync on every endpoint: gnosync must hold just below
        it (never step over it), then go on once the block is served right."""
        stored = await self.height_now() or 0
        tip = max([(await d.state())["tip"] for d in (self.a, self.b)])
        # At the tip, a block neither endpoint serves yet: one already served may be
        # committed before the fault is set, which would not be stepping over it.
        bad = stored + 1000 if tip >= stored + 1000 else tip + 2
        self.standing = {"bad_link_height": bad}  # the phases of endpoint A keep it
        started = now()
        await asyncio.gather(self.a.control("faults", self.standing),
                             self.b.control("faults", self.standing))
        self.say(f"block {bad} served with a wrong parent hash by both endpoints for 6s")
        await asyncio.sleep(6.0)
        highest = await self.height_now()
        self.standing = {}
        await asyncio.gather(self.a.control("faults", {"bad_link_height": -1}),
                             self.b.control("faults", {"bad_link_height": -1}))
        episode = Episode("bad_block", started, now(), highest, detail={
            "bad_height": bad, "height_when_fixed": highest,
            "stepped_over": highest is not None and highest >= bad})
        self.say(f"  block {bad} fixed; gnosync held at {highest}")
        await self.measure(episode)

    async def outage_both_episode(self) -> None:
        seconds = round(self.rng.uniform(2.0, 4.0), 2)
        before = [(await d.state())["outages"] for d in (self.a, self.b)]
        started = now()
        await asyncio.gather(self.a.control("outage", {"seconds": seconds}),
                             self.b.control("outage", {"seconds": seconds}))
        self.say(f"outage of BOTH endpoints for {seconds:g}s")
        backs = await asyncio.gather(self.a.wait_back(before[0]), self.b.wait_back(before[1]))
        back = max(backs)
        during = [c for c in self.commits if started + 0.5 < c.ts <= back]
        episode = Episode("outage_both", started, back, await self.height_now(),
                          detail={"down_s": round(back - started, 3),
                                  "commits_during": len(during)})
        await self.measure(episode)

    # -- fault phases ---------------------------------------------------------------------

    def phase(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        kinds = [k for k in ("calm", "transport", "data", "heights", "mixed", "transport", "data")
                 if k in ("calm", "mixed") or k in self.faults]
        kind = rng.choice(kinds)
        faults: dict[str, Any] = {"seed": rng.randrange(1 << 30), "stall_seconds": 0.5}
        if kind == "transport" or (kind == "mixed" and "transport" in self.faults):
            rate = rng.uniform(0.2, 0.35)
            faults.update(dict.fromkeys(TRANSPORT_KINDS, rate / len(TRANSPORT_KINDS)))
        if kind == "data" or (kind == "mixed" and "data" in self.faults):
            for name in DATA_KINDS:
                faults[name] = round(rng.uniform(0.01, 0.06), 3)
        if kind == "heights" or (kind == "mixed" and "heights" in self.faults):
            faults["latest_backwards"] = round(rng.uniform(0.1, 0.3), 3)
            faults["latest_lag"] = rng.choice([0, 3, 10, 30])
        if not set(faults) - {"seed", "stall_seconds"}:  # calm, or "mixed" of nothing
            faults = {}
        return kind, faults

    async def fault_phases(self, stop: asyncio.Event) -> None:
        """Endpoint A changes how it misbehaves every 10-25 s."""
        while not stop.is_set():
            kind, faults = self.phase()
            try:
                await self.a.set_faults({**faults, **self.standing})
                self.phases.append({"at_s": round(now() - self.t0, 1), "endpoint": "A",
                                    "phase": kind, "faults": faults})
                shown = {k: (round(v, 3) if isinstance(v, float) else v)
                         for k, v in faults.items() if k not in ("seed", "stall_seconds")}
                self.say(f"endpoint A faults: {kind} {shown if shown else ''}")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass  # A is in an outage: try again soon
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(10, 25))

    # -- the scenario ---------------------------------------------------------------------

    async def scenario(self) -> None:
        length = self.args.minutes * 60
        end = self.t0 + length
        specials = sorted(
            (self.t0 + share * length, getattr(self, f"{name}_episode"))
            for name, (share, _) in EPISODES.items() if name in self.faults
        )
        # Random 1-10 s between kills; shorter runs squeeze them to still kill often.
        upper = min(10.0, max(3.0, 10.0 * length / 300))
        next_kill = now() + self.rng.uniform(1, upper)
        while now() < end and not self.gave_up:
            await self.ensure_running()
            if specials and now() >= specials[0][0]:
                _, episode = specials.pop(0)
                await episode()
                next_kill = max(next_kill, now() + self.rng.uniform(1, upper))
                continue
            if now() >= next_kill:
                at = now()
                await self.kill_episode()
                next_kill = at + self.rng.uniform(1, upper)
                continue
            await asyncio.sleep(0.05)
        for _, episode in specials:  # a run too short for them still has each one
            if not self.gave_up:
                await episode()

    # -- the end: catch up, stop, compare -------------------------------------------------

    async def catch_up(self) -> dict[str, Any]:
        await self.a.control("faults/reset")
        await self.b.control("faults/reset")
        await self.ensure_running()
        tip = (await self.a.state())["tip"]
        started = now()
        self.say(f"faults off; waiting for gnosync to reach endpoint A's tip {tip}")
        reached = None
        while now() < started + (10 if self.gave_up else 180):
            self.check_exits()
            h = await self.height_now()
            if h is not None and h >= tip:
                reached = now() - started
                break
            await asyncio.sleep(0.05)
        stops = {}
        for proc in sorted(self.alive(), key=lambda p: p.role != "standby"):  # standbys first
            rc = await proc.terminate()
            stops[proc.number] = rc
        for proc in self.procs:
            await proc.finish_reading()
        await asyncio.sleep(0.2)
        conn = await self._connect()
        try:
            state = dict(await conn.fetchrow(
                f"SELECT last_block_h, status, error_count, last_error FROM {SCHEMA}.app_state"
                " WHERE component = $1", COMPONENT))
        finally:
            await conn.close()
        last = state["last_block_h"]
        deadline = now() + 60
        while (await self.a.state())["tip"] < last and now() < deadline:
            await asyncio.sleep(0.2)  # B may have been a few blocks ahead of A
        self.say(f"stopped with SIGTERM: exit codes {stops}; stored 0..{last}, status"
                 f" {state['status']}")
        return {"tip_a": tip, "catch_up_s": None if reached is None else round(reached, 3),
                "sigterm_exit_codes": stops, "final_state": state}

    async def compare(self, last: int) -> dict[str, Any]:
        """Every stored block and transaction against endpoint A, for heights 0..last."""
        blocks, txs = await source_data(self.a.url, 0, last)
        conn = await self._connect()
        try:
            rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.blocks ORDER BY height")
            tx_rows = await conn.fetch(
                f"SELECT * FROM {SCHEMA}.transactions ORDER BY block_height, tx_index")
        finally:
            await conn.close()
        examples: list[str] = []

        def note(text: str) -> None:
            if len(examples) < 20:
                examples.append(text)

        heights = collections.Counter(r["height"] for r in rows)
        hashes = collections.Counter(r["hash"] for r in rows)
        wanted = set(range(0, last + 1))
        missing_blocks = sorted(wanted - set(heights))
        extra_blocks = sorted(set(heights) - wanted)
        dup_blocks = sorted({h for h, n in heights.items() if n > 1}
                            | {r["height"] for r in rows if hashes[r["hash"]] > 1})
        differing_blocks = set()
        for row in rows:
            block = blocks.get(row["height"])
            if block is None:
                continue
            wrong = [name for name, _, _ in block_differences(row, block)]
            if wrong:
                differing_blocks.add(row["height"])
                note(f"block {row['height']}: {', '.join(wrong)} differ")
        for h in missing_blocks[:5]:
            note(f"block {h} missing")
        tx_hashes = collections.Counter(r["hash"] for r in tx_rows)
        tx_places = collections.Counter((r["block_height"], r["tx_index"]) for r in tx_rows)
        served_hashes = collections.Counter(tx["hash"] for tx in txs.values())
        missing_txs = sorted(set(txs) - set(tx_places))  # (height, index) places
        extra_txs = sorted(set(tx_places) - set(txs))
        dup_txs = sorted({h for h, n in tx_hashes.items() if n > served_hashes[h]}
                         | {r["hash"] for r in tx_rows
                            if tx_places[(r["block_height"], r["tx_index"])] > 1})
        differing_txs = set()
        for row in tx_rows:
            tx = txs.get((row["block_height"], row["tx_index"]))
            if tx is None:
                continue
            wrong = [name for name, _, _ in transaction_differences(row, tx)]
            if wrong:
                differing_txs.add(row["hash"])
                note(f"transaction {row['hash']}: {', '.join(wrong)} differ")
        for h in missing_txs[:5]:
            note(f"transaction {h} missing")
        # The same comparison as the test suite's, as a second opinion.
        suite = await differences(self.dsn, self.a.url, 0, last, schema=SCHEMA)
        nul = None
        if self.nul_hash is not None:
            stored = [r for r in tx_rows if r["hash"] == self.nul_hash]
            nul = {"hash": self.nul_hash, "served_at": await self.a.height_of(self.nul_hash),
                   "stored": bool(stored),
                   "stored_at": stored[0]["block_height"] if stored else None}
        return {
            "nul_tx": nul,
            "heights": f"0..{last:,}",
            "blocks_served": len(blocks), "blocks_stored": len(rows),
            "transactions_served": len(txs), "transactions_stored": len(tx_rows),
            "blocks": {"missing": len(missing_blocks), "duplicated": len(dup_blocks),
                       "differing": len(differing_blocks), "extra": len(extra_blocks)},
            "transactions": {"missing": len(missing_txs), "duplicated": len(dup_txs),
                             "differing": len(differing_txs), "extra": len(extra_txs)},
            "tests_compare_problems": len(suite),
            "tests_compare_first": suite[:5],
            "tests_compare_all": suite[:1000],
            "examples": examples,
        }

    # -- main -----------------------------------------------------------------------------

    async def main(self) -> dict[str, Any]:
        args = self.args
        self.t0 = now()
        self.say(f"work directory {self.workdir}")
        if "primary_failover" in self.faults and pgpair.available():
            self.pair = pgpair.PgPair(pgpair.new_root())
            await asyncio.to_thread(self.pair.start)
            self.dsn = self.pair.multi_host_dsn
            self.say(f"PostgreSQL primary and streaming replica: {self.dsn}")
        else:
            self.dsn, _ = await asyncio.to_thread(start_embedded, self.pgdata)
            self.say(f"embedded PostgreSQL: {self.dsn}")
        http = aiohttp.ClientSession()
        txs, self.nul_hash = chain_txs(self.workdir, "nul_tx" in self.faults)
        self.a = Devnet("A", self.workdir, blocks=args.blocks, block_time=args.block_time,
                        seed=args.seed, fault_rate=None, fault_seed=args.seed + 100, txs=txs)
        self.b = Devnet("B", self.workdir, blocks=args.blocks, block_time=args.block_time,
                        seed=args.seed, fault_rate=args.fault_rate, fault_seed=args.seed + 200, txs=txs)
        stop = asyncio.Event()
        watchers: list[asyncio.Task[None]] = []
        try:
            await asyncio.gather(self.a.start(http), self.b.start(http))
            self.say(f"devnet A {self.a.url} (faults in phases), devnet B {self.b.url}"
                     f" (--fault-rate {args.fault_rate}); {args.blocks} blocks, one more every"
                     f" {args.block_time}s each")
            self.t0 = now()
            watchers = [asyncio.create_task(self.poll_height(stop)),
                        asyncio.create_task(self.sample_writers(stop))]
            for task in watchers:
                task.add_done_callback(self._watcher_ended)
            first = await self.spawn("first")
            self.say(f"started gnosync #{first.number} (batch {first.batch_size},"
                     f" interval {first.interval})")
            phases = asyncio.create_task(self.fault_phases(stop))
            try:
                await self.scenario()
            finally:
                phases.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await phases
            chaos_s = now() - self.t0
            end = await self.catch_up()
            stop.set()
            await asyncio.gather(*watchers, return_exceptions=True)
            watchers = []
            faults = {d.name: await d.state() for d in (self.a, self.b)}
            last = end["final_state"]["last_block_h"]
            self.say(f"comparing heights 0..{last} with endpoint A")
            comparison = await self.compare(last)
            return self.report(chaos_s, end, faults, comparison)
        finally:
            stop.set()
            for task in watchers:
                task.cancel()
            for proc in self.procs:
                if proc.alive:
                    assert proc.proc is not None
                    proc.proc.kill()
                    await proc.proc.wait()
            await asyncio.gather(self.a.stop(), self.b.stop(), return_exceptions=True)
            await http.close()
            with contextlib.suppress(Exception):
                if self.pair is not None:
                    await asyncio.to_thread(self.pair.stop)
                    if not args.keep:
                        shutil.rmtree(self.pair.root, ignore_errors=True)
                else:
                    await asyncio.to_thread(stop_embedded, self.pgdata)
            if args.keep:
                print(f"kept {self.workdir} (logs, PostgreSQL data)"
                      + (f" and {self.pair.root} (the primary and replica)" if self.pair else ""),
                      file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the report -----------------------------------------------------------------------

    def kept_commits(self) -> tuple[list[Commit], int]:
        """The logged commits, less what a failover lost: a commit logged before the
        primary was killed, above the height the promoted replica held, is gone with the
        old primary and is committed again, which is no overlap. Also how many were cut."""
        kept, lost = [], 0
        for logged in self.commits:
            commit: Commit | None = logged
            for e in self.episodes:
                held = e.detail.get("promoted_holds")
                if e.kind == "primary_failover" and held is not None and commit.ts < e.started:
                    if commit.start > held:
                        commit = None
                        break
                    if commit.end > held:
                        commit = Commit(commit.ts, commit.proc, commit.start, held,
                                        commit.blocks, commit.txs)
            if commit is not logged:
                lost += 1
            if commit is not None:
                kept.append(commit)
        return kept, lost

    def report(self, chaos_s: float, end: dict[str, Any], faults: dict[str, Any],
               comparison: dict[str, Any]) -> dict[str, Any]:
        measured = [e for e in self.episodes if e.measured]
        by_kind: dict[str, list[Episode]] = collections.defaultdict(list)
        for e in measured:
            by_kind[e.kind].append(e)
        restart = [e.recovery for e in by_kind["kill_restart"] if e.recovery is not None]
        in_process = [e.recovery for e in measured
                      if e.kind != "kill_restart" and e.recovery is not None]
        unrecovered = [e for e in measured if e.recovery is None]
        too_slow = [e for e in measured if e.recovery is not None and e.recovery >= RECOVERY_LIMIT]
        counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        for state in faults.values():
            for kind, n in state["counts"].items():
                counts[kind] = counts.get(kind, 0) + n
        overlaps = 0
        kept, lost = self.kept_commits()
        ordered = sorted(kept, key=lambda c: c.start)
        for prev, cur in zip(ordered, ordered[1:]):
            if cur.start <= prev.end:
                overlaps += 1
        takeovers = [e for e in self.episodes if e.kind == "takeover"]
        blocks, txs = comparison["blocks"], comparison["transactions"]
        exact_blocks = not any(blocks.values())
        exact_txs = not any(txs.values())
        suite = comparison["tests_compare_all"]
        suite_blocks = [p for p in suite if not p.startswith(("transaction", "stored transaction"))
                        and "transactions stored" not in p]
        suite_txs = [p for p in suite if p not in suite_blocks]
        nul = comparison.get("nul_tx")
        checks = {
            "caught up with endpoint A's tip once the faults stopped":
                end["catch_up_s"] is not None and not self.gave_up,
            "blocks exact (0 missing, 0 duplicated, 0 differing, 0 extra)":
                exact_blocks and not suite_blocks,
            "transactions exact (0 missing, 0 duplicated, 0 differing, 0 extra)":
                exact_txs and not suite_txs,
            f"every measured recovery < {RECOVERY_LIMIT:g}s ({len(measured)} measured)":
                bool(measured) and not unrecovered and not too_slow,
            "never two writers at once (pg_locks samples, committed ranges)":
                self.two_leader_samples == 0 and self.max_holders <= 1
                and self.max_named <= 1 and overlaps == 0 and self.samples > 0
                and not self.watcher_failed,
            "no gnosync exited by itself or wrote a traceback; SIGTERM stops cleanly"
            " (exit 0, status stopped)":
                not self.unexpected_exits and not self.stray_lines
                and all(rc == 0 for rc in end["sigterm_exit_codes"].values())
                and end["final_state"]["status"] == "stopped",
        }
        bad_blocks = [e for e in self.episodes if e.kind == "bad_block"]
        if bad_blocks:
            checks["a bad block ahead was never stepped over"] = not any(
                e.detail["stepped_over"] for e in bad_blocks)
        if nul is not None:
            checks["the transaction with NUL bytes is stored, at its height"] = (
                nul["stored"] and nul["stored_at"] == nul["served_at"])
        rec_lines = [r["seconds"] for r in self.recovered if isinstance(r.get("seconds"), (int, float))]
        out = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "seed": self.args.seed,
            "minutes": self.args.minutes,
            "block_time": self.args.block_time,
            "machine": machine(),
            "faults_run": self.faults,
            "gave_up": self.gave_up,
            "duration_s": round(now() - self.t0, 1),
            "chaos_s": round(chaos_s, 1),
            "initial_blocks": self.args.blocks,
            "heights_synced": end["final_state"]["last_block_h"] + 1,
            "transactions": comparison["transactions_stored"],
            "commits_logged": len(self.commits),
            "gnosync_processes": len(self.procs),
            "processes": [{"number": p.number, "purpose": p.purpose, "batch_size": p.batch_size,
                           "interval": p.interval, "retries": p.retries,
                           "ended": ("kill -9" if p.killed_at else "SIGTERM" if p.terminated
                                     else f"exit {p.proc.returncode if p.proc else None}")}
                          for p in self.procs],
            "kills": self.kills,
            "restarts": len(self.procs) - 1,
            "started_by_purpose": dict(collections.Counter(p.purpose for p in self.procs)),
            "takeovers": [e.to_json(self.t0) for e in takeovers],
            "pg_restarts": len(by_kind["pg_restart"]),
            "failovers": [e.to_json(self.t0) for e in by_kind["primary_failover"]],
            "outages": [e.to_json(self.t0) for e in self.episodes
                        if e.kind in ("outage_one", "outage_both")],
            "faults_injected": {k: v for k, v in counts.items() if v},
            "faults_injected_total": sum(counts.values()),
            "faults_by_endpoint": {n: {"injected": s["injected"], "requests": s["requests"],
                                       "outages": s["outages"],
                                       "counts": {k: v for k, v in s["counts"].items() if v}}
                                   for n, s in faults.items()},
            "fault_phases_a": self.phases,
            "recovery": {
                "all_measured": summary([e.recovery for e in measured if e.recovery is not None]),
                "in_process": summary(in_process),
                "kill_restart_incl_startup": summary(restart),
                "by_kind": {k: summary([e.recovery for e in v if e.recovery is not None])
                            for k, v in by_kind.items()},
                "unrecovered": len(unrecovered),
                "episodes": [e.to_json(self.t0) for e in self.episodes],
            },
            "gnosync_recovered_lines": summary(rec_lines),
            "gnosync_retries_by_error": dict(self.retry_errors.most_common(12)),
            "writers": {"samples": self.samples, "failed_samples": self.sample_failures,
                        "max_lock_holders": self.max_holders,
                        "max_leader_sessions": self.max_named,
                        "samples_with_two": self.two_leader_samples,
                        "overlapping_committed_ranges": overlaps,
                        "commits_lost_with_a_failed_primary": lost},
            "last_block_h_went_backwards": self.h_backwards,
            "monitor_errors": dict(self.monitor_errors),
            "catch_up": end,
            "comparison": comparison,
            "unexpected_exits": self.unexpected_exits,
            "error_log_lines": self.error_lines[:20],
            "stray_stderr_blocks": len(self.stray_lines),
            "stray_stderr_lines": self.stray_lines[:20],
            "notes": self.notes,
            "checks": {k: ("PASS" if v else "FAIL") for k, v in checks.items()},
        }
        return out


def print_report(r: dict[str, Any]) -> None:
    rec = r["recovery"]

    def stats(s: dict[str, Any]) -> str:
        if not s.get("count"):
            return "none"
        return (f"n={s['count']} min {s['min']:.3f}s p50 {s['p50']:.3f}s p95 {s['p95']:.3f}s"
                f" max {s['max']:.3f}s")

    cmp_ = r["comparison"]
    print()
    print("=" * 78)
    print("gnosync chaos report")
    print("=" * 78)
    print(f"command            {r['command']}")
    print(f"duration           {r['duration_s']}s ({r['chaos_s']}s of chaos), seed {r['seed']}")
    print(f"heights synced     {r['heights_synced']} (0..{r['heights_synced'] - 1}; started with"
          f" {r['initial_blocks']} to backfill)")
    print(f"transactions       {r['transactions']}")
    print(f"commits logged     {r['commits_logged']}")
    print(f"gnosync processes  {r['gnosync_processes']} started: "
          + ", ".join(f"{k} {v}" for k, v in r["started_by_purpose"].items()))
    print(f"kill -9            {r['kills']}")
    print(f"standby takeovers  {len(r['takeovers'])}: "
          + ", ".join(f"{t['recovery_s']}s" for t in r["takeovers"]))
    print(f"PostgreSQL restart {r['pg_restarts']}")
    for f in r["failovers"]:
        print(f"primary failover   replica cut off {f['cut_off_s']}s before the kill, promoted"
              f" {f['promote_after_s']}s after it; last seen on the primary {f['last_seen_on_primary']},"
              f" the promoted replica held {f['promoted_holds']}; next commit {f['recovery_s']}s"
              f" after the promotion, {f.get('kill_to_commit_s')}s after the kill")
    for o in r["outages"]:
        if o["kind"] == "outage_one":
            print(f"outage (one)       endpoint {o['endpoint']} {o['fault_s']}s:"
                  f" {o['commits_during']} commits meanwhile, longest gap"
                  f" {o['longest_commit_gap_s']}s")
        else:
            print(f"outage (both)      {o['fault_s']}s: next commit {o['recovery_s']}s after")
    print(f"faults injected    {r['faults_injected_total']}: "
          + ", ".join(f"{k} {v}" for k, v in r["faults_injected"].items()))
    for name, e in r["faults_by_endpoint"].items():
        print(f"  endpoint {name}       {e['injected']} of {e['requests']} requests, {e['outages']}"
              " outage(s): " + ", ".join(f"{k} {v}" for k, v in e["counts"].items()))
    print("fault phases (A)   " + ", ".join(f"{p['at_s']:.0f}s {p['phase']}"
                                           for p in r["fault_phases_a"]))
    print("recovery (fault end -> next commit):")
    print(f"  all measured     {stats(rec['all_measured'])}")
    print(f"  in-process       {stats(rec['in_process'])}")
    print(f"  kill+restart     {stats(rec['kill_restart_incl_startup'])} (includes Python start-up)")
    for kind, s in rec["by_kind"].items():
        print(f"  {kind:<16} {stats(s)}")
    if rec["unrecovered"]:
        print(f"  NOT RECOVERED within {RECOVERY_WAIT:g}s: {rec['unrecovered']}")
    print("  each:")
    for e in rec["episodes"]:
        extra = {k: v for k, v in e.items()
                 if k not in ("kind", "at_s", "recovery_s", "recovery_seen_in_db_s", "fault_s")}
        if e["kind"] in ("outage_one", "kill_standby"):
            print(f"    {e['at_s']:7.1f}s {e['kind']:<13} (progress does not stop) {json.dumps(extra)}")
            continue
        rec = "NONE" if e["recovery_s"] is None else f"{e['recovery_s']:.3f}s"
        seen = e["recovery_seen_in_db_s"]
        seen = "-" if seen is None else f"{seen:.3f}s"
        print(f"    {e['at_s']:7.1f}s {e['kind']:<13} recovery {rec} (app_state moved {seen})"
              f" {json.dumps(extra)}")
    print(f"gnosync 'recovered' lines {stats(r['gnosync_recovered_lines'])}")
    print("retries by error   " + ", ".join(f"{k}: {v}" for k, v in
                                             r["gnosync_retries_by_error"].items()))
    w = r["writers"]
    print(f"writers            {w['samples']} samples ({w['failed_samples']} failed while the"
          f" database was down): max {w['max_lock_holders']} lock holder(s),"
          f" max {w['max_leader_sessions']} leader session(s), {w['samples_with_two']} with two;"
          f" overlapping committed ranges {w['overlapping_committed_ranges']}"
          f" ({w.get('commits_lost_with_a_failed_primary', 0)} commits lost with a killed primary,"
          " committed again, are no overlap)")
    print(f"app_state went backwards {r['last_block_h_went_backwards']} times;"
          f" monitor errors {r['monitor_errors']}")
    c = r["catch_up"]
    reached = "NOT reached" if c["catch_up_s"] is None else f"reached in {c['catch_up_s']}s"
    print(f"catch-up           A's tip {c['tip_a']} {reached} after faults"
          f" stopped; SIGTERM exit codes {c['sigterm_exit_codes']};"
          f" final status {c['final_state']['status']}")
    print(f"comparison         heights {cmp_['heights']}: blocks served {cmp_['blocks_served']}"
          f" stored {cmp_['blocks_stored']}; transactions served {cmp_['transactions_served']}"
          f" stored {cmp_['transactions_stored']}")
    print(f"  blocks           {cmp_['blocks']}")
    print(f"  transactions     {cmp_['transactions']}")
    print(f"  tests/compare.py {cmp_['tests_compare_problems']} problems {cmp_['tests_compare_first']}")
    for example in cmp_["examples"]:
        print(f"    {example}")
    if r["unexpected_exits"]:
        print("unexpected exits:")
        for x in r["unexpected_exits"]:
            print(f"  #{x['proc']} rc {x['returncode']} after {x['after_s']}s: {x['tail'][-1:]}")
    for line in r["error_log_lines"][:8]:
        print(f"error log: {line[:200]}")
    if r["stray_stderr_lines"]:
        print(f"non-JSON stderr    {r['stray_stderr_blocks']} block(s) in JSON log streams:")
        for b in r["stray_stderr_lines"][:6]:
            print(f"  #{b['proc']} ({b['lines']} lines) {b['first'][:90]!r} ... {b['last'][:110]!r}")
    nul = cmp_.get("nul_tx")
    if nul is not None:
        where = "not reached" if nul["served_at"] is None else f"served at height {nul['served_at']}"
        print(f"NUL transaction    {nul['hash']} {where};"
              f" {'stored at height ' + str(nul['stored_at']) if nul['stored'] else 'NOT stored'}")
    print(f"faults run         {', '.join(r['faults_run'])}")
    if r["gave_up"]:
        print(f"GAVE UP EARLY      {r['gave_up']}")
    for note in r["notes"]:
        print(f"note: {note}")
    print("-" * 78)
    for name, verdict in r["checks"].items():
        print(f"{verdict}  {name}")
    print("=" * 78)


# How the README's table names the devnet's fault kinds; any other kind shows as named.
FAULT_LABELS = {
    "http_500": "HTTP 500", "http_502": "502", "http_503": "503", "http_429": "429",
    "stall": "stalls", "reset": "resets", "malformed": "malformed",
    "graphql_error": "GraphQL errors", "broken_link": "broken links",
    "missing_tx": "missing transactions", "wrong_num_txs": "wrong `num_txs`",
    "missing_block": "missing blocks", "latest_lag": "lagging heights",
    "latest_backwards": "heights going backwards", "drop_subscriptions": "dropped subscriptions",
}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def readme_table(r: dict[str, Any]) -> str:
    """The run as the README's chaos table, in Markdown, to paste as is."""
    rec, cmp_, w = r["recovery"], r["comparison"], r["writers"]
    by_kind = rec["by_kind"]
    requests = sum(e["requests"] for e in r["faults_by_endpoint"].values())
    faults = ", ".join(f"{FAULT_LABELS.get(k, k)} {v:,}" for k, v in r["faults_injected"].items())
    heights = (f"{r['heights_synced']:,} (a {r['initial_blocks']:,}-block backfill, then following"
               f" a chain growing {1 / r['block_time']:g} blocks/s), {r['transactions']:,} transactions"
               " (the real gnoland1 ones")
    nul = cmp_.get("nul_tx")
    if nul is not None:
        heights += ", and one with NUL bytes " + (f"at height {nul['served_at']:,}"
                                                  if nul["served_at"] is not None else "not reached")
    heights += ")"
    takeovers = [t["recovery_s"] for t in r["takeovers"] if t["recovery_s"] is not None]
    processes = [f"{r['gnosync_processes']} started", f"{r['kills']} `kill -9`",
                 f"{len(r['takeovers'])} standby takeovers"
                 + (f" ({min(takeovers):.2f}–{max(takeovers):.2f} s)" if takeovers else "")]
    if r["pg_restarts"]:
        processes.append(f"{r['pg_restarts']} PostgreSQL restart")
    for f in r["failovers"]:
        processes.append(f"a primary failover (replica cut off {f['cut_off_s']:.1f} s before the"
                         f" kill, promoted {f['promote_after_s']:.1f} s after it, lacking"
                         f" {f['heights_resynced']} heights, re-synced; first commit"
                         f" {_s(f.get('kill_to_commit_s'))} after the kill)")
    for o in r["outages"]:
        if o["kind"] == "outage_one":
            processes.append(f"a {o['fault_s']:.0f} s outage of one endpoint"
                             f" ({o['commits_during']} commits meanwhile)")
        else:
            processes.append(f"both endpoints down {o['fault_s']:.1f} s")
    allm = rec["all_measured"]
    recovery = "none measured"
    if allm.get("count"):
        parts = []
        restart = rec["kill_restart_incl_startup"]
        if restart.get("count"):
            parts.append(f"kill + restart, Python start-up included: p50 {_s(restart['p50'])},"
                         f" max {_s(restart['max'])}")
        for kind, label in (("pg_restart", "PostgreSQL restart"), ("outage_both", "both endpoints back"),
                            ("primary_failover", "replica promoted")):
            if by_kind.get(kind, {}).get("count"):
                parts.append(f"{label} {_s(by_kind[kind]['max'])}")
        recovery = (f"{allm['count']} measured: p50 {_s(allm['p50'])}, p95 {_s(allm['p95'])},"
                    f" max {_s(allm['max'])}" + (f" ({'; '.join(parts)})" if parts else ""))
    if rec["unrecovered"]:
        recovery += f"; {rec['unrecovered']} NOT recovered within {RECOVERY_WAIT:g} s"
    two = w["samples_with_two"] or w["max_lock_holders"] > 1 or w["max_leader_sessions"] > 1
    writers = (f"{w['samples']:,} samples of `pg_locks`: "
               + (f"TWO LEADERS in {w['samples_with_two']} samples" if two else "never two leaders")
               + "; " + (f"{w['overlapping_committed_ranges']} overlapping committed ranges"
                         if w["overlapping_committed_ranges"] else "no overlapping committed ranges"))
    blocks, txs = cmp_["blocks"], cmp_["transactions"]
    rcs = r["catch_up"]["sigterm_exit_codes"].values()
    exits = ("every gnosync exited 0 on SIGTERM with status `stopped`"
             if all(rc == 0 for rc in rcs) and r["catch_up"]["final_state"]["status"] == "stopped"
             else f"SIGTERM exit codes {sorted(rcs)}, status `{r['catch_up']['final_state']['status']}`")
    if r["unexpected_exits"]:
        exits += f"; {len(r['unexpected_exits'])} gnosync exited by itself"
    if r["stray_stderr_blocks"]:
        exits += f"; {r['stray_stderr_blocks']} tracebacks or other non-JSON stderr"
    result = (f"heights {cmp_['heights']} compared field by field with the devnet:"
              f" blocks {blocks['missing']} missing, {blocks['duplicated']} duplicated,"
              f" {blocks['differing']} differing; transactions {txs['missing']} missing,"
              f" {txs['duplicated']} duplicated, {txs['differing']} differing; {exits}")
    failed = [name for name, verdict in r["checks"].items() if verdict != "PASS"]
    checks = (f"all {len(r['checks'])} passed" if not failed
              else f"{len(failed)} of {len(r['checks'])} FAILED: {'; '.join(failed)}")
    if r["gave_up"]:
        checks += f" (the chaos ended early: {r['gave_up']})"
    rows = [
        ("heights synced", heights),
        ("faults injected", f"{r['faults_injected_total']:,} on {requests:,} requests: {faults}"),
        ("processes", ", ".join(processes)),
        ("recovery, fault end → next commit", recovery),
        ("writers", writers),
        ("result", result),
        ("checks", checks),
    ]
    minutes = f"{r['minutes']:g} minute{'s' if r['minutes'] != 1 else ''}"
    lines = [f"Latest run ({minutes}, seed {r['seed']}, {r['machine']}; `{r['command']}`):", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {name} | {text.replace('|', '/')} |" for name, text in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="faults (--without NAME): " + "; ".join(
            f"{name}: {text}" for name, text in
            [*PHASES.items(), *((n, t) for n, (_, t) in EPISODES.items()), *CHAIN.items()]),
    )
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="length of the chaos (default 5; 1 for a quick check)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the scenario and the chain")
    parser.add_argument("--without", action="append", default=[], choices=FAULT_NAMES,
                        metavar="FAULT", help="leave this fault out (repeatable; see below)")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    parser.add_argument("--blocks", type=int, default=100_000,
                        help="initial chain height, backfilled first (default 100000)")
    parser.add_argument("--block-time", type=float, default=0.2,
                        help="each devnet grows a block this often (default 0.2 s)")
    parser.add_argument("--fault-rate", type=float, default=0.25,
                        help="share of endpoint B's requests that fail (default 0.25)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--quiet", action="store_true", help="print only the report")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    chaos = Chaos(args)
    try:
        report = asyncio.run(chaos.main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the run itself broke: one line, exit 2
        print(f"chaos: the run could not complete: {type(exc).__name__}: {exc}"
              " (run again with --keep to keep the logs)", file=sys.stderr)
        return 2
    print_report(report)
    print()
    print(readme_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = [name for name, verdict in report["checks"].items() if verdict != "PASS"]
    if failed:
        print(f"\nchaos: {len(failed)} check(s) FAILED: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
