"""What the follow loop logs at info level once it reaches the tip: one line saying so,
then one summary a minute instead of a line per block (per-batch lines go to debug)."""

from __future__ import annotations

import asyncio

import orjson

from gnosync.observe.logs import configure_logging
from gnosync.sync.loop import Follower, TipSummary

from .test_sync import QUICK, close, open_syncer

GUARD = 2000  # polls of 20 ms before giving up: a hang, not a timing


class Clock:
    """The summary's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(capsys, seen: list[dict]) -> list[dict]:
    for line in capsys.readouterr().err.splitlines():
        if line.startswith("{"):
            seen.append(orjson.loads(line))
    return seen


async def _until(capsys, seen: list[dict], predicate, what: str, task: asyncio.Task) -> None:
    for _ in range(GUARD):
        if predicate(_lines(capsys, seen)):
            return
        assert not task.done(), task.exception()
        await asyncio.sleep(0.02)
    raise AssertionError(f"never logged {what}: {[line['message'] for line in seen][-10:]}")


async def test_at_the_tip_one_line_says_so_then_one_summary_a_minute(devnet, db_dsn, capsys):
    configure_logging("info", "json")
    chain, url = devnet(blocks=300, genesis_txs=3, dense_start=305, dense_length=10, dense_txs=(2, 3))
    syncer = await open_syncer(url, db_dsn)
    clock = Clock()
    follower = Follower(syncer, batch_size=100, interval=0.02, policy=QUICK,
                        tip_summary=TipSummary(clock=clock))
    task = asyncio.create_task(follower.run())
    seen: list[dict] = []
    try:
        await _until(capsys, seen, lambda lines: any(l["message"].startswith("following the tip") for l in lines),
                     "following the tip", task)
        for _ in range(8):  # the tip grows; each block is synced on its own turn
            height = chain.append_block()
            for _ in range(GUARD):
                if await syncer.store.state.get_last_synced_height() == height:
                    break
                await asyncio.sleep(0.02)
        clock.now += 60
        await _until(capsys, seen, lambda lines: any(l["message"].startswith("at the tip") for l in lines),
                     "the first summary", task)
        clock.now += 60  # a minute without blocks is summarised too
        await _until(capsys, seen, lambda lines: sum(l["message"].startswith("at the tip") for l in lines) == 2,
                     "the second summary", task)
    finally:
        follower.stop()
        await task
        await close(syncer)
    lines = _lines(capsys, seen)
    messages = [line["message"] for line in lines]
    following = messages.index("following the tip at height 300, lag 0")
    assert lines[following]["height"] == 300 and lines[following]["lag"] == 0
    assert messages.count("following the tip at height 300, lag 0") == 1
    # The catch-up's batches, at info, cover 0..300 and all come before the tip line.
    batches = [line for line in lines if line["message"] == "batch committed"]
    assert [(b["from_height"], b["to_height"]) for b in batches][0][0] == 0
    assert max(b["to_height"] for b in batches) == 300
    assert all(lines.index(b) < following for b in batches)
    # At the tip: no line per block, one summary counting the blocks and transactions
    # the devnet served at 301..308 (read from the chain, not from gnosync).
    txs = sum(chain.num_txs(height) for height in range(301, 309))
    assert txs > 0
    summaries = [line for line in lines if line["message"].startswith("at the tip")]
    assert summaries[0]["message"] == f"at the tip: 8 blocks, {txs} txs in the last minute, height 308"
    assert (summaries[0]["blocks"], summaries[0]["txs"], summaries[0]["height"]) == (8, txs, 308)
    assert summaries[1]["message"] == "at the tip: 0 blocks, 0 txs in the last minute, height 308"
    assert all(line["level"] == "info" for line in summaries)
    assert messages.index("sync stopped") > lines.index(summaries[1])


async def test_per_batch_lines_at_the_tip_go_to_debug(devnet, db_dsn, capsys):
    configure_logging("debug", "json")
    chain, url = devnet(blocks=50, genesis_txs=1)
    syncer = await open_syncer(url, db_dsn)
    follower = Follower(syncer, batch_size=20, interval=0.02, policy=QUICK)
    task = asyncio.create_task(follower.run())
    seen: list[dict] = []
    try:
        await _until(capsys, seen, lambda lines: any(l["message"].startswith("following the tip") for l in lines),
                     "following the tip", task)
        height = chain.append_block()
        await _until(capsys, seen, lambda lines: any(l["message"] == "batch committed" and l["to_height"] == height
                                                     for l in lines), "the tip's batch", task)
    finally:
        follower.stop()
        await task
        await close(syncer)
    batches = [line for line in _lines(capsys, seen) if line["message"] == "batch committed"]
    assert {b["level"] for b in batches if b["to_height"] <= 50} == {"info"}
    assert [(b["from_height"], b["level"]) for b in batches if b["to_height"] > 50] == [(51, "debug")]


async def test_falling_far_behind_is_a_catch_up_again(devnet, db_dsn, capsys):
    configure_logging("info", "json")
    chain, url = devnet(blocks=40, genesis_txs=1)
    syncer = await open_syncer(url, db_dsn)
    follower = Follower(syncer, batch_size=50, interval=0.02, policy=QUICK,
                        tip_summary=TipSummary(catch_up_lag=100, clock=Clock()))
    task = asyncio.create_task(follower.run())
    seen: list[dict] = []
    try:
        await _until(capsys, seen, lambda lines: any(l["message"].startswith("following the tip") for l in lines),
                     "following the tip", task)
        with chain.lock:  # 150 blocks at once: the next turn is far behind
            for _ in range(150):
                chain.append_block()
        await _until(capsys, seen, lambda lines: "following the tip at height 190, lag 0"
                     in [l["message"] for l in lines], "the tip again", task)
    finally:
        follower.stop()
        await task
        await close(syncer)
    lines = _lines(capsys, seen)
    messages = [line["message"] for line in lines]
    assert [m for m in messages if m.startswith("following the tip")] == [
        "following the tip at height 40, lag 0", "following the tip at height 190, lag 0",
    ]
    # The second catch-up's batches are at info again, between the two announcements.
    second = [l for l in lines if l["message"] == "batch committed" and l["from_height"] > 40]
    assert second and second[0]["from_height"] == 41 and max(l["to_height"] for l in second) == 190
    first_tip = messages.index("following the tip at height 40, lag 0")
    assert all(first_tip < lines.index(l) < messages.index("following the tip at height 190, lag 0") for l in second)
