"""The PostgreSQL copy of the chain: migrations, the batch write path, and reads."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from gnosync import decode
from gnosync.errors import ConfigError, StoreError
from gnosync.store import sql
from gnosync.store.derived import copy_package_files, take_back, write_derived
from gnosync.store.dsn import describe_dsn, password_of, redact_dsn, to_uri
from gnosync.store.failures import RETRY_HINT, connection_lost, database_errors
from gnosync.store.lock import (
    LEADER,
    NotTheWriter,
    WriterInfo,
    leader_name,
    lock_tag,
    standby_lock_key,
    standby_name,
    writer_lock_key,
)
from gnosync.store.audit import MAX_HEIGHT, MIN_HEIGHT, AuditReader, BlockLink
from gnosync.store.checkpoints import boundaries
from gnosync.store.migrate import apply_migrations
from gnosync.store.partitions import Coverage, ensure_partitions
from gnosync.store.rows import block_row, stored_transaction_row, stored_tx
from gnosync.store.state import SyncStateRepository, check_status
from gnosync.model import Batch, BlockRef

CONNECT_TIMEOUT = 15.0
# How long ping() and health() wait for an answer before calling the connection down.
HEALTH_TIMEOUT = 10.0
# How long release_writer() waits for a graceful close before dropping the socket.
CLOSE_TIMEOUT = 5.0
# Server-side TCP keepalives of the writer connection (idle, interval, count in
# seconds/probes): a leader whose host vanishes loses the lock after about 19 s.
WRITER_KEEPALIVES = ("10", "3", "3")

OnStandby = Callable[[WriterInfo | None], Awaitable[None] | None]

# How many batches' rows prepare() keeps for their commit: the pipeline's fetches ahead.
_AHEAD = 8

# What a commit writes besides blocks, transactions and package files (``derive``).
DERIVE_MODES = ("all", "none")


@dataclass(frozen=True, slots=True)
class DecoderState:
    """Which decoder built the derived tables (0: none yet) and up to which height they
    are complete (None: no height)."""

    version: int
    derived_to: int | None


class Store:
    """A pool of connections to the database that holds gnosync's ``schema``.

    Every method raises :class:`~gnosync.errors.StoreError` on database failures;
    ``retryable`` is true when the connection was lost and a later call may succeed.

    Writes (``commit_batch`` and the writes of ``state``) respect the writer lock of
    ``schema``, whatever the ``component`` (see :mod:`gnosync.store.lock`): after
    :meth:`claim_writer` they run on the connection that holds it; without it they run
    on the pool and raise :class:`NotTheWriter` while another process holds it.

    ``derive``: ``"all"`` writes every batch's decoded rows (:mod:`gnosync.decode`) in
    the batch's own transaction; ``"none"`` only blocks, transactions and package files.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        schema: str,
        component: str,
        where: str,
        uri: str | None = None,
        secret: str | None = None,
        checkpoint_every: int = 10_000,
        durable_commits: bool = True,
        derive: str = "all",
        partition_size: int = 1_000_000,
    ):
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 or more, got {checkpoint_every}")
        if derive not in DERIVE_MODES:
            raise ValueError(f"derive must be one of {', '.join(DERIVE_MODES)}, got {derive!r}")
        if partition_size < 1:
            raise ValueError(f"partition_size must be at least 1, got {partition_size}")
        self.derive = derive
        # Heights per partition that gnosync creates (see gnosync.store.partitions), and
        # the heights known to have partitions: None until the first write reads them.
        self.partition_size = partition_size
        self._coverage: Coverage | None = None
        self._pool = pool
        self._sql = sql.Statements(schema)
        self.schema = schema
        self.component = component
        self.where = where  # host:port/database, for messages
        self.checkpoint_every = checkpoint_every  # 0: no checkpoints
        # False: COMMIT returns before the WAL reaches disk. A PostgreSQL crash may then
        # lose the last batches, but together with the app_state that records them, so
        # gnosync syncs them again: the copy stays consistent, only fresher data is at risk.
        self.durable_commits = durable_commits
        self._uri = uri  # for the writer connection
        self._secret = secret  # the DSN's password, scrubbed from messages
        self._lock_key = writer_lock_key(schema)
        self._standby_key = standby_lock_key(schema)
        self._writer: asyncpg.Connection | None = None
        # One write at a time: the writer connection runs one statement at a time, and
        # two pool writes of this store would refuse each other the transaction lock.
        self._write_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        # Rows computed ahead of their commit (see prepare), by id of their batch.
        self._ahead: dict[int, tuple[Batch, tuple]] = {}
        self.state = SyncStateRepository(
            pool, schema, component, where=where, writing=self._writing, errors=self._errors
        )

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "indexer",
        component: str = "block_sync",
        min_size: int = 1,
        max_size: int = 4,
        checkpoint_every: int = 10_000,
        durable_commits: bool = True,
        derive: str = "all",
        partition_size: int = 1_000_000,
    ) -> Store:
        """Open a pool to ``dsn`` (URI or key=value form); fails fast if it cannot connect.

        ``checkpoint_every``: write a checkpoint at each height that is a multiple of it
        (see :mod:`gnosync.store.checkpoints`); 0 writes none.
        """
        if checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be 0 or more, got {checkpoint_every}")
        if partition_size < 1:
            raise ConfigError(f"partition_size must be at least 1, got {partition_size}")
        try:
            sql.quote_ident(schema)
        except ValueError as exc:
            raise ConfigError(f"invalid schema name: {exc}") from None
        if not component:
            raise ConfigError("the sync component name cannot be empty")
        if derive not in DERIVE_MODES:
            raise ConfigError(f"invalid setting derive: {derive!r}; expected all or none")
        try:
            uri = to_uri(dsn)
        except ValueError as exc:
            raise ConfigError(f"invalid PostgreSQL DSN {redact_dsn(dsn)!r}: {exc}") from None
        where = describe_dsn(dsn)
        pool = asyncpg.create_pool(
            uri,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": "gnosync"},
        )
        try:
            async with database_errors(
                "connecting", where, connecting=True, secret=password_of(dsn)
            ):
                try:
                    await pool
                except asyncpg.ClientConfigurationError as exc:
                    raise ConfigError(
                        f"invalid PostgreSQL DSN {redact_dsn(dsn)!r}: {exc}"
                    ) from None
        except BaseException:
            pool.terminate()
            raise
        return cls(
            pool,
            schema=schema,
            component=component,
            where=where,
            uri=uri,
            secret=password_of(dsn),
            checkpoint_every=checkpoint_every,
            durable_commits=durable_commits,
            derive=derive,
            partition_size=partition_size,
        )

    @property
    def dsn(self) -> str | None:
        """The DSN this store connected with, its password masked: safe to show. None
        for a store not made by :meth:`connect`."""
        return redact_dsn(self._uri) if self._uri is not None else None

    async def close(self) -> None:
        """Release the writer lock, if held, and close the pool."""
        await self.release_writer()
        await self._pool.close()

    @asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        """Database failures as ``StoreError``; a lost connection renews the whole pool.

        A connection is rarely lost alone (PostgreSQL restarted, the network dropped),
        and asyncpg may hand out a pooled connection whose end it has not noticed yet:
        renewing them all lets the next call succeed.
        """
        try:
            async with database_errors(what, self.where, secret=self._secret):
                yield
        except StoreError as exc:
            if exc.retryable and connection_lost(exc):
                await self._pool.expire_connections()
            raise

    # -- the writer lock ----------------------------------------------------------------------

    @property
    def is_writer(self) -> bool:
        """Whether this store holds the writer lock on a live connection.

        Becomes False when the lock is released or its connection is found lost; the
        caller then claims again before writing.
        """
        return self._writer is not None and not self._writer.is_closed()

    async def claim_writer(
        self,
        *,
        wait: bool,
        poll: float = 0.5,
        on_standby: OnStandby | None = None,
        stop: asyncio.Event | None = None,
    ) -> bool:
        """Take the writer lock of this schema; True once held.

        Opens a dedicated connection (never one of the pool's, whose reset would drop
        the lock) and tries the lock every ``poll`` seconds. When the lock is taken:
        returns False at once if not ``wait``; otherwise calls ``on_standby`` once
        with the current leader (None if it could not be found; may be a coroutine
        function) and waits, returning False if ``stop`` gets set. The lock lasts as
        long as the connection: until :meth:`release_writer` or :meth:`close`, or
        until the connection is lost. Returns True at once if already held.

        Raises ``StoreError`` (retryable) if the connection fails while waiting; the
        caller claims again.
        """
        if poll <= 0:
            raise ValueError(f"poll must be positive, got {poll}")
        async with self._claim_lock:
            if self._writer is not None:
                if not self._writer.is_closed():
                    return True
                self._drop_writer()
            conn = await self._open_writer_connection()
            try:
                held = await self._wait_for_lock(
                    conn, wait=wait, poll=poll, on_standby=on_standby, stop=stop
                )
            except BaseException:
                conn.terminate()
                raise
            if not held:
                await _close(conn)
                return False
            self._writer = conn
            return True

    async def _open_writer_connection(self) -> asyncpg.Connection:
        if self._uri is None:
            raise RuntimeError("this Store was not made by Store.connect; it cannot claim")
        async with self._errors("opening the writer connection"):
            conn = await asyncpg.connect(
                self._uri,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": standby_name(self.schema, self.component)},
            )
            try:
                await conn.fetchrow(sql.SET_WRITER_KEEPALIVES, *WRITER_KEEPALIVES)
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def _wait_for_lock(
        self,
        conn: asyncpg.Connection,
        *,
        wait: bool,
        poll: float,
        on_standby: OnStandby | None,
        stop: asyncio.Event | None,
    ) -> bool:
        standby = False
        while True:
            async with self._errors("claiming the writer lock"):
                if await conn.fetchval(sql.TRY_ADVISORY_LOCK, self._lock_key):
                    if standby:
                        await conn.fetchval(sql.ADVISORY_UNLOCK_SHARED, self._standby_key)
                    await conn.fetchval(
                        sql.SET_APPLICATION_NAME, leader_name(self.schema, self.component)
                    )
                    return True
            if not wait or (stop is not None and stop.is_set()):
                return False
            if not standby:
                standby = True
                async with self._errors("waiting for the writer lock"):
                    await conn.fetchval(sql.ADVISORY_LOCK_SHARED, self._standby_key)
                    leader = await self._leader(conn)
                if on_standby is not None:
                    result = on_standby(leader)
                    if inspect.isawaitable(result):
                        await result
            if await _sleep(poll, stop):
                return False

    async def release_writer(self) -> None:
        """Give up the writer lock by closing its connection; does nothing if not held."""
        conn, self._writer = self._writer, None
        if conn is not None:
            await _close(conn)

    def _drop_writer(self) -> None:
        """Forget a writer connection that failed; the caller must claim again."""
        conn, self._writer = self._writer, None
        if conn is not None:
            conn.terminate()

    async def writers(self) -> list[WriterInfo]:
        """The leader (holding the writer lock), then the standbys waiting for it."""
        async with self._errors("reading the writer lock holders"):
            return await self._holders(self._pool)

    async def _holders(self, conn: asyncpg.Pool | asyncpg.Connection) -> list[WriterInfo]:
        rows = await conn.fetch(
            sql.WRITERS, *lock_tag(self._lock_key), *lock_tag(self._standby_key)
        )
        return [WriterInfo(**dict(row)) for row in rows]

    async def _leader(self, conn: asyncpg.Pool | asyncpg.Connection) -> WriterInfo | None:
        for info in await self._holders(conn):
            if info.role == LEADER:
                return info
        return None

    async def _not_the_writer(self) -> NotTheWriter:
        try:
            async with self._errors("reading the writer lock holder"):
                holder = await self._leader(self._pool)
        except StoreError:
            holder = None
        return NotTheWriter(schema=self.schema, where=self.where, holder=holder)

    def _writer_lost(self, what: str) -> StoreError:
        return StoreError(
            f"lost the connection to PostgreSQL at {self.where} while {what}: the writer"
            f" connection is closed; {RETRY_HINT}",
            retryable=True,
        )

    @asynccontextmanager
    async def _writing(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        """A write transaction that only the holder of the writer lock gets.

        With the writer connection: on it. Without: on a pool connection, after taking
        the lock key as a transaction lock, or raising ``NotTheWriter`` if it is taken.
        A lost writer connection raises a retryable ``StoreError`` and is forgotten.
        """
        async with self._write_lock:
            writer = self._writer
            if writer is None:
                async with self._errors(what), self._pool.acquire() as conn:
                    async with conn.transaction():
                        held = await conn.fetchval(sql.TRY_ADVISORY_XACT_LOCK, self._lock_key)
                        if held:
                            yield conn
                if not held:
                    raise await self._not_the_writer()
                return
            if writer.is_closed():
                self._drop_writer()
                raise self._writer_lost(what)
            try:
                async with self._errors(what):
                    # BEGIN and COMMIT by hand: asyncpg's transaction object stays attached
                    # to the connection after a cancelled BEGIN, and on a connection that
                    # lives on it would nest every later write in a transaction never
                    # committed.
                    await writer.execute(sql.BEGIN)
                    # Always true while the session holds the lock; a cheap guard.
                    held = await writer.fetchval(sql.TRY_ADVISORY_XACT_LOCK, self._lock_key)
                    if held:
                        yield writer
                    await writer.execute(sql.COMMIT)
            except BaseException as exc:
                await self._settle(writer, exc)
                raise
            if not held:
                if self._writer is writer:
                    self._drop_writer()
                raise await self._not_the_writer()

    async def _settle(self, writer: asyncpg.Connection, exc: BaseException) -> None:
        """After a failed write on the writer connection: roll back, or forget it."""
        clean = False
        if not writer.is_closed() and not connection_lost(exc):
            try:
                # Waits for the cancellation of an interrupted statement to finish first.
                await asyncio.wait_for(writer.execute(sql.ROLLBACK), CLOSE_TIMEOUT)
                clean = not writer.is_in_transaction()
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                OSError,
            ):
                pass
            except BaseException:
                if self._writer is writer:
                    self._drop_writer()
                raise
        if not clean and self._writer is writer:
            self._drop_writer()

    async def health(self) -> None:
        """Check the pool and, if held, the writer connection.

        Raises a retryable ``StoreError`` when either is down; a writer connection
        that is down is forgotten (``is_writer`` becomes False).
        """
        await self.ping()
        if self._writer is None:
            return
        async with self._write_lock:
            writer = self._writer
            if writer is None:
                return
            what = "checking the writer connection"
            if writer.is_closed():
                self._drop_writer()
                raise self._writer_lost(what)
            try:
                async with self._errors(what):
                    await writer.fetchval(sql.PING, timeout=HEALTH_TIMEOUT)
            except StoreError as exc:
                if writer.is_closed() or connection_lost(exc):
                    if self._writer is writer:
                        self._drop_writer()
                raise

    # -- schema, writes and reads ------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names of those applied now."""
        self._coverage = None  # a migration may partition the tables
        async with self._errors(f"migrating schema {self.schema!r}"):
            async with self._pool.acquire() as conn:
                applied = await apply_migrations(conn, self._sql)
                # A database without blocks has nothing to derive: it starts at this
                # decoder's version rather than at 0, which would ask for a rebuild.
                await conn.execute(self._sql.adopt_decoder_version, decode.DECODER_VERSION)
                return applied

    async def ping(self) -> None:
        """Check that the pool gets an answer; a broken pooled connection is replaced."""
        async with self._errors("checking the connection"):
            await self._pool.fetchval(sql.PING, timeout=HEALTH_TIMEOUT)

    async def commit_batch(self, batch: Batch, *, chain_id: str, status: str) -> None:
        """Store ``batch`` and advance app_state, atomically.

        In one transaction: the partitions its heights lack (see
        :mod:`gnosync.store.partitions`), binary COPY of the blocks, of the transactions (package file
        bodies split out of ``messages``) and of the package files; with ``derive="all"``
        the batch's decoded rows (see :func:`gnosync.store.derived.write_derived`); the
        checkpoints at the batch's heights that are multiples of ``checkpoint_every``
        (computed in SQL from the stored rows, see :mod:`gnosync.store.checkpoints`),
        then the app_state upsert. Cancellation or a crash at any point stores nothing.
        The batch must hold only heights not yet stored: a duplicate block height or block
        hash raises ``StoreError`` (not retryable) and stores nothing. Transaction hashes
        need not be unique (identical transactions at two heights are both stored).

        The transaction runs on the writer connection when this store holds the writer
        lock; otherwise on the pool, refused with ``NotTheWriter`` while another
        process holds the lock. A lost writer connection raises a retryable
        ``StoreError`` and ``is_writer`` becomes False.
        """
        top = _check_batch(batch)
        check_status(status)
        block_rows, tx_rows, file_rows, derived = self._prepared(batch)
        async with self._partitioned() as coverage, self._writing(
            f"committing blocks {batch.start}..{batch.end}"
        ) as conn:
            if not self.durable_commits:
                await conn.execute(sql.ASYNC_COMMIT)
            await coverage.ensure(conn, batch.start, batch.end)
            await self._copy(conn, block_rows, tx_rows, file_rows)
            if derived is not None:
                await write_derived(conn, self._sql, derived, batch.start, batch.end)
            await self._write_checkpoints(conn, boundaries(batch.start, batch.end, self.checkpoint_every))
            await self.state.update_last_block(
                conn,
                height=top.height,
                block_hash=top.hash,
                tx_hash=batch.last_tx_hash,
                chain_id=chain_id,
                status=status,
            )

    async def replace_range(self, batch: Batch, *, chain_id: str) -> None:
        """Replace whatever is stored at heights ``batch.start..batch.end`` with ``batch``,
        atomically: the write path of ``gnosync repair``.

        In one transaction, fenced by the writer lock exactly like :meth:`commit_batch`:
        take the range's GRC20 transfers back out of the balances, delete the
        transactions and blocks of those heights (their checkpoints and derived rows go
        with them), binary COPY the batch and, with ``derive="all"``, write its derived
        rows (with ``"none"``, ``derived_to`` falls below the range), write the checkpoints of the range again (at
        the multiples of ``checkpoint_every`` and at every height that had one), and
        record the range's top in app_state without ever moving ``last_block_h`` down
        or touching the status. The caller validates ``batch`` against the stored
        neighbours first; nothing else of the database changes.
        """
        top = _check_batch(batch)
        block_rows, tx_rows, file_rows, derived = self._rows(batch)
        start, end = batch.start, batch.end
        async with self._partitioned() as coverage, self._writing(
            f"replacing blocks {start}..{end}"
        ) as conn:
            await coverage.ensure(conn, start, end)
            had = [row["height"] for row in await conn.fetch(self._sql.checkpoint_heights, start, end)]
            await take_back(conn, self._sql, start, end)
            await conn.execute(self._sql.delete_transactions_between, start, end)
            await conn.execute(self._sql.delete_blocks_between, start, end)
            await self._copy(conn, block_rows, tx_rows, file_rows)
            if derived is not None:
                await write_derived(conn, self._sql, derived, start, end)
            else:
                await conn.execute(self._sql.lower_derived_to, start)
            heights = sorted(set(boundaries(start, end, self.checkpoint_every)) | set(had))
            await self._write_checkpoints(conn, heights)
            await conn.execute(
                self._sql.upsert_replaced_top,
                self.component,
                top.height,
                top.hash,
                batch.last_tx_hash,
                chain_id,
            )

    async def rebuild_balances(self) -> None:
        """Recompute every GRC20 balance from the stored transfers, in one transaction
        fenced by the writer lock: what repair does when a balance is not the sum of its
        transfers (the transfers are the record; balances only sum them)."""
        async with self._writing("rebuilding the GRC20 balances") as conn:
            await conn.execute(self._sql.truncate_balances)
            await conn.execute(self._sql.apply_balances, MIN_HEIGHT, MAX_HEIGHT, 1)

    async def delete_orphan_transactions(self, start: int, end: int) -> int:
        """Delete the stored transactions at ``start..end`` whose block is not stored;
        how many. Fenced by the writer lock like every write."""
        async with self._writing(f"deleting transactions without a block in {start}..{end}") as conn:
            status = await conn.execute(self._sql.delete_orphan_transactions, start, end)
        return int(status.rsplit(" ", 1)[-1])

    async def require_writer(self) -> None:
        """Take the writer lock without waiting, or raise ``NotTheWriter`` naming the
        process that holds it. For one-shot commands that write several transactions
        (``gnosync repair``) and must not interleave with ``gnosync run``."""
        if not await self.claim_writer(wait=False):
            raise await self._not_the_writer()

    def prepare(self, batch: Batch) -> None:
        """Compute ``batch``'s rows now, for the :meth:`commit_batch` of this very batch
        object to take. The pipeline calls it as a batch arrives, while the batch before
        is being written: the rows (sanitizing, splitting the package files, decoding)
        then cost no time of the commit, whose PostgreSQL work they overlap. At most
        ``_AHEAD`` batches are kept; one never committed (cut short, fetched again) is
        dropped as others arrive."""
        self._ahead[id(batch)] = (batch, self._rows(batch))
        while len(self._ahead) > _AHEAD:
            del self._ahead[next(iter(self._ahead))]

    def _prepared(self, batch: Batch) -> tuple[list, list, list, decode.Derived | None]:
        """The rows :meth:`prepare` computed for ``batch``, or computed now."""
        ahead = self._ahead.pop(id(batch), None)
        if ahead is not None and ahead[0] is batch:
            return ahead[1]
        return self._rows(batch)

    @asynccontextmanager
    async def _partitioned(self) -> AsyncIterator[_Partitioning]:
        """Partitions for one write transaction, opened inside this context: what it
        creates becomes known only once the transaction has committed, and any failure
        forgets what was known (a partition may have been dropped by hand)."""
        partitioning = _Partitioning(self)
        try:
            yield partitioning
        except BaseException:
            self._coverage = None
            raise
        if partitioning.coverage is not None:
            self._coverage = partitioning.coverage

    def _rows(self, batch: Batch) -> tuple[list, list, list, decode.Derived | None]:
        """The batch's block, transaction and package file rows, and its derived rows
        (None with ``derive="none"``)."""
        block_rows = [block_row(block) for block in batch.blocks]
        tx_rows: list = []
        file_rows: list = []
        for tx in batch.transactions:
            row, files = stored_transaction_row(tx)
            tx_rows.append(row)
            file_rows.extend(files)
        derived = None
        if self.derive == "all":
            derived = decode.derive([stored_tx(row) for row in tx_rows])
        return block_rows, tx_rows, file_rows, derived

    async def _copy(self, conn: asyncpg.Connection, block_rows: list, tx_rows: list, file_rows: list) -> None:
        await conn.copy_records_to_table(
            sql.BLOCKS_TABLE,
            records=block_rows,
            columns=sql.BLOCK_COLUMNS,
            schema_name=self.schema,
        )
        if tx_rows:
            await conn.copy_records_to_table(
                sql.TRANSACTIONS_TABLE,
                records=tx_rows,
                columns=sql.TRANSACTION_COLUMNS,
                schema_name=self.schema,
            )
            await copy_package_files(conn, self.schema, file_rows)

    async def _write_checkpoints(self, conn: asyncpg.Connection, heights: Iterable[int]) -> None:
        """The checkpoints at ``heights`` (ascending), each chained from the one before;
        the rows of their heights must be in the database (this transaction's COPY)."""
        for height in heights:
            await conn.fetchval(self._sql.insert_checkpoint, height)

    # -- derived tables ----------------------------------------------------------------------

    async def decoder_state(self) -> DecoderState:
        """The decoder version of the derived tables and the height they are complete to."""
        async with self._errors("reading the decoder state"):
            row = await self._pool.fetchrow(self._sql.decoder_state)
        return DecoderState(version=row["version"], derived_to=row["derived_to"])

    async def reset_derived(self) -> None:
        """Empty every derived table (never package_files) and record this decoder's
        version with nothing derived yet, in one transaction: the start of a full
        re-derivation. Fenced by the writer lock like every write."""
        async with self._writing("emptying the derived tables") as conn:
            await conn.execute(self._sql.truncate_derived)
            await conn.execute(self._sql.reset_decoder_state, decode.DECODER_VERSION)

    async def nth_transaction_height(self, start: int, end: int, n: int) -> int | None:
        """The height of the stored transaction that comes after the first ``n`` of
        heights ``start..end``; None when they hold ``n`` or fewer."""
        async with self._errors(f"reading transactions {start}..{end}"):
            return await self._pool.fetchval(self._sql.nth_transaction_height, start, end, n)

    async def stored_transactions(self, start: int, end: int) -> list[decode.StoredTx]:
        """The stored transactions of heights ``start..end`` as the decoder takes them,
        in height and index order (a pool connection: a re-derivation reads the next
        batch while the writer connection stores the one before)."""
        async with self._errors(f"reading the transactions of {start}..{end}"):
            rows = await self._pool.fetch(self._sql.stored_transactions_between, start, end)
        return [decode.StoredTx(*row) for row in rows]

    async def write_rederived(self, start: int, end: int, derived: decode.Derived, *, clear: bool) -> None:
        """Store ``derived``, the rows of heights ``start..end``, in one transaction.

        ``clear``: first take the range's old derived rows back (balances, then the
        rows); without it the range must hold none (after :meth:`reset_derived`).
        Fenced by the writer lock like every write.
        """
        async with self._partitioned() as coverage, self._writing(
            f"re-deriving heights {start}..{end}"
        ) as conn:
            if not self.durable_commits:
                await conn.execute(sql.ASYNC_COMMIT)
            # The stored heights have their partitions; this only reads the catalog if
            # some were dropped, or once after start-up.
            await coverage.ensure(conn, start, end)
            if clear:
                await take_back(conn, self._sql, start, end)
            await write_derived(conn, self._sql, derived, start, end)

    @asynccontextmanager
    async def auditing(self) -> AsyncIterator[AuditReader]:
        """The audit statements on one read-only REPEATABLE READ snapshot (pool connection)."""
        async with self._errors("opening an audit snapshot"), self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield AuditReader(conn, self._sql, self.component, self._errors)

    async def block_link(self, height: int) -> BlockLink | None:
        """Hash, last_block_hash, totals and chain id of the stored block at ``height``."""
        async with self._errors(f"reading block {height}"):
            row = await self._pool.fetchrow(self._sql.block_link, height)
        return None if row is None else BlockLink(**dict(row))

    async def block_ref(self, height: int) -> BlockRef | None:
        """Height, hash, chain id and total_txs of the stored block at ``height``."""
        async with self._errors(f"reading block {height}"):
            row = await self._pool.fetchrow(self._sql.block_ref, height)
        if row is None:
            return None
        return BlockRef(
            height=row["height"],
            hash=row["hash"],
            chain_id=row["chain_id"],
            total_txs=row["total_txs"],
        )

    async def stored_bounds(self) -> tuple[int, int] | None:
        """(lowest, highest) stored block height, or None when no block is stored."""
        async with self._errors("reading the stored height range"):
            row = await self._pool.fetchrow(self._sql.stored_bounds)
        if row is None or row[0] is None:
            return None
        return row[0], row[1]

    async def block_hashes(self, start: int, end: int) -> dict[int, str]:
        """Hashes of the stored blocks ``start..end`` (inclusive), by height."""
        async with self._errors(f"reading block hashes {start}..{end}"):
            rows = await self._pool.fetch(self._sql.block_hashes, start, end)
        return {row["height"]: row["hash"] for row in rows}


