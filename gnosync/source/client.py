"""The tx-indexer GraphQL client: heights, blocks and transactions of inclusive ranges.

Ranges are complete or the call fails: a capped answer (the server's "max elements per
query" error, or exactly ``max_elements`` results) is continued or split and fetched
again, never taken as the whole range. Every failure is one of the typed
:class:`~gnosync.errors.SourceError` subclasses, so callers act on the cause.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
import orjson

from gnosync.errors import (
    NotATxIndexer,
    ResponseTooLarge,
    SourceDecodeError,
    SourceError,
    SourceGraphQLError,
    SourceRejected,
    SourceStatusError,
    SourceTimeout,
    SourceTransportError,
)
from gnosync.model import Block, Transaction
from gnosync.redact import redact_url
from gnosync.source import queries

SERVER_CAP = 10_000  # tx-indexer's per-query element limit
CAP_MESSAGE = "max elements per query"

D = TypeVar("D")


class _GraphQLError(msgspec.Struct):
    message: str


class _LatestData(msgspec.Struct):
    latestBlockHeight: int


class _BlocksData(msgspec.Struct):
    getBlocks: list[Block] | None


class _Height(msgspec.Struct):
    height: int


class _HeightsData(msgspec.Struct):
    getBlocks: list[_Height] | None


class _HeightHash(msgspec.Struct):
    height: int
    hash: str


class _HashesData(msgspec.Struct):
    getBlocks: list[_HeightHash] | None


class _TransactionsData(msgspec.Struct):
    getTransactions: list[Transaction] | None


def _envelope(data_type: type) -> type:
    return msgspec.defstruct(
        "Envelope",
        [("data", data_type | None, None), ("errors", list[_GraphQLError] | None, None)],
    )


_ENVELOPES = {
    kind: msgspec.json.Decoder(_envelope(kind))
    for kind in (_LatestData, _BlocksData, _HeightsData, _HashesData, _TransactionsData)
}


def graphql_url(url: str) -> str:
    """The query endpoint for ``url``: a bare host gets tx-indexer's ``/graphql/query``."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path in ("", "/"):
        path = "/graphql/query"
    elif path == "/graphql":
        path = "/graphql/query"
    return urlunsplit(parts._replace(path=path))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for these servers; the backoff covers it


