"""The control plane's HTTP/1.1 server: asyncio streams, requests parsed by httptools.

One request per connection (answers carry ``connection: close``), a body limit and a deadline
for reading each request; the handler is a coroutine from ``Request`` to ``Reply``, so the API
itself is tested without sockets. Long-polls are just handlers that take their time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

log = logging.getLogger("propylon.controlplane")

MAX_BODY = 4 * 1024 * 1024
MAX_BATCH_BODY = 32 * 1024 * 1024  # POST /v1/apply: a whole configuration folder
_BATCH_PATH = b"/v1/apply"
_READ_TIMEOUT = 30.0


@dataclass(slots=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # names lower-case
    body: bytes = b""


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Reply]]


class _TooLarge(Exception):
    pass


class _Parser:
    """httptools request-parser callbacks collecting one request."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.limit = MAX_BODY
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.url.split(b"?", 1)[0].rstrip(b"/") == _BATCH_PATH:
            self.limit = MAX_BATCH_BODY

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            raise _TooLarge
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True

    def request(self) -> Request:
        parts = urlsplit(self.url.decode("latin-1"))
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return Request(self.parser.get_method().decode(), unquote(parts.path), query,
                       self.headers, b"".join(self.body))


async def _read_request(reader: asyncio.StreamReader) -> Request | Reply:
    parsed = _Parser()
    try:
        while not parsed.done:
            data = await reader.read(64 * 1024)
            if not data:
                return Reply(400, b'{"error": "incomplete request"}')
            parsed.parser.feed_data(data)
    except _TooLarge:
        return Reply(413, b'{"error": "request body too large"}')
    except (httptools.HttpParserError, UnicodeDecodeError):
        return Reply(400, b'{"error": "malformed request"}')
    return parsed.request()


async def serve(handler: Handler, host: str, port: int,
                tls: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            got = await asyncio.wait_for(_read_request(reader), _READ_TIMEOUT)
        except (TimeoutError, OSError):
            writer.close()
            return
        try:
            reply = got if isinstance(got, Reply) else await handler(got)
        except asyncio.CancelledError:  # shutting down: drop the connection quietly
            writer.close()
            return
        except Exception:
            log.exception("handler failed")
            reply = Reply(500, b'{"error": "internal error"}')
        head_only = isinstance(got, Request) and got.method == "HEAD"
        with contextlib.suppress(OSError):
            writer.write(reply_bytes(reply, head_only))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(connection, host, port, ssl=tls, backlog=1024)


def reply_bytes(reply: Reply, head_only: bool = False) -> bytes:
    """The answer on the wire; it closes the connection (one request per connection)."""
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {reply.status} {reason}", *(f"{k}: {v}" for k, v in reply.headers)]
    if reply.status not in (204, 304):
        if reply.body:
            lines.append(f"content-type: {reply.content_type}")
        lines.append(f"content-length: {len(reply.body)}")
    lines += ["connection: close", "", ""]
    return "\r\n".join(lines).encode() + (b"" if head_only else reply.body)
