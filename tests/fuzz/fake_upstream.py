"""The upstream side of the HTTP/1.1 fuzz harness: endpoints in memory.

``FakePool`` stands in for an endpoint's connection pool and hands out real
``ClientConnection`` objects over an ``UpstreamTransport``, which parses what the gateway
sends with a strict HTTP/1.1 request parser (a malformed request sent upstream, several Host
fields or ambiguous framing are problems) and answers each complete request the way a word in
its target asks (``answer_for``). Connecting to ``DEAD`` fails at once, to ``SLOW`` takes
``SLOW_CONNECT`` seconds of virtual time, to ``BLACKHOLE`` times out after as long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httptools

from propylon.proxy.h1.client import ClientConnection
from propylon.proxy.pool import EndpointPool, PoolClient

if TYPE_CHECKING:
    from tests.fuzz.http_harness import FuzzGateway

UPSTREAM = ("127.0.0.1", 9001)  # answers (see answer_for)
DEAD = ("127.0.0.1", 9002)  # refuses every connection
SLOW = ("127.0.0.1", 9003)  # answers like UPSTREAM, but connecting takes SLOW_CONNECT
BLACKHOLE = ("127.0.0.1", 9004)  # connecting times out after SLOW_CONNECT
SLOW_CONNECT = 3.0


@dataclass
class UpstreamRequest:
    """One request as a strict HTTP/1.1 server parsed it from the gateway's bytes."""

    method: bytes = b""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    mirrored: bool = False  # a copy the gateway mirrors (x-propylon-mirror)

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


def answer_for(request: UpstreamRequest) -> tuple[str, bytes]:
    """What the fake upstream does with a complete request: (kind, bytes to send). The kind
    is chosen by a word in the target, so inputs (and the dictionary) can steer it."""
    target = request.target
    for word in (b"101", b"silent", b"reset", b"close", b"chunked", b"503", b"204", b"100"):
        if word in target:
            kind = word.decode()
            break
    else:
        kind = "ok"
    head_only = request.method == b"HEAD"
    body = b"" if head_only else b"ok\n"
    answers = {
        "101": b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        "silent": b"",
        "reset": b"",
        "close": b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body,
        "chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + (b"" if head_only else b"3\r\nok\n\r\n0\r\nx-trailer: t\r\n\r\n"),
        "503": b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\n"
        + (b"" if head_only else b"busy\n"),
        "204": b"HTTP/1.1 204 No Content\r\nx-up: 1\r\n\r\n",
        "100": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n" + body,
        "ok": b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-up: 1\r\n\r\n" + body,
    }
    if kind == "101" and request.header(b"upgrade") is None:
        kind = "ok"
    return kind, answers[kind]


class UpstreamTransport(asyncio.Transport):
    """The upstream's end of one connection: parses, records and queues answers."""

    def __init__(self, harness: FuzzGateway, conn: ClientConnection) -> None:
        super().__init__()
        self.harness = harness
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self.request: UpstreamRequest | None = None
        self.closed = False
        self.tunnel = False
        self.broken = False  # sent something that did not parse: nothing more is read

    # -- what the gateway does to the connection
    def write(self, data: Any) -> None:
        if self.closed or self.broken or self.tunnel:
            return
        data = bytes(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            self.broken = True
            self.harness.problem(f"the gateway sent an invalid request upstream ({exc}): "
                                 f"{data[:300]!r}")

    def writelines(self, lines: Iterable[Any]) -> None:
        self.write(b"".join(bytes(line) for line in lines))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.harness.loop.call_soon(self.conn.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """The gateway passes on a client's half-close: the upstream closes in turn."""
        self.harness.loop.call_soon(self.hang_up)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return UPSTREAM if name == "peername" else default

    # -- the upstream side closes it
    def hang_up(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.connection_lost(None)

    # -- request parser callbacks
    def on_message_begin(self) -> None:
        self.request = UpstreamRequest()

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.request.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        request.method = self.parser.get_method()
        request.mirrored = request.header(b"x-propylon-mirror") is not None
        names = [n for n, _ in request.headers]
        if names.count(b"host") != 1:
            self.harness.problem(f"upstream request with {names.count(b'host')} Host fields")
        if b"content-length" in names and b"transfer-encoding" in names:
            self.harness.problem("upstream request with Content-Length and Transfer-Encoding")
        if names.count(b"content-length") > 1:
            self.harness.problem("upstream request with several Content-Length fields")

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        request.body += body
        if not request.mirrored:
            self.harness.body_upstream += len(body)

    def on_message_complete(self) -> None:
        request = self.request
        if request is None or request.complete:
            return
        request.complete = True
        self.harness.received(self, request)

    def _upgrade(self, rest: bytes) -> None:
        self.on_message_complete()
        request = self.request
        if request is not None and answer_for(request)[0] == "101":
            self.tunnel = True  # what follows is the client's, relayed as is
            return
        self.parser = httptools.HttpRequestParser(self)  # refused: HTTP again
        if rest:
            self.write(rest)


class FakePool(EndpointPool):
    """An endpoint pool whose connections are in memory; ``DEAD`` refuses every connect,
    ``SLOW`` takes ``SLOW_CONNECT`` seconds to connect, ``BLACKHOLE`` times out then."""

    __slots__ = ("harness",)

    def __init__(self, harness: FuzzGateway, address: str, port: int) -> None:
        super().__init__(harness.loop, address, port)
        self.harness = harness

    def _connect(self, client: PoolClient) -> None:
        self.total += 1
        delay = SLOW_CONNECT if (self.address, self.port) in (SLOW, BLACKHOLE) else 0.0
        self.loop.call_later(delay, self._connected_now, client)

    def _connected_now(self, client: PoolClient) -> None:
        """The connect ends: as EndpointPool._connected does with a real one."""
        told = not client.aborted
        if told and self.harness.ended_client(client):
            self.harness.problem("a connection handed to a request that already ended")
        if (self.address, self.port) in (DEAD, BLACKHOLE):
            self.total -= 1
            if told:
                timed_out = (self.address, self.port) == BLACKHOLE
                reason = "connect timeout" if timed_out else "connect failed: [Errno 111]"
                client.on_upstream_failed(reason, timed_out)
            self._serve_waiters()
            return
        conn = self._new_connection()
        if told:
            client.on_upstream_connected(conn)
        else:
            self.release(conn)

    def _new_connection(self) -> ClientConnection:
        conn = ClientConnection(self)
        transport = UpstreamTransport(self.harness, conn)
        self.harness.upstreams.append(transport)
        conn.connection_made(transport)
        return conn

    def reset(self) -> None:
        self.idle.clear()
        self.waiters.clear()
        self.total = 0
