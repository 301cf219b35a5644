"""Faults on demand: the devnet misbehaving the way real endpoints and proxies do.

A :class:`Faults` config says how often each fault happens (a probability per request,
0 by default) and :class:`FaultInjector` draws them from its own seeded RNG, so a given
seed and request sequence always produce the same faults. Every injected fault is
counted by kind in ``FaultInjector.counts``.

Kinds:

* Transport and HTTP (at most one per request): ``http_500``, ``http_502`` and
  ``http_503`` (plain-text bodies, as a proxy in front of tx-indexer sends them),
  ``http_429`` (with ``Retry-After``), ``stall`` (answer only after ``stall_seconds``),
  ``reset`` (status line, headers and part of the body, then the TCP connection is
  aborted), ``malformed`` (HTTP 200 with truncated or garbled JSON) and
  ``graphql_error`` (HTTP 200 with ``{"errors": [...], "data": null}``).
* Wrong data, applied to the real answer before it is encoded, leaving it otherwise
  valid: ``broken_link`` (a block of a ``getBlocks`` answer links to another hash),
  ``missing_tx`` (a ``getTransactions`` answer misses one transaction),
  ``wrong_num_txs`` (a block counts one transaction more than it has) and
  ``missing_block`` (a ``getBlocks`` answer of two or more blocks misses one).
* Heights: ``latest_lag`` (``latestBlockHeight`` reports the tip minus that many
  blocks, on every answer) and ``latest_backwards`` (a height lower than one already
  reported: up to 50 blocks below the highest so far).
* Subscriptions: ``drop_subscriptions`` (a probability per block pushed to a websocket
  subscriber: instead of the block, the connection is cut, no close frame).
* Standing conditions, not drawn but in force until changed: ``reject_status`` (every
  query answered with that HTTP status, as an authenticating proxy (401/403) or a wrong
  path (404) in front of tx-indexer answers), ``bad_link_height`` (that block is always
  served linking to a hash that is not its parent's: a bad block that every retry gets
  again), ``latency`` (seconds every answer is held back) and ``build_ms_per_kb``
  (milliseconds per KB of the answer before its first byte: tx-indexer builds a whole
  answer in memory before it writes any of it, so a large answer is a long silence).

``ops`` limits faults to requests for some of ``latestBlockHeight``, ``getBlocks`` and
``getTransactions`` (``drop_subscriptions`` applies to every subscription whatever
``ops`` says); the server's ``/control/*`` routes are never faulted.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "DATA_KINDS",
    "HEIGHT_KINDS",
    "KINDS",
    "OPS",
    "STANDING_KINDS",
    "SUBSCRIPTION_KINDS",
    "TRANSPORT_KINDS",
    "FaultInjector",
    "Faults",
]

OPS: tuple[str, ...] = ("latestBlockHeight", "getBlocks", "getTransactions")
TRANSPORT_KINDS: tuple[str, ...] = (
    "http_500",
    "http_502",
    "http_503",
    "http_429",
    "stall",
    "reset",
    "malformed",
    "graphql_error",
)
DATA_KINDS: tuple[str, ...] = ("broken_link", "missing_tx", "wrong_num_txs", "missing_block")
HEIGHT_KINDS: tuple[str, ...] = ("latest_lag", "latest_backwards")
SUBSCRIPTION_KINDS: tuple[str, ...] = ("drop_subscriptions",)
STANDING_KINDS: tuple[str, ...] = ("reject_status", "bad_link_height")
KINDS: tuple[str, ...] = (
    TRANSPORT_KINDS + DATA_KINDS + HEIGHT_KINDS + SUBSCRIPTION_KINDS + STANDING_KINDS
)
QUERY_RATES: tuple[str, ...] = TRANSPORT_KINDS + DATA_KINDS + ("latest_backwards",)
RATES: tuple[str, ...] = QUERY_RATES + SUBSCRIPTION_KINDS

BACKWARDS_MAX = 50  # latest_backwards answers up to this many blocks below the highest
_RECENT = 1000  # injected faults remembered in FaultInjector.recent

# Bodies a reverse proxy (nginx, a cloud load balancer) sends when tx-indexer misbehaves.
PROXY_BODIES = {
    500: "500 Internal Server Error\n",
    502: "502 Bad Gateway: the upstream tx-indexer closed the connection\n",
    503: "503 Service Unavailable: no healthy upstream\n",
    429: "429 Too Many Requests: rate limit exceeded, slow down\n",
}
GRAPHQL_ERROR_MESSAGE = "unable to fetch data from storage: the indexer database is busy"


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


@dataclass
class Faults:
    """How often the devnet misbehaves. Rates are probabilities per request (0..1),
    ``drop_subscriptions`` per block pushed to a subscriber.

    The transport kinds exclude each other (their rates must add up to at most 1);
    the data kinds and ``latest_backwards`` are drawn independently on answers they
    fit. ``latest_lag`` is a block count, not a rate. ``retry_after`` is the
    ``Retry-After`` of ``http_429`` answers (seconds), ``stall_seconds`` how long a
    ``stall`` holds its answer back. ``seed`` seeds the injector's RNG.
    """

    seed: int = 0
    # transport / HTTP
    http_500: float = 0.0
    http_502: float = 0.0
    http_503: float = 0.0
    http_429: float = 0.0
    stall: float = 0.0
    reset: float = 0.0
    malformed: float = 0.0
    graphql_error: float = 0.0
    # wrong data
    broken_link: float = 0.0
    missing_tx: float = 0.0
    wrong_num_txs: float = 0.0
    missing_block: float = 0.0
    # heights
    latest_lag: int = 0
    latest_backwards: float = 0.0
    # subscriptions
    drop_subscriptions: float = 0.0
    # standing conditions
    reject_status: int = 0
    bad_link_height: int = -1
    latency: float = 0.0
    build_ms_per_kb: float = 0.0
    # parameters
    retry_after: float = 1.0
    stall_seconds: float = 30.0
    ops: tuple[str, ...] = field(default=OPS)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in RATES:
            rate = _number(name, getattr(self, name))
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} is a probability per request (0..1), got {rate:g}")
            setattr(self, name, rate)
        transport = sum(getattr(self, name) for name in TRANSPORT_KINDS)
        if transport > 1.0 + 1e-9:
            raise ValueError(
                f"the transport fault rates ({', '.join(TRANSPORT_KINDS)}) add up to"
                f" {transport:g}; at most one of them hits a request, so they must add up"
                " to 1 or less"
            )
        lag = self.latest_lag
        if isinstance(lag, float) and lag.is_integer():
            lag = int(lag)
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
            raise ValueError(f"latest_lag must be a block count >= 0, got {self.latest_lag!r}")
        self.latest_lag = lag
        status = self.reject_status
        if isinstance(status, bool) or not isinstance(status, int) or not (
            status == 0 or 400 <= status <= 599
        ):
            raise ValueError(f"reject_status must be 0 (off) or an HTTP status 400..599, got {status!r}")
        height = self.bad_link_height
        if isinstance(height, bool) or not isinstance(height, int) or height < -1:
            raise ValueError(f"bad_link_height must be a height, or -1 (off), got {height!r}")
        for name in ("retry_after", "stall_seconds", "latency", "build_ms_per_kb"):
            seconds = _number(name, getattr(self, name))
            if seconds < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {seconds:g}")
            setattr(self, name, seconds)
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, Iterable):
            raise ValueError(f"ops must be a list of operations out of {list(OPS)}, got {ops!r}")
        ops = tuple(ops)
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"ops: unknown operation(s) {unknown}; known: {list(OPS)}")
        self.ops = ops

    @classmethod
    def mixed(
        cls,
        rate: float,
        seed: int = 0,
        *,
        stall_seconds: float = 0.5,
        retry_after: float = 1.0,
        ops: Iterable[str] = OPS,
    ) -> Faults:
        """``rate`` spread evenly over the transport kinds; no wrong data.

        ``stall_seconds`` defaults to a short stall so chaos runs stay fast.
        """
        rate = _number("rate", rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the fault rate is a probability per request (0..1), got {rate:g}")
        share = rate / len(TRANSPORT_KINDS)
        return cls(
            seed=seed,
            stall_seconds=stall_seconds,
            retry_after=retry_after,
            ops=tuple(ops),
            **dict.fromkeys(TRANSPORT_KINDS, share),
        )

    @property
    def active(self) -> bool:
        """Whether any fault can happen."""
        return self.latest_lag > 0 or self.standing or any(getattr(self, name) > 0 for name in RATES)

    @property
    def standing(self) -> bool:
        """Whether a standing condition is in force."""
        return bool(self.reject_status) or self.bad_link_height >= 0 or self.latency > 0 or (
            self.build_ms_per_kb > 0
        )

    @property
    def queries_active(self) -> bool:
        """Whether any fault can happen to a GraphQL request over HTTP."""
        return self.latest_lag > 0 or self.standing or any(
            getattr(self, name) > 0 for name in QUERY_RATES
        )

    @property
    def transport_rate(self) -> float:
        return sum(getattr(self, name) for name in TRANSPORT_KINDS)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values."""
        out = dataclasses.asdict(self)
        out["ops"] = list(self.ops)
        return out

    @staticmethod
    def field_names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Faults))

    def update(self, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into this config, in place, all or nothing.

        Raises ``ValueError`` naming any unknown field or invalid value.
        """
        known = self.field_names()
        unknown = sorted(name for name in changes if name not in known)
        if unknown:
            raise ValueError(
                f"unknown fault field{'s' if len(unknown) > 1 else ''}"
                f" {', '.join(repr(name) for name in unknown)}; known fields: {', '.join(known)}"
            )
        candidate = dataclasses.replace(self, **dict(changes))  # validates the whole config
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def clear(self) -> None:
        """Every rate back to 0, no lag and no standing condition; seed, parameters and
        ``ops`` stay."""
        for name in RATES:
            setattr(self, name, 0.0)
        self.latest_lag = 0
        self.reject_status = 0
        self.bad_link_height = -1
        self.latency = 0.0
        self.build_ms_per_kb = 0.0


class FaultInjector:
    """Draws the faults of each request from ``faults`` with a seeded RNG and counts them.

    The config is read live, so changing a field of ``injector.faults`` (or the object
    given to the server) takes effect on the next request. A changed ``seed`` restarts
    the RNG from that seed. Thread-safe: any thread may change the config or read the
    counts while the server injects.
    """

    def __init__(self, faults: Faults | None = None):
        self._lock = threading.Lock()
        self._faults = faults if faults is not None else Faults()
        self._rng = random.Random(self._faults.seed)
        self._seeded_with = self._faults.seed
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.requests = 0  # requests the faults applied to (their ops matched)
        self.recent: deque[tuple[int, str]] = deque(maxlen=_RECENT)  # (request, kind)
        self._highest_reported: int | None = None

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
            self._reseed(faults.seed)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the RNG from ``seed`` (default: the config's)."""
        with self._lock:
            self._reseed(self._faults.seed if seed is None else seed)

    def _reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._seeded_with = seed

    def _rng_now(self) -> random.Random:
        if self._faults.seed != self._seeded_with:
            self._reseed(self._faults.seed)
        return self._rng

    @property
    def injected(self) -> int:
        """All faults injected so far."""
        return sum(self.counts.values())

    def clear_counts(self) -> None:
        with self._lock:
            self.counts = dict.fromkeys(KINDS, 0)
            self.requests = 0
            self.recent.clear()

    def count(self, kind: str) -> None:
        """Count a fault the server applied itself (a standing condition)."""
        with self._lock:
            self.requests += 1
            self._record(kind)

    def _record(self, kind: str) -> None:
        self.counts[kind] += 1
        self.recent.append((self.requests, kind))

    def snapshot(self) -> dict[str, Any]:
        """Config, counts and totals as JSON values."""
        with self._lock:
            return {
                "faults": self._faults.to_dict(),
                "counts": dict(self.counts),
                "injected": sum(self.counts.values()),
                "requests": self.requests,
            }

    # ----------------------------------------------------------------- decisions

    def applies(self, operations: Iterable[str]) -> bool:
        """Whether faults apply to a request for these root fields."""
        ops = self._faults.ops
        return any(op in ops for op in operations)

    def transport_fault(self, operations: Iterable[str]) -> str | None:
        """The transport fault of a new request for ``operations`` (None: none).

        Counts the request when the faults apply to it, and the fault when there is one.
        """
        if not self.applies(operations):
            return None
        with self._lock:
            faults = self._faults
            self.requests += 1
            if faults.transport_rate <= 0:
                return None
            roll = self._rng_now().random()
            cumulative = 0.0
            for kind in TRANSPORT_KINDS:
                cumulative += getattr(faults, kind)
                if roll < cumulative:
                    self._record(kind)
                    return kind
            return None

    def amend(self, operation: str, value: Any) -> Any:
        """The answer of root field ``operation`` with any data or height faults applied.

        ``value`` is the real answer (a height, or a list of GraphQL-shaped dicts that
        belong to this answer and may be changed in place).
        """
        faults = self._faults
        if operation not in faults.ops or value is None:
            return value
        with self._lock:
            if operation == "latestBlockHeight":
                return self._amend_height(faults, value)
            if operation == "getBlocks":
                return self._amend_blocks(faults, value)
            if operation == "getTransactions":
                return self._amend_transactions(faults, value)
        return value

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng_now().random() < rate

    def drop_subscription(self) -> bool:
        """Whether to cut a subscriber's connection instead of pushing it a block
        (counted when so)."""
        faults = self._faults
        if faults.drop_subscriptions <= 0:
            return False
        with self._lock:
            if self._roll(faults.drop_subscriptions):
                self._record("drop_subscriptions")
                return True
        return False

    def _amend_height(self, faults: Faults, tip: int) -> int:
        height = tip
        if faults.latest_lag > 0:
            height = max(0, tip - faults.latest_lag)
            self._record("latest_lag")
        if self._roll(faults.latest_backwards):
            reference = height
            if self._highest_reported is not None:
                reference = max(reference, self._highest_reported)
            if reference > 0:
                self._record("latest_backwards")
                return max(0, reference - self._rng.randint(1, BACKWARDS_MAX))
        if self._highest_reported is None or height > self._highest_reported:
            self._highest_reported = height
        return height

    def _amend_blocks(self, faults: Faults, blocks: list[Any]) -> list[Any]:
        if faults.bad_link_height >= 0:
            for block in blocks:
                if block.get("height") == faults.bad_link_height and "last_block_hash" in block:
                    digest = hashlib.sha256(b"bad block\x00" + str(faults.bad_link_height).encode())
                    block["last_block_hash"] = base64.b64encode(digest.digest()).decode("ascii")
                    self._record("bad_link_height")
        if self._roll(faults.broken_link):
            linked = [i for i, block in enumerate(blocks) if "last_block_hash" in block]
            if linked:
                block = blocks[self._rng.choice(linked)]
                old = block["last_block_hash"]
                digest = hashlib.sha256(
                    b"broken link\x00" + old.encode() + self._rng.randbytes(8)
                ).digest()
                block["last_block_hash"] = base64.b64encode(digest).decode("ascii")
                self._record("broken_link")
        if self._roll(faults.wrong_num_txs):
            counted = [i for i, block in enumerate(blocks) if "num_txs" in block]
            if counted:
                blocks[self._rng.choice(counted)]["num_txs"] += 1
                self._record("wrong_num_txs")
        if self._roll(faults.missing_block) and len(blocks) >= 2:
            del blocks[self._rng.randrange(len(blocks))]
            self._record("missing_block")
        return blocks

    def _amend_transactions(self, faults: Faults, txs: list[Any]) -> list[Any]:
        if self._roll(faults.missing_tx) and txs:
            del txs[self._rng.randrange(len(txs))]
            self._record("missing_tx")
        return txs

    # ------------------------------------------------------------------ payloads

    def cut(self, body: bytes) -> int:
        """Where to cut ``body`` short: somewhere strictly inside it."""
        if len(body) < 2:
            return 0
        with self._lock:
            return self._rng.randint(1, len(body) - 1)

    def garble(self, body: bytes) -> bytes:
        """``body`` made into something that is not JSON: cut short, or cut and followed
        by junk (no quote or closing bracket can complete it)."""
        with self._lock:
            cut = self._rng.randint(1, len(body) - 1) if len(body) >= 2 else 0
            truncate = self._rng.random() < 0.5
        if truncate and cut:
            return body[:cut]
        return body[:cut] + b"\xff\xfe<html><body>upstream sent garbage\x00"
