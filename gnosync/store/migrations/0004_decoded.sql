-- gnosync schema, version 4: the chain decoded into tables people can query.
--
-- Every table here except package_files is derived: gnosync.decode computes its rows
-- from a stored transaction (success, messages, response), and they are written in the
-- transaction that commits that transaction's block, or rebuilt by `gnosync rederive`.
-- messages, events and package_files reference their transaction with ON DELETE
-- CASCADE. tx_accounts, coin_transfers, grc20_transfers and packages do not: a foreign
-- key check is a trigger call per inserted row, and on a dense chain those checks cost
-- PostgreSQL more than the rows themselves (several rows per transaction); gnosync
-- deletes their rows by height range wherever it deletes transactions (repair, rederive,
-- orphan clean-up), and verify counts derived rows against the stored JSON.
-- package_files is stored data: the bodies of the package files that
-- transactions.messages no longer repeats.

-- What the derived tables hold: rows of decoder `version` for every stored height up to
-- `derived_to` (null: none). One row.
CREATE TABLE decoder_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    version    integer NOT NULL,
    derived_to bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO decoder_state (version, derived_to) VALUES (0, NULL);
COMMENT ON TABLE decoder_state IS
    'Which decoder version built the derived tables, and up to which height they are complete.';
COMMENT ON COLUMN decoder_state.version IS
    'The decoder version of the derived rows (0: never derived). gnosync run re-derives when its own is newer.';
COMMENT ON COLUMN decoder_state.derived_to IS
    'Every stored height up to this one has its derived rows; null when none has.';

CREATE TABLE messages (
    block_height bigint  NOT NULL,
    tx_index     integer NOT NULL,
    msg_index    integer NOT NULL,
    type_url     text    NOT NULL,
    route        text    NOT NULL,
    kind         text    NOT NULL,
    sender       text,
    to_address   text,
    pkg_path     text,
    func         text,
    args         text[],
    send         text,
    max_deposit  text,
    success      boolean NOT NULL,
    PRIMARY KEY (block_height, tx_index, msg_index),
    FOREIGN KEY (block_height, tx_index)
        REFERENCES transactions (block_height, tx_index) ON DELETE CASCADE
);
CREATE INDEX messages_sender_idx ON messages (sender, block_height);
CREATE INDEX messages_pkg_func_idx ON messages (pkg_path, func);
CREATE INDEX messages_kind_idx ON messages (kind, block_height);
COMMENT ON TABLE messages IS 'One row per message of every stored transaction, as tx-indexer serves it.';
COMMENT ON COLUMN messages.block_height IS 'Height of the block holding the transaction.';
COMMENT ON COLUMN messages.tx_index IS 'Index of the transaction in its block.';
COMMENT ON COLUMN messages.msg_index IS 'Index of the message in its transaction, from 0.';
COMMENT ON COLUMN messages.type_url IS 'The message type as served (send, exec, add_package, run, ...).';
COMMENT ON COLUMN messages.route IS 'The message route as served (bank, vm, ...).';
COMMENT ON COLUMN messages.kind IS 'The served GraphQL type: BankMsgSend, MsgCall, MsgAddPackage, MsgRun or UnexpectedMessage.';
COMMENT ON COLUMN messages.sender IS 'from_address (BankMsgSend), caller (MsgCall, MsgRun) or creator (MsgAddPackage).';
COMMENT ON COLUMN messages.to_address IS 'Recipient of a BankMsgSend; null for other kinds.';
COMMENT ON COLUMN messages.pkg_path IS 'MsgCall.pkg_path, or the package path of MsgAddPackage and MsgRun.';
COMMENT ON COLUMN messages.func IS 'The realm function a MsgCall calls.';
COMMENT ON COLUMN messages.args IS 'The arguments of a MsgCall, in order.';
COMMENT ON COLUMN messages.send IS 'Coins sent, as served (BankMsgSend.amount, or send of the vm messages), e.g. 100ugnot,5foo.';
COMMENT ON COLUMN messages.max_deposit IS 'The storage deposit limit of a vm message, as served.';
COMMENT ON COLUMN messages.success IS 'Whether the transaction succeeded; a failed one moved nothing.';

