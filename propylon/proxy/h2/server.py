"""The server side of the HTTP/2 codec (RFC 9113): one client connection, many streams, each
stream one ``Session``.

The ``h2`` library (python-hyper) is the protocol engine: frames, HPACK, stream states,
flow-control windows and header validation. This module wires it to sessions:

- A connection starts as HTTP/1.1 (``proxy/h1/server.py``) and is handed over here when TLS
  negotiated ALPN ``h2`` or a cleartext client opened with the HTTP/2 preface (h2c with prior
  knowledge); ``H2ServerConnection.take_over`` swaps the transport's protocol.
- Each stream is an ``H2Stream``: the client stream a session answers on (the same members
  the HTTP/1.1 connection offers a session: ``send_response_head``, ``on_response_body``,
  ``exchange_finished``, ``send_local_response``...).
- Flow control gives backpressure per stream: request data is acknowledged (WINDOW_UPDATE)
  only once the session took it, so a paused upstream pauses that stream's client, not the
  connection; response data waits for the client's window, and a stream whose unsent data
  passes ``OUTPUT_HIGH_WATER`` pauses reading from its upstream until it drains.
- Abuse is bounded before ``h2`` parses a byte (``FrameCounter``): rapid reset, CONTINUATION
  floods, SETTINGS/PING/WINDOW_UPDATE/empty-DATA floods; a bounded header list (HPACK bombs)
  and stream-id rules are ``h2``'s. Each ends the connection with GOAWAY and the right code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame

from propylon.proxy.clock import CLOCK
from propylon.proxy.grpc import status_in, timeout_seconds
from propylon.proxy.h1.framing import FRAMED_BY_LENGTH, BadRequest
from propylon.proxy.hostport import split_host
from propylon.proxy.http11 import Headers
from propylon.proxy.path import PathError, normalize_path
from propylon.proxy.proxy_protocol import upstream_client_addresses
from propylon.proxy.request_fields import (
    CONNECTION,
    EXPECT,
    FIELD_KINDS,
    FORWARDED,
    HOST,
    KEEP,
    LENGTH,
    OWNED,
    TE,
)
from propylon.proxy.session import Session

if TYPE_CHECKING:
    from propylon.proxy.batch import WriteBatch
    from propylon.proxy.h1.client import ClientConnection
    from propylon.proxy.h1.server import ServerConnection
    from propylon.proxy.h2.client import H2Stream as UpstreamStream
    from propylon.proxy.proxy_protocol import ProxyHeader
    from propylon.proxy.worker_state import ListenerState, WorkerState
    from propylon.runtime.compiled import HostSet

log = logging.getLogger("propylon.proxy")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONCURRENT_STREAMS = 100
STREAM_WINDOW = 128 * 1024  # what a client may send on one stream before it is acknowledged
# The connection's receive window: every stream's window fits in it, so a stream whose data
# waits (paused upstream) never holds back the others.
CONNECTION_WINDOW = MAX_CONCURRENT_STREAMS * STREAM_WINDOW + 65535
OUTPUT_HIGH_WATER = 256 * 1024  # unsent response bytes of one stream: its upstream pauses
OUTPUT_LOW_WATER = 64 * 1024  # ... and resumes below this
# Frames a client may send in FLOOD_PERIOD seconds before the connection is closed with
# ENHANCE_YOUR_CALM. Control frames are budgeted against the useful frames (HEADERS and DATA
# with a payload) of the same period, as Envoy does: a busy gRPC client sends a WINDOW_UPDATE
# and often a BDP PING for every few DATA frames; a flood sends them with no work.
FLOOD_PERIOD = 10.0
MAX_RESETS = 200  # RST_STREAM beyond this AND above half the streams opened: rapid reset
MAX_PINGS = 100  # plus one per useful frame
MAX_SETTINGS = 100
MAX_CONTROL = 2000  # WINDOW_UPDATE, PRIORITY and empty DATA frames; plus 4 per useful frame
MAX_CONTINUATIONS = 32  # CONTINUATION frames in one header block
MAX_FRAME_SIZE = 16384  # SETTINGS_MAX_FRAME_SIZE: the protocol's default, never raised

_HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PING, _WINDOW_UPDATE, _CONTINUATION = (
    1, 2, 3, 4, 6, 8, 9)
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
# Response fields that HTTP/2 forbids (RFC 9113 §8.2.2); the upstream codec already removed
# the hop-by-hop ones it knows, this is the last line.
_CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
})
# Methods whose requests carry no body unless they say so (Content-Length): a stream of one
# that does not end with its HEADERS must end with empty DATA.
_NO_BODY_EXPECTED = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
# Reasons for pausing the reading of a stream's request body (bits of ``read_paused``)
_UPSTREAM_FULL, _BODY_BUFFER = 1, 2


class FrameCounter:
    """Counts a client's frames from the raw bytes (frame headers only, payloads skipped) and
    says when a count passes its bound. Runs before ``h2`` parses anything, so a flood costs
    a few comparisons per frame and never reaches a session."""

    __slots__ = (
        "block_bytes",
        "block_frames",
        "block_started",
        "control",
        "first",
        "head",
        "headers",
        "max_block_bytes",
        "period_started",
        "pings",
        "resets",
        "settings",
        "skip",
        "useful",
    )

    def __init__(self, max_block_bytes: int) -> None:
        self.head = b""  # an incomplete frame header
        self.first = True  # the client's first frame must be SETTINGS (RFC 9113 §3.4)
        self.skip = len(PREFACE)  # payload bytes (or the preface) still to pass over
        self.max_block_bytes = max_block_bytes
        self.block_frames = 0  # HEADERS + CONTINUATION frames of an unfinished header block
        self.block_bytes = 0
        self.block_started = 0.0
        self.period_started = CLOCK.now
        self.resets = self.pings = self.settings = self.control = 0
        self.headers = self.useful = 0  # HEADERS frames; HEADERS and DATA with a payload

    def feed(self, data: bytes) -> tuple[int, str] | None:
        """The error code and reason to close the connection with, or None."""
        pos, end = 0, len(data)
        while pos < end:
            if self.skip:
                take = min(self.skip, end - pos)
                self.skip -= take
                pos += take
                continue
            need = 9 - len(self.head)
            self.head += data[pos:pos + need]
            pos += need
            if len(self.head) < 9:
                return None
            head, self.head = self.head, b""
            length = int.from_bytes(head[:3], "big")
            self.skip = length
            if length > MAX_FRAME_SIZE:  # h2 would buffer it whole before checking
                return ErrorCodes.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"
            if self.first:
                self.first = False
                if head[3] != _SETTINGS:
                    return ErrorCodes.PROTOCOL_ERROR, "the preface is not followed by SETTINGS"
            reason = self._count(head[3], head[4], length)
            if reason is not None:
                return ErrorCodes.ENHANCE_YOUR_CALM, reason
        return None

    def _count(self, kind: int, flags: int, length: int) -> str | None:
        now = CLOCK.now
        if now - self.period_started > FLOOD_PERIOD:
            self.period_started = now
            self.resets = self.pings = self.settings = self.control = 0
            self.headers = self.useful = 0
        if kind == 0:  # DATA
            if length:
                self.useful += 1
            elif not flags & _END_STREAM:
                self.control += 1
        elif kind == _HEADERS:
            self.headers += 1
            self.useful += 1
            if not flags & _END_HEADERS:
                self.block_frames, self.block_bytes, self.block_started = 1, length, now
        elif kind == _CONTINUATION:
            self.block_frames += 1
            self.block_bytes += length
            if (self.block_frames > MAX_CONTINUATIONS
                    or self.block_bytes > self.max_block_bytes):
                return "CONTINUATION flood"
            if flags & _END_HEADERS:
                self.block_frames = 0
        elif kind == _RST_STREAM:
            self.resets += 1
            if self.resets > MAX_RESETS and 2 * self.resets > self.headers:
                return "rapid reset"
        elif kind == _PING:
            if not flags & _ACK:
                self.pings += 1
                if self.pings > MAX_PINGS + self.useful:
                    return "PING flood"
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self.settings += 1
                if self.settings > MAX_SETTINGS:
                    return "SETTINGS flood"
        elif kind in (_WINDOW_UPDATE, _PRIORITY):
            self.control += 1
        if self.control > MAX_CONTROL + 4 * self.useful:
            return "control frame flood"
        return None


class _RefusingConnection(h2.connection.H2Connection):
    """h2's server connection, except that a stream opened over the advertised
    MAX_CONCURRENT_STREAMS is refused alone (RST_STREAM REFUSED_STREAM: a stream error, RFC
    9113 §5.1.2) where h2 ends the whole connection. A client may exceed it without fault: a
    stream it saw end may not be closed here yet. Its header block is still decoded (the
    HPACK state is the connection's), then the stream reset; what else arrives on it is
    answered as on any stream reset here."""

    _admitting = False

    @property
    def open_inbound_streams(self) -> int:
        return 0 if self._admitting else super().open_inbound_streams

    def _receive_headers_frame(self, frame: HeadersFrame
                               ) -> tuple[list[Frame], list[h2.events.Event]]:
        if frame.stream_id in self.streams or \
                self.open_inbound_streams < self.local_settings.max_concurrent_streams:
            return super()._receive_headers_frame(frame)
        self._admitting = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._admitting = False
        self.reset_stream(frame.stream_id, ErrorCodes.REFUSED_STREAM)
        return frames, [e for e in events if getattr(e, "stream_id", None) != frame.stream_id]


class H2ServerConnection(asyncio.Protocol):
    """One client's HTTP/2 connection, after the switch from the HTTP/1.1 codec."""

    def __init__(self, origin: ServerConnection) -> None:
        self.worker: WorkerState = origin.worker
        self.listener: ListenerState = origin.listener
        self.loop = origin.loop
        self.batch = origin.batch
        self.transport: asyncio.Transport = origin.transport
        self.peer_ip = origin.peer_ip
        self.peer_trusted = origin.peer_trusted
        self.tls_names: HostSet | None = origin.tls_names
        self.client_cert = origin.client_cert
        self.proxy_header: ProxyHeader | None = origin.proxy_header
        self.proxy_log = origin.proxy_log
        listener = self.listener
        self.max_field_bytes = listener.max_header_bytes
        self.counter = FrameCounter(listener.max_head_bytes)
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = _RefusingConnection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: listener.max_head_bytes,
        })
        self.streams: dict[int, H2Stream] = {}
        self.last_stream_id = 0  # the highest stream a request arrived on
        self.goaway_sent = False  # draining: no stream above last_stream_id is served
        self.closed = False
        self.scheduled = False  # output is written at the end of the loop's turn
        self.writing_paused = False
        self.activity = 0
        self.started = CLOCK.now
        self.idle_since = CLOCK.now
        self.got_settings = False  # the client's preface and first SETTINGS arrived

    @classmethod
    def take_over(cls, origin: ServerConnection, data: bytes) -> H2ServerConnection:
        """Replace the HTTP/1.1 protocol of ``origin``'s transport; ``data``: bytes already
        read (the preface, for h2c with prior knowledge)."""
        conn = cls(origin)
        connections = conn.worker.connections
        connections.discard(origin)
        connections.add(conn)
        conn.transport.set_protocol(conn)
        conn.h2.initiate_connection()
        conn.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        if data:
            conn.data_received(data)
        else:
            conn.flush()
        return conn

    # -- input -----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.activity += 1
        error = self.counter.feed(data)
        if error is not None:
            self.fail(*error)
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
            self.fail(code, str(exc) or type(exc).__name__)
            return
        for event in events:
            self._dispatch(event)
            if self.closed:
                return
        self.flush()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:  # answered already: the rest of its body is dropped
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream.request_data(event.data or b"", event.flow_controlled_length)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers or [], event.stream_ended is not None)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_ended()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.session is not None:
                stream.session.request_trailers = [
                    (bytes(n), bytes(v)) for n, v in event.headers or []]
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.client_reset()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.pump()
            else:
                for stream in list(self.streams.values()):
                    stream.pump()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.got_settings = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_sent = True  # the client opens no more streams: end when idle
            if not self.streams:
                self.close()

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                 ended: bool) -> None:
        self.idle_since = CLOCK.now
        if self.goaway_sent and stream_id > self.last_stream_id:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.last_stream_id = max(self.last_stream_id, stream_id)
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        session = Session(stream)
        try:
            deadline = read_request_head(session, headers, self)
        except BadRequest as exc:
            stream.reject(exc.status, str(exc))
            return
        stream.session = session
        if deadline is not None:  # grpc-timeout: the client's deadline, kept by the gateway
            stream.timer = self.loop.call_later(deadline, stream.deadline_passed)
        if ended:
            session.has_body = False
            session.body_done = stream.request_done = True
        elif not session.has_body:
            if session.framing or session.method in _NO_BODY_EXPECTED:
                session.body_done = True  # Content-Length: 0, or a GET ending in empty DATA
            else:
                session.has_body = True  # no Content-Length: the length is known at the end
                session.req_chunked = True  # framed by chunks to an HTTP/1.1 upstream
        session.begin()

    # -- output ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what ``h2`` has to send, now."""
        self.scheduled = False
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def flush_later(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.batch.release_later(self)

    def release_output(self) -> None:  # WriteBatch.release_later
        self.flush()

    def pause_writing(self) -> None:
        self.writing_paused = True
        for stream in self.streams.values():
            stream.pause_upstream()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for stream in list(self.streams.values()):
            stream.pump()

    # -- the end -----------------------------------------------------------------------------
    def stream_finished(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if not self.streams:
            self.idle_since = CLOCK.now
            if self.goaway_sent or self.worker.draining:
                self.close()

    def fail(self, code: int, reason: str) -> None:
        """A connection error: GOAWAY with ``code``, then close."""
        if self.closed:
            return
        log.info("closing an HTTP/2 connection from %s: %s", self.peer_ip, reason)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=code)
        self.flush()
        self._abort_streams()
        self.closed = True
        self.transport.close()

    def goaway(self) -> None:
        """Graceful: no stream above the last one received will be served; the streams in
        flight finish. Written by hand: ``h2`` would refuse to send anything after its own."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self.transport.write(frame.serialize())

    def close(self) -> None:
        if self.closed:
            return
        self.goaway()
        self.flush()
        self.closed = True
        self.transport.close()

    def requests_in_flight(self) -> int:
        return len(self.streams)

    def close_if_idle(self) -> None:
        """Draining: tell the client, and close once the streams in flight are done."""
        self.goaway()
        if not self.streams:
            self.close()

    def abort(self) -> None:
        """The end of a drain: whatever is still open is cut."""
        self.closed = True
        self._abort_streams()
        self.transport.abort()

    def _abort_streams(self) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.client_reset()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.worker.connections.discard(self)
        if self.listener.acceptor is not None:
            self.listener.acceptor.connection_closed()
        self._abort_streams()

    def eof_received(self) -> bool:
        self._abort_streams()
        return False

    def check_timeouts(self, now: float) -> None:
        """Called about twice a second by the worker: the listener's timeouts."""
        listener = self.listener
        counter = self.counter
        if counter.block_frames and now - counter.block_started > listener.header_read_timeout:
            self.fail(ErrorCodes.ENHANCE_YOUR_CALM, "header block timeout")
            return
        if not self.got_settings and now - self.started > listener.header_read_timeout:
            self.fail(ErrorCodes.SETTINGS_TIMEOUT, "no client preface")
            return
        if not self.streams:
            if now - self.idle_since > listener.keep_alive_timeout:
                self.close()
            return
        for stream in list(self.streams.values()):
            stream.check_timeouts(now, listener.stream_idle_timeout)


class H2Stream:
    """One stream of an HTTP/2 connection: the client stream its session answers on."""

    http2 = True  # for the access log

    __slots__ = (
        "activity",
        "batch",
        "client_cert",
        "conn",
        "ended",
        "forwarding_fields",
        "forwarding_host",
        "grpc_status",
        "listener",
        "loop",
        "no_body",
        "peer_ip",
        "peer_trusted",
        "pending",
        "pending_end",
        "pending_size",
        "pending_trailers",
        "proxy_log",
        "quiet_since",
        "read_paused",
        "request_done",
        "seen_activity",
        "session",
        "stream_id",
        "timer",
        "tls_names",
        "tunnel",
        "unacked",
        "upstream_paused",
        "worker",
    )

    def __init__(self, conn: H2ServerConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.session: Session | None = None
        # what a session reads of its client connection (typed: the compiled session reads
        # them before mypyc could infer them through the import cycle)
        self.listener: ListenerState = conn.listener
        self.worker: WorkerState = conn.worker
        self.loop: asyncio.AbstractEventLoop = conn.loop
        self.batch: WriteBatch = conn.batch
        self.peer_ip: str = conn.peer_ip
        self.peer_trusted: bool = conn.peer_trusted
        self.tls_names: HostSet | None = conn.tls_names
        self.client_cert: bytes | None = conn.client_cert
        self.proxy_log: str = conn.proxy_log
        self.forwarding_host: bytes | None = None
        self.forwarding_fields = b""
        self.tunnel: ClientConnection | None = None  # no Upgrade on HTTP/2
        self.activity = 0
        self.seen_activity = 0
        self.quiet_since = CLOCK.now
        # request body flow control
        self.request_done = False
        self.read_paused = 0
        self.unacked = 0  # bytes taken while paused: acknowledged on resume
        # response
        self.ended = False  # END_STREAM (or RST_STREAM) sent
        self.no_body = False
        self.pending: deque[bytes] = deque()  # data waiting for the client's window
        self.pending_size = 0
        self.pending_end = False
        self.pending_trailers: Headers | None = None
        self.upstream_paused = False
        self.grpc_status: int | None = None  # of a gRPC answer, for the log and metrics
        self.timer: asyncio.TimerHandle | None = None  # a grpc-timeout deadline

    @property
    def writing_paused(self) -> bool:
        return self.conn.writing_paused or self.pending_size > OUTPUT_HIGH_WATER

    # -- the request body ------------------------------------------------------------------
    def request_data(self, data: bytes, flow_length: int) -> None:
        self.activity += 1
        session = self.session
        if session is not None and data:
            if not session.has_body:
                self.conn.h2.acknowledge_received_data(flow_length, self.stream_id)
                self.refuse_body()
                return
            session.on_data(data, False)
        if self.read_paused:
            self.unacked += flow_length
        elif flow_length:
            self.conn.h2.acknowledge_received_data(flow_length, self.stream_id)

    def request_ended(self) -> None:
        self.request_done = True
        session = self.session
        if session is not None and session.has_body and not session.body_done:
            session.on_data(b"", True)

    def _pause(self, reason: int) -> None:
        self.read_paused |= reason

    def _resume(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and self.unacked:
                unacked, self.unacked = self.unacked, 0
                if not self.ended or not self.request_done:
                    self._safely(self.conn.h2.acknowledge_received_data, unacked,
                                 self.stream_id)
                self.conn.flush_later()

    def refuse_body(self) -> None:
        """DATA on a request that declared none (RFC 9113 §8.1.1: malformed)."""
        session = self.session
        self.client_reset()
        self.conn.streams.pop(self.stream_id, None)
        self._safely(self.conn.h2.reset_stream, self.stream_id, ErrorCodes.PROTOCOL_ERROR)
        if session is not None:
            log.info("resetting stream %d of %s: a body on a request without one",
                     self.stream_id, self.peer_ip)

    def pause_reading_for_upstream(self) -> None:
        self._pause(_UPSTREAM_FULL)

    def resume_reading_for_upstream(self) -> None:
        self._resume(_UPSTREAM_FULL)

    def pause_reading_for_body(self) -> None:
        self._pause(_BODY_BUFFER)

    def resume_reading_for_body(self) -> None:
        self._resume(_BODY_BUFFER)

    # -- the response ----------------------------------------------------------------------
    def send_response_head(self, session: Session, status: int, headers: Headers,
                           length: bytes | None) -> None:
        fields = [(b":status", b"%d" % status)]
        fields += [h for h in headers if h[0] not in _CONNECTION_SPECIFIC]
        if length is not None:
            fields.append((b"content-length", length))
        # grpc-status in a head makes it a gRPC Trailers-Only answer: nothing may follow
        self.grpc_status = status_in(headers)
        self.no_body = (session.head_only or status in (204, 304)
                        or self.grpc_status is not None)
        self._headers(fields, self.no_body)

    def on_response_body(self, chunk: bytes) -> None:
        """``ResponseBodySink``: a piece of the body, sent as the client's window allows."""
        session = self.session
        if session is not None:
            session.bytes_out += len(chunk)
        if self.ended or self.no_body or not chunk:
            return
        self.activity += 1
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        self.pump()

    def exchange_finished(self, session: Session, trailers: Headers | None = None) -> None:
        """The session ended: the end of the body (with the trailers), once what waits for
        the client's window went out."""
        if self.grpc_status is not None and session.route is not None:
            session.route.stats.count_grpc(self.grpc_status)
        if not self.ended:
            self.pending_end = True
            self.pending_trailers = trailers
            self.pump()
        self._finish_if_sent()

    def send_local_response(self, session: Session, status: int, body: bytes,
                            headers: Headers | None, content_type: bytes) -> None:
        fields = [(b":status", b"%d" % status)]
        if headers:
            fields += [h for h in headers if h[0] not in _CONNECTION_SPECIFIC]
        with_body = status >= 200 and status not in (204, 304)
        if with_body:
            if body:
                fields.append((b"content-type", content_type))
            fields.append((b"content-length", b"%d" % len(body)))
        self.grpc_status = status_in(headers)
        send_body = with_body and bool(body) and not session.head_only
        self.no_body = not send_body
        self._headers(fields, not send_body)
        if send_body:
            self.pending.append(body)
            self.pending_size += len(body)
            self.pump()

    def note_trailers(self, trailers: Headers) -> None:
        """The answer's trailers, before the session logs: a gRPC call's status."""
        code = status_in(trailers)
        if code is not None:
            self.grpc_status = code

    def send_continue(self) -> None:
        self._safely(self.conn.h2.send_headers, self.stream_id, [(b":status", b"100")])
        self.conn.flush_later()

    def reject(self, status: int, message: str) -> None:
        """A request that cannot be served, answered before any session began."""
        body = message.encode("latin-1") + b"\n"
        self._headers([(b":status", b"%d" % status),
                       (b"content-type", b"text/plain; charset=utf-8"),
                       (b"content-length", b"%d" % len(body))], False)
        self.pending.append(body)
        self.pending_size += len(body)
        self.pending_end = True
        self.pump()
        self._finish_if_sent()

    def abort(self) -> None:
        """The response cannot be completed: the client sees the stream reset."""
        self.pending.clear()
        self.pending_size = 0
        self.pending_end = False
        if not self.ended:
            self.ended = True
            self._safely(self.conn.h2.reset_stream, self.stream_id, ErrorCodes.INTERNAL_ERROR)
            self.conn.flush_later()
        self.conn.stream_finished(self)

    def write(self, data: bytes) -> None:
        raise RuntimeError("HTTP/2 streams carry no raw bytes (no Upgrade on HTTP/2)")

    def send_switching_protocols(self, headers: Headers, upgrade: bytes) -> None:
        raise RuntimeError("HTTP/2 has no Upgrade")

    def enter_tunnel(self, conn: ClientConnection) -> None:
        raise RuntimeError("HTTP/2 has no Upgrade")

    def client_addresses(self, client_ip: str) -> tuple[str, int, str, int] | None:
        return upstream_client_addresses(self.conn.proxy_header, self.conn.transport, client_ip)

    # OutputBatcher (an upstream connection holds and releases its client's output)
    def hold_output(self) -> None:
        self.activity += 1  # h2 holds the output: the connection writes at the end of the turn

    def end_upstream_read(self, size: int) -> None:
        return None

    def release_output(self) -> None:
        self.conn.flush()

    def upstream_half_closed(self) -> None:
        return None

    # -- sending ---------------------------------------------------------------------------
    def _headers(self, fields: Headers, end_stream: bool) -> None:
        if self.ended:
            return
        if not self._safely(self.conn.h2.send_headers, self.stream_id, fields, end_stream):
            return
        if end_stream:
            self.ended = True
        self.conn.flush_later()

    def pump(self) -> None:
        """Send what the client's windows allow; the end once everything went out."""
        if self.ended:
            return
        h2conn = self.conn.h2
        stream_id = self.stream_id
        pending = self.pending
        try:
            while pending:
                window = min(h2conn.local_flow_control_window(stream_id),
                             h2conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = pending[0]
                if len(chunk) <= window:
                    pending.popleft()
                    h2conn.send_data(stream_id, chunk)
                    self.pending_size -= len(chunk)
                else:
                    h2conn.send_data(stream_id, chunk[:window])
                    pending[0] = chunk[window:]
                    self.pending_size -= window
            if not pending and self.pending_end:
                self.pending_end = False
                self.ended = True
                if self.pending_trailers:
                    h2conn.send_headers(stream_id, self.pending_trailers, end_stream=True)
                else:
                    h2conn.end_stream(stream_id)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as exc:
            log.debug("stream %d of %s closed while sending: %s", stream_id,
                      self.conn.peer_ip, exc)
            self.ended = True
            pending.clear()
            self.pending_size = 0
        self.conn.flush_later()
        if self.pending_size > OUTPUT_HIGH_WATER:
            self.pause_upstream()
        elif self.upstream_paused and self.pending_size < OUTPUT_LOW_WATER:
            self.upstream_paused = False
            transport = self._upstream_transport()
            if transport is not None:
                transport.resume_reading()
        if self.ended:
            self._finish_if_sent()

    def pause_upstream(self) -> None:
        if not self.upstream_paused:
            transport = self._upstream_transport()
            if transport is not None:
                self.upstream_paused = True
                transport.pause_reading()

    def _upstream_transport(self) -> asyncio.Transport | UpstreamStream | None:
        session = self.session
        forwarder = session.forwarder if session is not None else None
        conn = forwarder.conn if forwarder is not None else None
        return conn.transport if conn is not None else None

    def _finish_if_sent(self) -> None:
        """The response went out in full: stop a request body the client is still sending
        (RST_STREAM NO_ERROR, RFC 9113 §8.1) and forget the stream."""
        if not self.ended or self.pending:
            return
        if not self.request_done:
            self.request_done = True
            self._safely(self.conn.h2.reset_stream, self.stream_id, ErrorCodes.NO_ERROR)
            self.conn.flush_later()
        self.conn.stream_finished(self)

    def _safely(self, action: object, *args: object) -> bool:
        """Call an ``h2`` sending method; a stream the client closed meanwhile is no error."""
        try:
            action(*args)  # type: ignore[operator]
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as exc:
            log.debug("stream %d of %s: %s", self.stream_id, self.conn.peer_ip, exc)
            self.ended = True
            return False
        return True

    # -- the client's side -------------------------------------------------------------------
    def client_reset(self) -> None:
        """RST_STREAM from the client (or the connection ended): the request is cancelled,
        its upstream exchange with it."""
        self.ended = True
        self.request_done = True
        self.pending.clear()
        self.pending_size = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        session = self.session
        if session is not None and not session.aborted:
            session.client_gone()

    def deadline_passed(self) -> None:
        """The client's grpc-timeout passed: the exchange ends as a gateway timeout (a gRPC
        client gets DEADLINE_EXCEEDED)."""
        self.timer = None
        session = self.session
        if session is None or session.aborted:
            return
        session.upstream_error = "grpc-timeout"
        if session.forwarder is not None:
            session.on_timeout()
        elif session.response_started:
            session.abort_response()
        else:
            session.send_error(504, b"deadline exceeded\n")

    def check_timeouts(self, now: float, idle_timeout: float) -> None:
        session = self.session
        if session is None:
            return
        if session.deadline and now > session.deadline:
            session.on_timeout()
            return
        if self.activity != self.seen_activity:
            self.seen_activity = self.activity
            self.quiet_since = now
        elif now - self.quiet_since > idle_timeout:
            log.info("resetting stream %d of %s: no bytes moved for %.0fs", self.stream_id,
                     self.peer_ip, idle_timeout)
            if session.response_started:
                session.abort_response()
            else:
                session.send_error(504, b"stream idle timeout\n")


def read_request_head(session: Session, headers: list[tuple[bytes, bytes]],
                      conn: H2ServerConnection) -> float | None:
    """The request head of an HTTP/2 stream into ``session``, as the HTTP/1.1 codec fills it
    (``h2`` has checked pseudo-header rules and connection-specific fields)."""
    method = path = authority = b""
    fields: Headers = []
    size = 0
    deadline: float | None = None
    listener = conn.listener
    for name, value in headers:
        size += len(name) + len(value)
        if name[0] == 58:  # ":" pseudo-header
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        kind = FIELD_KINDS.get(name, KEEP)
        if kind == KEEP:
            if name == b"grpc-timeout":
                deadline = timeout_seconds(value)
            if b"_" in name and listener.reject_underscores:
                raise BadRequest(400, "header names with underscores are not accepted")
            fields.append((name, value))
        elif kind == HOST:
            if not authority:
                authority = value
        elif kind == LENGTH:
            session.has_body = value.strip() != b"0"
            session.framing |= FRAMED_BY_LENGTH
            fields.append((name, value))
        elif kind == EXPECT:
            session.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == OWNED:
            if conn.peer_trusted:
                fields.append((name, value))
        elif kind == TE:
            fields.append((b"te", b"trailers"))  # h2 allows only "trailers"
        elif kind == FORWARDED:
            forwarded = session.forwarded
            if forwarded is None:
                forwarded = session.forwarded = {}
            prev = forwarded.get(name)
            forwarded[name] = value if prev is None else prev + b", " + value
        elif kind == CONNECTION:
            raise BadRequest(400, "connection-specific field in an HTTP/2 request")
    if size > listener.max_header_bytes or len(fields) > listener.max_header_count:
        raise BadRequest(431, "request header fields too large")
    if method == b"CONNECT":
        raise BadRequest(501, "CONNECT is not supported")
    if not authority:
        raise BadRequest(400, "missing :authority")
    if not path.startswith(b"/"):
        if path == b"*" and method == b"OPTIONS":
            path = b"*"
        else:
            raise BadRequest(400, "invalid :path")
    if len(path) > listener.max_request_line:
        raise BadRequest(414, "request target too long")
    if b"#" in path:
        raise BadRequest(400, "a fragment in the request target")
    fields.append((b"host", authority))
    session.method = method
    session.url = path
    session.request_headers = fields
    session.header_bytes = size
    session.host_count = 1
    session.host_value = authority
    session.host = split_host(authority)[0]
    session.path, _, session.query = path.partition(b"?")
    paths = listener.paths
    text = session.path.decode("latin-1")
    if paths is not None and ("%" in text or ";" in text or "\\" in text or "/." in text
                              or "//" in text):
        try:
            session.path = normalize_path(session.path, paths)
        except PathError as exc:
            raise BadRequest(400, str(exc)) from None
        text = session.path.decode("latin-1")
    session.path_text = text
    if session.has_body and method in (b"GET", b"HEAD") and session.framing:
        raise BadRequest(400, f"{method.decode()} request with a body")
    return deadline
