-- gnosync schema, version 3: hostile transaction data, and transactions sharing a hash.
--
-- PostgreSQL's text and jsonb cannot hold NUL, bytes that are not UTF-8 or lone UTF-16
-- surrogates, and a transaction can carry any of them in its memo, messages or response
-- (a failed transaction lands in its block all the same). Those characters are stored
-- as U+FFFD, and "sanitized" marks the rows where that happened; their content_raw is
-- the transaction's exact bytes either way. Existing rows could hold none of them.
ALTER TABLE transactions ADD COLUMN sanitized boolean NOT NULL DEFAULT false;

-- Two heights may hold byte-identical transactions (genesis transactions carry no
-- signatures), so a transaction hash is not unique. Lookups by hash keep their index;
-- gnosync verify reports hashes stored more than once.
CREATE INDEX transactions_hash_idx ON transactions (hash);
ALTER TABLE transactions DROP CONSTRAINT transactions_hash_key;
