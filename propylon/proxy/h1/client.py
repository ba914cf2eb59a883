"""The upstream side of the HTTP/1.1 codec: one keep-alive connection to an upstream
endpoint carrying one request at a time, and request heads serialised from parsed fields.

The response parser belongs to the connection (it keeps framing state between reads); each
parser event is handed to the request (the ``UpstreamClient``, a forwarder) the connection
currently serves. A connection is reusable only when its response ended by framing
(Content-Length or chunked), the upstream did not ask to close, and the request was fully
written. Interim 1xx answers are read past; trailer fields of a chunked response are
collected and handed over with the end of the response.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

import httptools

from propylon.proxy import rewrite
from propylon.proxy.batch import WriteBatch
from propylon.proxy.field_names import lower_name
from propylon.proxy.h1.framing import MAX_TRAILERS, last_chunk, response_trailers
from propylon.proxy.http11 import Headers, connection_tokens, head_with_fields
from propylon.proxy.rewrite import (
    RESPONSE_HOP_FIELDS,
    response_fields,
    rewrite_path,
)
from propylon.proxy.upstream_close import closed_reason

if TYPE_CHECKING:
    from propylon.proxy.body import ResponseBodyFilter
    from propylon.proxy.forwarder import Forwarder
    from propylon.proxy.h1.server import ServerConnection
    from propylon.proxy.h2.server import H2Stream
    from propylon.proxy.mirror import MirrorRequest
    from propylon.proxy.pool import EndpointPool
    from propylon.proxy.session import Session
    from propylon.runtime.compiled import CompiledRoute


class ResponseBodySink(Protocol):
    def on_response_body(self, chunk: bytes) -> None: ...


class UpstreamClient(Protocol):
    """The request side of an upstream connection (a forwarder). Body chunks of an answer go
    to its ``body_sink``, read after ``on_response_head``."""

    @property
    def body_sink(self) -> ResponseBodySink: ...

    def on_response_head(self, status: int, fields: Headers, length: bytes | None) -> None: ...

    def on_upgraded_head(self, headers: Headers) -> None: ...

    def on_response_complete(self, reusable: bool, trailers: Headers | None = None) -> None:
        ...

    def on_upstream_error(
        self, reason: str, before_response: bool, stale: bool = False, refused: bool = False,
    ) -> None:
        """``stale``: nothing was answered on a reused connection (sent again once);
        ``refused``: the upstream said it never processed the request (HTTP/2 GOAWAY above
        its last stream id, REFUSED_STREAM), so it may be sent again more than once."""
        ...

    def on_upstream_pause_writing(self) -> None: ...

    def on_upstream_resume_writing(self) -> None: ...

    @property
    def upgrade(self) -> bytes | None:
        """The protocol the request asked to switch to."""
        ...

    def on_tunnel_open(self, early: bytes) -> None: ...

    def on_tunnel_data(self, data: bytes) -> None: ...

    def on_tunnel_closed(self) -> None: ...


class OutputBatcher(Protocol):
    """The client connection (or stream) an answer goes to: holds its writes while one
    upstream read is processed, so a small response goes out in one write instead of head,
    body and terminator apart."""

    def hold_output(self) -> None:
        """An upstream read starts: it counts as the client's activity (idle timeouts), and
        writes are held."""

    def end_upstream_read(self, size: int) -> None:
        """The read of ``size`` bytes is processed: what it wrote goes out at the end of
        this turn of the loop (proxy/batch.py), or now after a read over ``DEFER_MAX``."""

    def release_output(self) -> None:
        """What is held goes out now."""

    def upstream_half_closed(self) -> None: ...


# The classes that implement these protocols, by name: in the compiled build a call to a method
# of a union of classes is a direct call, a call through a Protocol a lookup by name (about 400
# CPU instructions; docs/performance.md, "Hot path, eighth pass"). The HTTP/2 client stream
# (h2/client.py) takes the protocols, so mypy still checks each class against them.
Upstream: TypeAlias = "Forwarder | MirrorRequest"  # an UpstreamClient
BodySink: TypeAlias = "ServerConnection | H2Stream | ResponseBodyFilter | MirrorRequest"
Downstream: TypeAlias = "ServerConnection | H2Stream | MirrorRequest"  # an OutputBatcher

# Response fields kept apart from those passed on: the hop-by-hop ones, and x-request-id,
# which the gateway sets itself (an upstream echoing the id would send it twice).
_SET_APART: Final = RESPONSE_HOP_FIELDS | {b"x-request-id"}
PLAIN_CONNECTION: Final = rewrite.PLAIN_CONNECTION


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_chunked",
        "_informational",
        "client",
        "client_eof",
        "closed",
        "downstream",
        "got_response",
        "head_only",
        "headers",
        "hop_headers",
        "idle_since",
        "length",
        "parser",
        "pool",
        "request_chunked",
        "sink",
        "trailers",
        "transport",
        "tunnel",
        "upgrading",
        "upstream_eof",
        "uses",
    )

    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: Upstream | None = None
        self.sink: BodySink | None = None  # the client's body sink, per response
        self.downstream: Downstream | None = None
        self.closed = False
        self.idle_since = 0.0
        self.uses = 0
        self.upgrading = False  # the upstream answered 101 to an upgrade request
        self.tunnel = False  # relaying raw bytes: never returns to the pool
        self.client_eof = False  # tunnel half-closes: the client's FIN was passed on
        self.upstream_eof = False  # the upstream's FIN was passed on
        # per response
        self.headers: Headers = []  # end-to-end fields
        # hop-by-hop fields kept apart as parsed, but Content-Length and a plain
        # "Connection: keep-alive/close" (llhttp tracks those): usually none, so no list
        self.hop_headers: Headers | None = None
        self.head_only = False
        self.got_response = False
        self.length: bytes | None = None  # the response's Content-Length
        self.trailers: Headers | None = None  # trailer fields of a chunked response
        self.request_chunked = False  # the request body goes up chunk-framed
        self._chunked = False
        self._informational = False

    # -- the request (what a forwarder sends) ---------------------------------------------
    def send_request(self, session: Session, route: CompiledRoute, chunks: list[bytes] | None,
                     batch: WriteBatch) -> None:
        """The request head (serialised from the session's fields), the body chunks that
        arrived so far, and its end when the body is done, in as few writes as possible. A
        complete request without a chunked body is held to the end of the loop's turn
        (proxy/batch.py): nothing else is written to this connection before its answer."""
        head = serialize_request_head(session, route)
        transport = self.transport
        assert transport is not None
        chunked = self.request_chunked = session.req_chunked
        if chunks:
            transport.writelines([head, *frame_body(chunks, chunked, session.body_done,
                                                    session.request_trailers)])
        elif not session.body_done:
            transport.write(head)
        elif not chunked:
            batch.write(transport, head)
        else:
            transport.write(head + last_chunk(session.request_trailers))

    def send_body(self, chunk: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.request_chunked:
            transport.writelines([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
        else:
            transport.write(chunk)

    def send_end(self, trailers: Headers | None) -> None:
        """The end of the request body (the last chunk and trailers, when chunked)."""
        if self.request_chunked and self.transport is not None:
            self.transport.write(last_chunk(trailers))

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self, client: Upstream, downstream: Downstream, head_only: bool) -> None:
        self.client = client
        self.downstream = downstream
        self.uses += 1
        self.head_only = head_only
        self.got_response = False
        self.headers = []
        self.hop_headers = None
        self.length = None
        self._chunked = False

    def close(self) -> None:
        self.client = self.sink = None
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.client = self.sink = None
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def between_grpc_messages(self) -> bool:
        return False  # gRPC's framing is followed on HTTP/2 upstreams only

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client is None:
            self.close()  # bytes nobody asked for: the connection's framing cannot be trusted
            return
        if self.tunnel:
            self.client.on_tunnel_data(data)
            return
        downstream = self.downstream
        assert downstream is not None
        downstream.hold_output()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.upgrading and self.client is not None:
                self.tunnel = True
                self.client.on_tunnel_open(data[exc.args[0]:])
            else:
                self._invalid_response()
        except httptools.HttpParserError:
            self._invalid_response()
        finally:
            downstream.end_upstream_read(len(data))

    def eof_received(self) -> bool:
        """The upstream sent FIN. In a tunnel it is a half-close passed on to the client; the
        tunnel ends when both sides have sent theirs. Otherwise the connection closes."""
        if not self.tunnel or self.client is None:
            return False
        self.upstream_eof = True
        if self.client_eof:
            return False  # both sides are done: close (connection_lost ends the exchange)
        downstream = self.downstream
        if downstream is not None:
            downstream.upstream_half_closed()
        return True

    def client_half_closed(self) -> bool:
        """The client of the tunnel sent FIN: pass it on. True while the client's side must
        stay open for what the upstream still sends."""
        self.client_eof = True
        transport = self.transport
        if transport is None or self.closed:
            return False
        if self.upstream_eof:
            transport.close()  # both sides are done
            return False
        if transport.can_write_eof():
            transport.write_eof()
            return True
        transport.close()
        return False

    def _invalid_response(self) -> None:
        client = self.client
        self.abort()
        if client is not None:
            client.on_upstream_error("invalid response from upstream", not self.got_response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        client = self.client
        if client is None:
            return
        self.client = self.sink = None
        if self.tunnel:
            client.on_tunnel_closed()
            return
        if self.got_response and self.length is None and not self._chunked:
            client.on_response_complete(False)  # the body was delimited by the close
        else:
            stale = self.uses > 1 and not self.got_response
            client.on_upstream_error(closed_reason(exc), not self.got_response, stale)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.on_upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.on_upstream_resume_writing()

    # -- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.got_response:  # fields after the head are trailers
            trailers = self.trailers
            if trailers is None:
                self.trailers = [(lower_name(name), value)]
            elif len(trailers) < MAX_TRAILERS:
                trailers.append((lower_name(name), value))
            return
        name = lower_name(name)
        if name not in _SET_APART:
            self.headers.append((name, value))
        elif name == b"content-length":  # llhttp refuses conflicting duplicates
            self.length = value
        elif ((name == b"connection" and (value in PLAIN_CONNECTION
                                          or value.lower() in PLAIN_CONNECTION))
              or name == b"x-request-id"):
            return
        elif self.hop_headers is None:
            self.hop_headers = [(name, value)]
        else:
            self.hop_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status > 599 or status < 100:  # llhttp takes any three digits; RFC 9110 §15 not
            raise httptools.HttpParserError(f"invalid status code {status}")
        if status == 101 and self.client is not None and self.client.upgrade is not None:
            self.upgrading = True
            self.got_response = True
            self.client.on_upgraded_head(self.headers + (self.hop_headers or []))
            return
        if status < 200:
            if status == 101:
                raise httptools.HttpParserError("101 to a request that did not ask to upgrade")
            self._informational = True  # 100/103 interim answers are not forwarded
            self.headers = []
            self.hop_headers = None
            self.length = None
            return
        self.got_response = True
        client = self.client
        if client is None:
            return
        if self.hop_headers is not None:
            fields, self._chunked = response_fields(self.headers, self.hop_headers)
        else:
            fields = self.headers
        client.on_response_head(status, fields, self.length)
        self.sink = client.body_sink
        if self.head_only:
            # httptools cannot be told that a HEAD response has no body; finish it here and
            # give the connection a fresh parser for its next response.
            keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.client is not None:
            self.sink.on_response_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self.upgrading:
            return  # the tunnel starts when feed_data reports the upgrade
        if self._informational:
            self._informational = False
            return
        if self.head_only:
            return
        client = self.client  # _finish(), inlined: this runs for every response
        self.client = self.sink = None
        if client is not None:
            trailers = self.trailers
            if trailers is None:
                client.on_response_complete(self.parser.should_keep_alive())
            else:
                self.trailers = None
                client.on_response_complete(self.parser.should_keep_alive(),
                                            response_trailers(trailers))

    def _finish(self, keep_alive: bool) -> None:
        client = self.client
        self.client = self.sink = None
        if client is not None:
            client.on_response_complete(keep_alive)


def frame_body(chunks: list[bytes], chunked: bool, done: bool, trailers: Headers | None
               ) -> list[bytes]:
    """Body chunks as they go on the wire: chunk-framed (with the last chunk and the
    trailers when ``done``) or as they are."""
    if not chunked:
        return chunks
    framed: list[bytes] = []
    for chunk in chunks:
        framed += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
    if done:
        framed.append(last_chunk(trailers))
    return framed


def serialize_request_head(session: Session, route: CompiledRoute) -> bytes:
    """The request head sent upstream, built once per request from parsed fields (never by
    copying the client's bytes): the rewritten target, end-to-end fields (minus those the
    client's Connection field names), forwarding fields, and the body's framing."""
    if route.prefix_from is None and route.replace_path is None:
        path = session.path
    else:
        path = rewrite_path(session.path, route.prefix_from, route.prefix_to, route.replace_path)
    target = path + b"?" + session.query if session.query else path
    headers = session.request_headers
    if session.conn_header is not None:
        named = connection_tokens(session.conn_header) - {b"close", b"keep-alive"}
        if named:
            headers = [h for h in headers if h[0] not in named]
    if not session.req_chunked:
        framing = b""
    elif session.te_codings:
        framing = b"transfer-encoding: " + session.te_codings + b", chunked\r\n"
    else:
        framing = b"transfer-encoding: chunked\r\n"
    proto = session.proto
    if not session.host_count:
        # an HTTP/1.0 request may come without Host; HTTP/1.1 requires one (RFC 9112 §3.2):
        # the authority the client reached
        listener = proto.listener
        framing += b"host: %s:%d\r\n" % (listener.address.encode(), listener.port)
    if proto.client_cert is not None:
        framing += b"x-forwarded-client-cert: " + proto.client_cert + b"\r\n"
    if session.upgrade is not None:
        framing += b"connection: upgrade\r\nupgrade: " + session.upgrade + b"\r\n"
    if not proto.peer_trusted and proto.forwarding_host == session.host_value:
        forwarding = proto.forwarding_fields  # the connection's cached fields
    else:
        forwarding = session.forwarding_fields()
    head = head_with_fields(b"%b %b HTTP/1.1\r\n" % (session.method, target), headers)
    return b"%b%b%bx-request-id: %b\r\n\r\n" % (head, forwarding, framing, session.request_id)
