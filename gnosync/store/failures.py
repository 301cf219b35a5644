"""Database failures as one-line ``StoreError``s: what failed, where, and what to do.

Connection failures while connecting (refused, unknown host, wrong password, unknown
database) are not retryable: the settings are wrong or the server is absent. A
connection lost during an operation is retryable: the pool reconnects on the next call.
So is a connection asyncpg finds in an impossible state (an ``InternalClientError``, as
when PostgreSQL terminated it while idle and the closed socket is not yet noticed): the
pool discards it on release.
Any other PostgreSQL error is reported with its SQLSTATE and is not retryable, except
transaction conflicts and cancelled statements.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from asyncpg import exceptions as pg

from gnosync.errors import StoreError

SETTINGS_HINT = "check --db or GNOSYNC_DB"
RETRY_HINT = "gnosync retries; check that PostgreSQL is running if this persists"

# Refused at login: the settings must change.
_LOGIN_REFUSED = (
    pg.InvalidAuthorizationSpecificationError,  # includes InvalidPasswordError
    pg.InvalidCatalogNameError,
)
# Refused at login for now: the server is starting, stopping or full.
_LOGIN_BUSY = (pg.CannotConnectNowError, pg.TooManyConnectionsError)
# The connection went away.
_LOST = (
    pg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    OSError,  # includes TimeoutError and socket.gaierror
)
# asyncpg lost track of the connection's state; the pool terminates it on release.
_BROKEN = (asyncpg.InternalClientError,)
# The statement failed but the same call may succeed.
_TRANSIENT = (pg.SerializationError, pg.DeadlockDetectedError, pg.QueryCanceledError)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and "Connect call failed" in str(exc)
    ):
        return "connection refused"
    if isinstance(exc, OSError) and not isinstance(exc, pg.PostgresError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, _BROKEN):
        return f"the connection is in an unexpected state ({exc})"
    if isinstance(exc, pg.PostgresError) and getattr(exc, "message", None):
        return exc.message  # without the DETAIL and HINT lines str() adds
    return str(exc) or type(exc).__name__


def _closed_connection(exc: BaseException) -> bool:
    """asyncpg reports use of a dead connection as a plain InterfaceError."""
    text = str(exc).lower()
    return isinstance(exc, asyncpg.InterfaceError) and "connection" in text and "closed" in text


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or the database error behind a ``StoreError``) lost the connection."""
    if isinstance(exc, StoreError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, _LOGIN_REFUSED + _LOGIN_BUSY):
        return False
    return isinstance(exc, _LOST + _BROKEN) or _closed_connection(exc)


def store_error(
    exc: BaseException,
    *,
    what: str,
    where: str,
    connecting: bool = False,
    secret: str | None = None,
) -> StoreError:
    """The ``StoreError`` for ``exc``, raised while ``what`` (e.g. "committing blocks 1..9")."""
    reason = _reason(exc)
    if isinstance(exc, _LOGIN_REFUSED):
        message = f"cannot connect to PostgreSQL at {where}: {reason}; {SETTINGS_HINT}"
        retryable = False
    elif isinstance(exc, _LOGIN_BUSY):
        message = f"cannot connect to PostgreSQL at {where}: {reason}; {RETRY_HINT}"
        retryable = True
    elif isinstance(exc, _LOST + _BROKEN) or _closed_connection(exc):
        if connecting and not isinstance(exc, _BROKEN):
            message = f"cannot connect to PostgreSQL at {where}: {reason}; {SETTINGS_HINT}"
            retryable = False
        else:
            message = (
                f"lost the connection to PostgreSQL at {where} while {what}: {reason}; {RETRY_HINT}"
            )
            retryable = True
    elif isinstance(exc, pg.PostgresError):
        detail = getattr(exc, "detail", None)
        message = f"PostgreSQL error {exc.sqlstate} at {where} while {what}: {reason}"
        if detail:
            message += f" ({detail})"
        if isinstance(exc, (pg.UndefinedTableError, pg.InvalidSchemaNameError)):
            message += "; are the migrations applied?"
        retryable = isinstance(exc, _TRANSIENT)
    else:
        message = f"PostgreSQL client error at {where} while {what}: {reason}"
        retryable = False
    message = _one_line(message)
    if secret:
        message = message.replace(secret, "***")
    error = StoreError(message, retryable=retryable)
    error.__cause__ = exc
    return error


# What store_error converts; anything else (bugs, cancellation) propagates unchanged.
CONVERTED = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


@asynccontextmanager
async def database_errors(
    what: str, where: str, *, connecting: bool = False, secret: str | None = None
) -> AsyncIterator[None]:
    """Re-raise database failures inside the block as ``StoreError``."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except CONVERTED as exc:
        raise store_error(
            exc, what=what, where=where, connecting=connecting, secret=secret
        ) from exc
