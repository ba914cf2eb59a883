"""The control plane's HTTP server (``controlplane/httpd.py``) on a real socket: connections
kept alive between requests, closed when the client asks, speaks HTTP/1.0, pipelines, stays
idle too long or sends what cannot be served."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from propylon.controlplane import httpd
from propylon.controlplane.httpd import Reply, Request


async def _echo_path(request: Request) -> Reply:
    return Reply(200, request.path.encode() + b"|" + request.body, "text/plain")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(httpd, "_IDLE_TIMEOUT", 0.5)
    started = threading.Event()
    running: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        srv = await httpd.serve(_echo_path, "127.0.0.1", 0)
        stop = asyncio.Event()
        running.append((srv.sockets[0].getsockname()[1], asyncio.get_running_loop(), stop))
        started.set()
        await stop.wait()
        srv.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(5)
    port, loop, stop = running[0]
    yield port
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


def _answer(sock: socket.socket) -> bytes:
    """One answer (head and content-length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, "more than one answer read"
    return head + b"\r\n\r\n" + body


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(3)
    return sock.recv(65536) == b""


def test_a_connection_serves_requests_one_after_another(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as sock:
        for path in ("/one", "/two", "/three"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nhost: cp\r\n\r\n".encode())
            answer = _answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b"connection: keep-alive\r\n" in answer
            assert answer.endswith(path.encode() + b"|")
        sock.sendall(b"POST /last HTTP/1.1\r\nhost: cp\r\ncontent-length: 4\r\n"
                     b"connection: close\r\n\r\nbody")
        answer = _answer(sock)
        assert b"connection: close\r\n" in answer and answer.endswith(b"/last|body")
        assert _closed(sock)


def test_http_1_0_is_answered_and_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        assert b"connection: close\r\n" in _answer(sock)
        assert _closed(sock)


def test_pipelined_requests_get_the_first_answered_then_the_connection_closed(
        server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nhost: cp\r\n\r\nGET /second HTTP/1.1\r\n"
                     b"host: cp\r\n\r\n")
        answer = _answer(sock)
        assert answer.endswith(b"/first|") and b"connection: close\r\n" in answer
        assert _closed(sock)


def test_a_kept_connection_left_idle_is_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nhost: cp\r\n\r\n")
        assert b"keep-alive" in _answer(sock)
        assert _closed(sock)  # after _IDLE_TIMEOUT (0.5 s here) without a request


def test_a_body_over_the_limit_is_refused_and_the_connection_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as sock:
        sock.sendall(b"PUT /v1/x HTTP/1.1\r\nhost: cp\r\ncontent-length: %d\r\n\r\n"
                     % (httpd.MAX_BODY + 1) + b"x" * 65536)
        answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close\r\n" in answer
        assert _closed(sock)


def test_a_malformed_request_is_refused_and_the_connection_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nhost: cp\r\n\r\n")
        assert b"keep-alive" in _answer(sock)
        sock.sendall(b"GET /x HTTP/1.1\r\nbad header\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 400 ")
        assert _closed(sock)