CREATE TABLE events (
    block_height bigint  NOT NULL,
    tx_index     integer NOT NULL,
    event_index  integer NOT NULL,
    kind         text    NOT NULL,
    type         text,
    pkg_path     text,
    attrs        jsonb,
    bytes_delta  bigint,
    fee_amount   numeric,
    fee_denom    text,
    raw          text,
    PRIMARY KEY (block_height, tx_index, event_index),
    FOREIGN KEY (block_height, tx_index)
        REFERENCES transactions (block_height, tx_index) ON DELETE CASCADE
);
CREATE INDEX events_type_pkg_idx ON events (type, pkg_path) INCLUDE (bytes_delta);
CREATE INDEX events_attrs_idx ON events USING gin (attrs jsonb_path_ops);
COMMENT ON TABLE events IS 'One row per event of a stored transaction''s response, in served order.';
COMMENT ON COLUMN events.block_height IS 'Height of the block holding the transaction.';
COMMENT ON COLUMN events.tx_index IS 'Index of the transaction in its block.';
COMMENT ON COLUMN events.event_index IS 'Index of the event in the response, from 0.';
COMMENT ON COLUMN events.kind IS 'The served GraphQL type: GnoEvent, StorageDepositEvent, StorageUnlockEvent or UnknownEvent.';
COMMENT ON COLUMN events.type IS 'The event type (GnoEvent: as the realm emitted it, e.g. Transfer); null for UnknownEvent.';
COMMENT ON COLUMN events.pkg_path IS 'The package that emitted the event; null for UnknownEvent.';
COMMENT ON COLUMN events.attrs IS 'A GnoEvent''s attributes, [{"key": ..., "value": ...}] in served order, duplicates kept; null for other kinds. Search with @>.';
COMMENT ON COLUMN events.bytes_delta IS 'Storage bytes used (deposit) or released (unlock, negative as served).';
COMMENT ON COLUMN events.fee_amount IS 'fee_delta of a storage deposit, fee_refund of an unlock.';
COMMENT ON COLUMN events.fee_denom IS 'Denomination of fee_amount.';
COMMENT ON COLUMN events.raw IS 'UnknownEvent.value: the event as JSON text, for kinds tx-indexer does not know.';

CREATE TABLE tx_accounts (
    address      text    NOT NULL,
    block_height bigint  NOT NULL,
    tx_index     integer NOT NULL,
    role         text    NOT NULL CHECK (role IN ('sender', 'recipient', 'event')),
    PRIMARY KEY (address, block_height, tx_index, role)
);
-- For deleting and re-deriving a height range.
CREATE INDEX tx_accounts_tx_idx ON tx_accounts (block_height, tx_index);
COMMENT ON TABLE tx_accounts IS 'Every address a transaction involves: all transactions of an address are one index scan.';
COMMENT ON COLUMN tx_accounts.address IS 'A bech32 address (g1...).';
COMMENT ON COLUMN tx_accounts.block_height IS 'Height of the block holding the transaction.';
COMMENT ON COLUMN tx_accounts.tx_index IS 'Index of the transaction in its block.';
COMMENT ON COLUMN tx_accounts.role IS 'sender: a message sender; recipient: a BankMsgSend to_address; event: a checksum-valid g1 address in an event attribute.';

CREATE TABLE package_files (
    block_height bigint  NOT NULL,
    tx_index     integer NOT NULL,
    msg_index    integer NOT NULL,
    name         text    NOT NULL,
    body         text    NOT NULL,
    PRIMARY KEY (block_height, tx_index, msg_index, name),
    FOREIGN KEY (block_height, tx_index)
        REFERENCES transactions (block_height, tx_index) ON DELETE CASCADE
);
COMMENT ON TABLE package_files IS 'Stored, not derived: the files of every MsgAddPackage and MsgRun, failed or not. transactions.messages keeps each file''s name and size, not its body; content_raw keeps the exact transaction.';
COMMENT ON COLUMN package_files.block_height IS 'Height of the block holding the transaction.';
COMMENT ON COLUMN package_files.tx_index IS 'Index of the transaction in its block.';
COMMENT ON COLUMN package_files.msg_index IS 'Index of the message in its transaction.';
COMMENT ON COLUMN package_files.name IS 'File name within the package (a later file of the same name in one message stays in transactions.messages).';
COMMENT ON COLUMN package_files.body IS 'The file''s source, as served (NUL and invalid UTF-8 as U+FFFD).';

