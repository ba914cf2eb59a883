"""A scripted HTTP/2 upstream (h2c with prior knowledge, or h2 over TLS with ALPN) on its own
event loop in a background thread, built on the ``h2`` library.

Each request is recorded (pseudo-header and regular fields, body size and SHA-256, trailers,
connection and stream ids) once its stream ends, then answered with the ``H2Reply`` the
current ``handler`` returns: status, fields, a body (sent as the client's flow-control
windows allow), trailers, a delay, or RST_STREAM with an error code. ``goaway_after`` makes a
connection announce GOAWAY after that many requests: the streams it took are answered, later
ones are ignored (never processed), then the connection closes. ``H2Reply.after_reset``
writes the answer even when the client has reset the stream meanwhile, as a server whose
answer was on the wire when the RST_STREAM arrived does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame

from tests.support.net import accepts_settled, poll_until
from tests.support.upstream import pattern_body


@dataclass
class H2Request:
    conn_id: int
    stream_id: int
    headers: list[tuple[str, str]]
    body_size: int = 0
    body_sha256: str = ""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)

    @property
    def method(self) -> str:
        return self.header(":method") or ""

    @property
    def path(self) -> str:
        return self.header(":path") or ""


@dataclass
class H2Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_size: int | None = None  # a generated body (``pattern_body``) of this size instead
    trailers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0  # seconds before the response head
    trailers_delay: float = 0.0  # seconds between the body and the trailers
    reset: int | None = None  # answer with RST_STREAM and this error code instead
    after_reset: bool = False  # answer even a stream the client reset (the frames crossed)


def echo_h2(request: H2Request) -> H2Reply:
    """200 with a JSON description of the request."""
    doc = {
        "method": request.method, "path": request.path, "headers": request.headers,
        "body_size": request.body_size, "body_sha256": request.body_sha256,
        "conn": request.conn_id, "stream": request.stream_id, "trailers": request.trailers,
    }
    return H2Reply(headers=[("content-type", "application/json")], body=json.dumps(doc).encode())


Handler = Callable[[H2Request], H2Reply]


class _Stream:
    __slots__ = ("body", "headers", "sha", "size", "trailers")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        self.sha = hashlib.sha256()
        self.size = 0
        self.trailers: list[tuple[str, str]] = []


def _text(fields: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in fields]


class _ServerConnection(asyncio.Protocol):
    def __init__(self, upstream: H2Upstream, conn_id: int) -> None:
        self.upstream = upstream
        self.conn_id = conn_id
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.windows: dict[int, asyncio.Event] = {}
        self.requests = 0
        self.last_taken = 0  # the last stream id answered after a GOAWAY
        self.going_away = False
        self.answering: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.upstream.max_concurrent_streams})
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self.on_event(event)
        self.flush()

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.RequestReceived):
            self.streams[event.stream_id] = _Stream(_text(event.headers))
        elif isinstance(event, ev.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.sha.update(event.data)
                stream.size += len(event.data)
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, ev.TrailersReceived):
            self.streams[event.stream_id].trailers = _text(event.headers)
        elif isinstance(event, ev.StreamEnded):
            self.request_complete(event.stream_id)
        elif isinstance(event, ev.StreamReset):
            self.upstream.resets.append((self.conn_id, event.stream_id, int(event.error_code)))
            self.streams.pop(event.stream_id, None)
            self.wake(event.stream_id)
        elif isinstance(event, ev.WindowUpdated):
            if event.stream_id:
                self.wake(event.stream_id)
            else:
                for stream_id in list(self.windows):
                    self.wake(stream_id)

    def wake(self, stream_id: int) -> None:
        waiter = self.windows.get(stream_id)
        if waiter is not None:
            waiter.set()

    def request_complete(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or (self.going_away and stream_id > self.last_taken):
            return  # after our GOAWAY: never processed
        request = H2Request(self.conn_id, stream_id, stream.headers, stream.size,
                            stream.sha.hexdigest(), stream.trailers)
        self.upstream.record(request)
        self.requests += 1
        limit = self.upstream.goaway_after
        if limit and self.requests >= limit and not self.going_away:
            self.going_away = True
            self.last_taken = stream_id
            self.send_goaway(stream_id)
        self.answering.add(stream_id)
        task = asyncio.ensure_future(self.answer(stream_id, self.upstream.handler(request)))
        self.upstream.tasks.add(task)
        task.add_done_callback(self.upstream.tasks.discard)

    def send_goaway(self, last_stream_id: int) -> None:
        """A graceful GOAWAY, written by hand: h2's ``close_connection`` would refuse to
        answer the streams it lets finish (python-hyper/h2 issue 1181)."""
        self.flush()
        if self.transport is not None:
            self.transport.write(GoAwayFrame(0, last_stream_id=last_stream_id).serialize())

    async def answer(self, stream_id: int, reply: H2Reply) -> None:
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.after_reset and stream_id not in self.streams:
                self.write_crossing_answer(stream_id, reply)
                return
            if reply.reset is not None:
                self.h2.reset_stream(stream_id, reply.reset)
                self.flush()
                return
            fields = [(":status", str(reply.status)), *reply.headers]
            body = reply.body if reply.body_size is None else pattern_body(reply.body_size)
            if not reply.trailers:
                fields.append(("content-length", str(len(body))))
            self.h2.send_headers(stream_id, fields, end_stream=not body and not reply.trailers)
            self.flush()
            await self.send_body(stream_id, body, not reply.trailers)
            if reply.trailers:
                if reply.trailers_delay:
                    await asyncio.sleep(reply.trailers_delay)
                self.h2.send_headers(stream_id, reply.trailers, end_stream=True)
            self.flush()
        except (H2Error, KeyError):
            pass  # the client reset the stream
        finally:
            self.answering.discard(stream_id)
            self.streams.pop(stream_id, None)
            if self.going_away and not self.answering and self.transport is not None:
                self.transport.close()

    def write_crossing_answer(self, stream_id: int, reply: H2Reply) -> None:
        """HEADERS and DATA on a stream the client reset, written by hand (h2 refuses to send
        on a closed stream) with the connection's HPACK encoder, whose state stays in step."""
        self.flush()
        head = HeadersFrame(stream_id, flags=["END_HEADERS"])
        head.data = self.h2.encoder.encode([(b":status", str(reply.status).encode()),
                                            (b"content-length", b"%d" % len(reply.body))])
        body = DataFrame(stream_id, data=reply.body, flags=["END_STREAM"])
        if self.transport is not None:
            self.transport.write(head.serialize() + body.serialize())
        self.upstream.crossing_answers += 1

    async def send_body(self, stream_id: int, body: bytes, end: bool) -> None:
        view = memoryview(body)
        while view:
            room = min(self.h2.local_flow_control_window(stream_id),
                       self.h2.max_outbound_frame_size, len(view))
            if room <= 0:
                waiter = self.windows[stream_id] = asyncio.Event()
                await waiter.wait()
                if stream_id not in self.streams:
                    return
                continue
            piece, view = bytes(view[:room]), view[room:]
            self.h2.send_data(stream_id, piece, end_stream=end and not view)
            self.upstream.body_sent += len(piece)
            self.flush()
            await asyncio.sleep(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream.open.discard(self)
        for waiter in self.windows.values():
            waiter.set()
        self.streams.clear()


class H2Upstream:
    def __init__(self, ssl_context: ssl.SSLContext | None = None,
                 max_concurrent_streams: int = 100) -> None:
        self.ssl_context = ssl_context
        self.max_concurrent_streams = max_concurrent_streams
        self.handler: Handler = echo_h2
        self.goaway_after = 0  # requests per connection before it announces GOAWAY (0: never)
        self.port = 0
        self.connections = 0
        self.body_sent = 0  # response body bytes written, all streams
        self.resets: list[tuple[int, int, int]] = []  # (conn, stream, error code) from the client
        self.crossing_answers = 0  # answers written on streams the client had reset
        self._requests: list[H2Request] = []
        self._lock = threading.Lock()
        self._conn_ids = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()
        self.open: set[_ServerConnection] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="h2-upstream",
                                        daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> H2Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await self.loop.create_server(
            self._protocol, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    def _protocol(self) -> _ServerConnection:
        self.connections += 1
        conn = _ServerConnection(self, next(self._conn_ids))
        self.open.add(conn)
        return conn

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
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def reset(self, handler: Handler | None = None) -> None:
        with self._lock:
            self._requests.clear()
        self.resets.clear()
        self.crossing_answers = 0
        self.body_sent = 0
        self.handler = handler or echo_h2
        self.goaway_after = 0

    def record(self, request: H2Request) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[H2Request]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[H2Request]:
        poll_until(lambda: len(self.requests) >= count, timeout, message=f"{count} requests")
        return self.requests


def h2_server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context offering ALPN ``h2`` only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["h2"])
    return ctx
