-- gnosync schema, version 2: checkpoints.
--
-- A checkpoint is written at every height that is a multiple of checkpoint_every, in the
-- transaction that commits that height. Its checksum covers the block and transaction
-- hashes of the heights after the previous checkpoint up to and including its own, and
-- chains from the previous checkpoint's checksum, so it vouches for everything below it
-- (see gnosync.store.checkpoints for the exact definition). Deleting the block deletes
-- its checkpoint.
CREATE TABLE checkpoints (
    height       bigint      PRIMARY KEY REFERENCES blocks (height) ON DELETE CASCADE,
    block_hash   text        NOT NULL,
    -- The last transaction of the heights this checkpoint covers; null when they hold none.
    last_tx_hash text,
    -- sha256, lowercase hex.
    checksum     text        NOT NULL,
    -- How many blocks and transactions the checksum covers.
    blocks       integer     NOT NULL,
    transactions integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
