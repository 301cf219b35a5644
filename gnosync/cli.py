"""The ``gnosync`` command: run, sync, status, migrate, verify, repair, rederive, db, devnet.

Every failure a user can cause or fix (a bad flag, DSN or URL, an unreachable source, a
chain mismatch) ends as one line on stderr and a non-zero exit; nothing half-written is
left behind because every write is one transaction.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, TypeVar

import click
import orjson
import structlog

from gnosync.errors import ConfigError, GnosyncError
from gnosync.observe.http import DEFAULT_ADDRESS, AddressInUse, Liveness, ObserveServer, parse_address
from gnosync.observe.logs import configure_logging
from gnosync.observe.metrics import SyncMetrics
from gnosync.observe.progress import BackfillProgress
from gnosync.observe.status import not_initialised, status_lines, status_report
from gnosync.redact import redact_dsn, redact_text
from gnosync.retry import RetryPolicy
from gnosync.settings import Settings, load_settings
from gnosync.source.pool import SourcePool
from gnosync.source.subscribe import TipWatcher
from gnosync.store import Store
from gnosync.sync.loop import Follower, sync_range
from gnosync.sync.rederive import bring_up_to_date, check_decoder_version
from gnosync.sync.syncer import Syncer

T = TypeVar("T")

log = structlog.get_logger("gnosync.cli")

# Where the metrics address is set, for the errors about it.
HTTP_SETTING = "with --http, GNOSYNC_HTTP or the config file's `http`"

NO_SOURCE = (
    "no chain source: give --source URL or set GNOSYNC_SOURCE to a tx-indexer GraphQL URL"
    " (e.g. http://127.0.0.1:8546/graphql/query); `gnosync devnet` serves a test chain"
)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="TOML config file."),
        click.option("--db", help="PostgreSQL DSN [env GNOSYNC_DB]; an embedded PostgreSQL when unset, which keeps running after gnosync exits (`gnosync db stop` stops it)."),
        click.option("--db-schema", help="PostgreSQL schema to write [default: indexer]."),
        click.option("--source", multiple=True, help="tx-indexer GraphQL URL; repeat for several [env GNOSYNC_SOURCE, comma-separated]."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True),
        click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(config: Path | None, log_level: str, log_format: str, **flags: Any) -> Settings:
    configure_logging(log_level, log_format)
    if "source" in flags:
        flags["source"] = ",".join(flags["source"]) or None
    return load_settings(config, **flags)


def _run(main: Awaitable[T]) -> T:
    return asyncio.run(main)


# How the embedded server lives; said wherever gnosync starts or names it.
EMBEDDED_LIFECYCLE = "it keeps running after gnosync exits; `gnosync db stop` stops it"


async def _dsn(settings: Settings) -> str:
    if settings.db:
        return settings.db
    from gnosync.store.embedded import start_embedded

    dsn, data_dir = await asyncio.to_thread(start_embedded, settings.data_dir)
    click.echo(
        f"gnosync: using embedded PostgreSQL {redact_dsn(dsn)} in {data_dir};"
        f" {EMBEDDED_LIFECYCLE} (set --db or GNOSYNC_DB to use your own)",
        err=True,
    )
    return dsn


@asynccontextmanager
async def _store(settings: Settings, *, migrate: bool, dsn: str | None = None) -> AsyncIterator[Store]:
    store = await Store.connect(
        dsn or await _dsn(settings),
        schema=settings.db_schema,
        component=settings.component,
        checkpoint_every=settings.checkpoint_every,
        durable_commits=settings.durable_commits,
        derive=settings.derive,
        partition_size=settings.partition_size,
    )
    try:
        if migrate:
            await store.migrate()
        yield store
    finally:
        await store.close()


def _source(settings: Settings) -> SourcePool:
    if not settings.sources:
        raise ConfigError(NO_SOURCE)
    return SourcePool(settings.sources, **settings.client_options())


def _policy(settings: Settings, *, attempts: int | None) -> RetryPolicy:
    return RetryPolicy(initial=settings.retry_initial, maximum=settings.retry_max, attempts=attempts)


async def _first_contact(settings: Settings, source: SourcePool) -> int:
    """The source's height, retried a few times: a flaky first answer is not a reason to
    exit, but a URL that is not a tx-indexer, or a source still down after the retries,
    is (one clear line). An endpoint that refuses gnosync while another answers is
    left out, with a warning."""
    height = await _policy(settings, attempts=settings.retry_attempts).call(source.check)
    for health in source.health():
        if health.rejected:
            structlog.get_logger("gnosync.source").warning(
                "endpoint left out: it refuses gnosync; syncing from the others",
                endpoint=health.url, error=health.last_error,
            )
    return height


_DERIVE_OPTION = click.option(
    "--derive", type=click.Choice(["all", "none"]),
    help="all: also write the decoded tables with every batch, re-deriving first what is"
    " missing or was built by an older gnosync; none: blocks, transactions and package"
    " files only [default: all].",
)


async def _derived_up_to_date(
    settings: Settings, store: Store, on_batch: Callable[[int, int, int], None] | None = None
) -> None:
    """With derive = all: derive what the stored chain lacks before syncing more. The
    caller holds the writer lock."""
    if settings.derive != "all":
        return
    await bring_up_to_date(
        store, batch_size=settings.batch_size, batch_txs=settings.batch_txs,
        progress=BackfillProgress(label="re-deriving"), on_batch=on_batch,
    )


class _Group(click.Group):
    """Turns usage errors into one line, like every other gnosync error."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"gnosync: error: {redact_text(exc.format_message())}{hint}", err=True)
            sys.exit(2)
        except click.Abort:
            sys.exit(130)
        except GnosyncError as exc:
            click.echo(f"gnosync: error: {redact_text(str(exc))}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="gnosync")
def main() -> None:
    """Keep a PostgreSQL copy of a Gno.land chain in sync with a tx-indexer."""


@main.command()
@_common
@click.option("--batch-size", type=int, help="Most blocks per batch [default: 10000].")
@click.option("--interval", type=float, help="Seconds between polls at the tip [default: 1].")
@click.option("--start-height", type=int, help="First height of a new sync [default: the lowest served].")
@click.option("--fetch-concurrency", type=int, help="Ranges fetched at once during a catch-up [default: 4].")
@click.option("--subscribe/--no-subscribe", default=None, help="Wake on the source's new-block subscription [default: on].")
@click.option("--http", help="Address for /metrics, /healthz, /readyz, /status [default: 127.0.0.1:9464, or a free port when that is taken; 'off' disables].")
@click.option("--devnet", is_flag=True, help="Try gnosync out: serve `gnosync devnet`'s default chain (growing a block a second) on a free port in this process, and sync from it; Ctrl-C stops both. Not with --source.")
@_DERIVE_OPTION
def run(devnet: bool, **flags: Any) -> None:
    """Sync to the tip, then follow it until stopped (SIGINT/SIGTERM)."""
    if devnet:
        flags["source"] = (_trial_devnet(flags["source"]),)
    settings = _settings(**flags)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        startup = asyncio.current_task()
        follower: Follower | None = None

        def on_signal() -> None:
            # During start-up (connecting, migrating, first contact) a stop ends it at
            # once; once following, the batch in flight may commit first.
            if follower is None:
                startup.cancel()
            else:
                follower.stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        try:
            sources = _source(settings)  # a missing source is reported before anything starts
            dsn = await _dsn(settings)
            async with sources as source, _store(settings, migrate=True, dsn=dsn) as store:
                if settings.derive == "all":
                    check_decoder_version(store.schema, await store.decoder_state())
                await _first_contact(settings, source)
                state = await store.state.get_state()
                metrics = SyncMetrics()
                if state is not None and state.last_block_h is not None:
                    metrics.synced_to(state.last_block_h)
                follower = Follower(
                    Syncer(source, store, chain_id=state.chain_id if state else None),
                    batch_size=settings.batch_size,
                    interval=settings.interval,
                    policy=_policy(settings, attempts=None),
                    start_height=settings.start_height,
                    concurrency=settings.fetch_concurrency,
                    batch_txs=settings.batch_txs,
                    max_pending_bytes=settings.max_pending_bytes,
                    stuck_after=settings.stuck_after,
                    metrics=metrics,
                    liveness=Liveness.for_interval(settings.interval),
                    watcher=TipWatcher(
                        settings.sources, policy=_policy(settings, attempts=None),
                        connect_timeout=settings.connect_timeout,
                    ) if settings.subscribe else None,
                    prepare=lambda: _derived_up_to_date(
                        settings, store, on_batch=lambda *_: follower.liveness.beat()
                    ),
                )
                async with _observe_server(settings, store, source, follower):
                    if settings.db:  # said once start-up went through, never before an error line
                        log.info("using PostgreSQL", dsn=redact_dsn(dsn), schema=settings.db_schema)
                    await follower.run()
        except asyncio.CancelledError:
            if follower is not None:
                raise
            click.echo("gnosync: stopped during start-up", err=True)

    _run(main())


@asynccontextmanager
async def _observe_server(
    settings: Settings, store: Store, source: SourcePool, follower: Follower
) -> AsyncIterator[None]:
    """The operator's HTTP endpoint for the lifetime of ``run`` (unless turned off).

    An address given by the user (``--http``, ``GNOSYNC_HTTP``, the config file) is used
    as given or ``run`` stops; the default one gives way to a free port when another
    process (typically a second ``gnosync run``, a standby) already listens there.
    """
    given = settings.http is not None
    address = settings.http if given else DEFAULT_ADDRESS
    if address.strip().lower() in ("", "off", "none"):
        yield
        return
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise ConfigError(f"invalid setting http: {exc}; fix it {HTTP_SETTING}") from None

    async def ready() -> tuple[bool, str]:
        try:
            await store.ping()
        except GnosyncError as exc:
            return False, f"database unreachable: {exc}"
        stuck = follower.stuck
        if stuck is not None:
            return False, f"stuck: {stuck}"
        lag = follower.metrics.lag_blocks
        if lag is None:
            return False, "the source's height is not known yet"
        if lag > settings.ready_max_lag:
            return False, f"{lag} blocks behind the tip (ready within {settings.ready_max_lag})"
        return True, f"{lag} blocks behind the tip"

    server = ObserveServer(
        host, port, metrics=follower.metrics, ready=ready, alive=follower.liveness.alive,
        status=lambda: status_report(store, source, settings.component),
    )
    try:
        await server.start(or_free_port=not given)
    except AddressInUse:
        raise ConfigError(
            f"cannot serve metrics and health on {host}:{port}: another process listens"
            f" there; choose a free address or 'off' {HTTP_SETTING}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics and health on {host}:{port}: {exc.strerror.lower()};"
            f" choose another address {HTTP_SETTING}"
        ) from None
    if server.taken_port is not None:
        log.warning(
            f"{host}:{server.taken_port} is taken (another gnosync run?); serving metrics and"
            f" health on {server.url} instead",
            taken=f"{host}:{server.taken_port}", url=server.url,
            hint="choose the address with --http or GNOSYNC_HTTP",
        )
    log.info("serving metrics and health", url=server.url)
    try:
        yield
    finally:
        await server.stop()


@main.command("sync")
@_common
@click.option("--from", "start", type=click.IntRange(min=0), required=True, help="First height.")
@click.option("--to", "end", type=click.IntRange(min=0), required=True, help="Last height (inclusive).")
@click.option("--batch-size", type=int, help="Most blocks per batch [default: 10000].")
@click.option("--fetch-concurrency", type=int, help="Ranges fetched at once [default: 4].")
@_DERIVE_OPTION
def sync_command(start: int, end: int, **flags: Any) -> None:
    """Sync exactly heights FROM..TO once and exit."""
    if end < start:
        raise click.BadParameter(f"--to {end} is below --from {start}", param_hint="--to")
    settings = _settings(**flags)

    async def main() -> int:
        async with _source(settings) as source, _store(settings, migrate=True) as store:
            tip = await _first_contact(settings, source)
            if end > tip:
                raise ConfigError(f"--to {end} is above the source's latest height {tip}")
            if settings.derive == "all":
                await store.require_writer()
                await _derived_up_to_date(settings, store)
            state = await store.state.get_state()
            syncer = Syncer(source, store, chain_id=state.chain_id if state else None)
            policy = _policy(settings, attempts=settings.retry_attempts)
            return await sync_range(
                syncer, start, end, batch_size=settings.batch_size, policy=policy,
                concurrency=settings.fetch_concurrency, batch_txs=settings.batch_txs,
                max_pending_bytes=settings.max_pending_bytes,
            )

    added = _run(main())
    click.echo(f"gnosync: heights {start}..{end} in sync ({added} blocks added)", err=True)


@main.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool, **flags: Any) -> None:
    """Show the sync state, the writers and the lag behind the source.

    The report names the database (its DSN, password-free), the state stored in it,
    the gnosync processes writing it (pid and host) and the source's height.

    Reads only, and creates nothing: a database without gnosync's tables is reported
    as "not initialised" (exit 0); `gnosync migrate` or `gnosync run` sets it up.
    Without --db it reports on the embedded PostgreSQL, starting it if it has data
    (it keeps running afterwards; `gnosync db stop` stops it).
    """
    from gnosync.store.embedded import default_data_dir, is_initialised

    settings = _settings(**flags)

    async def main() -> dict[str, Any]:
        if not settings.db and not is_initialised(settings.data_dir):
            where = settings.data_dir or default_data_dir()
            return not_initialised(settings.component, f"no embedded PostgreSQL in {where} yet")
        async with _store(settings, migrate=False) as store:
            if not settings.sources:
                return await status_report(store, None, settings.component)
            options = {**settings.client_options(), "timeout": 5.0}
            async with SourcePool(settings.sources, **options) as source:
                return await status_report(store, source, settings.component)

    report = _run(main())
    if as_json:
        click.echo(orjson.dumps(report).decode())
        return
    for line in status_lines(report):
        click.echo(line)


