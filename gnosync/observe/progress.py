"""Backfill progress: a live bar on a terminal, a periodic log line elsewhere."""

from __future__ import annotations

import sys
import time

import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

log = structlog.get_logger("gnosync.progress")


class _BlocksPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} blocks/s" if speed else "- blocks/s", style="cyan")


class BackfillProgress:
    """Shows how far a catch-up has come; silent once the sync is at the tip.

    ``update`` is called once per committed batch. On a terminal it drives a rich
    progress bar (height, blocks/s, ETA); off a terminal it logs a progress line at most
    every ``every`` seconds, so long backfills stay visible in plain logs.
    """

    def __init__(
        self,
        *,
        terminal: bool | None = None,
        every: float = 10.0,
        console: Console | None = None,
        label: str = "syncing",
    ):
        self.label = label  # what the bar says is going on
        self._event = "backfill progress" if label == "syncing" else f"{label} progress"
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.every = every
        self.console = console
        self._bar: Progress | None = None
        self._task = None
        self._first: int | None = None
        self._last_log = 0.0
        self._last_height: int | None = None
        self._last_time = time.monotonic()

    def update(self, height: int, tip: int) -> None:
        if self._first is None:
            self._first = height
        if height >= tip:
            self.close()
            return
        if self.terminal:
            self._draw(height, tip)
        else:
            self._log(height, tip)

    def _draw(self, height: int, tip: int) -> None:
        if self._bar is None:
            self._bar = Progress(
                TextColumn(f"[bold]{self.label}[/]"),
                BarColumn(),
                TextColumn("height {task.completed:,.0f} / {task.total:,.0f}"),
                _BlocksPerSecond(),
                TimeRemainingColumn(),
                console=self.console or Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("sync", total=tip, completed=height)
        self._bar.update(self._task, completed=height, total=tip)

    def _log(self, height: int, tip: int) -> None:
        now = time.monotonic()
        if now - self._last_log < self.every:
            return
        rate = None
        if self._last_height is not None and now > self._last_time:
            rate = round((height - self._last_height) / (now - self._last_time), 1)
        eta = round((tip - height) / rate, 1) if rate else None
        log.info(self._event, height=height, tip=tip, remaining=tip - height,
                 blocks_per_s=rate, eta_s=eta)
        self._last_log, self._last_height, self._last_time = now, height, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
