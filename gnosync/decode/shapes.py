"""The stored transaction JSON as typed shapes, decoded fast and never raising.

Leaves are ``Any``: a string field served as a number still decodes, and the rules check
types where they use a value. Only a structural surprise (an object where a list was
served, ...) fails the typed decoder; then the document is decoded generically and each
element converted on its own, so one odd element costs only itself.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec


class Package(msgspec.Struct, gc=False):
    name: Any = None
    path: Any = None
    files: Any = None


class Value(msgspec.Struct, gc=False):
    typename: Any = msgspec.field(default=None, name="__typename")
    from_address: Any = None
    to_address: Any = None
    amount: Any = None
    caller: Any = None
    creator: Any = None
    send: Any = None
    pkg_path: Any = None
    func: Any = None
    args: Any = None
    max_deposit: Any = None
    package: Package | None = None


class Message(msgspec.Struct, gc=False):
    type_url: Any = msgspec.field(default=None, name="typeUrl")
    route: Any = None
    value: Value | None = None


class Attr(msgspec.Struct, gc=False):
    key: Any = None
    value: Any = None


class Coin(msgspec.Struct, gc=False):
    amount: Any = None
    denom: Any = None


class Event(msgspec.Struct, gc=False):
    typename: Any = msgspec.field(default=None, name="__typename")
    type: Any = None
    pkg_path: Any = None
    attrs: list[Attr] | None = None
    bytes_delta: Any = None
    fee_delta: Coin | None = None
    fee_refund: Coin | None = None
    value: Any = None


class OddEvent(Event, gc=False):
    """An event that does not fit :class:`Event`, with its own JSON text (never decoded
    from a document: the decoders build :class:`Event`)."""

    odd: str = "null"


class Response(msgspec.Struct, gc=False):
    events: list[Event] | None = None


_MESSAGES = msgspec.json.Decoder(list[Message])
_RESPONSE = msgspec.json.Decoder(Response)
# Generic decoding keeps every number exact (jsonb does), so re-encoding changes nothing.
_GENERIC = msgspec.json.Decoder(float_hook=Decimal)
_ENCODER = msgspec.json.Encoder(decimal_format="number")

_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, RecursionError)


def generic(text: str) -> Any:
    """``text`` decoded to plain Python values; ``None`` when it is not JSON at all."""
    try:
        return _GENERIC.decode(text)
    except _ERRORS:
        pass
    try:  # what msgspec refuses (numbers out of float range) the standard library reads
        return json.loads(text, parse_float=Decimal, parse_int=int)
    except (ValueError, RecursionError):
        return None


def encode(value: Any) -> str:
    """JSON text of a plain or decoded value."""
    try:
        return _ENCODER.encode(value).decode()
    except _ERRORS:
        return json.dumps(value, default=str)


def messages(text: str) -> list[Message]:
    """The stored messages list; an element that is not a message object decodes as an
    empty message (kind ``UnexpectedMessage``)."""
    try:
        return _MESSAGES.decode(text)
    except _ERRORS:
        pass
    doc = generic(text)
    if not isinstance(doc, list):
        return []
    return [_message(item) for item in doc]


def _message(item: Any) -> Message:
    try:
        return msgspec.convert(item, Message)
    except _ERRORS:
        pass
    if not isinstance(item, dict):
        return Message()
    value = item.get("value")
    decoded: Value | None = None
    if isinstance(value, dict):
        rest = {k: v for k, v in value.items() if k != "package"}
        decoded = msgspec.convert(rest, Value)  # every field is Any: cannot fail
        try:
            decoded.package = msgspec.convert(value.get("package"), Package | None)
        except _ERRORS:
            pass
    return Message(type_url=item.get("typeUrl"), route=item.get("route"), value=decoded)


def events(text: str) -> list[Event]:
    """The stored response's events; one that does not fit the served shapes keeps its
    ``__typename`` (if a string) and its JSON text, as an :class:`OddEvent`."""
    try:
        found = _RESPONSE.decode(text).events
    except _ERRORS:
        return [_event(item) for item in event_list(text)]
    if found is None:
        return []
    return found


def _event(item: Any) -> Event:
    if isinstance(item, dict):
        try:
            return msgspec.convert(item, Event)
        except _ERRORS:
            typename = item.get("__typename")
            return OddEvent(typename=typename if isinstance(typename, str) else None,
                            odd=encode(item))
    return OddEvent(odd=encode(item))


def event_list(text: str) -> list[Any]:
    """The events of a stored response as plain values (``[]`` when it has none)."""
    doc = generic(text)
    items = doc.get("events") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else []


def attrs_json(attrs: list[Attr]) -> str:
    return _ENCODER.encode(attrs).decode()
