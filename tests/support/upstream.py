"""A scripted HTTP/1.1 upstream on its own event loop in a background thread.

Each request is parsed by hand (``tests.support.h1``) and recorded - head bytes exactly as
received, body (first MiB kept, size and SHA-256 of all of it), trailers, connection id - and
then answered with the ``Reply`` the current ``handler`` returns: any status, headers, body,
framing (Content-Length, chunked with trailers, close-delimited), a delay, interim 1xx
answers, a truncated body, or raw garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.h1 import MAX_HEAD, Head, parse_chunk_size, parse_head, request_framing
from tests.support.net import accepts_settled, poll_until

_KEEP_BODY = 1024 * 1024
_PIECE = 64 * 1024


@dataclass
class RecordedRequest:
    conn_id: int
    method: str
    target: str
    version: str
    head: Head
    body: bytes = b""  # the first MiB, de-chunked
    body_size: int = 0
    body_sha256: str = ""
    framing: str = "none"  # how the gateway framed it: none, length or chunked
    raw_body: bytes = b""  # the first MiB as received (chunk framing included)
    trailers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        return self.head.get(name)


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_size: int | None = None  # a generated body of this size instead of ``body``
    framing: str = "length"  # length, chunked, close (delimited by closing), none
    trailers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0  # seconds before the response head
    interim: list[int] = field(default_factory=list)  # 1xx codes sent first
    interim_delay: float = 0.0  # seconds between the 1xx answers and the final one
    truncate: int | None = None  # send only this many body bytes, then close
    raw: bytes | None = None  # sent verbatim instead of a response (connection then closed)
    close: bool = False  # close the connection after this response
    hangup: bool = False  # close after this response without announcing it (a stale pool)
    reason: str = "OK"


def pattern_body(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes, so a reordered or lost piece is caught."""
    block = hashlib.sha256(b"propylon").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def echo_reply(request: RecordedRequest, name: str = "up") -> Reply:
    """200 with a JSON description of the request and ``x-upstream: <name>``."""
    doc = {
        "method": request.method,
        "target": request.target,
        "headers": request.head.headers,
        "body_size": request.body_size,
        "conn": request.conn_id,
    }
    headers = [("content-type", "application/json"), ("x-upstream", name)]
    return Reply(headers=headers, body=json.dumps(doc).encode())


Handler = Callable[[RecordedRequest], Reply]


