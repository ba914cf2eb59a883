"""The client side: one asyncio protocol per downstream connection (uvicorn's shape).

The httptools request parser feeds ``Session`` objects. Pipelined requests are answered in
order: only ``current`` talks to an upstream; requests parsed while it is in flight wait in
``queued`` with reading paused, so at most one read's worth of input is ever buffered.

Flow control: reading from the client pauses for three independent reasons (a queued
pipelined request, an upstream that cannot take more request body, too much body buffered
before the upstream is ready) and resumes when none is left. When the client cannot take
more response bytes (``pause_writing``), the current upstream connection stops reading.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import httptools

from propylon.proxy import clock
from propylon.proxy.batch import DEFER_MAX
from propylon.proxy.field_names import lower_name
from propylon.proxy.h1.framing import (
    FRAMED_BY_CHUNKS,
    FRAMED_BY_LENGTH,
    LOOKALIKE_PREFIXES,
    BadRequest,
    add_trailer,
    check_framing,
    is_framing_lookalike,
    last_chunk,
    response_framing,
)
from propylon.proxy.h2.server import PREFACE as H2_PREFACE
from propylon.proxy.h2.server import H2ServerConnection
from propylon.proxy.http11 import (
    _STATUS_LINES,
    Headers,
    head_with_fields,
    serialize_headers,
    simple_response,
    status_line,
)
from propylon.proxy.path import PathError, normalize_path
from propylon.proxy.proxy_protocol import (
    Parsed,
    Pending,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
    access_log_fragment,
    upstream_client_addresses,
)
from propylon.proxy.request_fields import CHUNKED as _CHUNKED
from propylon.proxy.request_fields import CONNECTION as _CONNECTION
from propylon.proxy.request_fields import EXPECT as _EXPECT
from propylon.proxy.request_fields import FIELD_KINDS
from propylon.proxy.request_fields import FORWARDED as _FORWARDED
from propylon.proxy.request_fields import HOST as _HOST
from propylon.proxy.request_fields import KEEP as _KEEP
from propylon.proxy.request_fields import LENGTH as _LENGTH
from propylon.proxy.request_fields import OWNED as _OWNED
from propylon.proxy.request_fields import PROXY_CONNECTION as _PROXY_CONNECTION
from propylon.proxy.request_fields import TE as _TE
from propylon.proxy.request_fields import UPGRADE as _UPGRADE
from propylon.proxy.session import Session
from propylon.proxy.shared_values import shared_host
from propylon.proxy.tls import client_certificate_header

if TYPE_CHECKING:
    from propylon.proxy.h1.client import ClientConnection
    from propylon.proxy.h2.client import H2Stream as UpstreamStream
    from propylon.proxy.worker_state import ListenerState, ProxyProtocolSettings, WorkerState
    from propylon.runtime.compiled import HostSet

log = logging.getLogger("propylon.proxy")

# Final: C constants when compiled, not module dictionary probes
_PIPELINE: Final = 1
_UPSTREAM_FULL: Final = 2
_BODY_BUFFER: Final = 4
CLOCK: Final = clock.CLOCK
_FIELD_KINDS: Final = FIELD_KINDS  # a C static when compiled, not a module dictionary probe

# The connection's state (``ServerConnection.state``), one at a time:
#   OPEN ---upgrade request---> UPGRADING ---101---> TUNNEL
#     ^                             |
#     +------upgrade refused--------+
#   OPEN | UPGRADING ---bad request behind earlier answers---> DROPPING_INPUT
#   PROXY_HEADER ---PROXY protocol header read (or absent, optional mode)---> PREFACE | OPEN
#   PREFACE ---the HTTP/2 preface (h2c, prior knowledge)---> handed to proxy/h2/server.py
#   PREFACE ---anything else---> OPEN
# (a TLS connection that negotiated ALPN h2 is handed over in connection_made)
#   any ---close(linger)---> LINGERING (FIN sent, input dropped until LINGER_TIME)
#   any ---close()---> CLOSED
# Whether the client has sent FIN (``eof``) is the input side's own fact, true in any state.
OPEN: Final = 0
UPGRADING: Final = 1
TUNNEL: Final = 2
DROPPING_INPUT: Final = 3
PROXY_HEADER: Final = 4
PREFACE: Final = 5
LINGERING: Final = 6
CLOSED: Final = 7

_MAX_UPGRADE_HOLD = 64 * 1024
# Single bytes searched for as ints: ``b"x" in data`` first tries ``b"x"`` as an int and
# pays for the exception, ``int in data`` is a plain memchr.
_TAB: Final = 9  # b"\t"
_HASH: Final = 35  # b"#"
_QUERY: Final = 63  # b"?"
_UNDERSCORE: Final = 95  # b"_"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_TIME = 2.0
# An idle keep-alive connection drops its caches after this long (seconds).
IDLE_RELEASE = 1.0
# Draining, a connection that has sent nothing yet is left this long after it opened (seconds).
FIRST_BYTES_GRACE: Final = 1.0
# Request readers kept for reuse by the worker's connections (see RequestReader).
_POOLED_READERS: Final = 256


def _odd_request_line(data: bytes) -> bool:
    """Extra spaces or tabs in a request line, which llhttp accepts but RFC 9112 §3 does
    not (``GET  / HTTP/1.1``). Checked where a read starts a request, which covers every
    request that is not pipelined behind another in the same read; the gateway serialises
    its own request line upstream anyway, so this is strictness, not the only defence."""
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    return line.find(b"  ") >= 0 or _TAB in line or line.startswith(b" ")


class RequestReader:
    """An httptools request parser, lent to a connection while it reads and answers a request
    and taken back when the connection is idle between requests (``ServerConnection.
    release_reader``): a worker holds about as many parsers as requests in flight, not one
    per open connection. httptools binds a parser's callbacks to one object for the parser's
    life, so that object is this one, and it passes them to the connection it is lent to.
    Memory is why: a parser per connection, made and dropped as connections come and go
    idle, left ~1 KB of allocator holes per idle connection (docs/performance.md)."""

    __slots__ = ("conn", "next_idle", "parser")

    def __init__(self, conn: ServerConnection) -> None:
        self.conn: ServerConnection | None = conn
        self.next_idle: RequestReader | None = None  # in the idle readers' list
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        conn = self.conn
        assert conn is not None
        conn.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        conn = self.conn
        assert conn is not None
        conn.on_header(name, value)

    def on_headers_complete(self) -> None:
        conn = self.conn
        assert conn is not None
        conn.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        conn = self.conn
        assert conn is not None
        conn.on_body(body)

    def on_message_complete(self) -> None:
        conn = self.conn
        assert conn is not None
        conn.on_message_complete()


class _IdleReaders:
    """The worker's readers not lent to a connection, a linked stack (one event loop per
    process). Linked rather than a list: a list that empties and fills again on every
    request reallocates its storage each time."""

    __slots__ = ("count", "top")

    def __init__(self) -> None:
        self.top: RequestReader | None = None
        self.count = 0

    def lend(self, conn: ServerConnection) -> RequestReader:
        reader = self.top
        if reader is None:
            return RequestReader(conn)
        self.top = reader.next_idle
        self.count -= 1
        reader.next_idle = None
        reader.conn = conn
        return reader

    def take_back(self, reader: RequestReader) -> None:
        if self.count < _POOLED_READERS:
            reader.conn = None
            reader.next_idle = self.top
            self.top = reader
            self.count += 1


_IDLE_READERS: Final = _IdleReaders()


class ServerConnection(asyncio.Protocol):
    # what the access log asks of any client stream (HTTP/2 streams answer otherwise)
    http2 = False
    grpc_status: int | None = None

    __slots__ = (
        "activity",
        "batch",
        "chunked_out",
        "client_cert",
        "current",
        "eof",
        "ex",
        "forwarding_fields",
        "forwarding_host",
        "head_read",
        "head_started",
        "idle_since",
        "listener",
        "loop",
        "mid_line",
        "out",
        "parsed_host",
        "parsed_host_value",
        "peer_ip",
        "peer_trusted",
        "preface_held",
        "proxy_header",
        "proxy_log",
        "proxy_preread",
        "proxy_reader",
        "queued",
        "quiet_since",
        "read_paused",
        "reader",
        "reading",
        "rejection",
        "seen_activity",
        "state",
        "tls_names",
        "transport",
        "tunnel",
        "upgrade_buffer",
        "worker",
        "writing_paused",
    )

    def __init__(self, worker: WorkerState, listener: ListenerState) -> None:
        self.worker = worker
        self.listener = listener
        self.loop = worker.loop
        self.batch = worker.batch  # held output is released at the end of the loop's turn
        # Lent by the first read of a request, taken back when the connection is idle
        # between requests: an idle connection holds no parser, nor does one that HTTP/2
        # takes over. ``reading``: inside the parser's feed_data (its callbacks run).
        self.reader: RequestReader | None = None
        self.reading = False
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_ip = ""
        self.peer_trusted = False
        self.ex: Session | None = None  # the request being parsed
        self.current: Session | None = None  # the request being answered
        self.queued: list[Session] = []  # pipelined, a few at most (reading pauses)
        self.read_paused = 0
        self.state = OPEN
        self.eof = False  # the client sent FIN: no more input
        # per-connection caches: the last Host split, the last forwarding fields serialised
        self.parsed_host_value: bytes | None = None
        self.parsed_host = ""
        self.forwarding_host: bytes | None = None
        self.forwarding_fields = b""
        self.rejection: bytes | None = None  # a 400 waiting for earlier answers to go out
        self.out: list[bytes] | None = None  # writes held back while batching
        self.chunked_out = False  # the response being sent is chunk-framed
        self.writing_paused = False
        now = time.monotonic()
        self.idle_since = now  # when the connection last became idle
        self.head_started = now  # when the request head being read began
        self.head_read = 0  # bytes of reads that ended inside the current request head
        self.mid_line = False  # the last read ended inside a request line's method
        self.activity = 0  # reads from the client or the upstream (stream idle detection)
        self.seen_activity = 0
        self.quiet_since = now
        self.tls_names: HostSet | None = None  # names of the certificate this TLS connection got
        self.client_cert: bytes | None = None  # x-forwarded-client-cert of a verified client
        self.upgrade_buffer: bytearray | None = None  # UPGRADING: client bytes held
        self.proxy_reader: ProxyHeaderReader | None = None  # PROXY_HEADER: the header so far
        self.proxy_header: ProxyHeader | None = None  # what a balancer said of the client
        self.proxy_preread = False  # HTTPS: the acceptor read the header before TLS
        self.proxy_log = ""  # the access log's "proxy" member when a header arrived
        self.tunnel: ClientConnection | None = None  # TUNNEL: the upstream side
        self.preface_held = b""  # PREFACE: what came so far, a part of the HTTP/2 preface

    # -- connection --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_ip = sys.intern(peer[0]) if peer else ""  # one copy for a client's connections
        gateway = self.listener.gateway
        self.peer_trusted = gateway is not None and gateway.is_trusted(self.peer_ip)
        tls = self.listener.tls
        if tls is not None:
            sslobj = transport.get_extra_info("ssl_object")
            self.tls_names = tls.served_names(sslobj)
            if tls.spec.client_auth != "none":
                self.client_cert = client_certificate_header(sslobj)
        self.worker.connections.add(self)
        proxy = self.listener.proxy_protocol
        if proxy is not None:  # per connection: mode off costs nothing per read or request
            if self.proxy_preread:
                self._apply_proxy_header(self.proxy_header)
            else:
                self._expect_proxy_header(proxy)
                return
        if tls is not None:
            if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
                H2ServerConnection.take_over(self, b"")
        elif self.listener.http2:
            self.state = PREFACE

    def _read_preface(self, data: bytes) -> None:
        """The first bytes of a cleartext connection: the HTTP/2 preface (h2c with prior
        knowledge) hands it to the HTTP/2 codec; anything else is HTTP/1.1."""
        held = self.preface_held + data
        if held.startswith(H2_PREFACE):
            self.state = CLOSED  # this object is done: the HTTP/2 connection takes over
            H2ServerConnection.take_over(self, held)
        elif H2_PREFACE.startswith(held):
            self.preface_held = held  # a part of the preface so far
        else:
            self.state = OPEN
            self.preface_held = b""
            self.data_received(held)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.connections.discard(self)
        if self.listener.acceptor is not None:
            self.listener.acceptor.connection_closed()
        self.state = CLOSED
        if self.tunnel is not None:
            self.tunnel.close()
        if self.current is not None:
            self.current.client_gone()
            self.current = None
        for ex in self.queued:
            ex.client_gone()
        self.queued.clear()

    def data_received(self, data: bytes) -> None:
        self.activity += 1
        state = self.state
        if state:  # not OPEN
            if state == TUNNEL:
                assert self.tunnel is not None
                if self.tunnel.transport is not None:
                    self.tunnel.transport.write(data)
            elif state == UPGRADING:
                self._hold_for_upgrade(data)
            elif state == PROXY_HEADER:
                self._read_proxy_header(data)
            elif state == PREFACE:
                self._read_preface(data)
            return  # DROPPING_INPUT, LINGERING: input is read only to be dropped
        # tested through a local: narrowing self.ex would make the type checker (and mypyc,
        # which trusts it) take it for a Session below, after callbacks that may end it
        ex = self.ex
        if ex is None:
            # a read that starts a request: its exchange (and header timeout) starts here
            # llhttp refuses a tab or a leading space in a request line, not two spaces
            # (find, not "in": bytes "in" tries the needle as an int first, and clears the error)
            if data.find(b"  ") >= 0 and not self.mid_line and _odd_request_line(data):
                self.reject(400, "malformed request line")
                return
            self.ex = Session(self)
            self.head_started = CLOCK.now
            self.head_read = 0
        reader = self.reader
        if reader is None:
            reader = self.reader = _IDLE_READERS.lend(self)
        self.reading = True
        try:
            reader.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The request asked to switch protocols: what follows its head is not HTTP
            # unless the upstream refuses the switch. Hold it until the upstream answers.
            self.state = UPGRADING
            self.upgrade_buffer = bytearray()
            self._hold_for_upgrade(data[exc.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            # httptools wraps what a callback raised; the original is the context
            cause = exc.__context__
            if isinstance(cause, BadRequest):
                self.reject(cause.status, str(cause))
            else:
                log.error("request handling failed", exc_info=cause or exc)
                self.reject(500, "internal error")
        except httptools.HttpParserError as exc:
            self.reject(400, f"malformed request: {exc}")
        else:
            ex = self.ex  # feed_data may have ended it
            if ex is None:
                # A read that ends inside a request line that has not reached its target yet
                # ("GET"): the next read continues it and may begin with its space. Any
                # further on, llhttp has passed the target's first bytes to on_url, which
                # starts a session; so a read that ends in no byte a method, the space after
                # it or an empty line can end with is a message boundary (a body's last
                # byte, a line end), and the parser can be given back.
                last = data[-1]
                self.mid_line = last != 10 and (
                    65 <= last <= 90 or last == 32 or last == 45 or last == 13)
                if self.current is None:
                    self.release_reader()  # answered within the read (a local response)
            elif not ex.method:
                # The read ended inside a request head. httptools keeps an unfinished field
                # until its line ends (on_header checks only complete ones), so the whole
                # unfinished head is bounded here: one endless field costs at most this.
                if self.head_read < 0:
                    self.head_read = 0  # the head began inside this read, after other input
                else:
                    self.head_read += len(data)
                if self.head_read > self.listener.max_head_bytes:
                    self.reject(431, "request header fields too large")
        finally:
            self.reading = False

    # -- PROXY protocol (a balancer in front names the client) -------------------------
    def preset_proxy_header(self, header: ProxyHeader | None) -> None:
        """HTTPS: the acceptor read the header (None: absent, optional mode) before TLS."""
        self.proxy_preread = True
        self.proxy_header = header

    def _expect_proxy_header(self, proxy: ProxyProtocolSettings) -> None:
        if not proxy.optional and not proxy.trusts(self.peer_ip):
            self._refuse_proxy("untrusted", "a peer outside trustedSources")
            return
        self.state = PROXY_HEADER
        self.proxy_reader = ProxyHeaderReader(versions=proxy.versions, optional=proxy.optional)

    def _read_proxy_header(self, data: bytes) -> None:
        assert self.proxy_reader is not None
        try:
            result = self.proxy_reader.feed(data)
        except ProxyProtocolError as exc:
            missing = exc.reason == "no PROXY protocol signature"
            self._refuse_proxy("missing" if missing else "malformed", exc.reason)
            return
        if isinstance(result, Pending):
            return
        self.proxy_reader = None
        self.state = PREFACE if self.listener.http2 and self.listener.tls is None else OPEN
        if isinstance(result, Parsed):
            proxy = self.listener.proxy_protocol
            if proxy is None or not proxy.trusts(self.peer_ip):
                self._refuse_proxy("untrusted", "a PROXY header from outside trustedSources")
                return
            self._apply_proxy_header(result.header)
            rest = result.rest
        else:
            rest = result.data
        self.idle_since = CLOCK.now
        if rest:
            self.data_received(rest)

    def _apply_proxy_header(self, header: ProxyHeader | None) -> None:
        self.proxy_header = header
        if header is not None:
            self.proxy_log = access_log_fragment(header, self.peer_ip)
        if header is not None and header.source is not None and header.command == "proxy":
            # from here on the balancer's client is the peer: ipFilter, rate-limit keys,
            # trustedProxies, X-Forwarded-For and the access log all start from it
            self.peer_ip = header.source[0]
            gateway = self.listener.gateway
            self.peer_trusted = gateway is not None and gateway.is_trusted(self.peer_ip)

    def client_addresses(self, client_ip: str) -> tuple[str, int, str, int] | None:
        return upstream_client_addresses(self.proxy_header, self.transport, client_ip)

    def _refuse_proxy(self, reason: str, detail: str) -> None:
        self.listener.count_proxy_error(reason)
        log.info("closing a connection from %s: PROXY protocol %s (%s)", self.peer_ip, reason,
                 detail)
        self.proxy_reader = None
        self.close()

    def reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, then close; input behind it is dropped.

        Requests parsed before the bad one are answered first, in order: the rejection waits
        at the end of the pipeline, so a client never takes the 400 for an earlier answer.
        When the error is in the body of the request being answered, that request can never
        complete: it is abandoned (its upstream side dropped) and the 400 goes out at once,
        or the connection is cut if its response had started."""
        if self.state >= LINGERING:
            return  # the connection is closing: what follows its last answer is dropped
        self.reader = None  # nothing more is parsed from here
        broken, self.ex = self.ex, None
        refused = broken if broken is not None else Session(self)
        answer = simple_response(status, message.encode("latin-1") + b"\n",
                                 [(b"x-request-id", refused.request_id)], close=True)
        if refused is not self.current:  # a request being answered is logged when it ends
            refused.refused(status, len(answer), CLOCK.now - self.head_started)
        current = self.current
        if current is not None and current is broken:
            self._abort_exchanges()
            if current.response_started:
                self.abort()
                return
        if self.current is not None:
            self.rejection = answer
            self.state = DROPPING_INPUT
            return
        self.write(answer)
        self.close(linger=True)

    # -- protocol upgrade (WebSocket) ----------------------------------------------------
    def _hold_for_upgrade(self, data: bytes) -> None:
        assert self.upgrade_buffer is not None
        self.upgrade_buffer += data
        if len(self.upgrade_buffer) > _MAX_UPGRADE_HOLD:
            self._pause(_BODY_BUFFER)

    def enter_tunnel(self, conn: ClientConnection) -> None:
        """The upstream switched protocols: from now on bytes are relayed both ways."""
        self.state = TUNNEL
        self.tunnel = conn
        held, self.upgrade_buffer = self.upgrade_buffer, None
        if held and conn.transport is not None:
            conn.transport.write(bytes(held))
        self._resume(_BODY_BUFFER)
        if self.eof:
            conn.client_half_closed()  # the client sent FIN while the switch was pending

    def upstream_half_closed(self) -> None:
        """The upstream of the tunnel sent FIN: pass it on once what it sent is written."""
        self.release_output()
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def _resume_http_after_refused_upgrade(self) -> bytes:
        """The upstream answered the upgrade request without switching: parse HTTP again."""
        held, self.upgrade_buffer = self.upgrade_buffer, None
        self.state = OPEN
        self.reader = None  # the next read is parsed by a fresh parser
        self._resume(_BODY_BUFFER)
        return bytes(held or b"")

    def eof_received(self) -> bool:
        """The client sent FIN. Inside a tunnel that is a half-close, passed on to the
        upstream. A client that stops before its request is complete can never complete it:
        the exchange is aborted at once, freeing its upstream connection (waiting for the
        rest would hold both until a timeout). A client whose requests are complete still
        gets the answers it is waiting for, then the connection closes.

        An answer written within this turn of the loop may still be held for the turn's
        batch (``batch.py``): it goes to the transport first, since asyncio closes the
        transport, after what it holds, as soon as this returns False."""
        self.release_output()
        state = self.state
        if state in (DROPPING_INPUT, LINGERING, PROXY_HEADER, PREFACE):
            self.transport.close()
            return False
        self.eof = True
        if state == TUNNEL:
            assert self.tunnel is not None
            return self.tunnel.client_half_closed()
        ex = self.ex
        if ex is not None and ex.method and not ex.body_done:
            self._abort_exchanges()
            return False
        if state == UPGRADING:
            return True  # the upstream decides whether to switch; enter_tunnel passes the FIN
        return self.current is not None

    def _abort_exchanges(self) -> None:
        """Every exchange of the connection ends now, none answered (the client left)."""
        current, self.current = self.current, None
        if current is not None:
            current.client_gone()
        queued, self.queued = self.queued, []
        for ex in queued:
            ex.client_gone()
        self.ex = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        conn = self._upstream_connection()
        if conn is not None and conn.transport:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        conn = self._upstream_connection()
        if conn is not None and conn.transport:
            conn.transport.resume_reading()

    def _upstream_connection(self) -> ClientConnection | UpstreamStream | None:
        current = self.current
        if current is None or current.forwarder is None:
            return None
        return current.forwarder.conn

    def abort(self) -> None:
        self.out = None
        self.chunked_out = False  # a truncated body gets no last chunk
        self.transport.abort()

    def cancel(self) -> None:
        self.abort()  # HTTP/1.1 has no reset of one exchange

    def takes_trailers(self) -> bool:
        """The response under way can still end with trailers (its body is chunked)."""
        return self.chunked_out

    # -- the response stream: what the current session sends its client ------------------
    def send_response_head(self, session: Session, status: int, headers: Headers,
                           length: bytes | None) -> None:
        head = head_with_fields(_STATUS_LINES.get(status) or status_line(status), headers)
        if length is not None and session.keep_alive and session.http11 and not (
                self.worker.draining):
            head = b"%bcontent-length: %b\r\n\r\n" % (head, length)  # the common case, inlined
        else:
            framing, self.chunked_out, session.keep_alive = response_framing(
                status, session.head_only, length, session.http11,
                session.keep_alive and not self.worker.draining)
            head = b"%b%b\r\n" % (head, framing)
        out = self.out
        if out is None:
            self.transport.write(head)
        else:
            out.append(head)

    def on_response_body(self, chunk: bytes) -> None:
        """A body chunk of the current response (``ResponseBodySink``: straight from the
        upstream connection when the route has no response body filters). The end of the
        body goes out with ``exchange_finished``."""
        current = self.current
        assert current is not None
        current.bytes_out += len(chunk)
        if self.chunked_out:
            self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        elif not current.head_only:
            out = self.out
            if out is None:
                self.transport.write(chunk)
            else:
                out.append(chunk)

    def note_trailers(self, trailers: Headers) -> None:
        return None  # nothing an HTTP/1.1 client stream keeps of them

    def send_local_response(self, session: Session, status: int, body: bytes,
                            headers: Headers | None, content_type: bytes) -> None:
        self.write(simple_response(
            status, body, headers, close=not session.keep_alive, head_only=session.head_only,
            content_type=content_type,
        ))

    def send_switching_protocols(self, headers: Headers, upgrade: bytes) -> None:
        self.write(b"".join((
            status_line(101), serialize_headers(headers),
            b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n\r\n",
        )))

    def send_continue(self) -> None:
        self.write(CONTINUE_100)

    # -- output ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.transport.write(data)
        else:
            out.append(data)

    def hold_output(self) -> None:
        self.activity += 1
        if self.out is None:
            self.out = []

    def end_upstream_read(self, size: int) -> None:
        if not self.out:
            self.out = None
        elif size <= DEFER_MAX:
            self.batch.release_later(self)  # sent at the end of this turn of the loop
        else:
            self.release_output()  # a big read goes out now

    def release_output(self) -> None:
        out = self.out
        self.out = None
        if out:
            count = len(out)
            if count == 1:
                self.transport.write(out[0])
            elif count == 2:  # a head and a body: compiled, one copy of each without a join
                self.transport.write(b"%b%b" % (out[0], out[1]))
            else:
                self.transport.write(b"".join(out))

    # -- read flow control -------------------------------------------------------------
    def _pause(self, reason: int) -> None:
        if not self.read_paused:
            self.transport.pause_reading()
        self.read_paused |= reason

    def _resume(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused:
                self.transport.resume_reading()
                ex = self.ex
                if ex is not None and not ex.method:
                    # the rest of a head that waited while the gateway was not reading
                    self.head_started = CLOCK.now

    def pause_reading_for_upstream(self) -> None:
        self._pause(_UPSTREAM_FULL)

    def resume_reading_for_upstream(self) -> None:
        self._resume(_UPSTREAM_FULL)

    def pause_reading_for_body(self) -> None:
        self._pause(_BODY_BUFFER)

    def resume_reading_for_body(self) -> None:
        self._resume(_BODY_BUFFER)

    # -- httptools callbacks -------------------------------------------------------------
    # No on_message_begin: the exchange is created where a read starts a request (above) or,
    # for a request pipelined behind another in the same read, here. A callback fewer per
    # request is measurable.
    def on_url(self, url: bytes) -> None:
        ex = self.ex
        if ex is None:  # a request pipelined behind another in the same read
            ex = self.ex = Session(self)
            self.head_started = CLOCK.now
            self.head_read = -1  # the read also held the earlier request: not counted
        ex.url = ex.url + url if ex.url else url
        if len(ex.url) > self.listener.max_request_line:
            raise BadRequest(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.ex
        assert ex is not None
        if ex.method:  # a trailer field of a chunked body
            ex.header_bytes += len(name) + len(value)
            if ex.header_bytes > self.listener.max_header_bytes:
                raise BadRequest(431, "request header fields too large")
            add_trailer(ex, lower_name(name), value)
            return
        name = lower_name(name)
        ex.header_bytes += len(name) + len(value)
        listener = self.listener
        if (ex.header_bytes > listener.max_header_bytes
                or len(ex.request_headers) >= listener.max_header_count):
            raise BadRequest(431, "request header fields too large")
        kind = _FIELD_KINDS.get(name, _KEEP)
        if kind == _KEEP:
            if _UNDERSCORE in name and self.listener.reject_underscores:
                raise BadRequest(400, "header names with underscores are not accepted")
            if name.startswith(LOOKALIKE_PREFIXES) and is_framing_lookalike(name):
                raise BadRequest(400, "header name imitates a framing header")
            ex.request_headers.append((name, value))
        elif kind == _HOST:
            ex.host_count += 1
            ex.host_value = value
            ex.request_headers.append((name, value))
        elif kind == _LENGTH:
            ex.has_body = value.strip() != b"0"
            ex.framing |= FRAMED_BY_LENGTH
            ex.request_headers.append((name, value))
        elif kind == _CHUNKED:
            ex.te_codings = value if ex.te_codings is None else ex.te_codings + b"," + value
            ex.req_chunked = ex.has_body = True
            ex.framing |= FRAMED_BY_CHUNKS
        elif kind == _CONNECTION:
            ex.conn_header = value if ex.conn_header is None else ex.conn_header + b"," + value
        elif kind == _EXPECT:
            ex.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == _UPGRADE:
            ex.upgrade = value
        elif kind == _OWNED:
            if self.peer_trusted:
                ex.request_headers.append((name, value))
        elif kind == _TE:
            # hop-by-hop, but "trailers" (the client takes trailer fields, as gRPC needs) is
            # passed on: the gateway forwards trailers both ways
            if b"trailers" in value.lower():
                ex.request_headers.append((b"te", b"trailers"))
        elif kind == _FORWARDED:
            if ex.forwarded is None:
                ex.forwarded = {}
            prev = ex.forwarded.get(name)
            ex.forwarded[name] = value if prev is None else prev + b", " + value
        elif kind == _PROXY_CONNECTION:
            ex.proxy_connection = True

    def on_headers_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        if self.state >= LINGERING:
            return  # input after a response that closes the connection is ignored
        reader = self.reader
        assert reader is not None  # this is its parser's callback
        parser = reader.parser
        ex.method = parser.get_method()
        keep_alive = ex.keep_alive = parser.should_keep_alive()
        # Of the versions llhttp accepts (0.9, 1.0, 1.1, 2.0), it keeps a request without a
        # Connection or Proxy-Connection field alive only in HTTP/1.1: then the version is
        # known without asking for it (get_http_version formats a str: 2,000 instructions)
        if not keep_alive or ex.conn_header is not None or ex.proxy_connection:
            version = parser.get_http_version()
            if version != "1.1":  # ex.http11 starts true
                if version != "1.0":
                    raise BadRequest(400, f"HTTP/{version} is not supported")
                ex.http11 = False
        if not parser.should_upgrade():
            ex.upgrade = None  # an Upgrade field without "Connection: upgrade" means nothing
        elif ex.upgrade is None or ex.has_body:
            raise BadRequest(400, "invalid protocol upgrade request")
        url = ex.url
        if _HASH in url:
            raise BadRequest(400, "a fragment in the request target")
        if url.startswith(b"/"):  # origin-form, the common case, split here
            if _QUERY in url:
                ex.path, _, ex.query = url.partition(b"?")
            else:
                ex.path = url
                ex.query = b""
        else:
            self._parse_other_target(ex)
        # as text for routing; checked as text too: str's "in" is far cheaper than bytes'
        text = ex.path.decode("latin-1")
        paths = self.listener.paths
        if paths is not None and ("%" in text or ";" in text or "\\" in text or "/." in text
                                  or "//" in text):
            try:
                ex.path = normalize_path(ex.path, paths)
            except PathError as exc:
                raise BadRequest(400, str(exc)) from None
            text = ex.path.decode("latin-1")
        ex.path_text = text
        host_value = ex.host_value
        if host_value == self.parsed_host_value:
            ex.host = self.parsed_host  # same Host as the previous request: already split
        elif host_value:
            self.parsed_host_value, ex.host = shared_host(host_value)
            self.parsed_host = ex.host
        else:
            ex.host = ""
        if ex.host_count != 1:
            if ex.host_count > 1:
                raise BadRequest(400, "duplicate Host header")
            if ex.http11:
                raise BadRequest(400, "missing Host header")
        if ex.framing:
            check_framing(ex)
        if not ex.has_body:
            ex.body_done = True
        if self.current is None:
            self.current = ex
            ex.begin()
        else:
            self.queued.append(ex)
            self._pause(_PIPELINE)

    def _parse_other_target(self, ex: Session) -> None:
        """Asterisk-form (``OPTIONS *``) and absolute-form request targets."""
        url = ex.url
        if url == b"*" and ex.method == b"OPTIONS":
            ex.path = b"*"
            ex.query = b""
            return
        try:
            # Any: httptools' stub says ``port: int``, it is None when the target has none
            parsed: Any = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            raise BadRequest(400, "invalid request target") from None
        if not parsed.host:
            raise BadRequest(400, "invalid request target")
        host_value = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
        ex.path = parsed.path or b"/"
        ex.query = parsed.query or b""
        # absolute-form: the target's authority wins over any Host field (RFC 9112 §3.2.2)
        ex.request_headers = [h for h in ex.request_headers if h[0] != b"host"]
        ex.request_headers.append((b"host", host_value))
        ex.host_count = 1
        ex.host_value = host_value

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        assert ex is not None
        ex.on_data(body, False)

    def on_message_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        if ex.has_body:
            ex.on_data(b"", True)
        else:
            ex.body_done = True  # the end of no body has nothing else to do

    # -- between exchanges -----------------------------------------------------------------
    def exchange_finished(self, ex: Session, trailers: Headers | None = None) -> None:
        """``ex`` ended: the end of its body (the last chunk, with the trailers when there
        are any: a body framed by length or by closing cannot carry them, they are
        dropped), then the next request or the connection's end."""
        if ex is not self.current:
            return
        self.current = None
        if self.chunked_out:
            self.chunked_out = False
            self.write(last_chunk(trailers))
        if self.state == TUNNEL or not ex.keep_alive or self.worker.draining or self.eof:
            self.close(linger=not ex.body_done and not self.eof)
            return
        if self.rejection is not None and not self.queued:
            self.write(self.rejection)
            self.close(linger=True)
            return
        if self.state == UPGRADING and ex.upgrade is not None:
            held = self._resume_http_after_refused_upgrade()
            if held:
                self.loop.call_soon(self.data_received, held)
        if self.queued:
            nxt = self.queued.pop(0)
            self.current = nxt
            if not self.queued:
                self._resume(_PIPELINE)
            nxt.begin()
            return
        self.idle_since = CLOCK.now
        if not self.reading:
            self.release_reader()
        if self.read_paused & _BODY_BUFFER:
            self._resume(_BODY_BUFFER)

    def check_timeouts(self, now: float) -> None:
        """Called about twice a second by the worker: enforce the listener's timeouts."""
        listener = self.listener
        ex = self.ex
        if ex is not None and not ex.method:
            if self.read_paused:
                self.head_started = now  # the gateway is not reading: not the client's delay
            elif now - self.head_started > listener.header_read_timeout:
                self.reject(408, "request header timeout")
                return
        if self.current is None:
            if ex is None:
                if self.state == PROXY_HEADER and now - self.idle_since > (
                        listener.header_read_timeout):
                    self._refuse_proxy("timeout", "no complete header in headerReadTimeout")
                elif self.state == PREFACE and self.preface_held and now - self.idle_since > (
                        listener.header_read_timeout):
                    self.close()  # a part of the HTTP/2 preface, and no more: slowloris
                elif now - self.idle_since > listener.keep_alive_timeout:
                    self.close()
                elif now - self.idle_since > IDLE_RELEASE and self.state == OPEN:
                    self._release_idle_state()
            return
        current = self.current
        if current.deadline and now > current.deadline:
            current.on_timeout()  # a long route timeout (see forwarder.COARSE_DEADLINE)
            return
        if self.activity != self.seen_activity:
            self.seen_activity = self.activity
            self.quiet_since = now
        elif now - self.quiet_since > listener.stream_idle_timeout:
            log.info("closing a connection from %s: no bytes moved for %.0fs", self.peer_ip,
                     listener.stream_idle_timeout)
            self.abort()

    def release_reader(self) -> None:
        """Give the parser back to the worker's readers when it stands between requests
        (nothing of a next request read yet); a parser in any other state goes with the
        connection. Not from a parser callback: the rest of the read is parsed after it."""
        reader = self.reader
        if (reader is not None and self.ex is None and not self.mid_line
                and self.state == OPEN):
            self.reader = None
            _IDLE_READERS.take_back(reader)

    def _release_idle_state(self) -> None:
        """What the next request would reuse, dropped while the connection is idle: the
        caches fill again (docs/performance.md, "Idle connections")."""
        self.parsed_host_value = self.forwarding_host = None
        self.parsed_host = ""
        self.forwarding_fields = b""

    def requests_in_flight(self) -> int:
        return (self.current is not None) + len(self.queued)

    def close_if_idle(self) -> None:
        """Draining: close unless a request is being read or answered. A connection that
        has not sent a byte yet is left alone for ``FIRST_BYTES_GRACE`` after it opened: one
        accepted just before the listener closed has its request on the way, and closing it
        unanswered fails a request no client retries (``worker.drain`` cuts it at the end)."""
        if self.current is None and self.ex is None:
            if self.activity == 0 and CLOCK.now - self.idle_since < FIRST_BYTES_GRACE:
                return
            self.close()

    def close(self, linger: bool = False) -> None:
        """Close after everything written so far, held output included.

        ``linger``: the client may still be sending (an unread body, a rejected pipeline).
        Closing at once would make the kernel answer its bytes with a reset, which can
        destroy our answer before the client reads it; so, as nginx does, we send FIN, then
        read and drop its input for up to ``LINGER_TIME`` before closing."""
        self.release_output()
        transport = self.transport
        if (not linger or self.state == LINGERING or transport.is_closing()
                or not transport.can_write_eof()):
            self.state = CLOSED
            transport.close()
            return
        self.state = LINGERING
        self.reader = None
        self._pause_reasons_cleared()
        transport.write_eof()
        self.loop.call_later(LINGER_TIME, transport.close)

    def _pause_reasons_cleared(self) -> None:
        if self.read_paused:
            self.read_paused = 0
            self.transport.resume_reading()
