"""PostgreSQL storage: the schema, its migrations, and the atomic batch write path.

``Store.connect(dsn)`` opens a pool; ``migrate()`` brings the schema up to date;
``commit_batch()`` writes a batch of blocks and transactions together with the sync
state and the checkpoints due at its heights, in one transaction; ``replace_range()``
swaps stored heights for re-fetched ones the same way (``gnosync repair``);
``stored_transactions()`` and ``write_rederived()`` rebuild the decoded tables of stored heights (``gnosync rederive``);
``auditing()`` opens the set-based checks of ``gnosync verify`` on one snapshot.
Database failures raise ``gnosync.errors.StoreError``.

One process writes a schema at a time: ``claim_writer()`` takes the
writer lock (waiting as a standby if asked), and writes without it are refused with
``NotTheWriter`` while another process holds it (see :mod:`gnosync.store.lock`).
"""

from gnosync.store.audit import AuditReader, BlockLink
from gnosync.store.checkpoints import boundaries, checkpoint_checksum
from gnosync.store.dsn import describe_dsn, redact_dsn
from gnosync.store.embedded import start_embedded, stop_embedded
from gnosync.store.lock import NotTheWriter, WriterInfo, writer_lock_key
from gnosync.store.rows import block_row, transaction_row
from gnosync.store.state import SyncState, SyncStateRepository
from gnosync.store.store import DecoderState, Store

__all__ = [
    "AuditReader",
    "BlockLink",
    "DecoderState",
    "NotTheWriter",
    "Store",
    "SyncState",
    "SyncStateRepository",
    "WriterInfo",
    "block_row",
    "boundaries",
    "checkpoint_checksum",
    "describe_dsn",
    "redact_dsn",
    "start_embedded",
    "stop_embedded",
    "transaction_row",
    "writer_lock_key",
]
