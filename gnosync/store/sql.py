"""Every SQL statement gnosync's store sends, built for one schema.

Identifiers are always quoted; values are always parameters. The migration files in
``migrations/`` are the only other SQL, and they use unqualified names resolved through
a transaction-local ``search_path`` (see :mod:`gnosync.store.migrate`).
"""

from __future__ import annotations

import hashlib
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
    "sanitized",
)

# Decoded tables (gnosync.decode builds their rows in these orders).
MESSAGE_COLUMNS: tuple[str, ...] = (
    "block_height", "tx_index", "msg_index", "type_url", "route", "kind", "sender",
    "to_address", "pkg_path", "func", "args", "send", "max_deposit", "success",
)
EVENT_COLUMNS: tuple[str, ...] = (
    "block_height", "tx_index", "event_index", "kind", "type", "pkg_path", "attrs",
    "bytes_delta", "fee_amount", "fee_denom", "raw",
)
TX_ACCOUNT_COLUMNS: tuple[str, ...] = ("address", "block_height", "tx_index", "role")
PACKAGE_FILE_COLUMNS: tuple[str, ...] = ("block_height", "tx_index", "msg_index", "name", "body")
PACKAGE_COLUMNS: tuple[str, ...] = (
    "path", "name", "creator", "block_height", "tx_index", "msg_index", "file_count",
    "bytes", "address",
)
COIN_TRANSFER_COLUMNS: tuple[str, ...] = (
    "block_height", "tx_index", "msg_index", "coin_index", "from_address", "to_address",
    "denom", "amount", "source",
)
GRC20_TRANSFER_COLUMNS: tuple[str, ...] = (
    "block_height", "tx_index", "event_index", "token", "pkg_path", "from_address",
    "to_address", "amount", "kind",
)
GRC20_TOKEN_COLUMNS: tuple[str, ...] = (
    "token", "pkg_path", "name", "symbol", "decimals", "first_height",
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
CHECKPOINTS_TABLE = "checkpoints"
APP_STATE_TABLE = "app_state"
MIGRATIONS_TABLE = "schema_migrations"
DECODER_STATE_TABLE = "decoder_state"
MESSAGES_TABLE = "messages"
EVENTS_TABLE = "events"
TX_ACCOUNTS_TABLE = "tx_accounts"
PACKAGE_FILES_TABLE = "package_files"
PACKAGES_TABLE = "packages"
COIN_TRANSFERS_TABLE = "coin_transfers"
GRC20_TRANSFERS_TABLE = "grc20_transfers"
GRC20_BALANCES_TABLE = "grc20_balances"
GRC20_TOKENS_TABLE = "grc20_tokens"
# The tables partitioned by RANGE (block_height) (migration 0005); gnosync creates their
# partitions, all four with the same bounds, in the schema named by partitions_schema().
PARTITIONED_TABLES: tuple[str, ...] = (
    TRANSACTIONS_TABLE, MESSAGES_TABLE, EVENTS_TABLE, TX_ACCOUNTS_TABLE,
)
# Every table of a migrated schema.
TABLES: tuple[str, ...] = (
    BLOCKS_TABLE, TRANSACTIONS_TABLE, CHECKPOINTS_TABLE, APP_STATE_TABLE, MIGRATIONS_TABLE,
)

PING = "SELECT 1"
# Transactions on the writer connection, which asyncpg's transaction object does not manage.
BEGIN = "BEGIN"
COMMIT = "COMMIT"
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO off"
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
# the standby key $3/$4 shared) of one schema, in this database.
WRITERS = (
    "SELECT DISTINCT"
    " CASE WHEN l.mode = 'ExclusiveLock' THEN 'leader' ELSE 'standby' END AS role,"
    " a.pid AS backend_pid, host(a.client_addr) AS client_addr, a.client_port, a.backend_start,"
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

# -- decoded tables (migration 0004; rows built by gnosync.decode) -------------------------
# The derived tables whose rows belong to one transaction (deleted with it, by height).
PER_TX_DERIVED_TABLES: tuple[str, ...] = (
    MESSAGES_TABLE, EVENTS_TABLE, TX_ACCOUNTS_TABLE, COIN_TRANSFERS_TABLE,
    GRC20_TRANSFERS_TABLE, PACKAGES_TABLE,
)
# The derived tables that hold no foreign key to transactions (a per-row check costs
# more than their rows): gnosync deletes their rows wherever it deletes transactions.
UNREFERENCING_DERIVED_TABLES: tuple[str, ...] = (
    TX_ACCOUNTS_TABLE, COIN_TRANSFERS_TABLE, GRC20_TRANSFERS_TABLE, PACKAGES_TABLE,
)
# Everything a full re-derivation empties; package_files is stored data and never is.
DERIVED_TABLES: tuple[str, ...] = (*PER_TX_DERIVED_TABLES, GRC20_TOKENS_TABLE, GRC20_BALANCES_TABLE)
# The PostgreSQL types of the columns written through unnest() arrays.
_UNNEST_TYPES: dict[str, str] = {
    "path": "text", "name": "text", "creator": "text", "block_height": "bigint",
    "tx_index": "integer", "msg_index": "integer", "file_count": "integer", "bytes": "bigint",
    "address": "text", "token": "text", "pkg_path": "text", "symbol": "text",
    "decimals": "integer", "first_height": "bigint",
}


def _unnest(table: str, columns: tuple[str, ...]) -> str:
    """``INSERT INTO table (columns) SELECT * FROM unnest($1::type[], ...)``: one
    parameter per column, each an array of that column's values."""
    arrays = ", ".join(
        f"${i}::{_UNNEST_TYPES[name]}[]" for i, name in enumerate(columns, start=1)
    )
    return f"INSERT INTO {table} AS x ({_columns(columns)}) SELECT * FROM unnest({arrays})"


def _segment(blocks: str, txs: str, low: str, high: str, previous: str) -> str:
    """One row over the checkpoint segment ``low < height <= high``: its checksum chained
    from ``previous`` (defined in :mod:`gnosync.store.checkpoints`), its block and
    transaction counts, its first stored height and its last transaction's hash.
    ``low``, ``high`` and ``previous`` are SQL expressions."""
    return (
        "SELECT encode(sha256(convert_to("
        f"COALESCE({previous}, '') || E'\\n'"
        " || COALESCE(string_agg(l.line, '' ORDER BY l.h, l.i), ''), 'UTF8')), 'hex')"
        " AS checksum,"
        " (count(*) FILTER (WHERE l.i < 0))::integer AS blocks,"
        " (count(*) FILTER (WHERE l.i >= 0))::integer AS transactions,"
        " min(l.h) AS first_height,"
        f" (SELECT sg_t.hash FROM {txs} sg_t WHERE sg_t.block_height > {low}"
        f"  AND sg_t.block_height <= {high}"
        "  ORDER BY sg_t.block_height DESC, sg_t.tx_index DESC LIMIT 1) AS last_tx_hash"
        " FROM ("
        "SELECT sg_b.height AS h, -1 AS i, sg_b.height::text || ':' || sg_b.hash || E'\\n' AS line"
        f" FROM {blocks} sg_b WHERE sg_b.height > {low} AND sg_b.height <= {high}"
        " UNION ALL"
        " SELECT sg_t.block_height, sg_t.tx_index,"
        " sg_t.block_height::text || ':' || sg_t.tx_index::text || ':' || sg_t.hash || E'\\n'"
        f" FROM {txs} sg_t WHERE sg_t.block_height > {low} AND sg_t.block_height <= {high}"
        ") l"
    )


def partitions_schema(schema: str) -> str:
    """The schema that holds the partitions of ``schema``'s partitioned tables: apart, so
    that ``schema`` lists only the tables people query (psql, PostGraphile, Hasura)."""
    name = f"{schema}_partitions"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(schema.encode()).hexdigest()[:8]
    head = schema.encode()[:40].decode(errors="ignore")
    return f"{head}_{digest}_partitions"


def create_partition(schema: str, table: str, name: str, low: int, high: int) -> list[str]:
    """The statements that add partition ``name`` (heights ``low`` to ``high`` - 1) to
    ``schema.table``: a table LIKE the parent, then ATTACH. ATTACH locks the parent
    SHARE UPDATE EXCLUSIVE, which readers never wait for (CREATE TABLE ... PARTITION OF
    would take ACCESS EXCLUSIVE on it); the new table is empty, so its check is instant
    and the parent's indexes and foreign keys are created on it at once."""
    parent = f"{quote_ident(schema)}.{quote_ident(table)}"
    child = f"{quote_ident(partitions_schema(schema))}.{quote_ident(name)}"
    return [
        f"CREATE TABLE {child} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
        " INCLUDING STORAGE INCLUDING COMPRESSION)",
        f"ALTER TABLE {parent} ATTACH PARTITION {child}"
        f" FOR VALUES FROM ({int(low)}) TO ({int(high)})",
    ]


def create_database(name: str) -> str:
    return f"CREATE DATABASE {quote_ident(name)}"


# The end of the stored range moves only upwards: a batch stored below it (prepended,
# or replaced by a repair) leaves last_block_h, its hash and last_tx_hash alone.
_MOVE_TOP_ONLY = (
    " last_block_h = GREATEST(a.last_block_h, EXCLUDED.last_block_h),"
    " last_block_hash = CASE"
    "  WHEN a.last_block_h IS NULL OR EXCLUDED.last_block_h >= a.last_block_h"
    "  THEN EXCLUDED.last_block_hash ELSE a.last_block_hash END,"
    " last_tx_hash = CASE"
    "  WHEN (a.last_block_h IS NULL OR EXCLUDED.last_block_h >= a.last_block_h)"
    "   AND EXCLUDED.last_tx_hash IS NOT NULL"
    "  THEN EXCLUDED.last_tx_hash ELSE a.last_tx_hash END,"
)


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
        txs = f"{s}.{quote_ident(TRANSACTIONS_TABLE)}"
        checkpoints = f"{s}.{quote_ident(CHECKPOINTS_TABLE)}"
        app_state = f"{s}.{quote_ident(APP_STATE_TABLE)}"
        migrations = f"{s}.{quote_ident(MIGRATIONS_TABLE)}"
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
            + _MOVE_TOP_ONLY +
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

        # -- checkpoints (see gnosync.store.checkpoints) ----------------------------------
        # Run inside a commit's transaction after its COPY: the checkpoint at $1, over the
        # stored heights after the highest checkpoint below $1, chained from its checksum.
        self.insert_checkpoint = (
            f"INSERT INTO {checkpoints}"
            " (height, block_hash, last_tx_hash, checksum, blocks, transactions)"
            " SELECT b.height, b.hash, s.last_tx_hash, s.checksum, s.blocks, s.transactions"
            f" FROM {blocks} b"
            " LEFT JOIN LATERAL ("
            f"SELECT c.height, c.checksum FROM {checkpoints} c WHERE c.height < b.height"
            " ORDER BY c.height DESC LIMIT 1) p ON true"
            " CROSS JOIN LATERAL ("
            + _segment(blocks, txs, "COALESCE(p.height, -1)", "b.height", "p.checksum")
            + ") s WHERE b.height = $1::bigint"
            " RETURNING checksum"
        )
        # The checkpoints in $1..$2, each recomputed from the rows: its stored columns,
        # its predecessor's height and checksum, and the segment recomputed ("expected",
        # chained from the stored predecessor checksum).
        self.audit_checkpoints = (
            "SELECT c.height, c.block_hash, c.last_tx_hash, c.checksum, c.blocks,"
            " c.transactions, c.prev_height, c.prev_checksum, b.hash AS stored_block_hash,"
            " s.checksum AS expected, s.blocks AS counted_blocks,"
            " s.transactions AS counted_transactions, s.last_tx_hash AS counted_last_tx_hash,"
            " s.first_height"
            " FROM (SELECT height, block_hash, last_tx_hash, checksum, blocks, transactions,"
            "  lag(height) OVER w AS prev_height, lag(checksum) OVER w AS prev_checksum"
            f"  FROM {checkpoints} WHERE height <= $2::bigint WINDOW w AS (ORDER BY height)) c"
            f" LEFT JOIN {blocks} b ON b.height = c.height"
            " CROSS JOIN LATERAL ("
            + _segment(blocks, txs, "COALESCE(c.prev_height, -1)", "c.height", "c.prev_checksum")
            + ") s WHERE c.height >= $1::bigint ORDER BY c.height"
        )
        # The rows of the segment $1 < height <= $2, for recomputing a checksum in Python.
        self.segment_blocks = (
            f"SELECT height, hash FROM {blocks}"
            " WHERE height > $1::bigint AND height <= $2::bigint ORDER BY height"
        )
        self.segment_transactions = (
            f"SELECT block_height, tx_index, hash FROM {txs}"
            " WHERE block_height > $1::bigint AND block_height <= $2::bigint"
            " ORDER BY block_height, tx_index"
        )
        self.checkpoint_heights = (
            f"SELECT height FROM {checkpoints}"
            " WHERE height BETWEEN $1::bigint AND $2::bigint ORDER BY height"
        )

        # -- audit (gnosync verify): set-based, one pass per check ----------------------
        # Which of gnosync's tables ($2) schema $1 holds, in which database: verify reads
        # this before anything else, since it never migrates.
        self.audit_tables = (
            "SELECT current_database() AS database, ARRAY("
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname = ANY($2::text[])"
            " ORDER BY 1) AS tables"
        )
        # $1 component: the stored bounds and the app_state row.
        self.audit_bounds = (
            f"SELECT (SELECT min(height) FROM {blocks}) AS min_height,"
            f" (SELECT max(height) FROM {blocks}) AS max_height,"
            f" (SELECT min(block_height) FROM {txs}) AS min_tx_height,"
            f" (SELECT max(block_height) FROM {txs}) AS max_tx_height,"
            " a.component IS NOT NULL AS has_state, a.last_block_h, a.last_block_hash,"
            " a.chain_id,"
            f" (SELECT hash FROM {blocks} WHERE height = a.last_block_h) AS hash_at_last"
            f" FROM (SELECT 1) one LEFT JOIN {app_state} a ON a.component = $1"
        )
        # $1..$2: how much the range holds.
        self.audit_counts = (
            f"SELECT (SELECT count(*) FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint)"
            " AS blocks,"
            f" (SELECT min(height) FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint)"
            " AS low,"
            f" (SELECT max(height) FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint)"
            " AS high,"
            f" (SELECT count(*) FROM {txs} WHERE block_height BETWEEN $1::bigint AND $2::bigint)"
            " AS transactions,"
            f" (SELECT count(*) FROM {checkpoints} WHERE height BETWEEN $1::bigint AND $2::bigint)"
            " AS checkpoints"
        )
        # Runs of missing heights strictly between stored ones in $1..$2; $3 caps the rows.
        self.audit_gaps = (
            "SELECT height + 1 AS first, next - 1 AS last FROM ("
            " SELECT height, lead(height) OVER (ORDER BY height) AS next"
            f" FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint) g"
            " WHERE next > height + 1 ORDER BY height LIMIT $3"
        )
        # Which of blocks and transactions have a valid unique index on "hash" alone: for
        # those, a duplicate hash cannot be stored and the scans below are skipped.
        self.unique_hash_tables = (
            "SELECT c.relname AS table_name FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
            f" WHERE n.nspname = $1 AND c.relname IN ('{BLOCKS_TABLE}', '{TRANSACTIONS_TABLE}')"
            " AND i.indisunique AND i.indisvalid AND i.indnatts = 1 AND i.indpred IS NULL"
            " AND a.attname = 'hash'"
        )
        # Hashes held by more than one block, or transaction, in $1..$2; $3 caps the rows.
        self.audit_duplicate_block_hashes = (
            "SELECT 'block' AS what, hash, array_agg(height ORDER BY height) AS heights"
            f" FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint"
            " GROUP BY hash HAVING count(*) > 1 LIMIT $3"
        )
        self.audit_duplicate_transaction_hashes = (
            "SELECT 'transaction' AS what, hash,"
            " array_agg(block_height ORDER BY block_height) AS heights"
            f" FROM {txs} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            " GROUP BY hash HAVING count(*) > 1 LIMIT $3"
        )
        # The link columns of the blocks in $1..$2, in height order: the rules of
        # gnosync.sync.validate decide, in Python, which of them are broken.
        self.audit_block_links = (
            "SELECT height, hash, last_block_hash, total_txs, num_txs, chain_id"
            f" FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint ORDER BY height"
        )
        # Heights whose transactions disagree with their block: blocks in $1..$2 whose
        # num_txs is not the number stored, stored transactions in $3..$4 without a block,
        # and index runs that do not go 0, 1, 2, ... $5 caps the rows.
        self.audit_transactions = (
            "SELECT COALESCE(b.height, t.block_height) AS height, b.num_txs,"
            " COALESCE(t.n, 0) AS stored, t.min_index, t.max_index"
            f" FROM (SELECT height, num_txs FROM {blocks}"
            "  WHERE height BETWEEN $1::bigint AND $2::bigint) b"
            " FULL JOIN (SELECT block_height, count(*) AS n, min(tx_index) AS min_index,"
            f"  max(tx_index) AS max_index FROM {txs}"
            "  WHERE block_height BETWEEN $3::bigint AND $4::bigint GROUP BY block_height) t"
            " ON t.block_height = b.height"
            " WHERE b.height IS NULL OR b.num_txs <> COALESCE(t.n, 0)"
            "  OR t.min_index <> 0 OR t.max_index <> t.n - 1"
            " ORDER BY 1 LIMIT $5"
        )
        # -- audit of the derived tables ------------------------------------------------
        messages = f"{s}.{quote_ident(MESSAGES_TABLE)}"
        events = f"{s}.{quote_ident(EVENTS_TABLE)}"
        grc20_transfers = f"{s}.{quote_ident(GRC20_TRANSFERS_TABLE)}"
        grc20_balances = f"{s}.{quote_ident(GRC20_BALANCES_TABLE)}"
        # Transactions in $1..$2 whose derived message or event rows are not as many as
        # the stored JSON's; $3 caps the rows.
        served_messages = (
            "CASE WHEN jsonb_typeof(t.messages) = 'array'"
            " THEN jsonb_array_length(t.messages) ELSE 0 END"
        )
        served_events = (
            "CASE WHEN jsonb_typeof(t.response -> 'events') = 'array'"
            " THEN jsonb_array_length(t.response -> 'events') ELSE 0 END"
        )
        self.audit_derived_counts = (
            f"SELECT t.block_height AS height, t.tx_index, {served_messages} AS served_messages,"
            f" COALESCE(m.n, 0) AS messages, {served_events} AS served_events,"
            " COALESCE(e.n, 0) AS events"
            f" FROM {txs} t"
            " LEFT JOIN (SELECT block_height, tx_index, count(*) AS n"
            f"  FROM {messages} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            "  GROUP BY block_height, tx_index) m USING (block_height, tx_index)"
            " LEFT JOIN (SELECT block_height, tx_index, count(*) AS n"
            f"  FROM {events} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            "  GROUP BY block_height, tx_index) e USING (block_height, tx_index)"
            " WHERE t.block_height BETWEEN $1::bigint AND $2::bigint"
            f" AND ({served_messages} <> COALESCE(m.n, 0) OR {served_events} <> COALESCE(e.n, 0))"
            " ORDER BY 1, 2 LIMIT $3"
        )
        # Balances that are not the sum of their transfers (received minus sent), and
        # sums with no balance row; $1 caps the rows. A missing row and a zero agree.
        self.audit_balances = (
            "WITH moved AS ("
            f" SELECT token, to_address AS address, amount, block_height FROM {grc20_transfers}"
            "  WHERE to_address IS NOT NULL"
            " UNION ALL"
            f" SELECT token, from_address, -amount, block_height FROM {grc20_transfers}"
            "  WHERE from_address IS NOT NULL),"
            " summed AS (SELECT token, address, sum(amount) AS total, max(block_height) AS height"
            "  FROM moved GROUP BY token, address)"
            " SELECT COALESCE(b.token, s.token) AS token, COALESCE(b.address, s.address) AS address,"
            " b.balance, s.total, COALESCE(b.last_height, s.height) AS height"
            f" FROM {grc20_balances} b FULL JOIN summed s"
            " ON s.token = b.token AND s.address = b.address"
            " WHERE COALESCE(b.balance, 0) <> COALESCE(s.total, 0)"
            " ORDER BY 5, 1, 2 LIMIT $1"
        )
        # -- partitions (gnosync.store.partitions) --------------------------------------
        # Each partitioned table of the schema ($2: their names) with its partitions'
        # bounds (pg_get_expr text); a table with none yet gives one row with null bound.
        self.create_partitions_schema = (
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(partitions_schema(schema))}"
        )
        self.partition_bounds = (
            "SELECT p.relname::text AS parent, c.relname::text AS name,"
            " pg_get_expr(c.relpartbound, c.oid) AS bound"
            " FROM pg_class p JOIN pg_namespace n ON n.oid = p.relnamespace"
            " LEFT JOIN pg_inherits i ON i.inhparent = p.oid"
            " LEFT JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE n.nspname = $1 AND p.relkind = 'p' AND p.relname = ANY($2::text[])"
            " ORDER BY 1, 2"
        )
        self.block_link = (
            "SELECT height, hash, last_block_hash, total_txs, num_txs, chain_id"
            f" FROM {blocks} WHERE height = $1"
        )

        # -- repair: the replace path --------------------------------------------------
        self.delete_transactions_between = (
            f"DELETE FROM {txs} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
        )
        # Cascades to the transactions and checkpoints of those heights.
        self.delete_blocks_between = (
            f"DELETE FROM {blocks} WHERE height BETWEEN $1::bigint AND $2::bigint"
        )
        # The derived tables without a foreign key lose their rows of those heights in
        # the same statement (the others follow the transactions by cascade).
        orphan_derived = ", ".join(
            f"o{i} AS (DELETE FROM {s}.{quote_ident(name)} x"
            " WHERE x.block_height BETWEEN $1::bigint AND $2::bigint"
            f" AND NOT EXISTS (SELECT 1 FROM {blocks} b WHERE b.height = x.block_height))"
            for i, name in enumerate(UNREFERENCING_DERIVED_TABLES)
        )
        self.delete_orphan_transactions = (
            f"WITH {orphan_derived}"
            f" DELETE FROM {txs} t WHERE t.block_height BETWEEN $1::bigint AND $2::bigint"
            f" AND NOT EXISTS (SELECT 1 FROM {blocks} b WHERE b.height = t.block_height)"
        )
        # After a replaced range whose last block is $2 ($3 its hash, $4 the range's last
        # tx hash or NULL, $5 chain id): like upsert_last_block, never moves last_block_h
        # down and takes the hashes only at the top, but leaves status and errors alone
        # and keeps a recorded chain id.
        self.upsert_replaced_top = (
            f"INSERT INTO {app_state} AS a (component, last_block_h, last_block_hash,"
            " last_tx_hash, last_sync_time, status, error_count, last_error, chain_id,"
            " updated_at)"
            " VALUES ($1, $2, $3, $4, now(), 'stopped', 0, NULL, $5, now())"
            " ON CONFLICT (component) DO UPDATE SET"
            + _MOVE_TOP_ONLY +
            " chain_id = COALESCE(a.chain_id, EXCLUDED.chain_id),"
            " updated_at = now()"
        )

        # -- decoded tables (see gnosync.store.derived) --------------------------------
        def table(name: str) -> str:
            return f"{s}.{quote_ident(name)}"

        decoder_state = table(DECODER_STATE_TABLE)
        transfers = table(GRC20_TRANSFERS_TABLE)
        self.decoder_state = f"SELECT version, derived_to FROM {decoder_state}"
        # A database without a block yet: its derived tables are this decoder's ($1).
        self.adopt_decoder_version = (
            f"UPDATE {decoder_state} SET version = $1, derived_to = NULL, updated_at = now()"
            f" WHERE version <> $1 AND NOT EXISTS (SELECT 1 FROM {blocks})"
        )
        # A full re-derivation starts from empty derived tables, at decoder version $1.
        self.truncate_derived = "TRUNCATE " + ", ".join(table(name) for name in DERIVED_TABLES)
        self.reset_decoder_state = (
            f"UPDATE {decoder_state} SET version = $1, derived_to = NULL, updated_at = now()"
        )
        # After deriving heights $1..$2: derived_to moves up to $2 when the heights below
        # $1 are all derived already (derived_to >= $1 - 1, or none is derived and none is
        # stored below $1); a range derived above a hole leaves it where it is.
        self.advance_derived_to = (
            f"UPDATE {decoder_state} SET derived_to = GREATEST(derived_to, $2::bigint),"
            " updated_at = now()"
            " WHERE derived_to >= $1::bigint - 1 OR (derived_to IS NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {blocks} WHERE height < $1::bigint))"
        )
        # Heights from $1 on lose their derived rows without getting new ones (a replaced
        # range written with derive = none): derived_to falls below them.
        self.lower_derived_to = (
            f"UPDATE {decoder_state} SET derived_to = NULLIF($1::bigint - 1, -1), updated_at = now()"
            " WHERE derived_to >= $1::bigint"
        )
        # The per-transaction derived rows of heights $1..$2, in one statement.
        deletes = [
            f"DELETE FROM {table(name)} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            for name in PER_TX_DERIVED_TABLES
        ]
        self.delete_derived_between = (
            "WITH " + ", ".join(f"d{i} AS ({stmt})" for i, stmt in enumerate(deletes[1:]))
            + " " + deletes[0]
        )
        # GRC20 balances from the transfers stored at heights $1..$2, times $3 (1 adds
        # them, -1 takes them back out before the range's transfers are deleted). One
        # row per (token, address) of the range: received minus sent.
        self.apply_balances = (
            f"INSERT INTO {table(GRC20_BALANCES_TABLE)} AS b (token, address, balance, last_height)"
            " SELECT token, address, sum(delta) * $3::integer, max(block_height) FROM ("
            " SELECT token, to_address AS address, amount AS delta, block_height"
            f" FROM {transfers} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            " AND to_address IS NOT NULL"
            " UNION ALL SELECT token, from_address, -amount, block_height"
            f" FROM {transfers} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            " AND from_address IS NOT NULL) d GROUP BY token, address"
            " ON CONFLICT (token, address) DO UPDATE SET balance = b.balance + EXCLUDED.balance,"
            " last_height = GREATEST(b.last_height, EXCLUDED.last_height)"
        )
        # Every balance again from every stored transfer (after this, apply_balances over
        # all heights on the emptied table): repair's answer to a balance that is not the
        # sum of its transfers.
        self.truncate_balances = f"TRUNCATE {table(GRC20_BALANCES_TABLE)}"
        # A path is recorded by its first deployment: later ones change nothing.
        self.insert_packages = (
            _unnest(table(PACKAGES_TABLE), PACKAGE_COLUMNS) + " ON CONFLICT (path) DO NOTHING"
        )
        # A token keeps its earliest height and fills what it lacks; a row that would
        # not change is not rewritten.
        self.upsert_grc20_tokens = (
            _unnest(table(GRC20_TOKENS_TABLE), GRC20_TOKEN_COLUMNS)
            + " ON CONFLICT (token) DO UPDATE SET"
            " first_height = LEAST(x.first_height, EXCLUDED.first_height),"
            " name = COALESCE(x.name, EXCLUDED.name),"
            " symbol = COALESCE(x.symbol, EXCLUDED.symbol),"
            " decimals = COALESCE(x.decimals, EXCLUDED.decimals)"
            " WHERE EXCLUDED.first_height < x.first_height"
            " OR (x.name IS NULL AND EXCLUDED.name IS NOT NULL)"
            " OR (x.symbol IS NULL AND EXCLUDED.symbol IS NOT NULL)"
            " OR (x.decimals IS NULL AND EXCLUDED.decimals IS NOT NULL)"
        )
        # What re-derivation reads: the stored transactions of heights $1..$2.
        self.stored_transactions_between = (
            "SELECT block_height, tx_index, success, messages::text, response::text"
            f" FROM {txs} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            " ORDER BY block_height, tx_index"
        )
        # The height of the ($3 + 1)-th stored transaction of $1..$2 (null: fewer): a
        # re-derivation batch ends there, whole heights only.
        self.nth_transaction_height = (
            f"SELECT block_height FROM {txs} WHERE block_height BETWEEN $1::bigint AND $2::bigint"
            " ORDER BY block_height, tx_index OFFSET $3 LIMIT 1"
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


# -- replicas ----------------------------------------------------------------------------

# Where a hot standby stands (gnosync.store.replica); on a primary, in_recovery is false
# and the rest is NULL. A standby that has replayed all it received while its WAL
# receiver runs is 0 s behind; otherwise (still replaying, or receiving nothing, as
# when cut off from its primary) it is behind by the age of the last commit it replayed.
# pg_stat_wal_receiver shows its row, pid included, to any role.
REPLICA_STATE = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN EXISTS (SELECT 1 FROM pg_stat_wal_receiver) END
           AS receiving,
       CASE WHEN pg_is_in_recovery() THEN pg_last_xact_replay_timestamp() END
           AS last_replayed_at,
       CASE
           WHEN NOT pg_is_in_recovery() THEN NULL
           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
                AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0
           ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
       END AS replay_lag_s
"""
