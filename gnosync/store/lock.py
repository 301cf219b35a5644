"""One writer per schema: a PostgreSQL session advisory lock.

The tables are per schema, so the lock is too: two processes that own different
``app_state`` components of one schema still write the same blocks, and only one of
them may lead. The component only names the connections (for ``gnosync status`` and
``pg_stat_activity``).

``gnosync run`` claims the lock on a dedicated connection and keeps it for as long as
that connection lives; PostgreSQL releases it when the connection closes, whether the
process exits, is killed, or the connection drops. A process that finds the lock taken
waits as a standby and polls for it.

Fencing: the leader writes only through the connection that holds the lock. A store
that holds no lock writes through its pool, and each of its write transactions first
takes the same key as a transaction lock, without waiting: while another process holds
it, the write is refused with :class:`NotTheWriter` and nothing is written.

Standbys also hold a shared lock on a second key while they wait, so that
:meth:`~gnosync.store.Store.writers` finds them in ``pg_locks`` whatever their
application name became (PostgreSQL truncates it to 63 bytes). The application name
carries the gnosync process's pid and host (``gnosync leader indexer.block_sync
1234@host``), which ``gnosync status`` shows: the backend pid alone does not say which
gnosync process to stop.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gnosync.errors import StoreError

LEADER = "leader"
STANDBY = "standby"


def _key(text: str) -> int:
    """A stable signed 64-bit advisory lock key for ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def writer_lock_key(schema: str) -> int:
    """The advisory lock key held by the one writer of ``schema``."""
    return _key(f"gnosync-writer:{schema}")


def standby_lock_key(schema: str) -> int:
    """The key standbys of ``schema`` hold (shared) while they wait."""
    return _key(f"gnosync-standby:{schema}")


def lock_tag(key: int) -> tuple[int, int]:
    """``key`` as pg_locks shows it: (classid, objid), the high and low 32 bits."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


# PostgreSQL keeps the first 63 bytes of an application_name (NAMEDATALEN - 1).
APPLICATION_NAME_BYTES = 63
# The host part of the name is cut to this, so that pid@host and the role always fit.
_HOST_BYTES = 24
_PROCESS = re.compile(r"(\d+)@(\S+)")


def leader_name(schema: str, component: str, *, pid: int | None = None, host: str | None = None) -> str:
    """The application_name of the connection holding the writer lock."""
    return _writer_name(LEADER, schema, component, pid, host)


def standby_name(schema: str, component: str, *, pid: int | None = None, host: str | None = None) -> str:
    """The application_name of a connection waiting for the writer lock."""
    return _writer_name(STANDBY, schema, component, pid, host)


def _writer_name(role: str, schema: str, component: str, pid: int | None, host: str | None) -> str:
    """``gnosync <role> <schema>.<component> <pid>@<host>``, this process's pid and host
    unless given, within PostgreSQL's 63 bytes: a long schema or component is cut so
    that the role (first) and ``pid@host`` (last) always survive, for
    :func:`parse_writer_name`. PostgreSQL shows characters outside ASCII as ``?``."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname() if host is None else host
    host = "".join(c if c.isascii() and c.isprintable() and not c.isspace() else "?" for c in host)
    process = f"{pid}@{host[:_HOST_BYTES] or '?'}"
    head = f"gnosync {role} {schema}.{component}".encode()
    room = APPLICATION_NAME_BYTES - len(process) - 1
    return f"{head[:room].decode(errors='ignore')} {process}"


def parse_writer_name(name: str) -> tuple[int | None, str | None]:
    """(pid, host) of the gnosync process that named a connection ``name``; (None, None)
    for a name without them (an older gnosync's)."""
    match = _PROCESS.fullmatch(name.rpartition(" ")[2]) if name.startswith("gnosync ") else None
    return (int(match.group(1)), match.group(2)) if match else (None, None)


@dataclass(frozen=True, slots=True)
class WriterInfo:
    """A connection that holds (``leader``) or waits for (``standby``) the writer lock.

    ``pid`` and ``host`` are the gnosync process's, read back from the connection's
    application name (None for an older gnosync that did not write them there).
    ``backend_pid`` is the PostgreSQL backend's process id (``pg_stat_activity.pid``),
    which ``pg_terminate_backend`` takes. ``client_addr``, ``client_port`` and
    ``backend_start`` are None when PostgreSQL hides them (the connection belongs to
    another role and this one lacks pg_read_all_stats); ``client_addr`` is None and
    ``client_port`` -1 for a Unix-domain socket.
    """

    role: str
    backend_pid: int
    client_addr: str | None
    client_port: int | None
    backend_start: datetime | None
    application_name: str

    @property
    def pid(self) -> int | None:
        return parse_writer_name(self.application_name)[0]

    @property
    def host(self) -> str | None:
        return parse_writer_name(self.application_name)[1]

    @property
    def client(self) -> str:
        """Where the connection comes from, as ``host:port``."""
        if self.client_addr is None:
            return "a local socket" if self.client_port == -1 else "an unknown client"
        host = f"[{self.client_addr}]" if ":" in self.client_addr else self.client_addr
        return f"{host}:{self.client_port}" if self.client_port is not None else host

    def describe(self) -> str:
        """One line for messages and ``gnosync status``: see :func:`describe_writer`."""
        return describe_writer(self.to_json_dict())

    def __str__(self) -> str:
        return self.describe()

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON values: the gnosync process first, then its PostgreSQL connection."""
        return {
            "role": self.role,
            "pid": self.pid,
            "host": self.host,
            "since": self.backend_start.isoformat() if self.backend_start is not None else None,
            "backend_pid": self.backend_pid,
            "client": self.client,
            "application_name": self.application_name,
        }


def describe_writer(writer: dict[str, Any]) -> str:
    """``leader pid 1234 on host h since 2026-...Z (PostgreSQL backend pid 5678 from
    a local socket)`` from :meth:`WriterInfo.to_json_dict`'s fields."""
    if writer.get("pid") is not None:
        who = f"{writer['role']} pid {writer['pid']} on host {writer['host']}"
    else:
        who = f"{writer['role']} {writer['application_name']!r}"
    since = f" since {writer['since']}" if writer.get("since") else ""
    return f"{who}{since} (PostgreSQL backend pid {writer['backend_pid']} from {writer['client']})"


class NotTheWriter(StoreError):
    """Another process holds the writer lock; this write was refused and stored nothing.

    Not retryable: the other process writes until it stops. ``holder`` describes it
    when it could be found.
    """

    def __init__(self, *, schema: str, where: str, holder: WriterInfo | None = None):
        who = "another gnosync process"
        if holder is not None:
            who += f", {holder.describe()},"
        message = (
            f"{who} is writing schema {schema} at {where};"
            " stop it, or let this one wait as a standby (gnosync run)"
        )
        super().__init__(message, retryable=False)
        self.schema = schema
        self.holder = holder
