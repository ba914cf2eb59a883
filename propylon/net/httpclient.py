"""The one HTTP/1.1 client for the gateway's own calls: extAuth checks and JWKS fetches (in
workers), active health checks and the control-plane agent (in the supervisor), and the etcd
store's JSON gateway with its watch stream (in the control plane). Proxied traffic does not
use it (``proxy/pool.py``).

One ``HttpClient`` per origin (scheme, host, port) keeps a pool of keep-alive connections:
idle connections in a LIFO list, at most ``max_connections`` open, callers beyond that wait
FIFO for a released connection (or for the slot of a closed one). With ``keep_alive=False``
every request says ``connection: close`` and has a connection of its own.

Invariants:
- A connection is either idle or owned by exactly one request. A request that fails, is
  cancelled, or whose answer was not read to its end closes its connection: a partial answer
  must never be read by the next request.
- Interim ``1xx`` answers are read past, never taken as the final answer (``_wire``).
- Every request has a deadline: ``request``'s ``timeout`` covers waiting for a connection,
  connecting, sending and reading the whole answer; ``stream``'s covers everything up to the
  answer's head, then its body is read for as long as the caller iterates (etcd's watch).
- Bodies are bounded: ``max_body`` bytes per answer (per chunk for a stream).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from propylon.net import _wire
from propylon.net._wire import Headers
from propylon.net.tls import tls_context

__all__ = ["Headers", "HttpClient", "HttpError", "Response", "StreamedResponse", "request",
           "stream"]

_MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024


class HttpError(Exception):
    """The exchange failed (connect, TLS, protocol, timeout); no usable answer."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class StreamedResponse:
    """An answer whose body is read as it comes: ``async for piece in answer.body()``."""

    __slots__ = ("_pieces", "headers", "status")

    def __init__(self, status: int, headers: Headers, pieces: AsyncIterator[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._pieces = pieces

    def body(self) -> AsyncIterator[bytes]:
        return self._pieces


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


_ERRORS = (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError)


def _failure(exc: BaseException) -> HttpError:
    if isinstance(exc, TimeoutError):
        return HttpError("timed out")
    return HttpError(f"{type(exc).__name__}: {exc}")


class HttpClient:
    """Requests to one origin, over pooled connections.

    ``ssl_context`` defaults to the system's CAs for an https URL; ``server_hostname`` (the
    SNI and the name verified) defaults to the URL's host, ``host`` (the Host field) to the
    URL's authority. ``preamble`` is written first on every new connection (a PROXY protocol
    header for upstreams that expect one; plaintext connections only)."""

    def __init__(self, url: str, max_connections: int = 16,
                 ssl_context: ssl.SSLContext | None = None, *, keep_alive: bool = True,
                 server_hostname: str | None = None, host: str | None = None,
                 max_body: int = MAX_BODY, preamble: bytes = b"") -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.ssl_context = (ssl_context or tls_context()) if self.tls else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.server_hostname = (server_hostname or self.host) if self.tls else None
        self.authority = (host or parts.netloc).encode("idna")
        self.keep_alive = keep_alive
        self.max_body = max_body
        self.preamble = preamble
        self.max_connections = max_connections
        self.idle: list[_Conn] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[_Conn | None]] = collections.deque()
        # for callers that rate-limit their failure logs: when they last logged, and since
        self.last_report = float("-inf")
        self.unreported = 0

    async def request(
        self, method: bytes, target: bytes, headers: Headers, timeout: float,
        body: bytes = b"",
    ) -> Response:
        """Send one request and read its whole answer, all within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                conn = await self._acquire()
                try:
                    response, reusable = await self._exchange(conn, method, target, headers, body)
                except BaseException:
                    self._discard(conn)
                    raise
                self._release(conn, reusable)
                return response
        except (TimeoutError, *_ERRORS) as exc:
            raise _failure(exc) from None

    @contextlib.asynccontextmanager
    async def stream(
        self, method: bytes, target: bytes, headers: Headers, timeout: float,
        body: bytes = b"",
    ) -> AsyncIterator[StreamedResponse]:
        """A long-lived answer: its head within ``timeout``, then its body as it arrives,
        without a deadline (the caller stops by leaving the block or being cancelled)."""
        try:
            async with asyncio.timeout(timeout):
                conn = await self._acquire()
                try:
                    conn.writer.write(_wire.request_bytes(
                        method, target, self.authority, headers, body, not self.keep_alive))
                    status, answer_headers = await _wire.read_final_head(conn.reader)
                    framing, length, reusable = _wire.body_framing(method, status, answer_headers)
                except BaseException:
                    self._discard(conn)
                    raise
        except (TimeoutError, *_ERRORS) as exc:
            raise _failure(exc) from None
        pieces = _wire.iter_body(conn.reader, framing, length, self.max_body)
        finished = False

        async def read() -> AsyncIterator[bytes]:
            nonlocal finished
            try:
                async for piece in pieces:
                    yield piece
            except _ERRORS as exc:
                raise _failure(exc) from None
            finished = True

        try:
            yield StreamedResponse(status, answer_headers, read())
        finally:
            if finished:
                self._release(conn, reusable)
            else:
                self._discard(conn)

    async def check_connect(self, timeout: float) -> None:
        """Open a connection (with its TLS handshake) and close it: a TCP health check."""
        try:
            async with asyncio.timeout(timeout):
                conn = await self._acquire()
                self._discard(conn)
        except (TimeoutError, *_ERRORS) as exc:
            raise _failure(exc) from None

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    # -- the pool ------------------------------------------------------------------------------
    async def _acquire(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable():
                return conn
            self._discard(conn)
        if self.open >= self.max_connections:
            waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn_or_slot = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self._release(handed, True)
                    else:
                        self.open += 1  # pass the freed slot on
                        self._slot_freed()
                raise
            if conn_or_slot is not None:
                return conn_or_slot
        self.open += 1
        try:
            if self.preamble:  # in the clear, before TLS if any (a PROXY protocol header)
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=_MAX_HEAD)
                writer.write(self.preamble)
                if self.ssl_context is not None:
                    try:
                        await writer.start_tls(
                            self.ssl_context, server_hostname=self.server_hostname)
                    except BaseException:
                        writer.close()
                        raise
            else:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl_context, limit=_MAX_HEAD,
                    server_hostname=self.server_hostname)
        except BaseException:
            self._slot_freed()
            raise
        return _Conn(reader, writer)

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if not reusable or not self.keep_alive or not conn.usable():
            self._discard(conn)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self._slot_freed()

    def _slot_freed(self) -> None:
        self.open -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                # the waiter opens its own connection in the freed slot
                waiter.set_result(None)
                return

    # -- one exchange --------------------------------------------------------------------------
    async def _exchange(
        self, conn: _Conn, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> tuple[Response, bool]:
        conn.writer.write(_wire.request_bytes(
            method, target, self.authority, headers, body, not self.keep_alive))
        status, answer_headers = await _wire.read_final_head(conn.reader)
        framing, length, reusable = _wire.body_framing(method, status, answer_headers)
        if framing == _wire.LENGTH and length <= self.max_body:  # the common case, inline
            data = await conn.reader.readexactly(length)
        else:
            data = await _wire.read_body(conn.reader, framing, length, self.max_body)
        return Response(status, answer_headers, data), reusable


# -- one call to a URL, on a connection of its own (the agent, the etcd store) ------------------
def _client(url: str, ssl_context: ssl.SSLContext | None) -> tuple[HttpClient, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"unsupported URL {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    client = HttpClient(f"{parts.scheme}://{parts.netloc}", 1, ssl_context, keep_alive=False)
    return client, target.encode()


def _fields(headers: Mapping[str, str] | None) -> Headers:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]


async def request(
    method: str, url: str, *, body: bytes | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """One request to ``url`` on a connection of its own; the whole answer within
    ``timeout`` seconds. ``HttpError`` (naming the method and URL) when it fails."""
    client, target = _client(url, ssl_context)
    try:
        return await client.request(method.encode(), target, _fields(headers), timeout,
                                    body or b"")
    except HttpError as exc:
        raise HttpError(f"{method} {url}: {exc}") from None


@contextlib.asynccontextmanager
async def stream(
    method: str, url: str, *, body: bytes | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[StreamedResponse]:
    """``HttpClient.stream`` to ``url`` on a connection of its own."""
    client, target = _client(url, ssl_context)
    try:
        async with client.stream(method.encode(), target, _fields(headers), timeout,
                                 body or b"") as answer:
            yield answer
    except HttpError as exc:
        raise HttpError(f"{method} {url}: {exc}") from None
