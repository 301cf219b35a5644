"""What an operator reads: JSON or text log lines, and backfill progress."""

from __future__ import annotations

import io
import time

import orjson
import structlog
from rich.console import Console

from gnosync.observe.logs import configure_logging
from gnosync.observe.progress import BackfillProgress


def test_json_lines_carry_the_design_notes_fields(capsys):
    configure_logging("info", "json")
    structlog.get_logger("gnosync.sync").info(
        "batch committed", from_height=10, to_height=19, blocks=10, txs=2, duration_ms=3.5
    )
    structlog.get_logger("gnosync.sync").debug("not shown at info")
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["message"] == "batch committed" and line["level"] == "info"
    assert line["timestamp"].endswith("Z") and line["from_height"] == 10 and line["duration_ms"] == 3.5


def test_library_tracebacks_stay_one_json_line(capsys):
    import logging

    configure_logging("info", "json")
    try:
        raise ConnectionResetError("gone")
    except ConnectionResetError:
        logging.getLogger("asyncpg.pool").exception("connection lost")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    record = orjson.loads(lines[0])
    assert record["logger"] == "asyncpg.pool" and "ConnectionResetError" in record["exception"]


def test_text_format_is_readable(capsys):
    configure_logging("debug", "text")
    structlog.get_logger("gnosync.sync").warning("sync error, retrying", attempt=2)
    err = capsys.readouterr().err
    assert "sync error, retrying" in err and "attempt=2" in err and not err.lstrip().startswith("{")


def test_progress_off_a_terminal_is_a_periodic_log_line(capsys):
    configure_logging("info", "json")
    progress = BackfillProgress(terminal=False, every=0.0)
    progress.update(1000, 100_000)
    time.sleep(0.01)
    progress.update(3000, 100_000)
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["backfill progress"] * 2
    assert lines[1]["height"] == 3000 and lines[1]["remaining"] == 97_000
    assert lines[1]["blocks_per_s"] > 0 and lines[1]["eta_s"] > 0


def test_progress_on_a_terminal_draws_a_bar_and_clears_it_at_the_tip():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    progress = BackfillProgress(terminal=True, console=console)
    progress.update(25_000, 100_000)
    progress._bar.refresh()
    drawn = out.getvalue()
    assert "syncing" in drawn and "25,000" in drawn and "blocks/s" in drawn
    progress.update(100_000, 100_000)  # at the tip: the bar goes away
    assert progress._bar is None
