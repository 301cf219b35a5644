"""A real PostgreSQL primary and a streaming replica on this host, for failover tests.

Built from the installed server binaries (``/usr/lib/postgresql/<version>/bin``, or
``GNOSYNC_PG_BIN``): ``initdb`` a primary with ``wal_level = replica``, trust
authentication on 127.0.0.1 (replication included), then ``pg_basebackup -R`` a hot
standby streaming from it. Both listen on free loopback ports and live in one temporary
directory. PostgreSQL refuses to run as root, so when this process is root every binary
runs as the ``postgres`` user (``runuser``) and the directory is owned by it.

What a test does to the pair: :meth:`PgPair.kill_primary` (``pg_ctl stop -m
immediate``: a crash, nothing flushed or sent after it), :meth:`PgPair.promote`,
:meth:`PgPair.cut_off` (the replica stops receiving, so it lacks the commits that follow,
as an asynchronous replica can at a failover), :meth:`PgPair.wait_replayed` and
:meth:`PgPair.replay_lag`. :func:`running_pair` stops both servers (immediately) and
removes the directory however the block ends.

Also used by ``bench/chaos.py`` (its database, and its failover episode), which also
restarts the primary (:meth:`PgPair.stop_primary`, :meth:`PgPair.start_primary`).
Administration goes through ``psql`` so that it works from synchronous fixtures and
threads alike.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DATABASE = "gnosync"
USER = "postgres"
OS_USER = "postgres"  # who runs the servers when this process is root


def server_bin() -> Path:
    """The directory of the installed PostgreSQL binaries (the newest version)."""
    configured = os.environ.get("GNOSYNC_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin;"
                           " install postgresql or set GNOSYNC_PG_BIN")
    return Path(found[-1]).parent


def available() -> bool:
    """Whether a pair can be started here."""
    try:
        server_bin()
    except RuntimeError:
        return False
    return os.geteuid() != 0 or shutil.which("runuser") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgPair:
    """A primary and its streaming replica, in ``root`` (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = server_bin()
        self.primary_dir = root / "primary"
        self.replica_dir = root / "replica"
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.as_postgres = os.geteuid() == 0

    # -- DSNs --------------------------------------------------------------------------

    def dsn(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql://{USER}@127.0.0.1:{port}/{database}"

    @property
    def primary_dsn(self) -> str:
        return self.dsn(self.primary_port)

    @property
    def replica_dsn(self) -> str:
        return self.dsn(self.replica_port)

    @property
    def multi_host_dsn(self) -> str:
        """Both servers, the writable one chosen at each connection, as operators give it."""
        return (f"postgresql://{USER}@127.0.0.1:{self.primary_port},127.0.0.1:{self.replica_port}"
                f"/{DATABASE}?target_session_attrs=read-write")

    # -- running the binaries ------------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 120.0) -> str:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, env={**os.environ, "PGCONNECT_TIMEOUT": "5"})
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):"
                               f" {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def sql(self, port: int, statement: str, database: str = DATABASE) -> str:
        """Run ``statement`` with psql on the server at ``port``; its unaligned output."""
        return self._run("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                         "-p", str(port), "-U", USER, "-d", database, "-c", statement,
                         timeout=60).strip()

    def _ctl(self, data: Path, *args: str) -> None:
        self._run("pg_ctl", "-D", str(data), *args)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """initdb and start the primary, create the database, then clone and start the
        replica and wait until it streams."""
        if self.as_postgres:
            shutil.chown(self.root, OS_USER, OS_USER)
        self._run("initdb", "-D", str(self.primary_dir), "-U", USER, "--auth=trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# the failover pair\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "wal_keep_size = '256MB'\nfsync = off\nfull_page_writes = off\n"
                "shared_buffers = '32MB'\nmax_connections = 40\n"
            )
        self.start_primary()
        self.sql(self.primary_port, f'CREATE DATABASE "{DATABASE}"', database="postgres")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", USER,
                  "-D", str(self.replica_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        self._ctl(self.replica_dir, "-l", str(self.root / "replica.log"), "-w",
                  "-o", f"-p {self.replica_port}", "start")
        self.wait_streaming()

    def stop(self) -> None:
        """Stop both servers at once (immediate: nothing is kept), ignoring one already down."""
        for data in (self.primary_dir, self.replica_dir):
            if (data / "postmaster.pid").exists():
                try:
                    self._ctl(data, "-m", "immediate", "-w", "stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass

    # -- what tests do to it ---------------------------------------------------------------

    def kill_primary(self) -> None:
        """``pg_ctl stop -m immediate``: the primary dies as in a crash."""
        self.stop_primary("immediate")

    def stop_primary(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` of the primary (the replica keeps retrying it)."""
        self._ctl(self.primary_dir, "-m", mode, "-w", "stop")

    def start_primary(self) -> None:
        """Start the primary again after :meth:`stop_primary`."""
        self._ctl(self.primary_dir, "-l", str(self.root / "primary.log"), "-w",
                  "-o", f"-p {self.primary_port}", "start")

    def promote(self) -> None:
        """Promote the replica; returns once it accepts writes."""
        self._ctl(self.replica_dir, "-w", "promote")
        self._until(lambda: self.sql(self.replica_port, "SELECT pg_is_in_recovery()") == "f",
                    "the promoted replica to accept writes")

    def cut_off(self) -> None:
        """Stop the replica's streaming: it keeps what it has replayed and gets nothing
        more, as an asynchronous replica cut off by a network partition."""
        self.sql(self.replica_port, "ALTER SYSTEM SET primary_conninfo = ''")
        self.sql(self.replica_port, "SELECT pg_reload_conf()")
        self._until(lambda: self.sql(self.replica_port,
                                     "SELECT count(*) FROM pg_stat_wal_receiver") == "0",
                    "the replica's WAL receiver to stop")

    def wait_streaming(self, timeout: float = 60.0) -> None:
        self._until(lambda: self.sql(self.primary_port,
                                     "SELECT count(*) FROM pg_stat_replication"
                                     " WHERE state = 'streaming'", database="postgres") == "1",
                    "the replica to stream", timeout)

    def wait_replayed(self, timeout: float = 60.0) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        target = self.sql(self.primary_port, "SELECT pg_current_wal_lsn()")
        self._until(lambda: self.sql(
            self.replica_port, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") == "t",
            f"the replica to replay up to {target}", timeout)

    def replay_lag(self) -> float:
        """How far behind its primary the replica is, in seconds: 0 while it streams and
        has replayed all it received, else the age of its last replayed commit (0 when
        it has replayed none)."""
        value = self.sql(self.replica_port,
                         "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
                         " AND EXISTS (SELECT FROM pg_stat_wal_receiver) THEN 0"
                         " ELSE extract(epoch FROM clock_timestamp()"
                         " - pg_last_xact_replay_timestamp()) END")
        return float(value or 0)

    def _until(self, predicate, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except RuntimeError:
                pass  # a server still starting or promoting
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.root}")
            time.sleep(0.05)


def new_root() -> Path:
    """A new temporary directory for a pair. Not under pytest's ``tmp_path`` or another
    private directory: its parents must let the ``postgres`` user through."""
    return Path(tempfile.mkdtemp(prefix="gnosync-pgpair-"))


@contextmanager
def running_pair() -> Iterator[PgPair]:
    """A started :class:`PgPair` in a new temporary directory; both servers stopped
    (immediately) and the directory removed afterwards, also when the block fails."""
    root = new_root()
    pair = PgPair(root)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)
