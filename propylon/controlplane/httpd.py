"""The control plane's HTTP/1.1 server: asyncio streams, requests parsed by httptools.

Connections are kept alive between requests (a fleet's proxies long-poll and report without
connecting for each; one that waits ``_IDLE_TIMEOUT`` for its next request is closed), unless
the client asks for ``connection: close``, speaks HTTP/1.0, or sends its next request before
the answer to the last (pipelining: the first is answered, then the connection closed). A
body limit and a deadline for reading each request; the handler is a coroutine from
``Request`` to ``Reply``, so the API itself is tested without sockets. Long-polls are just
handlers that take their time.
"""

from __future__ import annotations

import asyncio
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
_IDLE_TIMEOUT = 75.0  # seconds a kept-alive connection may take to send its next request


@dataclass(slots=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str] = field(default_factory=dict)  # the last value of each name
    headers: dict[str, str] = field(default_factory=dict)  # names lower-case
    body: bytes = b""
    repeated: dict[str, list[str]] = field(default_factory=dict)  # every value of each name


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Reply]]


class _Parser:
    """httptools request-parser callbacks collecting one request: what follows it in the
    bytes read (a pipelined request) only sets ``pipelined``; a body over the limit (by its
    content-length, or as it arrives) only sets ``too_large``."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.limit = MAX_BODY
        self.done = self.pipelined = self.too_large = self.keep_alive = False

    def on_message_begin(self) -> None:
        self.pipelined = self.done

    def on_url(self, url: bytes) -> None:
        if not self.done:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.done:
            return
        if self.url.split(b"?", 1)[0].rstrip(b"/") == _BATCH_PATH:
            self.limit = MAX_BATCH_BODY
        length = self.headers.get("content-length", "")
        self.too_large = length.isdigit() and int(length) > self.limit

    def on_body(self, body: bytes) -> None:
        if self.done or self.too_large:
            return
        self.size += len(body)
        if self.size > self.limit:
            self.too_large, self.body = True, []
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.done:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()

    def request(self) -> Request:
        parts = urlsplit(self.url.decode("latin-1"))
        repeated = parse_qs(parts.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in repeated.items()}
        return Request(self.parser.get_method().decode(), unquote(parts.path), query,
                       self.headers, b"".join(self.body), repeated)


async def _read_request(reader: asyncio.StreamReader, idle: float
                        ) -> tuple[Request | Reply | None, bool]:
    """The next request (None when the client closed before sending one, a Reply when it
    cannot be served) and whether the connection may serve another after it. The first
    byte may take ``idle`` seconds, the rest ``_READ_TIMEOUT``."""
    parsed = _Parser()
    try:
        data = await asyncio.wait_for(reader.read(64 * 1024), idle)
        if not data:
            return None, False
        async with asyncio.timeout(_READ_TIMEOUT):
            while True:
                parsed.parser.feed_data(data)
                if parsed.too_large:
                    return Reply(413, b'{"error": "request body too large"}'), False
                if parsed.done:
                    return parsed.request(), parsed.keep_alive and not parsed.pipelined
                data = await reader.read(64 * 1024)
                if not data:
                    return Reply(400, b'{"error": "incomplete request"}'), False
    except (httptools.HttpParserError, UnicodeDecodeError):
        return Reply(400, b'{"error": "malformed request"}'), False


async def serve(handler: Handler, host: str, port: int,
                tls: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        idle = _READ_TIMEOUT
        try:
            while True:
                got, keep_alive = await _read_request(reader, idle)
                if got is None:
                    return
                try:
                    reply = got if isinstance(got, Reply) else await handler(got)
                except asyncio.CancelledError:  # shutting down: drop the connection quietly
                    return
                except Exception:
                    log.exception("handler failed")
                    reply = Reply(500, b'{"error": "internal error"}')
                head_only = isinstance(got, Request) and got.method == "HEAD"
                writer.write(reply_bytes(reply, head_only, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
                idle = _IDLE_TIMEOUT
        except (TimeoutError, OSError):
            return
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port, ssl=tls, backlog=1024)


def reply_bytes(reply: Reply, head_only: bool = False, keep_alive: bool = False) -> bytes:
    """The answer on the wire; unless ``keep_alive``, it closes the connection."""
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {reply.status} {reason}", *(f"{k}: {v}" for k, v in reply.headers)]
    if reply.status not in (204, 304):
        if reply.body:
            lines.append(f"content-type: {reply.content_type}")
        lines.append(f"content-length: {len(reply.body)}")
    lines += ["connection: keep-alive" if keep_alive else "connection: close", "", ""]
    return "\r\n".join(lines).encode() + (b"" if head_only else reply.body)
