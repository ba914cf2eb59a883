"""Body phases of the filter API: request and response bodies through ``on_*_body`` filters.

Made only for a request whose route has body filters, so other routes pay nothing. Two modes
per direction, from the route's filter chain:
- streamed: each chunk goes through the filters as it arrives (a filter may return
  replacement bytes, ``b""`` to hold a chunk back, or, for requests, a ``LocalResponse`` to
  stop); a last call with ``end_stream`` true and an empty chunk lets a filter flush what it
  held. When a filter may change lengths, the body is re-framed: chunked instead of the
  original Content-Length.
- whole: the body is collected up to the largest cap a filter declared, then handed to the
  filters once with ``end_stream`` true, and sent with its new Content-Length. A request body
  over the cap is answered 413 before the upstream is contacted; a response body over the
  cap is answered 502 (nothing of it has been sent). A body that came with trailers, or a
  request body with transfer codings before ``chunked``, stays chunked instead: a length
  cannot carry trailers, and coded bytes are not the body's length.

A response body filter that changes only some bodies (compression) decides per response in
an ``on_response_framing(ctx, status, headers, length)`` method: called just before the head
is sent, with the upstream's Content-Length (streamed: None when chunked; whole: the collected
size), it may still edit ``headers`` and returns whether it will change this body. When no
filter will, a streamed body keeps its Content-Length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from propylon.filters.base import LocalResponse

if TYPE_CHECKING:
    from propylon.proxy.forwarder import Forwarder
    from propylon.proxy.http11 import Headers
    from propylon.proxy.session import Session
    from propylon.runtime.compiled import FilterChain

log = logging.getLogger("propylon.proxy")

TOO_LARGE = LocalResponse(413, b"request body too large\n")


class RequestBodyFilter:
    """The request body of one session through its route's ``on_request_body`` filters."""

    __slots__ = ("chunks", "deferred", "limit", "phases", "size")

    # The session is passed to each call, not kept: no reference cycle with it.
    def __init__(self, session: Session, chain: FilterChain) -> None:
        self.phases = chain.on_request_body
        self.limit = chain.request_body_buffer  # 0: streamed
        self.chunks: list[bytes] = []
        self.size = 0
        self.deferred = False  # forwarding waits for the whole body
        if not self.limit and chain.request_body_rewritten and not session.req_chunked:
            # a filter may change the length: the declared Content-Length cannot stay
            session.request_headers = [
                h for h in session.request_headers if h[0] != b"content-length"]
            session.req_chunked = True

    def declared_over_limit(self, session: Session) -> bool:
        """Whether the request declared a Content-Length over the whole-body cap."""
        if session.req_chunked:
            return False
        for name, value in session.request_headers:
            if name == b"content-length":
                return int(value) > self.limit
        return False

    def on_chunk(self, session: Session, chunk: bytes) -> bytes | None:
        """What to send upstream for ``chunk``, or None (held, or the request stopped)."""
        if self.limit:
            self.size += len(chunk)
            if self.size > self.limit:
                session.stop_request(TOO_LARGE)
                return None
            self.chunks.append(chunk)
            return None
        return self.run(session, chunk, False)

    def on_end(self, session: Session) -> bytes | None:
        """The body is complete: the last bytes to send (None: nothing, or stopped)."""
        if not self.limit:
            return self.run(session, b"", True) or None
        body = self.run(session, b"".join(self.chunks), True)
        self.chunks = []
        if body is None:
            return None
        headers = [h for h in session.request_headers if h[0] != b"content-length"]
        if session.request_trailers or session.te_codings:
            session.request_headers = headers  # chunked it came, chunked it goes
            return body
        # the whole body is known: sent with its own length, whatever the client framed
        headers.append((b"content-length", b"%d" % len(body)))
        session.request_headers = headers
        session.req_chunked = False
        return body

    def run(self, session: Session, chunk: bytes, end_stream: bool) -> bytes | None:
        for phase in self.phases:
            try:
                answer = phase(session, chunk, end_stream)
            except Exception:
                log.exception("filter failed in on_request_body")
                session.stop_request(LocalResponse(500, b"internal error\n"))
                return None
            if answer is None:
                continue
            if isinstance(answer, LocalResponse):
                session.stop_request(answer)
                return None
            chunk = answer
        return chunk


