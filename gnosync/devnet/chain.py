"""A deterministic Gno.land chain, shaped the way tx-indexer serves it.

``Chain(ChainConfig(...))`` stands in for a tx-indexer's store. Everything about the
chain (heights, times, hashes, transactions and their results) follows from the config,
so two chains built from the same config are identical, block for block.

Shape, after the gnoland1 betanet: almost every block is empty; a few blocks here and
there carry one to four transactions, and dense stretches (``dense_length`` blocks every
``dense_every`` heights, starting at ``dense_start``) carry 5-30 each. Transactions are
bank sends, realm calls, package deployments and ``run`` scripts, some with several
messages, some with a memo, a few failed. With ``txs_files`` the real gnoland1 exports
(amino JSON lines) replace the generated transactions of heights ``1..txs_span``
(default: the initial chain), placed in order at heights proportional to their
timestamps.

Profiles (``ChainConfig(profile=...)``) set the shape for benchmarks: ``sparse`` is
gnoland1's density (about 2,800 transactions over 3.4 million blocks, in bursts), with
the real exports when they can be found (:func:`gnoland1_exports`); ``dense`` puts
about 20 transactions on every block, drawn from a pool of pre-made ones
(``tx_templates``) so that a million of them are cheap to make.

Results carry events in the shapes tx-indexer serves (``GnoEvent`` with ``type``,
``pkg_path`` and ``attrs``; ``StorageDepositEvent``/``StorageUnlockEvent`` with their
type set to the typename; ``UnknownEvent`` with its JSON ``value``), emitted the way
Gno's realms emit them: GRC20 ``Transfer`` (token, from, to, value; a mint has from
"", a burn to ""), ``Approval`` and ``NewToken`` under pkg_path
``gno.land/p/demo/tokens/grc20`` with token ids ``<realm>.<SYMBOL>.<seqid>`` (from
wugnot, foo20 and grc20factory calls, and from the init of token realms deployed at
genesis or later); a realm's own ``Transfer`` without a token attribute, as tokens
older than grc20's events emitted; GRC721 ``Transfer`` with ``tokenId`` instead of
``value``; attributes holding addresses, a few hand-typed with a bad checksum. Failed
transactions have no events. The devnet keeps no ledger, so token balances summed
from its events may go below zero.

tx-indexer quirks reproduced on purpose (gnosync has to cope with them):

* Height 0 is the synthetic genesis block tx-indexer builds from the genesis state
  (fetch/fetch.go, ``getGenesisBlock``): only chain id, time and the counts are set, so
  its ``hash``, ``last_block_hash`` and the other hashes and versions are empty;
  ``num_txs == total_txs ==`` the number of genesis transactions, amino-encoded like any
  block's, so ``txs`` lists them all and ``getTransactions`` serves them decoded. A
  realistic genesis is hundreds of package deployments, a few MB (``genesis_txs``,
  ``genesis_files``).
* ``Block.txs`` leaves out every transaction tx-indexer cannot amino-decode, while
  ``num_txs`` counts it and ``getTransactions`` serves it with a zero ``std.Tx``'s memo,
  fee and messages (``undecodable_txs``).
* Strings are served as their bytes: NUL as ``\u0000``, bytes that are not UTF-8 as
  they are, so an answer need not be valid UTF-8 (``hostile_txs``, :func:`json_bytes`).
* Block 1 has an empty ``last_block_hash`` and ``last_commit_hash`` and a ``total_txs``
  that counts only its own transactions: the chain does not count genesis transactions.
* ``last_results_hash`` is empty after a block without transactions (an empty merkle
  root), as on tm2 chains.

Hashes are base64 (standard alphabet) SHA-256 digests. A transaction's hash is the
digest of its content bytes, which are its amino JSON (tx-indexer hashes the amino
binary encoding; the devnet has no amino codec), and ``content_raw`` is
``Tx{<HEX of the content bytes>}`` like tm2's ``Tx.String()``. A block's hash covers
its header: chain id, height, time, transaction counts, the previous block's hash and
the hashes of its transactions.

The chain scales to millions of blocks: construction only places transactions (a list
of the heights that carry any); block hashes are computed on first use and kept as 32
bytes per height; transactions are generated on demand from a per-height seed and kept
in a bounded cache. Whoever serves the chain may keep encoded answers in
:attr:`Chain.fragments` (see :mod:`gnosync.devnet.fragments`); ``prepare(encode=True)``
fills it ahead of the first request.

Listeners (:meth:`Chain.add_listener`) hear of every new block after it is stored; the
server pushes new blocks to its websocket subscribers that way.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import re
import struct
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "DEFAULT_START_TIME",
    "GNOLAND1_HEIGHT",
    "PROFILES",
    "Chain",
    "ChainConfig",
    "bech32_address",
    "derived_chain_id",
    "format_time_ns",
    "gnoland1_exports",
    "go_string",
    "json_bytes",
    "parse_time_ns",
]

DEFAULT_START_TIME = datetime(2026, 3, 16, 9, 0, 0, tzinfo=UTC)

BLOCK_INTERVAL_NS = 3_000_000_000  # blocks are 1-5 s apart, 3 s on average
VERSION = "v1.0.0-rc.0"
APP_VERSION = "v1.0.0"
UGNOT = "ugnot"

_MASK64 = (1 << 64) - 1
_NS = 1_000_000_000
_TX_CACHE_TXS = 40_000  # materialised transactions kept (whole heights, oldest out first)
_HEADER = struct.Struct(">QIQ")  # height, num_txs, total_txs
_TX_AT = struct.Struct(">QI")  # height, index
# Transactions at a hostile_txs / undecodable_txs height; which one is undecodable.
_SPECIAL_COUNTS = {"hostile": 2, "undecodable": 20}
_UNDECODABLE_INDEX = 7


# The gnoland1 betanet's height when its last export was taken; the sparse profile
# spreads the exports over this many blocks, as the real chain did.
GNOLAND1_HEIGHT = 3_427_614
GNOLAND1_EXPORTS_ENV = "GNOSYNC_GNOLAND1_EXPORTS"


def gnoland1_exports() -> list[Path]:
    """The gnoland1 transaction exports (``*.jsonl``) if they can be found, else ``[]``.

    Looked for in the directory ``$GNOSYNC_GNOLAND1_EXPORTS`` names, then in
    ``shared/data/gnoland1`` beside the source checkout gnosync runs from.
    """
    candidates: list[Path] = []
    configured = os.environ.get(GNOLAND1_EXPORTS_ENV)
    if configured:
        candidates.append(Path(configured))
    checkout = Path(__file__).resolve().parents[2]
    candidates.append(checkout.parent / "shared" / "data" / "gnoland1")
    for directory in candidates:
        files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
        if files:
            return files
    return []


# A profile's values for the fields a config is not given.
PROFILES: dict[str, dict[str, Any]] = {
    # gnoland1: 2,795 transactions over 3.4 million blocks, in bursts. With the exports
    # they are placed by timestamp over GNOLAND1_HEIGHT blocks (a chain of 1,000,000
    # blocks carries about 2,600 of them); without, generated ones at a similar rate.
    "sparse": {
        "tx_rate": 0.0004,
        "dense_start": 50_000,
        "dense_every": 500_000,
        "dense_length": 20,
        "dense_txs": (2, 10),
        "read_ahead": 2,
    },
    # About 20 transactions on every block: sends, calls with events, a few package
    # deployments and run scripts, drawn from 4,096 pre-made ones.
    "dense": {
        "dense_start": 1,
        "dense_every": 10**15,
        "dense_length": 10**15,
        "dense_txs": (10, 30),
        "tx_templates": 4096,
        "read_ahead": 2,
        # Its answers take ~60 MB per 1,000 blocks: keep the process near 1 GB.
        "answer_cache_mb": 768,
    },
}


@dataclass
class ChainConfig:
    """What a devnet chain looks like. Every field has a default.

    ``blocks`` is the initial tip. With ``genesis`` the chain serves a genesis block at
    height 0 holding ``genesis_txs`` transactions; without it the chain starts at 1.
    Genesis transactions are package deployments (every eighth a realm call) with files
    of real sizes: the ``m_addpkg``/``m_run`` files of the amino-JSON exports
    ``genesis_files`` when given, else generated Gno source of the same size range (a
    few hundred of them make a genesis of a few MB, like a real one). The last
    ``genesis_repeats`` of them repeat earlier ones byte for byte (unsigned, so with the
    same hash), as a genesis file may.
    ``block_time`` (seconds) makes a served chain grow by one block at that interval.
    ``txs_files`` are amino-JSON transaction exports (one transaction a line, like
    ``/work/shared/data/gnoland1/*.jsonl``) that replace the generated transactions of
    heights ``1..txs_span`` (default: ``1..blocks``).

    ``profile`` (``"sparse"`` or ``"dense"``, see :data:`PROFILES`) sets the fields not
    given; ``sparse`` also takes the gnoland1 exports as ``txs_files`` when none are
    given and :func:`gnoland1_exports` finds them. ``tx_templates`` > 0 makes
    generated transactions copies of that many pre-made ones, each with its own
    signature (so its own hash): much cheaper to make, for chains of millions of
    transactions. ``answer_cache_mb`` bounds the encoded answers a server keeps and
    ``read_ahead`` is how many chunks of them a background thread encodes ahead of a
    client reading the chain in order (:mod:`gnosync.devnet.fragments`).

    Odd data at chosen heights (each replaces whatever the height would hold):
    ``hostile_txs`` heights hold a failed call with NUL in its memo, an argument and an
    event attribute, and a call whose argument and event attribute are not valid UTF-8
    (see :func:`json_bytes`); ``undecodable_txs`` heights hold 20 transactions, one of
    which tx-indexer cannot decode, so ``Block.txs`` leaves it out.

    ``chain_id`` defaults to ``"dev"`` for every config, which suits a test that builds
    its chains in-process; ``gnosync devnet`` and ``gnosync run --devnet`` give each
    chain its own id instead (:func:`derived_chain_id`) unless ``--chain-id`` names one.
    """

    blocks: int = 1000
    seed: int = 1
    chain_id: str = "dev"
    genesis: bool = True
    genesis_txs: int = 3
    genesis_files: list[str | Path] = field(default_factory=list)
    genesis_repeats: int = 0
    block_time: float | None = None
    txs_files: list[str | Path] = field(default_factory=list)
    txs_span: int | None = None
    start_time: datetime = DEFAULT_START_TIME
    # Sparse transactions: the chance that a block outside dense stretches has any.
    tx_rate: float = 0.004
    # Dense stretches: ``dense_length`` blocks with ``dense_txs`` transactions each,
    # the first at ``dense_start``, then one every ``dense_every`` heights.
    dense_start: int = 100
    dense_every: int = 250_000
    dense_length: int = 300
    dense_txs: tuple[int, int] = (5, 30)
    # Share of transactions that fail (success false, an error in the response).
    failure_rate: float = 0.03
    tx_templates: int = 0
    profile: str | None = None
    answer_cache_mb: int = 1024
    read_ahead: int = 0
    hostile_txs: tuple[int, ...] = ()
    undecodable_txs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.profile is not None:
            self._apply_profile()
        lowest = 0 if self.genesis else 1
        if self.blocks < lowest:
            raise ValueError(
                f"blocks must be at least {lowest} {'with' if self.genesis else 'without'}"
                f" genesis, got {self.blocks}"
            )
        if self.genesis_txs < 0:
            raise ValueError(f"genesis_txs must be >= 0, got {self.genesis_txs}")
        if not 0 <= self.genesis_repeats < max(1, self.genesis_txs):
            raise ValueError(
                f"genesis_repeats must be >= 0 and below genesis_txs ({self.genesis_txs}),"
                f" got {self.genesis_repeats}"
            )
        self.genesis_files = [Path(path) for path in self.genesis_files]
        self.hostile_txs = tuple(sorted(set(self.hostile_txs)))
        self.undecodable_txs = tuple(sorted(set(self.undecodable_txs)))
        if any(height < 1 for height in self.hostile_txs + self.undecodable_txs):
            raise ValueError("hostile_txs and undecodable_txs heights must be >= 1")
        both = set(self.hostile_txs) & set(self.undecodable_txs)
        if both:
            raise ValueError(f"heights {sorted(both)} are in both hostile_txs and undecodable_txs")
        if self.block_time is not None and self.block_time <= 0:
            raise ValueError(f"block_time must be positive, got {self.block_time}")
        if not 0.0 <= self.tx_rate < 1.0:
            raise ValueError(f"tx_rate must be in [0, 1), got {self.tx_rate}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {self.failure_rate}")
        low, high = self.dense_txs
        if not 1 <= low <= high:
            raise ValueError(
                f"dense_txs must be (low, high) with 1 <= low <= high, got {self.dense_txs}"
            )
        if self.dense_length < 0 or self.dense_every < 1 or self.dense_start < 1:
            raise ValueError("dense_length must be >= 0, dense_every and dense_start >= 1")
        if self.start_time.tzinfo is None:
            raise ValueError("start_time must carry a time zone")
        if not self.chain_id:
            raise ValueError("chain_id must not be empty")
        if self.tx_templates < 0:
            raise ValueError(f"tx_templates must be >= 0, got {self.tx_templates}")
        if self.answer_cache_mb < 0:
            raise ValueError(f"answer_cache_mb must be >= 0, got {self.answer_cache_mb}")
        if self.read_ahead < 0:
            raise ValueError(f"read_ahead must be >= 0, got {self.read_ahead}")
        self.txs_files = [Path(path) for path in self.txs_files]
        if self.txs_span is not None and self.txs_span < 1:
            raise ValueError(f"txs_span must be >= 1, got {self.txs_span}")
        if self.txs_files and self.txs_span is None:
            # Fixed now, so that a reset or a grown chain places the files the same way.
            self.txs_span = max(1, self.blocks)

    def _apply_profile(self) -> None:
        values = PROFILES.get(self.profile)  # type: ignore[arg-type]
        if values is None:
            raise ValueError(
                f"unknown profile {self.profile!r}; known profiles: {', '.join(PROFILES)}"
            )
        explicit = getattr(self, "_explicit", frozenset())
        for name, value in values.items():
            if name not in explicit:
                setattr(self, name, value)
        if self.profile == "sparse" and not self.txs_files:
            exports = gnoland1_exports()
            if exports:
                self.txs_files = list(exports)
                if self.txs_span is None:
                    self.txs_span = GNOLAND1_HEIGHT


# ChainConfig fields that do not change which blocks and transactions a height holds:
# how far the chain reaches and grows, the name, and how answers are cached. Every other
# field (a new one included) shapes the chain, so it goes into derived_chain_id.
_NOT_CHAIN_SHAPING = frozenset({"chain_id", "blocks", "block_time", "profile", "answer_cache_mb", "read_ahead"})


def derived_chain_id(config: ChainConfig, prefix: str = "dev") -> str:
    """``dev-<10 hex digits>``: a chain id of its own for every chain ``config`` shapes.

    The digest covers every field that changes what a height holds (seed, genesis,
    density, odd heights, ``txs_span``) and the bytes of the ``genesis_files`` and
    ``txs_files``, not their paths. Two configs get the same id exactly when they serve
    the same chain, so a database synced from one devnet refuses another devnet's chain
    with a chain-id mismatch rather than a hash mismatch, and takes up again the same
    chain served later, however many blocks it starts with.
    """
    digest = hashlib.sha256()
    for item in fields(ChainConfig):
        if item.name in _NOT_CHAIN_SHAPING:
            continue
        value = getattr(config, item.name)
        digest.update(item.name.encode() + b"=")
        if item.name in ("genesis_files", "txs_files"):
            for path in value:
                digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        else:
            digest.update(repr(value).encode())
        digest.update(b"\x00")
    return f"{prefix}-{digest.hexdigest()[:10]}"


def _recording_explicit(init: Callable[..., None]) -> Callable[..., None]:
    """``ChainConfig.__init__``, remembering which fields the caller gave (a profile
    sets only the others; ``dataclasses.replace`` gives them all)."""
    names = [f.name for f in fields(ChainConfig)]

    @functools.wraps(init)
    def __init__(self: ChainConfig, *args: Any, **kwargs: Any) -> None:
        self._explicit = frozenset(names[: len(args)]) | frozenset(kwargs)
        init(self, *args, **kwargs)

    return __init__


ChainConfig.__init__ = _recording_explicit(ChainConfig.__init__)  # type: ignore[method-assign]


# --------------------------------------------------------------------------- helpers


def _mix64(value: int) -> int:
    """splitmix64: a cheap, well-spread 64-bit hash for per-height decisions."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def go_string(data: bytes) -> str:
    """A Go string's bytes as a Python ``str``: bytes that are not UTF-8 are kept as the
    surrogate code points of Python's ``surrogateescape`` (U+DC80..U+DCFF), which
    :func:`json_bytes` writes back as those bytes."""
    return data.decode("utf-8", "surrogateescape")


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON, the way tx-indexer writes its answers.

    gqlgen writes every GraphQL string itself (graphql/string.go, ``writeQuotedString``):
    it escapes ``"``, ``\\`` and the control characters (NUL as ``\u0000``) and copies
    every other byte as it is, valid UTF-8 or not; Go's encoding/json then embeds that
    answer as a ``json.RawMessage``, whose compaction checks the syntax but not the
    UTF-8. (encoding/json's own string encoder, which would write U+FFFD for invalid
    UTF-8, is never used for GraphQL strings.) So a string holding bytes that are not
    UTF-8 (see :func:`go_string`) is served as those raw bytes, and the answer is not
    valid UTF-8.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "surrogates" not in str(exc):  # anything but bytes that are not UTF-8
            raise
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "surrogateescape")


_DAYS: dict[int, str] = {}  # day number since the epoch -> "YYYY-MM-DDT"


def format_time_ns(ns: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, like Go's ``time.RFC3339Nano``."""
    seconds, fraction = divmod(ns, _NS)
    day, second = divmod(seconds, 86_400)
    date = _DAYS.get(day)
    if date is None:
        if len(_DAYS) > 100_000:
            _DAYS.clear()
        date = _DAYS[day] = _time.strftime("%Y-%m-%dT", _time.gmtime(day * 86_400))
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    if fraction:
        return f"{date}{hour:02d}:{minute:02d}:{second:02d}.{fraction:09d}".rstrip("0") + "Z"
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}Z"


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (as Go's RFC3339Nano parses it)."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"invalid RFC 3339 time {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    seconds = int(moment.timestamp())
    if match.group(9):
        offset = int(match.group(10)) * 3600 + int(match.group(11)) * 60
        seconds -= offset if match.group(9) == "+" else -offset
    fraction = int((match.group(7) or "").ljust(9, "0") or 0)
    return seconds * _NS + fraction


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: Iterable[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                checksum ^= generator[i]
    return checksum


def bech32_address(raw: bytes, hrp: str = "g") -> str:
    """The bech32 form of a 20-byte address, as tm2 prints ``crypto.Address``."""
    data: list[int] = []
    accumulator = bits = 0
    for byte in raw:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((accumulator >> bits) & 31)
    if bits:
        data.append((accumulator << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


_COIN = re.compile(r"^(\d+)([a-zA-Z][a-zA-Z0-9/:._-]*)$")


def _coin(text: str) -> dict[str, Any]:
    """tx-indexer's ``Coin`` of a ``std.Coin`` string such as ``1000000ugnot``."""
    match = _COIN.match(text.strip())
    if match is None:
        return {"amount": 0, "denom": ""}
    return {"amount": int(match.group(1)), "denom": match.group(2)}


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------- amino -> GraphQL shapes


def _package(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    return {
        "name": raw.get("name") or "",
        "path": raw.get("path") or "",
        "files": [
            {"name": f.get("name") or "", "body": f.get("body") or ""}
            for f in raw.get("files") or []
        ],
    }


def graphql_message(msg: dict[str, Any]) -> dict[str, Any]:
    """tx-indexer's ``TransactionMessage`` for one amino-JSON message."""
    kind = msg.get("@type", "")
    if kind == "/bank.MsgSend":
        return {
            "typeUrl": "send",
            "route": "bank",
            "value": {
                "__typename": "BankMsgSend",
                "from_address": msg.get("from_address") or "",
                "to_address": msg.get("to_address") or "",
                "amount": msg.get("amount") or "",
            },
        }
    if kind == "/vm.m_call":
        args = msg.get("args")
        return {
            "typeUrl": "exec",
            "route": "vm",
            "value": {
                "__typename": "MsgCall",
                "caller": msg.get("caller") or "",
                "send": msg.get("send") or "",
                "pkg_path": msg.get("pkg_path") or "",
                "func": msg.get("func") or "",
                "args": None if args is None else list(args),
                "max_deposit": msg.get("max_deposit") or "",
            },
        }
    if kind == "/vm.m_addpkg":
        send = msg.get("send") or ""
        return {
            "typeUrl": "add_package",
            "route": "vm",
            "value": {
                "__typename": "MsgAddPackage",
                "creator": msg.get("creator") or "",
                "package": _package(msg.get("package")),
                "deposit": send,
                "send": send,
                "max_deposit": msg.get("max_deposit") or "",
            },
        }
    if kind == "/vm.m_run":
        return {
            "typeUrl": "run",
            "route": "vm",
            "value": {
                "__typename": "MsgRun",
                "caller": msg.get("caller") or "",
                "send": msg.get("send") or "",
                "package": _package(msg.get("package")),
                "max_deposit": msg.get("max_deposit") or "",
            },
        }
    route, _, type_url = kind.lstrip("/").partition(".")
    return {
        "typeUrl": type_url,
        "route": route,
        "value": {"__typename": "UnexpectedMessage", "raw": orjson.dumps(msg).decode()},
    }


# ------------------------------------------------------------- generated content

_MEMOS = (
    "Minted a Ginger NFT",
    "Posted from gnoblog-cli",
    "Deployed through play.gno.land",
    "Executed through gnoswap.io",
    "gm 🌞",
    "thanks for the coffee ☕",
    "invoice #4711",
)

# (realm, function, event type emitted on success, argument maker). Event types named
# "grc20", "grc721" and "legacy20" are made by _token_events, the others are a plain
# GnoEvent echoing the caller and the first two arguments.
_CALLS: tuple[tuple[str, str, str, str], ...] = (
    ("gno.land/r/gnoland/users/v1", "Register", "Registered", "name"),
    ("gno.land/r/demo/boards", "CreateThread", "ThreadCreated", "thread"),
    ("gno.land/r/demo/boards", "CreateReply", "ReplyCreated", "reply"),
    ("gno.land/r/gnoland/blog", "AddComment", "CommentAdded", "comment"),
    ("gno.land/r/gov/dao", "MustVoteOnProposal", "VoteAdded", "vote"),
    ("gno.land/r/leon/hof", "Upvote", "Upvote", "number"),
    ("gno.land/r/docs/counter", "Increment", "Incremented", "none"),
    ("gno.land/r/demo/games/dice_roller", "Play", "GamePlayed", "number"),
    # A realm storing what its callers type: some address-looking values have a bad
    # checksum, which an indexer must not take for an address.
    ("gno.land/r/demo/profile", "SetStringField", "ProfileFieldSet", "profile"),
    # GRC20 realms (gno.land/p/demo/tokens/grc20): wugnot mints what a Deposit sends it
    # (coins carried by the MsgCall) and burns on Withdraw, whose ugnot the realm pays
    # back internally, invisible in the transaction.
    ("gno.land/r/gnoland/wugnot", "Deposit", "grc20", "deposit"),
    ("gno.land/r/gnoland/wugnot", "Withdraw", "grc20", "amount"),
    ("gno.land/r/demo/defi/foo20", "Transfer", "grc20", "to_amount"),
    ("gno.land/r/demo/defi/foo20", "Approve", "grc20", "to_amount"),
    ("gno.land/r/demo/defi/foo20", "TransferFrom", "grc20", "from_to_amount"),
    ("gno.land/r/demo/defi/foo20", "Faucet", "grc20", "none"),
    ("gno.land/r/demo/defi/grc20factory", "New", "grc20", "factory_new"),
    ("gno.land/r/demo/defi/grc20factory", "Transfer", "grc20", "symbol_to_amount"),
    ("gno.land/r/demo/defi/grc20factory", "Burn", "grc20", "symbol_from_amount"),
    # A token written before grc20 emitted events: the realm emits its own Transfer,
    # with no token attribute, under its own pkg_path.
    ("gno.land/r/gnoswap/gns", "Transfer", "legacy20", "to_amount"),
    # GRC721 (gno.land/p/demo/tokens/grc721): Transfer has tokenId, not value.
    ("gno.land/r/demo/foo721", "Mint", "grc721", "to_tid"),
    ("gno.land/r/demo/foo721", "TransferFrom", "grc721", "from_to_tid"),
)

_COMMON_CALLS = tuple(call for call in _CALLS if call[3] != "factory_new")

GRC20_PKG = "gno.land/p/demo/tokens/grc20"
GRC721_PKG = "gno.land/p/demo/tokens/grc721"
# The tokens of the GRC20 realms above: grc20.NewToken makes the id
# "<realm>.<SYMBOL>.<seqid>" (token.gno), seqid printed as 7 cford32 digits.
_REALM_TOKENS = {
    "gno.land/r/gnoland/wugnot": "gno.land/r/gnoland/wugnot.wugnot.0000000",
    "gno.land/r/demo/defi/foo20": "gno.land/r/demo/defi/foo20.FOO.0000000",
}
# grc20factory.New(name, symbol, decimals, initialMint, faucet): its seqid starts at 1.
_FACTORY_TOKENS = (("Test Token", "TEST", "6"), ("Moon", "MOON", "2"), ("River", "RIVER", "0"))
_FOO721 = "gno.land/r/demo/foo721.FNFT"  # grc721 BasicNFT.ID(): "<realm>.<SYMBOL>"
# grc20.NewToken("Foo", "FOO", 4, ...) in a deployed package's source: its init emits
# NewToken when the package is added (and mints to the deployer).
_NEW_TOKEN_CALL = re.compile(r'grc20\.NewToken\(\s*"([^"\\]{1,40})",\s*"([A-Za-z0-9]{1,11})",\s*(\d{1,2})')

_FAILURES = (
    ("out of gas error", "std.OutOfGasError"),
    ("insufficient funds error", "std.InsufficientFundsError"),
    ("insufficient coins error", "std.InsufficientCoinsError"),
    ("unauthorized error", "std.UnauthorizedError"),
    ("invalid package path", "vm.InvalidPkgPathError"),
)

_WORDS = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "omega",
    "gopher",
    "realm",
    "board",
    "block",
    "chain",
    "moon",
    "sun",
    "river",
    "stone",
    "cloud",
    "spark",
    "tiger",
    "maple",
)


def _gno_source(rng: random.Random, name: str) -> str:
    lines = [f"package {name}", "", 'import "strconv"', ""]
    for i in range(rng.randint(1, 6)):
        word = rng.choice(_WORDS)
        lines += [
            f"var {word}{i} = {rng.randint(0, 10_000)}",
            "",
            f"func {word.capitalize()}{i}(n int) string {{",
            f"\treturn strconv.Itoa({word}{i} + n)",
            "}",
            "",
        ]
    lines += ["func Render(_ string) string {", f'\treturn "# {name}"', "}", ""]
    return "\n".join(lines)


def _token_source(
    rng: random.Random, name: str, token: tuple[str, str, int] | None = None
) -> str:
    """A GRC20 token realm's source, like gno.land/r/demo/defi/foo20: its init creates
    the token (grc20.NewToken emits NewToken) and mints the supply to the deployer.
    ``token`` is (name, symbol, decimals), made from ``name`` when not given."""
    if token is None:
        token = (name.capitalize(), "".join(c for c in name.upper() if c.isalnum())[:11], rng.choice((0, 4, 6)))
    token_name, symbol, decimals = token
    supply = rng.randint(1, 10**9) * 10**decimals
    return (
        f"package {name}\n\nimport (\n\t\"gno.land/p/demo/tokens/grc20\"\n)\n\n"
        "var (\n\tToken  *grc20.Token\n\tledger *grc20.PrivateLedger\n)\n\n"
        "func init(cur realm) {\n"
        f'\tToken, ledger = grc20.NewToken("{token_name}", "{symbol}", {decimals}, 0, cur)\n'
        f"\tledger.Mint(cur.Previous().Address(), {supply})\n}}\n"
    )


def _gno_source_sized(rng: random.Random, name: str, size: int) -> str:
    """Generated Gno source of about ``size`` bytes."""
    parts = [f"package {name}\n\nimport (\n\t\"strconv\"\n\t\"strings\"\n)\n"]
    length, i = len(parts[0]), 0
    while length < size:
        word = rng.choice(_WORDS)
        func = f"{word.capitalize()}{i}"
        part = (
            f"\n// {func} lists the {word} values from {word}{i} up to n.\n"
            f"func {func}(n int) string {{\n\tparts := []string{{}}\n"
            f"\tfor j := 0; j < n; j++ {{\n\t\tparts = append(parts, strconv.Itoa({word}{i} + j))\n\t}}\n"
            f'\treturn strings.Join(parts, ",")\n}}\n\nvar {word}{i} = {rng.randint(0, 10_000)}\n'
        )
        parts.append(part)
        length += len(part)
        i += 1
    return "".join(parts)


_PACKAGE_CLAUSE = re.compile(r"^package\s+\w+", re.MULTILINE)


@functools.lru_cache(maxsize=4)
def _gno_sources(paths: tuple[Path, ...]) -> tuple[str, ...]:
    """The Gno files (bodies, each once) of the ``m_addpkg`` and ``m_run`` messages in
    these amino-JSON exports, in timestamp order."""
    bodies: dict[str, None] = {}
    for _, tx in _load_txs_files(list(paths)) if paths else ():
        for msg in tx.get("msg") or []:
            if msg.get("@type") not in ("/vm.m_addpkg", "/vm.m_run"):
                continue
            for file in (msg.get("package") or {}).get("files") or []:
                if str(file.get("name", "")).endswith(".gno") and file.get("body"):
                    bodies.setdefault(file["body"], None)
    return tuple(bodies)


# Realms the genesis deploys at these indexes (the others are gno.land/{r,p}/sys/...):
# as on gno.land, whose genesis adds the examples, token realms' init emits NewToken
# and the mint of their supply at height 0. (path, NewToken name, symbol, decimals)
_GENESIS_REALMS: dict[int, tuple[str, str, str, int] | tuple[str]] = {
    1: ("gno.land/r/demo/defi/foo20", "Foo", "FOO", 4),
    2: ("gno.land/r/gnoland/wugnot", "wrapped GNOT", "wugnot", 0),
    3: ("gno.land/r/demo/defi/grc20factory",),
    4: ("gno.land/r/demo/foo721",),
    5: ("gno.land/r/gnoswap/gns",),
}


def _genesis_package(rng: random.Random, index: int, sources: tuple[str, ...]) -> dict[str, Any]:
    """A package for genesis: a few files (one to 16, four on average) taken from the
    real ``sources`` when there are any (renamed into this package), else generated
    with sizes spread like real ones (median about 1 KB, a few tens of KB at most)."""
    realm = _GENESIS_REALMS.get(index)
    if realm is not None:
        path = realm[0]
        name = path.rsplit("/", 1)[1]
    else:
        word = _WORDS[index % len(_WORDS)]
        name = f"{word}{index}"
        path = f"gno.land/{'r' if index % 4 == 0 else 'p'}/sys/{name}"
    files = []
    for number in range(min(16, 1 + int(rng.expovariate(1 / 3)))):
        if sources:
            body = _PACKAGE_CLAUSE.sub(f"package {name}", rng.choice(sources), count=1)
        else:
            size = min(64_000, int(rng.lognormvariate(math.log(1_300), 1.1)))
            body = _gno_source_sized(rng, name, size)
        file_name = f"{name}.gno" if number == 0 else f"{rng.choice(_WORDS)}{number}.gno"
        files.append({"name": file_name, "body": body})
    if realm is not None and len(realm) == 4:
        _, token_name, symbol, decimals = realm
        files.append({"name": "token.gno", "body": _token_source(rng, name, (token_name, symbol, decimals))})
    files.append({"name": "gnomod.toml", "body": f'module = "{path}"\ngno = "0.9"\n'})
    return {"name": name, "path": path, "files": files}


def _gno_event(event_type: str, pkg_path: str, *pairs: str) -> dict[str, Any]:
    """A GnoEvent as tx-indexer serves chain.Emit(type, k1, v1, k2, v2, ...)."""
    attrs = [{"key": pairs[i], "value": pairs[i + 1]} for i in range(0, len(pairs), 2)]
    return {"__typename": "GnoEvent", "type": event_type, "pkg_path": pkg_path, "attrs": attrs}


def _grc20_transfer(token: str, sender: str, to: str, value: str) -> dict[str, Any]:
    # grc20 token.gno: Transfer (from, to), Mint (from ""), Burn (to "").
    return _gno_event("Transfer", GRC20_PKG, "token", token, "from", sender, "to", to, "value", value)


def _token_events(
    flavour: str, pkg_path: str, func: str, caller: str, args: list[str], send: str
) -> list[dict[str, Any]]:
    """The events of a call to one of _CALLS' token realms. The devnet keeps no ledger,
    so balances summed from them can go below zero, as a history synced from the
    middle of a chain can."""
    if flavour == "grc721":  # grc721 basic_nft.gno: mint has from ""
        sender, to, tid = ("", args[0], args[1]) if func == "Mint" else (args[0], args[1], args[2])
        return [_gno_event("Transfer", GRC721_PKG, "token", _FOO721, "from", sender, "to", to, "tokenId", tid)]
    if flavour == "legacy20":  # a realm's own Transfer, before grc20 had a token id
        return [_gno_event("Transfer", pkg_path, "from", caller, "to", args[0], "value", args[1])]
    if pkg_path == "gno.land/r/demo/defi/grc20factory":
        if func == "New":
            name, symbol, decimals, supply = args[:4]
            token = _factory_token(symbol)
            return [
                _gno_event("NewToken", GRC20_PKG, "token", token, "name", name, "symbol", symbol,
                           "decimals", decimals),
                _grc20_transfer(token, "", caller, supply),
            ]
        token = _factory_token(args[0])
        if func == "Burn":
            return [_grc20_transfer(token, args[1], "", args[2])]
        return [_grc20_transfer(token, caller, args[1], args[2])]
    token = _REALM_TOKENS[pkg_path]
    if func == "Deposit":  # wugnot mints the ugnot sent with the call
        return [_grc20_transfer(token, "", caller, send.removesuffix(UGNOT))]
    if func == "Withdraw":
        return [_grc20_transfer(token, caller, "", args[0])]
    if func == "Faucet":
        return [_grc20_transfer(token, "", caller, "10000000")]
    if func == "Approve":
        return [_gno_event("Approval", GRC20_PKG, "token", token, "owner", caller, "spender", args[0],
                           "value", args[1])]
    if func == "TransferFrom":  # the caller spends its allowance; the event names the owner
        return [_grc20_transfer(token, args[0], args[1], args[2])]
    return [_grc20_transfer(token, caller, args[0], args[1])]


def _factory_token(symbol: str) -> str:
    number = next((i for i, t in enumerate(_FACTORY_TOKENS, 1) if t[1] == symbol), 0)
    return f"gno.land/r/demo/defi/grc20factory.{symbol}.{number:07d}"


def _new_token_events(
    path: str, files: list[dict[str, Any]], creator: str, rng: random.Random
) -> list[dict[str, Any]]:
    """What a realm's init emits when it is added: NewToken (and the mint of its
    supply) for each grc20.NewToken call in its source."""
    events = []
    for file in files:
        body = file.get("body") if isinstance(file, dict) else None
        if not isinstance(body, str) or "grc20.NewToken(" not in body:
            continue
        for name, symbol, decimals in _NEW_TOKEN_CALL.findall(body):
            token = f"{path}.{symbol}.0000000"
            events.append(
                _gno_event("NewToken", GRC20_PKG, "token", token, "name", name, "symbol", symbol,
                           "decimals", decimals)
            )
            if creator:
                events.append(_grc20_transfer(token, "", creator, str(rng.randint(1, 10**15))))
    return events


_SIGNATURE_SLOT = "@@gnosync-devnet-signature@@"


@dataclass(slots=True)
class _Template:
    """A pre-made transaction that others copy, each with a signature of its own.

    Its content bytes are ``prefix + signature + suffix``; its views' parts that do not
    depend on the signature are made once and shared by every copy.
    """

    msg: list[dict[str, Any]]
    fee: dict[str, str]
    memo: str
    pub_key: Any
    prefix: bytes
    suffix: bytes
    result: dict[str, Any]
    block_fee: dict[str, Any]
    gas_fee: dict[str, Any]
    messages: list[dict[str, Any]]
    response: dict[str, Any]
    encoded: Any = None  # what gnosync.devnet.fragments keeps about it

    @classmethod
    def make(cls, amino: dict[str, Any], result: dict[str, Any]) -> _Template:
        pub_key = (amino.get("signatures") or [{}])[0].get("pub_key")
        shaped = dict(amino)
        shaped["signatures"] = [{"pub_key": pub_key, "signature": _SIGNATURE_SLOT}]
        prefix, suffix = orjson.dumps(shaped).split(_SIGNATURE_SLOT.encode())
        fee = amino.get("fee") or {}
        return cls(
            msg=amino.get("msg") or [],
            fee=fee,
            memo=amino.get("memo") or "",
            pub_key=pub_key,
            prefix=prefix,
            suffix=suffix,
            result=result,
            block_fee={
                "gas_wanted": _int(fee.get("gas_wanted")),
                "gas_fee": _coin(fee.get("gas_fee") or ""),
            },
            gas_fee=_coin(fee.get("gas_fee") or ""),
            messages=[graphql_message(m) for m in amino.get("msg") or []],
            response={
                "log": result["log"],
                "info": result["info"],
                "error": result["error"],
                "data": result["data"],
                "events": result["events"],
            },
        )


# A templated transaction, lightly: template, signature, content, digest, base64 hash.
_Light = tuple[_Template, bytes, bytes, bytes, bytes]


@dataclass(slots=True)
class _Tx:
    """One transaction: its amino JSON, content bytes and (made-up) result."""

    height: int
    index: int
    amino: dict[str, Any]
    content: bytes
    digest: bytes
    hash: str
    result: dict[str, Any]
    template: _Template | None = None
    # Whether tx-indexer can amino-decode it: if not, Block.txs leaves it out and
    # getTransactions serves a zero std.Tx's memo, fee and messages.
    decodable: bool = True
    _raw: str | None = None
    _block_view: dict[str, Any] | None = None
    _full_view: dict[str, Any] | None = None

    @property
    def content_raw(self) -> str:
        """``Tx{<HEX>}``, as tm2's ``Tx.String()`` prints the content bytes."""
        if self._raw is None:
            self._raw = "Tx{" + self.content.hex().upper() + "}"
        return self._raw

    def block_view(self) -> dict[str, Any]:
        """tx-indexer's ``BlockTransaction``."""
        if self._block_view is None:
            template = self.template
            if template is not None:
                fee_view, memo = template.block_fee, template.memo
            else:
                fee = self.amino.get("fee") or {}
                fee_view = {
                    "gas_wanted": _int(fee.get("gas_wanted")),
                    "gas_fee": _coin(fee.get("gas_fee") or ""),
                }
                memo = self.amino.get("memo") or ""
            self._block_view = {
                "hash": self.hash,
                "fee": fee_view,
                "memo": memo,
                "content_raw": self.content_raw,
            }
        return self._block_view

    def full_view(self) -> dict[str, Any]:
        """tx-indexer's ``Transaction``."""
        if self._full_view is None:
            result = self.result
            template = self.template
            if not self.decodable:
                # serve/graph/model/transaction.go, getStdTx: when amino.Unmarshal fails
                # it keeps a zero std.Tx, whose memo, fee and messages are empty.
                memo, gas_fee, messages = "", {"amount": 0, "denom": ""}, []
            elif template is not None:
                memo, gas_fee, messages = template.memo, template.gas_fee, template.messages
            else:
                fee = self.amino.get("fee") or {}
                memo = self.amino.get("memo") or ""
                gas_fee = _coin(fee.get("gas_fee") or "")
                messages = [graphql_message(m) for m in self.amino.get("msg") or []]
            if template is not None:
                response = template.response
            else:
                response = {
                    "log": result["log"],
                    "info": result["info"],
                    "error": result["error"],
                    "data": result["data"],
                    "events": result["events"],
                }
            self._full_view = {
                "index": self.index,
                "hash": self.hash,
                "success": result["success"],
                "block_height": self.height,
                "gas_wanted": result["gas_wanted"],
                "gas_used": result["gas_used"],
                "gas_fee": gas_fee,
                "content_raw": self.content_raw,
                "memo": memo,
                "messages": messages,
                "response": response,
            }
        return self._full_view


def block_txs(txs: list[_Tx]) -> list[dict[str, Any]]:
    """``Block.txs`` of a block holding ``txs``: tx-indexer leaves out every transaction
    it cannot amino-decode (serve/graph/model/block.go, ``getTxs``: a nil
    ``NewBlockTransaction`` is skipped), though ``num_txs`` counts it and
    ``getTransactions`` serves it."""
    return [tx.block_view() for tx in txs if tx.decodable]


def _load_txs_files(paths: list[Path]) -> list[tuple[int, dict[str, Any]]]:
    """(timestamp, amino tx) of every line, in timestamp order (file order for ties).

    Lines are ``{"tx": {...}, "metadata": {"timestamp": "<unix seconds>"}}`` (the
    tx-exports format) or a bare amino-JSON transaction.
    """
    entries: list[tuple[int, int, dict[str, Any]]] = []
    seen: set[bytes] = set()
    for path in paths:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = orjson.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                    tx = record.get("tx", record)
                    if not isinstance(tx, dict) or not isinstance(tx.get("msg"), list):
                        raise ValueError("no 'msg' list")
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    raise ValueError(
                        f"{path}:{number}: not an amino-JSON transaction: {exc}"
                    ) from None
                # A chain never includes the same transaction twice (the signer's
                # sequence forbids it): keep the first copy, so hashes stay unique.
                digest = hashlib.sha256(orjson.dumps(tx)).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                metadata = record.get("metadata") or {}
                entries.append((_int(metadata.get("timestamp")), len(entries), tx))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return [(timestamp, tx) for timestamp, _, tx in entries]


# ------------------------------------------------------------------------- chain


class Chain:
    """A deterministic chain. See the module docstring for its shape and quirks.

    Thread-safe: one thread may ``append_block`` or ``reset`` while others read; a
    reader that must see one chain across several calls (a whole request) holds
    :attr:`lock`.
    """

    def __init__(self, config: ChainConfig | None = None):
        self.config = config = config or ChainConfig()
        self._lock = threading.RLock()
        self.lowest = 0 if config.genesis else 1
        self._tip = config.blocks
        self._key = hashlib.sha256(
            f"gnosync-devnet\x00{config.seed}\x00{config.chain_id}".encode()
        ).digest()
        self._key64 = int.from_bytes(self._key[:8], "big")
        self._start_ns = int(config.start_time.timestamp()) * _NS + (
            config.start_time.microsecond * 1000
        )
        self._genesis_time = format_time_ns(self._start_ns)

        self.accounts = [bech32_address(self._digest(b"account", i)[:20]) for i in range(48)]
        self.validators = [bech32_address(self._digest(b"validator", i)[:20]) for i in range(4)]
        self._validators_hash = _b64(self._digest(b"validators"))
        self._consensus_hash = _b64(self._digest(b"consensus"))
        self._zero_address = bech32_address(bytes(20))
        self._header_prefix = self._key + config.chain_id.encode()

        # Placement: the heights >= 1 that carry transactions, ascending, with the
        # running total of transactions through each (genesis not counted).
        self._tx_heights: list[int] = []
        self._tx_cum: list[int] = []
        self._tx_count: dict[int, int] = {}
        # Exported transactions by height, over 1..file_span; file_heights lists those
        # heights ascending, the first file_next of them already placed.
        self._file_pool: dict[int, list[dict[str, Any]]] = {}
        self._file_heights: list[int] = []
        self._file_next = 0
        self._file_span = 0
        self._placed_upto = 0
        self._sparse_rng = random.Random(int.from_bytes(self._digest(b"sparse")[:16], "big"))
        self._next_sparse = 0
        # Heights of odd transactions (hostile_txs, undecodable_txs), ascending; the
        # first special_next of them already placed.
        self._special: dict[int, str] = dict.fromkeys(config.hostile_txs, "hostile")
        self._special.update(dict.fromkeys(config.undecodable_txs, "undecodable"))
        self._special_heights = sorted(self._special)
        self._special_next = 0
        # Transactions read from config.txs_files (duplicates dropped), for the banner.
        self.loaded_txs = 0
        if config.txs_files:
            self._file_span = config.txs_span or max(1, config.blocks)
            loaded = _load_txs_files(config.txs_files)
            self.loaded_txs = len(loaded)
            self._pool_file_txs(loaded, self._file_span)
        self._next_sparse = self._file_span + 1 + self._sparse_gap()
        self._extend_placement(self._tip)
        self._templates: list[_Template] | None = None

        # Block hashes of heights 1..hashed_upto, 32 bytes each.
        self._hashes = bytearray()
        self._hashed_upto = 0
        self._data_hashes: dict[int, bytes] = {}
        self._app_hash_cache: dict[int, str] = {}

        # Transactions: a bounded cache of materialised heights, and the hash index.
        self._tx_cache: OrderedDict[int, list[_Tx]] = OrderedDict()
        self._tx_cached = 0  # transactions in _tx_cache
        # base64 hash -> height << 32 | index, for heights 1..indexed_upto (and
        # genesis); filled on the first lookup by hash, as few clients make any.
        self._by_hash: dict[str, int] = {}
        self._indexed_upto = 0
        # Templated transactions made while hashing, kept for the encoder that follows.
        self._recent_lights: OrderedDict[int, list[_Light]] = OrderedDict()
        self._recent_light_txs = 0
        # Encoded answers (gnosync.devnet.fragments), made on first use; and whoever
        # listens for new blocks (kept across resets).
        self._fragments: Any = None
        self._listeners: list[Callable[[int], None]] = []
        self._genesis: list[_Tx] = self._make_genesis() if config.genesis else []
        for tx in self._genesis:
            self._by_hash.setdefault(tx.hash, tx.index)

    # ------------------------------------------------------------------ basics

    @property
    def tip(self) -> int:
        """The newest height (tx-indexer's ``latestBlockHeight``)."""
        return self._tip

    @property
    def chain_id(self) -> str:
        return self.config.chain_id

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read several things consistently while other threads grow or
        reset the chain (the executor holds it for each request)."""
        return self._lock

    def reset(self, chain_id: str | None = None, seed: int | None = None) -> None:
        """Serve another chain at the same heights from now on: the lowest height and
        the tip stay, everything else (hashes, times, transactions) changes.

        ``chain_id`` replaces the chain id when given; ``seed`` replaces the seed
        (default: the current seed + 1, so the hashes always change). The new chain is
        exactly ``Chain(ChainConfig(..., blocks=<tip>, chain_id=..., seed=...))``, grown
        to the tip if the chain grew meanwhile.
        """
        with self._lock:
            config = dataclasses.replace(
                self.config,
                blocks=self._tip,
                chain_id=self.config.chain_id if chain_id is None else chain_id,
                seed=self.config.seed + 1 if seed is None else seed,
            )
        fresh = Chain(config)  # built outside the lock: readers are not held up
        with self._lock:
            while fresh._tip < self._tip:
                fresh.append_block()
            state = dict(fresh.__dict__)
            del state["_lock"]
            del state["_listeners"]
            self.__dict__.update(state)

    def __len__(self) -> int:
        return self._tip - self.lowest + 1

    def _digest(self, label: bytes, *numbers: int) -> bytes:
        data = self._key + label + b"".join(n.to_bytes(8, "big", signed=True) for n in numbers)
        return hashlib.sha256(data).digest()

    def append_block(self) -> int:
        """Grow the chain by one block; return the new tip.

        Listeners hear of the block once it is stored (after the lock is released).
        """
        with self._lock:
            self._extend_placement(self._tip + 1)
            self._tip += 1
            tip = self._tip
        for listener in tuple(self._listeners):
            listener(tip)
        return tip

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(tip)`` after each new block, in the thread that appended it.

        It must return quickly and never raise (hand the work to another thread or
        event loop). Listeners stay across :meth:`reset`.
        """
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[int], None]) -> None:
        """Stop calling ``listener`` (no error when it was not listening)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def fragments(self) -> Any:
        """The encoded answers kept for this chain (a
        :class:`gnosync.devnet.fragments.Fragments`, made on first use; a reset starts
        a new one)."""
        fragments = self._fragments
        if fragments is None:
            with self._lock:
                if self._fragments is None:
                    from gnosync.devnet.fragments import Fragments

                    self._fragments = Fragments(self)
                fragments = self._fragments
        return fragments

    def _check(self, height: int) -> None:
        if not self.lowest <= height <= self._tip:
            raise KeyError(f"height {height} is outside {self.lowest}..{self._tip}")

    # --------------------------------------------------------------- placement

    def _sparse_gap(self) -> int:
        rate = self.config.tx_rate
        if rate <= 0:
            return 1 << 62
        u = 1.0 - self._sparse_rng.random()  # (0, 1]
        return int(math.log(u) / math.log1p(-rate))

    def _next_dense(self, height: int) -> int:
        """The first height >= ``height`` inside a dense stretch."""
        cfg = self.config
        if cfg.dense_length <= 0:
            return 1 << 62
        if height < cfg.dense_start:
            return cfg.dense_start
        offset = (height - cfg.dense_start) % cfg.dense_every
        if offset < cfg.dense_length:
            return height
        return height + cfg.dense_every - offset

    def _record_placement(self, height: int, count: int) -> None:
        # Readers bisect _tx_heights and then index _tx_cum: extend _tx_cum first.
        total = (self._tx_cum[-1] if self._tx_cum else 0) + count
        self._tx_count[height] = count
        self._tx_cum.append(total)
        self._tx_heights.append(height)

    def _place(self, height: int, count: int) -> None:
        """Record ``count`` transactions at ``height``, after the special heights below
        it; a special height's own transactions replace those ``count`` says."""
        self._place_specials(height - 1)
        specials = self._special_heights
        if self._special_next < len(specials) and specials[self._special_next] == height:
            self._special_next += 1
            count = _SPECIAL_COUNTS[self._special[height]]
        self._record_placement(height, count)

    def _place_specials(self, upto: int) -> None:
        """Record the special heights up to ``upto`` not placed yet."""
        specials = self._special_heights
        while self._special_next < len(specials) and specials[self._special_next] <= upto:
            height = specials[self._special_next]
            self._special_next += 1
            self._record_placement(height, _SPECIAL_COUNTS[self._special[height]])

    def _extend_placement(self, upto: int) -> None:
        """Place transactions on heights ``placed_upto+1..upto``: the exported ones up
        to ``file_span``, generated ones above.

        Placement proceeds strictly in height order and never looks at the tip, so a
        chain grown block by block is identical to one built at that height.
        """
        if self._placed_upto < self._file_span:
            top = min(upto, self._file_span)
            heights, pool, index = self._file_heights, self._file_pool, self._file_next
            while index < len(heights) and heights[index] <= top:
                self._place(heights[index], len(pool[heights[index]]))
                index += 1
            self._file_next = index
            self._place_specials(top)
            self._placed_upto = max(self._placed_upto, top)
            if upto <= self._file_span:
                return
        cursor = self._placed_upto + 1
        low, high = self.config.dense_txs
        while cursor <= upto:
            dense = self._next_dense(cursor)
            height = min(dense, self._next_sparse)
            if height > upto:
                break
            if height == dense:
                count = low + _mix64(self._key64 ^ height) % (high - low + 1)
            else:
                roll = _mix64(self._key64 ^ height) % 100
                count = 1 if roll < 85 else 2 if roll < 95 else 3 + roll % 2
            while self._next_sparse <= height:
                self._next_sparse += 1 + self._sparse_gap()
            self._place(height, count)
            cursor = height + 1
        self._place_specials(upto)
        self._placed_upto = max(self._placed_upto, upto)

    def _pool_file_txs(self, entries: list[tuple[int, dict[str, Any]]], top: int) -> None:
        """Spread the exported transactions over 1..top, in order, by timestamp (they
        are placed as the chain reaches their heights)."""
        if not entries or top < 1:
            return
        first, last = entries[0][0], entries[-1][0]
        span = max(1, last - first)
        for timestamp, tx in entries:
            height = 1 + (timestamp - first) * (top - 1) // span
            self._file_pool.setdefault(height, []).append(tx)
        self._file_heights = sorted(self._file_pool)

    def num_txs(self, height: int) -> int:
        """Transactions in block ``height`` (genesis: the genesis transactions)."""
        if height == 0:
            return len(self._genesis)
        return self._tx_count.get(height, 0)

    def total_txs(self, height: int) -> int:
        """``Block.total_txs``: cumulative from block 1 (genesis: its own count)."""
        if height == 0:
            return len(self._genesis)
        index = bisect.bisect_right(self._tx_heights, height)
        return self._tx_cum[index - 1] if index else 0

    def tx_heights(self, start: int = 0, end: int | None = None) -> list[int]:
        """The heights in ``start..end`` (inclusive, clipped to the chain) that carry txs."""
        end = self._tip if end is None else min(end, self._tip)
        heights: list[int] = []
        if start <= 0 <= end and self._genesis:
            heights.append(0)
        lo = bisect.bisect_left(self._tx_heights, max(start, 1))
        hi = bisect.bisect_right(self._tx_heights, end)
        heights.extend(self._tx_heights[lo:hi])
        return heights

    # ------------------------------------------------------------ transactions

    def _txs_at(self, height: int) -> list[_Tx]:
        """The materialised transactions of a height (cached, regenerated on demand)."""
        if height == 0:
            return self._genesis
        count = self._tx_count.get(height, 0)
        if not count:
            return []
        with self._lock:
            cached = self._tx_cache.get(height)
            if cached is not None:
                self._tx_cache.move_to_end(height)
                return cached
            pool = self._file_pool.get(height)
            if height in self._special:
                txs = self._special_txs(height)
            elif pool is None and self.config.tx_templates:
                txs = self._copy_templates(height, count)
            else:
                rng = random.Random(int.from_bytes(self._digest(b"txs", height)[:16], "big"))
                txs = []
                for index in range(count):
                    amino = pool[index] if pool is not None else self._make_amino(rng)
                    txs.append(self._finish_tx(height, index, amino, rng))
            cache = self._tx_cache
            cache[height] = txs
            self._tx_cached += count
            while self._tx_cached > _TX_CACHE_TXS and len(cache) > 1:
                _, dropped = cache.popitem(last=False)
                self._tx_cached -= len(dropped)
            return txs

    def _template_list(self) -> list[_Template]:
        """The pre-made transactions generated ones copy (``tx_templates`` of them)."""
        templates = self._templates
        if templates is None:
            rng = random.Random(int.from_bytes(self._digest(b"templates")[:16], "big"))
            templates = []
            for _ in range(self.config.tx_templates):
                amino = self._make_amino(rng)
                result = self._make_result(amino, rng, genesis=False)
                templates.append(_Template.make(amino, result))
            self._templates = templates
        return templates

    def _templated(self, height: int) -> bool:
        """Whether the transactions of ``height`` are copies of templates."""
        return (
            height > 0
            and self.config.tx_templates > 0
            and height not in self._file_pool
            and height not in self._special
        )

    def _take_light_txs(self, height: int, count: int) -> list[_Light]:
        """:meth:`_light_txs`, taken from those hashing just made when it did."""
        with self._lock:
            lights = self._recent_lights.pop(height, None)
            if lights is not None:
                self._recent_light_txs -= len(lights)
                return lights
        return self._light_txs(height, count)

    def _light_txs(self, height: int, count: int) -> list[_Light]:
        """The transactions of a templated height, lightly: (template, signature,
        content, digest, base64 hash), without building a transaction object."""
        templates = self._template_list()
        n_templates = len(templates)
        key, key64 = self._key + b"signature", self._key64
        sha256, sha512, b64 = hashlib.sha256, hashlib.sha512, binascii.b2a_base64
        pack = _TX_AT.pack
        base = height * 0x100000001B3
        out = []
        for index in range(count):
            template = templates[_mix64(key64 ^ ((base + index) & _MASK64)) % n_templates]
            signature = b64(sha512(key + pack(height, index)).digest(), newline=False)
            content = template.prefix + signature + template.suffix
            digest = sha256(content).digest()
            out.append((template, signature, content, digest, b64(digest, newline=False)))
        return out

    def _copy_templates(self, height: int, count: int) -> list[_Tx]:
        """The transactions of a height as copies of templates, each with a signature
        of its own (so a hash of its own)."""
        txs = []
        for index, (template, signature, content, digest, tx_hash) in enumerate(
            self._light_txs(height, count)
        ):
            amino = {
                "msg": template.msg,
                "fee": template.fee,
                "signatures": [{"pub_key": template.pub_key, "signature": signature.decode()}],
                "memo": template.memo,
            }
            txs.append(
                _Tx(
                    height=height,
                    index=index,
                    amino=amino,
                    content=content,
                    digest=digest,
                    hash=tx_hash.decode(),
                    result=template.result,
                    template=template,
                )
            )
        return txs

    def _finish_tx(
        self,
        height: int,
        index: int,
        amino: dict[str, Any],
        rng: random.Random,
        result: dict[str, Any] | None = None,
        *,
        decodable: bool = True,
    ) -> _Tx:
        content = json_bytes(amino)
        digest = hashlib.sha256(content).digest()
        return _Tx(
            height=height,
            index=index,
            amino=amino,
            content=content,
            digest=digest,
            hash=_b64(digest),
            result=self._make_result(amino, rng, genesis=height == 0) if result is None else result,
            decodable=decodable,
        )

    def _special_txs(self, height: int) -> list[_Tx]:
        """The transactions of a ``hostile_txs`` or ``undecodable_txs`` height."""
        rng = random.Random(int.from_bytes(self._digest(b"special", height)[:16], "big"))
        if self._special[height] == "undecodable":
            txs = []
            for index in range(_SPECIAL_COUNTS["undecodable"]):
                if index == _UNDECODABLE_INDEX:
                    # A message type tx-indexer's amino registry does not know (one added
                    # to the chain after tx-indexer was built): the node runs it, but
                    # tx-indexer cannot decode the transaction.
                    amino = self._make_amino(rng)
                    amino["msg"] = [{"@type": "/vm.m_call_v2", "caller": self._account(rng)}]
                    txs.append(self._finish_tx(height, index, amino, rng, decodable=False))
                else:
                    txs.append(self._finish_tx(height, index, self._make_amino(rng), rng))
            return txs
        return [
            self._finish_tx(height, index, amino, rng, result)
            for index, (amino, result) in enumerate(self._hostile_pair(rng))
        ]

    def _hostile_pair(self, rng: random.Random) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """A failed call carrying NUL in its memo, an argument and an event attribute
        (emitted before the realm panicked), and a call whose argument, echoed in an
        event attribute, is not UTF-8: nothing in a chain stops either (memos and call
        arguments are bytes to it, and a failed transaction lands in its block)."""
        signatures = [
            {
                "pub_key": {"@type": "/tm.PubKeySecp256k1", "value": _b64(b"\x02" + rng.randbytes(32))},
                "signature": _b64(rng.randbytes(64)),
            }
        ]
        sender, boards = self._account(rng), "gno.land/r/demo/boards"
        title = "Re: \x00 the NUL thread"
        failed = {
            "msg": [
                {
                    "@type": "/vm.m_call",
                    "caller": sender,
                    "send": "",
                    "max_deposit": "",
                    "pkg_path": boards,
                    "func": "CreateThread",
                    "args": ["1", title, "body\x00"],
                }
            ],
            "fee": self._fee(rng, 2_000_000),
            "signatures": signatures,
            "memo": "memo with a NUL: \x00",
        }
        failed_result = {
            "success": False,
            "gas_wanted": 2_000_000,
            "gas_used": rng.randint(100_000, 1_000_000),
            "log": (
                "--= Error =--\nData: vm.VMError{abciError{}}\nMsg Traces:\n"
                f'    0  tm2/pkg/sdk/baseapp.go:733 - panic: invalid title "{title}"\n--= /Error =--\n'
            ),
            "info": "",
            "error": "vm.VMError",
            "data": "",
            "events": [
                {
                    "__typename": "GnoEvent",
                    "type": "ThreadCreated",
                    "pkg_path": boards,
                    "attrs": [{"key": "caller", "value": sender}, {"key": "title", "value": title}],
                }
            ],
        }
        # Latin-1, stray continuation bytes, a UTF-8-encoded surrogate (which Go's
        # decoder rejects too) and a truncated sequence.
        name = go_string(b"caf\xe9 \xff\xfe \xed\xa0\x80 \xe2\x82")
        users = "gno.land/r/gnoland/users/v1"
        bytes_call = {
            "msg": [
                {
                    "@type": "/vm.m_call",
                    "caller": sender,
                    "send": "",
                    "max_deposit": "",
                    "pkg_path": users,
                    "func": "Register",
                    "args": [name],
                }
            ],
            "fee": self._fee(rng, 2_000_000),
            "signatures": signatures,
            "memo": "",
        }
        bytes_result = {
            "success": True,
            "gas_wanted": 2_000_000,
            "gas_used": rng.randint(100_000, 1_000_000),
            "log": "msg:0,success:true,log:,events:[]",
            "info": "",
            "error": "",
            "data": '("ok" string)\n\n',
            "events": [
                {
                    "__typename": "GnoEvent",
                    "type": "Registered",
                    "pkg_path": users,
                    "attrs": [{"key": "caller", "value": sender}, {"key": "name", "value": name}],
                }
            ],
        }
        return [(failed, failed_result), (bytes_call, bytes_result)]

    def _account(self, rng: random.Random) -> str:
        # A few accounts do most of the work, as on a real chain.
        return self.accounts[min(int(rng.expovariate(0.15)), len(self.accounts) - 1)]

    def _profile_args(self, rng: random.Random) -> list[str]:
        """SetStringField(field, value): a name, a website, or an address typed by hand,
        one in three with a mistyped last character (so a bad bech32 checksum)."""
        field = rng.choice(("DisplayName", "Website", "Address", "Address"))
        if field == "DisplayName":
            return [field, f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"]
        if field == "Website":
            return [field, f"https://{rng.choice(_WORDS)}.example"]
        address = self._account(rng)
        if rng.random() < 0.33:
            last = address[-1]
            address = address[:-1] + ("q" if last != "q" else "p")
        return [field, address]

    def _fee(self, rng: random.Random, gas_wanted: int) -> dict[str, str]:
        roll = rng.random()
        if roll < 0.01:
            amount = rng.choice((3_000_000_000, 5_000_000_000, 12_000_000_000))
        elif roll < 0.6:
            amount = 10_000
        elif roll < 0.9:
            amount = 1_000_000
        else:
            amount = rng.randint(1_000, 20_000_000)
        return {"gas_wanted": str(gas_wanted), "gas_fee": f"{amount}{UGNOT}"}

    def _make_msg(self, rng: random.Random, kind: str, sender: str) -> dict[str, Any]:
        if kind == "send":
            amount = rng.choice((1, 1_000, 250_000, 1_000_000, 100_000_000_000)) * rng.randint(1, 9)
            to = self._account(rng)
            if to == sender:
                to = self.accounts[-1]
            coins = f"{amount}{UGNOT}"
            if rng.random() < 0.03:
                # tm2 coins of several denoms, sorted by denom (a realm-issued coin here).
                coins = f"{rng.randint(1, 10**6)}gno.land/r/demo/banktest:gold,{coins}"
            return {
                "@type": "/bank.MsgSend",
                "from_address": sender,
                "to_address": to,
                "amount": coins,
            }
        if kind == "call":
            pkg_path, func, _, arg_kind = rng.choice(_CALLS)
            if arg_kind == "factory_new" and rng.random() < 0.9:
                # New tokens are rare next to their transfers.
                pkg_path, func, _, arg_kind = rng.choice(_COMMON_CALLS)
            if arg_kind in ("none", "deposit"):
                args = None
            elif arg_kind == "name":
                args = [f"{rng.choice(_WORDS)}{rng.randint(100, 999)}"]
            elif arg_kind == "thread":
                args = [
                    str(rng.randint(1, 40)),
                    f"On {rng.choice(_WORDS)}s",
                    "Body text\nwith two lines",
                ]
            elif arg_kind == "reply":
                args = [
                    str(rng.randint(1, 40)),
                    str(rng.randint(1, 500)),
                    str(rng.randint(1, 500)),
                    "+1",
                ]
            elif arg_kind == "comment":
                args = [f"post-{rng.randint(1, 60)}", "Nice write-up, thanks! 🙏"]
            elif arg_kind == "vote":
                args = [str(rng.randint(0, 30)), rng.choice(("YES", "NO", "ABSTAIN"))]
            elif arg_kind == "profile":
                args = self._profile_args(rng)
            elif arg_kind in ("to_amount", "to_tid"):
                args = [self._account(rng), str(rng.randint(1, 10**9))]
            elif arg_kind in ("from_to_amount", "from_to_tid"):
                args = [self._account(rng), self._account(rng), str(rng.randint(1, 10**9))]
            elif arg_kind == "amount":
                args = [str(rng.randint(1, 10**7))]
            elif arg_kind == "factory_new":
                name, symbol, decimals = rng.choice(_FACTORY_TOKENS)
                args = [name, symbol, decimals, str(rng.randint(1, 10**12)), "0"]
            elif arg_kind == "symbol_to_amount":
                symbol = rng.choice(_FACTORY_TOKENS)[1]
                args = [symbol, self._account(rng), str(rng.randint(1, 10**9))]
            elif arg_kind == "symbol_from_amount":
                symbol = rng.choice(_FACTORY_TOKENS)[1]
                args = [symbol, sender, str(rng.randint(1, 10**6))]
            else:
                args = [str(rng.randint(0, 2**40))]
            if arg_kind == "deposit":
                send = f"{rng.randint(1, 10**7)}{UGNOT}"  # Deposit panics without coins
            else:
                send = rng.choice(("", "", "", f"{rng.randint(1, 10**7)}{UGNOT}"))
            msg: dict[str, Any] = {
                "@type": "/vm.m_call",
                "caller": sender,
                "send": send,
                "max_deposit": rng.choice(("", "", f"{rng.randint(1, 10**8)}{UGNOT}")),
                "pkg_path": pkg_path,
                "func": func,
            }
            if args is not None:
                msg["args"] = args
            return msg
        if kind == "addpkg":
            name = f"{rng.choice(_WORDS)}{rng.randint(1, 99)}"
            space = "r" if rng.random() < 0.7 else "p"
            files = [{"name": f"{name}.gno", "body": _gno_source(rng, name)}]
            if space == "r" and rng.random() < 0.25:
                # A token realm: its init's grc20.NewToken emits NewToken on deployment.
                files.append({"name": "token.gno", "body": _token_source(rng, name)})
            if rng.random() < 0.5:
                files.append(
                    {
                        "name": "gnomod.toml",
                        "body": f'module = "gno.land/{space}/{sender}/{name}"\ngno = "0.9"\n',
                    }
                )
            return {
                "@type": "/vm.m_addpkg",
                "creator": sender,
                "package": {
                    "name": name,
                    "path": f"gno.land/{space}/{sender}/{name}",
                    "files": files,
                },
                # Coins sent with a deployment go to the new package's address.
                "send": rng.choice(("", "", "", "", f"{rng.randint(1, 10**6)}{UGNOT}")),
                "max_deposit": rng.choice(("", f"{rng.randint(10**6, 10**9)}{UGNOT}")),
            }
        # run
        body = _gno_source(rng, "main").replace(
            "func Render(_ string) string {",
            'func main() {\n\tprintln(Render(""))\n}\n\nfunc Render(_ string) string {',
        )
        return {
            "@type": "/vm.m_run",
            "caller": sender,
            # Coins sent with a run go to the caller's own run package, i.e. stay theirs.
            "send": rng.choice(("", "", "", f"{rng.randint(1, 10**6)}{UGNOT}")),
            "max_deposit": "",
            "package": {
                "name": "main",
                "path": "",
                "files": [{"name": "script.gno", "body": body}],
            },
        }

    def _make_amino(self, rng: random.Random) -> dict[str, Any]:
        roll = rng.random()
        kind = (
            "send" if roll < 0.74 else "call" if roll < 0.95 else "addpkg" if roll < 0.97 else "run"
        )
        sender = self._account(rng)
        count = 1
        if kind in ("send", "call") and rng.random() < 0.05:
            count = rng.randint(2, 4)
        msgs = [self._make_msg(rng, kind, sender) for _ in range(count)]
        gas_wanted = rng.choice((100_000, 2_000_000, 10_000_000, 50_000_000))
        if kind in ("addpkg", "run"):
            gas_wanted = 50_000_000
        return {
            "msg": msgs,
            "fee": self._fee(rng, gas_wanted),
            "signatures": [
                {
                    "pub_key": {
                        "@type": "/tm.PubKeySecp256k1",
                        "value": _b64(b"\x02" + rng.randbytes(32)),
                    },
                    "signature": _b64(rng.randbytes(64)),
                }
            ],
            "memo": rng.choice(_MEMOS) if rng.random() < 0.06 else "",
        }

    def _make_result(
        self, amino: dict[str, Any], rng: random.Random, *, genesis: bool
    ) -> dict[str, Any]:
        msgs = amino.get("msg") or []
        gas_wanted = _int((amino.get("fee") or {}).get("gas_wanted"))
        failed = not genesis and rng.random() < self.config.failure_rate
        if failed:
            error, data_type = rng.choice(_FAILURES)
            gas_used = (
                gas_wanted
                if error == "out of gas error"
                else rng.randint(gas_wanted // 50 + 1, max(gas_wanted // 2, gas_wanted // 50 + 1))
            )
            return {
                "success": False,
                "gas_wanted": gas_wanted,
                "gas_used": gas_used,
                "log": (
                    f"--= Error =--\nData: {data_type}{{abciError{{}}}}\nMsg Traces:\n"
                    "    0  tm2/pkg/sdk/baseapp.go:733 - msg 0\n--= /Error =--\n"
                ),
                "info": "",
                "error": error,
                "data": "",
                "events": [],
            }
        events: list[dict[str, Any]] = []
        data: list[str] = []
        for msg in msgs:
            kind = msg.get("@type")
            if kind == "/vm.m_call":
                pkg_path = msg.get("pkg_path") or ""
                events.extend(self._call_events(msg, pkg_path, rng))
                roll = rng.random()
                if roll < 0.3:
                    delta = rng.randint(40, 4_000)
                    events.append(self._deposit_event(pkg_path, delta))
                elif roll < 0.36:
                    delta = rng.randint(40, 2_000)
                    events.append(
                        {
                            "__typename": "StorageUnlockEvent",
                            "type": "StorageUnlockEvent",
                            "bytes_delta": -delta,
                            "fee_refund": {"amount": delta * 100, "denom": UGNOT},
                            "pkg_path": pkg_path,
                        }
                    )
                data.append(f'("{rng.choice(_WORDS)}" string)\n\n')
            elif kind == "/vm.m_addpkg":
                package = msg.get("package") or {}
                path = package.get("path") or ""
                files = package.get("files") or []
                size = sum(len((f.get("body") or "").encode()) for f in files)
                if path.startswith("gno.land/r/"):
                    events.extend(_new_token_events(path, files, msg.get("creator") or "", rng))
                events.append(self._deposit_event(path, size * 3 + 600))
            elif kind == "/vm.m_run":
                if rng.random() < 0.5:
                    events.append(
                        {
                            "__typename": "GnoEvent",
                            "type": "ProposalCreated",
                            "pkg_path": "gno.land/r/gov/dao",
                            "attrs": [{"key": "id", "value": str(rng.randint(1, 60))}],
                        }
                    )
                data.append(f"{rng.choice(_WORDS)}\n")
            elif kind == "/bank.MsgSend" and rng.random() < 0.08:
                events.append(
                    {
                        "__typename": "UnknownEvent",
                        "value": orjson.dumps(
                            {
                                "from": msg.get("from_address"),
                                "to": msg.get("to_address"),
                                "coins": msg.get("amount"),
                            }
                        ).decode(),
                    }
                )
        low = max(1, gas_wanted // 20)
        gas_used = rng.randint(low, max(low, gas_wanted * 9 // 10))
        log = "\n".join(f"msg:{i},success:true,log:,events:[]" for i in range(len(msgs)))
        return {
            "success": True,
            "gas_wanted": gas_wanted,
            "gas_used": gas_used,
            "log": log,
            "info": "",
            "error": "",
            "data": "".join(data),
            "events": events,
        }

    @staticmethod
    def _call_events(msg: dict[str, Any], pkg_path: str, rng: random.Random) -> list[dict[str, Any]]:
        """The GnoEvents a successful MsgCall emits, as its realm would."""
        func = msg.get("func") or ""
        caller = msg.get("caller") or ""
        args = msg.get("args") or []
        event_type = next(
            (e for p, f, e, _ in _CALLS if p == pkg_path and f == func), func or "Called"
        )
        if event_type in ("grc20", "legacy20", "grc721"):
            try:
                return _token_events(event_type, pkg_path, func, caller, args, msg.get("send") or "")
            except (IndexError, KeyError, TypeError, ValueError):
                pass  # an exported transaction with other arguments: the plain event
        attrs = [{"key": "caller", "value": caller}]
        for i, arg in enumerate(args[:2]):
            attrs.append({"key": f"arg{i}", "value": arg})
        return [{"__typename": "GnoEvent", "type": event_type, "pkg_path": pkg_path, "attrs": attrs}]

    @staticmethod
    def _deposit_event(pkg_path: str, delta: int) -> dict[str, Any]:
        return {
            "__typename": "StorageDepositEvent",
            "type": "StorageDepositEvent",
            "bytes_delta": delta,
            "fee_delta": {"amount": delta * 100, "denom": UGNOT},
            "pkg_path": pkg_path,
        }

    def _make_genesis(self) -> list[_Tx]:
        """The genesis state's transactions, as gno.land's genesis holds them: package
        deployments (and every eighth a realm call) by the deployer, unsigned (the
        genesis loader gives each signer an empty signature)."""
        config = self.config
        rng = random.Random(int.from_bytes(self._digest(b"genesis")[:16], "big"))
        sources = _gno_sources(tuple(config.genesis_files))
        deployer = self.accounts[0]
        originals = config.genesis_txs - config.genesis_repeats
        aminos: list[dict[str, Any]] = []
        for index in range(originals):
            if index % 8 == 7:
                msg: dict[str, Any] = {
                    "@type": "/vm.m_call",
                    "caller": self.accounts[1 + index % (len(self.accounts) - 1)],
                    "send": "",
                    "max_deposit": "",
                    "pkg_path": "gno.land/r/gnoland/users/v1",
                    "func": "Register",
                    "args": [f"{_WORDS[index % len(_WORDS)]}{index:03d}"],
                }
            else:
                msg = {
                    "@type": "/vm.m_addpkg",
                    "creator": deployer,
                    "package": _genesis_package(rng, index, sources),
                    "send": "",
                    "max_deposit": "",
                }
            aminos.append(
                {
                    "msg": [msg],
                    "fee": {"gas_wanted": "50000000", "gas_fee": f"1000000{UGNOT}"},
                    "signatures": [{"pub_key": None, "signature": None}],
                    "memo": "",
                }
            )
        for _ in range(config.genesis_repeats):
            aminos.append(aminos[rng.randrange(originals)])
        return [self._finish_tx(0, index, amino, rng) for index, amino in enumerate(aminos)]

    def transactions(self, height: int) -> list[dict[str, Any]]:
        """tx-indexer's ``Transaction`` objects of one height, in index order."""
        self._check(height)
        return [tx.full_view() for tx in self._txs_at(height)]

    def transactions_in(self, start: int, end: int) -> list[dict[str, Any]]:
        """Transactions of heights ``start..end`` (inclusive), in height and index order."""
        out: list[dict[str, Any]] = []
        for height in self.tx_heights(start, end):
            out.extend(tx.full_view() for tx in self._txs_at(height))
        return out

    def iter_transactions(
        self, start: int, end: int, *, descending: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Like :meth:`transactions_in`, lazily, optionally newest first."""
        heights = self.tx_heights(start, end)
        if descending:
            for height in reversed(heights):
                for tx in reversed(self._txs_at(height)):
                    yield tx.full_view()
        else:
            for height in heights:
                for tx in self._txs_at(height):
                    yield tx.full_view()

    def transaction_by_hash(self, tx_hash: str) -> dict[str, Any] | None:
        """The transaction with this (base64) hash, or None."""
        with self._lock:
            self._index_hashes(self._tip)
            where = self._by_hash.get(tx_hash)
            if where is None or where >> 32 > self._tip:
                return None
            return self._txs_at(where >> 32)[where & 0xFFFFFFFF].full_view()

    def _index_hashes(self, upto: int) -> None:
        """Index the transactions of heights up to ``upto`` by hash."""
        if upto <= self._indexed_upto:
            return
        by_hash = self._by_hash
        for height in self.tx_heights(self._indexed_upto + 1, upto):
            if height == 0:
                continue
            at = height << 32
            if height not in self._tx_cache and self._templated(height):
                for index, light in enumerate(self._light_txs(height, self._tx_count[height])):
                    by_hash.setdefault(light[4].decode(), at | index)
            else:
                for tx in self._txs_at(height):
                    by_hash.setdefault(tx.hash, at | tx.index)
        self._indexed_upto = upto

    # ------------------------------------------------------------------ blocks

    def _time_ns(self, height: int) -> int:
        if height == 0:
            return self._start_ns
        mixed = _mix64(self._key64 ^ (height * 0x2545F4914F6CDD1D & _MASK64))
        mode = mixed % 100
        rest = mixed >> 8
        if mode < 5:
            offset = (rest % (2 * _NS)) | 1  # full nanosecond precision
        elif mode < 15:
            offset = (rest % 2) * _NS  # a whole second
        elif mode < 40:
            offset = (rest % 2_000_000) * 1_000  # microseconds
        else:
            offset = (rest % 2_000) * 1_000_000  # milliseconds
        return self._start_ns + height * BLOCK_INTERVAL_NS - _NS + offset

    def time_ns(self, height: int) -> int:
        """Block time in nanoseconds since the epoch."""
        self._check(height)
        return self._time_ns(height)

    def _data_hash(self, height: int) -> bytes:
        digest = self._data_hashes.get(height)
        if digest is None:
            if height not in self._tx_cache and self._templated(height):
                # Only digests are needed: skip the transaction objects, and keep the
                # light ones a while for the encoder (gnosync.devnet.fragments).
                lights = self._light_txs(height, self._tx_count.get(height, 0))
                digest = hashlib.sha256(b"".join([light[3] for light in lights])).digest()
                recent = self._recent_lights
                recent[height] = lights
                self._recent_light_txs += len(lights)
                while self._recent_light_txs > _TX_CACHE_TXS and len(recent) > 1:
                    self._recent_light_txs -= len(recent.popitem(last=False)[1])
            else:
                txs = self._txs_at(height)
                digest = hashlib.sha256(b"".join(tx.digest for tx in txs)).digest()
            self._data_hashes[height] = digest
        return digest

    def _ensure_hashed(self, upto: int) -> None:
        if upto <= self._hashed_upto:
            return
        with self._lock:
            height = self._hashed_upto + 1
            if upto < height:
                return
            hashes = self._hashes
            previous = bytes(hashes[-32:]) if height >= 2 else b""
            total = self.total_txs(height - 1) if height >= 2 else 0
            prefix = self._header_prefix
            counts = self._tx_count
            sha256 = hashlib.sha256
            pack = _HEADER.pack
            # The header's time is a function of the key and height, both hashed.
            while height <= upto:
                count = counts.get(height, 0)
                if count:
                    total += count
                    previous = sha256(
                        prefix + pack(height, count, total) + previous + self._data_hash(height)
                    ).digest()
                else:
                    previous = sha256(prefix + pack(height, 0, total) + previous).digest()
                hashes += previous
                height += 1
            self._hashed_upto = upto

    def prepare(
        self, upto: int | None = None, *, step: int = 100_000, encode: bool = False
    ) -> None:
        """Compute block hashes up to ``upto`` (default: the tip) ahead of first use.

        Hashes are otherwise computed on the first request that needs them, which for a
        chain of millions of blocks takes a few seconds. Works in steps so that readers
        of lower heights are not held up.

        With ``encode`` it also encodes the answers to gnosync's queries of heights up
        to ``upto``, from the lowest height, as far as the answer cache holds them
        (:meth:`gnosync.devnet.fragments.Fragments.prepare`); serving them is then
        copying bytes.
        """
        upto = self._tip if upto is None else min(upto, self._tip)
        if encode:
            self.fragments.prepare(upto)
        while self._hashed_upto < upto:
            self._ensure_hashed(min(upto, self._hashed_upto + step))

    def block_hash(self, height: int) -> str:
        """``Block.hash`` (empty for the genesis block, as tx-indexer serves it)."""
        self._check(height)
        if height == 0:
            return ""
        self._ensure_hashed(height)
        return _b64(self._hashes[(height - 1) * 32 : height * 32])

    def _app_hash(self, height: int) -> str:
        # The app state changes only in blocks with transactions.
        index = bisect.bisect_left(self._tx_heights, height)
        return self._app_hash_of(self._tx_heights[index - 1] if index else 0)

    def _app_hash_of(self, state: int) -> str:
        cached = self._app_hash_cache.get(state)
        if cached is None:
            cached = _b64(self._digest(b"app", state))
            if len(self._app_hash_cache) > 65_536:
                self._app_hash_cache.clear()
            self._app_hash_cache[state] = cached
        return cached

    def _genesis_block(self) -> dict[str, Any]:
        count = len(self._genesis)
        return {
            "hash": "",
            "height": 0,
            "version": "",
            "chain_id": self.config.chain_id,
            "time": self._genesis_time,
            "num_txs": count,
            "total_txs": count,
            "app_version": "",
            "last_block_hash": "",
            "last_commit_hash": "",
            "validators_hash": "",
            "next_validators_hash": "",
            "consensus_hash": "",
            "app_hash": "",
            "last_results_hash": "",
            "proposer_address_raw": self._zero_address,
            "txs": block_txs(self._genesis),
        }

    def block(self, height: int) -> dict[str, Any]:
        """tx-indexer's ``Block`` at ``height``, every field."""
        self._check(height)
        return self.blocks_in(height, height)[0]

    def blocks_in(self, start: int, end: int) -> list[dict[str, Any]]:
        """Blocks ``start..end`` (inclusive, clipped to the chain), ascending."""
        start = max(start, self.lowest)
        end = min(end, self._tip)
        if end < start:
            return []
        return list(self.iter_blocks(start, end))

    def iter_blocks(
        self, start: int, end: int, *, descending: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Blocks ``start..end`` (inclusive, clipped to the chain), built lazily."""
        start = max(start, self.lowest)
        end = min(end, self._tip)
        if end < start:
            return
        self._ensure_hashed(end)
        if descending:
            for height in range(end, start - 1, -1):
                yield from self._iter_ascending(height, height)
            return
        yield from self._iter_ascending(start, end)

    def _iter_ascending(self, start: int, end: int) -> Iterator[dict[str, Any]]:
        hashes = self._hashes
        b64encode = base64.b64encode
        sha256 = hashlib.sha256
        counts = self._tx_count
        chain_id = self.config.chain_id
        validators_hash = self._validators_hash
        consensus_hash = self._consensus_hash
        validators = self.validators
        n_validators = len(validators)
        commit_key = self._key + b"commit"
        results_key = self._key + b"results"
        time_ns = self._time_ns
        tx_heights, tx_cum = self._tx_heights, self._tx_cum
        n_tx_heights = len(tx_heights)
        # tx_heights[:after] are the tx heights <= the current height.
        after = bisect.bisect_right(tx_heights, start)
        app_state = -1
        app_hash = ""
        for height in range(start, end + 1):
            if height == 0:
                yield self._genesis_block()
                continue
            while after < n_tx_heights and tx_heights[after] <= height:
                after += 1
            total = tx_cum[after - 1] if after else 0
            # The app state changes only in blocks with transactions: it is that of
            # the last tx height below this one.
            below = after - 1 if after and tx_heights[after - 1] == height else after
            state = tx_heights[below - 1] if below else 0
            if state != app_state:
                app_state, app_hash = state, self._app_hash_of(state)
            offset = (height - 1) * 32
            if height >= 2:
                previous = hashes[offset - 32 : offset]
                last_block_hash = b64encode(previous).decode()
                last_commit_hash = b64encode(sha256(commit_key + previous).digest()).decode()
                if counts.get(height - 1):
                    last_results_hash = b64encode(sha256(results_key + previous).digest()).decode()
                else:
                    last_results_hash = ""
            else:
                last_block_hash = last_commit_hash = last_results_hash = ""
            count = counts.get(height, 0)
            txs = block_txs(self._txs_at(height)) if count else []
            yield {
                "hash": b64encode(hashes[offset : offset + 32]).decode(),
                "height": height,
                "version": VERSION,
                "chain_id": chain_id,
                "time": format_time_ns(time_ns(height)),
                "num_txs": count,
                "total_txs": total,
                "app_version": APP_VERSION,
                "last_block_hash": last_block_hash,
                "last_commit_hash": last_commit_hash,
                "validators_hash": validators_hash,
                "next_validators_hash": validators_hash,
                "consensus_hash": consensus_hash,
                "app_hash": app_hash,
                "last_results_hash": last_results_hash,
                "proposer_address_raw": validators[height % n_validators],
                "txs": txs,
            }

