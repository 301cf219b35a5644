"""The pure parts of the pipeline: range sizing, the transaction budget, cutting a
batch, and when failures count as blocked or stuck."""

from __future__ import annotations

from gnosync.errors import BatchInvalid, SourceTimeout
from gnosync.sync.loop import Blockage
from gnosync.sync.pipeline import RangeSizer
from gnosync.sync.syncer import within_budget

from .factory import make_chain


def test_range_sizer_follows_density():
    sizer = RangeSizer(max_blocks=5000, target_txs=1000)
    assert sizer.next_size() == 64  # nothing seen yet: probe before committing memory
    sizer.observe(blocks=64, transactions=0, tx_bytes=0)
    assert sizer.next_size() == 5000  # empty stretches get the largest ranges
    sizer.observe(blocks=100, transactions=2000, tx_bytes=2000 * 500)  # 20 per block
    assert sizer.next_size() < 200
    for _ in range(20):
        sizer.observe(blocks=5000, transactions=0, tx_bytes=0)
    assert sizer.next_size() == 5000


def test_large_transactions_lower_the_budget():
    sizer = RangeSizer(max_blocks=5000, target_txs=5000, target_bytes=1_000_000)
    for _ in range(10):
        sizer.observe(blocks=10, transactions=10, tx_bytes=10 * 100)  # small ones: count rules
    assert sizer.tx_budget() == 5000
    for _ in range(10):
        sizer.observe(blocks=10, transactions=10, tx_bytes=10 * 50_000)  # package deployments
    assert sizer.tx_budget() < 25  # about 1 MB of them
    assert sizer.expected_bytes(10) < 2_000_000


def test_a_shrunk_range_grows_back():
    sizer = RangeSizer(max_blocks=1000, target_txs=1000)
    sizer.observe(blocks=100, transactions=0, tx_bytes=0)
    sizer.shrink(1000)
    sizer.shrink(500)
    assert sizer.next_size() == 250
    for _ in range(3):
        sizer.grow()
    assert sizer.next_size() == 1000


def test_the_budget_cuts_a_range_before_its_transactions_are_fetched():
    batch, _ = make_chain(1, 10, dict.fromkeys(range(1, 11), 3))
    assert within_budget(batch.blocks, 1, 10, None) == 10
    assert within_budget(batch.blocks, 1, 10, 30) == 10
    assert within_budget(batch.blocks, 1, 10, 7) == 2  # 3 + 3, the third would pass 7
    assert within_budget(batch.blocks, 1, 10, 1) == 1  # the first block is always kept


def test_a_prefix_keeps_only_its_heights():
    batch, _ = make_chain(1, 10, dict.fromkeys(range(1, 11), 2))
    prefix = batch.prefix(4)
    assert (prefix.start, prefix.end) == (1, 4)
    assert [b.height for b in prefix.blocks] == [1, 2, 3, 4]
    assert {tx.block_height for tx in prefix.transactions} == {1, 2, 3, 4}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_retry_soon_followed_by_a_commit_is_not_blocked():
    clock = Clock()
    blockage = Blockage(retry_cap=3.0, stuck_after=20, clock=clock)
    blockage.failed(SourceTimeout("slow"), 100)
    clock.now = 1.0
    assert not blockage.blocked
    assert blockage.cleared() == 1.0
    assert blockage.since is None and not blockage.blocked


def test_failures_past_the_retry_cap_are_blocked_and_repeats_are_stuck():
    clock = Clock()
    blockage = Blockage(retry_cap=3.0, stuck_after=3, clock=clock)
    bad = BatchInvalid(7777, "last_block_hash", "links to x")
    for second in range(3):
        clock.now = float(second * 2)
        blockage.failed(bad, 7777)
    assert blockage.blocked and blockage.stuck and blockage.repeats == 3
    blockage.failed(SourceTimeout("slow"), 7777)  # another error starts the count again
    assert not blockage.stuck and blockage.blocked
