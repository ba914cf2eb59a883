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
import h2.stream
from h2.connection import AllowedStreamIDs, ConnectionInputs, ConnectionState, _decode_headers
from h2.errors import ErrorCodes, _error_code_from_int
from h2.stream import StreamClosedBy, StreamState
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from propylon.filters.base import LocalResponse
from propylon.proxy.clock import CLOCK
from propylon.proxy.grpc import is_grpc_request, status_in, timeout_seconds, trailers_only
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
MAX_STREAM_ID = 2**31 - 1  # the first GOAWAY of a graceful shutdown names it (RFC 9113 §6.8)
DRAIN_PING = b"drain\x00\x00\x00"  # the PING whose ACK brings the final GOAWAY ...
DRAIN_PING_TIMEOUT = 1.0  # ... or this many seconds without it

_HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PING, _WINDOW_UPDATE, _CONTINUATION = (
    1, 2, 3, 4, 6, 8, 9)
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
# Response fields that HTTP/2 forbids (RFC 9113 §8.2.2); the upstream codec already removed
# the hop-by-hop ones it knows, this is the last line.
_CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
})
# Methods whose requests may not carry a body (HTTP/1.1 answers 400, proxy/h1/framing.py): a
# stream of one that does not end with its HEADERS must end with empty DATA; DATA with a
# payload is answered 400 (H2Stream.refuse_body). Any other method's body is forwarded, a
# DELETE's or an OPTIONS' included, as on HTTP/1.1.
_NO_BODY_EXPECTED = frozenset({b"GET", b"HEAD"})
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
    """h2's server connection, with three of its reactions made stream-sized (the
    override pattern: an interpreted subclass of ``h2``'s class, its private frame handlers
    replaced; ``h2`` 4.x):

    - a stream opened over the advertised MAX_CONCURRENT_STREAMS is refused alone
      (RST_STREAM REFUSED_STREAM: a stream error, RFC 9113 §5.1.2) where h2 ends the whole
      connection. A client may exceed it without fault: a stream it saw end may not be
      closed here yet;
    - a malformed request head (RFC 9113 §8.1.1: connection-specific fields, ``te`` other
      than ``trailers``, upper-case or invalid names, pseudo-header misuse, CR/LF/NUL in a
      value, an invalid Content-Length...) is a stream error, where h2's validation error
      ends the connection with every stream in flight. The head is reported as a
      ``RequestReceived`` without fields and its reason kept in ``malformed``, for the
      gateway to answer 400 on that stream; malformed trailers reset their stream
      (PROTOCOL_ERROR, a ``StreamReset`` event). Either way the header block is decoded
      first: the HPACK state is the connection's, and a block left undecoded would corrupt
      every later one;
    - a client's GOAWAY only stops the gateway from opening streams (RFC 9113 §6.8; it
      opens none): h2 would close the connection's state machine and drop the output
      queued, losing the answers to the client's streams in flight. The streams the client
      opened finish; then the connection closes (``H2ServerConnection.closing``)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        # stream id -> (why its head is malformed, the fields as decoded)
        self.malformed: dict[int, tuple[str, list[tuple[bytes, bytes]]]] = {}

    def _receive_headers_frame(self, frame: HeadersFrame
                               ) -> tuple[list[Frame], list[h2.events.Event]]:
        # h2's own method, but for the three points above
        stream_id = frame.stream_id
        known = stream_id in self.streams
        refused = not known and \
            self.open_inbound_streams >= self.local_settings.max_concurrent_streams
        headers = _decode_headers(self.decoder, frame.data)  # always: the HPACK state
        events = self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        stream = self._get_or_create_stream(stream_id, AllowedStreamIDs.ODD)
        ended = "END_STREAM" in frame.flags
        try:
            frames, stream_events = stream.receive_headers(headers, ended,
                                                           self.config.header_encoding)
        except h2.exceptions.StreamClosedError:
            raise  # a frame on a closed stream: h2's rules (_receive_frame)
        except h2.exceptions.ProtocolError as exc:
            if refused:
                return self._reset(stream, ErrorCodes.REFUSED_STREAM), events
            if known:  # trailers: the request is cut
                return self._reset(stream, ErrorCodes.PROTOCOL_ERROR), [
                    *events, h2.events.StreamReset(stream_id=stream_id,
                                                   error_code=ErrorCodes.PROTOCOL_ERROR,
                                                   remote_reset=False)]
            if stream.state_machine.state == StreamState.CLOSED:  # no answer possible
                return self._reset(stream, ErrorCodes.PROTOCOL_ERROR), events
            self.malformed[stream_id] = (str(exc) or "malformed request", list(headers))
            head = h2.events.RequestReceived(stream_id=stream_id, headers=[])
            if ended:
                head.stream_ended = h2.events.StreamEnded(stream_id=stream_id)
            return [], [*events, head]
        if refused:
            return self._reset(stream, ErrorCodes.REFUSED_STREAM), events
        if "PRIORITY" in frame.flags:
            _, p_events = self._receive_priority_frame(frame)
            stream_events[0].priority_updated = p_events[0]  # type: ignore[attr-defined]
            stream_events.extend(p_events)
        return frames, events + stream_events

    @staticmethod
    def _reset(stream: h2.stream.H2Stream, code: int) -> list[Frame]:
        """RST_STREAM for ``stream``, also when h2's state machine closed it already (a
        frame that came after is then a stream error of h2's, not a connection error)."""
        if stream.state_machine.state != StreamState.CLOSED:
            return stream.reset_stream(code)
        stream.state_machine.stream_closed_by = StreamClosedBy.SEND_RST_STREAM
        frame = RstStreamFrame(stream.stream_id)
        frame.error_code = code
        return [frame]

    def _receive_data_frame(self, frame: DataFrame
                            ) -> tuple[list[Frame], list[h2.events.Event]]:
        """h2's, but DATA disagreeing with the request's Content-Length resets its stream
        alone (RFC 9113 §8.1.1: a malformed request is a stream error), where h2 ends the
        connection. What the frame took of the connection's window is given back at once:
        the stream's data is never read."""
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                raise
        frames = self._reset(stream, ErrorCodes.PROTOCOL_ERROR)
        increment = self._inbound_flow_control_window_manager.process_bytes(
            frame.flow_controlled_length)
        if increment:
            update = WindowUpdateFrame(0)
            update.window_increment = increment
            frames.append(update)
        return frames, [h2.events.StreamReset(stream_id=frame.stream_id,
                                              error_code=ErrorCodes.PROTOCOL_ERROR,
                                              remote_reset=False)]

    def _receive_goaway_frame(self, frame: GoAwayFrame
                              ) -> tuple[list[Frame], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        event.error_code = _error_code_from_int(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


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
        # No stream above last_stream_id is served, and the connection closes once its
        # streams are done: the final GOAWAY went out (draining), or the client sent one.
        self.closing = False
        self.goaway_sent = False  # the GOAWAY naming last_stream_id went out
        # Draining, first phase (RFC 9113 §6.8): GOAWAY(2^31-1) and this PING went out;
        # the final GOAWAY waits for its ACK (every stream the client opened before it saw
        # the first GOAWAY has arrived by then), at most DRAIN_PING_TIMEOUT.
        self.drain_ping = b""
        self.drain_timer: asyncio.TimerHandle | None = None
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
        except h2.exceptions.ProtocolError as exc:  # h2 queued the GOAWAY (its code) already
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
            # no fields: a malformed head (_RefusingConnection.malformed)
            self._request(event.stream_id, event.headers, event.stream_ended is not None)
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
            # the client's GOAWAY: its streams in flight are answered, then the end
            self.closing = True
            if not self.streams:
                self.close()
        elif isinstance(event, h2.events.PingAckReceived) and \
                self.drain_ping and event.ping_data == self.drain_ping:
            self._final_goaway()

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                 ended: bool) -> None:
        self.idle_since = CLOCK.now
        if self.closing and stream_id > self.last_stream_id:
            self.h2.malformed.pop(stream_id, None)
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.last_stream_id = max(self.last_stream_id, stream_id)
        stream = H2Stream(self, stream_id, ended)
        self.streams[stream_id] = stream
        session = Session(stream)
        try:
            if not headers:  # a malformed head: h2 kept why (RFC 9113 §8.1.1)
                reason, headers = self.h2.malformed.pop(stream_id)
                note_target(session, headers)
                stream.reject(session, headers, 400, f"malformed request: {reason}", True)
                return
            deadline = read_request_head(session, headers, self)
        except BadRequest as exc:
            if not session.method:
                note_target(session, headers)
            stream.reject(session, headers, exc.status, str(exc))
            return
        stream.session = session
        if deadline is not None:  # grpc-timeout: the client's deadline, kept by the gateway
            stream.timer = self.loop.call_later(deadline, stream.deadline_passed)
        if ended:
            session.has_body = False
            session.body_done = True
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
            if self.closing:
                self.close()

    def fail(self, code: int, reason: str) -> None:
        """A connection error: GOAWAY with ``code`` (unless ``h2`` queued its own already,
        raising the error), then close."""
        if self.closed:
            return
        log.info("closing an HTTP/2 connection from %s: %s", self.peer_ip, reason)
        if self.h2.state_machine.state != ConnectionState.CLOSED:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(error_code=code)
        self.flush()
        self._abort_streams()
        self._closed()
        self.transport.close()

    def goaway(self) -> None:
        """Graceful shutdown, first phase (RFC 9113 §6.8): GOAWAY with the largest stream id
        (streams the client is opening are still served) and a PING; its ACK, or
        DRAIN_PING_TIMEOUT, brings the final GOAWAY (``_final_goaway``)."""
        if self.closed or self.closing or self.drain_ping:
            return
        self.flush()
        self._write_goaway(MAX_STREAM_ID)
        self.drain_ping = DRAIN_PING
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.ping(DRAIN_PING)
        self.flush()
        self.drain_timer = self.loop.call_later(DRAIN_PING_TIMEOUT, self._final_goaway)

    def _final_goaway(self) -> None:
        """GOAWAY naming the last stream served: the streams in flight finish, then the
        connection closes."""
        self.drain_ping = b""
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        if self.closed or self.closing:
            return
        self.closing = True
        self.flush()
        self._write_goaway(self.last_stream_id)
        if not self.streams:
            self.close()

    def _write_goaway(self, last_stream_id: int) -> None:
        """GOAWAY(NO_ERROR), written by hand: ``h2`` would refuse to send anything after
        its own."""
        if last_stream_id != MAX_STREAM_ID:
            self.goaway_sent = True
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self.transport.write(frame.serialize())

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        if not self.goaway_sent:
            self._write_goaway(self.last_stream_id)
        self._closed()
        self.transport.close()

    def _closed(self) -> None:
        self.closed = True
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None

    def requests_in_flight(self) -> int:
        return len(self.streams)

    def close_if_idle(self) -> None:
        """Draining (called every few tens of milliseconds): the two GOAWAYs, then the close
        once the streams in flight are done."""
        self.goaway()
        if self.closing and not self.streams:
            self.close()

    def abort(self) -> None:
        """The end of a drain: whatever is still open is cut."""
        self._closed()
        self._abort_streams()
        self.transport.abort()

    def _abort_streams(self) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.client_reset()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()
        self.worker.connections.discard(self)
        if self.listener.acceptor is not None:
            self.listener.acceptor.connection_closed()
        self._abort_streams()

    def eof_received(self) -> bool:
        self._abort_streams()
        self.flush()  # what is held for this turn's batch, before asyncio closes the transport
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

    def __init__(self, conn: H2ServerConnection, stream_id: int, ended: bool) -> None:
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
        self.request_done = ended  # the client ended its side (END_STREAM)
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
        """DATA on a GET or HEAD: HTTP/1.1 refuses a body on them (400, proxy/h1/framing.py),
        so does HTTP/2 where it still can answer: the upstream exchange begun without a body
        is dropped and the stream answered 400. Once its answer began, the stream is reset."""
        session = self.session
        if session is not None and not session.response_started and not session.aborted:
            session.stop_request(LocalResponse(
                400, session.method + b" request with a body\n"))
            if session.response_started:
                return
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

    def reject(self, session: Session, headers: list[tuple[bytes, bytes]], status: int,
               message: str, malformed: bool = False) -> None:
        """A request refused before routing (bad or malformed fields, CONNECT, a body on
        GET), answered on its stream (the connection serves on) as HTTP/1.1 answers one:
        with an x-request-id, counted on its Gateway's unrouted series and logged
        (``Session.refused``). A gRPC call gets a Trailers-Only answer with the mapped
        grpc-status and the reason as grpc-message (proxy/grpc.py). A malformed request
        whose client is still sending is then reset (PROTOCOL_ERROR, RFC 9113 §8.1.1)."""
        body = message.encode("latin-1", "replace") + b"\n"
        fields: Headers = [(b"x-request-id", session.request_id)]
        if is_grpc_request(headers):
            fields = [(b":status", b"200"), *trailers_only(status, body, fields)]
            self.grpc_status = status_in(fields)
            body = b""
        else:
            fields = [(b":status", b"%d" % status),
                      (b"content-type", b"text/plain; charset=utf-8"),
                      (b"content-length", b"%d" % len(body)), *fields]
        self._headers(fields, not body)
        if body:
            self.pending.append(body)
            self.pending_size += len(body)
            self.pending_end = True
            self.pump()
        if not hasattr(session, "path"):  # refused before its target was split
            session.path, _, session.query = session.url.partition(b"?")
        session.refused(status, len(body), 0.0)
        if malformed and self.ended and not self.pending and not self.request_done:
            self.request_done = True
            self._safely(self.conn.h2.reset_stream, self.stream_id, ErrorCodes.PROTOCOL_ERROR)
            self.conn.flush_later()
        self._finish_if_sent()

    def abort(self) -> None:
        """The response cannot be completed: the client sees the stream reset."""
        self._reset_response(ErrorCodes.INTERNAL_ERROR)

    def cancel(self) -> None:
        """The response is given up (a gRPC call past its deadline inside a message)."""
        self._reset_response(ErrorCodes.CANCEL)

    def takes_trailers(self) -> bool:
        return not self.ended

    def _reset_response(self, code: ErrorCodes) -> None:
        self.pending.clear()
        self.pending_size = 0
        self.pending_end = False
        if not self.ended:
            self.ended = True
            self._safely(self.conn.h2.reset_stream, self.stream_id, code)
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


def note_target(session: Session, headers: list[tuple[bytes, bytes]]) -> None:
    """The method and target of a refused request head, for the access log."""
    for name, value in headers:
        if name == b":method":
            session.method = bytes(value)
        elif name == b":path":
            session.url = bytes(value)
