-- gnosync schema, version 1.
--
-- The migration runner sets search_path to the configured schema (default "indexer")
-- for the transaction that runs this file, so names here are unqualified.

-- One row per block, as tx-indexer serves it. The block's own tx list is not stored:
-- its content is in "transactions".
CREATE TABLE blocks (
    height               bigint      PRIMARY KEY,
    -- The genesis block (height 0) is served with an empty hash; it is still unique.
    hash                 text        NOT NULL UNIQUE,
    chain_id             text        NOT NULL,
    -- "time" keeps microseconds; "time_ns" the nanoseconds below them (0..999), so
    -- the served RFC 3339 time is recoverable exactly.
    time                 timestamptz NOT NULL,
    time_ns              smallint    NOT NULL DEFAULT 0 CHECK (time_ns BETWEEN 0 AND 999),
    num_txs              integer     NOT NULL,
    total_txs            bigint      NOT NULL,
    version              text        NOT NULL,
    app_version          text        NOT NULL,
    last_block_hash      text        NOT NULL,
    last_commit_hash     text        NOT NULL,
    validators_hash      text        NOT NULL,
    next_validators_hash text        NOT NULL,
    consensus_hash       text        NOT NULL,
    app_hash             text        NOT NULL,
    last_results_hash    text        NOT NULL,
    proposer_address     text        NOT NULL
);

CREATE INDEX blocks_time_idx ON blocks (time);

-- One row per transaction. The primary key's prefix serves lookups by height.
CREATE TABLE transactions (
    block_height   bigint  NOT NULL REFERENCES blocks (height) ON DELETE CASCADE,
    tx_index       integer NOT NULL,
    hash           text    NOT NULL UNIQUE,
    success        boolean NOT NULL,
    gas_wanted     bigint  NOT NULL,
    gas_used       bigint  NOT NULL,
    -- Both null when the source serves no gas fee.
    gas_fee_amount bigint,
    gas_fee_denom  text,
    memo           text    NOT NULL,
    content_raw    text    NOT NULL,
    -- As served: the messages list and the response object (log, info, error, data, events).
    messages       jsonb   NOT NULL,
    response       jsonb   NOT NULL,
    PRIMARY KEY (block_height, tx_index),
    CHECK ((gas_fee_amount IS NULL) = (gas_fee_denom IS NULL))
);

-- Where each sync component stands; written in the same transaction as the blocks.
CREATE TABLE app_state (
    component       text        PRIMARY KEY,
    last_block_h    bigint,
    last_block_hash text,
    last_tx_hash    text,
    last_sync_time  timestamptz,
    status          text        CHECK (status IN ('syncing', 'synced', 'error', 'stopped')),
    error_count     integer     NOT NULL DEFAULT 0,
    last_error      text,
    chain_id        text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
