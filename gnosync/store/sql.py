"""Every SQL statement gnosync's store sends, built for one schema.

Identifiers are always quoted; values are always parameters. The migration files in
``migrations/`` are the only other SQL, and they use unqualified names resolved through
a transaction-local ``search_path`` (see :mod:`gnosync.store.migrate`).
"""

from __future__ import annotations

from collections.abc import Iterable

# Column order of the binary COPY; ``gnosync.store.rows`` builds tuples in this order.
BLOCK_COLUMNS: tuple[str, ...] = (
    "height",
    "hash",
    "chain_id",
    "time",
    "time_ns",
    "num_txs",
    "total_txs",
    "version",
    "app_version",
    "last_block_hash",
    "last_commit_hash",
    "validators_hash",
    "next_validators_hash",
    "consensus_hash",
    "app_hash",
    "last_results_hash",
    "proposer_address",
)

TRANSACTION_COLUMNS: tuple[str, ...] = (
    "block_height",
    "tx_index",
    "hash",
    "success",
    "gas_wanted",
    "gas_used",
    "gas_fee_amount",
    "gas_fee_denom",
    "memo",
    "content_raw",
    "messages",
    "response",
)

STATE_COLUMNS: tuple[str, ...] = (
    "component",
    "last_block_h",
    "last_block_hash",
    "last_tx_hash",
    "last_sync_time",
    "status",
    "error_count",
    "last_error",
    "chain_id",
    "updated_at",
)

# The app_state columns a caller may set; component is the key, updated_at is automatic.
WRITABLE_STATE_COLUMNS: frozenset[str] = frozenset(STATE_COLUMNS) - {"component", "updated_at"}

STATUSES: frozenset[str] = frozenset({"syncing", "synced", "error", "stopped"})

BLOCKS_TABLE = "blocks"
TRANSACTIONS_TABLE = "transactions"

PING = "SELECT 1"
# Transactions on the writer connection, which asyncpg's transaction object does not manage.
BEGIN = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
ADVISORY_XACT_LOCK = "SELECT pg_advisory_xact_lock($1)"

