"""The decoder's rules, one by one, on small served transactions (no database)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gnosync.decode import (
    DECODER_VERSION,
    Derived,
    StoredTx,
    derive,
    is_address,
    package_address,
    split_files,
)
from gnosync.devnet.chain import graphql_message
from gnosync.store import sql
from gnosync.store.sanitize import clean_json
from tests import shared_files

ALICE = "g1jg8mtutu9khhfwc4nxmuhcpftf0pajdhfvsqf5"  # from gnovm's own tests
BOB = package_address("gno.land/r/test/bob")  # any valid address will do
FAUCET = "gno.land/r/gnoland/faucet"
# Printed by gno's faucet realm filetests ("Package address: ...").
FAUCET_ADDRESS = "g1ttrq7mp4zy6dssnmgyyktnn4hcj3ys8xhju0n7"
TOKEN = "gno.land/r/demo/grc20dupsignal.DUP.0000000"
GRC20 = "gno.land/p/demo/tokens/grc20"


# ------------------------------------------------------------------ served shapes

def send(sender: str = ALICE, to: str = BOB, amount: str = "100ugnot") -> dict[str, Any]:
    return {"typeUrl": "send", "route": "bank", "value": {
        "__typename": "BankMsgSend", "from_address": sender, "to_address": to, "amount": amount}}


def call(pkg: str = FAUCET, func: str = "Go", args: list[str] | None = None,
         send_: str = "", caller: str = ALICE) -> dict[str, Any]:
    return {"typeUrl": "exec", "route": "vm", "value": {
        "__typename": "MsgCall", "caller": caller, "send": send_, "pkg_path": pkg,
        "func": func, "args": args, "max_deposit": ""}}


def add_package(path: str = "gno.land/r/demo/foo", files: list[Any] | None = None,
                send_: str = "", creator: str = ALICE, name: str = "foo") -> dict[str, Any]:
    if files is None:
        files = [{"name": "foo.gno", "body": "package foo\n"}]
    return {"typeUrl": "add_package", "route": "vm", "value": {
        "__typename": "MsgAddPackage", "creator": creator, "send": send_,
        "max_deposit": "5ugnot", "package": {"name": name, "path": path, "files": files}}}


def run(files: list[Any] | None = None, send_: str = "", caller: str = ALICE) -> dict[str, Any]:
    path = f"gno.land/e/{caller}/run"
    files = files if files is not None else [{"name": "main.gno", "body": "package main\n"}]
    return {"typeUrl": "run", "route": "vm", "value": {
        "__typename": "MsgRun", "caller": caller, "send": send_, "max_deposit": "",
        "package": {"name": "main", "path": path, "files": files}}}


def gno_event(type_: str, attrs: list[tuple[str, str]] | None, pkg: str = GRC20) -> dict[str, Any]:
    served = None if attrs is None else [{"key": k, "value": v} for k, v in attrs]
    return {"__typename": "GnoEvent", "type": type_, "pkg_path": pkg, "attrs": served}


def transfer(frm: str, to: str, value: str = "10", token: str | None = TOKEN,
             pkg: str = GRC20) -> dict[str, Any]:
    attrs = [] if token is None else [("token", token)]
    return gno_event("Transfer", attrs + [("from", frm), ("to", to), ("value", value)], pkg)


def stored(messages: Any, events: Any = (), *, success: bool = True, height: int = 5,
           index: int = 0, response: Any = None) -> StoredTx:
    """A transaction as the store would hold it: sanitized, files split out."""
    text, _ = clean_json(orjson.dumps(messages))
    text, _ = split_files(height, index, text)
    if response is None:
        response = {"log": "", "info": "", "error": "", "data": "", "events": list(events)}
    body, _ = clean_json(orjson.dumps(response))
    return StoredTx(height, index, success, text, body)


def one(*args: Any, **kwargs: Any) -> Derived:
    return derive([stored(*args, **kwargs)])


def columns(row: tuple, names: tuple[str, ...]) -> dict[str, Any]:
    assert len(row) == len(names)
    return dict(zip(names, row))


# ------------------------------------------------------------------ addresses

def test_package_address_matches_gno() -> None:
    assert package_address(FAUCET) == FAUCET_ADDRESS
    assert is_address(FAUCET_ADDRESS)


def test_is_address_verifies_the_checksum() -> None:
    assert is_address(ALICE)
    broken = ALICE[:-1] + ("q" if ALICE[-1] != "q" else "p")
    assert not is_address(broken)
    assert not is_address(ALICE.upper())
    assert not is_address("g1" + "q" * 38)
    assert not is_address("")
    assert not is_address("cosmos1jg8mtutu9khhfwc4nxmuhcpftf0pajdhfvsqf5")
    assert not is_address(ALICE + "q")


# ------------------------------------------------------------------ messages

def test_send_message_row_and_accounts() -> None:
    out = one([send(amount="100ugnot,5foo")])
    (row,) = out.messages
    assert columns(row, sql.MESSAGE_COLUMNS) == {
        "block_height": 5, "tx_index": 0, "msg_index": 0, "type_url": "send", "route": "bank",
        "kind": "BankMsgSend", "sender": ALICE, "to_address": BOB, "pkg_path": None,
        "func": None, "args": None, "send": "100ugnot,5foo", "max_deposit": None,
        "success": True}
    assert sorted(out.tx_accounts) == sorted([(ALICE, 5, 0, "sender"), (BOB, 5, 0, "recipient")])
    assert out.coin_transfers == [
        (5, 0, 0, 0, ALICE, BOB, "ugnot", 100, "send"),
        (5, 0, 0, 1, ALICE, BOB, "foo", 5, "send"),
    ]


def test_coin_strings_parts_that_are_not_coins_give_no_row_but_count() -> None:
    out = one([send(amount="0ugnot,abc,7ugnot, 3foo,12x/y:z._-w,9")])
    assert [(r[3], r[6], r[7]) for r in out.coin_transfers] == [(2, "ugnot", 7), (4, "x/y:z._-w", 12)]
    assert one([send(amount="")]).coin_transfers == []
    assert one([send(to="")]).coin_transfers == []
    assert one([send(sender="")]).coin_transfers == []
    huge = "1" * 60
    assert one([send(amount=huge + "ugnot")]).coin_transfers[0][7] == int(huge)


def test_call_with_send_goes_to_the_realm() -> None:
    out = one([call(args=["a", "b"], send_="3ugnot")])
    row = columns(out.messages[0], sql.MESSAGE_COLUMNS)
    assert (row["kind"], row["sender"], row["pkg_path"], row["func"], row["args"],
            row["send"], row["max_deposit"], row["to_address"]) == (
        "MsgCall", ALICE, FAUCET, "Go", ["a", "b"], "3ugnot", "", None)
    assert out.coin_transfers == [(5, 0, 0, 0, ALICE, FAUCET_ADDRESS, "ugnot", 3, "call")]
    assert one([call(args=None)]).messages[0][10] is None


def test_add_package_with_send_and_files() -> None:
    body = "package foo\n// é\n"
    files = [{"name": "foo.gno", "body": body}, {"name": "gno.mod", "body": "module x"}]
    out = one([add_package(files=files, send_="9ugnot")])
    row = columns(out.messages[0], sql.MESSAGE_COLUMNS)
    assert (row["kind"], row["sender"], row["pkg_path"], row["send"], row["max_deposit"]) == (
        "MsgAddPackage", ALICE, "gno.land/r/demo/foo", "9ugnot", "5ugnot")
    address = package_address("gno.land/r/demo/foo")
    assert out.coin_transfers == [(5, 0, 0, 0, ALICE, address, "ugnot", 9, "add_package")]
    assert out.packages == [("gno.land/r/demo/foo", "foo", ALICE, 5, 0, 0, 2,
                             len(body.encode()) + len("module x"), address)]


def test_run_sends_to_its_caller() -> None:
    out = one([run(send_="4ugnot")])
    row = columns(out.messages[0], sql.MESSAGE_COLUMNS)
    assert (row["kind"], row["sender"], row["pkg_path"]) == (
        "MsgRun", ALICE, f"gno.land/e/{ALICE}/run")
    assert out.coin_transfers == [(5, 0, 0, 0, ALICE, ALICE, "ugnot", 4, "run")]
    assert out.packages == []


def test_failed_transaction_moves_nothing() -> None:
    msgs = [send(), call(send_="1ugnot"), add_package(send_="2ugnot"), run(send_="3ugnot")]
    out = one(msgs, [transfer("", ALICE), gno_event("NewToken", [("token", TOKEN)])],
              success=False)
    assert [r[5] for r in out.messages] == ["BankMsgSend", "MsgCall", "MsgAddPackage", "MsgRun"]
    assert all(r[13] is False for r in out.messages)
    assert {(r[0], r[3]) for r in out.tx_accounts} == {
        (ALICE, "sender"), (BOB, "recipient"), (ALICE, "event")}
    assert len(out.events) == 2
    assert (out.coin_transfers, out.packages, out.grc20_transfers, out.grc20_tokens) == (
        [], [], [], [])


def test_accounts_once_per_role() -> None:
    out = one([send(), send(), call()], [gno_event("X", [("a", ALICE), ("b", ALICE)])])
    assert sorted(out.tx_accounts) == sorted([
        (ALICE, 5, 0, "sender"), (BOB, 5, 0, "recipient"), (ALICE, 5, 0, "event")])


def test_packages_first_deployment_per_path() -> None:
    first = stored([add_package(name="a")], height=1)
    failed = stored([add_package(path="gno.land/r/demo/bar")], height=1, index=1, success=False)
    again = stored([add_package(name="b"), add_package(path="")], height=2)
    out = derive([first, failed, again])
    assert [(p[0], p[1], p[3]) for p in out.packages] == [("gno.land/r/demo/foo", "a", 1)]


def test_unexpected_and_missing_fields() -> None:
    msgs = [{"typeUrl": "x", "route": "y", "value": {"__typename": "UnexpectedMessage", "raw": "{}"}},
            {"value": {}}, {}, {"typeUrl": "send", "value": {"__typename": "BankMsgSend"}}]
    out = one(msgs)
    assert [(r[3], r[4], r[5]) for r in out.messages] == [
        ("x", "y", "UnexpectedMessage"), ("", "", "UnexpectedMessage"),
        ("", "", "UnexpectedMessage"), ("send", "", "BankMsgSend")]
    assert all(r[6:13] == (None,) * 7 for r in out.messages)
    assert out.tx_accounts == [] and out.coin_transfers == []


def test_strings_stored_as_served() -> None:
    served = orjson.dumps([call(func="", args=["", "A", "B", "\ufffd"])])
    # As tx-indexer can serve them: a NUL escape, a raw NUL, a lone surrogate.
    served = served.replace(b'"A"', b'"x\\u0000y"').replace(b'"B"', b'"\x00\\ud800"')
    text, changed = clean_json(served)
    assert changed
    out = derive([StoredTx(5, 0, True, text, "{}")])
    row = columns(out.messages[0], sql.MESSAGE_COLUMNS)
    assert row["func"] == ""
    assert row["args"] == ["", "x\ufffdy", "\ufffd\ufffd", "\ufffd"]


# ------------------------------------------------------------------ events

def test_event_kinds() -> None:
    events = [
        gno_event("Registered", [("name", "x"), ("name", "y")], pkg="gno.land/r/u"),
        gno_event("Empty", None, pkg="gno.land/r/u"),
        {"__typename": "StorageDepositEvent", "type": "StorageDepositEvent", "bytes_delta": 700,
         "fee_delta": {"amount": 70000, "denom": "ugnot"}, "pkg_path": "gno.land/r/u"},
        {"__typename": "StorageUnlockEvent", "type": "StorageUnlockEvent", "bytes_delta": -40,
         "fee_refund": {"amount": 4000, "denom": "ugnot"}, "pkg_path": "gno.land/r/u"},
        {"__typename": "UnknownEvent", "value": '{"type":"x"}'},
        {"__typename": "FutureEvent", "what": 1},
        {"no": "typename"},
    ]
    rows = [columns(r, sql.EVENT_COLUMNS) for r in one([send()], events).events]
    assert [r["event_index"] for r in rows] == list(range(7))
    assert rows[0]["kind"] == "GnoEvent" and rows[0]["type"] == "Registered"
    assert json.loads(rows[0]["attrs"]) == [{"key": "name", "value": "x"}, {"key": "name", "value": "y"}]
    assert rows[0]["bytes_delta"] is None and rows[0]["raw"] is None
    assert rows[1]["attrs"] == "[]"
    assert (rows[2]["kind"], rows[2]["type"], rows[2]["pkg_path"], rows[2]["bytes_delta"],
            rows[2]["fee_amount"], rows[2]["fee_denom"], rows[2]["attrs"]) == (
        "StorageDepositEvent", "StorageDepositEvent", "gno.land/r/u", 700, 70000, "ugnot", None)
    assert (rows[3]["kind"], rows[3]["bytes_delta"], rows[3]["fee_amount"]) == (
        "StorageUnlockEvent", -40, 4000)
    assert (rows[4]["kind"], rows[4]["type"], rows[4]["pkg_path"], rows[4]["raw"]) == (
        "UnknownEvent", None, None, '{"type":"x"}')
    assert rows[5]["kind"] == "FutureEvent"
    assert json.loads(rows[5]["raw"]) == {"__typename": "FutureEvent", "what": 1}
    assert rows[6]["kind"] == "UnknownEvent" and json.loads(rows[6]["raw"]) == {"no": "typename"}


def test_null_and_missing_events() -> None:
    assert one([send()], response={"events": None}).events == []
    assert one([send()], response={}).events == []
    assert one([send()], response=None).events == []  # stored() builds an empty list
    out = derive([StoredTx(1, 0, True, "[]", "null")])
    assert out.events == [] and out.messages == []


def test_null_attr_values_and_keys() -> None:
    event = {"__typename": "GnoEvent", "type": "Transfer", "pkg_path": GRC20,
             "attrs": [{"key": "from", "value": None}, {"key": None, "value": ALICE},
                       {"key": "to", "value": ALICE}, {"key": "value", "value": "5"}]}
    out = one([send()], [event])
    assert json.loads(out.events[0][6])[0] == {"key": "from", "value": None}
    assert out.grc20_transfers == []
    assert (ALICE, 5, 0, "event") in out.tx_accounts


def test_event_addresses_need_a_valid_checksum() -> None:
    broken = BOB[:-1] + ("q" if BOB[-1] != "q" else "p")
    out = one([], [gno_event("X", [("a", broken), ("b", FAUCET_ADDRESS), ("c", "g1short")])])
    assert out.tx_accounts == [(FAUCET_ADDRESS, 5, 0, "event")]


# ------------------------------------------------------------------ GRC20

def test_grc20_transfer_mint_burn() -> None:
    events = [transfer("", ALICE, "100"), transfer(ALICE, BOB, "30"), transfer(BOB, "", "5"),
              gno_event("Approval", [("token", TOKEN), ("owner", ALICE), ("spender", BOB),
                                     ("value", "1")])]
    out = one([call()], events)
    assert out.grc20_transfers == [
        (5, 0, 0, TOKEN, GRC20, None, ALICE, 100, "mint"),
        (5, 0, 1, TOKEN, GRC20, ALICE, BOB, 30, "transfer"),
        (5, 0, 2, TOKEN, GRC20, BOB, None, 5, "burn"),
    ]
    assert out.grc20_tokens == [(TOKEN, "gno.land/r/demo/grc20dupsignal", None, None, None, 5)]


def test_grc721_transfer_and_odd_values_are_not_grc20() -> None:
    nft = gno_event("Transfer", [("from", ALICE), ("to", BOB), ("tid", "1")], pkg="gno.land/r/nft")
    events = [nft, transfer(ALICE, BOB, "1" * 39), transfer(ALICE, BOB, "-1"),
              transfer(ALICE, BOB, "1.5"), transfer("", "", "1"), transfer(ALICE, BOB, "")]
    out = one([call()], events)
    assert out.grc20_transfers == [] and out.grc20_tokens == []
    assert one([call()], [transfer(ALICE, BOB, "9" * 38)]).grc20_transfers[0][7] == int("9" * 38)


def test_grc20_first_occurrence_of_each_key_counts() -> None:
    event = gno_event("Transfer", [("from", ALICE), ("to", BOB), ("value", "7"),
                                   ("value", "x"), ("from", BOB)])
    out = one([call()], [event])
    assert out.grc20_transfers == [(5, 0, 0, GRC20, GRC20, ALICE, BOB, 7, "transfer")]


def test_token_attribute_missing_means_the_pkg_path() -> None:
    events = [transfer(ALICE, BOB, token=None, pkg="gno.land/r/demo/foo20"),
              transfer(ALICE, BOB, token="", pkg="gno.land/r/demo/foo20")]
    out = one([call()], events)
    assert [t[3] for t in out.grc20_transfers] == ["gno.land/r/demo/foo20"] * 2
    assert out.grc20_tokens == [("gno.land/r/demo/foo20", "gno.land/r/demo/foo20",
                                 None, None, None, 5)]


def test_new_token_metadata_and_first_height() -> None:
    new = gno_event("NewToken", [("token", "gno.land/r/demo/foo20.FOO"), ("name", "Foo"),
                                 ("symbol", "FOO"), ("decimals", "6")])
    later = gno_event("NewToken", [("token", "gno.land/r/demo/foo20.FOO"), ("name", "Other"),
                                   ("symbol", "O"), ("decimals", "7")])
    odd = gno_event("NewToken", [("token", "gno.land/r/x/bar.v2/baz"), ("decimals", "1234567890")])
    nameless = gno_event("NewToken", [("name", "ghost")])
    txs = [stored([call()], [transfer(ALICE, BOB, token="gno.land/r/demo/foo20.FOO")], height=3),
           stored([call()], [new, later, odd, nameless], height=4)]
    assert derive(txs).grc20_tokens == [
        ("gno.land/r/demo/foo20.FOO", "gno.land/r/demo/foo20", "Foo", "FOO", 6, 3),
        ("gno.land/r/x/bar.v2/baz", "gno.land/r/x/bar.v2/baz", None, None, None, 4),
    ]


def test_token_realm_is_before_the_first_dot_after_the_last_slash() -> None:
    token = "gno.land/r/demo/foo20.FOO.0000001"
    out = one([call()], [gno_event("NewToken", [("token", token)])])
    assert out.grc20_tokens[0][:2] == (token, "gno.land/r/demo/foo20")


# ------------------------------------------------------------------ split_files

def test_split_files_moves_bodies_out() -> None:
    files = [{"name": "a.gno", "body": "package a é"}, {"name": "b.gno", "body": ""}]
    text = orjson.dumps([send(), add_package(files=files), run()]).decode()
    stripped, rows = split_files(7, 3, text)
    assert rows == [(7, 3, 1, "a.gno", "package a é"), (7, 3, 1, "b.gno", ""),
                    (7, 3, 2, "main.gno", "package main\n")]
    doc = json.loads(stripped)
    assert doc[1]["value"]["package"]["files"] == [
        {"name": "a.gno", "size": len("package a é".encode())}, {"name": "b.gno", "size": 0}]
    assert doc[0] == send()
    assert all(len(r) == len(sql.PACKAGE_FILE_COLUMNS) for r in rows)


def test_split_files_duplicate_names_keep_the_later_body_inline() -> None:
    files = [{"name": "a.gno", "body": "one"}, {"name": "a.gno", "body": "two"},
             {"name": 5, "body": "x"}, {"name": "c.gno", "body": None}, "junk"]
    stripped, rows = split_files(1, 0, orjson.dumps([add_package(files=files)]).decode())
    assert rows == [(1, 0, 0, "a.gno", "one")]
    assert json.loads(stripped)[0]["value"]["package"]["files"] == [
        {"name": "a.gno", "size": 3}, {"name": "a.gno", "body": "two"},
        {"name": 5, "body": "x"}, {"name": "c.gno", "body": None}, "junk"]
    out = derive([StoredTx(1, 0, True, stripped, "{}")])
    assert out.packages[0][6:8] == (5, 3 + 3 + 1)  # size, or an inline string body


def test_split_files_unchanged_without_files_or_json() -> None:
    text = orjson.dumps([send()]).decode()
    assert split_files(1, 0, text)[0] is text
    for odd in ('"files"', '[{"files": 1}', '{"files": []}', "[1, \"files\"]",
                '[{"value": {"package": {"files": "x"}}}]'):
        assert split_files(1, 0, odd) == (odd, [])


def test_split_files_keeps_numbers_exact() -> None:
    text = ('[{"n": 1.0000000000000000001, "big": 123456789012345678901234567890, '
            '"value": {"package": {"files": [{"name": "a", "body": "b"}]}}}]')
    stripped, rows = split_files(1, 0, text)
    assert rows == [(1, 0, 0, "a", "b")]
    assert "1.0000000000000000001" in stripped and "123456789012345678901234567890" in stripped


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_file = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["a.gno", "b.gno", "c"]),
                           "body": st.text(max_size=20)}),
    st.fixed_dictionaries({"name": st.sampled_from(["a.gno", "b.gno"]), "body": _json}),
    _json,
)
_message = st.one_of(
    st.builds(lambda files, name: add_package(files=files, name=name), st.lists(_file, max_size=5),
              st.text(max_size=5)),
    st.builds(lambda files: run(files=files), st.lists(_file, max_size=4)),
    st.just(send()),
    _json,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_message, max_size=4))
def test_split_files_round_trip(messages: list[Any]) -> None:
    text, _ = clean_json(json.dumps(messages, ensure_ascii=False).encode())
    stripped, rows = split_files(2, 1, text)
    doc = json.loads(stripped)  # valid JSON
    original = json.loads(text)
    if not rows:
        assert stripped is text
        return
    bodies = {(r[2], r[3]): r[4] for r in rows}
    assert len(bodies) == len(rows)
    for msg_index, message in enumerate(doc):
        files = (((message or {}).get("value") or {}).get("package") or {}).get("files") \
            if isinstance(message, dict) and isinstance(message.get("value"), dict) \
            and isinstance(message["value"].get("package"), dict) else None
        if not isinstance(files, list):
            assert message == original[msg_index]
            continue
        rebuilt = []
        for file in files:
            if isinstance(file, dict) and "size" in file and (msg_index, file.get("name")) in bodies \
                    and "body" not in file:
                body = bodies[(msg_index, file["name"])]
                assert file["size"] == len(body.encode())
                file = {k: v for k, v in file.items() if k != "size"} | {"body": body}
            rebuilt.append(file)
        want = original[msg_index]["value"]["package"]["files"]
        assert [_sorted(f) for f in rebuilt] == [_sorted(f) for f in want]
        assert {k: v for k, v in message.items() if k != "value"} == \
            {k: v for k, v in original[msg_index].items() if k != "value"}


def _sorted(value: Any) -> Any:
    return json.dumps(value, sort_keys=True)


# ------------------------------------------------------------------ never raises

GARBAGE = ["", "nul", "[", "{}", "null", "1e999", "[1e999]", '"x"', "[null]", "[[]]", "[1, 2]",
           '[{"value": []}]', '[{"value": {"package": 3, "__typename": "MsgAddPackage"}}]',
           '[{"value": {"__typename": 7, "caller": 1, "args": [1, "a", null]}}]',
           '[{"typeUrl": 1, "route": [], "value": {"__typename": "MsgCall", "args": "x"}}]',
           '[{"value": {"__typename": "MsgAddPackage", "creator": "' + ALICE + '",'
           ' "package": {"path": "gno.land/r/x", "files": 3}}}]']
RESPONSES = ["", "[", "[]", "null", '{"events": 3}', '{"events": [1, null, "x", []]}',
             '{"events": [{"__typename": "GnoEvent", "attrs": {"a": 1}}]}',
             '{"events": [{"__typename": "GnoEvent", "attrs": [1]}]}',
             '{"events": [{"__typename": "GnoEvent", "type": "Transfer", "attrs": '
             '[{"key": "from", "value": 1}, {"key": ["x"], "value": "y"}]}]}',
             '{"events": [{"__typename": "StorageDepositEvent", "bytes_delta": 1e400,'
             ' "fee_delta": {"amount": "x"}}, {"__typename": "StorageUnlockEvent",'
             ' "bytes_delta": 99999999999999999999, "fee_refund": 3}]}',
             '{"events": [{"__typename": "UnknownEvent", "value": {"a": 1.5}}]}']


@pytest.mark.parametrize("messages", GARBAGE)
@pytest.mark.parametrize("response", RESPONSES)
def test_garbage_never_raises(messages: str, response: str) -> None:
    for success in (True, False):
        out = derive([StoredTx(1, 0, success, messages, response)])
        for rows, names in ((out.messages, sql.MESSAGE_COLUMNS), (out.events, sql.EVENT_COLUMNS)):
            assert all(len(r) == len(names) for r in rows)
    assert split_files(1, 0, messages)[0] == messages


def test_garbage_decodes_what_it_can() -> None:
    out = derive([StoredTx(1, 0, True, GARBAGE[13], RESPONSES[5])])
    assert [r[5] for r in out.messages] == ["UnexpectedMessage"]
    assert out.messages[0][6] is None
    assert [r[3] for r in out.events] == ["UnknownEvent"] * 4
    assert [r[10] for r in out.events] == ["1", "null", '"x"', "[]"]
    out = derive([StoredTx(1, 0, True, "[]", RESPONSES[9])])
    assert [(r[3], r[7], r[8]) for r in out.events] == [
        ("StorageDepositEvent", None, None), ("StorageUnlockEvent", None, None)]
    out = derive([StoredTx(1, 0, True, "[]", RESPONSES[10])])
    assert json.loads(out.events[0][10]) == {"a": 1.5}


def test_rows_follow_the_column_orders() -> None:
    txs = [stored([send(), call(send_="1ugnot"), add_package()],
                  [transfer("", ALICE), gno_event("NewToken", [("token", TOKEN)])])]
    out = derive(txs)
    for field, names in (("messages", sql.MESSAGE_COLUMNS), ("events", sql.EVENT_COLUMNS),
                         ("tx_accounts", sql.TX_ACCOUNT_COLUMNS),
                         ("coin_transfers", sql.COIN_TRANSFER_COLUMNS),
                         ("grc20_transfers", sql.GRC20_TRANSFER_COLUMNS),
                         ("packages", sql.PACKAGE_COLUMNS), ("grc20_tokens", sql.GRC20_TOKEN_COLUMNS)):
        rows = getattr(out, field)
        assert rows, field
        assert all(len(r) == len(names) for r in rows), field
    assert isinstance(DECODER_VERSION, int) and DECODER_VERSION >= 1


# ------------------------------------------------------------------ real transactions

@pytest.mark.needs_shared("gnoland1")
def test_every_gnoland1_message_decodes_to_its_kind() -> None:
    txs, kinds = [], []
    for path in shared_files.gnoland1_files():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            messages = [graphql_message(m) for m in orjson.loads(line)["tx"]["msg"]]
            kinds.extend(m["value"]["__typename"] for m in messages)
            txs.append(stored(messages, index=len(txs)))
    out = derive(txs)
    assert len(out.messages) == len(kinds) > 3000
    assert [r[5] for r in out.messages] == kinds
    assert "UnexpectedMessage" not in kinds
    assert all(r[6] for r in out.messages)  # every message has its sender


_attr = st.fixed_dictionaries({"key": st.sampled_from(["from", "to", "value", "token", "x"]) | _json,
                               "value": st.sampled_from(["", ALICE, "5", "1" * 40]) | _json})
_event = st.one_of(
    st.fixed_dictionaries({"__typename": st.sampled_from(["GnoEvent", "X"]) | _json,
                           "type": st.sampled_from(["Transfer", "NewToken"]) | _json,
                           "pkg_path": st.just(GRC20) | _json,
                           "attrs": st.lists(_attr | _json, max_size=5) | _json}),
    st.fixed_dictionaries({"__typename": st.sampled_from(["StorageDepositEvent", "StorageUnlockEvent",
                                                          "UnknownEvent"]),
                           "bytes_delta": _json, "fee_delta": _json, "fee_refund": _json,
                           "value": _json}),
    _json,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_message | st.fixed_dictionaries({"value": _json}), max_size=4),
       st.fixed_dictionaries({"events": st.lists(_event, max_size=4) | _json}) | _json,
       st.booleans())
def test_any_json_derives_without_raising(messages: Any, response: Any, success: bool) -> None:
    text, _ = clean_json(json.dumps(messages, ensure_ascii=False).encode())
    body, _ = clean_json(json.dumps(response, ensure_ascii=False).encode())
    out = derive([StoredTx(3, 0, success, split_files(3, 0, text)[0], body)])
    assert len(out.messages) == (len(messages) if isinstance(messages, list) else 0)
    served = response.get("events") if isinstance(response, dict) else None
    assert len(out.events) == (len(served) if isinstance(served, list) else 0)
    for row in out.events:
        assert row[6] is None or isinstance(json.loads(row[6]), list)
    for row in out.grc20_transfers:
        assert 0 < row[7] < 10**38 or row[7] == 0


def test_devnet_transactions_decode_to_their_served_kinds() -> None:
    from gnosync.devnet import Chain, ChainConfig

    chain = Chain(ChainConfig(profile="dense", blocks=40))
    txs, kinds, events = [], [], []
    for height in chain.tx_heights(0, chain.tip):
        for tx in chain.transactions(height):
            kinds.extend(m["value"]["__typename"] for m in tx["messages"])
            events.extend(e["__typename"] for e in tx["response"]["events"] or [])
            txs.append(stored(tx["messages"], response=tx["response"], height=height,
                              index=tx["index"], success=tx["success"]))
    out = derive(txs)
    assert [r[5] for r in out.messages] == kinds
    assert [r[3] for r in out.events] == events
    assert {"MsgAddPackage", "BankMsgSend", "MsgCall"} <= set(kinds)
