"""The status report: ``gnosync status --json`` and ``GET /status`` serve the same object.

Every value in it is a plain JSON value (strings, numbers, lists, objects), never a
Python repr; :func:`status_lines` renders it for ``gnosync status`` without ``--json``.
"""

from __future__ import annotations

from typing import Any

from asyncpg import exceptions as pg

from gnosync.errors import SourceError, StoreError
from gnosync.redact import redact_text
from gnosync.source.pool import SourcePool
from gnosync.store import Store
from gnosync.store.lock import describe_writer
from gnosync.store.replica import ReplicaState, lag_warning, replica_from_json

NOT_INITIALISED = "not initialised"
# What to run on a database without gnosync's tables.
INITIALISE_HINT = "`gnosync migrate` creates the tables; `gnosync run` creates them and syncs"


def not_initialised(component: str, why: str) -> dict[str, Any]:
    """The report when there is no database yet (``why`` says what is missing)."""
    report = {"component": component, "database": None, "last_block_h": None}
    report.update(status=NOT_INITIALISED, hint=f"{why}; {INITIALISE_HINT}")
    report.update(leader=None, standbys=[], source_height=None, lag=None)
    return _redacted(report)


async def status_report(store: Store, source: SourcePool | None, component: str) -> dict[str, Any]:
    """The stored sync state, the writer processes, and the source's height and the lag.

    Reads only: it works while ``gnosync run`` is running elsewhere, and never creates
    anything; a schema without gnosync's tables gives ``status: "not initialised"``
    and a ``hint``. ``database`` is the store's DSN, password-free. A source that
    does not answer leaves ``source_height`` and ``lag`` null and says why in
    ``source_error``. On a read-only replica it adds ``replica`` (its replay lag, see
    :class:`gnosync.store.replica.ReplicaState`) and, when that lag is large, a
    ``warning``; the writers then show on the primary only. Every text in it is
    redacted (:func:`gnosync.redact.redact_text`), whoever wrote it: a ``last_error``
    stored by an older gnosync, or a library's message.
    """
    report: dict[str, Any] = {"component": component, "database": store.dsn}
    try:
        state = await store.state.get_state()
    except StoreError as exc:
        if not isinstance(exc.__cause__, (pg.UndefinedTableError, pg.InvalidSchemaNameError)):
            raise
        state = None
        report.update(
            last_block_h=None, status=NOT_INITIALISED,
            hint=f"schema {store.schema!r} at {store.where} has no gnosync tables; {INITIALISE_HINT}",
        )
    else:
        if state is not None:
            report.update(state.to_json_dict())
        else:
            report.update(last_block_h=None, status="never synced")
    if report.get("status") != NOT_INITIALISED:
        try:
            decoded = await store.decoder_state()
        except StoreError:
            decoded = None  # a schema older than the decoded tables: nothing to say
        if decoded is not None:
            report["decoder_version"] = decoded.version
            report["derived_to"] = decoded.derived_to
    replica = await _replica(store)
    if replica is not None:
        # A replica's pg_locks show its own connections only: the writers show on the primary.
        report["replica"] = replica.to_json_dict()
        warning = lag_warning(replica)
        if warning is not None:
            report["warning"] = warning
    try:
        writers = await store.writers()
    except StoreError:
        writers = []
    report["leader"] = next((w.to_json_dict() for w in writers if w.role == "leader"), None)
    report["standbys"] = [w.to_json_dict() for w in writers if w.role == "standby"]
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


async def _replica(store: Store) -> ReplicaState | None:
    """The server's replica state (None on a primary, or when it cannot be read)."""
    try:
        async with store.auditing() as reader:
            return await reader.replica()
    except StoreError:
        return None


def status_lines(report: dict[str, Any]) -> list[str]:
    """``report`` as aligned ``key  value`` lines, each value in words (``-`` for none)."""
    width = max(len(key) for key in report)
    return [f"{key:<{width}}  {_text(key, value)}" for key, value in report.items()]


def _text(key: str, value: Any) -> str:
    if value is None or value == []:
        return "-"
    if key == "leader":
        return describe_writer(value)
    if key == "replica":
        replica = replica_from_json(value)
        return "-" if replica is None else f"{replica.describe()}; the writers show on the primary"
    if key == "standbys":
        return "; ".join(describe_writer(writer) for writer in value)
    if key == "sources":
        return "; ".join(_source_text(health) for health in value)
    return str(value)


def _source_text(health: dict[str, Any]) -> str:
    state = "up" if health["up"] else "down"
    if health["height"] is not None:
        state += f" at height {health['height']}"
    if health["error"]:
        state += f" ({health['error']})"
    return f"{health['url']} {state}"


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