@main.command()
@_common
def migrate(**flags: Any) -> None:
    """Create or upgrade the database schema."""
    settings = _settings(**flags)

    async def main() -> list[str]:
        async with _store(settings, migrate=False) as store:
            return await store.migrate()

    applied = _run(main())
    click.echo(f"gnosync: applied {', '.join(applied)}" if applied else "gnosync: schema is up to date", err=True)


@main.command()
@_common
@click.option("--from", "start", type=click.IntRange(min=0), help="First height to check [default: the lowest stored].")
@click.option("--to", "end", type=click.IntRange(min=0), help="Last height to check [default: the highest stored].")
@click.option("--against-source", is_flag=True, help="Also compare every stored block hash with the source's.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(start: int | None, end: int | None, against_source: bool, as_json: bool, **flags: Any) -> None:
    """Check the stored chain; exit 0 when it is clean, 1 when it is damaged, 2 when it
    could not be checked.

    Finds missing heights, broken hash links, blocks whose transactions are not all
    stored, transactions without a block, checkpoints that do not match the rows, an
    app_state that does not match the highest block and, with --against-source,
    stored hashes the source does not serve. Reads only: never migrates or writes, so
    it runs with a read-only role or on a replica, and while `gnosync run` runs.
    Exit 2: bad settings, an unreachable database or source, or a schema without
    gnosync's tables.
    """
    from gnosync.sync.verify import CouldNotVerify, audit

    if start is not None and end is not None and end < start:
        raise click.BadParameter(f"--to {end} is below --from {start}", param_hint="--to")
    settings = _settings(**flags)

    async def main() -> Any:
        async with _store(settings, migrate=False) as store:
            if not against_source:
                return await audit(store, start, end)
            async with _source(settings) as source:
                await source.check()
                policy = _policy(settings, attempts=settings.retry_attempts)
                return await audit(store, start, end, source, policy=policy)

    try:
        report = _run(main())
    except GnosyncError as exc:
        # Neither clean (0) nor damaged (1): a cron job must tell "could not check" apart.
        raise CouldNotVerify(str(exc)) from exc
    click.echo(orjson.dumps(report.to_json_dict()).decode() if as_json else report.text())
    if not report.ok:
        sys.exit(1)


@main.command()
@_common
@click.option("--from", "start", type=click.IntRange(min=0), help="First height to check [default: the lowest stored].")
@click.option("--to", "end", type=click.IntRange(min=0), help="Last height to check [default: the highest stored].")
@click.option("--against-source", is_flag=True, help="Also re-sync heights whose stored hash differs from the source's.")
@click.option("--batch-size", type=int, help="Most heights replaced per transaction [default: the batch size].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def repair(start: int | None, end: int | None, against_source: bool, as_json: bool, **flags: Any) -> None:
    """Re-sync the damaged heights from the source, then verify again.

    Runs `gnosync verify` on the range, deletes each damaged range and syncs it again
    with the same validation and one transaction per chunk, and syncs missing heights.
    It writes, so it needs the writer lock: stop `gnosync run` first (repair refuses
    while another process holds it). Exit 0 when the database is clean afterwards.
    """
    from gnosync.sync.repair import repair as repair_chain

    if start is not None and end is not None and end < start:
        raise click.BadParameter(f"--to {end} is below --from {start}", param_hint="--to")
    settings = _settings(**flags)

    async def main() -> Any:
        async with _source(settings) as source, _store(settings, migrate=True) as store:
            await source.check()
            return await repair_chain(
                store, source, start, end,
                against_source=against_source,
                batch_size=settings.batch_size,
                policy=_policy(settings, attempts=settings.retry_attempts),
            )

    result = _run(main())
    if as_json:
        click.echo(orjson.dumps(result.to_json_dict()).decode())
    else:
        click.echo(f"before: {result.before.text()}")
        if result.replaced or result.orphans_deleted:
            ranges = ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in result.replaced)
            click.echo(
                f"repaired: re-synced heights {ranges or 'none'};"
                f" deleted {result.orphans_deleted} transactions without a block"
            )
        else:
            click.echo("repaired: nothing to repair")
        click.echo(f"after: {result.after.text()}")
    if not result.after.ok:
        sys.exit(1)


@main.command()
@_common
@click.option("--from", "start", type=click.IntRange(min=0), help="First height to re-derive [default: the lowest stored].")
@click.option("--to", "end", type=click.IntRange(min=0), help="Last height to re-derive [default: the highest stored].")
@click.option("--batch-size", type=int, help="Most heights per transaction [default: 10000; each aims at batch_txs transactions].")
def rederive(start: int | None, end: int | None, **flags: Any) -> None:
    """Rebuild the decoded tables from the stored transactions (no source needed).

    Without --from/--to: empty every derived table (package_files is stored data and
    stays) and derive the whole stored chain again, at this gnosync's decoder version.
    With a range: take that range's derived rows back (balances included) and derive
    them again. Batch by batch, each in one transaction, so it is safe to stop and run
    again. It writes, so it needs the writer lock: stop `gnosync run` first (exit 2
    while another process holds it).
    """
    from gnosync.store import NotTheWriter
    from gnosync.sync.rederive import rederive as rederive_chain

    if start is not None and end is not None and end < start:
        raise click.BadParameter(f"--to {end} is below --from {start}", param_hint="--to")
    settings = _settings(**flags)

    async def main() -> Any:
        async with _store(settings, migrate=True) as store:
            return await rederive_chain(
                store, start, end, batch_size=settings.batch_size, batch_txs=settings.batch_txs,
                progress=BackfillProgress(label="re-deriving"),
            )

    try:
        done = _run(main())
    except NotTheWriter as exc:
        # Like a bad setting: nothing ran, and the fix is the operator's (stop the writer).
        raise ConfigError(str(exc)) from None
    if done.start is None:
        click.echo("gnosync: nothing is stored; the derived tables are empty", err=True)
    else:
        click.echo(
            f"gnosync: re-derived heights {done.start}..{done.end}"
            f" ({done.transactions} transactions in {done.batches} batches)",
            err=True,
        )


def _devnet_config(*, chain_id: str | None = None, genesis_txs: int = 300, **options: Any) -> Any:
    """The ``ChainConfig`` of the chain ``gnosync devnet`` serves with these options:
    genesis built from the gnoland1 exports' files when they are found, and, without a
    ``chain_id``, the chain's own derived id (:func:`gnosync.devnet.derived_chain_id`)."""
    from gnosync.devnet import ChainConfig, derived_chain_id, gnoland1_exports

    config = ChainConfig(
        chain_id=chain_id or "dev", genesis_txs=genesis_txs, genesis_files=gnoland1_exports(), **options
    )
    if chain_id is None:
        config.chain_id = derived_chain_id(config)
    return config


def _trial_devnet(given_sources: tuple[str, ...]) -> str:
    """``run --devnet``: serve the default devnet chain, growing a block a second, in
    this process until the command ends; return its GraphQL URL."""
    from gnosync.devnet import Chain, running_devnet
    from gnosync.devnet.server import banner

    if given_sources:
        raise ConfigError("--devnet serves its own test chain: give --devnet or --source, not both")
    chain = Chain(_devnet_config(block_time=1.0))
    url = click.get_current_context().with_resource(running_devnet(chain, port=0))
    click.echo(f"{banner(chain, url)} (a test chain; it stops with gnosync)", err=True)
    return url


PSQL_MISSING = (
    "psql is not installed: install the PostgreSQL client (Debian/Ubuntu: apt install"
    " postgresql-client; Fedora: dnf install postgresql; macOS: brew install libpq), or"
    " connect any client to the DSN `gnosync db url` prints"
)


def find_psql(search_path: str | None, bundled: Path | None) -> str:
    """The psql to run: the first on ``search_path`` (``PATH``), else ``bundled`` (the
    one shipped with the embedded PostgreSQL). Raises ``ConfigError`` naming the
    package to install when there is neither."""
    found = shutil.which("psql", path=search_path) or (str(bundled) if bundled else None)
    if found is None:
        raise ConfigError(PSQL_MISSING)
    return found


def _db_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--db", help="PostgreSQL DSN [env GNOSYNC_DB]; the embedded PostgreSQL when unset.")(fn)
    return click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="TOML config file.")(fn)


