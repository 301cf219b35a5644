"""The derived tables recomputed from the devnet's own chain data, independently of
gnosync.decode and gnosync.store (it shares no code with them, on purpose).

:func:`derive_all` takes served ``Transaction`` objects (``Chain.transactions(h)``, in
height and index order) and returns every derived table's rows as tuples in the
column order of the decoding rules, so a test can compare them with ``SELECT <those
columns> ... ORDER BY <primary key>``. Strings are sanitized the way gnosync stores
them (:func:`clean`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from typing import Any

import bech32

MESSAGE_COLUMNS = ("block_height", "tx_index", "msg_index", "type_url", "route", "kind", "sender",
                   "to_address", "pkg_path", "func", "args", "send", "max_deposit", "success")
EVENT_COLUMNS = ("block_height", "tx_index", "event_index", "kind", "type", "pkg_path", "attrs",
                 "bytes_delta", "fee_amount", "fee_denom", "raw")
TX_ACCOUNT_COLUMNS = ("address", "block_height", "tx_index", "role")
PACKAGE_FILE_COLUMNS = ("block_height", "tx_index", "msg_index", "name", "body")
PACKAGE_COLUMNS = ("path", "name", "creator", "block_height", "tx_index", "msg_index", "file_count",
                   "bytes", "address")
COIN_TRANSFER_COLUMNS = ("block_height", "tx_index", "msg_index", "coin_index", "from_address",
                         "to_address", "denom", "amount", "source")
GRC20_TRANSFER_COLUMNS = ("block_height", "tx_index", "event_index", "token", "pkg_path",
                          "from_address", "to_address", "amount", "kind")
GRC20_BALANCE_COLUMNS = ("token", "address", "balance", "last_height")
GRC20_TOKEN_COLUMNS = ("token", "pkg_path", "name", "symbol", "decimals", "first_height")

# table -> (columns, primary key) for the comparing test.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "messages": (MESSAGE_COLUMNS, MESSAGE_COLUMNS[:3]),
    "events": (EVENT_COLUMNS, EVENT_COLUMNS[:3]),
    "tx_accounts": (TX_ACCOUNT_COLUMNS, TX_ACCOUNT_COLUMNS),
    "package_files": (PACKAGE_FILE_COLUMNS, PACKAGE_FILE_COLUMNS[:4]),
    "packages": (PACKAGE_COLUMNS, ("path",)),
    "coin_transfers": (COIN_TRANSFER_COLUMNS, COIN_TRANSFER_COLUMNS[:4]),
    "grc20_transfers": (GRC20_TRANSFER_COLUMNS, GRC20_TRANSFER_COLUMNS[:3]),
    "grc20_balances": (GRC20_BALANCE_COLUMNS, ("token", "address")),
    "grc20_tokens": (GRC20_TOKEN_COLUMNS, ("token",)),
}

INVALID = re.compile("[\udc80-\udcff]")
COIN = re.compile(r"([0-9]+)([a-zA-Z][a-zA-Z0-9/:._-]*)")
GRC20_VALUE = re.compile(r"[0-9]{1,38}")
DECIMALS = re.compile(r"[0-9]{1,9}")
SENDER_FIELD = {"BankMsgSend": "from_address", "MsgCall": "caller", "MsgRun": "caller",
                "MsgAddPackage": "creator"}
COIN_SOURCE = {"BankMsgSend": "send", "MsgCall": "call", "MsgAddPackage": "add_package", "MsgRun": "run"}


def clean(value: Any) -> Any:
    """A served string as gnosync stores it: NUL becomes U+FFFD, and bytes that are not
    UTF-8 (the devnet's surrogate escapes) are decoded as UTF-8 with replacement, as
    the README says answers are; other values unchanged."""
    if not isinstance(value, str):
        return value
    value = value.replace("\x00", "\ufffd")
    if INVALID.search(value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def package_address(path: str) -> str:
    """Gno's package address: bech32 "g" of the first 20 bytes of sha256("pkgPath:" + path)."""
    digest = hashlib.sha256(b"pkgPath:" + path.encode()).digest()[:20]
    return bech32.bech32_encode("g", bech32.convertbits(digest, 8, 5))


def is_address(value: Any) -> bool:
    """A bech32 "g" address of 20 bytes whose checksum holds."""
    if not isinstance(value, str) or not value.startswith("g1"):
        return False
    hrp, data = bech32.bech32_decode(value)
    if hrp != "g" or data is None:
        return False
    raw = bech32.convertbits(data, 5, 8, False)
    return raw is not None and len(raw) == 20


def attrs_json(attrs: Any) -> str:
    """The served attrs as canonical JSON text (compare with :func:`canonical_json`)."""
    return canonical_json([{k: clean(v) for k, v in a.items()} for a in attrs or []])


def canonical_json(value: Any) -> str:
    if isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _first(attrs: list[dict[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for attr in attrs or []:
        key = attr.get("key")
        if isinstance(key, str) and key not in found:
            found[key] = clean(attr.get("value"))
    return found


def _message_row(height: int, index: int, position: int, message: dict[str, Any], success: bool) -> tuple:
    value = message.get("value") or {}
    kind = value.get("__typename") or "UnexpectedMessage"
    field = SENDER_FIELD.get(kind)
    sender = clean(value.get(field)) if field else None
    to_address = clean(value.get("to_address")) if kind == "BankMsgSend" else None
    pkg_path = func = args = send = max_deposit = None
    if kind == "MsgCall":
        pkg_path, func = clean(value.get("pkg_path")), clean(value.get("func"))
        args = None if value.get("args") is None else [clean(a) for a in value["args"]]
    elif kind in ("MsgAddPackage", "MsgRun"):
        pkg_path = clean((value.get("package") or {}).get("path"))
    if kind == "BankMsgSend":
        send = clean(value.get("amount"))
    elif kind in ("MsgCall", "MsgAddPackage", "MsgRun"):
        send, max_deposit = clean(value.get("send")), clean(value.get("max_deposit"))
    return (height, index, position, clean(message.get("typeUrl") or ""), clean(message.get("route") or ""),
            kind, sender, to_address, pkg_path, func, args, send, max_deposit, success)


def _event_row(height: int, index: int, position: int, event: dict[str, Any]) -> tuple:
    kind = event.get("__typename")
    if kind == "GnoEvent":
        return (height, index, position, kind, clean(event.get("type")), clean(event.get("pkg_path")),
                attrs_json(event.get("attrs")), None, None, None, None)
    if kind in ("StorageDepositEvent", "StorageUnlockEvent"):
        fee = event.get("fee_delta" if kind == "StorageDepositEvent" else "fee_refund") or {}
        return (height, index, position, kind, clean(event.get("type")), clean(event.get("pkg_path")),
                None, event.get("bytes_delta"), fee.get("amount"), clean(fee.get("denom")), None)
    if kind == "UnknownEvent":
        return (height, index, position, kind, None, None, None, None, None, None, clean(event.get("value")))
    return (height, index, position, kind or "UnknownEvent", None, None, None, None, None, None,
            json.dumps(event))


def _coin_rows(height: int, index: int, position: int, kind: str, value: dict[str, Any]) -> list[tuple]:
    coins = value.get("amount") if kind == "BankMsgSend" else value.get("send")
    sender = value.get(SENDER_FIELD[kind])
    if not coins or not sender:
        return []
    if kind == "BankMsgSend":
        target = value.get("to_address")
    elif kind == "MsgCall":
        target = value.get("pkg_path") and package_address(value["pkg_path"])
    elif kind == "MsgAddPackage":
        path = (value.get("package") or {}).get("path")
        target = path and package_address(path)
    else:
        target = sender
    if not target:
        return []
    rows = []
    for coin_index, part in enumerate(coins.split(",")):
        match = COIN.fullmatch(part)
        if match and int(match.group(1)) > 0:
            rows.append((height, index, position, coin_index, sender, target, match.group(2),
                         int(match.group(1)), COIN_SOURCE[kind]))
    return rows


def _token_realm(token: str) -> str:
    slash = token.rfind("/")
    dot = token.find(".", slash + 1)
    return token if dot < 0 else token[:dot]


def derive_all(txs: list[dict[str, Any]]) -> dict[str, list[tuple]]:
    """Every derived table's rows (see :data:`TABLES`), sorted by primary key."""
    out: dict[str, list[tuple]] = {name: [] for name in TABLES}
    packages: dict[str, tuple] = {}
    tokens: dict[str, dict[str, Any]] = {}
    balances: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, -1])

    def see_token(token: str, pkg_path: str, height: int) -> dict[str, Any]:
        entry = tokens.setdefault(token, {"pkg_path": pkg_path, "first_height": height, "new": None})
        entry["first_height"] = min(entry["first_height"], height)
        return entry

    for tx in txs:
        height, index, success = tx["block_height"], tx["index"], tx["success"]
        accounts: set[tuple[str, str]] = set()
        for position, message in enumerate(tx.get("messages") or []):
            row = _message_row(height, index, position, message, success)
            out["messages"].append(row)
            sender, to_address = row[6], row[7]
            if sender:
                accounts.add((sender, "sender"))
            if to_address:
                accounts.add((to_address, "recipient"))
            value = message.get("value") or {}
            kind = row[5]
            if kind in ("MsgAddPackage", "MsgRun"):
                package = value.get("package") or {}
                files = package.get("files") or []
                names: set[str] = set()
                for file in files:
                    name, body = file.get("name"), file.get("body")
                    if isinstance(name, str) and isinstance(body, str) and name not in names:
                        out["package_files"].append((height, index, position, clean(name), clean(body)))
                    if isinstance(name, str):
                        names.add(name)
                path = clean(package.get("path"))
                if kind == "MsgAddPackage" and success and path and path not in packages:
                    size = sum(len(clean(f.get("body") or "").encode()) for f in files)
                    packages[path] = (path, clean(package.get("name") or ""), sender, height, index,
                                      position, len(files), size, package_address(path))
            if success and kind in COIN_SOURCE:
                out["coin_transfers"].extend(_coin_rows(height, index, position, kind, value))
        events = (tx.get("response") or {}).get("events") or []
        for position, event in enumerate(events):
            out["events"].append(_event_row(height, index, position, event))
            if event.get("__typename") != "GnoEvent":
                continue
            for attr in event.get("attrs") or []:
                if is_address(attr.get("value")):
                    accounts.add((attr["value"], "event"))
            if not success:
                continue
            attrs = _first(event.get("attrs") or [])
            pkg_path = clean(event.get("pkg_path"))
            if event.get("type") == "NewToken" and attrs.get("token"):
                entry = see_token(attrs["token"], _token_realm(attrs["token"]), height)
                if entry["new"] is None:
                    entry["new"] = attrs
            if event.get("type") != "Transfer" or not {"from", "to", "value"} <= attrs.keys():
                continue
            sender, recipient, amount = attrs["from"], attrs["to"], attrs["value"]
            if not isinstance(amount, str) or not GRC20_VALUE.fullmatch(amount) or (not sender and not recipient):
                continue
            if attrs.get("token"):
                token = attrs["token"]
                see_token(token, _token_realm(token), height)
            else:
                token = pkg_path
                see_token(token, pkg_path, height)
            kind = "mint" if not sender else "burn" if not recipient else "transfer"
            out["grc20_transfers"].append((height, index, position, token, pkg_path, sender or None,
                                           recipient or None, int(amount), kind))
            for address, delta in ((sender, -int(amount)), (recipient, int(amount))):
                if address:
                    balance = balances[(token, address)]
                    balance[0] += delta
                    balance[1] = max(balance[1], height)
        out["tx_accounts"].extend((address, height, index, role) for address, role in accounts)

    out["packages"] = list(packages.values())
    out["grc20_balances"] = [(token, address, b, h) for (token, address), (b, h) in balances.items()]
    for token, entry in tokens.items():
        new = entry["new"] or {}
        decimals = new.get("decimals")
        out["grc20_tokens"].append((
            token, entry["pkg_path"], new.get("name"), new.get("symbol"),
            int(decimals) if isinstance(decimals, str) and DECIMALS.fullmatch(decimals) else None,
            entry["first_height"],
        ))
    for name, (columns, key) in TABLES.items():
        positions = [columns.index(k) for k in key]
        out[name].sort(key=lambda row: tuple(row[p] for p in positions))
    return out