class SourceClient:
    """One tx-indexer endpoint. Use as ``async with SourceClient(url) as source``.

    Timeouts: ``connect_timeout`` to open a connection; ``timeout`` for a whole answer,
    which also bounds the wait for its first byte; ``read_timeout`` for a silence once
    the answer has started. tx-indexer builds an answer whole before it sends any of
    it (gqlgen marshals the response in memory), so a large answer is a long wait and
    then a fast transfer: the wait counts against ``timeout`` only.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_response_bytes: int = 256 * 1024 * 1024,
        max_elements: int = SERVER_CAP,
    ):
        # Requests go to the URL as given; every message, label and health record
        # names the endpoint by ``url``, which hides the credentials it may carry.
        self._request_url = graphql_url(url)
        self.url = redact_url(self._request_url)
        self.max_elements = max_elements
        self.max_response_bytes = max_response_bytes
        self.read_timeout = min(read_timeout, timeout)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(connect_timeout, timeout))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SourceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Content-Type": "application/json", "User-Agent": "gnosync"},
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def _post(self, document: str, variables: dict[str, Any]) -> bytes:
        payload = orjson.dumps({"query": document, "variables": variables})
        try:
            async with self._http().post(self._request_url, data=payload) as response:
                body = await self._read_body(response)
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                content_type = response.headers.get("Content-Type", "")
        except asyncio.TimeoutError:
            raise SourceTimeout(
                f"source {self.url} did not answer in time (connect {self._timeout.connect:g}s,"
                f" whole answer {self._timeout.total:g}s, silence {self.read_timeout:g}s);"
                " a smaller range is tried next"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise SourceRejected(
                f"source {self.url} presented a TLS certificate gnosync does not trust"
                f" ({exc.certificate_error}); fix the server's certificate, or trust its CA"
                " with SSL_CERT_FILE"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise SourceTransportError(
                f"cannot reach source {self.url} ({exc.os_error.strerror or exc});"
                " check that tx-indexer runs there, or fix --source / GNOSYNC_SOURCE"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SourceTransportError(
                f"connection to source {self.url} failed: {type(exc).__name__}: {exc}"
            ) from None
        if status != 200:
            raise SourceStatusError(
                _status_message(self.url, status, body, content_type),
                status=status,
                retry_after=retry_after,
            )
        return body

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, refusing to buffer more than ``max_response_bytes`` and to wait
        more than ``read_timeout`` for its next piece."""
        if (response.content_length or 0) > self.max_response_bytes:
            raise self._too_large()
        body = bytearray()
        while True:
            chunk = await asyncio.wait_for(response.content.readany(), self.read_timeout)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > self.max_response_bytes:
                raise self._too_large()

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"source {self.url} sent an answer over {self.max_response_bytes} bytes;"
            " a smaller range is tried next (GNOSYNC_MAX_RESPONSE_BYTES sets the limit)"
        )

    async def _query(
        self, document: str, variables: dict[str, Any], kind: type[D]
    ) -> tuple[D, bool]:
        """Run a query; return its data and whether the server's cap cut it short."""
        body = await self._post(document, variables)
        try:
            envelope = _ENVELOPES[kind].decode(body)
        except msgspec.DecodeError as exc:
            envelope = _decode_repaired(_ENVELOPES[kind], body)
            if envelope is None:
                raise _malformed(self.url, body, exc) from None
        capped = False
        if envelope.errors:
            messages = "; ".join(error.message for error in envelope.errors)
            if not all(CAP_MESSAGE in error.message for error in envelope.errors):
                raise SourceGraphQLError(f"source {self.url} returned errors: {messages}")
            capped = True
        if envelope.data is None:
            raise SourceGraphQLError(f"source {self.url} returned no data")
        return envelope.data, capped

    async def check(self) -> int:
        """The source's height, or ``NotATxIndexer`` when the URL is something else."""
        try:
            return await self.latest_height()
        except SourceDecodeError as exc:
            if exc.looks_like_json:
                raise
            raise NotATxIndexer(str(exc)) from None

    async def latest_height(self) -> int:
        data, _ = await self._query(queries.LATEST_HEIGHT, {}, _LatestData)
        return data.latestBlockHeight

    async def lowest_height(self, tip: int) -> int | None:
        """The lowest height the source serves (0 when it serves genesis), None if none.

        A capped answer still starts at the lowest height, so one query per side of
        height 0 suffices.
        """
        for start, end in ((0, 0), (1, tip)):
            if end < start:
                break
            variables = {"where": queries.blocks_where(start, end)}
            data, _ = await self._query(queries.BLOCK_HEIGHTS, variables, _HeightsData)
            if data.getBlocks:
                return data.getBlocks[0].height
        return None

    async def blocks(self, start: int, end: int) -> list[Block]:
        """Blocks ``start..end`` in height order, as served; the caller validates that
        the range is complete."""
        return await self._block_range(start, end, queries.BLOCKS, _BlocksData)

    async def block_hashes(self, start: int, end: int) -> dict[int, str]:
        """The hashes of blocks ``start..end`` the source serves, by height."""
        served = await self._block_range(start, end, queries.BLOCK_HASHES, _HashesData)
        return {block.height: block.hash for block in served}

    async def _block_range(self, start: int, end: int, document: str, kind: type) -> list:
        if start == 0 and end > 0:
            return await self._blocks(0, 0, document, kind) + await self._block_range(1, end, document, kind)
        result: list = []
        step = self.max_elements
        for chunk_start in range(start, end + 1, step):
            chunk_end = min(end, chunk_start + step - 1)
            result.extend(await self._blocks(chunk_start, chunk_end, document, kind))
        return result

    async def _blocks(self, start: int, end: int, document: str, kind: type) -> list:
        """One query's worth of blocks; a capped answer is continued after its last
        height (tx-indexer flags an answer of exactly the cap as capped too)."""
        result: list = []
        cursor = start
        while cursor <= end:
            data, capped = await self._query(document, {"where": queries.blocks_where(cursor, end)}, kind)
            blocks = data.getBlocks or []
            result.extend(blocks)
            if not blocks or not (capped or len(blocks) >= self.max_elements):
                return result
            last = blocks[-1].height
            if last >= end or last < cursor:
                return result  # complete, or nonsense that validation will name
            cursor = last + 1
        return result

    async def transactions(self, start: int, end: int, *, page: int | None = None) -> list[Transaction]:
        """All transactions of heights ``start..end``, in (height, index) order.

        A capped answer is the first transactions in order, so every height below its
        last one is complete: those are kept and the next query starts at that last
        height. Nothing is fetched twice but the one height the cap cut through.
        With ``page`` (one height only), the height is read ``page`` indexes per
        request: the way through a height whose answer is too large or too slow whole.
        """
        if start == 0 and end > 0:
            return await self.transactions(0, 0) + await self.transactions(1, end)
        if page is not None:
            if start != end:
                raise ValueError("paging by index needs a single height")
            return await self._transactions_of_height(start, page)
        result: list[Transaction] = []
        cursor = start
        while cursor <= end:
            data, capped = await self._query(
                queries.TRANSACTIONS,
                {"where": queries.transactions_where(cursor, end)},
                _TransactionsData,
            )
            txs = _detached(data.getTransactions or [])
            if not capped and len(txs) < self.max_elements:
                result.extend(txs)
                return result
            cut = txs[-1].block_height if txs else cursor
            if cut <= cursor:
                # One height holds more transactions than the cap: page through it.
                result.extend(await self._transactions_of_height(cursor, self.max_elements))
                cursor += 1
                continue
            result.extend(tx for tx in txs if tx.block_height < cut)
            cursor = cut
        return result

    async def _transactions_of_height(self, height: int, page: int) -> list[Transaction]:
        """One height, ``page`` indexes per request, until a request comes back short.

        Each page must start past the one before: a server that ignores the index
        filter would otherwise send the same page forever, and memory would grow with it.
        """
        result: list[Transaction] = []
        after = -1
        while True:
            where = queries.transactions_where(height, height, after_index=after, limit=page)
            data, capped = await self._query(queries.TRANSACTIONS, {"where": where}, _TransactionsData)
            txs = _detached(data.getTransactions or [])
            if txs and txs[0].index <= after:
                raise SourceDecodeError(
                    f"source {self.url} ignored the index filter at height {height}: asked for"
                    f" indexes after {after}, got {txs[0].index}; is it a tx-indexer?",
                    looks_like_json=True,
                )
            result.extend(txs)
            if not txs or (len(txs) < page and not capped):
                return result
            after = txs[-1].index


