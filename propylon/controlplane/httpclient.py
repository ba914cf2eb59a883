"""A small asyncio HTTP/1.1 client for the control plane's own traffic (etcd's JSON gateway,
proxies polling the control plane). One connection per request (``connection: close``), every
step under a deadline; bodies are parsed with httptools (content-length or chunked).

Not on the request path of proxied traffic, so simplicity wins over connection reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools

_READ = 64 * 1024
_MAX_INTERIM = 8


class HTTPError(Exception):
    """The request could not be made or its answer could not be read."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(slots=True)
class _Parsed:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    head_done: bool = False
    done: bool = False
    interim: int = 0  # 1xx answers read past


class _Callbacks:
    """httptools response-parser callbacks filling a ``_Parsed``."""

    def __init__(self, parsed: _Parsed) -> None:
        self.parsed = parsed
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parsed.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints) is not the answer: the final
            # one follows on the same connection. A 101 was never asked for.
            if status == 101:
                raise httptools.HttpParserError("101 to a request that did not ask to upgrade")
            self.parsed.interim += 1
            if self.parsed.interim > _MAX_INTERIM:
                raise httptools.HttpParserError("too many interim (1xx) answers")
            self.parsed.headers.clear()
            return
        self.parsed.status = status
        self.parsed.head_done = True

    def on_body(self, body: bytes) -> None:
        self.parsed.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.parsed.head_done:
            self.parsed.done = True


def _request_bytes(method: str, url: str, body: bytes | None,
                   headers: Mapping[str, str]) -> tuple[str, int, bool, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPError(f"unsupported URL {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"content-length: {len(body or b'')}")
    return parts.hostname, port, tls, ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _open(host: str, port: int, tls: bool, ssl_context: ssl.SSLContext | None
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = (ssl_context or ssl.create_default_context()) if tls else None
    return await asyncio.open_connection(host, port, ssl=context, limit=_READ)


async def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """Send one request and read the whole answer, all within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(
            _exchange(method, url, body, headers or {}, ssl_context), timeout
        )
    except TimeoutError as exc:
        raise HTTPError(f"{method} {url}: no answer within {timeout:g}s") from exc
    except (OSError, httptools.HttpParserError, ssl.SSLError) as exc:
        raise HTTPError(f"{method} {url}: {exc}") from exc


async def _exchange(method: str, url: str, body: bytes | None, headers: Mapping[str, str],
                    ssl_context: ssl.SSLContext | None) -> Response:
    host, port, tls, raw = _request_bytes(method, url, body, headers)
    reader, writer = await _open(host, port, tls, ssl_context)
    parsed = _Parsed()
    callbacks = _Callbacks(parsed)
    try:
        writer.write(raw)
        await writer.drain()
        while not parsed.done:
            data = await reader.read(_READ)
            if not data:
                callbacks.parser.feed_data(b"")  # lets a close-delimited body complete
                if not parsed.done:
                    raise HTTPError(f"{method} {url}: connection closed mid-answer")
                break
            callbacks.parser.feed_data(data)
    finally:
        writer.close()
    return Response(parsed.status, parsed.headers, b"".join(parsed.chunks))


@contextlib.asynccontextmanager
async def stream(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
    """A long-lived answer (etcd's watch): yields the status and an iterator of body pieces,
    which ends when the server closes. Reads have no deadline; the caller cancels."""
    host, port, tls, raw = _request_bytes(method, url, body, headers or {})
    try:
        reader, writer = await asyncio.wait_for(_open(host, port, tls, ssl_context),
                                                connect_timeout)
    except (TimeoutError, OSError) as exc:
        raise HTTPError(f"{method} {url}: {exc or 'connect timeout'}") from exc
    parsed = _Parsed()
    callbacks = _Callbacks(parsed)

    async def pieces() -> AsyncIterator[bytes]:
        while not parsed.done:
            if parsed.chunks:
                yield b"".join(parsed.chunks)
                parsed.chunks.clear()
            data = await reader.read(_READ)
            if not data:
                return
            callbacks.parser.feed_data(data)
        if parsed.chunks:
            yield b"".join(parsed.chunks)

    try:
        writer.write(raw)
        await writer.drain()
        while not parsed.head_done:
            data = await asyncio.wait_for(reader.read(_READ), connect_timeout)
            if not data:
                raise HTTPError(f"{method} {url}: connection closed before the answer")
            callbacks.parser.feed_data(data)
        yield parsed.status, pieces()
    except (OSError, httptools.HttpParserError, TimeoutError) as exc:
        raise HTTPError(f"{method} {url}: {exc}") from exc
    finally:
        writer.close()
