"""The status report: ``gnosync status --json`` and ``GET /status`` serve the same object."""

from __future__ import annotations

from typing import Any

from gnosync.errors import SourceError, StoreError
from gnosync.redact import redact_text
from gnosync.source.pool import SourcePool
from gnosync.store import Store


async def status_report(store: Store, source: SourcePool | None, component: str) -> dict[str, Any]:
    """The stored sync state, the writer processes, and the source's height and the lag.

    Reads only: it works while ``gnosync run`` is running elsewhere. A source that does
    not answer leaves ``source_height`` and ``lag`` null and says why in ``source_error``.
    Every text in it is redacted (:func:`gnosync.redact.redact_text`), whoever wrote it:
    a ``last_error`` stored by an older gnosync, or a library's message.
    """
    report: dict[str, Any] = {"component": component}
    state = await store.state.get_state()
    if state is not None:
        report.update(state.to_json_dict())
    else:
        report.update(last_block_h=None, status="never synced")
    try:
        writers = await store.writers()
    except StoreError:
        writers = []
    report["leader"] = next((w.describe() for w in writers if w.role == "leader"), None)
    report["standbys"] = [w.describe() for w in writers if w.role == "standby"]
    report["source_height"] = None
    report["lag"] = None
    if source is not None:
        try:
            report["source_height"] = await source.latest_height()
        except SourceError as exc:
            report["source_error"] = str(exc)
        report["sources"] = [
            {"url": h.url, "up": h.up, "height": h.height, "error": h.last_error}
            for h in source.health()
        ]
    if report["source_height"] is not None and report.get("last_block_h") is not None:
        report["lag"] = report["source_height"] - report["last_block_h"]
    return _redacted(report)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
