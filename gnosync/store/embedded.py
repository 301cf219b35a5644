"""An embedded PostgreSQL server (pgserver), for running gnosync without one.

Lifecycle, by design: the first gnosync command that needs the embedded database starts
the server, and the server keeps running after that command exits, so the next command
(a second ``gnosync run``, ``status``, ``db psql``) reuses it and its data at once.
``gnosync db stop`` (:func:`stop_embedded`) stops it. It listens on a Unix socket only,
and trusts local connections as the user ``postgres``: :func:`embedded_dsn` is the DSN
psql and every driver take.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import asyncpg
import platformdirs
from asyncpg import exceptions as pg

from gnosync.errors import StoreError
from gnosync.store import sql

DATABASE = "gnosync"
SUPERUSER = "postgres"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("gnosync")) / "postgres"


def is_initialised(data_dir: Path | None = None) -> bool:
    """Whether ``data_dir`` holds an embedded server's data (``initdb`` has run there)."""
    return (_resolve(data_dir) / "PG_VERSION").exists()


def running_dsn(data_dir: Path | None = None) -> str | None:
    """The DSN of the embedded server in ``data_dir`` if it runs, else None; starts nothing."""
    _import_pgserver()
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_resolve(data_dir))
    if info is None or not info.is_running():
        return None
    return _dsn(info, DATABASE)


def bundled_psql() -> Path | None:
    """The psql that ships with pgserver's PostgreSQL, if present."""
    _import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    psql = POSTGRES_BIN_PATH / "psql"
    return psql if psql.is_file() and os.access(psql, os.X_OK) else None


def _import_pgserver() -> None:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it does not need here; the
        # warning about a missing XDG_RUNTIME_DIR would only confuse users.
        warnings.simplefilter("ignore")
        import pgserver  # noqa: F401  (heavy, and only needed here)


def _resolve(data_dir: Path | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


def _dsn(info, database: str) -> str:
    if info.socket_dir is not None:
        host = quote(str(info.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={info.port or 5432}"
    return f"postgresql://{SUPERUSER}@{info.hostname}:{info.port}/{database}"


async def _ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=30)
    try:
        if await conn.fetchval(sql.DATABASE_EXISTS, database):
            return
        try:
            await conn.execute(sql.create_database(database))
        except (pg.DuplicateDatabaseError, pg.UniqueViolationError):
            pass  # another process created it at the same moment
    finally:
        await conn.close()


def _run_async(coro) -> None:
    """Run ``coro`` to completion, also when called from inside an event loop."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, coro).result()


def start_embedded(data_dir: Path | None = None) -> tuple[str, Path]:
    """Start (or reuse) the embedded server in ``data_dir``; returns (dsn, data_dir).

    ``data_dir`` defaults to ``<user data dir>/gnosync/postgres``; it is created and
    initialised on first use. The DSN names the database ``gnosync``, created if absent.
    Raises ``StoreError`` (not retryable) when the server cannot start.
    """
    data_dir = _resolve(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = data_dir / "log"
    try:
        _import_pgserver()
        import pgserver

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(data_dir, cleanup_mode=None)
        info = server.get_postmaster_info()
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise StoreError(
            f"cannot start the embedded PostgreSQL in {data_dir}: {' '.join(str(exc).split())}; "
            f"see {log}, or pass --db to use another server",
            retryable=False,
        ) from exc
    try:
        _run_async(_ensure_database(_dsn(info, SUPERUSER), DATABASE))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreError(
            f"cannot create database {DATABASE!r} in the embedded PostgreSQL in {data_dir}: "
            f"{' '.join(str(exc).split())}; see {log}",
            retryable=False,
        ) from exc
    return _dsn(info, DATABASE), data_dir


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded server in ``data_dir`` if it runs (fast shutdown: open
    connections are closed, committed data is kept); False when it was not running."""
    _import_pgserver()
    from pgserver import _commands
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo

    data_dir = _resolve(data_dir)
    # Forget the in-process handle so a later start_embedded starts the server again.
    handle = PostgresServer._instances.pop(data_dir, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    info = PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running():
        return False
    # pgserver runs the server as the user "pgserver" when gnosync runs as root.
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    _commands.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=data_dir, user=user)
    return True
