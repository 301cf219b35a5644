"""Every derived row of stored transactions: the decoding rules, in one place.

A failed transaction (``success`` false) gets its messages, events and accounts but
moves nothing: no coin or GRC20 transfer, no package, no token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from gnosync.decode import shapes
from gnosync.decode.addresses import is_address, package_address

DECODER_VERSION: int = 1  # bump when any derived row would change

_COIN = re.compile(r"([0-9]+)([a-zA-Z][a-zA-Z0-9/:._-]*)")
# GRC20 amounts are int64 (older chains uint64): 38 digits keep numeric(78,0) sums safe.
_GRC20_VALUE = re.compile(r"[0-9]{1,38}")
_DECIMALS = re.compile(r"[0-9]{1,9}")
_INT64 = 1 << 63

_SOURCES = {"BankMsgSend": "send", "MsgCall": "call", "MsgAddPackage": "add_package", "MsgRun": "run"}
_VM_KINDS = frozenset({"MsgCall", "MsgAddPackage", "MsgRun"})


class StoredTx(msgspec.Struct, frozen=True, gc=False):
    """A transaction as ``transactions`` holds it (messages with file bodies split out)."""

    block_height: int
    tx_index: int
    success: bool
    messages: str
    response: str


class Derived(msgspec.Struct, gc=False):
    """Derived rows, each list in its ``gnosync.store.sql`` column order."""

    messages: list[tuple] = msgspec.field(default_factory=list)
    events: list[tuple] = msgspec.field(default_factory=list)
    tx_accounts: list[tuple] = msgspec.field(default_factory=list)
    coin_transfers: list[tuple] = msgspec.field(default_factory=list)
    grc20_transfers: list[tuple] = msgspec.field(default_factory=list)
    packages: list[tuple] = msgspec.field(default_factory=list)
    grc20_tokens: list[tuple] = msgspec.field(default_factory=list)


def _text(value: Any) -> str | None:
    return value if value.__class__ is str else None


def _int(value: Any, bound: int | None = None) -> int | None:
    if value.__class__ is not int:
        return None
    if bound is not None and not -bound <= value < bound:
        return None
    return value


def derive(txs: Iterable[StoredTx]) -> Derived:
    """Every derived row of ``txs`` (in height, index order). Never raises on odd JSON.

    ``packages`` holds the first successful deployment of each path in ``txs``;
    ``grc20_tokens`` one row per token named by a successful transaction's ``NewToken``
    or GRC20 ``Transfer`` event, with its lowest height.
    """
    out = Derived()
    deployed: set[str] = set()
    # token -> [token, pkg_path, name, symbol, decimals, first_height, has NewToken]
    tokens: dict[str, list[Any]] = {}
    for tx in txs:
        _derive_tx(tx, out, deployed, tokens)
    out.grc20_tokens = [tuple(entry[:6]) for entry in tokens.values()]
    return out


def _derive_tx(tx: StoredTx, out: Derived, deployed: set[str], tokens: dict[str, list[Any]]) -> None:
    height, index, success = tx.block_height, tx.tx_index, tx.success
    accounts: dict[tuple[str, str], None] = {}
    message_rows = out.messages
    for msg_index, message in enumerate(shapes.messages(tx.messages)):
        value = message.value
        kind = _text(value.typename) if value is not None else None
        if not kind:
            kind = "UnexpectedMessage"
        sender = to_address = pkg_path = func = args = send = max_deposit = None
        package = None
        if value is not None:
            if kind == "BankMsgSend":
                sender, to_address, send = (
                    _text(value.from_address), _text(value.to_address), _text(value.amount))
            elif kind in _VM_KINDS:
                send, max_deposit = _text(value.send), _text(value.max_deposit)
                if kind == "MsgCall":
                    sender, pkg_path, func = (
                        _text(value.caller), _text(value.pkg_path), _text(value.func))
                    raw_args = value.args
                    if raw_args.__class__ is list:
                        args = [a if a.__class__ is str else None for a in raw_args]
                else:
                    sender = _text(value.creator if kind == "MsgAddPackage" else value.caller)
                    package = value.package
                    if package is not None:
                        pkg_path = _text(package.path)
        message_rows.append((
            height, index, msg_index, _text(message.type_url) or "", _text(message.route) or "",
            kind, sender, to_address, pkg_path, func, args, send, max_deposit, success,
        ))
        if sender:
            accounts[(sender, "sender")] = None
        if to_address:
            accounts[(to_address, "recipient")] = None
        if not success:
            continue
        if send and sender:
            if kind == "BankMsgSend":
                target = to_address
            elif kind == "MsgRun":
                target = sender
            else:
                target = package_address(pkg_path) if pkg_path else None
            if target:
                _coins(out.coin_transfers, height, index, msg_index, sender, target, send,
                       _SOURCES[kind])
        if kind == "MsgAddPackage" and pkg_path and pkg_path not in deployed:
            deployed.add(pkg_path)
            out.packages.append(_package_row(package, pkg_path, sender, height, index, msg_index))
    _derive_events(tx, out, accounts, tokens)
    rows = out.tx_accounts
    for address, role in accounts:
        rows.append((address, height, index, role))


def _coins(rows: list[tuple], height: int, index: int, msg_index: int, sender: str,
           target: str, coins: str, source: str) -> None:
    for coin_index, part in enumerate(coins.split(",")):
        match = _COIN.fullmatch(part)
        if match is None:
            continue
        amount = int(match.group(1))
        if amount > 0:
            rows.append((height, index, msg_index, coin_index, sender, target,
                         match.group(2), amount, source))


def _package_row(package: shapes.Package, path: str, creator: str | None, height: int,
                 index: int, msg_index: int) -> tuple:
    files = package.files if package.files.__class__ is list else []
    size = 0
    for file in files:
        if file.__class__ is not dict:
            continue
        stored = file.get("size")
        if stored.__class__ is int:
            size += stored
        else:
            body = file.get("body")
            if body.__class__ is str:
                size += len(body.encode("utf-8", "surrogatepass"))
    return (path, _text(package.name) or "", creator or "", height, index, msg_index,
            len(files), size, package_address(path))


def _derive_events(tx: StoredTx, out: Derived, accounts: dict[tuple[str, str], None],
                   tokens: dict[str, list[Any]]) -> None:
    height, index, success = tx.block_height, tx.tx_index, tx.success
    event_rows = out.events
    generic: list[Any] | None = None  # the response's events as plain values, when needed
    for event_index, event in enumerate(shapes.events(tx.response)):
        odd = event.__class__ is shapes.OddEvent
        kind = None if odd else event.typename
        if kind == "GnoEvent":
            attrs = event.attrs or []
            event_type, pkg_path = _text(event.type), _text(event.pkg_path)
            event_rows.append((height, index, event_index, kind, event_type, pkg_path,
                               shapes.attrs_json(attrs), None, None, None, None))
            for attr in attrs:
                value = attr.value
                if value.__class__ is str and is_address(value):
                    accounts[(value, "event")] = None
            if success and (event_type == "Transfer" or event_type == "NewToken"):
                _grc20(out, tokens, height, index, event_index, event_type, pkg_path or "", attrs)
        elif kind == "StorageDepositEvent" or kind == "StorageUnlockEvent":
            coin = event.fee_delta if kind == "StorageDepositEvent" else event.fee_refund
            amount = denom = None
            if coin is not None:
                amount, denom = _int(coin.amount), _text(coin.denom)
            event_rows.append((height, index, event_index, kind, _text(event.type),
                               _text(event.pkg_path), None, _int(event.bytes_delta, _INT64),
                               amount, denom, None))
        elif kind == "UnknownEvent":
            raw = event.value
            if raw is not None and raw.__class__ is not str:
                raw = shapes.encode(raw)
            event_rows.append((height, index, event_index, kind, None, None, None, None,
                               None, None, raw))
        else:
            typename = _text(event.typename)
            if odd:
                raw = event.odd  # type: ignore[attr-defined]
            else:  # a kind the typed shape has no fields for: its JSON as served
                if generic is None:
                    generic = shapes.event_list(tx.response)
                raw = shapes.encode(generic[event_index]) if event_index < len(generic) else "null"
            event_rows.append((height, index, event_index, typename or "UnknownEvent", None,
                               None, None, None, None, None, raw))


def _grc20(out: Derived, tokens: dict[str, list[Any]], height: int, index: int,
           event_index: int, event_type: str, pkg_path: str, attrs: list[shapes.Attr]) -> None:
    first: dict[Any, Any] = {}
    for attr in attrs:
        if attr.key.__class__ is str and attr.key not in first:
            first[attr.key] = attr.value
    token = _text(first.get("token"))
    if event_type == "NewToken":
        if not token:
            return
        entry = _token(tokens, token, _realm_of(token), height)
        if not entry[6]:
            decimals = _text(first.get("decimals"))
            entry[2], entry[3] = _text(first.get("name")), _text(first.get("symbol"))
            entry[4] = int(decimals) if decimals and _DECIMALS.fullmatch(decimals) else None
            entry[6] = True
        return
    sender, recipient, value = first.get("from"), first.get("to"), first.get("value")
    if sender.__class__ is not str or recipient.__class__ is not str:
        return
    if value.__class__ is not str or _GRC20_VALUE.fullmatch(value) is None:
        return
    if not sender and not recipient:
        return
    kind = "mint" if not sender else "burn" if not recipient else "transfer"
    if token:
        _token(tokens, token, _realm_of(token), height)
    else:
        token = pkg_path
        _token(tokens, token, pkg_path, height)
    out.grc20_transfers.append((height, index, event_index, token, pkg_path, sender or None,
                                recipient or None, int(value), kind))


def _token(tokens: dict[str, list[Any]], token: str, pkg_path: str, height: int) -> list[Any]:
    entry = tokens.get(token)
    if entry is None:
        entry = tokens[token] = [token, pkg_path, None, None, None, height, False]
    elif height < entry[5]:
        entry[5] = height
    return entry


def _realm_of(token: str) -> str:
    """The realm of a token id ``<realm>.<SYMBOL>[.<n>]``: the text before the first "."
    after the last "/" (all of it when there is none)."""
    dot = token.find(".", token.rfind("/") + 1)
    return token if dot < 0 else token[:dot]