def _db_settings(config: Path | None, db: str | None) -> Settings:
    return _settings(config, "warning", "auto", db=db)


async def _usable_dsn(settings: Settings) -> tuple[str, str | None]:
    """(the DSN without its password, the password or None): what psql takes."""
    from gnosync.store.dsn import password_of, without_password

    dsn = await _dsn(settings)
    try:
        return without_password(dsn), password_of(dsn)
    except ValueError as exc:
        raise ConfigError(f"invalid PostgreSQL DSN {redact_dsn(dsn)!r}: {exc}") from None


@main.group()
def db() -> None:
    """The database: its DSN, a psql prompt, stopping the embedded one.

    Without --db, GNOSYNC_DB or the config file's `db`, gnosync uses an embedded
    PostgreSQL whose data lives in GNOSYNC_DATA_DIR [default: the user data dir's
    gnosync/postgres]. The first command that needs it starts it, and by design it
    keeps running after gnosync exits, so the next command reuses it at once;
    `gnosync db stop` stops it.
    """


@db.command("url")
@_db_options
@click.option("--with-password", is_flag=True, help="Keep the configured DSN's password in it.")
def db_url(config: Path | None, db: str | None, with_password: bool) -> None:
    """Print the DSN to use with psql or any driver.

    For example: psql "$(gnosync db url)". The configured database's, or the embedded PostgreSQL's (started if it is not
    running; it keeps running, `gnosync db stop` stops it). The printed DSN is
    password-free unless --with-password: psql then reads PGPASSWORD or ~/.pgpass,
    or asks.
    """
    settings = _db_settings(config, db)
    if with_password and settings.db:
        click.echo(settings.db)
        return
    click.echo(_run(_usable_dsn(settings))[0])


