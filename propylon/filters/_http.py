"""A small async HTTP/1.1 client for filters (JWKS fetches, external authorization calls).

One ``HttpClient`` per origin (scheme, host, port) keeps a pool of keep-alive connections:
idle connections in a LIFO list, at most ``max_connections`` open, callers beyond that wait
FIFO for a released connection. Invariants: a connection is either idle, or owned by exactly
one request; a request that fails or is cancelled mid-way closes its connection (a partial
response must never be read by the next request). Every request has a deadline
(``asyncio.timeout``). Bodies: ``Content-Length``, chunked, or read-to-close.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from urllib.parse import urlsplit

Headers = list[tuple[bytes, bytes]]
_MAX_HEAD = 64 * 1024
_MAX_BODY = 4 * 1024 * 1024
_MAX_INTERIM = 8  # 1xx answers read past before the final one; more is an abuse


class HttpError(Exception):
    """The exchange failed (connect, TLS, protocol, timeout); no usable answer."""


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context verifying the server against ``ca_file`` (PEM, one or more CAs) or,
    when None, the system's trust store; TLS 1.2 or later, ALPN ``http/1.1``. Blocking (reads
    files): call it when compiling a configuration. Raises ``OSError``/``ssl.SSLError`` for a
    missing or unreadable file."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def compile_tls(url: str, ca_file: str | None, field: str) -> ssl.SSLContext | None:
    """The context for a configured ``url`` (None unless https), built when the configuration
    is compiled; a CA file that cannot be loaded raises ``ValueError`` naming ``field`` (which
    refuses the configuration)."""
    if urlsplit(url).scheme != "https":
        return None
    try:
        return tls_context(ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ValueError(f'{field}: cannot load CA file "{ca_file}": {exc}') from None


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


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Pooled requests to one origin."""

    def __init__(self, url: str, max_connections: int = 16,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        # https without a context given: the system's CAs (loaded once, here)
        self.ssl_context = (ssl_context or tls_context()) if self.tls else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc.encode("idna")
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
        except TimeoutError:
            raise HttpError("timed out") from None
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from None

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
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl_context, limit=_MAX_HEAD,
                server_hostname=self.host if self.tls else None)
        except BaseException:
            self._slot_freed()
            raise
        return _Conn(reader, writer)

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if not reusable or not conn.usable():
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

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    # -- one exchange --------------------------------------------------------------------------
    async def _exchange(
        self, conn: _Conn, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> tuple[Response, bool]:
        lines = [method, b" ", target, b" HTTP/1.1\r\nhost: ", self.authority, b"\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        if body or method in (b"POST", b"PUT", b"PATCH"):
            lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        lines.append(b"\r\n")
        conn.writer.write(b"".join(lines) + body)
        status, resp_headers = await read_final_head(conn.reader)
        reusable = True
        length = chunked = None
        for name, value in resp_headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection" and b"close" in value.lower():
                reusable = False
        if method == b"HEAD" or status in (204, 304):
            data = b""
        elif chunked:
            data = await _read_chunked(conn.reader)
        elif length is not None:
            if length > _MAX_BODY:
                raise ValueError("response body too large")
            data = await conn.reader.readexactly(length)
        else:
            data = await conn.reader.read(_MAX_BODY)
            reusable = False
        return Response(status, resp_headers, data), reusable


async def read_final_head(reader: asyncio.StreamReader) -> tuple[int, Headers]:
    """The final (non-1xx) response head. Interim answers (``100 Continue``, ``103 Early
    Hints``) are read past: taking one for the answer would leave the real answer in the
    connection for the next request to read. A ``101`` was never asked for: an error."""
    for _ in range(_MAX_INTERIM):
        status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if status >= 200:
            return status, headers
        if status == 101:
            raise ValueError("101 Switching Protocols to a request that did not ask to upgrade")
    raise ValueError(f"more than {_MAX_INTERIM} interim (1xx) answers")


def parse_head(head: bytes) -> tuple[int, Headers]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (
            len(parts[1]) == 3 and parts[1].isdigit()):
        raise ValueError("not an HTTP/1.x response")
    headers: Headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(out)
        if len(out) + size > _MAX_BODY:
            raise ValueError("response body too large")
        out += await reader.readexactly(size)
        await reader.readexactly(2)
