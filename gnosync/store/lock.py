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
application name became (PostgreSQL truncates it to 63 bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
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


def leader_name(schema: str, component: str) -> str:
    """The application_name of the connection holding the writer lock."""
    return f"gnosync leader {schema}.{component}"


def standby_name(schema: str, component: str) -> str:
    """The application_name of a connection waiting for the writer lock."""
    return f"gnosync standby {schema}.{component}"


@dataclass(frozen=True, slots=True)
class WriterInfo:
    """A connection that holds (``leader``) or waits for (``standby``) the writer lock.

    ``pid`` is the PostgreSQL backend's process id (``pg_stat_activity.pid``), which
    ``pg_terminate_backend`` takes. ``client_addr``, ``client_port`` and
    ``backend_start`` are None when PostgreSQL hides them (the connection belongs to
    another role and this one lacks pg_read_all_stats); ``client_addr`` is None and
    ``client_port`` -1 for a Unix-domain socket.
    """

    role: str
    pid: int
    client_addr: str | None
    client_port: int | None
    backend_start: datetime | None
    application_name: str

    @property
    def client(self) -> str:
        """Where the connection comes from, as ``host:port``."""
        if self.client_addr is None:
            return "a local socket" if self.client_port == -1 else "an unknown client"
        host = f"[{self.client_addr}]" if ":" in self.client_addr else self.client_addr
        return f"{host}:{self.client_port}" if self.client_port is not None else host

    def describe(self) -> str:
        """One line for messages: backend pid, client and application name."""
        return (
            f"backend pid {self.pid} from {self.client},"
            f" application {self.application_name!r}"
        )

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.backend_start is not None:
            data["backend_start"] = self.backend_start.isoformat()
        return data


class NotTheWriter(StoreError):
    """Another process holds the writer lock; this write was refused and stored nothing.

    Not retryable: the other process writes until it stops. ``holder`` describes it
    when it could be found.
    """

    def __init__(self, *, schema: str, where: str, holder: WriterInfo | None = None):
        who = "another gnosync process"
        if holder is not None:
            who += f" ({holder.describe()})"
        message = (
            f"{who} is writing schema {schema} at {where};"
            " stop it, or let this one wait as a standby (gnosync run)"
        )
        super().__init__(message, retryable=False)
        self.schema = schema
        self.holder = holder