CREATE TABLE packages (
    path         text    PRIMARY KEY,
    name         text    NOT NULL,
    creator      text    NOT NULL,
    block_height bigint  NOT NULL,
    tx_index     integer NOT NULL,
    msg_index    integer NOT NULL,
    file_count   integer NOT NULL,
    bytes        bigint  NOT NULL,
    address      text    NOT NULL
);
CREATE INDEX packages_creator_idx ON packages (creator, block_height);
CREATE INDEX packages_height_idx ON packages (block_height, tx_index);
COMMENT ON TABLE packages IS 'Every package and realm deployed by a successful MsgAddPackage, recorded by its first deployment.';
COMMENT ON COLUMN packages.path IS 'The package path, e.g. gno.land/r/demo/boards.';
COMMENT ON COLUMN packages.name IS 'The package name declared by its files.';
COMMENT ON COLUMN packages.creator IS 'The address that deployed it.';
COMMENT ON COLUMN packages.block_height IS 'Height of the deploying transaction.';
COMMENT ON COLUMN packages.tx_index IS 'Index of the deploying transaction in its block.';
COMMENT ON COLUMN packages.msg_index IS 'Index of the MsgAddPackage in its transaction.';
COMMENT ON COLUMN packages.file_count IS 'How many files the package has.';
COMMENT ON COLUMN packages.bytes IS 'Total size of its files, in bytes.';
COMMENT ON COLUMN packages.address IS 'The package''s own address: bech32 of the first 20 bytes of sha256("pkgPath:" || path).';

CREATE TABLE coin_transfers (
    block_height bigint  NOT NULL,
    tx_index     integer NOT NULL,
    msg_index    integer NOT NULL,
    coin_index   integer NOT NULL,
    from_address text    NOT NULL,
    to_address   text    NOT NULL,
    denom        text    NOT NULL,
    amount       numeric NOT NULL,
    source       text    NOT NULL CHECK (source IN ('send', 'call', 'add_package', 'run')),
    PRIMARY KEY (block_height, tx_index, msg_index, coin_index)
);
CREATE INDEX coin_transfers_amount_idx ON coin_transfers (denom, amount DESC);
COMMENT ON TABLE coin_transfers IS 'Native coins moved by successful messages, one row per coin of a coin string. Coins that realm code moves internally are not visible in transactions and are not here.';
COMMENT ON COLUMN coin_transfers.block_height IS 'Height of the block holding the transaction.';
COMMENT ON COLUMN coin_transfers.tx_index IS 'Index of the transaction in its block.';
COMMENT ON COLUMN coin_transfers.msg_index IS 'Index of the message in its transaction.';
COMMENT ON COLUMN coin_transfers.coin_index IS 'Position of the coin in the message''s coin string, from 0.';
COMMENT ON COLUMN coin_transfers.from_address IS 'The message sender.';
COMMENT ON COLUMN coin_transfers.to_address IS 'BankMsgSend: to_address; MsgCall and MsgAddPackage: the package''s address; MsgRun: the caller.';
COMMENT ON COLUMN coin_transfers.denom IS 'Coin denomination, e.g. ugnot.';
COMMENT ON COLUMN coin_transfers.amount IS 'Amount in the smallest unit of denom.';
COMMENT ON COLUMN coin_transfers.source IS 'send (BankMsgSend), call (MsgCall.send), add_package (MsgAddPackage.send) or run (MsgRun.send).';

CREATE TABLE grc20_transfers (
    block_height bigint         NOT NULL,
    tx_index     integer        NOT NULL,
    event_index  integer        NOT NULL,
    token        text           NOT NULL,
    pkg_path     text           NOT NULL,
    from_address text,
    to_address   text,
    amount       numeric(78, 0) NOT NULL,
    kind         text           NOT NULL CHECK (kind IN ('transfer', 'mint', 'burn')),
    PRIMARY KEY (block_height, tx_index, event_index)
);
CREATE INDEX grc20_transfers_token_idx ON grc20_transfers (token, block_height);
CREATE INDEX grc20_transfers_from_idx ON grc20_transfers (from_address, token, block_height);
CREATE INDEX grc20_transfers_to_idx ON grc20_transfers (to_address, token, block_height);
COMMENT ON TABLE grc20_transfers IS 'GRC20 Transfer events (with from, to and a decimal value) of successful transactions.';
COMMENT ON COLUMN grc20_transfers.block_height IS 'Height of the block holding the transaction.';
COMMENT ON COLUMN grc20_transfers.tx_index IS 'Index of the transaction in its block.';
COMMENT ON COLUMN grc20_transfers.event_index IS 'Index of the event in the response (events.event_index).';
COMMENT ON COLUMN grc20_transfers.token IS 'The event''s token attribute (<realm>.<SYMBOL>[.<n>]); the event''s pkg_path on chains that emit none.';
COMMENT ON COLUMN grc20_transfers.pkg_path IS 'The package that emitted the event.';
COMMENT ON COLUMN grc20_transfers.from_address IS 'Sender; null for a mint.';
COMMENT ON COLUMN grc20_transfers.to_address IS 'Recipient; null for a burn.';
COMMENT ON COLUMN grc20_transfers.amount IS 'Amount in the token''s smallest unit.';
COMMENT ON COLUMN grc20_transfers.kind IS 'transfer, mint (no sender) or burn (no recipient).';

