"""PostgreSQL storage: the schema, its migrations, and the atomic batch write path.

``Store.connect(dsn)`` opens a pool; ``migrate()`` brings the schema up to date;
``commit_batch()`` writes a batch of blocks and transactions together with the sync
state, in one transaction. Database failures raise ``gnosync.errors.StoreError``.
"""

from gnosync.store.dsn import describe_dsn, redact_dsn
from gnosync.store.embedded import start_embedded, stop_embedded
from gnosync.store.rows import block_row, transaction_row
from gnosync.store.state import SyncState, SyncStateRepository
from gnosync.store.store import Store

__all__ = [
    "Store",
    "SyncState",
    "SyncStateRepository",
    "block_row",
    "describe_dsn",
    "redact_dsn",
    "start_embedded",
    "stop_embedded",
    "transaction_row",
]