def _decode_repaired(decoder: msgspec.json.Decoder, body: bytes) -> Any | None:
    """``body`` decoded with its bytes that are not UTF-8 replaced by U+FFFD, or None
    when it is valid UTF-8 (so something else is wrong) or still does not decode.

    tx-indexer's GraphQL layer writes a string's bytes as they are, escaping only what
    JSON must, so a memo or argument that is not UTF-8 reaches gnosync as such. The
    transactions of a repaired answer that hold U+FFFD are marked ``repaired``, and
    stored as sanitized.
    """
    try:
        body.decode("utf-8")
        return None
    except UnicodeDecodeError:
        repaired = body.decode("utf-8", "replace").encode("utf-8")
    try:
        envelope = decoder.decode(repaired)
    except msgspec.DecodeError:
        return None
    transactions = getattr(envelope.data, "getTransactions", None) or []
    for tx in transactions:
        if "\ufffd" in tx.memo or any(b"\xef\xbf\xbd" in bytes(raw) for raw in (tx.messages, tx.response)):
            msgspec.structs.force_setattr(tx, "repaired", True)
    return envelope


def _detached(txs: list[Transaction]) -> list[Transaction]:
    """``txs`` with their raw JSON copied out of the response buffer.

    ``msgspec.Raw`` fields are views into the decoded body; without a copy every body
    stays in memory, whole, until the last transaction read from it is committed.
    """
    for tx in txs:
        msgspec.structs.force_setattr(tx, "messages", tx.messages.copy())
        msgspec.structs.force_setattr(tx, "response", tx.response.copy())
    return txs


def _status_message(url: str, status: int, body: bytes, content_type: str) -> str:
    """What an HTTP status from ``url`` means for the operator."""
    if status == 429 or status >= 500:
        return f"source {url} answered HTTP {status}"
    if status in (401, 403):
        return (
            f"source {url} refused gnosync (HTTP {status}); check the credentials in the"
            " source URL, or the access rules of the proxy in front of tx-indexer"
        )
    if status == 404:
        return (
            f"{url} is not a tx-indexer GraphQL path (HTTP 404); give the tx-indexer URL,"
            " e.g. http://host:8546/graphql/query"
        )
    if status == 422 and "json" in content_type:
        return (
            f"source {url} rejected gnosync's query ({_first_error(body)});"
            " is it a tx-indexer with a compatible schema?"
        )
    return (
        f"{url} answered HTTP {status}, not a tx-indexer GraphQL answer; give the"
        " tx-indexer URL, e.g. http://host:8546/graphql/query"
    )


def _first_error(body: bytes) -> str:
    try:
        errors = orjson.loads(body).get("errors") or []
        return errors[0].get("message", "unknown error") if errors else "no error message"
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
        return "unreadable error"


def _malformed(url: str, body: bytes, exc: Exception) -> SourceDecodeError:
    looks_like_json = body.lstrip()[:1] in (b"{", b"[")
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        snippet = body[:40].decode("utf-8", "replace").strip()
        if looks_like_json:
            return SourceDecodeError(
                f"source {url} sent a cut or garbled answer ({snippet!r}...)", looks_like_json=True
            )
        return SourceDecodeError(
            f"{url} answered with a body that is not JSON ({snippet!r});"
            " is it a tx-indexer GraphQL endpoint, e.g. http://host:8546/graphql/query?",
            looks_like_json=False,
        )
    return SourceDecodeError(f"source {url} sent a malformed answer: {exc}", looks_like_json=True)
