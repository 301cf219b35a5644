"""Reading from a replica: where a hot standby stands behind its primary.

``gnosync status`` and ``gnosync verify`` read only, so they run on a read-only
streaming replica as well as on the primary. There they report what the replica holds,
which may be behind what the primary has committed: :class:`ReplicaState` says by how
much (the replay lag, see :data:`gnosync.store.sql.REPLICA_STATE`), and
:func:`lag_warning` turns a large lag into one line for the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Seconds of replay lag above which status and verify warn that the replica is far behind.
LAG_WARNING_S = 60.0


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """A hot standby's replay position: ``receiving`` while its WAL receiver streams from
    a primary; ``replay_lag_s`` 0 when it has replayed all it received, else the age
    of its last replayed commit (None before it replayed any)."""

    receiving: bool
    last_replayed_at: datetime | None
    replay_lag_s: float | None

    @classmethod
    def from_row(cls, row: Any) -> ReplicaState | None:
        """The state in a :data:`~gnosync.store.sql.REPLICA_STATE` row; None on a primary."""
        if not row["in_recovery"]:
            return None
        lag = row["replay_lag_s"]
        return cls(bool(row["receiving"]), row["last_replayed_at"],
                   None if lag is None else round(float(lag), 3))

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "in_recovery": True,
            "receiving": self.receiving,
            "last_replayed_at": None if self.last_replayed_at is None else self.last_replayed_at.isoformat(),
            "replay_lag_s": self.replay_lag_s,
        }

    def describe(self) -> str:
        """One phrase: ``a replica 3.2 s behind its primary (streaming)``."""
        if self.replay_lag_s is None:
            behind = "a replica that has replayed no commit yet"
        else:
            behind = f"a replica {self.replay_lag_s:g} s behind its primary"
        stream = "streaming" if self.receiving else "not receiving from a primary"
        if self.last_replayed_at is not None:
            stream += f", last replayed commit at {self.last_replayed_at.isoformat()}"
        return f"{behind} ({stream})"


def lag_warning(state: ReplicaState | None, limit: float = LAG_WARNING_S) -> str | None:
    """The warning when ``state`` is a replica more than ``limit`` seconds behind (or one
    that cannot say how far); None otherwise."""
    if state is None:
        return None
    if state.replay_lag_s is None or state.replay_lag_s > limit:
        lag = "an unknown time" if state.replay_lag_s is None else f"{state.replay_lag_s:g} s"
        return (f"this replica is {lag} behind its primary: it lacks what was committed"
                " since; read from the primary, or check the replication"
                + ("" if state.receiving else " (the replica receives nothing from a primary)"))
    return None


def replica_from_json(data: dict[str, Any] | None) -> ReplicaState | None:
    """The inverse of :meth:`ReplicaState.to_json_dict`, for renderers of a JSON report."""
    if not data:
        return None
    at = data.get("last_replayed_at")
    return ReplicaState(bool(data.get("receiving")), datetime.fromisoformat(at) if at else None,
                        data.get("replay_lag_s"))
