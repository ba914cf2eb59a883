"""The gateway's own HTTP client (``propylon.net``): framing decisions and body readers on
bytes fed to a ``StreamReader`` (no sockets), then the pool's reuse rules against an
in-process server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from propylon.net import _wire, httpclient
from propylon.net.httpclient import HttpClient, HttpError


def run(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run what ``make`` returns in a new event loop (a ``StreamReader`` needs one)."""
    async def main() -> Any:
        return await make()

    return asyncio.run(main())


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize("method, status, headers, expected", [
    pytest.param(b"GET", 200, [(b"content-length", b"5")], (_wire.LENGTH, 5, True), id="length"),
    pytest.param(b"GET", 200, [(b"content-length", b"5"), (b"content-length", b"5")],
                 (_wire.LENGTH, 5, True), id="same-length-twice"),
    pytest.param(b"GET", 200, [(b"transfer-encoding", b"gzip, Chunked")],
                 (_wire.CHUNKED, 0, True), id="chunked-last"),
    pytest.param(b"GET", 200, [(b"transfer-encoding", b"chunked"), (b"content-length", b"3")],
                 (_wire.CHUNKED, 0, False), id="chunked-and-length-not-reused"),
    pytest.param(b"GET", 200, [(b"transfer-encoding", b"gzip")], (_wire.UNTIL_CLOSE, 0, False),
                 id="coding-not-chunked"),
    pytest.param(b"GET", 200, [], (_wire.UNTIL_CLOSE, 0, False), id="no-framing"),
    pytest.param(b"HEAD", 200, [(b"content-length", b"5")], (_wire.NO_BODY, 0, True), id="head"),
    pytest.param(b"GET", 204, [], (_wire.NO_BODY, 0, True), id="204"),
    pytest.param(b"GET", 304, [(b"connection", b"close")], (_wire.NO_BODY, 0, False),
                 id="304-close"),
    pytest.param(b"GET", 200, [(b"content-length", b"0"), (b"connection", b"Close")],
                 (_wire.LENGTH, 0, False), id="connection-close"),
])
def test_body_framing(method: bytes, status: int, headers: _wire.Headers,
                      expected: tuple[int, int, bool]) -> None:
    assert _wire.body_framing(method, status, headers) == expected


@pytest.mark.parametrize("headers", [
    pytest.param([(b"content-length", b"5"), (b"content-length", b"6")], id="conflicting"),
    pytest.param([(b"content-length", b"+5")], id="signed"),
    pytest.param([(b"content-length", b"5_0")], id="underscore"),
])
def test_invalid_content_length_is_an_error(headers: _wire.Headers) -> None:
    with pytest.raises(ValueError):
        _wire.body_framing(b"GET", 200, headers)


def test_interim_heads_are_read_past() -> None:
    wire = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n"
            b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert run(lambda: _wire.read_final_head(reader_of(wire))) == (200, [(b"content-length", b"2")])


@pytest.mark.parametrize(("head", "reusable"), [
    pytest.param(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", False, id="1.0"),
    pytest.param(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 2\r\n\r\n",
                 True, id="1.0-keep-alive"),
    pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", True, id="1.1"),
])
def test_an_http_1_0_answer_closes_its_connection_unless_it_says_keep_alive(
        head: bytes, reusable: bool) -> None:
    status, headers = run(lambda: _wire.read_final_head(reader_of(head + b"ok")))
    assert _wire.body_framing(b"GET", status, headers) == (_wire.LENGTH, 2, reusable)


@pytest.mark.parametrize("wire, framing, length, body", [
    pytest.param(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n", _wire.CHUNKED,
                 0, b"hello world", id="chunked-with-trailers"),
    pytest.param(b"hello", _wire.LENGTH, 5, b"hello", id="length"),
    pytest.param(b"to the close", _wire.UNTIL_CLOSE, 0, b"to the close", id="until-close"),
])
def test_read_body(wire: bytes, framing: int, length: int, body: bytes) -> None:
    assert run(lambda: _wire.read_body(reader_of(wire), framing, length, 100)) == body


@pytest.mark.parametrize("wire, framing, length", [
    pytest.param(b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n", _wire.CHUNKED, 0, id="chunk"),
    pytest.param(b"x" * 101, _wire.LENGTH, 101, id="length"),
    pytest.param(b"x" * 101, _wire.UNTIL_CLOSE, 0, id="until-close"),
    pytest.param(b"0x10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", _wire.CHUNKED, 0, id="chunk-size-0x"),
])
def test_bodies_are_bounded_and_strict(wire: bytes, framing: int, length: int) -> None:
    with pytest.raises(ValueError):
        run(lambda: _wire.read_body(reader_of(wire), framing, length, 100))


def test_a_stream_yields_each_chunk() -> None:
    async def pieces() -> list[bytes]:
        reader = reader_of(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")
        return [p async for p in _wire.iter_body(reader, _wire.CHUNKED, 0, 100)]

    assert run(pieces) == [b"one", b"two"]


# -- the pool, against a server in this process -----------------------------------------------
Handler = Callable[[bytes], bytes]


class Server:
    """Answers each request head with ``handler(head)``; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.heads.append(head)
                writer.write(self.handler(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes) -> Handler:
    return lambda head: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def test_keep_alive_reuses_one_connection() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        async with Server(ok(b"yes")) as server:
            client = HttpClient(server.url, 2)
            bodies = [(await client.request(b"GET", b"/", [], 5.0)).body for _ in range(3)]
            client.close()
            return bodies, server.connections

    assert run(scenario) == ([b"yes"] * 3, 1)


def test_a_stream_left_early_closes_its_connection() -> None:
    """An answer not read to its end is never handed to the next request."""
    def handler(head: bytes) -> bytes:
        if head.startswith(b"GET /stream"):
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        return ok(b"next")(head)

    async def scenario() -> tuple[bytes, bytes, int]:
        async with Server(handler) as server:
            client = HttpClient(server.url, 1)
            async with client.stream(b"GET", b"/stream", [], 5.0) as answer:
                first = await anext(aiter(answer.body()))
            after = await client.request(b"GET", b"/next", [], 5.0)
            client.close()
            return first, after.body, server.connections

    assert run(scenario) == (b"first", b"next", 2)


def test_without_keep_alive_each_request_has_its_own_connection() -> None:
    async def scenario() -> tuple[int, list[bytes]]:
        async with Server(ok(b"x")) as server:
            client = HttpClient(server.url, 4, keep_alive=False, host="probe.example")
            for _ in range(2):
                await client.request(b"GET", b"/health", [], 5.0)
            await asyncio.sleep(0)
            return server.connections, server.heads

    connections, heads = run(scenario)
    assert connections == 2
    assert all(b"connection: close\r\n" in h and b"host: probe.example\r\n" in h for h in heads)


def test_every_request_has_a_deadline() -> None:
    async def scenario() -> str:
        async with Server(lambda head: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort") \
                as server:
            try:
                await httpclient.request("GET", server.url + "/", timeout=0.2)
            except HttpError as exc:
                return str(exc)
            return "answered"

    assert run(scenario).endswith("/: timed out")


def test_an_oversized_answer_is_an_error_and_the_connection_is_dropped() -> None:
    async def scenario() -> tuple[str, int]:
        async with Server(ok(b"x" * 200)) as server:
            client = HttpClient(server.url, 1, max_body=100)
            with pytest.raises(HttpError) as info:
                await client.request(b"GET", b"/", [], 5.0)
            return str(info.value), client.open

    message, still_open = run(scenario)
    assert "too large" in message and still_open == 0