@db.command("psql", context_settings={"ignore_unknown_options": True})
@_db_options
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def db_psql(config: Path | None, db: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql on gnosync's database.

    The database is the one `gnosync db url` names; gnosync's tables are in the schema
    `indexer` unless another was chosen with --db-schema. Arguments after -- go to psql: gnosync db psql -- -c 'TABLE
    indexer.app_state'. Uses the psql on PATH, else the one shipped with the embedded
    PostgreSQL; a password in the DSN reaches psql as PGPASSWORD, never as an argument.
    """
    from gnosync.store.embedded import bundled_psql

    settings = _db_settings(config, db)
    psql = find_psql(os.environ.get("PATH"), bundled_psql())
    dsn, password = _run(_usable_dsn(settings))
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(psql, [psql, dsn, *psql_args], env)


@db.command("stop")
@_db_options
def db_stop(config: Path | None, db: str | None) -> None:
    """Stop the embedded PostgreSQL.

    A fast shutdown: open connections are closed, committed data is kept. The next gnosync command that needs it starts it again;
    stop `gnosync run` first, or it loses its database. Does nothing to a database
    given with --db or GNOSYNC_DB.
    """
    from gnosync.store.embedded import default_data_dir, stop_embedded

    settings = _db_settings(config, db)
    if settings.db:
        raise ConfigError(
            f"the database is configured ({redact_dsn(settings.db)}, from --db, GNOSYNC_DB or"
            " the config file) and gnosync does not stop it; `gnosync db stop` stops only"
            " the embedded PostgreSQL used when none is configured"
        )
    data_dir = (settings.data_dir or default_data_dir()).expanduser().resolve()
    if stop_embedded(data_dir):
        click.echo(f"gnosync: stopped the embedded PostgreSQL in {data_dir}", err=True)
    else:
        click.echo(f"gnosync: no embedded PostgreSQL is running in {data_dir}; nothing to stop", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8546, show_default=True)
@click.option("--blocks", type=click.IntRange(min=1), default=1000, show_default=True, help="Initial tip height.")
@click.option("--block-time", type=click.FloatRange(min=0, min_open=True), help="Grow by one block every S seconds.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--chain-id", help="Chain id [default: dev-<hash of --seed, --txs files and the other options that shape the chain>, so different chains never share one].")
@click.option("--no-genesis", is_flag=True, help="Start at height 1 instead of serving a genesis block.")
@click.option("--genesis-txs", type=click.IntRange(min=0), default=300, show_default=True, help="Transactions in the genesis block: package deployments with real-sized files (the gnoland1 exports' when found), a few MB in all.")
@click.option("--hostile-tx", "hostile_txs", type=click.IntRange(min=1), multiple=True, metavar="HEIGHT", help="Put transactions carrying NUL and bytes that are not UTF-8 at HEIGHT (repeatable).")
@click.option("--undecodable-tx", "undecodable_txs", type=click.IntRange(min=1), multiple=True, metavar="HEIGHT", help="Put 20 transactions at HEIGHT, one of them left out of Block.txs as tx-indexer does with what it cannot decode (repeatable).")
@click.option("--txs", "txs_files", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True, metavar="FILE", help="Amino-JSON transactions (jsonl) to place on the chain, spread over heights 1..--blocks by timestamp; repeat --txs for several files.")
@click.option("--max-elements", type=click.IntRange(min=1), default=10_000, show_default=True, help="Per-query result cap.")
@click.option("--fault-rate", type=click.FloatRange(0, 1), help="Share of GraphQL requests that fail (HTTP 500/502/503/429, stalls, resets, malformed answers, GraphQL errors).")
@click.option("--fault-seed", type=int, default=0, show_default=True, help="Seed of the fault sequence.")
@click.option("--stall-seconds", type=click.FloatRange(min=0), help="How long a stalled request waits [default: 0.5 with --fault-rate, else 30].")
@click.option("--profile", type=click.Choice(["sparse", "dense"]), help="Chain shape for benchmarks: sparse (gnoland1's density, with its real transactions when the exports are found) or dense (about 20 transactions on every block).")
@click.option("--prepare/--no-prepare", default=None, help="Encode the answers to gnosync's queries for the whole chain before serving, as far as the answer cache holds them [default: with --profile].")
@click.option("--answer-cache-mb", type=click.IntRange(min=0), help="Memory for encoded answers (MB); 0 encodes every answer afresh [default: 1024, 768 with --profile dense].")
def devnet(
    host: str,
    port: int,
    blocks: int,
    block_time: float | None,
    seed: int,
    chain_id: str | None,
    no_genesis: bool,
    genesis_txs: int,
    hostile_txs: tuple[int, ...],
    undecodable_txs: tuple[int, ...],
    txs_files: tuple[Path, ...],
    max_elements: int,
    fault_rate: float | None,
    fault_seed: int,
    stall_seconds: float | None,
    profile: str | None,
    prepare: bool | None,
    answer_cache_mb: int | None,
) -> None:
    """Serve a deterministic tx-indexer-compatible test chain over HTTP.

    Faults can be turned on with --fault-rate, or at any time through the
    /control/faults route (GET it for the current config and counts). New blocks
    are pushed to websocket subscribers (subscription { getBlocks(...) }).

    Each chain gets its own chain id unless --chain-id names one: a database synced
    from one devnet refuses a different chain (exit 3) instead of mixing them, and
    takes up the same chain again when it is served with another --block-time (or,
    without --txs, another --blocks).
    """
    from gnosync.devnet import Faults, serve_forever

    config = _devnet_config(
        blocks=blocks,
        block_time=block_time,
        seed=seed,
        chain_id=chain_id,
        genesis=not no_genesis,
        genesis_txs=genesis_txs,
        hostile_txs=hostile_txs,
        undecodable_txs=undecodable_txs,
        txs_files=list(txs_files),
        profile=profile,
        **({} if answer_cache_mb is None else {"answer_cache_mb": answer_cache_mb}),
    )
    if fault_rate is not None:
        stall = 0.5 if stall_seconds is None else stall_seconds
        faults = Faults.mixed(fault_rate, seed=fault_seed, stall_seconds=stall)
    else:
        faults = Faults(seed=fault_seed, stall_seconds=30.0 if stall_seconds is None else stall_seconds)
    if prepare is None:
        prepare = profile is not None
    sys.exit(serve_forever(config, host=host, port=port, max_elements=max_elements, faults=faults, prepare=prepare))
