"""Validation is a pure function: every kind of damage is caught and named by height."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gnosync.errors import BatchInvalid, ChainMismatch
from gnosync.model import Batch, BlockRef, format_time, parse_time
from gnosync.sync.validate import validate_batch

from .factory import make_chain, make_tx


def replace_block(batch: Batch, i: int, **changes) -> Batch:
    blocks = list(batch.blocks)
    blocks[i] = msgspec.structs.replace(blocks[i], **changes)
    return Batch(batch.start, batch.end, blocks, batch.transactions)


def failure(batch: Batch, previous: BlockRef | None = None, chain_id: str | None = None) -> tuple[int, str]:
    with pytest.raises(BatchInvalid) as info:
        validate_batch(batch, previous, chain_id)
    return info.value.height, info.value.check


def test_valid_chain_from_genesis_passes():
    batch, _ = make_chain(0, 50, {0: 3, 5: 2, 17: 1})
    validate_batch(batch, None, None)
    validate_batch(batch, None, "dev")


def test_valid_batch_links_to_stored_block():
    first, ref = make_chain(0, 9, {3: 1})
    second, _ = make_chain(10, 19, {12: 4}, previous=ref)
    validate_batch(second, ref, "dev")


def test_missing_duplicate_and_extra_heights():
    batch, _ = make_chain(10, 20)
    missing = Batch(10, 20, batch.blocks[:5] + batch.blocks[6:], [])
    assert failure(missing) == (15, "heights")
    truncated = Batch(10, 20, batch.blocks[:-1], [])
    assert failure(truncated) == (20, "heights")
    dup = Batch(10, 20, batch.blocks[:6] + batch.blocks[5:], [])
    assert failure(dup) == (15, "heights")
    extra, _ = make_chain(10, 21)
    assert failure(Batch(10, 20, extra.blocks, [])) == (21, "heights")
    assert failure(Batch(10, 20, [], [])) == (10, "heights")


def test_broken_link_inside_batch_and_to_stored_block():
    _, ref = make_chain(0, 9)
    batch, _ = make_chain(10, 19, previous=ref)
    assert failure(replace_block(batch, 4, last_block_hash="bogus")) == (14, "last_block_hash")
    wrong_prev = BlockRef(9, "other", "dev", ref.total_txs)
    assert failure(batch, wrong_prev) == (10, "last_block_hash")


def test_transaction_damage():
    _, ref = make_chain(0, 9)
    batch, _ = make_chain(10, 19, {12: 3, 15: 1}, previous=ref)
    txs = batch.transactions
    assert failure(Batch(10, 19, batch.blocks, txs[:1] + txs[2:]), ref) == (12, "num_txs")
    assert failure(replace_block(batch, 5, num_txs=2), ref)[0] == 15
    swapped = [txs[1], txs[0]] + txs[2:]
    assert failure(Batch(10, 19, batch.blocks, swapped), ref) == (12, "tx_index")
    stray = txs + [make_tx(30, 0)]
    assert failure(Batch(10, 19, batch.blocks, stray), ref) == (30, "tx_height")
    foreign = replace_block(batch, 5, txs=[msgspec.structs.replace(batch.blocks[5].txs[0], hash="elsewhere")])
    assert failure(foreign, ref) == (15, "tx_hashes")


def test_total_txs_must_accumulate():
    batch, _ = make_chain(0, 10, {4: 2})
    assert failure(replace_block(batch, 6, total_txs=99)) == (6, "total_txs")


def test_genesis_block_lists_its_transactions():
    batch, _ = make_chain(0, 3, {0: 5})
    assert [entry.hash for entry in batch.blocks[0].txs] == [tx.hash for tx in batch.transactions]
    validate_batch(batch, None, None)
    # The genesis block is held to the rules of any block.
    listed = batch.blocks[0].txs
    assert failure(replace_block(batch, 0, txs=listed[::-1])) == (0, "tx_hashes")
    assert failure(replace_block(batch, 0, num_txs=4, total_txs=4)) == (0, "num_txs")


def with_listed(batch: Batch, i: int, hashes: list[str | None]) -> Batch:
    """``batch`` with block ``i`` listing these hashes in ``Block.txs``."""
    template = batch.blocks[i].txs[0]
    entries = [None if h is None else msgspec.structs.replace(template, hash=h) for h in hashes]
    return replace_block(batch, i, txs=entries)


def test_block_may_omit_transactions_tx_indexer_cannot_decode():
    """tx-indexer leaves out of Block.txs what it cannot amino-decode, and still serves it
    through getTransactions: the listed hashes are then an ordered subset."""
    _, ref = make_chain(0, 9)
    batch, _ = make_chain(10, 12, {11: 20}, previous=ref)
    served = [tx.hash for tx in batch.transactions]
    for listed in (served[:7] + served[8:], served[1:], served[:-1], served[::2], []):
        validate_batch(with_listed(batch, 1, listed), ref, "dev")
    # A genesis block listing none of its transactions (tx-indexer v0.5.0) passes too.
    genesis, _ = make_chain(0, 2, {0: 4})
    validate_batch(with_listed(genesis, 0, []), None, None)


def test_block_listing_anything_but_an_ordered_subset_fails():
    _, ref = make_chain(0, 9)
    batch, _ = make_chain(10, 12, {11: 20}, previous=ref)
    served = [tx.hash for tx in batch.transactions]
    for listed in (
        served[:7] + ["not-served"] + served[8:],  # a hash the source did not serve
        [served[1], served[0]] + served[2:],  # another order
        served + [served[-1]],  # listed more often than served
        served[:3] + [None] + served[4:],  # a null entry
    ):
        assert failure(with_listed(batch, 1, listed), ref) == (11, "tx_hashes"), listed
    # The served count must still be num_txs, whatever is listed.
    short = Batch(10, 12, batch.blocks, batch.transactions[:-1])
    assert failure(with_listed(short, 1, served[:-1]), ref) == (11, "num_txs")
    with pytest.raises(BatchInvalid, match=r"block 11 failed check 'tx_hashes': .*not-served.*entry 7 of 20"):
        validate_batch(with_listed(batch, 1, served[:7] + ["not-served"] + served[8:]), ref, "dev")


def test_identical_transactions_at_two_heights_pass():
    """Unsigned transactions can be byte-identical, so two heights (or two places in one
    block) may hold the same hash."""
    batch, _ = make_chain(0, 3, {0: 3, 2: 1})
    twin = batch.transactions[0].hash
    txs = [msgspec.structs.replace(tx, hash=twin) if tx.index in (0, 2) or tx.block_height == 2 else tx
           for tx in batch.transactions]
    blocks = list(batch.blocks)
    blocks[0] = with_listed(batch, 0, [twin, txs[1].hash, twin]).blocks[0]
    blocks[2] = with_listed(batch, 2, [twin]).blocks[2]
    validate_batch(Batch(0, 3, blocks, txs), None, None)
    # The same transaction served twice at one height is still caught.
    doubled = Batch(0, 3, blocks, txs[:1] + txs[:1] + txs[2:])
    assert failure(doubled) == (0, "tx_index")


def test_chain_id_mismatch_is_fatal_and_mixed_ids_invalid():
    batch, _ = make_chain(0, 5, chain_id="other")
    with pytest.raises(ChainMismatch, match="'other'.*'dev'"):
        validate_batch(batch, None, "dev")
    mixed = replace_block(make_chain(0, 5)[0], 3, chain_id="other")
    assert failure(mixed, None, "dev") == (3, "chain_id")


def test_error_message_names_height_and_check():
    batch, _ = make_chain(5, 9)
    with pytest.raises(BatchInvalid, match=r"block 7 failed check 'last_block_hash'"):
        validate_batch(replace_block(batch, 2, last_block_hash="x"), None, None)


DAMAGE = ["drop_block", "dup_block", "link", "drop_tx", "num_txs", "chain_id", "hash"]


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(2, 40),
    dense=st.dictionaries(st.integers(0, 39), st.integers(1, 4), max_size=8),
    damage=st.sampled_from(DAMAGE),
    where=st.integers(0, 39),
)
def test_any_single_damage_is_caught_at_its_height(length, dense, damage, where):
    start = 100
    counts = {start + k: v for k, v in dense.items() if k < length}
    _, ref = make_chain(90, 99)
    batch, _ = make_chain(start, start + length - 1, counts, previous=ref)
    validate_batch(batch, ref, "dev")
    i = where % length
    height = start + i
    blocks, txs = list(batch.blocks), list(batch.transactions)
    if damage == "drop_block":
        del blocks[i]
    elif damage == "dup_block":
        blocks.insert(i, blocks[i])
    elif damage == "link":
        blocks[i] = msgspec.structs.replace(blocks[i], last_block_hash="broken")
    elif damage == "drop_tx":
        if not txs:
            return
        height = txs[where % len(txs)].block_height
        del txs[where % len(txs)]
    elif damage == "num_txs":
        blocks[i] = msgspec.structs.replace(blocks[i], num_txs=blocks[i].num_txs + 1)
    elif damage == "chain_id":
        blocks[i] = msgspec.structs.replace(blocks[i], chain_id="evil")
    elif damage == "hash":
        blocks[i] = msgspec.structs.replace(blocks[i], hash="rewritten")
        if i + 1 < length:
            height = start + i + 1  # the next block's link no longer matches
        else:
            validate_batch(Batch(start, batch.end, blocks, txs), ref, "dev")
            return
    with pytest.raises((BatchInvalid, ChainMismatch)) as info:
        validate_batch(Batch(start, batch.end, blocks, txs), ref, "dev")
    if isinstance(info.value, BatchInvalid):
        assert info.value.height == height


@given(st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)), st.integers(0, 999))
def test_time_round_trips_with_nanoseconds(moment, nanos):
    text = format_time(moment, nanos)
    assert parse_time(text) == (moment, nanos)
    assert format_time(*parse_time(text)) == text


@pytest.mark.parametrize("text", ["2026-03-16T09:00:00Z", "2026-03-16T09:00:00.123456789Z", "2026-03-16T09:00:00.1Z"])
def test_time_format_matches_go_rfc3339nano(text):
    assert format_time(*parse_time(text)) == text


@pytest.mark.parametrize("text", ["yesterday", "2026-03-16T09:00:00", "2026-03-16T09:00:00.Z", "2026-03-16T09:00:00.1234567891Z"])
def test_bad_times_are_rejected(text):
    with pytest.raises(ValueError):
        parse_time(text)
