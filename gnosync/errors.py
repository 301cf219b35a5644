"""The errors gnosync raises across its boundaries, typed by cause.

Every error carries a message meant for an operator: what happened, where, and what to
do. The class says the cause, and ``kind`` names it for logs and metrics:

=================  ===========================================  ==========================
kind               cause                                        what gnosync does
=================  ===========================================  ==========================
``timeout``        no answer within the request's bounds        shrink the range, retry
``cap``            an answer over ``max_response_bytes``        shrink the range, retry
``http_status``    429 or 5xx                                   back off (``Retry-After``)
``http_status``    another 4xx from one endpoint                cool it down, fail over
``rejected``       every endpoint answers 4xx, or none is a     stop: the settings are
                   tx-indexer                                   wrong
``transport``      refused, reset or broken connection          retry
``decode``         a 200 answer that is not the GraphQL answer  retry
``graphql``        resolver errors in a 200 answer              retry
``bad_data``       a batch that fails validation                hold at the last good
                                                                height, fetch again
``database``       PostgreSQL refused or lost the connection    reconnect when retryable
``chain``          the source serves another chain              stop
``config``         a setting is missing or malformed            stop
=================  ===========================================  ==========================

``retryable`` follows from the class (and for HTTP statuses from the status), so the
one retry policy (:mod:`gnosync.retry`) never guesses; the CLI prints ``str(error)`` on
one line and exits with ``exit_code`` for the ones that reach it.
"""

from __future__ import annotations


class GnosyncError(Exception):
    """Base class. ``retryable`` says whether the same call may succeed later."""

    kind: str = "internal"
    retryable: bool = False
    exit_code: int = 1


class ConfigError(GnosyncError):
    """A setting is missing or malformed; the user has to change it."""

    kind = "config"
    exit_code = 2


# -- the chain source ------------------------------------------------------------------------


class SourceError(GnosyncError):
    """The chain source failed to answer usefully. Retryable unless a subclass says not.

    ``retry_after`` is the delay the server asked for (HTTP 429/503 ``Retry-After``),
    in seconds, when it gave one.
    """

    kind = "source"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SourceTimeout(SourceError):
    """No complete answer in time. A smaller request may fit where this one did not."""

    kind = "timeout"


class ResponseTooLarge(SourceError):
    """The answer was larger than ``max_response_bytes``; a smaller range will fit."""

    kind = "cap"


class SourceTransportError(SourceError):
    """The connection was refused, reset or broke during the answer."""

    kind = "transport"


class SourceDecodeError(SourceError):
    """A 200 answer that is not the GraphQL response gnosync asked for.

    ``looks_like_json`` tells a garbled or cut answer (a flaky server or proxy: retry)
    from a page that was never JSON (a URL that is not a tx-indexer at all).
    """

    kind = "decode"

    def __init__(self, message: str, *, looks_like_json: bool):
        super().__init__(message)
        self.looks_like_json = looks_like_json


class SourceGraphQLError(SourceError):
    """The server answered with GraphQL errors (tx-indexer: HTTP 200, ``errors``)."""

    kind = "graphql"


class SourceStatusError(SourceError):
    """An HTTP status other than 200.

    429 and 5xx are the server (or its proxy) asking to come back later: retryable.
    Any other 4xx is this endpoint refusing gnosync (credentials, path, query): not
    retryable against it, so the endpoint pool cools it down and asks another one.
    """

    kind = "http_status"

    def __init__(self, message: str, *, status: int, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.retryable = status == 429 or status >= 500

    @property
    def endpoint_fault(self) -> bool:
        """A 4xx that says this endpoint will not serve gnosync, whatever the range."""
        return 400 <= self.status < 500 and self.status != 429


class EndpointRejected(SourceError):
    """One endpoint refuses gnosync (4xx, or is not a tx-indexer) while others remain:
    it is cooled down and the next try goes to another endpoint."""

    kind = "http_status"


class SourceRejected(SourceError):
    """Every endpoint refuses gnosync, or none is a tx-indexer: the settings are wrong."""

    kind = "rejected"
    retryable = False
    exit_code = 2


class NotATxIndexer(SourceRejected):
    """The URL answers, but not as a tx-indexer GraphQL endpoint."""


# -- data, database, chain -------------------------------------------------------------------


class StoreError(GnosyncError):
    """PostgreSQL refused or lost the connection.

    Connection losses are retryable; authentication or missing-database errors are not.
    """

    kind = "database"

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class BatchInvalid(GnosyncError):
    """A fetched batch failed validation at ``height``; nothing from there on was committed.

    Retryable: a flaky or lagging endpoint may serve good data on the next try, and the
    sync never steps over the bad height.
    """

    kind = "bad_data"
    retryable = True

    def __init__(self, height: int, check: str, detail: str):
        super().__init__(f"block {height} failed check '{check}': {detail}")
        self.height = height
        self.check = check
        self.detail = detail


class ChainMismatch(GnosyncError):
    """The source serves a different chain than the one stored; continuing would mix them."""

    kind = "chain"
    exit_code = 3


SHRINKS_RANGE = (SourceTimeout, ResponseTooLarge)
"""The failures a smaller request can avoid: the range is halved before the next try."""