class ResponseBodyFilter:
    """The response body of one session through its route's ``on_response_body`` filters.
    Takes over the forwarder's body and end callbacks."""

    __slots__ = ("chunks", "headers", "length", "limit", "phases", "session", "size", "status")

    # Reached from the forwarder (its ``body_sink`` and ``end_sink``), so it keeps no
    # reference to it: the session drops the forwarder when it ends and nothing is left in
    # a cycle.
    def __init__(self, session: Session, chain: FilterChain, forwarder: Forwarder,
                 status: int, headers: Headers, length: bytes | None) -> None:
        self.session = session
        self.phases = chain.on_response_body
        self.limit = chain.response_body_buffer  # 0: streamed
        self.status = status
        self.headers = headers
        self.chunks: list[bytes] = []
        self.size = 0
        forwarder.body_sink = forwarder.end_sink = self
        if self.limit:
            self.length = length
            if length is not None and int(length) > self.limit:
                self.too_large()
            return  # the head waits for the whole body
        self.length = None if chain.response_body_rewritten and rewrites(
            session, self.phases, status, headers, length) else length
        session.response_started = True
        session.proto.send_response_head(session, status, headers, self.length)

    def on_response_body(self, chunk: bytes) -> None:
        if self.limit:
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large()
                return
            self.chunks.append(chunk)
            return
        out = self.run(chunk, False)
        if out:
            self.send(out)

    def on_response_complete(self, trailers: Headers | None) -> None:
        session = self.session
        if self.limit:
            rewrites(session, self.phases, self.status, self.headers, b"%d" % self.size)
            body = self.run(b"".join(self.chunks), True)
            self.chunks = []
            if body is None:
                return
            session.response_started = True
            # trailers travel only in a chunked body: then no length (the codec frames it)
            length = None if trailers else b"%d" % len(body)
            session.proto.send_response_head(session, self.status, self.headers, length)
            if body:
                self.send(body)
        else:
            tail = self.run(b"", True)
            if tail is None:
                return
            if tail:
                self.send(tail)
        session.on_response_complete(trailers)

    def send(self, data: bytes) -> None:
        self.session.proto.on_response_body(data)

    def run(self, chunk: bytes, end_stream: bool) -> bytes | None:
        session = self.session
        for phase in self.phases:
            try:
                answer = phase(session, chunk, end_stream)
            except Exception:
                log.exception("filter failed in on_response_body")
                self.fail(500, b"internal error\n")
                return None
            if answer is None:
                continue
            if isinstance(answer, LocalResponse):
                self.fail(answer.status, answer.body)
                return None
            chunk = answer
        return chunk

    def too_large(self) -> None:
        self.fail(502, b"upstream response too large for this route's body filters\n")

    def fail(self, status: int, body: bytes) -> None:
        session = self.session
        if session.forwarder is not None:
            session.forwarder.stop()
        if session.response_started:
            session.abort_response()
        else:
            session.send_error(status, body)


def rewrites(session: Session, phases: tuple[Callable[..., Any], ...], status: int,
             headers: Headers, length: bytes | None) -> bool:
    """Whether a body filter will change this response body: filters that decide per response
    are asked (each of them, they may edit the head), the others count as declared."""
    rewritten = False
    for phase in phases:
        filter_ = phase.__self__  # type: ignore[attr-defined]
        decide = getattr(filter_, "on_response_framing", None)
        if decide is not None:
            if decide(session, status, headers, length):
                rewritten = True
        elif not filter_.body_inspect_only:
            rewritten = True
    return rewritten