class _Partitioning:
    """The partitions one write transaction creates (see :meth:`Store._partitioned`)."""

    def __init__(self, store: Store):
        self._store = store
        self.coverage: Coverage | None = None

    async def ensure(self, conn: asyncpg.Connection, start: int, end: int) -> None:
        """Partitions for heights ``start..end``, created in ``conn``'s transaction,
        before any row of them is written."""
        store = self._store
        self.coverage = await ensure_partitions(
            conn, store._sql, self.coverage or store._coverage, start, end, store.partition_size
        )


def _check_batch(batch: Batch):
    """The batch's top block, after checking that its blocks span start..end."""
    if not batch.blocks:
        raise ValueError(f"batch {batch.start}..{batch.end} has no blocks")
    top = batch.blocks[-1]
    if top.height != batch.end or batch.blocks[0].height != batch.start:
        raise ValueError(
            f"batch {batch.start}..{batch.end} holds blocks "
            f"{batch.blocks[0].height}..{top.height}"
        )
    return top


async def _close(conn: asyncpg.Connection) -> None:
    """Close ``conn`` gracefully if it answers in time, else drop its socket."""
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        conn.terminate()
    except BaseException:
        conn.terminate()
        raise


async def _sleep(seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``seconds``, ending early when ``stop`` gets set; True if it did."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