# -- the writer lock (see gnosync.store.lock) ----------------------------------------------
TRY_ADVISORY_LOCK = "SELECT pg_try_advisory_lock($1)"
# Fencing inside every write transaction made without the session lock.
TRY_ADVISORY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
# Held by standbys while they wait; shared locks never wait for each other.
ADVISORY_LOCK_SHARED = "SELECT pg_advisory_lock_shared($1)"
ADVISORY_UNLOCK_SHARED = "SELECT pg_advisory_unlock_shared($1)"
SET_APPLICATION_NAME = "SELECT set_config('application_name', $1, false)"
# Server-side keepalives on the writer connection, so that PostgreSQL releases the lock
# of a leader whose host or network vanished without closing the socket.
SET_WRITER_KEEPALIVES = (
    "SELECT set_config('tcp_keepalives_idle', $1, false),"
    " set_config('tcp_keepalives_interval', $2, false),"
    " set_config('tcp_keepalives_count', $3, false)"
)
# The leader (holding the writer key, $1/$2 as classid/objid) and the standbys (holding
# the standby key $3/$4 shared) of one schema and component, in this database.
WRITERS = (
    "SELECT DISTINCT"
    " CASE WHEN l.mode = 'ExclusiveLock' THEN 'leader' ELSE 'standby' END AS role,"
    " a.pid, host(a.client_addr) AS client_addr, a.client_port, a.backend_start,"
    " a.application_name"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND ((l.classid = $1 AND l.objid = $2 AND l.mode = 'ExclusiveLock')"
    "  OR (l.classid = $3 AND l.objid = $4 AND l.mode = 'ShareLock'))"
    " ORDER BY role, a.backend_start, a.pid"
)
# Transaction-local, so a pooled connection never keeps it.
SET_LOCAL_SEARCH_PATH = "SELECT set_config('search_path', $1, true)"

# For the embedded server: create gnosync's database once.
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


def create_database(name: str) -> str:
    return f"CREATE DATABASE {quote_ident(name)}"


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier, whatever characters it holds."""
    if not name:
        raise ValueError("an SQL identifier cannot be empty")
    if "\x00" in name:
        raise ValueError(f"an SQL identifier cannot contain NUL: {name!r}")
    if len(name.encode()) > 63:
        raise ValueError(f"an SQL identifier is limited to 63 bytes: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _columns(names: Iterable[str]) -> str:
    return ", ".join(quote_ident(name) for name in names)


class Statements:
    """The statements for the tables of ``schema``."""

    def __init__(self, schema: str):
        s = quote_ident(schema)
        self.schema = schema
        self.quoted_schema = s
        blocks = f"{s}.{quote_ident(BLOCKS_TABLE)}"
        app_state = f"{s}.{quote_ident('app_state')}"
        migrations = f"{s}.{quote_ident('schema_migrations')}"
        self._app_state = app_state

        # -- migrations ------------------------------------------------------------------
        self.create_schema = f"CREATE SCHEMA IF NOT EXISTS {s}"
        self.create_migrations_table = (
            f"CREATE TABLE IF NOT EXISTS {migrations} ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        self.applied_migrations = f"SELECT version, name FROM {migrations} ORDER BY version"
        self.record_migration = f"INSERT INTO {migrations} (version, name) VALUES ($1, $2)"
        # The value for SET_LOCAL_SEARCH_PATH: a search path naming only this schema.
        self.search_path = s

        # -- reads -----------------------------------------------------------------------
        self.block_ref = (
            f"SELECT height, hash, chain_id, total_txs FROM {blocks} WHERE height = $1"
        )
        self.stored_bounds = f"SELECT min(height), max(height) FROM {blocks}"
        self.block_hashes = (
            f"SELECT height, hash FROM {blocks} WHERE height BETWEEN $1 AND $2 ORDER BY height"
        )

        # -- app_state -------------------------------------------------------------------
        self.get_state = f"SELECT {_columns(STATE_COLUMNS)} FROM {app_state} WHERE component = $1"
        self.last_synced_height = (
            "SELECT COALESCE("
            f"(SELECT last_block_h FROM {app_state} WHERE component = $1),"
            f" (SELECT max(height) FROM {blocks}))"
        )
        # Run by commit_batch inside its transaction. $1 component, $2 height of the
        # batch's last block, $3 its hash, $4 the batch's last tx hash (or NULL), $5 status,
        # $6 chain_id. A batch stored below the existing range (prepending) does not move
        # last_block_h/hash/last_tx_hash; one at the top moves them, and last_tx_hash only
        # when the batch has transactions.
        self.upsert_last_block = (
            f"INSERT INTO {app_state} AS a (component, last_block_h, last_block_hash,"
            " last_tx_hash, last_sync_time, status, error_count, last_error, chain_id,"
            " updated_at)"
            " VALUES ($1, $2, $3, $4, now(), $5, 0, NULL, $6, now())"
            " ON CONFLICT (component) DO UPDATE SET"
            " last_block_h = GREATEST(a.last_block_h, EXCLUDED.last_block_h),"
            " last_block_hash = CASE"
            "  WHEN a.last_block_h IS NULL OR EXCLUDED.last_block_h >= a.last_block_h"
            "  THEN EXCLUDED.last_block_hash ELSE a.last_block_hash END,"
            " last_tx_hash = CASE"
            "  WHEN (a.last_block_h IS NULL OR EXCLUDED.last_block_h >= a.last_block_h)"
            "   AND EXCLUDED.last_tx_hash IS NOT NULL"
            "  THEN EXCLUDED.last_tx_hash ELSE a.last_tx_hash END,"
            " last_sync_time = now(),"
            " status = EXCLUDED.status,"
            " error_count = 0,"
            " last_error = NULL,"
            " chain_id = EXCLUDED.chain_id,"
            " updated_at = now()"
        )
        # $1 component, $2 message.
        self.record_error = (
            f"INSERT INTO {app_state} AS a (component, status, error_count, last_error,"
            " updated_at) VALUES ($1, 'error', 1, $2, now())"
            " ON CONFLICT (component) DO UPDATE SET"
            " status = 'error', error_count = a.error_count + 1,"
            " last_error = EXCLUDED.last_error, updated_at = now()"
        )

    def update_state(self, columns: Iterable[str]) -> str:
        """Upsert of ``columns`` of app_state: $1 is the component, then one per column."""
        names = list(columns)
        unknown = sorted(set(names) - WRITABLE_STATE_COLUMNS)
        if unknown:
            raise ValueError(
                f"unknown app_state column(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(WRITABLE_STATE_COLUMNS))}"
            )
        if len(set(names)) != len(names):
            raise ValueError("duplicate app_state column")
        quoted = [quote_ident(name) for name in names]
        insert_columns = ", ".join(["component", *quoted, "updated_at"])
        values = ", ".join(["$1", *(f"${i}" for i in range(2, len(names) + 2)), "now()"])
        assignments = ", ".join(
            [*(f"{name} = EXCLUDED.{name}" for name in quoted), "updated_at = now()"]
        )
        return (
            f"INSERT INTO {self._app_state} ({insert_columns}) VALUES ({values})"
            f" ON CONFLICT (component) DO UPDATE SET {assignments}"
        )
