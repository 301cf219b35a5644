"""The errors gnosync raises across its boundaries.

Every error carries a message meant for an operator: what happened, where, and what to
do. ``retryable`` tells the sync loop whether waiting and trying again can help; the CLI
prints ``str(error)`` on one line and exits non-zero for the ones that reach it.
"""

from __future__ import annotations


class GnosyncError(Exception):
    """Base class. ``retryable`` says whether the same call may succeed later."""

    retryable: bool = False
    exit_code: int = 1


class ConfigError(GnosyncError):
    """A setting is missing or malformed; the user has to change it."""

    exit_code = 2


class SourceError(GnosyncError):
    """The chain source failed to answer usefully.

    ``retry_after`` is the delay the server asked for (HTTP 429/503 ``Retry-After``),
    in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class NotATxIndexer(SourceError):
    """The URL answers, but not as a tx-indexer GraphQL endpoint."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class StoreError(GnosyncError):
    """PostgreSQL refused or lost the connection.

    Connection losses are retryable; authentication or missing-database errors are not.
    """

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class BatchInvalid(GnosyncError):
    """A fetched batch failed validation; nothing of it was committed.

    Retryable: a flaky or lagging endpoint may serve good data on the next try, and the
    sync loop never steps over the bad height.
    """

    retryable = True

    def __init__(self, height: int, check: str, detail: str):
        super().__init__(f"block {height} failed check '{check}': {detail}")
        self.height = height
        self.check = check
        self.detail = detail


class ChainMismatch(GnosyncError):
    """The source serves a different chain than the one stored; continuing would mix them."""

    exit_code = 3