class ScriptedUpstream:
    def __init__(self, name: str = "up") -> None:
        self.name = name
        self.handler: Handler = self.echo
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._conn_ids = itertools.count(1)
        self.connections = 0  # accepted so far
        self.peer_ports: list[int] = []
        self.sent_bytes = 0  # body bytes written by the response being sent
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"upstream-{name}", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> ScriptedUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        future.result(timeout=10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    async def _stop(self) -> None:
        await accepts_settled()
        if self._server is not None:
            self._server.close()
        # a connection accepted just before: its task is scheduled but not started, so not in
        # ``_tasks``; once started it is, and is cancelled (never run, it left its transport
        # open, collected in some later test: "unclosed transport", an error there)
        for _ in range(5):  # an accept's steps run in a few turns of the loop
            await asyncio.sleep(0)
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5)

    def reset(self, handler: Handler | None = None) -> None:
        """Forget recorded requests and use ``handler`` (default: echo) from now on."""
        with self._lock:
            self._requests.clear()
            self.peer_ports.clear()
            self.connections = 0
        self.sent_bytes = 0
        self.handler = handler or self.echo

    def echo(self, request: RecordedRequest) -> Reply:
        return echo_reply(request, self.name)

    def reply(self, reply: Reply) -> None:
        """Answer every request with ``reply``."""
        self.handler = lambda _request: reply

    # -- what was received ---------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        poll_until(lambda: len(self._requests) >= count, timeout,
                   message=f"{self.name} received {count} request(s)")
        return self.requests

    @property
    def last(self) -> RecordedRequest:
        return self.wait_for_requests(1)[-1]

    # -- serving -------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn_id = next(self._conn_ids)
        peer = writer.get_extra_info("peername")
        with self._lock:
            self.connections += 1
            self.peer_ports.append(peer[1] if peer else 0)
        try:
            for _ in range(1_000_000):
                request = await self._read_request(reader, conn_id)
                if request is None:
                    break
                with self._lock:
                    self._requests.append(request)
                reply = self.handler(request)
                keep = await self._send(writer, reply, request.method)
                if not keep or (request.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, conn_id: int
    ) -> RecordedRequest | None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        head = parse_head(raw)
        method, target, version = head.start_line.split(" ", 2)
        request = RecordedRequest(conn_id, method, target, version, head)
        request.framing = request_framing(head)
        digest = hashlib.sha256()
        body, raw_body = bytearray(), bytearray()

        def take(data: bytes) -> None:
            digest.update(data)
            request.body_size += len(data)
            if len(body) < _KEEP_BODY:
                body.extend(data[: _KEEP_BODY - len(body)])

        def keep_raw(data: bytes) -> None:
            if len(raw_body) < _KEEP_BODY:
                raw_body.extend(data[: _KEEP_BODY - len(raw_body)])

        if request.framing == "length":
            remaining = int(head.get("content-length") or 0)
            while remaining:
                data = await reader.read(min(remaining, _PIECE))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                remaining -= len(data)
                take(data)
                keep_raw(data)
        elif request.framing == "chunked":
            for _ in range(10_000_000):
                line = await reader.readuntil(b"\r\n")
                keep_raw(line)
                size = parse_chunk_size(line[:-2])
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                keep_raw(data)
                take(data[:-2])
            for _ in range(1000):
                line = await reader.readuntil(b"\r\n")
                keep_raw(line)
                if line == b"\r\n":
                    break
                name, _, value = line[:-2].decode("latin-1").partition(":")
                request.trailers.append((name.strip().lower(), value.strip()))
        request.body = bytes(body)
        request.raw_body = bytes(raw_body)
        request.body_sha256 = digest.hexdigest()
        return request

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply, method: str) -> bool:
        """Write the reply; False when the connection must close afterwards."""
        if reply.delay:
            await asyncio.sleep(reply.delay)
        for code in reply.interim:
            writer.write(b"HTTP/1.1 %d Continue\r\n\r\n" % code)
        if reply.interim and reply.interim_delay:
            await writer.drain()
            await asyncio.sleep(reply.interim_delay)  # the final answer comes in another read
        if reply.raw is not None:
            writer.write(reply.raw)
            await writer.drain()
            return False
        size = reply.body_size if reply.body_size is not None else len(reply.body)
        body = pattern_body(size) if reply.body_size is not None else reply.body
        head = [f"HTTP/1.1 {reply.status} {reply.reason}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in reply.headers]
        if reply.framing == "length":
            head.append(f"content-length: {size}\r\n")
        elif reply.framing == "chunked":
            head.append("transfer-encoding: chunked\r\n")
        closing = reply.close or reply.framing == "close" or reply.truncate is not None
        if closing and reply.framing != "close":
            head.append("connection: close\r\n")
        head.append("\r\n")
        writer.write("".join(head).encode("latin-1"))
        no_body = method == "HEAD" or reply.status in (204, 304) or reply.framing == "none"
        if not no_body:
            limit = size if reply.truncate is None else min(size, reply.truncate)
            await self._write_body(writer, body[:limit], reply.framing == "chunked")
            if reply.framing == "chunked" and reply.truncate is None:
                trailers = "".join(f"{n}: {v}\r\n" for n, v in reply.trailers)
                writer.write(b"0\r\n" + trailers.encode("latin-1") + b"\r\n")
        await writer.drain()
        return not (closing or reply.hangup)

    async def _write_body(self, writer: asyncio.StreamWriter, body: bytes, chunks: bool) -> None:
        self.sent_bytes = 0
        view = memoryview(body)
        for start in range(0, len(body), _PIECE):
            piece = view[start:start + _PIECE]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunks else bytes(piece))
            await writer.drain()
            self.sent_bytes += len(piece)
