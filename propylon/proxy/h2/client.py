"""The upstream side of the HTTP/2 codec: one connection to an upstream endpoint carrying many
exchanges at once, each a stream driven by a forwarder exactly as an HTTP/1.1
``ClientConnection`` is (the same ``UpstreamClient`` calls, the same connection methods).

Invariants:
- A stream is opened only on a connection that has the peer's first SETTINGS, is not going
  away, and has room under min(the peer's MAX_CONCURRENT_STREAMS, ``MAX_STREAMS``); the pool
  (``h2/pool.py``) counts its capacity so, and opens another connection when all are full.
- The request head is built from the session's parsed fields (``request_fields``), never from
  the client's bytes: pseudo-header fields first, no connection-specific field, TE only
  ``trailers`` (RFC 9113 §8.2.2), cookies as they came.
- Inbound flow control: received DATA is acknowledged once handed to the client's stream. While
  that client cannot take more (its connection paused reading this stream: ``pause_reading``)
  only the connection window is reopened, so a slow client stops its own stream and never the
  connection's others; what it is sent meanwhile is bounded by the stream window.
- Outbound flow control: body chunks wait in the stream until the peer's windows allow them;
  above ``HIGH_WATER`` waiting (or while the socket's buffer is full) the forwarder is asked to
  stop reading its client, and below ``LOW_WATER`` to go on.
- GOAWAY: no new stream; streams above its last stream id fail as stale (the peer never
  processed them, so the forwarder sends them again when that is safe); the others finish, and
  the connection closes when none is left. RST_STREAM from the upstream fails its exchange
  (REFUSED_STREAM before an answer is stale too); a stream the forwarder drops (``close``,
  ``abort``: the client left, a retry, a timeout) is reset with CANCEL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, TooManyStreamsError
from h2.settings import SettingCodes, Settings

from propylon.proxy.clock import CLOCK
from propylon.proxy.grpc import MessageFraming, is_grpc_request
from propylon.proxy.h1.framing import MAX_TRAILERS, response_trailers
from propylon.proxy.http11 import Headers, connection_tokens
from propylon.proxy.rewrite import rewrite_path
from propylon.proxy.upstream_close import closed_reason

if TYPE_CHECKING:
    from hyperframe.frame import Frame, GoAwayFrame

    from propylon.proxy.batch import WriteBatch
    from propylon.proxy.h1.client import OutputBatcher, ResponseBodySink, UpstreamClient
    from propylon.proxy.h2.pool import H2Pool
    from propylon.proxy.session import Session
    from propylon.runtime.compiled import CompiledRoute

MAX_STREAMS = 100  # concurrent streams per connection, whatever the peer allows
STREAM_WINDOW = 256 * 1024  # what one stream may be sent before its client took it
CONNECTION_WINDOW = 4 * 1024 * 1024
MAX_RESPONSE_HEADER_LIST = 64 * 1024
HIGH_WATER = 256 * 1024  # request body bytes waiting for the peer's window: pause the client
LOW_WATER = 64 * 1024

# Fields an HTTP/1.1 request may carry that mean nothing (or harm) on HTTP/2 (RFC 9113
# §8.2.2); Host becomes :authority.
_CONNECTION_SPECIFIC = frozenset({
    b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
    b"upgrade", b"http2-settings",
})
_PSEUDO = b":"[0]


class _GracefulH2Connection(H2Connection):
    """h2's connection, but a GOAWAY received does not close it: RFC 9113 §6.8 lets streams up
    to the GOAWAY's last stream id complete, while h2 moves straight to CLOSED and refuses
    every later frame (python-hyper/h2 issue 1181). The event is still reported."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[ev.Event]]:
        event = ev.ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def request_fields(session: Session, route: CompiledRoute, scheme: bytes) -> Headers:
    """The HEADERS of the request sent upstream, from the session's parsed fields: the
    rewritten path (the route's rewrite, as for HTTP/1.1), Host as :authority, end-to-end
    fields (minus those the client's Connection field names), forwarding fields."""
    path = rewrite_path(session.path, route.prefix_from, route.prefix_to, route.replace_path)
    if session.query:
        path += b"?" + session.query
    proto = session.proto
    authority = session.host_value
    if not session.host_count:
        listener = proto.listener
        authority = b"%s:%d" % (listener.address.encode(), listener.port)
    fields = [(b":method", session.method), (b":scheme", scheme), (b":authority", authority),
              (b":path", path)]
    named = connection_tokens(session.conn_header) if session.conn_header is not None else ()
    for name, value in session.request_headers:
        if name in _CONNECTION_SPECIFIC or name in named or (
                name == b"te" and value != b"trailers"):
            continue
        fields.append((name, value))
    for line in session.forwarding_fields().split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            fields.append((name, value))
    if proto.client_cert is not None:
        fields.append((b"x-forwarded-client-cert", proto.client_cert))
    fields.append((b"x-request-id", session.request_id))
    return fields


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection to an upstream endpoint (h2c with prior knowledge, or h2 over
    TLS). Its streams are ``H2Stream`` objects; the pool hands them out."""

    __slots__ = (
        "active", "closed", "going_away", "h2", "idle_since", "opened", "pool", "ready",
        "scheme", "streams", "transport", "write_paused",
    )

    def __init__(self, pool: H2Pool, tls: bool) -> None:
        self.pool = pool
        self.scheme = b"https" if tls else b"http"
        self.transport: asyncio.Transport | None = None
        self.h2 = _GracefulH2Connection(H2Configuration(
            client_side=True, header_encoding=None, split_outbound_cookies=False))
        self.streams: dict[int, H2Stream] = {}  # by stream id, once sent
        self.active = 0  # streams handed out and not finished (sent or about to be)
        self.opened = 0  # streams ever handed out (a stale connection has carried some)
        self.ready = False  # the peer's first SETTINGS arrived: its limits are known
        self.going_away = False
        self.closed = False
        self.write_paused = False  # the socket's send buffer is full
        self.idle_since = CLOCK.now

    # -- what the pool asks ----------------------------------------------------------------
    def room(self) -> int:
        """How many more streams this connection may carry now."""
        if not self.ready or self.going_away or self.closed:
            return 0
        limit = min(self.h2.remote_settings.max_concurrent_streams, MAX_STREAMS)
        return limit - self.active

    def open_stream(self) -> H2Stream:
        stream = H2Stream(self, reused=self.opened > 0)
        self.active += 1
        self.opened += 1
        return stream

    def stream_finished(self, stream: H2Stream) -> None:
        """``stream`` will send and receive nothing more: its slot is free."""
        if stream.stream_id:
            self.streams.pop(stream.stream_id, None)
        self.active -= 1
        self.flush()
        if self.active == 0:
            self.idle_since = CLOCK.now
            if self.going_away:
                self.close()
                return
        self.pool.room_made(self)

    def close(self) -> None:
        """Close gracefully (GOAWAY, then the socket); unfinished streams fail."""
        if self.transport is not None and not self.closed:
            try:
                self.h2.close_connection()
                self.flush()
            except H2Error:
                pass
            self.transport.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        h2 = self.h2
        h2.local_settings = Settings(client=True, initial_values={
            # Push off is what keeps the upstream from opening streams. MAX_CONCURRENT_STREAMS
            # stays h2's default: at 0, h2 takes an answer crossing our RST_STREAM, on a
            # stream it has already forgotten, for a new inbound stream over the limit and
            # tears the connection down with PROTOCOL_ERROR (RFC 9113 §5.1: ignore it).
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_RESPONSE_HEADER_LIST,
        })
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            self.flush()  # h2's GOAWAY naming the error
            self._fail(f"invalid HTTP/2 from upstream: {exc}")
            return
        touched: list[OutputBatcher] = []
        for event in events:
            self._dispatch(event, touched)
        for downstream in touched:
            downstream.release_output()
        self.flush()

    def _dispatch(self, event: ev.Event, touched: list[OutputBatcher]) -> None:
        stream_id = getattr(event, "stream_id", 0)
        stream = self.streams.get(stream_id) if stream_id else None
        if stream is not None:
            downstream = stream.downstream
            if downstream is not None and downstream not in touched:
                downstream.hold_output()
                touched.append(downstream)
        if isinstance(event, ev.DataReceived):
            if stream is not None:
                stream.on_data(event.data, event.flow_controlled_length)
            elif event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif stream is None:
            self._connection_event(event)
        elif isinstance(event, ev.ResponseReceived):
            stream.on_head(event.headers)
        elif isinstance(event, ev.TrailersReceived):
            stream.on_trailers(event.headers)
        elif isinstance(event, ev.StreamEnded):
            stream.on_end()
        elif isinstance(event, ev.StreamReset):
            stream.on_reset(event.error_code)
        elif isinstance(event, ev.WindowUpdated):
            stream.send_waiting()
        # InformationalResponseReceived: interim 1xx answers are not forwarded

    def _connection_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.WindowUpdated):
            for stream in list(self.streams.values()):
                stream.send_waiting()
        elif isinstance(event, ev.RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                for stream in list(self.streams.values()):
                    stream.send_waiting()
            self.ready = True
            self.pool.room_made(self)
        elif isinstance(event, ev.ConnectionTerminated):
            self._going_away(event.last_stream_id or 0)

    def _going_away(self, last_stream_id: int) -> None:
        """GOAWAY: streams above ``last_stream_id`` were never processed."""
        if not self.going_away:
            self.going_away = True
            self.pool.retire(self)
        for stream_id in [s for s in self.streams if s > last_stream_id]:
            self.streams[stream_id].refused("upstream is going away (GOAWAY)")
        if self.active == 0:
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = closed_reason(exc)
        self.pool.forget(self, reason)
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        """Every stream ends with ``reason``; the connection is closed."""
        self.going_away = True
        for stream in list(self.streams.values()):
            stream.lost(reason)
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.check_write_pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.check_write_pause()


class H2Stream:
    """One exchange on an ``H2ClientConnection``: what a forwarder calls its upstream
    connection (``attach``, ``send_request``, ``send_body``, ``send_end``, ``close``,
    ``abort``; ``pool.release``), and the stream's read pause (``transport``)."""

    __slots__ = (
        "client", "connection", "downstream", "end_sent", "end_trailers", "ending",
        "finished", "framing", "got_response", "head_only", "pool", "read_paused", "reused",
        "sink", "stream_id", "trailers", "unacked", "waiting", "waiting_size", "write_paused",
    )

    def __init__(self, connection: H2ClientConnection, reused: bool) -> None:
        self.connection = connection
        self.reused = reused  # the connection had carried streams before this one
        self.pool = connection.pool  # forwarders give streams back with ``conn.pool.release``
        self.stream_id = 0  # allocated when the request is sent
        self.client: UpstreamClient | None = None
        self.sink: ResponseBodySink | None = None
        self.downstream: OutputBatcher | None = None
        self.head_only = False
        self.got_response = False
        self.trailers: Headers | None = None
        self.framing: MessageFraming | None = None  # of a gRPC answer's body
        self.waiting: deque[bytes] = deque()  # request body the peer's windows hold back
        self.waiting_size = 0
        self.ending = False  # the request's end is to be sent after ``waiting``
        self.end_trailers: Headers | None = None
        self.end_sent = False
        self.write_paused = False  # the forwarder was asked to stop sending
        self.read_paused = False  # the client cannot take more of the answer
        self.unacked = 0  # received bytes not yet given back to the stream's window
        self.finished = False

    @property
    def transport(self) -> H2Stream | None:
        """What the client connection pauses and resumes when its own writes back up: this
        stream alone (never the shared socket). None once the stream is over."""
        return None if self.finished else self

    @property
    def closed(self) -> bool:
        return self.finished

    def between_grpc_messages(self) -> bool:
        """The answer is gRPC and its body so far ends between two messages."""
        return self.framing is not None and self.framing.between_messages

    # -- the request (what a forwarder sends) -------------------------------------------------
    def attach(self, client: UpstreamClient, downstream: OutputBatcher, head_only: bool) -> None:
        self.client = client
        self.downstream = downstream
        self.head_only = head_only

    def send_request(self, session: Session, route: CompiledRoute, chunks: list[bytes] | None,
                     batch: WriteBatch) -> None:
        """HEADERS from the session's fields, the body chunks so far, its end when done."""
        connection = self.connection
        h2 = connection.h2
        done = session.body_done
        trailers = session.request_trailers
        try:
            self.stream_id = h2.get_next_available_stream_id()
            h2.send_headers(self.stream_id, request_fields(session, route, connection.scheme),
                            end_stream=done and not chunks and not trailers)
        except TooManyStreamsError:  # the peer lowered its limit: nothing was sent
            self.stream_id = 0
            self._fail_soon(self.refused, "upstream has no room for another stream")
            return
        except H2Error as exc:
            self.stream_id = 0
            self._fail_soon(self.lost, f"cannot send the request upstream: {exc}")
            return
        connection.streams[self.stream_id] = self
        if done and not chunks and not trailers:
            self.end_sent = True
        else:
            for chunk in chunks or ():
                self.send_body(chunk)
            if done:
                self.send_end(trailers)
        connection.flush()

    def send_body(self, chunk: bytes) -> None:
        if chunk and not self.finished:
            self.waiting.append(chunk)
            self.waiting_size += len(chunk)
            self.send_waiting()

    def send_end(self, trailers: Headers | None) -> None:
        if not self.finished:
            self.ending = True
            self.end_trailers = trailers
            self.send_waiting()

    def send_waiting(self) -> None:
        """Send what the peer's windows allow of the waiting body, then its end."""
        if self.finished or self.end_sent or not self.stream_id:
            return
        h2, stream_id, waiting = self.connection.h2, self.stream_id, self.waiting
        try:
            while waiting:
                room = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
                if room <= 0:
                    break
                chunk = waiting.popleft()
                if len(chunk) > room:
                    waiting.appendleft(chunk[room:])
                    chunk = chunk[:room]
                self.waiting_size -= len(chunk)
                last = not waiting and self.ending and not self.end_trailers
                h2.send_data(stream_id, chunk, end_stream=last)
                self.end_sent = last
            if not waiting and self.ending and not self.end_sent:
                if self.end_trailers:
                    h2.send_headers(stream_id, self.end_trailers, end_stream=True)
                else:
                    h2.end_stream(stream_id)
                self.end_sent = True
        except H2Error as exc:  # the stream was closed under us (a reset crossing ours)
            self.lost(f"cannot send the request body upstream: {exc}")
            return
        self.check_write_pause()
        self.connection.flush()

    def check_write_pause(self) -> None:
        client = self.client
        if client is None:
            return
        blocked = self.connection.write_paused
        if not self.write_paused and (blocked or self.waiting_size > HIGH_WATER):
            self.write_paused = True
            client.on_upstream_pause_writing()
        elif self.write_paused and not blocked and self.waiting_size <= LOW_WATER:
            self.write_paused = False
            client.on_upstream_resume_writing()

    # -- the client's read pause (``transport``) ------------------------------------------------
    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False
        unacked, self.unacked = self.unacked, 0
        if unacked and not self.finished and self.stream_id:
            try:
                self.connection.h2.increment_flow_control_window(unacked, self.stream_id)
            except (H2Error, KeyError):
                return  # the stream ended on the peer's side meanwhile
            self.connection.flush()

    # -- the answer ---------------------------------------------------------------------------
    def on_head(self, headers: Headers) -> None:
        status = 0
        length: bytes | None = None
        fields: Headers = []
        for name, value in headers:
            if name[0] == _PSEUDO:
                if name == b":status":
                    status = int(value)
            elif name == b"content-length":
                length = value
            else:
                fields.append((name, value))
        self.got_response = True
        client = self.client
        if client is None:
            return
        if is_grpc_request(fields):  # here: an answer whose content-type is gRPC's
            self.framing = MessageFraming()
        client.on_response_head(status, fields, length)
        if self.client is not None:  # not dropped for a retry meanwhile
            self.sink = client.body_sink

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        sink = self.sink
        if sink is not None and data and not self.head_only:
            if self.framing is not None:
                self.framing.feed(data)
            sink.on_response_body(data)
        if not flow_controlled:
            return
        h2 = self.connection.h2
        if self.read_paused and not self.finished:
            self.unacked += flow_controlled
            h2.increment_flow_control_window(flow_controlled)  # the connection's window only
        else:
            h2.acknowledge_received_data(flow_controlled, self.stream_id)

    def on_trailers(self, headers: Headers) -> None:
        fields = [h for h in headers if h[0][0] != _PSEUDO][:MAX_TRAILERS]
        self.trailers = response_trailers(fields)

    def on_end(self) -> None:
        """The answer is complete (END_STREAM)."""
        client = self.client
        self.client = self.sink = None
        if client is None:
            return
        # reusable: the stream ended by framing; the forwarder gives it back with
        # ``pool.release`` (its request complete) or ``close`` (its request still going up)
        client.on_response_complete(True, self.trailers or None)

    def on_reset(self, error_code: int) -> None:
        """RST_STREAM from the upstream."""
        try:
            name = ErrorCodes(error_code).name
        except ValueError:
            name = str(error_code)
        if error_code == ErrorCodes.REFUSED_STREAM and not self.got_response:
            self.refused(f"upstream refused the stream ({name})")
        else:
            self.lost(f"upstream reset the stream ({name})")

    def refused(self, reason: str) -> None:
        """The upstream did not process this stream: safe to send again (stale)."""
        client = self.client
        self._finish()
        if client is not None:
            client.on_upstream_error(reason, True, True, True)

    def lost(self, reason: str) -> None:
        """The stream ended without its answer: the exchange fails. Stale, as for HTTP/1.1,
        when nothing was answered on a connection that had carried earlier streams."""
        client = self.client
        self._finish()
        if client is not None:
            stale = not self.got_response and self.reused
            client.on_upstream_error(reason, not self.got_response, stale)

    @staticmethod
    def _fail_soon(fail: Callable[[str], None], reason: str) -> None:
        """Fail after the forwarder's ``on_upstream_connected`` has returned."""
        asyncio.get_running_loop().call_soon(fail, reason)

    # -- the end ------------------------------------------------------------------------------
    def release(self) -> None:
        """The forwarder is done with a cleanly ended exchange (``pool.release``)."""
        self.client = self.sink = None
        if not self.end_sent and self.stream_id:
            self._reset(ErrorCodes.CANCEL)  # the answer came before the whole request
        self._finish()

    def close(self) -> None:
        """The forwarder drops the exchange: the upstream is told (RST_STREAM CANCEL)."""
        self.client = self.sink = None
        if self.stream_id and not self.finished:
            self._reset(ErrorCodes.CANCEL)
        self._finish()

    def abort(self) -> None:
        """As ``close``: a stream has nothing of its connection to abort."""
        self.close()

    def _reset(self, code: ErrorCodes) -> None:
        with contextlib.suppress(H2Error):  # already closed on both sides
            self.connection.h2.reset_stream(self.stream_id, code)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.client = self.sink = None
        self.waiting.clear()
        self.waiting_size = 0
        self.connection.stream_finished(self)