CREATE TABLE grc20_balances (
    token       text           NOT NULL,
    address     text           NOT NULL,
    balance     numeric(78, 0) NOT NULL,
    last_height bigint         NOT NULL,
    PRIMARY KEY (token, address)
);
CREATE INDEX grc20_balances_top_idx ON grc20_balances (token, balance DESC);
COMMENT ON TABLE grc20_balances IS 'GRC20 balances: the sum of each address''s grc20_transfers per token, kept in the transaction of each batch. Below zero means the history is incomplete (the sync started after the token was created).';
COMMENT ON COLUMN grc20_balances.token IS 'The token (grc20_transfers.token).';
COMMENT ON COLUMN grc20_balances.address IS 'The holder.';
COMMENT ON COLUMN grc20_balances.balance IS 'Received minus sent, in the token''s smallest unit.';
COMMENT ON COLUMN grc20_balances.last_height IS 'Height of the last transfer that changed it.';

CREATE TABLE grc20_tokens (
    token        text    PRIMARY KEY,
    pkg_path     text    NOT NULL,
    name         text,
    symbol       text,
    decimals     integer,
    first_height bigint  NOT NULL
);
COMMENT ON TABLE grc20_tokens IS 'Every GRC20 token seen in a NewToken or Transfer event of a successful transaction.';
COMMENT ON COLUMN grc20_tokens.token IS 'The token identifier, as in grc20_transfers.token.';
COMMENT ON COLUMN grc20_tokens.pkg_path IS 'The realm that created the token (the token identifier before .<SYMBOL>), or the emitting package on chains without a token attribute.';
COMMENT ON COLUMN grc20_tokens.name IS 'From the NewToken event; null where the chain emits none.';
COMMENT ON COLUMN grc20_tokens.symbol IS 'From the NewToken event; null where the chain emits none.';
COMMENT ON COLUMN grc20_tokens.decimals IS 'From the NewToken event; null where the chain emits none.';
COMMENT ON COLUMN grc20_tokens.first_height IS 'Height of the first event naming the token.';

-- Package sources move out of transactions.messages: each file of a package keeps its
-- name and gets its size (bytes of the body as stored); the body goes to package_files.
-- A second file of the same name in one message (only a failed transaction can carry
-- one) keeps its body inline, so nothing is lost and the key holds.
INSERT INTO package_files (block_height, tx_index, msg_index, name, body)
SELECT t.block_height, t.tx_index, (m.ord - 1)::integer, f.file ->> 'name', f.file ->> 'body'
  FROM transactions t,
       jsonb_array_elements(t.messages) WITH ORDINALITY AS m (msg, ord),
       LATERAL (
           SELECT file, row_number() OVER (PARTITION BY file ->> 'name' ORDER BY ford) AS nth
             FROM jsonb_array_elements(m.msg #> '{value,package,files}') WITH ORDINALITY AS x (file, ford)
       ) AS f
 WHERE jsonb_typeof(t.messages) = 'array'
   AND jsonb_typeof(m.msg #> '{value,package,files}') = 'array'
   AND f.nth = 1
   AND jsonb_typeof(f.file -> 'body') = 'string'
   AND jsonb_typeof(f.file -> 'name') = 'string';

UPDATE transactions t
   SET messages = (
       SELECT jsonb_agg(
                  CASE WHEN jsonb_typeof(m.msg #> '{value,package,files}') = 'array' THEN
                      jsonb_set(m.msg, '{value,package,files}', (
                          SELECT COALESCE(jsonb_agg(
                                     CASE WHEN f.nth = 1
                                               AND jsonb_typeof(f.file -> 'body') = 'string'
                                               AND jsonb_typeof(f.file -> 'name') = 'string'
                                          THEN (f.file - 'body')
                                               || jsonb_build_object('size', octet_length(f.file ->> 'body'))
                                          ELSE f.file END
                                     ORDER BY f.ford), '[]'::jsonb)
                            FROM (
                                SELECT file, ford,
                                       row_number() OVER (PARTITION BY file ->> 'name' ORDER BY ford) AS nth
                                  FROM jsonb_array_elements(m.msg #> '{value,package,files}')
                                       WITH ORDINALITY AS x (file, ford)
                            ) AS f
                      ))
                  ELSE m.msg END
                  ORDER BY m.ord)
         FROM jsonb_array_elements(t.messages) WITH ORDINALITY AS m (msg, ord)
   )
 WHERE jsonb_typeof(t.messages) = 'array'
   AND jsonb_path_exists(t.messages, '$[*].value.package.files[*].body');
